/* cpu_ops_binary.c: broadcasting elementwise ops beyond the arithmetic four: Pow, PRelu
 * (slope broadcast to X), variadic Min/Max/Sum/Mean, Equal (bool out) and Where (3-way
 * broadcast, any element type). Rows fan out over the pool via sq_binary_broadcast. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

#define ROWS(NAME, TA, TB, TO, EXPR)                                                            \
  static void NAME(const void *pa, int64_t sa, const void *pb, int64_t sb, void *po, int64_t n, \
                   void *ctx) {                                                                 \
    (void)ctx;                                                                                  \
    const TA *a = pa;                                                                           \
    const TB *b = pb;                                                                           \
    TO *o = po;                                                                                 \
    for (int64_t i = 0; i < n; i++) {                                                           \
      TA x = a[i * sa];                                                                         \
      TB y = b[i * sb];                                                                         \
      o[i] = (EXPR);                                                                            \
    }                                                                                           \
  }

static bool num_type(int dt) {
  return dt == SQ_DT_FLOAT || dt == SQ_DT_INT64 || dt == SQ_DT_INT32;
}

/* ---- Pow: float base and exponent ---- */
ROWS(pow_f32, float, float, float, powf(x, y))

SQ_SHAPE_FN(sq_shape_pow) {
  if (nin != 2 || in[0].dtype != SQ_DT_FLOAT || in[1].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "only float ^ float");
  return sq_shape_broadcast(node, in, nin, out, nout, err);
}

SQ_KERNEL_FN(sq_kern_pow) {
  (void)node, (void)nin, (void)nout, (void)err;
  sq_binary_broadcast(cpu, &in[0], &in[1], &out[0], pow_f32, NULL);
  return 0;
}

/* ---- PRelu: slope broadcasts (unidirectionally) to X ---- */
ROWS(prelu_f32, float, float, float, x < 0 ? x * y : x)

/* The slope as broadcast against X. Old exporters (opset < 7) wrote a per-channel slope as
 * [C] for X [N, C, ...]: that one is read as [C, 1, ..., 1]. False when neither fits. */
static bool prelu_slope(const sq_view_t *x, const sq_view_t *slope, sq_view_t *s) {
  sq_view_t b;
  *s = *slope;
  if (!sq_broadcast_shape(x, slope, &b) && b.rank == x->rank &&
      memcmp(b.dims, x->dims, sizeof(int64_t) * (size_t)b.rank) == 0)
    return true;
  if (x->rank < 3 || slope->rank != 1 || slope->dims[0] != x->dims[1]) return false;
  s->rank = x->rank - 1;
  for (int d = 1; d < s->rank; d++) s->dims[d] = 1;
  return true;
}

SQ_SHAPE_FN(sq_shape_prelu) {
  (void)nout;
  if (nin != 2 || in[0].dtype != SQ_DT_FLOAT || in[1].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "only float");
  sq_view_t s;
  if (!prelu_slope(&in[0], &in[1], &s))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "slope does not broadcast to X");
  out[0] = in[0];
  out[0].data = NULL;
  return 0;
}

SQ_KERNEL_FN(sq_kern_prelu) {
  (void)node, (void)nin, (void)nout, (void)err;
  sq_view_t s;
  prelu_slope(&in[0], &in[1], &s);
  sq_binary_broadcast(cpu, &in[0], &s, &out[0], prelu_f32, NULL);
  return 0;
}

/* ---- Min/Max/Sum/Mean: variadic; out = op(in0, in1), then out = op(out, in_k) (same-index
 * reads and writes, so accumulating in place is safe) ---- */
