#!/usr/bin/python3
"""engine_vs_ort: segq's ONNX engine (bench/engine_bench, CPU backend on oneDNN) against ONNX
Runtime's CPU execution provider timed through its C API (bench/ort_bench, the library that
onnxruntime-node ships) on the same models, batch sizes and thread count, in the same run: for
every (model, batch) the two alternate (segq first on even repeats, ORT first on odd ones), one
process per measurement, so slow drift of a shared machine's load hits both. One command gives
every figure of docs/BENCHMARKS.md's engine section:

    /usr/bin/python3 bench/engine_vs_ort.py [--build build] [--threads 2] [--repeats 3]
        [--models all|cellseg,unet512,resnet18,...] [--batches default|1,8,16] [--json out.jsonl]

Models (bench/models/*.onnx are made by tools/export_bench_models.py when missing; it needs
torch/torchvision, `SEGQ_BOOTSTRAP_EXTRA=export tools/bootstrap.sh`): cellseg (b1/8/16),
unet512 (b1/8), and torchvision's resnet18, mobilenet_v3_small, deeplabv3_mobilenet_v3_large,
lraspp_mobilenet_v3_large, fcn_resnet50 (b1). Threads: segq's CPU backend gets --threads (its
OpenMP team); ORT gets intra-op --threads, inter-op 1, all graph optimizations; both run with
OMP_NUM_THREADS=--threads. Each measurement: one warm-up batch, then N timed batches (N = an
images budget / batch, at least 2), ms/batch = their mean. Reported: the median over repeats and
ratio = segq time / ORT time (< 1: segq faster), the geometric mean of the torchvision ratios,
and the load average seen.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"

# name -> (path, images per measurement, default batches, group)
MODELS = {
    "cellseg": ("models/cellseg-unet/model.onnx", 32, [1, 8, 16], "unet"),
    "unet512": ("bench/models/unet512.onnx", 4, [1, 8], "unet"),
    "resnet18": ("bench/models/resnet18.onnx", 16, [1], "torchvision"),
    "mobilenet_v3_small": ("bench/models/mobilenet_v3_small.onnx", 64, [1], "torchvision"),
    "deeplabv3_mobilenet_v3_large": ("bench/models/deeplabv3_mobilenet_v3_large.onnx", 16, [1],
                                     "torchvision"),
    "lraspp_mobilenet_v3_large": ("bench/models/lraspp_mobilenet_v3_large.onnx", 32, [1],
                                  "torchvision"),
    "fcn_resnet50": ("bench/models/fcn_resnet50.onnx", 4, [1], "torchvision"),
}


def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output:\n" + text)


def run(cmd, env):
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
        sys.exit(1)
    return last_json(p.stdout)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="all")
    ap.add_argument("--json", help="also append every measurement as a JSON line here")
    args = ap.parse_args()

    names = list(MODELS) if args.models == "all" else args.models.split(",")
    missing = [n for n in names if not os.path.exists(os.path.join(ROOT, MODELS[n][0]))]
    if missing:
        subprocess.run([PY, os.path.join(ROOT, "tools", "export_bench_models.py"), "--models",
                        ",".join(missing)], check=True)
    seg_bin = os.path.join(args.build, "bench", "engine_bench")
    ort_bin = os.path.join(args.build, "bench", "ort_bench")
    env = dict(os.environ)
    t = str(args.threads)
    env.update(OMP_NUM_THREADS=t, SEGQ_SOURCE_DIR=ROOT)
    env.pop("SEGQ_ENGINE_PROFILE", None)
    out = open(args.json, "a") if args.json else None
    rows = []
    print(f"threads {t}; load at start {loadavg()}", flush=True)
    for name in names:
        path, images, default_batches, group = MODELS[name]
        batches = default_batches if args.batches == "default" else \
            [int(b) for b in args.batches.split(",")]
        for b in batches:
            common = [path, "--batch", str(b), "--threads", t, "--warmup", "1", "--iters",
                      str(max(2, images // b)), "--repeats", "1"]
            seg_ms, ort_ms, loads = [], [], []
            for r in range(args.repeats):
                order = [("segq", [seg_bin] + common), ("ort", [ort_bin] + common)]
                if r % 2:
                    order.reverse()
                for who, cmd in order:
                    loads.append(loadavg())
                    res = run(cmd, env)
                    ms = res["ms_median"]
                    (seg_ms if who == "segq" else ort_ms).append(ms)
                    rec = {"model": name, "batch": b, "threads": args.threads, "repeat": r,
                           "runtime": res["runtime"], "ms_per_batch": ms,
                           "images_per_s": b * 1000.0 / ms, "load": loads[-1],
                           "time": time.strftime("%H:%M:%S", time.gmtime())}
                    if out:
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                    print(f"  {name} b{b} r{r} {who}: {ms:.2f} ms/batch "
                          f"{rec['images_per_s']:.2f} img/s (load {rec['load']})", flush=True)
            s, o = statistics.median(seg_ms), statistics.median(ort_ms)
            rows.append((name, group, b, s, o, s / o, loads[0], loads[-1]))
    print(f"load at end {loadavg()}\n")
    print("| model | batch | segq ms/batch | ORT ms/batch | segq / ORT time | load (1/5/15 min) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, group, b, s, o, ratio, l0, l1 in rows:
        print(f"| {name} | {b} | {s:.2f} | {o:.2f} | {ratio:.2f}x | {l0} .. {l1} |")
    tv = [r[5] for r in rows if r[1] == "torchvision"]
    if tv:
        gm = math.exp(sum(math.log(x) for x in tv) / len(tv))
        print(f"\ntorchvision geometric mean segq / ORT: {gm:.2f}x over {len(tv)} models "
              f"(max {max(tv):.2f}x)")
    un = [r[5] for r in rows if r[1] == "unet"]
    if un:
        print(f"UNets (cellseg, unet512): max segq / ORT {max(un):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
