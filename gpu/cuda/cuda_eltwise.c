/* cuda_eltwise.c: elementwise ops: Add/Sub/Mul/Div with numpy broadcasting (and the activation
 * fused into them), Relu/Sigmoid/Tanh/LeakyRelu/Clip, BatchNormalization left unfolded (a
 * per-channel affine whose scale/shift are computed once on the host), and Cast between float
 * and float16 values. fp16 NHWC: the unary ops, BatchNormalization, Cast, and the binary ops of
 * two same-shape tensors or of a tensor and a constant per channel or scalar. Kernels:
 * cuda_eltwise.cu (fp32), cuda_f16.cu (fp16). */
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

/* How a binary op's operand b meets a 4-D fp16 tensor: same shape (another fp16 tensor), a
 * constant per channel ([C], [C,1,1], [1,C,1,1]) or a scalar constant; -1 otherwise. */
static int b_kind16(const sq_view_t *b, const sq_view_t *out) {
  int64_t numel = sq_view_numel(b);
  if (!b->data) {
    if (b->rank != 4) return -1;
    for (int d = 0; d < 4; d++)
      if (b->dims[d] != out->dims[d]) return -1;
    return SQ_CUDA_B_TENSOR16;
  }
  if (numel == 1) return SQ_CUDA_B_SCALAR;
  if (numel != out->dims[1] || b->rank < 1) return -1;
  /* [C] broadcasts over W (not channels) in numpy; only trailing-1 shapes are per channel */
  if (b->rank == 1) return -1;
  for (int d = 0; d < b->rank; d++) {
    int od = 4 - b->rank + d; /* aligned to out's dims from the right */
    if (od < 0) return -1;
    if (od == 1 ? b->dims[d] != out->dims[1] : b->dims[d] != 1) return -1;
  }
  return SQ_CUDA_B_CHANNEL;
}

int sq_cuda_eltwise_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  if (sq_cuda_eltwise_check(n, in, out, NULL)) return -1;
  if (out[0].rank != 4) return -1;
  if (!is_binary(n->op)) return in[0].rank == 4 && !in[0].data ? 0 : -1;
  /* one operand is the fp16 tensor of the output's shape, the other fits b_kind16 */
  for (int a = 0; a < 2; a++) {
    const sq_view_t *x = &in[a], *y = &in[1 - a];
    if (x->data || x->rank != 4) continue;
    int same = 1;
    for (int d = 0; d < 4; d++) same = same && x->dims[d] == out[0].dims[d];
    if (same && b_kind16(y, &out[0]) >= 0) return 0;
  }
  return -1;
}

static int bin_op(int op) {
  return op == SQ_OP_Add   ? SQ_CUDA_BIN_ADD
         : op == SQ_OP_Sub ? SQ_CUDA_BIN_SUB
         : op == SQ_OP_Mul ? SQ_CUDA_BIN_MUL
                           : SQ_CUDA_BIN_DIV;
}

static int is_out_shape(const sq_view_t *v, const sq_view_t *out) {
  if (v->rank != 4) return 0;
  for (int d = 0; d < 4; d++)
    if (v->dims[d] != out->dims[d]) return 0;
  return 1;
}

