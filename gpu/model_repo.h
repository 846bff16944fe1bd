/* gpu: the model repository's `model.json` (docs/models.md), parsed and validated into a plain
 * struct that the ONNX model kind (model_onnx.c) uses. Private to gpu/ (and its tests). */
#ifndef SQ_GPU_MODEL_REPO_H
#define SQ_GPU_MODEL_REPO_H

#include <stdint.h>

#include "common/common.h"

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
  float scale, scale_16bit;
  float mean[3], std[3]; /* per model input channel */
  int mode_resize;       /* large_images.mode: 0 "tile", 1 "resize" */
  uint32_t overlap;      /* tile mode */
  int pad_zero;          /* 0: "edge", 1: "zero" */
  char output_name[128]; /* "" = the graph's first output */
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
 * the next loader may be asked; SQ_EMODEL_LOAD with a message naming the file and the field's
 * path ("input.channels: expected 1 or 3") for everything else: a missing model.json or ONNX
 * file, bad JSON (with line:column), a missing required field, a field of the wrong type or
 * value, an unknown field inside a known object. Unknown top-level fields are ignored (logged
 * at debug level) as the doc allows. Any thread. */
int sq_repo_config_load(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                        sq_error_t *err);

#endif
