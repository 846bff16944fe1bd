/* cpu_ops_quant.c: the ops of dynamically quantized exports (onnxruntime.quantization's
 * quantize_dynamic, torch's dynamic quantization exported to ONNX): DynamicQuantizeLinear
 * (float -> uint8 with a per-tensor scale and zero point computed from the data), ConvInteger
 * and MatMulInteger (8-bit operands minus their zero points, int32 accumulation). The float
 * scale Mul and the Casts around them are ordinary ops. Reference kernels, planes/rows in
 * parallel over the pool. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

static bool is_8bit(int dt) {
  return dt == SQ_DT_UINT8 || dt == SQ_DT_INT8;
}

static int32_t load8(const sq_view_t *v, int64_t i) {
  return v->dtype == SQ_DT_UINT8 ? ((const uint8_t *)v->data)[i] : ((const int8_t *)v->data)[i];
}

/* zero point k of an optional zero-point input: scalar, or one per row/channel (n values) */
static int32_t zero_point(const sq_view_t *z, int64_t k) {
  if (!z || !sq_view_present(z) || !z->data) return 0;
  return load8(z, sq_view_numel(z) == 1 ? 0 : k);
}

static int check_zp(const sq_node_t *node, const sq_view_t *z, int dtype, int64_t n,
                    sq_error_t *err) {
  if (!sq_view_present(z)) return 0;
  if (z->dtype != dtype)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "zero point type differs from its input");
  int64_t c = sq_view_numel(z);
  if (c != 1 && c != n)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "zero point of %lld values", (long long)c);
  return 0;
}

/* ---- DynamicQuantizeLinear ---- */
SQ_SHAPE_FN(sq_shape_dynamicquantizelinear) {
  if (nin < 1 || in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "float32 input only");
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dtype = SQ_DT_UINT8;
  if (nout > 1) {
    out[1].dtype = SQ_DT_FLOAT;
    out[1].rank = 0;
  }
  if (nout > 2) {
    out[2].dtype = SQ_DT_UINT8;
    out[2].rank = 0;
  }
  return 0;
}

typedef struct {
  const float *x;
  uint8_t *y;
  float scale;
  float zp;
} dql_t;

static void dql_range(void *arg, int64_t b, int64_t e) {
  const dql_t *a = arg;
  for (int64_t i = b; i < e; i++) {
    float q = nearbyintf(a->x[i] / a->scale) + a->zp; /* ties to even, as the spec rounds */
    a->y[i] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
  }
}

SQ_KERNEL_FN(sq_kern_dynamicquantizelinear) {
  const float *x = in[0].data;
  int64_t n = sq_view_numel(&in[0]);
  float lo = 0, hi = 0; /* the range always includes 0 */
  for (int64_t i = 0; i < n; i++) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  float scale = (hi - lo) / 255.0f;
  if (scale == 0) scale = 1; /* all zeros: any scale maps them to the zero point */
  float zp = nearbyintf(-lo / scale);
  zp = zp < 0 ? 0 : zp > 255 ? 255 : zp;
  dql_t a = {x, out[0].data, scale, zp};
  sq_cpu_parallel_for(cpu, n, 16384, dql_range, &a);
  if (nout > 1 && out[1].data) *(float *)out[1].data = scale;
  if (nout > 2 && out[2].data) *(uint8_t *)out[2].data = (uint8_t)zp;
  return 0;
}

/* ---- MatMulInteger: [..., M, K] x [K, N] (or equal batch dims) -> int32 ---- */
SQ_SHAPE_FN(sq_shape_matmulinteger) {
  if (nin < 2 || !is_8bit(in[0].dtype) || !is_8bit(in[1].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "8-bit A and B only");
  const sq_view_t *a = &in[0], *b = &in[1];
  if (a->rank < 2 || b->rank < 2 || (b->rank > 2 && b->rank != a->rank))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "A rank >= 2, B rank 2 or A's rank");
  int64_t k = a->dims[a->rank - 1];
  if (b->dims[b->rank - 2] != k)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "inner dims differ");
  for (int d = 0; b->rank > 2 && d < a->rank - 2; d++)
    if (a->dims[d] != b->dims[d])
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "batch dims must be equal");
  int rc = nin > 2 ? check_zp(node, &in[2], a->dtype, a->dims[a->rank - 2], err) : 0;
  if (!rc && nin > 3) rc = check_zp(node, &in[3], b->dtype, b->dims[b->rank - 1], err);
  if (rc) return rc;
  out[0].dtype = SQ_DT_INT32;
  out[0].rank = a->rank;
  memcpy(out[0].dims, a->dims, sizeof a->dims);
  out[0].dims[a->rank - 1] = b->dims[b->rank - 1];
  return 0;
}

typedef struct {
  const sq_view_t *a, *b, *az, *bz;
  int32_t *y;
  int64_t m, k, n;
  bool b_batched;
} mmi_t;

