#!/usr/bin/python3
"""Device-error policy (issue 7 item 5), with a real worker process and a real redis-server: a
worker whose device fails mid-run (the test-only fault backend of segq-worker-fault, poisoned
from the moment the test creates a file, as a CUDA context is by an illegal address) stops
claiming, hands every job it has not finished back to the front of its queue without charging an
attempt, unregisters and exits 3 (SQ_EXIT_DEVICE) so a supervisor restarts it; a second, healthy
worker then runs those jobs. Every job gets exactly one result, none of them a device error.
Before this policy every job the poisoned worker held (and every later one) got a
`device_error` result and the worker kept claiming."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker(fault=True)
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")
N = 24


class DeviceError(unittest.TestCase):
    def test_poisoned_worker_hands_back_and_exits(self):
        import segq
        with tl.RedisServer() as rs:
            r = rs.client()
            d = tl.tempdir("segq-poison-")
            poison = os.path.join(d, "poison")
            # Slow runs (the delay) keep several batches in flight when the device fails.
            a = tl.Worker(rs.url, prefix="de", worker_id="gpu-a", models="cellseg-unet",
                          model_dir=MODEL_DIR, fault=True, max_batch=2, max_inflight_batches=3,
                          device="fault:delay_ms=150,poison_file=%s" % poison)
            a.wait_ready(r, timeout=60)
            c = segq.Client(rs.url, prefix="de")
            img = tl.make_jpeg(96, 80, disks=[(30, 30, 12), (70, 50, 15)])
            ids = ["de-%02d" % i for i in range(N)]
            c.submit_many([img] * N, "cellseg-unet", ids=ids)
            # Let it finish a few, then poison the device under it.
            tl.wait_until(lambda: tl.count_results(r, "de", ids) >= 2, 120, what="first results")
            open(poison, "w").close()
            t_poison = time.monotonic()
            rc = a.wait(120)
            log = a.log()
            self.assertEqual(rc, 3, "the poisoned worker must exit 3; log:\n" + a.log_tail())
            self.assertIn("device error: handing the jobs back and exiting", log)
            self.assertIn("jobs handed back to their queues", log)
            self.assertEqual(r.llen(a.inflight_key()), 0, "nothing left in its in-flight list")
            self.assertFalse(r.exists(a.lease_key()), "it unregistered")
            done_by_a = tl.count_results(r, "de", ids)
            self.assertLess(done_by_a, N, "the device failed before everything ran")
            # release.lua counts what it hands back under `requeued` (no sweep ran: the lease
            # stayed valid until the worker unregistered with an empty in-flight list)
            released = int(r.hget("de:stats", "requeued") or 0)
            self.assertGreaterEqual(released, 1, "jobs were handed back")
            # The supervisor's restart (a healthy device this time) runs the rest.
            b = tl.Worker(rs.url, prefix="de", worker_id="gpu-b", models="cellseg-unet",
                          model_dir=MODEL_DIR, device="cpu")
            results = tl.wait_for_results(r, "de", ids, timeout=240, stall_s=90)
            for i in ids:
                res = results[i]
                self.assertEqual(res["status"], "ok", "%s: %s" % (i, res))
                # The failed device's run was not the job's attempt.
                self.assertEqual(res["attempt"], 1, "%s ran on attempt %s" % (i, res["attempt"]))
            by_b = sum(1 for i in ids if results[i]["worker"] == "gpu-b")
            self.assertGreaterEqual(by_b, released, "the handed-back jobs ran on the other worker")
            self.assertEqual(tl.queued_count(r, "de"), 0)
            print("worker a finished %d, handed back %d; worker b ran %d" %
                  (done_by_a, released, by_b))
            # The row of docs/RELIABILITY.md (duplicated: `done` above one per job).
            st = tl.stats(r, "de")
            print("figures: jobs %d lost %d duplicated %d stuck %d seconds %.1f (poison to last result)"
                  % (N, N - len(results), max(0, st.get("done", 0) - N),
                     tl.queued_count(r, "de") + sum(tl.inflight_lists(r, "de").values()),
                     time.monotonic() - t_poison))
            b.sigterm()
            self.assertEqual(b.wait(60), 0)


if __name__ == "__main__":
    tl.run_tests()
