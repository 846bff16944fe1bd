#!/usr/bin/python3
"""bench/run.py: segq's queue-path benchmark in one go (issues 2 and 9): end-to-end jobs/s, Redis
CPU per job, worker CPU per job and Redis memory per finished job of segq (null and otsu models,
one and two workers) and of BullMQ (no-op jobs of the same byte size, several concurrencies)
through one private redis-server; open-loop latency p50/p99 (and Redis CPU per job) at a light
rate and at 25 % and 50 % of each system's own max; Redis's own CPU per claim+ack
(bench/profile_scripts.py) and the 100 000-job memory soak (bench/soak_memory.py); then the
tables and the ratio segq null jobs/s / BullMQ best jobs/s. What is measured, exactly:
docs/BENCHMARKS.md.

    /usr/bin/python3 bench/run.py            # full run (3 repetitions, median), ~10 minutes
    /usr/bin/python3 bench/run.py --quick    # 1 repetition, fewer jobs: a smoke test
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import segq_testlib as tl  # noqa: E402  (RedisServer, process cleanup)
import profile_scripts  # noqa: E402
import soak_memory  # noqa: E402

BULLMQ_DIR = os.path.join(HERE, "bullmq")
# Worker flags tuned for throughput on a 2-core machine (see docs/BENCHMARKS.md): one pool
# thread (the loop thread and Redis need the other core), four batches in flight so a claim is
# always outstanding while the previous batch is acked; the models' own max_batch (null 64,
# otsu 8) and max_delay.
WORKER_FLAGS = {
    "null": ["--threads", "1", "--max-inflight-batches", "4"],
    "otsu": ["--threads", "2", "--max-inflight-batches", "4"],
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build(build_dir):
    if not os.path.isfile(os.path.join(build_dir, "CMakeCache.txt")):
        # CPU only: a CUDA-linked worker spends ~0.5 s loading cuBLAS/cuDNN at start, which a
        # benchmark that times from worker start would count (docs/BENCHMARKS.md "Build note").
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                               "-DSEGQ_CUDA=OFF"], stdout=subprocess.DEVNULL)
    subprocess.check_call(["cmake", "--build", build_dir, "-j2", "--target", "segq-worker",
                           "segq_bench"], stdout=subprocess.DEVNULL)


def npm_install():
    if os.path.isdir(os.path.join(BULLMQ_DIR, "node_modules", "bullmq")):
        return
    subprocess.check_call(["npm", "ci", "--no-audit", "--no-fund"], cwd=BULLMQ_DIR)


def one_json(cmd, timeout, incomplete_ok=False):
    """The last JSON line a bench program printed. incomplete_ok: a latency run that exits 1
    because the system did not keep up with the offered rate (fewer results seen than sent in
    its time) is a measurement, not a failure: its figures come back with "incomplete": 1."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       text=True, preexec_fn=tl._child_setup)
    if p.returncode != 0:
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res = None
        if incomplete_ok and res and res.get("seen", res.get("n")) < res.get("n", 0):
            res["incomplete"] = 1
            return res
        raise RuntimeError("%s failed (%d):\n%s%s" % (cmd[:3], p.returncode, p.stdout, p.stderr))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res.setdefault("incomplete", 0)
    return res


