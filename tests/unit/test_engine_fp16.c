/* fp16 exports on the CPU engine: the committed float16 variants of the test models (torch
 * .half() style with float16 I/O, onnxconverter keep_io_types style with Cast nodes, fp16
 * weights read through Cast; tools/make_fp16_models.py) load, report float32 I/O, and match
 * the float32 arithmetic of the fp16 file; float16 rounding (Cast to FLOAT16, fp16 graph edges)
 * is exact round-to-nearest-even. Skips the model part without SEGQ_SOURCE_DIR. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"
#include "test_files.h"

static float bits(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static void test_round(void) {
  CHECK(sq_round_fp16(1.0f) == 1.0f);
  CHECK(sq_round_fp16(0.1f) == 0.0999755859375f);
  CHECK(sq_round_fp16(-2.5f) == -2.5f);
  CHECK(sq_round_fp16(1.0f + ldexpf(1, -11)) == 1.0f);                     /* tie: to even (down) */
  CHECK(sq_round_fp16(1.0f + 3 * ldexpf(1, -11)) == 1.0f + ldexpf(1, -9)); /* tie: to even (up) */
  CHECK(sq_round_fp16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 1.0f + ldexpf(1, -10));
  CHECK(sq_round_fp16(65504.0f) == 65504.0f);
  CHECK(sq_round_fp16(65519.0f) == 65504.0f);
  CHECK(isinf(sq_round_fp16(65520.0f)) && sq_round_fp16(65520.0f) > 0);
  CHECK(isinf(sq_round_fp16(-1e9f)) && sq_round_fp16(-1e9f) < 0);
  CHECK(sq_round_fp16(ldexpf(1, -24)) == ldexpf(1, -24));     /* smallest subnormal */
  CHECK(sq_round_fp16(ldexpf(1, -25)) == 0.0f);               /* tie with 0: to even */
  CHECK(sq_round_fp16(3 * ldexpf(1, -25)) == ldexpf(1, -23)); /* tie: to even (2 steps) */
  CHECK(sq_round_fp16(ldexpf(1, -14) - ldexpf(1, -30)) == ldexpf(1, -14)); /* to the normals */
  CHECK(sq_round_fp16(1e-30f) == 0.0f);
  CHECK(signbit(sq_round_fp16(-1e-30f)));
  CHECK(isnan(sq_round_fp16(bits(0x7fc00000u))));
  CHECK(isinf(sq_round_fp16(INFINITY)));
}

/* input x declared float16 -> Relu -> float16 output: the engine takes and returns float32,
 * rounded to float16 at both edges, and says the file is an fp16 export */
static void test_fp16_io(void) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t d[1] = {4};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT16, 1, d);
  sq_onnx_builder_node(b, "Relu", "relu", "x", "y");
  sq_onnx_builder_node(b, "Neg", "neg", "y", "z");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT16, 1, d);
  sq_onnx_builder_output(b, "z", SQ_DT_FLOAT, 1, d);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  CHECK(e != NULL);
  if (!e) {
    fprintf(stderr, "load: %s\n", err.msg);
    return;
  }
  CHECK_EQ_INT(sq_engine_stores_fp16(e), 1);
  sq_engine_tensor_t info;
  sq_engine_input_info(e, 0, &info);
  CHECK_EQ_INT(info.dtype, SQ_DT_FLOAT);
  CHECK_STR(info.name, "x");
  sq_engine_plan_t *p = sq_engine_plan_new(e, 4, &err);
  CHECK(p != NULL);
  if (p) sq_engine_plan_output_info(p, 0, &info);
  CHECK_EQ_INT(p ? info.dtype : 0, SQ_DT_FLOAT);
  CHECK_STR(p ? info.name : NULL, "y");
  sq_backend_t *be = sq_backend_cpu_new(1, &err);
  sq_backend_ctx_t *c = p && be ? sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err) : NULL;
  CHECK(c != NULL);
  float x[4] = {0.1f, -3.0f, 1.0f + ldexpf(1, -11) + ldexpf(1, -20), 70000.0f}, y[4], z[4];
  sq_engine_tensor_t in = {.dtype = SQ_DT_FLOAT, .rank = 1, .dims = {4}, .data = x, .bytes = 16};
  sq_engine_tensor_t out[2] = {{.data = y, .bytes = 16}, {.data = z, .bytes = 16}};
  CHECK_EQ_INT(c ? sq_engine_run(p, c, &in, 1, out, 2, &err) : -1, 0);
  CHECK(y[0] == 0.0999755859375f);
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == 1.0f + ldexpf(1, -10));
  CHECK(isinf(y[3])); /* 70000 is past float16's range: inf, as an fp16 runtime has it */
  CHECK(z[0] == -0.0999755859375f); /* readers of y inside the graph see the rounded input */
  sq_backend_ctx_free(c);
  sq_engine_plan_free(p);
  sq_backend_free(be);
  sq_engine_free(e);
}

