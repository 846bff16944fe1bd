/* cuda_backend.h: what the engine's backend registry (gpu/onnx/backend.c) and the GPU tests
 * call in the CUDA backend. Plain C, no CUDA headers: included where SEGQ_HAVE_CUDA is set. */
#ifndef SQ_CUDA_BACKEND_H
#define SQ_CUDA_BACKEND_H

#include <stdint.h>

#include "engine.h"

/* Usable CUDA devices: 0 when the driver/runtime reports none or fails (never an error);
 * *why (optional) gets the runtime's reason when 0. */
int sq_cuda_device_count(const char **why);
/* The `cuda:<device>` backend; SQ_EDEVICE/SQ_EOOM_DEVICE/SQ_EINVAL with err. Caller owns. */
sq_backend_t *sq_cuda_backend_new(int device, sq_error_t *err);
/* Host-only check (no GPU needed) that every node of the plan runs on the CUDA backend;
 * SQ_EUNSUPPORTED listing every node that does not. */
int sq_cuda_plan_check(const sq_engine_plan_t *p, sq_error_t *err);
/* 1 when the CUDA backend has a kernel for op (an sq_op_t), for the op-by-op test; ..._fp16:
 * it also runs in fp16 NHWC. */
int sq_cuda_op_claimed(int op);
int sq_cuda_op_fp16(int op);

/* Host-only (no GPU needed): how the plan would live on the device in `precision`
 * (SQ_PRECISION_*): steps, fp16 nodes, layout conversions, Conv+Add residual fusions planned,
 * arena bytes. For tests and logs; cuda_layout.c decides. */
typedef struct {
  int steps, fp16_nodes, conversions, fusions;
  size_t arena_bytes;
  int overlaps; /* pairs of arena buffers live at once in overlapping bytes (must be 0) */
} sq_cuda_layout_info_t;
int sq_cuda_layout_info(const sq_engine_plan_t *p, int precision, sq_cuda_layout_info_t *out,
                        sq_error_t *err);
/* Host float <-> IEEE half bit patterns (round to nearest even), as the device converts. */
uint16_t sq_cuda_f32_to_f16(float x);
float sq_cuda_f16_to_f32(uint16_t h);
/* A conv filter [K][C][kh][kw] float -> [Kp][kh][kw][Cp] half, zero padded (the fp16 binding). */
void sq_cuda_filter_nhwc16(const float *w, int64_t k, int64_t c, int64_t kh, int64_t kw, int64_t kp,
                           int64_t cp, uint16_t *out);

#endif
