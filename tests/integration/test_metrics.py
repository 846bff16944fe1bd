#!/usr/bin/python3
"""/metrics of a real worker (issue 12 item 4), parsed by prometheus_client's text parser: # HELP
and # TYPE on every family; jobs by model and outcome and by error code; inference count vs
execution count; histograms of queue wait, decode, inference, postprocess, end to end and batch
size (cumulative buckets, +Inf = count = jobs); jobs in flight; the queue depth of every tenant's
queue as Redis holds it; dead letters; sweeper recoveries (a second worker killed with jobs in
hand); Redis reconnects (Redis restarted); process_start_time_seconds; no GPU families on the
CPU."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402
import segq_metrics as sm  # noqa: E402

tl.require_worker()
if not sm.available():
    tl.skip("needs python3-prometheus-client (tools/bootstrap.sh installs it)")

P = "met"
HISTOGRAMS = ("segq_queue_wait_seconds", "segq_decode_seconds", "segq_inference_seconds",
              "segq_postprocess_seconds", "segq_job_duration_seconds", "segq_batch_size")


def job(id, model="otsu", **extra):
    return tl.pack(tl.job_doc(id, model, tl.make_jpeg(96, 96), **extra))


class Metrics(unittest.TestCase):
    def setUp(self):
        self.rs = tl.RedisServer()
        self.r = self.rs.client()
        self.port = tl.free_port()
        self.w = tl.Worker(self.rs.url, prefix=P, worker_id="met-w1", models="otsu,null",
                           http_port=self.port, queue_depth_interval_ms=100, lease_ttl_ms=1500)
        self.w.wait_ready(self.r, timeout=60)

    def tearDown(self):
        if self.w:
            self.w.stop()
        self.rs.stop()

    def scrape(self):
        return sm.scrape(self.port)

    def wait_value(self, family, want, timeout=30, **labels):
        return tl.wait_until(lambda: sm.value(self.scrape(), family, **labels) == want, timeout,
                             poll_s=0.1, what="%s%s == %s" % (family, labels, want))

    def test_format_jobs_and_histograms(self):
        ids = ["ok-%d" % i for i in range(6)]
        for i in ids:
            tl.enqueue_raw(self.r, P, i, "otsu", job(i))
        for i in ("bad-1", "bad-2"):  # an unknown output: invalid_field_value
            tl.enqueue_raw(self.r, P, i, "otsu", job(i, params={"outputs": ["edges"]}))
        tl.enqueue_raw(self.r, P, "n-1", "null", job("n-1", "null"))
        tl.wait_for_results(self.r, P, ids + ["bad-1", "bad-2", "n-1"], timeout=60)
        self.wait_value("segq_jobs", 6, model="otsu", outcome="ok")

        ctype, text = sm.scrape_text(self.port)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        fams = sm.parse(text)
        # Every family has HELP and TYPE lines (the parser would otherwise call it untyped).
        for name, f in fams.items():
            self.assertNotEqual(f.type, "untyped", name)
            self.assertTrue(f.documentation, "%s has no # HELP" % name)
            exposed = name + "_total" if f.type == "counter" else name  # the parser drops _total
            self.assertIn("# HELP %s " % exposed, text)
            self.assertIn("# TYPE %s %s" % (exposed, f.type), text)
        v = lambda fam, **l: sm.value(fams, fam, **l)  # noqa: E731
        self.assertEqual(v("segq_jobs", model="otsu", outcome="failed"), 2)
        self.assertEqual(v("segq_jobs", model="otsu", outcome="dropped"), 0)
        self.assertEqual(v("segq_jobs", model="null", outcome="ok"), 1)
        self.assertEqual(v("segq_job_errors", model="otsu", code="invalid_field_value"), 2)
        # Failed jobs never ran: 6 otsu samples, in at most 6 executions.
        self.assertEqual(v("segq_inference_count", model="otsu"), 6)
        execs = v("segq_inference_exec_count", model="otsu")
        self.assertTrue(1 <= execs <= 6, execs)
        self.assertEqual(v("segq_jobs_in_flight", model="otsu"), 0)
        for h in HISTOGRAMS:
            self.assertEqual(fams[h].type, "histogram", h)
            buckets = [(float(s.labels["le"]), s.value) for s in fams[h].samples
                       if s.name == h + "_bucket" and s.labels["model"] == "otsu"]
            self.assertGreater(len(buckets), 5, h)
            self.assertEqual(buckets[-1][0], float("inf"), h)
            self.assertEqual([c for _, c in buckets], sorted(c for _, c in buckets), h)  # cumulative
            count = sm.value(fams, h, sample=h + "_count", model="otsu")
            self.assertEqual(buckets[-1][1], count, h)
            want = execs if h in ("segq_inference_seconds", "segq_batch_size") else 8
            self.assertEqual(count, want, h)
            self.assertGreaterEqual(sm.value(fams, h, sample=h + "_sum", model="otsu"), 0, h)
        self.assertEqual(sm.value(fams, "segq_batch_size", sample="segq_batch_size_sum",
                                  model="otsu"), 6)
        start = v("process_start_time_seconds")
        self.assertTrue(time.time() - 600 < start <= time.time(), start)
        self.assertEqual([s.value for s in fams["segq_build_info"].samples], [1])
        self.assertEqual(v("segq_lease_ok"), 1)
        self.assertEqual(v("segq_redis_connected", conn="command"), 1)
        self.assertGreater(v("segq_device_busy_seconds", device="cpu"), 0)
        self.assertEqual(v("segq_draining"), 0)
        self.assertGreater(v("segq_uptime_seconds"), 0)
        # The loop's own counts reach the registry with its 200 ms snapshot.
        tl.wait_until(lambda: sm.value(self.scrape(), "segq_batches") >= execs, 30, poll_s=0.1,
                      what="segq_batches_total >= %d" % execs)
        self.wait_value("segq_jobs_held", 0)
        # No GPU on this worker: no GPU families at all, rather than zeros.
        self.assertNotIn("segq_gpu_memory_used_bytes", fams)
        self.assertNotIn("segq_gpu_memory_total_bytes", fams)

    def test_queue_depth_counts_every_tenant(self):
        # Take the worker's lease away (another token): it stops claiming but keeps reading the
        # depth, so what waits in Redis stays put and must show exactly.
        self.r.set(tl.key(P, "worker", "met-w1"), "someone-else", px=600000)
        self.wait_value("segq_lease_ok", 0)
        per_tenant = {"default": 4, "acme": 3, "lab-7": 2}
        for tenant, n in per_tenant.items():
            for k in range(n):
                id = "d-%s-%d" % (tenant, k)
                tl.enqueue_raw(self.r, P, id, "otsu", job(id), tenant=tenant)
        tl.enqueue_raw(self.r, P, "d-null", "null", job("d-null", "null"))
        # A queued id whose payload is gone: the claim will dead-letter it (job_not_found).
        tl.enqueue_raw(self.r, P, "d-lost", "null", job("d-lost", "null"))
        self.r.delete(tl.key(P, "job", "d-lost"), tl.key(P, "doc", "d-lost"))
        self.wait_value("segq_queue_depth", 9, model="otsu")
        self.wait_value("segq_queue_depth", 2, model="null")
        self.assertEqual(sm.value(self.scrape(), "segq_dead_letters"), 0)
        # The lease back: everything is claimed, the depth falls to 0, the lost job is dead.
        self.r.delete(tl.key(P, "worker", "met-w1"))
        tl.wait_for_results(self.r, P, ["d-%s-%d" % (t, k) for t, n in per_tenant.items()
                                        for k in range(n)] + ["d-null"], timeout=60)
        self.wait_value("segq_queue_depth", 0, model="otsu")
        self.wait_value("segq_queue_depth", 0, model="null")
        self.wait_value("segq_dead_letters", 1)

    def test_sweeper_and_reconnects(self):
        # A second worker takes null jobs (queued before it starts, so one claim takes them all)
        # into a batcher that waits a minute, then dies holding them.
        self.w.stop()
        self.w = None
        for k in range(5):
            tl.enqueue_raw(self.r, P, "s-%d" % k, "null", job("s-%d" % k, "null"))
        w2 = tl.Worker(self.rs.url, prefix=P, worker_id="met-w2", models="null", lease_ttl_ms=1500,
                       max_batch=100, max_delay_us=60000000)
        w2.wait_ready(self.r, timeout=60)
        tl.wait_until(lambda: self.r.llen(tl.key(P, "inflight", "met-w2")) == 5, 30,
                      what="w2 holds the 5 jobs")
        w2.kill9()
        self.w = tl.Worker(self.rs.url, prefix=P, worker_id="met-w3", models="otsu,null",
                           http_port=self.port, queue_depth_interval_ms=100, lease_ttl_ms=1500)
        self.w.wait_ready(self.r, timeout=60)
        tl.wait_for_results(self.r, P, ["s-%d" % k for k in range(5)], timeout=60)
        self.wait_value("segq_sweeper_recovered_jobs", 5)
        self.assertEqual(sm.value(self.scrape(), "segq_redis_reconnects", conn="command"), 0)
        self.rs.restart()
        self.wait_value("segq_redis_reconnects", 1, conn="command", timeout=60)
        self.wait_value("segq_redis_reconnects", 1, conn="blocking", timeout=60)
        self.wait_value("segq_redis_reconnects", 1, conn="lease", timeout=60)
        self.wait_value("segq_redis_connected", 1, conn="blocking", timeout=60)
        self.wait_value("segq_redis_connected", 1, conn="lease", timeout=60)


if __name__ == "__main__":
    tl.run_tests()
