"""Foreground IoU of segq results against ground-truth masks, shared by tools/score.py (the demo)
and tests/integration/test_cellseg_iou.py, so there is one definition of the score.

Polygons are rasterized with the pixel-centre rule: a pixel is foreground when its centre lies
inside the polygon (even-odd rule). That inverts sq_polygons_from_mask, whose outlines run along
pixel edges, so an un-simplified outline gives back exactly its component. Holes are ignored
(the protocol's polygons carry none), so a ring-shaped cell counts as filled. PIL's
ImageDraw.polygon is not used on purpose: it rounds coordinates and fills the outline itself,
which adds a one-pixel rim to every object."""
import numpy as np


def rasterize(polygons, width, height):
    """Bool mask (height x width) of the union of the result's polygons (dicts with "points":
    flat [x0, y0, x1, y1, ...] in pixel-edge coordinates, or plain point lists)."""
    mask = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        pts = poly["points"] if isinstance(poly, dict) else poly
        xs = np.asarray(pts[0::2], dtype=np.float64)
        ys = np.asarray(pts[1::2], dtype=np.float64)
        if len(xs) < 3:
            continue
        x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
        r0 = max(int(np.floor(ys.min())), 0)
        r1 = min(int(np.ceil(ys.max())), height)
        cols = np.arange(width) + 0.5
        for r in range(r0, r1):
            yc = r + 0.5
            cross = (y0 <= yc) != (y1 <= yc)  # edges crossing the row's centre line
            if not cross.any():
                continue
            t = (yc - y0[cross]) / (y1[cross] - y0[cross])
            xi = np.sort(x0[cross] + t * (x1[cross] - x0[cross]))
            # Even-odd: centres between crossing 2k and 2k+1 are inside.
            inside = (np.searchsorted(xi, cols, side="right") % 2) == 1
            mask[r] |= inside
    return mask


def iou(pred, truth):
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError("mask shapes differ: %s vs %s" % (pred.shape, truth.shape))
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum()) / float(union)


def load_truth(path):
    """Foreground of a ground-truth PNG: a 0/255 mask or an instance label map (label > 0)."""
    from PIL import Image
    return np.array(Image.open(path)) > 0


def result_iou(result, truth):
    """IoU of one result (dict with width, height, polygons) against a truth mask."""
    h, w = truth.shape
    if (result.get("width"), result.get("height")) != (w, h):
        raise ValueError("result is %sx%s, truth %dx%d" % (result.get("width"), result.get("height"), w, h))
    return iou(rasterize(result.get("polygons") or [], w, h), truth)
