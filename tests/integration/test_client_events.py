#!/usr/bin/python3
"""Integration tests of the Python client (clients/python/segq) against a private redis-server:
submit/wait/wait_many/status/stats, JobLost, and events() with the recovery algorithm of
docs/protocol.md (issue 9 item 3), one test per branch: a new reader (job snapshot, group history
from the start), a live gap, a duplicate, a trimmed history, an epoch change (a new data
generation), live events arriving while the history is read in pages, lost connections. A worker
is simulated from Python with the real queue/scripts (segq.fakeworker), so this runs without the
worker binary; the last test uses the real one when it is built."""
import os
import sys
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
import segq_testlib as tl  # noqa: E402

import msgpack  # noqa: E402
import redis  # noqa: E402
import segq  # noqa: E402
from segq import fakeworker, proto  # noqa: E402

P = "tc"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
CONTROL = ("recovered", "resync")


def FakeWorker(url, name="fw1", models=("otsu",)):
    return fakeworker.FakeWorker(url, prefix=P, name=name, models=models)


def split(items):
    """(events, control items) of what events() yielded."""
    return ([e for e in items if e.get("type") not in CONTROL],
            [e for e in items if e.get("type") in CONTROL])


def offsets(evs):
    return [e["off"] for e in evs]


def contiguous(evs, start=None):
    offs = offsets(evs)
    if not offs:
        return True
    first = offs[0] if start is None else start
    return offs == list(range(first, first + len(offs)))


def in_thread(fn, *a):
    errs = []

    def run():
        try:
            fn(*a)
        except Exception:  # report in the main thread
            errs.append(traceback.format_exc())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errs


