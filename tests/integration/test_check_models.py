#!/usr/bin/python3
"""segq-worker --check-models (issue 12 item 9): validates a model repository without Redis and
reports every problem of a model.json at once (unknown keys such as a misspelt "tresholdd"
included), exit 0 when all are valid and 1 otherwise; a worker that starts on a broken model
exits 1 with each problem in its log."""
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()

SHIPPED = os.path.join(tl.SOURCE_DIR, "models")
NOWHERE = "redis://127.0.0.1:1"  # nothing listens there: the check must not need it


def check(*args, env=None, timeout=120):
    t0 = time.monotonic()
    p = subprocess.run([tl.worker_binary(), "--check-models", "--redis-url", NOWHERE] + list(args),
                       capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})), cwd=tl.SOURCE_DIR)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


class CheckModels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = tl.tempdir("segq-check-")
        shutil.copytree(os.path.join(SHIPPED, "cellseg-unet"), os.path.join(cls.repo, "good"),
                        ignore=shutil.ignore_patterns("eval"))
        with open(os.path.join(SHIPPED, "cellseg-unet", "model.json")) as f:
            cls.cfg = json.load(f)

    def write_model(self, name, cfg, onnx=True):
        d = os.path.join(self.repo, name)
        os.makedirs(d, exist_ok=True)
        if cfg is not None:
            with open(os.path.join(d, "model.json"), "w") as f:
                f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        if onnx:
            shutil.copy(os.path.join(SHIPPED, "cellseg-unet", "model.onnx"), d)
        return d

    def tearDown(self):
        for n in os.listdir(self.repo):
            if n != "good":
                shutil.rmtree(os.path.join(self.repo, n))

    def test_shipped_repository_is_valid(self):
        rc, out, err, dt = check("--models", "cellseg-unet,otsu,null")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("cellseg-unet:\n  ok", out)
        self.assertIn("3 of 3 models valid", out)
        self.assertNotIn("connect", err)  # no Redis connection was tried

    def test_every_problem_at_once(self):
        cfg = json.loads(json.dumps(self.cfg))
        cfg["tresholdd"] = cfg.pop("threshold")                       # misspelt: was accepted
        cfg["input"]["channels"] = 2                                  # bad value
        cfg["normalization"]["range"]["mode"] = "percentil"           # bad enum
        cfg["large_images"]["overlapp"] = 8                           # unknown nested key
        cfg["max_batch"] = "16"                                       # wrong type
        self.write_model("typos", cfg)
        rc, out, err, _ = check("--model-dir", self.repo, "--models", "null")
        self.assertEqual(rc, 1, out)
        block = out.split("typos:\n", 1)[1].split("\n", 6)  # its problem lines come next
        problems = [l for l in out.splitlines() if "problem:" in l and "/typos/" in l]
        for want in ("tresholdd: unknown field", "input.channels: expected 1 or 3",
                     "normalization.range.mode: expected one of", "large_images.overlapp: unknown field",
                     "max_batch: expected an integer"):
            self.assertTrue(any(want in p for p in problems), "%r not reported:\n%s" % (want, out))
        self.assertEqual(len(problems), 5, out)
        self.assertIn("INVALID", "\n".join(block))
        self.assertIn("good:\n  ok", out)
        self.assertIn("2 of 3 models valid", out)

    def test_missing_files_and_unknown_names(self):
        self.write_model("nojson", None)
        self.write_model("noonnx", self.cfg, onnx=False)
        self.write_model("badjson", '{"input": {"channels": 1,}')
        rc, out, err, _ = check("--model-dir", self.repo, "--models", "otsu,not-a-model")
        self.assertEqual(rc, 1, out)
        for want in ("nojson/model.json: missing", "noonnx/model.onnx is missing", "bad JSON",
                     "no model named 'not-a-model'"):
            self.assertIn(want, out)
        self.assertIn("otsu:\n  ok", out)
        self.assertIn("2 of 6 models valid", out)  # otsu and good

    def test_graph_mismatch_is_reported(self):
        cfg = json.loads(json.dumps(self.cfg))
        cfg["input"]["size"] = [128, 128]  # valid JSON, wrong for the graph
        cfg["large_images"]["tile"] = 128
        self.write_model("small", cfg)
        rc, out, _, _ = check("--model-dir", self.repo, "--models", "small")
        self.assertEqual(rc, 1, out)
        self.assertIn("input.size [128, 128] does not match", out)

    def test_not_a_directory(self):
        rc, out, _, _ = check("--model-dir", os.path.join(self.repo, "nope"), "--models", "otsu")
        self.assertEqual(rc, 1)
        self.assertIn("not a readable directory", out)

    def test_worker_start_logs_every_problem(self):
        cfg = json.loads(json.dumps(self.cfg))
        cfg["tresholdd"] = 0.4
        cfg["contexts"] = 0
        self.write_model("broken", cfg)
        with tl.RedisServer() as rs:
            w = tl.Worker(rs.url, prefix="chk", models="broken", model_dir=self.repo)
            self.assertEqual(w.wait(60), 1)
            log = w.log()
        self.assertIn("tresholdd: unknown field", log)
        self.assertIn("contexts: expected an integer in [1, 64]", log)
        self.assertIn("2 problems", log)
        self.assertIn("start-up failed", log)


if __name__ == "__main__":
    tl.run_tests()
