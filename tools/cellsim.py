#!/usr/bin/python3
"""cellsim: deterministic synthetic fluorescence-microscopy images with ground truth.

Cells are perturbed ellipses of varied size, elongation, orientation and brightness (some in
touching clusters) on an uneven, low-frequency background, blurred by a Gaussian PSF, with
Poisson (shot) + Gaussian (read) noise, quantized to 8 or 16 bits. Ground truth is an instance
label map (0 = background, 1..n = cells) and the foreground mask derived from it.

numpy only (PIL just for writing files). The same (seed, size, params) always gives the same
image: every random draw comes from one numpy Generator seeded by the caller.

Library use:
    import cellsim
    s = cellsim.render(256, 256, seed=7)          # or rng=np.random.default_rng(7)
    s.image (uint8 HxW), s.instances (int32 HxW), s.foreground (uint8 0/1 HxW)

CLI:
    /usr/bin/python3 tools/cellsim.py --out DIR --count N --size S [--seed K] [--bits 8|16]
        [--format png|jpg] [--quality Q]
    writes DIR/cell_NNNN.{png,jpg} (image), cell_NNNN_mask.png (foreground 0/255),
    cell_NNNN_inst.png (16-bit instance labels) and DIR/index.json.
    --size accepts S or WxH.
"""

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

# Parameter ranges of the simulator. Intensities are in units of full scale (1.0 = 255 or 65535
# before clipping). The ranges are chosen so that a small UNet can reach > 0.9 IoU while still
# having to cope with dim cells, touching cells and uneven background.
DEFAULTS = {
    "coverage": (0.12, 0.40),        # fraction of the image covered by cells (target)
    "semi_major": (4.0, 17.0),       # px, drawn log-uniformly
    "aspect": (0.40, 1.0),           # minor/major axis ratio
    "wobble": (0.0, 0.10),           # amplitude of boundary harmonics k=2..4 (relative radius)
    "cell_brightness": (0.28, 0.75), # peak cell signal above background
    "cluster_prob": 0.35,            # probability that a new cell is placed touching another
    "background": (0.02, 0.16),      # mean additive background level
    "bg_variation": (0.2, 0.7),      # relative amplitude of the low-frequency background field
    "illumination": (0.0, 0.45),     # relative amplitude of the multiplicative illumination field
    "debris": (0, 4),                # faint, large out-of-focus blobs (not cells), count range
    "debris_brightness": (0.02, 0.08),
    "blur_sigma": (0.6, 1.6),        # PSF sigma in px
    "photons": (80.0, 600.0),        # photons at full scale (Poisson noise strength)
    "read_noise": (0.004, 0.02),     # Gaussian noise sigma (full-scale units)
    "gain": (0.75, 1.05),            # final gain before quantization
}


@dataclass
class Sample:
    image: np.ndarray        # uint8 or uint16, HxW
    instances: np.ndarray    # int32 HxW, 0 = background
    foreground: np.ndarray   # uint8 HxW, 0/1
    ncells: int
    params: dict = field(default_factory=dict)


def _u(rng, lo_hi):
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _logu(rng, lo_hi):
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _gauss_kernel(sigma):
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img, sigma):
    """Separable Gaussian blur with edge replication (numpy only, vectorized per tap)."""
    if sigma <= 0:
        return img.astype(np.float64, copy=True)
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(k):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(i, i + n)
            acc += w * p[tuple(sl)]
        out = acc
    return out


def smooth_field(h, w, rng, cells=4):
    """Low-frequency random field in [-1, 1]: a coarse random grid, bicubic-like upsampled
    (separable cubic interpolation written in numpy) so it has no visible grid structure."""
    gh = cells + 3
    gw = max(cells, int(round(cells * w / max(h, 1)))) + 3
    g = rng.uniform(-1.0, 1.0, size=(gh, gw))

    def interp_axis(a, n_out, axis):
        n_in = a.shape[axis]
        # sample positions between grid nodes 1 and n_in-2 (nodes 0, n_in-1 only support cubic)
        t = np.linspace(1.0, n_in - 2.0 - 1e-9, n_out)
        i = np.floor(t).astype(int)
        f = t - i
        # Catmull-Rom weights
        w0 = -0.5 * f + f * f - 0.5 * f ** 3
        w1 = 1.0 - 2.5 * f * f + 1.5 * f ** 3
        w2 = 0.5 * f + 2.0 * f * f - 1.5 * f ** 3
        w3 = -0.5 * f * f + 0.5 * f ** 3
        take = lambda idx: np.take(a, idx, axis=axis)
        shape = [1, 1]
        shape[axis] = n_out
        r = lambda v: v.reshape(shape)
        return (r(w0) * take(i - 1) + r(w1) * take(i) + r(w2) * take(i + 1) + r(w3) * take(i + 2))

    f = interp_axis(g, h, 0)
    f = interp_axis(f, w, 1)
    m = np.max(np.abs(f))
    return f / m if m > 0 else f


