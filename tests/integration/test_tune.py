#!/usr/bin/python3
"""`segq tune MODEL` (issue 7 item 7): runs segq-tune on the current device (the CPU here) over
batch sizes and stream counts, reports images/s, p50/p99 batch latency and memory per
configuration, and writes optimal_batch, max_batch and contexts (streams) into the model's
model.json, leaving every other field as it was, plus the measurements in tune.json; a worker
then starts with the tuned values. --dry-run writes nothing; an unknown model is a usage error.
Small and bounded: cellseg-unet, batches 1 and 2, 1 and 2 streams, 0.4 s each."""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

SEGQ = os.path.join(tl.SOURCE_DIR, "tools", "segq")
BUILD = os.environ.get("SEGQ_BUILD_DIR") or os.path.join(tl.SOURCE_DIR, "build")
TUNE = os.path.join(BUILD, "worker", "segq-tune")
if not os.path.isfile(TUNE):
    tl.skip("segq-tune is not built (%s)" % TUNE)


def run(*args, timeout=300):
    env = dict(os.environ, SEGQ_TUNE_BIN=TUNE)
    return subprocess.run([SEGQ] + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env)


class Tune(unittest.TestCase):
    def setUp(self):
        self.repo = tl.tempdir("segq-tune-")
        shutil.copytree(os.path.join(tl.SOURCE_DIR, "models", "cellseg-unet"),
                        os.path.join(self.repo, "cellseg-unet"),
                        ignore=shutil.ignore_patterns("eval", "checkpoint.pt"))
        self.json = os.path.join(self.repo, "cellseg-unet", "model.json")
        with open(self.json) as f:
            self.before = json.load(f)

    def test_tune_writes_model_json(self):
        p = run("tune", "cellseg-unet", "--model-dir", self.repo, "--device", "cpu",
                "--batches", "1,2", "--streams", "1,2", "--seconds", "0.4")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("images/s", p.stderr)  # the table, as measured
        with open(self.json) as f:
            after = json.load(f)
        self.assertIn(after["optimal_batch"], (1, 2))
        self.assertIn(after["max_batch"], (1, 2))
        self.assertLessEqual(after["optimal_batch"], after["max_batch"])
        self.assertIn(after["contexts"], (1, 2))
        for k, v in self.before.items():  # nothing else changed
            if k not in ("optimal_batch", "max_batch", "contexts"):
                self.assertEqual(after[k], v, k)
        with open(os.path.join(self.repo, "cellseg-unet", "tune.json")) as f:
            report = json.load(f)
        self.assertEqual(report["backend"], "cpu")
        self.assertEqual(len(report["results"]), 4)
        for r in report["results"]:
            self.assertTrue(r["ok"], r)
            self.assertGreater(r["images_per_s"], 0)
            self.assertGreater(r["p99_ms"], 0)
            self.assertGreaterEqual(r["p99_ms"], r["p50_ms"])
            self.assertGreater(r["memory_mb"], 0)
        rec = report["recommended"]
        self.assertEqual((rec["optimal_batch"], rec["max_batch"], rec["contexts"]),
                         (after["optimal_batch"], after["max_batch"], after["contexts"]))
        # The tuned values are what a worker now runs with.
        if tl.worker_binary() and tl.have_redis_server():
            with tl.RedisServer() as rs:
                w = tl.Worker(rs.url, prefix="tu", models="cellseg-unet", model_dir=self.repo,
                              device="cpu")
                w.wait_ready(rs.client(), timeout=60)
                tl.wait_until(lambda: 'msg="warm"' in w.log(), 60, what="warm-up")
                self.assertRegex(w.log(), r"model loaded.*max_batch=%d .*contexts=%d"
                                 % (after["max_batch"], after["contexts"]))
                w.sigterm()
                self.assertEqual(w.wait(30), 0)

    def test_dry_run_writes_nothing(self):
        p = run("tune", "cellseg-unet", "--model-dir", self.repo, "--device", "cpu",
                "--batches", "1", "--streams", "1", "--seconds", "0.2", "--dry-run")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn('"recommended"', p.stdout)
        with open(self.json) as f:
            self.assertEqual(json.load(f), self.before)
        self.assertFalse(os.path.exists(os.path.join(self.repo, "cellseg-unet", "tune.json")))

    def test_unknown_model(self):
        p = run("tune", "no-such-model", "--model-dir", self.repo, "--device", "cpu")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("no model.json for no-such-model", p.stderr)


if __name__ == "__main__":
    tl.run_tests()
