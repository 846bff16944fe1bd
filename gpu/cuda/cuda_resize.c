/* cuda_resize.c: Resize on the GPU for what segmentation nets use: 4-D (fp32 NCHW or fp16
 * NHWC), the last two axes scaled, nearest (all four rounding modes) or linear without
 * antialias, every coordinate mode but tf_crop_and_resize. The two taps per output row/column
 * are computed here with the CPU kernel's formulas (kern_resize.c) and uploaded once;
 * cuda_resize.cu / cuda_f16.cu mix them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static int scale_of(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, int d,
                    double *scale) {
  const sq_view_t *scales = NULL;
  if (n->opset < 11)
    scales = n->nin > 1 && sq_view_present(&in[1]) ? &in[1] : NULL;
  else
    scales = n->nin > 2 && sq_view_present(&in[2]) && sq_view_numel(&in[2]) ? &in[2] : NULL;
  if (scales) {
    if (!scales->data || scales->dtype != SQ_DT_FLOAT || sq_view_numel(scales) != in[0].rank)
      return -1;
    *scale = ((const float *)scales->data)[d];
  } else {
    *scale = (double)out[0].dims[d] / (double)in[0].dims[d];
  }
  return *scale > 0 ? 0 : -1;
}

int sq_cuda_resize_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err) {
  const char *mode = sq_attr_string(n, "mode", "nearest");
  const char *ctm = sq_attr_string(n, "coordinate_transformation_mode", "half_pixel");
  const int64_t *a;
  if (in[0].dtype != SQ_DT_FLOAT || in[0].rank != 4)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 NCHW Resize only");
  if (out[0].dims[0] != in[0].dims[0] || out[0].dims[1] != in[0].dims[1])
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Resize of N or C");
  if (strcmp(mode, "nearest") && strcmp(mode, "linear"))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Resize mode %s", mode);
  if (sq_attr_int(n, "antialias", 0) || sq_attr_int(n, "exclude_outside", 0) ||
      sq_attr_ints(n, "axes", &a) ||
      strcmp(sq_attr_string(n, "keep_aspect_ratio_policy", "stretch"), "stretch") ||
      strcmp(ctm, "tf_crop_and_resize") == 0)
    return sq_node_error(err, SQ_EUNSUPPORTED, n,
                         "cuda: Resize antialias/exclude_outside/axes/aspect policy/crop");
  for (int d = 0; d < 4; d++)
    if (out[0].dims[d] > INT32_MAX || in[0].dims[d] > INT32_MAX || in[0].dims[d] < 1)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Resize dims");
  double s;
  for (int d = 2; d < 4; d++)
    if (scale_of(n, in, out, d, &s))
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Resize scales");
  return 0;
}

int sq_cuda_resize_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  return !sq_cuda_resize_check(n, in, out, NULL) && !in[0].data ? 0 : -1;
}

/* The CPU kernel's tap rule restricted to two taps (nearest, or linear without antialias). */
static void taps(const sq_node_t *n, int64_t in, int64_t out, double scale, int32_t *idx,
                 float *w) {
  const char *mode = sq_attr_string(n, "mode", "nearest");
  const char *ctm = sq_attr_string(n, "coordinate_transformation_mode",
                                   n->opset < 11 ? "asymmetric" : "half_pixel");
  const char *nmode =
      sq_attr_string(n, "nearest_mode", n->opset < 11 ? "floor" : "round_prefer_floor");
  int nearest = strcmp(mode, "nearest") == 0;
  double out_w = scale * (double)in;
  for (int64_t o = 0; o < out; o++) {
    double x = (double)o, xo;
    if (strcmp(ctm, "align_corners") == 0)
      xo = out_w == 1 ? 0 : x * (double)(in - 1) / (out_w - 1);
    else if (strcmp(ctm, "asymmetric") == 0)
      xo = x / scale;
    else if (strcmp(ctm, "pytorch_half_pixel") == 0)
      xo = out_w == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    else if (strcmp(ctm, "tf_half_pixel_for_nn") == 0)
      xo = (x + 0.5) / scale;
    else if (strcmp(ctm, "half_pixel_symmetric") == 0) {
      double adj = (double)out / out_w, center = (double)in / 2;
      xo = center * (1 - adj) + (x + 0.5) / scale - 0.5;
    } else
      xo = (x + 0.5) / scale - 0.5;
    double fl = floor(xo);
    int integral = xo == fl;
    double ratio = integral ? 1.0 : xo - fl;
    int64_t base = (int64_t)fl - (integral ? 1 : 0);
    double w0, w1;
    if (nearest) {
      int hi;
      if (integral)
        hi = 1;
      else if (strcmp(nmode, "round_prefer_ceil") == 0)
        hi = ratio >= 0.5;
      else if (strcmp(nmode, "floor") == 0)
        hi = 0;
      else if (strcmp(nmode, "ceil") == 0)
        hi = 1;
      else
        hi = ratio > 0.5;
      w0 = hi ? 0 : 1;
      w1 = hi ? 1 : 0;
    } else {
      w0 = fmax(0, 1 - fabs(0.0 - ratio));
      w1 = fmax(0, 1 - fabs(1.0 - ratio));
    }
    for (int k = 0; k < 2; k++) {
      int64_t i = base + k;
      idx[o * 2 + k] = (int32_t)(i < 0 ? 0 : i >= in ? in - 1 : i);
      w[o * 2 + k] = (float)(k ? w1 : w0);
    }
  }
}

int sq_cuda_resize_prepare(SQ_CUDA_PREPARE_ARGS) {
  int64_t oh = out[0].dims[2], ow = out[0].dims[3];
  size_t bytes = (size_t)(oh + ow) * 2 * (sizeof(int32_t) + sizeof(float));
  uint8_t *h = malloc(bytes ? bytes : 1);
  if (!h) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  int32_t *yidx = (int32_t *)h, *xidx = yidx + oh * 2;
  float *yw = (float *)(xidx + ow * 2), *xw = yw + oh * 2;
  double sh, sw;
  scale_of(n, in, out, 2, &sh);
  scale_of(n, in, out, 3, &sw);
  taps(n, in[0].dims[2], oh, sh, yidx, yw);
  taps(n, in[0].dims[3], ow, sw, xidx, xw);
  int rc = sq_cuda_upload(h, bytes, state, err);
  free(h);
  return rc;
}

int sq_cuda_resize_forward(SQ_CUDA_FORWARD_ARGS) {
  int64_t oh = out[0].dims[2], ow = out[0].dims[3];
  const int32_t *yidx = state, *xidx = yidx + oh * 2;
  const float *yw = (const float *)(xidx + ow * 2), *xw = yw + oh * 2;
  if (mode == SQ_CUDA_F16)
    return sq_cuda_check(
        sq_cuda_resize16(in[0].data, out[0].data, in[0].dims[0], in[0].dims[2], in[0].dims[3], oh,
                         ow, SQ_CUDA_CPAD(in[0].dims[1]), yidx, yw, xidx, xw, c->stream),
        err, "resize kernel (fp16)");
  return sq_cuda_check(
      sq_cuda_resize2d(in[0].data, out[0].data, in[0].dims[0] * in[0].dims[1], in[0].dims[2],
                       in[0].dims[3], oh, ow, yidx, yw, xidx, xw, c->stream),
      err, "resize kernel");
}
