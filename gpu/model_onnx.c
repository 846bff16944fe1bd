/* gpu: the `onnx` model kind: a model of the repository (<repo_dir>/<name>/model.json +
 * model.onnx, docs/models.md) run by the engine (gpu/onnx) on one or more backends (cpu, cuda:N,
 * every GPU with cuda:all), `streams` executor contexts on each.
 * prepare (work pool): the image as C planes of raw samples (channels converted, values not:
 * normalization, with the input range policy resolved per image (input_range.c) into a scale and
 * an offset, happens next to the model, on the GPU when the backend can), cut into
 * overlapping tiles (a job's sample is its array of tiles) or, in "resize" mode, resized to one
 * input; with the job's threshold, so a GPU returns only the tiles' masks.
 * run (executor thread of one context): the tiles of all jobs of a batch in chunks of at most
 * the device's effective max batch (it shrinks under memory pressure), each on a plan for its
 * size (a backend that replays captured graphs gets a few fixed sizes, and a chunk is padded up
 * to one); an out-of-memory chunk is split in halves and retried, and a sample fails for memory
 * only when one of its tiles fails alone; a device error poisons the device for good.
 * finish (work pool): tiles stitched back (or resized back), threshold -> mask of the original
 * size; finish_prob stops before the threshold (ensembles). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu/devpolicy.h"
#include "gpu/model_internal.h"
#include "gpu/model_repo.h"
#include "gpu/onnx/engine.h"
#include "gpu/tile.h"

#define MAX_DEVICES 16
#define MAX_RUN_SIZES 16
#define OBSERVE_EVERY_US 200000ULL /* device memory is looked at at most this often */

/* One backend (device) and what is planned on it. */
typedef struct {
  sq_backend_t *backend;
  sq_backend_props_t props;
  char name[32];
  pthread_mutex_t mu;       /* plans, too_big, mem, poison */
  sq_engine_plan_t **plans; /* [1..max_batch], made on first use (or at warm-up) */
  uint8_t *too_big;         /* [1..max_batch]: that plan's arena exceeds the contexts' */
  sq_mempolicy_t mem;
  uint64_t observed_us;
  int poisoned; /* a device error: every later run fails at once */
  char poison_msg[200];
} onnx_dev_t;

/* One executor context and its batch buffers. */
typedef struct {
  onnx_dev_t *dev;
  sq_backend_ctx_t *ctx;
  uint8_t *in;      /* max_batch x C x H x W raw values, 4 bytes each at most */
  float *scale;     /* [max_batch * C] */
  float *offset;    /* [max_batch * C] */
  float *threshold; /* [max_batch] */
  uint8_t *mask;    /* max_batch x Ho x Wo */
  float *prob;      /* max_batch x Ho x Wo */
} onnx_ctx_t;

typedef struct {
  sq_repo_config_t cfg;
  sq_engine_t *engine;
  int output_index;      /* in the plan's output list */
  uint32_t out_channels; /* channels of the output tensor */
  int out_kind;          /* SQ_IMAGE_OUT_* */
  int precision;         /* SQ_PRECISION_* asked of the backends */
  onnx_dev_t devs[MAX_DEVICES];
  uint32_t ndevs, streams;
  onnx_ctx_t *ctxs; /* ndevs * streams: context i runs on devs[i / streams] */
  uint32_t nctx;
  uint32_t sizes[MAX_RUN_SIZES]; /* the batch sizes plans exist for (graphs); nsizes 0 = any */
  size_t nsizes;
  size_t arena_bytes; /* of every context */
} onnx_model_t;

/* A job between prepare and run: its tiles of raw values, how to normalize them, its threshold. */
typedef struct {
  uint32_t width, height, ntiles;
  uint32_t bytes; /* per value: 1 (8-bit), 2 (16-bit) or 4 (float, resize mode) */
  uint8_t *tiles; /* ntiles x C x H x W values */
  float scale[3], offset[3];
  float threshold; /* NaN: probabilities come back (finish thresholds, or an ensemble) */
} onnx_sample_t;

/* A job between run and finish: each tile's mask (threshold given) or probabilities. */
typedef struct {
  uint32_t width, height, ntiles;
  uint8_t *masks; /* ntiles x Ho x Wo, or NULL */
  float *probs;   /* ntiles x Ho x Wo, or NULL */
} onnx_output_t;

static size_t tile_plane(const onnx_model_t *om) {
  return (size_t)om->cfg.size_h * om->cfg.size_w;
}

/* ---- plans ---- */

static sq_engine_plan_t *plan_make(onnx_model_t *om, uint32_t batch, sq_error_t *err) {
  sq_engine_tensor_t in;
  sq_engine_input_info(om->engine, 0, &in);
  in.data = NULL;
  in.rank = 4;
  in.dims[0] = batch;
  in.dims[1] = om->cfg.channels;
  in.dims[2] = om->cfg.size_h;
  in.dims[3] = om->cfg.size_w;
  return sq_engine_plan_new_shapes(om->engine, &in, 1, err);
}

/* The plan for `batch` on dev; made and cached on first use. A plan whose arena would not fit
 * the contexts (sized for max_batch) is not used: NULL with *fallback = 1, and the caller pads
 * the chunk to max_batch instead. */
static sq_engine_plan_t *plan_get(onnx_model_t *om, onnx_dev_t *d, uint32_t batch, int *fallback,
                                  sq_error_t *err) {
  *fallback = 0;
  pthread_mutex_lock(&d->mu);
  sq_engine_plan_t *p = d->plans[batch];
  if (!p && d->too_big[batch]) {
    *fallback = 1;
  } else if (!p) {
    p = plan_make(om, batch, err);
    if (p && sq_engine_arena_bytes(p) > om->arena_bytes) {
      sq_engine_plan_free(p);
      p = NULL;
      *fallback = 1;
      d->too_big[batch] = 1;
    }
    d->plans[batch] = p;
  }
  pthread_mutex_unlock(&d->mu);
  return p;
}

/* ---- prepare ---- */

/* Rounded BT.601 luma, as docs/models.md says (0.299 R + 0.587 G + 0.114 B). */
static uint32_t luma(uint32_t r, uint32_t g, uint32_t b) {
  return (uint32_t)lrintf(0.299f * (float)r + 0.587f * (float)g + 0.114f * (float)b);
}

