#!/usr/bin/python3
"""make_conformance_cases: ONNX backend-test style cases for ops the shared conformance corpus
(../shared/onnx-tests) has no case for, so every op ops.def implements is run by at least one
case (tests/conformance/onnx_conformance.c fails otherwise). Same layout as ONNX's own cases:

    tests/conformance/cases/<test_name>/model.onnx
    tests/conformance/cases/<test_name>/test_data_set_0/{input,output}_K.pb

Expected outputs come from numpy, written as the ONNX reference defines the op.

    /usr/bin/python3 tools/make_conformance_cases.py [--out tests/conformance/cases]

Needs the `onnx` Python package (Debian python3-onnx); the files are committed.
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "conformance", "cases")


def case(out, name, op, inputs, outputs, attrs=None, opset=13):
    """inputs/outputs: lists of (name, numpy array)."""
    def vi(n, a):
        t = helper.np_dtype_to_tensor_dtype(a.dtype) if hasattr(helper, "np_dtype_to_tensor_dtype") \
            else onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[a.dtype]
        return helper.make_tensor_value_info(n, t, list(a.shape))

    node = helper.make_node(op, [n for n, _ in inputs], [n for n, _ in outputs], **(attrs or {}))
    g = helper.make_graph([node], name, [vi(n, a) for n, a in inputs],
                          [vi(n, a) for n, a in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="segq tools/make_conformance_cases.py")
    onnx.checker.check_model(m)
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for kind, lst in (("input", inputs), ("output", outputs)):
        for k, (n, a) in enumerate(lst):
            with open(os.path.join(d, "test_data_set_0", "%s_%d.pb" % (kind, k)), "wb") as f:
                f.write(numpy_helper.from_array(a, n).SerializeToString())
    print(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    x.flat[:4] = [-1.5, -0.5, 0.5, 2.0]  # exact halves and integers
    case(a.out, "test_segq_ceil", "Ceil", [("x", x)], [("y", np.ceil(x))])
    case(a.out, "test_segq_floor", "Floor", [("x", x)], [("y", np.floor(x))])
    case(a.out, "test_segq_softsign", "Softsign", [("x", x)], [("y", x / (1 + np.abs(x)))])
    i = rng.integers(0, 3, (2, 3, 4)).astype(np.int64)
    j = rng.integers(0, 3, (3, 1)).astype(np.int64)
    case(a.out, "test_segq_equal_int64_bcast", "Equal", [("a", i), ("b", j)], [("y", i == j)])
    f = np.round(x * 2) / 2
    g = np.round(x[:1] * 2) / 2
    case(a.out, "test_segq_equal_float_bcast", "Equal", [("a", f), ("b", g)], [("y", f == g)])
    # LRN, odd and even sizes (the even window leans right: floor/ceil of (size-1)/2)
    lx = rng.standard_normal((2, 7, 5, 4)).astype(np.float32) * 2
    for size, name in ((3, "test_segq_lrn_size3"), (4, "test_segq_lrn_size4_even")):
        alpha, beta, bias = 0.0002, 0.75, 1.5
        sq = np.zeros_like(lx)
        c = lx.shape[1]
        for ch in range(c):
            lo, hi = max(0, ch - (size - 1) // 2), min(c - 1, ch + (size - 1) - (size - 1) // 2)
            sq[:, ch] = (lx[:, lo:hi + 1] ** 2).sum(1)
        y = (lx / (bias + alpha / size * sq) ** beta).astype(np.float32)
        case(a.out, name, "LRN", [("x", lx)], [("y", y)],
             {"size": size, "alpha": alpha, "beta": beta, "bias": bias})
    # DynamicQuantizeLinear: scale from the range including 0, zero point and values rounded
    # half to even, saturated to uint8
    q = np.array([[-3.0, -1.5, 0.0, 0.7], [1.25, 2.5, 4.0, 10.0]], np.float32)
    lo, hi = min(0.0, float(q.min())), max(0.0, float(q.max()))
    scale = np.float32((hi - lo) / 255.0)
    zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    yq = np.clip(np.round(q / scale) + zp, 0, 255).astype(np.uint8)
    case(a.out, "test_segq_dynamicquantizelinear", "DynamicQuantizeLinear", [("x", q)],
         [("y", yq), ("y_scale", np.array(scale, np.float32)),
          ("y_zero_point", np.array(zp, np.uint8))], opset=11)
    # a model with symbolic H and W (tests/conformance/test_onnx_run.py plans it with --shape)
    wt = (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["c"], ["y"])
    g = helper.make_graph([node, relu], "symbolic_hw",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         ["N", 1, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         ["N", 4, "H", "W"])],
                          [numpy_helper.from_array(wt, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="segq tools/make_conformance_cases.py")
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(a.out, "..", "symbolic_hw.onnx"))
    print("symbolic_hw.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
