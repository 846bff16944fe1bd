/* CPU kernels of cpu_ops_*.c on what ONNX's conformance cases leave out: reductions over
 * non-adjacent axes and noop_with_empty_axes, softmax along a middle axis wider than one
 * block, batched MatMul with broadcast batch dims (and the shared-B single sgemm), Where and
 * Equal and Clip on int64, reflect padding wider than the axis, Split's uneven num_outputs (opset
 * 18), linear Upsample and multi-threaded large tensors. Each op runs as a one-node model against
 * a naive reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static float frand(void) {
  return (float)rand() / (float)RAND_MAX * 4.0f - 2.0f;
}

static float *rand_buf(int64_t n) {
  float *v = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) v[i] = frand();
  return v;
}

static int64_t numel(int rank, const int64_t *dims) {
  int64_t n = 1;
  for (int d = 0; d < rank; d++) n *= dims[d];
  return n;
}

/* Loads the model, plans batch `batch`, runs it on a 4-thread backend with the float inputs
 * (x0, x1: NULL when absent) and returns output `which` (malloc'd; *n elements). */
static void *run_model(sq_onnx_builder_t *b, uint32_t batch, const float *x0, const float *x1,
                       int which, size_t *bytes) {
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  CHECK(e != NULL);
  if (!e) {
    fprintf(stderr, "load: %s\n", err.msg);
    return NULL;
  }
  sq_engine_plan_t *p = sq_engine_plan_new(e, batch, &err);
  CHECK(p != NULL);
  if (!p) {
    fprintf(stderr, "plan: %s\n", err.msg);
    sq_engine_free(e);
    return NULL;
  }
  sq_backend_t *be = sq_backend_cpu_new(4, &err);
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
  int nin = sq_engine_plan_input_count(p), nout = sq_engine_plan_output_count(p);
  sq_engine_tensor_t in[2], out[4];
  const float *xs[2] = {x0, x1};
  for (int i = 0; i < nin && i < 2; i++) {
    sq_engine_plan_input_info(p, i, &in[i]);
    in[i].data = (void *)xs[i];
  }
  for (int i = 0; i < nout && i < 4; i++) {
    sq_engine_plan_output_info(p, i, &out[i]);
    out[i].data = malloc(out[i].bytes ? out[i].bytes : 1);
  }
  int rc = sq_engine_run(p, ctx, in, nin, out, nout, &err);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "run: %s\n", err.msg);
  *bytes = out[which].bytes;
  for (int i = 0; i < nout; i++)
    if (i != which) free(out[i].data);
  sq_backend_ctx_free(ctx);
  sq_backend_free(be);
  sq_engine_plan_free(p);
  sq_engine_free(e);
  return out[which].data;
}

static void check_close(const char *what, const float *got, const float *want, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++)
    if (!(fabsf(got[i] - want[i]) <= 1e-4f + 1e-4f * fabsf(want[i]))) {
      if (bad++ < 3)
        fprintf(stderr, "%s[%lld]: got %g want %g\n", what, (long long)i, got[i], want[i]);
    }
  CHECK(bad == 0);
}

/* ReduceMean over axes {0, 2} of [3, 4, 5, 6] without keepdims (the general path), and
 * ReduceMax over axis 1 of [2, 64, 48, 48] (the blocked inner path, > 1024 inner). */
