/* gpu: what sits behind sq_model_t. Each model kind (built-in null/otsu, ONNX) fills an
 * iface of function pointers, ggml-backend style; model.c only dispatches. A kind plugs in by
 * adding its open function to the loader table in model.c. Private to gpu/. */
#ifndef SQ_GPU_MODEL_INTERNAL_H
#define SQ_GPU_MODEL_INTERNAL_H

#include "gpu/gpu.h"

typedef struct {
  const char *kind; /* "builtin", "onnx", ... for logs */
  /* range: the job's input range policy, NULL for the model's own (see sq_model_prepare_range);
   * pp: the job's postprocessing (see sq_model_prepare), NULL to keep probabilities. */
  int (*prepare)(sq_model_t *m, const sq_image_t *img, const sq_input_range_t *range,
                 const sq_postparams_t *pp, void **sample, sq_error_t *err);
  /* codes: never NULL here (model.c supplies its own); see sq_model_run */
  int (*run)(sq_model_t *m, int ctx, void *const *samples, size_t n, void **outputs, int *codes,
             sq_error_t *err);
  int (*finish)(sq_model_t *m, void *output, const sq_postparams_t *pp, uint8_t **mask,
                uint32_t *width, uint32_t *height, sq_error_t *err);
  void (*sample_free)(sq_model_t *m, void *sample);
  void (*output_free)(sq_model_t *m, void *output);
  void (*close)(sq_model_t *m); /* frees context, not m itself */
  /* Optional (ensembles): like finish, but the foreground probability map (width*height
   * floats in [0,1], malloc'd) before thresholding. NULL: ensemble.c thresholds with finish
   * and uses the mask as 0/1 probabilities. */
  int (*finish_prob)(sq_model_t *m, void *output, float **prob, uint32_t *width, uint32_t *height,
                     sq_error_t *err);
  /* Optional: warm-up of one context (NULL: nothing to warm); memory state (NULL: zeros). */
  int (*warmup)(sq_model_t *m, int ctx, sq_error_t *err);
  void (*stats)(sq_model_t *m, sq_model_stats_t *out);
} sq_model_iface_t;

struct sq_model {
  const sq_model_iface_t *iface;
  void *context; /* the kind's own state; NULL for the stateless built-ins */
  sq_model_info_t info;
};

/* A loader tries to open `name`. Returns a model, or NULL with err->code set: SQ_EMODEL_UNKNOWN
 * means "not mine, ask the next loader"; any other code stops the search. */
typedef sq_model_t *(*sq_model_loader_fn)(const char *name, const char *repo_dir,
                                          const sq_model_options_t *opt, sq_error_t *err);

sq_model_t *sq_model_builtin_open(const char *name, const char *repo_dir,
                                  const sq_model_options_t *opt, sq_error_t *err);
/* The model repository: <repo_dir>/<name>/model.json + model.onnx on the engine (model_onnx.c).
 * SQ_EMODEL_UNKNOWN when there is no folder <repo_dir>/<name>. */
sq_model_t *sq_model_onnx_open(const char *name, const char *repo_dir,
                               const sq_model_options_t *opt, sq_error_t *err);

/* Allocates a zeroed sq_model_t with iface and info.name set; NULL on OOM (err set). */
sq_model_t *sq_model_alloc(const sq_model_iface_t *iface, const char *name, sq_error_t *err);

#endif
