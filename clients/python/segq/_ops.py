"""segq._ops: the client's protocol logic, written once for the sync Client (client.py, on
redis.Redis) and the asyncio AsyncClient (aio.py, on redis.asyncio.Redis). Every operation is a
generator that yields I/O requests and is sent their answers (or has their exceptions thrown in),
so submit, wait, events, cancel, stats... are the same code whichever driver runs them; a driver is
a small loop over `_io` requests (see `Ops`).

Requests (tuples):
    ("script", name, args)        run queue/scripts/<name>.lua (EVALSHA, EVAL on NOSCRIPT)
    ("call", command, *args)      one Redis command (redis-py's reply parsing applies)
    ("mget", keys)                MGET
    ("pipeline", [request...])    "script" and "call" requests in one round trip, not a transaction
    ("scan", pattern)             every key matching pattern (SCAN), as a list
    ("subscribe", channels)       a pubsub connection subscribed to channels (confirmed)
    ("message", pubsub, timeout)  its next message dict or None after timeout seconds
    ("close", pubsub)             close it (drivers also close any left open when an op ends)
    ("sleep", seconds)
    ("emit", item)                events() only: hand item to the caller
Threads: an operation runs in its caller's thread (sync) or task (asyncio)."""
from __future__ import annotations

import os
import secrets
import time
import uuid
from typing import Any, Dict, Generator, Iterable, List, Optional, Sequence, Tuple

import redis

from . import images, proto, schema

KEY = schema.KEY
CODE = schema.CODE
DEFAULT_PREFIX: str = schema.DEFAULT["PREFIX"]
DEFAULT_RESULT_TTL_S: int = schema.DEFAULT["RESULT_TTL_S"]

# enqueue.lua return values.
ENQUEUE_PENDING: int = CODE["ENQUEUE_PENDING"]    # already queued or running: nothing done
ENQUEUE_QUEUED: int = CODE["ENQUEUE_QUEUED"]
ENQUEUE_FINISHED: int = CODE["ENQUEUE_FINISHED"]  # the id already has a record: nothing done
ENQUEUE_HAS_RESULT: int = ENQUEUE_FINISHED
ENQUEUE_REJECTED: int = CODE["ENQUEUE_REJECTED"]  # no worker serves the model: unknown_model
ENQUEUE_CANCELED: int = CODE["ENQUEUE_CANCELED"]  # the group was canceled: canceled record

CHUNK = 1000  # ids per script call / MGET / SUBSCRIBE
SUBMIT_KEYWORDS = ("fmt", "width", "height", "params", "threshold", "min_area", "outputs",
                   "priority", "deadline_ms", "tenant", "meta", "models", "weights")

Op = Tuple[Any, ...]
Steps = Generator[Op, Any, Any]  # an operation: yields requests, returns its value
Result = Dict[str, Any]


class SegqError(Exception):
    """Base of the client's own errors (Redis errors come through as redis.RedisError)."""


class NotReplicated(SegqError):
    """The enqueue reached the primary but not wait_replicas replicas within wait_timeout_ms:
    an asynchronous failover now could lose it. .ids: the jobs concerned (resubmitting them later
    is safe: ids are idempotent); .acked: how many replicas confirmed."""

    def __init__(self, message: str, ids: Iterable[str] = (), acked: int = 0):
        super().__init__(message)
        self.ids = list(ids)
        self.acked = acked


class Timeout(SegqError, TimeoutError):
    """wait/wait_many/events ran past their timeout. wait_many's carries the partial results."""

    def __init__(self, message: str, results: Optional[Dict[str, Result]] = None,
                 missing: Optional[List[str]] = None):
        super().__init__(message)
        self.results = results or {}
        self.missing = missing or []


class JobLost(SegqError):
    """The job does not exist in Redis: never submitted, its record expired, or Redis lost it
    (e.g. the last second of writes with appendfsync everysec, or an asynchronous failover).
    Submitting the same id again is safe (ids are idempotent). `ids` lists the jobs."""

    def __init__(self, message: str, ids: Iterable[str] = ()):
        super().__init__(message)
        self.ids = list(ids)


def now_ms() -> int:
    return int(time.time() * 1000)


