#!/usr/bin/python3
"""Integration tests of the Python client (clients/python/segq) against a private redis-server:
submit/wait/wait_many/status/stats, and events() catch-up (late subscribers, live gaps, groups)
yielding every event exactly once and in order. A worker is simulated from Python with the real
queue/scripts (segq.fakeworker: heartbeat, claim, ack), so this runs without the worker binary."""
import os
import sys
import threading
import unittest
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "clients", "python"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
SCRIPTS = os.path.join(SRC, "queue", "scripts")

try:
    import msgpack
    import redis
    import segq
    import segq_testlib as tl
    from segq import fakeworker, proto
except ImportError as e:  # pragma: no cover
    print("skip: needs python3-redis and python3-msgpack:", e)
    sys.exit(77)

for _name in ("enqueue", "claim", "ack", "heartbeat"):
    if not os.path.exists(os.path.join(SCRIPTS, _name + ".lua")):
        print("skip: queue/scripts/%s.lua is not there yet" % _name)
        sys.exit(77)

P = "tc"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def FakeWorker(url, name="fw1", models=("otsu",)):
    return fakeworker.FakeWorker(url, prefix=P, name=name, models=models)


failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)
    return cond


def collect(gen):
    return [e for e in gen]


def contiguous(evs, field):
    return [e[field] for e in evs] == list(range(1, len(evs) + 1))


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


def test_submit_wait(url):
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url)
    id = c.submit(JPEG, "otsu", meta={"name": "a.jpg"}, min_area=3)
    check(len(id) == 32, "default id is uuid4 hex")
    check(c.last_enqueue == {id: segq.ENQUEUE_QUEUED}, "enqueue code 1: %r" % c.last_enqueue)
    st = c.status(id)
    check(st and st["state"] == "queued" and st["seq"] == 1 and st["model"] == "otsu", "status queued: %r" % st)
    check(c.result(id) is None, "no result yet")
    try:
        c.wait(id, timeout=0.3)
        check(False, "wait should time out")
    except segq.Timeout as e:
        check(e.missing == [id], "timeout names the id")
    # Stored payload is what the encoder made.
    job = proto.decode_job(c.r.get(c.key("job", id)))
    check(job["params"] == {"min_area": 3} and job["meta"] == {"name": "a.jpg"}, "payload: %r" % job)
    # A waiter blocked in BLMOVE wakes when the worker acks.
    got = {}
    t, errs = in_thread(lambda: got.update(r=c.wait(id, timeout=10)))
    time.sleep(0.3)
    w.ack(w.claim())
    t.join(10)
    check(not errs, "wait thread: %s" % errs)
    res = got.get("r")
    check(res and res["status"] == "ok" and res["id"] == id and res["meta"] == {"name": "a.jpg"}, "result %r" % res)
    check(proto.rle_decode(res["mask"]) == b"\1\1\0\0\0\0\0\0", "mask decodes")
    # Non-destructive: a second wait returns at once, and so does one on a fresh client.
    t0 = time.monotonic()
    check(c.wait(id, timeout=5)["id"] == id and segq.Client(url, prefix=P).wait(id, 5)["id"] == id, "wait again")
    check(time.monotonic() - t0 < 1.0, "second wait is immediate")
    check(c.r.llen(c.key("reply", id)) == 1, "reply token kept")
    # Idempotent ids.
    c.submit(JPEG, "otsu", id=id)
    check(c.last_enqueue == {id: segq.ENQUEUE_HAS_RESULT}, "resubmit of finished id: %r" % c.last_enqueue)
    id2 = c.submit(JPEG, "otsu", id="fixed-id-1")
    c.submit(JPEG, "otsu", id="fixed-id-1")
    check(id2 == "fixed-id-1" and c.last_enqueue == {id2: segq.ENQUEUE_PENDING}, "resubmit of pending id")
    # An unserved model is rejected at once (heartbeat registered otsu only).
    bad = c.submit(JPEG, "nosuchmodel")
    check(c.last_enqueue == {bad: segq.ENQUEUE_REJECTED}, "unknown model rejected")
    r = c.wait(bad, timeout=2)
    check(r["status"] == "error" and r["error"]["code"] == "unknown_model", "unknown_model result %r" % r)
    w.run_all()


