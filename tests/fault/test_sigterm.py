#!/usr/bin/python3
"""SIGTERM mid-run: the worker stops claiming, finishes what it holds, acks it, unregisters and
exits 0 within its drain timeout. Nothing is left in its in-flight list, every job it claimed has
a result, and nothing needed recovery (requeued stays 0); the other worker finishes the rest."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()

P = "st"
N = 2000
DRAIN_S = 10


class SigTerm(unittest.TestCase):
    def test_sigterm_drains_and_exits_0(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            w1 = tl.Worker(rs.url, prefix=P, worker_id="st-w1", lease_ttl_ms=2000, drain_timeout_s=DRAIN_S,
                           start=False)
            w2 = tl.Worker(rs.url, prefix=P, worker_id="st-w2", lease_ttl_ms=2000, drain_timeout_s=DRAIN_S,
                           start=False)
            with w1, w2:
                ids = tl.prefill_otsu(rs.url, P, "st", N)
                w1.start()
                w2.start()
                w1.wait_ready(r)
                w2.wait_ready(r)

                tl.wait_until(lambda: tl.count_results(r, P, ids[:600]) >= 100, 60, what="100 results")
                tl.wait_until(lambda: r.llen(w1.inflight_key()) > 0, 30, poll_s=0.001, what="w1 holding jobs")
                w1.sigterm()
                t0 = time.monotonic()
                rc = w1.wait(DRAIN_S + 5)
                took = time.monotonic() - t0
                print("w1 exited %s %.2fs after SIGTERM" % (rc, took))
                self.assertEqual(rc, 0, w1.log_tail())
                self.assertLessEqual(took, DRAIN_S)

                # Right after exit: nothing left behind by w1, and every job it claimed (the
                # `started` entries of the groups' histories name it) already has a result.
                self.assertEqual(r.llen(w1.inflight_key()), 0)
                self.assertFalse(r.exists(w1.lease_key()), "lease not released at exit")
                claimed_by_w1 = set()
                for gk in r.scan_iter(match=tl.key(P, "gh", "*"), count=1000):
                    group = gk.decode()[len(tl.key(P, "gh", "")):]
                    for ev in tl.group_history(r, P, group):
                        for e in ev.get("jobs") or []:
                            if e.get("type") == "started" and e.get("worker") == w1.id:
                                claimed_by_w1.add(e["id"])
                claimed_by_w1 = sorted(claimed_by_w1)
                self.assertTrue(claimed_by_w1)
                raws = tl.results_raw(r, P, claimed_by_w1)
                missing = [i for i, x in zip(claimed_by_w1, raws) if x is None]
                self.assertEqual(missing, [], "claimed by w1 but no result after it exited")
                done_by_w1 = [tl.record_result(x) for x in raws]
                self.assertTrue(all(x["worker"] == w1.id and x["status"] == "ok" for x in done_by_w1))

                res = tl.wait_for_results(r, P, ids, timeout=240)
                self.assertEqual([i for i, x in res.items() if x["status"] != "ok"], [])
                st = tl.stats(r, P)
                self.assertEqual(st.get("done"), N, st)
                self.assertEqual(st.get("requeued", 0), 0, st)
                self.assertEqual(set(x.get("attempt") for x in res.values()), {1})
                self.assertEqual(tl.inflight_lists(r, P), {})
                print("w1 did %d jobs, w2 %d" % (len(claimed_by_w1), N - len(claimed_by_w1)))

                w2.sigterm()
                self.assertEqual(w2.wait(DRAIN_S + 5), 0, w2.log_tail())
                self.assertFalse(r.exists(w2.lease_key()))
                self.assertFalse(r.sismember(tl.key(P, "workers"), w2.id))


if __name__ == "__main__":
    tl.run_tests()
