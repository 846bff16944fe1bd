"""The segq Python client: submit jobs through queue/scripts/enqueue.lua (the same script the C
tools use), wait for results (the job channel's terminal event, docs/protocol.md), follow events
with the recovery algorithm of docs/protocol.md "Reading without gaps", cancel jobs, act on dead
letters, and read queue statistics. Depends only on python3-redis and python3-msgpack."""
import os
import time
import uuid

import redis

from . import proto, schema

DEFAULT_URL = "redis://127.0.0.1:6379"
DEFAULT_PREFIX = schema.DEFAULT["PREFIX"]
DEFAULT_RESULT_TTL_S = schema.DEFAULT["RESULT_TTL_S"]
KEY = schema.KEY
CODE = schema.CODE

# enqueue.lua return values.
ENQUEUE_PENDING = CODE["ENQUEUE_PENDING"]    # already queued or running: nothing done
ENQUEUE_QUEUED = CODE["ENQUEUE_QUEUED"]
ENQUEUE_FINISHED = CODE["ENQUEUE_FINISHED"]  # the id already has a record (result): nothing done
ENQUEUE_HAS_RESULT = ENQUEUE_FINISHED
ENQUEUE_REJECTED = CODE["ENQUEUE_REJECTED"]  # no worker serves the model: unknown_model record
ENQUEUE_CANCELED = CODE["ENQUEUE_CANCELED"]  # the group was canceled: canceled record

_SCRIPTS = schema.SCRIPTS_DIR


class SegqError(Exception):
    """Base of the client's own errors (Redis errors come through as redis.RedisError)."""


class Timeout(SegqError, TimeoutError):
    """wait/wait_many/events ran past their timeout. wait_many's carries the partial results."""

    def __init__(self, message, results=None, missing=None):
        super().__init__(message)
        self.results = results or {}
        self.missing = missing or []


class JobLost(SegqError):
    """The job does not exist in Redis: never submitted, its record expired, or Redis lost it
    (e.g. the last second of writes with appendfsync everysec, or an asynchronous failover).
    Submitting the same id again is safe (ids are idempotent). `ids` lists the jobs."""

    def __init__(self, message, ids=()):
        super().__init__(message)
        self.ids = list(ids)


def _now_ms():
    return int(time.time() * 1000)


def _str(x):
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def load_script(name):
    """The effective source (bytes) of script <name>: the schema constants (segq.schema, from
    queue/scripts/schema.def), queue/scripts/lib/prelude.lua (the shared helpers), then
    queue/scripts/<name>.lua, read through the package's scripts link. The single Python
    definition of a script's text (the C side embeds the same bytes, see
    queue/embed_scripts.cmake): tests and benches load scripts through this function."""
    text = schema.lua_constants().encode()
    for path in (os.path.join(_SCRIPTS, "lib", "prelude.lua"), os.path.join(_SCRIPTS, name + ".lua")):
        try:
            with open(path, "rb") as f:
                text += f.read()
        except OSError as e:
            raise SegqError("cannot read the %s script at %s: %s" % (name, path, e))
    return text


def image_args(image, fmt=None, width=None, height=None):
    """(data, fmt, width, height) for a job's image given bytes, a file path, or a 2-D numpy
    uint8/uint16 array (sent raw as gray8/gray16; numpy is never imported here)."""
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    if hasattr(image, "dtype") and hasattr(image, "shape") and hasattr(image, "tobytes"):
        if len(image.shape) != 2:
            raise proto.ProtocolError("invalid_field_value",
                                      "arrays must be 2-D grayscale (height, width), got shape %r" % (image.shape,))
        h, w = int(image.shape[0]), int(image.shape[1])
        kind = str(image.dtype)
        if kind == "uint8":
            return image.tobytes(), "gray8", w, h
        if kind in ("uint16", ">u2", "<u2"):
            # gray16 is little-endian on the wire whatever the host or array byte order.
            return image.astype("<u2", copy=False).tobytes(), "gray16", w, h
        raise proto.ProtocolError("invalid_field_value", "arrays must be uint8 or uint16, got %s" % kind)
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    if not isinstance(image, bytes):
        raise proto.ProtocolError("wrong_field_type",
                                  "image must be bytes, a path or a numpy array, got %s" % type(image).__name__)
    if fmt is None:
        fmt = proto.sniff_format(image)
        if fmt is None:
            raise proto.ProtocolError("invalid_field_value",
                                      "image bytes are not JPEG; pass fmt='gray8'/'gray16' with width and height")
    return image, fmt, width, height


