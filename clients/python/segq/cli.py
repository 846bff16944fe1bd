"""The `segq` command line for people: submit images (JPEG, PNG, TIFF; with a live progress bar
fed by group events, a per-image summary, JSON + overlay PNGs that never overwrite another
input's), watch a job's or a group's events, cancel jobs or groups, act on dead letters, show
queue statistics, and tune a model's batch sizes and streams on this machine's device (runs the C
tool segq-tune and writes its recommendation into model.json). Images are read by the library
(segq.images: lossless, 16-bit and RGB kept); numpy and PIL are imported only where a command
needs them (non-JPEG inputs, overlays). Exit codes: 0 ok, 1 some jobs failed (tune: the
measurement failed), 2 bad usage/input, 3 Redis unreachable, 4 timeout."""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid

import redis

from . import connection, images, proto
from .client import DEFAULT_PREFIX, DEFAULT_URL, Client, SegqError, Timeout

EXIT_FAILED, EXIT_USAGE, EXIT_REDIS, EXIT_TIMEOUT = 1, 2, 3, 4
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
OUTLINE = (57, 255, 20)  # a green that stands out on gray microscopy images


class CliError(Exception):
    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _err(msg):
    print("segq: " + msg, file=sys.stderr)


# -- inputs ---------------------------------------------------------------------------------

