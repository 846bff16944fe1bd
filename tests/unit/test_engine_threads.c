/* Engine concurrency: one plan run at the same time on two CPU contexts from two threads gives
 * bit-identical results to a run on one context (plans are immutable; each context has its
 * own arena, pool and scratch). Also a plan sized for batch 4 runs in a context sized for it
 * while a batch-1 plan of the same engine reuses that context. */
#include <pthread.h>
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

enum { ITERS = 20 };

static uint8_t *model(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 3, 20, 20}, wd[4] = {6, 3, 3, 3}, w2d[4] = {6, 3, 2, 2}, bd[1] = {6};
  float w[6 * 27], w2[6 * 3 * 4], bias[6];
  for (int i = 0; i < 6 * 27; i++) w[i] = (float)((i * 37) % 17 - 8) / 10.0f;
  for (int i = 0; i < 6 * 12; i++) w2[i] = (float)((i * 13) % 11 - 5) / 10.0f;
  for (int i = 0; i < 6; i++) bias[i] = (float)i / 10.0f;
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_initializer(b, "w", SQ_DT_FLOAT, 4, wd, w);
  sq_onnx_builder_initializer(b, "w2", SQ_DT_FLOAT, 4, w2d, w2);
  sq_onnx_builder_initializer(b, "b", SQ_DT_FLOAT, 1, bd, bias);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,b", "c");
  int64_t pads[4] = {1, 1, 1, 1}, k2[2] = {2, 2};
  sq_onnx_builder_attr_ints(b, "pads", pads, 4);
  sq_onnx_builder_node(b, "Relu", "relu", "c", "r");
  sq_onnx_builder_node(b, "MaxPool", "pool", "r", "p");
  sq_onnx_builder_attr_ints(b, "kernel_shape", k2, 2);
  sq_onnx_builder_attr_ints(b, "strides", k2, 2);
  sq_onnx_builder_node(b, "ConvTranspose", "up", "p,w2", "u");
  sq_onnx_builder_attr_ints(b, "strides", k2, 2);
  sq_onnx_builder_node(b, "Concat", "cat", "u,r", "cat");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_node(b, "Sigmoid", "sig", "cat", "y");
  int64_t yd[4] = {-1, 9, 20, 20};
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

typedef struct {
  sq_engine_plan_t *plan;
  sq_backend_ctx_t *ctx;
  const float *x;
  size_t xbytes;
  const float *want;
  size_t ybytes;
  int mismatches, errors;
} job_t;

static void *worker(void *arg) {
  job_t *j = arg;
  float *y = malloc(j->ybytes);
  for (int it = 0; it < ITERS; it++) {
    sq_error_t err = {0};
    sq_engine_tensor_t in, out;
    sq_engine_plan_input_info(j->plan, 0, &in);
    in.data = (void *)j->x;
    in.bytes = j->xbytes;
    sq_engine_plan_output_info(j->plan, 0, &out);
    out.data = y;
    if (sq_engine_run(j->plan, j->ctx, &in, 1, &out, 1, &err))
      j->errors++;
    else if (memcmp(y, j->want, j->ybytes) != 0)
      j->mismatches++;
  }
  free(y);
  return NULL;
}

int main(void) {
  sq_log_set_level(SQ_LOG_WARN);
  size_t len;
  uint8_t *buf = model(&len);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e != NULL);
  sq_engine_plan_t *p4 = e ? sq_engine_plan_new(e, 4, &err) : NULL;
  sq_engine_plan_t *p1 = e ? sq_engine_plan_new(e, 1, &err) : NULL;
  CHECK(p4 && p1);
  if (!p4 || !p1) {
    fprintf(stderr, "%s\n", err.msg);
    CHECK_DONE();
  }
  sq_backend_t *be = sq_backend_cpu_new(2, &err);
  size_t arena = sq_engine_arena_bytes(p4);
  CHECK(sq_engine_arena_bytes(p1) <= arena);
  sq_backend_ctx_t *c0 = sq_backend_ctx_new(be, arena, &err);
  sq_backend_ctx_t *c1 = sq_backend_ctx_new(be, arena, &err);
  sq_backend_ctx_t *c2 = sq_backend_ctx_new(be, arena, &err);
  CHECK(c0 && c1 && c2);
  float x[4 * 3 * 20 * 20];
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
    x[i] = (float)((i * 7919) % 1000) / 500.0f - 1;
  size_t ybytes = 4 * 9 * 20 * 20 * sizeof(float);
  float *want = malloc(ybytes);
  job_t ref = {p4, c0, x, sizeof x, NULL, ybytes, 0, 0};
  sq_engine_tensor_t in, out;
  sq_engine_plan_input_info(p4, 0, &in);
  in.data = x;
  in.bytes = sizeof x;
  sq_engine_plan_output_info(p4, 0, &out);
  out.data = want;
  CHECK_EQ_INT(out.bytes, ybytes);
  CHECK_EQ_INT(sq_engine_run(p4, c0, &in, 1, &out, 1, &err), 0);
  /* batch 1 on the same context: the first image's result is the same */
  float *y1 = malloc(ybytes / 4);
  sq_engine_plan_input_info(p1, 0, &in);
  in.data = x;
  in.bytes = sizeof x / 4;
  sq_engine_plan_output_info(p1, 0, &out);
  out.data = y1;
  CHECK_EQ_INT(sq_engine_run(p1, c0, &in, 1, &out, 1, &err), 0);
  CHECK(memcmp(y1, want, ybytes / 4) == 0);
  free(y1);

  job_t a = ref, b = ref;
  a.ctx = c1;
  b.ctx = c2;
  a.want = b.want = want;
  pthread_t ta, tb;
  pthread_create(&ta, NULL, worker, &a);
  pthread_create(&tb, NULL, worker, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CHECK_EQ_INT(a.errors + b.errors, 0);
  CHECK_EQ_INT(a.mismatches + b.mismatches, 0);
  /* a context too small for the plan is refused, not overrun */
  sq_backend_ctx_t *small = sq_backend_ctx_new(be, sq_engine_arena_bytes(p1), &err);
  sq_engine_plan_input_info(p4, 0, &in);
  in.data = x;
  in.bytes = sizeof x;
  sq_engine_plan_output_info(p4, 0, &out);
  out.data = want;
  if (sq_engine_arena_bytes(p1) < arena)
    CHECK_EQ_INT(sq_engine_run(p4, small, &in, 1, &out, 1, &err), SQ_EINVAL);
  size_t free_b = 0, total_b = 0;
  CHECK_EQ_INT(sq_backend_memory_info(be, &free_b, &total_b), 0);
  CHECK(total_b > 0 && free_b <= total_b);
  CHECK_STR(sq_backend_name(be), "cpu");
  sq_backend_ctx_free(small);
  sq_backend_ctx_free(c0);
  sq_backend_ctx_free(c1);
  sq_backend_ctx_free(c2);
  sq_engine_plan_free(p4);
  sq_engine_plan_free(p1);
  sq_backend_free(be);
  sq_engine_free(e);
  free(want);
  free(buf);
  CHECK_DONE();
}
