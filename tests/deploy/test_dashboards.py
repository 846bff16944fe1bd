#!/usr/bin/python3
"""The Grafana dashboard (deploy/grafana/segq.json) and the Prometheus alert rules
(deploy/prometheus/alerts.yml), issue 12 item 4:

- valid JSON / YAML; the four alerts asked for exist (no worker alive, queue growing, dead
  letters rising, GPU memory above 90 %); promtool checks the rules and runs their unit tests
  (alerts_test.yml: each fires on the series that should raise it, not before);
- every metric they use is a family the worker serves (its registry's table,
  `segq-worker --help-metrics`);
- a real Prometheus scrapes a real worker that runs jobs: every dashboard query evaluates
  without error (Grafana variables filled in), those of a CPU worker return data, the model
  variable lists the served models, and every rule loads and evaluates healthy."""
import json
import os
import shutil
import subprocess
import sys
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_deploylib as dl  # noqa: E402
import segq_testlib as tl  # noqa: E402

try:
    import yaml
except ImportError:
    tl.skip("needs python3-yaml (tools/bootstrap.sh installs it)")
tl.require_worker()

DASHBOARD = os.path.join(dl.DEPLOY_DIR, "grafana", "segq.json")
RULES_DIR = os.path.join(dl.DEPLOY_DIR, "prometheus")
ALERTS = os.path.join(RULES_DIR, "alerts.yml")
REQUIRED = {"SegqNoWorkerAlive", "SegqQueueGrowing", "SegqDeadLettersRising", "SegqGpuMemoryHigh",
            "SegqDeviceFailed"}
GPU_ONLY = {"segq_gpu_memory_used_bytes", "segq_gpu_memory_total_bytes", "segq_device_memory_bytes"}


def dashboard_exprs():
    with open(DASHBOARD) as f:
        d = json.load(f)
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return d, out


def alert_rules():
    with open(ALERTS) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def grafana_fill(expr):
    """Grafana's variables as a dashboard user would have them: all models, a 30 s rate window."""
    return expr.replace("$__rate_interval", "30s").replace('"$model"', '".*"')


class Dashboards(unittest.TestCase):
    def test_files_and_metric_names(self):
        d, exprs = dashboard_exprs()
        self.assertTrue(exprs, "a dashboard without queries")
        self.assertEqual(d["uid"], "segq-workers")
        names = {v["name"] for v in d["templating"]["list"]}
        self.assertTrue({"datasource", "model"} <= names)
        for p in d["panels"]:
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p.get("targets"), p["title"])
        rules = alert_rules()
        self.assertTrue(REQUIRED <= {r["alert"] for r in rules}, "alerts missing")
        for r in rules:
            self.assertIn("severity", r["labels"], r["alert"])
            self.assertIn("summary", r["annotations"], r["alert"])
        served = dl.served_sample_names(dl.metric_families())
        used = {}
        for where, expr in exprs + [(r["alert"], r["expr"]) for r in rules]:
            for m in dl.promql_metrics(expr):
                used.setdefault(m, where)
        missing = {m: w for m, w in used.items() if m not in served}
        self.assertEqual(missing, {}, "metrics the worker does not serve (metric: first user)")
        print("%d dashboard queries and %d alert rules use %d metrics, all served"
              % (len(exprs), len(rules), len(used)))

    def test_promtool(self):
        if not shutil.which("promtool"):
            self.skipTest("promtool is not installed (Debian's prometheus package)")
        for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
            p = subprocess.run(["promtool"] + args, cwd=RULES_DIR, capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, "promtool %s:\n%s%s" % (" ".join(args), p.stdout,
                                                                      p.stderr))

    def test_real_prometheus_evaluates_them(self):
        if not shutil.which("prometheus"):
            self.skipTest("prometheus is not installed (Debian's prometheus package)")
        root = tl.tempdir("segq-prom-")
        wport, pport = tl.free_port(), tl.free_port()
        with open(os.path.join(root, "prometheus.yml"), "w") as f:
            yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [ALERTS],
                            "scrape_configs": [{"job_name": "segq-worker", "static_configs": [
                                {"targets": ["127.0.0.1:%d" % wport]}]}]}, f)
        with tl.RedisServer() as rs:
            r = rs.client()
            w = tl.Worker(rs.url, prefix="dash", models="otsu,null", http_port=wport,
                          queue_depth_interval_ms=200)
            w.wait_ready(r, timeout=60)
            prom = tl.spawn(["prometheus", "--config.file=" + os.path.join(root, "prometheus.yml"),
                             "--storage.tsdb.path=" + os.path.join(root, "data"),
                             "--web.listen-address=127.0.0.1:%d" % pport, "--log.level=warn"],
                            log_path=os.path.join(root, "prometheus.log"))
            try:
                api = "http://127.0.0.1:%d/api/v1/" % pport

                def query(q):
                    url = api + "query?" + urllib.parse.urlencode({"query": q})
                    with urllib.request.urlopen(url, timeout=10) as resp:
                        return json.load(resp)

                def get(path):
                    with urllib.request.urlopen(api + path, timeout=10) as resp:
                        return json.load(resp)

                tl.wait_until(lambda: self._ok(lambda: query('up{job="segq-worker"} == 1')
                                               ["data"]["result"]), 60, poll_s=0.5,
                              what="Prometheus scrapes the worker")
                # Jobs over several scrapes, so rates and quantiles have two samples to compare;
                # one bad job for the error panel.
                n = 0
                t_end = time.monotonic() + 8
                while time.monotonic() < t_end:
                    tl.enqueue_raw(r, "dash", "j%d" % n, "otsu",
                                   tl.pack(tl.job_doc("j%d" % n, "otsu", tl.make_jpeg(64, 64))))
                    n += 1
                    time.sleep(0.2)
                tl.enqueue_raw(r, "dash", "bad", "otsu", tl.pack(tl.job_doc(
                    "bad", "otsu", tl.make_jpeg(64, 64), params={"outputs": ["edges"]})))
                tl.wait_for_results(r, "dash", ["j%d" % i for i in range(n)] + ["bad"], timeout=60)
                time.sleep(3)  # a few more scrapes after the last job
                _, exprs = dashboard_exprs()
                empty = []
                for title, expr in exprs:
                    res = query(grafana_fill(expr))
                    self.assertEqual(res["status"], "success", "%s: %s -> %s" % (title, expr, res))
                    if not res["data"]["result"] and not (dl.promql_metrics(expr) & GPU_ONLY):
                        empty.append("%s: %s" % (title, expr))
                self.assertEqual(empty, [], "queries with no data from a CPU worker that ran jobs")
                models = get("label/model/values?" + urllib.parse.urlencode(
                    {"match[]": "segq_jobs_total"}))["data"]
                self.assertEqual(sorted(models), ["null", "otsu"])
                # Every alert rule loaded and evaluates; with a live worker, none is firing.
                rules = tl.wait_until(lambda: self._ok(lambda: [
                    ru for g in get("rules")["data"]["groups"] for ru in g["rules"]
                    if ru.get("lastEvaluation", "").startswith("20")]), 30,
                    what="the rules are evaluated")
                self.assertTrue(REQUIRED <= {ru["name"] for ru in rules})
                for ru in rules:
                    self.assertEqual(ru["health"], "ok", ru)
                    self.assertEqual(ru["state"], "inactive", ru)
            finally:
                tl.stop_process(prom)
                w.stop()

    @staticmethod
    def _ok(fn):
        try:
            return fn()
        except OSError:
            return None


if __name__ == "__main__":
    tl.run_tests()