/* How the image's raw values become the model's input: x = v * scale[c] + offset[c], which is
 * ((v * rs + ro) - mean[c]) / std[c] with (rs, ro) the input range policy resolved for this image
 * (the job's, or model.json's normalization.range; input_range.c). Per image: the percentile
 * policy reads the image. */
static int norm_params(const onnx_model_t *om, const sq_image_t *img, const sq_input_range_t *range,
                       float *scale, float *offset, sq_error_t *err) {
  sq_input_range_t r = range ? *range : om->cfg.range;
  if (r.mode == SQ_RANGE_FIXED) { /* a job's "fixed" means the model's own constants */
    r.scale = om->cfg.range.scale;
    r.scale_16bit = om->cfg.range.scale_16bit;
  }
  float rs, ro;
  int rc = sq_input_range_resolve(&r, img, &rs, &ro, err);
  if (rc) return rc;
  for (uint32_t c = 0; c < om->cfg.channels; c++) {
    scale[c] = rs / om->cfg.std[c];
    offset[c] = (ro - om->cfg.mean[c]) / om->cfg.std[c];
  }
  return 0;
}

/* The image as C planes of raw values (the model's channel count), `bytes` per value. */
static void *raw_planes(const onnx_model_t *om, const sq_image_t *img) {
  uint32_t C = om->cfg.channels, ic = img->channels, bps = img->bytes_per_sample;
  size_t npix = (size_t)img->width * img->height;
  uint8_t *dst = malloc(npix * C * bps);
  if (!dst) return NULL;
  for (size_t i = 0; i < npix; i++) {
    uint32_t v[3] = {0, 0, 0}; /* ic is 1 or 3 (checked at decode); the zeros quiet -O3 */
    if (bps == 1) {
      const uint8_t *s = img->data + i * ic;
      for (uint32_t c = 0; c < ic; c++) v[c] = s[c];
    } else {
      const uint16_t *s = (const uint16_t *)img->data + i * ic;
      for (uint32_t c = 0; c < ic; c++) v[c] = s[c];
    }
    if (C == 1 && ic == 3) v[0] = luma(v[0], v[1], v[2]);
    for (uint32_t c = 0; c < C; c++) {
      uint32_t x = ic == 1 ? v[0] : v[c]; /* gray into every channel of an RGB model */
      if (bps == 1)
        dst[c * npix + i] = (uint8_t)x;
      else
        ((uint16_t *)dst)[c * npix + i] = (uint16_t)x;
    }
  }
  return dst;
}

/* Tile mode: the raw planes cut into the sample's tiles. */
static int cut_tiles(onnx_model_t *om, const void *raw, onnx_sample_t *s, sq_error_t *err) {
  sq_tile_axis_t ax, ay;
  int rc = sq_tile_axis_init(&ax, s->width, om->cfg.size_w, om->cfg.overlap, err);
  if (rc) return rc;
  rc = sq_tile_axis_init(&ay, s->height, om->cfg.size_h, om->cfg.overlap, err);
  if (rc) {
    sq_tile_axis_free(&ax);
    return rc;
  }
  uint32_t C = om->cfg.channels;
  size_t per_tile = (size_t)C * tile_plane(om) * s->bytes;
  s->ntiles = ax.n * ay.n;
  s->tiles = malloc((size_t)s->ntiles * per_tile);
  if (!s->tiles) {
    rc = sq_error_set(err, SQ_ENOMEM, "out of memory for %u x %u tiles", ax.n, ay.n);
  } else {
    for (uint32_t iy = 0; iy < ay.n; iy++)
      for (uint32_t ix = 0; ix < ax.n; ix++)
        sq_tile_extract_raw(&ax, &ay, ix, iy, raw, s->bytes, C, om->cfg.pad_zero,
                            s->tiles + ((size_t)iy * ax.n + ix) * per_tile);
  }
  sq_tile_axis_free(&ax);
  sq_tile_axis_free(&ay);
  return rc;
}

/* Resize mode: the raw planes resized to input.size as float values (normalization is affine
 * and bilinear weights sum to 1, so resizing first gives the same input), one "tile". */
static int resize_in(onnx_model_t *om, const void *raw, uint32_t bps, onnx_sample_t *s,
                     sq_error_t *err) {
  size_t plane = tile_plane(om), npix = (size_t)s->width * s->height;
  float *f = malloc(npix * sizeof(float));
  s->ntiles = 1;
  s->bytes = 4;
  s->tiles = malloc((size_t)om->cfg.channels * plane * sizeof(float));
  int rc = 0;
  if (!f || !s->tiles) rc = sq_error_set(err, SQ_ENOMEM, "out of memory for the resized input");
  for (uint32_t c = 0; c < om->cfg.channels && !rc; c++) {
    for (size_t i = 0; i < npix; i++)
      f[i] = bps == 1 ? (float)((const uint8_t *)raw)[c * npix + i]
                      : (float)((const uint16_t *)raw)[c * npix + i];
    if (sq_resize_bilinear(f, s->width, s->height, (float *)s->tiles + c * plane, om->cfg.size_w,
                           om->cfg.size_h))
      rc = sq_error_set(err, SQ_ENOMEM, "out of memory while resizing");
  }
  free(f);
  return rc;
}

static void sample_free(sq_model_t *m, void *p) {
  onnx_sample_t *s = p;
  free(s->tiles);
  free(s);
}

static int onnx_prepare(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                        const sq_postparams_t *pp, void **sample, sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_sample_t *s = calloc(1, sizeof(*s));
  void *raw = raw_planes(om, img);
  sq_error_t lerr = {0};
  int rc = 0;
  if (!s || !raw) {
    rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for a %ux%u image", m->info.name,
                      img->width, img->height);
  } else {
    s->width = img->width;
    s->height = img->height;
    s->bytes = img->bytes_per_sample;
    rc = norm_params(om, img, range, s->scale, s->offset, &lerr);
    /* Resize mode thresholds after resizing back: the device returns probabilities. */
    s->threshold = pp && !om->cfg.mode_resize ? pp->threshold : NAN;
    if (!rc)
      rc = om->cfg.mode_resize ? resize_in(om, raw, img->bytes_per_sample, s, &lerr)
                               : cut_tiles(om, raw, s, &lerr);
    if (rc) sq_error_set(err, rc, "model %s: %s", m->info.name, lerr.msg);
  }
  if (rc && s) {
    sample_free(m, s);
  } else if (!rc) {
    *sample = s;
  }
  free(raw);
  return rc;
}

