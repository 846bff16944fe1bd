#!/usr/bin/python3
"""docs/bridge.md's option table is exactly what `segq-bridge --help-markdown` prints (the one
option table in bridge/bridge.h), and every close and refusal code the bridge sends is
documented there. Skipped (77) when the bridge is not built."""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

DOC = os.path.join(tl.SOURCE_DIR, "docs", "bridge.md")


class Docs(unittest.TestCase):
    def setUp(self):
        self.binary = tl.bridge_binary()
        if not self.binary:
            self.skipTest("segq-bridge is not built")
        with open(DOC) as f:
            self.doc = f.read()

    def test_options_table_is_generated(self):
        table = subprocess.run([self.binary, "--help-markdown"], check=True, capture_output=True,
                               text=True, timeout=30).stdout.strip()
        m = re.search(r"<!-- options:begin -->\n(.*?)\n<!-- options:end -->", self.doc, re.S)
        self.assertIsNotNone(m, "docs/bridge.md has no options block")
        self.assertEqual(m.group(1).strip(), table,
                         "docs/bridge.md's table differs from segq-bridge --help-markdown")

    def test_codes_documented(self):
        with open(os.path.join(tl.SOURCE_DIR, "bridge", "server.c")) as f:
            server = f.read()
        for code in re.findall(r"CLOSE_[A-Z_]+ = (\d+)", server):
            self.assertIn("| %s |" % code, self.doc, "close code %s not in docs/bridge.md" % code)
        for name in ("token_missing", "token_malformed", "token_invalid", "token_expired",
                     "channel_invalid", "already_subscribed", "too_many_subscriptions",
                     "bad_request", "history_trimmed", "epoch_changed", "offset_ahead"):
            self.assertIn("`%s`" % name, self.doc, name)


if __name__ == "__main__":
    tl.run_tests()
