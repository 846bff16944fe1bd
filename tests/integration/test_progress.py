#!/usr/bin/python3
"""Progress inside long jobs (issue 9 item 4) through a real worker: a tiled 2048x2048 image on
`cellseg-unet` (81 tiles, run on the CPU) reports `progress` events (steps_done / steps_total =
tiles) between `started` and `done`, at most one per --progress-interval-ms, with steps rising to
the total; and a group of tiled jobs shows each job's progress in its group events, so the group
moves per job, not per batch."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "pg"
INTERVAL_MS = 200


def big_image(seed, side=2048):
    import numpy as np
    rng = np.random.default_rng(seed)
    disks = [(int(x), int(y), int(r)) for x, y, r in zip(rng.integers(40, side - 40, 60),
                                                          rng.integers(40, side - 40, 60),
                                                          rng.integers(8, 30, 60))]
    return tl.disk_image(side, side, disks)


class Progress(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.w = tl.Worker(cls.rs.url, prefix=P, worker_id="pg-w1", models="cellseg-unet",
                          device="cpu", progress_interval_ms=INTERVAL_MS, lease_ttl_ms=30000)
        cls.w.wait_ready(cls.r)
        cls.c = segq.Client(cls.rs.url, prefix=P)

    @classmethod
    def tearDownClass(cls):
        cls.w.stop(30)
        cls.rs.stop()

    def test_progress_events_of_one_job(self):
        id = self.c.submit(big_image(1), "cellseg-unet", watch=True)
        items = list(self.c.events(id=id, timeout=240))
        evs = [e for e in items if e["type"] not in ("recovered", "resync")]
        types = [e["type"] for e in evs]
        # A new reader starts from the snapshot; `started` follows if the job was still queued.
        self.assertEqual(items[0]["type"], "resync")
        if items[0]["snapshot"]["state"] == "queued":
            self.assertEqual(types[0], "started", types)
        self.assertEqual(types[-1], "done", types)
        prog = [e for e in evs if e["type"] == "progress"]
        print("%d progress events: %s" % (len(prog), [(e["steps_done"], e["ts_ms"]) for e in prog]))
        self.assertGreaterEqual(len(prog), 2, types)
        self.assertEqual({e["steps_total"] for e in prog}, {81})
        done = [e["steps_done"] for e in prog]
        self.assertEqual(done, sorted(done))
        self.assertEqual(len(set(done)), len(done), "an event only when the tiles moved")
        self.assertTrue(all(0 < d <= 81 for d in done))
        # Bounded rate: the worker reports at most once per interval (its timer), so two
        # progress events of a job are never closer than the interval (a little slack for the
        # clock stamps taken in Redis scripts).
        gaps = [b["ts_ms"] - a["ts_ms"] for a, b in zip(prog, prog[1:])]
        self.assertTrue(all(g >= INTERVAL_MS * 0.75 for g in gaps), gaps)
        self.assertTrue([e["off"] for e in evs] == list(range(evs[0]["off"], evs[0]["off"] + len(evs))))
        self.assertEqual(self.c.wait(id, 30)["status"], "ok")

    def test_group_moves_per_job(self):
        # 1024x1024: 25 tiles each, run in chunks of up to 16 tiles.
        group, ids = self.c.submit_many([big_image(s, 1024) for s in (2, 3, 4)], "cellseg-unet")
        items = list(self.c.events(group=group, timeout=400))
        evs = [e for e in items if e["type"] == "jobs"]
        steps = {}
        for e in evs:
            for j in e.get("jobs") or []:
                if j["type"] == "progress":
                    steps.setdefault(j["id"], []).append(j["steps_done"])
        print("progress per job: %s" % {k[:8]: v for k, v in steps.items()})
        # Each job's progress is reported (the tiles of a batch run job after job), so the
        # group's bar moves while the batch runs, not only at its ack.
        self.assertEqual(set(steps), set(ids))
        self.assertTrue(any(25 in v for v in steps.values()), steps)
        self.assertEqual(evs[-1]["done"], 3)
        res = self.c.wait_many(ids, timeout=60)
        self.assertTrue(all(x["status"] == "ok" for x in res.values()))


if __name__ == "__main__":
    tl.run_tests()
