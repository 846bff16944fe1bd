/* gpu: the sq_model_* entry points. Opening asks each loader in turn (built-ins first, then the
 * model repository); everything else dispatches through the model's iface. Also the one place
 * where a mask becomes what a result carries (polygons in image pixels, the mask if asked).
 * Threads: as noted in gpu.h for each function. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/model_internal.h"
#include "gpu/model_repo.h"
#include "gpu/onnx/engine.h"

/* Order matters: a built-in name shadows a repository model of the same name. The repository
 * loader returns SQ_EMODEL_UNKNOWN when the folder does not exist and SQ_EMODEL_LOAD when it
 * exists but cannot be loaded. */
static const sq_model_loader_fn model_loaders[] = {
    sq_model_builtin_open,
    sq_model_onnx_open, /* <repo_dir>/<name>/model.json + model.onnx (model_onnx.c) */
};

sq_model_t *sq_model_alloc(const sq_model_iface_t *iface, const char *name, sq_error_t *err) {
  sq_model_t *m = calloc(1, sizeof(*m));
  if (!m) {
    sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", name);
    return NULL;
  }
  m->iface = iface;
  snprintf(m->info.name, sizeof(m->info.name), "%s", name);
  return m;
}

int sq_model_device_check(const char *device, sq_error_t *err) {
  sq_device_t d;
  return sq_device_parse(device, &d, err);
}

sq_model_t *sq_model_open(const char *name, const char *repo_dir, sq_error_t *err) {
  return sq_model_open_device(name, repo_dir, "cpu", err);
}

sq_model_t *sq_model_open_device(const char *name, const char *repo_dir, const char *device,
                                 sq_error_t *err) {
  sq_model_options_t opt = {.device = device};
  return sq_model_open_with(name, repo_dir, &opt, err);
}

sq_model_t *sq_model_open_with(const char *name, const char *repo_dir,
                               const sq_model_options_t *opt, sq_error_t *err) {
  sq_model_options_t none = {0};
  if (!opt) opt = &none;
  if (!name || !*name) {
    sq_error_set(err, SQ_EINVAL, "model name is empty");
    return NULL;
  }
  for (size_t i = 0; i < sizeof(model_loaders) / sizeof(model_loaders[0]); i++) {
    sq_error_t lerr = {0};
    sq_model_t *m = model_loaders[i](name, repo_dir, opt, &lerr);
    if (m) {
      sq_error_clear(err);
      return m;
    }
    if (lerr.code != SQ_EMODEL_UNKNOWN) {
      if (err) *err = lerr;
      return NULL;
    }
  }
  sq_error_set(err, SQ_EMODEL_UNKNOWN,
               "no model named '%s' (built-ins: null, otsu; repository: %s)", name,
               repo_dir && *repo_dir ? repo_dir : "none");
  return NULL;
}

typedef struct {
  sq_model_problem_fn report;
  void *data;
} check_ctx_t;

static void check_report(const char *problem, void *data) {
  check_ctx_t *c = data;
  if (c->report) c->report(problem, c->data);
}

int sq_model_check(const char *name, const char *repo_dir, sq_model_problem_fn report, void *data,
                   sq_error_t *err) {
  sq_error_clear(err);
  if (!name || !*name) return sq_error_set(err, SQ_EINVAL, "model name is empty");
  /* A built-in shadows a repository folder of the same name, as at open. */
  sq_error_t lerr = {0};
  sq_model_options_t cpu = {.device = "cpu"};
  sq_model_t *m = sq_model_builtin_open(name, repo_dir, &cpu, &lerr);
  if (m) {
    sq_model_close(m);
    return 0;
  }
  check_ctx_t c = {report, data};
  sq_repo_config_t cfg;
  int rc = sq_repo_config_check(repo_dir, name, &cfg, check_report, &c, err);
  if (rc == SQ_EMODEL_UNKNOWN) {
    sq_error_set(err, SQ_EMODEL_UNKNOWN,
                 "no model named '%s' (built-ins: null, otsu; repository: %s)", name,
                 repo_dir && *repo_dir ? repo_dir : "none");
    if (report) report(err->msg, data);
    return SQ_EMODEL_UNKNOWN;
  }
  if (rc) return rc;
  /* model.json is valid: open it as the worker would, on the CPU (the graph against the file). */
  m = sq_model_open_device(name, repo_dir, "cpu", err);
  if (!m) {
    if (report) report(err->msg, data);
    return err && err->code ? err->code : SQ_EMODEL_LOAD;
  }
  sq_model_close(m);
  return 0;
}

void sq_model_close(sq_model_t *m) {
  if (!m) return;
  if (m->iface->close) m->iface->close(m);
  free(m);
}

const sq_model_info_t *sq_model_info(const sq_model_t *m) {
  return &m->info;
}

static int check_ctx(sq_model_t *m, int ctx, sq_error_t *err) {
  if (ctx < 0 || (uint32_t)ctx >= m->info.contexts)
    return sq_error_set(err, SQ_EINVAL, "model %s: context %d out of range (%u)", m->info.name, ctx,
                        m->info.contexts);
  return 0;
}

