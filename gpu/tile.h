/* gpu: the tiling rule of docs/models.md (`large_images.mode = "tile"`): where tiles start along
 * an axis, which pixels each tile owns when stitching, and the copy of tiles out of / back into
 * whole images. Pure functions on caller memory, no model knowledge; private to gpu/ (and its
 * unit test). Any thread. */
#ifndef SQ_GPU_TILE_H
#define SQ_GPU_TILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* One axis of a tiling. An image side `len` shorter than `tile` is padded to `tile` (one tile at
 * 0); otherwise tiles start at 0, S, 2S, ... (S = tile - overlap) for every start < len - tile,
 * plus one at len - tile. Tile i owns [lo[i], hi[i]) of the ORIGINAL axis (padding cropped):
 * neighbours at a < b split at floor((a + b + tile) / 2). Owns start/lo/hi. */
typedef struct {
  uint32_t len;    /* original length */
  uint32_t tile;   /* tile edge along this axis */
  uint32_t n;      /* number of tiles */
  uint32_t *start; /* n tile origins (in the padded axis, which only differs when len < tile) */
  uint32_t *lo, *hi;
} sq_tile_axis_t;

/* Fills a (zeroed on error). SQ_EINVAL when len or tile is 0 or overlap >= tile; SQ_ENOMEM. */
int sq_tile_axis_init(sq_tile_axis_t *a, uint32_t len, uint32_t tile, uint32_t overlap,
                      sq_error_t *err);
void sq_tile_axis_free(sq_tile_axis_t *a);

/* Copies tile (iy, ix) of `nch` float planes (`src`, each width*height, row-major; width/height
 * are ax->len/ay->len) into dst (nch planes of ay->tile x ax->tile). Pixels past the image
 * (padding) are the nearest edge pixel when pad_value is NULL (edge mode), else pad_value[c]. */
void sq_tile_extract(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, uint32_t ix, uint32_t iy,
                     const float *src, uint32_t nch, const float *pad_value, float *dst);

/* The same for raw samples of `elem` bytes each (1 = uint8, 2 = uint16, 4 = float): edge
 * padding, or zero_pad: the raw value 0 (docs/models.md: "zero" pads before normalization). */
void sq_tile_extract_raw(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, uint32_t ix,
                         uint32_t iy, const void *src, size_t elem, uint32_t nch, int zero_pad,
                         void *dst);

/* Stitches one plane per tile back into `out` (ax->len x ay->len, row-major): tile i = iy*ax->n
 * + ix is the plane at tiles + i * tile_stride (ay->tile x ax->tile floats, row-major), and
 * each output pixel is taken from the one tile that owns it. */
void sq_tile_stitch(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, const float *tiles,
                    size_t tile_stride, float *out);
/* The same for planes of `elem`-byte values (uint8 masks: 1); tile_stride in values. */
void sq_tile_stitch_raw(const sq_tile_axis_t *ax, const sq_tile_axis_t *ay, const void *tiles,
                        size_t elem, size_t tile_stride, void *out);

/* Bilinear resize of one float plane (sw x sh -> dw x dh, row-major) with half-pixel centres
 * (src = (dst + 0.5) * sw / dw - 0.5, clamped to the edge; PyTorch's interpolate with
 * align_corners=False, no antialiasing): `large_images.mode = "resize"`. */
int sq_resize_bilinear(const float *src, uint32_t sw, uint32_t sh, float *dst, uint32_t dw,
                       uint32_t dh); /* 0 or SQ_ENOMEM (index tables) */

#endif