def collect_files(paths):
    """Image files named on the command line; a folder contributes its images (not recursing,
    so e.g. samples/truth/ is not submitted). Raises CliError for missing or empty inputs."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise CliError("no images (%s) in folder %s" % (", ".join(IMAGE_EXTS), p))
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise CliError("no such file or folder: %s" % p)
    if not files:
        raise CliError("nothing to submit")
    return files


def load_image(path):
    """The file as a job carries it (segq.images.WireImage), decoded once: JPEG bytes as they
    are, PNG/TIFF samples as they are (16-bit stays 16-bit, RGB stays RGB). CliError (exit 2)
    for what cannot be sent, naming the file."""
    try:
        return images.to_wire(path)
    except proto.ProtocolError as e:
        raise CliError("%s: %s" % (path, e))


# -- progress -------------------------------------------------------------------------------

class Progress:
    """A text progress bar on a terminal, periodic plain lines otherwise (logs, CI). A ticker
    thread keeps the elapsed time moving while no event arrives."""

    def __init__(self, total, stream=sys.stderr, interval_s=2.0, idle_line_s=10.0):
        self.total, self.stream = total, stream
        self.interval_s, self.idle_line_s = interval_s, idle_line_s
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self.last_line = 0.0
        self.done = self.failed = self.running = 0
        self.shown = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker = None

    def start(self):
        self.update(0, 0, 0, force=True)
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self.ticker.start()

    def _tick(self):
        while not self.stopped.wait(0.5 if self.tty else 1.0):
            with self.lock:
                if self.tty:
                    self._draw()
                elif time.monotonic() - self.last_line >= self.idle_line_s:
                    self._line()

    def update(self, done, failed, running, force=False):
        with self.lock:
            changed = (done, failed, running) != (self.done, self.failed, self.running)
            self.done, self.failed, self.running = done, failed, running
            finished = done + failed >= self.total
            if self.tty:
                if changed or force or finished:
                    self._draw()
            elif force or finished or (changed and time.monotonic() - self.last_line >= self.interval_s):
                self._line()

    def _draw(self):
        width = 30
        n = self.done + self.failed
        fill = int(width * n / max(1, self.total))
        self.stream.write("\r  [%s%s] %d/%d  done %d  failed %d  running %d  %.1fs " %
                          ("#" * fill, "-" * (width - fill), n, self.total, self.done, self.failed,
                           self.running, time.monotonic() - self.t0))
        self.stream.flush()
        self.shown = True

    def _line(self):
        self.stream.write("progress: %d/%d done=%d failed=%d running=%d elapsed=%.1fs\n" %
                          (self.done + self.failed, self.total, self.done, self.failed, self.running,
                           time.monotonic() - self.t0))
        self.stream.flush()
        self.last_line = time.monotonic()

    def close(self):
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            if self.tty and self.shown:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()


# -- outputs --------------------------------------------------------------------------------

def _ms(us):
    return "%.1f" % (us / 1000.0) if isinstance(us, (int, float)) else "-"


def print_summary(rows, wall_s, out=sys.stdout):
    hdr = ("image", "status", "objects", "size", "wait ms", "infer ms", "total ms", "worker")
    table = [hdr]
    for name, res in rows:
        t = res.get("timings") or {}
        status = res.get("status", "?")
        if status != "ok":
            status = "error: " + ((res.get("error") or {}).get("code") or "?")
        table.append((name, status, str(len(res.get("polygons") or [])),
                      "%dx%d" % (res.get("width") or 0, res.get("height") or 0),
                      _ms(t.get("queue_wait_us")), _ms(t.get("inference_us")), _ms(t.get("total_us")),
                      str(res.get("worker") or "-")))
    widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
    for r in table:
        out.write("  ".join(c.ljust(widths[i]) if i in (0, 1, 7) else c.rjust(widths[i])
                            for i, c in enumerate(r)).rstrip() + "\n")
    ok = sum(1 for _, r in rows if r.get("status") == "ok")
    objs = sum(len(r.get("polygons") or []) for _, r in rows)
    out.write("%d images: %d ok, %d failed, %d objects, %.2fs (%.1f images/s)\n" %
              (len(rows), ok, len(rows) - ok, objs, wall_s, len(rows) / wall_s if wall_s > 0 else 0))


def output_names(files):
    """{file: base name} for the outputs of files, unique within the run: the stem (a.png ->
    a) when no other input has it; else the file name (a.png, a.tif); else the name with as many
    parent folders as tell the inputs apart (dirA/x.jpg -> dirA_x.jpg); a numeric suffix if
    still equal. Never two inputs on one name."""
    def parts(f):
        return [p for p in os.path.normpath(os.path.abspath(f)).split(os.sep) if p]

    names = {}
    taken = set()
    stems = {}
    for f in files:
        stems.setdefault(os.path.splitext(os.path.basename(f))[0], []).append(f)
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if len(stems[stem]) == 1:
            cand = stem
        else:
            same = stems[stem]
            base = os.path.basename(f)
            if sum(1 for g in same if os.path.basename(g) == base) == 1:
                cand = base
            else:
                p = parts(f)
                others = [parts(g) for g in same if g != f and os.path.basename(g) == base]
                k = 2
                while k < len(p) and any(o[-k:] == p[-k:] for o in others):
                    k += 1
                cand = "_".join(p[-k:])
        name, n = cand, 2
        while name in taken:
            name = "%s-%d" % (cand, n)
            n += 1
        taken.add(name)
        names[f] = name
    return names


def _claimed_by(jpath):
    """The input file a result JSON in the output folder belongs to (None: unreadable)."""
    try:
        with open(jpath) as f:
            return json.load(f).get("file")
    except (OSError, ValueError, AttributeError):
        return None


def place_outputs(out_dir, names):
    """{file: base} with names moved off bases whose JSON in out_dir holds another input's
    result (an earlier run): a result is only ever replaced by one of the same input file."""
    placed, taken = {}, set()
    for f, base in names.items():
        name, n = base, 2
        while True:
            owner = _claimed_by(os.path.join(out_dir, name + ".json"))
            if name not in taken and owner in (None, os.path.abspath(f)):
                break
            name = "%s-%d" % (base, n)
            n += 1
        taken.add(name)
        placed[f] = name
    return placed


def write_outputs(out_dir, base, path, image, res, group):
    """<base>.json (the result without binary fields, polygons included; "file" says which input
    it is) and <base>.overlay.png (the image with polygon outlines). Returns the written paths."""
    doc = {"file": os.path.abspath(path), "group": group}
    for k, v in res.items():
        doc[k] = v
    jpath = os.path.join(out_dir, base + ".json")
    with open(jpath, "w") as f:
        json.dump(doc, f, default=lambda o: o.hex() if isinstance(o, bytes) else str(o))
        f.write("\n")
    written = [jpath]
    if res.get("status") == "ok":
        opath = os.path.join(out_dir, base + ".overlay.png")
        draw_overlay(image, res.get("polygons") or [], opath)
        written.append(opath)
        if isinstance(res.get("mask"), dict):
            from PIL import Image
            mpath = os.path.join(out_dir, base + ".mask.png")
            Image.fromarray(proto.rle_to_numpy(res["mask"]) * 255, "L").save(mpath)
            written.append(mpath)
    return written


def draw_overlay(image, polygons, opath):
    """The image as it was sent (a WireImage), 16-bit stretched to 8 for viewing, with the
    polygons' outlines."""
    import numpy as np
    from PIL import Image, ImageDraw
    a = image.to_array()
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) * (255.0 / (hi - lo)) if hi > lo else a * 0).astype(np.uint8)
    im = Image.fromarray(a).convert("RGB")
    d = ImageDraw.Draw(im)
    lw = max(1, round(max(im.size) / 512))
    for p in polygons:
        pts = p.get("points") or []
        xy = [(pts[i], pts[i + 1]) for i in range(0, len(pts) - 1, 2)]
        if len(xy) >= 2:
            d.line(xy + [xy[0]], fill=OUTLINE, width=lw)
    im.save(opath)


