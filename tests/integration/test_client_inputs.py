#!/usr/bin/python3
"""Issue 12 item 7 against a real worker (otsu and cellseg-unet): the library takes PNG and TIFF
bytes and paths, RGB arrays (8- and 16-bit) and PIL images, and sends their samples losslessly
(each gives exactly the polygons of the same samples sent as an array); the command line's
--models/--weights make an ensemble job and --tenant puts it in that tenant's queue (read back
from Redis before the worker takes it); --out never lets one input's result replace another's:
a.png and a.tif, dirA/x.jpg and dirB/x.jpg each keep their JSON and overlay, also across runs
into the same folder."""
import io
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
try:
    import numpy as np
    import tifffile
    from PIL import Image
except ImportError as e:  # pragma: no cover
    tl.skip("needs python3-numpy, python3-pil, python3-tifffile: %s" % e)

import segq  # noqa: E402
from segq import proto  # noqa: E402

P = "inp"
SEGQ = os.path.join(tl.SOURCE_DIR, "tools", "segq")
DISKS = [(30, 30, 12), (70, 36, 9)]


def png(im):
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def tiff(a, **kw):
    b = io.BytesIO()
    tifffile.imwrite(b, a, **kw)
    return b.getvalue()


def shapes(res):
    """The result's polygons as comparable values."""
    return sorted((p["area"], tuple(p["points"])) for p in res["polygons"])


class Inputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.w = tl.Worker(cls.rs.url, prefix=P, worker_id="inp-w1", models="otsu,cellseg-unet")
        cls.w.wait_ready(cls.r, timeout=120)
        cls.c = segq.Client(cls.rs.url, prefix=P)
        cls.work = tl.tempdir("segq-inputs-")

    @classmethod
    def tearDownClass(cls):
        cls.w.stop()
        cls.rs.stop()

    def run_one(self, image, **kw):
        id = self.c.submit(image, "otsu", min_area=0, **kw)
        res = self.c.wait(id, timeout=60)
        self.assertEqual(res["status"], "ok", res.get("error"))
        return res

    def segq(self, *args, timeout=180):
        env = dict(os.environ, SEGQ_REDIS_URL=self.rs.url, SEGQ_PREFIX=P)
        p = subprocess.run([SEGQ] + list(args), env=env, capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def test_library_takes_lossless_inputs(self):
        # A 12-bit camera picture in 16 bits: its samples must arrive as they are.
        g16 = tl.disk_image(96, 64, DISKS, bg=300, fg=3000, dtype="uint16")
        ref16 = self.run_one(g16)
        self.assertEqual(len(ref16["polygons"]), 2)
        p16 = os.path.join(self.work, "cells16.png")
        Image.fromarray(g16).save(p16)
        t16 = os.path.join(self.work, "cells16.tif")
        tifffile.imwrite(t16, g16)
        for what, image in (("PNG bytes", png(Image.fromarray(g16))), ("PNG path", p16),
                            ("TIFF bytes", tiff(g16)), ("TIFF path", t16),
                            ("PIL image", Image.fromarray(g16))):
            res = self.run_one(image)
            self.assertEqual(shapes(res), shapes(ref16), what)
            self.assertEqual((res["width"], res["height"]), (96, 64), what)
        # 8-bit and RGB: gray replicated into RGB is the same picture to a gray model.
        g8 = tl.disk_image(96, 64, DISKS, bg=20, fg=200)
        ref8 = self.run_one(g8)
        rgb = np.dstack([g8, g8, g8])
        for what, image in (("RGB array", rgb), ("RGB PIL image", Image.fromarray(rgb)),
                            ("RGB PNG bytes", png(Image.fromarray(rgb))),
                            ("RGBA PNG path", None), ("RGB16 TIFF", tiff(rgb.astype(np.uint16) * 257,
                                                                         photometric="rgb"))):
            if image is None:
                image = os.path.join(self.work, "rgba.png")
                Image.fromarray(rgb).convert("RGBA").save(image)
            res = self.run_one(image)
            self.assertEqual(shapes(res), shapes(ref8), what)
        # Colour is sent, not flattened on the client: disks in red only are found by their luma.
        red = np.dstack([g8, np.full_like(g8, 20), np.full_like(g8, 20)])
        self.assertEqual(len(self.run_one(red)["polygons"]), 2)
        # Something that would lose information is refused before anything is queued.
        with self.assertRaises(proto.ProtocolError) as cm:
            self.c.submit(g16.astype(np.float32), "otsu")
        self.assertEqual(cm.exception.code, "invalid_field_value")

    def test_cli_ensemble_and_tenant(self):
        img = os.path.join(self.work, "ens.png")
        Image.fromarray(tl.disk_image(96, 64, DISKS, bg=20, fg=200)).save(img)
        # Hold the worker off (its lease taken) so the job can be read back from Redis queued.
        self.r.set(self.w.lease_key(), "someone-else", px=600000)
        try:
            rc, so, se = self.segq("submit", img, "--models", "otsu,cellseg-unet",
                                   "--weights", "0.7,0.3", "--tenant", "lab-3")
            self.assertEqual(rc, 0, se)
            self.assertIn("ensemble otsu,cellseg-unet (routed to otsu)", so)
            id = so.strip().splitlines()[-1].split()[0]
            job = self.r.hgetall(tl.key(P, "job", id))
            self.assertEqual(job.get(b"tenant"), b"lab-3", job)
            doc = proto.decode_job(tl.live_doc(self.r, P, id))
            self.assertEqual((doc["model"], doc["tenant"]), ("otsu", "lab-3"))
            self.assertEqual(doc["models"], [{"name": "otsu", "weight": 0.7},
                                             {"name": "cellseg-unet", "weight": 0.3}])
            self.assertIn(id.encode(), self.r.lrange(tl.key(P, "q", "otsu", "lab-3"), 0, -1))
        finally:
            self.r.delete(self.w.lease_key())
        rc, so, se = self.segq("result", id, "--timeout", "120")
        self.assertEqual(rc, 0, so + se)
        res = json.loads(so)
        self.assertEqual((res["status"], res["model"]), ("ok", "otsu"))
        self.assertEqual(len(res["polygons"]), 2)
        # --wait --out with an ensemble (the routing model defaults to the first member).
        out = os.path.join(self.work, "ens-out")
        rc, so, se = self.segq("submit", img, "--models", "cellseg-unet,otsu", "--wait",
                               "--timeout", "120", "--out", out)
        self.assertEqual(rc, 0, so + se)
        with open(os.path.join(out, "summary.json")) as f:
            summ = json.load(f)
        self.assertEqual((summ["model"], summ["models"]), ("cellseg-unet", ["cellseg-unet", "otsu"]))
        for bad, msg in ((["--weights", "1,2"], "--weights needs --models"),
                         (["--models", "otsu,cellseg-unet", "--weights", "1"], "2 --models"),
                         (["--model", "null", "--models", "otsu,cellseg-unet"], "not one of"),
                         ([], "needs --model")):
            rc, so, se = self.segq("submit", img, *bad)
            self.assertEqual(rc, 2, (bad, so, se))
            self.assertIn(msg, se, bad)

    def test_cli_out_never_overwrites(self):
        inputs = {"a.png": 1, "a.tif": 2, os.path.join("dirA", "x.jpg"): 3,
                  os.path.join("dirB", "x.jpg"): 4}
        src = os.path.join(self.work, "same-names")
        files = {}
        for rel, n in inputs.items():
            path = os.path.join(src, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            disks = [(16 + 28 * k, 32, 8) for k in range(n)]
            g = tl.disk_image(128, 64, disks, bg=20, fg=220)
            if rel.endswith(".tif"):
                tifffile.imwrite(path, g.astype(np.uint16) * 257)
            elif rel.endswith(".png"):
                Image.fromarray(g).save(path)
            else:
                Image.fromarray(g).save(path, quality=95)
            files[os.path.abspath(path)] = n
        out = os.path.join(self.work, "same-out")

        def owners():
            """{json name: (input file, objects)} of what out holds, each with its overlay."""
            got = {}
            for name in sorted(os.listdir(out)):
                if name.endswith(".json") and name != "summary.json":
                    with open(os.path.join(out, name)) as f:
                        doc = json.load(f)
                    got[name] = (doc["file"], len(doc["polygons"]))
                    base = name[:-len(".json")]
                    self.assertTrue(os.path.exists(os.path.join(out, base + ".overlay.png")), base)
            return got

        rc, so, se = self.segq("submit", *sorted(files), "--model", "otsu", "--wait", "--timeout",
                               "120", "--out", out)
        self.assertEqual(rc, 0, so + se)
        first = owners()
        self.assertEqual(sorted(first.values()), sorted(files.items()), first)  # 4, one each
        # Across runs: dirA/x.jpg alone takes x.json; dirB/x.jpg alone must not replace it; the
        # same input again replaces its own.
        a, b = (os.path.abspath(os.path.join(src, d, "x.jpg")) for d in ("dirA", "dirB"))
        for f in (a, b, a):
            rc, so, se = self.segq("submit", f, "--model", "otsu", "--wait", "--timeout", "120",
                                   "--out", out)
            self.assertEqual(rc, 0, so + se)
        now = owners()
        for name, owner in first.items():
            self.assertEqual(now[name], owner, "%s was replaced by another input's result" % name)
        self.assertEqual((now.get("x.json"), now.get("x-2.json")), ((a, 3), (b, 4)), now)
        self.assertEqual(len(now), 6, now)


if __name__ == "__main__":
    tl.run_tests()
