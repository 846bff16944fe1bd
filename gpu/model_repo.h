/* gpu: the model repository's `model.json` (docs/models.md), parsed and validated into a plain
 * struct that the ONNX model kind (model_onnx.c) uses. Private to gpu/ (and its tests). */
#ifndef SQ_GPU_MODEL_REPO_H
#define SQ_GPU_MODEL_REPO_H

#include <stdint.h>

#include "common/common.h"
#include "gpu/gpu.h"

#define SQ_REPO_PATH_MAX 1024

/* output.kind: "sigmoid" (a probability), "logits_sigmoid", "softmax" (class scores; the
 * foreground probability is 1 - softmax at output.channel, the background class) */
typedef enum {
  SQ_REPO_OUT_SIGMOID = 0,
  SQ_REPO_OUT_LOGITS_SIGMOID,
  SQ_REPO_OUT_SOFTMAX
} sq_repo_output_kind_t;

typedef struct {
  char dir[SQ_REPO_PATH_MAX];       /* <repo_dir>/<name> */
  char json_path[SQ_REPO_PATH_MAX]; /* .../model.json */
  char onnx_path[SQ_REPO_PATH_MAX]; /* .../<file> */
  char input_name[128];             /* "" = the graph's first input */
  uint32_t channels;                /* 1 or 3 */
  uint32_t size_h, size_w;          /* input.size */
  sq_input_range_t range;           /* normalization.range (scale, scale_16bit for mode fixed) */
  float mean[3], std[3];            /* per model input channel */
  int mode_resize;                  /* large_images.mode: 0 "tile", 1 "resize" */
  uint32_t overlap;                 /* tile mode */
  int pad_zero;                     /* 0: "edge", 1: "zero" */
  char output_name[128];            /* "" = the graph's first output */
  sq_repo_output_kind_t output_kind;
  uint32_t output_channel;
  float threshold;
  uint32_t min_area;
  uint32_t optimal_batch, max_batch;
  uint64_t max_delay_us;
  uint32_t contexts;
  int fp16; /* precision: 1 "fp16", 0 "fp32", -1 not given (the model's file decides: fp16 for
             * an fp16 export); the CPU backend computes in fp32 anyway */
} sq_repo_config_t;

/* Reads <repo_dir>/<name>/model.json into cfg with the documented defaults. Returns
 * SQ_EMODEL_UNKNOWN when the folder <repo_dir>/<name> does not exist (or repo_dir is empty), so
 * the next loader may be asked; otherwise every problem of the file is found, not only the
 * first: each goes to report ("<file>: <field path>: <what>", e.g. "input.channels: expected 1
 * or 3"; report NULL: each is logged at error level when there are several) and err holds the
 * first (one problem) or a count and as many as fit. Problems: a missing model.json or ONNX
 * file, bad JSON (with line:column), a missing required field, a field of the wrong type or
 * value, an unknown field at any level (a misspelt "tresholdd" is an error, not a default). The
 * code is the first problem's (SQ_EMODEL_LOAD; SQ_EUNSUPPORTED for a reserved feature). Any
 * thread. */
typedef void (*sq_repo_problem_fn)(const char *problem, void *data);
int sq_repo_config_check(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                         sq_repo_problem_fn report, void *data, sq_error_t *err);
/* sq_repo_config_check with report NULL. */
int sq_repo_config_load(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                        sq_error_t *err);

#endif
