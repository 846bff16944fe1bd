#!/usr/bin/python3
"""segq.tokens (the Python side of segq-bridge's channel tokens): the known vector shared with
tests/unit/test_bridge_config.c (and `openssl dgst -sha256 -hmac`), every refusal code, channel
name checks, secrets too short."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib  # noqa: E402  (puts clients/python on the path)
from segq import tokens  # noqa: E402

SECRET = "0123456789abcdef"
VECTOR = "v1.1700000000.YWfpqrCRqr0NHBTBRtyw57zpqhiAdx-bMr73cA1jZs0"


class Tokens(unittest.TestCase):
    def test_known_vector(self):
        self.assertEqual(tokens.mint(SECRET, "group:upload-42", ttl=1700000000, now=0), VECTOR)
        self.assertEqual(tokens.mint(SECRET.encode(), "group:upload-42", ttl=100, now=1699999900),
                         VECTOR)
        self.assertTrue(tokens.check(SECRET, "group:upload-42", VECTOR, now=1600000000))

    def refused(self, code, *args, **kw):
        with self.assertRaises(tokens.TokenError) as cm:
            tokens.check(*args, **kw)
        self.assertEqual(cm.exception.code, code)

    def test_refusals(self):
        self.refused("token_expired", SECRET, "group:upload-42", VECTOR, now=1700000000)
        self.refused("token_invalid", SECRET, "group:upload-43", VECTOR, now=1)
        self.refused("token_invalid", "0123456789abcdeX", "group:upload-42", VECTOR, now=1)
        self.refused("token_invalid", SECRET, "group:upload-42",
                     "v1.1800000000." + VECTOR.split(".")[2], now=1)
        self.refused("token_missing", SECRET, "group:upload-42", "", now=1)
        self.refused("token_missing", SECRET, "group:upload-42", None, now=1)
        self.refused("token_malformed", SECRET, "group:upload-42", "Bearer x", now=1)

    def test_channels_and_secrets(self):
        self.assertEqual(tokens.job_channel("a.b:c-d_1"), "job:a.b:c-d_1")
        self.assertEqual(tokens.group_channel("g"), "group:g")
        for bad in ("", "a b", "x" * 129, "é"):
            with self.assertRaises(tokens.TokenError):
                tokens.group_channel(bad)
        with self.assertRaises(tokens.TokenError):
            tokens.mint(SECRET, "segq:gev:g")
        with self.assertRaises(ValueError):
            tokens.mint("short", "job:a")
        t = tokens.mint(SECRET, "job:a", ttl=60)
        self.assertTrue(tokens.check(SECRET, "job:a", t))


if __name__ == "__main__":
    segq_testlib.run_tests()
