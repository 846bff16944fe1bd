/* gpu: tile placement and stitching exactly as docs/models.md specifies (the Python reference
 * is predict_tiled() in tools/train_cellseg.py); tests/unit/test_gpu_tiling.c pins the rule.
 * Any thread; no state. */
#include "gpu/tile.h"

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

void sq_tile_stitch(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, const float *tiles,
                    size_t tile_stride, float *out) {
  uint32_t w = ax->len, tw = ax->tile;
  for (uint32_t iy = 0; iy < ay->n; iy++) {
    uint32_t y0 = ay->start[iy];
    for (uint32_t ix = 0; ix < ax->n; ix++) {
      const float *t = tiles + ((size_t)iy * ax->n + ix) * tile_stride;
      uint32_t x0 = ax->start[ix], lo = ax->lo[ix], hi = ax->hi[ix];
      for (uint32_t y = ay->lo[iy]; y < ay->hi[iy]; y++)
        memcpy(out + (size_t)y * w + lo, t + (size_t)(y - y0) * tw + (lo - x0),
               (hi - lo) * sizeof(float));
    }
  }
}
