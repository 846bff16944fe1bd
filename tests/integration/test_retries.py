#!/usr/bin/python3
"""Retries through the real worker (issue 8 item 10), on segq-worker-fault's test-only fault
backend (tests/support/fault_backend.c) with a real redis-server. A transient error (the device
out of memory even at batch 1, while a file exists) is acked as `retrying`: the job waits in
P:delayed:<model>, runs again at attempt 2 once due, and succeeds now that the fault is gone. A
permanent error (an image that cannot be decoded) fails at attempt 1 and is never retried. The
group history (P:gh:<group>, every event as published) shows each job's path."""
import os
import sys
import time
import unittest

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker(fault=True)
import segq  # noqa: E402

MODEL = "cellseg-unet"
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")
P = "rty"


def job_path(r, group, id):
    """(type, attempt, error) of id's entries in the group's history, in order."""
    out = []
    for _, fields in r.xrange(tl.key(P, "gh", group)):
        ev = msgpack.unpackb(fields[b"e"], raw=False)
        for j in ev.get("jobs") or ():
            if j.get("id") == id:
                out.append((j.get("type"), j.get("attempt"), j.get("error")))
    return out


class Retries(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.oom = os.path.join(tl.tempdir("segq-retry-"), "oom")
        # A first retry 4-12 s after the failure (base 8 s, +-50% jitter): time enough to see the
        # job waiting in the delayed set on a loaded machine, and to lift the fault before it is due.
        cls.w = tl.Worker(cls.rs.url, prefix=P, models=MODEL, model_dir=MODEL_DIR, fault=True,
                          device="fault:oom_file=%s" % cls.oom, max_batch=1, retry_base_ms=8000,
                          max_attempts=3)
        cls.w.wait_ready(cls.r, timeout=90)
        cls.c = segq.Client(cls.rs.url, prefix=P)

    @classmethod
    def tearDownClass(cls):
        cls.w.sigterm()
        cls.w.wait(60)
        cls.rs.stop()

    def test_transient_error_retries_then_succeeds(self):
        open(self.oom, "w").close()  # from now on nothing fits, not even one tile
        try:
            self.c.submit_many([tl.make_jpeg(96, 80)], MODEL, group="gt", ids=["t-1"])
            # The ack of the failed run: retrying, in the delayed set, due in the future.
            snap = tl.wait_until(lambda: (lambda s: s if s.get("state") == "retrying" else None)(
                tl.job_status(self.r, P, "t-1")), 120, poll_s=0.05, what="t-1 retrying")
            self.assertEqual(snap.get("error"), "device_out_of_memory", snap)
            due = self.r.zscore(tl.key(P, "delayed", MODEL), "t-1")
            self.assertIsNotNone(due, "a retrying job waits in P:delayed:<model>")
            self.assertGreater(due, tl.now_ms() - 1000, "due after the failure")
        finally:
            os.unlink(self.oom)  # memory is back before the retry is due
        res = tl.wait_for_results(self.r, P, ["t-1"], timeout=120)["t-1"]
        self.assertEqual(res["status"], "ok", res)
        self.assertEqual(res["attempt"], 2, "run again once, at attempt 2")
        self.assertGreater(len(res["polygons"]), 0)
        self.assertIsNone(self.r.zscore(tl.key(P, "delayed", MODEL), "t-1"))
        path = job_path(self.r, "gt", "t-1")
        # A due retry the sweeper moved back to its queue (sweep.lua), rather than one a claim
        # took from the delayed set directly, shows a `requeued` event first (seen under ASan).
        handed_back = [e for e in path if e[0] == "requeued"]
        self.assertTrue(all(a == 1 for _, a, _ in handed_back), path)
        path = [e for e in path if e[0] != "requeued"]
        self.assertEqual([(t, a) for t, a, _ in path],
                         [("queued", None), ("started", 1), ("retrying", 1), ("started", 2),
                          ("done", 2)], path)
        self.assertEqual(path[2][2], "device_out_of_memory")
        self.assertGreaterEqual(tl.stats(self.r, P).get("retried", 0), 1)
        self.assertTrue(self.w.alive(), self.w.log_tail())

    def test_permanent_error_fails_at_once(self):
        retried = tl.stats(self.r, P).get("retried", 0)
        bad = b"\xff\xd8\xff\xe0" + b"\x13" * 200  # a JPEG header, then nothing decodable
        self.c.submit_many([bad], MODEL, group="gp", ids=["p-1"])
        res = tl.wait_for_results(self.r, P, ["p-1"], timeout=120)["p-1"]
        self.assertEqual((res["status"], res["error"]["code"]), ("error", "image_decode_failed"), res)
        self.assertEqual(res["attempt"], 1)
        path = job_path(self.r, "gp", "p-1")
        self.assertEqual([t for t, _, _ in path], ["queued", "started", "failed"], path)
        self.assertEqual(tl.stats(self.r, P).get("retried", 0), retried, "no retry")
        self.assertIsNone(self.r.zscore(tl.key(P, "delayed", MODEL), "p-1"))
        self.assertEqual(self.r.zcard(tl.key(P, "dead")), 0, "a permanent failure is no dead letter")


if __name__ == "__main__":
    tl.run_tests()
