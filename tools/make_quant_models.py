#!/usr/bin/python3
"""make_quant_models: a dynamically quantized variant of the committed unet test model, as
onnxruntime.quantization.quantize_dynamic writes one (that package is not installed here, so
the rewrite is done with the `onnx` package, op for op what quantize_dynamic emits for Conv):

    x --DynamicQuantizeLinear--> x_q (uint8), x_scale, x_zp
    W  quantized once per tensor to uint8 (asymmetric, zero point w_zp: ONNX Runtime's CPU
       ConvInteger takes uint8 weights), scale w_scale
    y = Cast<float>(ConvInteger(x_q, W_q, x_zp, w_zp)) * (x_scale * w_scale) + bias

Writes tests/data/onnx/unet_dynq.{onnx,input.bin,output.bin,json}; the reference output is ONNX
Runtime's on this file (tests/ort/run_ort.js): quantized arithmetic is defined by the rounding
of DynamicQuantizeLinear, so the tolerance allows a few quantization steps.

    /usr/bin/python3 tools/make_quant_models.py
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data", "onnx")


def quantize_dynamic(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        lo, hi = min(0.0, float(w.min())), max(0.0, float(w.max()))
        ws = (hi - lo) / 255.0 or 1.0
        wzp = int(np.clip(np.round(-lo / ws), 0, 255))
        wq = np.clip(np.round(w / ws) + wzp, 0, 255).astype(np.uint8)
        p = n.name.replace("/", "_") or n.output[0]
        g.initializer.extend([numpy_helper.from_array(wq, p + "_Wq"),
                              numpy_helper.from_array(np.array(wzp, np.uint8), p + "_Wzp"),
                              numpy_helper.from_array(np.array(ws, np.float32), p + "_Ws")])
        nodes.append(helper.make_node("DynamicQuantizeLinear", [n.input[0]],
                                      [p + "_xq", p + "_xs", p + "_xzp"], name=p + "_quant"))
        conv = helper.make_node("ConvInteger", [p + "_xq", p + "_Wq", p + "_xzp", p + "_Wzp"],
                                [p + "_acc"], name=p + "_convint")
        conv.attribute.extend(a for a in n.attribute)
        nodes.append(conv)
        nodes.append(helper.make_node("Cast", [p + "_acc"], [p + "_accf"], to=TensorProto.FLOAT,
                                      name=p + "_cast"))
        nodes.append(helper.make_node("Mul", [p + "_xs", p + "_Ws"], [p + "_s"], name=p + "_sm"))
        out = n.output[0] if len(n.input) < 3 else p + "_scaled"
        nodes.append(helper.make_node("Mul", [p + "_accf", p + "_s"], [out], name=p + "_mul"))
        if len(n.input) >= 3:
            b = numpy_helper.to_array(inits[n.input[2]]).reshape(1, -1, 1, 1)
            g.initializer.append(numpy_helper.from_array(b.astype(np.float32), p + "_b4"))
            nodes.append(helper.make_node("Add", [out, p + "_b4"], [n.output[0]],
                                          name=p + "_bias"))
    del g.node[:]
    g.node.extend(nodes)
    keep = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in keep]
    del g.initializer[:]
    g.initializer.extend(kept)
    return m


def main():
    meta_src = json.load(open(os.path.join(DATA, "unet.json")))
    q = quantize_dynamic(onnx.load(os.path.join(DATA, "unet.onnx")))
    onnx.checker.check_model(q)
    name = "unet_dynq"
    path = os.path.join(DATA, name + ".onnx")
    onnx.save(q, path)
    x = np.fromfile(os.path.join(DATA, meta_src["inputs"][0]["file"]), "<f4")
    x.tofile(os.path.join(DATA, name + ".input.bin"))
    shape = meta_src["inputs"][0]["shape"]
    subprocess.run(["node", os.path.join(ROOT, "tests", "ort", "run_ort.js"), path,
                    os.path.join(DATA, name + ".input.bin"), ",".join(map(str, shape)),
                    os.path.join(DATA, name + ".output.bin"), "--threads", "1"], check=True,
                   capture_output=True)
    y = np.fromfile(os.path.join(DATA, name + ".output.bin"), "<f4")
    counts = {}
    for n in q.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    meta = {
        "model": name + ".onnx",
        "description": "unet with every Conv dynamically quantized as onnxruntime's "
                       "quantize_dynamic writes it (DynamicQuantizeLinear, ConvInteger with uint8 "
                       "weights, Cast, scale Mul, bias Add)",
        "opset": meta_src["opset"],
        "inputs": [dict(meta_src["inputs"][0], file=name + ".input.bin")],
        "outputs": [dict(meta_src["outputs"][0], file=name + ".output.bin")],
        "dynamic_axes": meta_src.get("dynamic_axes", {}),
        "tolerance": {"max_abs": 2e-3},
        "quantization": {"source": "unet.onnx", "reference": "ONNX Runtime on this file"},
        "ops": dict(sorted(counts.items())),
        "generator": "tools/make_quant_models.py (onnx %s)" % onnx.__version__,
        "output_stats": {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean())},
    }
    with open(os.path.join(DATA, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(path, os.path.getsize(path), "bytes", ",".join(sorted(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
