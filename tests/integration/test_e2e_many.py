#!/usr/bin/python3
"""End to end through real processes: 2,000 jobs (mostly `null`, some `otsu`) through two
segq-worker processes on a private redis-server. Every job gets exactly one result, nothing is
left in flight, the counters add up, both workers did work, and event streams have no gaps."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

N = 2000
OTSU_EVERY = 10  # every 10th job is otsu
P = "e2e"


class EndToEndMany(unittest.TestCase):
    def test_two_workers_2000_jobs(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            w1 = tl.Worker(rs.url, prefix=P, worker_id="e2e-w1", lease_ttl_ms=3000)
            w2 = tl.Worker(rs.url, prefix=P, worker_id="e2e-w2", lease_ttl_ms=3000)
            with w1, w2:
                w1.wait_ready(r)
                w2.wait_ready(r)
                c = segq.Client(rs.url, prefix=P)
                small = tl.make_jpeg(32, 32)
                cells = tl.make_jpeg(96, 96, disks=[(30, 30, 10), (70, 60, 12)])
                ids, models = [], {}
                # Queue in groups of 200 so the workers are busy while we are still queuing.
                for start in range(0, N, 200):
                    batch_ids = ["e2e-%05d" % i for i in range(start, start + 200)]
                    null_ids = [i for k, i in enumerate(batch_ids, start) if k % OTSU_EVERY]
                    otsu_ids = [i for k, i in enumerate(batch_ids, start) if not k % OTSU_EVERY]
                    c.submit_many([small] * len(null_ids), "null", ids=null_ids)
                    self.assertEqual(set(c.last_enqueue.values()), {segq.ENQUEUE_QUEUED})
                    c.submit_many([cells] * len(otsu_ids), "otsu", ids=otsu_ids)
                    self.assertEqual(set(c.last_enqueue.values()), {segq.ENQUEUE_QUEUED})
                    for i in null_ids:
                        models[i] = "null"
                    for i in otsu_ids:
                        models[i] = "otsu"
                    ids += batch_ids
                self.assertEqual(len(set(ids)), N)

                res = tl.wait_for_results(r, P, ids, timeout=240)

                # Every job: one ok result with its own id and model.
                bad = [(i, x.get("status"), x.get("error")) for i, x in res.items() if x.get("status") != "ok"]
                self.assertEqual(bad, [], "jobs with error results")
                for i, x in res.items():
                    self.assertEqual(x["id"], i)
                    self.assertEqual(x.get("model"), models[i])
                    self.assertEqual(x.get("attempt"), 1, i)
                    if models[i] == "otsu":
                        self.assertEqual(len(x.get("polygons") or []), 2, (i, x.get("polygons")))
                        self.assertEqual((x.get("width"), x.get("height")), (96, 96))
                    else:
                        self.assertEqual(x.get("polygons") or [], [])

                # Every job is one finished record saying done.
                pipe = r.pipeline(transaction=False)
                for i in ids:
                    pipe.type(tl.job_key(P, i))
                self.assertEqual(set(pipe.execute()), {b"string"})

                # Nothing in flight, nothing queued, counters add up.
                self.assertEqual(tl.inflight_lists(r, P), {})
                self.assertEqual(tl.queued_count(r, P), 0)
                st = tl.stats(r, P)
                self.assertEqual(st.get("enqueued"), N, st)
                self.assertEqual(st.get("done"), N, st)
                self.assertEqual(st.get("failed", 0), 0, st)
                self.assertEqual(st.get("requeued", 0), 0, st)
                self.assertEqual(r.zcard(tl.key(P, "dead")), 0)
                # Payloads are gone with the live hash: a record holds the event and the result.
                for i in ids[:200]:
                    self.assertIsNone(tl.decode_record(r.get(tl.job_key(P, i)))[2])

                # Both workers did a share of the work.
                by_worker = {}
                for x in res.values():
                    by_worker[x.get("worker")] = by_worker.get(x.get("worker"), 0) + 1
                self.assertEqual(set(by_worker), {"e2e-w1", "e2e-w2"}, by_worker)
                print("results per worker: %s" % by_worker)

                # Events of a sample of jobs: queued (1) then done (2); unwatched jobs write no
                # `started`, and the record starts with the terminal event.
                for i in ids[::40]:
                    ev = tl.record_event(r, P, i)
                    self.assertEqual((ev["type"], ev["state"], ev["off"], ev["id"]), ("done", "done", 2, i), ev)
                    self.assertEqual(ev.get("worker"), res[i]["worker"])

                # Both exit cleanly.
                w1.sigterm()
                w2.sigterm()
                self.assertEqual(w1.wait(40), 0, w1.log_tail())
                self.assertEqual(w2.wait(40), 0, w2.log_tail())
                self.assertEqual(tl.inflight_lists(r, P), {})


if __name__ == "__main__":
    tl.run_tests()
