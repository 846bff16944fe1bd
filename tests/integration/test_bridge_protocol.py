#!/usr/bin/python3
"""segq-bridge's WebSocket protocol against a real redis-server, a real segq-worker (null, otsu)
and the real bridge (docs/bridge.md): signed tokens refused with a reason, every group event once
and in order, resume from (offset, epoch) after a disconnect, snapshot start, resync when history
was trimmed or the offset is ahead, one Redis subscription for many clients, job channels, the
result API, bad messages, Origin policy, a slow consumer closed without growing memory, ping/pong,
the Redis subscriber connection killed mid-run, and a clean SIGTERM."""
import asyncio
import json
import signal
import socket
import time
import unittest

import segq_testlib as tl

tl.require_worker()
tl.require_bridge()

import segq  # noqa: E402
import websockets  # noqa: E402

PREFIX = "segq"


def run(coro):
    return tl.run_async(coro)


class Base(unittest.TestCase):
    bridge_flags = {}

    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.worker = tl.Worker(cls.rs.url, prefix=PREFIX, models="null,otsu")
        cls.worker.wait_ready(cls.r)
        cls.bridge = tl.Bridge(cls.rs.url, prefix=PREFIX, **cls.bridge_flags)
        cls.bridge.wait_ready()
        cls.client = segq.Client(cls.rs.url, prefix=PREFIX)
        cls.img = tl.make_jpeg(96, 96)

    @classmethod
    def tearDownClass(cls):
        cls.bridge.kill9()
        cls.worker.kill9()
        cls.rs.stop(signal.SIGKILL)

    def submit(self, n, group, model="null"):
        """n jobs of group in one enqueue call (one group event for all of them)."""
        _, ids = self.client.submit_many([self.img] * n, model, group=group)
        return ids

    def submit_each(self, n, group, model="null"):
        """n jobs of group, one enqueue call each: at least n group events."""
        return [self.client.submit(self.img, model, group=group) for _ in range(n)]

    def wait_group(self, group, n, timeout=60):
        tl.wait_until(lambda: (self.client.group_status(group) or {}).get("done", 0) >= n, timeout,
                      what="%d jobs of %s done" % (n, group))

    def assert_contiguous(self, evs, first, last):
        offs = [e["offset"] for e in evs]
        self.assertEqual(offs, list(range(first, last + 1)), "offsets %s" % offs)


