#!/usr/bin/python3
"""segq.AsyncClient (issue 12 item 6) has segq.Client's API: every test of test_client_events.py
(submit, wait, wait_many, stats, JobLost, events() with every recovery branch, lost connections,
the real worker) runs again against an AsyncClient on redis.asyncio, driven through
segq_testlib.SyncOverAsync; plus what only asyncio shows: many waits at once on one client, and
a cancelled wait that leaves no pubsub connection behind."""
import asyncio
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
sys.path.insert(0, HERE)
import segq_testlib as tl  # noqa: E402

import redis  # noqa: E402
import segq  # noqa: E402
import test_client_events as base  # noqa: E402

P = base.P
JPEG = base.JPEG


class AsyncClientEvents(base.ClientEvents):
    def make_client(self, **kw):
        return tl.SyncOverAsync(self.url, prefix=P, **kw)


class AsyncOnly(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tl.RedisServer()
        cls.url = cls.srv.url

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_concurrent_waits_share_one_client(self):
        r = redis.Redis.from_url(self.url)
        r.flushall()
        w = base.FakeWorker(self.url, name="afw1")

        async def main():
            async with segq.AsyncClient(self.url, prefix=P) as c:
                ids = [await c.submit(JPEG, "otsu", id="aj-%d" % i) for i in range(20)]
                waits = [asyncio.create_task(c.wait(i, timeout=30)) for i in ids]
                await asyncio.sleep(0.3)
                self.assertFalse(any(t.done() for t in waits), "nothing finished yet")
                # The worker runs in a thread; the loop keeps serving the 20 waits meanwhile.
                done = asyncio.get_running_loop().run_in_executor(None, w.run_all, 0.01)
                results = await asyncio.gather(*waits)
                await done
                self.assertEqual([x["id"] for x in results], ids)
                self.assertTrue(all(x["status"] == "ok" for x in results))
                st = await c.stats()
                self.assertEqual(st["models"]["otsu"]["queued"], 0)
        tl.run_async(main(), timeout=120)

    def test_cancelled_wait_leaves_no_subscriber(self):
        r = redis.Redis.from_url(self.url)
        r.flushall()

        async def main():
            c = segq.AsyncClient(self.url, prefix=P)
            id = await c.submit(JPEG, "otsu")
            t = asyncio.create_task(c.wait(id, timeout=60))
            deadline = time.monotonic() + 20
            while not r.pubsub_channels() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.assertEqual(len(r.pubsub_channels()), 1, "the wait subscribed")
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t
            deadline = time.monotonic() + 20
            while r.pubsub_channels() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.assertEqual(r.pubsub_channels(), [], "the cancelled wait unsubscribed")
            await c.aclose()
        tl.run_async(main(), timeout=120)


if __name__ == "__main__":
    tl.run_tests()
