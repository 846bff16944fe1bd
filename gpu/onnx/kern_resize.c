/* kern_resize.c: Resize (opset 10 to 19 forms): nearest (4 rounding modes), linear and cubic,
 * every coordinate_transformation_mode, antialias, exclude_outside, axes and
 * keep_aspect_ratio_policy. Separable: one 1-D pass per resized axis, last axis first, the
 * same order as the ONNX reference, with weights computed once per output coordinate.
 * Executor thread; each pass fans out over the pool. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

static double view_get_f(const sq_view_t *v, int64_t i) {
  return v->dtype == SQ_DT_FLOAT ? ((const float *)v->data)[i] : (double)sq_view_get_int(v, i);
}

int sq_resize_params(const sq_node_t *node, const sq_view_t *in, int nin, sq_resize_params_t *r,
                     sq_error_t *err) {
  const sq_view_t *x = &in[0], *roi = NULL, *scales = NULL, *sizes = NULL;
  if (node->opset < 11) {
    scales = nin > 1 && sq_view_present(&in[1]) ? &in[1] : NULL;
  } else {
    roi = nin > 1 && sq_view_present(&in[1]) && sq_view_numel(&in[1]) ? &in[1] : NULL;
    scales = nin > 2 && sq_view_present(&in[2]) && sq_view_numel(&in[2]) ? &in[2] : NULL;
    sizes = nin > 3 && sq_view_present(&in[3]) && sq_view_numel(&in[3]) ? &in[3] : NULL;
  }
  if ((scales && !scales->data) || (sizes && !sizes->data) || (roi && !roi->data))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "scales/sizes/roi must be constant");
  if (!scales == !sizes) return sq_node_error(err, SQ_EMODEL_LOAD, node, "need scales xor sizes");
  if (x->dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(x->dtype));
  const int64_t *axes_attr;
  size_t naxes = sq_attr_ints(node, "axes", &axes_attr);
  int axes[SQ_MAX_DIMS], n = naxes ? (int)naxes : x->rank;
  if (n > x->rank) return sq_node_error(err, SQ_EMODEL_LOAD, node, "too many axes");
  for (int i = 0; i < n; i++) {
    axes[i] = naxes ? sq_axis(axes_attr[i], x->rank) : i;
    if (axes[i] < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "bad axes");
  }
  const sq_view_t *v = scales ? scales : sizes;
  if (sq_view_numel(v) != n) return sq_node_error(err, SQ_EMODEL_LOAD, node, "scales/sizes length");
  if (roi && sq_view_numel(roi) != 2 * n)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "roi length");
  r->rank = x->rank;
  for (int d = 0; d < x->rank; d++) {
    r->in[d] = r->out[d] = x->dims[d];
    r->scale[d] = 1.0;
    r->roi0[d] = 0.0;
    r->roi1[d] = 1.0;
  }
  for (int i = 0; i < n; i++) {
    int d = axes[i];
    if (roi) {
      r->roi0[d] = view_get_f(roi, i);
      r->roi1[d] = view_get_f(roi, n + i);
    }
    if (scales) {
      r->scale[d] = (double)((const float *)scales->data)[i];
      if (!(r->scale[d] > 0)) return sq_node_error(err, SQ_EMODEL_LOAD, node, "scale <= 0");
      double o = floor((double)x->dims[d] * r->scale[d]);
      if (!(o < (double)(INT64_C(1) << 40)))
        return sq_node_error(err, SQ_EMODEL_LOAD, node, "scale %g too large", r->scale[d]);
      r->out[d] = (int64_t)o;
    } else {
      r->out[d] = sq_view_get_int(sizes, i);
      if (r->out[d] < 0 || x->dims[d] == 0)
        return sq_node_error(err, SQ_EMODEL_LOAD, node, "bad size");
      r->scale[d] = (double)r->out[d] / (double)x->dims[d];
    }
  }
  const char *policy = sq_attr_string(node, "keep_aspect_ratio_policy", "stretch");
  if (sizes && strcmp(policy, "stretch") != 0) {
    bool larger = strcmp(policy, "not_smaller") == 0;
    double s = r->scale[axes[0]];
    for (int i = 1; i < n; i++)
      s = larger ? fmax(s, r->scale[axes[i]]) : fmin(s, r->scale[axes[i]]);
    for (int i = 0; i < n; i++) {
      int d = axes[i];
      r->scale[d] = s;
      double o = floor(s * (double)x->dims[d] + 0.5);
      if (!(o < (double)(INT64_C(1) << 40)))
        return sq_node_error(err, SQ_EMODEL_LOAD, node, "size too large");
      r->out[d] = (int64_t)o;
    }
  }
  return 0;
}

int sq_shape_resize(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                    sq_error_t *err) {
  sq_resize_params_t r;
  int rc = sq_resize_params(node, in, nin, &r, err);
  if (rc) return rc;
  const char *mode = sq_attr_string(node, "mode", "nearest");
  if (strcmp(mode, "nearest") && strcmp(mode, "linear") && strcmp(mode, "cubic"))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "mode %s", mode);
  out[0].dtype = in[0].dtype;
  out[0].rank = r.rank;
  memcpy(out[0].dims, r.out, sizeof r.out);
  return 0;
}

/* The 1-D weights of one output coordinate: taps at idx[0..n-1] (clamped to the input). */
typedef struct {
  int n;                /* taps per output coordinate */
  int64_t *idx;         /* [out * n] */
  float *w;             /* [out * n] */
  uint8_t *extrapolate; /* [out]: 1 = output is extrapolation_value (tf_crop_and_resize) */
} taps_t;