/* ---- run ---- */

static void output_free(sq_model_t *m, void *p) {
  onnx_output_t *o = p;
  free(o->masks);
  free(o->probs);
  free(o);
}

/* Looks at the device's memory (at most every OBSERVE_EVERY_US) and logs pressure changes. */
static void observe_memory(sq_model_t *m, onnx_dev_t *d) {
  uint64_t now = sq_clock_mono_us();
  pthread_mutex_lock(&d->mu);
  int due = d->observed_us == 0 || now - d->observed_us >= OBSERVE_EVERY_US;
  if (due) d->observed_us = now;
  pthread_mutex_unlock(&d->mu);
  if (!due) return;
  size_t fr = 0, tot = 0;
  if (sq_backend_memory_info(d->backend, &fr, &tot) != 0 || tot == 0) return;
  pthread_mutex_lock(&d->mu);
  int before = sq_mempolicy_observe(&d->mem, fr, tot, now);
  int level = d->mem.pressure;
  uint32_t eff = d->mem.effective;
  pthread_mutex_unlock(&d->mu);
  if (level == before) return;
  double used = 100.0 * (double)(tot - (fr < tot ? fr : tot)) / (double)tot;
  if (level == SQ_PRESSURE_SHRINK)
    sq_log_warn("gpu", "device memory above 95% used; effective max batch shrinks",
                "model=%s device=%s used_pct=%.1f free_mib=%zu effective_max_batch=%u",
                m->info.name, d->name, used, fr >> 20, eff);
  else if (level == SQ_PRESSURE_WARN)
    sq_log_warn("gpu", "device memory above 90% used",
                "model=%s device=%s used_pct=%.1f free_mib=%zu effective_max_batch=%u",
                m->info.name, d->name, used, fr >> 20, eff);
  else
    sq_log_info("gpu", "device memory pressure over",
                "model=%s device=%s used_pct=%.1f effective_max_batch=%u", m->info.name, d->name,
                used, eff);
}

/* A flat list of the tiles of a batch: which sample, which of its tiles. */
typedef struct {
  uint32_t sample, tile;
} tile_ref_t;

/* Runs tiles[0..b) (their samples all still alive) as one chunk on context c, padded up to
 * the chunk's plan size, and stores each tile's result into its sample's output. */
static int run_chunk(sq_model_t *m, onnx_model_t *om, onnx_ctx_t *c, void *const *samples,
                     onnx_output_t **outs, const tile_ref_t *tiles, uint32_t b, sq_error_t *err) {
  onnx_dev_t *d = c->dev;
  uint32_t run_b = sq_run_size_for(om->nsizes ? om->sizes : NULL, om->nsizes, b);
  if (run_b < b) run_b = b;
  int fallback = 0;
  sq_engine_plan_t *p = plan_get(om, d, run_b, &fallback, err);
  if (!p && fallback) {
    run_b = om->cfg.max_batch;
    p = plan_get(om, d, run_b, &fallback, err);
  }
  if (!p) return err && err->code ? err->code : SQ_EMODEL;
  uint32_t C = om->cfg.channels, bytes = 1;
  size_t plane = tile_plane(om), per_tile_vals = (size_t)C * plane;
  int want_mask = 0, want_prob = 0;
  for (uint32_t k = 0; k < b; k++) {
    const onnx_sample_t *s = samples[tiles[k].sample];
    if (s->bytes > bytes) bytes = s->bytes;
    if (isnan(s->threshold))
      want_prob = 1;
    else
      want_mask = 1;
  }
  /* Gather at the widest value type of the chunk (8-bit tiles widen exactly). */
  for (uint32_t k = 0; k < b; k++) {
    const onnx_sample_t *s = samples[tiles[k].sample];
    const uint8_t *src = s->tiles + (size_t)tiles[k].tile * per_tile_vals * s->bytes;
    uint8_t *dst = c->in + (size_t)k * per_tile_vals * bytes;
    if (s->bytes == bytes) {
      memcpy(dst, src, per_tile_vals * bytes);
    } else if (bytes == 2) {
      for (size_t i = 0; i < per_tile_vals; i++) ((uint16_t *)dst)[i] = src[i];
    } else {
      for (size_t i = 0; i < per_tile_vals; i++)
        ((float *)dst)[i] = s->bytes == 1 ? (float)src[i] : (float)((const uint16_t *)src)[i];
    }
    memcpy(c->scale + (size_t)k * C, s->scale, C * sizeof(float));
    memcpy(c->offset + (size_t)k * C, s->offset, C * sizeof(float));
    c->threshold[k] = s->threshold;
  }
  if (run_b > b) { /* padding items: zeros, normalized like anything else */
    memset(c->in + (size_t)b * per_tile_vals * bytes, 0,
           (size_t)(run_b - b) * per_tile_vals * bytes);
    for (uint32_t k = b; k < run_b; k++) {
      for (uint32_t ch = 0; ch < C; ch++) c->scale[k * C + ch] = c->offset[k * C + ch] = 0.0f;
      c->threshold[k] = NAN;
    }
  }
  sq_engine_image_io_t io = {.in_bytes = (int)bytes,
                             .in = c->in,
                             .scale = c->scale,
                             .offset = c->offset,
                             .output = om->output_index,
                             .kind = om->out_kind,
                             .channel = (int)om->cfg.output_channel,
                             .threshold = c->threshold,
                             .mask = want_mask ? c->mask : NULL,
                             .prob = want_prob ? c->prob : NULL};
  int rc = sq_engine_run_image(p, c->ctx, &io, err);
  if (rc) return rc;
  for (uint32_t k = 0; k < b; k++) {
    onnx_output_t *o = outs[tiles[k].sample];
    if (o->masks)
      memcpy(o->masks + (size_t)tiles[k].tile * plane, c->mask + (size_t)k * plane, plane);
    else
      memcpy(o->probs + (size_t)tiles[k].tile * plane, c->prob + (size_t)k * plane,
             plane * sizeof(float));
  }
  return 0;
}

