#!/usr/bin/python3
"""Microscopy input ranges (issue 12 item 8) through a real worker serving cellseg-unet: every
evaluation image as 8-bit (gray8), as 12-bit stored in 16 bits (gray16, the common camera case)
and as 16-bit must each be segmented with IoU >= 0.9 against the ground truth. With the fixed
scale the model shipped with before, the 12-bit versions came back "ok, 0 objects".

Also a job's own policy (params.input_range): "fixed" reproduces the old failure on a 12-bit
image (so the override is honoured), "full" with bits 12 segments it, and a bad policy is an
invalid_field_value result naming the field."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import numpy as np  # noqa: E402
import segq  # noqa: E402
from PIL import Image  # noqa: E402
from segq import score  # noqa: E402

P = "range"
MODEL_DIR = os.environ.get("SEGQ_TEST_MODEL_DIR") or os.path.join(tl.SOURCE_DIR, "models")
EVAL_DIR = os.path.join(tl.SOURCE_DIR, "models", "cellseg-unet", "eval")
MIN_IOU = 0.90


def versions(path):
    """{bits: uint8/uint16 array} of one picture: 8-bit, 12-bit in a 16-bit container, 16-bit.
    JPEGs (8-bit) are scaled up; the 16-bit PNG is cut down (its low bits dropped)."""
    a = np.array(Image.open(path))
    if a.dtype == np.uint8:
        v = a.astype(np.uint32)
        return {8: a, 12: ((v * 4095 + 127) // 255).astype(np.uint16), 16: (v * 257).astype(np.uint16)}
    v = a.astype(np.uint32)
    return {8: (v >> 8).astype(np.uint8), 12: (v >> 4).astype(np.uint16), 16: v.astype(np.uint16)}


class InputRange(tl.WorkerTestCase):
    PREFIX = P
    WORKER = dict(worker_id="range-w1", models="cellseg-unet,otsu", model_dir=MODEL_DIR)
    READY_TIMEOUT = 60

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(EVAL_DIR, "index.json")) as f:
            cls.index = json.load(f)["images"]
        super().setUpClass()

    def test_8_12_16_bit_versions(self):
        jobs = []
        for e in self.index:
            for bits, img in versions(os.path.join(EVAL_DIR, e["image"])).items():
                jobs.append((e, bits, self.c.submit(img, "cellseg-unet",
                                                    id="d%d-%s" % (bits, e["image"]))))
        ious = {8: [], 12: [], 16: []}
        low = []
        for e, bits, job in jobs:
            res = self.c.wait(job, timeout=300)
            self.assertEqual(res["status"], "ok", (e["image"], bits, res.get("error")))
            v = score.result_iou(res, score.load_truth(os.path.join(EVAL_DIR, e["mask"])))
            ious[bits].append(v)
            if v < MIN_IOU:
                low.append("%s %d-bit: IoU %.4f (%d objects)" % (e["image"], bits, v,
                                                                 len(res["polygons"])))
        for bits, vals in sorted(ious.items()):
            print("  %2d-bit: mean IoU %.4f, min %.4f over %d images" % (bits, np.mean(vals),
                                                                          np.min(vals), len(vals)))
        self.assertEqual(low, [], "images below IoU %.2f" % MIN_IOU)

    def test_job_policy_overrides_the_model(self):
        e = self.index[0]
        img12 = versions(os.path.join(EVAL_DIR, e["image"]))[12]
        truth = score.load_truth(os.path.join(EVAL_DIR, e["mask"]))

        def run(rng, id):
            res = self.c.wait(self.c.submit(img12, "cellseg-unet", id=id,
                                            params={"input_range": rng}), timeout=300)
            self.assertEqual(res["status"], "ok", res.get("error"))
            return score.result_iou(res, truth), len(res["polygons"])

        fixed, nfixed = run({"mode": "fixed"}, "ovr-fixed")
        full, _ = run({"mode": "full", "bits": 12}, "ovr-full12")
        pct, _ = run({"mode": "percentile", "low": 0.5, "high": 99.9}, "ovr-pct")
        print("  12-bit %s: fixed IoU %.4f (%d objects), full(bits=12) %.4f, percentile(0.5,99.9) %.4f"
              % (e["image"], fixed, nfixed, full, pct))
        self.assertLess(fixed, 0.2, "fixed scale should see (almost) nothing in a 12-bit image")
        self.assertGreaterEqual(full, MIN_IOU)
        self.assertGreaterEqual(pct, MIN_IOU)

    def test_bad_policy_is_an_error_result(self):
        img = versions(os.path.join(EVAL_DIR, self.index[3]["image"]))[16]
        for rng, want in (({"mode": "minmax"}, "unknown mode"),
                          ({"mode": "full", "bits": 20}, "params.input_range.bits"),
                          ({"mode": "percentile", "low": 50, "high": 10}, "need 0 <= low < high"),
                          ({"mode": "percentile", "bits": 12}, "only for mode full")):
            job = self.c.submit(img, "cellseg-unet", params={"input_range": rng})
            res = self.c.wait(job, timeout=120)
            self.assertEqual(res["status"], "error", rng)
            self.assertEqual(res["error"]["code"], "invalid_field_value", res["error"])
            self.assertIn(want, res["error"]["message"])


if __name__ == "__main__":
    tl.run_tests()
