"""Shared helpers for segq's Python integration and fault tests: a private redis-server on a free
loopback port, segq-worker processes, bounded waits on results, synthetic cell images, and a
unittest runner that prints "N passed, N failed, N skipped" and exits 0 / 1 / 77 (ctest's skip).

Every process started here is killed when the test process ends, however it ends: context
managers and atexit kill them, and each child gets PR_SET_PDEATHSIG(SIGKILL) so even a SIGKILL of
the test (ctest's timeout) does not leave redis-server or a worker behind."""
import atexit
import ctypes
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SEGQ_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SCRIPTS_DIR = os.path.join(SOURCE_DIR, "queue", "scripts")
for _p in (os.path.join(SOURCE_DIR, "clients", "python"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SKIP = 77

try:
    import msgpack
    import redis
except ImportError as _e:  # pragma: no cover - Debian's python3-redis/python3-msgpack missing
    print("skip: needs python3-redis and python3-msgpack (%s); run with /usr/bin/python3" % _e)
    sys.exit(SKIP)


def skip(why):
    """Skips the whole test file (before run_tests): prints why and exits 77."""
    print("skip: %s" % why)
    sys.stdout.flush()
    sys.exit(SKIP)


def now_ms():
    return int(time.time() * 1000)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0 and let the kernel pick)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# -- process bookkeeping ----------------------------------------------------------------------

_live = []          # Popen objects started here and not yet reaped
_workers = []       # every Worker and Bridge started in this process (log dumps, sanitizer scan)
_tmpdirs = []       # removed at exit unless SEGQ_KEEP_LOGS is set


def _child_setup():
    # In the child between fork and exec: die with the parent (the test), and get our own
    # process group so a signal to the test's group (Ctrl-C) reaches us only through the test.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgid(0, 0)


def _spawn(argv, log_path=None, env=None, cwd=None):
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, preexec_fn=_child_setup)
    finally:
        if log_path:
            out.close()
    _live.append(p)
    return p


def _kill(p, sig=signal.SIGKILL, wait_s=10.0):
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    if p in _live:
        _live.remove(p)


def spawn(argv, log_path=None, env=None, cwd=None):
    """Starts a helper process (prometheus, redis-sentinel, ...) that dies with the test, like
    the servers and workers here; stop it with stop_process(p)."""
    return _spawn(argv, log_path=log_path, env=env, cwd=cwd)


def stop_process(p, sig=signal.SIGTERM, wait_s=10.0):
    _kill(p, sig, wait_s)


def kill_all():
    """Kills every process started through this module (each by its own pid)."""
    for p in list(_live):
        try:
            _kill(p)
        except Exception:  # keep killing the others
            traceback.print_exc()


def _cleanup_at_exit():
    kill_all()
    if not os.environ.get("SEGQ_KEEP_LOGS"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_at_exit)


def _on_sigterm(signum, frame):
    # ctest (or a user) asks the test to stop: kill the children, then exit like a signal would.
    kill_all()
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


