#!/usr/bin/python3
"""make_eval_set: writes the held-out evaluation set of the cellseg-unet model.

JPEG images (quality 90) + ground truth (foreground PNG 0/255, instance-label PNG) from
tools/cellsim.py with a seed the training never uses, in sizes chosen to exercise the worker's
tiling: smaller than the tile, exactly around it, non-square, and larger (512x384, 700x600).
One 16-bit PNG exercises the 16-bit path. Output is deterministic: same files every run.

    /usr/bin/python3 tools/make_eval_set.py [--out models/cellseg-unet/eval] [--seed 9001]
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cellsim  # noqa: E402

# (width, height, bits): bits 16 -> 16-bit PNG instead of JPEG
SIZES = [
    (256, 256, 8), (256, 256, 8), (256, 256, 8),
    (128, 128, 8),   # smaller than the tile: padded
    (100, 80, 8),    # tiny, odd
    (200, 150, 8),
    (257, 255, 8),   # one pixel over the tile on one axis, one under on the other
    (300, 200, 8),
    (320, 240, 8),
    (384, 384, 8),
    (400, 300, 8),
    (512, 384, 8),   # larger than the tile
    (640, 480, 8),
    (700, 600, 8),   # larger, not a multiple of the tile stride
    (1024, 96, 8),   # long strip
    (256, 192, 16),  # 16-bit PNG
]

EVAL_SEED = 9001  # training uses seeds 1 (train) and 2 (validation) in tools/train_cellseg.py


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "models", "cellseg-unet", "eval"))
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--quality", type=int, default=90)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    entries = []
    for i, (w, h, bits) in enumerate(SIZES):
        s = cellsim.render(h, w, rng=np.random.default_rng(cellsim.image_seed(a.seed, i)), bits=bits)
        fmt = "jpg" if bits == 8 else "png"
        entries.append(cellsim.write_sample(s, a.out, "eval_%02d" % i, fmt, a.quality))
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"generator": "tools/make_eval_set.py (tools/cellsim.py)", "seed": a.seed,
                   "jpeg_quality": a.quality,
                   "note": "image: input; mask: foreground 0/255; instances: label per cell (0 = background)",
                   "images": entries}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(a.out, n)) for n in os.listdir(a.out))
    print("wrote %d images to %s (%d bytes)" % (len(entries), a.out, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
