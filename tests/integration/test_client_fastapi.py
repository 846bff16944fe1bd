#!/usr/bin/python3
"""The FastAPI example of docs/clients.md (issue 12 item 6), run as written: the page's python
block under "## FastAPI" becomes a module, served through httpx's ASGI client against a real
redis-server and a real worker. Uploads of JPEG, 16-bit PNG and TIFF bodies get results; a
request waiting for a result does not stop the app from answering others (AsyncClient on
redis.asyncio); the event stream ends with the job's terminal event; a body that is no image is a
400 with the protocol's error code; cancel and unknown jobs answer as documented."""
import asyncio
import importlib.util
import io
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
try:
    import httpx
    import tifffile
    from PIL import Image
    import fastapi  # noqa: F401
except ImportError as e:  # pragma: no cover
    tl.skip("needs python3-fastapi, python3-httpx, numpy, PIL, tifffile: %s" % e)

P = "segq"  # the example uses the default prefix
DOC = os.path.join(tl.SOURCE_DIR, "docs", "clients.md")


def example_source():
    with open(DOC) as f:
        text = f.read()
    section = text[text.index("\n## FastAPI\n"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    return m.group(1)


def load_example(url):
    path = os.path.join(tl.tempdir("segq-fastapi-"), "app.py")
    with open(path, "w") as f:
        f.write(example_source())
    os.environ["SEGQ_REDIS_URL"] = url
    spec = importlib.util.spec_from_file_location("segq_fastapi_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FastApiExample(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rs = tl.RedisServer()
        cls.r = cls.rs.client()
        cls.w = tl.Worker(cls.rs.url, prefix=P, worker_id="fa-w1", models="otsu")
        cls.w.wait_ready(cls.r, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.w.stop()
        cls.rs.stop()

    def test_example(self):
        mod = load_example(self.rs.url)
        g16 = tl.disk_image(96, 64, [(30, 30, 12), (70, 36, 9)], bg=300, fg=3000, dtype="uint16")
        png = io.BytesIO()
        Image.fromarray(g16).save(png, "PNG")
        tif = io.BytesIO()
        tifffile.imwrite(tif, g16)
        bodies = {"jpeg": tl.make_jpeg(96, 64, disks=[(30, 30, 12), (70, 36, 9)]),
                  "png16": png.getvalue(), "tiff16": tif.getvalue()}

        async def main():
            async with httpx.AsyncClient(app=mod.app, base_url="http://segq.test", timeout=120) as h:
                # Uploads of each kind, results through the waiting endpoint.
                ids = {}
                for kind, body in bodies.items():
                    r = await h.post("/jobs", params={"model": "otsu"}, content=body)
                    self.assertEqual(r.status_code, 202, r.text)
                    ids[kind] = r.json()["id"]
                for kind, id in ids.items():
                    r = await h.get("/jobs/%s/result" % id, params={"timeout": 60})
                    self.assertEqual(r.status_code, 200, r.text)
                    res = r.json()
                    self.assertEqual((res["status"], len(res["polygons"])), ("ok", 2), (kind, res))
                    self.assertEqual((res["width"], res["height"]), (96, 64))
                r = await h.get("/jobs/%s" % ids["png16"])
                self.assertEqual((r.json()["state"], r.json()["result"]["status"]), ("done", "ok"))

                # A waiting /result does not hold the app: with the worker held off, the job's
                # status answers while the wait is pending; the result comes once it runs.
                self.r.set(self.w.lease_key(), "someone-else", px=600000)
                try:
                    r = await h.post("/jobs", content=bodies["jpeg"])
                    id = r.json()["id"]
                    waiting = asyncio.ensure_future(h.get("/jobs/%s/result" % id, params={"timeout": 90}))
                    streaming = asyncio.ensure_future(h.get("/jobs/%s/events" % id))
                    await asyncio.sleep(0.5)
                    r = await h.get("/jobs/%s" % id)
                    self.assertEqual(r.json(), {"state": "queued", "result": None})
                    self.assertFalse(waiting.done() or streaming.done(), "the job cannot have run")
                    # Cancel: a queued job is canceled at once.
                    r = await h.post("/jobs", content=bodies["jpeg"])
                    doomed = r.json()["id"]
                    r = await h.delete("/jobs/%s" % doomed)
                    self.assertEqual(r.json(), {"canceled": 1})
                finally:
                    self.r.delete(self.w.lease_key())
                r = await waiting
                self.assertEqual((r.status_code, r.json()["status"]), (200, "ok"), r.text)
                r = await streaming
                lines = [json.loads(x) for x in r.text.splitlines()]
                self.assertEqual(lines[-1]["type"], "done", lines)
                r = await h.get("/jobs/%s/result" % doomed, params={"timeout": 10})
                self.assertEqual(r.json()["error"]["code"], "canceled")

                # Errors.
                r = await h.post("/jobs", content=b"hello, not an image")
                self.assertEqual(r.status_code, 400)
                self.assertEqual(r.json()["detail"]["code"], "unsupported_image_format")
                self.assertEqual((await h.get("/jobs/no-such-job")).status_code, 404)
                self.assertEqual((await h.get("/jobs/no-such-job/result")).status_code, 404)
            await mod.close_queue()
        tl.run_async(main(), timeout=300)


if __name__ == "__main__":
    tl.run_tests()
