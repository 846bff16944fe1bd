/* gpu: the sq_model_* entry points. Opening asks each loader in turn (built-ins first, then the
 * model repository once a loader for it is added); everything else dispatches through the
 * model's iface. Threads: as noted in gpu.h for each function. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/model_internal.h"

/* Order matters: a built-in name shadows a repository model of the same name. The ONNX model
 * repository plugs in here as one more loader (e.g. sq_model_onnx_open reading
 * <repo_dir>/<name>/model.json + model.onnx), returning SQ_EMODEL_UNKNOWN when the folder does
 * not exist and SQ_EMODEL_LOAD when it exists but cannot be loaded. */
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

sq_model_t *sq_model_open(const char *name, const char *repo_dir, sq_error_t *err) {
  return sq_model_open_device(name, repo_dir, "cpu", err);
}

sq_model_t *sq_model_open_device(const char *name, const char *repo_dir, const char *device,
                                 sq_error_t *err) {
  if (!name || !*name) {
    sq_error_set(err, SQ_EINVAL, "model name is empty");
    return NULL;
  }
  for (size_t i = 0; i < sizeof(model_loaders) / sizeof(model_loaders[0]); i++) {
    sq_error_t lerr = {0};
    sq_model_t *m = model_loaders[i](name, repo_dir, device, &lerr);
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

void sq_model_close(sq_model_t *m) {
  if (!m) return;
  if (m->iface->close) m->iface->close(m);
  free(m);
}

const sq_model_info_t *sq_model_info(const sq_model_t *m) {
  return &m->info;
}

int sq_model_prepare(sq_model_t *m, const sq_image_t *img, void **sample, sq_error_t *err) {
  *sample = NULL;
  if (!img || !img->data || img->width == 0 || img->height == 0)
    return sq_error_set(err, SQ_EIMAGE_EMPTY, "model %s: empty image", m->info.name);
  if ((img->channels != 1 && img->channels != 3) ||
      (img->bytes_per_sample != 1 && img->bytes_per_sample != 2))
    return sq_error_set(err, SQ_EIMAGE_FORMAT, "model %s: %u channels of %u bytes not supported",
                        m->info.name, img->channels, img->bytes_per_sample);
  return m->iface->prepare(m, img, sample, err);
}

int sq_model_run(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs,
                 sq_error_t *err) {
  if (ctx < 0 || (uint32_t)ctx >= m->info.contexts)
    return sq_error_set(err, SQ_EINVAL, "model %s: context %d out of range (%u)", m->info.name, ctx,
                        m->info.contexts);
  for (size_t i = 0; i < n; i++) outputs[i] = NULL;
  return m->iface->run(m, ctx, samples, n, outputs, err);
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