static void mmi_range(void *arg, int64_t lo, int64_t hi) {
  const mmi_t *p = arg;
  for (int64_t r = lo; r < hi; r++) { /* r = batch * m + row */
    int64_t batch = r / p->m, row = r % p->m;
    int64_t ao = r * p->k, bo = p->b_batched ? batch * p->k * p->n : 0;
    int32_t za = zero_point(p->az, row);
    int32_t *y = p->y + r * p->n;
    for (int64_t j = 0; j < p->n; j++) {
      int32_t zb = zero_point(p->bz, j), acc = 0;
      for (int64_t t = 0; t < p->k; t++)
        acc += (load8(p->a, ao + t) - za) * (load8(p->b, bo + t * p->n + j) - zb);
      y[j] = acc;
    }
  }
}

SQ_KERNEL_FN(sq_kern_matmulinteger) {
  const sq_view_t *a = &in[0], *b = &in[1];
  int64_t m = a->dims[a->rank - 2];
  mmi_t p = {a,           b, nin > 2 ? &in[2] : NULL, nin > 3 ? &in[3] : NULL,
             out[0].data, m, a->dims[a->rank - 1],    b->dims[b->rank - 1],
             b->rank > 2};
  int64_t rows = m ? sq_view_numel(a) / a->dims[a->rank - 1] : 0;
  if (a->dims[a->rank - 1] == 0) rows = sq_view_numel(&out[0]) / (p.n ? p.n : 1);
  sq_cpu_parallel_for(cpu, rows, 4, mmi_range, &p);
  return 0;
}

/* ---- ConvInteger: Conv's geometry on 8-bit x and w minus their zero points -> int32 ---- */
static int convint_params(const sq_node_t *node, const sq_view_t *in, int nin, sq_conv_params_t *c,
                          sq_error_t *err) {
  if (nin < 2 || !is_8bit(in[0].dtype) || !is_8bit(in[1].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "8-bit x and w only");
  sq_view_t x = in[0], w = in[1]; /* the geometry code reads float views */
  x.dtype = w.dtype = SQ_DT_FLOAT;
  int rc = sq_conv_params(node, &x, &w, false, c, err);
  if (!rc && nin > 2) rc = check_zp(node, &in[2], in[0].dtype, 1, err);
  if (!rc && nin > 3) rc = check_zp(node, &in[3], in[1].dtype, c->m, err);
  return rc;
}

SQ_SHAPE_FN(sq_shape_convinteger) {
  sq_conv_params_t c;
  int rc = convint_params(node, in, nin, &c, err);
  if (rc) return rc;
  out[0].dtype = SQ_DT_INT32;
  out[0].rank = in[0].rank;
  out[0].dims[0] = c.n;
  out[0].dims[1] = c.m;
  if (in[0].rank == 4) out[0].dims[2] = c.oh;
  out[0].dims[out[0].rank - 1] = c.ow;
  return 0;
}

typedef struct {
  const sq_conv_params_t *c;
  const sq_view_t *x, *w, *xz, *wz;
  int32_t *y;
} ci_t;

static void ci_range(void *arg, int64_t lo, int64_t hi) {
  const ci_t *a = arg;
  const sq_conv_params_t *c = a->c;
  int64_t cg = c->c / c->group, mg = c->m / c->group;
  int32_t zx = zero_point(a->xz, 0);
  for (int64_t pl = lo; pl < hi; pl++) { /* pl = n * M + m */
    int64_t n = pl / c->m, m = pl % c->m, g = m / mg;
    int32_t zw = zero_point(a->wz, m);
    int32_t *y = a->y + pl * c->oh * c->ow;
    for (int64_t oy = 0; oy < c->oh; oy++)
      for (int64_t ox = 0; ox < c->ow; ox++) {
        int32_t acc = 0;
        for (int64_t ci = 0; ci < cg; ci++) {
          int64_t xc = (n * c->c + g * cg + ci) * c->h * c->w;
          int64_t wc = (m * cg + ci) * c->kh * c->kw;
          for (int64_t ky = 0; ky < c->kh; ky++) {
            int64_t iy = oy * c->sh - c->ph + ky * c->dh;
            if (iy < 0 || iy >= c->h) continue; /* padding: x equals its zero point there */
            for (int64_t kx = 0; kx < c->kw; kx++) {
              int64_t ix = ox * c->sw - c->pw + kx * c->dw;
              if (ix < 0 || ix >= c->w) continue;
              acc += (load8(a->x, xc + iy * c->w + ix) - zx) *
                     (load8(a->w, wc + ky * c->kw + kx) - zw);
            }
          }
        }
        y[oy * c->ow + ox] = acc;
      }
  }
}

SQ_KERNEL_FN(sq_kern_convinteger) {
  sq_conv_params_t c;
  int rc = convint_params(node, in, nin, &c, err);
  if (rc) return rc;
  ci_t a = {&c, &in[0], &in[1], nin > 2 ? &in[2] : NULL, nin > 3 ? &in[3] : NULL, out[0].data};
  sq_cpu_parallel_for(cpu, c.n * c.m, 1, ci_range, &a);
  return 0;
}
