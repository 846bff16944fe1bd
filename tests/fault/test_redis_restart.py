#!/usr/bin/python3
"""Redis restart mid-run: redis-server (AOF, fsync always, so nothing acknowledged is lost) is
stopped (SIGTERM) or killed (kill -9) and started again on the same port while a worker is busy.
The worker reconnects by itself (its log says so) and the run completes with one ok result per
job. Both cases assert what docs/RELIABILITY.md's row claims: with `appendfsync always` Redis
writes and fsyncs the AOF before it answers, so even kill -9 loses no acknowledged enqueue
(lost == 0) and no ack (the `done` counter == the number of jobs: none recorded twice); nothing
is stuck in flight or queued. (Jobs a restart lost would be queued again, as a backend would,
before the run is checked; with this AOF the test fails if there are any.)"""
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "rr"
N = 1500
DOWN_S = 1.5


class RedisRestart(unittest.TestCase):
    def run_restart(self, sig, tag):
        with tl.RedisServer(persist=True) as rs:
            r = rs.client()
            with tl.Worker(rs.url, prefix=P, worker_id="rr-w1-" + tag, lease_ttl_ms=3000,
                           wait_timeout_s=1) as w:
                w.wait_ready(r)
                c = segq.Client(rs.url, prefix=P)
                img = tl.make_jpeg(160, 160, disks=[(40, 40, 15), (110, 100, 25)], noise=3)
                ids = ["rr-%s-%05d" % (tag, i) for i in range(N)]
                for k in range(0, N, 250):
                    c.submit_many([img] * 250, "otsu", ids=ids[k:k + 250])
                tl.wait_until(lambda: sum(1 for x in tl.results_raw(r, P, ids[:400])
                                          if x is not None) >= 50, 60, what="50 results")
                r.close()
                rs.restart(downtime_s=DOWN_S, sig=sig)
                t_up = time.monotonic()
                r = rs.client()
                done = sum(1 for x in tl.results_raw(r, P, ids) if x is not None)
                print("restarted redis (%s) with %d/%d results; %d queued"
                      % (tag, done, N, tl.queued_count(r, P)))

                # Re-queue what the restart lost (a job whose key is gone).
                lost = []
                pipe = r.pipeline(transaction=False)
                for i in ids:
                    pipe.exists(tl.job_key(P, i))
                for i, n in zip(ids, pipe.execute()):
                    if n == 0:
                        lost.append(i)
                if lost:
                    print("re-queuing %d jobs lost in the restart" % len(lost))
                    for k in range(0, len(lost), 250):
                        c = segq.Client(rs.url, prefix=P)
                        c.submit_many([img] * len(lost[k:k + 250]), "otsu", ids=lost[k:k + 250])

                # The worker must come back by itself: new results appear.
                tl.wait_until(lambda: sum(1 for x in tl.results_raw(r, P, ids)
                                          if x is not None) > done, 30, poll_s=0.1,
                              what="a result after the restart")
                print("first result after restart %.2fs after redis was up" % (time.monotonic() - t_up))
                try:
                    res = tl.wait_for_results(r, P, ids, timeout=240, stall_s=30)
                except AssertionError:
                    # Let the worker log its drain state (what it still holds) before failing.
                    w.sigterm()
                    try:
                        w.wait(8)
                    except AssertionError:
                        pass
                    raise
                self.assertTrue(w.alive(), w.log_tail())
                self.assertEqual([(i, x.get("error")) for i, x in res.items() if x["status"] != "ok"], [])
                self.assertRegex(w.log(), re.compile("reconnect", re.I),
                                 "worker log does not mention reconnecting")
                stuck = sum(tl.inflight_lists(r, P).values()) + tl.queued_count(r, P)
                done_n = tl.stats(r, P).get("done")
                print("figures (%s): jobs %d lost %d duplicated %d stuck %d seconds %.1f"
                      % (tag, N, len(lost), max(0, (done_n or 0) - N), stuck, time.monotonic() - t_up))
                self.assertEqual(tl.inflight_lists(r, P), {})
                self.assertEqual(tl.queued_count(r, P), 0)
                # fsync always, SIGTERM or kill -9: nothing acknowledged lost, nothing done twice.
                self.assertEqual(lost, [], "appendfsync always loses no acknowledged enqueue")
                self.assertEqual(done_n, N, "one recorded result per job")
                w.sigterm()
                self.assertEqual(w.wait(30), 0, w.log_tail())

    def test_graceful_restart(self):
        self.run_restart(signal.SIGTERM, "term")

    def test_crash_restart(self):
        self.run_restart(signal.SIGKILL, "kill")


if __name__ == "__main__":
    tl.run_tests()
