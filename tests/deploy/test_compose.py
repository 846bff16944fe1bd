#!/usr/bin/python3
"""compose.yml (issue 12 item 2), checked against the binaries, without a Docker engine:

- Redis keeps data (AOF, a named volume) and never evicts (maxmemory + noeviction);
- every worker service: a GPU reservation (the gpu profile, CUDA image, SEGQ_DEVICE=cuda) or
  none (the cpu profile, CPU image); every SEGQ_* variable is one segq-worker reads, and the
  whole environment passes `segq-worker --check-models` with the mounted model repository (so
  the values parse and the shipped cellseg-unet it serves is valid); the Redis URL names the
  redis service and port; the health endpoint is on, published inside the network, and the
  healthcheck is the image's script on a path a real worker answers 200 on; the stop grace
  period exceeds the drain timeout;
- bind mounts exist in the repository; the monitoring profile's Prometheus finds its rules;
- a bridge service, once there, is checked the same way against segq-bridge --help-markdown."""
import os
import re
import shlex
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_deploylib as dl  # noqa: E402
import segq_testlib as tl  # noqa: E402

try:
    import yaml
except ImportError:
    tl.skip("needs python3-yaml (tools/bootstrap.sh installs it)")
tl.require_worker()

COMPOSE = os.path.join(tl.SOURCE_DIR, "compose.yml")
BUILD_DIR = os.environ.get("SEGQ_BUILD_DIR") or os.path.join(tl.SOURCE_DIR, "build")


