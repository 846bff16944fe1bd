/* gpu: tile placement and stitching exactly as docs/models.md specifies (the Python reference
 * is predict_tiled() in tools/train_cellseg.py); tests/unit/test_gpu_tiling.c pins the rule.
 * Any thread; no state. */
#include "gpu/tile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sq_tile_axis_init(sq_tile_axis_t *a, uint32_t len, uint32_t tile, uint32_t overlap,
                      sq_error_t *err) {
  memset(a, 0, sizeof(*a));
  if (len == 0 || tile == 0 || overlap >= tile)
    return sq_error_set(err, SQ_EINVAL, "tiling: length %u, tile %u, overlap %u", len, tile,
                        overlap);
  uint32_t stride = tile - overlap;
  /* Starts below len - tile, then len - tile itself: 1 + ceil((len - tile) / stride). */
  uint32_t n = len <= tile ? 1 : 1 + (len - tile + stride - 1) / stride;
  a->start = malloc(n * sizeof(uint32_t));
  a->lo = malloc(n * sizeof(uint32_t));
  a->hi = malloc(n * sizeof(uint32_t));
  if (!a->start || !a->lo || !a->hi) {
    sq_tile_axis_free(a);
    return sq_error_set(err, SQ_ENOMEM, "tiling: out of memory");
  }
  a->len = len;
  a->tile = tile;
  a->n = n;
  if (len <= tile) {
    a->start[0] = 0;
  } else {
    for (uint32_t i = 0; i + 1 < n; i++) a->start[i] = i * stride;
    a->start[n - 1] = len - tile;
  }
  a->lo[0] = 0;
  for (uint32_t i = 1; i < n; i++) {
    /* 64-bit sum: start + start + tile may pass 2^32 on absurd sizes. */
    uint64_t c = ((uint64_t)a->start[i - 1] + a->start[i] + tile) / 2;
    a->lo[i] = (uint32_t)c;
    a->hi[i - 1] = (uint32_t)c;
  }
  a->hi[n - 1] = len; /* the padding (len < tile) is cropped off */
  return 0;
}

void sq_tile_axis_free(sq_tile_axis_t *a) {
  free(a->start);
  free(a->lo);
  free(a->hi);
  memset(a, 0, sizeof(*a));
}

void sq_tile_extract(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, uint32_t ix, uint32_t iy,
                     const float *src, uint32_t nch, const float *pad_value, float *dst) {
  uint32_t w = ax->len, h = ay->len, tw = ax->tile, th = ay->tile;
  uint32_t x0 = ax->start[ix], y0 = ay->start[iy];
  /* Columns [x0, x0 + inw) lie in the image; the rest (only when w < tw) is padding. */
  uint32_t inw = x0 + tw <= w ? tw : w - x0;
  for (uint32_t c = 0; c < nch; c++) {
    const float *plane = src + (size_t)c * w * h;
    float *d = dst + (size_t)c * tw * th;
    for (uint32_t ty = 0; ty < th; ty++, d += tw) {
      uint32_t y = y0 + ty;
      if (y >= h && pad_value) {
        for (uint32_t tx = 0; tx < tw; tx++) d[tx] = pad_value[c];
        continue;
      }
      if (y >= h) y = h - 1; /* edge: replicate the last row */
      const float *row = plane + (size_t)y * w + x0;
      memcpy(d, row, inw * sizeof(float));
      float fill = pad_value ? pad_value[c] : row[inw - 1];
      for (uint32_t tx = inw; tx < tw; tx++) d[tx] = fill;
    }
  }
}