def _str(x: Any) -> Any:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def load_script(name: str) -> bytes:
    """The effective source (bytes) of script <name>: the schema constants (segq.schema, from
    queue/scripts/schema.def), queue/scripts/lib/prelude.lua (the shared helpers), then
    queue/scripts/<name>.lua, read through the package's scripts folder (a link to queue/scripts
    in the source tree, a copy in an installed package). The single Python definition of a
    script's text (the C side embeds the same bytes, see queue/embed_scripts.cmake): tests and
    benches load scripts through this function."""
    text = schema.lua_constants().encode()
    for path in (os.path.join(schema.SCRIPTS_DIR, "lib", "prelude.lua"),
                 os.path.join(schema.SCRIPTS_DIR, name + ".lua")):
        try:
            with open(path, "rb") as f:
                text += f.read()
        except OSError as e:
            raise SegqError("cannot read the %s script at %s: %s" % (name, path, e))
    return text


def permcheck_problems(prefix: str, reply: Sequence[Any]) -> Optional[str]:
    """permcheck.lua's reply ((command, kind, error) triples) as one sentence, or None when the
    account may do everything segq needs."""
    items = [_str(x) for x in reply]
    problems: Dict[str, List[Tuple[str, str]]] = {}
    for i in range(0, len(items) - 2, 3):
        problems.setdefault(items[i + 1], []).append((items[i], items[i + 2]))
    if not problems:
        return None
    parts = []
    for kind, what in sorted(problems.items()):
        cmds = ", ".join(sorted(set(c for c, _ in what)))
        if kind == "channels":
            parts.append("channels %s:%s:* and %s:%s:* refused to %s (%r)"
                         % (prefix, KEY["JOB_CHANNEL"], prefix, KEY["GROUP_CHANNEL"], cmds,
                            what[0][1]))
        elif kind == "keys":
            parts.append("keys %s:* refused to %s (%r)" % (prefix, cmds, what[0][1]))
        else:
            parts.append("commands refused: %s (%r)" % (cmds, what[0][1]))
    return ("the Redis user may not do what segq needs: %s; see docs/operations.md "
            "\"Redis users\"" % "; ".join(parts))


def _names(ids: Any) -> List[str]:
    return [ids] if isinstance(ids, str) else list(ids)