# -- commands -------------------------------------------------------------------------------

def connect(args):
    try:
        c = Client(args.url, prefix=args.prefix, password_file=args.redis_password_file,
                   wait_replicas=args.wait_replicas)
        c.ping()
        c.check_access()
    except connection.URLError as e:
        raise CliError(str(e), EXIT_USAGE)
    except PermissionError as e:
        raise CliError(str(e), EXIT_REDIS)
    except redis.AuthenticationError as e:
        raise CliError("Redis at %s refused the credentials: %s" % (connection.mask_url(args.url), e),
                       EXIT_REDIS)
    except redis.RedisError as e:
        raise CliError("cannot reach Redis at %s: %s" % (connection.mask_url(args.url), e),
                       EXIT_REDIS)
    return c


def ensemble(args):
    """(model, models, weights) from --model/--models/--weights; CliError for a bad combination."""
    members = [m.strip() for m in args.models.split(",")] if args.models else None
    weights = None
    if args.weights is not None:
        if not members:
            raise CliError("--weights needs --models")
        try:
            weights = [float(x) for x in args.weights.split(",")]
        except ValueError:
            raise CliError("--weights: %r is not a comma-separated list of numbers" % args.weights)
        if len(weights) != len(members):
            raise CliError("--weights has %d numbers for %d --models" % (len(weights), len(members)))
    model = args.model or (members[0] if members else None)
    if not model:
        raise CliError("submit needs --model, or --models for an ensemble")
    if members and model not in members:
        raise CliError("--model %s is not one of --models %s" % (model, args.models))
    return model, members, weights