static void test_reduce(void) {
  int64_t xd[4] = {3, 4, 5, 6}, yd[2] = {4, 6};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_node(b, "ReduceMean", "r", "x", "y");
  int64_t axes[2] = {0, 2};
  sq_onnx_builder_attr_ints(b, "axes", axes, 2);
  sq_onnx_builder_attr_int(b, "keepdims", 0);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, yd);
  float *x = rand_buf(numel(4, xd)), want[24];
  for (int c = 0; c < 4; c++)
    for (int w = 0; w < 6; w++) {
      double s = 0;
      for (int n = 0; n < 3; n++)
        for (int h = 0; h < 5; h++) s += x[((n * 4 + c) * 5 + h) * 6 + w];
      want[c * 6 + w] = (float)(s / 15);
    }
  size_t bytes;
  float *y = run_model(b, 3, x, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, (int)sizeof want);
  if (y) check_close("reducemean", y, want, 24);
  free(y);
  free(x);

  int64_t bd[4] = {2, 64, 48, 48}, bo[4] = {2, 1, 48, 48};
  b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, bd);
  sq_onnx_builder_node(b, "ReduceMax", "r", "x", "y");
  int64_t ax1[1] = {1};
  sq_onnx_builder_attr_ints(b, "axes", ax1, 1);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, bo);
  x = rand_buf(numel(4, bd));
  float *wmax = malloc(sizeof(float) * 2 * 48 * 48);
  for (int n = 0; n < 2; n++)
    for (int i = 0; i < 48 * 48; i++) {
      float m = -INFINITY;
      for (int c = 0; c < 64; c++) m = fmaxf(m, x[(n * 64 + c) * 48 * 48 + i]);
      wmax[n * 48 * 48 + i] = m;
    }
  y = run_model(b, 2, x, NULL, 0, &bytes);
  if (y) check_close("reducemax", y, wmax, 2 * 48 * 48);
  free(y);
  free(x);
  free(wmax);
}

/* ReduceSum (opset 13) with an empty axes input and noop_with_empty_axes: identity */
static void test_reduce_noop(void) {
  int64_t xd[2] = {3, 5}, ad[1] = {0};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, xd);
  int64_t none[1] = {0};
  sq_onnx_builder_initializer(b, "axes", SQ_DT_INT64, 1, ad, none);
  sq_onnx_builder_node(b, "ReduceSum", "r", "x,axes", "y");
  sq_onnx_builder_attr_int(b, "noop_with_empty_axes", 1);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, xd);
  float *x = rand_buf(15);
  size_t bytes;
  float *y = run_model(b, 3, x, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, 15 * 4);
  if (y) check_close("reducesum noop", y, x, 15);
  free(y);
  free(x);
}

/* Softmax (opset 13) along axis 1 of [2, 10, 33, 40]: inner 1320 spans several blocks */
static void test_softmax_axis(void) {
  int64_t xd[4] = {2, 10, 33, 40};
  int64_t inner = 33 * 40, n = numel(4, xd);
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_node(b, "Softmax", "s", "x", "y");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, xd);
  float *x = rand_buf(n), *want = malloc(sizeof(float) * (size_t)n);
  for (int o = 0; o < 2; o++)
    for (int64_t i = 0; i < inner; i++) {
      double s = 0;
      for (int c = 0; c < 10; c++) s += exp(x[(o * 10 + c) * inner + i]);
      for (int c = 0; c < 10; c++)
        want[(o * 10 + c) * inner + i] = (float)(exp(x[(o * 10 + c) * inner + i]) / s);
    }
  size_t bytes;
  float *y = run_model(b, 2, x, NULL, 0, &bytes);
  if (y) check_close("softmax", y, want, n);
  free(y);
  free(x);
  free(want);
}

static void naive_matmul(const float *a, const float *b, float *c, int m, int k, int n) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int t = 0; t < k; t++) s += (double)a[i * k + t] * b[t * n + j];
      c[i * n + j] = (float)s;
    }
}

/* MatMul [2, 1, 4, 5] x [3, 5, 6] -> [2, 3, 4, 6] (both sides broadcast), and
 * [3, 4, 5] x [5, 6] (B shared: one sgemm over all rows) */
