/* test_gpu_select.c: device selection without needing a GPU: "cpu", "auto" (the CUDA backend
 * when a device is usable, else cpu with one log line), "cuda"/"cuda:N" failing clearly when no
 * device is usable, malformed strings; and, in CUDA builds, the host-only parts of the backend:
 * the plan check (every shipped/test model binds, an op without a CUDA kernel is named), the
 * fp16 conversions and filter layout, and the fp32/fp16 layout plans of the models. */
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

/* The host side of the fp16 binding: half conversion (must round exactly like the engine's
 * Cast(to=FLOAT16)), the padded NHWC filter, and the layout plans of the test models. */
static void test_fp16_host(void) {
  static const struct {
    float f;
    uint16_t h;
  } known[] = {{1.0f, 0x3c00},           {-2.0f, 0xc000},       {65504.0f, 0x7bff},
               {65520.0f, 0x7c00},       {0.0f, 0x0000},        {-0.0f, 0x8000},
               {5.9604645e-08f, 1},      {2.9802322e-08f, 0},   {8.9406967e-08f, 2},
               {6.1035156e-05f, 0x0400}, {0.33325195f, 0x3555}, {INFINITY, 0x7c00}};
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
    CHECK_EQ_INT(sq_cuda_f32_to_f16(known[i].f), known[i].h);
    if (sq_cuda_f32_to_f16(known[i].f) != known[i].h)
      fprintf(stderr, "  half(%g) = 0x%04x, want 0x%04x\n", known[i].f,
              sq_cuda_f32_to_f16(known[i].f), known[i].h);
  }
  CHECK(isnan(sq_cuda_f16_to_f32(sq_cuda_f32_to_f16(NAN))));
  int bad = 0;
  for (int i = 0; i < 200000; i++) {
    float x = rand_uniform() * (i % 3 == 0 ? 70000.0f : i % 3 == 1 ? 1.0f : 1e-4f);
    float want = sq_round_fp16(x), got = sq_cuda_f16_to_f32(sq_cuda_f32_to_f16(x));
    if (memcmp(&want, &got, sizeof got) != 0) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  /* K=3, C=2, 1x2 kernel -> [8][1][2][8] with zeros outside */
  float w[3 * 2 * 2];
  for (int i = 0; i < 12; i++) w[i] = (float)(i + 1);
  uint16_t f[8 * 2 * 8];
  sq_cuda_filter_nhwc16(w, 3, 2, 1, 2, 8, 8, f);
  CHECK_EQ_INT(sq_cuda_f16_to_f32(f[((1 * 1 + 0) * 2 + 1) * 8 + 0]),
               w[((1 * 2 + 0) * 1 + 0) * 2 + 1]);
  CHECK_EQ_INT(f[((2 * 1 + 0) * 2 + 0) * 8 + 1], sq_cuda_f32_to_f16(w[((2 * 2 + 1) * 1 + 0) * 2]));
  int nonzero_pad = 0;
  for (int o = 0; o < 8; o++)
    for (int x = 0; x < 2; x++)
      for (int c = 0; c < 8; c++)
        if ((o >= 3 || c >= 2) && f[(o * 2 + x) * 8 + c]) nonzero_pad++;
  CHECK_EQ_INT(nonzero_pad, 0);
  /* layouts: fp32 plans have no conversions; fp16 plans put the convs in fp16, convert at the
   * edges, and never let two live buffers share bytes */
  for (size_t m = 0; m < sizeof gpu_test_models / sizeof *gpu_test_models; m++) {
    char path[4096];
    model_path(gpu_test_models[m], path, sizeof path);
    sq_error_t err = {0};
    sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
    sq_engine_plan_t *p = e ? sq_engine_plan_new(e, 4, &err) : NULL;
    CHECK(p != NULL);
    if (!p) {
      sq_engine_free(e);
      continue;
    }
    sq_cuda_layout_info_t l32, l16;
    CHECK_EQ_INT(sq_cuda_layout_info(p, SQ_PRECISION_FP32, &l32, &err), 0);
    CHECK_EQ_INT(sq_cuda_layout_info(p, SQ_PRECISION_FP16, &l16, &err), 0);
    CHECK_EQ_INT(l32.conversions, 0);
    CHECK_EQ_INT(l32.fp16_nodes, 0);
    CHECK_EQ_INT(l32.steps, sq_engine_plan_node_count(p));
    CHECK(l16.fp16_nodes > 0);
    CHECK(l16.conversions >= 2); /* the input in, the output out */
    CHECK_EQ_INT(l32.overlaps, 0);
    CHECK_EQ_INT(l16.overlaps, 0);
    CHECK(l16.arena_bytes <= l32.arena_bytes);
    printf(
        "%-42s fp32: %d steps, arena %.2f MiB, %d fused | fp16: %d fp16 nodes, %d conversions, "
        "arena %.2f MiB, %d fused\n",
        gpu_test_models[m], l32.steps, (double)l32.arena_bytes / 1048576.0, l32.fusions,
        l16.fp16_nodes, l16.conversions, (double)l16.arena_bytes / 1048576.0, l16.fusions);
    /* hrnet_block's fusion Add takes a Conv output whose other input it does not overwrite;
     * resunet's residual Adds write over their skip input in place (the engine's plan), which
     * the planner does not fuse (cuDNN would read z while writing it) */
    if (strstr(gpu_test_models[m], "hrnet")) CHECK(l32.fusions >= 1 && l16.fusions >= 1);
    sq_engine_plan_free(p);
    sq_engine_free(e);
  }
}
#endif

int main(void) {
  test_strings();
#ifdef SEGQ_HAVE_CUDA
  test_fp16_host();
  test_plan_check();
#else
  printf("built without the CUDA backend: plan checks skipped\n");
#endif
  CHECK_DONE();
}