static int poison(sq_model_t *m, onnx_dev_t *d, const sq_error_t *e) {
  pthread_mutex_lock(&d->mu);
  int first = !d->poisoned;
  if (first) snprintf(d->poison_msg, sizeof d->poison_msg, "%.199s", e->msg);
  d->poisoned = 1;
  pthread_mutex_unlock(&d->mu);
  if (first)
    sq_log_error("gpu", "device error: this device fails every later run",
                 "model=%s device=%s msg=\"%s\"", m->info.name, d->name, e->msg);
  return SQ_EDEVICE;
}

static int onnx_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs,
                    int *codes, sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_ctx_t *c = &om->ctxs[ctx];
  onnx_dev_t *d = c->dev;
  pthread_mutex_lock(&d->mu);
  int poisoned = d->poisoned;
  pthread_mutex_unlock(&d->mu);
  if (poisoned)
    return sq_error_set(err, SQ_EDEVICE, "model %s: device %s failed earlier: %s", m->info.name,
                        d->name, d->poison_msg);
  observe_memory(m, d);
  size_t plane = tile_plane(om), total = 0;
  onnx_output_t **outs = calloc(n ? n : 1, sizeof(*outs));
  int rc = outs ? 0 : sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  for (size_t i = 0; i < n && !rc; i++) {
    const onnx_sample_t *s = samples[i];
    outs[i] = calloc(1, sizeof(onnx_output_t));
    if (outs[i] && isnan(s->threshold))
      outs[i]->probs = malloc((size_t)s->ntiles * plane * sizeof(float));
    else if (outs[i])
      outs[i]->masks = malloc((size_t)s->ntiles * plane);
    if (!outs[i] || (!outs[i]->masks && !outs[i]->probs)) {
      rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for outputs", m->info.name);
      break;
    }
    outs[i]->width = s->width;
    outs[i]->height = s->height;
    outs[i]->ntiles = s->ntiles;
    total += s->ntiles;
  }
  tile_ref_t *tiles = rc ? NULL : malloc((total ? total : 1) * sizeof *tiles);
  /* Work list of [start, len) ranges of `tiles` (a split pushes its two halves). */
  size_t *stack = rc ? NULL : malloc(2 * (total + 64) * sizeof *stack);
  if (!rc && (!tiles || !stack))
    rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  size_t k = 0;
  for (size_t i = 0; i < n && !rc; i++)
    for (uint32_t t = 0; t < ((const onnx_sample_t *)samples[i])->ntiles; t++)
      tiles[k++] = (tile_ref_t){(uint32_t)i, t};
  /* Chunks of at most the effective max batch, in order; pushed last first. */
  pthread_mutex_lock(&d->mu);
  uint32_t eff = d->mem.effective;
  pthread_mutex_unlock(&d->mu);
  size_t sp = 0;
  if (!rc) {
    size_t nchunks = (total + eff - 1) / eff;
    for (size_t ci = nchunks; ci-- > 0;) {
      size_t start = ci * eff, len = total - start < eff ? total - start : eff;
      stack[sp++] = start;
      stack[sp++] = len;
    }
  }
  tile_ref_t *live = rc ? NULL : malloc((total ? total : 1) * sizeof *live);
  uint32_t *done = rc ? NULL : calloc(n ? n : 1, sizeof *done);
  if (!rc && (!live || !done))
    rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  while (!rc && sp > 0) {
    size_t len = stack[--sp], start = stack[--sp];
    uint32_t b = 0; /* the range's tiles whose sample has not failed */
    for (size_t t = start; t < start + len; t++)
      if (!codes[tiles[t].sample]) live[b++] = tiles[t];
    if (b == 0) continue;
    sq_error_t cerr = {0};
    int crc = run_chunk(m, om, c, samples, outs, live, b, &cerr);
    for (uint32_t q = 0; crc == 0 && q < b; q++) /* tiles done / total, per sample */
      sq_model_progress_report(live[q].sample, ++done[live[q].sample],
                               outs[live[q].sample]->ntiles);
    if (crc == SQ_EOOM_DEVICE && len > 1) {
      pthread_mutex_lock(&d->mu);
      sq_mempolicy_oom(&d->mem, b, sq_clock_mono_us());
      pthread_mutex_unlock(&d->mu);
      sq_log_warn("gpu", "device out of memory; splitting the batch in halves",
                  "model=%s device=%s tiles=%u msg=\"%.160s\"", m->info.name, d->name, b, cerr.msg);
      size_t half = len / 2;
      stack[sp++] = start + half; /* second half runs after the first */
      stack[sp++] = len - half;
      stack[sp++] = start;
      stack[sp++] = half;
    } else if (crc == SQ_EOOM_DEVICE) {
      codes[live[0].sample] = SQ_EOOM_DEVICE; /* alone and still too big: this job fails */
      sq_error_set(err, SQ_EOOM_DEVICE, "model %s: device %s out of memory even for one tile: %s",
                   m->info.name, d->name, cerr.msg);
    } else if (crc == SQ_EDEVICE) {
      if (err) *err = cerr;
      rc = poison(m, d, &cerr);
    } else if (crc) {
      if (err) *err = cerr;
      rc = crc;
    }
  }
  free(done);
  free(live);
  free(stack);
  free(tiles);
  for (size_t i = 0; i < n; i++) {
    if (!outs || !outs[i]) continue;
    if (rc || codes[i]) {
      output_free(m, outs[i]);
    } else {
      sample_free(m, samples[i]); /* a successful run consumes the sample */
      outputs[i] = outs[i];
    }
  }
  free(outs);
  return rc;
}

/* ---- warm-up ---- */

/* Runs batch `b` once on context c with zero input (binds the plan, chooses algorithms; a
 * second run on a graph backend captures the graph). Mask and probabilities, as jobs ask. */
static int warm_run(sq_model_t *m, onnx_model_t *om, onnx_ctx_t *c, uint32_t b, sq_error_t *err) {
  int fallback = 0;
  sq_engine_plan_t *p = plan_get(om, c->dev, b, &fallback, err);
  if (!p) return fallback ? 0 : (err && err->code ? err->code : SQ_EMODEL);
  size_t vals = (size_t)b * om->cfg.channels * tile_plane(om);
  memset(c->in, 0, vals);
  for (size_t k = 0; k < (size_t)b * om->cfg.channels; k++) c->scale[k] = c->offset[k] = 0.0f;
  for (uint32_t k = 0; k < b; k++) c->threshold[k] = om->cfg.threshold;
  sq_engine_image_io_t io = {.in_bytes = 1,
                             .in = c->in,
                             .scale = c->scale,
                             .offset = c->offset,
                             .output = om->output_index,
                             .kind = om->out_kind,
                             .channel = (int)om->cfg.output_channel,
                             .threshold = c->threshold,
                             .mask = c->mask,
                             .prob = NULL};
  return sq_engine_run_image(p, c->ctx, &io, err);
}

