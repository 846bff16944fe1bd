#!/usr/bin/python3
"""TLS (issue 8 item 8): hiredis 0.14 has no TLS, so the worker refuses rediss:// with a message
pointing to the documented path, a local stunnel client in front of a TLS-only redis-server
(Debian's is built with --tls-port). Here, as docs/operations.md "TLS" describes: certificates
from the openssl command line, redis-server with TLS only, stunnel verifying it, the worker and
the Python client through stunnel; the Python client also speaks rediss:// natively."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "tt"


class RedisTls(unittest.TestCase):
    def test_rediss_is_refused_with_a_pointer(self):
        w = tl.Worker("rediss://u:pw@127.0.0.1:6380", prefix=P, worker_id="tt-refused")
        with w:
            rc = w.wait(20)
        self.assertEqual(rc, 2)
        self.assertIn("stunnel", w.log())
        self.assertIn("docs/operations.md", w.log())
        self.assertNotIn(":pw@", w.log())

    def test_worker_and_client_through_stunnel(self):
        certs = tl.TlsCerts()
        with tl.RedisServer(tls=certs) as rs, tl.Stunnel(rs.port, certs.ca) as tun:
            r = rs.client()  # TLS, verified
            self.assertTrue(r.ping())
            with tl.Worker(tun.url, prefix=P, worker_id="tt-w1") as w:
                w.wait_ready(r)
                c = segq.Client(tun.url, prefix=P)
                ids = [c.submit(tl.make_jpeg(64, 64), "otsu", id="tt-%d" % i) for i in range(20)]
                res = c.wait_many(ids, timeout=60)
                self.assertEqual({x["status"] for x in res.values()}, {"ok"})
                # The Python client natively, verifying the server with the CA.
                os.environ["SEGQ_REDIS_CA_FILE"] = certs.ca
                try:
                    n = segq.Client(rs.url, prefix=P)
                    id = n.submit(tl.make_jpeg(64, 64), "otsu", id="tt-native")
                    self.assertEqual(n.wait(id, timeout=30)["status"], "ok")
                finally:
                    del os.environ["SEGQ_REDIS_CA_FILE"]
                print("through stunnel: %d jobs ok; native rediss:// ok" % len(ids))
                w.sigterm()
                self.assertEqual(w.wait(30), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
