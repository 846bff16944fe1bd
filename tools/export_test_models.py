#!/usr/bin/python3
"""export_test_models: small ONNX test networks with seeded random weights for the C engine's
tests, each with a seeded random input and PyTorch's output as raw float32 files, so C tests
(and tests/ort/check_agreement.js) can compare without torch.

Writes to tests/data/onnx/ (default), for NAME in unet, resunet_cbam, hrnet_block:
    NAME.onnx         opset 13, input "input", output "output", dynamic batch axis "N"
    NAME.input.bin    little-endian float32, C-order (NCHW)
    NAME.output.bin   little-endian float32, PyTorch's result in eval mode
    NAME.json         shapes, file names, op types in the graph, tolerance, how it was made

    /usr/bin/python3 tools/export_test_models.py [--out tests/data/onnx]

The networks:
  unet          the cellseg UNet (tools/train_cellseg.py) with random weights and random
                BatchNorm statistics; exported like the real model (BN folded by the
                exporter) so it has exactly the real model's ops. Input 2x1x64x64 (batch 2).
  resunet_cbam  3-channel residual UNet with CBAM attention. Exported with BatchNormalization
                nodes KEPT (TrainingMode.PRESERVE on an eval-mode model) so the engine's own
                BN folding is exercised. Channel attention in two styles (1x1-conv MLP on
                GlobalAveragePool + whole-image MaxPool; Flatten->Gemm MLP on
                GlobalAveragePool + ReduceMax(H,W), with a Reshape back whose shape comes
                from a Shape subgraph), spatial attention via ReduceMean/ReduceMax
                over channels -> Concat -> 7x7 Conv -> Sigmoid -> Mul; nearest Resize up.
                Input 1x3x64x64, output 2-channel logits.
  hrnet_block   three parallel resolutions (1, 1/2, 1/4) made with strided convs, exchanged
                by bilinear Resize (align_corners=False; by scale factor and by target size)
                + Add fusion, final Concat of the upsampled branches -> 1x1 Conv.
                Input 1x1x64x64, output 2-channel logits.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_cellseg import UNet, WithSigmoid  # noqa: E402

OPSET = 13


def cbr(cin, cout, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# ---------------------------------------------------------------- resunet_cbam

class ResBlock(nn.Module):
    """Post-activation residual block (Conv-BN-ReLU-Conv-BN + skip, ReLU)."""

    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(x + self.b2(self.c2(y)))


class PreActResBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-Conv twice + skip): a BN that follows an Add and
    cannot be folded into a preceding Conv."""

    def __init__(self, c):
        super().__init__()
        self.b1 = nn.BatchNorm2d(c)
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.b2 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = self.c1(F.relu(self.b1(x)))
        y = self.c2(F.relu(self.b2(y)))
        return x + y


