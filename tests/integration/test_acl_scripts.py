#!/usr/bin/python3
"""Scripts that fail half-way (issue 8 item 3), against a real redis-server with the ACL an
operator would write: `+@all ~segq:*` and no channel rights (Redis 7 gives a new user none). Redis
does not roll back a script that errors, and PUBLISH is the call that fails here: every script
must fail before its first write. Checked: a failed enqueue leaves nothing behind and the same id
can be submitted again once the user may publish; a failed sweep re-pushes nothing (no duplicate
ids in the queue) and a later sweep requeues each job once; a failed ack leaves the job running,
so the worker's retry writes its one result."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

import redis  # noqa: E402
import segq  # noqa: E402
from segq import fakeworker  # noqa: E402

P = "segq"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


class AclScripts(unittest.TestCase):
    def setUp(self):
        self.rs = self.enterContext(tl.RedisServer())
        self.admin = self.rs.client()
        self.admin.execute_command("ACL", "SETUSER", "op", "on", ">op-secret", "+@all", "~segq:*")
        self.url = "redis://op:op-secret@127.0.0.1:%d" % self.rs.port

    def keys(self):
        return sorted(k.decode() for k in self.admin.scan_iter(match="segq:*", count=1000))

    def grant_channels(self):
        self.admin.execute_command("ACL", "SETUSER", "op", "&*")

    def test_enqueue_fails_before_writing_and_can_be_retried(self):
        c = segq.Client(self.url, prefix=P)
        with self.assertRaises(redis.ResponseError) as e:
            c.submit(JPEG, "otsu", id="acl-1")
        self.assertIn("can't publish to the channel", str(e.exception))
        self.assertEqual(self.keys(), [], "a failed enqueue writes nothing")
        with self.assertRaises(redis.ResponseError):
            c.submit_many([JPEG] * 3, "otsu", group="acl-g", ids=["acl-2", "acl-3", "acl-4"])
        self.assertEqual(self.keys(), [])
        self.grant_channels()
        c.submit(JPEG, "otsu", id="acl-1")
        self.assertEqual(c.last_enqueue, {"acl-1": segq.ENQUEUE_QUEUED}, "the same id, not 'already pending'")
        self.assertEqual(c.status("acl-1")["state"], "queued")

    def test_sweep_fails_before_writing_and_duplicates_nothing(self):
        # Jobs queued and claimed by a worker that then dies, all while the user may publish.
        self.grant_channels()
        c = segq.Client(self.url, prefix=P)
        ids = ["sw-%d" % i for i in range(5)]
        for i in ids:
            c.submit(JPEG, "otsu", id=i)
        ghost = fakeworker.FakeWorker(self.url, prefix=P, name="ghost", models=("otsu",))
        self.assertEqual(len(ghost.claim(10)), 5)
        self.admin.delete("segq:worker:ghost")  # its lease runs out
        # Now the channel rights are gone: the sweeper's requeue must fail cleanly.
        self.admin.execute_command("ACL", "SETUSER", "op", "resetchannels")
        sweep = c.r.register_script(tl.load_script("sweep"))
        before = {k: self.admin.dump(k) for k in self.keys()}
        for _ in range(3):
            with self.assertRaises(redis.ResponseError) as e:
                sweep(keys=[], args=[P, "sweeper", 1000, 3, tl.now_ms(), 3600, 86400])
            self.assertIn("can't publish to the channel", str(e.exception))
            self.admin.delete("segq:sweeper")
        after = {k: self.admin.dump(k) for k in self.keys()}
        self.assertEqual(after, before, "a failed sweep changes nothing (not even its lock)")
        self.assertEqual(tl.queued_count(self.admin, P), 0)
        self.grant_channels()
        self.assertEqual(sweep(keys=[], args=[P, "sweeper", 1000, 3, tl.now_ms(), 3600, 86400]), 5)
        queued = self.admin.lrange("segq:q:otsu:default", 0, -1)
        self.assertEqual(sorted(x.decode() for x in queued), ids, "each job once")

    def test_ack_fails_before_writing(self):
        self.grant_channels()
        c = segq.Client(self.url, prefix=P)
        c.submit(JPEG, "otsu", id="ack-1")
        w = fakeworker.FakeWorker(self.url, prefix=P, name="w1", models=("otsu",))
        jobs = w.claim(1)
        self.admin.execute_command("ACL", "SETUSER", "op", "resetchannels")
        with self.assertRaises(redis.ResponseError):
            w.ack(jobs)
        self.assertEqual(c.status("ack-1")["state"], "running", "the job is still ours")
        self.assertEqual(self.admin.lrange("segq:inflight:w1", 0, -1), [b"ack-1"])
        self.grant_channels()
        self.assertEqual(w.ack(jobs), [1])
        self.assertEqual(c.result("ack-1")["status"], "ok")
        self.assertEqual(tl.stats(self.admin, P)["done"], 1)


if __name__ == "__main__":
    tl.run_tests()
