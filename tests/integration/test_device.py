#!/usr/bin/python3
"""--device on the worker (issue 4 item 1, issue 7 item 6): `auto` runs repository models on a
CUDA GPU when one is usable and otherwise says in one log line that it falls back to the CPU;
`cpu` never touches CUDA; `cuda` and `cuda:all` without a usable GPU refuse to start with the
reason; a malformed value is a command-line error (exit 2). On a machine with a GPU the `cuda`
cases must start instead."""
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")


def gpu_present():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Device(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.gpu = gpu_present()

    @classmethod
    def tearDownClass(cls):
        cls.rs.stop()

    def start(self, device):
        return tl.Worker(self.rs.url, prefix="dev", models="cellseg-unet",
                         model_dir=MODEL_DIR, device=device)

    def test_auto_runs_a_job(self):
        w = self.start("auto")
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        if not self.gpu:
            self.assertIn("falling back to the cpu backend", w.log())
        import segq
        c = segq.Client(self.rs.url, prefix="dev")
        job = c.submit(tl.make_jpeg(96, 80), model="cellseg-unet")
        res = c.wait(job, timeout=60)
        self.assertEqual(res["status"], "ok", res)
        w.sigterm()
        self.assertEqual(w.wait(30), 0)

    def test_cuda_without_gpu_refuses_to_start(self):
        if self.gpu:
            self.skipTest("a GPU is present: tests/gpu covers the cuda device")
        for device in ("cuda", "cuda:all"):
            w = self.start(device)
            self.assertEqual(w.wait(60), 1, w.log())
            log = w.log()
            self.assertIn("cellseg-unet", log)
            self.assertIn("no usable CUDA device", log)

    def test_cpu_never_logs_a_fallback(self):
        w = self.start("cpu")
        w.wait_ready(self.rs.client(), timeout=60)
        self.assertNotIn("falling back", w.log())
        w.sigterm()
        self.assertEqual(w.wait(30), 0)

    def test_malformed_device_is_a_usage_error(self):
        for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1"):
            w = self.start(bad)
            self.assertEqual(w.wait(20), 2, "%s: %s" % (bad, w.log()))
            self.assertIn("--device", w.log())


if __name__ == "__main__":
    tl.run_tests()