static int forward16(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                     const sq_view_t *out, sq_error_t *err) {
  int64_t count = sq_cuda_count16(&out[0]), cp = SQ_CUDA_CPAD(out[0].dims[1]), ch = out[0].dims[1];
  cudaError_t e;
  if (is_binary(n->op)) {
    /* At forward every view holds a device pointer, so shapes tell the operands apart (check16
     * let only these through): a is the fp16 tensor of the output's shape; b the same shape
     * (fp16 too), one value (a constant scalar) or C values (a constant per channel). swap: a
     * was the second input. */
    int swap = !is_out_shape(&in[0], &out[0]);
    const sq_view_t *a = &in[swap], *b = &in[1 - swap];
    int kind = is_out_shape(b, &out[0]) ? SQ_CUDA_B_TENSOR16
               : sq_view_numel(b) == 1  ? SQ_CUDA_B_SCALAR
                                        : SQ_CUDA_B_CHANNEL;
    e = sq_cuda_binary16(bin_op(n->op), a->data, b->data, kind, swap, out[0].data, count, cp, ch,
                         act_of(n->act), n->act_alpha, n->act_beta, c->stream);
    return sq_cuda_check(e, err, "binary kernel (fp16)");
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
  e = sq_cuda_act16(in[0].data, out[0].data, count, act, alpha, beta, c->stream);
  if (!e && n->act != SQ_ACT_NONE)
    e = sq_cuda_act16(out[0].data, out[0].data, count, act_of(n->act), n->act_alpha, n->act_beta,
                      c->stream);
  return sq_cuda_check(e, err, "activation kernel (fp16)");
}

int sq_cuda_eltwise_forward(SQ_CUDA_FORWARD_ARGS) {
  if (mode == SQ_CUDA_F16) return forward16(c, n, state, in, out, err);
  int64_t cnt = sq_view_numel(&out[0]);
  cudaError_t e;
  if (is_binary(n->op)) {
    sq_cuda_bcast_t g;
    memset(&g, 0, sizeof g);
    g.rank = out[0].rank;
    for (int d = 0; d < g.rank; d++) g.dims[d] = out[0].dims[d];
    sq_broadcast_strides(&in[0], &out[0], g.sa);
    sq_broadcast_strides(&in[1], &out[0], g.sb);
    e = sq_cuda_binary(bin_op(n->op), in[0].data, in[1].data, out[0].data, &g, act_of(n->act),
                       n->act_alpha, n->act_beta, c->stream);
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
int sq_cuda_clip_prepare(SQ_CUDA_PREPARE_ARGS) {
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

int sq_cuda_bn_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  return !sq_cuda_bn_check(n, in, out, NULL) && in[0].rank == 4 && !in[0].data ? 0 : -1;
}

int sq_cuda_bn_prepare(SQ_CUDA_PREPARE_ARGS) {
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

int sq_cuda_bn_forward(SQ_CUDA_FORWARD_ARGS) {
  int64_t ch = in[0].dims[1], outer = in[0].dims[0];
  const float *p = state;
  cudaError_t e;
  if (mode == SQ_CUDA_F16) {
    int64_t count = sq_cuda_count16(&in[0]);
    e = sq_cuda_affine16(in[0].data, out[0].data, p, p + ch, count, SQ_CUDA_CPAD(ch), ch,
                         c->stream);
    if (!e && n->act != SQ_ACT_NONE)
      e = sq_cuda_act16(out[0].data, out[0].data, count, act_of(n->act), n->act_alpha, n->act_beta,
                        c->stream);
    return sq_cuda_check(e, err, "batchnorm kernel (fp16)");
  }
  int64_t inner = outer * ch > 0 ? sq_view_numel(&in[0]) / (outer * ch) : 1;
  e = sq_cuda_affine_channel(in[0].data, out[0].data, p, p + ch, outer, ch, inner, c->stream);
  if (!e && n->act != SQ_ACT_NONE)
    e = sq_cuda_act(out[0].data, out[0].data, sq_view_numel(&out[0]), act_of(n->act), n->act_alpha,
                    n->act_beta, c->stream);
  return sq_cuda_check(e, err, "batchnorm kernel");
}

/* ---- Cast between float and float16 values (fp16 exports: Cast nodes at the edges) ----
 * The engine holds float16 tensors as float32 with float16 values (gpu/onnx/kern_shape.c):
 * Cast(to=FLOAT16) rounds, Cast(to=FLOAT) copies. In fp16 mode both are copies: the values
 * already are halves. */
static int cast_to16(const sq_node_t *n) {
  return n->op == SQ_OP_Cast && sq_attr_int(n, "to", 0) == SQ_DT_FLOAT16;
}

int sq_cuda_cast_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT || out[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Cast between float types only");
  return 0;
}

int sq_cuda_cast_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  return !sq_cuda_cast_check(n, in, out, NULL) && in[0].rank == 4 && !in[0].data ? 0 : -1;
}

int sq_cuda_cast_forward(SQ_CUDA_FORWARD_ARGS) {
  if (mode == SQ_CUDA_F16 || !cast_to16(n)) {
    size_t bytes = mode == SQ_CUDA_F16 ? (size_t)sq_cuda_count16(&out[0]) * 2
                                       : (size_t)sq_view_numel(&out[0]) * 4;
    if (in[0].data == out[0].data || !bytes) return 0;
    return sq_cuda_check(
        cudaMemcpyAsync(out[0].data, in[0].data, bytes, cudaMemcpyDeviceToDevice, c->stream), err,
        "cudaMemcpyAsync (cast)");
  }
  return sq_cuda_check(sq_cuda_round16(in[0].data, out[0].data, sq_view_numel(&out[0]), c->stream),
                       err, "round kernel (cast to float16)");
}