def cmd_submit(args):
    files = collect_files(args.paths)
    model, members, weights = ensemble(args)
    if args.out:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise CliError("cannot create output folder %s: %s" % (args.out, e))
    images = [load_image(f) for f in files]
    c = connect(args)
    params = {}
    if args.threshold is not None:
        params["threshold"] = args.threshold
    if args.min_area is not None:
        params["min_area"] = args.min_area
    if args.mask:
        params["outputs"] = ["polygons", "mask"]
    group = args.group or "cli-%s-%s" % (time.strftime("%Y%m%d-%H%M%S"), uuid.uuid4().hex[:6])
    t0 = time.monotonic()
    # One transaction per ~32 MB of images, so a large upload does not hold Redis for long.
    ids, codes, chunk, size = [], {}, [], 0
    try:
        for k, im in enumerate(images):
            chunk.append(im)
            size += len(im.data)
            if size >= (32 << 20) or k == len(images) - 1:
                group, more = c.submit_many(chunk, model, group, params=params or None,
                                            tenant=args.tenant, priority=args.priority,
                                            models=members, weights=weights)
                ids.extend(more)
                codes.update(c.last_enqueue)
                chunk, size = [], 0
    except proto.ProtocolError as e:
        raise CliError(str(e))
    rejected = [i for i in ids if codes.get(i) == 3]
    what = "model %s" % model if not members else "ensemble %s (routed to %s)" % (",".join(members), model)
    print("submitted %d images to %s as group %s" % (len(ids), what, group), flush=True)
    if rejected:
        _err("no worker serves model %s: %d jobs failed with unknown_model" % (model, len(rejected)))
    if not (args.wait or args.out):
        for f, i in zip(files, ids):
            print("%s  %s" % (i, f))
        return 0
    deadline = None if args.timeout is None else t0 + args.timeout
    bar = Progress(len(ids))
    bar.start()
    try:
        for ev in c.events(group=group, total=len(ids), timeout=args.timeout):
            # Group events and snapshots carry the counters after the change.
            g = ev.get("snapshot") if ev.get("type") == "resync" else ev
            if g is not None and "total" in g:
                bar.update(g.get("done", 0), g.get("failed", 0) + g.get("canceled", 0), g.get("running", 0))
        bar.close()
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        results = c.wait_many(ids, timeout=left)
    except Timeout:
        bar.close()
        g = c.group_status(group) or {}
        raise CliError("timed out after %gs: %s of %d images finished (group %s)" %
                       (args.timeout, (g.get("done") or 0) + (g.get("failed") or 0), len(ids), group),
                       EXIT_TIMEOUT)
    finally:
        bar.close()
    wall = time.monotonic() - t0
    rows = [(os.path.basename(f), results[i]) for f, i in zip(files, ids)]
    print_summary(rows, wall)
    if args.out:
        n = 0
        bases = place_outputs(args.out, output_names(files))
        for f, im, i in zip(files, images, ids):
            n += len(write_outputs(args.out, bases[f], f, im, results[i], group))
        with open(os.path.join(args.out, "summary.json"), "w") as fh:
            json.dump({"group": group, "model": model, "models": members, "wall_s": round(wall, 3),
                       "images": [{"file": f, "id": i, "output": bases[f],
                                   "status": results[i].get("status"),
                                   "objects": len(results[i].get("polygons") or []),
                                   "error": results[i].get("error")} for f, i in zip(files, ids)]},
                      fh, indent=1)
            fh.write("\n")
        print("results: %d files in %s (<image>.json polygons, <image>.overlay.png outlines, summary.json)"
              % (n + 1, os.path.abspath(args.out)))
        renamed = [(f, b) for f, b in bases.items() if b != os.path.splitext(os.path.basename(f))[0]]
        for f, b in renamed:
            print("  %s -> %s.json (its name is shared with another input)" % (f, b))
    return 0 if all(r.get("status") == "ok" for r in results.values()) else EXIT_FAILED


