/* cpu_ops_unary.c: elementwise unary kernels (math functions, activations with attributes,
 * Clip, Dropout at inference). float32 throughout; Abs/Neg/Clip also on int64/int32 because
 * shape subgraphs use them. Executor thread; the flat range fans out over the pool. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine_internal.h"

typedef enum {
  U_ABS,
  U_NEG,
  U_EXP,
  U_LOG,
  U_SQRT,
  U_TANH,
  U_ERF,
  U_RECIPROCAL,
  U_SOFTSIGN,
  U_SOFTPLUS,
  U_MISH,
  U_GELU,
  U_GELU_TANH,
  U_LEAKY_RELU,
  U_ELU,
  U_SELU,
  U_HARD_SIGMOID,
  U_HARD_SWISH,
  U_CLIP
} unary_op_t;

typedef struct {
  const float *x;
  float *y;
  int op;
  float a, b; /* op parameters (alpha/beta, gamma, min/max) */
} unary_t;

static inline float softplus(float v) {
  /* log(1 + e^v) without overflow for large v */
  return v > 0 ? v + log1pf(expf(-v)) : log1pf(expf(v));
}

#define MAP(EXPR)                         \
  for (int64_t i = begin; i < end; i++) { \
    float v = x[i];                       \
    y[i] = (EXPR);                        \
  }                                       \
  break

static void unary_range(void *arg, int64_t begin, int64_t end) {
  const unary_t *u = arg;
  const float *x = u->x;
  float *y = u->y;
  const float a = u->a, b = u->b;
  switch (u->op) {
    case U_ABS:
      MAP(fabsf(v));
    case U_NEG:
      MAP(-v);
    case U_EXP:
      MAP(expf(v));
    case U_LOG:
      MAP(logf(v));
    case U_SQRT:
      MAP(sqrtf(v));
    case U_TANH:
      MAP(tanhf(v));
    case U_ERF:
      MAP(erff(v));
    case U_RECIPROCAL:
      MAP(1.0f / v);
    case U_SOFTSIGN:
      MAP(v / (1.0f + fabsf(v)));
    case U_SOFTPLUS:
      MAP(softplus(v));
    case U_MISH:
      MAP(v * tanhf(softplus(v)));
    case U_GELU:
      MAP(0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)));
    case U_GELU_TANH:
      MAP(0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))));
    case U_LEAKY_RELU:
      MAP(v >= 0 ? v : v * a);
    case U_ELU:
      MAP(v >= 0 ? v : a * (expf(v) - 1.0f));
    case U_SELU:
      MAP(v > 0 ? b * v : b * (a * expf(v) - a));
    case U_HARD_SIGMOID:
      MAP(fmaxf(0.0f, fminf(1.0f, a * v + b)));
    case U_HARD_SWISH:
      MAP(v * fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f)));
    case U_CLIP:
      /* NaN passes through (comparisons are false), as in numpy.clip */
      MAP(v < a ? a : v > b ? b : v);
    default:
      break;
  }
}

static int run_unary(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in,
                     const sq_view_t *out, int op, float a, float b, sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  unary_t u = {in[0].data, out[0].data, op, a, b};
  sq_cpu_parallel_for(cpu, sq_view_numel(&out[0]), 1 << 14, unary_range, &u);
  return 0;
}

/* float-only unary ops share one shape function */
static int shape_float(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                       int nout, sq_error_t *err) {
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  return sq_shape_same(node, in, nin, out, nout, err);
}

#define FLOAT_UNARY(lname, OP, A, B)                         \
  SQ_SHAPE_FN(sq_shape_##lname) {                            \
    return shape_float(node, in, nin, out, nout, err);       \
  }                                                          \
  SQ_KERNEL_FN(sq_kern_##lname) {                            \
    (void)nin;                                               \
    (void)nout;                                              \
    return run_unary(cpu, node, in, out, OP, (A), (B), err); \
  }

