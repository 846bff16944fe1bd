/* kern_eltwise.c: elementwise kernels: Add/Sub/Mul/Div with numpy broadcasting (float, int64,
 * int32: the int forms run at plan time in shape chains), Relu, Sigmoid, and the broadcast
 * driver other binary ops reuse. Executor thread (rows fan out over the pool). */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

typedef struct {
  const sq_view_t *a, *b, *out;
  int64_t sa[SQ_MAX_DIMS], sb[SQ_MAX_DIMS];
  size_t ea, eb, eo;
  int64_t inner;
  sq_binary_row_fn row;
  void *ctx;
} bcast_t;

static void bcast_rows(void *arg, int64_t begin, int64_t end) {
  bcast_t *c = arg;
  const sq_view_t *o = c->out;
  int r = o->rank;
  for (int64_t row = begin; row < end; row++) {
    /* offsets of this row in a and b from its multi-index over the outer dims */
    int64_t rem = row, oa = 0, ob = 0;
    for (int d = r - 2; d >= 0; d--) {
      int64_t idx = rem % o->dims[d];
      rem /= o->dims[d];
      oa += idx * c->sa[d];
      ob += idx * c->sb[d];
    }
    int64_t sa = r ? c->sa[r - 1] : 0, sb = r ? c->sb[r - 1] : 0;
    c->row((const char *)c->a->data + oa * (int64_t)c->ea, sa,
           (const char *)c->b->data + ob * (int64_t)c->eb, sb,
           (char *)o->data + row * c->inner * (int64_t)c->eo, c->inner, c->ctx);
  }
}

void sq_binary_broadcast(sq_cpu_t *cpu, const sq_view_t *a, const sq_view_t *b,
                         const sq_view_t *out, sq_binary_row_fn row, void *ctx) {
  bcast_t c = {.a = a, .b = b, .out = out, .row = row, .ctx = ctx};
  c.ea = sq_dtype_size(a->dtype);
  c.eb = sq_dtype_size(b->dtype);
  c.eo = sq_dtype_size(out->dtype);
  sq_broadcast_strides(a, out, c.sa);
  sq_broadcast_strides(b, out, c.sb);
  int64_t numel = sq_view_numel(out);
  if (numel == 0) return;
  c.inner = out->rank ? out->dims[out->rank - 1] : 1;
  if (c.inner == 0) return;
  int64_t rows = numel / c.inner;
  /* same-shape or scalar-vs-tensor: one flat row is faster than many short ones */
  bool flat_a = sq_view_numel(a) == numel || sq_view_numel(a) == 1;
  bool flat_b = sq_view_numel(b) == numel || sq_view_numel(b) == 1;
  if (flat_a && flat_b && rows > 1) {
    int64_t sa = sq_view_numel(a) == 1 ? 0 : 1, sb = sq_view_numel(b) == 1 ? 0 : 1;
    /* split the flat range into fixed blocks and run them in parallel */
    const int64_t block = 1 << 14;
    int64_t nblocks = (numel + block - 1) / block;
    for (int d = 0; d < SQ_MAX_DIMS; d++) c.sa[d] = c.sb[d] = 0;
    /* reuse bcast_rows with a rank-2 view of shape [nblocks, block] when it divides evenly;
     * otherwise do it sequentially in one call */
    if (numel % block == 0 && nblocks > 1) {
      sq_view_t o2 = *out;
      o2.rank = 2;
      o2.dims[0] = nblocks;
      o2.dims[1] = block;
      c.out = &o2;
      c.inner = block;
      c.sa[0] = sa * block;
      c.sa[1] = sa;
      c.sb[0] = sb * block;
      c.sb[1] = sb;
      sq_cpu_parallel_for(cpu, nblocks, 1, bcast_rows, &c);
    } else {
      row(a->data, sa, b->data, sb, out->data, numel, ctx);
    }
    return;
  }
  sq_cpu_parallel_for(cpu, rows, (1 << 12) / (c.inner + 1) + 1, bcast_rows, &c);
}

#define ARITH_ROWS(NAME, T, EXPR)                                                               \
  static void NAME(const void *pa, int64_t sa, const void *pb, int64_t sb, void *po, int64_t n, \
                   void *ctx) {                                                                 \
    const T *a = pa, *b = pb;                                                                   \
    T *o = po;                                                                                  \
    for (int64_t i = 0; i < n; i++) {                                                           \
      T x = a[i * sa], y = b[i * sb];                                                           \
      o[i] = (EXPR);                                                                            \
    }                                                                                           \
  }

