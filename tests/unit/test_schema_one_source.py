#!/usr/bin/python3
"""One source for names (issue 8 "Structure"): the default Redis URL and key prefix, the job and
group channel parts and the error names come from queue/scripts/schema.def (and common/common.h's
SQ_ERRORS) only. Checks that the Python client's values are schema.def's, that the files which
used to re-spell them (bridge/bridge.h, worker/config.h, clients/python/segq/connection.py,
queue/scripts/permcheck.lua, queue/queue.c, clients/python/segq/proto.py) no longer do, and that
the worker's and the bridge's --help print schema.def's defaults (when built). No Redis."""
import os
import re
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BUILD = os.environ.get("SEGQ_BUILD_DIR", "")
sys.path.insert(0, os.path.join(SRC, "clients", "python"))

try:
    from segq import client, connection, proto, schema
except ImportError as e:  # pragma: no cover
    print("skip: needs python3-msgpack and python3-redis:", e)
    sys.exit(77)


def read(rel):
    with open(os.path.join(SRC, rel)) as f:
        return f.read()


class OneSource(unittest.TestCase):
    def test_python_values_are_schema_def(self):
        url, prefix = schema.DEFAULT["REDIS_URL"], schema.DEFAULT["PREFIX"]
        self.assertRegex(url, r"^redis://[0-9.]+:[0-9]+$")
        self.assertEqual(connection.DEFAULT_URL, url)
        self.assertEqual(client.DEFAULT_URL, url)
        self.assertEqual(client.DEFAULT_PREFIX, prefix)
        self.assertEqual(schema.ERR.wrong_field_type, "wrong_field_type")
        with self.assertRaises(AttributeError):
            schema.ERR.wrong_field_typo  # noqa: B018 (a misspelt name is an error)
        with self.assertRaises(proto.ProtocolError) as e:
            proto.encode_job("x", "m", b"\xff\xd8", fmt="bmp")
        self.assertIn(e.exception.code, schema.ERRORS)

    def test_nobody_re_spells_them(self):
        url, prefix = schema.DEFAULT["REDIS_URL"], schema.DEFAULT["PREFIX"]
        for rel in ("bridge/bridge.h", "worker/config.h", "clients/python/segq/connection.py",
                    "clients/python/segq/client.py", "clients/python/segq/fakeworker.py"):
            text = read(rel)
            self.assertNotIn('"%s"' % url, text, rel)
            self.assertNotIn('"%s"' % prefix, text.replace('prog="%s"' % prefix, ""), rel)
        channels = (schema.KEY["JOB_CHANNEL"], schema.KEY["GROUP_CHANNEL"])
        for rel in ("queue/scripts/permcheck.lua", "queue/queue.c", "clients/python/segq/connection.py"):
            code = "\n".join(l for l in read(rel).splitlines()
                             if not l.lstrip().startswith(("--", "/*", "*", "#")))
            for ch in channels:
                self.assertNotIn(":%s:" % ch, code, "%s spells the %s channel" % (rel, ch))
        literal = re.findall(r'ProtocolError\("([a-z_]+)"', read("clients/python/segq/proto.py"))
        self.assertEqual(literal, [], "proto.py spells error names: use schema.ERR")

    def test_help_prints_schema_defaults(self):
        progs = [os.path.join(BUILD, "worker", "segq-worker"), os.path.join(BUILD, "bridge", "segq-bridge")]
        progs = [p for p in progs if BUILD and os.access(p, os.X_OK)]
        if not progs:
            self.skipTest("no build dir with segq-worker / segq-bridge (set SEGQ_BUILD_DIR)")
        for p in progs:
            out = subprocess.run([p, "--help"], capture_output=True, text=True, timeout=60,
                                 env={"PATH": os.environ.get("PATH", "")})
            text = out.stdout + out.stderr
            self.assertIn(schema.DEFAULT["REDIS_URL"], text, p)
            self.assertIn(schema.DEFAULT["PREFIX"], text, p)


if __name__ == "__main__":
    unittest.main(verbosity=2)
