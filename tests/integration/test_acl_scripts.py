#!/usr/bin/python3
"""Scripts that fail half-way (issue 8 item 3), against a real redis-server with the ACL an
operator would write: `+@all ~segq:*` and no channel rights (Redis 7 gives a new user none). Redis
does not roll back a script that errors, and PUBLISH is the call that fails here (for watched jobs
and for groups, whose channels publish): every script must fail before its first write. Checked:
a failed enqueue leaves nothing behind and the same id can be submitted again once the user may
publish; a failed sweep re-pushes nothing (no duplicate ids in the queue) and a later sweep
requeues each job once; a failed ack leaves the job running, so the worker's retry writes its one
result. (Unwatched jobs outside groups publish nothing and need no channel rights at all.)
AclScriptsRefuseFirst: the same for claim, cancel, release, progress and dead requeue, and for an
account lacking one command the script writes with (the prelude's ACL check refuses first)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

import redis  # noqa: E402
import segq  # noqa: E402
from segq import fakeworker, schema  # noqa: E402

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
        # check_access=False: the client's start-up check would refuse first (PermissionError,
        # tests/integration/test_redis_auth.py); here the scripts themselves are under test.
        c = segq.Client(self.url, prefix=P, check_access=False)
        with self.assertRaises(redis.ResponseError) as e:
            c.submit(JPEG, "otsu", id="acl-1", watch=True)
        self.assertIn("can't publish to the channel", str(e.exception))
        self.assertEqual(self.keys(), [], "a failed enqueue writes nothing")
        with self.assertRaises(redis.ResponseError):
            c.submit_many([JPEG] * 3, "otsu", group="acl-g", ids=["acl-2", "acl-3", "acl-4"])
        self.assertEqual(self.keys(), [])
        # Nothing to publish: an unwatched job outside a group is queued without channel rights.
        c.submit(JPEG, "otsu", id="acl-0")
        self.assertEqual(c.last_enqueue, {"acl-0": segq.ENQUEUE_QUEUED})
        self.grant_channels()
        c.submit(JPEG, "otsu", id="acl-1", watch=True)
        self.assertEqual(c.last_enqueue, {"acl-1": segq.ENQUEUE_QUEUED}, "the same id, not 'already pending'")
        self.assertEqual(c.status("acl-1")["state"], "queued")

    def test_sweep_fails_before_writing_and_duplicates_nothing(self):
        # Jobs queued and claimed by a worker that then dies, all while the user may publish.
        self.grant_channels()
        c = segq.Client(self.url, prefix=P)
        ids = ["sw-%d" % i for i in range(5)]
        for i in ids:
            c.submit(JPEG, "otsu", id=i, watch=True)
        ghost = fakeworker.FakeWorker(self.url, prefix=P, name="ghost", models=("otsu",))
        self.assertEqual(len(ghost.claim(10)), 5)
        self.admin.delete("segq:worker:ghost")  # its lease runs out
        # Now the channel rights are gone: the sweeper's requeue must fail cleanly.
        self.admin.execute_command("ACL", "SETUSER", "op", "resetchannels")
        sweep = c.r.register_script(tl.load_script("sweep"))
        before = tl.keyspace(self.admin, P)
        for _ in range(3):
            with self.assertRaises(redis.ResponseError) as e:
                sweep(keys=[], args=[P, "sweeper", 1000, 3, tl.now_ms(), 3600, 86400])
            self.assertIn("can't publish to the channel", str(e.exception))
            self.admin.delete("segq:sweeper")
        after = tl.keyspace(self.admin, P)
        self.assertEqual(after, before, "a failed sweep changes nothing (not even its lock)")
        self.assertEqual(tl.queued_count(self.admin, P), 0)
        self.grant_channels()
        self.assertEqual(sweep(keys=[], args=[P, "sweeper", 1000, 3, tl.now_ms(), 3600, 86400]), 5)
        queued = self.admin.lrange("segq:q:otsu:default", 0, -1)
        self.assertEqual(sorted(x.decode() for x in queued), ids, "each job once")

    def test_ack_fails_before_writing(self):
        self.grant_channels()
        c = segq.Client(self.url, prefix=P)
        c.submit(JPEG, "otsu", id="ack-1", watch=True)
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


class AclScriptsRefuseFirst(unittest.TestCase):
    """claim, cancel, release, progress and dead requeue under an account that lacks a channel
    right or one command of the script's writes (`-ltrim`, ...): the script must refuse before
    its first write. Without the prelude's ACL check Redis refused only the call itself, after
    the writes before it (a claim marked the job running, left it queued and not in flight)."""

    def setUp(self):
        self.rs = self.enterContext(tl.RedisServer())
        self.admin = self.rs.client()
        self.admin.execute_command("ACL", "SETUSER", "op", "on", ">op-secret", "+@all", "~segq:*", "&*")
        self.url = "redis://op:op-secret@127.0.0.1:%d" % self.rs.port
        self.c = segq.Client(self.url, prefix=P)
        self.w = fakeworker.FakeWorker(self.url, prefix=P, name="w1", models=("otsu",))

    def snapshot(self):
        return tl.keyspace(self.admin, P)

    def refused(self, call, rights, why):
        """call() under the account with `rights` taken away: an error naming why, no key
        changed; then the rights come back."""
        self.admin.execute_command("ACL", "SETUSER", "op", *rights)
        try:
            before = self.snapshot()
            with self.assertRaises(redis.ResponseError) as e:
                call()
            after = self.snapshot()
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            self.assertEqual(changed, [], "refused with %s: nothing written" % (rights,))
            self.assertIn(why, str(e.exception))
        finally:
            self.admin.execute_command("ACL", "SETUSER", "op", "+@all", "&*")

    def refused_both(self, call, command):
        self.refused(call, ["resetchannels"], "can't publish to the channel")
        self.refused(call, ["-" + command], "can't run %s on" % command.upper())

    def test_claim(self):
        self.c.submit(JPEG, "otsu", id="cl-1", watch=True)
        self.refused_both(lambda: self.w.claim(4), "ltrim")
        # the per-job HSETs run after the other writes (claim.lua's c.late): checked first too
        self.refused(lambda: self.w.claim(4), ["-hset"], "can't run HSET on")
        self.assertEqual([j[1] for j in self.w.claim(4)], ["cl-1"])
        self.assertEqual(self.c.status("cl-1")["state"], "running")

    def test_cancel(self):
        self.c.submit(JPEG, "otsu", id="ca-1", watch=True)
        self.refused_both(lambda: self.c.cancel("ca-1"), "set")
        self.assertEqual(self.c.status("ca-1")["state"], "queued")
        self.assertEqual(self.c.cancel("ca-1"), {"ca-1": schema.CODE["CANCEL_DONE"]})
        self.assertEqual(self.c.result("ca-1")["error"]["code"], "canceled")

    def test_release(self):
        self.c.submit(JPEG, "otsu", id="re-1", watch=True)
        self.assertEqual(len(self.w.claim(4)), 1)
        self.refused_both(lambda: self.w.release(["re-1"]), "lpush")
        self.assertEqual(self.admin.lrange("segq:inflight:w1", 0, -1), [b"re-1"])
        self.assertEqual(self.w.release(["re-1"]), 1)
        self.assertEqual(self.c.status("re-1")["state"], "queued")

    def test_progress(self):
        self.c.submit_many([JPEG], "otsu", group="pg", ids=["pg-1"], watch=True)
        self.assertEqual(len(self.w.claim(4)), 1)
        self.refused_both(lambda: self.w.progress([("pg-1", 1, 4)]), "xadd")
        self.assertEqual(self.w.progress([("pg-1", 1, 4)]), 1)

    def test_dead_requeue(self):
        self.c.submit_many([JPEG], "otsu", group="dg", ids=["dd-1"])
        jobs = self.w.claim(4)
        self.assertEqual(self.w.ack(jobs, fail=("dd-1",), retry_ms=1, max_attempts=1), [schema.CODE["ACK_EXHAUSTED"]])
        self.assertEqual([d[0] for d in self.c.dead_list()], ["dd-1"])
        self.refused_both(lambda: self.c.dead_requeue("dd-1"), "zrem")
        self.assertEqual([d[0] for d in self.c.dead_list()], ["dd-1"])
        self.assertEqual(self.c.dead_requeue("dd-1"), 1)
        self.assertEqual(self.c.status("dd-1")["state"], "queued")


if __name__ == "__main__":
    tl.run_tests()
