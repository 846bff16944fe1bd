#!/usr/bin/python3
"""Generates the demo's sample images: synthetic fluorescence-microscopy frames (bright cells on a
dark, uneven background, with blur, shot noise and read noise) as 8-bit grayscale JPEGs in
samples/, and their ground truth as instance label PNGs in samples/truth/ (0 = background, 1..n =
cells) for IoU scoring. Deterministic: the same numpy/PIL versions give the same files.

    /usr/bin/python3 tools/make_samples.py [--out samples] [--count 12]
"""
import argparse
import math
import os

import numpy as np
from PIL import Image, ImageDraw

# (width, height, fraction of the area covered by cells, mean radius px, touching fraction).
SPECS = [
    (256, 256, 0.22, 11, 0.2),
    (320, 256, 0.18, 14, 0.3),
    (384, 384, 0.20, 18, 0.2),
    (448, 320, 0.25, 10, 0.4),
    (512, 512, 0.16, 20, 0.3),
    (512, 384, 0.24, 13, 0.5),
    (640, 480, 0.14, 24, 0.2),
    (768, 512, 0.20, 15, 0.3),
    (768, 768, 0.15, 30, 0.2),
    (896, 640, 0.22, 16, 0.4),
    (1024, 768, 0.18, 19, 0.3),
    (1024, 1024, 0.14, 26, 0.3),
]


def cell_outline(rng, cx, cy, r):
    """Polygon points of one cell: an ellipse with a wobbly (low-harmonic) boundary."""
    a = r * rng.uniform(0.8, 1.25)
    b = r * rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, math.pi)
    k = rng.uniform(0.0, 0.12, size=3)
    ph = rng.uniform(0, 2 * math.pi, size=3)
    pts = []
    n = max(24, int(2 * math.pi * r / 2))
    for i in range(n):
        t = 2 * math.pi * i / n
        wob = 1 + k[0] * math.sin(2 * t + ph[0]) + k[1] * math.sin(3 * t + ph[1]) + k[2] * math.sin(5 * t + ph[2])
        x, y = a * wob * math.cos(t), b * wob * math.sin(t)
        pts.append((cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)))
    return pts, a, b, rot


def gaussian_blur(img, sigma):
    """Gaussian blur through the FFT (periodic edges are hidden by the dark background)."""
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    return np.fft.irfft2(np.fft.rfft2(img) * kernel, s=(h, w))


def make(index, spec):
    w, h, coverage, mean_r, touching = spec
    rng = np.random.default_rng(1000 + index)
    n_target = int(coverage * w * h / (math.pi * mean_r * mean_r))
    centers = []  # (cx, cy, r)
    labels = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(labels)
    intensity = np.zeros((h, w), dtype=np.float64)
    paints = []  # (rows, cols, profile, label) per cell, painted once all outlines are drawn
    tries = 0
    while len(centers) < n_target and tries < n_target * 50:
        tries += 1
        r = float(np.clip(rng.normal(mean_r, mean_r * 0.3), 5, mean_r * 2))
        if centers and rng.random() < touching:
            # Place it against an existing cell so the two touch (a hard case for thresholding).
            px, py, pr = centers[rng.integers(len(centers))]
            ang = rng.uniform(0, 2 * math.pi)
            d = (pr + r) * rng.uniform(0.85, 0.98)
            cx, cy = px + d * math.cos(ang), py + d * math.sin(ang)
            min_gap = 0.8
        else:
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            min_gap = 1.15
        if not (r <= cx <= w - r and r <= cy <= h - r):
            continue
        if any(math.hypot(cx - x, cy - y) < (r + rr) * min_gap for x, y, rr in centers):
            continue
        centers.append((cx, cy, r))
        label = len(centers)
        pts, a, b, rot = cell_outline(rng, cx, cy, r)
        draw.polygon(pts, fill=label)
        # Brightness varies a lot between cells; the profile is brighter in the middle.
        bright = rng.uniform(0.35, 1.0)
        x0, x1 = max(0, int(cx - 1.5 * r) - 2), min(w, int(cx + 1.5 * r) + 3)
        y0, y1 = max(0, int(cy - 1.5 * r) - 2), min(h, int(cy + 1.5 * r) + 3)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
        u = (dx * math.cos(rot) + dy * math.sin(rot)) / a
        v = (-dx * math.sin(rot) + dy * math.cos(rot)) / b
        rho2 = np.clip(u * u + v * v, 0, 1)
        prof = bright * (0.7 + 0.3 * (1 - rho2))
        paints.append((slice(y0, y1), slice(x0, x1), prof, label))
    lab = np.array(labels, dtype=np.int32)
    # Each cell's profile lands only on its own label, so touching cells keep their own brightness.
    for ys, xs, prof, label in paints:
        sub = lab[ys, xs] == label
        intensity[ys, xs][sub] = prof[sub]
    # Uneven illumination: a slanted plane plus a broad off-center glow.
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    gx, gy = rng.uniform(0.2, 0.8, size=2)
    bg = 0.06 + 0.06 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + 1) / 2 \
        + 0.10 * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / 0.15)
    img = gaussian_blur(intensity * 0.75, rng.uniform(1.0, 2.2)) + bg
    # Shot noise (about 120 photons at full scale) plus read noise.
    photons = rng.poisson(np.clip(img, 0, None) * 120) / 120.0
    img = photons + rng.normal(0, 0.012, size=img.shape)
    img8 = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return img8, lab


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "samples"))
    ap.add_argument("--count", type=int, default=len(SPECS))
    ap.add_argument("--quality", type=int, default=82)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "truth"), exist_ok=True)
    total = 0
    for i in range(min(args.count, len(SPECS))):
        img, lab = make(i, SPECS[i])
        name = "cells_%02d" % (i + 1)
        jpg = os.path.join(args.out, name + ".jpg")
        Image.fromarray(img, "L").save(jpg, quality=args.quality, optimize=True)
        n = int(lab.max())
        truth = os.path.join(args.out, "truth", name + ".png")
        if n <= 255:
            Image.fromarray(lab.astype(np.uint8), "L").save(truth, optimize=True)
        else:
            Image.fromarray(lab.astype(np.uint16)).save(truth, optimize=True)
        size = os.path.getsize(jpg) + os.path.getsize(truth)
        total += size
        print("%s: %dx%d, %d cells, %d KiB" % (name, img.shape[1], img.shape[0], n, size // 1024))
    print("total %d KiB in %s" % (total // 1024, args.out))


if __name__ == "__main__":
    main()
