#!/usr/bin/python3
"""Tenant fairness through a real worker: tenant A queues 1,000 `otsu` jobs, then tenant B one;
the claim serves tenants round-robin, so B's job finishes long before A's upload does (B's
result exists while most of A's jobs are still pending)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "fair"
N_A = 1000
MIN_PENDING = 300  # A jobs still without a result when B's result lands


class FairShare(unittest.TestCase):
    def test_small_tenant_is_not_stuck_behind_a_big_upload(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            with tl.Worker(rs.url, prefix=P, worker_id="fair-w1", max_inflight_batches=1) as w:
                w.wait_ready(r)
                c = segq.Client(rs.url, prefix=P)
                # Many pixels (decode + otsu take ms) in few bytes (a flat JPEG queues fast), so
                # A's jobs take far longer to run than to queue.
                img = tl.make_jpeg(1024, 1024, disks=[(200, 200, 50), (836, 400, 80), (600, 836, 60)],
                                   quality=60)
                a_ids = ["a-%04d" % i for i in range(N_A)]
                t0 = time.monotonic()
                for k in range(0, N_A, 100):
                    c.submit_many([img] * 100, "otsu", ids=a_ids[k:k + 100], tenant="A")
                t_a = time.monotonic() - t0
                b_id = c.submit(img, "otsu", id="b-0001", tenant="B")
                b = c.wait(b_id, timeout=60)
                t_b = time.monotonic() - t0
                a_done = tl.count_results(r, P, a_ids)
                print("A queued in %.2fs; B done at %.2fs with %d of %d A jobs done"
                      % (t_a, t_b, a_done, N_A))
                self.assertEqual(b["status"], "ok", b.get("error"))
                self.assertGreater(N_A - a_done, MIN_PENDING,
                                   "B waited behind A: only %d A jobs pending when B finished"
                                   % (N_A - a_done))
                # B's job came before A's queue drained: A still has queued jobs right now.
                res = tl.wait_for_results(r, P, a_ids, timeout=300)
                self.assertTrue(all(x["status"] == "ok" for x in res.values()))
                st = tl.stats(r, P)
                self.assertEqual(st.get("done"), N_A + 1, st)
                w.sigterm()
                self.assertEqual(w.wait(20), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