FLOAT_UNARY(exp, U_EXP, 0, 0)
FLOAT_UNARY(log, U_LOG, 0, 0)
FLOAT_UNARY(sqrt, U_SQRT, 0, 0)
FLOAT_UNARY(tanh, U_TANH, 0, 0)
FLOAT_UNARY(erf, U_ERF, 0, 0)
FLOAT_UNARY(reciprocal, U_RECIPROCAL, 0, 0)
FLOAT_UNARY(softsign, U_SOFTSIGN, 0, 0)
FLOAT_UNARY(softplus, U_SOFTPLUS, 0, 0)
FLOAT_UNARY(mish, U_MISH, 0, 0)
FLOAT_UNARY(hardswish, U_HARD_SWISH, 0, 0)
FLOAT_UNARY(leakyrelu, U_LEAKY_RELU, sq_attr_float(node, "alpha", 0.01f), 0)
FLOAT_UNARY(elu, U_ELU, sq_attr_float(node, "alpha", 1.0f), 0)
FLOAT_UNARY(selu, U_SELU, sq_attr_float(node, "alpha", 1.67326319217681884765625f),
            sq_attr_float(node, "gamma", 1.05070102214813232421875f))
FLOAT_UNARY(hardsigmoid, U_HARD_SIGMOID, sq_attr_float(node, "alpha", 0.2f),
            sq_attr_float(node, "beta", 0.5f))

/* ---- Gelu (opset 20): approximate = "none" | "tanh" ---- */
SQ_SHAPE_FN(sq_shape_gelu) {
  const char *ap = sq_attr_string(node, "approximate", "none");
  if (strcmp(ap, "none") != 0 && strcmp(ap, "tanh") != 0)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "approximate '%s'", ap);
  return shape_float(node, in, nin, out, nout, err);
}

SQ_KERNEL_FN(sq_kern_gelu) {
  (void)nin;
  (void)nout;
  bool tanh_form = strcmp(sq_attr_string(node, "approximate", "none"), "tanh") == 0;
  return run_unary(cpu, node, in, out, tanh_form ? U_GELU_TANH : U_GELU, 0, 0, err);
}

/* ---- Abs, Neg: float plus the integer types shape arithmetic uses ---- */
static int shape_signed(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                        int nout, sq_error_t *err) {
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  int dt = in[0].dtype;
  if (dt != SQ_DT_FLOAT && dt != SQ_DT_INT64 && dt != SQ_DT_INT32)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(dt));
  return sq_shape_same(node, in, nin, out, nout, err);
}

static int int_unary(const sq_view_t *in, const sq_view_t *out, bool neg) {
  int64_t n = sq_view_numel(&out[0]);
  if (in[0].dtype == SQ_DT_INT64) {
    const int64_t *x = in[0].data;
    int64_t *y = out[0].data;
    for (int64_t i = 0; i < n; i++) y[i] = neg ? -x[i] : x[i] < 0 ? -x[i] : x[i];
  } else {
    const int32_t *x = in[0].data;
    int32_t *y = out[0].data;
    for (int64_t i = 0; i < n; i++) y[i] = neg ? -x[i] : x[i] < 0 ? -x[i] : x[i];
  }
  return 0;
}

SQ_SHAPE_FN(sq_shape_abs) {
  return shape_signed(node, in, nin, out, nout, err);
}
SQ_KERNEL_FN(sq_kern_abs) {
  (void)nin;
  (void)nout;
  if (in[0].dtype != SQ_DT_FLOAT) return int_unary(in, out, false);
  return run_unary(cpu, node, in, out, U_ABS, 0, 0, err);
}
SQ_SHAPE_FN(sq_shape_neg) {
  return shape_signed(node, in, nin, out, nout, err);
}
SQ_KERNEL_FN(sq_kern_neg) {
  (void)nin;
  (void)nout;
  if (in[0].dtype != SQ_DT_FLOAT) return int_unary(in, out, true);
  return run_unary(cpu, node, in, out, U_NEG, 0, 0, err);
}