class ChannelAttentionConv(nn.Module):
    """CBAM channel attention, shared MLP as 1x1 convolutions."""

    def __init__(self, c, r=4):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(inplace=True), nn.Conv2d(c // r, c, 1))

    def forward(self, x):
        a = self.mlp(F.adaptive_avg_pool2d(x, 1))
        m = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(a + m)


class ChannelAttentionGemm(nn.Module):
    """CBAM channel attention, shared MLP as Linear layers (Flatten -> Gemm), reshaped back
    with a batch-dependent shape (Shape/Gather/Unsqueeze/Concat -> Reshape in ONNX). The max
    pool is a ReduceMax over H,W here (the conv variant's adaptive max pool exports as a
    MaxPool whose kernel is the whole image)."""

    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Linear(c, c // r)
        self.fc2 = nn.Linear(c // r, c)

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        a = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        m = torch.flatten(torch.amax(x, dim=(2, 3), keepdim=True), 1)
        mlp = lambda v: self.fc2(F.relu(self.fc1(v)))
        w = torch.sigmoid(mlp(a) + mlp(m)).reshape(n, c, 1, 1)
        return x * w


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        avg = torch.mean(x, dim=1, keepdim=True)
        mx = torch.amax(x, dim=1, keepdim=True)
        return x * torch.sigmoid(self.conv(torch.cat([avg, mx], 1)))


class ResUNetCBAM(nn.Module):
    def __init__(self, in_ch=3, out_ch=2):
        super().__init__()
        self.stem = cbr(in_ch, 16)
        self.res1 = ResBlock(16)
        self.ca1 = ChannelAttentionConv(16)
        self.sa1 = SpatialAttention()
        self.down = cbr(16, 32, 3, stride=2)
        self.res2 = PreActResBlock(32)
        self.ca2 = ChannelAttentionGemm(32)
        self.sa2 = SpatialAttention()
        self.fuse = cbr(48, 16)
        self.head = nn.Conv2d(16, out_ch, 1)

    def forward(self, x):
        s = self.sa1(self.ca1(self.res1(self.stem(x))))
        d = self.sa2(self.ca2(self.res2(self.down(s))))
        u = F.interpolate(d, scale_factor=2.0, mode="nearest")
        return self.head(self.fuse(torch.cat([u, s], 1)))


# ---------------------------------------------------------------- hrnet_block

class HRNetBlock(nn.Module):
    def __init__(self, in_ch=1, out_ch=2, c=(16, 32, 64)):
        super().__init__()
        c1, c2, c3 = c
        self.stem = cbr(in_ch, c1)
        self.b1 = nn.Sequential(cbr(c1, c1), cbr(c1, c1))
        self.to2 = cbr(c1, c2, 3, stride=2)
        self.b2 = nn.Sequential(cbr(c2, c2), cbr(c2, c2))
        self.to3 = cbr(c2, c3, 3, stride=2)
        self.b3 = cbr(c3, c3)
        # fusion: to high res (1x1 conv then bilinear up), to lower res (strided 3x3 convs)
        self.f21 = nn.Sequential(nn.Conv2d(c2, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.f31 = nn.Sequential(nn.Conv2d(c3, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.f12 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2))
        self.f32 = nn.Sequential(nn.Conv2d(c3, c2, 1, bias=False), nn.BatchNorm2d(c2))
        self.f13 = nn.Sequential(cbr(c1, c1, 3, stride=2),
                                 nn.Conv2d(c1, c3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c3))
        self.f23 = nn.Sequential(nn.Conv2d(c2, c3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c3))
        self.head = nn.Sequential(cbr(c1 + c2 + c3, 32, 1), nn.Conv2d(32, out_ch, 1))

    def forward(self, x):
        x1 = self.b1(self.stem(x))
        x2 = self.b2(self.to2(x1))
        x3 = self.b3(self.to3(x2))
        up = lambda t, s: F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)
        to = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)
        y1 = F.relu(x1 + up(self.f21(x2), 2.0) + to(self.f31(x3), x1))
        y2 = F.relu(self.f12(x1) + x2 + up(self.f32(x3), 2.0))
        y3 = F.relu(self.f13(x1) + self.f23(x2) + x3)
        cat = torch.cat([y1, to(y2, y1), up(y3, 4.0)], 1)
        return self.head(cat)


# ---------------------------------------------------------------- helpers

def randomize_bn(model, g):
    """Non-trivial BatchNorm statistics and affine parameters, so folding errors show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def onnx_ops(path):
    """Op types of the graph's nodes and the default-domain opset, read with a minimal
    protobuf wire-format reader (the `onnx` Python package is not available here)."""
    data = open(path, "rb").read()

    def varint(b, i):
        v = s = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            num, wt = key >> 3, key & 7
            if wt == 0:
                v, i = varint(b, i)
            elif wt == 1:
                v, i = b[i:i + 8], i + 8
            elif wt == 5:
                v, i = b[i:i + 4], i + 4
            elif wt == 2:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            else:
                raise ValueError("bad wire type %d" % wt)
            yield num, v

    ops, opset = [], None
    for num, v in fields(data):
        if num == 7:  # graph
            for gnum, gv in fields(v):
                if gnum == 1:  # node
                    for nnum, nv in fields(gv):
                        if nnum == 4:
                            ops.append(nv.decode())
        elif num == 8:  # opset_import
            dom, ver = "", None
            for onum, ov in fields(v):
                if onum == 1:
                    dom = ov.decode()
                elif onum == 2:
                    ver = ov
            if dom in ("", "ai.onnx"):
                opset = ver
    return ops, opset


def write_f32(path, arr):
    a = np.ascontiguousarray(arr, dtype="<f4")
    a.tofile(path)


def export_one(name, model, in_shape, out_dir, seed, keep_bn, desc):
    g = torch.Generator().manual_seed(seed)
    randomize_bn(model, g)
    model.eval()
    x = torch.randn(*in_shape, generator=g)
    with torch.no_grad():
        y = model(x)
    path = os.path.join(out_dir, name + ".onnx")
    kw = {}
    if keep_bn:
        kw["training"] = torch.onnx.TrainingMode.PRESERVE  # skips the exporter's Conv+BN fusion
    torch.onnx.export(model, x, path, opset_version=OPSET, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                      do_constant_folding=True, **kw)
    write_f32(os.path.join(out_dir, name + ".input.bin"), x.numpy())
    write_f32(os.path.join(out_dir, name + ".output.bin"), y.numpy())
    ops, opset = onnx_ops(path)
    counts = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    meta = {
        "model": name + ".onnx",
        "description": desc,
        "opset": opset,
        "inputs": [{"name": "input", "shape": list(x.shape), "dtype": "float32",
                    "file": name + ".input.bin"}],
        "outputs": [{"name": "output", "shape": list(y.shape), "dtype": "float32",
                     "file": name + ".output.bin"}],
        "dynamic_axes": {"input": [0], "output": [0]},
        "tolerance": {"max_abs": 1e-4},
        "batchnorm_nodes": "kept" if keep_bn else "folded into Conv by the exporter",
        "ops": dict(sorted(counts.items())),
        "seed": seed,
        "generator": "tools/export_test_models.py (torch %s)" % torch.__version__,
        "output_stats": {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean())},
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("%-13s %7d bytes  in %s out %s  ops %s" % (name, os.path.getsize(path), list(x.shape),
                                                     list(y.shape), ",".join(sorted(counts))))
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "onnx"))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(101)
    export_one("unet", WithSigmoid(UNet()), (2, 1, 64, 64), a.out, 101, False,
               "cellseg UNet (16-32-64) with random weights, Sigmoid output; same ops as "
               "models/cellseg-unet/model.onnx")
    torch.manual_seed(202)
    export_one("resunet_cbam", ResUNetCBAM(), (1, 3, 64, 64), a.out, 202, True,
               "residual UNet with CBAM channel+spatial attention, BatchNormalization nodes "
               "kept, 3-channel input, 2-channel logits")
    torch.manual_seed(303)
    export_one("hrnet_block", HRNetBlock(), (1, 1, 64, 64), a.out, 303, False,
               "HRNet-style 3-branch block: strided convs down, bilinear Resize "
               "(align_corners=False) up, Add fusion, 2-channel logits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
