/* cuda_eltwise.c: elementwise ops: Add/Sub/Mul/Div with numpy broadcasting (and the activation
 * fused into them), Relu/Sigmoid/Tanh/LeakyRelu/Clip, and BatchNormalization left unfolded (a
 * per-channel affine whose scale/shift are computed once on the host). Kernels: cuda_eltwise.cu. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static int act_of(int act) {
  switch (act) {
    case SQ_ACT_RELU:
      return SQ_CUDA_ACT_RELU;
    case SQ_ACT_LEAKY_RELU:
      return SQ_CUDA_ACT_LEAKY;
    case SQ_ACT_CLIP:
      return SQ_CUDA_ACT_CLIP;
    case SQ_ACT_SIGMOID:
      return SQ_CUDA_ACT_SIGMOID;
    default:
      return SQ_CUDA_ACT_NONE;
  }
}

static int is_binary(int op) {
  return sq_op_has(op, SQ_P_BINARY); /* ops.def: Add, Sub, Mul, Div */
}

int sq_cuda_eltwise_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                          sq_error_t *err) {
  int nin = is_binary(n->op) ? 2 : 1;
  if (n->nin < nin) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: missing input");
  for (int i = 0; i < nin; i++)
    if (in[i].dtype != SQ_DT_FLOAT || in[i].rank > 8)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 only");
  if (out[0].dtype != SQ_DT_FLOAT) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32");
  if (n->op == SQ_OP_Clip && n->nin > 1)
    for (int i = 1; i < n->nin && i < 3; i++)
      if (sq_view_present(&in[i]) && !in[i].data)
        return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Clip bounds must be constant");
  return 0;
}

int sq_cuda_eltwise_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                            const sq_view_t *out, sq_error_t *err) {
  int64_t cnt = sq_view_numel(&out[0]);
  cudaError_t e;
  if (is_binary(n->op)) {
    sq_cuda_bcast_t g;
    memset(&g, 0, sizeof g);
    g.rank = out[0].rank;
    for (int d = 0; d < g.rank; d++) g.dims[d] = out[0].dims[d];
    sq_broadcast_strides(&in[0], &out[0], g.sa);
    sq_broadcast_strides(&in[1], &out[0], g.sb);
    int op = n->op == SQ_OP_Add   ? SQ_CUDA_BIN_ADD
             : n->op == SQ_OP_Sub ? SQ_CUDA_BIN_SUB
             : n->op == SQ_OP_Mul ? SQ_CUDA_BIN_MUL
                                  : SQ_CUDA_BIN_DIV;
    e = sq_cuda_binary(op, in[0].data, in[1].data, out[0].data, &g, act_of(n->act), n->act_alpha,
                       n->act_beta, c->stream);
    return sq_cuda_check(e, err, "binary kernel");
  }
  int act = SQ_CUDA_ACT_NONE;
  float alpha = 0, beta = 0;
  switch (n->op) {
    case SQ_OP_Relu:
      act = SQ_CUDA_ACT_RELU;
      break;
    case SQ_OP_Sigmoid:
      act = SQ_CUDA_ACT_SIGMOID;
      break;
    case SQ_OP_Tanh:
      act = SQ_CUDA_ACT_TANH;
      break;
    case SQ_OP_LeakyRelu:
      act = SQ_CUDA_ACT_LEAKY;
      alpha = sq_attr_float(n, "alpha", 0.01f);
      break;
    case SQ_OP_Clip:
      act = SQ_CUDA_ACT_CLIP;
      alpha = -INFINITY, beta = INFINITY;
      if (state) alpha = ((float *)state)[0], beta = ((float *)state)[1];
      break;
    default:
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: no kernel");
  }
  e = sq_cuda_act(in[0].data, out[0].data, cnt, act, alpha, beta, c->stream);
  if (!e && n->act != SQ_ACT_NONE)
    e = sq_cuda_act(out[0].data, out[0].data, cnt, act_of(n->act), n->act_alpha, n->act_beta,
                    c->stream);
  return sq_cuda_check(e, err, "activation kernel");
}

/* Clip's bounds (attributes before opset 11, constant inputs 1/2 since) read once. */
int sq_cuda_clip_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                         const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                         sq_error_t *err) {
  float *b = malloc(2 * sizeof *b);
  if (!b) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  b[0] = -INFINITY, b[1] = INFINITY;
  if (n->opset < 11) {
    b[0] = sq_attr_float(n, "min", -FLT_MAX); /* as the CPU kernel */
    b[1] = sq_attr_float(n, "max", FLT_MAX);
  } else {
    for (int i = 1; i < 3 && i < n->nin; i++)
      if (sq_view_present(&in[i]) && in[i].data) b[i - 1] = *(const float *)in[i].data;
  }
  if (b[0] > b[1]) b[0] = b[1]; /* min > max: every output is max */
  *state = b;
  return 0;
}

void sq_cuda_host_release(void *state) {
  free(state);
}

void sq_cuda_free_release(void *state) {
  if (state) cudaFree(state);
}

/* ---- BatchNormalization (inference): y = x * scale' + shift' per channel ---- */

int sq_cuda_bn_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                     sq_error_t *err) {
  if (n->nin < 5 || in[0].dtype != SQ_DT_FLOAT || in[0].rank < 2)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 BatchNormalization, rank >= 2");
  for (int i = 1; i < 5; i++)
    if (!in[i].data || in[i].dtype != SQ_DT_FLOAT || sq_view_numel(&in[i]) != in[0].dims[1])
      return sq_node_error(err, SQ_EUNSUPPORTED, n,
                           "cuda: BatchNormalization parameters must "
                           "be float32 constants of C values");
  if (n->nout > 1)
    for (int i = 1; i < n->nout; i++)
      if (n->out[i] >= 0) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: training outputs");
  return 0;
}

int sq_cuda_bn_prepare(sq_cuda_backend_t *be, const sq_node_t *n, const sq_view_t *in,
                       const sq_view_t *dev, const sq_view_t *out, void **state, size_t *ws_bytes,
                       sq_error_t *err) {
  int64_t c = in[0].dims[1];
  float *h = malloc((size_t)(2 * c + 1) * sizeof *h);
  if (!h) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  const float *s = in[1].data, *b = in[2].data, *mean = in[3].data, *var = in[4].data;
  float eps = sq_attr_float(n, "epsilon", 1e-5f);
  for (int64_t i = 0; i < c; i++) {
    h[i] = s[i] / sqrtf(var[i] + eps);
    h[c + i] = b[i] - mean[i] * h[i];
  }
  int rc = sq_cuda_upload(h, (size_t)(2 * c) * sizeof *h, state, err);
  free(h);
  return rc;
}

int sq_cuda_bn_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                       const sq_view_t *out, sq_error_t *err) {
  int64_t ch = in[0].dims[1], outer = in[0].dims[0];
  int64_t inner = outer * ch > 0 ? sq_view_numel(&in[0]) / (outer * ch) : 1;
  const float *p = state;
  cudaError_t e =
      sq_cuda_affine_channel(in[0].data, out[0].data, p, p + ch, outer, ch, inner, c->stream);
  if (!e && n->act != SQ_ACT_NONE)
    e = sq_cuda_act(out[0].data, out[0].data, sq_view_numel(&out[0]), act_of(n->act), n->act_alpha,
                    n->act_beta, c->stream);
  return sq_cuda_check(e, err, "batchnorm kernel");
}
