"""segq.aio: AsyncClient, the asyncio twin of segq.Client on redis.asyncio. Same constructor, same
methods with the same arguments and results, as coroutines (events() is an async generator), for
asyncio servers (FastAPI, aiohttp...) that must not block their event loop: the operations are
segq._ops's, run by an await-ing driver instead of a blocking one.

    async with AsyncClient("redis://127.0.0.1:6379") as c:
        id = await c.submit("samples/cells_01.jpg", "otsu")
        res = await c.wait(id, timeout=30)

Threads: one event loop; any number of tasks may share a client (each call takes its own
connections from the pool; a wait or events() holds a pubsub connection while it runs)."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
import redis.asyncio

from . import connection
from ._ops import (CHUNK, DEFAULT_PREFIX, DEFAULT_RESULT_TTL_S, Op, Ops, Result, Steps, Timeout,
                   load_script)


async def _close_quietly(ps: Any) -> None:
    try:
        await ps.reset()
    except (redis.RedisError, OSError):
        pass


class AsyncClient(Ops):
    """A connection to one segq deployment for asyncio code: the API of segq.Client with every
    method a coroutine (events() an async generator)."""

    def __init__(self, url: Optional[str] = None, prefix: str = DEFAULT_PREFIX,
                 result_ttl_s: int = DEFAULT_RESULT_TTL_S,
                 redis_client: Optional[redis.asyncio.Redis] = None, *,
                 password: Optional[str] = None, password_file: Optional[str] = None,
                 check_access: bool = True, wait_replicas: int = 0, wait_timeout_ms: int = 2000):
        """As segq.Client (url forms, password sources, check_access, wait_replicas); no I/O
        happens until the first call."""
        self._setup(url, prefix, result_ttl_s, check_access, wait_replicas, wait_timeout_ms)
        self.r: redis.asyncio.Redis = redis_client or connection.connect_async(
            self.url, password=password, password_file=password_file)
        self._sources: Dict[str, bytes] = {}
        self._shas: Dict[str, str] = {}

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection pool (the client may not be used afterwards)."""
        await self.r.close()
        await self.r.connection_pool.disconnect()

    async def ping(self) -> bool:
        return await self.r.ping()

    # -- the driver -------------------------------------------------------------------------

    def _source(self, name: str) -> bytes:
        src = self._sources.get(name)
        if src is None:
            src = self._sources[name] = load_script(name)
            import hashlib
            self._shas[name] = hashlib.sha1(src).hexdigest()
        return src

    async def _script(self, name: str, args: List[Any]) -> Any:
        src = self._source(name)
        try:
            return await self.r.evalsha(self._shas[name], 0, *args)
        except redis.exceptions.NoScriptError:
            await self.r.script_load(src)
            return await self.r.evalsha(self._shas[name], 0, *args)

    async def _pipeline(self, reqs: List[Op]) -> List[Any]:
        for attempt in (0, 1):
            pipe = self.r.pipeline(transaction=False)
            for sub in reqs:
                if sub[0] == "script":
                    self._source(sub[1])
                    pipe.evalsha(self._shas[sub[1]], 0, *sub[2])
                else:
                    pipe.execute_command(*sub[1:])
            try:
                return await pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                # Not loaded yet (or Redis restarted): load and send the pipeline again; the
                # scripts refused with NOSCRIPT did not run.
                for sub in reqs:
                    if sub[0] == "script":
                        await self.r.script_load(self._source(sub[1]))
        raise AssertionError("unreachable")

    async def _subscribe(self, channels: List[str]) -> Any:
        ps = self.r.pubsub(ignore_subscribe_messages=False)
        try:
            for k in range(0, len(channels), CHUNK):
                await ps.subscribe(*channels[k:k + CHUNK])
            # Confirmed before the keys are read (see Client._subscribe).
            want = len(channels)
            deadline = asyncio.get_running_loop().time() + 30
            while want > 0:
                left = max(0.0, deadline - asyncio.get_running_loop().time())
                msg = await ps.get_message(timeout=left)
                if msg is not None and msg["type"] == "subscribe":
                    want -= 1
                elif msg is None and asyncio.get_running_loop().time() >= deadline:
                    raise Timeout("subscribing to %d channels timed out" % len(channels))
        except BaseException:
            await _close_quietly(ps)
            raise
        return ps

    async def _message(self, ps: Any, timeout: float) -> Any:
        # redis.asyncio's get_message(timeout) may return None early (a subscribe confirmation,
        # a health-check reply): wait out the rest, so a "no message" means the time passed.
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while True:
            msg = await ps.get_message(timeout=max(0.0, until - loop.time()))
            if msg is not None or loop.time() >= until:
                return msg

    async def _io(self, op: Op, owned: List[Any]) -> Any:
        kind = op[0]
        if kind == "script":
            return await self._script(op[1], op[2])
        if kind == "call":
            return await self.r.execute_command(*op[1:])
        if kind == "mget":
            return await self.r.mget(op[1])
        if kind == "pipeline":
            return await self._pipeline(op[1])
        if kind == "scan":
            return [k async for k in self.r.scan_iter(match=op[1], count=1000)]
        if kind == "subscribe":
            ps = await self._subscribe(op[1])
            owned.append(ps)
            return ps
        if kind == "message":
            return await self._message(op[1], op[2])
        if kind == "close":
            if op[1] in owned:
                owned.remove(op[1])
            await _close_quietly(op[1])
            return None
        if kind == "sleep":
            await asyncio.sleep(op[1])
            return None
        raise AssertionError("unknown request %r" % (kind,))

    async def _steps(self, gen: Steps) -> AsyncIterator[Any]:
        """Runs an operation, yielding what it emits; its return value is the last item, wrapped
        in _Done (async generators cannot return values)."""
        owned: List[Any] = []
        send: Any = None
        exc: Optional[BaseException] = None
        try:
            while True:
                try:
                    op = gen.throw(exc) if exc is not None else gen.send(send)
                except StopIteration as stop:
                    yield _Done(stop.value)
                    return
                send, exc = None, None
                if op[0] == "emit":
                    yield op[1]
                    continue
                try:
                    send = await self._io(op, owned)
                except Exception as e:  # the operation decides (e.g. events() reconnects)
                    exc = e
        finally:
            gen.close()
            for ps in owned:
                await _close_quietly(ps)

    async def _run(self, gen: Steps) -> Any:
        it = self._steps(gen)
        try:
            async for item in it:
                if isinstance(item, _Done):
                    return item.value
                raise AssertionError("only events() emits")
        finally:
            await it.aclose()
        raise AssertionError("the operation ended without a value")

    # -- the API (segq.Client's, as coroutines) ---------------------------------------------

    async def check_access(self) -> None:
        """See Client.check_access."""
        await self._run(self._g_check_access())

    async def submit(self, image: Any, model: str, *, id: Optional[str] = None,
                     fmt: Optional[str] = None, width: Optional[int] = None,
                     height: Optional[int] = None, params: Optional[Dict[str, Any]] = None,
                     threshold: Optional[float] = None, min_area: Optional[int] = None,
                     outputs: Any = None, priority: Optional[int] = None,
                     deadline_ms: Optional[int] = None, group: Optional[str] = None,
                     tenant: Optional[str] = None, meta: Any = None, models: Any = None,
                     weights: Optional[Sequence[float]] = None, watch: bool = False) -> str:
        """See Client.submit. Decoding a PNG/TIFF file runs in this task (it is CPU work: for
        large images decode with to_thread first, or pass the array)."""
        kw = dict(fmt=fmt, width=width, height=height, params=params, threshold=threshold,
                  min_area=min_area, outputs=outputs, priority=priority, deadline_ms=deadline_ms,
                  tenant=tenant, meta=meta, models=models, weights=weights)
        return await self._run(self._g_submit(image, model, kw, id, group, watch))

    async def submit_many(self, images: Iterable[Any], model: str, group: Optional[str] = None,
                          *, ids: Optional[Sequence[str]] = None, watch: bool = False,
                          **kw: Any) -> Tuple[str, List[str]]:
        """See Client.submit_many."""
        return await self._run(self._g_submit_many(images, model, group, ids, watch, kw))

    async def record(self, id: str) -> Optional[Tuple[Dict[str, Any], Result, Optional[bytes]]]:
        """See Client.record."""
        return await self._run(self._g_record(id))

    async def result(self, id: str) -> Optional[Result]:
        """See Client.result."""
        return await self._run(self._g_result(id))

    async def wait(self, id: str, timeout: Optional[float] = None) -> Result:
        """See Client.wait."""
        return await self._run(self._g_wait(id, timeout))

    async def wait_many(self, ids: Iterable[str],
                        timeout: Optional[float] = None) -> Dict[str, Result]:
        """See Client.wait_many."""
        return await self._run(self._g_wait_many(ids, timeout))

    async def snapshot(self, id: Optional[str] = None,
                       group: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """See Client.snapshot."""
        return await self._run(self._g_snapshot(id, group))

    async def status(self, id: str) -> Optional[Dict[str, Any]]:
        """See Client.status."""
        return await self.snapshot(id=id)

    async def group_status(self, group: str) -> Optional[Dict[str, Any]]:
        """See Client.group_status."""
        return await self.snapshot(group=group)

    async def events(self, id: Optional[str] = None, group: Optional[str] = None,
                     timeout: Optional[float] = None, total: Optional[int] = None,
                     since: Optional[Tuple[int, str]] = None) -> AsyncIterator[Dict[str, Any]]:
        """See Client.events: the same items, from an async generator (`async for`)."""
        it = self._steps(self._g_events(id, group, timeout, total, since))
        try:
            async for item in it:
                if isinstance(item, _Done):
                    return
                yield item
        finally:
            await it.aclose()

    async def cancel(self, ids: Any = None, group: Optional[str] = None) -> Dict[str, int]:
        """See Client.cancel."""
        return await self._run(self._g_cancel(ids, group))

    async def dead_list(self, start: int = 0, count: int = 100) -> List[Tuple[str, int]]:
        """See Client.dead_list."""
        return await self._run(self._g_dead_list(start, count))

    async def dead_show(self, id: str) -> Optional[Dict[str, Any]]:
        """See Client.dead_show."""
        return await self._run(self._g_dead_show(id))

    async def dead_requeue(self, ids: Any = "*") -> int:
        """See Client.dead_requeue."""
        return await self._run(self._g_dead_requeue(ids))

    async def dead_purge(self, ids: Any = "*") -> int:
        """See Client.dead_purge."""
        return await self._run(self._g_dead_purge(ids))

    async def stats(self) -> Dict[str, Any]:
        """See Client.stats."""
        return await self._run(self._g_stats())


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


__all__ = ["AsyncClient"]
