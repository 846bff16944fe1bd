#!/usr/bin/python3
"""Scores segq results against ground truth: for every <stem>.json that `segq submit --out DIR`
wrote and a truth image TRUTH/<stem>.png (0/255 mask or instance labels, foreground > 0), the
result polygons are rasterized and their foreground IoU computed (segq.score, the same
function tests/integration/test_cellseg_iou.py uses). Prints one line per image with -v and a
summary line; --json prints {"mean_iou", "min_iou", "images": {stem: iou}} instead.

    tools/score.py out/demo/cellseg-unet samples/truth [--label cellseg-unet] [-v] [--json]

Exit: 0 ok, 1 no result had a truth image (or a result was not ok), 2 bad usage."""
import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
from segq import score  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="folder of <stem>.json results (segq submit --out)")
    ap.add_argument("truth", nargs="?", default=os.path.join(ROOT, "samples", "truth"),
                    help="folder of <stem>.png ground truth (default samples/truth)")
    ap.add_argument("--label", help="name printed in the summary (default: the folder name)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per image")
    ap.add_argument("--json", action="store_true", help="print the scores as JSON")
    a = ap.parse_args(argv)
    label = a.label or os.path.basename(os.path.normpath(a.results))
    ious, bad = {}, []
    for path in sorted(glob.glob(os.path.join(a.results, "*.json"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        tpath = os.path.join(a.truth, stem + ".png")
        if stem == "summary" or not os.path.exists(tpath):
            continue
        with open(path) as f:
            res = json.load(f)
        if res.get("status") != "ok":
            bad.append(stem)
            continue
        ious[stem] = score.result_iou(res, score.load_truth(tpath))
        if a.verbose and not a.json:
            print("  %-14s %-16s IoU %.4f" % (label, stem, ious[stem]))
    if not ious:
        print("score: no results in %s have a truth image in %s" % (a.results, a.truth), file=sys.stderr)
        return 1
    vals = list(ious.values())
    mean, low = sum(vals) / len(vals), min(vals)
    if a.json:
        json.dump({"label": label, "mean_iou": round(mean, 4), "min_iou": round(low, 4),
                   "images": {k: round(v, 4) for k, v in ious.items()}, "failed": bad}, sys.stdout)
        print()
    else:
        print("%-14s mean IoU %.4f (min %.4f) over %d images%s" % (
            label, mean, low, len(vals), ", %d failed" % len(bad) if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