def tempdir(prefix="segq-test-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


# -- redis-server -----------------------------------------------------------------------------

def have_redis_server():
    return shutil.which("redis-server") is not None


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:<free port> in a temp dir. No persistence unless
    `persist=True` (then `--appendonly yes --appendfsync always`, so a restart keeps everything
    acknowledged). Raises unittest.SkipTest if redis-server is not installed.

        with RedisServer() as rs:
            r = rs.client(); ...; rs.restart()
    """

    def __init__(self, persist=False, extra_args=(), start=True, tls=None, port=None):
        """tls: a TlsCerts; the server then listens on TLS only (self.port is its TLS port)."""
        if not have_redis_server():
            raise unittest.SkipTest("redis-server is not installed")
        self.persist = persist
        self.extra_args = list(extra_args)
        self.tls = tls
        self.dir = tempdir("segq-redis-")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = "%s://127.0.0.1:%d" % ("rediss" if tls else "redis", self.port)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.restarts = 0
        if start:
            self.start()

    def _argv(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--logfile", self.log_path,
                "--daemonize", "no", "--protected-mode", "yes"]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.tls:
            argv[argv.index("--port") + 1] = "0"
            argv += ["--tls-port", str(self.port), "--tls-cert-file", self.tls.server_cert,
                     "--tls-key-file", self.tls.server_key, "--tls-ca-cert-file", self.tls.ca,
                     "--tls-auth-clients", "no"]
        return argv + self.extra_args

    def start(self, timeout=15.0):
        if self.proc is not None and self.proc.poll() is None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            self.proc = _spawn(self._argv(), cwd=self.dir)
            if self._wait_ping(deadline):
                return self
            # The port may still be held (TIME_WAIT or a racing process): retry until the deadline.
            _kill(self.proc)
            if time.monotonic() >= deadline:
                raise RuntimeError("redis-server on port %d did not answer PING within %.0fs; log:\n%s"
                                   % (self.port, timeout, self.log_tail()))
            time.sleep(0.2)

    def _wait_ping(self, deadline):
        r = self.client(socket_connect_timeout=1, socket_timeout=2)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if r.ping():
                        return True
                except redis.RedisError:
                    pass
                time.sleep(0.05)
            return False
        finally:
            r.close()

    def client(self, **kw):
        """A new redis-py client (bytes replies) for this server."""
        kw.setdefault("socket_connect_timeout", 5)
        kw.setdefault("socket_timeout", 30)
        if self.tls:
            kw.update(ssl=True, ssl_ca_certs=self.tls.ca, ssl_cert_reqs="required")
        return redis.Redis(host=self.host, port=self.port, **kw)

    def stop(self, sig=signal.SIGTERM):
        """Stops the server (SIGTERM: it writes/fsyncs the AOF when persisting; SIGKILL: a crash)."""
        if self.proc is not None:
            _kill(self.proc, sig)
            self.proc = None

    def restart(self, downtime_s=0.0, sig=signal.SIGTERM):
        """Stops the server and starts it again on the same port (same dir, so an AOF survives)."""
        self.stop(sig)
        if downtime_s:
            time.sleep(downtime_s)
        self.restarts += 1
        return self.start()

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(signal.SIGKILL)
        return False


# -- Sentinel: a primary, replicas and sentinels -----------------------------------------------

def have_redis_sentinel():
    return shutil.which("redis-sentinel") is not None or have_redis_server()


class SentinelGroup:
    """A Sentinel-managed primary on loopback: one primary, `replicas` replicas and `sentinels`
    sentinels (quorum: a majority), all real processes on free ports. `url` is the
    redis+sentinel:// URL of the group; `failover()` runs SENTINEL FAILOVER; `primary_port()`
    asks a sentinel. Extra redis-server args (e.g. min-replicas-to-write) go to every data node.

        with SentinelGroup() as g:
            g.wait_ready(); r = g.client(); ...; g.failover(); g.wait_primary_changed(old)
    """

    def __init__(self, replicas=1, sentinels=3, master="mymaster", data_args=(),
                 down_after_ms=1500, failover_timeout_ms=6000):
        self.master = master
        self.data_args = list(data_args)
        self.primary = RedisServer(extra_args=self.data_args)
        self.nodes = [self.primary]
        for _ in range(replicas):
            self.nodes.append(RedisServer(extra_args=self.data_args + [
                "--replicaof", "127.0.0.1", str(self.primary.port)]))
        self.sentinel_ports = []
        self.sentinel_procs = []
        binary = shutil.which("redis-sentinel")
        for i in range(sentinels):
            d = tempdir("segq-sentinel-")
            port = free_port()
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s\n"
                        "sentinel monitor %s 127.0.0.1 %d %d\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s %d\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (port, d, os.path.join(d, "sentinel.log"), master, self.primary.port,
                           sentinels // 2 + 1, master, down_after_ms, master, failover_timeout_ms,
                           master))
            argv = [binary, conf] if binary else ["redis-server", conf, "--sentinel"]
            self.sentinel_procs.append(_spawn(argv, cwd=d))
            self.sentinel_ports.append(port)
        self.url = "redis+sentinel://%s/%s" % (
            ",".join("127.0.0.1:%d" % p for p in self.sentinel_ports), master)

    def sentinel(self, i=0):
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[i], socket_timeout=5,
                           socket_connect_timeout=2, decode_responses=True)

    def primary_port(self, i=0):
        addr = self.sentinel(i).execute_command("SENTINEL", "get-master-addr-by-name", self.master)
        return int(addr[1]) if addr else None

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def client(self, **kw):
        """A client of the current primary (as the sentinels see it)."""
        return self.node(self.primary_port()).client(**kw)

    def wait_ready(self, timeout=60.0):
        """Until every sentinel knows the other sentinels and the replicas, and the replicas are
        in sync."""
        n_s, n_r = len(self.sentinel_ports), len(self.nodes) - 1

        def ready():
            for i in range(n_s):
                try:
                    s = self.sentinel(i)
                    if len(s.execute_command("SENTINEL", "sentinels", self.master)) < n_s - 1:
                        return False
                    reps = s.execute_command("SENTINEL", "replicas", self.master)
                    if len(reps) < n_r:
                        return False
                except redis.RedisError:
                    return False
            info = self.primary.client().info("replication")
            return info.get("connected_slaves", 0) >= n_r and all(
                info.get("slave%d" % k, {}).get("state") == "online" for k in range(n_r))
        wait_until(ready, timeout, poll_s=0.2, what="sentinels and replicas ready")

    def failover(self, i=0, timeout=60.0):
        """SENTINEL FAILOVER: promote a replica without asking the others to agree first. Right
        after a failover the sentinel may not yet count the old primary as a good replica
        (NOGOODSLAVE) or still be busy (INPROG): retried until timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sentinel(i).execute_command("SENTINEL", "FAILOVER", self.master)
                return
            except redis.ResponseError as e:
                if time.monotonic() >= deadline or not str(e).startswith(("NOGOODSLAVE", "INPROG")):
                    raise
                time.sleep(0.5)

    def failover_and_wait(self, old_port, attempts=3, each_s=30.0):
        """failover() until a new primary is in place (a loaded machine can make the promotion
        outlast failover-timeout, and the sentinel then aborts). Returns (new port, attempts)."""
        for k in range(1, attempts + 1):
            self.failover()
            try:
                return self.wait_primary_changed(old_port, timeout=each_s), k
            except AssertionError:
                if k == attempts:
                    raise

    def wait_primary_changed(self, old_port, timeout=60.0):
        """Until every sentinel names a new primary and it answers as one; returns its port."""
        def changed():
            try:
                ports = {self.primary_port(i) for i in range(len(self.sentinel_ports))}
                if len(ports) != 1 or old_port in ports:
                    return None
                port = ports.pop()
                role = self.node(port).client().execute_command("ROLE")[0]
                return port if role in (b"master", "master") else None
            except (redis.RedisError, StopIteration):
                return None
        return wait_until(changed, timeout, poll_s=0.1, what="a new primary")

    def stop(self):
        for p in self.sentinel_procs:
            _kill(p)
        for n in self.nodes:
            n.stop(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# -- TLS: certificates and a stunnel client --------------------------------------------------

class TlsCerts:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made with the openssl
    command line (raises unittest.SkipTest without it). Paths: ca, server_cert, server_key."""

    def __init__(self):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl is not installed")
        d = tempdir("segq-tls-")
        self.ca, self.ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
        self.server_cert, self.server_key = os.path.join(d, "server.pem"), os.path.join(d, "server.key")
        csr, ext = os.path.join(d, "server.csr"), os.path.join(d, "san.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run = lambda *a: subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=60)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key, "-out", self.ca,
            "-days", "2", "-subj", "/CN=segq test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.server_key, "-out", csr,
            "-subj", "/CN=127.0.0.1")
        run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
            "-out", self.server_cert, "-days", "2", "-extfile", ext)


def have_stunnel():
    return shutil.which("stunnel4") is not None or shutil.which("stunnel") is not None


class Stunnel:
    """A stunnel client: plain TCP on 127.0.0.1:<port> -> TLS to target_port, verifying the
    server against ca (the setup docs/operations.md "TLS" describes). url is redis://...:<port>."""

    def __init__(self, target_port, ca):
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            raise unittest.SkipTest("stunnel4 is not installed")
        self.dir = tempdir("segq-stunnel-")
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d" % self.port
        conf = os.path.join(self.dir, "stunnel.conf")
        with open(conf, "w") as f:
            f.write("foreground = yes\npid =\noutput = %s\n\n[redis]\nclient = yes\n"
                    "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\nCAfile = %s\n"
                    "verifyChain = yes\ncheckIP = 127.0.0.1\n"
                    % (os.path.join(self.dir, "stunnel.log"), self.port, target_port, ca))
        self.proc = _spawn([binary, conf], log_path=os.path.join(self.dir, "stdout.log"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("stunnel exited with %s" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("stunnel did not listen on %d" % self.port)

    def stop(self):
        _kill(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# -- segq-worker ------------------------------------------------------------------------------

def worker_binary():
    """Path of the segq-worker binary: $SEGQ_WORKER_BIN, else $SEGQ_BUILD_DIR/worker/segq-worker
    (ctest sets SEGQ_BUILD_DIR), else ./build/worker/segq-worker; None if it is not there."""
    cands = []
    if os.environ.get("SEGQ_WORKER_BIN"):
        cands.append(os.environ["SEGQ_WORKER_BIN"])
    if os.environ.get("SEGQ_BUILD_DIR"):
        cands.append(os.path.join(os.environ["SEGQ_BUILD_DIR"], "worker", "segq-worker"))
    cands.append(os.path.join(os.getcwd(), "build", "worker", "segq-worker"))
    cands.append(os.path.join(SOURCE_DIR, "build", "worker", "segq-worker"))
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def fault_worker_binary():
    """Path of segq-worker-fault (the worker with the test-only fault-injecting backend,
    tests/support/fault_backend.c): $SEGQ_BUILD_DIR/tests/segq-worker-fault, else
    ./build/tests/segq-worker-fault; None if it is not there."""
    cands = []
    if os.environ.get("SEGQ_BUILD_DIR"):
        cands.append(os.path.join(os.environ["SEGQ_BUILD_DIR"], "tests", "segq-worker-fault"))
    cands.append(os.path.join(os.getcwd(), "build", "tests", "segq-worker-fault"))
    cands.append(os.path.join(SOURCE_DIR, "build", "tests", "segq-worker-fault"))
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def require_worker(fault=False):
    """Skips the whole file (exit 77) when the worker binary (with fault=True also
    segq-worker-fault) is not built."""
    if worker_binary() is None:
        skip("segq-worker binary not found (set SEGQ_BUILD_DIR or build ./build)")
    if fault and fault_worker_binary() is None:
        skip("segq-worker-fault binary not found (set SEGQ_BUILD_DIR or build ./build)")
    if not have_redis_server():
        skip("redis-server is not installed")


_worker_seq = [0]


class Worker:
    """A segq-worker process with the given flags; stdout+stderr go to a log file. Raises
    unittest.SkipTest if the binary is missing. Flags are keyword arguments with '_' for '-'
    (lease_ttl_ms=1500 -> --lease-ttl-ms 1500); `args` appends raw flags.

        w = Worker(rs.url, prefix="t", worker_id="w1", models="null,otsu", lease_ttl_ms=1500)
        w.wait_ready(rs.client()); ...; w.sigterm(); w.wait(10); w.returncode

    fault=True runs segq-worker-fault instead, which also accepts --device fault:... (the
    test-only fault-injecting backend)."""

    def __init__(self, redis_url, prefix="segq", worker_id=None, models="null,otsu", args=(),
                 env=None, start=True, log_level="info", fault=False, **flags):
        self.binary = fault_worker_binary() if fault else worker_binary()
        if self.binary is None:
            raise unittest.SkipTest("segq-worker%s binary not found (set SEGQ_BUILD_DIR)"
                                    % ("-fault" if fault else ""))
        _worker_seq[0] += 1
        self.id = worker_id or "tw%d-%d" % (os.getpid(), _worker_seq[0])
        self.prefix = prefix
        self.redis_url = redis_url
        self.argv = [self.binary, "--redis-url", redis_url, "--prefix", prefix, "--worker-id", self.id,
                     "--models", models, "--log-level", log_level]
        flags.setdefault("threads", 2)  # the test machines have few cores
        for k, v in flags.items():
            if v is not None:
                self.argv += ["--" + k.replace("_", "-"), str(v)]
        self.argv += list(args)
        self.env = dict(os.environ)
        # The worker's own SEGQ_* variables must not leak in from the caller's shell.
        for k in list(self.env):
            if k.startswith("SEGQ_") and k not in ("SEGQ_SOURCE_DIR", "SEGQ_BUILD_DIR"):
                del self.env[k]
        # Sanitizer builds: undefined behaviour stops the worker (so a test notices) instead of
        # scrolling by in its log.
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.env.update(env or {})
        self.dir = tempdir("segq-worker-")
        self.log_path = os.path.join(self.dir, "%s.log" % self.id)
        self.proc = None
        self.started_at = None
        _workers.append(self)
        if start:
            self.start()

    def start(self):
        cwd = SOURCE_DIR  # so the default --model-dir "models" resolves
        self.proc = _spawn(self.argv, log_path=self.log_path, env=self.env, cwd=cwd)
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def lease_key(self):
        return "%s:worker:%s" % (self.prefix, self.id)

    def inflight_key(self):
        return "%s:inflight:%s" % (self.prefix, self.id)

    def wait_ready(self, r, timeout=20.0):
        """Waits until the worker holds its lease in Redis (its first heartbeat went through)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("worker %s exited with %s before registering; log:\n%s"
                                     % (self.id, self.returncode, self.log_tail()))
            try:
                if r.exists(self.lease_key()):
                    return self
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError("worker %s did not register within %.0fs; log:\n%s"
                             % (self.id, timeout, self.log_tail()))

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def sigterm(self):
        self.signal(signal.SIGTERM)

    def kill9(self):
        """SIGKILL and reap (the worker gets no chance to clean up, like a crash)."""
        if self.proc is not None:
            _kill(self.proc, signal.SIGKILL)

    def wait(self, timeout):
        """Waits for the process to exit; returns its exit code. Raises AssertionError (and kills
        it) if it is still running after timeout seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise AssertionError("worker %s still running after %.1fs (killed); log tail:\n%s"
                                 % (self.id, timeout, self.log_tail()))
        if self.proc in _live:
            _live.remove(self.proc)
        return rc

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL if it has not exited within timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _kill(self.proc, signal.SIGTERM, wait_s=timeout)
        elif self.proc in _live:
            _live.remove(self.proc)
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "".join(self.log().splitlines(True)[-n:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            _kill(self.proc, signal.SIGKILL)
        return False


# -- segq-bridge ------------------------------------------------------------------------------

BRIDGE_SECRET = "segq-test-secret-0123456789abcdef"  # what Bridge() starts with unless told


def bridge_binary():
    """Path of segq-bridge: $SEGQ_BRIDGE_BIN, else $SEGQ_BUILD_DIR/bridge/segq-bridge, else
    ./build/bridge/segq-bridge; None if it is not there."""
    cands = []
    if os.environ.get("SEGQ_BRIDGE_BIN"):
        cands.append(os.environ["SEGQ_BRIDGE_BIN"])
    if os.environ.get("SEGQ_BUILD_DIR"):
        cands.append(os.path.join(os.environ["SEGQ_BUILD_DIR"], "bridge", "segq-bridge"))
    cands.append(os.path.join(SOURCE_DIR, "build", "bridge", "segq-bridge"))
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def require_bridge():
    """Skips the whole file (exit 77) without the bridge binary, redis-server or websockets."""
    if bridge_binary() is None:
        skip("segq-bridge binary not found (set SEGQ_BUILD_DIR or build ./build)")
    if not have_redis_server():
        skip("redis-server is not installed")
    try:
        import websockets  # noqa: F401
    except ImportError:
        skip("needs python3-websockets (tools/bootstrap.sh installs it)")


_bridge_seq = [0]


class Bridge:
    """A segq-bridge process on 127.0.0.1:<free port> (or `port`), with the token secret `secret`
    (None: none, e.g. to test --demo's own), flags as keyword arguments like Worker's
    (ping_interval_s=1 -> --ping-interval-s 1), `demo=True` for --demo. Runs from the source
    root so --demo-dir and --js-dir resolve. restart() keeps the port.

        b = Bridge(rs.url); b.wait_ready(); b.mint("group:g"); b.ws_url; b.kill9(); b.start()
    """

    kind = "bridge"

    def __init__(self, redis_url, prefix="segq", port=None, secret=BRIDGE_SECRET, demo=False,
                 args=(), env=None, start=True, log_level="info", **flags):
        self.binary = bridge_binary()
        if self.binary is None:
            raise unittest.SkipTest("segq-bridge binary not found (set SEGQ_BUILD_DIR)")
        _bridge_seq[0] += 1
        self.id = "bridge%d-%d" % (os.getpid(), _bridge_seq[0])
        self.port = port or free_port()
        self.secret = secret
        self.prefix = prefix
        self.url = "http://127.0.0.1:%d" % self.port
        self.ws_url = "ws://127.0.0.1:%d/ws" % self.port
        self.argv = [self.binary, "--redis-url", redis_url, "--prefix", prefix,
                     "--port", str(self.port), "--log-level", log_level]
        if demo:
            self.argv.append("--demo")
        for k, v in flags.items():
            if v is not None:
                self.argv += ["--" + k.replace("_", "-"), str(v)]
        self.argv += list(args)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("SEGQ_") and k not in ("SEGQ_SOURCE_DIR", "SEGQ_BUILD_DIR"):
                del self.env[k]
        if secret is not None:
            self.env["SEGQ_BRIDGE_TOKEN_SECRET"] = secret  # not in argv: ps shows argv
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.env.update(env or {})
        self.dir = tempdir("segq-bridge-")
        self.log_path = os.path.join(self.dir, "%s.log" % self.id)
        self.proc = None
        _workers.append(self)
        if start:
            self.start()

    def start(self):
        self.proc = _spawn(self.argv, log_path=self.log_path, env=self.env, cwd=SOURCE_DIR)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout=2.0):
        """(HTTP status, decoded /healthz document) or (None, None) when it does not answer."""
        import json
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (OSError, ValueError):
            return None, None

    def wait_ready(self, timeout=20.0):
        """Waits until /healthz says ok (listening and connected to Redis)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("bridge exited with %s; log:\n%s"
                                     % (self.returncode, self.log_tail()))
            code, _ = self.health(timeout=1.0)
            if code == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("bridge not ready within %.0fs; log:\n%s" % (timeout, self.log_tail()))

    def mint(self, channel, ttl=3600, now=None):
        from segq import tokens
        return tokens.mint(self.secret, channel, ttl=ttl, now=now)

    def http_get(self, path, timeout=10.0):
        """(status, body bytes, headers) of GET path."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self):
        if self.proc is not None:
            _kill(self.proc, signal.SIGKILL)

    def stop(self, timeout=10.0):
        """SIGTERM (clients get 1001 going away), SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _kill(self.proc, signal.SIGTERM, wait_s=timeout)
        elif self.proc in _live:
            _live.remove(self.proc)
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "".join(self.log().splitlines(True)[-n:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            _kill(self.proc, signal.SIGKILL)
        return False


class LoadClients:
    """`n` WebSocket clients of one bridge channel in one node process
    (tests/browser/load_clients.js, npm ws), each checking it gets offsets 1, 2, ... exactly once
    until the group has finished `jobs` jobs. RLIMIT_NOFILE is raised for it (skips the test when
    the hard limit is too low).

        lc = LoadClients(bridge, "group:g", 1000, jobs=50); lc.wait("subscribed", 120)
        ... enqueue ...; summary = lc.wait("done", 300)
    """

    def __init__(self, bridge, channel, n, jobs, timeout_s=300.0):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = n + 256
        if hard != resource.RLIM_INFINITY and hard < need:
            raise unittest.SkipTest("RLIMIT_NOFILE hard limit %d < %d for %d clients" % (hard, need, n))

        def setup():
            _child_setup()
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
        self.proc = subprocess.Popen(
            ["node", os.path.join(BROWSER_DIR, "load_clients.js"), bridge.ws_url, channel,
             bridge.mint(channel), str(n), str(jobs), str(int(timeout_s * 1000))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=BROWSER_DIR, preexec_fn=setup)
        _live.append(self.proc)

    def wait(self, phase, timeout):
        """The next JSON line, which must be `phase`, within timeout seconds."""
        import json
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("load clients: no %r within %.0fs" % (phase, timeout))
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("load clients exited (rc %s) before %r" % (self.proc.poll(), phase))
        msg = json.loads(line)
        if msg.get("phase") != phase:
            raise AssertionError("load clients: expected %r, got %r" % (phase, msg))
        return msg

    def close(self):
        _kill(self.proc)


def proc_stats(pid):
    """(rss_kb, peak_rss_kb, cpu_seconds) of a process from /proc (Linux)."""
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, hwm, (int(fields[11]) + int(fields[12])) / ticks


def group_top_offset(r, prefix, group):
    """The offset of the last event of group's channel, read from its snapshot (0 if none): what a
    reader that saw everything ends at."""
    return group_position(r, prefix, group)[0]


def group_position(r, prefix, group):
    """(offset of the group channel's last event, its epoch) from the group's hash ((0, "") if
    the group does not exist)."""
    off, epoch = r.hmget(key(prefix, "group", group), "off", "epoch")
    return (int(off) if off is not None else 0), (epoch.decode() if epoch else "")


class WsClient:
    """An asyncio WebSocket client of segq-bridge (python3-websockets) that answers the bridge's
    pings and reads with bounded waits.

        async with WsClient(bridge) as c:
            await c.subscribe("group:g", offset=0)
            evs = await c.events("group:g", until=lambda e: ...)
    """

    def __init__(self, bridge, origin=None, path="/ws", **connect_kw):
        self.bridge = bridge
        self.origin = origin
        self.path = path
        self.connect_kw = connect_kw
        self.ws = None
        self.pings = 0

    async def __aenter__(self):
        import websockets
        headers = {"Origin": self.origin} if self.origin else None
        self.ws = await websockets.connect("ws://127.0.0.1:%d%s" % (self.bridge.port, self.path),
                                           extra_headers=headers, open_timeout=20,
                                           ping_interval=None, **self.connect_kw)
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False

    async def close(self):
        if self.ws is not None:
            await self.ws.close()

    async def send(self, **msg):
        import json
        await self.ws.send(json.dumps(msg))

    async def subscribe(self, channel, token=None, **kw):
        """Sends a subscribe with a token minted by the bridge's secret (unless token is given;
        token="" sends none) and offset/epoch if given."""
        if token is None:
            token = self.bridge.mint(channel)
        msg = {"type": "subscribe", "channel": channel}
        if token:
            msg["token"] = token
        msg.update(kw)
        await self.send(**msg)

    async def recv(self, timeout=20.0):
        """The next message other than a ping (answered with a pong), as a dict. Raises
        AssertionError on timeout; websockets' ConnectionClosed when the bridge closed."""
        import asyncio
        import json
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message from the bridge within %.0fs" % timeout)
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                raise AssertionError("no message from the bridge within %.0fs" % timeout)
            msg = json.loads(raw)
            if msg.get("type") == "ping":
                self.pings += 1
                await self.send(type="pong")
                continue
            return msg

    async def expect(self, type_, timeout=20.0):
        msg = await self.recv(timeout)
        if msg.get("type") != type_:
            raise AssertionError("expected a %s message, got %r" % (type_, msg))
        return msg

    async def events(self, channel, until, timeout=60.0):
        """Event messages of channel until until(event_msg) is true (that one included)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            if msg.get("type") == "event" and msg.get("channel") == channel:
                out.append(msg)
                if until(msg):
                    return out
            elif msg.get("type") in ("resync", "error"):
                raise AssertionError("unexpected %r" % msg)


def group_finished(msg):
    """True for a group event whose counters say every job of the group is finished."""
    d = msg.get("data") or {}
    total = d.get("total") or 0
    return total > 0 and (d.get("done") or 0) + (d.get("failed") or 0) + (d.get("canceled") or 0) >= total


def run_async(coro, timeout=240):
    """Runs an asyncio coroutine to completion (bounded)."""
    import asyncio
    return asyncio.run(asyncio.wait_for(coro, timeout))


class SyncOverAsync:
    """An AsyncClient (segq.aio) driven from sync code: its coroutines run on a private event
    loop thread, events() becomes a plain generator. The sync client tests run unchanged against
    it (tests/integration/test_client_async.py), so both clients answer the same assertions.
    `r` is a sync redis.Redis on the same server for the tests' own reads and writes."""

    _FORWARD = ("recheck_s", "reconnect_s", "last_enqueue")

    def __init__(self, url, prefix, timeout_s=120, **kw):
        import asyncio
        import threading
        import segq
        object.__setattr__(self, "_timeout", timeout_s)
        loop = asyncio.new_event_loop()
        t = threading.Thread(target=loop.run_forever, name="async-client", daemon=True)
        t.start()
        object.__setattr__(self, "_loop", loop)
        object.__setattr__(self, "_thread", t)

        async def make():
            return segq.AsyncClient(url, prefix=prefix, **kw)
        object.__setattr__(self, "a", self._call(make()))
        object.__setattr__(self, "r", redis.Redis.from_url(url))

    def _call(self, coro):
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def __getattr__(self, name):
        import inspect
        attr = getattr(self.a, name)
        if inspect.isasyncgenfunction(attr):
            def agen(*args, **kw):
                it = attr(*args, **kw)
                try:
                    while True:
                        try:
                            item = self._call(it.__anext__())
                        except StopAsyncIteration:
                            return
                        yield item
                finally:
                    self._call(it.aclose())
            return agen
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kw: self._call(attr(*args, **kw))
        return attr

    def __setattr__(self, name, value):
        if name in self._FORWARD:
            setattr(self.a, name, value)
        else:
            object.__setattr__(self, name, value)

    def close(self):
        self._call(self.a.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.r.close()


# -- headless Chromium (tests/browser) --------------------------------------------------------

BROWSER_DIR = os.path.join(SOURCE_DIR, "tests", "browser")
CHROMIUM = os.environ.get("SEGQ_CHROMIUM", "/usr/bin/chromium")


def require_browser():
    """Skips the whole file (exit 77) unless Chromium, node and tests/browser/node_modules
    (playwright-core, ws: `npm ci` there, which tools/bootstrap.sh runs) are present."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        skip("%s is not installed (Debian's chromium; tools/bootstrap.sh installs it)" % CHROMIUM)
    if shutil.which("node") is None:
        skip("node is not installed")
    for mod in ("playwright-core", "ws"):
        if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", mod)):
            skip("tests/browser/node_modules/%s is missing (npm ci --prefix tests/browser)" % mod)


class Browser:
    """Headless Chromium driven through tests/browser/browser_rpc.js (playwright-core): every
    method is one command, answered within `timeout` seconds or an AssertionError. A fresh
    --user-data-dir per Browser."""

    def __init__(self, width=1400, height=1000, timeout=90.0):
        self.timeout = timeout
        env = dict(os.environ)
        env["SEGQ_CHROMIUM"] = CHROMIUM
        self.proc = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "browser_rpc.js")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(tempdir("segq-browser-"), "node.log"), "wb"),
                                     cwd=BROWSER_DIR, env=env, preexec_fn=_child_setup)
        _live.append(self.proc)
        self.profile = tempdir("segq-chromium-")
        self.version = self.call("launch", user_data_dir=self.profile, width=width, height=height)

    def call(self, cmd, timeout=None, **args):
        import json
        import select
        args["cmd"] = cmd
        self.proc.stdin.write((json.dumps(args) + "\n").encode())
        self.proc.stdin.flush()
        limit = timeout if timeout is not None else self.timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], limit)
        if not ready:
            raise AssertionError("browser did not answer %s within %.0fs" % (cmd, limit))
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("browser driver exited (rc %s) during %s" % (self.proc.poll(), cmd))
        answer = json.loads(line)
        if not answer.get("ok"):
            raise AssertionError("browser %s failed: %s" % (cmd, answer.get("error")))
        return answer.get("value")

    def goto(self, url):
        return self.call("goto", url=url)

    def eval(self, expr):
        return self.call("eval", expr=expr)

    def wait_for(self, expr, timeout=60.0):
        """Waits until the page expression `expr` is truthy; returns its value."""
        return self.call("wait_for", timeout=timeout + 10, expr=expr, timeout_ms=int(timeout * 1000))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=30)
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        _kill(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# -- Redis-side helpers -----------------------------------------------------------------------

def key(prefix, *parts):
    return ":".join((prefix,) + tuple(str(p) for p in parts))


def load_script(name):
    """A script's effective source (prelude + script), from the client's one definition of it."""
    from segq.client import load_script as client_load_script
    return client_load_script(name)


def enqueue_raw(r, prefix, id, model, payload, tenant="", group="", priority=0, result_ttl_s=3600,
                watch=0):
    """Runs enqueue.lua for one job with an arbitrary payload (bytes), bypassing the client's
    validation, so tests can queue malformed jobs. Returns the script's code (1 queued, 0
    pending, 2 finished, 3 rejected as unknown_model, 4 rejected: group canceled)."""
    sha = getattr(r, "_segq_enqueue", None)
    if sha is None:
        sha = r.register_script(load_script("enqueue"))
        r._segq_enqueue = sha
    return int(sha(keys=[], args=[prefix, now_ms(), int(result_ttl_s), group, int(watch), id, model,
                                  tenant, int(priority), payload])[0])


def job_doc(id, model, data, fmt="jpeg", width=None, height=None, **extra):
    """A job document (dict) as docs/protocol.md describes it; extra fields go at the top level."""
    image = {"format": fmt, "data": data}
    if width is not None:
        image["width"] = width
    if height is not None:
        image["height"] = height
    doc = {"v": 1, "id": id, "model": model, "image": image}
    doc.update(extra)
    return doc


def pack(doc):
    return msgpack.packb(doc, use_bin_type=True)


def decode(raw):
    return msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw is not None else None


class WorkerTestCase(unittest.TestCase):
    """A test class sharing one redis-server, one segq-worker and one segq.Client (cls.rs,
    cls.r, cls.w, cls.c); each test ends by asserting the worker is still alive. Set PREFIX,
    WORKER (tl.Worker's keyword arguments) and READY_TIMEOUT; a setUpClass of its own calls
    super().setUpClass()."""
    PREFIX = "segq"
    WORKER = {}
    READY_TIMEOUT = 20.0

    @classmethod
    def setUpClass(cls):
        import segq
        cls.rs = RedisServer()
        try:
            cls.r = cls.rs.client()
            cls.w = Worker(cls.rs.url, prefix=cls.PREFIX, **cls.WORKER)
            cls.w.wait_ready(cls.r, timeout=cls.READY_TIMEOUT)
        except BaseException:
            if getattr(cls, "w", None):
                cls.w.stop()
            cls.rs.stop()
            raise
        cls.c = segq.Client(cls.rs.url, prefix=cls.PREFIX)

    @classmethod
    def tearDownClass(cls):
        cls.w.stop()
        cls.rs.stop()

    def tearDown(self):
        self.assertTrue(self.w.alive(), "worker died:\n" + self.w.log_tail())


def job_key(prefix, id):
    return key(prefix, "job", id)


def live_doc(r, prefix, id):
    """A live job's document: its key P:doc:<id> after the header line (docs/protocol.md
    "Fetched claims"), or None."""
    v = r.get(key(prefix, "doc", id))
    return v.split(b"\n", 1)[1] if v is not None else None


def job_status(r, prefix, id):
    """Where job id stands, as a dict of str: a live job's hash fields, a
    finished job's terminal event (its `state` is the terminal state, plus "finished": "1"), or
    {} if the job does not exist."""
    k = job_key(prefix, id)
    for _ in range(3):  # the job may finish between TYPE and the read: look again
        t = r.type(k)
        try:
            if t == b"hash":
                h = r.hgetall(k)
                out = {f.decode(): v.decode() for f, v in h.items()}
                if out.get("state") == "queued":
                    # A fast run (docs/protocol.md "Fast runs"): running while a worker's
                    # in-flight list holds it, its hash untouched since the enqueue.
                    for ik in r.scan_iter(match=key(prefix, "inflight", "*"), count=1000):
                        if r.lpos(ik, id) is not None:
                            out.update(state="running", worker=ik.decode().rsplit(":", 1)[1],
                                       fast="1", attempts=str(int(out.get("attempts", "0")) + 1))
                return out
            if t == b"string":
                ev = record_event(r, prefix, id)
                if ev is None:
                    continue
                out = {k2: str(v) for k2, v in ev.items()}
                out["finished"] = "1"
                return out
        except redis.exceptions.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            continue
        return {}
    raise AssertionError("job %s changed type three times while being read" % id)


def record_event(r, prefix, id):
    """The terminal event of a finished job (the first map of its record), or None."""
    raw = r.getrange(job_key(prefix, id), 0, 1023) if r.type(job_key(prefix, id)) == b"string" else None
    if not raw:
        return None
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(raw)
    return up.unpack()


def group_history(r, prefix, group):
    """The decoded events of the group's history stream P:gh:<group>, oldest first."""
    return [decode(f[b"e"]) for _, f in r.xrange(key(prefix, "gh", group), "-", "+") if b"e" in f]


def group_job_history(r, prefix, group, id):
    """The entries about job id in the group's history: [(group event off, entry dict)]."""
    out = []
    for ev in group_history(r, prefix, group):
        for e in ev.get("jobs") or []:
            if e.get("id") == id:
                out.append((ev["off"], e))
    return out


def describe_job(r, prefix, id):
    """One line on where job id is in Redis (its key's state, queue/in-flight membership), for
    failure messages."""
    try:
        st = job_status(r, prefix, id)
        where = []
        for k in r.scan_iter(match=key(prefix, "inflight", "*"), count=1000):
            if id.encode() in r.lrange(k, 0, -1):
                where.append(k.decode())
        for k in r.scan_iter(match=key(prefix, "q", "*"), count=1000):
            if id.encode() in r.lrange(k, 0, -1):
                where.append(k.decode())
        return "%s: %s in=%s" % (id, st or "no such job", where or "nowhere")
    except redis.RedisError as e:
        return "%s: (redis error %s)" % (id, e)


def results_raw(r, prefix, ids):
    """[record bytes or None] for ids (MGET: None while a job is live or unknown)."""
    return r.mget([job_key(prefix, i) for i in ids])


def decode_record(raw):
    """(event, result, job document bytes or None) of a finished job's record."""
    from segq.proto import decode_record as d
    return d(raw)


def record_result(raw, decode_it=True):
    """The result document of a record: a dict, or its bytes with decode_it=False."""
    up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(raw) + 1)
    up.feed(raw)
    up.skip()
    start = up.tell()
    res = up.unpack()
    return res if decode_it else raw[start:up.tell()]


def wait_for_results(r, prefix, ids, timeout, poll_s=0.2, decode_results=True, progress=None,
                     stall_s=None):
    """Polls the record P:job:<id> for every id (MGET in chunks) until all exist or `timeout` seconds
    pass (or, with stall_s, no new result came for stall_s seconds). Returns {id: result}
    (decoded dicts unless decode_results=False). Otherwise raises AssertionError naming how
    many are missing and where a few of them are. `progress(n_done)` is called after each
    poll, e.g. to kill a worker part-way."""
    ids = list(ids)
    out = {}
    pending = ids
    deadline = time.monotonic() + timeout
    last_progress, last_n = time.monotonic(), -1
    while True:
        still = []
        for k in range(0, len(pending), 2000):
            chunk = pending[k:k + 2000]
            raws = results_raw(r, prefix, chunk)
            for i, raw in zip(chunk, raws):
                if raw is None:
                    still.append(i)
                else:
                    out[i] = record_result(raw, decode_results)
        pending = still
        if progress is not None:
            progress(len(out))
        if not pending:
            return {i: out[i] for i in ids}
        t = time.monotonic()
        if len(out) != last_n:
            last_progress, last_n = t, len(out)
        stalled = stall_s is not None and t - last_progress >= stall_s
        if t >= deadline or stalled:
            raise AssertionError("%d of %d jobs have no result after %.0fs%s; in flight: %s; e.g.\n  %s"
                                 % (len(pending), len(ids), t - deadline + timeout,
                                    " (none for the last %.0fs)" % stall_s if stalled else "",
                                    inflight_lists(r, prefix),
                                    "\n  ".join(describe_job(r, prefix, i) for i in pending[:3])))
        time.sleep(poll_s)


def prefill_otsu(url, prefix, id_prefix, n, chunk=250, **client_kw):
    """Queues n `otsu` jobs of one small two-disk JPEG, ids "<id_prefix>-00000"..., in groups of
    `chunk`, and returns the ids. Fault tests queue everything before starting their workers
    (queuing is slower than this work), so the run is long enough to interrupt."""
    import segq
    c = segq.Client(url, prefix=prefix, **client_kw)
    img = make_jpeg(320, 320, disks=[(80, 80, 30), (220, 200, 50)], noise=3)
    ids = ["%s-%05d" % (id_prefix, i) for i in range(n)]
    for k in range(0, n, chunk):
        part = ids[k:k + chunk]
        c.submit_many([img] * len(part), "otsu", ids=part)
    return ids


def count_results(r, prefix, ids):
    """How many of ids have a result key."""
    return sum(1 for x in results_raw(r, prefix, ids) if x is not None)


def wait_until(cond, timeout, poll_s=0.05, what="condition"):
    """Polls cond() until it is truthy (returns its value) or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %.1fs" % (what, timeout))
        time.sleep(poll_s)


def stats(r, prefix):
    """P:stats as {name: int}."""
    return {k.decode(): int(v) for k, v in r.hgetall(key(prefix, "stats")).items()}


def inflight_lists(r, prefix):
    """{key: length} of every non-empty P:inflight:* list."""
    out = {}
    for k in r.scan_iter(match=key(prefix, "inflight", "*"), count=1000):
        n = r.llen(k)
        if n:
            out[k.decode()] = n
    return out


def queued_count(r, prefix):
    """Total length of every P:q:* queue."""
    return sum(r.llen(k) for k in r.scan_iter(match=key(prefix, "q", "*"), count=1000))


def keyspace(r, prefix):
    """{key: (type, contents, has_ttl)} of every key under prefix: a comparable picture of the
    data (DUMP is not: a hash's dump follows its table's order, which reads may rehash)."""
    out = {}
    for k in r.scan_iter(match=key(prefix, "*"), count=1000):
        t = r.type(k).decode()
        if t == "string":
            v = r.get(k)
        elif t == "hash":
            v = r.hgetall(k)
        elif t == "list":
            v = r.lrange(k, 0, -1)
        elif t == "set":
            v = sorted(r.smembers(k))
        elif t == "zset":
            v = r.zrange(k, 0, -1, withscores=True)
        elif t == "stream":
            v = r.xrange(k)
        else:
            v = t
        out[k.decode()] = (t, v, r.pttl(k) > 0)
    return out


# -- synthetic images -------------------------------------------------------------------------

def disk_image(width, height, disks, bg=20, fg=220, dtype="uint8"):
    """A numpy array (height, width) of `dtype` with filled disks (cx, cy, r) of value fg on bg."""
    import numpy as np
    img = np.full((height, width), bg, dtype=dtype)
    yy, xx = np.mgrid[0:height, 0:width]
    for cx, cy, rad in disks:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= rad * rad] = fg
    return img


def make_jpeg(width=64, height=64, disks=None, bg=20, fg=220, quality=95, noise=0, seed=0):
    """JPEG bytes of a synthetic cell image: bright disks (cx, cy, r) on a dark background
    (default: one disk in the middle), optional gaussian noise of the given sigma."""
    import numpy as np
    from PIL import Image
    if disks is None:
        disks = [(width // 2, height // 2, max(1, min(width, height) // 4))]
    img = disk_image(width, height, disks, bg, fg).astype("float32")
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape)
    img = np.clip(img, 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# -- running ----------------------------------------------------------------------------------

class _Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def _dump_worker_logs():
    for w in _workers:
        print("---- %s %s (pid %s, rc %s) log tail: %s" % (getattr(w, "kind", "worker"), w.id, w.pid,
                                                          w.returncode, w.log_path))
        print(w.log_tail(40))


SANITIZER_MARKS = ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer")


def sanitizer_findings():
    """[(worker id, line)] for every sanitizer report in the logs of the workers started here."""
    out = []
    for w in _workers:
        for line in w.log().splitlines():
            if any(m in line for m in SANITIZER_MARKS):
                out.append((w.id, line.strip()))
    return out


def run_tests(module="__main__", timeout_s=540):
    """Runs the unittest TestCases of `module`, prints "N passed, N failed, N skipped" and exits 0
    (all ran passed), 1 (a failure or error, or a sanitizer report in a worker's log), or 77
    (nothing failed and nothing passed: all skipped). A SIGALRM after timeout_s fails the running test (and so kills its processes)
    before ctest's own timeout would."""
    def on_alarm(signum, frame):
        raise TimeoutError("test file ran past %ds" % timeout_s)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout_s)
    argv = [sys.argv[0]] + sys.argv[1:]
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module]) if len(argv) == 1 else \
        unittest.defaultTestLoader.loadTestsFromNames(argv[1:], sys.modules[module])
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result, stream=sys.stdout)
    t0 = time.monotonic()
    try:
        res = runner.run(suite)
    finally:
        signal.alarm(0)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    for wid, line in sanitizer_findings():
        print("sanitizer report in worker %s: %s" % (wid, line))
        failed += 1
    skipped = len(res.skipped)
    if failed:
        _dump_worker_logs()
    print("%d passed, %d failed, %d skipped (%.1fs)" % (res.passed, failed, skipped, time.monotonic() - t0))
    sys.stdout.flush()
    kill_all()
    if failed:
        code = 1
    elif res.passed == 0:
        code = SKIP
    else:
        code = 0
    sys.exit(code)
