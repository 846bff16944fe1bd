#!/usr/bin/python3
"""The segq engine (tests/onnx_run, CPU backend) against ONNX Runtime (tests/ort/run_ort.js,
onnxruntime-node) on the same seeded random inputs: tests/data/onnx/{unet,resunet_cbam,
hrnet_block}.onnx, the fp16 exports made from them (tools/make_fp16_models.py: torch .half()
style, onnxconverter keep_io_types style, fp16 weights + Cast), the dynamically quantized unet
(tools/make_quant_models.py: DynamicQuantizeLinear + ConvInteger) and models/cellseg-unet/model.onnx,
max abs difference <= 1e-4 (for a model with float16 outputs: two float16 steps at its largest
output, as ORT computes some of its ops in float16 where the engine computes in float32).
Installs nothing: exits 77 unless tests/ort/node_modules/onnxruntime-node and node exist
(tools/bootstrap.sh runs `npm ci` there). A model whose ops the engine lacks (onnx_run exit 3)
is reported with the ops that block it and does not fail the test; at least one model must
load and agree."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SRC = os.environ.get("SEGQ_SOURCE_DIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.environ.get("SEGQ_BUILD_DIR") or os.path.join(SRC, "build")
ONNX_RUN = os.path.join(BUILD, "tests", "onnx_run")
ORT_DIR = os.path.join(SRC, "tests", "ort")
TOL = 1e-4
DATA = os.path.join(SRC, "tests", "data", "onnx")
# (label, model path, input shape); shapes from tests/data/onnx/NAME.json and docs/models.md.
MODELS = [
    ("unet", os.path.join(DATA, "unet.onnx"), None),
    ("resunet_cbam", os.path.join(DATA, "resunet_cbam.onnx"), None),
    ("hrnet_block", os.path.join(DATA, "hrnet_block.onnx"), None),
    ("resunet_cbam_fp16", os.path.join(DATA, "resunet_cbam_fp16.onnx"), None),
    ("unet_fp16io", os.path.join(DATA, "unet_fp16io.onnx"), None),
    ("resunet_cbam_fp16w", os.path.join(DATA, "resunet_cbam_fp16w.onnx"), None),
    ("unet_dynq", os.path.join(DATA, "unet_dynq.onnx"), None),
    ("cellseg-unet", os.path.join(SRC, "models", "cellseg-unet", "model.onnx"), [3, 1, 256, 256]),
]


def skip(why):
    print("skip: " + why)
    sys.exit(77)


def meta_of(label):
    path = os.path.join(DATA, label + ".json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def shape_of(label, shape):
    return shape or meta_of(label)["inputs"][0]["shape"]


def tolerance_of(label, got, want):
    """TOL, or for float16 outputs two float16 steps at the largest output value (both runtimes
    round the output to float16; ORT also rounds some intermediates)."""
    outs = meta_of(label).get("outputs", [{}])
    if outs[0].get("dtype") != "float16":
        return TOL
    top = float(max(np.abs(got).max(), np.abs(want).max()))
    return max(TOL, 2 * float(np.spacing(np.float16(top))))


def main():
    if not os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        skip("tests/ort/node_modules/onnxruntime-node is not installed "
             "(npm ci --ignore-scripts --prefix tests/ort)")
    if shutil.which("node") is None:
        skip("node is not installed")
    if not os.access(ONNX_RUN, os.X_OK):
        skip("%s is not built (set SEGQ_BUILD_DIR)" % ONNX_RUN)
    rng = np.random.default_rng(20261124)
    agreed, blocked, failed = [], [], []
    with tempfile.TemporaryDirectory(prefix="segq-ort-") as tmp:
        for label, model, shape in MODELS:
            shape = shape_of(label, shape)
            x = rng.standard_normal(int(np.prod(shape))).astype(np.float32)
            inp = os.path.join(tmp, label + ".in.bin")
            out_c = os.path.join(tmp, label + ".c.bin")
            out_o = os.path.join(tmp, label + ".ort.bin")
            x.tofile(inp)
            p = subprocess.run([ONNX_RUN, model, "--batch", str(shape[0]), "--threads", "2",
                                "--iters", "1", "--in", inp, "--out", out_c],
                               capture_output=True, text=True, timeout=300)
            if p.returncode == 3:
                why = p.stderr.strip().replace("load: ", "")
                print("BLOCKED %-13s the engine lacks ops: %s" % (label, why))
                blocked.append(label)
                continue
            if p.returncode != 0:
                print("FAIL    %-13s onnx_run exit %d: %s" % (label, p.returncode, p.stderr.strip()))
                failed.append(label)
                continue
            q = subprocess.run(["node", os.path.join(ORT_DIR, "run_ort.js"), model, inp,
                                ",".join(str(d) for d in shape), out_o, "--threads", "2"],
                               capture_output=True, text=True, timeout=300)
            if q.returncode == 77:
                skip("onnxruntime-node does not load: " + (q.stdout + q.stderr).strip())
            if q.returncode != 0:
                print("FAIL    %-13s run_ort.js exit %d: %s" % (label, q.returncode, q.stderr.strip()))
                failed.append(label)
                continue
            got, want = np.fromfile(out_c, np.float32), np.fromfile(out_o, np.float32)
            if got.shape != want.shape:
                print("FAIL    %-13s output sizes differ: engine %d, ORT %d values"
                      % (label, got.size, want.size))
                failed.append(label)
                continue
            diff = float(np.abs(got - want).max())
            tol = tolerance_of(label, got, want)
            ok = diff <= tol
            print("%-7s %-18s input %-16s max abs diff %.3g (tolerance %g)"
                  % ("ok" if ok else "FAIL", label, "x".join(map(str, shape)), diff, tol))
            (agreed if ok else failed).append(label)
    print("%d agree with ONNX Runtime, %d blocked by missing ops (%s), %d failed"
          % (len(agreed), len(blocked), ", ".join(blocked) or "none", len(failed)))
    if failed:
        return 1
    return 0 if agreed else 77


if __name__ == "__main__":
    sys.exit(main())
