#!/usr/bin/python3
"""engine_vs_ort: segq's ONNX engine (bench/engine_bench, CPU backend on oneDNN) against ONNX
Runtime's CPU execution provider timed through its C API (bench/ort_bench, the library that
onnxruntime-node ships) on the same models, batch sizes and thread count, in the same run: for
every (model, batch) the two alternate (segq first on even repeats, ORT first on odd ones), one
process per measurement, so slow drift of a shared machine's load hits both. One command gives
every figure of docs/BENCHMARKS.md's engine section:

    /usr/bin/python3 bench/engine_vs_ort.py [--build build] [--threads 2] [--repeats 3]
        [--metric wall|cpu] [--models all|cellseg,unet512,resnet18,...]
        [--batches default|1,8,16] [--json bench/results/DATE-engine-vs-ort.json]

Models (bench/models/*.onnx are made by tools/export_bench_models.py when missing; it needs
torch/torchvision, `SEGQ_BOOTSTRAP_EXTRA=export tools/bootstrap.sh`): cellseg (b1/8/16),
unet512 (b1/8), and torchvision's resnet18, mobilenet_v3_small, deeplabv3_mobilenet_v3_large,
lraspp_mobilenet_v3_large, fcn_resnet50 (b1). Threads: segq's CPU backend gets --threads (its
OpenMP team); ORT gets intra-op --threads, inter-op 1, all graph optimizations; both run with
OMP_NUM_THREADS=--threads. Each measurement: one warm-up batch, then N timed batches (N = an
images budget / batch, at least 2); per batch both the wall time and the process's CPU time
(getrusage user + sys, all threads) are recorded. --metric picks which one the ratio uses:
wall (the aim's figure, for a quiet machine) or cpu (the steadier signal on a shared machine;
use it with --threads 1, where neither runtime has spinning or idle team threads). Reported:
the median over repeats, ratio = segq / ORT (< 1: segq faster), the geometric mean of the
torchvision ratios, the load average seen, and the outputs' agreement: the first repeat of
each row writes both runtimes' outputs (same input pattern) and the max abs difference is
reported next to the ratio. Every measurement, the agreement and the summary go to one JSON
file (--json; default bench/results/<UTC date>-engine-vs-ort-<metric>-t<threads>.json).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

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


def max_abs_diff(a_path, b_path):
    a = np.fromfile(a_path, dtype=np.float32)
    b = np.fromfile(b_path, dtype=np.float32)
    if a.size != b.size or a.size == 0:
        return None, f"output sizes differ: {a.size} vs {b.size} floats"
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if not np.all(np.isfinite(d)):
        return None, "non-finite outputs"
    return float(d.max()), f"max |ORT output| {scale:.3g}"


def git_commit():
    p = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return p.stdout.strip() + ("+dirty" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="all")
    ap.add_argument("--metric", choices=["wall", "cpu"], default="wall",
                    help="what the ratio compares: wall ms per batch or process CPU ms per batch")
    ap.add_argument("--json", help="raw results file (default bench/results/<date>-engine-vs-ort-"
                                   "<metric>-t<threads>.json)")
    args = ap.parse_args()

    names = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {','.join(unknown)}; known: {','.join(MODELS)}")
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
    key = "cpu_ms_median" if args.metric == "cpu" else "ms_median"
    json_path = args.json or os.path.join(
        ROOT, "bench", "results",
        f"{time.strftime('%Y-%m-%d', time.gmtime())}-engine-vs-ort-{args.metric}-t{t}.json")
    doc = {"tool": "bench/engine_vs_ort.py", "commit": git_commit(), "argv": sys.argv[1:],
           "threads": args.threads, "metric": args.metric, "repeats": args.repeats,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_at_start": loadavg(), "measurements": [], "rows": []}
    tmp = tempfile.mkdtemp(prefix="engine_vs_ort.")
    rows = []
    print(f"threads {t}; metric {args.metric}; load at start {loadavg()}", flush=True)
    for name in names:
        path, images, default_batches, group = MODELS[name]
        batches = default_batches if args.batches == "default" else \
            [int(b) for b in args.batches.split(",")]
        for b in batches:
            common = [path, "--batch", str(b), "--threads", t, "--warmup", "1", "--iters",
                      str(max(2, images // b)), "--repeats", "1"]
            got = {"segq": [], "ort": []}
            loads = []
            outs = {"segq": os.path.join(tmp, "segq.bin"), "ort": os.path.join(tmp, "ort.bin")}
            for r in range(args.repeats):
                order = [("segq", seg_bin), ("ort", ort_bin)]
                if r % 2:
                    order.reverse()
                for who, binary in order:
                    cmd = [binary] + common + (["--out", outs[who]] if r == 0 else [])
                    loads.append(loadavg())
                    res = run(cmd, env)
                    got[who].append(res)
                    rec = {"model": name, "batch": b, "threads": args.threads, "repeat": r,
                           "who": who, "runtime": res["runtime"],
                           "ms_per_batch": res["ms_median"],
                           "cpu_ms_per_batch": res.get("cpu_ms_median"),
                           "images_per_s": b * 1000.0 / res["ms_median"],
                           "first_run_ms": res.get("first_run_ms"),
                           "load": loads[-1], "time": time.strftime("%H:%M:%S", time.gmtime())}
                    doc["measurements"].append(rec)
                    print(f"  {name} b{b} r{r} {who}: {res['ms_median']:.2f} ms/batch wall, "
                          f"{res.get('cpu_ms_median', 0):.2f} ms CPU (load {rec['load']})",
                          flush=True)
            diff, note = max_abs_diff(outs["segq"], outs["ort"])
            s = statistics.median(x[key] for x in got["segq"])
            o = statistics.median(x[key] for x in got["ort"])
            sw = statistics.median(x["ms_median"] for x in got["segq"])
            ow = statistics.median(x["ms_median"] for x in got["ort"])
            sc = statistics.median(x["cpu_ms_median"] for x in got["segq"])
            oc = statistics.median(x["cpu_ms_median"] for x in got["ort"])
            row = {"model": name, "group": group, "batch": b, "segq_ms": s, "ort_ms": o,
                   "ratio": s / o, "segq_wall_ms": sw, "ort_wall_ms": ow, "segq_cpu_ms": sc,
                   "ort_cpu_ms": oc, "max_abs_diff": diff, "agreement_note": note,
                   "load_first": loads[0], "load_last": loads[-1]}
            rows.append(row)
            doc["rows"].append(row)
    print(f"load at end {loadavg()}\n")
    what = "CPU ms" if args.metric == "cpu" else "ms"
    print(f"| model | batch | segq {what}/batch | ORT {what}/batch | segq / ORT | "
          f"max abs diff | load (1/5/15 min) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        diff = f"{r['max_abs_diff']:.2g}" if r["max_abs_diff"] is not None else \
            r["agreement_note"]
        print(f"| {r['model']} | {r['batch']} | {r['segq_ms']:.2f} | {r['ort_ms']:.2f} | "
              f"{r['ratio']:.2f}x | {diff} | {r['load_first']} .. {r['load_last']} |")
    summary = {}
    tv = [r["ratio"] for r in rows if r["group"] == "torchvision"]
    if tv:
        gm = math.exp(sum(math.log(x) for x in tv) / len(tv))
        summary.update(torchvision_geomean=gm, torchvision_max=max(tv), torchvision_models=len(tv))
        print(f"\ntorchvision geometric mean segq / ORT: {gm:.2f}x over {len(tv)} models "
              f"(max {max(tv):.2f}x)")
    un = [r["ratio"] for r in rows if r["group"] == "unet"]
    if un:
        summary.update(unet_max=max(un))
        print(f"UNets (cellseg, unet512): max segq / ORT {max(un):.2f}x")
    doc.update(summary=summary, load_at_end=loadavg(),
               finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"raw results: {os.path.relpath(json_path, ROOT)}")
    for p in outs.values():
        if os.path.exists(p):
            os.unlink(p)
    os.rmdir(tmp)
    return 0 if all(r["max_abs_diff"] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
