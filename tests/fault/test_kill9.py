#!/usr/bin/python3
"""kill -9 of a worker mid-run: two workers with a short lease, a few thousand `otsu` jobs; one
worker is killed while it holds jobs. The sweeper (in the survivor) requeues them within two
lease TTLs, and every job still ends with exactly one ok result; recovered jobs ran twice."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()

P = "k9"
N = 3000
LEASE_MS = 1500


class Kill9(unittest.TestCase):
    def test_kill9_mid_run_loses_nothing(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            w1 = tl.Worker(rs.url, prefix=P, worker_id="k9-w1", lease_ttl_ms=LEASE_MS, max_attempts=5,
                           start=False)
            w2 = tl.Worker(rs.url, prefix=P, worker_id="k9-w2", lease_ttl_ms=LEASE_MS, max_attempts=5,
                           start=False)
            with w1, w2:
                ids = tl.prefill_otsu(rs.url, P, "k9", N)
                w1.start()
                w2.start()
                w1.wait_ready(r)
                w2.wait_ready(r)

                # Kill w1 once the run is under way and w1 holds claimed jobs.
                tl.wait_until(lambda: tl.count_results(r, P, ids[:600]) >= 100, 60, what="100 results")
                # Freeze w1 (SIGSTOP), give Redis a moment to apply any ack w1 had already sent,
                # then read its in-flight list: the list cannot change any more, so what it holds
                # is exactly what the sweeper must recover. An empty list (w1 between an ack and
                # its next claim) means: let it run and try again.
                held, inflight = [], []
                deadline = time.monotonic() + 30
                while not held and time.monotonic() < deadline:
                    inflight = tl.wait_until(lambda: r.lrange(w1.inflight_key(), 0, -1), 30,
                                             poll_s=0.001, what="w1 holding jobs")
                    w1.signal(signal.SIGSTOP)
                    time.sleep(0.2)
                    held = [x.decode() for x in r.lrange(w1.inflight_key(), 0, -1)]
                    if not held:
                        w1.signal(signal.SIGCONT)
                w1.kill9()
                t_kill = time.monotonic()
                self.assertTrue(held, "w1 held nothing at its death (list was %r)" % inflight)
                done_at_kill = tl.count_results(r, P, ids)
                self.assertLess(done_at_kill, N - 200, "the run was nearly over when w1 was killed")

                # The survivor's sweeper requeues w1's jobs once its lease runs out.
                tl.wait_until(lambda: not r.exists(w1.inflight_key()), 10, poll_s=0.02,
                              what="w1's in-flight list swept")
                t_swept = time.monotonic() - t_kill
                print("w1 held %d jobs at kill; swept %.2fs after (lease %dms); %d/%d done at kill"
                      % (len(held), t_swept, LEASE_MS, done_at_kill, N))
                self.assertLessEqual(t_swept, 2 * LEASE_MS / 1000.0 + 1.0,  # + polling/load slack
                                     "sweep took %.2fs, more than 2 lease TTLs" % t_swept)

                res = tl.wait_for_results(r, P, ids, timeout=240)
                self.assertTrue(w2.alive(), w2.log_tail())
                bad = [(i, x.get("error")) for i, x in res.items() if x.get("status") != "ok"]
                self.assertEqual(bad, [])
                for i in held:
                    self.assertEqual(res[i].get("attempt"), 2, (i, res[i].get("attempt")))
                    self.assertEqual(res[i].get("worker"), "k9-w2", i)
                    ev = tl.record_event(r, P, i)
                    # The job channel: queued (1), requeued (2), done (3); its group's history has
                    # every step, `started` included.
                    self.assertEqual((ev["type"], ev["off"]), ("done", 3), (i, ev))
                    hist = [e["type"] for _, e in tl.group_job_history(r, P, ev["group"], i)]
                    self.assertEqual(hist, ["queued", "started", "requeued", "started", "done"], (i, hist))
                others = [x.get("attempt") for i, x in res.items() if i not in set(held)]
                self.assertEqual(set(others), {1})

                st = tl.stats(r, P)
                self.assertEqual(st.get("enqueued"), N, st)
                self.assertEqual(st.get("done"), N, st)  # exactly one recorded result each
                self.assertEqual(st.get("failed", 0), 0, st)
                self.assertEqual(st.get("requeued"), len(held), st)
                self.assertEqual(r.zcard(tl.key(P, "dead")), 0)
                self.assertEqual(tl.inflight_lists(r, P), {})
                self.assertFalse(r.sismember(tl.key(P, "workers"), w1.id))
                self.assertEqual(tl.queued_count(r, P), 0)

                w2.sigterm()
                self.assertEqual(w2.wait(30), 0, w2.log_tail())


if __name__ == "__main__":
    tl.run_tests()
