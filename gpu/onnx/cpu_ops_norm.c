/* cpu_ops_norm.c: InstanceNormalization (per (n, c) plane, scale/bias per channel) and
 * LayerNormalization (over the dims from `axis`, scale/bias broadcast to them, optional Mean
 * and InvStdDev outputs). float32; statistics in double. Planes/rows fan out over the pool. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

/* mean and 1/sqrt(var + eps) of n floats (two passes: stable for large offsets) */
static void moments(const float *x, int64_t n, float eps, float *mean, float *inv) {
  double s = 0, v = 0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  double m = n ? s / (double)n : 0;
  for (int64_t i = 0; i < n; i++) {
    double d = x[i] - m;
    v += d * d;
  }
  *mean = (float)m;
  *inv = (float)(1.0 / sqrt((n ? v / (double)n : 0) + (double)eps));
}

/* ---- InstanceNormalization ---- */
SQ_SHAPE_FN(sq_shape_instancenormalization) {
  if (nin < 3 || in[0].rank < 3)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "needs X (rank >= 3), scale, B");
  for (int k = 0; k < 3; k++)
    if (in[k].dtype != SQ_DT_FLOAT)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[k].dtype));
  if (sq_view_numel(&in[1]) != in[0].dims[1] || sq_view_numel(&in[2]) != in[0].dims[1])
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "scale/B must have C elements");
  return sq_shape_same(node, in, nin, out, nout, err);
}

typedef struct {
  const float *x, *scale, *bias;
  float *y;
  int64_t c, plane;
  float eps;
} inorm_t;

static void inorm_range(void *arg, int64_t b, int64_t e) {
  const inorm_t *a = arg;
  for (int64_t p = b; p < e; p++) {
    const float *x = a->x + p * a->plane;
    float *y = a->y + p * a->plane;
    float m, inv;
    moments(x, a->plane, a->eps, &m, &inv);
    float s = a->scale[p % a->c] * inv, t = a->bias[p % a->c] - m * s;
    for (int64_t i = 0; i < a->plane; i++) y[i] = x[i] * s + t;
  }
}

SQ_KERNEL_FN(sq_kern_instancenormalization) {
  (void)nin, (void)nout, (void)err;
  inorm_t a = {in[0].data,
               in[1].data,
               in[2].data,
               out[0].data,
               in[0].dims[1],
               1,
               sq_attr_float(node, "epsilon", 1e-5f)};
  for (int d = 2; d < in[0].rank; d++) a.plane *= in[0].dims[d];
  sq_cpu_parallel_for(cpu, in[0].dims[0] * a.c, 1, inorm_range, &a);
  return 0;
}

/* ---- LayerNormalization ---- */
SQ_SHAPE_FN(sq_shape_layernormalization) {
  if (nin < 2) return sq_node_error(err, SQ_EMODEL_LOAD, node, "needs X and scale");
  int axis = sq_axis(sq_attr_int(node, "axis", -1), in[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  sq_view_t norm = {.rank = in[0].rank - axis};
  memcpy(norm.dims, in[0].dims + axis, sizeof(int64_t) * (size_t)norm.rank);
  for (int k = 0; k < nin && k < 3; k++) {
    if (!sq_view_present(&in[k])) continue;
    if (in[k].dtype != SQ_DT_FLOAT)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[k].dtype));
    sq_view_t b;
    if (k > 0 && (in[k].rank > norm.rank || sq_broadcast_shape(&norm, &in[k], &b) ||
                  memcmp(b.dims, norm.dims, sizeof(int64_t) * (size_t)norm.rank) != 0))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "input %d does not broadcast", k);
  }
  out[0] = in[0];
  out[0].data = NULL;
  for (int k = 1; k < nout && k < 3; k++) { /* Mean, InvStdDev: X's shape, 1 from axis on */
    out[k] = out[0];
    for (int d = axis; d < in[0].rank; d++) out[k].dims[d] = 1;
  }
  return 0;
}

typedef struct {
  const float *x, *scale, *bias; /* scale/bias expanded to d elements */
  float *y, *mean, *inv;
  int64_t d;
  float eps;
} lnorm_t;

static void lnorm_range(void *arg, int64_t b, int64_t e) {
  const lnorm_t *a = arg;
  for (int64_t r = b; r < e; r++) {
    const float *x = a->x + r * a->d;
    float *y = a->y + r * a->d;
    float m, inv;
    moments(x, a->d, a->eps, &m, &inv);
    for (int64_t i = 0; i < a->d; i++)
      y[i] = (x[i] - m) * inv * a->scale[i] + (a->bias ? a->bias[i] : 0.0f);
    if (a->mean) a->mean[r] = m;
    if (a->inv) a->inv[r] = inv;
  }
}