static void test_matmul(void) {
  int64_t ad[4] = {2, 1, 4, 5}, bd[3] = {3, 5, 6}, yd[4] = {2, 3, 4, 6};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  float *a = rand_buf(40), *bb = rand_buf(90), want[144];
  sq_onnx_builder_input(b, "a", SQ_DT_FLOAT, 4, ad);
  /* an initializer: the plan's batch size replaces dim 0 of every graph input */
  sq_onnx_builder_initializer(b, "b", SQ_DT_FLOAT, 3, bd, bb);
  sq_onnx_builder_node(b, "MatMul", "mm", "a,b", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      naive_matmul(a + i * 20, bb + j * 30, want + (i * 3 + j) * 24, 4, 5, 6);
  size_t bytes;
  float *y = run_model(b, 2, a, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, (int)sizeof want);
  if (y) check_close("matmul bcast", y, want, 144);
  free(y);

  int64_t a2[3] = {3, 4, 5}, b2[2] = {5, 6}, y2[3] = {3, 4, 6};
  b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "a", SQ_DT_FLOAT, 3, a2);
  sq_onnx_builder_initializer(b, "b", SQ_DT_FLOAT, 2, b2, bb);
  sq_onnx_builder_node(b, "MatMul", "mm", "a,b", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 3, y2);
  float a3[60];
  memcpy(a3, a, sizeof(float) * 40);
  memcpy(a3 + 40, a, sizeof(float) * 20);
  float want2[72];
  for (int i = 0; i < 3; i++) naive_matmul(a3 + i * 20, bb, want2 + i * 24, 4, 5, 6);
  y = run_model(b, 3, a3, NULL, 0, &bytes);
  if (y) check_close("matmul shared", y, want2, 72);
  free(y);
  free(a);
  free(bb);
}

/* Where(Equal(i, j), i, j * 10) on int64 with broadcasting, cast to float for the output */
static void test_where_equal_int64(void) {
  int64_t xd[2] = {2, 3}, id[2] = {2, 3}, jd[1] = {3};
  int64_t iv[6] = {1, 2, 3, 4, 5, 6}, jv[3] = {1, 5, 6}, ten[1] = {10};
  int64_t one[1] = {1};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, xd);
  sq_onnx_builder_initializer(b, "i", SQ_DT_INT64, 2, id, iv);
  sq_onnx_builder_initializer(b, "j", SQ_DT_INT64, 1, jd, jv);
  sq_onnx_builder_initializer(b, "ten", SQ_DT_INT64, 1, one, ten);
  sq_onnx_builder_node(b, "Equal", "eq", "i,j", "c");
  sq_onnx_builder_node(b, "Mul", "m", "j,ten", "j10");
  sq_onnx_builder_node(b, "Where", "w", "c,i,j10", "r");
  sq_onnx_builder_node(b, "Cast", "cast", "r", "rf");
  sq_onnx_builder_attr_int(b, "to", SQ_DT_FLOAT);
  sq_onnx_builder_node(b, "Add", "add", "x,rf", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, xd);
  float x[6] = {0}, want[6] = {1, 50, 60, 10, 5, 6};
  size_t bytes;
  float *y = run_model(b, 2, x, NULL, 0, &bytes);
  if (y) check_close("where/equal", y, want, 6);
  free(y);
}

/* Clip on int64 (opset 13) in a shape chain: Shape(x) = [2, 7] clipped to [3, 5] */
static void test_clip_int64(void) {
  int64_t xd[2] = {2, 7}, one[1] = {1}, od[1] = {2}, lo[1] = {3}, hi[1] = {5};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, xd);
  sq_onnx_builder_initializer(b, "lo", SQ_DT_INT64, 0, one, lo);
  sq_onnx_builder_initializer(b, "hi", SQ_DT_INT64, 0, one, hi);
  sq_onnx_builder_node(b, "Shape", "s", "x", "shp");
  sq_onnx_builder_node(b, "Clip", "c", "shp,lo,hi", "cl");
  sq_onnx_builder_node(b, "Cast", "cast", "cl", "y");
  sq_onnx_builder_attr_int(b, "to", SQ_DT_FLOAT);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 1, od);
  float x[14] = {0}, want[2] = {3, 5};
  size_t bytes;
  float *y = run_model(b, 2, x, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, 8);
  if (y) check_close("clip int64", y, want, 2);
  free(y);
}

/* Pad reflect by 5 on an axis of 3 (numpy reflects repeatedly) */
static void test_pad_reflect_wide(void) {
  int64_t xd[2] = {1, 3}, yd[2] = {1, 13}, pd[1] = {4}, pads[4] = {0, 5, 0, 5};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, xd);
  sq_onnx_builder_initializer(b, "pads", SQ_DT_INT64, 1, pd, pads);
  sq_onnx_builder_node(b, "Pad", "p", "x,pads", "y");
  sq_onnx_builder_attr_string(b, "mode", "reflect");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, yd);
  float x[3] = {1, 2, 3}, want[13] = {2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2};
  size_t bytes;
  float *y = run_model(b, 1, x, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, (int)sizeof want);
  if (y) check_close("pad reflect", y, want, 13);
  free(y);
}