class Client:
    """A connection to one segq deployment (a Redis URL and a key prefix). Thread-compatible like
    redis-py: share one Client per thread, or one per process for the blocking calls."""

    # How often wait()/wait_many() re-check the keys while no message arrives (a missed
    # message, or a job that Redis lost, is noticed within this time).
    recheck_s = 2.0

    def __init__(self, url=None, prefix=DEFAULT_PREFIX, result_ttl_s=DEFAULT_RESULT_TTL_S, redis_client=None):
        self.url = url or os.environ.get("SEGQ_REDIS_URL") or DEFAULT_URL
        self.prefix = prefix
        self.result_ttl_s = int(result_ttl_s)
        # How long events() keeps trying to re-subscribe after losing its connection.
        self.reconnect_s = 30.0
        self.r = redis_client or redis.Redis.from_url(self.url, socket_connect_timeout=5)
        self._scripts = {}
        # Codes of the most recent submit/submit_many: {id: ENQUEUE_*}.
        self.last_enqueue = {}

    def key(self, *parts):
        return ":".join((self.prefix,) + tuple(str(p) for p in parts))

    def job_key(self, id):
        return self.key(KEY["JOB"], id)

    def script(self, name):
        """The redis-py Script object of queue/scripts/<name>.lua (EVALSHA, EVAL on NOSCRIPT)."""
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self.r.register_script(load_script(name))
        return s

    def ping(self):
        return self.r.ping()

    # -- submitting -------------------------------------------------------------------------

    def _job(self, image, model, id, fmt, width, height, params, threshold, min_area, outputs,
             priority, deadline_ms, group, tenant, meta, models=None, weights=None):
        data, fmt, width, height = image_args(image, fmt, width, height)
        p = dict(params or {})
        for k, v in (("threshold", threshold), ("min_area", min_area), ("outputs", outputs)):
            if v is not None:
                p[k] = v
        id = id or uuid.uuid4().hex
        payload = proto.encode_job(id, model, data, fmt, width=width, height=height, params=p or None,
                                   priority=priority, deadline_ms=deadline_ms, group=group,
                                   tenant=tenant, meta=meta, models=models, weights=weights)
        return id, [id, model, tenant or "", int(priority or 0), payload]

    def _enqueue(self, group, jobs, watch):
        args = [self.prefix, _now_ms(), self.result_ttl_s, group or "", 1 if watch else 0]
        for _, a in jobs:
            args += a
        codes = self.script("enqueue")(keys=[], args=args)
        self.last_enqueue = {id: int(c) for (id, _), c in zip(jobs, codes)}

    def submit(self, image, model, *, id=None, fmt=None, width=None, height=None, params=None,
               threshold=None, min_area=None, outputs=None, priority=None, deadline_ms=None,
               group=None, tenant=None, meta=None, models=None, weights=None, watch=False):
        """Queues one job and returns its id (uuid4 hex unless given). `image` is JPEG bytes, a
        path to a JPEG, raw bytes with fmt/width/height, or a 2-D numpy uint8/uint16 array.
        An ensemble: `models` lists the member names (or (name, weight) pairs), `model` among
        them (it routes the job), `weights` optionally the weights in the same order.
        `watch=True` asks for a `started` event when a worker takes the job.
        Idempotent on id: an id that is pending or has a result is not queued again (see
        last_enqueue for the script's answer)."""
        job = self._job(image, model, id, fmt, width, height, params, threshold, min_area,
                        outputs, priority, deadline_ms, group, tenant, meta, models, weights)
        self._enqueue(group, [job], watch)
        return job[0]

    def submit_many(self, images, model, group=None, *, ids=None, watch=False, **kw):
        """Queues many images as one group in one script call (atomic, so the group's total is
        final before any worker can finish one of them and group watchers never see a premature
        "all done"). Returns (group, ids). kw as in submit."""
        unknown = set(kw) - {"fmt", "width", "height", "params", "threshold", "min_area", "outputs",
                             "priority", "deadline_ms", "tenant", "meta", "models", "weights"}
        if unknown:
            raise TypeError("submit_many() got unexpected arguments: %s" % ", ".join(sorted(unknown)))
        group = group or uuid.uuid4().hex
        images = list(images)
        if ids is not None and len(ids) != len(images):
            raise ValueError("ids and images differ in length")
        jobs = []
        for i, image in enumerate(images):
            jobs.append(self._job(image, model, ids[i] if ids else None, kw.get("fmt"), kw.get("width"),
                                  kw.get("height"), kw.get("params"), kw.get("threshold"),
                                  kw.get("min_area"), kw.get("outputs"), kw.get("priority"),
                                  kw.get("deadline_ms"), group, kw.get("tenant"), kw.get("meta"),
                                  kw.get("models"), kw.get("weights")))
        self._enqueue(group, jobs, watch)
        return group, [id for id, _ in jobs]

    # -- results ----------------------------------------------------------------------------

    def record(self, id):
        """The finished job's record as (event, result, job document bytes or None), or None
        while the job is live or unknown."""
        raw = self.r.mget([self.job_key(id)])[0]
        return proto.decode_record(raw) if raw is not None else None

    def result(self, id):
        """The decoded result of job id, or None if it has none (yet, or expired)."""
        rec = self.record(id)
        return rec[1] if rec else None

    def _results(self, ids):
        """{id: result} of the finished ones of ids (MGET returns nil for live jobs)."""
        out = {}
        for k in range(0, len(ids), 1000):
            chunk = ids[k:k + 1000]
            for i, raw in zip(chunk, self.r.mget([self.job_key(i) for i in chunk])):
                if raw is not None:
                    out[i] = proto.decode_record(raw)[1]
        return out

    def _lost(self, ids):
        """The ids of `ids` that do not exist in Redis at all."""
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.exists(self.job_key(i))
        return [i for i, n in zip(ids, pipe.execute()) if not n]

    def _subscribe(self, channels):
        ps = self.r.pubsub(ignore_subscribe_messages=False)
        for k in range(0, len(channels), 1000):
            ps.subscribe(*channels[k:k + 1000])
        # The subscriptions must be active before the keys are read, or a message published in
        # between would be neither in what we read nor in what we receive.
        want = len(channels)
        deadline = time.monotonic() + 30
        while want > 0:
            msg = ps.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is not None and msg["type"] == "subscribe":
                want -= 1
            elif msg is None and time.monotonic() >= deadline:
                ps.close()
                raise Timeout("subscribing to %d channels timed out" % len(channels))
        return ps

    def wait(self, id, timeout=None):
        """The result of job id, blocking up to timeout seconds (None: forever). Raises Timeout,
        or JobLost when the job does not exist (never submitted, expired, or lost by Redis)."""
        try:
            return self.wait_many([id], timeout)[id]
        except Timeout as e:
            raise Timeout("no result for job %s within %gs" % (id, timeout), missing=[id]) from e

    def wait_many(self, ids, timeout=None):
        """{id: result} for all ids, blocking up to timeout seconds overall. Listens on the jobs'
        channels for their terminal events and re-reads the records every recheck_s. Raises
        Timeout with .results (those that arrived) and .missing, or JobLost (.ids) for jobs that
        do not exist."""
        ids = list(ids)
        out = self._results(ids)
        pending = [i for i in ids if i not in out]
        if not pending:
            return {i: out[i] for i in ids}
        deadline = None if timeout is None else time.monotonic() + timeout
        ps = self._subscribe([self.key(KEY["JOB_CHANNEL"], i) for i in pending])
        try:
            while True:
                out.update(self._results(pending))
                pending = [i for i in pending if i not in out]
                if not pending:
                    return {i: out[i] for i in ids}
                lost = self._lost(pending)
                if lost:
                    # A job that was live a moment ago may have finished in between: look again.
                    out.update(self._results(lost))
                    lost = [i for i in lost if i not in out]
                    if lost:
                        raise JobLost("%d job(s) do not exist in Redis (never submitted, expired, or "
                                      "lost by Redis), e.g. %s" % (len(lost), lost[0]), lost)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout("%d of %d jobs have no result within %gs" % (len(pending), len(ids), timeout),
                                  results=dict(out), missing=pending)
                # Wait for any terminal event, then drain what else has arrived.
                until = time.monotonic() + (self.recheck_s if left is None else min(self.recheck_s, left))
                while True:
                    msg = ps.get_message(timeout=max(0.0, until - time.monotonic()))
                    if msg is None:
                        break
                    if msg["type"] == "message":
                        try:
                            ev = proto.decode_event(msg["data"])
                        except proto.ProtocolError:
                            continue
                        if ev.get("type") in proto.TERMINAL_TYPES:
                            until = time.monotonic()  # re-read now, after draining
        finally:
            ps.close()

    def snapshot(self, id=None, group=None):
        """The current snapshot of a job or a group (docs/protocol.md "Snapshots") as a dict,
        or None if unknown."""
        kind, name = ("job", id) if id is not None else ("group", group)
        r = self.script("recover")(keys=[], args=[self.prefix, kind, name, 0, "", 1, 0])
        return proto.decode_event(r[1]) if _str(r[0]) != "unknown" else None

    def status(self, id):
        """The job's snapshot (state, off, epoch, attempt, group, worker, ...), or None if
        unknown."""
        return self.snapshot(id=id)

    def group_status(self, group):
        """The group's counters {total, queued, running, done, failed, canceled, off, epoch, ...},
        or None if unknown."""
        return self.snapshot(group=group)

    # -- events -----------------------------------------------------------------------------

    def events(self, id=None, group=None, timeout=None, total=None, since=None):
        """Yields the events (dicts) of job `id` or of `group` with the recovery algorithm of
        docs/protocol.md: subscribe, then `recover` from the position (`since` = (off, epoch),
        default: a new reader), then live messages, each event exactly once and in order. The
        outcome of every recovery is yielded as a control item: {"type": "recovered", "off",
        "epoch", "missed"} (the missed events follow) or {"type": "resync", "off", "epoch",
        "snapshot"} (the missed events are gone; the snapshot is the state). A new job reader
        gets a resync with the job's snapshot (a job keeps no history); a new group reader gets
        the group's history from the start (or a resync if it was trimmed). Stops after the
        job's terminal event, or when the group's done + failed + canceled reaches its total
        (`total` overrides the group's own). Re-subscribes after a lost connection (for up to
        reconnect_s). Raises Timeout after `timeout` seconds, JobLost for an unknown job."""
        if (id is None) == (group is None):
            raise ValueError("events() needs exactly one of id or group")
        if id is not None:
            kind, name, channel = "job", id, self.key(KEY["JOB_CHANNEL"], id)
        else:
            kind, name, channel = "group", group, self.key(KEY["GROUP_CHANNEL"], group)
        deadline = None if timeout is None else time.monotonic() + timeout
        pos = {"off": int(since[0]), "epoch": str(since[1])} if since else {"off": 0, "epoch": ""}
        want = {"total": total}

        def finished(ev):
            if kind == "job":
                if ev.get("type") == "snapshot":
                    return ev.get("state") in proto.TERMINAL_STATES
                return ev.get("type") in proto.TERMINAL_TYPES
            t = max(ev.get("total") or 0, want["total"] or 0)
            return t > 0 and (ev.get("done") or 0) + (ev.get("failed") or 0) + (ev.get("canceled") or 0) >= t

        def recover():
            got = []
            while True:
                r = self.script("recover")(keys=[], args=[self.prefix, kind, name, pos["off"], pos["epoch"],
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

        def close(p):
            try:
                p.close()
            except redis.RedisError:
                pass

        ps = None
        need = True
        synced_once = False
        give_up = None
        try:
            while True:
                batch = []
                try:
                    if ps is None:
                        ps = self._subscribe([channel])
                        need = True
                    if need:
                        need = False
                        status, snap, evs = recover()
                        synced_once, give_up = True, None
                        if status == "unknown":
                            if kind == "job":
                                raise JobLost("job %s does not exist (never submitted, expired, or lost "
                                              "by Redis)" % name, [name])
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
                        left = self._left(deadline, 1.0)
                        if deadline is not None and left <= 0:
                            raise Timeout("no terminal event on %s within %gs" % (channel, timeout))
                        msg = ps.get_message(timeout=left)
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
                        close(ps)
                        ps = None
                    time.sleep(min(0.2, self._left(deadline, 0.2)))
                    continue
                for e in batch:
                    if e is None:
                        return
                    yield e
                    if e.get("type") not in ("recovered", "resync") and finished(e):
                        return
        finally:
            if ps is not None:
                close(ps)

    @staticmethod
    def _left(deadline, cap):
        if deadline is None:
            return cap
        return max(0.0, min(cap, deadline - time.monotonic()))

    # -- job controls -----------------------------------------------------------------------

    def cancel(self, ids=None, group=None):
        """Cancels jobs (an id or a list of ids) or a group (docs/protocol.md "Job controls").
        Returns {id: code}: 1 canceled now, 2 cancel pending (running: canceled at its ack), 0
        nothing to cancel (finished or unknown; a group: unknown or already canceled)."""
        if (ids is None) == (group is None):
            raise ValueError("cancel() needs ids or group (one of them)")
        if group is not None:
            names, kind = [group], "group"
        else:
            names, kind = ([ids] if isinstance(ids, str) else list(ids)), "job"
        codes = self.script("cancel")(keys=[], args=[self.prefix, _now_ms(), self.result_ttl_s, kind] + names)
        return {n: int(c) for n, c in zip(names, codes)}

    def dead_list(self, start=0, count=100):
        """[(id, dead_ms)] of the dead letters, newest first."""
        r = self.script("dead")(keys=[], args=[self.prefix, _now_ms(), self.result_ttl_s, "list", start, count])
        return [(_str(r[i]), int(r[i + 1])) for i in range(0, len(r) - 1, 2)]

    def dead_show(self, id):
        """A dead letter as {"event", "result", "job"} (the job document decoded), or None."""
        rec = self.record(id)
        if rec is None or not rec[0].get("dead"):
            return None
        event, result, job = rec
        return {"event": event, "result": result, "job": proto.decode_job(job) if job else None}

    def dead_requeue(self, ids="*"):
        """Queues dead letters again (ids, or "*" for all). Returns how many were queued."""
        names = ["*"] if ids == "*" else ([ids] if isinstance(ids, str) else list(ids))
        return int(self.script("dead")(keys=[], args=[self.prefix, _now_ms(), self.result_ttl_s, "requeue"] + names))

    def dead_purge(self, ids="*"):
        """Removes dead letters (ids, or "*" for all) and their records. Returns how many."""
        names = ["*"] if ids == "*" else ([ids] if isinstance(ids, str) else list(ids))
        return int(self.script("dead")(keys=[], args=[self.prefix, _now_ms(), self.result_ttl_s, "purge"] + names))

    # -- statistics -------------------------------------------------------------------------

    def _scan_suffixes(self, part):
        pre = self.key(part, "")
        return sorted({_str(k)[len(pre):] for k in self.r.scan_iter(match=pre + "*", count=1000)})

    def stats(self):
        """A snapshot of the deployment: {"models": {model: {"queued": n, "delayed": n,
        "tenants": {t: n}}}, "workers": {w: {"live": bool, "lease_ms": ms or None, "inflight": n}},
        "live_workers": n, "dead": n, "counters": {enqueued, done, failed, canceled, dead,
        requeued, retried}, "served": [models]}. Models are the served ones and those with
        queued or delayed jobs."""
        r = self.r
        served = sorted(_str(m) for m in r.smembers(self.key(KEY["SERVED"])))
        models = sorted(set(served) | set(self._scan_suffixes(KEY["RING"]))
                        | set(self._scan_suffixes(KEY["DELAYED"])))
        out_models = {}
        for m in models:
            tenants = []
            for t in r.lrange(self.key(KEY["RING"], m), 0, -1):
                t = _str(t)
                if t not in tenants:
                    tenants.append(t)
            # Tenants drop off the ring when their queue empties; "default" is listed anyway.
            if schema.DEFAULT["TENANT"] not in tenants:
                tenants.append(schema.DEFAULT["TENANT"])
            pipe = r.pipeline(transaction=False)
            for t in tenants:
                pipe.llen(self.key(KEY["QUEUE"], m, t))
            pipe.zcard(self.key(KEY["DELAYED"], m))
            vals = pipe.execute()
            lens, delayed = vals[:-1], vals[-1]
            per = {t: n for t, n in zip(tenants, lens) if n or t == schema.DEFAULT["TENANT"]}
            out_models[m] = {"queued": sum(lens), "delayed": delayed, "tenants": per}
        workers = set(_str(w) for w in r.smembers(self.key(KEY["WORKERS"])))
        workers |= set(self._scan_suffixes(KEY["LEASE"]))
        out_workers = {}
        pipe = r.pipeline(transaction=False)
        order = sorted(workers)
        for w in order:
            pipe.pttl(self.key(KEY["LEASE"], w))
            pipe.llen(self.key(KEY["INFLIGHT"], w))
        vals = pipe.execute()
        for i, w in enumerate(order):
            pttl, inflight = vals[2 * i], vals[2 * i + 1]
            live = pttl is not None and pttl != -2
            out_workers[w] = {"live": live, "lease_ms": pttl if pttl and pttl > 0 else None, "inflight": inflight}
        counters = {_str(k): int(v) for k, v in r.hgetall(self.key(KEY["STATS"])).items()}
        for c in ("enqueued", "done", "failed", "canceled", "dead", "requeued", "retried"):
            counters.setdefault(c, 0)
        return {
            "models": out_models,
            "served": served,
            "workers": out_workers,
            "live_workers": sum(1 for w in out_workers.values() if w["live"]),
            "dead": r.zcard(self.key(KEY["DEAD"])),
            "counters": counters,
        }