class Protocol(Base):
    def test_tokens_refused_with_reason(self):
        b = self.bridge

        def refused(code):
            st, body, _ = b.http_get("/metrics")
            line = ('segq_bridge_refused_total{code="%s"} ' % code).encode()
            return int(body.split(line)[1].split(b"\n")[0])
        before = refused("token_invalid")

        async def go():
            async with tl.WsClient(b) as c:
                ch = "group:tok-1"
                cases = [
                    ("", "token_missing"),
                    ("Bearer abc", "token_malformed"),
                    (b.mint("group:tok-2"), "token_invalid"),
                    (b.mint(ch, ttl=60, now=time.time() - 120), "token_expired"),
                    (segq.tokens.mint("another-secret-0123456789", ch), "token_invalid"),
                ]
                for tok, code in cases:
                    await c.subscribe(ch, token=tok)
                    m = await c.expect("error")
                    self.assertEqual((m["channel"], m["code"]), (ch, code), m)
                    self.assertTrue(m["message"])
                # the connection survives refusals; a good token works
                await c.subscribe(ch)
                m = await c.expect("subscribed")
                self.assertEqual(m["channel"], ch)
        run(go())
        self.assertEqual(refused("token_invalid"), before + 2)

    def test_group_events_exactly_once_then_resume(self):
        g = "ev-%d" % time.monotonic_ns()
        ch = "group:" + g

        async def go():
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=0)
                m = await c.expect("subscribed")
                self.assertEqual((m["offset"], m["recovered"]), (0, True))
                self.submit(5, g)
                evs = await c.events(ch, tl.group_finished)
                self.assert_contiguous(evs, 1, len(evs))
                self.assertEqual({e["data"]["group"] for e in evs}, {g})
                epoch = evs[-1]["epoch"]
            top = tl.group_top_offset(self.r, PREFIX, g)
            self.assertEqual(evs[-1]["offset"], top)
            # gone for a while; more work happens meanwhile
            k = 4
            self.submit(3, g)
            self.wait_group(g, 8)
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=k, epoch=epoch)
                m = await c.expect("subscribed")
                self.assertEqual((m["offset"], m["recovered"], m["epoch"]), (k, True, epoch))
                top2 = tl.group_top_offset(self.r, PREFIX, g)
                evs2 = await c.events(ch, lambda e: e["offset"] >= top2)
                self.assert_contiguous(evs2, k + 1, top2)
                self.assertEqual(m["snapshot"]["state"]["total"], 8)
            # a fresh subscriber starts from the snapshot, without a replay
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch)
                m = await c.expect("subscribed")
                self.assertEqual(m["offset"], top2)
                self.assertEqual(m["snapshot"]["offset"], top2)
                self.assertEqual(m["snapshot"]["state"]["done"], 8)
                self.submit(1, g)
                evs3 = await c.events(ch, tl.group_finished)
                self.assert_contiguous(evs3, top2 + 1, evs3[-1]["offset"])
        run(go())

    def test_resync_when_history_trimmed_or_offset_ahead(self):
        g = "trim-%d" % time.monotonic_ns()
        ch = "group:" + g
        self.submit_each(6, g)  # no bridge client follows it: nothing of it is cached
        self.wait_group(g, 6)
        top, epoch = tl.group_position(self.r, PREFIX, g)
        self.r.execute_command("XTRIM", tl.key(PREFIX, "gh", g), "MAXLEN", 2)

        async def go():
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=1, epoch=epoch)
                m = await c.expect("resync")
                self.assertEqual((m["reason"], m["offset"]), ("history_trimmed", top), m)
                self.assertEqual(m["snapshot"]["state"]["done"], 6)
                # the last two are still in history: resuming from top-2 recovers them
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=top - 2, epoch=epoch)
                m = await c.expect("subscribed")
                self.assertTrue(m["recovered"])
                evs = await c.events(ch, lambda e: e["offset"] >= top)
                self.assert_contiguous(evs, top - 1, top)
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=top + 50, epoch=epoch)
                m = await c.expect("resync")
                self.assertEqual((m["reason"], m["offset"]), ("offset_ahead", top), m)
            async with tl.WsClient(self.bridge) as c:  # a position from another epoch
                await c.subscribe(ch, offset=top - 1, epoch="0.1")
                m = await c.expect("resync")
                self.assertEqual((m["reason"], m["offset"], m["epoch"]),
                                 ("epoch_changed", top, epoch), m)
        run(go())

    def test_one_redis_subscription_for_many_clients(self):
        g = "many-%d" % time.monotonic_ns()
        ch = "group:" + g
        n = 40

        async def go():
            clients = [tl.WsClient(self.bridge) for _ in range(n)]
            for c in clients:
                await c.__aenter__()
                await c.subscribe(ch, offset=0)
            for c in clients:
                await c.expect("subscribed")
            rch = tl.key(PREFIX, "gev", g)
            self.assertEqual(self.r.pubsub_numsub(rch)[0][1], 1)
            self.submit(4, g)
            results = await asyncio.gather(*(c.events(ch, tl.group_finished) for c in clients))
            top = tl.group_top_offset(self.r, PREFIX, g)
            for evs in results:
                self.assert_contiguous(evs, 1, top)
            for c in clients:
                await c.close()
        run(go())
        code, h = self.bridge.health()
        self.assertEqual(code, 200)

    def test_job_channel_and_result_api(self):
        b = self.bridge
        job = "job-%d" % time.monotonic_ns()
        ch = "job:" + job

        async def go():
            async with tl.WsClient(b) as c:
                await c.subscribe(ch)  # before the job exists: an empty snapshot
                m = await c.expect("subscribed")
                self.assertEqual((m["offset"], m["snapshot"]["state"]), (0, None))
                self.client.submit(self.img, "otsu", id=job)
                evs = await c.events(ch, lambda e: e["data"].get("state") in ("done", "failed"))
                self.assert_contiguous(evs, 1, len(evs))
                self.assertEqual(evs[-1]["data"]["state"], "done")
        run(go())
        st, body, hdr = b.http_get("/v1/result/%s?token=%s" % (job, b.mint(ch)))
        self.assertEqual(st, 200, body)
        res = json.loads(body)
        self.assertEqual((res["id"], res["status"]), (job, "ok"))
        self.assertGreaterEqual(len(res["polygons"]), 1)
        self.assertEqual(len(res["polygons"][0]["points"]) % 2, 0)
        self.assertIn("application/json", hdr.get("content-type", ""))
        st, body, _ = b.http_get("/v1/result/%s" % job)
        self.assertEqual((st, json.loads(body)["error"]["code"]), (401, "token_missing"))
        st, body, _ = b.http_get("/v1/result/%s?token=%s" % (job, b.mint("job:other")))
        self.assertEqual((st, json.loads(body)["error"]["code"]), (403, "token_invalid"))
        st, body, _ = b.http_get("/v1/result/nope?token=%s" % b.mint("job:nope"))
        self.assertEqual((st, json.loads(body)["error"]["code"]), (404, "not_found"))
        st, body, _ = b.http_get("/v1/result/bad%20id?token=x")
        self.assertEqual(st, 400)
        st, body, _ = b.http_get("/nowhere")
        self.assertEqual(st, 404)

    def test_bad_messages(self):
        b = self.bridge

        async def go():
            async with tl.WsClient(b) as c:
                await c.ws.send("not json")
                self.assertEqual((await c.expect("error"))["code"], "bad_request")
                await c.send(type="dance")
                self.assertEqual((await c.expect("error"))["code"], "bad_request")
                await c.send(type="subscribe", channel="segq:gev:x", token="x")
                self.assertEqual((await c.expect("error"))["code"], "channel_invalid")
                await c.subscribe("group:bad-1", offset=-1)
                self.assertEqual((await c.expect("error"))["code"], "bad_request")
                await c.subscribe("group:bad-1", epoch="a b")
                self.assertEqual((await c.expect("error"))["code"], "bad_request")
                await c.send(type="unsubscribe", channel="group:bad-1")
                self.assertEqual((await c.expect("error"))["code"], "bad_request")
                await c.subscribe("group:bad-1")
                await c.expect("subscribed")
                await c.subscribe("group:bad-1")
                self.assertEqual((await c.expect("error"))["code"], "already_subscribed")
                await c.send(type="unsubscribe", channel="group:bad-1")
                self.assertEqual((await c.expect("unsubscribed"))["channel"], "group:bad-1")
                await c.send(type="ping")
                await c.expect("pong")
                # longer than the 1 KiB receive buffer: arrives in pieces, put together
                await c.subscribe("group:bad-2", pad="x" * 5000)
                self.assertEqual((await c.expect("subscribed"))["channel"], "group:bad-2")
            async with tl.WsClient(b) as c:
                await c.ws.send(b"\x00binary")
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await c.recv()
                self.assertEqual(cm.exception.code, 1003)
            async with tl.WsClient(b) as c:
                await c.ws.send("x" * 9000)  # over --max-message-bytes 8192
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await c.recv()
                self.assertEqual(cm.exception.code, 1009)
            async with tl.WsClient(b, path="/elsewhere") as c:
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await c.recv()
                self.assertEqual(cm.exception.code, 4004)
        run(go())
        self.assertTrue(b.alive())

    def test_origin_same_origin_by_default(self):
        b = self.bridge

        async def go():
            async with tl.WsClient(b, origin="http://evil.example") as c:
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await c.recv()
                self.assertEqual(cm.exception.code, 4003)
                self.assertIn("origin_refused", cm.exception.reason)
            async with tl.WsClient(b, origin="http://127.0.0.1:%d" % b.port) as c:
                await c.subscribe("group:orig-1")
                await c.expect("subscribed")
        run(go())

    def test_sigterm_closes_clients_going_away(self):
        b = tl.Bridge(self.rs.url, prefix=PREFIX)
        b.wait_ready()

        async def go():
            async with tl.WsClient(b) as c:
                await c.subscribe("group:term-1")
                await c.expect("subscribed")
                b.signal(signal.SIGTERM)
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    while True:
                        await c.recv(timeout=15)
                self.assertEqual(cm.exception.code, 1001)
        run(go())
        self.assertEqual(b.proc.wait(timeout=15), 0)  # one signal: a clean stop
        self.assertIn("stopped", b.log())
        self.assertNotIn("open handles", b.log())


