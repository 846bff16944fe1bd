/* gpu: the built-in CPU models. `null` does nothing (it exists to measure the queue path);
 * `otsu` thresholds a grayscale image at Otsu's level (bright objects on a dark background).
 * prepare/finish run on the work pool, run on an executor thread; no shared mutable state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/model_internal.h"

/* ---- null ---- */

/* The only thing the null model must carry to finish is the image size. */
typedef struct {
  uint32_t width, height;
} null_job_t;

static int null_prepare(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                        const sq_postparams_t *pp, void **sample, sq_error_t *err) {
  (void)range;
  null_job_t *job = malloc(sizeof(*job));
  if (!job) return sq_error_set(err, SQ_ENOMEM, "null: out of memory");
  job->width = img->width;
  job->height = img->height;
  *sample = job;
  return 0;
}

static int null_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs,
                    int *codes, sq_error_t *err) {
  for (size_t i = 0; i < n; i++) outputs[i] = samples[i]; /* the sample is its own output */
  return 0;
}

static int null_finish(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                       uint32_t *width, uint32_t *height, sq_error_t *err) {
  null_job_t *job = output;
  *mask = NULL; /* all zero, see gpu.h */
  *width = job->width;
  *height = job->height;
  free(job);
  return 0;
}

static void null_free(sq_model_t *m, void *p) {
  free(p);
}

static const sq_model_iface_t null_iface = {
    .kind = "builtin",
    .prepare = null_prepare,
    .run = null_run,
    .finish = null_finish,
    .sample_free = null_free,
    .output_free = null_free,
    .close = NULL,
};

/* ---- otsu ---- */

typedef struct {
  uint32_t width, height;
  uint32_t bytes_per_sample; /* 1 or 2 */
  void *gray;                /* width*height samples, native endian */
} otsu_sample_t;

typedef struct {
  uint32_t width, height;
  uint8_t *mask;
} otsu_output_t;

static void otsu_sample_free(sq_model_t *m, void *p) {
  otsu_sample_t *s = p;
  free(s->gray);
  free(s);
}

static void otsu_output_free(sq_model_t *m, void *p) {
  otsu_output_t *o = p;
  free(o->mask);
  free(o);
}

/* Integer BT.601 luma: weights 77/150/29 sum to 256, so the result stays in range. */
static inline uint32_t luma(uint32_t r, uint32_t g, uint32_t b) {
  return (77 * r + 150 * g + 29 * b + 128) >> 8;
}

static int otsu_prepare(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                        const sq_postparams_t *pp, void **sample, sq_error_t *err) {
  (void)range; /* Otsu's threshold does not depend on the value scale */
  size_t npix = (size_t)img->width * img->height;
  otsu_sample_t *s = calloc(1, sizeof(*s));
  if (!s) return sq_error_set(err, SQ_ENOMEM, "otsu: out of memory");
  s->width = img->width;
  s->height = img->height;
  s->bytes_per_sample = img->bytes_per_sample;
  s->gray = malloc(npix * img->bytes_per_sample);
  if (!s->gray) {
    free(s);
    return sq_error_set(err, SQ_ENOMEM, "otsu: out of memory for %zu pixels", npix);
  }
  if (img->channels == 1) {
    memcpy(s->gray, img->data, npix * img->bytes_per_sample);
  } else if (img->bytes_per_sample == 1) {
    const uint8_t *src = img->data;
    uint8_t *dst = s->gray;
    for (size_t i = 0; i < npix; i++, src += 3) dst[i] = (uint8_t)luma(src[0], src[1], src[2]);
  } else {
    const uint16_t *src = (const uint16_t *)img->data;
    uint16_t *dst = s->gray;
    for (size_t i = 0; i < npix; i++, src += 3) dst[i] = (uint16_t)luma(src[0], src[1], src[2]);
  }
  *sample = s;
  return 0;
}