static double cubic_w(double x, double A) {
  x = fabs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0;
}

static int make_taps(const sq_node_t *node, const sq_resize_params_t *r, int d, taps_t *t) {
  const char *mode = sq_attr_string(node, "mode", "nearest");
  const char *ctm = sq_attr_string(node, "coordinate_transformation_mode",
                                   node->opset < 11 ? "asymmetric" : "half_pixel");
  const char *nmode =
      sq_attr_string(node, "nearest_mode", node->opset < 11 ? "floor" : "round_prefer_floor");
  bool antialias = sq_attr_int(node, "antialias", 0) != 0;
  bool exclude = sq_attr_int(node, "exclude_outside", 0) != 0;
  double A = sq_attr_float(node, "cubic_coeff_a", -0.75f);
  int64_t in = r->in[d], out = r->out[d];
  double scale = r->scale[d], out_w = scale * (double)in;
  bool nearest = strcmp(mode, "nearest") == 0, cubic = strcmp(mode, "cubic") == 0;
  double sa = antialias && scale < 1 ? scale : 1; /* antialias widens the filter on downscale */
  int start = 0;
  if (nearest) {
    t->n = 2;
  } else if (!cubic) {
    start = (int)floor(-1 / sa) + 1;
    t->n = 2 - 2 * start;
  } else {
    start = (int)floor(-2 / sa) + 1;
    t->n = 2 - 2 * start;
  }
  t->idx = malloc((size_t)(out * t->n + 1) * sizeof *t->idx);
  t->w = malloc((size_t)(out * t->n + 1) * sizeof *t->w);
  t->extrapolate = calloc((size_t)out + 1, 1);
  if (!t->idx || !t->w || !t->extrapolate) return SQ_ENOMEM;
  for (int64_t o = 0; o < out; o++) {
    double x = (double)o, xo;
    if (strcmp(ctm, "align_corners") == 0) {
      xo = out_w == 1 ? 0 : x * (double)(in - 1) / (out_w - 1);
    } else if (strcmp(ctm, "asymmetric") == 0) {
      xo = x / scale;
    } else if (strcmp(ctm, "tf_crop_and_resize") == 0) {
      double r0 = r->roi0[d], r1 = r->roi1[d];
      xo = out_w == 1 ? (r1 - r0) * (double)(in - 1) / 2
                      : x * (r1 - r0) * (double)(in - 1) / (out_w - 1);
      xo += r0 * (double)(in - 1);
      if (xo < 0 || xo > (double)(in - 1)) t->extrapolate[o] = 1;
    } else if (strcmp(ctm, "pytorch_half_pixel") == 0) {
      xo = out_w == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    } else if (strcmp(ctm, "tf_half_pixel_for_nn") == 0) {
      xo = (x + 0.5) / scale;
    } else if (strcmp(ctm, "half_pixel_symmetric") == 0) {
      double adj = (double)out / out_w, center = (double)in / 2;
      xo = center * (1 - adj) + (x + 0.5) / scale - 0.5;
    } else { /* half_pixel */
      xo = (x + 0.5) / scale - 0.5;
    }
    double fl = floor(xo);
    bool integral = xo == fl;
    double ratio = integral ? 1.0 : xo - fl;
    /* the reference picks the n nearest samples; for an integral x that is x - n/2 .. */
    int64_t base = (int64_t)fl - (integral ? 1 : 0) - t->n / 2 + 1;
    double w[64 + 4], sum = 0;
    int n = t->n;
    if (n > 64) return SQ_EUNSUPPORTED;
    if (nearest) {
      bool hi;
      if (integral)
        hi = true;
      else if (strcmp(nmode, "round_prefer_ceil") == 0)
        hi = ratio >= 0.5;
      else if (strcmp(nmode, "floor") == 0)
        hi = false;
      else if (strcmp(nmode, "ceil") == 0)
        hi = true;
      else
        hi = ratio > 0.5;
      w[0] = hi ? 0 : 1;
      w[1] = hi ? 1 : 0;
    } else if (!cubic) {
      for (int k = 0; k < n; k++) w[k] = fmax(0, 1 - fabs(((double)(start + k) - ratio) * sa));
    } else {
      for (int k = 0; k < n; k++) w[k] = cubic_w(sa * ((double)(start + k) - ratio), A);
    }
    if (!nearest && (antialias || cubic)) { /* the reference normalizes antialias filters */
      if (antialias) {
        for (int k = 0; k < n; k++) sum += w[k];
        for (int k = 0; k < n; k++) w[k] /= sum;
      }
    }
    if (exclude) {
      sum = 0;
      for (int k = 0; k < n; k++) {
        if (base + k < 0 || base + k >= in) w[k] = 0;
        sum += w[k];
      }
      for (int k = 0; k < n && sum != 0; k++) w[k] /= sum;
    }
    for (int k = 0; k < n; k++) {
      int64_t i = base + k;
      t->idx[o * n + k] = i < 0 ? 0 : i >= in ? in - 1 : i;
      t->w[o * n + k] = (float)w[k];
    }
  }
  return 0;
}

