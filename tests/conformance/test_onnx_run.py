#!/usr/bin/python3
"""onnx_run plans models whose H/W are symbolic: tests/conformance/symbolic_hw.onnx (input
[N, 1, H, W]) fails without --shape with a message naming the symbolic dim, runs with
--shape 48x40 and reports the output shape [2, 4, 48, 40]; --help documents --shape."""
import json
import os
import subprocess
import sys

SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SEGQ_BUILD_DIR", os.path.join(SRC, "build"))
RUN = os.path.join(BUILD, "tests", "onnx_run")
MODEL = os.path.join(SRC, "tests", "conformance", "symbolic_hw.onnx")


def run(*args):
    return subprocess.run([RUN, *args], capture_output=True, text=True, timeout=120)


def main():
    if not os.access(RUN, os.X_OK):
        print("skip: onnx_run is not built")
        return 77
    bad = 0
    h = run("--help")
    if h.returncode != 0 or "--shape" not in h.stdout:
        print("FAIL --help: exit %d, output %r" % (h.returncode, h.stdout[:200]))
        bad += 1
    p = run(MODEL, "--batch", "2", "--iters", "1")
    if p.returncode == 0 or "symbolic" not in p.stderr or "--shape" not in p.stderr:
        print("FAIL without --shape: exit %d, stderr %r" % (p.returncode, p.stderr))
        bad += 1
    q = run(MODEL, "--batch", "2", "--shape", "48x40", "--iters", "1")
    shape = json.loads(q.stdout.strip().splitlines()[-1])["shape"] if q.returncode == 0 else None
    if shape != [2, 4, 48, 40]:
        print("FAIL with --shape 48x40: exit %d, shape %s, stderr %r" % (q.returncode, shape,
                                                                         q.stderr))
        bad += 1
    r = run(MODEL, "--shape", "48by40")
    if r.returncode != 2:
        print("FAIL --shape 48by40 should be a usage error, exit %d" % r.returncode)
        bad += 1
    print("%d passed, %d failed" % (4 - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
