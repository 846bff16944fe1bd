#!/usr/bin/python3
"""The demo page of segq-bridge in a real browser: Debian's headless Chromium (playwright-core, no
browser download) with a real redis-server, a real segq-worker (cellseg-unet, one image per batch
so the run lasts) and the bridge in --demo mode. Each test uploads 10 images through the page and
ends with every bar at 100%, every overlay drawn (checked in a screenshot: magenta over the
objects the result names, none on the background) and every group event seen exactly once (the
page logs each offset it got; no duplicate, no gap, no resync):

  - test_reload_mid_run: once some images are done the page navigates away while the run goes
    on (two more images finish), then comes back with the worker frozen (SIGSTOP): it resumes
    from its (offset, epoch), the events published while it was away replayed once, and shows
    every image done meanwhile; then the worker resumes.
  - test_bridge_killed_mid_run: the bridge is killed (SIGKILL) once some images are done and
    restarted on the same port after more work finished without it; the page's client
    reconnects with backoff and the restarted bridge replays the missed events from Redis.

SEGQ_DEMO_SCREENSHOT=path keeps the final page of the first test (docs/bridge-demo.png)."""
import glob
import io
import json
import os
import shutil
import signal
import time
import unittest

import segq_testlib as tl

tl.require_worker()
tl.require_bridge()
tl.require_browser()

import segq  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

PREFIX = "segq"
MODEL = "cellseg-unet"
N = 10
DONE_CARDS = "document.querySelectorAll('.card[data-state=\"done\"]').length"
SAMPLES = sorted(glob.glob(os.path.join(tl.SOURCE_DIR, "samples", "cells_*.jpg")))[:N]


def page_done(b, k):
    """Waits until the page shows at least k images done; returns how many it shows."""
    return b.wait_for("(() => { const s = window.segqDemo && window.segqDemo.state;"
                      " if (!s) return 0; const n = Object.values(s.jobs_state)"
                      ".filter(j => j.state === 'done').length; return n >= %d ? n : 0; })()" % k,
                      timeout=240)


