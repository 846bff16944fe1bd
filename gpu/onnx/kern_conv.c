/* kern_conv.c: Conv and ConvTranspose geometry (attributes, auto_pad, output size: shared by
 * every backend) and their reference kernels: im2col + sgemm per image and group (tiled over
 * output rows), ConvTranspose as sgemm + col2im, bias and activation in one pass after. The cpu
 * backend runs convolutions on oneDNN (cpu_dnnl_ops.c); these kernels serve plan-time folding
 * and the cases oneDNN declines. Executor thread; sgemm is oneDNN's (same OpenMP team). */
#include <dnnl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define COL_LIMIT (1 << 22) /* floats in one im2col tile (16 MiB) */

static int get2(const sq_node_t *node, const char *name, int sp, int64_t def, int64_t *v) {
  const int64_t *a;
  size_t n = sq_attr_ints(node, name, &a);
  if (n == 0) {
    v[0] = v[1] = def;
    return 0;
  }
  if ((int)n != sp) return -1;
  if (sp == 1) {
    v[0] = def == 0 ? 0 : 1; /* 1-D runs as 2-D with a unit leading spatial dim */
    v[1] = a[0];
  } else {
    v[0] = a[0];
    v[1] = a[1];
  }
  return 0;
}

int sq_conv_params(const sq_node_t *node, const sq_view_t *x, const sq_view_t *w, bool transpose,
                   sq_conv_params_t *p, sq_error_t *err) {
  if (x->rank != 3 && x->rank != 4)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "only 1-D and 2-D convolutions");
  if (x->dtype != SQ_DT_FLOAT || w->dtype != SQ_DT_FLOAT || w->rank != x->rank)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "float32 input and weight of equal rank");
  int sp = x->rank - 2;
  memset(p, 0, sizeof *p);
  p->n = x->dims[0];
  p->c = x->dims[1];
  p->h = sp == 2 ? x->dims[2] : 1;
  p->w = x->dims[x->rank - 1];
  p->kh = sp == 2 ? w->dims[2] : 1;
  p->kw = w->dims[w->rank - 1];
  if (p->kh < 1 || p->kw < 1 || p->c < 1 || w->dims[0] < 1 || w->dims[1] < 1)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "empty kernel or channels");
  p->group = sq_attr_int(node, "group", 1);
  if (p->group < 1 || p->c % p->group)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "group %lld", (long long)p->group);
  int64_t s[2], d[2], pads[4], kshape[2], opad[2] = {0, 0};
  if (get2(node, "strides", sp, 1, s) || get2(node, "dilations", sp, 1, d) ||
      get2(node, "kernel_shape", sp, 0, kshape))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "strides/dilations/kernel_shape rank");
  if (sp == 1) s[0] = d[0] = 1;
  const int64_t *pa;
  size_t np = sq_attr_ints(node, "pads", &pa);
  if (np && np != (size_t)2 * sp) return sq_node_error(err, SQ_EMODEL_LOAD, node, "pads rank");
  pads[0] = sp == 2 && np ? pa[0] : 0;
  pads[1] = np ? pa[sp - 1] : 0;
  pads[2] = sp == 2 && np ? pa[2] : 0;
  pads[3] = np ? pa[2 * sp - 1] : 0;
  if (transpose) {
    p->m = w->dims[1] * p->group;
    if (w->dims[0] != p->c) return sq_node_error(err, SQ_EMODEL_LOAD, node, "weight dim 0");
    if (get2(node, "output_padding", sp, 0, opad))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "output_padding rank");
  } else {
    p->m = w->dims[0];
    if (w->dims[1] * p->group != p->c || p->m % p->group)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "weight shape does not match input");
  }
  if (sp == 1) opad[0] = 0;
  p->sh = s[0], p->sw = s[1], p->dh = d[0], p->dw = d[1];
  /* bounded so that no size arithmetic below can overflow, whatever the file says */
  const int64_t lim = INT64_C(1) << 20;
  for (int i = 0; i < 2; i++)
    if (s[i] < 1 || s[i] > lim || d[i] < 1 || d[i] > lim || opad[i] < 0 || opad[i] > lim ||
        pads[i] < 0 || pads[i] > lim || pads[i + 2] < 0 || pads[i + 2] > lim ||
        (i == 0 ? p->kh : p->kw) > lim)
      return sq_node_error(err, SQ_EMODEL_LOAD, node,
                           "strides/dilations/pads/output_padding out of range");
  const char *auto_pad = sq_attr_string(node, "auto_pad", "NOTSET");
  int64_t in[2] = {p->h, p->w}, k[2] = {p->kh, p->kw}, out[2];
  const int64_t *oshape;
  size_t nos = transpose ? sq_attr_ints(node, "output_shape", &oshape) : 0;
  if (nos && nos != (size_t)sp && nos != (size_t)sp + 2)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "output_shape has %zu values", nos);
  for (size_t i = 0; i < nos; i++)
    if (oshape[i] < 0 || oshape[i] > lim * lim)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "output_shape out of range");
  for (int i = 0; i < 2; i++) {
    int64_t ext = (k[i] - 1) * d[i] + 1;
    bool same = strcmp(auto_pad, "SAME_UPPER") == 0 || strcmp(auto_pad, "SAME_LOWER") == 0;
    bool upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    if (!transpose) {
      if (strcmp(auto_pad, "VALID") == 0) {
        pads[i] = pads[i + 2] = 0;
      } else if (same) {
        int64_t o = (in[i] + s[i] - 1) / s[i];
        int64_t total = (o - 1) * s[i] + ext - in[i];
        if (total < 0) total = 0;
        pads[i] = upper ? total / 2 : total - total / 2;
        pads[i + 2] = total - pads[i];
      }
      out[i] = (in[i] + pads[i] + pads[i + 2] - ext) / s[i] + 1;
      if (in[i] + pads[i] + pads[i + 2] < ext) out[i] = 0;
    } else {
      int64_t want = -1;
      if (nos)
        want = sp == 1 ? (i == 0 ? 1 : oshape[nos - 1]) : oshape[nos - 2 + i];
      else if (same)
        want = in[i] * s[i];
      if (strcmp(auto_pad, "VALID") == 0) pads[i] = pads[i + 2] = 0;
      if (want >= 0) {
        int64_t total = s[i] * (in[i] - 1) + opad[i] + ext - want;
        if (total < 0) total = 0; /* larger output: extra rows stay bias-only */
        pads[i] = upper ? total / 2 : total - total / 2;
        pads[i + 2] = total - pads[i];
        out[i] = want;
      } else {
        out[i] = s[i] * (in[i] - 1) + opad[i] + ext - pads[i] - pads[i + 2];
      }
    }
    if (out[i] < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "negative output size");
  }
  if ((kshape[0] && kshape[0] != p->kh) || (kshape[1] && kshape[1] != p->kw))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "kernel_shape differs from the weight");
  p->ph = pads[0], p->pw = pads[1], p->ph_end = pads[2], p->pw_end = pads[3];
  p->oh = out[0], p->ow = out[1];
  return 0;
}

