#!/usr/bin/python3
"""The worker's HTTP endpoint (issue 8 item 6), on libmicrohttpd, against a real worker and
redis-server: /livez, /readyz, /healthz, /metrics answer; bad requests get an answer (a NUL byte
in the request line: 400, a POST: 405), never silence; 1,100 idle sockets neither exhaust the
worker's file descriptors (it still reconnects to Redis and runs jobs) nor stop it answering;
/healthz goes 503 while Redis is frozen (SIGSTOP) past the watchdog and back to 200 after
SIGCONT, while /livez stays 200 (the loop thread turns)."""
import http.client
import os
import resource
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "th"
IDLE_SOCKETS = 1100
HTTP_TIMEOUT_S = 3


def get(port, path, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def raw(port, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


class HttpEndpoint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.port = tl.free_port()
        cls.w = tl.Worker(cls.rs.url, prefix=P, worker_id="th-w1", lease_ttl_ms=3000,
                          http_port=cls.port, http_timeout_s=HTTP_TIMEOUT_S,
                          http_max_connections=32)
        cls.w.wait_ready(cls.rs.client())
        tl.wait_until(lambda: get(cls.port, "/readyz")[0] == 200, 20, poll_s=0.1, what="/readyz 200")

    @classmethod
    def tearDownClass(cls):
        cls.w.kill9()
        cls.rs.stop()

    def run_job(self, tag):
        c = segq.Client(self.rs.url, prefix=P)
        id = c.submit(tl.make_jpeg(48, 48), "otsu", id="%s-%d" % (tag, time.monotonic_ns()))
        self.assertEqual(c.wait(id, timeout=30)["status"], "ok")

    def test_1_probes_and_metrics(self):
        for path in ("/livez", "/readyz", "/healthz"):
            self.assertEqual(get(self.port, path), (200, "ok\n"), path)
        self.run_job("m")
        # The client sees the result when the ack script publishes it, a moment before the
        # worker reads the ack's reply and counts the job: wait for the count (bounded).
        ok = 'segq_jobs_total{model="otsu",outcome="ok"} 1\n'
        tl.wait_until(lambda: ok in get(self.port, "/metrics")[1], 30, poll_s=0.1,
                      what="the ok job counted on /metrics")
        code, body = get(self.port, "/metrics")
        self.assertEqual(code, 200)
        self.assertIn('segq_redis_connected{conn="command"} 1', body)
        self.assertIn('segq_batcher_jobs{model="otsu"}', body)
        self.assertEqual(get(self.port, "/nope")[0], 404)
        self.assertEqual(get(self.port, "/healthz", method="HEAD")[0], 200)
        self.assertEqual(get(self.port, "/healthz", method="POST")[0], 405)

    def test_2_bad_requests_are_answered(self):
        for data in (b"GET /healthz\0 HTTP/1.0\r\n\r\n", b"GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET /q?\0x HTTP/1.0\r\n\r\n"):
            out = raw(self.port, data)
            self.assertTrue(out.startswith(b"HTTP/1.1 400"), (data, out[:80]))
        out = raw(self.port, b"GET /healthz\r\n\r\n")  # no version
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:80])
        # A request that never completes is closed after the timeout, not kept forever.
        t0 = time.monotonic()
        out = raw(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", timeout=HTTP_TIMEOUT_S + 10)
        self.assertLess(time.monotonic() - t0, HTTP_TIMEOUT_S + 5)

    def test_3_idle_sockets(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < IDLE_SOCKETS + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is below %d" % (hard, IDLE_SOCKETS + 200))
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_SOCKETS + 1000), hard))
        socks = []
        try:
            for _ in range(IDLE_SOCKETS):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                socks.append(s)
            time.sleep(1.0)
            fds = len(os.listdir("/proc/%d/fd" % self.w.pid))
            print("worker fds with %d idle sockets open: %d" % (IDLE_SOCKETS, fds))
            self.assertLess(fds, 200)
            # Its Redis connections drop; it must be able to open new ones.
            r = self.rs.client()
            r.execute_command("CLIENT", "KILL", "TYPE", "normal")
            self.run_job("idle")
            # And the endpoint still answers (the idle ones time out after HTTP_TIMEOUT_S).
            t0 = time.monotonic()
            code = None
            while time.monotonic() - t0 < HTTP_TIMEOUT_S + 15:
                try:
                    code, _ = get(self.port, "/healthz", timeout=2)
                    break
                except (OSError, http.client.HTTPException):
                    time.sleep(0.2)
            print("/healthz answered %.1fs after the reconnect, idle sockets still open"
                  % (time.monotonic() - t0))
            self.assertEqual(code, 200)
            self.assertTrue(self.w.alive(), self.w.log_tail())
        finally:
            for s in socks:
                s.close()

    def test_4_healthz_fails_while_redis_is_frozen(self):
        self.assertEqual(get(self.port, "/healthz")[0], 200)
        self.rs.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            code, body = tl.wait_until(lambda: (lambda x: x if x[0] == 503 else None)(
                get(self.port, "/healthz")), 20, poll_s=0.2, what="/healthz 503")
            t_bad = time.monotonic() - t0
            print("/healthz 503 %.1fs after SIGSTOP: %s" % (t_bad, body.strip()))
            self.assertTrue("lease lost" in body or "unreachable" in body, body)
            self.assertEqual(get(self.port, "/livez")[0], 200)  # the loop turns
            self.assertEqual(get(self.port, "/readyz")[0], 503)
            # It stays bad while Redis is frozen (reconnecting to a frozen server is no cure: the
            # kernel completes the TCP handshake, the HELLO is never answered).
            codes = []
            t_end = time.monotonic() + 8.0
            while time.monotonic() < t_end:
                codes.append(get(self.port, "/healthz")[0])
                time.sleep(0.2)
            self.assertEqual(set(codes), {503}, codes)
        finally:
            self.rs.proc.send_signal(signal.SIGCONT)
        t1 = time.monotonic()
        tl.wait_until(lambda: get(self.port, "/healthz")[0] == 200, 30, poll_s=0.2,
                      what="/healthz 200 after SIGCONT")
        print("/healthz 200 again %.1fs after SIGCONT" % (time.monotonic() - t1))
        self.run_job("frozen")


if __name__ == "__main__":
    tl.run_tests()
