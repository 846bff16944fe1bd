#!/usr/bin/python3
"""The worker end to end on the GPU (issue 7 Part B items 2 and 3), with a real redis-server:
cellseg-unet's evaluation images through a worker on --device cuda get one result each whose
masks match a CPU worker's on the same images (IoU >= 0.99); then a saturated run (N tile-sized
jobs queued first) measures end-to-end images/s, the GPU's utilization while it runs
(nvidia-smi), and the time from the worker's start to ready (warm). SEGQ_GPU_RESULTS=FILE
writes the figures as JSON (tools/gpu_check.sh collects them). Skips (77) without a GPU."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
SMI = shutil.which("nvidia-smi")
if not SMI or subprocess.run([SMI, "-L"], capture_output=True).returncode != 0:
    tl.skip("no GPU (nvidia-smi -L fails): nothing ran on a GPU")
MODELS = os.path.join(tl.SOURCE_DIR, "models")
EVAL = sorted(glob.glob(os.path.join(MODELS, "cellseg-unet", "eval", "eval_*.jpg")))
N_SATURATED = int(os.environ.get("SEGQ_E2E_JOBS", "3000"))
RESULTS = {}


def masks_of(rs, prefix, device):
    """The eval images' results (asking for the mask) through a worker on device."""
    import segq
    w = tl.Worker(rs.url, prefix=prefix, models="cellseg-unet", model_dir=MODELS, device=device,
                  threads=8)
    w.wait_ready(rs.client(), timeout=120)
    c = segq.Client(rs.url, prefix=prefix)
    ids = []
    for path in EVAL:
        with open(path, "rb") as f:
            ids.append(c.submit(f.read(), model="cellseg-unet", outputs=["polygons", "mask"]))
    res = {i: c.wait(i, timeout=300) for i in ids}
    w.sigterm()
    w.wait(60)
    return [res[i] for i in ids], w


def iou(a, b):
    inter = sum(1 for x, y in zip(a, b) if x and y)
    uni = sum(1 for x, y in zip(a, b) if x or y)
    return inter / uni if uni else 1.0


class GpuEndToEnd(unittest.TestCase):
    def test_1_masks_match_the_cpu(self):
        with tl.RedisServer() as rs:
            gpu, wg = masks_of(rs, "eg", "cuda")
            cpu, _ = masks_of(rs, "ec", "cpu")
        worst = 1.0
        for g, c, path in zip(gpu, cpu, EVAL):
            self.assertEqual(g["status"], "ok", g)
            self.assertEqual(c["status"], "ok", c)
            from segq import proto
            v = iou(proto.rle_decode(g["mask"]), proto.rle_decode(c["mask"]))
            worst = min(worst, v)
            self.assertGreaterEqual(v, 0.99, os.path.basename(path))
        RESULTS["mask_iou_gpu_vs_cpu_min"] = worst
        RESULTS["gpu_backend_log"] = [l for l in wg.log().splitlines() if "model loaded" in l][-1:]

    def test_2_saturated_run(self):
        import segq
        with tl.RedisServer() as rs:
            r = rs.client()
            c = segq.Client(rs.url, prefix="es")
            img = tl.make_jpeg(256, 256, disks=[(60, 60, 20), (180, 150, 30)], noise=3)
            ids = ["es-%05d" % i for i in range(N_SATURATED)]
            for k in range(0, len(ids), 500):
                c.submit_many([img] * len(ids[k:k + 500]), "cellseg-unet", ids=ids[k:k + 500])
            util = []
            stop = threading.Event()

            def sample():
                p = subprocess.Popen([SMI, "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-lms", "200"],
                                     stdout=subprocess.PIPE, text=True)
                while not stop.is_set():
                    line = p.stdout.readline()
                    if not line:
                        break
                    try:
                        util.append(tuple(float(x) for x in line.split(",")[:2]))
                    except ValueError:
                        pass
                p.kill()

            t_start = time.monotonic()
            w = tl.Worker(rs.url, prefix="es", models="cellseg-unet", model_dir=MODELS,
                          device="cuda", threads=12, max_inflight_batches=4)
            th = threading.Thread(target=sample, daemon=True)
            th.start()
            res = tl.wait_for_results(r, "es", ids, timeout=540, stall_s=120, decode_results=False)
            wall = time.monotonic() - t_start
            stop.set()
            log = w.log()
            w.sigterm()
            w.wait(60)
        ok = sum(1 for v in res.values() if b"ok" in v[:200])
        self.assertEqual(len(res), N_SATURATED)
        m = re.search(r'msg="warm" .*ms_since_start=([0-9.]+)', log)
        ready_ms = float(m.group(1)) if m else None
        busy = [u for u, _ in util if u > 0]
        RESULTS.update(e2e_jobs=N_SATURATED, e2e_ok=ok, e2e_wall_s=wall,
                       e2e_images_per_s=N_SATURATED / wall, start_to_ready_ms=ready_ms,
                       gpu_util_mean=sum(u for u, _ in util) / len(util) if util else None,
                       gpu_util_busy_mean=sum(busy) / len(busy) if busy else None,
                       gpu_mem_used_mib_max=max((mm for _, mm in util), default=None))
        print(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    out = os.environ.get("SEGQ_GPU_RESULTS")
    if out:  # written however the tests end (run_tests exits)
        import atexit
        atexit.register(lambda: open(out, "w").write(json.dumps(RESULTS, indent=2)))
    tl.run_tests()
