#!/usr/bin/python3
"""The container images (deploy/Dockerfile, deploy/Dockerfile.cuda, .dockerignore), checked
without a Docker engine:

- the CPU image's runtime stage installs the package of every NEEDED library of every binary it
  copies from the build stage, read from this build's binaries (objdump -p, ldd, dpkg-query -S
  through deploy/runtime_packages.py), so a library another change adds is caught here, not at
  the container's first start;
- the CUDA image builds on the cuDNN devel image with -DSEGQ_CUDA=ON, runs on the cuDNN runtime
  image of the same tag, and installs what runtime_packages.py prints in its build stage (checked
  on a CUDA build of this tree when there is one: every library resolves);
- both run as a numeric non-root user and have a HEALTHCHECK, whose script really answers
  healthy / unhealthy against a real worker here;
- the build context (.dockerignore) leaves out every file git ignores (build*/, node_modules,
  out/, ...) and keeps every tracked file the build needs."""
import glob
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_deploylib as dl  # noqa: E402
import segq_testlib as tl  # noqa: E402

sys.path.insert(0, dl.DEPLOY_DIR)
import runtime_packages  # noqa: E402

BUILD_DIR = os.environ.get("SEGQ_BUILD_DIR") or os.path.join(tl.SOURCE_DIR, "build")
CPU = os.path.join(dl.DEPLOY_DIR, "Dockerfile")
CUDA = os.path.join(dl.DEPLOY_DIR, "Dockerfile.cuda")
# Packages an image installs on purpose although no NEEDED entry names them.
DELIBERATE = {"ca-certificates",        # TLS roots, for whatever the image talks to
              "libwebsockets-evlib-uv",  # libwebsockets loads its libuv event lib at start
              "libmicrohttpd12"}         # the worker's HTTP endpoint on libmicrohttpd (session)


def debian_dockerfiles():
    """Every deploy/Dockerfile* whose runtime stage is Debian 12 (the CUDA one is Ubuntu)."""
    out = []
    for name in sorted(os.listdir(dl.DEPLOY_DIR)):
        if name.startswith("Dockerfile"):
            stages = dl.parse_dockerfile(os.path.join(dl.DEPLOY_DIR, name))
            if stages[-1].base.startswith("debian:12"):
                out.append((name, stages))
    return out


def build_stage_binaries(stages, build_dir=BUILD_DIR):
    """{image path: host path} of the files the runtime stage copies out of the build tree of
    the build stage (WORKDIR + /build/...), mapped into this machine's build directory."""
    build = dl.stage_by_name(stages, "build")
    workdir = build.last("WORKDIR").args if build.last("WORKDIR") else "/"
    prefix = workdir.rstrip("/") + "/build/"
    out = {}
    for src_stage, sources, dest, _ in dl.copies(stages[-1]):
        if src_stage != "build":
            continue
        for s in sources:
            if s.startswith(prefix) and not s.endswith(".txt"):
                out[s] = os.path.join(build_dir, s[len(prefix):])
    return out


