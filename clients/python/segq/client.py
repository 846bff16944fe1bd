"""The segq Python client (sync, on redis.Redis): submit jobs through queue/scripts/enqueue.lua
(the same script the C tools use), wait for results (the job channel's terminal event,
docs/protocol.md), follow events with the recovery algorithm of docs/protocol.md "Reading without
gaps", cancel jobs, act on dead letters, and read queue statistics. The logic lives in segq._ops,
shared with the asyncio AsyncClient (segq.aio); this file is its driver for blocking redis-py.
Depends on python3-redis and python3-msgpack (numpy/Pillow/tifffile for non-JPEG images).
Threads: a Client is used from one thread at a time (like a redis-py pubsub)."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import redis

from . import connection, images, proto
from ._ops import (DEFAULT_PREFIX, DEFAULT_RESULT_TTL_S, ENQUEUE_CANCELED,  # noqa: F401
                   ENQUEUE_FINISHED, ENQUEUE_HAS_RESULT, ENQUEUE_PENDING, ENQUEUE_QUEUED,
                   ENQUEUE_REJECTED, CHUNK, JobLost, NotReplicated, Op, Ops, Result, SegqError,
                   Steps, Timeout, load_script)

DEFAULT_URL = connection.DEFAULT_URL


def image_args(image: Any, fmt: Optional[str] = None, width: Optional[int] = None,
               height: Optional[int] = None) -> images.WireImage:
    """(data, fmt, width, height) for a job's image (segq.images.to_wire)."""
    return images.to_wire(image, fmt, width, height)


def _close_quietly(ps: Any) -> None:
    try:
        ps.close()
    except redis.RedisError:
        pass


