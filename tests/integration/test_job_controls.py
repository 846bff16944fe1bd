#!/usr/bin/python3
"""Cancel through a real worker (issue 8 item 9): a queued job is answered `canceled` at once and
never runs; a running one is not acked as done (its result is `canceled`, written at its ack);
a canceled group's queued jobs are answered as the claim reaches them and later submits to it are
refused; the events say so (`canceling`, `canceled`). The worker holds one job at a time
(--max-batch 1 --max-inflight-batches 1) so that the others stay queued while one runs."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "jc"


def image(seed, side=1024):
    import numpy as np
    rng = np.random.default_rng(seed)
    disks = [(int(x), int(y), int(r)) for x, y, r in zip(rng.integers(20, side - 20, 30),
                                                          rng.integers(20, side - 20, 30),
                                                          rng.integers(6, 20, 30))]
    return tl.disk_image(side, side, disks)


class JobControls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.w = tl.Worker(cls.rs.url, prefix=P, worker_id="jc-w1", models="cellseg-unet,null",
                          device="cpu", max_batch=1, max_inflight_batches=1, lease_ttl_ms=30000)
        cls.w.wait_ready(cls.r)
        cls.c = segq.Client(cls.rs.url, prefix=P)

    @classmethod
    def tearDownClass(cls):
        cls.w.stop(60)
        cls.rs.stop()

    def wait_running(self, id, timeout=120):
        tl.wait_until(lambda: (self.c.status(id) or {}).get("state") == "running", timeout,
                      poll_s=0.05, what="%s running" % id)

    def test_cancel_queued_and_running(self):
        c = self.c
        a = c.submit(image(1), "cellseg-unet", id="jc-a", watch=True)
        b = c.submit(image(2), "cellseg-unet", id="jc-b")
        z = c.submit(image(3, 256), "cellseg-unet", id="jc-z")
        self.wait_running(a)
        self.assertEqual(c.status(b)["state"], "queued")
        self.assertEqual(c.cancel([b, a]), {b: 1, a: 2})
        # The queued job has its answer at once, without running.
        ev, res, _ = c.record(b)
        self.assertEqual((ev["type"], res["error"]["code"]), ("canceled", "canceled"))
        self.assertNotIn("worker", ev)
        self.assertEqual(c.status(a).get("cancel"), True, "cancel pending on the running job")
        # The running one is not acked as done: its result is canceled.
        items = list(c.events(id=a, timeout=120))
        types = [e["type"] for e in items]
        self.assertEqual(types[-1], "canceled", types)
        res_a = c.wait(a, 5)
        self.assertEqual((res_a["status"], res_a["error"]["code"], res_a["worker"]),
                         ("error", "canceled", "jc-w1"))
        self.assertEqual(c.record(a)[0]["worker"], "jc-w1")
        # The next job runs normally: the canceled one was skipped by the claim.
        self.assertEqual(c.wait(z, 120)["status"], "ok")
        self.assertEqual(c.record(b)[1]["error"]["code"], "canceled", "b's record unchanged")
        self.assertEqual(tl.inflight_lists(self.r, P), {})
        self.assertEqual(tl.queued_count(self.r, P), 0, "the tombstone was consumed")
        st = tl.stats(self.r, P)
        self.assertGreaterEqual(st.get("canceled", 0), 2)
        self.assertIn("job was canceled while it ran", self.w.log())

    def test_cancel_group(self):
        c = self.c
        group, ids = c.submit_many([image(s) for s in (4, 5, 6)], "cellseg-unet", group="jc-g")
        self.wait_running(ids[0])
        self.assertEqual(c.cancel(group=group), {group: 1})
        self.assertEqual(c.cancel(group=group), {group: 0}, "already canceled")
        res = c.wait_many(ids, timeout=180)
        self.assertEqual([(x["status"], x["error"]["code"]) for x in res.values()],
                         [("error", "canceled")] * 3)
        c.submit(image(7, 256), "cellseg-unet", group=group, id="jc-late")
        self.assertEqual(c.last_enqueue, {"jc-late": segq.ENQUEUE_CANCELED})
        g = c.group_status(group)
        self.assertEqual((g["canceled"], g["total"], g["queued"], g["running"], g.get("cancel")),
                         (4, 4, 0, 0, True), g)
        hist = tl.group_history(self.r, P, group)
        self.assertIn("canceling", [e["type"] for e in hist])
        per = {}
        for e in hist:
            for j in e.get("jobs") or []:
                per.setdefault(j["id"], []).append(j["type"])
        self.assertEqual(per[ids[0]][-1], "canceled")
        self.assertEqual(per[ids[2]], ["queued", "canceled"], "never started")


if __name__ == "__main__":
    tl.run_tests()
