/* gpu: the `onnx` model kind: a model of the repository (<repo_dir>/<name>/model.json +
 * model.onnx, docs/models.md) run by the engine (gpu/onnx) on its cpu backend.
 * prepare (work pool): channels, 16-bit, normalization, and the image cut into overlapping tiles
 * (a job's sample is its array of tiles) or, in "resize" mode, resized to one input; run
 * (executor thread, one backend context per `contexts`): the tiles of all jobs of a batch in
 * chunks of at most max_batch tiles, each chunk on a plan for exactly its size (plans made on
 * first use and cached per size, so a lone small image costs one tile, not max_batch); finish
 * (work pool): tiles stitched back (or resized back), sigmoid for logits, threshold -> mask of
 * the original size; finish_prob stops before the threshold (ensembles). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/model_internal.h"
#include "gpu/model_repo.h"
#include "gpu/onnx/engine.h"
#include "gpu/tile.h"

typedef struct {
  float *in;  /* max_batch x C x H x W, the chunk being run */
  float *out; /* max_batch x output plane(s) */
} onnx_scratch_t;

typedef struct {
  sq_repo_config_t cfg;
  sq_engine_t *engine;
  int input_index, output_index; /* in the plan's input/output lists */
  uint32_t out_channels;         /* channels of the output tensor */
  sq_backend_t *backend;
  sq_backend_ctx_t **ctxs; /* cfg.contexts */
  onnx_scratch_t *scratch; /* one per context */
  size_t arena_bytes;      /* of every context */
  pthread_mutex_t plans_mu;
  sq_engine_plan_t **plans; /* [1..max_batch], made on first use */
  uint8_t *too_big;         /* [1..max_batch]: that plan's arena exceeds the contexts' */
  float lut8[3][256];       /* normalized value of each 8-bit sample, per channel */
} onnx_model_t;

/* A job between prepare and run: its tiles, row-major over the tile grid. */
typedef struct {
  uint32_t width, height, ntiles;
  float *tiles; /* ntiles x C x H x W */
} onnx_sample_t;

/* A job between run and finish: the foreground plane of each tile. */
typedef struct {
  uint32_t width, height, ntiles;
  float *planes; /* ntiles x H x W */
} onnx_output_t;

static size_t tile_plane(const onnx_model_t *om) {
  return (size_t)om->cfg.size_h * om->cfg.size_w;
}

/* ---- plans ---- */

static sq_engine_plan_t *plan_make(onnx_model_t *om, uint32_t batch, sq_error_t *err) {
  int n = sq_engine_input_count(om->engine);
  sq_engine_tensor_t *ins = calloc((size_t)n, sizeof(*ins));
  if (!ins) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  for (int i = 0; i < n; i++) sq_engine_input_info(om->engine, i, &ins[i]);
  sq_engine_tensor_t *in = &ins[om->input_index];
  in->data = NULL;
  in->rank = 4;
  in->dims[0] = batch;
  in->dims[1] = om->cfg.channels;
  in->dims[2] = om->cfg.size_h;
  in->dims[3] = om->cfg.size_w;
  sq_engine_plan_t *p = sq_engine_plan_new_shapes(om->engine, ins, n, err);
  free(ins);
  return p;
}

/* The plan for `batch` tiles; made and cached on first use. A plan whose arena would not fit
 * the contexts (sized for max_batch) is not used: NULL with *fallback = 1, and the caller pads
 * the chunk to max_batch instead. */
static sq_engine_plan_t *plan_get(onnx_model_t *om, uint32_t batch, int *fallback,
                                  sq_error_t *err) {
  *fallback = 0;
  pthread_mutex_lock(&om->plans_mu);
  sq_engine_plan_t *p = om->plans[batch];
  if (!p && om->too_big[batch]) {
    *fallback = 1;
  } else if (!p) {
    p = plan_make(om, batch, err);
    if (p && sq_engine_arena_bytes(p) > om->arena_bytes) {
      sq_engine_plan_free(p);
      p = NULL;
      *fallback = 1;
      om->too_big[batch] = 1;
    }
    om->plans[batch] = p;
  }
  pthread_mutex_unlock(&om->plans_mu);
  return p;
}

/* ---- prepare ---- */

/* Rounded BT.601 luma, as docs/models.md says (0.299 R + 0.587 G + 0.114 B). */
static uint32_t luma(uint32_t r, uint32_t g, uint32_t b) {
  return (uint32_t)lrintf(0.299f * (float)r + 0.587f * (float)g + 0.114f * (float)b);
}

