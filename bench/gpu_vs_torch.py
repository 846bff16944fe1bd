#!/usr/bin/env python3
"""gpu_vs_torch: segq's engine against PyTorch eager on the same models, batch sizes, precision
and device, in one run (issue 7 Part B item 3). For each model the PyTorch module is built here
(seeded random weights: speed does not depend on them), exported to ONNX (opset 13, the
TorchScript exporter), and then, alternating per configuration:

  engine   build/bench/engine_bench MODEL.onnx --device D --precision P --batch B (the engine
           replays a captured CUDA graph after its warm-up)
  eager    torch, model.eval() in torch.inference_mode(), channels_last, fp16 = model.half();
           timed with CUDA events (synchronized wall clock on the CPU), median of repeats
  compile  torch.compile(model) when it works here, within a time budget (its first call
           compiles; only the steady state is timed)

Models: cellseg-unet (the shipped architecture, tools/train_cellseg.py's UNet), unet512 (4-level
UNet at 512x512, tools/export_bench_models.py) and hrnet_w18 (timm's HRNet-W18 features plus a
segmentation head, 512x512; needs timm). Prints a table and writes JSON (--json) and markdown
(--md). `--quick` (fewer iterations, one batch) is what the CPU dry run here uses.

  python3 bench/gpu_vs_torch.py --device cuda --json out/bench.json --md out/bench.md
  /usr/bin/python3 bench/gpu_vs_torch.py --device cpu --quick --precisions fp32
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_model(name):
    """(torch module, input shape [C, H, W]) of a benchmark model, weights seeded."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.manual_seed(0)
    if name == "cellseg-unet":
        return load_tool("train_cellseg").UNet(), (1, 256, 256)
    if name == "unet512":
        return load_tool("export_bench_models").UNet4(), (1, 512, 512)
    if name == "hrnet_w18":
        import timm

        class HRNetSeg(nn.Module):
            """HRNet-W18's four resolutions upsampled to 1/4, concatenated, 1x1 conv head."""

            def __init__(self):
                super().__init__()
                self.body = timm.create_model("hrnet_w18", pretrained=False, features_only=True,
                                              out_indices=(1, 2, 3, 4))
                ch = sum(self.body.feature_info.channels())
                self.head = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch),
                                          nn.ReLU(inplace=True), nn.Conv2d(ch, 1, 1))

            def forward(self, x):
                feats = self.body(x)
                size = feats[0].shape[-2:]
                up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                 align_corners=False) for f in feats[1:]]
                y = self.head(torch.cat(up, 1))
                y = F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)
                return torch.sigmoid(y)

        return HRNetSeg(), (3, 512, 512)
    raise ValueError("unknown model %s" % name)


