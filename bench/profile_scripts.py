#!/usr/bin/python3
"""bench/profile_scripts.py: where segq's Redis time goes per job. Drives enqueue.lua, claim.lua and
ack.lua directly (no worker) the way a tuned worker does (claims of --batch jobs, --ahead batches
claimed before the oldest is acked) and reads Redis's own CPU time (INFO cpu, getrusage) around
each call, per phase, less the instrument's own cost (the CPU an INFO takes between two
readings, measured on empty windows); the minimum over --reps runs (this machine is shared:
contention only ever adds), for the scripts as they are and for variants that each change one thing (the
enqueue options, or an edit of a script's text), so the cost of that thing is the difference.
The variants are measurements only: nothing here changes queue/scripts.

    /usr/bin/python3 bench/profile_scripts.py [--n 6400] [--batch 64] [--ahead 4] [--reps 3]
        [--against REV]

--against REV also runs the scripts of git revision REV (queue/scripts/*.lua as committed there,
with this tree's schema constants) in the same Redis, alternating with this tree's run by run,
and prints the ratio: the peer comparison for a change of the scripts.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "support"))
import segq_testlib as tl  # noqa: E402
from segq import fakeworker, proto  # noqa: E402

VARIANTS = {
    # name: (what it shows, {script: [(old, new), ...]}, enqueue options)
    "as is": ("the scripts in queue/scripts: unwatched jobs, no group", {}, {}),
    "watched": ("every job watched (submit(watch=True) or a reader following it): the claim "
                "writes and publishes `started`", {}, {"watch": 1}),
    "one group": ("every job in one group: one group event per claim and per ack, the group's "
                  "counters and capped history", {}, {"group": "g1"}),
}


ROOT = os.path.dirname(HERE)
_against = {}  # name -> effective source at the --against revision


def source_at(rev, name):
    """The effective source of script name at git revision rev: this tree's schema constants, then
    the revision's prelude and script."""
    from segq import schema
    text = schema.lua_constants()
    for path in ("queue/scripts/lib/prelude.lua", "queue/scripts/%s.lua" % name):
        text += subprocess.check_output(["git", "-C", ROOT, "show", "%s:%s" % (rev, path)]).decode()
    return text


def script(name, edits):
    if name in _against:
        return _against[name]
    src = tl.load_script(name).decode()
    for old, new in edits.get(name, []):
        if old not in src:
            raise SystemExit("variant edit does not apply to %s.lua: %r" % (name, old[:60]))
        src = src.replace(old, new)
    return src


def cpu_us(r):
    """Redis's own CPU time (user+sys, getrusage): unlike commandstats' usec it does not grow
    when this shared machine deschedules Redis in the middle of a script."""
    i = r.info("cpu")
    return (float(i["used_cpu_user"]) + float(i["used_cpu_sys"])) * 1e6


def run_once(r, variant, a, payload, result_doc):
    _, edits, opts = VARIANTS[variant]
    P = "p"
    r.flushall()
    # As in a running deployment: a worker has served the model (no TTL per job at enqueue).
    r.sadd(P + ":models:served", "null")
    enq = r.register_script(script("enqueue", edits))
    claim = r.register_script(script("claim", edits))
    ack = r.register_script(script("ack", edits))
    now = tl.now_ms()
    c0 = cpu_us(r)
    pipe = r.pipeline(transaction=False)
    for i in range(a.n):
        # One job per call, as a client submitting single images does.
        enq(keys=[], args=[P, now, 86400, opts.get("group", ""), opts.get("watch", 0), "j%d" % i, "null",
                           "", 0, payload(i)], client=pipe)
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()
    enq_us = cpu_us(r) - c0
    r.set(P + ":worker:w", "tok")
    claim_us = ack_us = 0
    claimed, outstanding = 0, []

    # The instrument's own cost: an INFO between the two readings (~26 us here, ~0.4 us per job
    # of a 64-job call); the least of a few empty windows is taken off every timed call.
    empty = []
    for _ in range(20):
        c = cpu_us(r)
        empty.append(cpu_us(r) - c)
    info_us = min(empty)

    def timed(fn, *args, **kw):
        c = cpu_us(r)
        out = fn(*args, **kw)
        return out, cpu_us(r) - c - info_us

    # The ack's protocol: fast runs (the worker builds the record) since ARGV[8] became the
    # generation; a revision before that (--against) takes (id, result, code, retry) per job.
    fast = "ARGV[8] gen" in script("ack", edits)
    # Fetched claims (docs/protocol.md): the worker reads the claimed jobs' documents with one
    # MGET after the claim, in the claim's timed window (its Redis CPU is the claim's).
    fetched = "Fetched claims" in script("claim", edits)
    if fetched and "KEY.DOC" not in script("enqueue", edits):
        raise SystemExit("a revision whose fetched claims read the job hash (before P:doc, "
                         "1abce10 and its parents back to da83050): not comparable here")
    per = 7 if fast else 5

    def claim_batch():
        out = claim(keys=[], args=[P, "w", "tok", a.batch, 1 << 26, now, 86400, "null"])
        if fetched:
            jobs, gone = fakeworker.fetch_claimed(r, P, ["null"], out)
            if gone:
                raise SystemExit("%d claimed jobs gone" % len(gone))
            return jobs
        return [out[k:k + per] for k in range(0, len(out), per)]

    while claimed < a.n or outstanding:
        while claimed < a.n and len(outstanding) < a.ahead:
            jobs, us = timed(claim_batch)
            claim_us += us
            claimed += len(jobs)
            outstanding.append(jobs)
        jobs = outstanding.pop(0)
        args = ack_args(P, jobs, fast, now)
        out, us = timed(ack, keys=[], args=args)
        if any(int(x) != 1 for x in out):
            raise SystemExit("ack returned %r" % out[:5])
        ack_us += us
    done = int(r.hget(P + ":stats", "done") or 0)
    if done != a.n:
        raise SystemExit("%s: %d of %d done" % (variant, done, a.n))
    return {"enqueue": enq_us / a.n, "claim": claim_us / a.n, "ack": ack_us / a.n}


