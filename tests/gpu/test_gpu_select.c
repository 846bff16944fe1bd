/* test_gpu_select.c: device selection without needing a GPU: "cpu", "auto" (the CUDA backend
 * when a device is usable, else cpu with one log line), "cuda"/"cuda:N" failing clearly when no
 * device is usable, malformed strings; and, in CUDA builds, the host-only plan check: every
 * shipped/test model binds on the CUDA backend, an op without a CUDA kernel is named. */
#include "gpu_common.h"
#ifdef SEGQ_HAVE_CUDA
#include "gpu/cuda/cuda_backend.h"
#endif

static void test_strings(void) {
  sq_error_t err = {0};
  sq_backend_t *b[8];
  int n = sq_backend_open("cpu", 1, b, 8, &err);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK_STR(sq_backend_name(b[0]), "cpu");
    sq_backend_free(b[0]);
  }
  int gpus = sq_backend_cuda_count();
  printf("cuda devices: %d\n", gpus);
  n = sq_backend_open("auto", 1, b, 8, &err);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK_STR(sq_backend_name(b[0]), gpus ? "cuda:0" : "cpu");
    sq_backend_free(b[0]);
  }
  n = sq_backend_open(NULL, 1, b, 8, &err); /* NULL = auto */
  CHECK_EQ_INT(n, 1);
  if (n == 1) sq_backend_free(b[0]);
  const char *cuda_strings[] = {"cuda", "cuda:0", "cuda:all"};
  for (int i = 0; i < 3; i++) {
    sq_error_clear(&err);
    n = sq_backend_open(cuda_strings[i], 1, b, 8, &err);
    if (gpus == 0) {
      CHECK_EQ_INT(n, SQ_EDEVICE);
      CHECK(strstr(err.msg, "no usable CUDA device") != NULL);
      printf("'%s' without a GPU: %s\n", cuda_strings[i], err.msg);
    } else {
      CHECK(n >= 1);
      CHECK(n == (i == 2 ? (gpus < 8 ? gpus : 8) : 1));
      for (int k = 0; k < n; k++) sq_backend_free(b[k]);
    }
  }
  sq_error_clear(&err);
  CHECK_EQ_INT(sq_backend_open("cuda:4000", 1, b, 8, &err), SQ_EDEVICE);
  const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:1x", "cuda:-1", "CPU", "cuda:99999"};
  for (int i = 0; i < 7; i++) {
    sq_error_clear(&err);
    CHECK_EQ_INT(sq_backend_open(bad[i], 1, b, 8, &err), SQ_EINVAL);
    CHECK(strstr(err.msg, bad[i]) != NULL);
  }
  sq_error_clear(&err);
  sq_backend_t *c = sq_backend_cuda_new(0, &err);
  if (gpus == 0) {
    CHECK(c == NULL);
    CHECK_EQ_INT(err.code, SQ_EDEVICE);
  } else {
    CHECK(c != NULL);
    sq_backend_free(c);
  }
}

#ifdef SEGQ_HAVE_CUDA
static void test_plan_check(void) {
  for (size_t m = 0; m < sizeof gpu_test_models / sizeof *gpu_test_models; m++) {
    char path[4096];
    model_path(gpu_test_models[m], path, sizeof path);
    sq_error_t err = {0};
    sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
    CHECK(e != NULL);
    if (!e) {
      fprintf(stderr, "%s\n", err.msg);
      continue;
    }
    sq_engine_plan_t *p = sq_engine_plan_new(e, 2, &err);
    CHECK(p != NULL);
    if (p) {
      int rc = sq_cuda_plan_check(p, &err);
      CHECK_EQ_INT(rc, 0);
      if (rc) fprintf(stderr, "%s: %s\n", gpu_test_models[m], err.msg);
      sq_engine_plan_free(p);
    }
    sq_engine_free(e);
  }
  /* Softmax has a CPU kernel but no CUDA one: the check names the node */
  int64_t d[2] = {2, 5};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 2, d);
  sq_onnx_builder_node(b, "Softmax", "soft_1", "x", "y");
  sq_onnx_builder_node(b, "Relu", "relu_1", "y", "z");
  sq_onnx_builder_output(b, "z", SQ_DT_FLOAT, 2, d);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  CHECK(e != NULL);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, 2, &err) : NULL;
  CHECK(p != NULL);
  if (p) {
    CHECK_EQ_INT(sq_cuda_plan_check(p, &err), SQ_EUNSUPPORTED);
    CHECK(strstr(err.msg, "soft_1") != NULL && strstr(err.msg, "relu_1") == NULL);
    printf("unsupported op: %s\n", err.msg);
    CHECK(!sq_cuda_op_claimed(SQ_OP_Softmax) && sq_cuda_op_claimed(SQ_OP_Conv));
    sq_engine_plan_free(p);
  }
  sq_engine_free(e);
}
#endif

int main(void) {
  test_strings();
#ifdef SEGQ_HAVE_CUDA
  test_plan_check();
#else
  printf("built without the CUDA backend: plan checks skipped\n");
#endif
  CHECK_DONE();
}
