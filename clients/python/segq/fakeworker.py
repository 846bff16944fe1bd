"""A stand-in worker for testing client code without the C worker: it drives the real queue
scripts (heartbeat, claim, ack) exactly as segq-worker does and acks every job with a small
fixed result (one 2x1 polygon, an RLE mask, the job's meta). Not for production use.

    /usr/bin/python3 -m segq.fakeworker --url redis://127.0.0.1:PORT [--models otsu,null] [--delay S]
"""
import argparse
import os
import signal
import threading
import time

import msgpack
import redis

from . import proto
from . import schema
from .client import DEFAULT_PREFIX, DEFAULT_URL, load_script

def fetch_claimed(r, prefix, models, flat):
    """The claim script's reply flat (its ARGV models `models`) as segq-worker reads it
    (docs/protocol.md "Fetched claims"): (jobs, gone). jobs: [model, id, payload, attempt,
    enqueued_ms, off, epoch] per job in claim order, as Redis returns them (bytes; attempt an
    int), every document read with one MGET of the jobs' P:doc:<id> (a fetched job's enqueue time
    and epoch from that key's header, its offset 1); gone: [(model, id)] of jobs without a
    document, which the caller acks with how "!"."""
    out, i = [], 0
    while i < len(flat):
        if isinstance(flat[i], int):
            m = models[flat[i] - 1]
            out.append([m.encode() if isinstance(m, str) else m, flat[i + 1], None, 1, None, None, None])
            i += 2
        else:
            model, id, attempt, enq, off, epoch = flat[i:i + 6]
            out.append([model, id, None, attempt, enq, off, epoch])
            i += 6
    if not out:
        return [], []
    docs = r.mget(["%s:%s:%s" % (prefix, schema.KEY["DOC"], j[1].decode()) for j in out])
    jobs, gone = [], []
    for j, v in zip(out, docs):
        if v is None:
            gone.append((j[0], j[1]))
            continue
        head, j[2] = v.split(b"\n", 1)
        if j[4] is None:
            j[4], j[6] = head.split(b" ", 1)
            j[5] = b"1"
        jobs.append(j)
    return jobs, gone


def gone_items(gone):
    """The ack's per-job arguments for fetch_claimed's gone jobs: (id, model, "!") each."""
    return [x for model, id in gone for x in (id, model, "!")]