def test_wait_many_and_stats(url):
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url, name="fw2")
    group, ids = c.submit_many([JPEG] * 4, "otsu", tenant="lab7")
    c.submit(JPEG, "otsu", tenant="lab8", priority=1)
    st = c.stats()
    m = st["models"].get("otsu", {})
    check(m.get("queued") == 5 and m["tenants"].get("lab7") == 4 and m["tenants"].get("lab8") == 1,
          "stats queues %r" % st["models"])
    check(c.group_status(group)["total"] == 4, "group total")
    jobs = w.claim(2)
    st = c.stats()
    check(st["workers"].get("fw2", {}).get("inflight") == 2 and st["workers"]["fw2"]["live"], "inflight %r" % st["workers"])
    check(st["live_workers"] >= 1 and st["counters"]["enqueued"] >= 5, "counters %r" % st["counters"])
    check(isinstance(st["dead"], int), "dead count")
    w.ack(jobs)
    try:
        c.wait_many(ids, timeout=0.3)
        check(False, "wait_many should time out")
    except segq.Timeout as e:
        check(len(e.results) >= 1 and len(e.missing) >= 1 and set(e.results) | set(e.missing) == set(ids),
              "partial wait_many: %d/%d" % (len(e.results), len(e.missing)))
    t, errs = in_thread(w.run_all, 0.05)
    res = c.wait_many(ids, timeout=10)
    t.join(10)
    check(not errs, "worker thread: %s" % errs)
    check(list(res) == ids and all(r["status"] == "ok" for r in res.values()), "wait_many all")
    check(c.stats()["models"]["otsu"]["queued"] == 0, "queues drained")


def test_events_late_subscriber(url):
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url, name="fw3")
    id = c.submit(JPEG, "otsu")
    w.ack(w.claim(), fail=())
    evs = collect(c.events(id=id, timeout=5))
    check([e["state"] for e in evs] == ["queued", "started", "done"], "late: %r" % [e["state"] for e in evs])
    check(contiguous(evs, "seq"), "late seqs %r" % [e["seq"] for e in evs])
    check(all(e["id"] == id for e in evs), "ids")
    # Failed terminal too.
    id = c.submit(JPEG, "otsu")
    w.ack(w.claim(), fail=(id,))
    evs = collect(c.events(id=id, timeout=5))
    check([e["state"] for e in evs] == ["queued", "started", "failed"] and evs[-1].get("error") == "model_error",
          "failed events %r" % evs)


def test_events_live(url):
    """Subscribing between queued and started: catch-up from the stream, then live, no dups."""
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url, name="fw4")
    for round in range(5):
        id = c.submit(JPEG, "otsu")
        t, errs = in_thread(w.run_all, 0.01 * round)
        evs = collect(c.events(id=id, timeout=10))
        t.join(10)
        check(not errs, "worker: %s" % errs)
        check([e["state"] for e in evs] == ["queued", "started", "done"] and contiguous(evs, "seq"),
              "live round %d: %r" % (round, [(e["seq"], e["state"]) for e in evs]))


def test_events_gap(url):
    """A live message that was missed (published but not received) is recovered from the stream."""
    c = segq.Client(url, prefix=P)
    id = "gap-job"
    c.submit(JPEG, "otsu", id=id)
    stream, chan = c.key("events", id), c.key("ev", id)

    def ev(seq, state):
        return msgpack.packb({"v": 1, "id": id, "seq": seq, "state": state, "ts_ms": 1}, use_bin_type=True)

    def inject():
        time.sleep(0.4)
        c.r.xadd(stream, {"e": ev(2, "started")})
        c.r.xadd(stream, {"e": ev(3, "requeued")})
        c.r.xadd(stream, {"e": ev(4, "started")})
        c.r.publish(chan, ev(2, "started"))
        c.r.publish(chan, ev(2, "started"))      # duplicate: dropped
        c.r.publish(chan, ev(4, "started"))      # seq 3 never published: a gap
        time.sleep(0.1)
        c.r.xadd(stream, {"e": ev(5, "done")})
        c.r.publish(chan, ev(5, "done"))
    t, errs = in_thread(inject)
    evs = collect(c.events(id=id, timeout=10))
    t.join(5)
    check([(e["seq"], e["state"]) for e in evs] ==
          [(1, "queued"), (2, "started"), (3, "requeued"), (4, "started"), (5, "done")],
          "gap recovery %r" % [(e["seq"], e["state"]) for e in evs])
    try:
        collect(c.events(id="never-submitted", timeout=0.5))
        check(False, "events on unknown id should time out")
    except segq.Timeout:
        pass


def test_group_events(url):
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url, name="fw5")
    n = 6
    group, ids = c.submit_many([JPEG] * n, "otsu", group="up-%d" % os.getpid())
    check(len(set(ids)) == n and all(c.last_enqueue[i] == 1 for i in ids), "submit_many codes")
    # Half done before anyone watches; the rest while watching, one failing.
    w.ack(w.claim(3))
    t, errs = in_thread(w.run_all, 0.02, 1, (ids[4],))
    evs = collect(c.events(group=group, timeout=10))
    t.join(10)
    check(not errs, "worker: %s" % errs)
    check(contiguous(evs, "gseq"), "gseq contiguous %r" % [e["gseq"] for e in evs])
    check(len(evs) == 3 * n, "3 events per job, got %d" % len(evs))
    last = evs[-1]
    check(last["done"] == n - 1 and last["failed"] == 1 and last["total"] == n, "final counters %r" % last)
    per = {}
    for e in evs:
        per.setdefault(e["id"], []).append(e["state"])
    check(all(per[i][0] == "queued" and per[i][-1] in ("done", "failed") for i in ids), "per-job order")
    # A late watcher of a finished group replays and stops at once.
    t0 = time.monotonic()
    evs2 = collect(c.events(group=group, timeout=5))
    check([e["gseq"] for e in evs2] == [e["gseq"] for e in evs] and time.monotonic() - t0 < 2, "replay")