ARITH_ROWS(add_f32, float, x + y)
ARITH_ROWS(sub_f32, float, x - y)
ARITH_ROWS(mul_f32, float, x *y)
ARITH_ROWS(div_f32, float, x / y)
ARITH_ROWS(add_i64, int64_t, x + y)
ARITH_ROWS(sub_i64, int64_t, x - y)
ARITH_ROWS(mul_i64, int64_t, x *y)
ARITH_ROWS(div_i64, int64_t, y ? x / y : 0)
ARITH_ROWS(add_i32, int32_t, x + y)
ARITH_ROWS(sub_i32, int32_t, x - y)
ARITH_ROWS(mul_i32, int32_t, x *y)
ARITH_ROWS(div_i32, int32_t, y ? x / y : 0)

static int arith(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, const sq_view_t *out,
                 sq_binary_row_fn f32, sq_binary_row_fn i64, sq_binary_row_fn i32,
                 sq_error_t *err) {
  sq_binary_row_fn f = out->dtype == SQ_DT_FLOAT   ? f32
                       : out->dtype == SQ_DT_INT64 ? i64
                       : out->dtype == SQ_DT_INT32 ? i32
                                                   : NULL;
  if (!f) return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(out->dtype));
  sq_binary_broadcast(cpu, &in[0], &in[1], out, f, NULL);
  if (node->act && out->dtype == SQ_DT_FLOAT)
    sq_act_apply(node->act, node->act_alpha, node->act_beta, out->data, sq_view_numel(out));
  return 0;
}

int sq_kern_add(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                const sq_view_t *out, int nout, sq_error_t *err) {
  return arith(cpu, node, in, out, add_f32, add_i64, add_i32, err);
}
int sq_kern_sub(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                const sq_view_t *out, int nout, sq_error_t *err) {
  return arith(cpu, node, in, out, sub_f32, sub_i64, sub_i32, err);
}
int sq_kern_mul(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                const sq_view_t *out, int nout, sq_error_t *err) {
  return arith(cpu, node, in, out, mul_f32, mul_i64, mul_i32, err);
}
int sq_kern_div(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                const sq_view_t *out, int nout, sq_error_t *err) {
  return arith(cpu, node, in, out, div_f32, div_i64, div_i32, err);
}

typedef struct {
  const float *x;
  float *y;
  int act;
} unary_t;

static void unary_range(void *arg, int64_t b, int64_t e) {
  unary_t *u = arg;
  if (u->x != u->y) memcpy(u->y + b, u->x + b, (size_t)(e - b) * sizeof(float));
  sq_act_apply(u->act, 0, 0, u->y + b, e - b);
}

static int unary(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, const sq_view_t *out,
                 int act, sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  unary_t u = {in[0].data, out->data, act};
  sq_cpu_parallel_for(cpu, sq_view_numel(out), 1 << 14, unary_range, &u);
  return 0;
}

int sq_kern_relu(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                 const sq_view_t *out, int nout, sq_error_t *err) {
  return unary(cpu, node, in, out, SQ_ACT_RELU, err);
}
int sq_kern_sigmoid(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                    const sq_view_t *out, int nout, sq_error_t *err) {
  return unary(cpu, node, in, out, SQ_ACT_SIGMOID, err);
}

/* Floor/Ceil: torch's size arithmetic (float sizes rounded back); float only */
typedef struct {
  const float *x;
  float *y;
  bool up;
} round_t;

static void round_range(void *arg, int64_t b, int64_t e) {
  const round_t *r = arg;
  for (int64_t i = b; i < e; i++) r->y[i] = r->up ? ceilf(r->x[i]) : floorf(r->x[i]);
}

static int rounding(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, const sq_view_t *out,
                    bool up, sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  round_t r = {in[0].data, out->data, up};
  sq_cpu_parallel_for(cpu, sq_view_numel(out), 1 << 14, round_range, &r);
  return 0;
}

int sq_kern_floor(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                  const sq_view_t *out, int nout, sq_error_t *err) {
  return rounding(cpu, node, in, out, false, err);
}
int sq_kern_ceil(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                 const sq_view_t *out, int nout, sq_error_t *err) {
  return rounding(cpu, node, in, out, true, err);
}
