/* cuda_internal.h: the CUDA backend's private contract between cuda_backend.c (iface, contexts,
 * run, CUDA graphs), cuda_layout.c (the host-only plan of layouts, steps and arena), and the op
 * files (cuda_conv.c, cuda_pool.c, ...). One table, cuda_ops.c, lists the ops the backend claims
 * and which of them run in fp16; the tests (tests/gpu/) read the same table. */
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
  int precision;          /* SQ_PRECISION_* for plans bound from now on (sq_backend_configure) */
  int graphs;             /* replay captured CUDA graphs (SEGQ_CUDA_GRAPHS=0 turns it off) */
} sq_cuda_backend_t;

/* The layouts a tensor can have on the device, and the mode a node runs in. */
enum {
  SQ_CUDA_F32 = 0, /* NCHW float, as the engine has it */
  SQ_CUDA_F16 = 1  /* NHWC half, channels padded to a multiple of 8 (4-D float tensors only) */
};
#define SQ_CUDA_CPAD(c) ((((c) + 7) / 8) * 8)

/* A captured graph of one (plan, kind of run) on one context. */
typedef struct {
  const void *plan; /* the bound plan (cuda_plan_t) */
  int key;          /* kind of run: 0 sq_engine_run; image runs: 1 + in_bytes | mask/prob bits */
  unsigned gen;     /* the context's buffer generation it was captured with */
  int runs;         /* eager runs seen with this key and generation */
  int failed;       /* capture failed once: this key runs eagerly for good */
  cudaGraphExec_t exec;
} sq_cuda_graph_t;

#define SQ_CUDA_MAX_GRAPHS 64

/* One executor context: everything a run touches, bound to one stream. Device buffers are
 * grown, never shrunk; every growth bumps `gen` so graphs captured on the old addresses are
 * captured again. */
typedef struct {
  sq_cuda_backend_t *be;
  cudaStream_t stream;
  cudnnHandle_t dnn;
  cublasHandle_t blas;
  uint8_t *arena; /* activations, laid out by cuda_layout.c */
  size_t arena_bytes;
  void *ws; /* cuDNN/cuBLAS workspace, grown to the largest a bound plan needs */
  size_t ws_bytes;
  uint8_t *din; /* the plan's graph inputs on the device */
  size_t din_bytes;
  uint8_t *dio; /* image I/O on the device: raw input, parameters, mask, probabilities */
  size_t dio_bytes;
  uint8_t *pinned; /* host staging: inputs, then outputs (image runs: raw, params, mask, prob) */
  size_t pinned_bytes;
  unsigned gen;
  sq_cuda_graph_t graphs[SQ_CUDA_MAX_GRAPHS];
  int ngraphs;
  /* copies from pinned memory to the caller's buffers that sync still has to do */
  struct {
    void *dst;
    const void *src;
    size_t bytes;
  } pend[SQ_MAX_NODE_IO];
  int npend;
} sq_cuda_ctx_t;

/* A node fused with its consumer: a Conv whose output only feeds an Add (the residual sum)
 * writes act(conv(x) + bias + z) straight into the Add's output (cuDNN's z input). */
typedef struct {
  int z;      /* the Add's other input is passed as in[n->nin] at forward */
  int act;    /* the Add's fused activation (sq_act_t: NONE or RELU) */
  int *fused; /* prepare sets 1 when it does the Add (else the Add runs itself) */
} sq_cuda_fuse_t;

/* An op as the CUDA backend runs it. Views: host views (shapes; data set only for constants)
 * at check/prepare, device views (data = device pointers) at forward. mode: SQ_CUDA_F32 or
 * SQ_CUDA_F16 (then every activation input/output is in the NHWC half layout; constants are
 * the engine's float32 ones, converted by prepare where needed). */
typedef struct {
  /* host only, no CUDA call: SQ_EUNSUPPORTED (naming the node) when the GPU cannot run it */
  int (*check)(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, sq_error_t *err);
  /* host only: 0 when the node can run in fp16 NHWC (NULL: fp32 only) */
  int (*check16)(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out);
  /* optional: descriptors, uploads, algorithm choice (dev: device views, constants set); fuse
   * is non-NULL only for a Conv chosen for the residual fusion */
  int (*prepare)(sq_cuda_backend_t *be, const sq_node_t *n, int mode, const sq_view_t *in,
                 const sq_view_t *dev, const sq_view_t *out, const sq_cuda_fuse_t *fuse,
                 void **state, size_t *ws_bytes, sq_error_t *err);
  int (*forward)(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, int mode, const sq_view_t *in,
                 const sq_view_t *out, sq_error_t *err);
  void (*release)(void *state);
} sq_cuda_op_t;

/* cuda_ops.c: the table (NULL: not on the GPU) */
const sq_cuda_op_t *sq_cuda_op(int op);

/* ---- cuda_layout.c: how a plan lives on the device (host only, no CUDA call) ----
 * Buffers are tensors in one layout; steps are the plan's nodes in order, plus conversions
 * where a tensor is read in the other layout, plus conversions of fp16 graph outputs to fp32 at
 * the end. fp32 plans keep every node in fp32 (no conversions). fp16 plans run a node in fp16
 * when its op's check16 accepts it, else in fp32. The arena is laid out by liveness over the
 * steps; the engine's views/in-place groups share a block when their layouts agree. */
enum { SQ_CUDA_STEP_NODE = 0, SQ_CUDA_STEP_CONVERT };
enum { SQ_CUDA_BUF_ARENA = 0, SQ_CUDA_BUF_INPUT, SQ_CUDA_BUF_CONST };