class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = os.path.join(a.build_dir, "bench", "segq_bench")
        self.worker = os.path.join(a.build_dir, "worker", "segq-worker")
        self.rs = tl.RedisServer()
        self.r = self.rs.client()
        self.seq = 0

    def fresh(self):
        """A clean Redis (FLUSHALL) and a new key prefix / queue name for the next run."""
        self.r.flushall()
        self.seq += 1
        self.mem0 = self.r.info("memory")["used_memory"]
        return "b%d" % self.seq

    def with_memory(self, res, n):
        """res + bytes_per_job: Redis used_memory after the run minus after FLUSHALL, over n (what
        each system keeps per finished job: segq its records, BullMQ its completed jobs)."""
        res["bytes_per_job"] = (self.r.info("memory")["used_memory"] - self.mem0) / n
        return res

    def segq(self, mode, model, workers, n, rate=None):
        prefix = self.fresh()
        cmd = [self.bin, mode, "--port", str(self.rs.port), "--prefix", prefix, "--model", model,
               "--n", str(n), "--workers", str(workers)]
        cmd += ["--image", self.a.image] if model == "otsu" else ["--raw", self.a.raw]
        if rate:
            cmd += ["--rate", "%.1f" % rate]
        cmd += ["--", self.worker, "--redis-url", self.rs.url, "--prefix", prefix, "--models",
                model, "--log-level", "warn"] + WORKER_FLAGS[model]
        return self.with_memory(one_json(cmd, 300, incomplete_ok=rate is not None), n)

    def bullmq_tput(self, conc, n, nbytes):
        q = self.fresh()
        return self.with_memory(one_json(["node", os.path.join(BULLMQ_DIR, "bench.js"), "tput", "--port",
                                          str(self.rs.port), "--queue", q, "--n", str(n),
                                          "--concurrency", str(conc), "--bytes", str(nbytes)], 300), n)

    def bullmq_lat(self, conc, n, rate, nbytes):
        q = self.fresh()
        js = os.path.join(BULLMQ_DIR, "bench.js")
        w = subprocess.Popen(["node", js, "worker", "--port", str(self.rs.port), "--queue", q,
                              "--concurrency", str(conc)], stdout=subprocess.PIPE, text=True,
                             preexec_fn=tl._child_setup)
        try:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("BullMQ worker did not start")
            c0 = redis_cpu_us(self.r)
            res = one_json(["node", js, "lat", "--port", str(self.rs.port), "--queue", q, "--n",
                            str(n), "--rate", "%.1f" % rate, "--bytes", str(nbytes)], 300,
                           incomplete_ok=True)
            res["redis_cpu_us_per_job"] = (redis_cpu_us(self.r) - c0) / n
            return res
        finally:
            w.terminate()
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()


def redis_cpu_us(r):
    i = r.info("cpu")
    return (float(i["used_cpu_user"]) + float(i["used_cpu_sys"])) * 1e6