static int onnx_warmup(sq_model_t *m, int ctx, sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_ctx_t *c = &om->ctxs[ctx];
  uint64_t t0 = sq_clock_mono_us();
  int rc = 0;
  /* Ascending, once to bind and grow the context's buffers, then again on a graph backend: the
   * captures. A size that does not fit (out of memory) caps the device's effective max batch
   * below it and the larger sizes are not warmed; not even batch 1 fitting is an error. */
  uint32_t one = 1, limit = UINT32_MAX;
  const uint32_t *sizes = om->nsizes ? om->sizes : &one;
  size_t nsizes = om->nsizes ? om->nsizes : 1;
  for (int pass = 0; pass < (om->nsizes ? 2 : 1) && !rc; pass++)
    for (size_t i = 0; i < nsizes && !rc && sizes[i] < limit; i++) {
      sq_error_t werr = {0};
      rc = warm_run(m, om, c, sizes[i], &werr);
      if (rc == SQ_EOOM_DEVICE && sizes[i] > 1) {
        sq_log_warn("gpu", "warm-up: batch does not fit; effective max batch capped below it",
                    "model=%s ctx=%d device=%s batch=%u msg=\"%.160s\"", m->info.name, ctx,
                    c->dev->name, sizes[i], werr.msg);
        pthread_mutex_lock(&c->dev->mu);
        sq_mempolicy_oom(&c->dev->mem, sizes[i], sq_clock_mono_us());
        pthread_mutex_unlock(&c->dev->mu);
        limit = sizes[i];
        rc = 0;
      } else if (rc && err) {
        *err = werr;
      }
    }
  if (rc == SQ_EDEVICE) poison(m, c->dev, err);
  if (!rc)
    sq_log_info("gpu", "context warm", "model=%s ctx=%d device=%s sizes=%zu ms=%.1f", m->info.name,
                ctx, c->dev->name, om->nsizes ? om->nsizes : 1,
                (double)(sq_clock_mono_us() - t0) / 1000.0);
  return rc;
}

static void onnx_stats(sq_model_t *m, sq_model_stats_t *out) {
  onnx_model_t *om = m->context;
  out->effective_max_batch = om->cfg.max_batch;
  for (uint32_t i = 0; i < om->ndevs; i++) {
    onnx_dev_t *d = &om->devs[i];
    pthread_mutex_lock(&d->mu);
    if (d->mem.effective < out->effective_max_batch) out->effective_max_batch = d->mem.effective;
    out->oom_splits += d->mem.splits;
    if (d->mem.pressure > out->pressure) out->pressure = d->mem.pressure;
    if (d->props.device_memory &&
        (out->device_total == 0 || d->mem.free_bytes < out->device_free)) {
      out->device_free = d->mem.free_bytes;
      out->device_total = d->mem.total_bytes;
    }
    pthread_mutex_unlock(&d->mu);
  }
}

/* ---- finish ---- */

/* Tile mode: the output's tiles stitched into one plane of the original size (elem bytes per
 * value: masks 1, probabilities 4). */
static int stitch(sq_model_t *m, const onnx_output_t *o, const void *tiles, size_t elem, void *out,
                  sq_error_t *err) {
  onnx_model_t *om = m->context;
  sq_tile_axis_t ax = {0}, ay = {0};
  int rc = sq_tile_axis_init(&ax, o->width, om->cfg.size_w, om->cfg.overlap, err);
  if (!rc) rc = sq_tile_axis_init(&ay, o->height, om->cfg.size_h, om->cfg.overlap, err);
  if (!rc && ax.n * ay.n != o->ntiles)
    rc = sq_error_set(err, SQ_EINTERNAL, "model %s: %u tiles, expected %u", m->info.name, o->ntiles,
                      ax.n * ay.n);
  if (!rc) sq_tile_stitch_raw(&ax, &ay, tiles, elem, tile_plane(om), out);
  sq_tile_axis_free(&ax);
  sq_tile_axis_free(&ay);
  return rc;
}

/* The probability map of the original image size (from a mask output: 0/1). Does not consume
 * the output. */
static int stitch_prob(sq_model_t *m, const onnx_output_t *o, float **prob, sq_error_t *err) {
  onnx_model_t *om = m->context;
  *prob = NULL;
  size_t npix = (size_t)o->width * o->height, plane = tile_plane(om);
  float *p = malloc((npix ? npix : 1) * sizeof(float));
  if (!p)
    return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for the probability map",
                        m->info.name);
  int rc = 0;
  if (!o->probs) {
    uint8_t *mk = malloc(npix ? npix : 1);
    rc = mk ? stitch(m, o, o->masks, 1, mk, err)
            : sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
    for (size_t i = 0; !rc && i < npix; i++) p[i] = mk[i] ? 1.0f : 0.0f;
    free(mk);
  } else if (om->cfg.mode_resize) {
    if (sq_resize_bilinear(o->probs, om->cfg.size_w, om->cfg.size_h, p, o->width, o->height))
      rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory while resizing", m->info.name);
    (void)plane;
  } else {
    rc = stitch(m, o, o->probs, sizeof(float), p, err);
  }
  if (rc) {
    free(p);
    return rc;
  }
  *prob = p;
  return 0;
}

static int onnx_finish(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                       uint32_t *width, uint32_t *height, sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_output_t *o = output;
  size_t npix = (size_t)o->width * o->height;
  uint8_t *mk = malloc(npix ? npix : 1);
  if (!mk)
    return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for the mask", m->info.name);
  int rc = 0;
  if (o->masks) {
    /* Thresholded next to the model: each pixel comes from the one tile that owns it, so
     * stitching the tiles' masks is thresholding the stitched probabilities. */
    rc = stitch(m, o, o->masks, 1, mk, err);
  } else {
    float *prob = NULL;
    rc = stitch_prob(m, o, &prob, err);
    float t = pp ? pp->threshold : om->cfg.threshold;
    for (size_t i = 0; !rc && i < npix; i++) mk[i] = prob[i] >= t;
    free(prob);
  }
  if (rc) {
    free(mk);
    return rc;
  }
  *mask = mk;
  *width = o->width;
  *height = o->height;
  output_free(m, o); /* a successful finish consumes the output */
  return 0;
}