class ClientEvents(unittest.TestCase):
    # test_client_async.py runs every test again with an AsyncClient behind this factory.
    def make_client(self, **kw):
        return segq.Client(self.url, prefix=P, **kw)

    @classmethod
    def setUpClass(cls):
        cls.srv = tl.RedisServer()
        cls.url = cls.srv.url

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def setUp(self):
        self.c = self.make_client()
        self.c.r.flushall()
        self.addCleanup(self.c.close)

    def test_submit_wait(self):
        c = self.c
        w = FakeWorker(self.url)
        id = c.submit(JPEG, "otsu", meta={"name": "a.jpg"}, min_area=3)
        self.assertEqual(len(id), 32, "default id is uuid4 hex")
        self.assertEqual(c.last_enqueue, {id: segq.ENQUEUE_QUEUED})
        st = c.status(id)
        self.assertEqual((st["state"], st["off"], st["attempt"], st["type"]), ("queued", 1, 0, "snapshot"), st)
        self.assertIsNone(c.result(id))
        with self.assertRaises(segq.Timeout) as e:
            c.wait(id, timeout=0.3)
        self.assertEqual(e.exception.missing, [id])
        job = proto.decode_job(tl.live_doc(c.r, P, id))
        self.assertEqual((job["params"], job["meta"]), ({"min_area": 3}, {"name": "a.jpg"}))
        # A waiter wakes on the job's terminal event.
        got = {}
        t, errs = in_thread(lambda: got.update(r=c.wait(id, timeout=10)))
        time.sleep(0.3)
        w.ack(w.claim())
        t.join(10)
        self.assertEqual(errs, [])
        res = got.get("r")
        self.assertTrue(res and res["status"] == "ok" and res["id"] == id and res["meta"] == {"name": "a.jpg"}, res)
        self.assertEqual(proto.rle_decode(res["mask"]), b"\1\1\0\0\0\0\0\0")
        t0 = time.monotonic()
        self.assertEqual(c.wait(id, timeout=5)["id"], id)
        other = self.make_client()
        self.assertEqual(other.wait(id, 5)["id"], id)
        other.close()
        self.assertLess(time.monotonic() - t0, 1.0, "waiting on a finished job is immediate")
        self.assertEqual(c.status(id)["state"], "done")
        # Idempotent ids.
        c.submit(JPEG, "otsu", id=id)
        self.assertEqual(c.last_enqueue, {id: segq.ENQUEUE_FINISHED})
        id2 = c.submit(JPEG, "otsu", id="fixed-id-1")
        c.submit(JPEG, "otsu", id="fixed-id-1")
        self.assertEqual((id2, c.last_enqueue), ("fixed-id-1", {id2: segq.ENQUEUE_PENDING}))
        # An unserved model is rejected at once (the heartbeat registered otsu only).
        bad = c.submit(JPEG, "nosuchmodel")
        self.assertEqual(c.last_enqueue, {bad: segq.ENQUEUE_REJECTED})
        r = c.wait(bad, timeout=2)
        self.assertEqual((r["status"], r["error"]["code"]), ("error", "unknown_model"))
        w.run_all()

    def test_lost_job_is_visible(self):
        """Issue 8 item 4: a job Redis lost (here: its key deleted, as a rollback of the last
        second would) makes wait() raise JobLost instead of waiting forever."""
        c = self.c
        c.recheck_s = 0.2
        with self.assertRaises(segq.JobLost):
            c.wait("never-submitted", timeout=5)
        id = c.submit(JPEG, "otsu")
        t0 = time.monotonic()

        def lose():
            time.sleep(0.3)
            c.r.delete(c.job_key(id))
        t, _ = in_thread(lose)
        with self.assertRaises(segq.JobLost) as e:
            c.wait(id, timeout=30)
        t.join(5)
        self.assertEqual(e.exception.ids, [id])
        self.assertLess(time.monotonic() - t0, 10)
        with self.assertRaises(segq.JobLost):
            list(c.events(id="never-submitted", timeout=2))

    def test_wait_many_and_stats(self):
        c = self.c
        w = FakeWorker(self.url, name="fw2")
        group, ids = c.submit_many([JPEG] * 4, "otsu", tenant="lab7")
        c.submit(JPEG, "otsu", tenant="lab8", priority=1)
        st = c.stats()
        m = st["models"].get("otsu", {})
        self.assertEqual((m.get("queued"), m["tenants"].get("lab7"), m["tenants"].get("lab8")), (5, 4, 1), st)
        self.assertEqual(c.group_status(group)["total"], 4)
        jobs = w.claim(2)
        st = c.stats()
        self.assertEqual(st["workers"].get("fw2", {}).get("inflight"), 2)
        self.assertTrue(st["workers"]["fw2"]["live"])
        self.assertGreaterEqual(st["counters"]["enqueued"], 5)
        self.assertEqual(st["dead"], 0)
        w.ack(jobs)
        with self.assertRaises(segq.Timeout) as e:
            c.wait_many(ids, timeout=0.3)
        self.assertTrue(e.exception.results and e.exception.missing)
        self.assertEqual(set(e.exception.results) | set(e.exception.missing), set(ids))
        t, errs = in_thread(w.run_all, 0.05)
        res = c.wait_many(ids, timeout=10)
        t.join(10)
        self.assertEqual(errs, [])
        self.assertEqual(list(res), ids)
        self.assertTrue(all(r["status"] == "ok" for r in res.values()))
        self.assertEqual(c.stats()["models"]["otsu"]["queued"], 0)

    def test_new_job_reader_gets_the_snapshot(self):
        c = self.c
        w = FakeWorker(self.url, name="fw3")
        id = c.submit(JPEG, "otsu")
        w.ack(w.claim())
        items = list(c.events(id=id, timeout=5))
        self.assertEqual(len(items), 1, items)
        self.assertEqual((items[0]["type"], items[0]["snapshot"]["state"], items[0]["off"]), ("resync", "done", 2))
        id = c.submit(JPEG, "otsu")
        w.ack(w.claim(), fail=(id,))
        snap = list(c.events(id=id, timeout=5))[0]["snapshot"]
        self.assertEqual((snap["state"], snap["error"]), ("failed", "model_error"))

    def test_job_live_events(self):
        """Following a job from queued: the reader marks it watched, so `started` is written."""
        c = self.c
        w = FakeWorker(self.url, name="fw4")
        for round in range(3):
            id = c.submit(JPEG, "otsu")

            def work(delay=0.01 * round + 0.2):
                time.sleep(delay)
                jobs = w.claim(1)
                w.progress([(id, 1, 2)])
                w.progress([(id, 2, 2)])
                w.ack(jobs)
            t, errs = in_thread(work)
            items = list(c.events(id=id, timeout=10))
            t.join(10)
            self.assertEqual(errs, [])
            evs, ctl = split(items)
            self.assertEqual([x["type"] for x in ctl], ["resync"])
            self.assertEqual([e["type"] for e in evs], ["started", "progress", "progress", "done"], items)
            self.assertTrue(contiguous(evs, 2), offsets(evs))
            self.assertEqual(evs[1]["steps_done"], 1)

    def test_job_gap_duplicate_and_lost_connection(self):
        c = self.c
        w = FakeWorker(self.url, name="fw5")
        id = c.submit(JPEG, "otsu", id="gap-job")
        chan, key = c.key("ev", id), c.job_key(id)
        epoch = c.r.hget(key, "epoch").decode()

        def ev(off, typ):
            return msgpack.packb({"v": 1, "id": id, "off": off, "epoch": epoch, "type": typ,
                                  "state": "running", "ts_ms": 1}, use_bin_type=True)

        def inject():
            time.sleep(0.4)
            c.r.hset(key, "off", 2)
            c.r.publish(chan, ev(2, "progress"))
            c.r.publish(chan, ev(2, "progress"))  # a duplicate: dropped
            c.r.hset(key, "off", 4)
            c.r.publish(chan, ev(4, "progress"))  # offset 3 never arrived: a gap -> resync
            time.sleep(0.3)
            w.ack(w.claim(1))                     # started (5: watched), done (6), live
        t, errs = in_thread(inject)
        items = list(c.events(id=id, timeout=10))
        t.join(5)
        self.assertEqual(errs, [])
        self.assertEqual([(x["type"], x["off"]) for x in items],
                         [("resync", 1), ("progress", 2), ("resync", 4), ("started", 5), ("done", 6)], items)
        # The connection drops while the job finishes: recovered exactly (its last event).
        id = c.submit(JPEG, "otsu", id="reconnect-job")
        admin = redis.Redis.from_url(self.url)

        def work():
            for _ in range(100):
                if admin.client_list(_type="pubsub"):
                    break
                time.sleep(0.05)
            admin.client_kill_filter(_type="pubsub")
            w.ack(w.claim(1))
        t, errs = in_thread(work)
        items = list(c.events(id=id, timeout=10))
        t.join(5)
        self.assertEqual(errs, [])
        types = [x["type"] for x in items]
        # The kill may land before or after the first recovery; either way `done` comes once.
        self.assertEqual(types.count("done") + sum(1 for x in items if x["type"] == "resync" and
                                                    x["snapshot"]["state"] == "done"), 1, items)
        self.assertIn(types[-1], ("done", "resync"))

    def test_group_history_from_the_start(self):
        c = self.c
        w = FakeWorker(self.url, name="fw6")
        n = 6
        group, ids = c.submit_many([JPEG] * n, "otsu", group="up-%d" % os.getpid())
        self.assertEqual(len(set(ids)), n)
        self.assertTrue(all(c.last_enqueue[i] == 1 for i in ids))
        w.ack(w.claim(3))  # half done before anyone watches
        t, errs = in_thread(w.run_all, 0.02, 1, (ids[4],))
        items = list(c.events(group=group, timeout=10))
        t.join(10)
        self.assertEqual(errs, [])
        evs, ctl = split(items)
        self.assertEqual(ctl[0]["type"], "recovered")
        self.assertTrue(contiguous(evs, 1), offsets(evs))
        last = evs[-1]
        self.assertEqual((last["done"], last["failed"], last["total"]), (n - 1, 1, n), last)
        per = {}
        for e in evs:
            for j in e.get("jobs") or []:
                per.setdefault(j["id"], []).append(j["type"])
        self.assertEqual(per[ids[0]], ["queued", "started", "done"])
        self.assertEqual(per[ids[4]], ["queued", "started", "failed"])
        # A late reader of a finished group replays the history and stops at once.
        t0 = time.monotonic()
        evs2, ctl2 = split(list(c.events(group=group, timeout=5)))
        self.assertEqual(offsets(evs2), offsets(evs))
        self.assertLess(time.monotonic() - t0, 2)
        # Resuming from a position delivers only what came after it.
        evs3, ctl3 = split(list(c.events(group=group, timeout=5, since=(evs[2]["off"], evs[2]["epoch"]))))
        self.assertEqual(offsets(evs3), offsets(evs)[3:])
        self.assertEqual((ctl3[0]["type"], ctl3[0]["missed"]), ("recovered", len(evs) - 3))

    def test_group_trimmed_history_and_stale_epoch(self):
        c = self.c
        w = FakeWorker(self.url, name="fw7")
        group, ids = c.submit_many([JPEG] * 4, "otsu")
        w.run_all(per_claim=1)
        snap = c.group_status(group)
        c.r.xtrim(c.key("gh", group), maxlen=2, approximate=False)
        items = list(c.events(group=group, timeout=5))
        self.assertEqual([x["type"] for x in items], ["resync"], items)
        self.assertEqual(items[0]["snapshot"]["done"], 4)
        items = list(c.events(group=group, timeout=5, since=(1, snap["epoch"])))
        self.assertEqual([x["type"] for x in items], ["resync"], "trimmed past the reader")
        items = list(c.events(group=group, timeout=5, since=(snap["off"] - 1, "an-old-epoch")))
        self.assertEqual([x["type"] for x in items], ["resync"], "another epoch")

    def test_group_epoch_change_while_reading(self):
        """A new data generation (the heartbeat sees another Redis run_id, as after a failover)
        gives the next group event a new epoch: a reader resyncs, then continues."""
        c = self.c
        w = FakeWorker(self.url, name="fw8")
        group, ids = c.submit_many([JPEG] * 3, "otsu")

        def work():
            time.sleep(0.3)
            w.ack(w.claim(1))
            time.sleep(0.2)
            c.r.hset(c.key("epoch"), "run", "another-redis")
            w.heartbeat()
            w.ack(w.claim(1))
            time.sleep(0.2)
            w.ack(w.claim(1))
        t, errs = in_thread(work)
        items = list(c.events(group=group, timeout=10))
        t.join(5)
        self.assertEqual(errs, [])
        types = [x["type"] for x in items]
        self.assertEqual(types.count("resync"), 1, types)
        after = items[types.index("resync"):]
        evs, _ = split(after)
        self.assertTrue(all(e["epoch"] == after[0]["epoch"] for e in evs), after)
        self.assertNotEqual(after[0]["epoch"], split(items)[0][0]["epoch"])
        self.assertEqual(split(items)[0][-1]["done"], 3)

    def test_live_events_while_history_is_read(self):
        """A long history is read in pages (recover returns `more`) while live events keep
        arriving: every event comes exactly once, in order."""
        c = self.c
        w = FakeWorker(self.url, name="fw9")
        n = 1300  # one group event per enqueue call: more than one page of history
        group = "big-%d" % os.getpid()
        for i in range(n):
            c.submit(JPEG, "otsu", group=group, id="big-%04d" % i)
        stop = threading.Event()

        def work():
            while not stop.is_set():
                jobs = w.claim(7)
                if not jobs:
                    return
                w.ack(jobs)
        t, errs = in_thread(work)
        items = list(c.events(group=group, timeout=120))
        stop.set()
        t.join(30)
        self.assertEqual(errs, [])
        evs, ctl = split(items)
        self.assertTrue(contiguous(evs, 1), [o for o in offsets(evs)][:20])
        self.assertEqual(len(set(offsets(evs))), len(evs), "no event twice")
        self.assertGreater(len(evs), n)
        self.assertEqual(evs[-1]["done"], n)

    def test_group_lost_connections(self):
        """The subscriber's connection is killed twice mid-group; events published while it was
        gone are recovered from the history, none twice."""
        c = self.c
        w = FakeWorker(self.url, name="fw10")
        admin = redis.Redis.from_url(self.url)
        n = 6
        group, ids = c.submit_many([JPEG] * n, "otsu")

        def work():
            time.sleep(0.3)
            for k in range(n):
                if k in (2, 4):
                    for _ in range(100):  # until it has re-subscribed after the previous kill
                        if admin.client_list(_type="pubsub"):
                            break
                        time.sleep(0.05)
                    self.assertGreaterEqual(admin.client_kill_filter(_type="pubsub"), 1)
                    time.sleep(0.01)
                w.ack(w.claim(1))
                time.sleep(0.05)
        t, errs = in_thread(work)
        items = list(c.events(group=group, timeout=20))
        t.join(10)
        self.assertEqual(errs, [])
        evs, ctl = split(items)
        self.assertTrue(contiguous(evs, 1), offsets(evs))
        self.assertEqual(len(evs), 1 + 2 * n, "one enqueue event, then a claim and an ack per job")
        self.assertEqual(evs[-1]["done"], n)
        self.assertGreaterEqual(len(ctl), 2, "a recovery after each lost connection")

    def test_real_worker(self):
        """With the worker binary built: real results through submit/submit_many, events and wait."""
        if tl.worker_binary() is None:
            self.skipTest("no segq-worker built")
        import numpy as np
        w = tl.Worker(self.url, prefix=P, worker_id="real-1", models="null,otsu")
        try:
            w.wait_ready(redis.Redis.from_url(self.url))
            c = self.c
            samples = os.path.join(tl.SOURCE_DIR, "samples")
            files = [os.path.join(samples, "cells_%02d.jpg" % i) for i in (1, 2, 3)]
            yy, xx = np.mgrid[0:64, 0:96]
            disk = ((xx - 40) ** 2 + (yy - 30) ** 2 < 15 ** 2)
            g8 = (disk * 200 + 20).astype(np.uint8)
            g16 = (disk * 50000 + 1000).astype(np.uint16)
            group, ids = c.submit_many(files + [g8, g16], "otsu", outputs=["polygons", "mask"], min_area=0,
                                       meta={"t": "real"})
            evs, _ = split(list(c.events(group=group, timeout=60)))
            self.assertTrue(contiguous(evs, 1) and evs and evs[-1]["done"] == len(ids), evs[-3:])
            res = c.wait_many(ids, timeout=30)
            for i, id in enumerate(ids):
                r = res[id]
                self.assertEqual(r["status"], "ok", r.get("error"))
                m = proto.rle_to_numpy(r["mask"])
                self.assertEqual(m.shape, (r["height"], r["width"]))
                area = sum(p["area"] for p in r["polygons"])
                self.assertTrue(r["polygons"] and 0 < area <= m.sum(), (area, m.sum()))
                self.assertEqual((r["meta"], r["attempt"], r["worker"]), ({"t": "real"}, 1, "real-1"))
            for arr in (res[ids[3]], res[ids[4]]):
                # The disk: one component of about pi*15^2 pixels, in the array's coordinates.
                self.assertEqual(len(arr["polygons"]), 1)
                self.assertLess(abs(arr["polygons"][0]["area"] - 707), 40)
                self.assertIn(arr["polygons"][0]["bbox"][0], (25, 26))
            id = c.submit(files[0], "null", watch=True)
            items = list(c.events(id=id, timeout=30))
            self.assertEqual(items[-1].get("type") if items[-1]["type"] != "resync" else
                             items[-1]["snapshot"]["state"], "done", items)
            self.assertEqual(c.wait(id, timeout=30)["status"], "ok")
        finally:
            rc = w.stop(timeout=40)
            self.assertEqual(rc, 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
