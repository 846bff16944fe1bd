"""Static readers for segq's deployment files, shared by tests/deploy/: a Dockerfile parser
(stages, ARG expansion, RUN/COPY/USER/HEALTHCHECK, the packages a stage installs), the
.dockerignore matcher (Docker's rules: last match wins, `!` re-includes, `**`, a pattern that
matches a directory excludes what is under it), and the worker's option table as the binary
prints it (`segq-worker --help-markdown`), so files are checked against what the binary accepts
rather than against a copy of it."""
import os
import re
import shlex
import subprocess

import segq_testlib as tl

DEPLOY_DIR = os.path.join(tl.SOURCE_DIR, "deploy")


# -- Dockerfile -------------------------------------------------------------------------------

class Instruction:
    def __init__(self, keyword, args, line):
        self.keyword = keyword  # upper case: FROM, RUN, COPY, ...
        self.args = args        # the rest of the instruction, continuation lines joined
        self.line = line        # 1-based line where it starts

    def __repr__(self):
        return "%s %s (line %d)" % (self.keyword, self.args, self.line)


class Stage:
    def __init__(self, base, name, index):
        self.base = base        # the FROM image, ARGs expanded
        self.name = name        # "AS name", or None
        self.index = index
        self.instructions = []

    def all(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword):
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text):
    """(line number, text) of each instruction: comments and blank lines dropped (also inside a
    continuation, as Docker does), lines ending in a backslash joined."""
    out, buf, start = [], [], None
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if start is None:
            start = n
        if s.endswith("\\"):
            buf.append(s[:-1].strip())
            continue
        buf.append(s)
        out.append((start, " ".join(buf)))
        buf, start = [], None
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _expand(s, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)


def parse_dockerfile(path):
    """The stages of a Dockerfile, in order; ARGs declared before the first FROM are expanded in
    FROM lines with their defaults."""
    with open(path) as f:
        text = f.read()
    stages, global_args = [], {}
    for line, logical in _logical_lines(text):
        keyword, _, rest = logical.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
            continue
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_expand(words[0], global_args), name, len(stages)))
            continue
        if not stages:
            raise ValueError("%s:%d: %s before the first FROM" % (path, line, keyword))
        stages[-1].instructions.append(Instruction(keyword, rest, line))
    return stages


def stage_by_name(stages, name):
    for s in stages:
        if s.name == name:
            return s
    return None


def shell_commands(run_args):
    """The simple commands of a RUN line (split at &&, ||, ;, |), each as a list of words."""
    try:
        lex = shlex.shlex(run_args, posix=True, punctuation_chars="&|;")
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:
        tokens = run_args.split()
    cmds, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|", "&"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        cmds.append(cur)
    return cmds


def apt_installs(stage):
    """(packages, files): what the stage's RUN lines install with apt-get install: package names
    given on the command line, and files whose lines are packages (`xargs -a FILE apt-get
    install`)."""
    pkgs, files = [], []
    for ins in stage.all("RUN"):
        for cmd in shell_commands(ins.args):
            words = list(cmd)
            src = None
            if words and words[0] == "xargs":
                i = 1
                while i < len(words) and words[i].startswith("-"):
                    if words[i] in ("-a", "--arg-file") and i + 1 < len(words):
                        src = words[i + 1]
                        i += 1
                    elif words[i].startswith("--arg-file="):
                        src = words[i].split("=", 1)[1]
                    i += 1
                words = words[i:]
            if len(words) < 2 or words[0] not in ("apt-get", "apt") or "install" not in words:
                continue
            after = words[words.index("install") + 1:]
            names = [w for w in after if not w.startswith("-")]
            pkgs += names
            if src:
                files.append(src)
    return pkgs, files


def copies(stage):
    """[(from_stage or None, [sources], dest, {flag: value})] of the stage's COPY lines."""
    out = []
    for ins in stage.all("COPY"):
        words = shlex.split(ins.args)
        flags = {}
        while words and words[0].startswith("--"):
            k, _, v = words.pop(0)[2:].partition("=")
            flags[k] = v
        out.append((flags.get("from"), words[:-1], words[-1], flags))
    return out


