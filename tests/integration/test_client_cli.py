#!/usr/bin/python3
"""Integration tests of the `segq` command line (tools/segq) against a private redis-server and the
Python stand-in worker (segq.fakeworker, real queue scripts): submit --wait --out writes JSON and
overlay PNGs (JPEG and 16-bit PNG inputs), watch and stats print, cancel (a job, a group) and dead
(list, show, requeue, purge) act, and the exit codes for a bad folder (2), no Redis (3), a
timeout (4) and failed jobs (1)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "clients", "python"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
SEGQ = os.path.join(SRC, "tools", "segq")
SAMPLES = os.path.join(SRC, "samples")

try:
    import numpy as np
    import segq_testlib as tl
    from PIL import Image
    from segq import fakeworker
except ImportError as e:  # pragma: no cover
    print("skip: needs python3-redis, python3-msgpack, python3-numpy, python3-pil:", e)
    sys.exit(77)

for _name in ("enqueue", "claim", "ack", "heartbeat", "unregister"):
    if not os.path.exists(os.path.join(SRC, "queue", "scripts", _name + ".lua")):
        print("skip: queue/scripts/%s.lua is not there yet" % _name)
        sys.exit(77)
if not os.path.exists(os.path.join(SAMPLES, "cells_01.jpg")):
    print("skip: samples/ not generated (tools/make_samples.py)")
    sys.exit(77)

P = "tcli"


failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)
    return cond


def segq(url, *args, timeout=60):
    env = dict(os.environ, SEGQ_REDIS_URL=url, SEGQ_PREFIX=P)
    p = subprocess.run([SEGQ] + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, text=True)
    return p.returncode, p.stdout, p.stderr


def main():
    try:
        srv = tl.RedisServer()
    except unittest.SkipTest as e:
        print("skip:", e)
        return 77
    work = tempfile.mkdtemp(prefix="segq-cli-out-")
    stop = threading.Event()
    w = fakeworker.FakeWorker(srv.url, prefix=P, name="fw-cli", models=("otsu", "null"))
    t = threading.Thread(target=w.serve, args=(stop, 0.02), daemon=True)
    t.start()
    try:
        # A 16-bit PNG goes as gray16 and gets an 8-bit stretched overlay.
        png16 = os.path.join(work, "in", "deep.png")
        os.makedirs(os.path.dirname(png16))
        Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)).save(png16)
        files = [os.path.join(SAMPLES, "cells_01.jpg"), os.path.join(SAMPLES, "cells_02.jpg"), png16]
        out = os.path.join(work, "out")
        rc, so, se = segq(srv.url, "submit", *files, "--model", "otsu", "--group", "cli-g1",
                          "--wait", "--timeout", "30", "--out", out)
        check(rc == 0, "submit rc %d: %s %s" % (rc, so, se))
        check("3 images: 3 ok, 0 failed" in so, "summary line: %s" % so)
        check("progress: 3/3" in se, "non-TTY progress lines: %s" % se)
        for stem, src in (("cells_01", files[0]), ("cells_02", files[1]), ("deep", png16)):
            jp = os.path.join(out, stem + ".json")
            op = os.path.join(out, stem + ".overlay.png")
            if not check(os.path.exists(jp) and os.path.exists(op), "outputs of %s" % stem):
                continue
            with open(jp) as f:
                doc = json.load(f)
            check(doc["status"] == "ok" and doc["group"] == "cli-g1" and doc["polygons"][0]["points"],
                  "json of %s: %r" % (stem, doc))
            im = Image.open(op)
            check(im.mode == "RGB" and im.size == Image.open(src).size, "overlay size/mode of %s" % stem)
            check((57, 255, 20) in [c for _, c in im.getcolors(1 << 20)], "outline color in %s" % stem)
        with open(os.path.join(out, "summary.json")) as f:
            summ = json.load(f)
        check(summ["group"] == "cli-g1" and len(summ["images"]) == 3, "summary.json")

        # Folder input (not recursing into samples/truth), no --wait: prints ids.
        rc, so, se = segq(srv.url, "submit", SAMPLES, "--model", "null", "--group", "cli-g2")
        n = len([f for f in os.listdir(SAMPLES) if f.endswith(".jpg")])
        check(rc == 0 and so.count("\n") == n + 1 and "truth" not in so, "folder submit: %s %s" % (so, se))

        rc, so, se = segq(srv.url, "watch", "--group", "cli-g2", "--timeout", "30")
        lines = so.splitlines()
        check(rc == 0 and lines and lines[0].startswith("-- recovered at offset") and
              "[%d done, 0 failed, 0 canceled, 0 running of %d]" % (n, n) in lines[-1],
              "watch group rc %d: %s %s" % (rc, so[-300:], se))
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "otsu", "--mask", "--out", out + "m")
        mp = os.path.join(out + "m", "cells_01.mask.png")
        check(rc == 0 and os.path.exists(mp) and Image.open(mp).size == (4, 2), "mask png: %s" % se)
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "otsu")
        jid = so.strip().splitlines()[-1].split()[0]
        rc, so, se = segq(srv.url, "watch", jid, "--timeout", "30")
        lines = so.splitlines()
        # A new reader starts from the job's snapshot; if it was still running, the live events
        # follow (the reader made it a watched job, so `started` comes too).
        check(rc == 0 and lines and lines[0].startswith("-- resync") and
              (lines[-1].endswith("state=done") or lines[-1].split()[3] == "done"),
              "watch job: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "result", jid, "--timeout", "5")
        check(rc == 0 and json.loads(so)["id"] == jid, "result: %s" % se)

        rc, so, se = segq(srv.url, "stats")
        check(rc == 0 and "otsu" in so and "fw-cli" in so and "dead letters: 0" in so, "stats: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "stats", "--json")
        check(rc == 0 and json.loads(so)["live_workers"] == 1, "stats --json")

        # Exit codes.
        rc, so, se = segq(srv.url, "submit", os.path.join(work, "nope"), "--model", "otsu")
        check(rc == 2 and "no such file or folder" in se, "missing path rc %d %s" % (rc, se))
        os.makedirs(os.path.join(work, "empty"))
        rc, so, se = segq(srv.url, "submit", os.path.join(work, "empty"), "--model", "otsu")
        check(rc == 2 and "no images" in se, "empty folder rc %d %s" % (rc, se))
        rc, so, se = segq("redis://127.0.0.1:%d" % tl.free_port(), "submit", files[0], "--model", "otsu", "--wait")
        check(rc == 3 and "cannot reach Redis" in se, "no redis rc %d %s" % (rc, se))
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "nosuchmodel", "--wait", "--timeout", "10")
        check(rc == 1 and "unknown_model" in so + se, "unknown model rc %d %s %s" % (rc, so, se))
        stop.set()
        t.join(5)
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "otsu", "--wait", "--timeout", "1")
        check(rc == 4 and "timed out" in se, "timeout rc %d %s" % (rc, se))

        # cancel: a queued job at once; a group, then what is queued in it.
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "otsu")
        jid = so.strip().splitlines()[-1].split()[0]
        rc, so, se = segq(srv.url, "cancel", jid)
        check(rc == 0 and so.strip() == "%s  canceled" % jid, "cancel rc %d: %s %s" % (rc, so, se))
        rc, so, se = segq(srv.url, "result", jid)
        check(rc == 1 and json.loads(so)["error"]["code"] == "canceled", "canceled result: %s" % so)
        rc, so, se = segq(srv.url, "cancel", jid)
        check(rc == 1 and "nothing to cancel" in so, "cancel again rc %d: %s" % (rc, so))
        rc, so, se = segq(srv.url, "submit", files[0], files[1], "--model", "otsu", "--group", "cli-gc")
        rc, so, se = segq(srv.url, "cancel", "--group", "cli-gc")
        check(rc == 0 and "cli-gc  canceled" in so, "cancel --group: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "cancel")
        check(rc == 2 and "needs job ids or --group" in se, "cancel usage rc %d" % rc)

        # dead: a job whose transient failure used its last attempt is a dead letter.
        rc, so, se = segq(srv.url, "submit", files[0], "--model", "null")
        did = so.strip().splitlines()[-1].split()[0]
        jobs = [j for j in w.claim(20) if j[1] == did]
        check(w.ack(jobs, fail=(did,), retry_ms=1, max_attempts=1) == [5], "dead letter made")
        rc, so, se = segq(srv.url, "dead", "list")
        check(rc == 0 and did in so and "model_error" in so, "dead list: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "dead", "show", did)
        shown = json.loads(so) if rc == 0 else {}
        check(shown.get("job", {}).get("id") == did and shown["result"]["error"]["code"] == "model_error",
              "dead show: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "dead", "requeue", did)
        check(rc == 0 and "requeued 1" in so, "dead requeue: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "dead", "show", did)
        check(rc == 1 and "not a dead letter" in se, "requeued is not dead: %s" % se)
        jobs = [j for j in w.claim(20) if j[1] == did]
        w.ack(jobs, fail=(did,), retry_ms=1, max_attempts=1)
        rc, so, se = segq(srv.url, "dead", "purge", "--all")
        check(rc == 0 and "purged 1" in so, "dead purge: %s %s" % (so, se))
        rc, so, se = segq(srv.url, "dead", "list", "--json")
        check(rc == 0 and json.loads(so) == [], "no dead letters left: %s" % so)
    finally:
        stop.set()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("test_client_cli: %s (%d failures)" % ("ok" if failures == 0 else "FAILED", failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