typedef struct {
  const float *src;
  float *dst;
  const taps_t *t;
  int64_t in, out, inner;
  float extrapolation;
} pass_t;

static void pass_range(void *arg, int64_t b, int64_t e) {
  const pass_t *p = arg;
  int n = p->t->n;
  for (int64_t row = b; row < e; row++) { /* row = outer * out + o */
    int64_t outer = row / p->out, o = row % p->out;
    float *dst = p->dst + row * p->inner;
    if (p->t->extrapolate[o]) {
      for (int64_t j = 0; j < p->inner; j++) dst[j] = p->extrapolation;
      continue;
    }
    const float *src = p->src + outer * p->in * p->inner;
    const int64_t *idx = p->t->idx + o * n;
    const float *w = p->t->w + o * n;
    for (int64_t j = 0; j < p->inner; j++) {
      double acc = 0;
      for (int k = 0; k < n; k++)
        if (w[k] != 0) acc += (double)w[k] * src[idx[k] * p->inner + j];
      dst[j] = (float)acc;
    }
  }
}

int sq_kern_resize(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                   const sq_view_t *out, int nout, sq_error_t *err) {
  sq_resize_params_t r;
  int rc = sq_resize_params(node, in, nin, &r, err);
  if (rc) return rc;
  const char *ctm = sq_attr_string(node, "coordinate_transformation_mode", "half_pixel");
  bool crop = strcmp(ctm, "tf_crop_and_resize") == 0;
  int64_t cur[SQ_MAX_DIMS];
  memcpy(cur, r.in, sizeof cur);
  const float *src = in[0].data;
  float *bufs[2] = {NULL, NULL}, *dst = NULL;
  int npass = 0, last = -1;
  for (int d = r.rank - 1; d >= 0; d--)
    if (r.out[d] != r.in[d] || r.scale[d] != 1.0 || crop) last = d;
  if (last < 0) {
    memcpy(out[0].data, src, (size_t)sq_view_numel(&out[0]) * sizeof(float));
    return 0;
  }
  for (int d = r.rank - 1; d >= 0; d--) {
    if (!(r.out[d] != r.in[d] || r.scale[d] != 1.0 || crop)) continue;
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < d; k++) outer *= cur[k];
    for (int k = d + 1; k < r.rank; k++) inner *= cur[k];
    if (d == last) {
      dst = out[0].data;
    } else {
      int b = npass & 1;
      free(bufs[b]);
      bufs[b] = malloc((size_t)(outer * r.out[d] * inner + 1) * sizeof(float));
      if (!bufs[b]) rc = SQ_ENOMEM;
      dst = bufs[b];
    }
    taps_t t = {0};
    if (!rc) rc = make_taps(node, &r, d, &t);
    if (!rc) {
      pass_t p = {
          src, dst, &t, cur[d], r.out[d], inner, sq_attr_float(node, "extrapolation_value", 0.0f)};
      sq_cpu_parallel_for(cpu, outer * r.out[d], 1, pass_range, &p);
    }
    free(t.idx);
    free(t.w);
    free(t.extrapolate);
    if (rc) break;
    cur[d] = r.out[d];
    src = dst;
    npass++;
  }
  free(bufs[0]);
  free(bufs[1]);
  if (rc) return sq_node_error(err, rc, node, "resize failed (out of memory or filter too wide)");
  return 0;
}
