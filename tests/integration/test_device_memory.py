#!/usr/bin/python3
"""Device memory and devices through the real worker (issue 7 items 4 and 6), on the test-only
fault backend of segq-worker-fault (tests/support/fault_backend.c) with a real redis-server:
an out-of-memory batch is split in halves until it fits and every job succeeds; a job that does
not fit even alone fails with device_out_of_memory and the worker carries on; a model that does
not fit at batch 1 stops the worker at start with the reason; device memory above 95% shows as a
smaller effective max batch on /metrics; two devices with two streams each are four executor
contexts and batches run on both devices; a worker claims nothing before every context has
warmed up (item 3: sq_pipeline_warm, segq_ready on /metrics)."""
import os
import re
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker(fault=True)
MODEL_DIR = os.path.join(tl.SOURCE_DIR, "models")


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as f:
        return f.read().decode()


def metric(text, name, model="cellseg-unet"):
    m = re.search(r'^%s\{model="%s"[^}]*\} (\S+)$' % (re.escape(name), re.escape(model)), text,
                  re.M)
    return float(m.group(1)) if m else None


class DeviceMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.rs.stop()

    def start(self, prefix, device, **flags):
        flags.setdefault("models", "cellseg-unet")
        return tl.Worker(self.rs.url, prefix=prefix, model_dir=MODEL_DIR, fault=True,
                         device=device, **flags)

    def submit(self, prefix, n, w=300, h=300):
        import segq
        c = segq.Client(self.rs.url, prefix=prefix)
        img = tl.make_jpeg(w, h, disks=[(80, 80, 30), (200, 180, 40)])
        ids = ["%s-%02d" % (prefix, i) for i in range(n)]
        c.submit_many([img] * n, "cellseg-unet", ids=ids)
        return ids

    def test_oom_batches_split_until_they_fit(self):
        port = tl.free_port()
        w = self.start("om", "fault:oom_above=2", max_batch=4, http_port=port)
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        ids = self.submit("om", 6)  # 4 tiles each: 16-tile chunks that must come down to 2
        res = tl.wait_for_results(r, "om", ids, timeout=240, stall_s=120)
        for i in ids:
            self.assertEqual(res[i]["status"], "ok", res[i])
            self.assertGreater(len(res[i]["polygons"]), 0)
        m = metrics(port)
        self.assertGreater(metric(m, "segq_model_oom_splits_total"), 0)
        self.assertLessEqual(metric(m, "segq_model_effective_max_batch"), 2)
        self.assertIn("splitting the batch in halves", w.log())
        w.sigterm()
        self.assertEqual(w.wait(60), 0)

    def test_a_job_fails_for_memory_only_alone(self):
        oom = os.path.join(tl.tempdir("segq-oom-"), "oom")
        port = tl.free_port()
        w = self.start("oa", "fault:oom_file=%s" % oom, max_batch=3, http_port=port)
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        tl.wait_until(lambda: "segq_ready 1" in metrics(port), 60, what="warm")
        open(oom, "w").close()  # from now on nothing fits, not even one tile
        ids = self.submit("oa", 3, 96, 80)
        res = tl.wait_for_results(r, "oa", ids, timeout=240, stall_s=120)
        for i in ids:
            self.assertEqual(res[i]["status"], "error")
            self.assertEqual(res[i]["error"]["code"], "device_out_of_memory", res[i])
            self.assertIn("even for one tile", res[i]["error"]["message"])
        self.assertTrue(w.alive(), "out of memory is not a device error: the worker stays")
        os.unlink(oom)  # memory is back: jobs run again
        import segq
        job = segq.Client(self.rs.url, prefix="oa").submit(tl.make_jpeg(96, 80),
                                                           model="cellseg-unet")
        self.assertEqual(segq.Client(self.rs.url, prefix="oa").wait(job, timeout=120)["status"],
                         "ok")
        w.sigterm()
        self.assertEqual(w.wait(60), 0)

    def test_warm_up_caps_a_batch_that_does_not_fit(self):
        port = tl.free_port()
        w = self.start("ow", "fault:oom_above=4,graphs=1", http_port=port)
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        tl.wait_until(lambda: "segq_ready 1" in metrics(port), 60, what="warm")
        self.assertLessEqual(metric(metrics(port), "segq_model_effective_max_batch"), 4)
        self.assertIn("warm-up: batch does not fit", w.log())
        w.sigterm()
        self.assertEqual(w.wait(60), 0)

    def test_model_that_cannot_fit_stops_the_worker(self):
        w = self.start("ob", "fault:total_mb=1000,free_mb=10")
        self.assertEqual(w.wait(60), 1, w.log())
        self.assertIn("cannot hold it even at batch 1", w.log())

    def test_pressure_shrinks_the_effective_max_batch(self):
        memfile = os.path.join(tl.tempdir("segq-mem-"), "mem")
        with open(memfile, "w") as f:
            f.write("30000 32000\n")
        port = tl.free_port()
        w = self.start("op", "fault:mem_file=%s" % memfile, http_port=port)
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        ids = self.submit("op", 1, 96, 80)
        tl.wait_for_results(r, "op", ids, timeout=120)
        self.assertEqual(metric(metrics(port), "segq_model_effective_max_batch"), 16)
        with open(memfile, "w") as f:
            f.write("1000 32000\n")  # 96.9% used
        time.sleep(0.3)  # at least the 200 ms between two looks at the device
        import segq
        c = segq.Client(self.rs.url, prefix="op")
        job = c.submit(tl.make_jpeg(96, 80), model="cellseg-unet")
        self.assertEqual(c.wait(job, timeout=120)["status"], "ok")
        # /metrics reads the snapshot the loop publishes every 200 ms: wait for the one after it.
        tl.wait_until(lambda: metric(metrics(port), "segq_model_effective_max_batch") == 8, 10,
                      what="effective max batch 8 on /metrics")
        m = metrics(port)
        free = re.search(r'segq_device_memory_bytes\{model="cellseg-unet",kind="free"\} (\d+)', m)
        self.assertIsNotNone(free)
        self.assertEqual(int(free.group(1)), 1000 << 20)
        # The same facts through the metrics registry (worker/metrics.c, issue 12 item 4): HELP
        # and TYPE on the device families, the device's used/total, parsed as Prometheus does.
        import segq_metrics as sm
        if sm.available():
            fams = sm.parse(m)
            for name in ("segq_model_effective_max_batch", "segq_model_oom_splits",
                         "segq_device_memory_bytes", "segq_gpu_memory_used_bytes", "segq_ready"):
                self.assertIn(name, fams)
                self.assertTrue(fams[name].documentation, name)
            self.assertEqual(sm.value(fams, "segq_gpu_memory_total_bytes", device="fault:0"),
                             32000 << 20)
            self.assertEqual(sm.value(fams, "segq_gpu_memory_used_bytes", device="fault:0"),
                             31000 << 20)
        self.assertIn("device memory above 95% used", w.log())
        w.sigterm()
        self.assertEqual(w.wait(60), 0)

    def test_claims_wait_for_warm_up(self):
        port = tl.free_port()
        # every run takes 2 s, the warm-up run too: the worker is registered but not warm
        w = self.start("ow2", "fault:delay_ms=2000", http_port=port, log_level="debug")
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        ids = self.submit("ow2", 2, 96, 80)
        tl.wait_until(lambda: "segq_ready" in metrics(port), 30, what="metrics")
        m = metrics(port)
        if "segq_ready 0" in m:  # still warming: nothing may have been claimed
            self.assertEqual(r.llen(w.inflight_key()), 0, "claimed before warm-up finished")
            self.assertEqual(tl.queued_count(r, "ow2"), 2)
        res = tl.wait_for_results(r, "ow2", ids, timeout=120)
        self.assertTrue(all(res[i]["status"] == "ok" for i in ids))
        log = w.log()
        self.assertLess(log.index('msg="warm"'), log.index('msg="claimed"'),
                        "the first claim came before the warm-up ended")
        self.assertIn("segq_ready 1", metrics(port))
        w.sigterm()
        self.assertEqual(w.wait(60), 0)

    def test_two_devices_two_streams(self):
        log = os.path.join(tl.tempdir("segq-runs-"), "runs")
        w = self.start("od", "fault:devices=2,delay_ms=100,log=%s" % log, streams=2, max_batch=1,
                       max_inflight_batches=8)
        r = self.rs.client()
        w.wait_ready(r, timeout=60)
        self.assertRegex(w.log(), r"model loaded.*devices=2 contexts=4|contexts=4.*devices=2")
        ids = self.submit("od", 12, 96, 80)
        res = tl.wait_for_results(r, "od", ids, timeout=240, stall_s=120)
        self.assertTrue(all(res[i]["status"] == "ok" for i in ids))
        with open(log) as f:
            runs = f.read()
        self.assertIn("run fault:0 ", runs)
        self.assertIn("run fault:1 ", runs)
        w.sigterm()
        self.assertEqual(w.wait(60), 0)


if __name__ == "__main__":
    tl.run_tests()