class Ops:
    """What Client and AsyncClient share: the configuration, key names, job encoding and every
    operation as a generator of requests (the `_g_*` methods). Not used on its own."""

    # How often wait()/wait_many() re-check the keys while no message arrives (a missed
    # message, or a job that Redis lost, is noticed within this time).
    recheck_s: float = 2.0

    def _setup(self, url: Optional[str], prefix: str, result_ttl_s: int, check_access: bool,
               wait_replicas: int, wait_timeout_ms: int) -> None:
        from . import connection
        self.url: str = url or os.environ.get("SEGQ_REDIS_URL") or connection.DEFAULT_URL
        self.prefix = prefix
        self.result_ttl_s = int(result_ttl_s)
        # How long events() keeps trying to re-subscribe after losing its connection.
        self.reconnect_s: float = 30.0
        self._access_checked = not check_access
        self.wait_replicas = int(wait_replicas)
        self.wait_timeout_ms = int(wait_timeout_ms)
        # Codes of the most recent submit/submit_many: {id: ENQUEUE_*}.
        self.last_enqueue: Dict[str, int] = {}

    def key(self, *parts: Any) -> str:
        return ":".join((self.prefix,) + tuple(str(p) for p in parts))

    def job_key(self, id: str) -> str:
        return self.key(KEY["JOB"], id)

    @property
    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        from . import connection
        return connection.mask_url(self.url)

    # -- submitting -------------------------------------------------------------------------

    def _job(self, image: Any, model: str, id: Optional[str], fmt: Optional[str],
             width: Optional[int], height: Optional[int], params: Optional[Dict[str, Any]],
             threshold: Optional[float], min_area: Optional[int], outputs: Any,
             priority: Optional[int], deadline_ms: Optional[int], group: Optional[str],
             tenant: Optional[str], meta: Any, models: Any = None,
             weights: Optional[Sequence[float]] = None) -> Tuple[str, List[Any]]:
        data, fmt, width, height = images.to_wire(image, fmt, width, height)
        p = dict(params or {})
        for k, v in (("threshold", threshold), ("min_area", min_area), ("outputs", outputs)):
            if v is not None:
                p[k] = v
        id = id or uuid.uuid4().hex
        payload = proto.encode_job(id, model, data, fmt, width=width, height=height,
                                   params=p or None, priority=priority, deadline_ms=deadline_ms,
                                   group=group, tenant=tenant, meta=meta, models=models,
                                   weights=weights)
        return id, [id, model, tenant or "", int(priority or 0), payload]

    def _jobs(self, images_: Iterable[Any], model: str, group: str, ids: Optional[Sequence[str]],
              kw: Dict[str, Any]) -> List[Tuple[str, List[Any]]]:
        unknown = set(kw) - set(SUBMIT_KEYWORDS)
        if unknown:
            raise TypeError("submit_many() got unexpected arguments: %s" % ", ".join(sorted(unknown)))
        images_ = list(images_)
        if ids is not None and len(ids) != len(images_):
            raise ValueError("ids and images differ in length")
        return [self._job(image, model, ids[i] if ids else None, kw.get("fmt"), kw.get("width"),
                          kw.get("height"), kw.get("params"), kw.get("threshold"),
                          kw.get("min_area"), kw.get("outputs"), kw.get("priority"),
                          kw.get("deadline_ms"), group, kw.get("tenant"), kw.get("meta"),
                          kw.get("models"), kw.get("weights"))
                for i, image in enumerate(images_)]

    def _g_check_access(self) -> Steps:
        try:
            out = yield ("script", "permcheck", [self.prefix, secrets.token_hex(8), "client"])
        except redis.exceptions.NoPermissionError as e:
            raise PermissionError("the Redis user may not run scripts (EVALSHA/EVAL/SCRIPT "
                                  "LOAD): %s" % e)
        problem = permcheck_problems(self.prefix, out)
        if problem:
            raise PermissionError(problem)
        self._access_checked = True

    def _g_enqueue(self, group: Optional[str], jobs: List[Tuple[str, List[Any]]],
                   watch: bool) -> Steps:
        args: List[Any] = [self.prefix, now_ms(), self.result_ttl_s, group or "", 1 if watch else 0]
        for _, a in jobs:
            args += a
        if not self._access_checked:
            yield from self._g_check_access()
        if not self.wait_replicas:
            codes = yield ("script", "enqueue", args)
            self.last_enqueue = {id: int(c) for (id, _), c in zip(jobs, codes)}
            return
        # WAIT counts the writes of its own connection: the script and the WAIT in one pipeline.
        codes, acked = yield ("pipeline", [("script", "enqueue", args),
                                           ("call", "WAIT", self.wait_replicas,
                                            self.wait_timeout_ms)])
        self.last_enqueue = {id: int(c) for (id, _), c in zip(jobs, codes)}
        if int(acked) < self.wait_replicas:
            ids = [id for id, _ in jobs]
            raise NotReplicated("%d job(s) are queued on the primary but only %d of %d replicas "
                                "had them within %d ms: a failover now could lose them (resubmit "
                                "the same ids later to be sure)"
                                % (len(ids), int(acked), self.wait_replicas, self.wait_timeout_ms),
                                ids=ids, acked=int(acked))

    def _g_submit(self, image: Any, model: str, kw: Dict[str, Any], id: Optional[str],
                  group: Optional[str], watch: bool) -> Steps:
        job = self._job(image, model, id, kw.get("fmt"), kw.get("width"), kw.get("height"),
                        kw.get("params"), kw.get("threshold"), kw.get("min_area"),
                        kw.get("outputs"), kw.get("priority"), kw.get("deadline_ms"), group,
                        kw.get("tenant"), kw.get("meta"), kw.get("models"), kw.get("weights"))
        yield from self._g_enqueue(group, [job], watch)
        return job[0]

    def _g_submit_many(self, images_: Iterable[Any], model: str, group: Optional[str],
                       ids: Optional[Sequence[str]], watch: bool, kw: Dict[str, Any]) -> Steps:
        group = group or uuid.uuid4().hex
        jobs = self._jobs(images_, model, group, ids, kw)
        yield from self._g_enqueue(group, jobs, watch)
        return group, [id for id, _ in jobs]

    # -- results ----------------------------------------------------------------------------

    def _g_record(self, id: str) -> Steps:
        raw = (yield ("mget", [self.job_key(id)]))[0]
        return proto.decode_record(raw) if raw is not None else None

    def _g_result(self, id: str) -> Steps:
        rec = yield from self._g_record(id)
        return rec[1] if rec else None

    def _g_results(self, ids: List[str]) -> Steps:
        """{id: result} of the finished ones of ids (MGET returns nil for live jobs)."""
        out = {}
        for k in range(0, len(ids), CHUNK):
            chunk = ids[k:k + CHUNK]
            raws = yield ("mget", [self.job_key(i) for i in chunk])
            for i, raw in zip(chunk, raws):
                if raw is not None:
                    out[i] = proto.decode_record(raw)[1]
        return out

    def _g_watch(self, ids: List[str]) -> Steps:
        """Marks live jobs watched (their channel publishes from now on) and says where each
        stands: {id: 1 live, 2 finished, 0 unknown}."""
        out = {}
        for k in range(0, len(ids), CHUNK):
            chunk = ids[k:k + CHUNK]
            codes = yield ("script", "watch", [self.prefix] + chunk)
            out.update(zip(chunk, (int(c) for c in codes)))
        return out

    def _g_wait(self, id: str, timeout: Optional[float]) -> Steps:
        try:
            out = yield from self._g_wait_many([id], timeout)
        except Timeout as e:
            raise Timeout("no result for job %s within %gs" % (id, timeout), missing=[id]) from e
        return out[id]

    def _g_wait_many(self, ids: Iterable[str], timeout: Optional[float]) -> Steps:
        ids = list(ids)
        out = yield from self._g_results(ids)
        pending = [i for i in ids if i not in out]
        if not pending:
            return {i: out[i] for i in ids}
        deadline = None if timeout is None else time.monotonic() + timeout
        # Subscribe, then mark the jobs watched (a job's channel publishes only while someone
        # watches it), then read: a terminal event after the read is a message we receive.
        ps = yield ("subscribe", [self.key(KEY["JOB_CHANNEL"], i) for i in pending])
        while True:
            where = yield from self._g_watch(pending)
            done = yield from self._g_results([i for i in pending if where[i] == 2])
            out.update(done)
            pending = [i for i in pending if i not in out]
            if not pending:
                yield ("close", ps)
                return {i: out[i] for i in ids}
            lost = [i for i in pending if where[i] == 0]
            if lost:
                raise JobLost("%d job(s) do not exist in Redis (never submitted, expired, or "
                              "lost by Redis), e.g. %s" % (len(lost), lost[0]), lost)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout("%d of %d jobs have no result within %gs"
                              % (len(pending), len(ids), timeout),
                              results=dict(out), missing=pending)
            # Wait for any terminal event, then drain what else has arrived.
            until = time.monotonic() + (self.recheck_s if left is None else min(self.recheck_s, left))
            while True:
                msg = yield ("message", ps, max(0.0, until - time.monotonic()))
                if msg is None:
                    break
                if msg["type"] == "message":
                    try:
                        ev = proto.decode_event(msg["data"])
                    except proto.ProtocolError:
                        continue
                    if ev.get("type") in proto.TERMINAL_TYPES:
                        until = time.monotonic()  # re-read now, after draining

    def _g_snapshot(self, id: Optional[str], group: Optional[str]) -> Steps:
        kind, name = ("job", id) if id is not None else ("group", group)
        r = yield ("script", "recover", [self.prefix, kind, name, 0, "", 1, 0])
        return proto.decode_event(r[1]) if _str(r[0]) != "unknown" else None

    # -- events -----------------------------------------------------------------------------

    def _g_events(self, id: Optional[str], group: Optional[str], timeout: Optional[float],
                  total: Optional[int], since: Optional[Tuple[int, str]]) -> Steps:
        if (id is None) == (group is None):
            raise ValueError("events() needs exactly one of id or group")
        if id is not None:
            kind, name, channel = "job", id, self.key(KEY["JOB_CHANNEL"], id)
        else:
            kind, name, channel = "group", group, self.key(KEY["GROUP_CHANNEL"], group)
        deadline = None if timeout is None else time.monotonic() + timeout
        pos = {"off": int(since[0]), "epoch": str(since[1])} if since else {"off": 0, "epoch": ""}
        want = {"total": total}

        def finished(ev: Dict[str, Any]) -> bool:
            if kind == "job":
                if ev.get("type") == "snapshot":
                    return ev.get("state") in proto.TERMINAL_STATES
                return ev.get("type") in proto.TERMINAL_TYPES
            t = max(ev.get("total") or 0, want["total"] or 0)
            return t > 0 and (ev.get("done") or 0) + (ev.get("failed") or 0) + (ev.get("canceled") or 0) >= t

        def recover() -> Steps:
            got: List[Dict[str, Any]] = []
            while True:
                r = yield ("script", "recover", [self.prefix, kind, name, pos["off"], pos["epoch"],
                                                 schema.DEFAULT["RECOVER_LIMIT"],
                                                 1 if kind == "job" else 0])
                status = _str(r[0])
                if status == "unknown":
                    return status, None, []
                snap = proto.decode_event(r[1])
                if status == "resync":
                    pos["off"], pos["epoch"] = snap.get("off") or 0, snap.get("epoch") or ""
                    return status, snap, []
                evs = [proto.decode_event(x) for x in r[2:]]
                got += evs
                pos["off"] = evs[-1]["off"] if evs else (snap.get("off") or 0)
                pos["epoch"] = snap.get("epoch") or ""
                if status != "more":
                    return "recovered", snap, got

        ps = None
        need = True
        synced_once = False
        give_up = None
        while True:
            batch: List[Optional[Dict[str, Any]]] = []
            try:
                if ps is None:
                    ps = yield ("subscribe", [channel])
                    need = True
                if need:
                    need = False
                    status, snap, evs = yield from recover()
                    synced_once, give_up = True, None
                    if status == "unknown":
                        if kind == "job":
                            raise JobLost("job %s does not exist (never submitted, expired, or "
                                          "lost by Redis)" % name, [name])
                        pos["off"], pos["epoch"] = 0, ""
                    elif status == "resync":
                        batch = [{"type": "resync", "off": pos["off"], "epoch": pos["epoch"],
                                  "snapshot": snap}]
                        if kind == "group" and want["total"] is None:
                            want["total"] = snap.get("total")
                        if finished(snap):
                            batch.append(None)  # stop after the control item
                    else:
                        if kind == "group" and want["total"] is None:
                            want["total"] = snap.get("total")
                        batch = [{"type": "recovered", "off": pos["off"], "epoch": pos["epoch"],
                                  "missed": len(evs)}] + evs
                        if not evs and finished(snap):
                            batch.append(None)
                else:
                    left = _left(deadline, 1.0)
                    if deadline is not None and left <= 0:
                        raise Timeout("no terminal event on %s within %gs" % (channel, timeout))
                    msg = yield ("message", ps, left)
                    if msg is None or msg["type"] != "message":
                        continue
                    try:
                        ev = proto.decode_event(msg["data"])
                    except proto.ProtocolError:
                        continue
                    off = ev.get("off") or 0
                    if ev.get("epoch") != pos["epoch"] or off > pos["off"] + 1:
                        need = True  # another epoch, or a gap: recover from our position
                        continue
                    if off <= pos["off"]:
                        continue  # already delivered
                    pos["off"] = off
                    batch = [ev]
            except (redis.ConnectionError, redis.TimeoutError):
                # Lost the connection (Redis restart, failover, killed client): subscribe
                # again and recover from our position, for up to reconnect_s.
                now = time.monotonic()
                if give_up is None:
                    give_up = now + self.reconnect_s
                if not synced_once or now >= give_up or (deadline is not None and now >= deadline):
                    raise
                if ps is not None:
                    yield ("close", ps)
                    ps = None
                yield ("sleep", min(0.2, _left(deadline, 0.2)))
                continue
            for e in batch:
                if e is None:
                    return
                yield ("emit", e)
                if e.get("type") not in ("recovered", "resync") and finished(e):
                    return

    # -- job controls -----------------------------------------------------------------------

    def _g_cancel(self, ids: Any, group: Optional[str]) -> Steps:
        if (ids is None) == (group is None):
            raise ValueError("cancel() needs ids or group (one of them)")
        names, kind = ([group], "group") if group is not None else (_names(ids), "job")
        codes = yield ("script", "cancel", [self.prefix, now_ms(), self.result_ttl_s, kind] + names)
        return {n: int(c) for n, c in zip(names, codes)}

    def _g_dead(self, action: str, *args: Any) -> Steps:
        r = yield ("script", "dead", [self.prefix, now_ms(), self.result_ttl_s, action] + list(args))
        return r

    def _g_dead_list(self, start: int, count: int) -> Steps:
        r = yield from self._g_dead("list", start, count)
        return [(_str(r[i]), int(r[i + 1])) for i in range(0, len(r) - 1, 2)]

    def _g_dead_show(self, id: str) -> Steps:
        rec = yield from self._g_record(id)
        if rec is None or not rec[0].get("dead"):
            return None
        event, result, job = rec
        return {"event": event, "result": result, "job": proto.decode_job(job) if job else None}

    def _g_dead_requeue(self, ids: Any) -> Steps:
        names = ["*"] if ids == "*" else _names(ids)
        return int((yield from self._g_dead("requeue", *names)))

    def _g_dead_purge(self, ids: Any) -> Steps:
        names = ["*"] if ids == "*" else _names(ids)
        return int((yield from self._g_dead("purge", *names)))

    # -- statistics -------------------------------------------------------------------------

    def _g_scan_suffixes(self, part: str) -> Steps:
        pre = self.key(part, "")
        keys = yield ("scan", pre + "*")
        return sorted({_str(k)[len(pre):] for k in keys})

    def _g_stats(self) -> Steps:
        raw_served = yield ("call", "SMEMBERS", self.key(KEY["SERVED"]))
        served = sorted(_str(m) for m in raw_served)
        rings = yield from self._g_scan_suffixes(KEY["RING"])
        delayed_models = yield from self._g_scan_suffixes(KEY["DELAYED"])
        models = sorted(set(served) | set(rings) | set(delayed_models))
        out_models = {}
        for m in models:
            tenants: List[str] = []
            ring = yield ("call", "LRANGE", self.key(KEY["RING"], m), 0, -1)
            for t in ring:
                t = _str(t)
                if t not in tenants:
                    tenants.append(t)
            # Tenants drop off the ring when their queue empties; "default" is listed anyway.
            if schema.DEFAULT["TENANT"] not in tenants:
                tenants.append(schema.DEFAULT["TENANT"])
            vals = yield ("pipeline", [("call", "LLEN", self.key(KEY["QUEUE"], m, t)) for t in tenants]
                          + [("call", "ZCARD", self.key(KEY["DELAYED"], m))])
            lens, delayed = vals[:-1], vals[-1]
            per = {t: n for t, n in zip(tenants, lens) if n or t == schema.DEFAULT["TENANT"]}
            out_models[m] = {"queued": sum(lens), "delayed": delayed, "tenants": per}
        raw_workers = yield ("call", "SMEMBERS", self.key(KEY["WORKERS"]))
        leases = yield from self._g_scan_suffixes(KEY["LEASE"])
        workers = set(_str(w) for w in raw_workers) | set(leases)
        order = sorted(workers)
        reqs: List[Op] = []
        for w in order:
            reqs += [("call", "PTTL", self.key(KEY["LEASE"], w)),
                     ("call", "LLEN", self.key(KEY["INFLIGHT"], w))]
        vals = (yield ("pipeline", reqs)) if reqs else []
        out_workers = {}
        for i, w in enumerate(order):
            pttl, inflight = vals[2 * i], vals[2 * i + 1]
            live = pttl is not None and pttl != -2
            out_workers[w] = {"live": live, "lease_ms": pttl if pttl and pttl > 0 else None,
                              "inflight": inflight}
        raw = yield ("call", "HGETALL", self.key(KEY["STATS"]))
        counters = {_str(k): int(v) for k, v in raw.items()}
        for c in ("enqueued", "done", "failed", "canceled", "dead", "requeued", "retried"):
            counters.setdefault(c, 0)
        dead = yield ("call", "ZCARD", self.key(KEY["DEAD"]))
        return {
            "models": out_models,
            "served": served,
            "workers": out_workers,
            "live_workers": sum(1 for w in out_workers.values() if w["live"]),
            "dead": dead,
            "counters": counters,
        }


def _left(deadline: Optional[float], cap: float) -> float:
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))