/* The image as C normalized float planes (the model's channel count). */
static float *normalize_image(const onnx_model_t *om, const sq_image_t *img) {
  uint32_t C = om->cfg.channels, ic = img->channels;
  size_t npix = (size_t)img->width * img->height;
  float *dst = malloc(npix * C * sizeof(float));
  if (!dst) return NULL;
  for (size_t i = 0; i < npix; i++) {
    uint32_t v[3] = {0, 0, 0}; /* ic is 1 or 3 (checked at decode); the zeros quiet -O3 */
    if (img->bytes_per_sample == 1) {
      const uint8_t *s = img->data + i * ic;
      for (uint32_t c = 0; c < ic; c++) v[c] = s[c];
    } else {
      const uint16_t *s = (const uint16_t *)img->data + i * ic;
      for (uint32_t c = 0; c < ic; c++) v[c] = s[c];
    }
    if (C == 1 && ic == 3) v[0] = luma(v[0], v[1], v[2]);
    for (uint32_t c = 0; c < C; c++) {
      uint32_t x = ic == 1 ? v[0] : v[c]; /* gray into every channel of an RGB model */
      dst[c * npix + i] = img->bytes_per_sample == 1
                              ? om->lut8[c][x]
                              : ((float)x * om->cfg.scale_16bit - om->cfg.mean[c]) / om->cfg.std[c];
    }
  }
  return dst;
}

/* Tile mode: the normalized image cut into the sample's tiles. */
static int cut_tiles(onnx_model_t *om, const float *norm, onnx_sample_t *s, sq_error_t *err) {
  sq_tile_axis_t ax, ay;
  int rc = sq_tile_axis_init(&ax, s->width, om->cfg.size_w, om->cfg.overlap, err);
  if (rc) return rc;
  rc = sq_tile_axis_init(&ay, s->height, om->cfg.size_h, om->cfg.overlap, err);
  if (rc) {
    sq_tile_axis_free(&ax);
    return rc;
  }
  uint32_t C = om->cfg.channels;
  size_t per_tile = (size_t)C * tile_plane(om);
  s->ntiles = ax.n * ay.n;
  s->tiles = malloc((size_t)s->ntiles * per_tile * sizeof(float));
  if (!s->tiles) {
    rc = sq_error_set(err, SQ_ENOMEM, "out of memory for %u x %u tiles", ax.n, ay.n);
  } else {
    float pad[3];
    for (uint32_t c = 0; c < C; c++) pad[c] = (0.0f - om->cfg.mean[c]) / om->cfg.std[c];
    for (uint32_t iy = 0; iy < ay.n; iy++)
      for (uint32_t ix = 0; ix < ax.n; ix++)
        sq_tile_extract(&ax, &ay, ix, iy, norm, C, om->cfg.pad_zero ? pad : NULL,
                        s->tiles + ((size_t)iy * ax.n + ix) * per_tile);
  }
  sq_tile_axis_free(&ax);
  sq_tile_axis_free(&ay);
  return rc;
}

/* Resize mode: the normalized image resized to input.size, one sample of one "tile". */
static int resize_in(onnx_model_t *om, const float *norm, onnx_sample_t *s, sq_error_t *err) {
  size_t plane = tile_plane(om), npix = (size_t)s->width * s->height;
  s->ntiles = 1;
  s->tiles = malloc((size_t)om->cfg.channels * plane * sizeof(float));
  if (!s->tiles) return sq_error_set(err, SQ_ENOMEM, "out of memory for the resized input");
  for (uint32_t c = 0; c < om->cfg.channels; c++)
    if (sq_resize_bilinear(norm + c * npix, s->width, s->height, s->tiles + c * plane,
                           om->cfg.size_w, om->cfg.size_h))
      return sq_error_set(err, SQ_ENOMEM, "out of memory while resizing");
  return 0;
}

static int onnx_prepare(sq_model_t *m, const sq_image_t *img, void **sample, sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_sample_t *s = calloc(1, sizeof(*s));
  float *norm = normalize_image(om, img);
  sq_error_t lerr = {0};
  int rc = 0;
  if (!s || !norm) {
    rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for a %ux%u image", m->info.name,
                      img->width, img->height);
  } else {
    s->width = img->width;
    s->height = img->height;
    rc = om->cfg.mode_resize ? resize_in(om, norm, s, &lerr) : cut_tiles(om, norm, s, &lerr);
    if (rc) sq_error_set(err, rc, "model %s: %s", m->info.name, lerr.msg);
  }
  if (rc && s) {
    free(s->tiles);
    free(s);
  } else if (!rc) {
    *sample = s;
  }
  free(norm);
  return rc;
}

