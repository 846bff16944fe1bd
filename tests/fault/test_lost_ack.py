#!/usr/bin/python3
"""Redis loses its last writes (issue 8 item 4): a claim survives while the ack after it is lost,
as after a power cut with `appendfsync everysec` or a failover to a lagging replica. Reproduced
exactly: the worker is frozen while it holds claimed jobs, Redis snapshots its dataset (SAVE:
those jobs in the worker's in-flight list, no results), the worker finishes and acks everything,
then redis-server is killed -9 and restarted from the snapshot. The worker's lease is still valid
in the restored data, so no sweeper will ever touch its list: before reconciliation the jobs sat
there for good while /healthz said ok. Now the worker reconciles after the reconnect, hands the
ids it does not hold back to their queue, and every job ends with exactly one result.

Also the lost claim reply: the claim script runs with the worker's token but its reply never
reaches the worker, and the worker's connection drops; the reconcile after the reconnect hands
those jobs back too (before: only a claim that failed in the worker's own eyes was recovered)."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402
from segq import fakeworker  # noqa: E402

tl.require_worker()

P = "la"
N = 300


class LostAck(unittest.TestCase):
    def test_rolled_back_ack_is_recovered(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            w = tl.Worker(rs.url, prefix=P, worker_id="la-w1", lease_ttl_ms=30000, start=False)
            with w:
                ids = tl.prefill_otsu(rs.url, P, "la", N)
                w.start()
                w.wait_ready(r)
                # Freeze the worker while it holds claimed jobs, and snapshot Redis then.
                held = []
                deadline = time.monotonic() + 60
                while not held and time.monotonic() < deadline:
                    tl.wait_until(lambda: r.llen(w.inflight_key()) > 0, 30, poll_s=0.001,
                                  what="the worker holding jobs")
                    w.signal(signal.SIGSTOP)
                    time.sleep(0.2)  # acks already sent are applied
                    held = [x.decode() for x in r.lrange(w.inflight_key(), 0, -1)]
                    if held:
                        r.save()
                    w.signal(signal.SIGCONT)
                self.assertTrue(held, "never caught the worker holding jobs")
                done_at_save = tl.stats(r, P).get("done", 0)
                # The worker finishes everything, acks included...
                tl.wait_for_results(r, P, ids, timeout=240, stall_s=60)
                self.assertEqual(r.llen(w.inflight_key()), 0)
                # ...then Redis crashes and comes back with the snapshot: those acks are lost.
                # The worker is frozen across the restart so that what the snapshot holds can be
                # read before it reconnects (an ack in flight at the SAVE may or may not be in it).
                w.signal(signal.SIGSTOP)
                t0 = time.monotonic()
                rs.restart(sig=signal.SIGKILL)
                r = rs.client()
                held = [x.decode() for x in r.lrange(w.inflight_key(), 0, -1)]
                # Read the held jobs' state before the worker runs again (its reconcile rewrites
                # those keys: a hash read as a string half-way is WRONGTYPE).
                lost = [i for i in held if tl.job_status(r, P, i).get("finished") != "1"]
                w.signal(signal.SIGCONT)
                self.assertTrue(held, "the snapshot holds no claimed job")
                self.assertEqual(sorted(lost), sorted(held), "held ids have no record in the snapshot")
                self.assertGreater(r.pttl(w.lease_key()), 0, "the lease must survive the restart")
                print("snapshot: %d jobs in the worker's in-flight list, %d done; restored %.1fs "
                      "later" % (len(held), done_at_save, time.monotonic() - t0))

                res = tl.wait_for_results(r, P, ids, timeout=120, stall_s=40)
                t_rec = time.monotonic() - t0
                self.assertTrue(w.alive(), w.log_tail())
                self.assertEqual([i for i, x in res.items() if x.get("status") != "ok"], [])
                for i in held:
                    ev = tl.record_event(r, P, i)
                    hist = [e["type"] for _, e in tl.group_job_history(r, P, ev["group"], i)]
                    self.assertEqual(hist, ["queued", "started", "requeued", "started", "done"],
                                     (i, hist))
                    # The attempt the lost run was charged is given back at the hand-back.
                    self.assertEqual(res[i].get("attempt"), 1, (i, res[i]))
                st = tl.stats(r, P)
                self.assertEqual(st.get("done"), N, st)  # one recorded result per job
                self.assertEqual(st.get("requeued"), len(held), st)
                self.assertEqual(tl.inflight_lists(r, P), {})
                self.assertEqual(tl.queued_count(r, P), 0)
                self.assertIn("handed back", w.log())
                print("lost-ack: jobs=%d lost=0 duplicated=0 stuck=0 recovered_in_s=%.1f "
                      "(handed back %d)" % (N, t_rec, len(held)))
                w.sigterm()
                self.assertEqual(w.wait(30), 0, w.log_tail())

    def test_lost_claim_reply_is_recovered(self):
        # The claim script runs with the worker's token while the worker is frozen, and its
        # reply goes nowhere: exactly what a claim whose reply was lost leaves behind (ids in the
        # worker's in-flight list that it never received). Then the worker's connections drop.
        with tl.RedisServer() as rs:
            r = rs.client()
            w = tl.Worker(rs.url, prefix=P, worker_id="la-w2", lease_ttl_ms=30000)
            with w:
                w.wait_ready(r)
                w.signal(signal.SIGSTOP)
                ids = tl.prefill_otsu(rs.url, P, "lc", 5)
                claim = r.register_script(tl.load_script("claim"))
                token = r.get(w.lease_key())
                got = claim(keys=[], args=[P, w.id, token, 3, 1 << 26, tl.now_ms(), 3600, "null",
                                           "otsu"])
                jobs, _ = fakeworker.fetch_claimed(r, P, ("null", "otsu"), got)
                orphans = [j[1].decode() for j in jobs]
                self.assertEqual(len(orphans), 3)
                self.assertEqual(sorted(x.decode() for x in r.lrange(w.inflight_key(), 0, -1)),
                                 sorted(orphans))
                r.execute_command("CLIENT", "KILL", "TYPE", "normal")  # not us (SKIPME yes)
                w.signal(signal.SIGCONT)
                t0 = time.monotonic()
                res = tl.wait_for_results(r, P, ids, timeout=60, stall_s=30)
                self.assertTrue(w.alive(), w.log_tail())
                self.assertEqual([i for i, x in res.items() if x.get("status") != "ok"], [])
                for i in orphans:
                    self.assertEqual(res[i].get("attempt"), 1, (i, res[i]))
                st = tl.stats(r, P)
                self.assertEqual(st.get("done"), 5, st)
                self.assertEqual(st.get("requeued"), 3, st)
                self.assertEqual(tl.inflight_lists(r, P), {})
                print("lost claim reply: jobs=5 lost=0 duplicated=0 stuck=0 recovered_in_s=%.1f "
                      "(handed back 3)" % (time.monotonic() - t0))
                w.sigterm()
                self.assertEqual(w.wait(30), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