class DemoPage(unittest.TestCase):
    def setUp(self):
        if len(SAMPLES) < N:
            self.skipTest("needs %d images in samples/" % N)
        self.rs = tl.RedisServer()
        self.r = self.rs.client()
        # A long lease: the worker is frozen for a few seconds in one test.
        self.worker = tl.Worker(self.rs.url, prefix=PREFIX, models=MODEL + ",otsu", max_batch=1,
                                lease_ttl_ms=60000)
        self.worker.wait_ready(self.r, timeout=60)
        # A configured secret: the page's tokens stay valid across the bridge's restart (without
        # one, --demo draws a new secret at every start).
        self.bridge = tl.Bridge(self.rs.url, prefix=PREFIX, demo=True, demo_model=MODEL)
        self.bridge.wait_ready()
        self.browser = tl.Browser()
        self.tmp = tl.tempdir("segq-demo-test-")

    def tearDown(self):
        try:
            lines = self.browser.call("console", timeout=10)
            errors = [l for l in lines if l.startswith(("error", "pageerror"))]
            if errors:
                print("browser console errors:\n  " + "\n  ".join(errors))
        except AssertionError:
            pass
        self.browser.close()
        self.worker.signal(signal.SIGCONT)
        self.bridge.kill9()
        self.worker.kill9()
        self.rs.stop(signal.SIGKILL)

    def upload(self):
        b = self.browser
        b.goto(self.bridge.url + "/")
        b.call("set_files", selector="#files", files=SAMPLES)
        st = b.wait_for("window.segqDemo.state && window.segqDemo.state.group", timeout=60)
        self.group = st
        return st

    def finish_and_check(self, shot_name):
        b = self.browser
        b.wait_for("(() => { const d = window.segqDemo; return d.state &&"
                   " Object.keys(d.drawn).length === %d &&"
                   " document.getElementById('group-fill').dataset.pct === '100'; })()" % N,
                   timeout=300)
        state = b.eval("JSON.stringify({s: window.segqDemo.state, drawn: window.segqDemo.drawn,"
                       " dup: window.segqDemo.duplicates,"
                       " replays: window.segqDemo.sub.bridge.replays,"
                       " pcts: Array.from(document.querySelectorAll('.card .fill'))"
                       ".map(e => e.dataset.pct)})")
        st = json.loads(state)
        s = st["s"]
        top = tl.group_top_offset(self.r, PREFIX, s["group"])
        self.assertGreater(top, 0)
        # every event exactly once: offsets 1..top, in the order they came, no duplicate
        self.assertEqual(s["seen"], list(range(1, top + 1)), "events seen by the page")
        self.assertEqual(st["dup"], 0)
        self.assertEqual(st["replays"], 0, "events the bridge sent twice (dropped by segq.js)")
        self.assertEqual(s["resyncs"], 0)
        self.assertEqual(st["pcts"], ["100"] * N)
        self.assertEqual(s["counters"]["done"], N)
        # every overlay drawn: the DOM says so, and the pixels agree
        self.assertEqual(len(st["drawn"]), N)
        shot = os.path.join(self.tmp, shot_name)
        b.call("screenshot", path=shot, full_page=True)
        self.check_pixels(shot, s["jobs"])
        return shot

    def check_pixels(self, shot, jobs):
        img = Image.open(shot).convert("RGB")
        for job in jobs:
            res = tl.record_result(self.r.get(tl.job_key(PREFIX, job["id"])))
            self.assertEqual(res["status"], "ok", res)
            polys = res["polygons"]
            self.assertTrue(polys, "%s: the model found nothing" % job["name"])
            w, h = res["width"], res["height"]
            # The objects as a mask in the uploaded image's pixels.
            mask = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(mask)
            for p in polys:
                pts = p["points"]
                draw.polygon([(pts[i], pts[i + 1]) for i in range(0, len(pts), 2)], fill=255)
            inner = mask.filter(ImageFilter.MinFilter(7))  # >= 3 px inside an object
            outer = mask.filter(ImageFilter.MaxFilter(9))  # >= 4 px away from every object
            inside = [(x, y) for y in range(3, h - 3, 3) for x in range(3, w - 3, 3)
                      if inner.getpixel((x, y))]
            outside = [(x, y) for y in range(4, h - 4, 3) for x in range(4, w - 4, 3)
                       if not outer.getpixel((x, y))]
            self.assertTrue(inside and outside, job["name"])
            box = self.browser.call("box", selector='.card[data-job-id="%s"] canvas' % job["id"])
            scale = box["width"] / w

            def rgb(pt):
                x = int(box["x"] + (pt[0] + 0.5) * scale)
                y = int(box["y"] + (pt[1] + 0.5) * scale)
                return img.getpixel((x, y))

            def magenta(c):
                return c[0] - c[1] > 60 and c[2] - c[1] > 60

            step_in = max(1, len(inside) // 25)
            hits = [magenta(rgb(p)) for p in inside[::step_in]]
            step_out = max(1, len(outside) // 25)
            misses = [magenta(rgb(p)) for p in outside[::step_out]]
            self.assertGreaterEqual(sum(hits), 0.9 * len(hits),
                                    "%s: overlay missing over its objects (%d/%d magenta)"
                                    % (job["name"], sum(hits), len(hits)))
            self.assertLessEqual(sum(misses), 0.1 * len(misses),
                                 "%s: overlay over the background (%d/%d magenta)"
                                 % (job["name"], sum(misses), len(misses)))

    def test_reload_mid_run(self):
        self.upload()
        done_before = page_done(self.browser, 3)
        b = self.browser
        url = b.eval("location.href")
        # The page goes away while the run goes on: what is published meanwhile must be replayed.
        b.call("goto", url="about:blank")
        away = self.client_stats()["done"]
        self.assertLess(away, N, "the run ended before the page went away")
        tl.wait_until(lambda: self.client_stats()["done"] >= min(N, away + 2), 240,
                      what="two more images done while the page is away")
        self.worker.signal(signal.SIGSTOP)  # freeze the run while the page comes back
        stats = self.client_stats()
        self.assertLess(stats["done"], N, "the run ended before the page came back")
        b.call("goto", url=url)
        st = b.wait_for("window.segqDemo.state && window.segqDemo.state.reloads === 1 &&"
                        " window.segqDemo.subscribed >= 1 && window.segqDemo.state", timeout=60)
        self.assertEqual(len(st["jobs"]), N)
        tl.wait_until(lambda: b.eval(DONE_CARDS) == stats["done"], 60,
                      what="the page caught up with what happened while it was away")
        self.assertGreater(b.eval(DONE_CARDS), done_before)
        self.worker.signal(signal.SIGCONT)
        shot = self.finish_and_check("reload.png")
        out = os.environ.get("SEGQ_DEMO_SCREENSHOT")
        if out:
            shutil.copyfile(shot, out)

    def test_bridge_killed_mid_run(self):
        self.upload()
        page_done(self.browser, 3)
        self.bridge.kill9()
        before = self.client_stats()["done"]
        self.assertLess(before, N, "the run ended before the bridge was killed")
        # The run goes on without the bridge; the page's client keeps retrying.
        tl.wait_until(lambda: self.client_stats()["done"] >= min(N, before + 2), 240,
                      what="two more images done while the bridge is down")
        conn = self.browser.eval("window.segqDemo.connection")
        self.assertNotEqual(conn, "open")
        self.bridge.start()
        self.bridge.wait_ready()
        self.browser.wait_for("window.segqDemo.connection === 'open'", timeout=60)
        self.finish_and_check("killed.png")
        self.assertEqual(self.browser.eval("window.segqDemo.state.reloads"), 0)
        self.assertGreaterEqual(self.browser.eval("window.segqDemo.sub.bridge.reconnects"), 1)

    def client_stats(self):
        return segq.Client(self.rs.url, prefix=PREFIX).group_status(self.group) or {"done": 0}


if __name__ == "__main__":
    tl.run_tests(timeout_s=840)
