#!/usr/bin/python3
"""make_fp16_models: float16 variants of the committed test models, written the three ways fp16
ONNX files reach users, so the engine's loader is tested on each without torch or the converter
at test time:

  half      what torch's `model.half()` export writes: graph inputs/outputs, weights, constants
            and every intermediate are float16 (no Cast nodes of its own).
  keep_io   what onnxconverter-common's `convert_float_to_float16(model, keep_io_types=True)`
            writes: float32 inputs/outputs with a Cast to float16 after each input and a Cast
            back to float32 before each output; fp16 weights and intermediates inside.
  weights   fp16 weight storage only: every float initializer is stored as float16 and read
            through a Cast(to=FLOAT) node, so the arithmetic is float32 (what the converter
            leaves for ops on its block list, and what weight-compression tools write).

Inputs the ONNX spec types as float32 whatever the model's precision (Resize's roi and scales,
Upsample's scales) stay float32, as the converter keeps them.

For each variant NAME it writes tests/data/onnx/NAME.{onnx,input.bin,output.bin,json}:
  input.bin   the source model's input rounded to float16 values (stored as float32), so the
              fp16 cast of the input is exact and every runtime sees the same numbers;
  output.bin  the expected result: ONNX Runtime (tests/ort/run_ort.js, fp32) on the SOURCE model
              with each converted weight rounded to float16 (the "rounded twin"). That is the
              fp16 file's arithmetic done in float32, which is what segq's CPU engine promises
              (fp16 exports load and run in fp32), so the tolerance stays at 1e-4; for `half`
              the output is float16, so the reference is rounded to float16 too and the
              tolerance is one float16 step at the largest output value.

    /usr/bin/python3 tools/make_fp16_models.py [--out tests/data/onnx]

Needs the `onnx` Python package (Debian python3-onnx), node and tests/ort/node_modules
(npm ci --ignore-scripts --prefix tests/ort). Not needed to run the tests: the files are
committed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data", "onnx")

# (op_type, input index) the spec types as float32 in every precision
KEEP_FLOAT = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}

VARIANTS = [
    # name, source, mode, description
    ("resunet_cbam_fp16", "resunet_cbam", "half",
     "resunet_cbam as torch's model.half() export writes it: float16 inputs, outputs, weights "
     "and intermediates"),
    ("unet_fp16io", "unet", "keep_io",
     "unet as onnxconverter-common's convert_float_to_float16(keep_io_types=True) writes it: "
     "float32 I/O, Cast to/from float16 at the graph edges, float16 weights inside"),
    ("resunet_cbam_fp16w", "resunet_cbam", "weights",
     "resunet_cbam with float16 weight storage: every float initializer stored as float16 and "
     "read through a Cast(to=FLOAT) node; float32 arithmetic"),
]


def keep_float_names(g):
    names = set()
    for n in g.node:
        for k, name in enumerate(n.input):
            if (n.op_type, k) in KEEP_FLOAT and name:
                names.add(name)
    return names


def to_fp16(model, mode):
    """Returns (converted model, rounded fp32 twin of the source)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    g, tg = m.graph, twin.graph
    keep = keep_float_names(g)
    del g.value_info[:]
    casts = []
    for init, tinit in zip(g.initializer, tg.initializer):
        if init.data_type != TensorProto.FLOAT or init.name in keep:
            continue
        a = numpy_helper.to_array(init)
        h = a.astype(np.float16)
        tinit.CopyFrom(numpy_helper.from_array(h.astype(np.float32), init.name))
        if mode == "weights":
            name = init.name
            init.CopyFrom(numpy_helper.from_array(h, name + "_fp16"))
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name],
                                          name="Cast_" + name + "_to_float", to=TensorProto.FLOAT))
        else:
            init.CopyFrom(numpy_helper.from_array(h, init.name))
    if mode == "weights":
        nodes = casts + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
        return m, twin
    for n, tn in zip(g.node, tg.node):  # Constant nodes holding float tensors
        if n.op_type != "Constant" or n.output[0] in keep:
            continue
        for a, ta in zip(n.attribute, tn.attribute):
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                h = numpy_helper.to_array(a.t).astype(np.float16)
                a.t.CopyFrom(numpy_helper.from_array(h))
                ta.t.CopyFrom(numpy_helper.from_array(h.astype(np.float32)))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    if mode == "half":
        for v in list(g.input) + list(g.output):
            if v.type.tensor_type.elem_type == TensorProto.FLOAT:
                v.type.tensor_type.elem_type = TensorProto.FLOAT16
        return m, twin
    # keep_io: float32 at the edges, Cast nodes inside
    first, last = [], []
    for v in g.input:
        if v.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = v.name + "_fp16"
        for n in g.node:
            for k, name in enumerate(n.input):
                if name == v.name:
                    n.input[k] = inner
        first.append(helper.make_node("Cast", [v.name], [inner], name="graph_input_cast_" + v.name,
                                      to=TensorProto.FLOAT16))
    for v in g.output:
        if v.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = v.name + "_fp16"
        for n in g.node:
            for k, name in enumerate(n.output):
                if name == v.name:
                    n.output[k] = inner
        last.append(helper.make_node("Cast", [inner], [v.name], name="graph_output_cast_" + v.name,
                                     to=TensorProto.FLOAT))
    nodes = first + list(g.node) + last
    del g.node[:]
    g.node.extend(nodes)
    return m, twin


