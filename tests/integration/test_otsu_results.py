#!/usr/bin/python3
"""The `otsu` model's results through a real worker: images with a known set of bright disks
give one polygon per disk at the right place in original pixel coordinates (JPEG, gray8 and
gray16 input), an RLE mask when asked, meta copied through, deadline_exceeded for a past
deadline, and a duplicate enqueue of a finished id is not computed again."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import numpy as np  # noqa: E402
import segq  # noqa: E402
from segq import proto  # noqa: E402

P = "otsu"
W, H = 301, 203  # odd sizes: any resize or padding inside the model would show
DISKS = [(40, 50, 12), (150, 40, 20), (250, 150, 15), (90, 160, 9), (200, 100, 6)]


def disk_pixels(cx, cy, rad):
    return sum(1 for y in range(cy - rad, cy + rad + 1) for x in range(cx - rad, cx + rad + 1)
               if (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad)


def shoelace(pts):
    xs, ys = pts[0::2], pts[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


class OtsuResults(tl.WorkerTestCase):
    PREFIX = P
    WORKER = dict(worker_id="otsu-w1")

    def match_disks(self, res, exact, what):
        self.assertEqual(res["status"], "ok", (what, res.get("error")))
        self.assertEqual((res["width"], res["height"]), (W, H), what)
        polys = res["polygons"]
        self.assertEqual(len(polys), len(DISKS), (what, [p["bbox"] for p in polys]))
        tol = 0 if exact else 1.5
        unmatched = list(DISKS)
        for p in polys:
            x, y, w, h = p["bbox"]
            cx, cy = x + w / 2, y + h / 2
            best = min(unmatched, key=lambda d: (d[0] + 0.5 - cx) ** 2 + (d[1] + 0.5 - cy) ** 2)
            unmatched.remove(best)
            dx, dy, rad = best
            # A disk of radius r drawn on pixel centres covers pixels cx-r..cx+r inclusive, so
            # its outline runs from cx-r to cx+r+1 along pixel edges.
            for got, want in ((x, dx - rad), (y, dy - rad), (w, 2 * rad + 1), (h, 2 * rad + 1)):
                self.assertLessEqual(abs(got - want), tol, (what, "bbox", p["bbox"], best))
            area = disk_pixels(dx, dy, rad)
            self.assertLessEqual(abs(p["area"] - area), 0 if exact else 0.1 * area + 4,
                                 (what, "area", p["area"], area))
            pts = p["points"]
            self.assertEqual(len(pts) % 2, 0)
            self.assertGreaterEqual(len(pts), 8)
            pxs, pys = pts[0::2], pts[1::2]
            # The points lie on the bbox: the bbox is theirs.
            self.assertEqual([min(pxs), min(pys), max(pxs) - min(pxs), max(pys) - min(pys)],
                             [x, y, w, h], what)
            # Outline within a pixel-ish of the pixel count (Douglas-Peucker 0.5 px).
            self.assertLess(abs(shoelace(pts) - p["area"]), 0.25 * p["area"] + 8, (what, shoelace(pts)))
        return polys

    def test_jpeg_disks(self):
        img = tl.make_jpeg(W, H, disks=DISKS, quality=97)
        res = self.c.wait(self.c.submit(img, "otsu", id="jpeg-disks"), timeout=30)
        self.match_disks(res, exact=False, what="jpeg")

    def test_gray8_disks_exact(self):
        arr = tl.disk_image(W, H, DISKS, bg=10, fg=200)
        res = self.c.wait(self.c.submit(arr, "otsu", id="gray8-disks"), timeout=30)
        self.match_disks(res, exact=True, what="gray8")

    def test_gray16_disks_exact(self):
        # Values only a 16-bit histogram separates correctly (both above 255).
        arr = tl.disk_image(W, H, DISKS, bg=1000, fg=40000, dtype="uint16")
        res = self.c.wait(self.c.submit(arr, "otsu", id="gray16-disks"), timeout=30)
        self.match_disks(res, exact=True, what="gray16")

    def test_min_area_drops_small_disks(self):
        arr = tl.disk_image(W, H, DISKS, bg=10, fg=200)
        res = self.c.wait(self.c.submit(arr, "otsu", id="minarea-disks", min_area=300), timeout=30)
        want = sorted(disk_pixels(*d) for d in DISKS if disk_pixels(*d) >= 300)
        self.assertEqual(sorted(p["area"] for p in res["polygons"]), want)

    def test_mask_rle(self):
        arr = tl.disk_image(W, H, DISKS, bg=10, fg=200)
        res = self.c.wait(self.c.submit(arr, "otsu", id="mask-disks", outputs=["polygons", "mask"]), timeout=30)
        self.assertEqual(res["status"], "ok", res.get("error"))
        m = res.get("mask")
        self.assertIsNotNone(m, "no mask in the result")
        self.assertEqual((m["encoding"], m["width"], m["height"]), ("rle", W, H))
        self.assertEqual(sum(m["counts"]), W * H)
        self.assertTrue(all(c > 0 for c in m["counts"][1:]), "empty run after the first")
        got = proto.rle_to_numpy(m).astype(bool)
        self.assertEqual(got.shape, (H, W))
        np.testing.assert_array_equal(got, arr > 100)
        self.assertEqual(len(res["polygons"]), len(DISKS))
        # Without asking: no mask.
        res2 = self.c.wait(self.c.submit(arr, "otsu", id="nomask-disks"), timeout=30)
        self.assertNotIn("mask", res2)
        # Mask only.
        res3 = self.c.wait(self.c.submit(arr, "otsu", id="maskonly-disks", outputs=["mask"]), timeout=30)
        self.assertEqual(res3["mask"]["counts"], m["counts"])

    def test_empty_image_no_polygons(self):
        arr = np.full((40, 50), 77, dtype="uint8")
        res = self.c.wait(self.c.submit(arr, "otsu", id="flat", outputs=["polygons", "mask"]), timeout=30)
        self.assertEqual(res["status"], "ok", res.get("error"))
        self.assertEqual(res["polygons"], [])
        self.assertEqual(res["mask"]["counts"], [40 * 50])  # one run of zeros

    def test_meta_passthrough(self):
        meta = {"patient": "p-17", "n": [1, -2, 3.5, None, True], "nested": {"k": b"\x00\x01bin"},
                "big": 2 ** 40}
        res = self.c.wait(self.c.submit(tl.make_jpeg(32, 32), "otsu", id="meta-1", meta=meta), timeout=30)
        self.assertEqual(res["status"], "ok", res.get("error"))
        self.assertEqual(res.get("meta"), meta)
        res2 = self.c.wait(self.c.submit(tl.make_jpeg(32, 32), "otsu", id="meta-none"), timeout=30)
        self.assertNotIn("meta", res2)

    def test_deadline_exceeded(self):
        past = tl.now_ms() - 60000
        res = self.c.wait(self.c.submit(tl.make_jpeg(32, 32), "otsu", id="late-1", deadline_ms=past), timeout=30)
        self.assertEqual(res["status"], "error")
        self.assertEqual(res["error"]["code"], "deadline_exceeded")
        self.assertEqual(tl.job_status(self.r, P, "late-1").get("state"), "failed")
        future = tl.now_ms() + 600000
        res = self.c.wait(self.c.submit(tl.make_jpeg(32, 32), "otsu", id="early-1", deadline_ms=future), timeout=30)
        self.assertEqual(res["status"], "ok", res.get("error"))

    def test_duplicate_of_finished_id_not_recomputed(self):
        img = tl.make_jpeg(64, 64)
        jid = self.c.submit(img, "otsu", id="dup-1")
        self.assertEqual(self.c.last_enqueue[jid], segq.ENQUEUE_QUEUED)
        self.assertEqual(self.c.wait(jid, timeout=30)["status"], "ok")
        raw = self.r.get(tl.job_key(P, jid))
        before = tl.stats(self.r, P)
        self.c.submit(img, "otsu", id=jid)
        self.assertEqual(self.c.last_enqueue[jid], segq.ENQUEUE_HAS_RESULT)
        # Also bypassing the enqueue check: push the id straight onto the queue, as a duplicate
        # delivery would; the claim must drop it without recomputing.
        self.r.rpush(tl.key(P, "q", "otsu", "default"), jid)
        self.r.rpush(tl.key(P, "ring", "otsu"), "default")
        self.r.rpush(tl.key(P, "wake", "otsu"), "1")
        probe = self.c.submit(img, "otsu", id="dup-probe")
        self.assertEqual(self.c.wait(probe, timeout=30)["status"], "ok")
        time.sleep(0.3)
        self.assertEqual(self.r.get(tl.job_key(P, jid)), raw, "record (event offsets included) unchanged")
        after = tl.stats(self.r, P)
        self.assertEqual(after.get("done"), before.get("done") + 1, (before, after))  # the probe only
        self.assertEqual(tl.inflight_lists(self.r, P), {})


if __name__ == "__main__":
    tl.run_tests()