def _draw_cell(h, w, rng, cx, cy, a, b, theta, wobble):
    """Returns (y0, x0, inside-mask, normalized radial distance) on the cell's bounding box."""
    harm = [(k, rng.uniform(0, wobble), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4)]
    rmax = a * (1.0 + 3 * wobble) + 1
    x0 = int(max(0, math.floor(cx - rmax)))
    x1 = int(min(w, math.ceil(cx + rmax) + 1))
    y0 = int(max(0, math.floor(cy - rmax)))
    y1 = int(min(h, math.ceil(cy + rmax) + 1))
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx = xx + 0.5 - cx
    dy = yy + 0.5 - cy
    c, s = math.cos(theta), math.sin(theta)
    u = (c * dx + s * dy) / a
    v = (-s * dx + c * dy) / b
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    scale = np.ones_like(phi)
    for k, amp, ph in harm:
        scale += amp * np.cos(k * phi + ph)
    d = rho / scale
    return y0, x0, d < 1.0, d


def render(height, width, seed=None, rng=None, bits=8, params=None):
    """Renders one image. Give either `seed` (int) or `rng` (numpy Generator)."""
    if rng is None:
        rng = np.random.default_rng(seed)
    p = dict(DEFAULTS)
    if params:
        p.update(params)
    h, w = int(height), int(width)

    coverage = _u(rng, p["coverage"])
    inst = np.zeros((h, w), dtype=np.int32)
    signal = np.zeros((h, w), dtype=np.float64)
    target = coverage * h * w
    covered = 0
    centers = []  # (cx, cy, a)
    n = 0
    attempts = 0
    while covered < target and attempts < 20000:
        attempts += 1
        a = _logu(rng, p["semi_major"])
        b = a * _u(rng, p["aspect"])
        theta = rng.uniform(0, math.pi)
        wob = _u(rng, p["wobble"])
        if centers and rng.uniform() < p["cluster_prob"]:
            # place touching an existing cell: its boundary distance roughly matches
            ocx, ocy, oa, ob = centers[int(rng.integers(len(centers)))]
            ang = rng.uniform(0, 2 * math.pi)
            dist = (0.5 * (oa + ob) + 0.5 * (a + b)) * rng.uniform(0.85, 1.0)
            cx = ocx + dist * math.cos(ang)
            cy = ocy + dist * math.sin(ang)
        else:
            cx = rng.uniform(-0.5 * a, w + 0.5 * a)
            cy = rng.uniform(-0.5 * a, h + 0.5 * a)
        got = _draw_cell(h, w, rng, cx, cy, a, b, theta, wob)
        if got is None:
            continue
        y0, x0, inside, d = got
        hh, ww = inside.shape
        region = inst[y0:y0 + hh, x0:x0 + ww]
        free = inside & (region == 0)
        # an overlap larger than a sliver would make a cell mostly hidden: reject it
        if inside.sum() == 0 or free.sum() < 0.8 * inside.sum() or free.sum() < 12:
            continue
        n += 1
        region[free] = n
        bright = _logu(rng, p["cell_brightness"])
        # dome-shaped profile: edge keeps ~65% of the peak so the boundary stays visible,
        # plus a mild per-cell texture (a brighter nucleus-like blob off-center)
        prof = 0.65 + 0.35 * np.clip(1.0 - d * d, 0.0, 1.0)
        nx, ny = rng.uniform(-0.3, 0.3, size=2)
        yy, xx = np.mgrid[y0:y0 + hh, x0:x0 + ww]
        ndist2 = ((xx + 0.5 - (cx + nx * a)) ** 2 + (yy + 0.5 - (cy + ny * b)) ** 2) / (0.35 * b + 1) ** 2
        nuc = 0.15 * np.exp(-ndist2)
        sreg = signal[y0:y0 + hh, x0:x0 + ww]
        sreg[free] = (bright * (prof + nuc))[free]
        covered += int(free.sum())
        centers.append((cx, cy, a, b))

    # out-of-focus debris: smooth faint blobs, NOT part of the ground truth
    debris = np.zeros((h, w), dtype=np.float64)
    nd = int(rng.integers(p["debris"][0], p["debris"][1] + 1))
    if nd:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        for _ in range(nd):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sg = rng.uniform(8.0, 24.0)
            debris += _u(rng, p["debris_brightness"]) * np.exp(
                -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sg * sg))

    bg_level = _u(rng, p["background"])
    bg = bg_level * (1.0 + _u(rng, p["bg_variation"]) * smooth_field(h, w, rng, cells=int(rng.integers(2, 5))))
    illum = 1.0 + _u(rng, p["illumination"]) * smooth_field(h, w, rng, cells=int(rng.integers(1, 4)))
    img = illum * (bg + debris + signal)
    img = gaussian_blur(img, _u(rng, p["blur_sigma"]))
    photons = _logu(rng, p["photons"])
    img = rng.poisson(np.clip(img, 0, None) * photons) / photons
    img = img + rng.normal(0.0, _u(rng, p["read_noise"]), size=img.shape)
    img *= _u(rng, p["gain"])
    if bits == 16:
        out = np.clip(np.round(img * 65535.0), 0, 65535).astype(np.uint16)
    else:
        out = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return Sample(image=out, instances=inst, foreground=(inst > 0).astype(np.uint8), ncells=n,
                  params={"coverage": coverage, "photons": photons, "background": bg_level})


