/* kern_pool.c: pooling geometry shared by the pooling ops (auto_pad, ceil_mode, dilations) and
 * the MaxPool kernel (with the optional Indices output). Executor thread; planes in parallel. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine_internal.h"

int sq_pool_params(const sq_node_t *node, const sq_view_t *x, sq_pool_t *p, sq_error_t *err) {
  if (x->rank != 3 && x->rank != 4)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "only 1-D and 2-D pooling");
  if (x->dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(x->dtype));
  int sp = x->rank - 2;
  memset(p, 0, sizeof *p);
  p->n = x->dims[0];
  p->c = x->dims[1];
  p->h = sp == 2 ? x->dims[2] : 1;
  p->w = x->dims[x->rank - 1];
  const int64_t *ks, *st, *dl, *pa;
  size_t nks = sq_attr_ints(node, "kernel_shape", &ks);
  size_t nst = sq_attr_ints(node, "strides", &st);
  size_t ndl = sq_attr_ints(node, "dilations", &dl);
  size_t npa = sq_attr_ints(node, "pads", &pa);
  if (nks != (size_t)sp || (nst && nst != (size_t)sp) || (ndl && ndl != (size_t)sp) ||
      (npa && npa != (size_t)2 * sp))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "kernel_shape/strides/dilations/pads rank");
  int64_t k[2] = {1, ks[sp - 1]}, s[2] = {1, nst ? st[sp - 1] : 1},
          d[2] = {1, ndl ? dl[sp - 1] : 1};
  int64_t pads[4] = {0, npa ? pa[sp - 1] : 0, 0, npa ? pa[2 * sp - 1] : 0};
  if (sp == 2) {
    k[0] = ks[0];
    s[0] = nst ? st[0] : 1;
    d[0] = ndl ? dl[0] : 1;
    pads[0] = npa ? pa[0] : 0;
    pads[2] = npa ? pa[2] : 0;
  }
  bool ceil_mode = sq_attr_int(node, "ceil_mode", 0) != 0;
  const char *auto_pad = sq_attr_string(node, "auto_pad", "NOTSET");
  int64_t in[2] = {p->h, p->w}, out[2];
  for (int i = 0; i < 2; i++) {
    const int64_t lim = INT64_C(1) << 20; /* no size arithmetic below can overflow */
    if (k[i] < 1 || s[i] < 1 || d[i] < 1 || k[i] > lim || s[i] > lim || d[i] > lim || pads[i] < 0 ||
        pads[i + 2] < 0 || pads[i] > lim || pads[i + 2] > lim)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "kernel/strides/dilations/pads out of range");
    int64_t ext = (k[i] - 1) * d[i] + 1;
    if (strcmp(auto_pad, "SAME_UPPER") == 0 || strcmp(auto_pad, "SAME_LOWER") == 0) {
      out[i] = (in[i] + s[i] - 1) / s[i];
      int64_t total = (out[i] - 1) * s[i] + ext - in[i];
      if (total < 0) total = 0;
      pads[i] = auto_pad[5] == 'U' ? total / 2 : total - total / 2;
      pads[i + 2] = total - pads[i];
    } else {
      if (strcmp(auto_pad, "VALID") == 0) pads[i] = pads[i + 2] = 0;
      int64_t span = in[i] + pads[i] + pads[i + 2] - ext;
      if (span < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "kernel larger than input");
      out[i] = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
      /* a window may not start in the end padding (same rule as PyTorch and ONNX reference) */
      if (ceil_mode && (out[i] - 1) * s[i] >= in[i] + pads[i]) out[i]--;
    }
  }
  p->kh = k[0], p->kw = k[1], p->sh = s[0], p->sw = s[1], p->dh = d[0], p->dw = d[1];
  p->ph = pads[0], p->pw = pads[1], p->ph_end = pads[2], p->pw_end = pads[3];
  p->oh = out[0], p->ow = out[1];
  return 0;
}

int sq_shape_pool(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                  sq_error_t *err) {
  sq_pool_t p;
  int rc = sq_pool_params(node, &in[0], &p, err);
  if (rc) return rc;
  for (int k = 0; k < nout; k++) {
    out[k].dtype = k == 0 ? SQ_DT_FLOAT : SQ_DT_INT64; /* MaxPool's Indices */
    out[k].rank = in[0].rank;
    out[k].dims[0] = p.n;
    out[k].dims[1] = p.c;
    if (in[0].rank == 4) out[k].dims[2] = p.oh;
    out[k].dims[out[k].rank - 1] = p.ow;
  }
  return 0;
}

typedef struct {
  const sq_pool_t *p;
  const float *x;
  float *y;
  int64_t *idx;
  bool col_major;
} maxpool_t;

static void maxpool_range(void *arg, int64_t b, int64_t e) {
  const maxpool_t *a = arg;
  const sq_pool_t *p = a->p;
  for (int64_t plane = b; plane < e; plane++) {
    const float *x = a->x + plane * p->h * p->w;
    float *y = a->y + plane * p->oh * p->ow;
    for (int64_t oy = 0; oy < p->oh; oy++)
      for (int64_t ox = 0; ox < p->ow; ox++) {
        float best = -INFINITY;
        int64_t at = -1;
        for (int64_t ky = 0; ky < p->kh; ky++) {
          int64_t iy = oy * p->sh - p->ph + ky * p->dh;
          if (iy < 0 || iy >= p->h) continue;
          for (int64_t kx = 0; kx < p->kw; kx++) {
            int64_t ix = ox * p->sw - p->pw + kx * p->dw;
            if (ix < 0 || ix >= p->w) continue;
            float v = x[iy * p->w + ix];
            if (at < 0 || v > best || (isnan(v) && !isnan(best))) { /* NaN wins */
              best = v;
              at = iy * p->w + ix;
            }
          }
        }
        y[oy * p->ow + ox] = best;
        if (a->idx) {
          int64_t iy = at >= 0 ? at / p->w : 0, ix = at >= 0 ? at % p->w : 0;
          a->idx[plane * p->oh * p->ow + oy * p->ow + ox] =
              plane * p->h * p->w + (a->col_major ? ix * p->h + iy : iy * p->w + ix);
        }
      }
  }
}

int sq_kern_maxpool(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                    const sq_view_t *out, int nout, sq_error_t *err) {
  sq_pool_t p;
  int rc = sq_pool_params(node, &in[0], &p, err);
  if (rc) return rc;
  maxpool_t a = {&p, in[0].data, out[0].data,
                 nout > 1 && sq_view_present(&out[1]) ? out[1].data : NULL,
                 sq_attr_int(node, "storage_order", 0) == 1};
  sq_cpu_parallel_for(cpu, p.n * p.c, 1, maxpool_range, &a);
  return 0;
}