def test_events_reconnect(url):
    """The subscriber's connection is killed twice mid-group; events published while it was
    gone come from the stream, none twice."""
    c = segq.Client(url, prefix=P)
    w = FakeWorker(url, name="fw6")
    admin = redis.Redis.from_url(url)
    n = 6
    group, ids = c.submit_many([JPEG] * n, "otsu")

    def work():
        time.sleep(0.3)
        for k in range(n):
            if k in (2, 4):
                for _ in range(100):  # wait until it has re-subscribed after the previous kill
                    if admin.client_list(_type="pubsub"):
                        break
                    time.sleep(0.05)
                killed = admin.client_kill_filter(_type="pubsub")
                check(killed >= 1, "killed the subscriber (%r)" % killed)
                time.sleep(0.01)
            w.ack(w.claim(1))
            time.sleep(0.05)
    t, errs = in_thread(work)
    evs = collect(c.events(group=group, timeout=20))
    t.join(10)
    check(not errs, "worker: %s" % errs)
    check(contiguous(evs, "gseq") and len(evs) == 3 * n, "reconnect gseqs %r" % [e["gseq"] for e in evs])
    check(evs and evs[-1]["done"] == n, "all done after reconnects")


def test_real_worker(url):
    """With the worker binary built: real results through submit/submit_many, events and wait."""
    if tl.worker_binary() is None:
        print("     (no segq-worker built: real-worker part skipped)")
        return
    import numpy as np
    w = tl.Worker(url, prefix=P, worker_id="real-1", models="null,otsu")
    try:
        w.wait_ready(redis.Redis.from_url(url))
        c = segq.Client(url, prefix=P)
        samples = os.path.join(SRC, "samples")
        files = [os.path.join(samples, "cells_%02d.jpg" % i) for i in (1, 2, 3)]
        yy, xx = np.mgrid[0:64, 0:96]
        disk = ((xx - 40) ** 2 + (yy - 30) ** 2 < 15 ** 2)
        g8 = (disk * 200 + 20).astype(np.uint8)
        g16 = (disk * 50000 + 1000).astype(np.uint16)
        group, ids = c.submit_many(files + [g8, g16], "otsu", outputs=["polygons", "mask"], min_area=0,
                                   meta={"t": "real"})
        evs = collect(c.events(group=group, timeout=60))
        check(contiguous(evs, "gseq") and evs and evs[-1]["done"] == len(ids), "real group events %r" %
              [(e["gseq"], e["state"]) for e in evs][-5:])
        res = c.wait_many(ids, timeout=30)
        for i, id in enumerate(ids):
            r = res[id]
            if not check(r["status"] == "ok", "real result %d: %r" % (i, r.get("error"))):
                continue
            m = proto.rle_to_numpy(r["mask"])
            check(m.shape == (r["height"], r["width"]), "mask shape %r" % (m.shape,))
            area = sum(p["area"] for p in r["polygons"])
            check(r["polygons"] and 0 < area <= m.sum(), "polygons vs mask: %s vs %d" % (area, m.sum()))
            check(r["meta"] == {"t": "real"} and r["attempt"] == 1 and r["worker"] == "real-1", "fields")
        for arr in (res[ids[3]], res[ids[4]]):
            # The disk: one component of about pi*15^2 pixels, in the array's coordinates.
            check(len(arr["polygons"]) == 1 and abs(arr["polygons"][0]["area"] - 707) < 40 and
                  arr["polygons"][0]["bbox"][0] in (25, 26), "raw disk %r" %
                  [(p["area"], p["bbox"]) for p in arr["polygons"]])
        id = c.submit(files[0], "null")
        check(c.wait(id, timeout=30)["status"] == "ok", "null model")
        evs = collect(c.events(id=id, timeout=5))
        check([e["state"] for e in evs] == ["queued", "started", "done"], "real job events")
    finally:
        rc = w.stop(timeout=40)
        check(rc == 0, "worker exit code %s; log:\n%s" % (rc, w.log_tail()))


def main():
    try:
        srv = tl.RedisServer()
    except unittest.SkipTest as e:
        print("skip:", e)
        return 77
    tests = [test_submit_wait, test_wait_many_and_stats, test_events_late_subscriber,
             test_events_live, test_events_gap, test_group_events, test_events_reconnect,
             test_real_worker]
    try:
        for t in tests:
            before = failures
            try:
                t(srv.url)
            except Exception:
                traceback.print_exc()
                check(False, "%s raised" % t.__name__)
            print("%s %s" % ("ok  " if failures == before else "FAIL", t.__name__))
    finally:
        srv.stop()
    print("test_client_events: %d tests, %d failures" % (len(tests), failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
