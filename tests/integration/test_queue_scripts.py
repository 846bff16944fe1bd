#!/usr/bin/python3
"""Script-level tests of queue/scripts/*.lua, EVALed directly against a private redis-server: the
key layout of docs/protocol.md (one key per job, a record when finished), enqueue idempotency,
claim atomicity, fairness, priority and byte bounds, fenced/duplicate ack, sweep, poison
quarantine, dead letters, unknown models, offsets and epochs, group events once per call,
progress, release, cancel, retries and TTLs on every terminal key."""
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
import segq_testlib as tl  # noqa: E402

import msgpack  # noqa: E402
import redis  # noqa: E402
from segq import fakeworker, proto, schema  # noqa: E402

P = "tq"
TTL = 3600
NAMES = ("enqueue", "claim", "ack", "heartbeat", "sweep", "unregister", "progress", "release",
         "cancel", "recover", "dead", "watch")


def now():
    return int(time.time() * 1000)


def payload(id, model="m", size=0):
    doc = {"v": 1, "id": id, "model": model}
    if size:
        doc["pad"] = b"x" * size
    return msgpack.packb(doc, use_bin_type=True)


class Q:
    """The scripts with the argument lists of docs/protocol.md."""

    def __init__(self, r):
        self.r = r
        self.src = {n: tl.load_script(n) for n in NAMES}

    def ev(self, name, *argv):
        return self.r.eval(self.src[name], 0, *argv)

    def enqueue_many(self, jobs, group="", watch=0):
        """jobs: [(id, model, tenant, priority, payload)]"""
        argv = [P, now(), TTL, group, watch]
        for j in jobs:
            argv += list(j)
        return self.ev("enqueue", *argv)

    def enqueue(self, id, model="m", tenant="", group="", priority=0, body=None, watch=0):
        if body is None:
            body = payload(id, model)
        return self.enqueue_many([(id, model, tenant, priority, body)], group, watch)[0]

    def heartbeat(self, worker, token, models=("m",), ttl_ms=10000):
        return self.ev("heartbeat", P, worker, token, ttl_ms, now(), *models)

    def claim(self, worker, token, n, models=("m",), max_bytes=64 << 20):
        """The claimed jobs as segq-worker reads them: fetched ones with their documents, gone
        ones acked with how "!" (docs/protocol.md "Fetched claims")."""
        flat = self.ev("claim", P, worker, token, n, max_bytes, now(), TTL, *models)
        jobs, gone = fakeworker.fetch_claimed(self.r, P, models, flat)
        if gone:
            self.ev("ack", P, worker, token, now(), TTL, 7 * 86400, 3, "",
                    *fakeworker.gone_items(gone))
        return jobs

    def ack(self, worker, token, items, max_attempts=3):
        """items: (id, result, code[, retry_ms]) acked the ordinary way (the script builds the
        record), or (id, result, "", claimed) with claimed the claim's entry of a fast run: the
        record built as segq-worker does."""
        argv, gen, t = [], "", now()
        for it in items:
            id, res, code = it[:3]
            retry = it[3] if len(it) > 3 else 0
            if code:
                argv += [id, res, "%s:%d" % (code, retry)]
            elif isinstance(retry, (list, tuple)) and retry[6]:
                c = retry
                gen = c[6].rsplit(b".", 1)[0]
                argv += [id, proto.fast_record(id, c[5], c[6], c[3], worker, t, res), ""]
            else:
                argv += [id, res, "-"]
        return self.ev("ack", P, worker, token, t, TTL, 7 * 86400, max_attempts, gen, *argv)

    def sweep(self, max_attempts=3):
        self.r.delete(P + ":sweeper")
        return self.ev("sweep", P, "sweeper", 1000, max_attempts, now(), TTL, 7 * 86400)

    def cancel(self, kind, *ids):
        return self.ev("cancel", P, now(), TTL, kind, *ids)

    def recover(self, kind, id, since=0, epoch="", limit=1000, watch=0):
        r = self.ev("recover", P, kind, id, since, epoch, limit, watch)
        status = r[0].decode()
        snap = proto.decode_event(r[1]) if r[1] else None
        return status, snap, [proto.decode_event(x) for x in r[2:]]


def ids_of(jobs):
    return [j[1].decode() for j in jobs]


def record(r, id):
    raw = r.get(P + ":job:" + id)
    return proto.decode_record(raw) if raw is not None else None


def doc_of(r, id):
    return tl.live_doc(r, P, id)


def state(r, id):
    return tl.job_status(r, P, id).get("state")


def ring_invariant(r, model="m"):
    ring = {t.decode() for t in r.lrange(P + ":ring:" + model, 0, -1)}
    nonempty = set()
    for k in r.scan_iter(P + ":q:" + model + ":*"):
        if r.llen(k) > 0:
            nonempty.add(k.decode().rsplit(":", 1)[1])
    return ring == nonempty and len(ring) == r.llen(P + ":ring:" + model)


