"""The segq Python client: submit jobs through queue/scripts/enqueue.lua (the same script the C
tools use), wait for results on the reply list, follow events without gaps (docs/protocol.md
"Reading events"), and read queue statistics. Depends only on python3-redis and python3-msgpack."""
import os
import time
import uuid

import redis

from . import connection, proto

DEFAULT_URL = connection.DEFAULT_URL
DEFAULT_PREFIX = "segq"
DEFAULT_RESULT_TTL_S = 24 * 3600

# enqueue.lua return values.
ENQUEUE_PENDING = 0      # a job with this id is already queued or running: nothing done
ENQUEUE_QUEUED = 1
ENQUEUE_HAS_RESULT = 2   # the id already has a result: nothing done
ENQUEUE_REJECTED = 3     # no worker serves the model: an unknown_model error result was written

_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")


class SegqError(Exception):
    """Base of the client's own errors (Redis errors come through as redis.RedisError)."""


class NotReplicated(SegqError):
    """The enqueue reached the primary but not wait_replicas replicas within wait_timeout_ms:
    an asynchronous failover now could lose it. .ids: the jobs concerned (resubmitting them later
    is safe: ids are idempotent); .acked: how many replicas confirmed."""

    def __init__(self, message, ids=(), acked=0):
        super().__init__(message)
        self.ids = list(ids)
        self.acked = acked


class Timeout(SegqError, TimeoutError):
    """wait/wait_many/events ran past their timeout. wait_many's carries the partial results."""

    def __init__(self, message, results=None, missing=None):
        super().__init__(message)
        self.results = results or {}
        self.missing = missing or []


def _now_ms():
    return int(time.time() * 1000)


def _str(x):
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def _int_or_str(x):
    x = _str(x)
    try:
        return int(x)
    except (TypeError, ValueError):
        return x


