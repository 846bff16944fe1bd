/* Engine loader errors: garbage, every truncation of a valid model and random byte flips give
 * a clean error (never a crash), missing files give SQ_EIO, and all unsupported ops/types of a
 * model are listed in ONE error message with their node names. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static uint8_t *small_model(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 2, 4, 4}, wd[4] = {3, 2, 3, 3}, bd[1] = {3};
  float w[54], bias[3] = {0.1f, 0.2f, 0.3f};
  for (int i = 0; i < 54; i++) w[i] = (float)i / 54.0f;
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_initializer(b, "w", SQ_DT_FLOAT, 4, wd, w);
  sq_onnx_builder_initializer(b, "b", SQ_DT_FLOAT, 1, bd, bias);
  sq_onnx_builder_node(b, "Conv", "conv1", "x,w,b", "y");
  int64_t pads[4] = {1, 1, 1, 1};
  sq_onnx_builder_attr_ints(b, "pads", pads, 4);
  sq_onnx_builder_node(b, "Relu", "relu1", "y", "z");
  sq_onnx_builder_output(b, "z", SQ_DT_FLOAT, 4, xd);
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static void test_valid(void) {
  size_t len;
  uint8_t *buf = small_model(&len);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e != NULL);
  if (e) {
    CHECK_EQ_INT(sq_engine_input_count(e), 1);
    CHECK_EQ_INT(sq_engine_output_count(e), 1);
    sq_engine_tensor_t info;
    CHECK_EQ_INT(sq_engine_input_info(e, 0, &info), 0);
    CHECK_STR(info.name, "x");
    CHECK_EQ_INT(info.rank, 4);
    CHECK_EQ_INT(info.dims[0], -1);
    CHECK_EQ_INT(info.dims[1], 2);
  }
  sq_engine_free(e);
  free(buf);
}

static void test_garbage_and_truncation(void) {
  sq_error_t err = {0};
  const char garbage[] = "this is not a protobuf \xff\xff\xff\xff\x01";
  sq_engine_t *e = sq_engine_load_buffer(garbage, sizeof garbage, NULL, &err);
  CHECK(e == NULL);
  CHECK_EQ_INT(err.code, SQ_EMODEL_LOAD);
  e = sq_engine_load_buffer(garbage, 0, NULL, &err);
  CHECK(e == NULL);
  CHECK_EQ_INT(err.code, SQ_EMODEL_LOAD);

  size_t len;
  uint8_t *buf = small_model(&len);
  int clean = 1;
  for (size_t cut = 0; cut < len; cut++) { /* every prefix: error or (rarely) a valid model */
    sq_error_clear(&err);
    e = sq_engine_load_buffer(buf, cut, NULL, &err);
    if (!e && (err.code == 0 || err.msg[0] == '\0')) clean = 0;
    sq_engine_free(e);
  }
  CHECK(clean);
  srand(42);
  uint8_t *copy = malloc(len);
  for (int round = 0; round < 300; round++) { /* random byte flips: never a crash */
    memcpy(copy, buf, len);
    for (int k = 0; k < 3; k++) copy[(size_t)rand() % len] ^= (uint8_t)(1 + rand() % 255);
    sq_error_clear(&err);
    e = sq_engine_load_buffer(copy, len, NULL, &err);
    if (e) { /* a model that still loads must also plan or fail cleanly */
      sq_engine_plan_t *p = sq_engine_plan_new(e, 1, &err);
      sq_engine_plan_free(p);
    }
    sq_engine_free(e);
  }
  free(copy);
  free(buf);

  e = sq_engine_load_file("/nonexistent/model.onnx", NULL, &err);
  CHECK(e == NULL);
  CHECK_EQ_INT(err.code, SQ_EIO);
}

static void test_unsupported_all_at_once(void) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t d[2] = {1, 4};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, d);
  sq_onnx_builder_initializer(b, "s", 8 /* string */, 1, (int64_t[]){0}, "");
  sq_onnx_builder_external(b, "big_weights", SQ_DT_FLOAT, 2, d);
  sq_onnx_builder_node(b, "FancyOp", "fancy_1", "x", "a");
  sq_onnx_builder_node(b, "Relu", "ok_relu", "a", "b");
  sq_onnx_builder_node(b, "NotAnOp", "weird_2", "b", "c");
  sq_onnx_builder_output(b, "c", SQ_DT_FLOAT, 2, d);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e == NULL);
  CHECK_EQ_INT(err.code, SQ_EUNSUPPORTED);
  CHECK(strstr(err.msg, "fancy_1") && strstr(err.msg, "FancyOp"));
  CHECK(strstr(err.msg, "weird_2") && strstr(err.msg, "NotAnOp"));
  CHECK(strstr(err.msg, "initializer 's'") != NULL);
  CHECK(strstr(err.msg, "initializer 'big_weights': external data") != NULL);
  CHECK(strstr(err.msg, "ok_relu") == NULL);
  printf("message: %s\n", err.msg);
  free(buf);
}

static void test_undefined_input(void) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t d[2] = {1, 4};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, d);
  sq_onnx_builder_node(b, "Add", "add", "x,ghost", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, d);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e == NULL);
  CHECK_EQ_INT(err.code, SQ_EMODEL_LOAD);
  CHECK(strstr(err.msg, "ghost") != NULL);
  free(buf);
}

/* float16 initializers (torch fp16 exports) become float32 at load, subnormals and inf too */
static void test_fp16_initializer(void) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t d[1] = {6};
  uint16_t half[6] = {0x3E00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x8000};
  float want[6] = {1.5f, -2.0f, 65504.0f, 5.9604644775390625e-8f, INFINITY, 0.0f}; /* 0 + -0 = +0 */
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 1, d);
  sq_onnx_builder_initializer(b, "c", SQ_DT_FLOAT16, 1, d, half);
  sq_onnx_builder_node(b, "Add", "add", "x,c", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 1, d);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e != NULL);
  sq_engine_tensor_t in = {0}, out = {0};
  sq_engine_plan_t *p =
      e ? sq_engine_plan_new_shapes(
              e, &(sq_engine_tensor_t){.dtype = SQ_DT_FLOAT, .rank = 1, .dims = {6}}, 1, &err)
        : NULL;
  CHECK(p != NULL);
  if (p) {
    sq_backend_t *be = sq_backend_cpu_new(1, &err);
    sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
    float x[6] = {0}, y[6];
    sq_engine_plan_input_info(p, 0, &in);
    in.data = x;
    in.bytes = sizeof x;
    sq_engine_plan_output_info(p, 0, &out);
    out.data = y;
    CHECK_EQ_INT(sq_engine_run(p, ctx, &in, 1, &out, 1, &err), 0);
    CHECK(memcmp(y, want, sizeof y) == 0);
    sq_backend_ctx_free(ctx);
    sq_engine_plan_free(p);
    sq_backend_free(be);
  }
  sq_engine_free(e);
  free(buf);
}

int main(void) {
  sq_log_set_level(SQ_LOG_WARN);
  test_valid();
  test_garbage_and_truncation();
  test_unsupported_all_at_once();
  test_undefined_input();
  test_fp16_initializer();
  CHECK_DONE();
}
