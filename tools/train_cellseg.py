#!/usr/bin/python3
"""train_cellseg: trains the small cell-segmentation UNet on tools/cellsim.py images (CPU,
minutes), evaluates it on held-out full images exactly the way the worker runs it (256x256
tiles, 32 px overlap, edge padding, midpoint stitching, threshold 0.5), and exports
models/cellseg-unet/model.onnx + model.json (schema: docs/models.md).

Deterministic: seeded torch/numpy, deterministic algorithms, fixed step count, fixed thread
count (results can still differ in the last bits across CPUs/thread counts/torch builds).

    /usr/bin/python3 tools/train_cellseg.py [--steps 320] [--threads 2] [--out models/cellseg-unet]
    /usr/bin/python3 tools/train_cellseg.py --eval-only   # re-evaluate the saved checkpoint

Also writes tests/data/onnx/cellseg_tiles.* (PyTorch's output of the real model on two eval
tiles) for the C engine's tests and tests/ort/check_agreement.js.

The network: 3 resolution levels (16-32-64 channels), each level two 3x3 Conv (no bias) +
BatchNorm + ReLU, MaxPool 2x2 down, ConvTranspose 2x2/2 up, Concat skips, 1x1 Conv head,
Sigmoid inside the exported graph. ONNX: opset 13, input "input" [N,1,256,256] float32,
output "prob" [N,1,256,256] float32 in [0,1], dynamic batch axis "N". BatchNorm is folded into
the convolutions by torch.onnx.export (eval mode), as in a normal user export.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cellsim  # noqa: E402

TILE = 256
OVERLAP = 32
SCALE = 1.0 / 255.0
# Dataset statistics of cellsim images (pixel*SCALE), rounded; fixed so the model.json and the
# training agree without recomputing them.
MEAN = 0.18
STD = 0.18
# How the worker serves the model (model.json normalization.range): each image's 1st..99.8th
# percentile -> [0, 1], then MEAN/STD. Training stays at the fixed SCALE; the percentiles of
# cellsim's 8-bit images sit near where SCALE puts them (1st ~0.02, 99.8th ~0.79), and unlike a
# fixed scale the policy gives the same input for the 8-, 12- and 16-bit versions of an image.
SERVED_RANGE = {"mode": "percentile", "low": 1.0, "high": 99.8}
TRAIN_SEED = 1   # image seeds [1, i] for training images
VAL_SEED = 2     # image seeds [2, i] for the in-script validation images
OPSET = 13


# ---------------------------------------------------------------- model

def conv_block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """3-level UNet. forward() returns logits; export wraps it with a Sigmoid."""

    def __init__(self, in_ch=1, ch=(16, 32, 64)):
        super().__init__()
        c1, c2, c3 = ch
        self.enc1 = conv_block(in_ch, c1)
        self.enc2 = conv_block(c1, c2)
        self.bott = conv_block(c2, c3)
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = conv_block(2 * c2, c2)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = conv_block(2 * c1, c1)
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bott(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class WithSigmoid(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.sigmoid(self.net(x))


# ---------------------------------------------------------------- data

def to_unit(img):
    """uint8/uint16 image -> float32 in the 8-bit scale (16-bit samples divided by 257; PIL
    reads 16-bit PNGs as int32, so anything that is not uint8 counts as 16-bit)."""
    if img.dtype != np.uint8:
        return img.astype(np.float32) / 257.0
    return img.astype(np.float32)


def normalize(img_units):
    return (img_units * SCALE - MEAN) / STD


def normalize_served(img):
    """As the worker normalizes with SERVED_RANGE (gpu/input_range.c: numpy's linear
    percentiles over every sample, not clipped), then MEAN/STD."""
    v = img.astype(np.float64)
    lo, hi = np.percentile(v, [SERVED_RANGE["low"], SERVED_RANGE["high"]])
    scale = 1.0 / (hi - lo) if hi > lo else 1.0 / (65535.0 if img.dtype != np.uint8 else 255.0)
    return (((v - lo) * scale - MEAN) / STD).astype(np.float32)


def jpeg_roundtrip(img, quality):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.array(Image.open(buf))


class CropSource:
    """A fixed pool of rendered images; crops with flips/rot90, sometimes JPEG-compressed
    (the worker's inputs are usually JPEGs), sometimes padded by edge replication the way the
    worker pads images smaller than a tile."""

    def __init__(self, rng, pool, size, crop):
        self.rng = rng
        self.crop = crop
        self.images = []
        for i in range(pool):
            s = cellsim.render(size, size, rng=np.random.default_rng(cellsim.image_seed(TRAIN_SEED, i)))
            self.images.append((s.image, s.foreground))

    def batch(self, n):
        c = self.crop
        xs = np.empty((n, 1, c, c), np.float32)
        ys = np.empty((n, 1, c, c), np.float32)
        for k in range(n):
            img, fg = self.images[int(self.rng.integers(len(self.images)))]
            h, w = img.shape
            y0 = int(self.rng.integers(0, h - c + 1))
            x0 = int(self.rng.integers(0, w - c + 1))
            im = img[y0:y0 + c, x0:x0 + c]
            m = fg[y0:y0 + c, x0:x0 + c]
            if self.rng.uniform() < 0.5:
                im = jpeg_roundtrip(im, self.rng.integers(70, 96))
            r = int(self.rng.integers(4))
            im, m = np.rot90(im, r), np.rot90(m, r)
            if self.rng.uniform() < 0.5:
                im, m = im[:, ::-1], m[:, ::-1]
            im = to_unit(np.ascontiguousarray(im))
            m = np.ascontiguousarray(m).astype(np.float32)
            if self.rng.uniform() < 0.1:
                # small-image case: keep a sub-window, edge-pad the rest (loss only on the window)
                hh = int(self.rng.integers(c // 3, c))
                ww = int(self.rng.integers(c // 3, c))
                im = np.pad(im[:hh, :ww], ((0, c - hh), (0, c - ww)), mode="edge")
                m2 = np.full((c, c), -1.0, np.float32)
                m2[:hh, :ww] = m[:hh, :ww]
                m = m2
            xs[k, 0] = normalize(im)
            ys[k, 0] = m
        return torch.from_numpy(xs), torch.from_numpy(ys)


def loss_fn(logits, target):
    """BCE + soft Dice; target -1 marks padding pixels that carry no loss."""
    valid = (target >= 0).float()
    t = target.clamp(min=0)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * valid).sum() / valid.sum()
    p = torch.sigmoid(logits) * valid
    inter = (p * t).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + t.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


# ---------------------------------------------------------------- worker-equivalent inference

def tile_starts(length, tile=TILE, overlap=OVERLAP):
    """Tile origins along one axis (docs/models.md): 0, s, 2s, ... with s = tile - overlap, the
    last one moved back to end exactly at the image edge; one tile if length <= tile."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_cuts(starts, length, tile=TILE):
    """Owned interval [lo, hi) of each tile: neighbours split their overlap at its midpoint."""
    lo = [0]
    for a, b in zip(starts[:-1], starts[1:]):
        lo.append((b + a + tile) // 2)
    hi = lo[1:] + [length]
    return list(zip(lo, hi))


def predict_tiled(model, img, batch=8, served=False):
    """Worker-equivalent probability map for a uint8/uint16 HxW image (served: normalized with
    SERVED_RANGE, as the worker does; else with the training's fixed SCALE)."""
    h, w = img.shape
    x = normalize_served(img) if served else normalize(to_unit(img))
    ph, pw = max(h, TILE), max(w, TILE)
    if (ph, pw) != (h, w):
        x = np.pad(x, ((0, ph - h), (0, pw - w)), mode="edge")
    ys, xs = tile_starts(ph), tile_starts(pw)
    tiles = [(ty, tx) for ty in ys for tx in xs]
    out = np.zeros((ph, pw), np.float32)
    cy = dict(zip(ys, tile_cuts(ys, ph)))
    cx = dict(zip(xs, tile_cuts(xs, pw)))
    with torch.no_grad():
        for i in range(0, len(tiles), batch):
            chunk = tiles[i:i + batch]
            t = torch.from_numpy(np.stack([x[ty:ty + TILE, tx:tx + TILE] for ty, tx in chunk])[:, None])
            p = model(t).numpy()[:, 0]
            for (ty, tx), pt in zip(chunk, p):
                (y0, y1), (x0, x1) = cy[ty], cx[tx]
                out[y0:y1, x0:x1] = pt[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    return out[:h, :w]


def iou(pred, gt):
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else inter / union


def evaluate(model, eval_dir, log, served=False):
    from PIL import Image
    with open(os.path.join(eval_dir, "index.json")) as f:
        idx = json.load(f)
    ious = []
    for e in idx["images"]:
        img = np.array(Image.open(os.path.join(eval_dir, e["image"])))
        gt = np.array(Image.open(os.path.join(eval_dir, e["mask"]))) > 127
        prob = predict_tiled(model, img, served=served)
        v = iou(prob >= 0.5, gt)
        ious.append(v)
        log("  %-12s %4dx%-4d %2d-bit  IoU %.4f" % (e["image"], e["width"], e["height"], e["bits"], v))
    return float(np.mean(ious)), float(np.min(ious))


# ---------------------------------------------------------------- export

def export(model, out_dir, meta):
    model.eval()
    wrapped = WithSigmoid(model).eval()
    onnx_path = os.path.join(out_dir, "model.onnx")
    dummy = torch.zeros(1, 1, TILE, TILE)
    torch.onnx.export(wrapped, dummy, onnx_path, opset_version=OPSET, input_names=["input"],
                      output_names=["prob"], dynamic_axes={"input": {0: "N"}, "prob": {0: "N"}},
                      do_constant_folding=True)
    cfg = {
        "name": "cellseg-unet",
        "description": "3-level UNet (16-32-64) for fluorescent cell foreground; trained on "
                       "tools/cellsim.py images by tools/train_cellseg.py",
        "file": "model.onnx",
        "input": {"name": "input", "channels": 1, "size": [TILE, TILE], "layout": "NCHW",
                  "dtype": "float32"},
        "normalization": {"range": SERVED_RANGE, "mean": [MEAN], "std": [STD]},
        "large_images": {"mode": "tile", "tile": TILE, "overlap": OVERLAP, "pad": "edge"},
        "output": {"name": "prob", "kind": "sigmoid", "channel": 0},
        "threshold": 0.5,
        "min_area": 10,
        "optimal_batch": 8,
        "max_batch": 16,
        "max_delay_us": 5000,
        "precision": "fp32",
        "training": meta,
    }
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return onnx_path


def write_reference(model, eval_dir, data_dir):
    """PyTorch reference for the real model, for C tests without torch: two normalized
    256x256 tiles of eval image 13 (700x600) as a batch of 2, and the model's probabilities.
    Files like tools/export_test_models.py writes (cellseg_tiles.{json,input.bin,output.bin});
    the json points at models/cellseg-unet/model.onnx by a relative path."""
    from PIL import Image
    img = np.array(Image.open(os.path.join(eval_dir, "eval_13.jpg")))
    x = normalize(to_unit(img))
    tiles = np.stack([x[0:TILE, 0:TILE], x[300:300 + TILE, 444:444 + TILE]])[:, None].astype("<f4")
    with torch.no_grad():
        y = WithSigmoid(model).eval()(torch.from_numpy(tiles)).numpy().astype("<f4")
    os.makedirs(data_dir, exist_ok=True)
    tiles.tofile(os.path.join(data_dir, "cellseg_tiles.input.bin"))
    y.tofile(os.path.join(data_dir, "cellseg_tiles.output.bin"))
    rel = os.path.relpath(os.path.join(HERE, "..", "models", "cellseg-unet", "model.onnx"), data_dir)
    meta = {
        "model": rel,
        "description": "the trained models/cellseg-unet on two tiles of its eval image eval_13.jpg "
                       "(origins y,x = 0,0 and 300,444), normalized as model.json says",
        "inputs": [{"name": "input", "shape": list(tiles.shape), "dtype": "float32",
                    "file": "cellseg_tiles.input.bin"}],
        "outputs": [{"name": "prob", "shape": list(y.shape), "dtype": "float32",
                     "file": "cellseg_tiles.output.bin"}],
        "tolerance": {"max_abs": 1e-4},
        "generator": "tools/train_cellseg.py (torch %s)" % torch.__version__,
        "output_stats": {"min": float(y.min()), "max": float(y.max()),
                         "foreground_fraction": float((y >= 0.5).mean())},
    }
    with open(os.path.join(data_dir, "cellseg_tiles.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "models", "cellseg-unet"))
    ap.add_argument("--eval-dir", default=None, help="default: OUT/eval")
    ap.add_argument("--steps", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--pool", type=int, default=160, help="training images (256x256)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--ref-dir", default=os.path.join(HERE, "..", "tests", "data", "onnx"),
                    help="where the real model's PyTorch reference (cellseg_tiles.*) goes")
    a = ap.parse_args(argv)
    out = os.path.abspath(a.out)
    eval_dir = a.eval_dir or os.path.join(out, "eval")
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "checkpoint.pt")  # not committed (.gitignore)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng([a.seed, 12345])
    t0 = time.time()
    log = lambda m: print("[%6.1fs] %s" % (time.time() - t0, m), flush=True)

    model = UNet()
    meta = {}
    if a.eval_only:
        model.load_state_dict(torch.load(ckpt))
    else:
        src = CropSource(rng, a.pool, 256, a.crop)
        log("rendered %d training images" % a.pool)
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
        warm = max(1, a.steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
        model.train()
        run = 0.0
        for step in range(a.steps):
            x, y = src.batch(a.batch)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            run = 0.9 * run + 0.1 * loss.item() if step else loss.item()
            if step % 20 == 0 or step == a.steps - 1:
                log("step %4d/%d loss %.4f lr %.2e" % (step, a.steps, run, sched.get_last_lr()[0]))
        torch.save(model.state_dict(), ckpt)
        meta = {"steps": a.steps, "batch": a.batch, "crop": a.crop, "pool": a.pool, "lr": a.lr,
                "seed": a.seed, "train_image_seed": TRAIN_SEED, "loss": "BCE + soft Dice",
                "final_loss": round(run, 4), "train_seconds": round(time.time() - t0, 1),
                "torch": torch.__version__}
    model.eval()

    # in-script validation on fresh full images, then the committed eval set (JPEG)
    val_ious = []
    for i in range(4):
        s = cellsim.render(384, 320, rng=np.random.default_rng(cellsim.image_seed(VAL_SEED, i)))
        val_ious.append(iou(predict_tiled(model, s.image) >= 0.5, s.foreground > 0))
    log("validation (4 fresh 320x384 PNG-quality images): mean IoU %.4f" % np.mean(val_ious))
    if os.path.exists(os.path.join(eval_dir, "index.json")):
        log("eval set %s (tiled %d/%d, threshold 0.5):" % (eval_dir, TILE, OVERLAP))
        mean_iou, min_iou = evaluate(model, eval_dir, log)
        log("eval set: mean IoU %.4f, min %.4f" % (mean_iou, min_iou))
        log("eval set, normalized as served (%s):" % SERVED_RANGE)
        smean, smin = evaluate(model, eval_dir, log, served=True)
        log("eval set, as served: mean IoU %.4f, min %.4f" % (smean, smin))
        meta_eval = {"eval_mean_iou": round(mean_iou, 4), "eval_min_iou": round(min_iou, 4),
                     "eval_mean_iou_served": round(smean, 4), "eval_min_iou_served": round(smin, 4)}
    else:
        log("no eval set at %s (run tools/make_eval_set.py)" % eval_dir)
        meta_eval = {}
    if a.eval_only:
        cfg_path = os.path.join(out, "model.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                meta = json.load(f).get("training", {})
    meta.update(meta_eval)
    meta["val_mean_iou"] = round(float(np.mean(val_ious)), 4)
    path = export(model, out, meta)
    if os.path.exists(os.path.join(eval_dir, "eval_13.jpg")):
        write_reference(model, eval_dir, a.ref_dir)
    log("exported %s (%d bytes) and model.json" % (path, os.path.getsize(path)))

    return 0


if __name__ == "__main__":
    sys.exit(main())
