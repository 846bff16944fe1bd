#!/usr/bin/python3
"""Script-level tests of queue/scripts/*.lua: EVALs them directly against a private redis-server
(enqueue idempotency, claim atomicity and fairness, priority, fenced/duplicate ack, sweep,
release of jobs a failed device could not run, dead-letters, unknown models, event sequence
numbers, TTLs on terminal keys)."""
import os
import sys
import time
import unittest

try:
    import msgpack
    import redis
except ImportError as e:  # pragma: no cover
    print("skip: needs python3-redis and python3-msgpack:", e)
    sys.exit(77)

SRC = os.environ.get("SEGQ_SOURCE_DIR",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
import segq_testlib  # noqa: E402  (the shared private-redis-server helper)

P = "tq"
TTL = 3600


def load(name):
    """A script's effective source (prelude + script), as the client and the worker run it."""
    return segq_testlib.load_script(name)


failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


class Q:
    def __init__(self, r):
        self.r = r
        self.src = {n: load(n) for n in
                    ("enqueue", "claim", "ack", "heartbeat", "sweep", "unregister", "release")}

    def ev(self, name, *argv):
        return self.r.eval(self.src[name], 0, *argv)

    def enqueue(self, id, model="m", tenant="", group="", priority=0, payload=None):
        if payload is None:
            payload = msgpack.packb({"v": 1, "id": id, "model": model})
        return self.ev("enqueue", P, id, model, tenant, group, priority, payload, now(), TTL)

    def heartbeat(self, worker, token, models=("m",), ttl_ms=10000):
        return self.ev("heartbeat", P, worker, token, ttl_ms, *models)

    def claim(self, worker, token, n, models=("m",)):
        flat = self.ev("claim", P, worker, token, n, now(), TTL, *models)
        return [flat[i:i + 5] for i in range(0, len(flat), 5)]

    def ack(self, worker, token, items):
        argv = []
        for id, res, code in items:
            argv += [id, res, code]
        return self.ev("ack", P, worker, token, now(), TTL, *argv)

    def release(self, worker, token, ids):
        return self.ev("release", P, worker, token, now(), TTL, *ids)

    def sweep(self, max_attempts=3):
        self.r.delete(P + ":sweeper")
        return self.ev("sweep", P, "sweeper", 1000, max_attempts, now(), TTL)


def now():
    return int(time.time() * 1000)


def events(r, id, stream=None):
    key = stream or (P + ":events:" + id)
    return [msgpack.unpackb(f[b"e"], raw=False) for _, f in r.xrange(key)]


def ids_of(jobs):
    return [j[1].decode() for j in jobs]


def ring_invariant(r, model="m"):
    ring = {t.decode() for t in r.lrange(P + ":ring:" + model, 0, -1)}
    nonempty = set()
    for k in r.scan_iter(P + ":q:" + model + ":*"):
        if r.llen(k) > 0:
            nonempty.add(k.decode().rsplit(":", 1)[1])
    return ring == nonempty and len(ring) == r.llen(P + ":ring:" + model)


def test_enqueue_idempotent(q, r):
    check(q.enqueue("a1") == 1, "first enqueue returns 1")
    check(q.enqueue("a1") == 0, "second enqueue of a pending job returns 0")
    check(r.llen(P + ":q:m:default") == 1, "id queued once")
    check(r.sismember(P + ":models", "m"), "model recorded in P:models")
    check(r.hget(P + ":status:a1", "state") == b"queued", "status queued")
    check(r.llen(P + ":wake:m") >= 1, "wake token pushed")
    q.heartbeat("w1", "t1")
    jobs = q.claim("w1", "t1", 10)
    check(ids_of(jobs) == ["a1"], "claimed a1")
    check(q.enqueue("a1") == 0, "enqueue of a started job returns 0")
    check(q.ack("w1", "t1", [("a1", b"R", "")]) == [1], "ack written")
    check(q.enqueue("a1") == 2, "enqueue of a finished job returns 2")
    check(r.llen(P + ":q:m:default") == 0, "nothing requeued")


def test_claim_atomic_n(q, r):
    for i in range(10):
        q.enqueue("c%d" % i)
    q.heartbeat("w1", "t1")
    jobs = q.claim("w1", "t1", 4)
    check(ids_of(jobs) == ["c0", "c1", "c2", "c3"], "claimed first 4 in order: %s" % ids_of(jobs))
    check(all(j[0] == b"m" for j in jobs), "model returned")
    check(all(j[3] == 1 for j in jobs), "attempt 1")
    check(all(j[4] > 0 for j in jobs), "enqueued_ms returned")
    check(msgpack.unpackb(jobs[0][2])["id"] == "c0", "payload returned")
    check([x.decode() for x in r.lrange(P + ":inflight:w1", 0, -1)] == ids_of(jobs),
          "in-flight list holds the claimed ids")
    check(r.sismember(P + ":workers", "w1"), "worker registered in P:workers")
    check(r.llen(P + ":q:m:default") == 6, "6 left")
    check(r.hget(P + ":status:c0", "state") == b"started", "state started")
    check(r.hget(P + ":status:c0", "worker") == b"w1", "worker recorded")
    rest = q.claim("w1", "t1", 100)
    check(len(rest) == 6, "claim of more than available returns the rest")
    check(q.claim("w1", "t1", 5) == [], "empty queue claims nothing")
    check(ring_invariant(r), "ring invariant after draining")
    # Lease checks: wrong token and absent lease are refused.
    for token, worker in (("bad", "w1"), ("t9", "w9")):
        try:
            q.claim(worker, token, 1)
            check(False, "claim with a bad lease must fail")
        except redis.ResponseError as e:
            check(str(e).startswith("LEASE"), "claim error starts with LEASE: %s" % e)


def test_fairness(q, r):
    for i in range(100):
        q.enqueue("A%d" % i, tenant="A")
    q.enqueue("B0", tenant="B")
    check(ring_invariant(r), "ring invariant after enqueue")
    q.heartbeat("w1", "t1", models=("m", "m2"))
    got = ids_of(q.claim("w1", "t1", 2))
    check("B0" in got, "tenant B's job within the first 2 claimed: %s" % got)
    check(ring_invariant(r), "ring invariant after claim")
    got = ids_of(q.claim("w1", "t1", 3))
    check(got == ["A1", "A2", "A3"], "then A's in order: %s" % got)
    # Two models served in turn.
    check(q.enqueue("x1", model="m2") == 1, "m2 queued")
    got = ids_of(q.claim("w1", "t1", 2, models=("m", "m2")))
    check("x1" in got, "second model served in the same claim: %s" % got)
    # The models are served in the order given (the C side rotates it on every claim).
    q.enqueue("x2", model="m2")
    got = ids_of(q.claim("w1", "t1", 1, models=("m2", "m")))
    check(got == ["x2"], "first model given is served first: %s" % got)


def test_priority(q, r):
    q.enqueue("p1")
    q.enqueue("p2")
    q.enqueue("hi", priority=5)
    q.heartbeat("w1", "t1")
    got = ids_of(q.claim("w1", "t1", 3))
    check(got == ["hi", "p1", "p2"], "priority job first: %s" % got)


def test_ack(q, r):
    q.enqueue("k1", group="g1")
    q.enqueue("k2", group="g1")
    q.enqueue("k3", group="g1")
    q.heartbeat("w1", "t1")
    q.claim("w1", "t1", 3)
    try:
        q.ack("w1", "WRONG", [("k1", b"x", "")])
        check(False, "ack with a wrong token must fail")
    except redis.ResponseError as e:
        check(str(e).startswith("LEASE"), "ack error starts with LEASE")
    check(not r.exists(P + ":result:k1"), "nothing written on a fenced ack")
    res = q.ack("w1", "t1", [("k1", b"RES1", ""), ("k2", b"RES2", "model_error")])
    check(res == [1, 1], "batch ack: %s" % res)
    check(r.get(P + ":result:k1") == b"RES1", "result written")
    check(r.ttl(P + ":result:k1") > 0, "result has a TTL")
    check(not r.exists(P + ":job:k1"), "payload deleted")
    check(r.hget(P + ":status:k1", "state") == b"done", "status done")
    check(r.hget(P + ":status:k2", "state") == b"failed", "status failed")
    check(r.hget(P + ":status:k2", "error") == b"model_error", "error code stored")
    check(r.lrange(P + ":reply:k1", 0, -1) == [b"done"], "reply token pushed")
    for k in ("status", "events", "reply", "result"):
        check(r.ttl(P + ":%s:k1" % k) > 0, "TTL on terminal key %s" % k)
    check(r.ttl(P + ":group:g1") > 0 and r.ttl(P + ":gevents:g1") > 0, "TTL on group keys")
    check(r.hmget(P + ":group:g1", "total", "done", "failed", "queued") == [b"3", b"1", b"1", b"1"],
          "group counters")
    check(r.hget(P + ":stats", "done") == b"1" and r.hget(P + ":stats", "failed") == b"1",
          "stats counters")
    check([x.decode() for x in r.lrange(P + ":inflight:w1", 0, -1)] == ["k3"], "inflight left")
    # Duplicate ack: 2, result unchanged.
    res = q.ack("w1", "t1", [("k1", b"OTHER", "")])
    check(res == [2], "duplicate ack returns 2")
    check(r.get(P + ":result:k1") == b"RES1", "result unchanged by a duplicate ack")
    # Not in this worker's in-flight list: 0, nothing written.
    q.enqueue("k4")
    res = q.ack("w1", "t1", [("k4", b"X", "")])
    check(res == [0], "ack of a job not in flight returns 0")
    check(not r.exists(P + ":result:k4"), "nothing written for a job not in flight")
    evs = events(r, "k2")
    check([e["state"] for e in evs] == ["queued", "started", "failed"], "k2 event states")
    check(evs[-1].get("error") == "model_error" and evs[-1].get("worker") == "w1",
          "failed event carries error and worker")
    gevs = events(r, None, P + ":gevents:g1")
    check([e["gseq"] for e in gevs] == list(range(1, len(gevs) + 1)), "gseq 1..n")
    check(gevs[-1]["done"] == 1 and gevs[-1]["failed"] == 1 and gevs[-1]["total"] == 3,
          "group event counters: %s" % gevs[-1])


def test_sweep(q, r):
    q.enqueue("s1")
    q.enqueue("s2")
    q.heartbeat("w1", "t1")
    q.claim("w1", "t1", 2)
    check(q.sweep() == 0, "live worker not swept")
    r.delete(P + ":worker:w1")  # the lease expires
    check(q.sweep() == 2, "two jobs requeued")
    check(not r.exists(P + ":inflight:w1"), "in-flight deleted")
    check(not r.sismember(P + ":workers", "w1"), "worker unregistered")
    check(ring_invariant(r), "ring invariant after sweep")
    check(r.hget(P + ":status:s1", "state") == b"requeued", "state requeued")
    check(r.hget(P + ":stats", "requeued") == b"2", "requeued counter")
    check(q.heartbeat("w2", "t2") == 2, "fresh lease returns 2")
    check(q.heartbeat("w2", "t2") == 1, "renewal returns 1")
    check(q.heartbeat("w2", "other") == 0, "another token's heartbeat returns 0")
    jobs = q.claim("w2", "t2", 2)
    check(ids_of(jobs) == ["s1", "s2"], "requeued in original order: %s" % ids_of(jobs))
    check([j[3] for j in jobs] == [2, 2], "attempt 2 after a recovery")
    # Die twice more: after attempt 3 with max_attempts 3 it is dead-lettered.
    r.delete(P + ":worker:w2")
    check(q.sweep() == 2, "requeued again")
    q.heartbeat("w3", "t3")
    jobs = q.claim("w3", "t3", 2)
    check([j[3] for j in jobs] == [3, 3], "attempt 3")
    r.delete(P + ":worker:w3")
    check(q.sweep(max_attempts=3) == 2, "two dead-lettered")
    check(r.llen(P + ":q:m:default") == 0, "not requeued")
    res = msgpack.unpackb(r.get(P + ":result:s1"), raw=False)
    check(res["status"] == "error" and res["error"]["code"] == "max_attempts_exceeded",
          "max_attempts_exceeded result: %s" % res)
    check(res["v"] == 1 and res["id"] == "s1" and res["attempt"] == 3 and res["worker"] == "w3"
          and res["model"] == "m", "result fields")
    check(r.hget(P + ":status:s1", "state") == b"failed", "status failed")
    check(set(r.lrange(P + ":dead", 0, -1)) == {b"s1", b"s2"}, "on P:dead")
    check(r.ttl(P + ":status:s1") > 0 and r.ttl(P + ":result:s1") > 0, "TTL on dead-letter keys")
    check(r.hget(P + ":stats", "dead") == b"2", "dead counter")
    states = [e["state"] for e in events(r, "s1")]
    check(states == ["queued", "started", "requeued", "started", "requeued", "started", "failed"],
          "s1 event history: %s" % states)
    # The sweeper lock keeps a second sweeper out.
    check(q.ev("sweep", P, "a", 10000, 3, now(), TTL) == 0, "sweep ran")
    check(r.exists(P + ":sweeper"), "lock taken")
    r.sadd(P + ":workers", "ghost")
    check(q.ev("sweep", P, "b", 10000, 3, now(), TTL) == 0, "second sweeper refused")
    check(r.sismember(P + ":workers", "ghost"), "second sweeper did nothing")


def test_job_not_found(q, r):
    r.rpush(P + ":q:m:default", "garbage")
    r.rpush(P + ":ring:m", "default")
    q.enqueue("real")
    q.heartbeat("w1", "t1")
    jobs = q.claim("w1", "t1", 5)
    check(ids_of(jobs) == ["real"], "only the real job is returned")
    res = msgpack.unpackb(r.get(P + ":result:garbage"), raw=False)
    check(res["error"]["code"] == "job_not_found", "job_not_found result")
    check(r.hget(P + ":status:garbage", "state") == b"failed", "garbage status failed")
    check(r.lrange(P + ":dead", 0, -1) == [b"garbage"], "garbage dead-lettered")
    check(r.lrange(P + ":inflight:w1", 0, -1) == [b"real"], "garbage not in flight")
    evs = events(r, "garbage")
    check(len(evs) == 1 and evs[0]["state"] == "failed" and evs[0]["seq"] == 1, "failed event")
    # A duplicate delivery of a finished job is dropped from in-flight without running.
    q.ack("w1", "t1", [("real", b"R", "")])
    r.rpush(P + ":q:m:default", "real")
    r.rpush(P + ":ring:m", "default")
    check(q.claim("w1", "t1", 5) == [], "finished job not delivered again")
    check(r.llen(P + ":inflight:w1") == 0, "dropped from in-flight")
    check(ring_invariant(r), "ring invariant")


def test_unknown_model(q, r):
    check(q.enqueue("before", model="zzz") == 1, "no served set yet: queued")
    q.heartbeat("w1", "t1", models=("m", "m2"))
    check(r.smembers(P + ":models:served") == {b"m", b"m2"}, "served models registered")
    check(q.enqueue("u1", model="zzz", group="gu") == 3, "unknown model rejected with 3")
    res = msgpack.unpackb(r.get(P + ":result:u1"), raw=False)
    check(res["status"] == "error" and res["error"]["code"] == "unknown_model", "unknown_model")
    check(r.hget(P + ":status:u1", "state") == b"failed", "status failed")
    check(not r.exists(P + ":q:zzz:default") or r.llen(P + ":q:zzz:default") == 1,
          "not queued")
    check(not r.exists(P + ":job:u1"), "payload not stored")
    check(r.lrange(P + ":reply:u1", 0, -1) == [b"failed"], "reply token")
    check(r.ttl(P + ":status:u1") > 0 and r.ttl(P + ":result:u1") > 0, "TTLs")
    check(r.hmget(P + ":group:gu", "total", "failed", "queued") == [b"1", b"1", b"0"],
          "group counters")
    check(q.enqueue("u1", model="zzz") == 2, "then idempotent")
    check(q.enqueue("u2", model="m2") == 1, "served model accepted")


def test_seq(q, r):
    q.enqueue("e1", group="ge")
    q.heartbeat("w1", "t1")
    q.claim("w1", "t1", 1)
    r.delete(P + ":worker:w1")
    q.sweep()
    q.heartbeat("w1", "t1")
    q.claim("w1", "t1", 1)
    q.ack("w1", "t1", [("e1", b"R", "")])
    evs = events(r, "e1")
    check([e["seq"] for e in evs] == list(range(1, len(evs) + 1)) and len(evs) == 5,
          "seq 1..n: %s" % [e["seq"] for e in evs])
    check([e["state"] for e in evs] == ["queued", "started", "requeued", "started", "done"],
          "states")
    check(all(e["v"] == 1 and e["id"] == "e1" and e["group"] == "ge" and e["ts_ms"] > 0
              for e in evs), "common fields")
    check(evs[-1]["attempt"] == 2, "attempt in done event")
    check(r.hget(P + ":status:e1", "seq") == b"5", "status seq")
    gevs = events(r, None, P + ":gevents:ge")
    check([e["gseq"] for e in gevs] == [1, 2, 3, 4, 5], "gseq 1..5")
    check(r.ttl(P + ":events:e1") > 0, "events TTL once terminal")


def test_release(q, r):
    for i in range(4):
        q.enqueue("r%d" % i, group="gr")
    q.enqueue("rx", tenant="t2")
    q.heartbeat("w1", "t1")
    jobs = q.claim("w1", "t1", 10)
    check(sorted(ids_of(jobs)) == ["r0", "r1", "r2", "r3", "rx"], "claimed all")
    check(all(j[3] == 1 for j in jobs), "attempt 1 at claim")
    # r3 finished before the device failed; r2's payload vanished; "nope" was never ours.
    q.ack("w1", "t1", [("r3", b"R", "")])
    r.delete(P + ":job:r2")
    try:
        q.release("w1", "bad", ["r0"])
        check(False, "release with a wrong token must fail")
    except redis.ResponseError as e:
        check(str(e).startswith("LEASE"), "wrong token: LEASE error")
    out = q.release("w1", "t1", ["r0", "r1", "r2", "r3", "rx", "nope"])
    check(out == [1, 1, 3, 0, 1, 0], "per-id replies: %s" % out)
    check(r.llen(P + ":inflight:w1") == 0, "in-flight emptied")
    check(r.lrange(P + ":q:m:default", 0, -1) == [b"r0", b"r1"], "front of the queue, claim order")
    check(r.lrange(P + ":q:m:t2", 0, -1) == [b"rx"], "own tenant's queue")
    check(ring_invariant(r), "ring invariant")
    st = r.hgetall(P + ":status:r0")
    check(st[b"state"] == b"requeued" and st[b"attempts"] == b"0" and b"worker" not in st,
          "requeued, attempt taken back, no worker: %s" % st)
    ev = events(r, "r0")[-1]
    check(ev["state"] == "requeued" and ev.get("released") is True and ev["attempt"] == 0,
          "requeued event: %s" % ev)
    res = r.get(P + ":result:r2")
    check(res is not None and msgpack.unpackb(res)["error"]["code"] == "job_not_found",
          "a job without payload is dead-lettered")
    check(r.hget(P + ":stats", "released") == b"3", "released counter")
    check(r.llen(P + ":wake:m") >= 1, "wake token")
    # Another worker claims them again: attempt 1, as if the failed run never happened.
    q.heartbeat("w2", "t2")
    again = q.claim("w2", "t2", 10, models=("m",))
    check(sorted(ids_of(again)) == ["r0", "r1", "rx"], "claimed again: %s" % ids_of(again))
    check(all(j[3] == 1 for j in again), "attempt 1 again, no attempt charged")
    check(int(r.hget(P + ":group:gr", "queued") or 0) >= 0, "group counters untouched")


def test_unregister(q, r):
    q.heartbeat("w1", "t1")
    check(q.ev("unregister", P, "w1", "bad") == 0, "wrong token keeps the lease")
    check(q.ev("unregister", P, "w1", "t1") == 1, "unregistered")
    check(not r.exists(P + ":worker:w1"), "lease gone")


def main():
    try:
        srv = segq_testlib.RedisServer()
    except unittest.SkipTest as e:
        print("skip:", e)
        return 77
    try:
        r = srv.client()
        q = Q(r)
        for name, fn in sorted(globals().items()):
            if name.startswith("test_") and callable(fn):
                r.flushall()
                before = failures
                fn(q, r)
                print("%s %s" % ("ok  " if failures == before else "FAIL", name))
    finally:
        srv.stop()
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
