#!/usr/bin/python3
"""docs/operations.md's options table is the worker's own (`segq-worker --help-markdown`), row
for row: the docs are generated from the option table, and this test fails when they drift."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

if tl.worker_binary() is None:
    tl.skip("segq-worker binary not found")


class DocsOptions(unittest.TestCase):
    def test_operations_table_is_generated(self):
        table = subprocess.run([tl.worker_binary(), "--help-markdown"], capture_output=True,
                               text=True, timeout=30, check=True).stdout.strip()
        with open(os.path.join(tl.SOURCE_DIR, "docs", "operations.md")) as f:
            doc = f.read()
        self.assertIn(table, doc, "docs/operations.md differs from `segq-worker --help-markdown`: "
                      "run /usr/bin/python3 tools/update_docs.py")


if __name__ == "__main__":
    tl.run_tests()