def env_of(stage):
    """The stage's ENV settings (KEY=value pairs, or the legacy `ENV KEY value`)."""
    env = {}
    for ins in stage.all("ENV"):
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for w in words:
            k, _, v = w.partition("=")
            env[k] = v
    return env


# -- .dockerignore ----------------------------------------------------------------------------

def _pattern_regex(pattern):
    """Docker's pattern syntax (moby/patternmatcher): `*` and `?` within one path element, `**`
    across any number of them, [...] classes, `\\` escapes."""
    i, out = 0, ""
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":
                    i += 1
                    out += "(?:.*/)?"
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += "[" + pattern[i + 1:j].replace("\\", "\\\\") + "]"
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """`excluded(path)` says whether Docker leaves a context-relative path out of the build
    context."""

    def __init__(self, path):
        self.rules = []  # (negated, regex, text)
        with open(path) as f:
            for raw in f:
                s = raw.strip()
                if not s or s.startswith("#"):
                    continue
                neg = s.startswith("!")
                if neg:
                    s = s[1:].strip()
                s = os.path.normpath(s).lstrip("/")
                if s in ("", "."):
                    continue
                self.rules.append((neg, _pattern_regex(s), s))

    def excluded(self, relpath):
        relpath = relpath.strip("/")
        parts = relpath.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        verdict = False
        for neg, rx, _ in self.rules:
            # A pattern also matches everything under a directory it matches.
            if any(rx.match(p) for p in prefixes):
                verdict = not neg
        return verdict


# -- the worker's options and metrics, as the binary prints them ----------------------------------

def worker_options(binary=None):
    """{flag: {"env": ..., "default": ...}} parsed from `segq-worker --help-markdown`."""
    binary = binary or tl.worker_binary()
    out = subprocess.run([binary, "--help-markdown"], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    opts = {}
    for line in out.splitlines():
        m = re.match(r"\|\s*`--([a-z0-9-]+)`\s*\|\s*`(SEGQ_[A-Z0-9_]+)`\s*\|\s*([^|]*)\|", line)
        if m:
            opts[m.group(1)] = {"env": m.group(2), "default": m.group(3).strip().strip("`")}
    return opts


def option_envs(binary=None):
    """The SEGQ_* variables a binary reads (worker by default; the bridge's binary too)."""
    return {o["env"] for o in worker_options(binary).values()}


def metric_families(binary=None):
    """{name: type} of every family the worker can serve (`segq-worker --help-metrics`, printed
    from the registry's table): GPU families included, which a CPU worker never shows."""
    binary = binary or tl.worker_binary()
    out = subprocess.run([binary, "--help-metrics"], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    fams = {}
    for line in out.splitlines():
        m = re.match(r"\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*(counter|gauge|histogram)\s*\|", line)
        if m:
            fams[m.group(1)] = m.group(2)
    return fams


def served_sample_names(families):
    """Every sample name the families produce (histograms: _bucket, _sum, _count)."""
    names = set()
    for name, kind in families.items():
        names.add(name)
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


# PromQL: metric names are the identifiers not followed by "(" (functions) and not inside a
# label matcher or a by/without list; segq's own are recognised by their prefixes.
_METRIC_RX = re.compile(r"\b((?:segq|process)_[a-z0-9_]+)\b")


def promql_metrics(expr):
    """The segq_*/process_* metric names an expression uses."""
    return set(_METRIC_RX.findall(expr))


def check_models_env(env, model_dir_host, binary=None, timeout=300):
    """Runs `segq-worker --check-models` with a deployment's environment (SEGQ_MODEL_DIR pointed
    at the host copy of the repository it mounts): every variable is parsed and validated as at
    start-up and every model of the repository is checked. Returns (exit code, output)."""
    binary = binary or tl.worker_binary()
    e = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")}
    e.update({k: str(v) for k, v in env.items()})
    e["SEGQ_MODEL_DIR"] = model_dir_host
    p = subprocess.run([binary, "--check-models"], capture_output=True, text=True, env=e,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def http_get(port, path, host="127.0.0.1", timeout=10):
    """(status, body) of GET path on a local HTTP endpoint; status 0 when nothing answers."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path), timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
