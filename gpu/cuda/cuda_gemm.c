/* cuda_gemm.c: Gemm on cuBLAS (row-major Y = alpha * op(A) op(B) + beta * C computed as the
 * column-major Y^T = op(B)^T op(A)^T). C is first broadcast into Y with the binary kernel. */
#include "cuda_internal.h"

int sq_cuda_gemm_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err) {
  if (n->nin < 2 || in[0].dtype != SQ_DT_FLOAT || in[1].dtype != SQ_DT_FLOAT || in[0].rank != 2 ||
      in[1].rank != 2 || out[0].rank != 2)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 2-D Gemm only");
  if (n->nin > 2 && sq_view_present(&in[2]) && (in[2].dtype != SQ_DT_FLOAT || in[2].rank > 2))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Gemm C");
  for (int d = 0; d < 2; d++)
    if (in[0].dims[d] > INT32_MAX || in[1].dims[d] > INT32_MAX)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Gemm dims");
  return 0;
}

int sq_cuda_gemm_forward(SQ_CUDA_FORWARD_ARGS) {
  int ta = sq_attr_int(n, "transA", 0) != 0, tb = sq_attr_int(n, "transB", 0) != 0;
  float alpha = sq_attr_float(n, "alpha", 1.f), beta = sq_attr_float(n, "beta", 1.f);
  int m = (int)out[0].dims[0], nn = (int)out[0].dims[1];
  int k = (int)(ta ? in[0].dims[0] : in[0].dims[1]);
  int has_c = n->nin > 2 && sq_view_present(&in[2]);
  if (has_c && beta != 0.f) {
    sq_cuda_bcast_t g = {.rank = 2, .dims = {m, nn}};
    sq_broadcast_strides(&in[2], &out[0], g.sb);
    sq_broadcast_strides(&in[2], &out[0], g.sa);
    int rc = sq_cuda_check(sq_cuda_binary(SQ_CUDA_BIN_B, in[2].data, in[2].data, out[0].data, &g,
                                          SQ_CUDA_ACT_NONE, 0, 0, c->stream),
                           err, "Gemm C broadcast");
    if (rc) return rc;
  } else {
    beta = 0.f;
  }
  if (m && nn) {
    int rc =
        sq_cublas_check(cublasSgemm(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    ta ? CUBLAS_OP_T : CUBLAS_OP_N, nn, m, k, &alpha, in[1].data,
                                    tb ? k : nn, in[0].data, ta ? m : k, &beta, out[0].data, nn),
                        err, "cublasSgemm");
    if (rc) return rc;
  }
  if (n->act == SQ_ACT_NONE) return 0;
  int act = n->act == SQ_ACT_RELU         ? SQ_CUDA_ACT_RELU
            : n->act == SQ_ACT_LEAKY_RELU ? SQ_CUDA_ACT_LEAKY
            : n->act == SQ_ACT_CLIP       ? SQ_CUDA_ACT_CLIP
                                          : SQ_CUDA_ACT_SIGMOID;
  return sq_cuda_check(sq_cuda_act(out[0].data, out[0].data, (int64_t)m * nn, act, n->act_alpha,
                                   n->act_beta, c->stream),
                       err, "Gemm activation");
}
