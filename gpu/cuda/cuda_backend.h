/* cuda_backend.h: what the engine's backend registry (gpu/onnx/backend.c) and the GPU tests
 * call in the CUDA backend. Plain C, no CUDA headers: included where SEGQ_HAVE_CUDA is set. */
#ifndef SQ_CUDA_BACKEND_H
#define SQ_CUDA_BACKEND_H

#include "engine.h"

/* Usable CUDA devices: 0 when the driver/runtime reports none or fails (never an error);
 * *why (optional) gets the runtime's reason when 0. */
int sq_cuda_device_count(const char **why);
/* The `cuda:<device>` backend; SQ_EDEVICE/SQ_EOOM_DEVICE/SQ_EINVAL with err. Caller owns. */
sq_backend_t *sq_cuda_backend_new(int device, sq_error_t *err);
/* Host-only check (no GPU needed) that every node of the plan runs on the CUDA backend;
 * SQ_EUNSUPPORTED listing every node that does not. */
int sq_cuda_plan_check(const sq_engine_plan_t *p, sq_error_t *err);
/* 1 when the CUDA backend has a kernel for op (an sq_op_t), for the op-by-op test. */
int sq_cuda_op_claimed(int op);

#endif