typedef struct {
  const char *name;
  int64_t in[4], out[4];
  float tol;
} fp16_model_t;

static int test_models(void) {
  static const fp16_model_t models[] = {
      {"resunet_cbam_fp16", {1, 3, 64, 64}, {1, 2, 64, 64}, 2.5e-4f}, /* one float16 step */
      {"unet_fp16io", {2, 1, 64, 64}, {2, 1, 64, 64}, 1e-4f},
      {"resunet_cbam_fp16w", {1, 3, 64, 64}, {1, 2, 64, 64}, 1e-4f},
      {"resunet_cbam", {1, 3, 64, 64}, {1, 2, 64, 64}, 1e-4f}, /* the fp32 source: not fp16 */
  };
  char path[4096];
  if (test_source_path(path, sizeof path, "x") != 0) {
    printf("note: SEGQ_SOURCE_DIR not set, model part skipped\n");
    return 0;
  }
  sq_error_t err = {0};
  sq_backend_t *be = sq_backend_cpu_new(2, &err);
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
    const fp16_model_t *md = &models[m];
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/onnx/%s.onnx", md->name);
    test_source_path(path, sizeof path, rel);
    sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
    CHECK(e != NULL);
    if (!e) {
      fprintf(stderr, "%s: %s\n", md->name, err.msg);
      continue;
    }
    CHECK_EQ_INT(sq_engine_stores_fp16(e), strstr(md->name, "fp16") != NULL);
    sq_engine_tensor_t info;
    sq_engine_input_info(e, 0, &info);
    CHECK_EQ_INT(info.dtype, SQ_DT_FLOAT);
    size_t nx = 0, ny = 0;
    snprintf(rel, sizeof rel, "tests/data/onnx/%s.input.bin", md->name);
    test_source_path(path, sizeof path, rel);
    float *x = (float *)test_read_file(path, &nx);
    snprintf(rel, sizeof rel, "tests/data/onnx/%s.output.bin", md->name);
    test_source_path(path, sizeof path, rel);
    float *want = (float *)test_read_file(path, &ny);
    size_t ein = 4 * (size_t)(md->in[0] * md->in[1] * md->in[2] * md->in[3]);
    size_t eout = 4 * (size_t)(md->out[0] * md->out[1] * md->out[2] * md->out[3]);
    CHECK(x && nx == ein);
    CHECK(want && ny == eout);
    sq_engine_plan_t *p = sq_engine_plan_new(e, (uint32_t)md->in[0], &err);
    CHECK(p != NULL);
    if (p) sq_engine_plan_output_info(p, 0, &info);
    CHECK_EQ_INT(p ? info.dtype : 0, SQ_DT_FLOAT);
    sq_backend_ctx_t *c = p ? sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err) : NULL;
    float *y = malloc(eout);
    if (x && want && nx == ein && ny == eout && c && y) {
      sq_engine_tensor_t in = {.dtype = SQ_DT_FLOAT, .rank = 4, .data = x, .bytes = ein};
      memcpy(in.dims, md->in, sizeof md->in);
      sq_engine_tensor_t out = {.data = y, .bytes = eout};
      int rc = sq_engine_run(p, c, &in, 1, &out, 1, &err);
      CHECK_EQ_INT(rc, 0);
      double diff = 0;
      for (size_t i = 0; !rc && i < eout / 4; i++) {
        double d = fabs((double)y[i] - want[i]);
        if (!(d <= diff)) diff = d; /* NaN fails */
      }
      printf("%-20s max |engine - reference| = %.3g (tolerance %.3g)\n", md->name, diff,
             (double)md->tol);
      CHECK(!rc && diff <= md->tol);
    }
    free(y);
    free(x);
    free(want);
    sq_backend_ctx_free(c);
    sq_engine_plan_free(p);
    sq_engine_free(e);
  }
  sq_backend_free(be);
  return 0;
}

int main(void) {
  test_round();
  test_fp16_io();
  test_models();
  CHECK_DONE();
}
