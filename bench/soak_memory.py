#!/usr/bin/python3
"""bench/soak_memory.py: Redis memory per finished job (issue 9 item 2). Runs --n null jobs (default
100 000, default worker options) through a real segq-worker and a private redis-server, then
reports Redis's `used_memory` per finished job (after minus before, over n), `MEMORY USAGE` of a
few finished records, the keys left per job, and every key without a TTL (which must be a fixed
handful). Two workloads: single jobs (one enqueue call each, no group) and uploads (groups of
--group-size submitted with submit_many, as the `segq submit` command does).

    /usr/bin/python3 bench/soak_memory.py [--n 100000] [--build-dir build] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import segq_testlib as tl  # noqa: E402
import segq  # noqa: E402

P = "soak"


def used(r):
    return r.info("memory")["used_memory"]


def run(a, workload):
    with tl.RedisServer() as rs:
        r = rs.client()
        w = tl.Worker(rs.url, prefix=P, worker_id="soak-w1", models="null", log_level="warn", args=())
        try:
            w.wait_ready(r)
            c = segq.Client(rs.url, prefix=P)
            raw = bytes((k * 7) & 255 for k in range(256))
            doc = None
            # The worker is idle and registered: what Redis holds now is the baseline.
            time.sleep(0.5)
            before = used(r)
            t0 = time.monotonic()
            enq = c.script("enqueue")
            if workload == "single":
                pipe = r.pipeline(transaction=False)
                for i in range(a.n):
                    id = "j%06d" % i
                    payload = segq.encode_job(id, "null", raw, "gray8", width=16, height=16)
                    doc = doc or payload
                    enq(keys=[], args=[P, tl.now_ms(), c.result_ttl_s, "", 0, id, "null", "", 0, payload],
                        client=pipe)
                    if len(pipe) >= 500:
                        pipe.execute()
                pipe.execute()
            else:
                for k in range(0, a.n, a.group_size):
                    ids = ["j%06d" % i for i in range(k, min(a.n, k + a.group_size))]
                    c.submit_many([raw] * len(ids), "null", group="g%06d" % k, ids=ids, fmt="gray8",
                                  width=16, height=16)
            t_enq = time.monotonic() - t0
            deadline = time.monotonic() + a.timeout
            while tl.stats(r, P).get("done", 0) < a.n:
                if time.monotonic() > deadline:
                    raise SystemExit("%s: only %s of %d done after %ds" % (workload, tl.stats(r, P), a.n,
                                                                           a.timeout))
                time.sleep(0.2)
            t_all = time.monotonic() - t0
            time.sleep(0.5)
            after = used(r)
            st = tl.stats(r, P)
            sample = ["j%06d" % i for i in (0, a.n // 2, a.n - 1)]
            usage = [r.memory_usage(tl.job_key(P, i), samples=0) for i in sample]
            rec = r.get(tl.job_key(P, sample[0]))
            # Keys: per job, and those without a TTL.
            per_job, no_ttl, other = 0, [], {}
            for k in r.scan_iter(match=P + ":*", count=5000):
                k = k.decode()
                if k.startswith(P + ":job:"):
                    per_job += 1
                    continue
                kind = k.split(":")[1]
                other[kind] = other.get(kind, 0) + 1
                if r.ttl(k) == -1:
                    no_ttl.append(k)
            out = {
                "workload": workload, "n": a.n, "group_size": a.group_size if workload == "groups" else None,
                "used_memory_before": before, "used_memory_after": after,
                "bytes_per_finished_job": (after - before) / a.n,
                "memory_usage_record": usage, "record_bytes": len(rec), "job_doc_bytes": len(doc) if doc else None,
                "job_keys": per_job, "other_keys_by_kind": other, "keys_without_ttl": sorted(no_ttl),
                "record_ttl_s": r.ttl(tl.job_key(P, sample[0])),
                "enqueue_s": round(t_enq, 2), "all_done_s": round(t_all, 2), "stats": st,
                "redis": r.info("server")["redis_version"],
            }
            w.sigterm()
            w.wait(30)
            return out
        finally:
            w.stop(10)


def soak(n, group_size, workloads, timeout):
    """[result per workload] (see run); for bench/run.py."""
    class A:
        pass
    a = A()
    a.n, a.group_size, a.timeout = n, group_size, timeout
    return [run(a, wl) for wl in workloads]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--group-size", type=int, default=12)
    ap.add_argument("--workloads", default="single,groups")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--build-dir", help="where segq-worker was built (default: $SEGQ_BUILD_DIR, else ./build)")
    a = ap.parse_args()
    if a.build_dir:
        os.environ["SEGQ_BUILD_DIR"] = os.path.abspath(a.build_dir)
    if tl.worker_binary() is None:
        raise SystemExit("segq-worker is not built (set SEGQ_BUILD_DIR or build ./build)")
    results = soak(a.n, a.group_size, a.workloads.split(","), a.timeout)
    for x in results:
        print("%-7s n=%d: %.0f bytes of Redis per finished job (used_memory %d -> %d); MEMORY USAGE of a "
              "record %s; record %d bytes; %d job keys; other keys %s; without TTL: %s; enqueue %.1fs, "
              "all done %.1fs" % (x["workload"], x["n"], x["bytes_per_finished_job"], x["used_memory_before"],
                                  x["used_memory_after"], x["memory_usage_record"], x["record_bytes"],
                                  x["job_keys"], x["other_keys_by_kind"], x["keys_without_ttl"],
                                  x["enqueue_s"], x["all_done_s"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