class Client(Ops):
    """A connection to one segq deployment (a Redis URL and a key prefix). Thread-compatible like
    redis-py: share one Client per thread, or one per process for the blocking calls.
    AsyncClient (segq.aio) has the same methods as coroutines."""

    def __init__(self, url: Optional[str] = None, prefix: str = DEFAULT_PREFIX,
                 result_ttl_s: int = DEFAULT_RESULT_TTL_S,
                 redis_client: Optional[redis.Redis] = None, *, password: Optional[str] = None,
                 password_file: Optional[str] = None, check_access: bool = True,
                 wait_replicas: int = 0, wait_timeout_ms: int = 2000):
        """url: redis://, rediss:// or redis+sentinel:// (segq.connection; default
        $SEGQ_REDIS_URL). The password may come from password/password_file,
        $SEGQ_REDIS_PASSWORD_FILE or $SEGQ_REDIS_PASSWORD instead of the URL. check_access: before
        the first submit, check once that the Redis user may run what segq needs (raises
        PermissionError naming what is missing). wait_replicas: after each enqueue, WAIT for that
        many replicas to have it (within wait_timeout_ms) or raise NotReplicated: what makes a
        submit survive an asynchronous failover (docs/RELIABILITY.md)."""
        self._setup(url, prefix, result_ttl_s, check_access, wait_replicas, wait_timeout_ms)
        self.r: redis.Redis = redis_client or connection.connect(self.url, password=password,
                                                                 password_file=password_file)
        self._scripts: Dict[str, Any] = {}

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool (the Client may not be used afterwards)."""
        self.r.close()

    def script(self, name: str) -> Any:
        """The redis-py Script object of queue/scripts/<name>.lua (EVALSHA, EVAL on NOSCRIPT)."""
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self.r.register_script(load_script(name))
        return s

    def ping(self) -> bool:
        return self.r.ping()

    # -- the driver -------------------------------------------------------------------------

    def _subscribe(self, channels: List[str]) -> Any:
        ps = self.r.pubsub(ignore_subscribe_messages=False)
        try:
            for k in range(0, len(channels), CHUNK):
                ps.subscribe(*channels[k:k + CHUNK])
            # The subscriptions must be active before the keys are read, or a message published
            # in between would be neither in what we read nor in what we receive.
            want = len(channels)
            deadline = time.monotonic() + 30
            while want > 0:
                msg = ps.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if msg is not None and msg["type"] == "subscribe":
                    want -= 1
                elif msg is None and time.monotonic() >= deadline:
                    raise Timeout("subscribing to %d channels timed out" % len(channels))
        except BaseException:
            _close_quietly(ps)
            raise
        return ps

    def _io(self, op: Op, owned: List[Any]) -> Any:
        kind = op[0]
        if kind == "script":
            return self.script(op[1])(keys=[], args=op[2])
        if kind == "call":
            return self.r.execute_command(*op[1:])
        if kind == "mget":
            return self.r.mget(op[1])
        if kind == "pipeline":
            pipe = self.r.pipeline(transaction=False)
            for sub in op[1]:
                if sub[0] == "script":
                    self.script(sub[1])(keys=[], args=sub[2], client=pipe)
                else:
                    pipe.execute_command(*sub[1:])
            return pipe.execute()
        if kind == "scan":
            return list(self.r.scan_iter(match=op[1], count=1000))
        if kind == "subscribe":
            ps = self._subscribe(op[1])
            owned.append(ps)
            return ps
        if kind == "message":
            return op[1].get_message(timeout=op[2])
        if kind == "close":
            if op[1] in owned:
                owned.remove(op[1])
            _close_quietly(op[1])
            return None
        if kind == "sleep":
            time.sleep(op[1])
            return None
        raise AssertionError("unknown request %r" % (kind,))

    def _steps(self, gen: Steps) -> Iterator[Any]:
        """Runs an operation; yields what it emits (events) and returns its value."""
        owned: List[Any] = []
        send: Any = None
        exc: Optional[BaseException] = None
        try:
            while True:
                try:
                    op = gen.throw(exc) if exc is not None else gen.send(send)
                except StopIteration as stop:
                    return stop.value
                send, exc = None, None
                if op[0] == "emit":
                    yield op[1]
                    continue
                try:
                    send = self._io(op, owned)
                except Exception as e:  # the operation decides (e.g. events() reconnects)
                    exc = e
        finally:
            gen.close()
            for ps in owned:
                _close_quietly(ps)

    def _run(self, gen: Steps) -> Any:
        it = self._steps(gen)
        while True:
            try:
                next(it)
            except StopIteration as stop:
                return stop.value
            raise AssertionError("only events() emits")

    # -- the API ----------------------------------------------------------------------------

    def check_access(self) -> None:
        """Raises PermissionError naming what the Redis user may not do that segq needs
        (commands, keys under the prefix, the event channels), by running
        queue/scripts/permcheck.lua."""
        self._run(self._g_check_access())

    def submit(self, image: Any, model: str, *, id: Optional[str] = None,
               fmt: Optional[str] = None, width: Optional[int] = None,
               height: Optional[int] = None, params: Optional[Dict[str, Any]] = None,
               threshold: Optional[float] = None, min_area: Optional[int] = None,
               outputs: Any = None, priority: Optional[int] = None,
               deadline_ms: Optional[int] = None, group: Optional[str] = None,
               tenant: Optional[str] = None, meta: Any = None, models: Any = None,
               weights: Optional[Sequence[float]] = None, watch: bool = False) -> str:
        """Queues one job and returns its id (uuid4 hex unless given). `image`: JPEG, PNG or TIFF
        bytes or a path to such a file, a numpy array ((H, W) gray or (H, W, 3) RGB, uint8 or
        uint16), a PIL image, or raw samples with fmt ('gray8', 'gray16', 'rgb8', 'rgb16') and
        width/height; everything but JPEG is sent as raw samples, losslessly (segq.images).
        An ensemble: `models` lists the member names (or (name, weight) pairs), `model` among
        them (it routes the job), `weights` optionally the weights in the same order.
        `watch=True` asks for a `started` event when a worker takes the job.
        Idempotent on id: an id that is pending or has a result is not queued again (see
        last_enqueue for the script's answer)."""
        kw = dict(fmt=fmt, width=width, height=height, params=params, threshold=threshold,
                  min_area=min_area, outputs=outputs, priority=priority, deadline_ms=deadline_ms,
                  tenant=tenant, meta=meta, models=models, weights=weights)
        return self._run(self._g_submit(image, model, kw, id, group, watch))

    def submit_many(self, images: Iterable[Any], model: str, group: Optional[str] = None, *,
                    ids: Optional[Sequence[str]] = None, watch: bool = False,
                    **kw: Any) -> Tuple[str, List[str]]:
        """Queues many images as one group in one script call (atomic, so the group's total is
        final before any worker can finish one of them and group watchers never see a premature
        "all done"). Returns (group, ids). kw as in submit."""
        return self._run(self._g_submit_many(images, model, group, ids, watch, kw))

    def record(self, id: str) -> Optional[Tuple[Dict[str, Any], Result, Optional[bytes]]]:
        """The finished job's record as (event, result, job document bytes or None), or None
        while the job is live or unknown."""
        return self._run(self._g_record(id))

    def result(self, id: str) -> Optional[Result]:
        """The decoded result of job id, or None if it has none (yet, or expired)."""
        return self._run(self._g_result(id))

    def wait(self, id: str, timeout: Optional[float] = None) -> Result:
        """The result of job id, blocking up to timeout seconds (None: forever). Raises Timeout,
        or JobLost when the job does not exist (never submitted, expired, or lost by Redis)."""
        return self._run(self._g_wait(id, timeout))

    def wait_many(self, ids: Iterable[str], timeout: Optional[float] = None) -> Dict[str, Result]:
        """{id: result} for all ids, blocking up to timeout seconds overall. Listens on the jobs'
        channels for their terminal events (watch.lua marks them watched) and looks again every
        recheck_s. Raises Timeout with .results (those that arrived) and .missing, or JobLost
        (.ids) for jobs that do not exist."""
        return self._run(self._g_wait_many(ids, timeout))

    def snapshot(self, id: Optional[str] = None,
                 group: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The current snapshot of a job or a group (docs/protocol.md "Snapshots") as a dict,
        or None if unknown."""
        return self._run(self._g_snapshot(id, group))

    def status(self, id: str) -> Optional[Dict[str, Any]]:
        """The job's snapshot (state, off, epoch, attempt, group, worker, ...), or None if
        unknown."""
        return self.snapshot(id=id)

    def group_status(self, group: str) -> Optional[Dict[str, Any]]:
        """The group's counters {total, queued, running, done, failed, canceled, off, epoch, ...},
        or None if unknown."""
        return self.snapshot(group=group)

    def events(self, id: Optional[str] = None, group: Optional[str] = None,
               timeout: Optional[float] = None, total: Optional[int] = None,
               since: Optional[Tuple[int, str]] = None) -> Iterator[Dict[str, Any]]:
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
        return self._steps(self._g_events(id, group, timeout, total, since))

    def cancel(self, ids: Any = None, group: Optional[str] = None) -> Dict[str, int]:
        """Cancels jobs (an id or a list of ids) or a group (docs/protocol.md "Job controls").
        Returns {id: code}: 1 canceled now, 2 cancel pending (running: canceled at its ack), 0
        nothing to cancel (finished or unknown; a group: unknown or already canceled)."""
        return self._run(self._g_cancel(ids, group))

    def dead_list(self, start: int = 0, count: int = 100) -> List[Tuple[str, int]]:
        """[(id, dead_ms)] of the dead letters, newest first."""
        return self._run(self._g_dead_list(start, count))

    def dead_show(self, id: str) -> Optional[Dict[str, Any]]:
        """A dead letter as {"event", "result", "job"} (the job document decoded), or None."""
        return self._run(self._g_dead_show(id))

    def dead_requeue(self, ids: Any = "*") -> int:
        """Queues dead letters again (ids, or "*" for all). Returns how many were queued."""
        return self._run(self._g_dead_requeue(ids))

    def dead_purge(self, ids: Any = "*") -> int:
        """Removes dead letters (ids, or "*" for all) and their records. Returns how many."""
        return self._run(self._g_dead_purge(ids))

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the deployment: {"models": {model: {"queued": n, "delayed": n,
        "tenants": {t: n}}}, "workers": {w: {"live": bool, "lease_ms": ms or None, "inflight": n}},
        "live_workers": n, "dead": n, "counters": {enqueued, done, failed, canceled, dead,
        requeued, retried}, "served": [models]}. Models are the served ones and those with
        queued or delayed jobs."""
        return self._run(self._g_stats())


__all__ = ["Client", "SegqError", "Timeout", "JobLost", "NotReplicated", "load_script",
           "image_args", "DEFAULT_URL", "DEFAULT_PREFIX", "ENQUEUE_QUEUED", "ENQUEUE_PENDING",
           "ENQUEUE_FINISHED", "ENQUEUE_HAS_RESULT", "ENQUEUE_REJECTED", "ENQUEUE_CANCELED",
           "proto"]
