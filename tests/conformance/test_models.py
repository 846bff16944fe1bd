#!/usr/bin/env python3
"""Whole-model conformance: every tests/data/onnx/*.json reference (a model, a raw float32
input and PyTorch's output) is run through the engine (onnx_run, CPU backend) and compared
with the json's tolerance.max_abs. A model using ops the engine does not support yet is
counted as skipped-unsupported; any other difference fails. Exit 77 if there are no models."""
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SEGQ_BUILD_DIR", os.path.join(SRC, "build"))
RUN = os.path.join(BUILD, "tests", "onnx_run")


def main():
    refs = sorted(glob.glob(os.path.join(SRC, "tests", "data", "onnx", "*.json")))
    if not refs or not os.path.exists(RUN):
        print("no reference models or no onnx_run binary: skipped")
        return 77
    run = passed = failed = skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        for ref in refs:
            j = json.load(open(ref))
            base = os.path.dirname(ref)
            name = os.path.basename(ref)[:-5]
            if len(j["inputs"]) != 1 or len(j["outputs"]) != 1:
                print(f"SKIP {name}: onnx_run feeds one input and reads one output")
                skipped += 1
                continue
            model = os.path.normpath(os.path.join(base, j["model"]))
            inp, outp = j["inputs"][0], j["outputs"][0]
            out_file = os.path.join(tmp, name + ".bin")
            for flags in ([], ["--no-fold", "--no-fuse"]):
                cmd = [RUN, model, "--batch", str(inp["shape"][0]), "--threads", "2",
                       "--iters", "1", "--in", os.path.join(base, inp["file"]),
                       "--out", out_file] + flags
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if p.returncode == 3:
                    break
                if p.returncode != 0:
                    break
                got = np.fromfile(out_file, np.float32)
                want = np.fromfile(os.path.join(base, outp["file"]), np.float32)
                tol = j.get("tolerance", {}).get("max_abs", 1e-4)
                diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                if diff > tol:
                    break
            if p.returncode == 3:
                skipped += 1
                print(f"SKIP {name}: {p.stderr.strip()[:300]}")
                continue
            run += 1
            if p.returncode != 0:
                failed += 1
                print(f"FAIL {name}: onnx_run exit {p.returncode}: {p.stderr.strip()[:300]}")
            elif diff > tol:
                failed += 1
                print(f"FAIL {name} {' '.join(flags)}: max |engine - torch| = {diff:.3g} > {tol}")
            else:
                passed += 1
                print(f"PASS {name}: max |engine - torch| = {diff:.3g} (tolerance {tol})")
    print(f"run {run}, passed {passed}, failed {failed}, skipped-unsupported {skipped}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