/* ---- Clip: min/max attributes before opset 11, optional inputs 1 and 2 from 11; int64 and
 * int32 too (opset 12), as torch.clamp on sizes in shape subgraphs ---- */
SQ_SHAPE_FN(sq_shape_clip) {
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  int dt = in[0].dtype;
  if (dt != SQ_DT_FLOAT && dt != SQ_DT_INT64 && dt != SQ_DT_INT32)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(dt));
  for (int k = 1; k < nin && k < 3; k++)
    if (sq_view_present(&in[k]) && (in[k].dtype != dt || sq_view_numel(&in[k]) != 1))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "min/max must be scalars of the input type");
  return sq_shape_same(node, in, nin, out, nout, err);
}

static int clip_int(const sq_view_t *in, int nin, const sq_view_t *out) {
  int64_t lo = INT64_MIN, hi = INT64_MAX, n = sq_view_numel(&out[0]);
  if (nin > 1 && sq_view_present(&in[1])) lo = sq_view_get_int(&in[1], 0);
  if (nin > 2 && sq_view_present(&in[2])) hi = sq_view_get_int(&in[2], 0);
  if (lo > hi) lo = hi;
  for (int64_t i = 0; i < n; i++) {
    int64_t v = sq_view_get_int(&in[0], i);
    v = v < lo ? lo : v > hi ? hi : v;
    if (in[0].dtype == SQ_DT_INT64)
      ((int64_t *)out[0].data)[i] = v;
    else
      ((int32_t *)out[0].data)[i] = (int32_t)v;
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_clip) {
  (void)nout;
  if (in[0].dtype != SQ_DT_FLOAT) return clip_int(in, nin, out);
  float lo = -INFINITY, hi = INFINITY;
  if (node->opset < 11) {
    lo = sq_attr_float(node, "min", -FLT_MAX);
    hi = sq_attr_float(node, "max", FLT_MAX);
  } else {
    if (nin > 1 && sq_view_present(&in[1])) lo = *(const float *)in[1].data;
    if (nin > 2 && sq_view_present(&in[2])) hi = *(const float *)in[2].data;
  }
  /* min > max: every output is max (numpy.clip applies min then max) */
  if (lo > hi) lo = hi;
  return run_unary(cpu, node, in, out, U_CLIP, lo, hi, err);
}

/* ---- Dropout (inference only): identity; the optional mask output is all ones ---- */
SQ_SHAPE_FN(sq_shape_dropout) {
  if (node->opset < 7 && sq_attr_int(node, "is_test", 0) == 0)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "training mode");
  if (nin > 2 && sq_view_present(&in[2])) {
    if (!in[2].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "training_mode must be constant");
    if (sq_view_get_int(&in[2], 0) != 0)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "training mode");
  }
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  out[0] = in[0];
  out[0].data = NULL;
  if (nout > 1) {
    out[1] = out[0];
    /* the mask was of the data type before opset 10, bool since */
    out[1].dtype = node->opset < 10 ? in[0].dtype : SQ_DT_BOOL;
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_dropout) {
  (void)cpu;
  (void)nin;
  (void)err;
  (void)node;
  size_t bytes = (size_t)sq_view_numel(&out[0]) * sq_dtype_size(out[0].dtype);
  if (out[0].data != in[0].data) memcpy(out[0].data, in[0].data, bytes);
  if (nout > 1 && sq_view_present(&out[1]) && out[1].data) {
    int64_t n = sq_view_numel(&out[1]);
    if (out[1].dtype == SQ_DT_FLOAT)
      for (int64_t i = 0; i < n; i++) ((float *)out[1].data)[i] = 1.0f;
    else
      memset(out[1].data, 1, (size_t)n * sq_dtype_size(out[1].dtype));
  }
  return 0;
}