void sq_tile_extract_raw(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, uint32_t ix,
                         uint32_t iy, const void *src, size_t elem, uint32_t nch, int zero_pad,
                         void *dst) {
  uint32_t w = ax->len, h = ay->len, tw = ax->tile, th = ay->tile;
  uint32_t x0 = ax->start[ix], y0 = ay->start[iy];
  uint32_t inw = x0 + tw <= w ? tw : w - x0;
  for (uint32_t c = 0; c < nch; c++) {
    const uint8_t *plane = (const uint8_t *)src + (size_t)c * w * h * elem;
    uint8_t *d = (uint8_t *)dst + (size_t)c * tw * th * elem;
    for (uint32_t ty = 0; ty < th; ty++, d += (size_t)tw * elem) {
      uint32_t y = y0 + ty;
      if (y >= h && zero_pad) {
        memset(d, 0, (size_t)tw * elem);
        continue;
      }
      if (y >= h) y = h - 1; /* edge: replicate the last row */
      const uint8_t *row = plane + ((size_t)y * w + x0) * elem;
      memcpy(d, row, (size_t)inw * elem);
      for (uint32_t tx = inw; tx < tw; tx++) {
        if (zero_pad)
          memset(d + (size_t)tx * elem, 0, elem);
        else
          memcpy(d + (size_t)tx * elem, row + (size_t)(inw - 1) * elem, elem);
      }
    }
  }
}

void sq_tile_stitch_raw(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, const void *tiles,
                        size_t elem, size_t tile_stride, void *out) {
  uint32_t w = ax->len, tw = ax->tile;
  for (uint32_t iy = 0; iy < ay->n; iy++) {
    uint32_t y0 = ay->start[iy];
    for (uint32_t ix = 0; ix < ax->n; ix++) {
      const uint8_t *t = (const uint8_t *)tiles + ((size_t)iy * ax->n + ix) * tile_stride * elem;
      uint32_t x0 = ax->start[ix], lo = ax->lo[ix], hi = ax->hi[ix];
      for (uint32_t y = ay->lo[iy]; y < ay->hi[iy]; y++)
        memcpy((uint8_t *)out + ((size_t)y * w + lo) * elem,
               t + ((size_t)(y - y0) * tw + (lo - x0)) * elem, (size_t)(hi - lo) * elem);
    }
  }
}

void sq_tile_stitch(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, const float *tiles,
                    size_t tile_stride, float *out) {
  sq_tile_stitch_raw(ax, ay, tiles, sizeof(float), tile_stride, out);
}

/* Source index pair and weight of the second for each destination coordinate. */
static void resize_coords(uint32_t sn, uint32_t dn, uint32_t *i0, uint32_t *i1, float *lam) {
  double scale = (double)sn / (double)dn;
  for (uint32_t d = 0; d < dn; d++) {
    double s = ((double)d + 0.5) * scale - 0.5;
    if (s < 0) s = 0;
    uint32_t a = (uint32_t)floor(s);
    if (a > sn - 1) a = sn - 1;
    i0[d] = a;
    i1[d] = a + 1 < sn ? a + 1 : sn - 1;
    lam[d] = (float)(s - a);
  }
}

int sq_resize_bilinear(const float *src, uint32_t sw, uint32_t sh, float *dst, uint32_t dw,
                       uint32_t dh) {
  int rc = 0;
  uint32_t *x0 = malloc(dw * sizeof(uint32_t)), *x1 = malloc(dw * sizeof(uint32_t));
  uint32_t *y0 = malloc(dh * sizeof(uint32_t)), *y1 = malloc(dh * sizeof(uint32_t));
  float *lx = malloc(dw * sizeof(float)), *ly = malloc(dh * sizeof(float));
  if (x0 && x1 && y0 && y1 && lx && ly) {
    resize_coords(sw, dw, x0, x1, lx);
    resize_coords(sh, dh, y0, y1, ly);
    for (uint32_t y = 0; y < dh; y++) {
      const float *r0 = src + (size_t)y0[y] * sw, *r1 = src + (size_t)y1[y] * sw;
      float *d = dst + (size_t)y * dw;
      for (uint32_t x = 0; x < dw; x++) {
        float top = r0[x0[x]] + (r0[x1[x]] - r0[x0[x]]) * lx[x];
        float bot = r1[x0[x]] + (r1[x1[x]] - r1[x0[x]]) * lx[x];
        d[x] = top + (bot - top) * ly[y];
      }
    }
  } else {
    rc = SQ_ENOMEM;
  }
  free(x0);
  free(x1);
  free(y0);
  free(y1);
  free(lx);
  free(ly);
  return rc;
}