static int onnx_finish_prob(sq_model_t *m, void *output, float **prob, uint32_t *width,
                            uint32_t *height, sq_error_t *err) {
  onnx_output_t *o = output;
  int rc = stitch_prob(m, o, prob, err);
  if (rc) return rc;
  *width = o->width;
  *height = o->height;
  output_free(m, o);
  return 0;
}

/* ---- open / close ---- */

static void onnx_close(sq_model_t *m) {
  onnx_model_t *om = m->context;
  if (!om) return;
  for (uint32_t i = 0; om->ctxs && i < om->nctx; i++) {
    onnx_ctx_t *c = &om->ctxs[i];
    if (c->ctx) sq_backend_ctx_free(c->ctx);
    free(c->in);
    free(c->scale);
    free(c->offset);
    free(c->threshold);
    free(c->mask);
    free(c->prob);
  }
  free(om->ctxs);
  for (uint32_t i = 0; i < om->ndevs; i++) {
    onnx_dev_t *d = &om->devs[i];
    if (d->plans)
      for (uint32_t b = 0; b <= om->cfg.max_batch; b++)
        if (d->plans[b]) sq_engine_plan_free(d->plans[b]);
    free(d->plans);
    free(d->too_big);
    if (d->backend) sq_backend_free(d->backend);
    pthread_mutex_destroy(&d->mu);
  }
  if (om->engine) sq_engine_free(om->engine);
  free(om);
  m->context = NULL;
}

static const sq_model_iface_t onnx_iface = {
    .kind = "onnx",
    .prepare = onnx_prepare,
    .run = onnx_run,
    .finish = onnx_finish,
    .sample_free = sample_free,
    .output_free = output_free,
    .close = onnx_close,
    .finish_prob = onnx_finish_prob,
    .warmup = onnx_warmup,
    .stats = onnx_stats,
};

/* Lists the engine's input or output names ("a, b") for messages. */
static void names(const sq_engine_t *e, int outputs, char *buf, size_t cap) {
  buf[0] = '\0';
  int n = outputs ? sq_engine_output_count(e) : sq_engine_input_count(e);
  for (int i = 0; i < n; i++) {
    sq_engine_tensor_t t;
    if (outputs ? sq_engine_output_info(e, i, &t) : sq_engine_input_info(e, i, &t)) continue;
    size_t l = strlen(buf);
    snprintf(buf + l, cap - l, "%s%s", i ? ", " : "", t.name ? t.name : "?");
  }
}

static int find_io(const sq_engine_t *e, int outputs, const char *want) {
  int n = outputs ? sq_engine_output_count(e) : sq_engine_input_count(e);
  if (!*want) return n > 0 ? 0 : -1;
  for (int i = 0; i < n; i++) {
    sq_engine_tensor_t t;
    if (outputs ? sq_engine_output_info(e, i, &t) : sq_engine_input_info(e, i, &t)) continue;
    if (t.name && !strcmp(t.name, want)) return i;
  }
  return -1;
}

static void dims_str(const sq_engine_tensor_t *t, char *buf, size_t cap) {
  buf[0] = '\0';
  for (int d = 0; d < t->rank; d++) {
    size_t l = strlen(buf);
    snprintf(buf + l, cap - l, "%s%lld", d ? "," : "[", (long long)t->dims[d]);
  }
  size_t l = strlen(buf);
  snprintf(buf + l, cap - l, "]");
}

/* Checks the graph against model.json (with the largest plan, which also shows shape errors at
 * start-up); *p gets that plan. */
static int check_graph(onnx_model_t *om, const char *name, sq_engine_plan_t **pmax,
                       sq_error_t *err) {
  sq_repo_config_t *cfg = &om->cfg;
  sq_error_t lerr = {0};
  char list[160], dims[96];
  int nin = sq_engine_input_count(om->engine);
  int in_i = find_io(om->engine, 0, cfg->input_name);
  if (in_i < 0) {
    names(om->engine, 0, list, sizeof list);
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: input.name '%s' is not an input of %s (inputs: %s)", name,
                        cfg->input_name, cfg->onnx_path, list);
  }
  if (nin != 1) {
    names(om->engine, 0, list, sizeof list);
    return sq_error_set(err, SQ_EUNSUPPORTED,
                        "model %s: the graph has %d inputs (%s); only one image input is supported",
                        name, nin, list);
  }
  sq_engine_tensor_t ti;
  sq_engine_input_info(om->engine, in_i, &ti);
  dims_str(&ti, dims, sizeof dims);
  if (ti.dtype != SQ_DT_FLOAT)
    return sq_error_set(err, SQ_EMODEL_LOAD, "model %s: input '%s' is %s, model.json says float32",
                        name, ti.name, sq_dtype_name(ti.dtype));
  if (ti.rank != 4)
    return sq_error_set(err, SQ_EMODEL_LOAD, "model %s: input '%s' has shape %s, expected NCHW",
                        name, ti.name, dims);
  if (ti.dims[1] >= 0 && ti.dims[1] != cfg->channels)
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: input.channels %u does not match input '%s' %s", name,
                        cfg->channels, ti.name, dims);
  if ((ti.dims[2] >= 0 && ti.dims[2] != cfg->size_h) ||
      (ti.dims[3] >= 0 && ti.dims[3] != cfg->size_w))
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: input.size [%u, %u] does not match input '%s' %s", name,
                        cfg->size_h, cfg->size_w, ti.name, dims);
  int out_i = find_io(om->engine, 1, cfg->output_name);
  if (out_i < 0) {
    names(om->engine, 1, list, sizeof list);
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: output.name '%s' is not an output of %s (outputs: %s)", name,
                        cfg->output_name, cfg->onnx_path, list);
  }
  om->output_index = out_i;
  sq_engine_plan_t *p = plan_make(om, cfg->max_batch, &lerr);
  if (!p)
    return sq_error_set(err, lerr.code == SQ_EUNSUPPORTED ? SQ_EUNSUPPORTED : SQ_EMODEL_LOAD,
                        "model %s: planning for batch %u: %s", name, cfg->max_batch, lerr.msg);
  *pmax = p;
  sq_engine_tensor_t to;
  sq_engine_plan_output_info(p, out_i, &to);
  dims_str(&to, dims, sizeof dims);
  if (to.dtype != SQ_DT_FLOAT || to.rank != 4 || to.dims[2] != cfg->size_h ||
      to.dims[3] != cfg->size_w)
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: output '%s' is %s %s; tiling needs float32 [N, C, %u, %u]", name,
                        to.name, sq_dtype_name(to.dtype), dims, cfg->size_h, cfg->size_w);
  om->out_channels = (uint32_t)to.dims[1];
  if (cfg->output_channel >= om->out_channels)
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: output.channel %u, but output '%s' has %u channels", name,
                        cfg->output_channel, to.name, om->out_channels);
  if (cfg->output_kind == SQ_REPO_OUT_SOFTMAX && om->out_channels < 2)
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "model %s: output.kind softmax needs at least 2 channels, '%s' has %u",
                        name, to.name, om->out_channels);
  return 0;
}

