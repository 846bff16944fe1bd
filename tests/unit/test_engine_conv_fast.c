/* The cpu backend's convolutions (oneDNN primitives in oneDNN's layout) against a direct
 * double-precision reference: 3x3 stride-1 Conv over odd and even sizes, asymmetric pads,
 * batch 2, 1 and 2 threads, fused ReLU/LeakyRelu; ConvTranspose with kernel == stride (2x2 and
 * 3x3 taps: the 1x1 conv + depth-to-space path). The ONNX conformance cases are too small to
 * reach the vector loops and block edges. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static float frand(void) {
  return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
}

typedef struct {
  bool tr;           /* ConvTranspose (kernel == stride == k, no pads) */
  int n, c, m, h, w; /* batch, channels, size */
  int k;             /* kernel (3 for Conv) */
  int64_t pads[4];   /* Conv only: top, left, bottom, right */
  const char *act;   /* "Relu", "LeakyRelu" or NULL */
} conv_case_t;

static int64_t out_dim(const conv_case_t *t, int in, int lead, int trail) {
  return t->tr ? (int64_t)in * t->k : in + lead + trail - 2;
}

static uint8_t *build(const conv_case_t *t, const float *w, const float *bias, size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t oh = out_dim(t, t->h, (int)t->pads[0], (int)t->pads[2]);
  int64_t ow = out_dim(t, t->w, (int)t->pads[1], (int)t->pads[3]);
  int64_t xd[4] = {-1, t->c, t->h, t->w}, md[1] = {t->m}, yd[4] = {-1, t->m, oh, ow};
  int64_t wd[4] = {t->tr ? t->c : t->m, t->tr ? t->m : t->c, t->k, t->k};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_initializer(b, "w", SQ_DT_FLOAT, 4, wd, w);
  sq_onnx_builder_initializer(b, "b", SQ_DT_FLOAT, 1, md, bias);
  sq_onnx_builder_node(b, t->tr ? "ConvTranspose" : "Conv", "conv", "x,w,b", t->act ? "c" : "y");
  if (t->tr) {
    int64_t s[2] = {t->k, t->k};
    sq_onnx_builder_attr_ints(b, "strides", s, 2);
  } else {
    sq_onnx_builder_attr_ints(b, "pads", t->pads, 4);
  }
  if (t->act) {
    sq_onnx_builder_node(b, t->act, "act", "c", "y");
    if (t->act[0] == 'L') sq_onnx_builder_attr_float(b, "alpha", 0.1f);
  }
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

/* Direct convolution (or transposed) in double, then the activation. */
static double ref_at(const conv_case_t *t, const float *x, const float *w, const float *bias,
                     int n, int o, int64_t oy, int64_t ox) {
  double acc = bias[o];
  if (t->tr) {
    int64_t iy = oy / t->k, ix = ox / t->k, ky = oy % t->k, kx = ox % t->k;
    for (int c = 0; c < t->c; c++)
      acc += (double)x[((n * t->c + c) * t->h + iy) * t->w + ix] *
             w[((c * t->m + o) * t->k + ky) * t->k + kx];
  } else {
    for (int c = 0; c < t->c; c++)
      for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++) {
          int64_t iy = oy - t->pads[0] + ky, ix = ox - t->pads[1] + kx;
          if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w) continue;
          acc += (double)x[((n * t->c + c) * t->h + iy) * t->w + ix] *
                 w[((o * t->c + c) * 3 + ky) * 3 + kx];
        }
  }
  if (t->act && t->act[0] == 'R') return acc > 0 ? acc : 0;
  if (t->act && t->act[0] == 'L') return acc > 0 ? acc : 0.1 * acc;
  return acc;
}