/* NaN propagates, as numpy.minimum/maximum */
ROWS(max_f32, float, float, float, (x >= y || isnan(x)) ? x : y)
ROWS(min_f32, float, float, float, (x <= y || isnan(x)) ? x : y)
ROWS(sum_f32, float, float, float, x + y)
ROWS(max_i64, int64_t, int64_t, int64_t, x >= y ? x : y)
ROWS(min_i64, int64_t, int64_t, int64_t, x <= y ? x : y)
ROWS(sum_i64, int64_t, int64_t, int64_t, x + y)
ROWS(max_i32, int32_t, int32_t, int32_t, x >= y ? x : y)
ROWS(min_i32, int32_t, int32_t, int32_t, x <= y ? x : y)
ROWS(sum_i32, int32_t, int32_t, int32_t, x + y)

static int shape_variadic(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                          int nout, bool float_only, sq_error_t *err) {
  if (nin < 1) return sq_node_error(err, SQ_EMODEL_LOAD, node, "no inputs");
  for (int k = 0; k < nin; k++)
    if (!sq_view_present(&in[k]) || !num_type(in[k].dtype) ||
        (float_only && in[k].dtype != SQ_DT_FLOAT))
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "input %d of type %s", k,
                           sq_dtype_name(in[k].dtype));
  return sq_shape_broadcast(node, in, nin, out, nout, err);
}

static int variadic(sq_cpu_t *cpu, const sq_view_t *in, int nin, const sq_view_t *out,
                    sq_binary_row_fn f32, sq_binary_row_fn i64, sq_binary_row_fn i32) {
  sq_binary_row_fn f = out->dtype == SQ_DT_FLOAT ? f32 : out->dtype == SQ_DT_INT64 ? i64 : i32;
  if (nin == 1) { /* one input: a copy */
    memcpy(out->data, in[0].data, (size_t)sq_view_numel(out) * sq_dtype_size(out->dtype));
    return 0;
  }
  sq_binary_broadcast(cpu, &in[0], &in[1], out, f, NULL);
  for (int k = 2; k < nin; k++) sq_binary_broadcast(cpu, out, &in[k], out, f, NULL);
  return 0;
}

SQ_SHAPE_FN(sq_shape_max) {
  return shape_variadic(node, in, nin, out, nout, false, err);
}
SQ_SHAPE_FN(sq_shape_min) {
  return shape_variadic(node, in, nin, out, nout, false, err);
}
SQ_SHAPE_FN(sq_shape_sum) {
  return shape_variadic(node, in, nin, out, nout, false, err);
}
SQ_SHAPE_FN(sq_shape_mean) {
  return shape_variadic(node, in, nin, out, nout, true, err);
}
SQ_KERNEL_FN(sq_kern_max) {
  (void)node, (void)nout, (void)err;
  return variadic(cpu, in, nin, out, max_f32, max_i64, max_i32);
}
SQ_KERNEL_FN(sq_kern_min) {
  (void)node, (void)nout, (void)err;
  return variadic(cpu, in, nin, out, min_f32, min_i64, min_i32);
}
SQ_KERNEL_FN(sq_kern_sum) {
  (void)node, (void)nout, (void)err;
  return variadic(cpu, in, nin, out, sum_f32, sum_i64, sum_i32);
}

typedef struct {
  float *y;
  float scale;
} scale_t;

static void scale_range(void *arg, int64_t b, int64_t e) {
  const scale_t *s = arg;
  for (int64_t i = b; i < e; i++) s->y[i] *= s->scale;
}

SQ_KERNEL_FN(sq_kern_mean) {
  (void)node, (void)nout, (void)err;
  variadic(cpu, in, nin, out, sum_f32, sum_i64, sum_i32);
  if (nin == 1) return 0;
  scale_t s = {out[0].data, 1.0f / (float)nin};
  sq_cpu_parallel_for(cpu, sq_view_numel(&out[0]), 1 << 14, scale_range, &s);
  return 0;
}

/* ---- Equal: bool output ---- */
ROWS(eq_f32, float, float, uint8_t, x == y)
ROWS(eq_i64, int64_t, int64_t, uint8_t, x == y)
ROWS(eq_i32, int32_t, int32_t, uint8_t, x == y)
ROWS(eq_u8, uint8_t, uint8_t, uint8_t, x == y)

