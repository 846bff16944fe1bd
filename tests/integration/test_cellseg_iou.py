#!/usr/bin/python3
"""The repository model `cellseg-unet` through the full worker path (Redis, worker, model
repository, ONNX engine, tiling, polygons): every image of models/cellseg-unet/eval is submitted,
the result polygons are rasterized (segq.score: pixel-centre rule, holes ignored) and scored
against the ground-truth foreground. Mean IoU must be >= 0.90 and beat the `otsu` built-in on
the same images; both scores are printed. The mask output (RLE) is scored too, as a check on
the polygon path."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import numpy as np  # noqa: E402
import segq  # noqa: E402
from segq import proto, score  # noqa: E402

P = "iou"
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")
EVAL_DIR = os.path.join(MODEL_DIR, "cellseg-unet", "eval")
MIN_MEAN_IOU = 0.90


def load_image(path):
    """JPEG bytes as they are (the worker decodes them); PNGs (16-bit) as a numpy array."""
    if path.endswith(".jpg"):
        with open(path, "rb") as f:
            return f.read()
    from PIL import Image
    a = np.array(Image.open(path))
    return a.astype(np.uint16) if a.dtype != np.uint8 else a


class CellsegIoU(tl.WorkerTestCase):
    PREFIX = P
    WORKER = dict(worker_id="iou-w1", models="cellseg-unet,otsu", model_dir=MODEL_DIR)
    READY_TIMEOUT = 60

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(EVAL_DIR, "index.json")) as f:
            cls.index = json.load(f)["images"]
        super().setUpClass()

    def score_model(self, model, outputs=None):
        ids = {}
        for e in self.index:
            img = load_image(os.path.join(EVAL_DIR, e["image"]))
            ids[e["image"]] = self.c.submit(img, model, id="%s-%s" % (model, e["image"]),
                                            outputs=outputs)
        poly_ious, mask_ious = [], []
        for e in self.index:
            res = self.c.wait(ids[e["image"]], timeout=300)
            self.assertEqual(res["status"], "ok", (model, e["image"], res.get("error")))
            self.assertEqual((res["width"], res["height"]), (e["width"], e["height"]))
            truth = score.load_truth(os.path.join(EVAL_DIR, e["mask"]))
            poly_ious.append(score.result_iou(res, truth))
            if outputs and "mask" in outputs:
                mask_ious.append(score.iou(proto.rle_to_numpy(res["mask"]).astype(bool), truth))
            print("  %-8s %-12s %4dx%-4d %2d-bit  IoU %.4f%s" % (
                model, e["image"], e["width"], e["height"], e["bits"], poly_ious[-1],
                "  (mask %.4f)" % mask_ious[-1] if mask_ious else ""))
        return poly_ious, mask_ious

    def test_cellseg_beats_otsu(self):
        unet, unet_mask = self.score_model("cellseg-unet", outputs=["polygons", "mask"])
        otsu, _ = self.score_model("otsu")
        print("mean IoU over %d eval images: cellseg-unet %.4f (min %.4f, mask %.4f), otsu %.4f (min %.4f)"
              % (len(unet), np.mean(unet), np.min(unet), np.mean(unet_mask), np.mean(otsu), np.min(otsu)))
        self.assertGreaterEqual(np.mean(unet), MIN_MEAN_IOU)
        # The mask itself must match the training script's evaluation (0.964, PyTorch).
        self.assertGreaterEqual(np.mean(unet_mask), 0.95)
        self.assertGreater(np.mean(unet), np.mean(otsu))


if __name__ == "__main__":
    tl.run_tests()
