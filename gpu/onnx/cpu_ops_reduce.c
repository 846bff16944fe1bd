/* cpu_ops_reduce.c: reductions over axes (ReduceMean/ReduceMax/ReduceSum, axes as attribute or
 * as input by opset, keepdims, noop_with_empty_axes), ArgMax, Softmax and LogSoftmax (2-D
 * coercion before opset 13, one axis since). float32. Executor thread; output lines fan out. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

enum { R_SUM, R_MEAN, R_MAX };

/* Which axes of x a Reduce* node reduces. Axes come from input 1 when the op takes them as an
 * input (ReduceSum since 13, the others since 18), else from the attribute. *noop: empty axes
 * with noop_with_empty_axes (the output is the input). */
static int reduce_axes(const sq_node_t *node, const sq_view_t *in, int nin, bool *red, bool *noop,
                       sq_error_t *err) {
  int rank = in[0].rank;
  int64_t axes[SQ_MAX_DIMS];
  int naxes = sq_node_axes(node, in, nin, axes, err);
  if (naxes < 0) return naxes;
  *noop = naxes == 0 && sq_attr_int(node, "noop_with_empty_axes", 0) != 0;
  for (int d = 0; d < rank; d++) red[d] = naxes == 0 && !*noop;
  for (int i = 0; i < naxes; i++) {
    int a = sq_axis(axes[i], rank);
    if (a < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
    red[a] = true;
  }
  return 0;
}

static int shape_reduce(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                        sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  bool red[SQ_MAX_DIMS], noop;
  int rc = reduce_axes(node, in, nin, red, &noop, err);
  if (rc) return rc;
  bool keep = sq_attr_int(node, "keepdims", 1) != 0;
  out[0].dtype = in[0].dtype;
  out[0].rank = 0;
  for (int d = 0; d < in[0].rank; d++) {
    if (!red[d])
      out[0].dims[out[0].rank++] = in[0].dims[d];
    else if (keep)
      out[0].dims[out[0].rank++] = 1;
  }
  return 0;
}

typedef struct {
  const float *x;
  float *y;
  int kind;
  /* fast path: x is [outer, r, inner] and y [outer, inner] */
  int64_t outer, r, inner, blk, nblk;
  /* general path: dims of x merged into groups; kept groups index y */
  int ng;
  int64_t gsize[SQ_MAX_DIMS], gstride[SQ_MAX_DIMS];
  bool gred[SQ_MAX_DIMS];
  int64_t count; /* elements reduced per output */
} reduce_t;

static inline float reduce_init(int kind) {
  return kind == R_MAX ? -INFINITY : 0.0f;
}

static void reduce_fast(void *arg, int64_t b, int64_t e) {
  const reduce_t *c = arg;
  for (int64_t t = b; t < e; t++) {
    int64_t o = t / c->nblk, i0 = (t % c->nblk) * c->blk;
    int64_t i1 = i0 + c->blk < c->inner ? i0 + c->blk : c->inner;
    float *y = c->y + o * c->inner;
    const float *x = c->x + o * c->r * c->inner;
    if (c->inner == 1) {
      float acc = reduce_init(c->kind);
      if (c->kind == R_MAX) {
        for (int64_t k = 0; k < c->r; k++)
          if (x[k] > acc || isnan(x[k])) acc = x[k];
      } else {
        double s = 0;
        for (int64_t k = 0; k < c->r; k++) s += x[k];
        acc = (float)s;
      }
      y[0] = acc;
    } else {
      for (int64_t i = i0; i < i1; i++) y[i] = reduce_init(c->kind);
      for (int64_t k = 0; k < c->r; k++) {
        const float *row = x + k * c->inner;
        if (c->kind == R_MAX) {
          for (int64_t i = i0; i < i1; i++)
            if (row[i] > y[i] || isnan(row[i])) y[i] = row[i];
        } else {
          for (int64_t i = i0; i < i1; i++) y[i] += row[i];
        }
      }
    }
    if (c->kind == R_MEAN)
      for (int64_t i = (c->inner == 1 ? 0 : i0); i < (c->inner == 1 ? 1 : i1); i++)
        y[i] /= (float)c->count;
  }
}

static void reduce_general(void *arg, int64_t b, int64_t e) {
  const reduce_t *c = arg;
  for (int64_t o = b; o < e; o++) {
    /* base offset of this output from its index over the kept groups */
    int64_t rem = o, base = 0;
    for (int g = c->ng - 1; g >= 0; g--) {
      if (c->gred[g]) continue;
      base += (rem % c->gsize[g]) * c->gstride[g];
      rem /= c->gsize[g];
    }
    int64_t idx[SQ_MAX_DIMS] = {0};
    double s = 0;
    float m = -INFINITY;
    for (int64_t k = 0; k < c->count; k++) {
      int64_t off = base;
      for (int g = 0; g < c->ng; g++)
        if (c->gred[g]) off += idx[g] * c->gstride[g];
      float v = c->x[off];
      if (c->kind == R_MAX) {
        if (v > m || isnan(v)) m = v;
      } else {
        s += v;
      }
      for (int g = c->ng - 1; g >= 0; g--) { /* odometer over the reduced groups */
        if (!c->gred[g]) continue;
        if (++idx[g] < c->gsize[g]) break;
        idx[g] = 0;
      }
    }
    c->y[o] = c->kind == R_MAX ? m : c->kind == R_MEAN ? (float)(s / (double)c->count) : (float)s;
  }
}

static int run_reduce(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                      const sq_view_t *out, int kind, sq_error_t *err) {
  bool red[SQ_MAX_DIMS], noop;
  int rc = reduce_axes(node, in, nin, red, &noop, err);
  if (rc) return rc;
  int64_t numel = sq_view_numel(&in[0]), onumel = sq_view_numel(&out[0]);
  if (noop) {
    memcpy(out[0].data, in[0].data, (size_t)numel * sizeof(float));
    return 0;
  }
  reduce_t c = {.x = in[0].data, .y = out[0].data, .kind = kind, .count = 1};
  for (int d = 0; d < in[0].rank; d++)
    if (red[d]) c.count *= in[0].dims[d];
  if (onumel == 0) return 0;
  if (c.count == 0) { /* empty reduction: identity element */
    for (int64_t i = 0; i < onumel; i++)
      ((float *)out[0].data)[i] = kind == R_MAX ? -INFINITY : kind == R_MEAN ? NAN : 0.0f;
    return 0;
  }
  /* merge adjacent dims with the same role (size-1 dims take any role) */
  for (int d = 0; d < in[0].rank; d++) {
    int64_t n = in[0].dims[d];
    if (n == 1) continue;
    if (c.ng > 0 && c.gred[c.ng - 1] == red[d]) {
      c.gsize[c.ng - 1] *= n;
    } else {
      c.gsize[c.ng] = n;
      c.gred[c.ng++] = red[d];
    }
  }
  int64_t s = 1;
  for (int g = c.ng - 1; g >= 0; g--) {
    c.gstride[g] = s;
    s *= c.gsize[g];
  }
  int nred = 0, first_red = -1;
  for (int g = 0; g < c.ng; g++)
    if (c.gred[g]) {
      nred++;
      if (first_red < 0) first_red = g;
    }
  if (nred <= 1) {
    c.outer = c.r = c.inner = 1;
    for (int g = 0; g < c.ng; g++) {
      if (g == first_red)
        c.r = c.gsize[g];
      else if (first_red >= 0 && g > first_red)
        c.inner *= c.gsize[g];
      else
        c.outer *= c.gsize[g];
    }
    c.blk = c.inner == 1 ? 1 : 1024;
    c.nblk = (c.inner + c.blk - 1) / c.blk;
    sq_cpu_parallel_for(cpu, c.outer * c.nblk, 1 + (1 << 14) / (c.r * c.blk + 1), reduce_fast, &c);
    return 0;
  }
  sq_cpu_parallel_for(cpu, onumel, 1 + (1 << 14) / (c.count + 1), reduce_general, &c);
  return 0;
}

SQ_SHAPE_FN(sq_shape_reducemean) {
  (void)nout;
  return shape_reduce(node, in, nin, out, err);
}
SQ_SHAPE_FN(sq_shape_reducemax) {
  (void)nout;
  return shape_reduce(node, in, nin, out, err);
}
SQ_SHAPE_FN(sq_shape_reducesum) {
  (void)nout;
  return shape_reduce(node, in, nin, out, err);
}
SQ_KERNEL_FN(sq_kern_reducemean) {
  (void)nout;
  return run_reduce(cpu, node, in, nin, out, R_MEAN, err);
}
SQ_KERNEL_FN(sq_kern_reducemax) {
  (void)nout;
  return run_reduce(cpu, node, in, nin, out, R_MAX, err);
}
SQ_KERNEL_FN(sq_kern_reducesum) {
  (void)nout;
  return run_reduce(cpu, node, in, nin, out, R_SUM, err);
}

/* ---- ArgMax: int64 indices along one axis ---- */
SQ_SHAPE_FN(sq_shape_argmax) {
  (void)nin, (void)nout;
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  bool keep = sq_attr_int(node, "keepdims", 1) != 0;
  out[0].dtype = SQ_DT_INT64;
  out[0].rank = 0;
  for (int d = 0; d < in[0].rank; d++) {
    if (d != axis)
      out[0].dims[out[0].rank++] = in[0].dims[d];
    else if (keep)
      out[0].dims[out[0].rank++] = 1;
  }
  return 0;
}

typedef struct {
  const float *x;
  int64_t *y;
  int64_t n, inner;
  bool last;
} argmax_t;

static void argmax_range(void *arg, int64_t b, int64_t e) {
  const argmax_t *a = arg;
  for (int64_t t = b; t < e; t++) {
    int64_t o = t / a->inner, i = t % a->inner;
    const float *x = a->x + o * a->n * a->inner + i;
    int64_t best = 0;
    float bv = x[0];
    for (int64_t k = 1; k < a->n; k++) {
      float v = x[k * a->inner];
      if (v > bv || (a->last && v == bv)) {
        bv = v;
        best = k;
      }
    }
    a->y[t] = best;
  }
}

SQ_KERNEL_FN(sq_kern_argmax) {
  (void)nin, (void)nout, (void)err;
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  argmax_t a = {in[0].data, out[0].data, in[0].dims[axis], 1,
                sq_attr_int(node, "select_last_index", 0) != 0};
  int64_t outer = 1;
  for (int d = 0; d < axis; d++) outer *= in[0].dims[d];
  for (int d = axis + 1; d < in[0].rank; d++) a.inner *= in[0].dims[d];
  if (a.n == 0) return sq_node_error(err, SQ_EINVAL, node, "empty axis");
  sq_cpu_parallel_for(cpu, outer * a.inner, 1 + (1 << 12) / (a.n + 1), argmax_range, &a);
  return 0;
}

/* ---- Softmax / LogSoftmax ----
 * Before opset 13 the input is coerced to 2-D at `axis` (default 1) and the softmax runs over
 * the whole trailing block; from 13 it runs along the one axis (default -1). Either way the
 * data is [outer, n, inner]; inner > 1 is processed in blocks of inner positions so that the
 * passes over n read rows, not strided columns. */
typedef struct {
  const float *x;
  float *y;
  int64_t n, inner, blk, nblk;
  bool log;
} softmax_t;

#define SM_BLK 256

static void softmax_range(void *arg, int64_t b, int64_t e) {
  const softmax_t *s = arg;
  float m[SM_BLK], sum[SM_BLK];
  for (int64_t t = b; t < e; t++) {
    int64_t o = t / s->nblk, i0 = (t % s->nblk) * s->blk;
    int64_t w = i0 + s->blk < s->inner ? s->blk : s->inner - i0;
    const float *x = s->x + o * s->n * s->inner + i0;
    float *y = s->y + o * s->n * s->inner + i0;
    for (int64_t i = 0; i < w; i++) {
      m[i] = -INFINITY;
      sum[i] = 0;
    }
    for (int64_t k = 0; k < s->n; k++)
      for (int64_t i = 0; i < w; i++) m[i] = fmaxf(m[i], x[k * s->inner + i]);
    for (int64_t k = 0; k < s->n; k++)
      for (int64_t i = 0; i < w; i++) {
        float v = expf(x[k * s->inner + i] - m[i]);
        if (!s->log) y[k * s->inner + i] = v;
        sum[i] += v;
      }
    if (s->log) {
      for (int64_t i = 0; i < w; i++) sum[i] = logf(sum[i]);
      for (int64_t k = 0; k < s->n; k++)
        for (int64_t i = 0; i < w; i++) y[k * s->inner + i] = x[k * s->inner + i] - m[i] - sum[i];
    } else {
      for (int64_t i = 0; i < w; i++) sum[i] = 1.0f / sum[i];
      for (int64_t k = 0; k < s->n; k++)
        for (int64_t i = 0; i < w; i++) y[k * s->inner + i] *= sum[i];
    }
  }
}

static int softmax_dims(const sq_node_t *node, const sq_view_t *x, int64_t *outer, int64_t *n,
                        int64_t *inner, sq_error_t *err) {
  bool coerce = node->opset < 13;
  int axis = sq_axis(sq_attr_int(node, "axis", coerce ? 1 : -1), x->rank);
  if (axis < 0 && !(coerce && x->rank == sq_attr_int(node, "axis", 1)))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  if (axis < 0) axis = x->rank; /* coerced with axis == rank: [numel, 1] */
  *outer = *n = *inner = 1;
  for (int d = 0; d < x->rank; d++) {
    if (d < axis)
      *outer *= x->dims[d];
    else if (d == axis || coerce)
      *n *= x->dims[d];
    else
      *inner *= x->dims[d];
  }
  return 0;
}

static int shape_softmax(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                         int nout, sq_error_t *err) {
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  int64_t o, n, i;
  int rc = softmax_dims(node, &in[0], &o, &n, &i, err);
  if (rc) return rc;
  return sq_shape_same(node, in, nin, out, nout, err);
}

static int run_softmax(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in,
                       const sq_view_t *out, bool log, sq_error_t *err) {
  int64_t outer = 0;
  softmax_t s = {.x = in[0].data, .y = out[0].data, .log = log};
  int rc = softmax_dims(node, &in[0], &outer, &s.n, &s.inner, err);
  if (rc) return rc;
  if (sq_view_numel(&in[0]) == 0) return 0;
  s.blk = s.inner < SM_BLK ? s.inner : SM_BLK;
  s.nblk = (s.inner + s.blk - 1) / s.blk;
  sq_cpu_parallel_for(cpu, outer * s.nblk, 1 + (1 << 12) / (s.n * s.blk + 1), softmax_range, &s);
  return 0;
}

SQ_SHAPE_FN(sq_shape_softmax) {
  return shape_softmax(node, in, nin, out, nout, err);
}
SQ_SHAPE_FN(sq_shape_logsoftmax) {
  return shape_softmax(node, in, nin, out, nout, err);
}
SQ_KERNEL_FN(sq_kern_softmax) {
  (void)nin, (void)nout;
  return run_softmax(cpu, node, in, out, false, err);
}
SQ_KERNEL_FN(sq_kern_logsoftmax) {
  (void)nin, (void)nout;
  return run_softmax(cpu, node, in, out, true, err);
}
