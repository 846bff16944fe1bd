#!/usr/bin/python3
"""Redis users, permissions and secrets (issue 8 items 2, 3 and 7), against a real redis-server
with ACL users and real worker processes:

- an ACL user in the URL logs in as that user (HELLO AUTH user pass), not as `default`;
- a refused password makes the worker exit at start with a clear message (no reconnect loop);
  after a good start, a refused password on reconnect is logged and retried with backoff;
- the operator's ACL `+@all ~segq:*` (no channel rights) makes the worker refuse at start,
  naming PUBLISH and the channels; the Python client and `segq` refuse the same way;
- the password never shows: not in URL errors, not in the start log, not in /proc/<pid>/cmdline
  (SEGQ_REDIS_PASSWORD, --redis-password-file, and a masked --redis-url); `--redis-password`
  is refused as a flag."""
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402
from segq import connection  # noqa: E402

P = "ta"
ADMIN_PW = "admin-Secret-1"
ALICE_PW = "alice-Secret-2"
OP_PW = "op-Secret-3"


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\0", b" ").decode("utf-8", "replace")


class RedisUsers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        r = cls.rs.client()
        # alice may do everything segq needs under P:*; `default` has another password.
        r.execute_command("ACL", "SETUSER", "alice", "on", ">" + ALICE_PW, "~%s:*" % P,
                          "&%s:*" % P, "+@all")
        # The operator's first try from the issue: keys but no channel rights.
        r.execute_command("ACL", "SETUSER", "op", "on", ">" + OP_PW, "~%s:*" % P, "+@all")
        r.execute_command("ACL", "SETUSER", "default", "on", ">" + ADMIN_PW)
        cls.admin = cls.rs.client(password=ADMIN_PW)
        cls.base = "redis://127.0.0.1:%d" % cls.rs.port

    @classmethod
    def tearDownClass(cls):
        cls.rs.stop()

    def url(self, user, pw=None):
        return "redis://%s%s@127.0.0.1:%d" % (user, ":" + pw if pw else "", self.rs.port)

    def run_one_job(self, c, tag):
        id = c.submit(tl.make_jpeg(64, 64), "otsu", id="%s-%d" % (tag, time.monotonic_ns()))
        res = c.wait(id, timeout=30)
        self.assertEqual(res["status"], "ok", res)

    def test_acl_user_logs_in_as_itself(self):
        with tl.Worker(self.url("alice", ALICE_PW), prefix=P, worker_id="ta-alice") as w:
            w.wait_ready(self.admin)
            c = segq.Client(self.url("alice", ALICE_PW), prefix=P)
            self.run_one_job(c, "acl")
            clients = self.admin.execute_command("CLIENT", "LIST")
            if isinstance(clients, bytes):
                clients = clients.decode()
            self.assertIn("user=alice", str(clients))
            self.assertNotIn("WRONGPASS", w.log())

    def test_narrow_acl_from_the_docs_works(self):
        # docs/operations.md "Redis users": the narrower category list instead of +@all.
        cats = ["+@read", "+@write", "+@scripting", "+@connection", "+@pubsub", "+@keyspace",
                "+@list", "+@hash", "+@set", "+@sortedset", "+@stream", "+@string", "+info",
                "+time"]
        self.admin.execute_command("ACL", "SETUSER", "narrow", "on", ">" + ALICE_PW, "~%s:*" % P,
                                   "&%s:*" % P, *cats)
        with tl.Worker(self.url("narrow", ALICE_PW), prefix=P, worker_id="ta-narrow") as w:
            w.wait_ready(self.admin)
            self.run_one_job(segq.Client(self.url("narrow", ALICE_PW), prefix=P), "narrow")

    def test_refused_password_is_fatal_at_start(self):
        t0 = time.monotonic()
        w = tl.Worker(self.url("alice", "not-the-password"), prefix=P, worker_id="ta-bad")
        with w:
            rc = w.wait(20)
        log = w.log()
        print("refused worker exited %s after %.1fs" % (rc, time.monotonic() - t0))
        self.assertNotEqual(rc, 0, log)
        self.assertIn("WRONGPASS", log)
        self.assertIn("alice", log)
        self.assertNotIn("not-the-password", log)
        self.assertLessEqual(len(re.findall(r'msg="connect', log)), 4, log)

    def test_wrongpass_after_start_retries_with_backoff(self):
        self.admin.execute_command("ACL", "SETUSER", "alice2", "on", ">" + ALICE_PW, "~%s:*" % P,
                                   "&%s:*" % P, "+@all")
        with tl.Worker(self.url("alice2", ALICE_PW), prefix=P, worker_id="ta-later",
                       lease_ttl_ms=6000) as w:
            w.wait_ready(self.admin)
            # Rotate the password and drop the worker's connections: its logins now fail.
            self.admin.execute_command("ACL", "SETUSER", "alice2", "resetpass", ">rotated")
            self.admin.execute_command("CLIENT", "KILL", "USER", "alice2")
            time.sleep(4.0)
            self.assertTrue(w.alive(), "a refused login after a good start must not stop it:\n"
                            + w.log_tail())
            log = w.log()
            refusals = len(re.findall(r"refused the connection handshake", log))
            print("refused logins in 4 s: %d (three connections, backoff to 1 s)" % refusals)
            self.assertGreaterEqual(refusals, 3, log)
            self.assertLessEqual(refusals, 24, log)  # ~10/s each before: a tight loop
            self.assertIn("WRONGPASS", log)
            # The old password comes back: the worker recovers by itself.
            self.admin.execute_command("ACL", "SETUSER", "alice2", ">" + ALICE_PW)
            c = segq.Client(self.url("alice2", ALICE_PW), prefix=P)
            self.run_one_job(c, "later")

    def test_no_channel_rights_refused_at_start(self):
        with tl.Worker(self.url("op", OP_PW), prefix=P, worker_id="ta-op") as w:
            rc = w.wait(20)
        log = w.log()
        self.assertNotEqual(rc, 0, log)
        self.assertIn("PUBLISH", log)
        self.assertIn("channels %s:ev:*" % P, log)
        self.assertIn("op", log)
        self.assertFalse(self.admin.exists("%s:worker:ta-op" % P), "it must not register")
        # The probe cleaned up after itself.
        self.assertEqual(list(self.admin.scan_iter(match="%s:permcheck:*" % P)), [])
        # The client refuses the same way before queuing anything.
        c = segq.Client(self.url("op", OP_PW), prefix=P)
        with self.assertRaises(PermissionError) as cm:
            c.submit(tl.make_jpeg(32, 32), "otsu", id="op-job")
        self.assertIn("PUBLISH", str(cm.exception))
        self.assertFalse(self.admin.exists(tl.job_key(P, "op-job")), "nothing half-written")
        # So does the command line (exit 3, the reason on stderr).
        cli = subprocess.run([sys.executable, "-m", "segq.cli", "--url", self.url("op", OP_PW),
                              "--prefix", P, "stats"], capture_output=True, text=True,
                             timeout=60, env=self.cli_env())
        self.assertEqual(cli.returncode, 3, cli.stderr)
        self.assertIn("PUBLISH", cli.stderr)
        self.assertNotIn(OP_PW, cli.stderr)

    def cli_env(self, **extra):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(tl.SOURCE_DIR, "clients", "python")
        for k in list(env):
            if k.startswith("SEGQ_REDIS"):
                del env[k]
        env.update(extra)
        return env

    # -- secrets ------------------------------------------------------------------------------

    def test_url_errors_never_echo_the_password(self):
        w = tl.Worker("redis://alice:Hush-42@127.0.0.1:99999", prefix=P, worker_id="ta-url")
        with w:
            rc = w.wait(20)
        self.assertEqual(rc, 2)
        self.assertIn("bad port", w.log())
        self.assertIn("***", w.log())
        self.assertNotIn("Hush-42", w.log())
        with self.assertRaises(connection.URLError) as cm:
            segq.Client("redis://alice:Hush-42@127.0.0.1:99999")
        self.assertNotIn("Hush-42", str(cm.exception))
        cli = subprocess.run([sys.executable, "-m", "segq.cli", "--url",
                              "redis://alice:Hush-42@127.0.0.1:1", "stats"], capture_output=True,
                             text=True, timeout=60, env=self.cli_env())
        self.assertEqual(cli.returncode, 3, cli.stderr)
        self.assertNotIn("Hush-42", cli.stderr)
        self.assertIn("***", cli.stderr)

    def test_password_from_environment_and_file(self):
        pwfile = os.path.join(tl.tempdir(), "redis.pw")
        with open(pwfile, "w") as f:
            f.write(ALICE_PW + "\n")
        cases = [("env", [], {"SEGQ_REDIS_PASSWORD": ALICE_PW}),
                 ("file", ["--redis-password-file", pwfile], {}),
                 ("file", [], {"SEGQ_REDIS_PASSWORD_FILE": pwfile, "SEGQ_REDIS_PASSWORD": "x"})]
        for i, (source, args, env) in enumerate(cases):
            with tl.Worker(self.url("alice"), prefix=P, worker_id="ta-pw%d" % i, args=args,
                           env=env) as w:
                w.wait_ready(self.admin)
                self.assertNotIn(ALICE_PW, cmdline(w.pid))
                self.assertIn("auth=%s" % source, w.log())
                self.assertNotIn(ALICE_PW, w.log())
        # The client and the command line read the same variables.
        os.environ["SEGQ_REDIS_PASSWORD"] = ALICE_PW
        try:
            c = segq.Client(self.url("alice"), prefix=P)
            self.assertTrue(c.ping())
        finally:
            del os.environ["SEGQ_REDIS_PASSWORD"]
        c = segq.Client(self.url("alice"), prefix=P, password_file=pwfile)
        self.assertTrue(c.ping())
        cli = subprocess.run([sys.executable, "-m", "segq.cli", "--url", self.url("alice"),
                              "--prefix", P, "stats", "--json"], capture_output=True, text=True,
                             timeout=60, env=self.cli_env(SEGQ_REDIS_PASSWORD_FILE=pwfile))
        self.assertEqual(cli.returncode, 0, cli.stderr)

    def test_password_in_url_is_masked_in_the_process_list(self):
        with tl.Worker(self.url("alice", ALICE_PW), prefix=P, worker_id="ta-argv") as w:
            w.wait_ready(self.admin)
            self.assertNotIn(ALICE_PW, cmdline(w.pid))
            self.assertIn("alice:" + "*" * len(ALICE_PW) + "@", cmdline(w.pid))
            self.assertIn("SEGQ_REDIS_PASSWORD", w.log())  # the warning says what to use
            self.assertNotIn(ALICE_PW, w.log())

    def test_password_flag_is_refused(self):
        w = tl.Worker(self.url("alice"), prefix=P, worker_id="ta-flag",
                      args=["--redis-password", ALICE_PW])
        with w:
            rc = w.wait(20)
        self.assertEqual(rc, 2)
        self.assertIn("SEGQ_REDIS_PASSWORD", w.log())


if __name__ == "__main__":
    tl.run_tests()
