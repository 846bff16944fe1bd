#!/usr/bin/python3
"""segq.connection: every case of tests/data/redis_urls.tsv (shared with the C parser's test,
so the worker and the client accept and refuse the same URLs), masking, the password sources
(argument > file > SEGQ_REDIS_PASSWORD > URL). No Redis needed."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402
from segq import connection  # noqa: E402


def describe(p):
    return "sentinel=%d nodes=%s master=%s user=%s password=%s db=%d" % (
        p["scheme"] == "sentinel", ",".join("%s:%d" % n for n in p["nodes"]), p["master"] or "-",
        p["user"] or "-", p["password"] or "-", p["db"])


class Connection(unittest.TestCase):
    def test_shared_table(self):
        path = os.path.join(tl.SOURCE_DIR, "tests", "data", "redis_urls.tsv")
        n = 0
        with open(path) as f:
            for line in f:
                if line.startswith("#") or line == "\n":
                    continue
                url, want_c, want_py = line.rstrip("\n").split("\t")
                want = want_c if want_py == "=" else want_py
                with self.subTest(url=url):
                    if want.startswith("error: "):
                        with self.assertRaises(connection.URLError) as cm:
                            connection.parse_url(url)
                        self.assertIn(want[7:], str(cm.exception))
                        self.assertNotIn(":pw@", str(cm.exception))
                    else:
                        self.assertEqual(describe(connection.parse_url(url)), want)
                n += 1
        self.assertGreaterEqual(n, 20)

    def test_mask(self):
        self.assertEqual(connection.mask_url("redis://alice:s3cret@h:1/2"), "redis://alice:***@h:1/2")
        self.assertEqual(connection.mask_url("redis://:s3@cret@h"), "redis://:***@h")
        self.assertEqual(connection.mask_url("redis://alice@h"), "redis://alice@h")

    def test_password_sources(self):
        p = connection.parse_url("redis://alice:fromurl@h")
        for k in ("SEGQ_REDIS_PASSWORD", "SEGQ_REDIS_PASSWORD_FILE"):
            os.environ.pop(k, None)
        self.assertEqual(connection.resolve_password(p), ("fromurl", "url"))
        os.environ["SEGQ_REDIS_PASSWORD"] = "fromenv"
        self.assertEqual(connection.resolve_password(p), ("fromenv", "env"))
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("fromfile\n")
        try:
            os.environ["SEGQ_REDIS_PASSWORD_FILE"] = f.name
            self.assertEqual(connection.resolve_password(p), ("fromfile", "file"))
            self.assertEqual(connection.resolve_password(p, password="arg"), ("arg", "argument"))
            os.environ["SEGQ_REDIS_PASSWORD_FILE"] = f.name + ".missing"
            with self.assertRaises(connection.URLError) as cm:
                connection.resolve_password(p)
            self.assertIn(".missing", str(cm.exception))
        finally:
            os.unlink(f.name)
            os.environ.pop("SEGQ_REDIS_PASSWORD", None)
            os.environ.pop("SEGQ_REDIS_PASSWORD_FILE", None)


if __name__ == "__main__":
    tl.run_tests()