/* Device memory at start: the model must fit at batch 1; a max batch that does not fit is
 * lowered to what does (logged), before the contexts are sized. */
static int check_budget(onnx_model_t *om, const char *name, sq_engine_plan_t *pmax,
                        sq_engine_plan_t *p1, sq_error_t *err) {
  size_t plane = tile_plane(om);
  sq_membudget_t mb = {.arena1 = sq_engine_arena_bytes(p1),
                       .arena_max = sq_engine_arena_bytes(pmax),
                       .max_batch = om->cfg.max_batch,
                       .staging_per_item = (uint64_t)om->cfg.channels * plane * 4 + plane * 5 + 16,
                       .consts = sq_engine_plan_const_bytes(pmax),
                       .contexts = om->streams};
  uint32_t fit = om->cfg.max_batch;
  for (uint32_t i = 0; i < om->ndevs; i++) {
    onnx_dev_t *d = &om->devs[i];
    size_t fr = 0, tot = 0;
    if (sq_backend_memory_info(d->backend, &fr, &tot) != 0 || tot == 0) continue;
    uint32_t f = sq_membudget_fit(&mb, fr, tot);
    sq_log_info("gpu", "device memory budget",
                "model=%s device=%s free_mib=%zu total_mib=%zu need_mib_b1=%.1f need_mib_max=%.1f "
                "max_batch_fits=%u",
                name, d->name, fr >> 20, tot >> 20, (double)sq_membudget_need(&mb, 1) / 1048576.0,
                (double)sq_membudget_need(&mb, om->cfg.max_batch) / 1048576.0, f);
    if (f == 0)
      return sq_error_set(err, SQ_EOOM_DEVICE,
                          "model %s: device %s cannot hold it even at batch 1: it needs about "
                          "%.1f MiB (%u context(s)), %zu MiB of %zu MiB are free",
                          name, d->name, (double)sq_membudget_need(&mb, 1) / 1048576.0, om->streams,
                          fr >> 20, tot >> 20);
    if (f < fit) fit = f;
  }
  if (fit < om->cfg.max_batch) {
    sq_log_warn("gpu", "max_batch lowered to what device memory holds",
                "model=%s max_batch=%u fits=%u", name, om->cfg.max_batch, fit);
    om->cfg.max_batch = fit;
    if (om->cfg.optimal_batch > fit) om->cfg.optimal_batch = fit;
  }
  return 0;
}

static int open_devices(onnx_model_t *om, const char *name, const sq_model_options_t *opt,
                        sq_error_t *err) {
  sq_backend_t *bs[MAX_DEVICES];
  /* CPU contexts share the cores: each gets its part, so streams do not oversubscribe them. */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = om->streams > 1 && ncpu > 0 ? (int)(ncpu / om->streams) : 0;
  if (om->streams > 1 && threads < 1) threads = 1;
  int nb = sq_backend_open(opt->device, threads, bs, MAX_DEVICES, err);
  if (nb < 1) return nb < 0 ? nb : SQ_EDEVICE;
  om->ndevs = (uint32_t)nb;
  for (int i = 0; i < nb; i++) {
    onnx_dev_t *d = &om->devs[i];
    d->backend = bs[i];
    pthread_mutex_init(&d->mu, NULL);
    sq_backend_props(d->backend, &d->props);
    snprintf(d->name, sizeof d->name, "%s", sq_backend_name(d->backend));
    sq_backend_options_t bo = {.precision = om->precision};
    int rc = sq_backend_configure(d->backend, &bo, err);
    if (rc) return rc;
  }
  return 0;
}