/* ---- run ---- */

static void output_free(sq_model_t *m, void *p) {
  onnx_output_t *o = p;
  free(o->planes);
  free(o);
}

static void sample_free(sq_model_t *m, void *p) {
  onnx_sample_t *s = p;
  free(s->tiles);
  free(s);
}

/* Runs `b` tiles (already in sc->in) as one batch and leaves their outputs in sc->out. */
static int run_chunk(sq_model_t *m, onnx_model_t *om, int ctx, uint32_t b, sq_error_t *err) {
  int fallback = 0;
  sq_engine_plan_t *p = plan_get(om, b, &fallback, err);
  uint32_t run_b = b;
  if (!p && fallback) {
    run_b = om->cfg.max_batch;
    p = plan_get(om, run_b, &fallback, err);
  }
  if (!p) return err && err->code ? err->code : SQ_EMODEL;
  onnx_scratch_t *sc = &om->scratch[ctx];
  size_t per_in = (size_t)om->cfg.channels * tile_plane(om);
  if (run_b > b) memset(sc->in + b * per_in, 0, (size_t)(run_b - b) * per_in * sizeof(float));
  int nin = sq_engine_plan_input_count(p), nout = sq_engine_plan_output_count(p);
  sq_engine_tensor_t in, *outs = calloc((size_t)nout, sizeof(*outs));
  if (nin != 1 || !outs) {
    free(outs);
    return sq_error_set(err, nin != 1 ? SQ_EMODEL : SQ_ENOMEM, "model %s: cannot run",
                        m->info.name);
  }
  sq_engine_plan_input_info(p, 0, &in);
  in.data = sc->in;
  /* Only the chosen output goes to the scratch buffer; others (rare) get their own. */
  int rc = 0;
  for (int i = 0; i < nout; i++) {
    sq_engine_plan_output_info(p, i, &outs[i]);
    outs[i].data = i == om->output_index ? sc->out : malloc(outs[i].bytes ? outs[i].bytes : 1);
    if (!outs[i].data) rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  }
  if (!rc) rc = sq_engine_run(p, om->ctxs[ctx], &in, 1, outs, nout, err);
  for (int i = 0; i < nout; i++)
    if (i != om->output_index) free(outs[i].data);
  free(outs);
  return rc;
}

static int onnx_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs,
                    sq_error_t *err) {
  onnx_model_t *om = m->context;
  onnx_scratch_t *sc = &om->scratch[ctx];
  size_t plane = tile_plane(om), per_in = (size_t)om->cfg.channels * plane;
  size_t out_per_tile = (size_t)om->out_channels * plane;
  onnx_output_t **outs = calloc(n ? n : 1, sizeof(*outs));
  int rc = 0;
  if (!outs) return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  for (size_t i = 0; i < n && !rc; i++) {
    const onnx_sample_t *s = samples[i];
    outs[i] = calloc(1, sizeof(onnx_output_t));
    if (outs[i]) outs[i]->planes = malloc((size_t)s->ntiles * plane * sizeof(float));
    if (!outs[i] || !outs[i]->planes) {
      rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for outputs", m->info.name);
      break;
    }
    outs[i]->width = s->width;
    outs[i]->height = s->height;
    outs[i]->ntiles = s->ntiles;
  }
  /* Walk all tiles of all samples in order, max_batch at a time. */
  size_t si = 0, ti = 0; /* next tile to load */
  size_t so = 0, to = 0; /* next tile to store */
  while (!rc && si < n) {
    uint32_t b = 0;
    while (b < om->cfg.max_batch && si < n) {
      const onnx_sample_t *s = samples[si];
      memcpy(sc->in + b * per_in, s->tiles + ti * per_in, per_in * sizeof(float));
      b++;
      if (++ti == s->ntiles) {
        si++;
        ti = 0;
      }
    }
    rc = run_chunk(m, om, ctx, b, err);
    for (uint32_t k = 0; !rc && k < b; k++) {
      memcpy(outs[so]->planes + to * plane,
             sc->out + k * out_per_tile + (size_t)om->cfg.output_channel * plane,
             plane * sizeof(float));
      sq_model_progress_report(so, (uint32_t)to + 1, outs[so]->ntiles); /* tiles done / total */
      if (++to == outs[so]->ntiles) {
        so++;
        to = 0;
      }
    }
  }
  if (rc) {
    for (size_t i = 0; i < n; i++)
      if (outs[i]) output_free(m, outs[i]);
  } else {
    for (size_t i = 0; i < n; i++) {
      sample_free(m, samples[i]); /* a successful run consumes the samples */
      outputs[i] = outs[i];
    }
  }
  free(outs);
  return rc;
}