def image_seed(base_seed, index):
    """Seed of image `index` in a set with `base_seed`: independent streams per image, so a
    set's image k does not depend on how many images were generated before it."""
    return [int(base_seed), int(index)]


def write_sample(s, out_dir, stem, fmt="png", quality=92):
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    if fmt == "jpg":
        if s.image.dtype != np.uint8:
            raise ValueError("JPEG output needs 8-bit images")
        img_name = stem + ".jpg"
        Image.fromarray(s.image, mode="L").save(os.path.join(out_dir, img_name), quality=quality)
    else:
        img_name = stem + ".png"
        if s.image.dtype == np.uint16:
            Image.fromarray(s.image.astype(np.uint16), mode="I;16").save(os.path.join(out_dir, img_name), optimize=True)
        else:
            Image.fromarray(s.image, mode="L").save(os.path.join(out_dir, img_name), optimize=True)
    mask_name = stem + "_mask.png"
    Image.fromarray((s.foreground * 255).astype(np.uint8), mode="L").save(
        os.path.join(out_dir, mask_name), optimize=True)
    inst_name = stem + "_inst.png"
    if s.ncells < 256:
        Image.fromarray(s.instances.astype(np.uint8), mode="L").save(
            os.path.join(out_dir, inst_name), optimize=True)
    else:
        Image.fromarray(s.instances.astype(np.uint16), mode="I;16").save(
            os.path.join(out_dir, inst_name), optimize=True)
    return {"image": img_name, "mask": mask_name, "instances": inst_name,
            "width": int(s.image.shape[1]), "height": int(s.image.shape[0]),
            "bits": 16 if s.image.dtype == np.uint16 else 8, "cells": int(s.ncells)}


def parse_size(text):
    if "x" in text.lower():
        w, h = text.lower().split("x", 1)
        return int(h), int(w)
    s = int(text)
    return s, s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--size", default="256", help="S (square) or WxH")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, choices=(8, 16), default=8)
    ap.add_argument("--format", choices=("png", "jpg"), default="png")
    ap.add_argument("--quality", type=int, default=92, help="JPEG quality")
    a = ap.parse_args(argv)
    if a.format == "jpg" and a.bits != 8:
        ap.error("--format jpg needs --bits 8")
    h, w = parse_size(a.size)
    entries = []
    for i in range(a.count):
        s = render(h, w, rng=np.random.default_rng(image_seed(a.seed, i)), bits=a.bits)
        entries.append(write_sample(s, a.out, "cell_%04d" % i, a.format, a.quality))
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"generator": "tools/cellsim.py", "seed": a.seed, "images": entries}, f, indent=1)
    print("wrote %d images to %s" % (a.count, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
