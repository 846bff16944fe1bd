/* Engine load-time rewrites: Conv/ConvTranspose (grouped) -> BatchNormalization -> Relu folded
 * into one conv with a fused activation gives the same outputs as the unfolded graph (within
 * float rounding), and the folded plan has fewer nodes. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static float frand(void) {
  return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
}

enum { C = 4, M = 8, G = 2 };

/* expected output dims of the conv for a 9x7 input (strides 2, pads {1,0,1,1}) */
static int64_t out_h(bool tr) {
  return tr ? 17 : 5;
}
static int64_t out_w(bool tr) {
  return tr ? 14 : 3;
}

static uint8_t *conv_bn_relu(size_t *len, bool with_bias, bool tr) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, C, 9, 7}, md[1] = {M}, yd[4] = {-1, M, out_h(tr), out_w(tr)};
  int64_t wd[4] = {tr ? C : M, tr ? M / G : C / G, 3, 3};
  float w[M * C / G * 9], bias[M], scale[M], beta[M], mean[M], var[M];
  for (int i = 0; i < M * C / G * 9; i++) w[i] = frand();
  for (int i = 0; i < M; i++) {
    bias[i] = frand();
    scale[i] = 0.5f + frand();
    beta[i] = frand();
    mean[i] = frand() * 0.3f;
    var[i] = 0.2f + (frand() + 1.0f);
  }
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_initializer(b, "w", SQ_DT_FLOAT, 4, wd, w);
  if (with_bias) sq_onnx_builder_initializer(b, "cb", SQ_DT_FLOAT, 1, md, bias);
  sq_onnx_builder_initializer(b, "scale", SQ_DT_FLOAT, 1, md, scale);
  sq_onnx_builder_initializer(b, "beta", SQ_DT_FLOAT, 1, md, beta);
  sq_onnx_builder_initializer(b, "mean", SQ_DT_FLOAT, 1, md, mean);
  sq_onnx_builder_initializer(b, "var", SQ_DT_FLOAT, 1, md, var);
  sq_onnx_builder_node(b, tr ? "ConvTranspose" : "Conv", "conv", with_bias ? "x,w,cb" : "x,w", "c");
  int64_t strides[2] = {2, 2}, pads[4] = {1, 0, 1, 1};
  sq_onnx_builder_attr_ints(b, "strides", strides, 2);
  sq_onnx_builder_attr_ints(b, "pads", pads, 4);
  sq_onnx_builder_attr_int(b, "group", G);
  sq_onnx_builder_node(b, "BatchNormalization", "bn", "c,scale,beta,mean,var", "n");
  sq_onnx_builder_attr_float(b, "epsilon", 1e-3f);
  sq_onnx_builder_node(b, "Relu", "relu", "n", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

/* Runs the model for batch 2 on x; returns malloc'd output and the plan's node count. */
static float *run(const uint8_t *buf, size_t len, const sq_engine_options_t *opt, const float *x,
                  size_t xbytes, size_t *n_out, int *nodes, bool tr) {
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, opt, &err);
  CHECK(e != NULL);
  if (!e) {
    fprintf(stderr, "load: %s\n", err.msg);
    return NULL;
  }
  sq_engine_plan_t *p = sq_engine_plan_new(e, 2, &err);
  CHECK(p != NULL);
  if (!p) {
    fprintf(stderr, "plan: %s\n", err.msg);
    sq_engine_free(e);
    return NULL;
  }
  *nodes = sq_engine_plan_node_count(p);
  sq_backend_t *be = sq_backend_cpu_new(2, &err);
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
  sq_engine_tensor_t in, out;
  CHECK_EQ_INT(sq_engine_plan_input_info(p, 0, &in), 0);
  CHECK_EQ_INT(in.dims[0], 2);
  in.data = (void *)x;
  in.bytes = xbytes;
  CHECK_EQ_INT(sq_engine_plan_output_info(p, 0, &out), 0);
  out.data = malloc(out.bytes);
  *n_out = out.bytes / sizeof(float);
  int rc = sq_engine_run(p, ctx, &in, 1, &out, 1, &err);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "run: %s\n", err.msg);
  CHECK_EQ_INT(out.rank, 4);
  CHECK_EQ_INT(out.dims[1], M);
  CHECK_EQ_INT(out.dims[2], out_h(tr));
  CHECK_EQ_INT(out.dims[3], out_w(tr));
  sq_backend_ctx_free(ctx);
  sq_engine_plan_free(p);
  sq_backend_free(be);
  sq_engine_free(e);
  return out.data;
}

static void test_equivalence(bool with_bias, bool tr) {
  size_t len;
  uint8_t *buf = conv_bn_relu(&len, with_bias, tr);
  float x[2 * C * 9 * 7];
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = frand();
  sq_engine_options_t plain = {.no_fold_bn = 1, .no_fuse = 1};
  size_t n1 = 0, n2 = 0;
  int nodes_folded = 0, nodes_plain = 0;
  float *folded = run(buf, len, NULL, x, sizeof x, &n1, &nodes_folded, tr);
  float *unfolded = run(buf, len, &plain, x, sizeof x, &n2, &nodes_plain, tr);
  CHECK_EQ_INT(nodes_folded, 1);
  CHECK_EQ_INT(nodes_plain, 3);
  CHECK(n1 == n2 && n1 == (size_t)(2 * M * out_h(tr) * out_w(tr)));
  double maxdiff = 0;
  int zeros = 0;
  for (size_t i = 0; folded && unfolded && i < n1; i++) {
    double d = fabs((double)folded[i] - unfolded[i]);
    if (d > maxdiff) maxdiff = d;
    zeros += unfolded[i] == 0.0f;
  }
  printf("%s bias=%d max |folded - unfolded| = %g, relu zeros %d of %zu\n",
         tr ? "ConvTranspose" : "Conv", with_bias, maxdiff, zeros, n1);
  CHECK(maxdiff < 1e-5);
  CHECK(zeros > 0 && (size_t)zeros < n1); /* the activation really ran */
  free(folded);
  free(unfolded);
  free(buf);
}

int main(void) {
  sq_log_set_level(SQ_LOG_WARN);
  srand(7);
  test_equivalence(true, false);
  test_equivalence(false, false);
  test_equivalence(true, true);
  test_equivalence(false, true);
  CHECK_DONE();
}