def load_script(name):
    """The effective source (bytes) of script <name>: queue/scripts/lib/prelude.lua (the shared
    helpers) followed by queue/scripts/<name>.lua, read through the package's scripts symlink.
    The single Python definition of a script's text (the C side embeds the same bytes, see
    queue/embed_scripts.cmake): tests and benches load scripts through this function."""
    text = b""
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

    def __init__(self, url=None, prefix=DEFAULT_PREFIX, result_ttl_s=DEFAULT_RESULT_TTL_S, redis_client=None,
                 *, password=None, password_file=None, check_access=True, wait_replicas=0,
                 wait_timeout_ms=2000):
        """url: redis://, rediss:// or redis+sentinel:// (segq.connection; default
        $SEGQ_REDIS_URL). The password may come from password/password_file,
        $SEGQ_REDIS_PASSWORD_FILE or $SEGQ_REDIS_PASSWORD instead of the URL. check_access: before
        the first submit, check once that the Redis user may run what segq needs (raises
        PermissionError naming what is missing). wait_replicas: after each enqueue, WAIT for that
        many replicas to have it (within wait_timeout_ms) or raise NotReplicated: what makes a
        submit survive an asynchronous failover (docs/RELIABILITY.md)."""
        self.url = url or os.environ.get("SEGQ_REDIS_URL") or DEFAULT_URL
        self.prefix = prefix
        self.result_ttl_s = int(result_ttl_s)
        # How long events() keeps trying to re-subscribe after losing its connection.
        self.reconnect_s = 30.0
        self.r = redis_client or connection.connect(self.url, password=password,
                                                    password_file=password_file)
        self._access_checked = not check_access
        self.wait_replicas = int(wait_replicas)
        self.wait_timeout_ms = int(wait_timeout_ms)
        self._enqueue = self.r.register_script(load_script("enqueue"))
        # Codes of the most recent submit/submit_many: {id: ENQUEUE_*}.
        self.last_enqueue = {}

    @property
    def display_url(self):
        """The URL with its password masked, for messages."""
        return connection.mask_url(self.url)

    def check_access(self):
        """Raises PermissionError naming what the Redis user may not do that segq needs
        (commands, keys under the prefix, the event channels); see connection.check_access."""
        connection.check_access(self.r, self.prefix, load_script, role="client")
        self._access_checked = True

    def _check_once(self):
        if not self._access_checked:
            self.check_access()

    def key(self, *parts):
        return ":".join((self.prefix,) + tuple(str(p) for p in parts))

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
        args = [self.prefix, id, model, tenant or "", group or "", int(priority or 0), payload,
                _now_ms(), self.result_ttl_s]
        return id, args

    def submit(self, image, model, *, id=None, fmt=None, width=None, height=None, params=None,
               threshold=None, min_area=None, outputs=None, priority=None, deadline_ms=None,
               group=None, tenant=None, meta=None, models=None, weights=None):
        """Queues one job and returns its id (uuid4 hex unless given). `image` is JPEG bytes, a
        path to a JPEG, raw bytes with fmt/width/height, or a 2-D numpy uint8/uint16 array.
        An ensemble: `models` lists the member names (or (name, weight) pairs), `model` among
        them (it routes the job), `weights` optionally the weights in the same order.
        Idempotent on id: an id that is pending or has a result is not queued again (see
        last_enqueue for the script's answer)."""
        id, args = self._job(image, model, id, fmt, width, height, params, threshold, min_area,
                             outputs, priority, deadline_ms, group, tenant, meta, models, weights)
        self._check_once()
        if self.wait_replicas:
            # WAIT counts the writes of its own connection: one pipeline, one connection.
            pipe = self.r.pipeline(transaction=False)
            self._enqueue(keys=[], args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            code, acked = pipe.execute()
            code = int(code)
            self.last_enqueue = {id: code}
            self._replicated(acked, [id])
        else:
            code = int(self._enqueue(keys=[], args=args))
            self.last_enqueue = {id: code}
        return id

    def _replicated(self, acked, ids):
        if int(acked) < self.wait_replicas:
            raise NotReplicated("%d job(s) are queued on the primary but only %d of %d replicas had "
                                "them within %d ms: a failover now could lose them (resubmit the "
                                "same ids later to be sure)" % (len(ids), int(acked),
                                                                self.wait_replicas,
                                                                self.wait_timeout_ms),
                                ids=ids, acked=int(acked))

    def submit_many(self, images, model, group=None, *, ids=None, **kw):
        """Queues many images as one group in one pipeline (a MULTI/EXEC transaction, so the
        group's total is final before any worker can finish one of them and group watchers
        never see a premature "all done"). Returns (group, ids). kw as in submit."""
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
        self._check_once()
        if self.wait_replicas:
            # MULTI/EXEC then WAIT on the same connection (WAIT counts that connection's writes).
            pipe = self.r.pipeline(transaction=False)
            pipe.execute_command("MULTI")
            for _, args in jobs:
                self._enqueue(keys=[], args=args, client=pipe)
            pipe.execute_command("EXEC")
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            out = pipe.execute()
            codes, acked = out[-2], out[-1]
        else:
            pipe = self.r.pipeline(transaction=True)
            for _, args in jobs:
                self._enqueue(keys=[], args=args, client=pipe)
            codes, acked = pipe.execute(), None
        self.last_enqueue = {id: int(c) for (id, _), c in zip(jobs, codes)}
        if acked is not None:
            self._replicated(acked, [id for id, _ in jobs])
        return group, [id for id, _ in jobs]

    # -- results ----------------------------------------------------------------------------

    def result(self, id):
        """The decoded result of job id, or None if it has none (yet, or expired)."""
        raw = self.r.get(self.key("result", id))
        return proto.decode_result(raw) if raw is not None else None

    def wait(self, id, timeout=None):
        """The result of job id, blocking up to timeout seconds (None: forever). Raises Timeout.
        The reply list is read with a non-destructive BLMOVE, so any number of waiters (and a
        later wait) see the same token."""
        res = self.result(id)
        if res is not None:
            return res
        reply = self.key("reply", id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                raise Timeout("no result for job %s within %gs" % (id, timeout), missing=[id])
            # BLMOVE timeout 0 blocks forever; block in slices so a dead connection is noticed.
            block = 30.0 if deadline is None else min(30.0, max(left, 0.01))
            token = self.r.blmove(reply, reply, block, "RIGHT", "LEFT")
            res = self.result(id)
            if res is not None:
                return res
            if token is not None:
                # A reply token without a result: the result expired, or was not written.
                raise SegqError("job %s has a reply token but no result (expired?)" % id)

    def wait_many(self, ids, timeout=None):
        """{id: result} for all ids, blocking up to timeout seconds overall. Raises Timeout with
        .results (those that arrived) and .missing."""
        ids = list(ids)
        out = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = ids
        while True:
            keys = [self.key("result", i) for i in pending]
            raws = []
            for k in range(0, len(keys), 1000):
                raws.extend(self.r.mget(keys[k:k + 1000]))
            still = []
            for i, raw in zip(pending, raws):
                if raw is None:
                    still.append(i)
                else:
                    out[i] = proto.decode_result(raw)
            pending = still
            if not pending:
                return {i: out[i] for i in ids}
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout("%d of %d jobs have no result within %gs" % (len(pending), len(ids), timeout),
                              results=out, missing=pending)
            reply = self.key("reply", pending[0])
            block = 30.0 if left is None else min(30.0, max(left, 0.01))
            self.r.blmove(reply, reply, block, "RIGHT", "LEFT")

    def status(self, id):
        """The status hash of job id as a dict (ints where numeric), or None if unknown."""
        h = self.r.hgetall(self.key("status", id))
        if not h:
            return None
        return {_str(k): _int_or_str(v) for k, v in h.items()}

    def group_status(self, group):
        """The group's counters {total, queued, done, failed, gseq}, or None if unknown."""
        h = self.r.hgetall(self.key("group", group))
        if not h:
            return None
        return {_str(k): _int_or_str(v) for k, v in h.items()}

    # -- events -----------------------------------------------------------------------------

    def events(self, id=None, group=None, timeout=None, total=None):
        """Yields the events (dicts) of job `id` or of `group`, first the stored ones then live
        ones, each exactly once and in order: subscribe first, read the stream, then take live
        messages, dropping any whose seq (gseq) is not greater than the last seen; a gap makes
        it re-read the stream after the last entry seen. Stops after the job's terminal event,
        or when the group's done + failed reaches its total (`total` overrides the total read
        from the group when the generator starts). If the connection drops it subscribes again
        and catches up from the stream (for up to reconnect_s). Raises Timeout after `timeout`
        seconds."""
        if (id is None) == (group is None):
            raise ValueError("events() needs exactly one of id or group")
        if id is not None:
            channel, stream, seqf = self.key("ev", id), self.key("events", id), "seq"
        else:
            channel, stream, seqf = self.key("gev", group), self.key("gevents", group), "gseq"
        deadline = None if timeout is None else time.monotonic() + timeout
        state = {"last": 0, "sid": None, "done": False}
        want_total = total

        def finished(ev):
            if id is not None:
                return ev.get("state") in proto.TERMINAL_STATES
            t = max(ev.get("total") or 0, want_total or 0)
            return t > 0 and (ev.get("done") or 0) + (ev.get("failed") or 0) >= t

        def read_stream():
            # Entries after the last one seen ("(" makes the start exclusive, Redis >= 6.2).
            start = "-" if state["sid"] is None else "(" + _str(state["sid"])
            found = []
            while True:
                entries = self.r.xrange(stream, start, "+", count=1000)
                for sid, fields in entries:
                    state["sid"] = sid
                    raw = fields.get(b"e")
                    if raw is None:
                        continue
                    ev = proto.decode_event(raw)
                    if (ev.get(seqf) or 0) > state["last"]:
                        state["last"] = ev.get(seqf) or 0
                        found.append(ev)
                if len(entries) < 1000:
                    return found
                start = "(" + _str(state["sid"])

        def subscribe():
            ps = self.r.pubsub()
            subs.append(ps)
            ps.subscribe(channel)
            # The subscription must be active before the stream is read, or an event published
            # in between would be neither in what we read nor in what we receive.
            while True:
                msg = ps.get_message(timeout=self._left(deadline, 5.0))
                if msg is not None and msg["type"] == "subscribe":
                    return ps
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout("subscribing to %s timed out" % channel)

        def close(ps):
            try:
                ps.close()
            except redis.RedisError:
                pass

        subs = []
        ps = None
        synced_once = False
        give_up = None
        try:
            while True:
                try:
                    if ps is None:
                        ps = subscribe()
                        if group is not None and want_total is None:
                            g = self.group_status(group)
                            if g and isinstance(g.get("total"), int):
                                want_total = g["total"]
                        batch = read_stream()
                        synced_once, give_up = True, None
                    else:
                        left = self._left(deadline, 1.0)
                        if deadline is not None and left <= 0:
                            raise Timeout("no terminal event on %s within %gs" % (channel, timeout))
                        msg = ps.get_message(timeout=left)
                        if msg is None or msg["type"] != "message":
                            continue
                        ev = proto.decode_event(msg["data"])
                        s = ev.get(seqf) or 0
                        if s <= state["last"]:
                            continue
                        if s == state["last"] + 1:
                            state["last"] = s
                            batch = [ev]
                        else:
                            # Missed a message: the stream has it (XADD precedes PUBLISH).
                            batch = read_stream()
                            if s > state["last"]:
                                # Trimmed from the capped stream too: accept the gap, don't stall.
                                state["last"] = s
                                batch.append(ev)
                except (redis.ConnectionError, redis.TimeoutError):
                    # Lost the connection (Redis restart, failover, killed client): subscribe
                    # again and catch up from the stream, for up to reconnect_s.
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
                    yield e
                    if finished(e):
                        return
        finally:
            for p in subs:
                close(p)

    @staticmethod
    def _left(deadline, cap):
        if deadline is None:
            return cap
        return max(0.0, min(cap, deadline - time.monotonic()))

    # -- statistics -------------------------------------------------------------------------

    def stats(self):
        """A snapshot of the deployment: {"models": {model: {"queued": n, "tenants": {t: n}}},
        "workers": {w: {"live": bool, "lease_ms": ms or None, "inflight": n}}, "live_workers": n,
        "dead": n, "counters": {enqueued, done, failed, dead, requeued}, "served": [models]}."""
        r = self.r
        models = sorted(_str(m) for m in r.smembers(self.key("models")))
        served = sorted(_str(m) for m in r.smembers(self.key("models:served")))
        out_models = {}
        for m in models:
            tenants = []
            for t in r.lrange(self.key("ring", m), 0, -1):
                t = _str(t)
                if t not in tenants:
                    tenants.append(t)
            # Tenants drop off the ring when their queue empties; "default" is listed anyway.
            if "default" not in tenants:
                tenants.append("default")
            pipe = r.pipeline(transaction=False)
            for t in tenants:
                pipe.llen(self.key("q", m, t))
            lens = pipe.execute()
            per = {t: n for t, n in zip(tenants, lens) if n or t == "default"}
            out_models[m] = {"queued": sum(lens), "tenants": per}
        workers = set(_str(w) for w in r.smembers(self.key("workers")))
        lease_prefix = self.key("worker", "")
        for k in r.scan_iter(match=lease_prefix + "*", count=1000):
            workers.add(_str(k)[len(lease_prefix):])
        out_workers = {}
        pipe = r.pipeline(transaction=False)
        order = sorted(workers)
        for w in order:
            pipe.pttl(self.key("worker", w))
            pipe.llen(self.key("inflight", w))
        vals = pipe.execute()
        for i, w in enumerate(order):
            pttl, inflight = vals[2 * i], vals[2 * i + 1]
            live = pttl is not None and pttl != -2
            out_workers[w] = {"live": live, "lease_ms": pttl if pttl and pttl > 0 else None, "inflight": inflight}
        counters = {_str(k): _int_or_str(v) for k, v in r.hgetall(self.key("stats")).items()}
        for c in ("enqueued", "done", "failed", "dead", "requeued"):
            counters.setdefault(c, 0)
        return {
            "models": out_models,
            "served": served,
            "workers": out_workers,
            "live_workers": sum(1 for w in out_workers.values() if w["live"]),
            "dead": r.llen(self.key("dead")),
            "counters": counters,
        }
