/* kern_conv.c: Conv and ConvTranspose (1-D and 2-D) on the CPU: im2col + OpenBLAS sgemm per
 * group, tiled over output rows so the column buffer stays small on large images, with a 1x1
 * fast path that feeds the input to sgemm directly and a direct depthwise loop. Bias and a
 * fused activation are applied in one pass after the GEMM. Executor thread; im2col/col2im fan out
 * over the pool, sgemm over OpenBLAS's. */
#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kern_conv.h"

#define COL_LIMIT (1 << 22) /* floats in one im2col tile (16 MiB) */

typedef struct {
  int64_t n, c, h, w; /* input */
  int64_t m, kh, kw;  /* output channels, kernel */
  int64_t oh, ow;     /* output */
  int64_t sh, sw, dh, dw, ph, pw, ph_end, pw_end;
  int64_t group;
} conv_t;

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

/* Reads attributes and input shapes into p; transpose selects ConvTranspose's rules. */
static int conv_params(const sq_node_t *node, const sq_view_t *x, const sq_view_t *w,
                       bool transpose, conv_t *p, sq_error_t *err) {
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
  conv_t p;
  int rc = conv_params(node, &in[0], &in[1], transpose, &p, err);
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
  const conv_t *p;
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
  const conv_t *p = a->p;
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

/* Depthwise (one input channel per group): a direct loop per output plane beats a 1-row GEMM. */
typedef struct {
  const conv_t *p;
  const float *x, *w, *bias;
  float *y;
  const sq_node_t *node;
} dw_t;

static void depthwise_range(void *arg, int64_t b, int64_t e) {
  const dw_t *a = arg;
  const conv_t *p = a->p;
  int64_t mg = p->m / p->group;
  for (int64_t plane = b; plane < e; plane++) { /* plane = n * M + o */
    int64_t n = plane / p->m, o = plane % p->m, g = o / mg;
    const float *x = a->x + (n * p->c + g) * p->h * p->w, *w = a->w + o * p->kh * p->kw;
    float *y = a->y + plane * p->oh * p->ow, bv = a->bias ? a->bias[o] : 0.0f;
    for (int64_t oy = 0; oy < p->oh; oy++)
      for (int64_t ox = 0; ox < p->ow; ox++) {
        float acc = 0;
        for (int64_t ky = 0; ky < p->kh; ky++) {
          int64_t iy = oy * p->sh - p->ph + ky * p->dh;
          if (iy < 0 || iy >= p->h) continue;
          const float *xr = x + iy * p->w, *wr = w + ky * p->kw;
          for (int64_t kx = 0; kx < p->kw; kx++) {
            int64_t ix = ox * p->sw - p->pw + kx * p->dw;
            if (ix >= 0 && ix < p->w) acc += xr[ix] * wr[kx];
          }
        }
        y[oy * p->ow + ox] = acc + bv;
      }
    sq_act_apply(a->node->act, a->node->act_alpha, a->node->act_beta, y, p->oh * p->ow);
  }
}

/* SEGQ_CONV_WINOGRAD=0 sends 3x3 convolutions through im2col too (A/B timing and accuracy
 * checks against the reference path); read once. */
static int winograd_enabled(void) {
  static atomic_int enabled = -1; /* executor threads of several contexts may race here */
  int e = atomic_load_explicit(&enabled, memory_order_relaxed);
  if (e < 0) {
    const char *v = getenv("SEGQ_CONV_WINOGRAD");
    e = !(v && strcmp(v, "0") == 0);
    atomic_store_explicit(&enabled, e, memory_order_relaxed);
  }
  return e;
}

int sq_kern_conv(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                 const sq_view_t *out, int nout, sq_error_t *err) {
  conv_t p;
  int rc = conv_params(node, &in[0], &in[1], false, &p, err);
  if (rc) return rc;
  const float *x = in[0].data, *w = in[1].data;
  const float *bias = nin > 2 && sq_view_present(&in[2]) ? in[2].data : NULL;
  float *y = out[0].data;
  int64_t cg = p.c / p.group, mg = p.m / p.group, k = cg * p.kh * p.kw, plane = p.oh * p.ow;
  if (plane == 0 || p.n == 0) return 0; /* empty output: nothing to compute */
  if (cg == 1 && p.group > 1) {
    dw_t a = {&p, x, w, bias, y, node};
    sq_cpu_parallel_for(cpu, p.n * p.m, 1, depthwise_range, &a);
    return 0;
  }
  if (p.group == 1 && p.kh == 3 && p.kw == 3 && p.sh == 1 && p.sw == 1 && p.dh == 1 &&
      p.dw == 1 && in[0].rank == 4 && winograd_enabled()) {
    sq_conv3x3_t g = {p.n, p.c, p.h, p.w, p.m, p.oh, p.ow, p.ph, p.pw};
    return sq_conv_winograd(cpu, node, &g, x, w, bias, y, err);
  }
  bool direct = p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0 &&
                p.ph_end == 0 && p.pw_end == 0;
  int64_t rows = p.oh;
  if (!direct && k * p.ow > 0) {
    rows = COL_LIMIT / (k * p.ow);
    if (rows < 1) rows = 1;
    if (rows > p.oh) rows = p.oh;
  }
  float *col =
      direct || plane == 0 ? NULL : sq_cpu_scratch(cpu, (size_t)(k * rows * p.ow) * sizeof(float));
  if (!direct && plane && !col) return sq_node_error(err, SQ_ENOMEM, node, "im2col buffer");
  for (int64_t n = 0; n < p.n; n++)
    for (int64_t g = 0; g < p.group; g++) {
      const float *xg = x + (n * p.c + g * cg) * p.h * p.w;
      const float *wg = w + g * mg * k;
      float *yg = y + (n * p.m + g * mg) * plane;
      if (direct) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mg, (int)plane, (int)k, 1.0f,
                    wg, (int)k, xg, (int)plane, 0.0f, yg, (int)plane);
        continue;
      }
      for (int64_t r0 = 0; r0 < p.oh; r0 += rows) {
        int64_t nr = p.oh - r0 < rows ? p.oh - r0 : rows;
        im2col_t a = {&p, xg, col, r0, nr};
        sq_cpu_parallel_for(cpu, k, 1, im2col_range, &a);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mg, (int)(nr * p.ow), (int)k,
                    1.0f, wg, (int)k, col, (int)(nr * p.ow), 0.0f, yg + r0 * p.ow, (int)plane);
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
  const conv_t *p;
  const float *col; /* [mg*kh*kw, rows*w] for input rows row0.. */
  float *y;         /* this image and group: [mg, oh, ow] */
  int64_t row0, rows;
} col2im_t;