static void run_case(const conv_case_t *t, int threads) {
  size_t nw = (size_t)t->c * t->m * t->k * t->k, nx = (size_t)t->n * t->c * t->h * t->w;
  float *w = malloc(nw * sizeof *w), *bias = malloc((size_t)t->m * sizeof *bias);
  float *x = malloc(nx * sizeof *x);
  for (size_t i = 0; i < nw; i++) w[i] = frand();
  for (int i = 0; i < t->m; i++) bias[i] = frand();
  for (size_t i = 0; i < nx; i++) x[i] = frand();
  size_t len;
  uint8_t *buf = build(t, w, bias, &len);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, (uint32_t)t->n, &err) : NULL;
  CHECK(p != NULL);
  if (!p) {
    fprintf(stderr, "load/plan: %s\n", err.msg);
    sq_engine_free(e);
    free(buf), free(w), free(bias), free(x);
    return;
  }
  sq_backend_t *be = sq_backend_cpu_new(threads, &err);
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
  sq_engine_tensor_t in, out;
  CHECK_EQ_INT(sq_engine_plan_input_info(p, 0, &in), 0);
  CHECK_EQ_INT(sq_engine_plan_output_info(p, 0, &out), 0);
  in.data = x;
  in.bytes = nx * sizeof *x;
  out.data = malloc(out.bytes);
  int rc = sq_engine_run(p, ctx, &in, 1, &out, 1, &err);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "run: %s\n", err.msg);
  int64_t oh = out.dims[2], ow = out.dims[3];
  CHECK_EQ_INT(oh, out_dim(t, t->h, (int)t->pads[0], (int)t->pads[2]));
  CHECK_EQ_INT(ow, out_dim(t, t->w, (int)t->pads[1], (int)t->pads[3]));
  const float *y = out.data;
  double worst = 0;
  for (int n = 0; !rc && n < t->n; n++)
    for (int o = 0; o < t->m; o++)
      for (int64_t oy = 0; oy < oh; oy++)
        for (int64_t ox = 0; ox < ow; ox++) {
          double want = ref_at(t, x, w, bias, n, o, oy, ox);
          double d = fabs(y[((n * t->m + o) * oh + oy) * ow + ox] - want) / (1.0 + fabs(want));
          if (d > worst) worst = d;
        }
  printf("%s n%d c%d m%d %dx%d k%d pads %lld,%lld,%lld,%lld %s threads %d: worst rel err %.3g\n",
         t->tr ? "ConvTranspose" : "Conv", t->n, t->c, t->m, t->h, t->w, t->k,
         (long long)t->pads[0], (long long)t->pads[1], (long long)t->pads[2],
         (long long)t->pads[3], t->act ? t->act : "-", threads, worst);
  CHECK(worst < 2e-5); /* float accumulation over up to 576 terms; im2col is the same */
  free(out.data);
  sq_backend_ctx_free(ctx);
  sq_backend_free(be);
  sq_engine_plan_free(p);
  sq_engine_free(e);
  free(buf), free(w), free(bias), free(x);
}

int main(void) {
  sq_log_set_level(SQ_LOG_WARN);
  srand(11);
  static const conv_case_t cases[] = {
      {false, 1, 3, 5, 8, 8, 3, {1, 1, 1, 1}, NULL},
      {false, 2, 16, 8, 37, 45, 3, {1, 1, 1, 1}, "Relu"},   /* odd sizes, vector tails */
      {false, 2, 7, 12, 40, 64, 3, {0, 2, 1, 0}, "LeakyRelu"}, /* asymmetric pads */
      {false, 1, 1, 16, 66, 70, 3, {1, 1, 1, 1}, "Relu"},   /* one input channel */
      {false, 1, 64, 40, 24, 17, 3, {0, 0, 0, 0}, NULL},    /* many channels, small image */
      {false, 1, 4, 4, 3, 3, 3, {2, 3, 2, 3}, NULL},        /* pads wider than the image */
      {true, 2, 16, 8, 19, 33, 2, {0, 0, 0, 0}, "Relu"},
      {true, 1, 5, 6, 9, 10, 3, {0, 0, 0, 0}, "LeakyRelu"},
      {true, 1, 32, 16, 16, 16, 2, {0, 0, 0, 0}, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run_case(&cases[i], 1);
    run_case(&cases[i], 2);
  }
  CHECK_DONE();
}