/* Split (opset 18) of 7 columns into num_outputs 3: 3, 3, 1 */
static void test_split_uneven(void) {
  int64_t xd[2] = {2, 7}, y2d[2] = {2, 1}, y0d[2] = {2, 3};
  sq_onnx_builder_t *b = sq_onnx_builder_new(18);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, xd);
  sq_onnx_builder_node(b, "Split", "s", "x", "y0,y1,y2");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_attr_int(b, "num_outputs", 3);
  sq_onnx_builder_output(b, "y0", SQ_DT_FLOAT, 2, y0d);
  sq_onnx_builder_output(b, "y1", SQ_DT_FLOAT, 2, y0d);
  sq_onnx_builder_output(b, "y2", SQ_DT_FLOAT, 2, y2d);
  float x[14], want[2] = {6, 13};
  for (int i = 0; i < 14; i++) x[i] = (float)i;
  size_t bytes;
  float *y = run_model(b, 2, x, NULL, 2, &bytes);
  CHECK_EQ_INT((int)bytes, 8);
  if (y) check_close("split", y, want, 2);
  free(y);
}

/* Upsample (opset 9) linear x2: asymmetric coordinates, clamped at the edge (as ORT) */
static void test_upsample_linear(void) {
  int64_t xd[4] = {1, 1, 2, 2}, yd[4] = {1, 1, 4, 4}, sd[1] = {4};
  float scales[4] = {1, 1, 2, 2};
  sq_onnx_builder_t *b = sq_onnx_builder_new(9);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_initializer(b, "scales", SQ_DT_FLOAT, 1, sd, scales);
  sq_onnx_builder_node(b, "Upsample", "up", "x,scales", "y");
  sq_onnx_builder_attr_string(b, "mode", "linear");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  float x[4] = {1, 2, 3, 4};
  float want[16] = {1, 1.5f, 2, 2, 2, 2.5f, 3, 3, 3, 3.5f, 4, 4, 3, 3.5f, 4, 4};
  size_t bytes;
  float *y = run_model(b, 1, x, NULL, 0, &bytes);
  CHECK_EQ_INT((int)bytes, (int)sizeof want);
  if (y) check_close("upsample linear", y, want, 16);
  free(y);
}

/* A large elementwise chain across threads: Tanh -> LeakyRelu -> Transpose */
static void test_large_threads(void) {
  int64_t xd[4] = {2, 16, 64, 96}, yd[4] = {2, 64, 96, 16};
  int64_t n = numel(4, xd);
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_node(b, "Tanh", "t", "x", "a");
  sq_onnx_builder_node(b, "LeakyRelu", "l", "a", "c");
  sq_onnx_builder_attr_float(b, "alpha", 0.5f);
  sq_onnx_builder_node(b, "Transpose", "p", "c", "y");
  int64_t perm[4] = {0, 2, 3, 1};
  sq_onnx_builder_attr_ints(b, "perm", perm, 4);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  float *x = rand_buf(n), *want = malloc(sizeof(float) * (size_t)n);
  for (int i = 0; i < 2; i++)
    for (int c = 0; c < 16; c++)
      for (int h = 0; h < 64; h++)
        for (int w = 0; w < 96; w++) {
          float v = tanhf(x[((i * 16 + c) * 64 + h) * 96 + w]);
          want[((i * 64 + h) * 96 + w) * 16 + c] = v >= 0 ? v : 0.5f * v;
        }
  size_t bytes;
  float *y = run_model(b, 2, x, NULL, 0, &bytes);
  if (y) check_close("large chain", y, want, n);
  free(y);
  free(x);
  free(want);
}

int main(void) {
  srand(7);
  test_reduce();
  test_reduce_noop();
  test_softmax_axis();
  test_matmul();
  test_where_equal_int64();
  test_clip_int64();
  test_pad_reflect_wide();
  test_split_uneven();
  test_upsample_linear();
  test_large_threads();
  CHECK_DONE();
}
