#!/usr/bin/python3
"""Dead-lettering by a real worker's sweeper: a job whose workers keep dying is requeued until it
has run --max-attempts times, then gets a max_attempts_exceeded error result and lands in P:dead
with its job document; a job that was in flight on two workers that both died is quarantined as
suspected_poison (issue 8 item 10). The dying workers are "ghosts" driven from Python with the
real scripts (heartbeat once with a short lease, claim, never ack); the segq-worker only sweeps
(it does not serve the ghost model)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402
from segq import fakeworker  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "dl"
LEASE_MS = 600
MAX_ATTEMPTS = 2


class Ghost:
    """A worker that claims and then dies (its lease just runs out)."""

    def __init__(self, r, name, model):
        self.r, self.name, self.model = r, name, model
        self.s = {n: r.register_script(tl.load_script(n)) for n in ("heartbeat", "claim")}

    def claim_and_die(self, n=10):
        self.s["heartbeat"](keys=[], args=[P, self.name, "tok-" + self.name, LEASE_MS, tl.now_ms(), self.model])
        out = self.s["claim"](keys=[], args=[P, self.name, "tok-" + self.name, n, 1 << 26, tl.now_ms(), 3600,
                                             self.model])
        jobs, _ = fakeworker.fetch_claimed(self.r, P, (self.model,), out)
        return [(j[1].decode(), j[3]) for j in jobs]


class DeadLetter(unittest.TestCase):
    def run_ghosts(self, max_attempts, tag):
        """Two ghosts claim the same 3 jobs in turn and die; returns (results, redis, worker)."""
        self.t0 = time.monotonic()
        rs = self.enterContext(tl.RedisServer())
        r = rs.client()
        w = self.enterContext(tl.Worker(rs.url, prefix=P, worker_id="dl-w1-" + tag,
                                        lease_ttl_ms=LEASE_MS * 2, max_attempts=max_attempts))
        w.wait_ready(r)
        g1 = Ghost(r, "ghost-1", "ghostmodel")
        g1.s["heartbeat"](keys=[], args=[P, "ghost-1", "tok-ghost-1", LEASE_MS, tl.now_ms(), "ghostmodel"])
        c = segq.Client(rs.url, prefix=P)
        ids = [c.submit(tl.make_jpeg(16, 16), "ghostmodel", id="dl-%d" % i) for i in range(3)]
        self.assertEqual(set(c.last_enqueue.values()), {segq.ENQUEUE_QUEUED})

        got = g1.claim_and_die()
        self.assertEqual(sorted(got), [(i, 1) for i in ids])
        # The real worker's sweeper requeues them once ghost-1's lease is gone.
        tl.wait_until(lambda: tl.queued_count(r, P) == 3, 10, poll_s=0.05, what="requeue")
        self.assertEqual(tl.stats(r, P).get("requeued"), 3)
        self.assertEqual([tl.job_status(r, P, i)["state"] for i in ids], ["queued"] * 3)
        self.assertEqual([tl.job_status(r, P, i)["deaths"] for i in ids], ["1"] * 3)

        g2 = Ghost(r, "ghost-2", "ghostmodel")
        got = g2.claim_and_die()
        self.assertEqual(sorted(got), [(i, 2) for i in ids])
        res = tl.wait_for_results(r, P, ids, timeout=15)
        return ids, res, r, w

    def check_dead(self, ids, res, r, w, code):
        for i in ids:
            x = res[i]
            self.assertEqual((x["status"], x["error"]["code"]), ("error", code), x)
            self.assertEqual((x.get("attempt"), x.get("worker")), (2, "ghost-2"), x)
            ev, _, doc = tl.decode_record(r.get(tl.job_key(P, i)))
            # queued (1), requeued (2), failed (3): unwatched jobs write no `started`.
            self.assertEqual((ev["type"], ev["off"], ev["error"], ev["dead"]), ("failed", 3, code, True), ev)
            self.assertEqual(segq.proto.decode_job(doc)["id"], i, "the dead letter keeps the job document")
            self.assertGreater(r.ttl(tl.job_key(P, i)), 86400, "dead letters live --dead-ttl-s")
        self.assertEqual(sorted(x.decode() for x in r.zrange(tl.key(P, "dead"), 0, -1)), sorted(ids))
        st = tl.stats(r, P)
        self.assertEqual((st.get("dead"), st.get("failed"), st.get("requeued")), (3, 3, 3), st)
        self.assertEqual(tl.inflight_lists(r, P), {})
        self.assertFalse(r.sismember(tl.key(P, "workers"), "ghost-1"))
        self.assertFalse(r.sismember(tl.key(P, "workers"), "ghost-2"))
        self.assertTrue(w.alive())
        # The row of docs/RELIABILITY.md: every job ends as a dead letter (a result), none lost,
        # none with two results, nothing left in flight or queued.
        print("figures (%s): jobs %d lost %d duplicated %d stuck %d seconds %.1f"
              % (code, len(ids), sum(1 for i in ids if i not in res), max(0, st.get("failed", 0) - len(ids)),
                 tl.queued_count(r, P) + sum(tl.inflight_lists(r, P).values()),
                 time.monotonic() - self.t0))
        w.sigterm()
        self.assertEqual(w.wait(15), 0, w.log_tail())

    def test_max_attempts_exceeded(self):
        self.check_dead(*self.run_ghosts(MAX_ATTEMPTS, "ma"), "max_attempts_exceeded")

    def test_two_dead_workers_quarantine_a_suspected_poison(self):
        # Attempts left (3), but the job was in flight on two workers that both died.
        self.check_dead(*self.run_ghosts(3, "poison"), "suspected_poison")


if __name__ == "__main__":
    tl.run_tests()