def run_interleaved(reps, plan, key):
    """Runs every (label, fn) of plan once per repetition, interleaved (rep 1 of all, rep 2 of
    all, ...) so that a noisy moment of this shared machine hits every configuration alike;
    returns {label: medians of every numeric field, plus "runs"}."""
    runs = {label: [] for label, _ in plan}
    for i in range(reps):
        for label, fn in plan:
            res = fn()
            runs[label].append(res)
            log("  %-30s run %d: %s" % (label, i + 1, ", ".join(
                "%s=%s" % (k, round(res[k], 2) if isinstance(res[k], float) else res[k])
                for k in key if k in res)))
    out = {}
    for label, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]
               if isinstance(rs[0][k], (int, float))}
        med["runs"] = rs
        out[label] = med
    return out


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    def out(cmd):
        try:
            return subprocess.check_output(cmd, text=True, stderr=subprocess.STDOUT).strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"
    with open(os.path.join(BULLMQ_DIR, "node_modules", "bullmq", "package.json")) as f:
        bullmq = json.load(f)["version"]
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "redis": out(["redis-server", "--version"]), "node": out(["node", "--version"]),
            "bullmq": bullmq}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("SEGQ_BUILD_DIR", os.path.join(ROOT, "build-bench")))
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in --build-dir")
    ap.add_argument("--reps", type=int, default=3, help="runs per configuration (median reported)")
    ap.add_argument("--n", type=int, default=10000, help="jobs per throughput run (null, BullMQ)")
    ap.add_argument("--otsu-n", type=int, default=3000, help="jobs per otsu throughput run")
    ap.add_argument("--lat-s", type=float, default=3.0, help="seconds of offered load per latency run")
    ap.add_argument("--lat-rate", type=float, default=200,
                    help="a light offered rate (jobs/s) run on both systems")
    ap.add_argument("--lat-fraction", type=float, default=0.25,
                    help="latency runs offer this fraction of the measured max jobs/s (at 0.5 "
                         "neither system keeps up here once enqueueing shares the CPU)")
    ap.add_argument("--raw", default="16x16", help="null jobs' raw gray8 image, WxH")
    ap.add_argument("--image", default=os.path.join(ROOT, "samples", "cells_01.jpg"),
                    help="otsu jobs' JPEG (default: the 256x256 samples/cells_01.jpg)")
    ap.add_argument("--concurrency", default="1,10,50,100,200", help="BullMQ worker concurrencies")
    ap.add_argument("--soak-n", type=int, default=100000, help="jobs of the memory soak (0: skip it)")
    ap.add_argument("--profile-reps", type=int, default=5, help="runs of profile_scripts (0: skip)")
    ap.add_argument("--quick", action="store_true", help="1 run each, 5000 jobs, short latency runs")
    ap.add_argument("--json", help="also write every result here")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.n, a.otsu_n, a.lat_s = 1, 3000, 600, 1.5
        a.soak_n, a.profile_reps = min(a.soak_n, 10000), min(a.profile_reps, 1)
    t_start = time.monotonic()
    if not a.no_build:
        build(a.build_dir)
    npm_install()
    b = Bench(a)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    res = {"machine": machine_info(), "commit": commit, "worker_flags": WORKER_FLAGS, "tput": {},
           "lat": {}}
    log("redis-server on %s; %s" % (b.rs.url, res["machine"]))
    tk = ["jobs_per_s", "jobs_per_s_from_ready", "redis_cpu_us_per_job", "worker_cpu_us_per_job",
          "steady_worker_cpu_us_per_job", "jobs_per_script_call"]

    # The BullMQ job's data is made as long as segq's null job document (checked in the table).
    probe = b.segq("tput", "null", 1, 200)
    job_bytes = probe["job_bytes"]
    concs = [int(c) for c in a.concurrency.split(",")]
    plan = []
    for model, n in (("null", a.n), ("otsu", a.otsu_n)):
        for workers in (1, 2):
            plan.append(("segq %s x%d" % (model, workers),
                         lambda m=model, w=workers, n=n: b.segq("tput", m, w, n)))
    for conc in concs:
        plan.append(("bullmq c=%d" % conc, lambda c=conc: b.bullmq_tput(c, a.n, job_bytes)))
    res["tput"] = run_interleaved(a.reps, plan, tk)
    best_conc = max(concs, key=lambda c: res["tput"]["bullmq c=%d" % c]["jobs_per_s"])
    best = res["tput"]["bullmq c=%d" % best_conc]

    lk = ["achieved_rate", "p50_ms", "p99_ms", "max_send_lag_ms"]
    lks = lk + ["redis_cpu_us_per_job", "jobs_per_worker_script_call"]
    null1 = res["tput"]["segq null x1"]["jobs_per_s"]
    otsu1 = res["tput"]["segq otsu x1"]["jobs_per_s"]
    f = a.lat_fraction
    pc = "%d%%" % round(f * 100)
    bull_rate = best["jobs_per_s"] * f
    rates = {"segq null x1 @%d/s" % a.lat_rate: a.lat_rate,
             "bullmq c=%d @%d/s" % (best_conc, a.lat_rate): a.lat_rate,
             # The same offered rate for both: BullMQ's share of its own max. (segq's own
             # share of its pre-filled max may exceed what the open loop sustains here: every
             # latency job is watched and enqueued while it runs, on the same 2 cores.)
             "segq null x1 @BullMQ's %s" % pc: bull_rate,
             "segq null x1 @%s own max" % pc: null1 * f,
             "bullmq c=%d @%s own max" % (best_conc, pc): bull_rate,
             "segq null x1 @50% own max": null1 * 0.5,
             "bullmq c=%d @50%% own max" % best_conc: best["jobs_per_s"] * 0.5,
             "segq otsu x1 @%s own max" % pc: otsu1 * f}
    def n_for(label):
        return max(200, int(rates[label] * a.lat_s))
    plan = []
    for label in rates:
        if label.startswith("bullmq"):
            plan.append((label, lambda l=label: b.bullmq_lat(best_conc, n_for(l), rates[l], job_bytes)))
        else:
            model = "otsu" if "otsu" in label else "null"
            plan.append((label, lambda l=label, m=model: b.segq("lat", m, 1, n_for(l), rates[l])))
    res["lat"] = run_interleaved(a.reps, plan, lks)
    for label in rates:
        res["lat"][label]["rate"] = rates[label]
    res["lat_fraction"], res["lat_rate"] = f, a.lat_rate

    if a.profile_reps:
        log("profile_scripts: Redis CPU per job of enqueue / claim / ack (%d runs)" % a.profile_reps)
        res["profile_scripts"] = profile_scripts.measure(a.profile_reps, 6400, 64, 4)
    if a.soak_n:
        log("memory soak: %d null jobs through one worker" % a.soak_n)
        os.environ.setdefault("SEGQ_BUILD_DIR", os.path.abspath(a.build_dir))
        res["memory"] = soak_memory.soak(a.soak_n, 12, ["single", "groups"], 900)

    res["ratio_null_x1_vs_bullmq_best"] = null1 / best["jobs_per_s"]
    res["ratio_null_x2_vs_bullmq_best"] = res["tput"]["segq null x2"]["jobs_per_s"] / best["jobs_per_s"]
    # Like for like: BullMQ's clock starts at `new Worker` in a node process already running;
    # segq's "from ready" at the moment every worker holds its lease (process start, dynamic
    # loading, connect and permission check left out, as node's start is).
    for w in (1, 2):
        res["ratio_null_x%d_from_ready_vs_bullmq_best" % w] = (
            res["tput"]["segq null x%d" % w]["jobs_per_s_from_ready"] / best["jobs_per_s"])
    res["bullmq_best_concurrency"] = best_conc
    res["elapsed_s"] = time.monotonic() - t_start
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)

    m = res["machine"]
    print("\nsegq queue-path benchmark (HEAD %s): %d CPUs (%s), %s, node %s, bullmq %s; "
          "median of %d runs" % (commit, m["nproc"], m["cpu"], m["redis"].split(" sha=")[0],
                                 m["node"], m["bullmq"], a.reps))
    print("job size: %d bytes (segq null job document = BullMQ job data JSON); null n=%d, otsu n=%d"
          % (job_bytes, a.n, a.otsu_n))
    # worker us/job: the worker processes' whole lifetime (start-up and exit included) over n;
    # steady: from the first result to the last (segq only; /proc/<pid>/stat).
    # from ready: segq's jobs/s from the moment every worker holds its lease (BullMQ's own clock
    # starts at `new Worker`, node already running: its jobs/s is that figure).
    print("\n%-30s %8s %9s %10s %9s %12s %13s %8s %11s %10s" % (
        "throughput (pre-filled)", "jobs/s", "vs BullMQ", "from ready", "vs BullMQ", "redis us/job",
        "worker us/job", "steady", "jobs/script", "bytes/job"))
    for label, t in res["tput"].items():
        steady = t.get("steady_worker_cpu_us_per_job")
        fr = t.get("jobs_per_s_from_ready") or t["jobs_per_s"]
        print("%-30s %8.0f %8.2fx %10.0f %8.2fx %12.1f %13.1f %8s %11.1f %10.0f" % (
            label, t["jobs_per_s"], t["jobs_per_s"] / best["jobs_per_s"], fr, fr / best["jobs_per_s"],
            t["redis_cpu_us_per_job"], t["worker_cpu_us_per_job"],
            "%.1f" % steady if steady is not None else "-", t["jobs_per_script_call"],
            t["bytes_per_job"]))
    print("\n%-30s %9s %9s %9s %9s %9s %12s %11s" % ("latency (open loop)", "offered", "achieved",
                                                    "p50 ms", "p99 ms", "max ms", "redis us/job",
                                                    "jobs/call"))
    for label, t in res["lat"].items():
        print("%-30s %9.0f %9.0f %9.2f %9.2f %9.2f %12s %11s" % (
            label, t["rate"], t["achieved_rate"], t["p50_ms"], t["p99_ms"], t["max_ms"],
            "%.1f" % t["redis_cpu_us_per_job"] if "redis_cpu_us_per_job" in t else "-",
            "%.1f" % t["jobs_per_worker_script_call"] if "jobs_per_worker_script_call" in t else "-"))
    if "profile_scripts" in res:
        print("\nRedis CPU us per job, scripts alone (profile_scripts, min of %d runs):" % a.profile_reps)
        for v, m in res["profile_scripts"].items():
            print("  %-12s enqueue %6.1f  claim %6.1f  ack %6.1f  claim+ack %6.1f" % (
                v, m["enqueue"], m["claim"], m["ack"], m["claim"] + m["ack"]))
    for x in res.get("memory", []):
        print("memory soak %-7s n=%d: %.0f bytes of Redis per finished job; keys without TTL: %s" % (
            x["workload"], x["n"], x["bytes_per_finished_job"], ", ".join(x["keys_without_ttl"])))
    print("\nratio segq null jobs/s / BullMQ best (c=%d): 1 worker %.2fx, 2 workers %.2fx "
          "(from the workers' process start); from ready: %.2fx, %.2fx"
          % (best_conc, res["ratio_null_x1_vs_bullmq_best"], res["ratio_null_x2_vs_bullmq_best"],
             res["ratio_null_x1_from_ready_vs_bullmq_best"],
             res["ratio_null_x2_from_ready_vs_bullmq_best"]))
    print("total %.0f s" % res["elapsed_s"])


if __name__ == "__main__":
    main()