def sanitized_build(build_dir=BUILD_DIR):
    """True for a SEGQ_SANITIZE=ON tree (build-asan): its binaries also need the sanitizer
    runtimes, which the images' release builds do not link."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            return any(l.strip() in ("SEGQ_SANITIZE:BOOL=ON", "SEGQ_SANITIZE:BOOL=TRUE")
                       for l in f)
    except OSError:
        return False


def os_release():
    info = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                info[k] = v.strip('"')
    except OSError:
        pass
    return info


class Images(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cpu = dl.parse_dockerfile(CPU)
        cls.cuda = dl.parse_dockerfile(CUDA)

    def check_binaries_exist(self, stages, what):
        bins = build_stage_binaries(stages)
        self.assertTrue(bins, "%s copies no binary out of the build stage" % what)
        for img, host in bins.items():
            self.assertTrue(os.path.isfile(host), "%s copies %s, but this build has no %s"
                            % (what, img, host))
        return bins

    def test_runtime_installs_every_needed_library(self):
        """For every Debian image (the CPU worker, the bridge): each NEEDED library of each
        binary its runtime stage copies is in a package that stage installs."""
        rel = os_release()
        if (rel.get("ID"), rel.get("VERSION_ID")) != ("debian", "12"):
            self.skipTest("package names are checked on the images' own distribution, Debian 12 "
                          "(this machine: %s %s)" % (rel.get("ID"), rel.get("VERSION_ID")))
        images = debian_dockerfiles()
        self.assertIn("Dockerfile", [n for n, _ in images])
        problems = []
        for name, stages in images:
            runtime = stages[-1]
            installed, _ = dl.apt_installs(runtime)
            bins = self.check_binaries_exist(stages, "deploy/" + name)
            report = runtime_packages.resolve(list(bins.values()))
            needed, checked = set(), 0
            for host, libs in report.items():
                for e in libs:
                    checked += 1
                    if e["source"] == "cuda":
                        continue  # this build has CUDA; the image's (-DSEGQ_CUDA=OFF) does not
                    if sanitized_build() and e["soname"].startswith(("libasan.", "libubsan.")):
                        continue
                    if e["source"] in ("missing", "unowned"):
                        problems.append("%s: %s: %s cannot be resolved here (%s)"
                                        % (name, host, e["soname"], e["source"]))
                    elif e["source"] == "package":
                        needed.add(e["package"])
                        if e["package"] not in installed:
                            problems.append(
                                "deploy/%s: %s needs %s (%s), which is in package %s; the runtime "
                                "stage does not install it" % (name, os.path.basename(host),
                                                               e["soname"], e["path"], e["package"]))
            unused = sorted(set(installed) - needed - DELIBERATE)
            print("deploy/%s: %d NEEDED libraries of %s, %d packages installed%s"
                  % (name, checked, ", ".join(sorted(bins)), len(installed),
                     "; not needed by any: " + " ".join(unused) if unused else ""))
            if unused:
                problems.append("deploy/%s installs %s, which no binary of the image needs (add "
                                "it to DELIBERATE here if it is loaded at run time)"
                                % (name, " ".join(unused)))
        if problems:
            self.fail("\n  " + "\n  ".join(problems))
        build = dl.stage_by_name(self.cpu, "build")
        self.assertIn("-DSEGQ_CUDA=OFF", " ".join(i.args for i in build.all("RUN")),
                      "the CPU image must build without the CUDA backend")

    def test_cuda_image_stages(self):
        build = dl.stage_by_name(self.cuda, "build")
        runtime = self.cuda[-1]
        self.assertIsNotNone(build, "Dockerfile.cuda has no stage named build")
        self.assertRegex(build.base, r"^nvidia/cuda:[\w.]+-cudnn[\w.-]*-devel-[\w.]+$")
        self.assertRegex(runtime.base, r"^nvidia/cuda:[\w.]+-cudnn[\w.-]*-runtime-[\w.]+$")
        self.assertEqual(build.base.replace("-devel-", "-runtime-"), runtime.base,
                         "build and runtime images must be the same CUDA/cuDNN/OS release")
        runs = " ".join(i.args for i in build.all("RUN"))
        self.assertIn("-DSEGQ_CUDA=ON", runs)
        # The runtime stage installs the list the build stage computes from the binary it built.
        _, files = dl.apt_installs(runtime)
        self.assertTrue(files, "the CUDA runtime stage installs no package list")
        copied = {dest: srcs for src, srcs, dest, _ in dl.copies(runtime) if src == "build"}
        for f in files:
            self.assertIn(f, copied, "%s is not copied from the build stage" % f)
            listed = copied[f][0]
            self.assertIn("runtime_packages.py", runs)
            self.assertIn(os.path.relpath(listed, "/src"), runs,
                          "the build stage does not write %s" % listed)
        for img in build_stage_binaries(self.cuda):
            self.assertIn("runtime_packages.py " + os.path.relpath(img, "/src"), runs,
                          "the package list is not computed from %s" % img)

    def test_cuda_build_libraries_resolve(self):
        """On a CUDA build of this tree, runtime_packages.py resolves every library: what the CUDA
        image's build stage will print is complete."""
        cands = [b for b in [os.path.join(BUILD_DIR, "worker", "segq-worker")] +
                 glob.glob(os.path.join(tl.SOURCE_DIR, "build*", "worker", "segq-worker"))
                 if os.path.isfile(b)]
        cuda_bins = [b for b in cands if "libcudnn" in " ".join(runtime_packages.needed(b))]
        if not cuda_bins:
            self.skipTest("no CUDA build of segq-worker here (configure one with -DSEGQ_CUDA=ON)")
        report = runtime_packages.resolve(cuda_bins[:1])
        libs = report[cuda_bins[0]]
        bad = [e for e in libs if e["source"] in ("missing", "unowned")]
        self.assertEqual(bad, [], "unresolvable libraries of %s" % cuda_bins[0])
        for e in libs:
            if e["source"] == "cuda":
                self.assertRegex(e["soname"], r"^lib(cudnn|cublas|cublasLt|cudart|curand|cufft)"
                                 r"[\w.]*\.so", "%s is not in the cuDNN runtime image" % e)
        print("%s: %d libraries: %s" % (cuda_bins[0], len(libs), ", ".join(
            "%s<-%s" % (e["soname"], e["package"] or e["source"]) for e in libs)))

    def test_non_root_healthcheck_port(self):
        every = [(n, dl.parse_dockerfile(os.path.join(dl.DEPLOY_DIR, n)))
                 for n in sorted(os.listdir(dl.DEPLOY_DIR)) if n.startswith("Dockerfile")]
        self.assertGreaterEqual(len(every), 2)
        for name, stages in every:
            runtime = stages[-1]
            user = runtime.last("USER")
            self.assertIsNotNone(user, "%s: the runtime stage has no USER" % name)
            uid = user.args.split(":")[0]
            self.assertTrue(uid.isdigit() and int(uid) != 0,
                            "%s: USER %s: must be a numeric non-root uid (runAsNonRoot)"
                            % (name, user.args))
            hc = runtime.last("HEALTHCHECK")
            self.assertIsNotNone(hc, "%s: no HEALTHCHECK" % name)
        # The worker images: the endpoint on, the shared probe script, models checked.
        for name, stages in (("Dockerfile", self.cpu), ("Dockerfile.cuda", self.cuda)):
            runtime = stages[-1]
            hc = runtime.last("HEALTHCHECK")
            self.assertIn("/usr/local/bin/segq-healthcheck", hc.args)
            sources = {dest: srcs for _, srcs, dest, _ in dl.copies(runtime)}
            self.assertEqual(sources.get("/usr/local/bin/segq-healthcheck"),
                             ["deploy/healthcheck.sh"])
            env = dl.env_of(runtime)
            self.assertEqual(env.get("SEGQ_HTTP_HOST"), "0.0.0.0",
                             "%s: the health endpoint must answer on 127.0.0.1 and the pod IP"
                             % name)
            port = env.get("SEGQ_HTTP_PORT")
            self.assertTrue(port and port.isdigit() and int(port) > 0,
                            "%s: SEGQ_HTTP_PORT must enable the endpoint" % name)
            self.assertIn(port, [i.args.split("/")[0] for i in runtime.all("EXPOSE")])
            # The shipped models are validated while the image is built, not at its first start.
            runs = " ".join(i.args for i in runtime.all("RUN"))
            self.assertIn("segq-worker --check-models --model-dir %s" % env["SEGQ_MODEL_DIR"], runs,
                          name)
            opts = dl.worker_options()
            for k in env:
                if k.startswith("SEGQ_"):
                    self.assertIn(k, {o["env"] for o in opts.values()},
                                  "%s sets %s, which segq-worker does not read" % (name, k))

    def test_healthcheck_script_against_a_worker(self):
        tl.require_worker()
        script = os.path.join(dl.DEPLOY_DIR, "healthcheck.sh")
        port = tl.free_port()
        env = dict(os.environ, SEGQ_HTTP_PORT=str(port))

        def probe(path="/healthz"):
            p = subprocess.run([script, path], env=env, capture_output=True, text=True, timeout=30)
            return p.returncode, p.stdout.strip()

        self.assertEqual(probe()[0], 1, "healthy with nothing listening")
        with tl.RedisServer() as rs:
            w = tl.Worker(rs.url, prefix="hc", models="null", http_port=port,
                          http_host="0.0.0.0")
            w.wait_ready(rs.client(), timeout=60)
            rc, out = tl.wait_until(lambda: (lambda r: r if r[0] == 0 else None)(probe()), 30,
                                    poll_s=0.2, what="healthcheck passes")
            self.assertRegex(out, r"^HTTP/1\.[01] 200")
            self.assertEqual(probe("/no-such-path")[0], 1)
            rs.stop()  # Redis gone: the worker is unhealthy until it is back
            rc, out = tl.wait_until(lambda: (lambda r: r if r[0] == 1 else None)(probe()), 60,
                                    poll_s=0.2, what="healthcheck fails without Redis")
            self.assertRegex(out, r"^HTTP/1\.[01] 503")
            w.stop()

    def test_build_context_excludes_build_outputs(self):
        ign = dl.DockerIgnore(os.path.join(tl.SOURCE_DIR, ".dockerignore"))
        # What the README demo, tools/test.sh and npm leave in a checkout.
        for p in ("build/CMakeCache.txt", "build-asan/worker/segq-worker", "build-cuda/x.o",
                  "out/demo/result.json", "node_modules/x/index.js",
                  "bench/bullmq/node_modules/bullmq/package.json",
                  "tests/ort/node_modules/onnxruntime-node/bin/x.so",
                  "clients/python/segq/__pycache__/client.cpython-311.pyc",
                  ".git/HEAD", "models/cellseg-unet/checkpoint.pt"):
            self.assertTrue(ign.excluded(p), "%s would be sent to the Docker build" % p)
        for p in ("CMakeLists.txt", "worker/main.c", "queue/scripts/claim.lua",
                  "models/cellseg-unet/model.onnx", "models/cellseg-unet/model.json",
                  "tools/bootstrap.sh", "deploy/healthcheck.sh", "deploy/runtime_packages.py",
                  "gpu/cuda/detect.cmake", "tests/CMakeLists.txt", "bench/CMakeLists.txt"):
            self.assertFalse(ign.excluded(p), "%s is needed by the image build" % p)
        try:
            tracked = subprocess.run(["git", "ls-files"], cwd=tl.SOURCE_DIR, check=True,
                                     capture_output=True, text=True).stdout.split()
            ignored = subprocess.run(
                ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
                cwd=tl.SOURCE_DIR, check=True, capture_output=True, text=True).stdout.split()
        except (OSError, subprocess.CalledProcessError) as e:
            self.skipTest("not a git checkout (%s)" % e)
        # Every file git ignores that exists here (the host's real build outputs) stays out...
        leaked = [p for p in ignored if not ign.excluded(p)]
        if leaked:
            self.fail("git ignores these, the Docker context would carry them: %s" % leaked)
        # ...and every tracked file goes in, except the eval images the image does not serve.
        dropped = [p for p in tracked if ign.excluded(p) and not p.startswith("models/")]
        dropped += [p for p in tracked if p.startswith("models/") and ign.excluded(p)
                    and "/eval/" not in p]
        if dropped:
            self.fail("tracked files left out of the Docker build context: %s" % dropped)
        print("%d tracked files in the context, %d ignored paths kept out"
              % (sum(not ign.excluded(p) for p in tracked), len(ignored)))


if __name__ == "__main__":
    tl.run_tests()
