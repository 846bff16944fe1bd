/* cuda_ops.c: the CUDA backend's implementation of each op, indexed by the engine's sq_op_t and
 * built from ops.def's cuda column (the one op list). A family says how the op runs in fp32 NCHW
 * and, through check16, whether it also runs in fp16 NHWC. An op whose column is NONE (or whose
 * check refuses the node's attributes/types) is reported unsupported when a plan binds, naming
 * every such node; tests/gpu/test_gpu_ops.c walks this same table. Host data only, no thread
 * state. */
#include "cuda_internal.h"

/* { check, check16 (NULL: fp32 only), prepare, forward, release } */
#define CONV                                                                              \
  {                                                                                       \
    sq_cuda_conv_check, sq_cuda_conv_check16, sq_cuda_conv_prepare, sq_cuda_conv_forward, \
        sq_cuda_conv_release                                                              \
  }
#define POOL                                                                              \
  {                                                                                       \
    sq_cuda_pool_check, sq_cuda_pool_check16, sq_cuda_pool_prepare, sq_cuda_pool_forward, \
        sq_cuda_pool_release                                                              \
  }
#define REDUCE                                                                  \
  {                                                                             \
    sq_cuda_reduce_check, NULL, sq_cuda_reduce_prepare, sq_cuda_reduce_forward, \
        sq_cuda_reduce_release                                                  \
  }
#define ELTWISE \
  { sq_cuda_eltwise_check, sq_cuda_eltwise_check16, NULL, sq_cuda_eltwise_forward, NULL }
#define VIEW \
  { sq_cuda_view_check, NULL, NULL, sq_cuda_view_forward, NULL }
#define CLIP                                                                                       \
  {                                                                                                \
    sq_cuda_eltwise_check, sq_cuda_eltwise_check16, sq_cuda_clip_prepare, sq_cuda_eltwise_forward, \
        sq_cuda_host_release                                                                       \
  }
#define BN                                                                        \
  {                                                                               \
    sq_cuda_bn_check, sq_cuda_bn_check16, sq_cuda_bn_prepare, sq_cuda_bn_forward, \
        sq_cuda_free_release                                                      \
  }
#define RESIZE                                                                                    \
  {                                                                                               \
    sq_cuda_resize_check, sq_cuda_resize_check16, sq_cuda_resize_prepare, sq_cuda_resize_forward, \
        sq_cuda_free_release                                                                      \
  }
#define CONCAT \
  { sq_cuda_concat_check, sq_cuda_concat_check16, NULL, sq_cuda_concat_forward, NULL }
#define GEMM \
  { sq_cuda_gemm_check, NULL, NULL, sq_cuda_gemm_forward, NULL }
/* float <-> float16 value casts (fp16 exports' Cast nodes) */
#define CAST \
  { sq_cuda_cast_check, sq_cuda_cast_check16, NULL, sq_cuda_cast_forward, NULL }
#define NONE \
  { NULL, NULL, NULL, NULL, NULL }

/* ops.def's cuda column names the family of each op */
static const sq_cuda_op_t ops[SQ_OP_COUNT] = {
#define SQ_OP(name, kernel, shape, static_inputs, props, act, cpu, cuda) [SQ_OP_##name] = cuda,
#define SQ_OP_TODO(name, owner)
#include "../onnx/ops.def"
#undef SQ_OP
#undef SQ_OP_TODO
};

const sq_cuda_op_t *sq_cuda_op(int op) {
  if (op < 0 || op >= SQ_OP_COUNT || !ops[op].forward) return NULL;
  return &ops[op];
}

int sq_cuda_op_claimed(int op) {
  return sq_cuda_op(op) != NULL;
}

int sq_cuda_op_fp16(int op) {
  const sq_cuda_op_t *o = sq_cuda_op(op);
  return o && o->check16;
}
