/* gpu_common.h: helpers shared by the GPU tests: random inputs, running one plan on a backend
 * with guard regions around every output, and the model list. Header-only (static). */
#ifndef SQ_TEST_GPU_COMMON_H
#define SQ_TEST_GPU_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

#define GUARD_BYTES 256
#define GUARD_BYTE 0xA5

/* The shipped and test models every backend must run (paths under SEGQ_SOURCE_DIR): fp32
 * exports and the fp16 exports (torch's .half(), onnxconverter's keep_io_types, fp16 weight
 * storage), which the engine loads as float32 holding float16 values. */
static const char *const gpu_test_models[] = {
    "models/cellseg-unet/model.onnx",         "tests/data/onnx/unet.onnx",
    "tests/data/onnx/hrnet_block.onnx",       "tests/data/onnx/resunet_cbam.onnx",
    "tests/data/onnx/resunet_cbam_fp16.onnx", "tests/data/onnx/unet_fp16io.onnx",
    "tests/data/onnx/resunet_cbam_fp16w.onnx"};

static inline void model_path(const char *rel, char *out, size_t n) {
  const char *src = getenv("SEGQ_SOURCE_DIR");
  snprintf(out, n, "%s/%s", src && *src ? src : ".", rel);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline float rand_uniform(void) { /* [-1, 1), reproducible */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Outputs of one run: each buffer has GUARD_BYTES of GUARD_BYTE on both sides. */
typedef struct {
  int n;
  sq_engine_tensor_t t[SQ_MAX_NODE_IO];
  uint8_t *raw[SQ_MAX_NODE_IO];
} run_out_t;

static inline void run_out_free(run_out_t *o) {
  for (int i = 0; i < o->n; i++) free(o->raw[i]);
  o->n = 0;
}

static inline int guards_intact(const run_out_t *o, int i) {
  const uint8_t *r = o->raw[i];
  size_t bytes = o->t[i].bytes;
  for (size_t k = 0; k < GUARD_BYTES; k++)
    if (r[k] != GUARD_BYTE || r[GUARD_BYTES + bytes + k] != GUARD_BYTE) return 0;
  return 1;
}

/* Output buffers of p in out, guarded. */
static inline int out_alloc(sq_engine_plan_t *p, run_out_t *out, sq_error_t *err) {
  int nout = sq_engine_plan_output_count(p);
  if (nout > SQ_MAX_NODE_IO) return sq_error_set(err, SQ_EINVAL, "too many outputs");
  out->n = nout;
  for (int i = 0; i < nout; i++) {
    sq_engine_plan_output_info(p, i, &out->t[i]);
    out->raw[i] = malloc(out->t[i].bytes + 2 * GUARD_BYTES);
    memset(out->raw[i], GUARD_BYTE, out->t[i].bytes + 2 * GUARD_BYTES);
    out->t[i].data = out->raw[i] + GUARD_BYTES;
  }
  return 0;
}

/* Runs plan p on an existing context (several runs on one context: graph capture, replay). */
static inline int run_plan_ctx(sq_engine_plan_t *p, sq_backend_ctx_t *ctx,
                               const sq_engine_tensor_t *in, int nin, run_out_t *out,
                               sq_error_t *err) {
  if (!out->n) {
    int rc = out_alloc(p, out, err);
    if (rc) return rc;
  }
  return sq_engine_run(p, ctx, in, nin, out->t, out->n, err);
}

/* Runs plan p on backend b with inputs (float or int data prepared by the caller); returns
 * 0 or the engine's error code (err set). out->t[i].data points inside out->raw[i]. */
static inline int run_plan(sq_engine_plan_t *p, sq_backend_t *b, const sq_engine_tensor_t *in,
                           int nin, run_out_t *out, sq_error_t *err) {
  int rc = out_alloc(p, out, err);
  if (rc) return rc;
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(b, sq_engine_arena_bytes(p), err);
  if (!ctx) return err->code ? err->code : SQ_EINTERNAL;
  rc = sq_engine_run(p, ctx, in, nin, out->t, out->n, err);
  sq_backend_ctx_free(ctx);
  return rc;
}

/* Random inputs for every unbound plan input (floats in [-1, 1)); free with free_inputs. */
static inline int make_inputs(sq_engine_plan_t *p, sq_engine_tensor_t *in) {
  int nin = sq_engine_plan_input_count(p);
  for (int i = 0; i < nin; i++) {
    sq_engine_plan_input_info(p, i, &in[i]);
    in[i].data = malloc(in[i].bytes ? in[i].bytes : 1);
    if (in[i].dtype == SQ_DT_FLOAT)
      for (size_t k = 0; k < in[i].bytes / 4; k++) ((float *)in[i].data)[k] = rand_uniform();
    else
      memset(in[i].data, 0, in[i].bytes);
  }
  return nin;
}

static inline void free_inputs(sq_engine_tensor_t *in, int n) {
  for (int i = 0; i < n; i++) free(in[i].data);
}

#endif