/* Writes v broadcast to the normalized shape into dst (d elements). */
static void expand_to(const sq_view_t *v, const sq_view_t *norm, float *dst) {
  int64_t st[SQ_MAX_DIMS], d = sq_view_numel(norm);
  sq_broadcast_strides(v, norm, st);
  const float *src = v->data;
  for (int64_t i = 0; i < d; i++) {
    int64_t rem = i, off = 0;
    for (int k = norm->rank - 1; k >= 0; k--) {
      off += (rem % norm->dims[k]) * st[k];
      rem /= norm->dims[k];
    }
    dst[i] = src[off];
  }
}

SQ_KERNEL_FN(sq_kern_layernormalization) {
  int axis = sq_axis(sq_attr_int(node, "axis", -1), in[0].rank);
  sq_view_t norm = {.rank = in[0].rank - axis};
  memcpy(norm.dims, in[0].dims + axis, sizeof(int64_t) * (size_t)norm.rank);
  int64_t d = sq_view_numel(&norm), rows = 1;
  for (int k = 0; k < axis; k++) rows *= in[0].dims[k];
  bool has_b = nin > 2 && sq_view_present(&in[2]);
  float *tmp = sq_cpu_scratch(cpu, (size_t)(2 * d + 1) * sizeof(float));
  if (!tmp) return sq_node_error(err, SQ_ENOMEM, node, "scratch");
  expand_to(&in[1], &norm, tmp);
  if (has_b) expand_to(&in[2], &norm, tmp + d);
  lnorm_t a = {in[0].data,
               tmp,
               has_b ? tmp + d : NULL,
               out[0].data,
               nout > 1 && out[1].data ? out[1].data : NULL,
               nout > 2 && out[2].data ? out[2].data : NULL,
               d,
               sq_attr_float(node, "epsilon", 1e-5f)};
  sq_cpu_parallel_for(cpu, rows, 1 + (1 << 12) / (d + 1), lnorm_range, &a);
  return 0;
}

/* ---- LRN: y = x / (bias + alpha / size * sum of x^2 over a window of channels)^beta; the
 * window of channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped ---- */
SQ_SHAPE_FN(sq_shape_lrn) {
  if (nin < 1 || in[0].dtype != SQ_DT_FLOAT || in[0].rank < 3)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "float32 input of rank >= 3 only");
  if (sq_attr_int(node, "size", 0) < 1)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "size must be >= 1");
  return sq_shape_same(node, in, nin, out, nout, err);
}

typedef struct {
  const float *x;
  float *y;
  int64_t c, plane, lo, hi; /* window offsets: [c - lo, c + hi] */
  float alpha, beta, bias;
  int64_t size;
} lrn_t;

static void lrn_range(void *arg, int64_t b, int64_t e) {
  const lrn_t *a = arg;
  for (int64_t p = b; p < e; p++) { /* p = (n, c) plane */
    int64_t n = p / a->c, ch = p % a->c;
    int64_t c0 = ch - a->lo < 0 ? 0 : ch - a->lo, c1 = ch + a->hi >= a->c ? a->c - 1 : ch + a->hi;
    const float *x = a->x + p * a->plane;
    float *y = a->y + p * a->plane;
    for (int64_t i = 0; i < a->plane; i++) {
      double s = 0;
      for (int64_t k = c0; k <= c1; k++) {
        double v = a->x[(n * a->c + k) * a->plane + i];
        s += v * v;
      }
      y[i] = (float)((double)x[i] /
                     pow((double)a->bias + (double)a->alpha / (double)a->size * s, a->beta));
    }
  }
}

SQ_KERNEL_FN(sq_kern_lrn) {
  int64_t size = sq_attr_int(node, "size", 1), plane = 1;
  for (int d = 2; d < in[0].rank; d++) plane *= in[0].dims[d];
  lrn_t a = {in[0].data,
             out[0].data,
             in[0].dims[1],
             plane,
             (size - 1) / 2,
             size - 1 - (size - 1) / 2,
             sq_attr_float(node, "alpha", 1e-4f),
             sq_attr_float(node, "beta", 0.75f),
             sq_attr_float(node, "bias", 1.0f),
             size};
  sq_cpu_parallel_for(cpu, in[0].dims[0] * in[0].dims[1], 1, lrn_range, &a);
  return 0;
}