static int conv_shape(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                      bool transpose, sq_error_t *err) {
  if (nin < 2 || !sq_view_present(&in[1]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "needs X and W");
  sq_conv_params_t p;
  int rc = sq_conv_params(node, &in[0], &in[1], transpose, &p, err);
  if (rc) return rc;
  if (nin > 2 && sq_view_present(&in[2]) &&
      (in[2].rank != 1 || in[2].dims[0] != p.m || in[2].dtype != SQ_DT_FLOAT))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "bias shape");
  out[0].dtype = SQ_DT_FLOAT;
  out[0].rank = in[0].rank;
  out[0].dims[0] = p.n;
  out[0].dims[1] = p.m;
  if (in[0].rank == 4) out[0].dims[2] = p.oh;
  out[0].dims[out[0].rank - 1] = p.ow;
  return 0;
}

int sq_shape_conv(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                  sq_error_t *err) {
  return conv_shape(node, in, nin, out, false, err);
}

int sq_shape_convtranspose(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                           int nout, sq_error_t *err) {
  return conv_shape(node, in, nin, out, true, err);
}

/* ---- Conv ---- */
typedef struct {
  const sq_conv_params_t *p;
  const float *x; /* this image and group: [cg, h, w] */
  float *col;     /* [cg*kh*kw, rows*ow] */
  int64_t row0, rows;
} im2col_t;

/* First and one-past-last output column whose input column (ox*s - pad + off) is inside
 * [0, w): the row is zeros, a dense copy, zeros, with no per-pixel bounds test. */
