#!/usr/bin/python3
"""Sentinel failover under load (issue 8 item 1): one primary, one replica, three sentinels (real
redis-server and redis-sentinel processes), two workers and a submitting client on the
redis+sentinel:// URL. SENTINEL FAILOVER twice while the workers are busy (A -> B, then B -> A):
before, the workers reconnected to the demoted primary and failed with READONLY forever; now
they follow +switch-master (and rediscover on READONLY, a role mismatch or a lost connection),
and the run completes by itself with exactly one recorded result per job.

The data nodes run with min-replicas-to-write 1 (the guard docs/RELIABILITY.md recommends), the
client submits with wait_replicas=1 (WAIT after each enqueue) and retries on errors as a backend
would, and one worker acks with --wait-replicas 1: so nothing acknowledged can vanish in the
asynchronous failover. A worker pointed straight at a replica (redis://) refuses to work there."""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import redis  # noqa: E402
import segq  # noqa: E402

P = "sf"
N = 1200
GUARD = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]


class SentinelFailover(unittest.TestCase):
    def test_failover_under_load(self):
        if not tl.have_redis_sentinel():
            self.skipTest("redis-sentinel is not installed")
        with tl.SentinelGroup(replicas=1, sentinels=3, data_args=GUARD) as g:
            g.wait_ready()
            ids = tl.prefill_otsu(g.url, P, "sf", N, wait_replicas=1)
            w1 = tl.Worker(g.url, prefix=P, worker_id="sf-w1", lease_ttl_ms=3000, max_attempts=10,
                           wait_replicas=1, wait_replicas_timeout_ms=1000)
            w2 = tl.Worker(g.url, prefix=P, worker_id="sf-w2", lease_ttl_ms=3000, max_attempts=10)
            # A worker given a replica's address directly must not work against it: it says so
            # and keeps retrying (a replica may be promoted), without registering.
            replica = next(n for n in g.nodes if n.port != g.primary_port())
            with tl.Worker(replica.url, prefix=P, worker_id="sf-w3", lease_ttl_ms=3000) as w3:
                tl.wait_until(lambda: w3.log().count("read-only replica") >= 4, 30, poll_s=0.1,
                              what="sf-w3 refusing the replica")
                self.assertTrue(w3.alive(), w3.log_tail())
                self.assertFalse(g.client().exists("%s:worker:sf-w3" % P))
            late_ids, late_errors = [], []
            stop = threading.Event()

            def submitter():
                # A backend submitting through the failover: retry each id until it is accepted.
                c = segq.Client(g.url, prefix=P, wait_replicas=1, wait_timeout_ms=1000)
                img = tl.make_jpeg(96, 96)
                k = 0
                while not stop.is_set() and k < 150:
                    id = "sf-late-%04d" % k
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        try:
                            c.submit(img, "otsu", id=id)
                            late_ids.append(id)
                            break
                        except (redis.RedisError, segq.SegqError) as e:
                            late_errors.append(type(e).__name__)
                            time.sleep(0.1)
                    k += 1
                    time.sleep(0.02)

            with w1, w2:
                w1.wait_ready(g.client())
                w2.wait_ready(g.client())
                th = threading.Thread(target=submitter, daemon=True)
                th.start()
                t0 = time.monotonic()
                switches = []
                for round_ in range(2):
                    tl.wait_until(lambda: tl.count_results(g.client(), P, ids) >= (round_ + 1) * N // 5,
                                  120, poll_s=0.1, what="progress before failover %d" % (round_ + 1))
                    old = g.primary_port()
                    t_f = time.monotonic()
                    new, tries = g.failover_and_wait(old)
                    switches.append((old, new, time.monotonic() - t_f, tries))
                stop.set()
                th.join(90)
                all_ids = ids + late_ids
                r = g.client()
                res = tl.wait_for_results(r, P, all_ids, timeout=240, stall_s=60)
                t_total = time.monotonic() - t0
                self.assertTrue(w1.alive() and w2.alive(), w1.log_tail() + w2.log_tail())
                self.assertEqual([i for i, x in res.items() if x.get("status") != "ok"], [])
                st = tl.stats(r, P)
                # Exactly one recorded result per job: the done counter of the surviving data.
                self.assertEqual(st.get("done"), len(all_ids), st)
                self.assertEqual(tl.inflight_lists(r, P), {})
                self.assertEqual(tl.queued_count(r, P), 0)
                for w in (w1, w2):
                    log = w.log()
                    self.assertTrue("sentinel switched the primary" in log or
                                    "asking the sentinels" in log, w.log_tail())
                    self.assertNotIn("start-up failed", log)
                reruns = sum(1 for x in res.values() if x.get("attempt", 1) > 1)
                print("failovers %s; jobs=%d (+%d submitted during) lost=0 duplicated=0 stuck=0 "
                      "reruns=%d requeued=%d submit_retries=%d (%s) total_s=%.1f"
                      % (["%d->%d in %.1fs (%d tries)" % s for s in switches], N, len(late_ids), reruns,
                         st.get("requeued", 0), len(late_errors), sorted(set(late_errors)),
                         t_total))
                for w in (w1, w2):
                    w.sigterm()
                    self.assertEqual(w.wait(30), 0, w.log_tail())


class WaitReplicas(unittest.TestCase):
    def test_wait_fails_clearly_without_replicas_and_recovers(self):
        # A primary without its replica: the client's WAIT raises NotReplicated (the job is on
        # the primary), the worker's ack is written but not confirmed, so the worker keeps the
        # job and resends its ack; once a replica is attached both go through.
        with tl.RedisServer() as rs:
            r = rs.client()
            c = segq.Client(rs.url, prefix=P, wait_replicas=1, wait_timeout_ms=200)
            with self.assertRaises(segq.NotReplicated) as cm:
                c.submit(tl.make_jpeg(48, 48), "otsu", id="wr-1")
            self.assertEqual(cm.exception.ids, ["wr-1"])
            self.assertIn("replicas", str(cm.exception))
            with tl.Worker(rs.url, prefix=P, worker_id="wr-w1", lease_ttl_ms=3000,
                           wait_replicas=1, wait_replicas_timeout_ms=200) as w:
                w.wait_ready(r)
                tl.wait_until(lambda: "ack not replicated in time" in w.log(), 30, poll_s=0.1,
                              what="the worker's WAIT failing")
                self.assertEqual(tl.job_status(r, P, "wr-1").get("finished"), "1")
                self.assertEqual(r.llen(w.inflight_key()), 0)  # written on the primary
                with tl.RedisServer(extra_args=["--replicaof", "127.0.0.1", str(rs.port)]):
                    # The resends (one a second) stop once the replica confirms the ack.
                    seen = []

                    def settled():
                        seen.append(w.log().count("ack not replicated"))
                        return len(seen) > 12 and seen[-1] == seen[-13]
                    tl.wait_until(settled, 40, poll_s=0.25, what="acks confirmed with a replica")
                    c.submit(tl.make_jpeg(48, 48), "otsu", id="wr-2")  # no exception now
                    self.assertEqual(c.wait("wr-2", timeout=30)["status"], "ok")
                # A drain that ends at once (exit 0) means nothing is held: wr-1's ack went through.
                w.sigterm()
                self.assertEqual(w.wait(20), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