typedef struct {
  int tensor, layout, where; /* SQ_CUDA_F32/F16; SQ_CUDA_BUF_* */
  int64_t cpad;              /* F16: padded channels */
  size_t bytes, offset;      /* offset: in the arena (ARENA) */
  int first, last;           /* steps that write/read it (lifetime) */
  int group;                 /* the buffer whose block it shares (itself if none) */
} sq_cuda_buf_t;

typedef struct {
  int kind;     /* SQ_CUDA_STEP_* */
  int pos;      /* NODE: index in p->order */
  int mode;     /* NODE: SQ_CUDA_F32/F16 */
  int src, dst; /* CONVERT: buffers */
  int fuse_add; /* NODE (Conv): the step of the Add it may fuse, or -1 */
  int fused_by; /* NODE (Add): the step of the Conv that may do it, or -1 */
  int zbuf;     /* NODE (Conv, fused): the Add's other input */
  int ybuf;     /* NODE (Conv, fused): the Add's output (what the Conv then writes) */
  int act;      /* NODE (Conv, fused): the Add's activation */
} sq_cuda_step_t;

typedef struct {
  int precision; /* SQ_PRECISION_* */
  sq_cuda_step_t *steps;
  int nsteps;
  sq_cuda_buf_t *bufs;
  int nbufs;
  int *buf_of;  /* [ntensors * 2]: buffer of tensor t in layout l, or -1 */
  int *out_buf; /* per graph output: its fp32 buffer */
  size_t arena_bytes;
  int nf16, nconvert, nfused; /* fp16 nodes, conversion steps, residual fusions (tests, logs) */
} sq_cuda_layout_t;

/* Plans p's layouts and arena for `precision`. 0 or SQ_ENOMEM. Free with sq_cuda_layout_free. */
int sq_cuda_layout_plan(const sq_engine_plan_t *p, int precision, sq_cuda_layout_t *out,
                        sq_error_t *err);
void sq_cuda_layout_free(sq_cuda_layout_t *l);
/* Host views of a node's tensors with shapes; data only for constants (host memory). */
void sq_cuda_host_views(const sq_engine_plan_t *p, const sq_node_t *n, sq_view_t *in,
                        sq_view_t *out);

/* error mapping (cuda_backend.c): 0 on success, else SQ_EOOM_DEVICE / SQ_EDEVICE with err */
int sq_cuda_check(cudaError_t e, sq_error_t *err, const char *what);
int sq_cudnn_check(cudnnStatus_t s, sq_error_t *err, const char *what);
int sq_cublas_check(cublasStatus_t s, sq_error_t *err, const char *what);
/* device copy of `bytes` from host (synchronous; load time). */
int sq_cuda_upload(const void *host, size_t bytes, void **dev, sq_error_t *err);
/* 4-D descriptor of a view in a mode: F32 NCHW float (rank 1..4 padded with leading 1s; 3-D as
 * n,c,1,w), F16 NHWC half with the channels padded. */
int sq_cuda_desc4(cudnnTensorDescriptor_t *d, const sq_view_t *v, sq_error_t *err);
int sq_cuda_desc4_mode(cudnnTensorDescriptor_t *d, const sq_view_t *v, int mode, sq_error_t *err);
/* N*H*W*Cp of a 4-D view in the F16 layout (its element count there). */
int64_t sq_cuda_count16(const sq_view_t *v);

/* ---- one op family per file ---- */
#define SQ_CUDA_PREPARE_ARGS                                                                      \
  sq_cuda_backend_t *be, const sq_node_t *n, int mode, const sq_view_t *in, const sq_view_t *dev, \
      const sq_view_t *out, const sq_cuda_fuse_t *fuse, void **state, size_t *ws_bytes,           \
      sq_error_t *err
#define SQ_CUDA_FORWARD_ARGS                                                        \
  sq_cuda_ctx_t *c, const sq_node_t *n, void *state, int mode, const sq_view_t *in, \
      const sq_view_t *out, sq_error_t *err
#define SQ_CUDA_CHECK_ARGS \
  const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, sq_error_t *err
#define SQ_CUDA_CHECK16_ARGS const sq_node_t *n, const sq_view_t *in, const sq_view_t *out

int sq_cuda_conv_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_conv_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_conv_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_conv_forward(SQ_CUDA_FORWARD_ARGS);
void sq_cuda_conv_release(void *state);

int sq_cuda_pool_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_pool_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_pool_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_pool_forward(SQ_CUDA_FORWARD_ARGS);
void sq_cuda_pool_release(void *state);

int sq_cuda_reduce_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_reduce_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_reduce_forward(SQ_CUDA_FORWARD_ARGS);
void sq_cuda_reduce_release(void *state);

int sq_cuda_eltwise_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_eltwise_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_eltwise_forward(SQ_CUDA_FORWARD_ARGS);
int sq_cuda_bn_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_bn_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_bn_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_bn_forward(SQ_CUDA_FORWARD_ARGS);
void sq_cuda_free_release(void *state); /* cudaFree of a single device block */
void sq_cuda_host_release(void *state); /* free() of a host block */
int sq_cuda_clip_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_cast_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_cast_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_cast_forward(SQ_CUDA_FORWARD_ARGS);

int sq_cuda_resize_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_resize_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_resize_prepare(SQ_CUDA_PREPARE_ARGS);
int sq_cuda_resize_forward(SQ_CUDA_FORWARD_ARGS);

int sq_cuda_concat_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_concat_check16(SQ_CUDA_CHECK16_ARGS);
int sq_cuda_concat_forward(SQ_CUDA_FORWARD_ARGS);
int sq_cuda_view_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_view_forward(SQ_CUDA_FORWARD_ARGS);

int sq_cuda_gemm_check(SQ_CUDA_CHECK_ARGS);
int sq_cuda_gemm_forward(SQ_CUDA_FORWARD_ARGS);

#endif