static void valid_cols(int64_t w, int64_t ow, int64_t s, int64_t start, int64_t *lo, int64_t *hi) {
  int64_t l = start >= 0 ? 0 : (-start + s - 1) / s;
  int64_t h = w - 1 - start < 0 ? 0 : (w - 1 - start) / s + 1;
  *lo = l < ow ? l : ow;
  *hi = h < *lo ? *lo : h > ow ? ow : h;
}

static void im2col_range(void *arg, int64_t b, int64_t e) {
  const im2col_t *a = arg;
  const sq_conv_params_t *p = a->p;
  int64_t len = a->rows * p->ow;
  for (int64_t r = b; r < e; r++) { /* r = (c, ky, kx) */
    int64_t kx = r % p->kw, ky = (r / p->kw) % p->kh, c = r / (p->kw * p->kh);
    const float *xc = a->x + c * p->h * p->w;
    float *dst = a->col + r * len;
    int64_t start = -p->pw + kx * p->dw, lo, hi;
    valid_cols(p->w, p->ow, p->sw, start, &lo, &hi);
    for (int64_t oy = a->row0; oy < a->row0 + a->rows; oy++, dst += p->ow) {
      int64_t iy = oy * p->sh - p->ph + ky * p->dh;
      if (iy < 0 || iy >= p->h) {
        memset(dst, 0, (size_t)p->ow * sizeof(float));
        continue;
      }
      const float *xr = xc + iy * p->w; /* input column of ox: start + ox * sw */
      if (lo > 0) memset(dst, 0, (size_t)lo * sizeof(float));
      if (p->sw == 1) {
        memcpy(dst + lo, xr + start + lo, (size_t)(hi - lo) * sizeof(float));
      } else {
        for (int64_t ox = lo; ox < hi; ox++) dst[ox] = xr[start + ox * p->sw];
      }
      if (hi < p->ow) memset(dst + hi, 0, (size_t)(p->ow - hi) * sizeof(float));
    }
  }
}

typedef struct {
  float *y;
  const float *bias;
  int64_t plane;
  const sq_node_t *node;
} epilogue_t;

static void epilogue_range(void *arg, int64_t b, int64_t e) {
  const epilogue_t *a = arg;
  for (int64_t ch = b; ch < e; ch++) {
    float *y = a->y + ch * a->plane;
    float bv = a->bias ? a->bias[ch] : 0.0f;
    if (a->node->act == SQ_ACT_RELU) { /* the common case in one pass over the plane */
      for (int64_t i = 0; i < a->plane; i++) {
        float v = y[i] + bv;
        y[i] = v > 0 ? v : 0;
      }
      continue;
    }
    if (a->bias)
      for (int64_t i = 0; i < a->plane; i++) y[i] += bv;
    sq_act_apply(a->node->act, a->node->act_alpha, a->node->act_beta, y, a->plane);
  }
}

int sq_kern_conv(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                 const sq_view_t *out, int nout, sq_error_t *err) {
  sq_conv_params_t p;
  int rc = sq_conv_params(node, &in[0], &in[1], false, &p, err);
  if (rc) return rc;
  const float *x = in[0].data, *w = in[1].data;
  const float *bias = nin > 2 && sq_view_present(&in[2]) ? in[2].data : NULL;
  float *y = out[0].data;
  int64_t cg = p.c / p.group, mg = p.m / p.group, k = cg * p.kh * p.kw, plane = p.oh * p.ow;
  if (plane == 0 || p.n == 0) return 0; /* empty output: nothing to compute */
  int64_t rows = p.oh;
  if (k * p.ow > 0) {
    rows = COL_LIMIT / (k * p.ow);
    if (rows < 1) rows = 1;
    if (rows > p.oh) rows = p.oh;
  }
  float *col = sq_cpu_scratch(cpu, (size_t)(k * rows * p.ow) * sizeof(float));
  if (!col) return sq_node_error(err, SQ_ENOMEM, node, "im2col buffer");
  for (int64_t n = 0; n < p.n; n++)
    for (int64_t g = 0; g < p.group; g++) {
      const float *xg = x + (n * p.c + g * cg) * p.h * p.w;
      const float *wg = w + g * mg * k;
      float *yg = y + (n * p.m + g * mg) * plane;
      for (int64_t r0 = 0; r0 < p.oh; r0 += rows) {
        int64_t nr = p.oh - r0 < rows ? p.oh - r0 : rows;
        im2col_t a = {&p, xg, col, r0, nr};
        sq_cpu_parallel_for(cpu, k, 1, im2col_range, &a);
        dnnl_sgemm('N', 'N', mg, nr * p.ow, k, 1.0f, wg, k, col, nr * p.ow, 0.0f, yg + r0 * p.ow,
                   plane);
      }
    }
  if (bias || node->act) {
    epilogue_t e = {y, NULL, plane, node};
    for (int64_t n = 0; n < p.n; n++) {
      e.y = y + n * p.m * plane;
      e.bias = bias;
      sq_cpu_parallel_for(cpu, p.m, 1, epilogue_range, &e);
    }
  }
  return 0;
}