class Limits(Base):
    bridge_flags = {"ping_interval_s": 1, "pong_timeout_s": 2, "client_queue_max": 1024,
                    "client_queue_bytes": 262144, "client_sndbuf_bytes": 4096, "max_subscriptions": 2,
                    "allowed_origins": "https://app.example", "channel_linger_s": 1}

    def test_slow_consumer_closed_memory_bounded(self):
        g = "slow-%d" % time.monotonic_ns()
        ch = "group:" + g

        async def go():
            # A client that stops reading: a tiny receive window and no buffering on our side.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(("127.0.0.1", self.bridge.port))
            slow = tl.WsClient(self.bridge, sock=sock, max_queue=1, read_limit=1024)
            await slow.__aenter__()
            await slow.subscribe(ch, offset=0)
            async with tl.WsClient(self.bridge) as good:
                await good.subscribe(ch, offset=0)
                await good.expect("subscribed")
                # In steps the good client keeps up with, so only the slow one falls behind.
                evs = []
                for k in range(1, 13):
                    self.submit_each(50, g)
                    evs += await good.events(
                        ch, lambda e: tl.group_finished(e) and e["data"]["total"] == 50 * k,
                        timeout=60)
                self.assert_contiguous(evs, 1, tl.group_top_offset(self.r, PREFIX, g))
            tl.wait_until(lambda: b"slow_consumer" in self.bridge.log().encode(), 30,
                          what="the slow client closed")
            st, body, _ = self.bridge.http_get("/metrics")
            self.assertIn(b'segq_bridge_closed_total{reason="slow_consumer"} 1', body)
            queued = int(body.split(b"\nsegq_bridge_queued_bytes ")[1].split(b"\n")[0])
            self.assertLessEqual(queued, 262144)
            with self.assertRaises((websockets.ConnectionClosed, AssertionError)):
                for _ in range(100000):  # drains what the kernel held, then the close
                    await slow.recv(timeout=10)
            sock.close()
        run(go())
        self.assertTrue(self.bridge.alive())

    def test_no_pong_closes_pong_keeps(self):
        async def go():
            import websockets as w
            silent = await w.connect(self.bridge.ws_url, ping_interval=None)
            async with tl.WsClient(self.bridge) as polite:
                async def answer_pings():  # recv() answers every ping with a pong
                    try:
                        while True:
                            await polite.recv(timeout=60)
                    except AssertionError:
                        pass
                reader = asyncio.ensure_future(answer_pings())
                t0 = time.monotonic()
                with self.assertRaises(w.ConnectionClosed) as cm:
                    while time.monotonic() - t0 < 30:
                        await silent.recv()  # reads pings, never answers
                self.assertEqual(cm.exception.code, 4002)
                self.assertIn("no_pong", cm.exception.reason)
                await asyncio.sleep(3)  # more than the pong timeout: the polite one stays
                self.assertFalse(reader.done(), "the client that answers pings was closed")
                self.assertGreaterEqual(polite.pings, 3)
                reader.cancel()
        run(go())

    def test_subscription_limit_and_origin_list(self):
        async def go():
            async with tl.WsClient(self.bridge) as c:
                for k in range(2):
                    await c.subscribe("group:lim-%d" % k)
                    await c.expect("subscribed")
                await c.subscribe("group:lim-9")
                self.assertEqual((await c.expect("error"))["code"], "too_many_subscriptions")
            async with tl.WsClient(self.bridge, origin="https://app.example") as c:
                await c.subscribe("group:lim-0")
                await c.expect("subscribed")
            async with tl.WsClient(self.bridge, origin="http://127.0.0.1:%d" % self.bridge.port) as c:
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await c.recv()
                self.assertEqual(cm.exception.code, 4003)
        run(go())

    def test_channel_unsubscribed_in_redis_after_linger(self):
        g = "linger-%d" % time.monotonic_ns()
        rch = tl.key(PREFIX, "gev", g)

        async def go():
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe("group:" + g)
                await c.expect("subscribed")
                self.assertEqual(self.r.pubsub_numsub(rch)[0][1], 1)
        run(go())
        tl.wait_until(lambda: self.r.pubsub_numsub(rch)[0][1] == 0, 20,
                      what="the bridge's Redis subscription dropped after the linger")


class RedisFaults(Base):
    def test_subscriber_connection_killed_mid_run(self):
        g = "kill-%d" % time.monotonic_ns()
        ch = "group:" + g

        async def go():
            async with tl.WsClient(self.bridge) as c:
                await c.subscribe(ch, offset=0)
                await c.expect("subscribed")
                self.submit_each(10, g)
                evs = []
                evs += await c.events(ch, lambda e: e["offset"] >= 5)
                # Drop the bridge's subscriber connection and keep working while it is away:
                # what is published meanwhile must come back from history, once.
                self.r.client_kill_filter(_type="pubsub")
                self.submit_each(20, g)
                evs += await c.events(ch, lambda e: tl.group_finished(e) and e["data"]["total"] == 30,
                                      timeout=90)
                top = tl.group_top_offset(self.r, PREFIX, g)
                self.assert_contiguous(evs, 1, top)
        run(go())
        self.assertIn('conn=subscriber', self.bridge.log())


if __name__ == "__main__":
    tl.run_tests()
