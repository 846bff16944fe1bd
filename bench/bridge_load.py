#!/usr/bin/python3
"""segq-bridge under load: N WebSocket clients (tests/browser/load_clients.js, npm ws, one node
process) follow one group through one bridge on loopback while a real segq-worker (null model)
runs J jobs of that group on a private redis-server. Measures the bridge's memory (RSS before any
client, with N idle subscribed clients, peak during the run) and CPU (seconds, and microseconds
per frame delivered), Redis's CPU for the same phase, and checks that every client got every
event exactly once (offsets 1..top). Results as JSON (--json) and one table (docs/BENCHMARKS.md).

    /usr/bin/python3 bench/bridge_load.py --clients 1000 --jobs 500 --reps 3 --json out.json
"""
import argparse
import json
import os
import platform
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))
import segq_testlib as tl  # noqa: E402
import segq  # noqa: E402

PREFIX = "segq"


def redis_cpu(r):
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 20 ms (VmHWM covers the whole life; this is the
    phase's own peak)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0, False

    def run(self):
        while not self.stop_flag:
            try:
                self.peak = max(self.peak, tl.proc_stats(self.pid)[0])
            except OSError:
                return
            time.sleep(0.02)


def one_run(args, rep):
    rs = tl.RedisServer()
    r = rs.client()
    w = tl.Worker(rs.url, prefix=PREFIX, models="null")
    w.wait_ready(r)
    b = tl.Bridge(rs.url, prefix=PREFIX, max_clients=args.clients + 100)
    b.wait_ready()
    time.sleep(0.5)
    rss0, _, cpu0 = tl.proc_stats(b.pid)
    g = "bench-%d-%d" % (rep, time.monotonic_ns())
    ch = "group:" + g
    lc = tl.LoadClients(b, ch, args.clients, args.jobs, timeout_s=args.timeout)
    try:
        t_sub = time.monotonic()
        sub = lc.wait("subscribed", args.timeout)
        time.sleep(1.0)  # settle: idle clients, nothing in flight
        rss_idle, _, cpu_sub = tl.proc_stats(b.pid)
        numsub = r.pubsub_numsub(tl.key(PREFIX, "gev", g))[0][1]
        sampler = Sampler(b.pid)
        sampler.start()
        rcpu0 = redis_cpu(r)
        client = segq.Client(rs.url, prefix=PREFIX)
        img = tl.make_jpeg(16, 16)
        t0 = time.monotonic()
        for k in range(0, args.jobs, args.chunk):
            if args.chunk == 1:
                client.submit(img, "null", group=g)  # one enqueue call, one group event
            else:
                client.submit_many([img] * min(args.chunk, args.jobs - k), "null", group=g)
        done = lc.wait("done", args.timeout)
        t1 = time.monotonic()
        sampler.stop_flag = True
        sampler.join()
        rss_end, hwm, cpu_end = tl.proc_stats(b.pid)
        rcpu1 = redis_cpu(r)
    finally:
        lc.close()
    top = tl.group_top_offset(r, PREFIX, g)
    st, metrics, _ = b.http_get("/metrics")
    slow = int(metrics.split(b'segq_bridge_closed_total{reason="slow_consumer"} ')[1].split(b"\n")[0])
    frames = args.clients * top
    ok = (not done["timed_out"] and not done["problems"] and done["finished"] == args.clients
          and done["events_min"] == top and done["events_max"] == top and numsub == 1 and slow == 0)
    res = {
        "rep": rep, "ok": ok, "clients": args.clients, "jobs": args.jobs, "events": top,
        "frames": frames, "subscribe_s": round(sub["ms"] / 1000, 2),
        "run_s": round(t1 - t0, 2), "frames_per_s": round(frames / (t1 - t0)),
        "bridge_rss_start_mb": round(rss0 / 1024, 1),
        "bridge_rss_idle_clients_mb": round(rss_idle / 1024, 1),
        "bridge_rss_peak_run_mb": round(max(sampler.peak, rss_end) / 1024, 1),
        "bridge_rss_hwm_mb": round(hwm / 1024, 1),
        "bridge_kb_per_idle_client": round((rss_idle - rss0) / args.clients, 1),
        "bridge_cpu_subscribe_s": round(cpu_sub - cpu0, 2),
        "bridge_cpu_run_s": round(cpu_end - cpu_sub, 2),
        "bridge_cpu_us_per_frame": round((cpu_end - cpu_sub) * 1e6 / frames, 2),
        "redis_cpu_run_s": round(rcpu1 - rcpu0, 2), "redis_subscriptions": numsub,
        "slow_consumers": slow, "client_summary": done,
    }
    b.stop()
    w.kill9()
    rs.stop(signal.SIGKILL)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=1,
                    help="jobs per enqueue call (1: one group event per job, and the claims' and "
                         "acks' group events)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write every run here")
    args = ap.parse_args()
    tl.require_worker()
    tl.require_bridge()
    tl.require_browser()
    load0 = os.getloadavg()
    runs = []
    for rep in range(1, args.reps + 1):
        res = one_run(args, rep)
        runs.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "client_summary"}))
        sys.stdout.flush()
    keys = ["subscribe_s", "run_s", "frames_per_s", "bridge_rss_start_mb",
            "bridge_rss_idle_clients_mb", "bridge_rss_peak_run_mb", "bridge_kb_per_idle_client",
            "bridge_cpu_subscribe_s", "bridge_cpu_run_s", "bridge_cpu_us_per_frame",
            "redis_cpu_run_s"]
    med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in keys}
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(),
           "cpus": os.cpu_count(), "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "args": vars(args), "median": med, "all_ok": all(r["ok"] for r in runs), "runs": runs}
    print("median of %d: %s" % (len(runs), json.dumps(med)))
    print("all runs correct (every client got every event once, 1 Redis subscription, no slow "
          "consumer): %s; load average %s -> %s" % (out["all_ok"], load0, out["loadavg_after"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
