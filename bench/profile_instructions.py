#!/usr/bin/python3
"""bench/profile_instructions.py: redis-server's instructions per job for claim and ack, counted
by callgrind (valgrind): a deterministic companion to profile_scripts.py, whose CPU times move
with this shared machine's load. Enqueues N null jobs (model registered as served), then claims
them all in claims of --batch (one callgrind dump), then acks them in claim order (another),
the way segq-worker does (fast runs: records built by the worker), and prints instructions per
job. --against REV also counts the scripts of git revision REV (queue/scripts as committed
there, with this tree's schema constants). Needs valgrind (Debian: valgrind); ~20 s per tree.

    /usr/bin/python3 bench/profile_instructions.py [--n 3200] [--batch 64] [--against REV]
"""
import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "support"))
import profile_scripts as ps  # noqa: E402
import segq_testlib as tl  # noqa: E402
import redis  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ctl(pid, *args):
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True)
    if r.returncode != 0 or "OK" not in r.stdout:
        raise SystemExit("callgrind_control %s: %s%s" % (" ".join(args), r.stdout, r.stderr))


def dump_ir(pid, out_dir):
    """Dumps (and zeroes) the counters; the instructions counted since the last dump."""
    before = set(glob.glob(os.path.join(out_dir, "cg.out.*")))
    ctl(pid, "-d")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in set(glob.glob(os.path.join(out_dir, "cg.out.*"))) - before:
            with open(path) as f:
                for line in f:
                    if line.startswith("totals:"):  # (summary: is 0 in a dump)
                        return int(line.split()[1])
        time.sleep(0.1)  # the dump is still being written
    raise SystemExit("callgrind dump did not appear")


def count(src, n, batch, opts=None):
    opts = opts or {}
    out_dir = tempfile.mkdtemp(prefix="segq-cg-")
    port = free_port()
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          "--callgrind-out-file=" + os.path.join(out_dir, "cg.out.%p"),
                          "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                         cwd=out_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        P = "p"
        r.sadd(P + ":models:served", "null")
        enq, claim, ack = (r.register_script(src[k]) for k in ("enqueue", "claim", "ack"))
        fast = "ARGV[8] gen" in src["ack"]
        per = 7 if fast else 5
        now = tl.now_ms()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            enq(keys=[], args=[P, now, 86400, opts.get("group", ""), opts.get("watch", 0), "j%d" % i,
                               "null", "", 0, ps.payload(i)],
                client=pipe)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        r.set(P + ":worker:w", "tok")
        batches = []
        ctl(p.pid, "-i", "on")
        for _ in range(0, n, batch):
            out = claim(keys=[], args=[P, "w", "tok", batch, 1 << 26, now, 86400, "null"])
            if "Fetched claims" in src["claim"]:
                # The worker's MGET of the claimed jobs' documents counts as the claim's.
                batches.append(ps.fakeworker.fetch_claimed(r, P, ["null"], out)[0])
            else:
                batches.append([out[k:k + per] for k in range(0, len(out), per)])
        ctl(p.pid, "-i", "off")
        claim_ir = dump_ir(p.pid, out_dir)
        calls = [ps.ack_args(P, jobs, fast, now) for jobs in batches]
        ctl(p.pid, "-i", "on")
        for args in calls:
            codes = ack(keys=[], args=args)
            if any(int(x) != 1 for x in codes):
                raise SystemExit("ack returned %r" % codes[:5])
        ctl(p.pid, "-i", "off")
        ack_ir = dump_ir(p.pid, out_dir)
        if int(r.hget(P + ":stats", "done") or 0) != n:
            raise SystemExit("not every job was done")
        return claim_ir / n, ack_ir / n
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(out_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--against", metavar="REV")
    ap.add_argument("--variant", default="as is", choices=list(ps.VARIANTS),
                    help="the enqueue options of this profile_scripts variant")
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("skip: needs valgrind (apt-get install valgrind)")
    trees = [("this tree", {k: ps.script(k, {}) for k in ("enqueue", "claim", "ack")})]
    if a.against:
        trees.append(("@" + a.against, {k: ps.source_at(a.against, k) for k in ("enqueue", "claim", "ack")}))
    print("redis-server instructions per job (callgrind; n=%d, claims of %d; %s)" % (a.n, a.batch, a.variant))
    for label, src in trees:
        c, k = count(src, a.n, a.batch, ps.VARIANTS[a.variant][2])
        print("%-16s claim %8.0f  ack %8.0f  claim+ack %8.0f" % (label, c, k, c + k), flush=True)


if __name__ == "__main__":
    main()
