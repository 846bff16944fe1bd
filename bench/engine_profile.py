#!/usr/bin/python3
"""engine_profile: where the segq CPU engine's time goes, per op type, for one model and batch:
runs bench/engine_bench with SEGQ_ENGINE_PROFILE=1 (one line per program step on stderr:
oneDNN primitives, reference kernels, reorders, copies), drops the first (cold) runs and sums
the rest per op type; reorders and output copies are listed apart, since they are the cost of
layout changes rather than of an op.

    /usr/bin/python3 bench/engine_profile.py MODEL.onnx [--build build] [--batch 1]
        [--threads 2] [--runs 5] [--top 12] [--cpu]
"""

import argparse
import collections
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="warm runs summed (2 cold runs first)")
    ap.add_argument("--top", type=int, default=12, help="slowest single steps listed")
    ap.add_argument("--cpu", action="store_true",
                    help="sum the calling thread's CPU time instead of wall time (with "
                         "--threads 1 that is all of the step's work: steady on a busy machine)")
    a = ap.parse_args()
    env = dict(os.environ, SEGQ_ENGINE_PROFILE="1", OMP_NUM_THREADS=str(a.threads))
    cmd = [os.path.join(a.build, "bench", "engine_bench"), a.model, "--batch", str(a.batch),
           "--threads", str(a.threads), "--warmup", "2", "--iters", str(a.runs), "--repeats", "1"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stdout + p.stderr)
        return 1
    steps = [l.split() for l in p.stderr.splitlines() if l.startswith("engine profile:")]
    total_runs = 2 + a.runs
    if len(steps) % total_runs:
        sys.stderr.write("unexpected profile line count\n")
        return 1
    per_run = len(steps) // total_runs
    warm = steps[2 * per_run:]
    by_op, by_step = collections.Counter(), collections.Counter()
    for s in warm:
        if s[-1] == "thread-cpu-ms":  # the cpu backend's steps: wall ms, then thread CPU ms
            name, op = s[2], s[-5]
            ms = float(s[-2]) if a.cpu else float(s[-4])
        else:  # the node-by-node reference executor: wall ms only
            name, op, ms = s[2], s[-3], float(s[-2])
        by_op[op] += ms / a.runs
        by_step[(name, op)] += ms / a.runs
    total = sum(by_op.values())
    what = "thread CPU ms" if a.cpu else "ms"
    print(f"{a.model} batch {a.batch} threads {a.threads}: {total:.2f} {what} per run "
          f"(mean of {a.runs} warm runs, {per_run} steps)")
    print(f"| op | {what} per run | share |")
    print("|---|---:|---:|")
    for op, ms in by_op.most_common():
        print(f"| {op} | {ms:.2f} | {100 * ms / total:.1f} % |")
    print(f"\nslowest steps:")
    for (name, op), ms in by_step.most_common(a.top):
        print(f"  {ms:8.3f} ms  {op:14s} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
