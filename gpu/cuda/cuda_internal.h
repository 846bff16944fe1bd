/* cuda_internal.h: the CUDA backend's private contract between cuda_backend.c (iface, contexts,
 * plan binding, run) and the op files (cuda_conv.c, cuda_pool.c, ...). One table, cuda_ops.c,
 * lists the ops the backend claims; the test (tests/gpu/test_gpu_ops.c) reads the same table. */
#ifndef SQ_CUDA_INTERNAL_H
#define SQ_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <pthread.h>

#include "cuda_backend.h"
#include "cuda_kernels.h"
#include "engine_internal.h"

typedef struct {
  int device;
  char name[32];        /* "cuda:N" */
  char gpu_name[256];   /* cudaDeviceProp.name */
  pthread_mutex_t lock; /* guards the load-time handle (plans binding concurrently) */
  cudaStream_t load_stream;
  cudnnHandle_t load_dnn;
  size_t workspace_limit; /* bytes a conv algorithm may ask for */
} sq_cuda_backend_t;

/* One executor context: everything a run touches, bound to one stream. */
typedef struct {
  sq_cuda_backend_t *be;
  cudaStream_t stream;
  cudnnHandle_t dnn;
  cublasHandle_t blas;
  uint8_t *arena; /* activations, laid out by the engine's planner */
  void *ws;       /* cuDNN workspace, grown to the largest a bound plan needs */
  size_t ws_bytes;
  uint8_t *din; /* the plan's graph inputs on the device */
  size_t din_bytes;
  uint8_t *pinned; /* host staging: inputs, then outputs */
  size_t pinned_bytes;
  /* outputs waiting for sync to copy them from pinned memory to the caller's buffers */
  const sq_engine_plan_t *pend_plan;
  void *pend_state;
  sq_engine_tensor_t *pend_out;
} sq_cuda_ctx_t;

/* An op as the CUDA backend runs it. Views: host views (shapes; data set only for constants)
 * at check/prepare, device views (data = device pointers) at forward. */
typedef struct {
  /* host only, no CUDA call: SQ_EUNSUPPORTED (naming the node) when the GPU cannot run it */
  int (*check)(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, sq_error_t *err);
  /* optional: descriptors, uploads, algorithm choice (dev: device views, constants set) */
  int (*prepare)(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                 const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                 sq_error_t *err);
  int (*forward)(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                 const sq_view_t *out, sq_error_t *err);
  void (*release)(void *state);
} sq_cuda_op_t;

/* cuda_ops.c: the table (NULL: not on the GPU) */
const sq_cuda_op_t *sq_cuda_op(int op);

/* error mapping (cuda_backend.c): 0 on success, else SQ_EOOM_DEVICE / SQ_EDEVICE with err */
int sq_cuda_check(cudaError_t e, sq_error_t *err, const char *what);
int sq_cudnn_check(cudnnStatus_t s, sq_error_t *err, const char *what);
int sq_cublas_check(cublasStatus_t s, sq_error_t *err, const char *what);
/* device copy of `bytes` from host (synchronous; load time). */
int sq_cuda_upload(const void *host, size_t bytes, void **dev, sq_error_t *err);
/* 4-D NCHW float descriptor of a view (rank 1..4 padded with leading 1s; 3-D as n,c,1,w). */
int sq_cuda_desc4(cudnnTensorDescriptor_t *d, const sq_view_t *v, sq_error_t *err);

/* one op family per file */
int sq_cuda_conv_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err);
int sq_cuda_conv_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                         const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                         sq_error_t *err);
int sq_cuda_conv_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                         const sq_view_t *out, sq_error_t *err);
void sq_cuda_conv_release(void *state);

int sq_cuda_pool_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err);
int sq_cuda_pool_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                         const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                         sq_error_t *err);
int sq_cuda_pool_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                         const sq_view_t *out, sq_error_t *err);
void sq_cuda_pool_release(void *state);

int sq_cuda_reduce_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err);
int sq_cuda_reduce_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                           const sq_view_t *dev, const sq_view_t *out, void **state,
                           size_t *ws_bytes, sq_error_t *err);
int sq_cuda_reduce_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                           const sq_view_t *out, sq_error_t *err);
void sq_cuda_reduce_release(void *state);

int sq_cuda_eltwise_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                          sq_error_t *err);
int sq_cuda_eltwise_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                            const sq_view_t *out, sq_error_t *err);
int sq_cuda_bn_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                     sq_error_t *err);
int sq_cuda_bn_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                       const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                       sq_error_t *err);
int sq_cuda_bn_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                       const sq_view_t *out, sq_error_t *err);
void sq_cuda_free_release(void *state); /* cudaFree of a single device block */
void sq_cuda_host_release(void *state); /* free() of a host block */
int sq_cuda_clip_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                         const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                         sq_error_t *err);

int sq_cuda_resize_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err);
int sq_cuda_resize_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                           const sq_view_t *dev, const sq_view_t *out, void **state,
                           size_t *ws_bytes, sq_error_t *err);
int sq_cuda_resize_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                           const sq_view_t *out, sq_error_t *err);

int sq_cuda_concat_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err);
int sq_cuda_concat_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                           const sq_view_t *out, sq_error_t *err);
int sq_cuda_view_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err);
int sq_cuda_view_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                         const sq_view_t *out, sq_error_t *err);

int sq_cuda_gemm_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err);
int sq_cuda_gemm_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                         const sq_view_t *out, sq_error_t *err);

#endif