int sq_model_warmup(sq_model_t *m, int ctx, sq_error_t *err) {
  int rc = check_ctx(m, ctx, err);
  if (rc || !m->iface->warmup) return rc;
  return m->iface->warmup(m, ctx, err);
}

int sq_model_prepare(sq_model_t *m, const sq_image_t *img, const sq_postparams_t *pp, void **sample,
                     sq_error_t *err) {
  return sq_model_prepare_range(m, img, NULL, pp, sample, err);
}

int sq_model_prepare_range(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                           const sq_postparams_t *pp, void **sample, sq_error_t *err) {
  *sample = NULL;
  if (!img || !img->data || img->width == 0 || img->height == 0)
    return sq_error_set(err, SQ_EIMAGE_EMPTY, "model %s: empty image", m->info.name);
  if ((img->channels != 1 && img->channels != 3) ||
      (img->bytes_per_sample != 1 && img->bytes_per_sample != 2))
    return sq_error_set(err, SQ_EIMAGE_FORMAT, "model %s: %u channels of %u bytes not supported",
                        m->info.name, img->channels, img->bytes_per_sample);
  return m->iface->prepare(m, img, range, pp, sample, err);
}

int sq_model_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs, int *codes,
                 sq_error_t *err) {
  int rc = check_ctx(m, ctx, err);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) {
    outputs[i] = NULL;
    codes[i] = 0;
  }
  return m->iface->run(m, ctx, samples, n, outputs, codes, err);
}

int sq_model_finish(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                    uint32_t *width, uint32_t *height, sq_error_t *err) {
  *mask = NULL;
  *width = *height = 0;
  return m->iface->finish(m, output, pp, mask, width, height, err);
}

/* The executor thread's progress hook (sq_model_progress_set). */
static _Thread_local sq_model_progress_fn progress_fn;
static _Thread_local void *progress_data;

void sq_model_progress_set(sq_model_progress_fn fn, void *data) {
  progress_fn = fn;
  progress_data = data;
}

void sq_model_progress_report(size_t sample, uint32_t done, uint32_t total) {
  if (progress_fn) progress_fn(progress_data, sample, done, total);
}

void sq_model_sample_free(sq_model_t *m, void *sample) {
  if (sample) m->iface->sample_free(m, sample);
}

void sq_model_output_free(sq_model_t *m, void *output) {
  if (output) m->iface->output_free(m, output);
}

void sq_model_stats(sq_model_t *m, sq_model_stats_t *out) {
  memset(out, 0, sizeof *out);
  out->effective_max_batch = m->info.max_batch;
  if (m->iface->stats) m->iface->stats(m, out);
}

/* ---- postprocessing: a mask becomes what a result carries ---- */

/* Douglas-Peucker tolerance of the polygon outlines, in mask pixels. */
#define POLYGON_TOLERANCE 0.5f

void sq_model_result_free(sq_model_result_t *r) {
  if (!r) return;
  sq_polygons_free(r->polygons, r->npolygons);
  free(r->mask);
  memset(r, 0, sizeof *r);
}

int sq_result_from_mask(uint8_t *mask, uint32_t mw, uint32_t mh, uint32_t img_w, uint32_t img_h,
                        const sq_postparams_t *pp, int want_mask, sq_model_result_t *res,
                        sq_error_t *err) {
  memset(res, 0, sizeof *res);
  if (mw == 0 || mh == 0) {
    free(mask);
    return sq_error_set(err, SQ_EMODEL, "the model produced a mask of zero size");
  }
  float sx = img_w ? (float)img_w / (float)mw : 1.0f;
  float sy = img_h ? (float)img_h / (float)mh : 1.0f;
  int rc = sq_polygons_from_mask(mask, mw, mh, pp->min_area, POLYGON_TOLERANCE, sx, sy,
                                 &res->polygons, &res->npolygons);
  if (rc) {
    free(mask);
    memset(res, 0, sizeof *res);
    return sq_error_set(err, rc, "mask to polygons failed");
  }
  res->width = mw;
  res->height = mh;
  /* The result's mask is in original image pixels; a model mask of another size is not. */
  if (!want_mask || (img_w && mw != img_w) || (img_h && mh != img_h)) {
    free(mask);
    return 0;
  }
  if (!mask) {
    /* NULL means all zero; the result still carries the mask that was asked for. */
    mask = calloc((size_t)mw * mh, 1);
    if (!mask) {
      sq_model_result_free(res);
      return sq_error_set(err, SQ_ENOMEM, "out of memory for the result mask");
    }
  }
  res->mask = mask;
  return 0;
}

int sq_model_postprocess(sq_model_t *m, void *output, const sq_postparams_t *pp, int want_mask,
                         sq_model_result_t *res, sq_error_t *err) {
  memset(res, 0, sizeof *res);
  uint8_t *mask = NULL;
  uint32_t mw = 0, mh = 0;
  int rc = sq_model_finish(m, output, pp, &mask, &mw, &mh, err);
  if (rc) return rc;
  /* Every model's mask is at the original image's size (the image size is the mask's). */
  return sq_result_from_mask(mask, mw, mh, mw, mh, pp, want_mask, res, err);
}