def run_ort(model_path, inp, shape, out):
    subprocess.run(["node", os.path.join(ROOT, "tests", "ort", "run_ort.js"), model_path, inp,
                    ",".join(map(str, shape)), out, "--threads", "1"], check=True,
                   capture_output=True, text=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DATA)
    a = ap.parse_args(argv)
    for name, src, mode, desc in VARIANTS:
        meta_src = json.load(open(os.path.join(DATA, src + ".json")))
        model = onnx.load(os.path.join(DATA, src + ".onnx"))
        fp16, twin = to_fp16(model, mode)
        onnx.checker.check_model(fp16)
        path = os.path.join(a.out, name + ".onnx")
        onnx.save(fp16, path)
        shape = meta_src["inputs"][0]["shape"]
        x = np.fromfile(os.path.join(DATA, meta_src["inputs"][0]["file"]), "<f4")
        x = x.astype(np.float16).astype("<f4")
        x.tofile(os.path.join(a.out, name + ".input.bin"))
        with tempfile.TemporaryDirectory() as tmp:
            tp = os.path.join(tmp, "twin.onnx")
            onnx.save(twin, tp)
            run_ort(tp, os.path.join(a.out, name + ".input.bin"), shape,
                    os.path.join(a.out, name + ".output.bin"))
        y = np.fromfile(os.path.join(a.out, name + ".output.bin"), "<f4")
        tol = 1e-4
        if mode == "half":  # the file's output is float16: so is the reference
            y = y.astype(np.float16).astype("<f4")
            y.tofile(os.path.join(a.out, name + ".output.bin"))
            # one float16 step at the largest output: a value computed in float32 that lands
            # next to a rounding boundary may round to the other neighbour
            tol = max(tol, float(np.spacing(np.float16(np.abs(y).max()))))
        counts = {}
        for n in fp16.graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        io_type = "float16" if mode == "half" else "float32"
        meta = {
            "model": name + ".onnx",
            "description": desc,
            "opset": meta_src["opset"],
            "inputs": [dict(meta_src["inputs"][0], dtype=io_type, file=name + ".input.bin")],
            "outputs": [dict(meta_src["outputs"][0], dtype=io_type, file=name + ".output.bin")],
            "dynamic_axes": meta_src.get("dynamic_axes", {}),
            "tolerance": {"max_abs": tol},
            "fp16": {"mode": mode, "source": src + ".onnx",
                     "reference": "ONNX Runtime fp32 on the source model with its weights "
                                  "rounded to float16 (the fp16 file's arithmetic in float32)"},
            "ops": dict(sorted(counts.items())),
            "generator": "tools/make_fp16_models.py (onnx %s)" % onnx.__version__,
            "output_stats": {"min": float(y.min()), "max": float(y.max()),
                             "mean": float(y.mean())},
        }
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        print("%-20s %7d bytes  %-8s ops %s" % (name, os.path.getsize(path), mode,
                                              ",".join(sorted(counts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
