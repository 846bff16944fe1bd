/* cuda_ops.c: the ONE list of ops the CUDA backend runs, indexed by the engine's sq_op_t, and
 * which of them also run in fp16 NHWC (check16). An op missing here (or whose check refuses the
 * node's attributes/types) is reported unsupported when a plan binds, naming every such node;
 * tests/gpu/test_gpu_ops.c walks this same table. */
#include "cuda_internal.h"

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

static const sq_cuda_op_t ops[SQ_OP_COUNT] = {
    [SQ_OP_Conv] = CONV,
    [SQ_OP_ConvTranspose] = CONV,
    [SQ_OP_MaxPool] = POOL,
    [SQ_OP_AveragePool] = POOL,
    [SQ_OP_GlobalAveragePool] = POOL,
    [SQ_OP_GlobalMaxPool] = POOL,
    [SQ_OP_ReduceMax] = REDUCE,
    [SQ_OP_ReduceMean] = REDUCE,
    [SQ_OP_ReduceSum] = REDUCE,
    [SQ_OP_BatchNormalization] = {sq_cuda_bn_check, sq_cuda_bn_check16, sq_cuda_bn_prepare,
                                  sq_cuda_bn_forward, sq_cuda_free_release},
    [SQ_OP_Resize] = {sq_cuda_resize_check, sq_cuda_resize_check16, sq_cuda_resize_prepare,
                      sq_cuda_resize_forward, sq_cuda_free_release},
    [SQ_OP_Concat] = {sq_cuda_concat_check, sq_cuda_concat_check16, NULL, sq_cuda_concat_forward,
                      NULL},
    [SQ_OP_Gemm] = {sq_cuda_gemm_check, NULL, NULL, sq_cuda_gemm_forward, NULL},
    [SQ_OP_Cast] = {sq_cuda_cast_check, sq_cuda_cast_check16, NULL, sq_cuda_cast_forward, NULL},
    [SQ_OP_Add] = ELTWISE,
    [SQ_OP_Sub] = ELTWISE,
    [SQ_OP_Mul] = ELTWISE,
    [SQ_OP_Div] = ELTWISE,
    [SQ_OP_Relu] = ELTWISE,
    [SQ_OP_Sigmoid] = ELTWISE,
    [SQ_OP_Tanh] = ELTWISE,
    [SQ_OP_LeakyRelu] = ELTWISE,
    [SQ_OP_Clip] = {sq_cuda_eltwise_check, sq_cuda_eltwise_check16, sq_cuda_clip_prepare,
                    sq_cuda_eltwise_forward, sq_cuda_host_release},
    [SQ_OP_Identity] = VIEW,
    [SQ_OP_Reshape] = VIEW,
    [SQ_OP_Flatten] = VIEW,
    [SQ_OP_Squeeze] = VIEW,
    [SQ_OP_Unsqueeze] = VIEW,
    [SQ_OP_Dropout] = VIEW,
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