def format_event(ev):
    """One line for a job event, a group event or a recovery control item."""
    if ev.get("type") in ("recovered", "resync"):
        line = "-- %s at offset %s (epoch %s)" % (ev["type"], ev.get("off"), ev.get("epoch"))
        if ev["type"] == "recovered":
            return line + ": %d missed event(s) follow" % ev.get("missed", 0)
        snap = ev.get("snapshot") or {}
        return line + ": missed events are gone; now " + (
            "state=%s" % snap.get("state") if "state" in snap else
            "%s done, %s failed, %s canceled of %s" % (snap.get("done"), snap.get("failed"),
                                                       snap.get("canceled"), snap.get("total")))
    ts = ev.get("ts_ms")
    when = time.strftime("%H:%M:%S", time.localtime(ts / 1000.0)) + ".%03d" % (ts % 1000) if ts else "-"
    if "group" in ev and "total" in ev:
        parts = [when, "group %s" % ev["group"], "off=%s" % ev.get("off"), ev.get("type", "?")]
        for j in ev.get("jobs") or []:
            parts.append("%s:%s" % (j.get("id"), j.get("type")))
        parts.append("[%s done, %s failed, %s canceled, %s running of %s]" %
                     (ev.get("done"), ev.get("failed"), ev.get("canceled"), ev.get("running"), ev.get("total")))
        return "  ".join(str(p) for p in parts)
    parts = [when, ev.get("id", "?"), "off=%s" % ev.get("off"), ev.get("type", "?")]
    if ev.get("attempt") is not None:
        parts.append("attempt=%s" % ev["attempt"])
    if ev.get("worker"):
        parts.append("worker=%s" % ev["worker"])
    if ev.get("error"):
        parts.append("error=%s" % ev["error"])
    if ev.get("steps_total"):
        parts.append("steps=%s/%s" % (ev.get("steps_done"), ev["steps_total"]))
    if ev.get("due_ms"):
        parts.append("retry_in=%.1fs" % max(0.0, (ev["due_ms"] - time.time() * 1000) / 1000.0))
    return "  ".join(str(p) for p in parts)


def cmd_watch(args):
    if (args.job is None) == (args.group is None):
        raise CliError("watch needs a job id or --group G (one of them)")
    c = connect(args)
    try:
        for ev in c.events(id=args.job, group=args.group, timeout=args.timeout):
            print(format_event(ev), flush=True)
    except Timeout:
        raise CliError("timed out after %gs waiting for the %s to finish" %
                       (args.timeout, "job" if args.job else "group"), EXIT_TIMEOUT)
    if args.job:
        st = c.status(args.job) or {}
        return 0 if st.get("state") == "done" else EXIT_FAILED
    g = c.group_status(args.group) or {}
    return 0 if not g.get("failed") and not g.get("canceled") else EXIT_FAILED


def cmd_cancel(args):
    if bool(args.jobs) == bool(args.group):
        raise CliError("cancel needs job ids or --group G (one of them)")
    c = connect(args)
    codes = c.cancel(group=args.group) if args.group else c.cancel(args.jobs)
    words = {1: "canceled", 2: "cancel pending (running: canceled at its ack)",
             0: "nothing to cancel (finished or unknown)"}
    if args.group:
        words[1] = "canceled: queued jobs are answered canceled, running ones at their ack"
        words[0] = "nothing to cancel (unknown or already canceled group)"
    for name, code in codes.items():
        print("%s  %s" % (name, words.get(code, code)))
    return 0 if any(code for code in codes.values()) else EXIT_FAILED


def cmd_dead(args):
    c = connect(args)
    if args.dead_cmd == "list":
        rows = c.dead_list(args.start, args.count)
        if args.json:
            json.dump([{"id": i, "dead_ms": ms} for i, ms in rows], sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        table = [("ID", "DEAD AT", "ERROR", "ATTEMPT", "MESSAGE")]
        for i, ms in rows:
            d = c.dead_show(i) or {}
            res = d.get("result") or {}
            err = res.get("error") or {}
            table.append((i, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000.0)),
                          err.get("code", "-"), str(res.get("attempt", "-")), (err.get("message") or "")[:60]))
        if len(table) == 1:
            table.append(("(none)", "-", "-", "-", "-"))
        _table(table, sys.stdout)
        return 0
    if args.dead_cmd == "show":
        d = c.dead_show(args.job)
        if d is None:
            raise CliError("%s is not a dead letter (unknown, expired, requeued or not dead)" % args.job, EXIT_FAILED)
        json.dump(d, sys.stdout, indent=1, default=lambda o: "<%d bytes>" % len(o) if isinstance(o, bytes) else str(o))
        sys.stdout.write("\n")
        return 0
    ids = "*" if args.all else args.jobs
    if not ids:
        raise CliError("dead %s needs job ids or --all" % args.dead_cmd)
    if args.dead_cmd == "requeue":
        n = c.dead_requeue(ids)
        print("requeued %d dead letter(s)" % n)
    else:
        n = c.dead_purge(ids)
        print("purged %d dead letter(s)" % n)
    return 0 if n or ids == "*" else EXIT_FAILED