def export(model, shape, path):
    import torch
    model.eval()
    x = torch.randn(1, *shape)
    kw = dict(input_names=["input"], output_names=["output"], opset_version=13,
              dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    try:  # torch >= 2.5 defaults to the dynamo exporter; the TorchScript one is what we test
        torch.onnx.export(model, x, path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(model, x, path, **kw)


def time_torch(model, shape, batch, device, fp16, iters, repeats, compiled=False):
    """images/s (median over repeats) of model on device; (value, note)."""
    import torch
    m = model.to(device).eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, *shape, device=device).to(memory_format=torch.channels_last)
    if fp16:
        m, x = m.half(), x.half()
    note = ""
    if compiled:
        if not hasattr(torch, "compile"):
            return None, "torch.compile missing"
        m = torch.compile(m)
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        t0 = time.monotonic()
        for _ in range(2 if compiled else 3):  # warm-up (compile happens here)
            m(x)
        if cuda:
            torch.cuda.synchronize()
        if compiled:
            note = "compile+warm-up %.1f s" % (time.monotonic() - t0)
        per = []
        for _ in range(repeats):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(iters):
                    m(x)
                b.record()
                torch.cuda.synchronize()
                per.append(a.elapsed_time(b) / iters)
            else:
                t = time.monotonic()
                for _ in range(iters):
                    m(x)
                per.append((time.monotonic() - t) * 1000 / iters)
    per.sort()
    ms = per[(len(per) - 1) // 2]
    return batch * 1000.0 / ms, note


def time_engine(exe, onnx, batch, device, fp16, iters, repeats):
    argv = [exe, onnx, "--batch", str(batch), "--device", device, "--precision",
            "fp16" if fp16 else "fp32", "--iters", str(iters), "--repeats", str(repeats),
            "--warmup", "3"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["failed"])[-1][:200]
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    note = "" if r.get("precision") == ("fp16" if fp16 else "fp32") else "ran %s" % r["precision"]
    return r["images_per_s"], note


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda or cpu (default %(default)s)")
    ap.add_argument("--models", default="cellseg-unet,unet512,hrnet_w18")
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", default="8", help="batch sizes also timed with torch.compile "
                    "('' = none; default %(default)s)")
    ap.add_argument("--compile-budget-s", type=float, default=120,
                    help="stop trying torch.compile after this much compile time")
    ap.add_argument("--engine-bench", default=os.path.join(ROOT, "build", "bench", "engine_bench"))
    ap.add_argument("--quick", action="store_true", help="2 iterations, 1 repeat, batch 1")
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args()
    if args.quick:
        args.iters, args.repeats, args.batches = 2, 1, "1"
        if args.compile == "8":
            args.compile = ""
    import torch
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and \
        torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and gpu == "cpu":
        print("gpu_vs_torch: no CUDA device for PyTorch", file=sys.stderr)
        return 77
    info = {"gpu": gpu, "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": args.device, "results": []}
    print("gpu_vs_torch on %s (torch %s)" % (gpu, torch.__version__))
    tmp = tempfile.mkdtemp(prefix="segq-bench-")
    compile_spent = 0.0
    batches = [int(b) for b in args.batches.split(",") if b]
    compile_b = {int(b) for b in args.compile.split(",") if b}
    for name in [m for m in args.models.split(",") if m]:
        try:
            model, shape = build_model(name)
        except Exception as e:  # timm missing, ...
            print("%s: skipped (%s)" % (name, e))
            info["results"].append({"model": name, "skipped": str(e)})
            continue
        onnx = os.path.join(tmp, name + ".onnx")
        export(model, shape, onnx)
        for prec in [p for p in args.precisions.split(",") if p]:
            fp16 = prec == "fp16"
            for b in batches:
                row = {"model": name, "input": list(shape), "precision": prec, "batch": b}
                eng, enote = time_engine(args.engine_bench, onnx, b, args.device, fp16, args.iters,
                                         args.repeats)
                try:
                    eag, anote = time_torch(model, shape, b, args.device, fp16, args.iters,
                                            args.repeats)
                except Exception as e:  # e.g. fp16 convolutions on a CPU
                    eag, anote = None, "eager failed: %s" % str(e).splitlines()[0][:120]
                row.update(engine_ips=eng, engine_note=enote, eager_ips=eag, eager_note=anote,
                           ratio=(eng / eag) if eng and eag else None)
                if b in compile_b and compile_spent < args.compile_budget_s:
                    t0 = time.monotonic()
                    try:
                        comp, cnote = time_torch(model, shape, b, args.device, fp16, args.iters,
                                                 args.repeats, compiled=True)
                    except Exception as e:
                        comp, cnote = None, "torch.compile failed: %s" % str(e).splitlines()[0][:120]
                    compile_spent += time.monotonic() - t0
                    row.update(compile_ips=comp, compile_note=cnote)
                info["results"].append(row)
                print("%-13s %s b%-3d engine %9s  eager %9s  ratio %5s  %s%s" % (
                    name, prec, b, "%.1f" % eng if eng else "-", "%.1f" % eag if eag else "-",
                    "%.2f" % row["ratio"] if row["ratio"] else "-", enote,
                    ("  compile %.1f" % row["compile_ips"]) if row.get("compile_ips") else
                    ("  " + row["compile_note"] if row.get("compile_note") else "")))
                sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write("GPU: %s, torch %s, cuDNN %s. images/s (median of %d repeats x %d "
                    "iterations); ratio = engine / eager.\n\n" % (gpu, info["torch"], info["cudnn"],
                                                                  args.repeats, args.iters))
            f.write("| model | precision | batch | segq engine | PyTorch eager | ratio | "
                    "torch.compile |\n|---|---|---|---|---|---|---|\n")
            for r in info["results"]:
                if r.get("skipped"):
                    f.write("| %s | — | — | skipped: %s | | | |\n" % (r["model"], r["skipped"]))
                    continue
                f.write("| %s | %s | %d | %s | %s | %s | %s |\n" % (
                    r["model"], r["precision"], r["batch"],
                    "%.1f" % r["engine_ips"] if r["engine_ips"] else "failed: " + r["engine_note"],
                    "%.1f" % r["eager_ips"] if r["eager_ips"] else "-",
                    "%.2fx" % r["ratio"] if r["ratio"] else "-",
                    "%.1f" % r["compile_ips"] if r.get("compile_ips") else r.get("compile_note", "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
