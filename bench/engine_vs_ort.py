#!/usr/bin/python3
"""engine_vs_ort: segq's ONNX engine (bench/engine_bench, CPU backend) against onnxruntime-node
(tests/ort/bench_ort.js, CPU EP) on the same models, batch sizes and thread count, in the same
run: for every (model, batch) the two alternate (segq first on even repeats, ORT first on odd
ones), one process per measurement, so slow drift of a shared machine's load hits both.

    /usr/bin/python3 bench/engine_vs_ort.py [--bin build/bench/engine_bench] [--threads 2]
        [--batches 1,8,16] [--repeats 3] [--models cellseg,unet512] [--json out.jsonl]

Threads: segq's CPU backend gets --threads (its pool; it also calls openblas_set_num_threads);
ORT gets intraOpNumThreads=--threads, interOpNumThreads=1 (tests/ort/ort_common.js); both
processes run with OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=--threads. Each measurement is one
warm-up batch then N timed batches (N = images budget / batch, at least 1), its ms/batch the
mean of those. Reported per runtime: the median over repeats; ratio = segq time per image /
ORT time per image (< 1: segq faster). bench/models/unet512.onnx is generated when missing.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"

# name -> (path, images per measurement: keeps one measurement at a few seconds on 2 cores)
MODELS = {
    "cellseg": ("models/cellseg-unet/model.onnx", 32),
    "unet512": ("bench/models/unet512.onnx", 4),
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
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench", "engine_bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="cellseg,unet512")
    ap.add_argument("--json", help="also append every measurement as a JSON line here")
    args = ap.parse_args()

    if not os.path.exists(os.path.join(ROOT, MODELS["unet512"][0])):
        subprocess.run([PY, os.path.join(ROOT, "tools", "export_bench_models.py")], check=True)
    env = dict(os.environ)
    t = str(args.threads)
    env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
    env.pop("SEGQ_ENGINE_PROFILE", None)
    batches = [int(b) for b in args.batches.split(",")]
    out = open(args.json, "a") if args.json else None
    rows = []
    print(f"threads {t}; load at start {loadavg()}", flush=True)
    for name in args.models.split(","):
        path, images = MODELS[name]
        for b in batches:
            iters = str(max(1, images // b))
            seg_cmd = [args.bin, path, "--batch", str(b), "--threads", t, "--warmup", "1",
                       "--iters", iters, "--repeats", "1"]
            ort_cmd = ["node", "tests/ort/bench_ort.js", path, "--batch", str(b), "--threads", t,
                       "--warmup", "1", "--iters", iters]
            seg_ms, ort_ms, loads = [], [], []
            for r in range(args.repeats):
                order = [("segq", seg_cmd), ("ort", ort_cmd)]
                if r % 2:
                    order.reverse()
                for who, cmd in order:
                    loads.append(loadavg())
                    res = run(cmd, env)
                    ms = res["ms_median"] if who == "segq" else res["ms_mean"]
                    (seg_ms if who == "segq" else ort_ms).append(ms)
                    rec = {"model": name, "batch": b, "threads": args.threads, "repeat": r,
                           "runtime": who, "ms_per_batch": ms, "images_per_s": b * 1000.0 / ms,
                           "load": loads[-1], "time": time.strftime("%H:%M:%S", time.gmtime())}
                    if out:
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                    print(f"  {name} b{b} r{r} {who}: {ms:.1f} ms/batch "
                          f"{rec['images_per_s']:.2f} img/s (load {rec['load']})", flush=True)
            s, o = statistics.median(seg_ms), statistics.median(ort_ms)
            rows.append((name, b, b * 1000.0 / s, b * 1000.0 / o, s / o, loads[0], loads[-1]))
    print(f"load at end {loadavg()}\n")
    print("| model | batch | segq images/s | ORT images/s | segq/ORT time per image | load (1/5/15 min) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, b, si, oi, ratio, l0, l1 in rows:
        print(f"| {name} | {b} | {si:.2f} | {oi:.2f} | {ratio:.2f}x | {l0} .. {l1} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