/* ---- finish ---- */

/* The output's tiles stitched into the probability map of the original image size (sigmoid
 * applied for logits). Does not consume the output. */
static int stitch_prob(sq_model_t *m, const onnx_output_t *o, float **prob, sq_error_t *err) {
  onnx_model_t *om = m->context;
  *prob = NULL;
  size_t npix = (size_t)o->width * o->height, plane = tile_plane(om);
  int logits = om->cfg.output_kind == SQ_REPO_OUT_LOGITS_SIGMOID;
  float *p = malloc((npix ? npix : 1) * sizeof(float));
  if (!p)
    return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for the probability map",
                        m->info.name);
  int rc = 0;
  if (om->cfg.mode_resize) {
    /* The probability map (sigmoid first for logits) is resized back to the image. */
    float *q = logits ? malloc(plane * sizeof(float)) : o->planes;
    if (!q) {
      rc = SQ_ENOMEM;
    } else {
      for (size_t i = 0; logits && i < plane; i++) q[i] = 1.0f / (1.0f + expf(-o->planes[i]));
      rc = sq_resize_bilinear(q, om->cfg.size_w, om->cfg.size_h, p, o->width, o->height);
      if (logits) free(q);
    }
    if (rc)
      rc = sq_error_set(err, SQ_ENOMEM, "model %s: out of memory while resizing", m->info.name);
  } else {
    sq_tile_axis_t ax = {0}, ay = {0};
    rc = sq_tile_axis_init(&ax, o->width, om->cfg.size_w, om->cfg.overlap, err);
    if (!rc) rc = sq_tile_axis_init(&ay, o->height, om->cfg.size_h, om->cfg.overlap, err);
    if (!rc && ax.n * ay.n != o->ntiles)
      rc = sq_error_set(err, SQ_EINTERNAL, "model %s: %u tiles, expected %u", m->info.name,
                        o->ntiles, ax.n * ay.n);
    if (!rc) {
      sq_tile_stitch(&ax, &ay, o->planes, plane, p);
      for (size_t i = 0; logits && i < npix; i++) p[i] = 1.0f / (1.0f + expf(-p[i]));
    }
    sq_tile_axis_free(&ax);
    sq_tile_axis_free(&ay);
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
  float *prob = NULL;
  int rc = stitch_prob(m, o, &prob, err);
  if (rc) return rc;
  size_t npix = (size_t)o->width * o->height;
  uint8_t *mk = malloc(npix ? npix : 1);
  if (!mk) {
    free(prob);
    return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for the mask", m->info.name);
  }
  float t = pp ? pp->threshold : om->cfg.threshold;
  for (size_t i = 0; i < npix; i++) mk[i] = prob[i] >= t;
  free(prob);
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
  if (om->ctxs)
    for (uint32_t c = 0; c < om->cfg.contexts; c++)
      if (om->ctxs[c]) sq_backend_ctx_free(om->ctxs[c]);
  if (om->scratch)
    for (uint32_t c = 0; c < om->cfg.contexts; c++) {
      free(om->scratch[c].in);
      free(om->scratch[c].out);
    }
  if (om->plans)
    for (uint32_t b = 0; b <= om->cfg.max_batch; b++)
      if (om->plans[b]) sq_engine_plan_free(om->plans[b]);
  if (om->backend) sq_backend_free(om->backend);
  if (om->engine) sq_engine_free(om->engine);
  pthread_mutex_destroy(&om->plans_mu);
  free(om->ctxs);
  free(om->scratch);
  free(om->plans);
  free(om->too_big);
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

/* Checks the graph against model.json and makes what run needs. */
static int onnx_setup(onnx_model_t *om, const char *name, const char *device, sq_error_t *err) {
  sq_repo_config_t *cfg = &om->cfg;
  sq_error_t lerr = {0};
  om->engine = sq_engine_load_file(cfg->onnx_path, NULL, &lerr);
  if (!om->engine)
    return sq_error_set(err, lerr.code == SQ_EUNSUPPORTED ? SQ_EUNSUPPORTED : SQ_EMODEL_LOAD,
                        "model %s: %s", name, lerr.msg);
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
  om->input_index = 0;
  om->output_index = out_i;
  om->plans = calloc((size_t)cfg->max_batch + 1, sizeof(*om->plans));
  om->too_big = calloc((size_t)cfg->max_batch + 1, 1);
  if (!om->plans || !om->too_big) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  /* The largest plan sizes the contexts; it also shows shape errors at start-up. */
  sq_engine_plan_t *p = plan_make(om, cfg->max_batch, &lerr);
  if (!p)
    return sq_error_set(err, lerr.code == SQ_EUNSUPPORTED ? SQ_EUNSUPPORTED : SQ_EMODEL_LOAD,
                        "model %s: planning for batch %u: %s", name, cfg->max_batch, lerr.msg);
  om->plans[cfg->max_batch] = p;
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
  /* Contexts are sized for the max batch; a smaller plan that would need more (liveness could
   * pack it differently) is replaced by the max plan with a padded chunk, see plan_get. */
  om->arena_bytes = sq_engine_arena_bytes(p);
  if (device && !strcmp(device, "cuda:all"))
    return sq_error_set(err, SQ_EUNSUPPORTED,
                        "model %s: device cuda:all is not supported yet; use cuda:N", name);
  int nb = sq_backend_open(device, 0, &om->backend, 1, err);
  if (nb < 1) return nb < 0 ? nb : SQ_EDEVICE;
  int src = sq_backend_supports(om->backend, p, err);
  if (src) return src;
  om->ctxs = calloc(cfg->contexts, sizeof(*om->ctxs));
  om->scratch = calloc(cfg->contexts, sizeof(*om->scratch));
  if (!om->ctxs || !om->scratch) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  size_t plane = tile_plane(om);
  for (uint32_t c = 0; c < cfg->contexts; c++) {
    om->ctxs[c] = sq_backend_ctx_new(om->backend, om->arena_bytes, err);
    if (!om->ctxs[c]) return err && err->code ? err->code : SQ_ENOMEM;
    om->scratch[c].in = malloc((size_t)cfg->max_batch * cfg->channels * plane * sizeof(float));
    om->scratch[c].out = malloc((size_t)cfg->max_batch * om->out_channels * plane * sizeof(float));
    if (!om->scratch[c].in || !om->scratch[c].out)
      return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory for batch buffers", name);
  }
  for (uint32_t c = 0; c < cfg->channels; c++)
    for (int v = 0; v < 256; v++)
      om->lut8[c][v] = ((float)v * cfg->scale - cfg->mean[c]) / cfg->std[c];
  return 0;
}

sq_model_t *sq_model_onnx_open(const char *name, const char *repo_dir, const char *device,
                               sq_error_t *err) {
  onnx_model_t *om = calloc(1, sizeof(*om));
  if (!om) {
    sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", name);
    return NULL;
  }
  pthread_mutex_init(&om->plans_mu, NULL);
  sq_model_t *m = NULL;
  if (sq_repo_config_load(repo_dir, name, &om->cfg, err) || onnx_setup(om, name, device, err)) goto fail;
  m = sq_model_alloc(&onnx_iface, name, err);
  if (!m) goto fail;
  m->context = om;
  sq_model_info_t *info = &m->info;
  info->max_batch = om->cfg.max_batch;
  info->max_delay_us = om->cfg.max_delay_us;
  info->default_threshold = om->cfg.threshold;
  info->default_min_area = om->cfg.min_area;
  info->contexts = om->cfg.contexts;
  info->input_channels = om->cfg.channels;
  sq_log_info("gpu", "repository model loaded",
              "model=%s file=%s input=%ux%ux%u overlap=%u max_batch=%u contexts=%u arena_bytes=%zu",
              name, om->cfg.onnx_path, om->cfg.channels, om->cfg.size_h, om->cfg.size_w,
              om->cfg.overlap, om->cfg.max_batch, om->cfg.contexts, om->arena_bytes);
  return m;
fail:;
  sq_model_t tmp = {.context = om};
  onnx_close(&tmp);
  return NULL;
}
