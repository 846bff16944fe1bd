#!/usr/bin/python3
"""Ensembles (docs/protocol.md "Ensembles") through a real worker serving cellseg-unet and otsu:
a weighted ensemble gives a result; with weight 0 on otsu it gives exactly the polygons of
cellseg-unet alone (whichever member routes the job); a member the worker does not serve fails
the job with unknown_model; a bad `models` field fails with its error code; many ensemble jobs
mixed with single-model ones all finish, and the worker drains cleanly afterwards."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "ens"
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")
EVAL_DIR = os.path.join(MODEL_DIR, "cellseg-unet", "eval")


def eval_jpeg(i):
    with open(os.path.join(EVAL_DIR, "eval_%02d.jpg" % i), "rb") as f:
        return f.read()


def shapes(res):
    return [(tuple(round(x, 3) for x in p["points"]), round(p["area"], 3)) for p in res["polygons"]]


class Ensemble(tl.WorkerTestCase):
    PREFIX = P
    WORKER = dict(worker_id="ens-w1", models="cellseg-unet,otsu", model_dir=MODEL_DIR)
    READY_TIMEOUT = 60

    def run_job(self, img, model, **kw):
        id = self.c.submit(img, model, **kw)
        return self.c.wait(id, timeout=120)

    def test_weighted_ensemble(self):
        img = eval_jpeg(0)
        unet = self.run_job(img, "cellseg-unet")
        self.assertEqual(unet["status"], "ok", unet.get("error"))
        for model in ("cellseg-unet", "otsu"):
            res = self.run_job(img, model, models=["cellseg-unet", "otsu"], weights=[0.7, 0.3],
                               threshold=0.5)
            self.assertEqual(res["status"], "ok", res.get("error"))
            self.assertEqual(res["model"], model)
            self.assertEqual((res["width"], res["height"]), (256, 256))
            self.assertGreater(len(res["polygons"]), 10)
            self.assertGreater(res["timings"]["inference_us"], 0)
        # Otsu's 0/1 map at weight 0.8 decides alone at threshold 0.5: the combination is real.
        # (min_area given: the ensemble's default is cellseg-unet's, not otsu's.)
        otsu = self.run_job(img, "otsu", min_area=5)
        res = self.run_job(img, "cellseg-unet", models=["cellseg-unet", "otsu"], weights=[0.2, 0.8],
                           threshold=0.5, min_area=5)
        self.assertEqual(res["status"], "ok", res.get("error"))
        self.assertEqual(shapes(res), shapes(otsu))
        self.assertNotEqual(shapes(res), shapes(unet))
        # The mask output works for ensembles too.
        res = self.run_job(img, "cellseg-unet", models=[("cellseg-unet", 1), ("otsu", 1)],
                           outputs=["polygons", "mask"])
        self.assertEqual(res["status"], "ok", res.get("error"))
        self.assertEqual((res["mask"]["width"], res["mask"]["height"]), (256, 256))

    def test_zero_weight_is_the_other_model(self):
        for i in (1, 2):
            img = eval_jpeg(i)
            unet = self.run_job(img, "cellseg-unet", threshold=0.5)
            self.assertEqual(unet["status"], "ok", unet.get("error"))
            for model in ("cellseg-unet", "otsu"):
                res = self.run_job(img, model, models=[{"name": "cellseg-unet", "weight": 2.0},
                                                       {"name": "otsu", "weight": 0}],
                                   threshold=0.5)
                self.assertEqual(res["status"], "ok", res.get("error"))
                self.assertEqual(shapes(res), shapes(unet), "image %d routed by %s" % (i, model))

    def test_missing_member(self):
        res = self.run_job(eval_jpeg(0), "otsu", models=["otsu", "null"])
        self.assertEqual(res["status"], "error")
        self.assertEqual(res["error"]["code"], "unknown_model")
        self.assertIn("null", res["error"]["message"])

    def test_bad_models_field(self):
        img = eval_jpeg(0)
        cases = [
            ("not-array", "otsu,cellseg-unet", "wrong_field_type"),
            ("one", [{"name": "otsu"}], "invalid_field_value"),
            ("entry-str", [{"name": "otsu"}, "cellseg-unet"], "wrong_field_type"),
            ("not-own", [{"name": "cellseg-unet"}, {"name": "null"}], "invalid_field_value"),
            ("twice", [{"name": "otsu"}, {"name": "otsu"}], "invalid_field_value"),
            ("negative", [{"name": "otsu"}, {"name": "cellseg-unet", "weight": -1.0}],
             "invalid_field_value"),
            ("all-zero", [{"name": "otsu", "weight": 0}, {"name": "cellseg-unet", "weight": 0.0}],
             "invalid_field_value"),
            ("weight-str", [{"name": "otsu"}, {"name": "cellseg-unet", "weight": "1"}],
             "wrong_field_type"),
            ("unknown-key", [{"name": "otsu"}, {"name": "cellseg-unet", "wieght": 1}],
             "invalid_field_value"),
            ("no-name", [{"name": "otsu"}, {"weight": 1}], "missing_field"),
        ]
        ids = []
        for name, models, code in cases:
            id = "ens-bad-" + name
            ids.append(id)
            self.assertEqual(tl.enqueue_raw(self.r, P, id, "otsu",
                                            tl.pack(tl.job_doc(id, "otsu", img, models=models))), 1)
        res = tl.wait_for_results(self.r, P, ids, timeout=60)
        for (name, _, code), id in zip(cases, ids):
            self.assertEqual(res[id]["status"], "error", name)
            self.assertEqual(res[id]["error"]["code"], code, (name, res[id]["error"]))
            self.assertIn("models", res[id]["error"]["message"], name)
        # The client refuses the same before queueing.
        with self.assertRaises(segq.proto.ProtocolError):
            self.c.submit(img, "otsu", models=["otsu"])
        with self.assertRaises(segq.proto.ProtocolError):
            self.c.submit(img, "otsu", models=["cellseg-unet", "null"])

    def test_many_mixed(self):
        imgs = [eval_jpeg(i) for i in range(4)]
        ids = []
        for k in range(24):
            img = imgs[k % 4]
            if k % 3 == 0:
                ids.append(self.c.submit(img, "otsu"))
            elif k % 3 == 1:
                ids.append(self.c.submit(img, "otsu", models=["otsu", "cellseg-unet"]))
            else:
                ids.append(self.c.submit(img, "cellseg-unet", models=["otsu", "cellseg-unet"],
                                         weights=[1, 3]))
        res = tl.wait_for_results(self.r, P, ids, timeout=240)
        self.assertEqual([(i, x.get("error")) for i, x in res.items() if x["status"] != "ok"], [])
        self.assertEqual(tl.inflight_lists(self.r, P), {})


if __name__ == "__main__":
    tl.run_tests()