class FakeWorker:
    def __init__(self, url, prefix=DEFAULT_PREFIX, name="fakew", models=("otsu",), result_ttl_s=3600):
        self.r = redis.Redis.from_url(url)
        self.prefix, self.name, self.token = prefix, name, "tok-" + name
        self.models, self.ttl = list(models), result_ttl_s
        self.s = {n: self.r.register_script(load_script(n))
                  for n in ("heartbeat", "claim", "ack", "unregister", "progress", "release")}
        self.heartbeat()

    def heartbeat(self, lease_ms=30000):
        return self.s["heartbeat"](keys=[], args=[self.prefix, self.name, self.token, lease_ms,
                                                  int(time.time() * 1000)] + self.models)

    def claim(self, n=10, max_bytes=schema.DEFAULT["MAX_CLAIM_BYTES"]):
        """[(model, id, payload, attempt, off, epoch)] for up to n claimed jobs (off and epoch
        b"" unless the job runs fast: docs/protocol.md "Fast runs")."""
        out = self.s["claim"](keys=[], args=[self.prefix, self.name, self.token, n, max_bytes,
                                             int(time.time() * 1000), self.ttl] + self.models)
        jobs, gone = fetch_claimed(self.r, self.prefix, self.models, out)
        if gone:
            self.s["ack"](keys=[], args=[self.prefix, self.name, self.token, int(time.time() * 1000),
                                         self.ttl, schema.DEFAULT["DEAD_TTL_S"], 3, ""] +
                          gone_items(gone))
        return [(j[0].decode(), j[1].decode(), j[2], int(j[3]), j[5], j[6]) for j in jobs]

    def result_for(self, model, id, payload, attempt, batch, fail):
        job = proto.decode_job(payload)
        code = "model_error" if id in fail else ""
        return {"v": 1, "id": id, "status": "error" if code else "ok",
                "error": {"code": code, "message": "fake failure"} if code else None,
                "model": model, "width": 4, "height": 2,
                "polygons": [] if code else [{"points": [0.0, 0.0, 2.0, 0.0, 2.0, 1.0, 0.0, 1.0],
                                              "area": 2.0, "bbox": [0, 0, 2, 1]}],
                "mask": {"encoding": "rle", "width": 4, "height": 2, "counts": [0, 2, 6]},
                "timings": {"queue_wait_us": 0, "decode_us": 0, "inference_us": 0, "postprocess_us": 0,
                            "total_us": 5},
                "worker": self.name, "batch_size": batch, "attempt": attempt, "meta": job.get("meta")}, code

    def ack(self, jobs, fail=(), retry_ms=0, max_attempts=3):
        """Acks jobs (as claim returned them); ids in `fail` fail with model_error, transient
        (retried after retry_ms) when retry_ms > 0. Returns the ack script's codes."""
        now = int(time.time() * 1000)
        gen = next((j[5].rsplit(b".", 1)[0] for j in jobs if j[5]), b"")
        args = [self.prefix, self.name, self.token, now, self.ttl,
                schema.DEFAULT["DEAD_TTL_S"], max_attempts, gen]
        for model, id, payload, attempt, off, epoch in jobs:
            res, code = self.result_for(model, id, payload, attempt, len(jobs), fail)
            doc = msgpack.packb(res, use_bin_type=True)
            if code:
                args += [id, doc, "%s:%d" % (code, retry_ms)]
            elif epoch and epoch.rsplit(b".", 1)[0] == gen:
                # As segq-worker does: the record of a fast run is built here.
                args += [id, proto.fast_record(id, off, epoch, attempt, self.name, now, doc), ""]
            else:
                args += [id, doc, "-"]
        return self.s["ack"](keys=[], args=args)

    def progress(self, items):
        """items: [(id, steps_done, steps_total)]. Returns how many jobs were updated."""
        args = [self.prefix, self.name, self.token, int(time.time() * 1000), self.ttl]
        for id, done, total in items:
            args += [id, done, total]
        return self.s["progress"](keys=[], args=args)

    def release(self, ids):
        """Hands jobs back unrun (attempt refunded). Returns how many."""
        return self.s["release"](keys=[], args=[self.prefix, self.name, self.token,
                                                int(time.time() * 1000), self.ttl] + list(ids))

    def run_all(self, delay=0.0, per_claim=1, fail=()):
        """Claims and acks until the queues are empty, sleeping `delay` between steps."""
        while True:
            jobs = self.claim(per_claim)
            if not jobs:
                return
            time.sleep(delay)
            self.ack(jobs, fail)
            time.sleep(delay)

    def serve(self, stop, delay=0.0, per_claim=2, fail=()):
        """Serves until the threading.Event stop is set (polls every 50 ms; tests only)."""
        last_hb = 0.0
        while not stop.is_set():
            if time.monotonic() - last_hb > 5:
                self.heartbeat()
                last_hb = time.monotonic()
            jobs = self.claim(per_claim)
            if not jobs:
                stop.wait(0.05)
                continue
            time.sleep(delay)
            self.ack(jobs, fail)

    def close(self):
        self.s["unregister"](keys=[], args=[self.prefix, self.name, self.token])


def main():
    ap = argparse.ArgumentParser(description="segq fake worker (tests only)")
    ap.add_argument("--url", default=os.environ.get("SEGQ_REDIS_URL", DEFAULT_URL))
    ap.add_argument("--prefix", default=os.environ.get("SEGQ_PREFIX", DEFAULT_PREFIX))
    ap.add_argument("--models", default="otsu,null")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds per batch")
    ap.add_argument("--name", default="fakew-%d" % os.getpid())
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    w = FakeWorker(args.url, args.prefix, args.name, args.models.split(","))
    try:
        w.serve(stop, delay=args.delay)
    finally:
        w.close()


if __name__ == "__main__":
    main()