def ack_args(P, jobs, fast, now):
    """The ack's ARGV for jobs (claim entries), as worker "w" sends it: fast runs' records built
    here (fast: the protocol since fast runs), else (id, result, code, retry) per job."""
    if not fast:
        args = [P, "w", "tok", now, 86400, 604800, 3]
        for j in jobs:
            args += [j[1], result_doc(j[1]), "", 0]
        return args
    gen = next((j[6].rsplit(b".", 1)[0] for j in jobs if j[6]), b"")
    args = [P, "w", "tok", now, 86400, 604800, 3, gen]
    for j in jobs:
        if j[6]:
            args += [j[1], proto.fast_record(j[1], j[5], j[6], j[3], "w", now, result_doc(j[1])), ""]
        else:
            args += [j[1], result_doc(j[1]), "-"]
    return args


def payload(i):
    img = bytes((k * 7) & 255 for k in range(256))
    return tl.pack(tl.job_doc("j%d" % i, "null", img, fmt="gray8", width=16, height=16))


def result_doc(i):  # about the size of the worker's result for a null job
    return tl.pack({"v": 1, "id": i.decode() if isinstance(i, bytes) else i, "status": "ok",
                    "error": None, "width": 16, "height": 16, "polygons": [],
                    "timings": {"queue_wait_us": 1000, "decode_us": 3, "inference_us": 1,
                                "postprocess_us": 2, "total_us": 1200},
                    "worker": "w", "batch_size": 64, "attempt": 1})


def measure(reps, n, batch, ahead, variants=None, against=None):
    """{variant: {enqueue, claim, ack}} in us of Redis CPU per job, the minimum over reps runs,
    the variants interleaved (run 1 of each, then run 2, ...). against: a git revision whose
    scripts also run, alternating with this tree's, as "<variant> @<rev>"."""
    class A:
        pass
    a = A()
    a.n, a.batch, a.ahead = n, batch, ahead
    rows = {}
    peer = {}
    if against:
        peer = {name: source_at(against, name) for name in ("enqueue", "claim", "ack")}
    with tl.RedisServer() as rs:
        r = rs.client()
        for _ in range(reps):  # interleaved, like run.py, against this machine's noise
            for v in variants or VARIANTS:
                for label, src in ((v, {}), ("%s @%s" % (v, against), peer))[:2 if against else 1]:
                    _against.clear()
                    _against.update(src)
                    try:
                        rows.setdefault(label, []).append(run_once(r, v, a, payload, result_doc))
                    finally:
                        _against.clear()
    return {v: {k: min(x[k] for x in rs_) for k in rs_[0]} for v, rs_ in rows.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6400)
    ap.add_argument("--batch", type=int, default=64, help="jobs per claim (null's max_batch)")
    ap.add_argument("--ahead", type=int, default=4, help="batches claimed before the oldest is acked")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--against", metavar="REV", help="also run the scripts of this git revision, alternating")
    a = ap.parse_args()
    rows = measure(a.reps, a.n, a.batch, a.ahead, against=a.against)
    print("Redis CPU us per job (min of %d runs; n=%d, claims of %d, %d batches ahead; enqueue "
          "pipelined 500 per round trip)" % (a.reps, a.n, a.batch, a.ahead))
    print("%-22s %9s %9s %9s %14s" % ("variant", "enqueue", "claim", "ack", "claim+ack"))
    for v, m in rows.items():
        print("%-22s %9.1f %9.1f %9.1f %14.1f" % (v, m["enqueue"], m["claim"], m["ack"],
                                                   m["claim"] + m["ack"]))
    if a.against:
        print()
        for v in VARIANTS:
            m, p = rows[v], rows["%s @%s" % (v, a.against)]
            print("%-22s claim+ack this tree / %s: %.2f" % (v, a.against, (m["claim"] + m["ack"]) /
                                                            (p["claim"] + p["ack"])))
    print()
    for v, (what, _, _) in VARIANTS.items():
        print("%-22s %s" % (v + ":", what))


if __name__ == "__main__":
    main()