def seconds(v):
    """A compose duration ("45s", "1m30s", 40) in seconds."""
    if isinstance(v, (int, float)):
        return float(v)
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(v)):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def binds(service):
    """[(host path, container path, options)] of the service's bind mounts (short syntax)."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") == "bind":
                out.append((v["source"], v["target"], "ro" if v.get("read_only") else ""))
            continue
        parts = v.split(":")
        if parts[0].startswith((".", "/")):
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def container_ports(service):
    """Container ports the service exposes or publishes."""
    ports = set(str(p) for p in service.get("expose") or [])
    for p in service.get("ports") or []:
        p = str(p["target"]) if isinstance(p, dict) else str(p)
        ports.add(p.split(":")[-1].split("/")[0])
    return ports


def is_worker(service):
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return "SEGQ_MODELS" in env_of(service) or dockerfile in ("deploy/Dockerfile",
                                                             "deploy/Dockerfile.cuda")


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(COMPOSE) as f:
            cls.doc = yaml.safe_load(f)
        cls.services = cls.doc["services"]
        cls.worker_envs = dl.option_envs()

    def test_redis_keeps_and_never_evicts(self):
        redis = self.services["redis"]
        cmd = redis["command"]
        args = cmd if isinstance(cmd, list) else shlex.split(cmd)
        opts = {a[2:]: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
        self.assertEqual(opts.get("appendonly"), "yes")
        self.assertEqual(opts.get("maxmemory-policy"), "noeviction")
        self.assertIn("maxmemory", opts, "noeviction only applies with a maxmemory")
        self.assertIn("healthcheck", redis)
        named = [v.split(":")[0] for v in redis.get("volumes", []) if ":/data" in v]
        self.assertTrue(named and named[0] in (self.doc.get("volumes") or {}),
                        "Redis' /data must be a declared named volume")
        self.assertNotIn("profiles", redis, "Redis starts with every profile")

    def test_gpu_and_cpu_workers(self):
        workers = {n: s for n, s in self.services.items() if is_worker(s)}
        gpu = {n: s for n, s in workers.items() if env_of(s).get("SEGQ_DEVICE", "auto").startswith("cuda")}
        cpu = {n: s for n, s in workers.items() if env_of(s).get("SEGQ_DEVICE") == "cpu"}
        self.assertTrue(gpu, "no GPU worker")
        self.assertTrue(cpu, "no CPU-only worker")
        for name, s in gpu.items():
            devices = s["deploy"]["resources"]["reservations"]["devices"]
            self.assertTrue(any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia"
                                for d in devices), name)
            self.assertEqual(s["build"]["dockerfile"], "deploy/Dockerfile.cuda", name)
            self.assertIn("gpu", s.get("profiles", []), name)
        for name, s in cpu.items():
            self.assertNotIn("deploy", s, "%s: a CPU worker reserves no GPU" % name)
            self.assertEqual(s["build"]["dockerfile"], "deploy/Dockerfile", name)
            self.assertIn("cpu", s.get("profiles", []), name)

    def test_worker_settings_against_the_binary(self):
        redis_port = "6379"
        for name, s in self.services.items():
            if not is_worker(s):
                continue
            env = env_of(s)
            unknown = sorted(k for k in env if k not in self.worker_envs)
            self.assertEqual(unknown, [], "%s sets variables segq-worker does not read" % name)
            self.assertIn("cellseg-unet", env["SEGQ_MODELS"].split(","), name)
            url = env["SEGQ_REDIS_URL"]
            m = re.match(r"redis://(?:[^@]*@)?([^:/]+)(?::(\d+))?", url)
            self.assertTrue(m and m.group(1) in self.services, "%s: %s" % (name, url))
            self.assertEqual(m.group(2) or "6379", redis_port)
            self.assertIn("redis", s.get("depends_on", {}))
            self.assertEqual(env.get("SEGQ_HTTP_HOST"), "0.0.0.0", name)
            port = env.get("SEGQ_HTTP_PORT", "0")
            self.assertNotEqual(port, "0", "%s: the health endpoint must be on" % name)
            self.assertIn(port, container_ports(s), name)
            self.assertGreater(seconds(s["stop_grace_period"]),
                               float(env.get("SEGQ_DRAIN_TIMEOUT_S", "30")), name)
            hc = s["healthcheck"]["test"]
            self.assertEqual(hc[:2], ["CMD", "/usr/local/bin/segq-healthcheck"], name)
            # The mounted repository is what the worker serves: check it with this environment.
            mounts = {target: host for host, target, _ in binds(s)}
            self.assertIn(env["SEGQ_MODEL_DIR"], mounts, "%s: SEGQ_MODEL_DIR is not mounted" % name)
            host = os.path.normpath(os.path.join(tl.SOURCE_DIR, mounts[env["SEGQ_MODEL_DIR"]]))
            rc, out = dl.check_models_env(env, host)
            self.assertEqual(rc, 0, "%s: segq-worker --check-models with its environment:\n%s"
                             % (name, out))

    def test_healthcheck_path_is_served(self):
        paths = {s["healthcheck"]["test"][2] for s in self.services.values() if is_worker(s)}
        port = tl.free_port()
        with tl.RedisServer() as rs:
            w = tl.Worker(rs.url, prefix="cmp", models="null", http_port=port)
            w.wait_ready(rs.client(), timeout=60)
            for path in paths:
                status = tl.wait_until(lambda: dl.http_get(port, path)[0] == 200 or None, 30,
                                       what="GET %s answers 200" % path)
                self.assertTrue(status)
            w.stop()

    def test_bind_mounts_exist(self):
        for name, s in self.services.items():
            for host, target, opts in binds(s):
                path = os.path.join(tl.SOURCE_DIR, host)
                self.assertTrue(os.path.exists(path), "%s mounts %s, which is not in the repository"
                                % (name, host))
                self.assertEqual(opts, "ro", "%s: mount %s read-only" % (name, host))
        prom = self.services.get("prometheus")
        if prom:
            conf = [h for h, t, _ in binds(prom) if t == "/etc/prometheus"][0]
            with open(os.path.join(tl.SOURCE_DIR, conf, "prometheus.yml")) as f:
                pconf = yaml.safe_load(f)
            for rf in pconf["rule_files"]:
                self.assertTrue(os.path.isfile(os.path.join(tl.SOURCE_DIR, conf, rf)), rf)
            names = {n for sc in pconf["scrape_configs"] for d in sc.get("dns_sd_configs", [])
                     for n in d["names"]}
            workers = {n for n, s in self.services.items() if is_worker(s)}
            self.assertEqual(names, workers, "Prometheus must scrape every worker service")

    def test_bridge_service(self):
        bridges = {n: s for n, s in self.services.items()
                   if "bridge" in n or "segq-bridge" in str(s.get("command", ""))
                   or "SEGQ_BRIDGE" in " ".join(env_of(s))}
        if not bridges:
            self.skipTest("no bridge service in compose.yml yet (the bridge branch adds it)")
        binary = os.path.join(BUILD_DIR, "bridge", "segq-bridge")
        if not os.path.isfile(binary):
            self.skipTest("compose.yml has a bridge service but %s is not built" % binary)
        opts = dl.worker_options(binary)
        envs = {o["env"] for o in opts.values()}
        for name, s in bridges.items():
            env = env_of(s)
            unknown = sorted(k for k in env if k.startswith("SEGQ_") and k not in envs)
            self.assertEqual(unknown, [], "%s sets variables segq-bridge does not read" % name)
            # Every port the bridge listens on (its value here, else the binary's default) is
            # published or exposed.
            for o in opts.values():
                if o["env"].endswith("_PORT"):
                    v = env.get(o["env"], o["default"])
                    if v not in ("", "0"):
                        self.assertIn(v, container_ports(s), "%s: %s=%s is not exposed"
                                      % (name, o["env"], v))
            url = env.get("SEGQ_REDIS_URL") or env.get("SEGQ_BRIDGE_REDIS_URL")
            if url:
                host = re.match(r"redis(?:\+sentinel)?://(?:[^@]*@)?([^:/,]+)", url).group(1)
                self.assertIn(host, self.services, "%s: Redis host %s" % (name, host))


if __name__ == "__main__":
    tl.run_tests()