def cmd_result(args):
    c = connect(args)
    try:
        res = c.wait(args.job, timeout=args.timeout) if args.timeout else c.result(args.job)
    except Timeout:
        raise CliError("no result for %s within %gs" % (args.job, args.timeout), EXIT_TIMEOUT)
    if res is None:
        raise CliError("no result for job %s (unknown, pending or expired)" % args.job, EXIT_FAILED)
    json.dump(res, sys.stdout, indent=1, default=lambda o: o.hex() if isinstance(o, bytes) else str(o))
    sys.stdout.write("\n")
    return 0 if res.get("status") == "ok" else EXIT_FAILED


def _table(rows, out):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(str(c).ljust(widths[i]) if i == 0 or isinstance(c, str) and not c.isdigit()
                            else str(c).rjust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")


def cmd_stats(args):
    c = connect(args)
    st = c.stats()
    out = sys.stdout
    if args.json:
        json.dump(st, out, indent=1)
        out.write("\n")
        return 0
    rows = [("MODEL", "TENANT", "QUEUED", "DELAYED", "SERVED")]
    models = dict(st["models"])
    for m in st["served"]:
        models.setdefault(m, {"queued": 0, "delayed": 0, "tenants": {}})
    for m, info in sorted(models.items()):
        served = "yes" if m in st["served"] else "no"
        tenants = info["tenants"] or {"default": 0}
        for k, (t, n) in enumerate(sorted(tenants.items())):
            rows.append((m, t, n, info.get("delayed", 0) if k == 0 else "", served))
    if len(rows) == 1:
        rows.append(("(none)", "-", 0, 0, "-"))
    _table(rows, out)
    out.write("\n")
    rows = [("WORKER", "LIVE", "LEASE_MS", "INFLIGHT")]
    for w, info in sorted(st["workers"].items()):
        rows.append((w, "yes" if info["live"] else "NO", info["lease_ms"] if info["lease_ms"] else "-",
                     info["inflight"]))
    if len(rows) == 1:
        rows.append(("(none)", "-", "-", 0))
    _table(rows, out)
    out.write("\nlive workers: %d   dead letters: %d\n" % (st["live_workers"], st["dead"]))
    cn = st["counters"]
    out.write("counters: " + "  ".join("%s=%s" % (k, cn[k]) for k in
                                       ("enqueued", "done", "failed", "canceled", "requeued", "retried",
                                        "dead")) + "\n")
    return 0


# -- tune -----------------------------------------------------------------------------------

def tune_binary(explicit=None):
    """segq-tune: --bin, $SEGQ_TUNE_BIN, $SEGQ_BUILD_DIR/worker, the source tree's build/worker,
    then PATH; None if none is there."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    cands = [explicit, os.environ.get("SEGQ_TUNE_BIN")]
    if os.environ.get("SEGQ_BUILD_DIR"):
        cands.append(os.path.join(os.environ["SEGQ_BUILD_DIR"], "worker", "segq-tune"))
    cands += [os.path.join(root, "build", "worker", "segq-tune"), shutil.which("segq-tune")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def cmd_tune(args):
    model_json = os.path.join(args.model_dir, args.model, "model.json")
    if not os.path.isfile(model_json):
        raise CliError("no model.json for %s in %s" % (args.model, args.model_dir))
    exe = tune_binary(args.bin)
    if exe is None:
        raise CliError("segq-tune not found (build it: cmake --build build --target segq-tune, "
                       "or set SEGQ_TUNE_BIN)")
    argv = [exe, args.model, "--model-dir", args.model_dir, "--device", args.device,
            "--batches", args.batches, "--streams", args.streams, "--seconds", str(args.seconds)]
    if args.precision:
        argv += ["--precision", args.precision]
    # The table goes to our stderr as it is measured; the JSON comes back on stdout.
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None, text=True)
    if p.returncode != 0:
        raise CliError("segq-tune failed (exit %d)" % p.returncode, EXIT_FAILED)
    try:
        report = json.loads(p.stdout)
        rec = report["recommended"]
    except (ValueError, KeyError) as e:
        raise CliError("segq-tune printed no recommendation: %s" % e, EXIT_FAILED)
    report["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["host"] = platform.node()
    print("%s on %s (%s): optimal_batch %d, max_batch %d, streams %d"
          % (args.model, report.get("backend"), report.get("precision"), rec["optimal_batch"],
             rec["max_batch"], rec["contexts"]))
    if args.dry_run:
        print(json.dumps(report, indent=2))
        return 0
    with open(model_json) as f:
        cfg = json.load(f)
    cfg["optimal_batch"] = int(rec["optimal_batch"])
    cfg["max_batch"] = int(rec["max_batch"])
    cfg["contexts"] = int(rec["contexts"])
    tmp = model_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp, model_json)  # a worker starting meanwhile reads the old or the new file
    with open(os.path.join(args.model_dir, args.model, "tune.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print("wrote %s (optimal_batch, max_batch, contexts) and tune.json beside it" % model_json)
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog="segq", description="segq command line: submit images, "
                                 "watch events, show queue statistics.")
    ap.add_argument("--url", default=os.environ.get("SEGQ_REDIS_URL", DEFAULT_URL),
                    help="Redis URL: redis://, rediss:// or redis+sentinel://host:port,.../MASTER "
                    "(env SEGQ_REDIS_URL; default %(default)s). Keep the password out of it: "
                    "SEGQ_REDIS_PASSWORD or --redis-password-file")
    ap.add_argument("--redis-password-file", default=None,
                    help="file holding the Redis password (env SEGQ_REDIS_PASSWORD_FILE)")
    ap.add_argument("--wait-replicas", type=int, default=int(os.environ.get("SEGQ_WAIT_REPLICAS", 0)),
                    help="submit: WAIT until this many replicas have each job, else fail (env "
                    "SEGQ_WAIT_REPLICAS; default %(default)s)")
    ap.add_argument("--prefix", default=os.environ.get("SEGQ_PREFIX", DEFAULT_PREFIX),
                    help="key prefix (env SEGQ_PREFIX; default %(default)s)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("submit", help="submit image files or folders")
    s.add_argument("paths", nargs="+", metavar="FILE|FOLDER")
    s.add_argument("--model", help="model name, e.g. otsu, cellseg-unet (with --models: the member "
                   "that routes the jobs; default its first)")
    s.add_argument("--models", help="an ensemble: comma-separated member models whose "
                   "probabilities are averaged, e.g. cellseg-unet,otsu (one worker must serve all)")
    s.add_argument("--weights", help="with --models: comma-separated weights in the same order "
                   "(default 1 each)")
    s.add_argument("--group", help="group id (default: generated)")
    s.add_argument("--tenant", help="tenant (default: default)")
    s.add_argument("--priority", type=int, help="> 0 puts the jobs at the front of the queue")
    s.add_argument("--threshold", type=float, help="probability threshold in [0, 1]")
    s.add_argument("--min-area", type=int, help="drop polygons smaller than this (pixels)")
    s.add_argument("--mask", action="store_true",
                   help="also ask for the RLE mask (written as <image>.mask.png with --out)")
    s.add_argument("--wait", action="store_true", help="show progress and wait for the results")
    s.add_argument("--timeout", type=float, help="seconds to wait (default: forever)")
    s.add_argument("--out", help="write <image>.json and <image>.overlay.png here (implies --wait); "
                   "inputs with the same name get distinct outputs, and a result of another "
                   "input already there is never replaced")
    s.set_defaults(fn=cmd_submit)

    w = sub.add_parser("watch", help="print the events of a job or a group live")
    w.add_argument("job", nargs="?", help="job id")
    w.add_argument("--group", help="group id")
    w.add_argument("--timeout", type=float, help="seconds to wait (default: forever)")
    w.set_defaults(fn=cmd_watch)

    r = sub.add_parser("result", help="print a job's result as JSON")
    r.add_argument("job")
    r.add_argument("--timeout", type=float, help="wait up to this many seconds for it")
    r.set_defaults(fn=cmd_result)

    ca = sub.add_parser("cancel", help="cancel jobs (queued: at once; running: at their ack) or a group")
    ca.add_argument("jobs", nargs="*", metavar="ID", help="job ids")
    ca.add_argument("--group", help="cancel every job of this group, and later submits to it")
    ca.set_defaults(fn=cmd_cancel)

    d = sub.add_parser("dead", help="dead letters: list, show, requeue, purge")
    dsub = d.add_subparsers(dest="dead_cmd", metavar="ACTION")
    dsub.required = True
    dl = dsub.add_parser("list", help="the dead letters, newest first")
    dl.add_argument("--start", type=int, default=0)
    dl.add_argument("--count", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    ds = dsub.add_parser("show", help="a dead letter's error result and job document")
    ds.add_argument("job")
    for name, what in (("requeue", "queue dead letters again"), ("purge", "delete dead letters")):
        dp = dsub.add_parser(name, help=what)
        dp.add_argument("jobs", nargs="*", metavar="ID")
        dp.add_argument("--all", action="store_true", help="every dead letter")
    d.set_defaults(fn=cmd_dead)

    st = sub.add_parser("stats", help="queues, in-flight jobs, workers, dead letters, counters")
    st.add_argument("--json", action="store_true", help="print the raw statistics as JSON")
    st.set_defaults(fn=cmd_stats)

    t = sub.add_parser("tune", help="measure a model over batch sizes and streams on this "
                       "machine's device and write the best into its model.json")
    t.add_argument("model", help="repository model name (a folder of --model-dir)")
    t.add_argument("--model-dir", default=os.environ.get("SEGQ_MODEL_DIR", "models"),
                   help="model repository (env SEGQ_MODEL_DIR; default %(default)s)")
    t.add_argument("--device", default=os.environ.get("SEGQ_DEVICE", "auto"),
                   help="auto, cpu, cuda, cuda:N, cuda:all (env SEGQ_DEVICE; default %(default)s)")
    t.add_argument("--precision", choices=("fp32", "fp16"), help="default: the model's own")
    t.add_argument("--batches", default="1,2,4,8,16", help="batch sizes (default %(default)s)")
    t.add_argument("--streams", default="1,2", help="streams per device (default %(default)s)")
    t.add_argument("--seconds", type=float, default=3.0,
                   help="time per measurement (default %(default)s)")
    t.add_argument("--dry-run", action="store_true", help="print the report, write nothing")
    t.add_argument("--bin", help="the segq-tune binary (default: found in the build tree or PATH)")
    t.set_defaults(fn=cmd_tune)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CliError as e:
        _err(str(e))
        return e.code
    except redis.ConnectionError as e:
        _err("lost the connection to Redis at %s: %s" % (connection.mask_url(args.url), e))
        return EXIT_REDIS
    except (SegqError, redis.RedisError) as e:
        _err(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
