#!/usr/bin/python3
"""Large payloads (issue 8 item 5): 16 jobs of 48 MB each must all be processed, each on its
first attempt. Before, one claim moved all 16 (768 MB) inside one script call; Redis was busy
for ~12 s, the worker's watchdog dropped the connection, the jobs were treated as orphans and
every retry cost an attempt, so all 16 ended dead-lettered. Now a claim carries at most
--max-claim-bytes of job documents (64 MiB by default: here one 48 MB job per claim, so every job
runs in a batch of its own), the watchdog is sized from that budget, and a hand-back of unrun
jobs (a claim whose reply still came too late) refunds their attempt: every job runs at attempt 1. SEGQ_BIG_MAX_CLAIM_BYTES overrides the worker's flag (e.g. 4294967295
shows the old behaviour: batches of several jobs)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "big"
N = 16
SIDE = 6928  # a gray8 image of 6928 x 6928 = 47 997 184 bytes (48 MB)


class BigPayloads(unittest.TestCase):
    def test_sixteen_48mb_jobs(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            flags = {}
            if os.environ.get("SEGQ_BIG_MAX_CLAIM_BYTES"):
                flags["max_claim_bytes"] = os.environ["SEGQ_BIG_MAX_CLAIM_BYTES"]
            # The default lease (10 s), as in the issue: the heartbeat has its own connection
            # ('lease', since e14309d), so it never waits behind a claim moving 48 MB.
            with tl.Worker(rs.url, prefix=P, worker_id="big-w1", models="null", start=False,
                           **flags) as w:
                c = segq.Client(rs.url, prefix=P)
                img = bytes(range(256)) * (SIDE * SIDE // 256) + bytes(SIDE * SIDE % 256)
                self.assertEqual(len(img), SIDE * SIDE)
                # All 16 are queued before the worker starts, as in the report: its first claim
                # could take every one of them.
                ids = ["big-%02d" % i for i in range(N)]
                t0 = time.monotonic()
                for i in ids:
                    c.submit(img, "null", id=i, fmt="gray8", width=SIDE, height=SIDE)
                print("queued %d x %.0f MB in %.1fs" % (N, len(img) / 1e6, time.monotonic() - t0))
                w.start()
                res = tl.wait_for_results(r, P, ids, timeout=300, stall_s=120)
                print("all results %.1fs after the first submit" % (time.monotonic() - t0))
                bad = [(i, x.get("error")) for i, x in res.items() if x["status"] != "ok"]
                self.assertEqual(bad, [])
                self.assertEqual({x["attempt"] for x in res.values()}, {1}, "no attempt charged")
                self.assertEqual({(x["width"], x["height"]) for x in res.values()}, {(SIDE, SIDE)})
                sizes = sorted(x["batch_size"] for x in res.values())
                print("batch sizes: %s" % sizes)
                self.assertEqual(set(sizes), {1}, "one 48 MB job per claim (64 MiB of documents)")
                st = tl.stats(r, P)
                # A claim whose reply outlives the watchdog (a sanitizer build on a loaded machine
                # reads 48 MB slowly) is handed back with its attempt refunded: allowed, counted.
                print("hand-backs of claims whose reply came too late: %d" % st.get("requeued", 0))
                self.assertEqual((st.get("done"), st.get("dead", 0)), (N, 0), st)
                self.assertEqual(r.zcard(tl.key(P, "dead")), 0)
                self.assertTrue(w.alive(), w.log_tail())
                w.sigterm()
                self.assertEqual(w.wait(60), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