SQ_SHAPE_FN(sq_shape_equal) {
  if (nin != 2) return sq_node_error(err, SQ_EMODEL_LOAD, node, "two inputs");
  int dt = in[0].dtype;
  if (!num_type(dt) && dt != SQ_DT_BOOL && dt != SQ_DT_UINT8)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(dt));
  int rc = sq_shape_broadcast(node, in, nin, out, nout, err);
  if (rc) return rc;
  out[0].dtype = SQ_DT_BOOL;
  return 0;
}

SQ_KERNEL_FN(sq_kern_equal) {
  (void)node, (void)nin, (void)nout, (void)err;
  int dt = in[0].dtype;
  sq_binary_row_fn f = dt == SQ_DT_FLOAT   ? eq_f32
                       : dt == SQ_DT_INT64 ? eq_i64
                       : dt == SQ_DT_INT32 ? eq_i32
                                           : eq_u8;
  sq_binary_broadcast(cpu, &in[0], &in[1], &out[0], f, NULL);
  return 0;
}

/* ---- Where: out = cond ? x : y, all three broadcast; element type by size ---- */
SQ_SHAPE_FN(sq_shape_where) {
  (void)nout;
  if (nin != 3) return sq_node_error(err, SQ_EMODEL_LOAD, node, "three inputs");
  if (in[0].dtype != SQ_DT_BOOL)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "condition of type %s",
                         sq_dtype_name(in[0].dtype));
  if (in[1].dtype != in[2].dtype || !sq_dtype_size(in[1].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "types %s, %s", sq_dtype_name(in[1].dtype),
                         sq_dtype_name(in[2].dtype));
  sq_view_t acc = in[0];
  if (sq_broadcast_shape(&acc, &in[1], &acc) || sq_broadcast_shape(&acc, &in[2], &acc))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "shapes do not broadcast");
  out[0] = acc;
  out[0].dtype = in[1].dtype;
  out[0].data = NULL;
  return 0;
}

typedef struct {
  const sq_view_t *in, *out;
  int64_t st[3][SQ_MAX_DIMS];
  size_t es;
  int64_t inner;
} where_t;

static void where_rows(void *arg, int64_t b, int64_t e) {
  const where_t *w = arg;
  const sq_view_t *o = w->out;
  int r = o->rank;
  const uint8_t *c = w->in[0].data;
  const char *x = w->in[1].data, *y = w->in[2].data;
  char *dst = o->data;
  for (int64_t row = b; row < e; row++) {
    int64_t rem = row, off[3] = {0, 0, 0};
    for (int d = r - 2; d >= 0; d--) {
      int64_t idx = rem % o->dims[d];
      rem /= o->dims[d];
      for (int k = 0; k < 3; k++) off[k] += idx * w->st[k][d];
    }
    int64_t s0 = r ? w->st[0][r - 1] : 0, s1 = r ? w->st[1][r - 1] : 0,
            s2 = r ? w->st[2][r - 1] : 0;
    for (int64_t i = 0; i < w->inner; i++) {
      const char *src = c[off[0] + i * s0] ? x + (size_t)(off[1] + i * s1) * w->es
                                           : y + (size_t)(off[2] + i * s2) * w->es;
      memcpy(dst + (size_t)(row * w->inner + i) * w->es, src, w->es);
    }
  }
}

SQ_KERNEL_FN(sq_kern_where) {
  (void)node, (void)nin, (void)nout, (void)err;
  where_t w = {.in = in, .out = &out[0], .es = sq_dtype_size(out[0].dtype)};
  for (int k = 0; k < 3; k++) sq_broadcast_strides(&in[k], &out[0], w.st[k]);
  int64_t numel = sq_view_numel(&out[0]);
  w.inner = out[0].rank ? out[0].dims[out[0].rank - 1] : 1;
  if (numel == 0 || w.inner == 0) return 0;
  sq_cpu_parallel_for(cpu, numel / w.inner, 1 + (1 << 12) / (w.inner + 1), where_rows, &w);
  return 0;
}