/* Threshold + mask of one sample; the histogram buffer is the caller's (256 or 65536 bins). */
static int otsu_one(const otsu_sample_t *s, uint32_t *hist, otsu_output_t **out, sq_error_t *err) {
  size_t npix = (size_t)s->width * s->height;
  otsu_output_t *o = malloc(sizeof(*o));
  uint8_t *mask = malloc(npix);
  if (!o || !mask) {
    free(o);
    free(mask);
    return sq_error_set(err, SQ_ENOMEM, "otsu: out of memory for a %ux%u mask", s->width,
                        s->height);
  }
  if (s->bytes_per_sample == 1) {
    const uint8_t *g = s->gray;
    memset(hist, 0, 256 * sizeof(*hist));
    for (size_t i = 0; i < npix; i++) hist[g[i]]++;
    uint32_t t = sq_otsu_threshold(hist, 256);
    for (size_t i = 0; i < npix; i++) mask[i] = g[i] > t;
  } else {
    /* Full 16-bit resolution: 65536 bins cost 256 KiB and a 65536-step scan, which is small
     * next to the image, and keep dim 12/16-bit microscopy images from collapsing into a few
     * bins as a downshift to 8 bits would. */
    const uint16_t *g = s->gray;
    memset(hist, 0, 65536 * sizeof(*hist));
    for (size_t i = 0; i < npix; i++) hist[g[i]]++;
    uint32_t t = sq_otsu_threshold(hist, 65536);
    for (size_t i = 0; i < npix; i++) mask[i] = g[i] > t;
  }
  o->width = s->width;
  o->height = s->height;
  o->mask = mask;
  *out = o;
  return 0;
}

static int otsu_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs,
                    int *codes, sq_error_t *err) {
  /* 8-bit batches (the common case) keep their 1 KiB histogram on the stack. */
  uint32_t hist8[256], *hist = hist8;
  for (size_t k = 0; k < n && hist == hist8; k++)
    if (((const otsu_sample_t *)samples[k])->bytes_per_sample == 2) {
      hist = malloc(65536 * sizeof(*hist));
      if (!hist) return sq_error_set(err, SQ_ENOMEM, "otsu: out of memory for a histogram");
    }
  int rc = 0;
  size_t i;
  for (i = 0; i < n && rc == 0; i++) {
    otsu_output_t *o = NULL;
    rc = otsu_one(samples[i], hist, &o, err);
    outputs[i] = o;
  }
  if (hist != hist8) free(hist);
  if (rc) {
    /* A failed run sets no output and leaves every sample with the caller. */
    for (size_t j = 0; j < i; j++) {
      if (outputs[j]) otsu_output_free(m, outputs[j]);
      outputs[j] = NULL;
    }
    return rc;
  }
  for (i = 0; i < n; i++) otsu_sample_free(m, samples[i]);
  return 0;
}

static int otsu_finish(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                       uint32_t *width, uint32_t *height, sq_error_t *err) {
  otsu_output_t *o = output;
  *mask = o->mask; /* handed over: the mask is already at the original size */
  *width = o->width;
  *height = o->height;
  free(o);
  return 0;
}

static const sq_model_iface_t otsu_iface = {
    .kind = "builtin",
    .prepare = otsu_prepare,
    .run = otsu_run,
    .finish = otsu_finish,
    .sample_free = otsu_sample_free,
    .output_free = otsu_output_free,
    .close = NULL,
};

/* ---- registry of built-ins ---- */

static const struct {
  const char *name;
  const sq_model_iface_t *iface;
  sq_model_info_t info; /* name is filled from `name` */
} builtins[] = {
    {"null",
     &null_iface,
     {.max_batch = 64,
      .max_delay_us = 2000,
      .default_threshold = 0.5f,
      .default_min_area = 0,
      .contexts = 1,
      .input_channels = 1}},
    {"otsu",
     &otsu_iface,
     {.max_batch = 8,
      .max_delay_us = 5000,
      .default_threshold = 0.5f,
      .default_min_area = 16,
      .contexts = 1,
      .input_channels = 1}},
};

int sq_model_is_builtin(const char *name) {
  for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
    if (name && strcmp(name, builtins[i].name) == 0) return 1;
  return 0;
}

sq_model_t *sq_model_builtin_open(const char *name, const char *repo_dir,
                                  const sq_model_options_t *opt, sq_error_t *err) {
  for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
    if (strcmp(name, builtins[i].name) != 0) continue;
    sq_model_t *m = sq_model_alloc(builtins[i].iface, name, err);
    if (!m) return NULL;
    m->info = builtins[i].info;
    memcpy(m->info.name, name, strlen(name) + 1);
    m->info.devices = 1;
    snprintf(m->info.backend, sizeof m->info.backend, "cpu");
    return m;
  }
  sq_error_set(err, SQ_EMODEL_UNKNOWN, "'%s' is not a built-in model", name);
  return NULL;
}
