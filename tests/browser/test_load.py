#!/usr/bin/python3
"""1,000 WebSocket clients (npm ws, one node process) on one group through one segq-bridge on
loopback, with a real redis-server and segq-worker (null model): every client receives every
event of the group exactly once and in order (offsets 1..top), the bridge holds ONE Redis
subscription for all of them, closes nobody as slow, and stays up. The bridge's memory and CPU
for the same setup, larger, are measured by bench/bridge_load.py (docs/BENCHMARKS.md)."""
import signal
import time
import unittest

import segq_testlib as tl

tl.require_worker()
tl.require_bridge()
tl.require_browser()

import segq  # noqa: E402

PREFIX = "segq"
CLIENTS = 1000
JOBS = 100


class Load(unittest.TestCase):
    def test_thousand_clients_one_group(self):
        rs = tl.RedisServer()
        r = rs.client()
        w = tl.Worker(rs.url, prefix=PREFIX, models="null")
        w.wait_ready(r)
        b = tl.Bridge(rs.url, prefix=PREFIX)
        b.wait_ready()
        g = "load-%d" % time.monotonic_ns()
        ch = "group:" + g
        lc = tl.LoadClients(b, ch, CLIENTS, JOBS, timeout_s=400)
        try:
            sub = lc.wait("subscribed", 300)
            print("%d clients subscribed in %d ms" % (CLIENTS, sub["ms"]))
            self.assertEqual(r.pubsub_numsub(tl.key(PREFIX, "gev", g))[0][1], 1)
            code, health = b.health()
            self.assertEqual((health["clients"], health["subscriptions"], health["channels"]),
                             (CLIENTS, CLIENTS, 1))
            client = segq.Client(rs.url, prefix=PREFIX)
            img = tl.make_jpeg(16, 16)
            for _ in range(JOBS):  # one enqueue call each: one group event each, and more
                client.submit(img, "null", group=g)
            done = lc.wait("done", 420)
        finally:
            lc.close()
        top = tl.group_top_offset(r, PREFIX, g)
        print("summary: %r (top offset %d)" % (done, top))
        self.assertFalse(done["timed_out"], done)
        self.assertEqual(done["problems"], [])
        self.assertEqual(done["finished"], CLIENTS)
        self.assertEqual((done["events_min"], done["events_max"]), (top, top))
        self.assertEqual(done["last_offsets"], [top])
        st, body, _ = b.http_get("/metrics")
        self.assertIn(b'segq_bridge_closed_total{reason="slow_consumer"} 0', body)
        self.assertTrue(b.alive())
        b.kill9()
        w.kill9()
        rs.stop(signal.SIGKILL)


if __name__ == "__main__":
    tl.run_tests(timeout_s=840)