/* ---- ConvTranspose: col = W_g^T x X_g, then col2im scatters (adds) into the output ---- */
typedef struct {
  const sq_conv_params_t *p;
  const float *col; /* [mg*kh*kw, rows*w] for input rows row0.. */
  float *y;         /* this image and group: [mg, oh, ow] */
  int64_t row0, rows;
} col2im_t;

static void col2im_range(void *arg, int64_t b, int64_t e) {
  const col2im_t *a = arg;
  const sq_conv_params_t *p = a->p;
  int64_t len = a->rows * p->w;
  for (int64_t m = b; m < e; m++) /* one output channel per task: no write conflicts */
    for (int64_t ky = 0; ky < p->kh; ky++)
      for (int64_t kx = 0; kx < p->kw; kx++) {
        const float *src = a->col + ((m * p->kh + ky) * p->kw + kx) * len;
        float *ym = a->y + m * p->oh * p->ow;
        for (int64_t iy = a->row0; iy < a->row0 + a->rows; iy++) {
          int64_t oy = iy * p->sh - p->ph + ky * p->dh;
          if (oy < 0 || oy >= p->oh) {
            src += p->w;
            continue;
          }
          float *yr = ym + oy * p->ow;
          int64_t ox = -p->pw + kx * p->dw;
          for (int64_t ix = 0; ix < p->w; ix++, ox += p->sw)
            if (ox >= 0 && ox < p->ow) yr[ox] += src[ix];
          src += p->w;
        }
      }
}

int sq_kern_convtranspose(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                          const sq_view_t *out, int nout, sq_error_t *err) {
  sq_conv_params_t p;
  int rc = sq_conv_params(node, &in[0], &in[1], true, &p, err);
  if (rc) return rc;
  const float *x = in[0].data, *w = in[1].data;
  const float *bias = nin > 2 && sq_view_present(&in[2]) ? in[2].data : NULL;
  float *y = out[0].data;
  int64_t cg = p.c / p.group, mg = p.m / p.group, kk = mg * p.kh * p.kw;
  int64_t plane = p.oh * p.ow, iplane = p.h * p.w;
  memset(y, 0, (size_t)(p.n * p.m * plane) * sizeof(float));
  int64_t rows = p.h;
  if (kk * p.w > 0) {
    rows = COL_LIMIT / (kk * p.w);
    if (rows < 1) rows = 1;
    if (rows > p.h) rows = p.h;
  }
  float *col = iplane ? sq_cpu_scratch(cpu, (size_t)(kk * rows * p.w) * sizeof(float)) : NULL;
  if (iplane && !col) return sq_node_error(err, SQ_ENOMEM, node, "col buffer");
  for (int64_t n = 0; n < p.n && iplane; n++)
    for (int64_t g = 0; g < p.group; g++) {
      const float *xg = x + (n * p.c + g * cg) * iplane;
      const float *wg = w + g * cg * kk; /* [cg, mg*kh*kw] */
      float *yg = y + (n * p.m + g * mg) * plane;
      for (int64_t r0 = 0; r0 < p.h; r0 += rows) {
        int64_t nr = p.h - r0 < rows ? p.h - r0 : rows;
        dnnl_sgemm('T', 'N', kk, nr * p.w, cg, 1.0f, wg, kk, xg + r0 * p.w, iplane, 0.0f, col,
                   nr * p.w);
        col2im_t a = {&p, col, yg, r0, nr};
        sq_cpu_parallel_for(cpu, mg, 1, col2im_range, &a);
      }
    }
  if (bias || node->act) {
    epilogue_t e = {y, bias, plane, node};
    for (int64_t n = 0; n < p.n; n++) {
      e.y = y + n * p.m * plane;
      sq_cpu_parallel_for(cpu, p.m, 1, epilogue_range, &e);
    }
  }
  return 0;
}