static int onnx_setup(onnx_model_t *om, const char *name, const sq_model_options_t *opt,
                      sq_error_t *err) {
  sq_repo_config_t *cfg = &om->cfg;
  sq_error_t lerr = {0};
  om->engine = sq_engine_load_file(cfg->onnx_path, NULL, &lerr);
  if (!om->engine)
    return sq_error_set(err, lerr.code == SQ_EUNSUPPORTED ? SQ_EUNSUPPORTED : SQ_EMODEL_LOAD,
                        "model %s: %s", name, lerr.msg);
  om->out_kind = cfg->output_kind == SQ_REPO_OUT_LOGITS_SIGMOID ? SQ_IMAGE_OUT_LOGITS
                 : cfg->output_kind == SQ_REPO_OUT_SOFTMAX      ? SQ_IMAGE_OUT_SOFTMAX
                                                                : SQ_IMAGE_OUT_PROB;
  om->streams = opt->streams ? opt->streams : cfg->contexts;
  if (opt->max_batch) {
    cfg->max_batch = opt->max_batch;
    if (cfg->optimal_batch > cfg->max_batch) cfg->optimal_batch = cfg->max_batch;
  }
  /* The worker's flag, else model.json, else the file: an fp16 export runs in fp16 (nothing
   * the file had not already lost). */
  om->precision = opt->precision && *opt->precision ? !strcmp(opt->precision, "fp16")
                  : cfg->fp16 >= 0                  ? cfg->fp16
                                                    : sq_engine_stores_fp16(om->engine);
  sq_engine_plan_t *pmax = NULL, *p1 = NULL;
  int rc = check_graph(om, name, &pmax, err);
  if (!rc) rc = open_devices(om, name, opt, err);
  /* Every device must run the model: the host-only check names each node it cannot. */
  for (uint32_t i = 0; i < om->ndevs && !rc; i++)
    rc = sq_backend_supports(om->devs[i].backend, pmax, err);
  if (!rc) {
    p1 = cfg->max_batch > 1 ? plan_make(om, 1, &lerr) : NULL;
    if (cfg->max_batch > 1 && !p1)
      rc = sq_error_set(err, SQ_EMODEL_LOAD, "model %s: planning for batch 1: %s", name, lerr.msg);
  }
  if (!rc) rc = check_budget(om, name, pmax, p1 ? p1 : pmax, err);
  if (!rc) {
    /* The max batch may have been lowered: the largest plan is the one for the new max. */
    sq_engine_tensor_t in;
    sq_engine_plan_input_info(pmax, 0, &in);
    if (in.dims[0] != cfg->max_batch) {
      sq_engine_plan_free(pmax);
      pmax = cfg->max_batch == 1 ? p1 : plan_make(om, cfg->max_batch, &lerr);
      if (cfg->max_batch == 1) p1 = NULL;
      if (!pmax) rc = sq_error_set(err, SQ_EMODEL_LOAD, "model %s: %s", name, lerr.msg);
    }
  }
  if (rc) {
    sq_engine_plan_free(pmax);
    sq_engine_plan_free(p1);
    return rc;
  }
  /* Contexts are sized for the max batch; a smaller plan that would need more (liveness could
   * pack it differently) is replaced by the max plan with a padded chunk, see plan_get. */
  om->arena_bytes = sq_engine_arena_bytes(pmax);
  int graphs = om->devs[0].props.graphs;
  om->nsizes =
      graphs ? sq_run_sizes(cfg->max_batch, cfg->optimal_batch, om->sizes, MAX_RUN_SIZES) : 0;
  for (uint32_t i = 0; i < om->ndevs && !rc; i++) {
    onnx_dev_t *d = &om->devs[i];
    d->plans = calloc((size_t)cfg->max_batch + 1, sizeof(*d->plans));
    d->too_big = calloc((size_t)cfg->max_batch + 1, 1);
    if (!d->plans || !d->too_big) rc = sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_mempolicy_init(&d->mem, cfg->max_batch);
  }
  if (!rc) {
    om->devs[0].plans[cfg->max_batch] = pmax; /* the other devices plan their own */
    pmax = NULL;
    if (p1) {
      om->devs[0].plans[1] = p1;
      p1 = NULL;
    }
  }
  sq_engine_plan_free(pmax);
  sq_engine_plan_free(p1);
  om->nctx = om->ndevs * om->streams;
  om->ctxs = rc ? NULL : calloc(om->nctx, sizeof(*om->ctxs));
  if (!rc && !om->ctxs) rc = sq_error_set(err, SQ_ENOMEM, "out of memory");
  size_t plane = tile_plane(om), items = cfg->max_batch;
  for (uint32_t i = 0; i < om->nctx && !rc; i++) {
    onnx_ctx_t *c = &om->ctxs[i];
    c->dev = &om->devs[i / om->streams];
    c->ctx = sq_backend_ctx_new(c->dev->backend, om->arena_bytes, err);
    if (!c->ctx) {
      rc = err && err->code ? err->code : SQ_ENOMEM;
      break;
    }
    c->in = malloc(items * cfg->channels * plane * 4);
    c->scale = malloc(items * cfg->channels * sizeof(float));
    c->offset = malloc(items * cfg->channels * sizeof(float));
    c->threshold = malloc(items * sizeof(float));
    c->mask = malloc(items * plane);
    c->prob = malloc(items * plane * sizeof(float));
    if (!c->in || !c->scale || !c->offset || !c->threshold || !c->mask || !c->prob)
      rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for batch buffers", name);
  }
  return rc;
}

sq_model_t *sq_model_onnx_open(const char *name, const char *repo_dir,
                               const sq_model_options_t *opt, sq_error_t *err) {
  onnx_model_t *om = calloc(1, sizeof(*om));
  if (!om) {
    sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", name);
    return NULL;
  }
  sq_model_t *m = NULL;
  if (sq_repo_config_load(repo_dir, name, &om->cfg, err) || onnx_setup(om, name, opt, err))
    goto fail;
  m = sq_model_alloc(&onnx_iface, name, err);
  if (!m) goto fail;
  m->context = om;
  sq_model_info_t *info = &m->info;
  info->max_batch = om->cfg.max_batch;
  info->max_delay_us = om->cfg.max_delay_us;
  info->default_threshold = om->cfg.threshold;
  info->default_min_area = om->cfg.min_area;
  info->contexts = om->nctx;
  info->input_channels = om->cfg.channels;
  info->devices = om->ndevs;
  info->tile_w = om->cfg.size_w;
  info->tile_h = om->cfg.size_h;
  info->fp16 = om->precision == SQ_PRECISION_FP16 && om->devs[0].props.fp16;
  snprintf(info->backend, sizeof info->backend, "%s", om->devs[0].name);
  if (om->precision == SQ_PRECISION_FP16 && !info->fp16)
    sq_log_info("gpu", "precision fp16 asked for; this backend computes in fp32",
                "model=%s backend=%s", name, info->backend);
  char range[96];
  sq_input_range_describe(&om->cfg.range, range, sizeof range);
  sq_log_info("gpu", "repository model loaded",
              "model=%s file=%s input=%ux%ux%u range=%s overlap=%u max_batch=%u backend=%s "
              "devices=%u contexts=%u precision=%s graph_sizes=%zu arena_bytes=%zu",
              name, om->cfg.onnx_path, om->cfg.channels, om->cfg.size_h, om->cfg.size_w, range,
              om->cfg.overlap, om->cfg.max_batch, info->backend, om->ndevs, om->nctx,
              info->fp16 ? "fp16" : "fp32", om->nsizes, om->arena_bytes);
  return m;
fail:;
  sq_model_t tmp = {.context = om};
  onnx_close(&tmp);
  return NULL;
}
