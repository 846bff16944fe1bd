#!/usr/bin/python3
"""--log-format json (issue 12 item 5) next to the default logfmt, on a real worker's stderr: in
json every line is one JSON object with ts, level, comp, msg, the worker's id and every field
of the record as a string; a message with quotes in it (a job's error naming a bad value) comes
out intact in both formats; SEGQ_LOG_FORMAT works like the flag; an unknown format is a
command-line error (exit 2)."""
import json
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()

P = "logf"
BAD_OUTPUT = 'params.outputs[1]: unknown output "edges"'


def logfmt(line):
    """{key: value} of one logfmt line (quoted values unescaped); raises on a malformed one."""
    out, pos = {}, 0
    rx = re.compile(r'\s*([A-Za-z0-9_.:-]+)=("((?:[^"\\]|\\.)*)"|[^\s"]*)(?=\s|$)')
    while pos < len(line):
        m = rx.match(line, pos)
        if not m:
            raise ValueError("not logfmt at %d: %r" % (pos, line[pos:pos + 40]))
        out[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(3)) if m.group(3) is not None else m.group(2)
        pos = m.end()
    return out


class LogFormat(unittest.TestCase):
    def run_worker(self, fmt_args, env=None):
        """A worker that runs one good and one bad job, then drains; returns its log lines."""
        with tl.RedisServer() as rs:
            r = rs.client()
            w = tl.Worker(rs.url, prefix=P, models="otsu", args=fmt_args, env=env)
            w.wait_ready(r, timeout=60)
            tl.enqueue_raw(r, P, "good", "otsu", tl.pack(tl.job_doc("good", "otsu", tl.make_jpeg())))
            bad = tl.job_doc("bad", "otsu", tl.make_jpeg(), params={"outputs": ["polygons", "edges"]})
            tl.enqueue_raw(r, P, "bad", "otsu", tl.pack(bad))
            res = tl.wait_for_results(r, P, ["good", "bad"], timeout=60)
            self.assertEqual(res["bad"]["error"]["code"], "invalid_field_value")
            w.sigterm()
            self.assertEqual(w.wait(30), 0)
            return [l for l in w.log().splitlines() if l.strip()]

    def test_json(self):
        lines = self.run_worker(["--log-format", "json"])
        recs = []
        for l in lines:
            try:
                recs.append(json.loads(l))
            except ValueError as e:
                self.fail("not JSON (%s): %r" % (e, l))
        for rec in recs:
            self.assertIsInstance(rec, dict)
            for k in ("ts", "level", "comp", "msg", "worker"):
                self.assertIn(k, rec, rec)
            self.assertRegex(rec["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(rec["level"], ("debug", "info", "warn", "error"))
            for k, v in rec.items():
                self.assertIsInstance(v, str, "%s is not a string in %r" % (k, rec))
        by_msg = {r["msg"]: r for r in recs}
        self.assertEqual(by_msg["start"]["log_format"], "json")
        self.assertIn("version", by_msg["start"])
        failed = by_msg["job failed"]
        self.assertEqual((failed["id"], failed["code"]), ("bad", "invalid_field_value"))
        self.assertIn(BAD_OUTPUT, failed["error"])
        self.assertIn("drained", by_msg)

    def test_logfmt_default_escapes_quotes(self):
        lines = self.run_worker([])
        recs = [logfmt(l) for l in lines]  # every line parses
        failed = [r for r in recs if r.get("msg") == "job failed"]
        self.assertEqual(len(failed), 1, lines)
        self.assertIn(BAD_OUTPUT, failed[0]["error"])  # escaped on the line, whole when parsed

    def test_environment_and_bad_value(self):
        lines = self.run_worker([], env={"SEGQ_LOG_FORMAT": "json"})
        self.assertTrue(all(l.startswith("{") for l in lines), lines[:3])
        p = subprocess.run([tl.worker_binary(), "--log-format", "xml"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn('log-format: "xml" is not logfmt or json', p.stderr)


if __name__ == "__main__":
    tl.run_tests()
