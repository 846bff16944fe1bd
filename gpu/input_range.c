/* gpu: the input range policy (docs/models.md "Input range"): a model's (or a job's) rule for
 * turning sample values into model input, resolved per image into x = v * scale + offset, which
 * every preprocessing path (CPU here, GPU kernels too) applies before mean/std. Percentile
 * normalization is what microscopy tools do with 12-/16-bit camera data, whose useful range is a
 * small, image-dependent part of the container's 0..65535.
 * Any thread: no shared state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

void sq_input_range_default(sq_input_range_t *r, sq_range_mode_t mode) {
  memset(r, 0, sizeof(*r));
  r->mode = mode;
  r->scale = 1.0f / 255.0f;
  r->scale_16bit = r->scale / 257.0f; /* 65535 maps where 255 does */
  r->bits = 16;
  r->low = 1.0f;
  r->high = 99.8f;
}

void sq_input_range_describe(const sq_input_range_t *r, char *buf, size_t cap) {
  switch (r->mode) {
    case SQ_RANGE_FULL:
      snprintf(buf, cap, "full(bits=%u)", r->bits);
      break;
    case SQ_RANGE_PERCENTILE:
      snprintf(buf, cap, "percentile(%g,%g)", (double)r->low, (double)r->high);
      break;
    default:
      snprintf(buf, cap, "fixed(scale=%.3g,scale_16bit=%.3g)", (double)r->scale,
               (double)r->scale_16bit);
  }
}

/* The value at 0-based rank `rank` of the samples counted in hist. */
static uint32_t value_at_rank(const uint32_t *hist, uint32_t nbins, uint64_t rank) {
  uint64_t seen = 0;
  for (uint32_t v = 0; v < nbins; v++) {
    seen += hist[v];
    if (seen > rank) return v;
  }
  return nbins - 1;
}

/* numpy.percentile(samples, q) with the default linear interpolation. */
static double percentile(const uint32_t *hist, uint32_t nbins, uint64_t n, double q) {
  double pos = q / 100.0 * (double)(n - 1);
  uint64_t lo = (uint64_t)floor(pos);
  uint64_t hi = lo + 1 < n ? lo + 1 : lo;
  double a = value_at_rank(hist, nbins, lo), b = value_at_rank(hist, nbins, hi);
  return a + (pos - (double)lo) * (b - a);
}

int sq_input_range_resolve(const sq_input_range_t *r, const sq_image_t *img, float *scale,
                           float *offset, sq_error_t *err) {
  int wide = img->bytes_per_sample == 2;
  *offset = 0.0f;
  switch (r->mode) {
    case SQ_RANGE_FIXED:
      *scale = wide ? r->scale_16bit : r->scale;
      return 0;
    case SQ_RANGE_FULL:
      if (wide && (r->bits < 1 || r->bits > 16))
        return sq_error_set(err, SQ_EINVAL, "input range: bits %u is not in 1..16", r->bits);
      *scale = wide ? (float)(1.0 / (double)((1u << r->bits) - 1u)) : 1.0f / 255.0f;
      return 0;
    case SQ_RANGE_PERCENTILE:
      break;
    default:
      return sq_error_set(err, SQ_EINVAL, "input range: unknown mode %d", (int)r->mode);
  }
  if (!(r->low >= 0.0f && r->low < r->high && r->high <= 100.0f))
    return sq_error_set(err, SQ_EINVAL,
                        "input range: percentiles %g..%g are not 0 <= low < high <= 100",
                        (double)r->low, (double)r->high);
  uint32_t nbins = wide ? 65536u : 256u;
  uint64_t n = (uint64_t)img->width * img->height * img->channels;
  if (n == 0) return sq_error_set(err, SQ_EIMAGE_EMPTY, "input range: empty image");
  uint32_t *hist = calloc(nbins, sizeof(uint32_t));
  if (!hist) return sq_error_set(err, SQ_ENOMEM, "input range: out of memory for a histogram");
  if (wide) {
    const uint16_t *s = (const uint16_t *)(const void *)img->data;
    for (uint64_t i = 0; i < n; i++) hist[s[i]]++;
  } else {
    for (uint64_t i = 0; i < n; i++) hist[img->data[i]]++;
  }
  double lo = percentile(hist, nbins, n, r->low), hi = percentile(hist, nbins, n, r->high);
  free(hist);
  /* No contrast between the percentiles (a flat image): p_low -> 0 at the full-range scale, so
   * the image becomes uniform 0 rather than a division by zero. */
  double s = hi > lo ? 1.0 / (hi - lo) : 1.0 / (double)(nbins - 1);
  *scale = (float)s;
  *offset = (float)(-lo * s);
  return 0;
}