class Scripts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tl.RedisServer()
        cls.r = cls.srv.client()
        cls.q = Q(cls.r)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def setUp(self):
        self.r.flushall()

    def test_schema_names_are_what_the_scripts_use(self):
        self.assertEqual(schema.KEY["JOB"], "job")
        src = self.q.src["ack"].decode()
        self.assertIn("local KEY = strict({", src)
        self.assertIn("    suspected_poison = true,", src)
        # A misspelt constant is an error, not a nil.
        with self.assertRaises(redis.ResponseError) as e:
            self.r.eval(schema.lua_constants() + "return KEY.JOBB", 0)
        self.assertIn("segq: no key JOBB", str(e.exception))
        # Error codes are made lazily, and strict the same way.
        self.assertEqual(self.r.eval(schema.lua_constants() + "return ERR.canceled", 0), b"canceled")
        with self.assertRaises(redis.ResponseError) as e:
            self.r.eval(schema.lua_constants() + "return ERR.cancelled", 0)
        self.assertIn("segq: no error code cancelled", str(e.exception))

    def test_enqueue_idempotent(self):
        q, r = self.q, self.r
        self.assertEqual(q.enqueue("a1"), 1)
        self.assertEqual(q.enqueue("a1"), 0, "second enqueue of a pending job")
        self.assertEqual(r.llen(P + ":q:m:default"), 1)
        self.assertEqual(r.type(P + ":job:a1"), b"hash")
        self.assertEqual(r.hget(P + ":job:a1", "state"), b"queued")
        self.assertEqual(doc_of(r, "a1"), payload("a1"))
        self.assertGreaterEqual(r.llen(P + ":wake:m"), 1)
        self.assertFalse(r.exists(P + ":models"), "no P:models: only served models are recorded")
        q.heartbeat("w1", "t1")
        self.assertEqual(ids_of(q.claim("w1", "t1", 10)), ["a1"])
        self.assertEqual(q.enqueue("a1"), 0, "enqueue of a running job")
        self.assertEqual(q.ack("w1", "t1", [("a1", b"\x81\xa1v\x01", "")]), [1])
        self.assertEqual(q.enqueue("a1"), 2, "enqueue of a finished job")
        self.assertEqual(r.llen(P + ":q:m:default"), 0)
        # One call, many jobs; the same id twice in one call is queued once.
        codes = q.enqueue_many([("b1", "m", "", 0, payload("b1")), ("b2", "m", "", 0, payload("b2")),
                                ("b1", "m", "", 0, payload("b1"))])
        self.assertEqual(codes, [1, 1, 0])
        self.assertEqual([x.decode() for x in r.lrange(P + ":q:m:default", 0, -1)], ["b1", "b2"])
        self.assertTrue(ring_invariant(r))
        self.assertEqual(tl.stats(r, P)["enqueued"], 3)

    def test_claim_atomic_n(self):
        q, r = self.q, self.r
        for i in range(10):
            q.enqueue("c%d" % i)
        q.heartbeat("w1", "t1")
        jobs = q.claim("w1", "t1", 4)
        self.assertEqual(ids_of(jobs), ["c0", "c1", "c2", "c3"])
        self.assertTrue(all(j[0] == b"m" for j in jobs))
        self.assertTrue(all(j[3] == 1 for j in jobs), "attempt 1")
        self.assertTrue(all(int(j[4]) > 0 for j in jobs), "enqueued_ms returned")
        self.assertEqual(msgpack.unpackb(jobs[0][2])["id"], "c0")
        self.assertEqual([x.decode() for x in r.lrange(P + ":inflight:w1", 0, -1)], ids_of(jobs))
        self.assertTrue(r.sismember(P + ":workers", "w1"))
        self.assertEqual(r.llen(P + ":q:m:default"), 6)
        self.assertEqual(state(r, "c0"), "running")
        # A fast run: the claim wrote nothing to the job, its reply carries the job's position.
        self.assertEqual(r.hmget(P + ":job:c0", "state", "worker", "attempts"), [b"queued", None, None])
        # A lean hash: fields at their defaults are left out (attempts 0, no group, the default
        # tenant, unwatched, updated when enqueued).
        self.assertEqual(sorted(r.hkeys(P + ":job:c5")),
                         [b"enqueued_ms", b"epoch", b"model", b"off", b"size", b"state"])
        self.assertEqual((jobs[0][5], jobs[0][6]), tuple(r.hmget(P + ":job:c0", "off", "epoch")))
        self.assertEqual(len(q.claim("w1", "t1", 100)), 6, "claim of more than available")
        self.assertEqual(q.claim("w1", "t1", 5), [])
        self.assertTrue(ring_invariant(r))
        self.assertFalse(r.exists(P + ":ring:m"))
        for token, worker in (("bad", "w1"), ("t9", "w9")):
            with self.assertRaises(redis.ResponseError) as e:
                q.claim(worker, token, 1)
            self.assertTrue(str(e.exception).startswith("LEASE"), e.exception)

    def test_claim_bounded_by_bytes(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")  # the model is served: jobs queued from now on may be fetched
        for i in range(6):
            q.enqueue("big%d" % i, body=payload("big%d" % i, size=5000))
        self.assertEqual(r.scard(P + ":slow"), 6, "over FETCHED_DOC_MAX: their claim reads them")
        jobs = q.claim("w1", "t1", 10, max_bytes=12000)
        self.assertEqual(ids_of(jobs), ["big0", "big1"], "two documents of ~5 KB fit in 12000 bytes")
        self.assertEqual(r.llen(P + ":q:m:default"), 4, "the rest stays queued, in order")
        jobs = q.claim("w1", "t1", 10, max_bytes=10)
        self.assertEqual(ids_of(jobs), ["big2"], "the first job is taken whatever its size")
        self.assertEqual(r.lindex(P + ":q:m:default", 0), b"big3")
        self.assertEqual(r.scard(P + ":slow"), 3, "the claimed ids leave P:slow")
        self.assertTrue(ring_invariant(r))
        # Small documents are fetched after the claim, which counts each at its bound.
        bound = schema.DEFAULT["FETCHED_DOC_MAX"]
        q.claim("w1", "t1", 10)
        for i in range(4):
            q.enqueue("small%d" % i, body=payload("small%d" % i, size=100))
        self.assertEqual(r.scard(P + ":slow"), 0)
        jobs = q.claim("w1", "t1", 10, max_bytes=2 * bound + 1)
        self.assertEqual(ids_of(jobs), ["small0", "small1"])
        self.assertEqual([j[2] for j in jobs], [doc_of(r, i) for i in ids_of(jobs)])
        self.assertTrue(ring_invariant(r))

    def test_fairness(self):
        q, r = self.q, self.r
        q.enqueue_many([("A%d" % i, "m", "A", 0, payload("A%d" % i)) for i in range(100)])
        q.enqueue("B0", tenant="B")
        self.assertTrue(ring_invariant(r))
        q.heartbeat("w1", "t1", models=("m", "m2"))
        got = ids_of(q.claim("w1", "t1", 2, models=("m", "m2")))
        self.assertIn("B0", got)
        self.assertTrue(ring_invariant(r))
        self.assertEqual(ids_of(q.claim("w1", "t1", 3)), ["A1", "A2", "A3"])
        self.assertEqual(q.enqueue("x1", model="m2"), 1)
        self.assertIn("x1", ids_of(q.claim("w1", "t1", 2, models=("m", "m2"))))
        q.enqueue("x2", model="m2")
        self.assertEqual(ids_of(q.claim("w1", "t1", 1, models=("m2", "m"))), ["x2"])
        # Three tenants share a claim equally.
        r.flushall()
        for t in "CDE":
            q.enqueue_many([("%s%d" % (t, i), "m", t, 0, payload("%s%d" % (t, i))) for i in range(10)])
        q.heartbeat("w1", "t1")
        got = ids_of(q.claim("w1", "t1", 6))
        self.assertEqual(sorted(x[0] for x in got), list("CCDDEE"), got)
        self.assertTrue(ring_invariant(r))

    def test_priority(self):
        q = self.q
        q.enqueue("p1")
        q.enqueue("p2")
        q.enqueue("hi", priority=5)
        q.heartbeat("w1", "t1")
        self.assertEqual(ids_of(q.claim("w1", "t1", 3)), ["hi", "p1", "p2"])

    def test_ack(self):
        q, r = self.q, self.r
        q.enqueue_many([("k%d" % i, "m", "", 0, payload("k%d" % i)) for i in (1, 2, 3)], group="g1")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 3)
        with self.assertRaises(redis.ResponseError) as e:
            q.ack("w1", "WRONG", [("k1", b"x", "")])
        self.assertTrue(str(e.exception).startswith("LEASE"))
        self.assertEqual(r.type(P + ":job:k1"), b"hash", "nothing written on a fenced ack")
        goff = int(r.hget(P + ":group:g1", "off"))
        res1 = msgpack.packb({"v": 1, "id": "k1", "status": "ok"})
        self.assertEqual(q.ack("w1", "t1", [("k1", res1, ""), ("k2", b"\x80", "model_error")]), [1, 1])
        ev, res, doc = record(r, "k1")
        self.assertEqual(res, {"v": 1, "id": "k1", "status": "ok"}, "the result document follows the event")
        self.assertIsNone(doc)
        self.assertEqual((ev["type"], ev["state"], ev["worker"], ev["attempt"], ev["group"]),
                         ("done", "done", "w1", 1, "g1"))
        self.assertEqual(ev["off"], 2, "queued (1), done (2): started is not written for unwatched jobs")
        self.assertGreater(r.ttl(P + ":job:k1"), 0)
        ev2 = record(r, "k2")[0]
        self.assertEqual((ev2["state"], ev2["error"]), ("failed", "model_error"))
        self.assertEqual(tl.job_status(r, P, "k2")["state"], "failed")
        # One key per finished job, and nothing else of it.
        self.assertEqual(sorted(k.decode() for k in r.scan_iter(P + ":*k1*")), [P + ":job:k1"])
        self.assertGreater(r.ttl(P + ":group:g1"), 0)
        self.assertGreater(r.ttl(P + ":gh:g1"), 0)
        g = {k.decode(): int(v) for k, v in r.hgetall(P + ":group:g1").items() if k != b"epoch"}
        self.assertEqual((g["total"], g["done"], g["failed"], g["running"], g["queued"]), (3, 1, 1, 1, 0), g)
        self.assertEqual(g["off"], goff + 1, "one group event for the whole ack")
        hist = tl.group_history(r, P, "g1")
        self.assertEqual([e["off"] for e in hist], list(range(1, len(hist) + 1)))
        self.assertEqual([(j["id"], j["type"]) for j in hist[-1]["jobs"]], [("k1", "done"), ("k2", "failed")])
        self.assertEqual((hist[-1]["done"], hist[-1]["failed"], hist[-1]["total"]), (1, 1, 3))
        st = tl.stats(r, P)
        self.assertEqual((st["done"], st["failed"]), (1, 1))
        self.assertEqual([x.decode() for x in r.lrange(P + ":inflight:w1", 0, -1)], ["k3"])
        # Duplicate ack: 2, record unchanged.
        self.assertEqual(q.ack("w1", "t1", [("k1", b"OTHER", "")]), [2])
        self.assertEqual(record(r, "k1")[1], {"v": 1, "id": "k1", "status": "ok"})
        # Not in this worker's in-flight list: 0, nothing written.
        q.enqueue("k4")
        self.assertEqual(q.ack("w1", "t1", [("k4", b"X", "")]), [0])
        self.assertEqual(r.type(P + ":job:k4"), b"hash")
        # Acks out of claim order remove the right ids.
        q.claim("w1", "t1", 1)
        self.assertEqual(q.ack("w1", "t1", [("k4", res1, "")]), [1])
        self.assertEqual([x.decode() for x in r.lrange(P + ":inflight:w1", 0, -1)], ["k3"])

    # ---- fast runs (docs/protocol.md "Fast runs") ----

    def claimed(self, n, worker="w1", token="t1"):
        self.q.heartbeat(worker, token)
        return {j[1].decode(): j for j in self.q.claim(worker, token, n)}

    def test_fast_run_record_is_the_scripts_own(self):
        q, r = self.q, self.r
        for i in ("f1", "f2"):
            q.enqueue(i)
        c = self.claimed(2)
        self.assertTrue(all(j[5] == b"1" and j[6] for j in c.values()), c)
        res = {i: msgpack.packb({"v": 1, "id": i, "status": "ok"}) for i in c}
        # f1 as segq-worker acks it (its record built outside Redis), f2 the ordinary way.
        self.assertEqual(q.ack("w1", "t1", [("f1", res["f1"], "", c["f1"]), ("f2", res["f2"], "")]),
                         [1, 1])
        ev1, res1, _ = record(r, "f1")
        ev2, res2, _ = record(r, "f2")
        self.assertEqual((res1, res2), ({"v": 1, "id": "f1", "status": "ok"},
                                        {"v": 1, "id": "f2", "status": "ok"}))
        self.assertEqual((ev1["epoch"], ev2["epoch"]), (c["f1"][6].decode(), c["f2"][6].decode()))
        for e in (ev1, ev2):
            for k in ("ts_ms", "id", "epoch"):
                e.pop(k)
        self.assertEqual(ev1, ev2, "the same terminal event either way")
        self.assertEqual((ev1["off"], ev1["attempt"], ev1["worker"], ev1["state"]), (2, 1, "w1", "done"))
        self.assertGreater(r.ttl(P + ":job:f1"), 0)
        self.assertEqual(tl.stats(r, P)["done"], 2)
        self.assertEqual(r.llen(P + ":inflight:w1"), 0)
        # A fast ack is fenced like any other: not in the in-flight list, nothing written.
        q.enqueue("f3")
        self.assertEqual(q.ack("w1", "t1", [("f3", res["f1"], "", c["f1"])]), [0])
        self.assertEqual(r.type(P + ":job:f3"), b"hash")

    def test_fast_runs_changed_while_running_take_the_slow_ack(self):
        q, r = self.q, self.r
        for i in ("a", "b", "c", "d", "e"):
            q.enqueue(i)
        c = self.claimed(5)
        self.assertEqual(r.hget(P + ":job:a", "state"), b"queued")
        # cancel: adopted (running form, marked for the ack), canceled at the ack.
        self.assertEqual(q.cancel("job", "a"), [2])
        self.assertEqual(r.hmget(P + ":job:a", "state", "worker", "attempts", "cancel"),
                         [b"running", b"w1", b"1", b"1"])
        # a reader starting to watch: the ack must publish.
        self.assertEqual(q.ev("watch", P, "b"), [1])
        # progress from the worker.
        self.assertEqual(q.ev("progress", P, "w1", "t1", now(), TTL, "c", 2, 8), 1)
        self.assertEqual(r.hmget(P + ":job:c", "state", "off", "steps_done"), [b"running", b"2", b"2"])
        self.assertEqual(r.smembers(P + ":attn:w1"), {b"a", b"b", b"c"})
        # A snapshot of a fast run not touched says where it runs.
        status, snap, _ = q.recover("job", "e")
        self.assertEqual((status, snap["state"], snap["worker"], snap["attempt"]),
                         ("resync", "running", "w1", 1))
        self.assertEqual(r.hget(P + ":job:e", "state"), b"queued", "a snapshot writes nothing")
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(P + ":ev:b")
        res = msgpack.packb({"v": 1, "status": "ok"})
        self.assertEqual(q.ack("w1", "t1", [(i, res, "", c[i]) for i in ("a", "b", "c", "d", "e")]),
                         [3, 1, 1, 1, 1])
        self.assertEqual(record(r, "a")[0]["type"], "canceled")
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.2)
        self.assertIsNotNone(msg, "the watched fast run's terminal event was published")
        self.assertEqual(proto.decode_event(msg["data"])["type"], "done")
        self.assertEqual(record(r, "c")[0]["off"], 3, "queued 1, progress 2, done 3")
        self.assertEqual([record(r, i)[0]["attempt"] for i in "abcde"], [1] * 5)
        self.assertFalse(r.exists(P + ":attn:w1"), "the marks leave with their acks")

    def test_fast_runs_swept_and_released_count_attempts(self):
        q, r = self.q, self.r
        for i in ("s1", "s2"):
            q.enqueue(i)
        self.claimed(2, worker="wd", token="td")
        self.assertEqual(q.ev("release", P, "wd", "td", now(), TTL, "s2"), 1)
        self.assertEqual(r.hmget(P + ":job:s2", "state", "attempts"), [b"queued", b"0"])
        r.delete(P + ":worker:wd")  # its lease runs out
        self.assertEqual(q.sweep(), 1)
        self.assertEqual(r.hmget(P + ":job:s1", "state", "attempts", "deaths"), [b"queued", b"1", b"1"])
        self.assertFalse(r.exists(P + ":attn:wd"))
        self.assertEqual(r.smembers(P + ":slow"), {b"s1", b"s2"}, "a job run before is read")
        c = self.claimed(2, worker="w2", token="t2")
        self.assertEqual((c["s1"][3], c["s2"][3]), (2, 1))

    def test_fetched_claims_read_nothing_and_keep_claim_order(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")
        q.enqueue("p1")
        q.enqueue("g1", group="grp")
        q.enqueue("wj", watch=1)
        q.enqueue("big", body=payload("big", size=schema.DEFAULT["FETCHED_DOC_MAX"] + 1))
        q.enqueue("p2")
        self.assertEqual(r.smembers(P + ":slow"), {b"g1", b"wj", b"big"})
        before = {i: r.hgetall(P + ":job:" + i) for i in ("p1", "p2")}
        flat = q.ev("claim", P, "w1", "t1", 10, 64 << 20, now(), TTL, "other", "m")
        # Fetched: [model index, id] (2: "m" is the second model sent); read: 6 entries, no
        # document (no script moves one).
        self.assertEqual(flat[:2], [2, b"p1"])
        self.assertEqual(flat[2:4], [b"m", b"g1"])
        self.assertEqual(flat[8:10], [b"m", b"wj"])
        self.assertEqual(flat[14:16], [b"m", b"big"])
        self.assertEqual(flat[20:], [2, b"p2"])
        self.assertEqual({i: r.hgetall(P + ":job:" + i) for i in ("p1", "p2")}, before,
                         "a fetched claim writes nothing to the job")
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"p1", b"g1", b"wj", b"big", b"p2"])
        self.assertFalse(r.exists(P + ":slow"), "the slow ids taken leave P:slow")
        jobs, gone = fakeworker.fetch_claimed(r, P, ("other", "m"), flat)
        self.assertEqual(gone, [])
        self.assertEqual(ids_of(jobs), ["p1", "g1", "wj", "big", "p2"])
        for j in jobs:
            i = j[1].decode()
            self.assertEqual((j[0], j[2], j[3], j[4]), (b"m", doc_of(r, i), 1, r.hget(P + ":job:" + i, "enqueued_ms")))
        p1 = jobs[0]
        self.assertEqual((p1[5], p1[6]), tuple(r.hmget(P + ":job:p1", "off", "epoch")))
        self.assertEqual(r.hget(P + ":job:wj", "state"), b"running", "a watched job's claim writes")
        res = msgpack.packb({"v": 1, "status": "ok"})
        self.assertEqual(q.ack("w1", "t1", [(j[1].decode(), res, "", j) for j in jobs]), [1] * 5)
        self.assertEqual([record(r, i)[0]["state"] for i in ("p1", "g1", "wj", "big", "p2")],
                         ["done"] * 5)

    def test_fetched_claim_of_a_job_gone(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")
        for i in ("c1", "d1", "e1", "ok1"):
            q.enqueue(i)
        self.assertEqual(q.cancel("job", "c1"), [1])  # a tombstone id in the queue
        self.assertIsNone(r.get(P + ":doc:c1"), "a finished job keeps no document")
        r.delete(P + ":job:d1", P + ":doc:d1")  # its job lost (an operator, a failover)
        r.delete(P + ":doc:e1")  # only its document lost
        flat = q.ev("claim", P, "w1", "t1", 10, 64 << 20, now(), TTL, "m")
        self.assertEqual(flat, [1, b"c1", 1, b"d1", 1, b"e1", 1, b"ok1"])
        jobs, gone = fakeworker.fetch_claimed(r, P, ("m",), flat)
        self.assertEqual((ids_of(jobs), gone), (["ok1"], [(b"m", b"c1"), (b"m", b"d1"), (b"m", b"e1")]))
        out = q.ev("ack", P, "w1", "t1", now(), TTL, 7 * 86400, 3, "", "c1", "m", "!", "d1", "m", "!",
                   "e1", "m", "!")
        self.assertEqual(out, [2, 1, 1], "the canceled record stays; the lost jobs fail")
        self.assertEqual(record(r, "c1")[0]["state"], "canceled")
        for i in ("d1", "e1"):
            ev, res, _ = record(r, i)
            self.assertEqual((ev["state"], res["error"]["code"]), ("failed", "job_not_found"))
        self.assertEqual(record(r, "e1")[0]["off"], 2, "e1's hash was there: its offset goes on")
        self.assertEqual(sorted(r.zrange(P + ":dead", 0, -1)), [b"d1", b"e1"])
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"ok1"])
        # A "!" is fenced like any ack: an id not in the in-flight list gets no record.
        self.assertEqual(q.ev("ack", P, "w1", "t1", now(), TTL, 7 * 86400, 3, "", "ok1x", "m", "!"),
                         [0])
        self.assertFalse(r.exists(P + ":job:ok1x"))

    def test_jobs_queued_by_a_version_before_document_keys_still_run(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")
        # As the enqueue before P:doc wrote them: the document in the hash, no P:slow.
        def old_job(id, state="queued"):
            r.hset(P + ":job:" + id, mapping={"doc": payload(id), "state": state, "off": 1,
                                              "epoch": "0.1", "model": "m", "enqueued_ms": 5})
        old_job("o1")
        r.rpush(P + ":q:m:default", "o1")
        r.rpush(P + ":ring:m", "default")
        old_job("o2", state="retrying")
        r.zadd(P + ":delayed:m", {"o2": 0})
        q.enqueue("n1")
        jobs = q.claim("w1", "t1", 10)
        # o2 (a due retry, read by the claim) has its document moved; o1 was claimed without a
        # read, found without a document, and goes back to the front of its queue.
        self.assertEqual(ids_of(jobs), ["o2", "n1"])
        self.assertEqual(jobs[0][2], payload("o2"))
        self.assertEqual(r.lrange(P + ":q:m:default", 0, -1), [b"o1"])
        self.assertEqual(r.hget(P + ":job:o1", "doc"), None)
        self.assertEqual(doc_of(r, "o1"), payload("o1"))
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"o2", b"n1"])
        jobs = q.claim("w1", "t1", 10)
        self.assertEqual([(j[1], j[2], j[3]) for j in jobs], [(b"o1", payload("o1"), 1)])
        self.assertEqual(r.type(P + ":job:o1"), b"hash", "live, not failed")

    def test_sweep_prunes_slow_ids_without_a_job(self):
        q, r = self.q, self.r
        # Queued before any worker registered (a TTL on the job and its queue), in a group: both
        # expire unclaimed and leave the id in P:slow.
        q.enqueue("lost", group="gl")
        q.heartbeat("w1", "t1")
        q.enqueue("kept", group="gl")
        self.assertEqual(r.smembers(P + ":slow"), {b"lost", b"kept"})
        r.delete(P + ":job:lost", P + ":q:m:default")
        q.sweep()
        self.assertEqual(r.smembers(P + ":slow"), {b"kept"})

    def test_watched_while_queued_is_claimed_with_started(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")
        q.enqueue("wq")
        q.enqueue("rq")
        self.assertFalse(r.exists(P + ":slow"))
        self.assertEqual(q.ev("watch", P, "wq"), [1])
        status, snap, _ = q.recover("job", "rq", watch=1)
        self.assertEqual(snap["state"], "queued")
        self.assertEqual(r.smembers(P + ":slow"), {b"wq", b"rq"}, "their claim must read them")
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(P + ":ev:wq")
        jobs = q.claim("w1", "t1", 5)
        self.assertEqual(ids_of(jobs), ["wq", "rq"])
        self.assertEqual([r.hget(P + ":job:" + i, "state") for i in ("wq", "rq")], [b"running"] * 2)
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.2)
        sub.close()
        self.assertIsNotNone(msg)
        self.assertEqual(proto.decode_event(msg["data"])["type"], "started")

    def test_fast_record_of_a_lost_generation_is_remade(self):
        q, r = self.q, self.r
        q.enqueue("lg")
        c = self.claimed(1)
        # Redis lost P:epoch (data loss) while the job ran: its claimed epoch is stale.
        r.delete(P + ":epoch")
        self.assertEqual(q.ack("w1", "t1", [("lg", msgpack.packb({"v": 1}), "", c["lg"])]), [1])
        ev = record(r, "lg")[0]
        self.assertNotEqual(ev["epoch"], c["lg"][6].decode(), "a new epoch, not the stale one")
        self.assertEqual(record(r, "lg")[1], {"v": 1})

    def test_sweep_requeue_then_poison(self):
        q, r = self.q, self.r
        q.enqueue_many([("s1", "m", "", 0, payload("s1")), ("s2", "m", "", 0, payload("s2"))], group="gs")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 2)
        self.assertEqual(q.sweep(), 0, "live worker not swept")
        r.delete(P + ":worker:w1")
        self.assertEqual(q.sweep(), 2)
        self.assertFalse(r.exists(P + ":inflight:w1"))
        self.assertFalse(r.sismember(P + ":workers", "w1"))
        self.assertTrue(ring_invariant(r))
        self.assertEqual(state(r, "s1"), "queued")
        self.assertEqual(r.hget(P + ":job:s1", "deaths"), b"1")
        self.assertEqual(tl.stats(r, P)["requeued"], 2)
        self.assertEqual(q.heartbeat("w2", "t2"), 2, "fresh lease")
        self.assertEqual(q.heartbeat("w2", "t2"), 1, "renewal")
        self.assertEqual(q.heartbeat("w2", "other"), 0, "another token")
        jobs = q.claim("w2", "t2", 2)
        self.assertEqual(ids_of(jobs), ["s1", "s2"], "requeued in original order")
        self.assertEqual([j[3] for j in jobs], [2, 2])
        # Its second worker dies too: suspected poison, quarantined with its document.
        r.delete(P + ":worker:w2")
        self.assertEqual(q.sweep(), 2)
        self.assertEqual(r.llen(P + ":q:m:default"), 0, "not requeued")
        ev, res, doc = record(r, "s1")
        self.assertEqual((res["status"], res["error"]["code"]), ("error", "suspected_poison"), res)
        self.assertEqual((res["attempt"], res["worker"], res["model"]), (2, "w2", "m"))
        self.assertEqual(doc, payload("s1"), "the dead letter keeps the job document")
        self.assertTrue(ev["dead"])
        self.assertEqual(ev["off"], 3, "queued, requeued, failed")
        self.assertEqual({x.decode() for x in r.zrange(P + ":dead", 0, -1)}, {"s1", "s2"})
        self.assertGreater(r.ttl(P + ":job:s1"), TTL, "dead letters live dead_ttl")
        self.assertEqual(tl.stats(r, P)["dead"], 2)
        types = [e["type"] for _, e in tl.group_job_history(r, P, "gs", "s1")]
        self.assertEqual(types, ["queued", "started", "requeued", "started", "failed"])
        g = {k.decode(): v.decode() for k, v in r.hgetall(P + ":group:gs").items()}
        self.assertEqual((g["failed"], g["running"], g["queued"]), ("2", "0", "0"), g)
        # The sweeper lock keeps a second sweeper out.
        self.assertEqual(q.ev("sweep", P, "a", 10000, 3, now(), TTL, 86400), 0)
        self.assertTrue(r.exists(P + ":sweeper"))
        r.sadd(P + ":workers", "ghost")
        self.assertEqual(q.ev("sweep", P, "b", 10000, 3, now(), TTL, 86400), 0)
        self.assertTrue(r.sismember(P + ":workers", "ghost"))

    def test_self_sweep_leaves_own_jobs(self):
        # A live worker whose lease ran out (Redis blocked past the TTL by large payloads) and
        # whose own sweeper runs next: its jobs stay in flight (no requeue, no death, no second
        # run at attempt 2); its heartbeat re-acquires the lease and its ack goes through. Another
        # sweeper does recover them.
        q, r = self.q, self.r
        q.enqueue("ss")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 1)
        r.delete(P + ":worker:w1")
        r.delete(P + ":sweeper")
        self.assertEqual(q.ev("sweep", P, "w1", 1000, 3, now(), TTL, 86400), 0)
        self.assertEqual((state(r, "ss"), r.hget(P + ":job:ss", "deaths")), ("running", None))
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"ss"])
        self.assertEqual(q.heartbeat("w1", "t1"), 2, "re-acquired, same token")
        self.assertEqual(q.ack("w1", "t1", [("ss", msgpack.packb({"v": 1, "status": "ok"}), "")]), [1])
        # A worker whose lease is gone is swept by the others.
        q.enqueue("ss2")
        q.claim("w1", "t1", 1)
        r.delete(P + ":worker:w1")
        r.delete(P + ":sweeper")
        self.assertEqual(q.ev("sweep", P, "w2", 1000, 3, now(), TTL, 86400), 1)
        self.assertEqual((state(r, "ss2"), r.hget(P + ":job:ss2", "deaths")), ("queued", b"1"))

    def test_sweep_max_attempts(self):
        q, r = self.q, self.r
        q.enqueue("ma")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 1)
        r.delete(P + ":worker:w1")
        self.assertEqual(q.sweep(max_attempts=1), 1)
        res = record(r, "ma")[1]
        self.assertEqual(res["error"]["code"], "max_attempts_exceeded")

    def test_job_not_found(self):
        q, r = self.q, self.r
        r.rpush(P + ":q:m:default", "garbage")
        r.rpush(P + ":ring:m", "default")
        q.enqueue("real")
        q.heartbeat("w1", "t1")
        self.assertEqual(ids_of(q.claim("w1", "t1", 5)), ["real"])
        ev, res, doc = record(r, "garbage")
        self.assertEqual(res["error"]["code"], "job_not_found")
        self.assertEqual((ev["type"], ev["off"]), ("failed", 1))
        self.assertEqual(r.zrange(P + ":dead", 0, -1), [b"garbage"])
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"real"])
        # A duplicate delivery of a finished job is dropped without running.
        q.ack("w1", "t1", [("real", b"\x80", "")])
        r.rpush(P + ":q:m:default", "real")
        r.rpush(P + ":ring:m", "default")
        self.assertEqual(q.claim("w1", "t1", 5), [])
        self.assertEqual(r.llen(P + ":inflight:w1"), 0)
        self.assertTrue(ring_invariant(r))

    def test_unknown_model(self):
        q, r = self.q, self.r
        self.assertEqual(q.enqueue("before", model="zzz"), 1, "no served set yet: queued")
        q.heartbeat("w1", "t1", models=("m", "m2"))
        self.assertEqual(r.smembers(P + ":models:served"), {b"m", b"m2"})
        self.assertEqual(q.enqueue("u1", model="zzz", group="gu"), 3)
        ev, res, _ = record(r, "u1")
        self.assertEqual((res["status"], res["error"]["code"]), ("error", "unknown_model"))
        self.assertEqual((ev["type"], ev["off"]), ("failed", 1))
        self.assertEqual(r.llen(P + ":q:zzz:default"), 1, "only the job queued before")
        self.assertGreater(r.ttl(P + ":job:u1"), 0)
        self.assertEqual(r.hmget(P + ":group:gu", "total", "failed", "queued"), [b"1", b"1", b"0"])
        self.assertEqual(q.enqueue("u1", model="zzz"), 2, "then idempotent")
        self.assertEqual(q.enqueue("u2", model="m2"), 1)
        # Rejected names grow nothing (issue 8 item 7: 20,001 of them made P:models, and
        # `segq stats`, grow for good): each leaves its own finished record (with a TTL) only.
        keys_before = r.dbsize()
        mem_keys = [k for k in r.scan_iter(P + ":*") if not k.startswith((P + ":job:").encode())]
        n = 20001
        for k in range(0, n, 2000):
            q.enqueue_many([("r%d" % i, "nosuch%d" % i, "", 0, payload("r%d" % i))
                            for i in range(k, min(n, k + 2000))])
        self.assertEqual(r.dbsize(), keys_before + n)
        self.assertTrue(all(r.ttl(P + ":job:r%d" % i) > 0 for i in (0, n // 2, n - 1)))
        self.assertEqual(sorted(k for k in r.scan_iter(P + ":*") if not k.startswith((P + ":job:").encode())),
                         sorted(mem_keys))
        self.assertEqual(r.scard(P + ":models:served"), 2)

    def test_unknown_models_before_any_worker_are_bounded(self):
        # Issue 8 item 7 leftover: before any worker has registered, every model is accepted;
        # 1,000 mistyped names must not leave 1,000 queues and rings for good.
        q, r = self.q, self.r
        fixed = {P + ":stats", P + ":epoch"}
        n = 1000
        for k in range(0, n, 250):
            self.assertEqual(q.enqueue_many([("b%d" % i, "typo%d" % i, "t%d" % (i % 3), 0, payload("b%d" % i))
                                             for i in range(k, k + 250)]), [1] * 250)
        keys = {k.decode(): r.ttl(k) for k in r.scan_iter(P + ":*", count=1000)}
        self.assertGreaterEqual(len(keys), 3 * n, "job, queue and ring of each")
        self.assertEqual(sorted(k for k, t in keys.items() if t < 0 and k not in fixed), [],
                         "every key made by an enqueue before any worker has a TTL")
        # A worker that serves one of them keeps that model's jobs and keys from now on.
        self.assertEqual(q.heartbeat("w1", "t1", models=("typo7",)), 2)
        for k in (":job:b7", ":q:typo7:t1", ":ring:typo7"):
            self.assertEqual(r.ttl(P + k), -1, k + " is kept")
        self.assertGreater(r.ttl(P + ":job:b8"), 0, "other models still expire")
        self.assertEqual(ids_of(q.claim("w1", "t1", 5, models=("typo7",))), ["b7"])
        # Later enqueues for a served model make keys without a TTL, as always.
        self.assertEqual(q.enqueue("b7b", model="typo7"), 1)
        self.assertEqual(r.ttl(P + ":q:typo7:default"), -1)
        self.assertEqual(q.enqueue("b8b", model="typo8"), 3, "then unknown models are refused")

    def test_offsets_epochs_and_watch(self):
        q, r = self.q, self.r
        q.enqueue("e1", group="ge", watch=1)
        q.enqueue("e2", group="ge")
        ep1 = r.hget(P + ":job:e1", "epoch").decode()
        ep2 = r.hget(P + ":job:e2", "epoch").decode()
        self.assertNotEqual(ep1, ep2, "every job channel has its own epoch")
        gen = r.hget(P + ":epoch", "gen").decode()
        self.assertTrue(ep1.startswith(gen + "."), (ep1, gen))
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 2)
        self.assertEqual(r.hget(P + ":job:e1", "off"), b"2", "watched: started is event 2")
        self.assertEqual(r.hget(P + ":job:e2", "off"), b"1", "unwatched: no started event")
        r.delete(P + ":worker:w1")
        q.sweep()
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 2)
        q.ack("w1", "t1", [("e1", b"\x80", ""), ("e2", b"\x80", "")])
        e1 = record(r, "e1")[0]
        self.assertEqual((e1["off"], e1["epoch"], e1["attempt"]), (5, ep1, 2))
        self.assertEqual(record(r, "e2")[0]["off"], 3)
        # A new data generation (another Redis run_id validated by the heartbeat) gives every
        # channel written afterwards a new epoch; offsets continue.
        q.enqueue("e3", group="ge")
        gep = r.hget(P + ":group:ge", "epoch").decode()
        r.hset(P + ":epoch", "run", "some-other-redis")
        q.heartbeat("w1", "t1")
        gen2 = r.hget(P + ":epoch", "gen").decode()
        self.assertNotEqual(gen2, gen)
        goff = int(r.hget(P + ":group:ge", "off"))
        q.claim("w1", "t1", 1)
        self.assertNotEqual(r.hget(P + ":group:ge", "epoch").decode(), gep)
        self.assertEqual(int(r.hget(P + ":group:ge", "off")), goff + 1)
        q.ack("w1", "t1", [("e3", b"\x80", "")])
        e3 = record(r, "e3")[0]
        self.assertTrue(e3["epoch"].startswith(gen2 + "."), e3)
        self.assertEqual(e3["off"], 2)

    def test_subscribed_before_enqueue_is_watched(self):
        q, r = self.q, self.r
        ps = r.pubsub()
        ps.subscribe(P + ":ev:early")
        self.assertEqual(ps.get_message(timeout=5)["type"], "subscribe")
        q.enqueue("early")
        q.enqueue("nobody")
        self.assertEqual(r.hget(P + ":job:early", "watch"), b"1", "a reader waits on its channel")
        self.assertIsNone(r.hget(P + ":job:nobody", "watch"), "unwatched: the field is left out")
        msg = ps.get_message(timeout=5)
        self.assertEqual(proto.decode_event(msg["data"])["type"], "queued")
        # One call for many jobs asks once for all their channels: only the subscribed one is
        # watched, wherever it is in the call.
        ps.subscribe(P + ":ev:m3")
        self.assertEqual(ps.get_message(timeout=5)["type"], "subscribe")
        ids = ["m%d" % i for i in range(6)]
        self.assertEqual(q.enqueue_many([(i, "m", "", 0, payload(i, "m")) for i in ids]), [1] * 6)
        self.assertEqual([r.hget(P + ":job:" + i, "watch") for i in ids],
                         [None, None, None, b"1", None, None])
        msg = ps.get_message(timeout=5)
        self.assertEqual(proto.decode_event(msg["data"])["id"], "m3")
        ps.close()

    def test_recover(self):
        q, r = self.q, self.r
        self.assertEqual(q.recover("job", "nope")[0], "unknown")
        self.assertEqual(q.recover("group", "nope")[0], "unknown")
        q.enqueue("j1", group="gr")
        st, snap, evs = q.recover("job", "j1")
        self.assertEqual((st, snap["type"], snap["state"], snap["off"], evs), ("resync", "snapshot", "queued", 1, []))
        ep = snap["epoch"]
        self.assertEqual(q.recover("job", "j1", 1, ep)[0], "recovered", "nothing missed")
        self.assertEqual(q.recover("job", "j1", 1, "other")[0], "resync", "epoch changed")
        self.assertEqual(q.recover("job", "j1", 7, ep)[0], "resync", "the channel went backwards")
        # A reader marks the live job watched: its claim then writes `started`.
        q.recover("job", "j1", watch=1)
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 1)
        st, snap, _ = q.recover("job", "j1", 1, ep)
        self.assertEqual((st, snap["state"], snap["off"], snap["worker"]), ("resync", "running", 2, "w1"))
        self.assertEqual(q.recover("job", "j1", 2, ep)[0], "recovered")
        q.ack("w1", "t1", [("j1", msgpack.packb({"v": 1, "id": "j1", "status": "ok"}), "")])
        # Finished: only the terminal event can be replayed exactly.
        st, snap, evs = q.recover("job", "j1", 2, ep)
        self.assertEqual((st, [e["type"] for e in evs], snap["state"]), ("recovered", ["done"], "done"))
        self.assertEqual(evs[0]["off"], 3)
        self.assertEqual(q.recover("job", "j1", 3, ep)[0], "recovered")
        self.assertEqual(q.recover("job", "j1", 1, ep)[0], "resync", "more than the last event missed")
        # Groups: the history from any offset, then trimmed history, then another epoch.
        st, snap, evs = q.recover("group", "gr")
        self.assertEqual(st, "recovered")
        self.assertEqual([e["off"] for e in evs], list(range(1, snap["off"] + 1)))
        gep = snap["epoch"]
        st, _, evs = q.recover("group", "gr", 1, gep)
        self.assertEqual([e["off"] for e in evs], list(range(2, snap["off"] + 1)))
        st, _, evs = q.recover("group", "gr", 1, gep, limit=1)
        self.assertEqual((st, [e["off"] for e in evs]), ("more", [2]))
        self.assertEqual(q.recover("group", "gr", snap["off"], gep)[0], "recovered")
        self.assertEqual(q.recover("group", "gr", 1, "stale")[0], "resync")
        self.assertEqual(q.recover("group", "gr", snap["off"] + 5, gep)[0], "resync")
        r.xtrim(P + ":gh:gr", maxlen=1, approximate=False)
        self.assertEqual(q.recover("group", "gr", 1, gep)[0], "resync", "trimmed past the reader")
        self.assertEqual(q.recover("group", "gr")[0], "resync", "a new reader of a trimmed history")

    def test_progress(self):
        q, r = self.q, self.r
        q.enqueue("pg", group="gp")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 1)
        argv = [P, "w1", "t1", now(), TTL, "pg", 3, 16, "not-mine", 1, 2]
        self.assertEqual(q.ev("progress", *argv), 1)
        self.assertEqual(r.hmget(P + ":job:pg", "steps_done", "steps_total", "off"), [b"3", b"16", b"2"])
        last = tl.group_history(r, P, "gp")[-1]
        self.assertEqual([(j["type"], j["steps_done"], j["steps_total"]) for j in last["jobs"]],
                         [("progress", 3, 16)])
        with self.assertRaises(redis.ResponseError):
            q.ev("progress", P, "w1", "bad", now(), TTL, "pg", 4, 16)

    def test_release_refunds_the_attempt(self):
        q, r = self.q, self.r
        for i in range(3):
            q.enqueue("rl%d" % i)
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 3)
        self.assertEqual(q.ev("release", P, "w1", "t1", now(), TTL, "rl0", "rl1", "not-held"), 2)
        self.assertEqual([x.decode() for x in r.lrange(P + ":q:m:default", 0, -1)], ["rl0", "rl1"])
        self.assertEqual(r.lrange(P + ":inflight:w1", 0, -1), [b"rl2"])
        self.assertEqual(r.hget(P + ":job:rl0", "attempts"), b"0")
        self.assertEqual([j[3] for j in q.claim("w1", "t1", 2)], [1, 1], "released jobs run as attempt 1")
        self.assertEqual(q.ev("release", P, "w1", "t1", now(), TTL, "*"), 3)
        self.assertEqual(r.llen(P + ":inflight:w1"), 0)
        self.assertTrue(ring_invariant(r))

    def test_cancel(self):
        q, r = self.q, self.r
        q.enqueue_many([("cq", "m", "", 0, payload("cq")), ("cr", "m", "", 0, payload("cr"))], group="gc")
        q.heartbeat("w1", "t1")
        self.assertEqual(ids_of(q.claim("w1", "t1", 1)), ["cq"])
        q.enqueue("cz")
        self.assertEqual(q.cancel("job", "cz", "cq", "unknown"), [1, 2, 0])
        ev, res, _ = record(r, "cz")
        self.assertEqual((ev["type"], res["error"]["code"]), ("canceled", "canceled"))
        self.assertEqual(r.hget(P + ":job:cq", "cancel"), b"1")
        self.assertEqual(q.cancel("job", "cz"), [0], "finished: nothing to cancel")
        # The running one is not acked as done.
        self.assertEqual(q.ack("w1", "t1", [("cq", msgpack.packb({"v": 1, "status": "ok"}), "")]), [3])
        ev, res, _ = record(r, "cq")
        self.assertEqual((ev["type"], ev["worker"], res["status"], res["error"]["code"]),
                         ("canceled", "w1", "error", "canceled"))
        # The canceled queued job's id is a tombstone the claim skips.
        self.assertEqual(q.claim("w1", "t1", 5, models=("m",))[0][1], b"cr")
        self.assertEqual(q.claim("w1", "t1", 5), [])
        # A group: queued members are answered as the claim reaches them; later submits rejected.
        q.enqueue_many([("g%d" % i, "m", "", 0, payload("g%d" % i)) for i in range(3)], group="gx")
        self.assertEqual(q.cancel("group", "gx", "no-such-group"), [1, 0])
        self.assertEqual(q.enqueue("g9", group="gx"), 4)
        self.assertEqual(q.claim("w1", "t1", 5), [])
        for i in range(3):
            self.assertEqual(record(r, "g%d" % i)[1]["error"]["code"], "canceled")
        g = {k.decode(): v.decode() for k, v in r.hgetall(P + ":group:gx").items()}
        self.assertEqual((g["canceled"], g["queued"], g["total"], g["cancel"]), ("4", "0", "4", "1"), g)
        st = tl.stats(r, P)
        self.assertEqual(st["canceled"], 6)

    def test_retries_and_dead_letters(self):
        q, r = self.q, self.r
        q.enqueue("rt", group="grt")
        q.heartbeat("w1", "t1")
        q.claim("w1", "t1", 1)
        self.assertEqual(q.ack("w1", "t1", [("rt", b"\x80", "device_error", 1)], max_attempts=2), [4])
        self.assertEqual(state(r, "rt"), "retrying")
        self.assertEqual(r.zcard(P + ":delayed:m"), 1)
        snap = q.recover("job", "rt")[1]
        self.assertEqual((snap["state"], snap["error"]), ("retrying", "device_error"))
        time.sleep(0.01)
        jobs = q.claim("w1", "t1", 5)
        self.assertEqual([(j[1], j[3]) for j in jobs], [(b"rt", 2)], "the due retry is claimed again")
        self.assertEqual(r.zcard(P + ":delayed:m"), 0)
        self.assertEqual(q.ack("w1", "t1", [("rt", b"\x81\xa1v\x01", "device_error", 1)], max_attempts=2), [5])
        ev, res, doc = record(r, "rt")
        self.assertEqual((ev["type"], ev["error"], ev["dead"]), ("failed", "device_error", True))
        self.assertEqual(res, {"v": 1}, "the worker's last result is kept")
        self.assertEqual(doc, payload("rt"))
        self.assertEqual(tl.stats(r, P)["retried"], 1)
        # A permanent error fails at once whatever retry_ms says... (the worker sends 0 then).
        q.enqueue("pm")
        q.claim("w1", "t1", 1)
        self.assertEqual(q.ack("w1", "t1", [("pm", b"\x80", "image_decode_failed", 0)]), [1])
        self.assertEqual(r.zrange(P + ":dead", 0, -1), [b"rt"])
        # dead list / requeue / purge.
        lst = q.ev("dead", P, now(), TTL, "list", 0, 10)
        self.assertEqual(lst[0::2], [b"rt"])
        self.assertEqual(q.ev("dead", P, now(), TTL, "requeue", "rt", "pm"), 1, "pm is not a dead letter")
        self.assertEqual(state(r, "rt"), "queued")
        self.assertEqual((r.hget(P + ":job:rt", "attempts"), doc_of(r, "rt")), (None, payload("rt")), "attempts 0")
        self.assertEqual(r.zcard(P + ":dead"), 0)
        jobs = q.claim("w1", "t1", 5)
        self.assertEqual([(j[1], j[3]) for j in jobs], [(b"rt", 1)])
        types = [e["type"] for _, e in tl.group_job_history(r, P, "grt", "rt")]
        self.assertEqual(types, ["queued", "started", "retrying", "started", "failed", "requeued", "started"])
        r.delete(P + ":worker:w1")
        q.sweep(max_attempts=1)
        self.assertEqual(r.zcard(P + ":dead"), 1)
        self.assertEqual(q.ev("dead", P, now(), TTL, "purge", "*"), 1)
        self.assertFalse(r.exists(P + ":job:rt"))
        self.assertEqual(r.zcard(P + ":dead"), 0)

    def test_unregister(self):
        q, r = self.q, self.r
        q.heartbeat("w1", "t1")
        self.assertEqual(q.ev("unregister", P, "w1", "bad"), 0)
        self.assertEqual(q.ev("unregister", P, "w1", "t1"), 1)
        self.assertFalse(r.exists(P + ":worker:w1"))

    def test_python_and_c_send_the_same_text(self):
        build = os.environ.get("SEGQ_BUILD_DIR")
        text_dir = build and os.path.join(build, "queue", "scripts-text")
        if not text_dir or not os.path.isdir(text_dir):
            self.skipTest("no build dir with queue/scripts-text (set SEGQ_BUILD_DIR)")
        for name in NAMES:
            with open(os.path.join(text_dir, name + ".lua"), "rb") as f:
                self.assertEqual(f.read(), tl.load_script(name), name)


if __name__ == "__main__":
    tl.run_tests()
