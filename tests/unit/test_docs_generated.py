#!/usr/bin/python3
"""Generated docs are not stale: the option table in docs/operations.md is exactly what
`segq-worker --help-markdown` prints (tools/update_docs.py --check), so an option added to
worker/config.h without regenerating the docs fails here with the command to run."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

binary = tl.worker_binary()
if binary is None:
    tl.skip("segq-worker binary not found")
p = subprocess.run([sys.executable, os.path.join(tl.SOURCE_DIR, "tools", "update_docs.py"), "--check",
                    "--worker", binary], capture_output=True, text=True, timeout=60)
print(p.stdout + p.stderr)
print("1 passed" if p.returncode == 0 else "1 failed")
sys.exit(0 if p.returncode == 0 else 1)