static void col2im_range(void *arg, int64_t b, int64_t e) {
  const col2im_t *a = arg;
  const conv_t *p = a->p;
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

/* Kernel == stride, no padding or dilation (UNet upsampling): every output pixel comes from
 * exactly one input pixel and one tap, so col rows are copied to their place with the bias and
 * activation, with no zeroing and no accumulation. */
typedef struct {
  const conv_t *p;
  const float *col; /* [m*kh*kw, rows*w] for input rows row0.. */
  const float *bias;
  float *y; /* this image: [m, oh, ow] */
  int64_t row0, rows;
  const sq_node_t *node;
} scatter_t;

static void scatter_range(void *arg, int64_t b, int64_t e) {
  const scatter_t *a = arg;
  const conv_t *p = a->p;
  int64_t len = a->rows * p->w, kh = p->kh, kw = p->kw;
  for (int64_t m = b; m < e; m++) {
    float bv = a->bias ? a->bias[m] : 0.0f;
    for (int64_t iy = 0; iy < a->rows; iy++)
      for (int64_t ky = 0; ky < kh; ky++) {
        float *yr = a->y + (m * p->oh + (a->row0 + iy) * kh + ky) * p->ow;
        const float *src = a->col + (m * kh + ky) * kw * len + iy * p->w;
        bool relu = a->node->act == SQ_ACT_RELU;
        if (kw == 2) {
          sq_conv_interleave2(src, src + len, p->w, bv, relu, yr);
          if (a->node->act && !relu)
            sq_act_apply(a->node->act, a->node->act_alpha, a->node->act_beta, yr, p->ow);
          continue;
        }
        for (int64_t kx = 0; kx < kw; kx++, src += len)
          for (int64_t ix = 0; ix < p->w; ix++) yr[ix * kw + kx] = src[ix] + bv;
        if (relu) {
          for (int64_t i = 0; i < p->ow; i++) yr[i] = yr[i] > 0 ? yr[i] : 0;
        } else if (a->node->act) {
          sq_act_apply(a->node->act, a->node->act_alpha, a->node->act_beta, yr, p->ow);
        }
      }
  }
}

int sq_kern_convtranspose(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                          const sq_view_t *out, int nout, sq_error_t *err) {
  conv_t p;
  int rc = conv_params(node, &in[0], &in[1], true, &p, err);
  if (rc) return rc;
  const float *x = in[0].data, *w = in[1].data;
  const float *bias = nin > 2 && sq_view_present(&in[2]) ? in[2].data : NULL;
  float *y = out[0].data;
  int64_t cg = p.c / p.group, mg = p.m / p.group, kk = mg * p.kh * p.kw;
  int64_t plane = p.oh * p.ow, iplane = p.h * p.w;
  bool disjoint = p.group == 1 && p.kh == p.sh && p.kw == p.sw && p.dh == 1 && p.dw == 1 &&
                  p.ph == 0 && p.pw == 0 && p.oh == p.h * p.kh && p.ow == p.w * p.kw;
  if (!disjoint) memset(y, 0, (size_t)(p.n * p.m * plane) * sizeof(float));
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
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kk, (int)(nr * p.w), (int)cg,
                    1.0f, wg, (int)kk, xg + r0 * p.w, (int)iplane, 0.0f, col, (int)(nr * p.w));
        if (disjoint) {
          scatter_t a = {&p, col, bias, yg, r0, nr, node};
          sq_cpu_parallel_for(cpu, mg, 1, scatter_range, &a);
          continue;
        }
        col2im_t a = {&p, col, yg, r0, nr};
        sq_cpu_parallel_for(cpu, mg, 1, col2im_range, &a);
      }
    }
  if (!disjoint && (bias || node->act)) {
    epilogue_t e = {y, bias, plane, node};
    for (int64_t n = 0; n < p.n; n++) {
      e.y = y + n * p.m * plane;
      sq_cpu_parallel_for(cpu, p.m, 1, epilogue_range, &e);
    }
  }
  return 0;
}
