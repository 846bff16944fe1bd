/* test_gpu_ops.c: the CUDA backend against the CPU reference (ggml's test-backend-ops idea):
 * every op the CUDA backend claims runs as small models on random inputs (with and without
 * fusion) in fp32 (<= 1e-4 abs + rel) and, for the ops that run in fp16 NHWC, in an fp16 plan
 * (<= 2e-2); each case also runs three times on one context (eager, then captured into a CUDA
 * graph, then replayed) with fresh inputs; sq_engine_run_image's device stages (raw 8/16-bit
 * and float samples normalized, sigmoid/logits/softmax probabilities and per-sample masks)
 * against the host ones; then the shipped/test models (fp32 and fp16 exports) with every
 * intermediate tensor exposed, so a mismatch names the first node that differs (fp32 <= 1e-3;
 * fp16 reported). Checks NaN/Inf agreement and guard bytes around every output; fails if a
 * claimed op has no case (fp32 and fp16). Exits 77 without a GPU; SEGQ_GPU_TEST_DRYRUN=1 runs
 * everything with cpu backends on both sides (checks the harness and the host-side plans). */
#include "gpu_common.h"
#ifdef SEGQ_HAVE_CUDA
#include "gpu/cuda/cuda_backend.h"

static sq_backend_t *cpu, *gpu, *gpu16;
static int covered[SQ_OP_COUNT], covered16[SQ_OP_COUNT];
static int ncases, nunsupported;

/* Compares output i of both runs; returns 0 when they agree. */
static int compare(const char *what, const run_out_t *ref, const run_out_t *got, int i, double tol,
                   double *maxdiff) {
  const sq_engine_tensor_t *a = &ref->t[i], *b = &got->t[i];
  if (!guards_intact(got, i)) {
    fprintf(stderr, "%s: output '%s': guard bytes around the buffer were overwritten\n", what,
            a->name);
    return -1;
  }
  if (a->dtype != SQ_DT_FLOAT) {
    if (memcmp(a->data, b->data, a->bytes)) {
      fprintf(stderr, "%s: output '%s' (%s) differs\n", what, a->name, sq_dtype_name(a->dtype));
      return -1;
    }
    return 0;
  }
  const float *x = a->data, *y = b->data;
  size_t n = a->bytes / 4;
  for (size_t k = 0; k < n; k++) {
    int ok;
    if (isnan(x[k]) || isnan(y[k]))
      ok = isnan(x[k]) && isnan(y[k]);
    else if (isinf(x[k]) || isinf(y[k]))
      ok = x[k] == y[k];
    else {
      double d = fabs((double)x[k] - (double)y[k]);
      if (d > *maxdiff) *maxdiff = d;
      ok = d <= tol + tol * fabs((double)x[k]);
    }
    if (!ok) {
      fprintf(stderr, "%s: output '%s' [%zu of %zu]: cpu %.9g cuda %.9g\n", what, a->name, k, n,
              x[k], y[k]);
      return -1;
    }
  }
  return 0;
}

/* The same plan three times on one context with fresh inputs each time: the first run binds
 * and grows buffers, the second is captured into a CUDA graph, the third replays it. Each must
 * match the CPU on the same inputs (a graph replaying stale pointers would not). */
static void replay_case(const char *what, sq_engine_plan_t *p, sq_engine_plan_t *pg, int nin,
                        sq_engine_tensor_t *proto) {
  sq_error_t err = {0};
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(gpu, sq_engine_arena_bytes(pg), &err);
  CHECK(ctx != NULL);
  if (!ctx) return;
  run_out_t go = {0};
  int bad = 0;
  double maxdiff = 0;
  for (int r = 0; r < 3 && !bad; r++) {
    sq_engine_tensor_t in[8];
    for (int i = 0; i < nin; i++) {
      in[i] = proto[i];
      in[i].data = malloc(in[i].bytes ? in[i].bytes : 1);
      if (in[i].dtype == SQ_DT_FLOAT)
        for (size_t k = 0; k < in[i].bytes / 4; k++) ((float *)in[i].data)[k] = rand_uniform();
      else
        memcpy(in[i].data, proto[i].data, in[i].bytes);
    }
    run_out_t ro = {0};
    int rc = run_plan(p, cpu, in, nin, &ro, &err);
    int rg = run_plan_ctx(pg, ctx, in, nin, &go, &err);
    CHECK_EQ_INT(rg, 0);
    if (rg) fprintf(stderr, "%s: replay run %d: %s\n", what, r, err.msg);
    for (int i = 0; !rc && !rg && i < ro.n; i++)
      if (compare(what, &ro, &go, i, 1e-4, &maxdiff)) bad++;
    run_out_free(&ro);
    free_inputs(in, nin);
  }
  CHECK(bad == 0);
  if (bad) fprintf(stderr, "%s: differs in the graph capture/replay runs\n", what);
  run_out_free(&go);
  sq_backend_ctx_free(ctx);
}

/* The case in an fp16 plan (NHWC halves where the ops allow, conversions between) against the
 * CPU on fresh finite inputs: <= 2e-2 abs + rel. */
static void fp16_case(const char *what, sq_engine_t *e, uint32_t batch, sq_engine_plan_t *p) {
  sq_error_t err = {0};
  sq_engine_plan_t *ph = sq_engine_plan_new(e, batch, &err);
  CHECK(ph != NULL);
  if (!ph) return;
  sq_engine_tensor_t in[8];
  int nin = make_inputs(p, in);
  run_out_t cro = {0}, *ro = &cro;
  CHECK_EQ_INT(run_plan(p, cpu, in, nin, &cro, &err), 0);
  sq_cuda_layout_info_t li = {0};
  CHECK_EQ_INT(sq_cuda_layout_info(ph, SQ_PRECISION_FP16, &li, &err), 0);
  run_out_t ho = {0};
  int rh = run_plan(ph, gpu16, in, nin, &ho, &err);
  CHECK_EQ_INT(rh, 0);
  if (rh) fprintf(stderr, "%s: cuda fp16: %s\n", what, err.msg);
  double maxdiff = 0;
  int bad = 0;
  for (int i = 0; !rh && i < ro->n; i++)
    if (compare(what, ro, &ho, i, 2e-2, &maxdiff)) bad++;
  CHECK(bad == 0);
  if (!rh && !bad && li.fp16_nodes > 0)
    for (int i = 0; i < ph->norder; i++)
      if (sq_cuda_op_fp16(ph->graph.nodes[ph->order[i]].op))
        covered16[ph->graph.nodes[ph->order[i]].op]++;
  printf("%-40s fp16 %s max abs diff %.3g (%d fp16 nodes, %d conversions, %d fused)\n", what,
         bad || rh ? "FAIL" : "ok", maxdiff, li.fp16_nodes, li.conversions, li.fusions);
  run_out_free(&ho);
  run_out_free(&cro);
  free_inputs(in, nin);
  sq_engine_plan_free(ph);
}

/* Runs one in-memory model on both backends; specials: put NaN/Inf into the first input. */
static void run_case(const char *name, sq_onnx_builder_t *b, uint32_t batch, int specials) {
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  for (int variant = 0; variant < 2; variant++) {
    sq_engine_options_t opt = {.no_fold_bn = variant, .no_fuse = variant};
    char what[256];
    snprintf(what, sizeof what, "%s%s", name, variant ? " (no fusion)" : "");
    sq_error_t err = {0};
    sq_engine_t *e = sq_engine_load_buffer(buf, len, &opt, &err);
    sq_engine_plan_t *p = e ? sq_engine_plan_new(e, batch, &err) : NULL;
    CHECK(p != NULL);
    if (!p) {
      fprintf(stderr, "%s: %s\n", what, err.msg);
      sq_engine_free(e);
      continue;
    }
    if (sq_cuda_plan_check(p, &err)) {
      fprintf(stderr, "%s: not supported on cuda: %s\n", what, err.msg);
      nunsupported++;
      CHECK(0); /* every case here is meant to run on the GPU */
      sq_engine_plan_free(p);
      sq_engine_free(e);
      continue;
    }
    sq_engine_plan_t *pg = sq_engine_plan_new(e, batch, &err);
    sq_engine_tensor_t in[8];
    int nin = make_inputs(p, in);
    if (specials && nin && in[0].dtype == SQ_DT_FLOAT && in[0].bytes >= 16) {
      float *x = in[0].data;
      x[0] = NAN, x[1] = INFINITY, x[2] = -INFINITY, x[3] = -0.0f;
    }
    run_out_t ro = {0}, go = {0};
    int rc = run_plan(p, cpu, in, nin, &ro, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "%s: cpu: %s\n", what, err.msg);
    int rg = run_plan(pg, gpu, in, nin, &go, &err);
    CHECK_EQ_INT(rg, 0);
    if (rg) fprintf(stderr, "%s: cuda: %s\n", what, err.msg);
    double maxdiff = 0;
    int bad = 0;
    for (int i = 0; !rc && !rg && i < ro.n; i++)
      if (compare(what, &ro, &go, i, 1e-4, &maxdiff)) bad++;
    CHECK(bad == 0);
    if (!rc && !rg && !bad)
      for (int i = 0; i < pg->norder; i++) covered[pg->graph.nodes[pg->order[i]].op]++;
    printf("%-40s %s max abs diff %.3g\n", what, bad || rc || rg ? "FAIL" : "ok", maxdiff);
    if (!variant && !rc && !rg) {
      replay_case(what, p, pg, nin, in); /* fresh random inputs: no NaN/Inf there */
      fp16_case(what, e, batch, p);
    }
    ncases++;
    run_out_free(&ro);
    run_out_free(&go);
    free_inputs(in, nin);
    sq_engine_plan_free(pg);
    sq_engine_plan_free(p);
    sq_engine_free(e);
  }
  free(buf);
}

/* ---- model building shorthands ---- */
static void init_rand(sq_onnx_builder_t *b, const char *name, int rank, const int64_t *dims,
                      float lo) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = lo + (rand_uniform() + 1.0f) * 0.5f * (1.0f - lo);
  sq_onnx_builder_initializer(b, name, SQ_DT_FLOAT, rank, dims, v);
  free(v);
}
static void init_i64(sq_onnx_builder_t *b, const char *name, int n, const int64_t *v) {
  int64_t d[1] = {n};
  sq_onnx_builder_initializer(b, name, SQ_DT_INT64, 1, d, v);
}
static void init_f(sq_onnx_builder_t *b, const char *name, int n, const float *v) {
  int64_t d[1] = {n};
  sq_onnx_builder_initializer(b, name, SQ_DT_FLOAT, 1, d, v);
}
static void ints(sq_onnx_builder_t *b, const char *name, int64_t v0, int64_t v1, int64_t v2,
                 int64_t v3, int n) {
  int64_t v[4] = {v0, v1, v2, v3};
  sq_onnx_builder_attr_ints(b, name, v, n);
}
#define D(...) ((const int64_t[]){__VA_ARGS__})
static sq_onnx_builder_t *model(int opset, const char *in, int rank, const int64_t *dims) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(opset);
  sq_onnx_builder_input(b, in, SQ_DT_FLOAT, rank, dims);
  return b;
}
static void out(sq_onnx_builder_t *b, const char *name, int rank) {
  int64_t d[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  sq_onnx_builder_output(b, name, SQ_DT_FLOAT, rank, d);
}

static void cases_conv(void) {
  sq_onnx_builder_t *b = model(13, "x", 4, D(2, 8, 17, 19));
  init_rand(b, "w", 4, D(16, 8, 3, 3), -1);
  init_rand(b, "b", 1, D(16), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,b", "c");
  ints(b, "pads", 1, 1, 1, 1, 4);
  sq_onnx_builder_node(b, "Relu", "relu", "c", "y");
  out(b, "y", 4);
  run_case("Conv 3x3 pad 1 + Relu (cuDNN fused)", b, 2, 1);

  b = model(13, "x", 4, D(2, 8, 17, 19));
  init_rand(b, "w", 4, D(6, 8, 3, 3), -1);
  init_rand(b, "b", 1, D(6), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,b", "c");
  ints(b, "strides", 2, 2, 0, 0, 2);
  sq_onnx_builder_node(b, "Sigmoid", "sig", "c", "y");
  out(b, "y", 4);
  run_case("Conv stride 2 + Sigmoid", b, 2, 0);

  b = model(13, "x", 4, D(1, 8, 9, 9));
  init_rand(b, "w", 4, D(8, 2, 3, 3), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w", "y");
  sq_onnx_builder_attr_int(b, "group", 4);
  ints(b, "dilations", 2, 2, 0, 0, 2);
  ints(b, "pads", 2, 2, 2, 2, 4);
  out(b, "y", 4);
  run_case("Conv group 4 dilation 2, no bias", b, 3, 0);

  b = model(13, "x", 3, D(2, 4, 20));
  init_rand(b, "w", 3, D(6, 4, 5), -1);
  init_rand(b, "b", 1, D(6), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,b", "y");
  ints(b, "pads", 2, 2, 0, 0, 2);
  out(b, "y", 3);
  run_case("Conv 1-D", b, 2, 0);

  b = model(13, "x", 4, D(2, 8, 9, 9));
  init_rand(b, "w", 4, D(8, 4, 2, 2), -1);
  init_rand(b, "b", 1, D(4), -1);
  sq_onnx_builder_node(b, "ConvTranspose", "up", "x,w,b", "c");
  ints(b, "strides", 2, 2, 0, 0, 2);
  sq_onnx_builder_node(b, "Relu", "relu", "c", "y");
  out(b, "y", 4);
  run_case("ConvTranspose 2x2 stride 2 + Relu", b, 2, 0);

  b = model(13, "x", 4, D(1, 4, 7, 7));
  init_rand(b, "w", 4, D(4, 3, 3, 3), -1);
  sq_onnx_builder_node(b, "ConvTranspose", "up", "x,w", "y");
  ints(b, "strides", 2, 2, 0, 0, 2);
  ints(b, "pads", 1, 1, 1, 1, 4);
  ints(b, "output_padding", 1, 1, 0, 0, 2);
  out(b, "y", 4);
  run_case("ConvTranspose pads + output_padding", b, 2, 0);
}

static void cases_pool(void) {
  sq_onnx_builder_t *b = model(13, "x", 4, D(2, 3, 16, 15));
  sq_onnx_builder_node(b, "MaxPool", "mp", "x", "y");
  ints(b, "kernel_shape", 2, 2, 0, 0, 2);
  ints(b, "strides", 2, 2, 0, 0, 2);
  sq_onnx_builder_node(b, "MaxPool", "mp3", "x", "z");
  ints(b, "kernel_shape", 3, 3, 0, 0, 2);
  ints(b, "pads", 1, 1, 1, 1, 4);
  out(b, "y", 4);
  out(b, "z", 4);
  run_case("MaxPool 2x2/2 and 3x3 pad 1", b, 2, 1);

  for (int inc = 0; inc < 2; inc++) {
    b = model(13, "x", 4, D(2, 3, 16, 15));
    sq_onnx_builder_node(b, "AveragePool", "ap", "x", "y");
    ints(b, "kernel_shape", 3, 3, 0, 0, 2);
    ints(b, "strides", 2, 2, 0, 0, 2);
    ints(b, "pads", 1, 1, 1, 1, 4);
    sq_onnx_builder_attr_int(b, "count_include_pad", inc);
    out(b, "y", 4);
    run_case(inc ? "AveragePool count_include_pad" : "AveragePool", b, 2, 0);
  }
  b = model(13, "x", 4, D(2, 5, 9, 7));
  sq_onnx_builder_node(b, "GlobalAveragePool", "gap", "x", "y");
  sq_onnx_builder_node(b, "GlobalMaxPool", "gmp", "x", "z");
  out(b, "y", 4);
  out(b, "z", 4);
  run_case("GlobalAveragePool/GlobalMaxPool", b, 2, 0);

  b = model(13, "x", 4, D(2, 6, 9, 7));
  sq_onnx_builder_node(b, "ReduceMean", "rmean", "x", "y");
  ints(b, "axes", 1, 0, 0, 0, 1);
  sq_onnx_builder_node(b, "ReduceMax", "rmax", "x", "z");
  ints(b, "axes", 1, 0, 0, 0, 1);
  sq_onnx_builder_attr_int(b, "keepdims", 0);
  init_i64(b, "ax", 2, D(2, 3));
  sq_onnx_builder_node(b, "ReduceSum", "rsum", "x,ax", "s");
  out(b, "y", 4);
  out(b, "z", 3);
  out(b, "s", 4);
  run_case("ReduceMean/ReduceMax/ReduceSum", b, 2, 0);
}

static void cases_misc(void) {
  sq_onnx_builder_t *b = model(13, "x", 4, D(2, 6, 5, 7));
  init_rand(b, "s", 1, D(6), -1);
  init_rand(b, "bb", 1, D(6), -1);
  init_rand(b, "m", 1, D(6), -1);
  init_rand(b, "v", 1, D(6), 0.1f);
  sq_onnx_builder_node(b, "BatchNormalization", "bn", "x,s,bb,m,v", "y");
  out(b, "y", 4);
  run_case("BatchNormalization", b, 2, 0);

  const char *modes[][3] = {{"nearest", "asymmetric", "floor"},
                            {"nearest", "half_pixel", "round_prefer_floor"},
                            {"linear", "half_pixel", ""},
                            {"linear", "align_corners", ""},
                            {"linear", "pytorch_half_pixel", ""}};
  for (int i = 0; i < 5; i++) {
    b = model(13, "x", 4, D(2, 3, 7, 9));
    init_f(b, "scales", 4, (const float[]){1, 1, 2, 1.5f});
    sq_onnx_builder_node(b, "Resize", "rs", "x,,scales", "y");
    sq_onnx_builder_attr_string(b, "mode", modes[i][0]);
    sq_onnx_builder_attr_string(b, "coordinate_transformation_mode", modes[i][1]);
    if (*modes[i][2]) sq_onnx_builder_attr_string(b, "nearest_mode", modes[i][2]);
    out(b, "y", 4);
    char name[128];
    snprintf(name, sizeof name, "Resize %s %s %s", modes[i][0], modes[i][1], modes[i][2]);
    run_case(name, b, 2, 0);
  }
  b = model(13, "x", 4, D(2, 3, 8, 8));
  init_i64(b, "sizes", 4, D(2, 3, 5, 13));
  sq_onnx_builder_node(b, "Resize", "rs", "x,,,sizes", "y");
  sq_onnx_builder_attr_string(b, "mode", "linear");
  out(b, "y", 4);
  run_case("Resize linear by sizes", b, 2, 0);

  b = model(13, "x", 4, D(2, 3, 4, 5));
  sq_onnx_builder_input(b, "x2", SQ_DT_FLOAT, 4, D(2, 2, 4, 5));
  init_rand(b, "k", 4, D(1, 4, 4, 5), -1);
  sq_onnx_builder_node(b, "Concat", "cat", "x,x2,x", "y");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_node(b, "Concat", "cat3", "x,x", "z");
  sq_onnx_builder_attr_int(b, "axis", -1);
  out(b, "y", 4);
  out(b, "z", 4);
  run_case("Concat axis 1 and -1", b, 2, 0);

  b = model(13, "a", 2, D(4, 32));
  init_rand(b, "w", 2, D(16, 32), -1);
  init_rand(b, "c", 1, D(16), -1);
  sq_onnx_builder_node(b, "Gemm", "fc", "a,w,c", "y");
  sq_onnx_builder_attr_int(b, "transB", 1);
  sq_onnx_builder_node(b, "Gemm", "fc2", "a,w", "z");
  sq_onnx_builder_attr_int(b, "transB", 1);
  sq_onnx_builder_attr_float(b, "alpha", 0.5f);
  sq_onnx_builder_node(b, "Relu", "r", "z", "zr");
  out(b, "y", 2);
  out(b, "zr", 2);
  run_case("Gemm transB (+C, + Relu)", b, 4, 0);

  b = model(13, "x", 4, D(2, 4, 6, 7));
  sq_onnx_builder_input(b, "m", SQ_DT_FLOAT, 4, D(2, 1, 6, 7));
  init_rand(b, "ch", 4, D(1, 4, 1, 1), -1);
  init_f(b, "two", 1, (const float[]){2.0f});
  sq_onnx_builder_node(b, "Add", "add", "x,x", "a");
  sq_onnx_builder_node(b, "Relu", "addrelu", "a", "ar");
  sq_onnx_builder_node(b, "Mul", "mul", "ar,ch", "b1");
  sq_onnx_builder_node(b, "Sub", "sub", "b1,two", "c1");
  sq_onnx_builder_node(b, "Div", "div", "c1,m", "y");
  sq_onnx_builder_node(b, "Mul", "mul2", "m,x", "y2");
  sq_onnx_builder_node(b, "Sigmoid", "sig", "y2", "y3");
  out(b, "y", 4);
  out(b, "y3", 4);
  run_case("Add/Mul/Sub/Div broadcast + fused", b, 2, 1);

  b = model(13, "x", 4, D(2, 4, 6, 7));
  init_f(b, "lo", 1, (const float[]){-0.25f});
  init_f(b, "hi", 1, (const float[]){0.5f});
  sq_onnx_builder_node(b, "Relu", "relu", "x", "r");
  sq_onnx_builder_node(b, "Sigmoid", "sig", "x", "s");
  sq_onnx_builder_node(b, "Tanh", "tanh", "x", "t");
  sq_onnx_builder_node(b, "LeakyRelu", "leaky", "x", "l");
  sq_onnx_builder_attr_float(b, "alpha", 0.2f);
  sq_onnx_builder_node(b, "Clip", "clip", "x,lo,hi", "c");
  out(b, "r", 4);
  out(b, "s", 4);
  out(b, "t", 4);
  out(b, "l", 4);
  out(b, "c", 4);
  run_case("Relu/Sigmoid/Tanh/LeakyRelu/Clip", b, 2, 1);

  b = model(6, "x", 4, D(2, 4, 6, 7));
  sq_onnx_builder_node(b, "Clip", "clip6", "x", "c");
  sq_onnx_builder_attr_float(b, "min", -0.5f);
  sq_onnx_builder_attr_float(b, "max", 0.25f);
  out(b, "c", 4);
  run_case("Clip opset 6", b, 2, 0);

  b = model(13, "x", 4, D(2, 4, 6, 7));
  init_i64(b, "shape", 3, D(0, 4, 42));
  init_i64(b, "ax0", 1, D(1));
  sq_onnx_builder_node(b, "Identity", "id", "x", "i");
  sq_onnx_builder_node(b, "Relu", "relu", "x", "r");
  sq_onnx_builder_node(b, "Reshape", "resh", "r,shape", "rs");
  sq_onnx_builder_node(b, "Unsqueeze", "unsq", "rs,ax0", "u");
  sq_onnx_builder_node(b, "Squeeze", "sq", "u,ax0", "s");
  sq_onnx_builder_node(b, "Flatten", "flat", "s", "f");
  sq_onnx_builder_node(b, "Dropout", "drop", "f", "d");
  sq_onnx_builder_node(b, "Sigmoid", "sig", "d", "y");
  out(b, "i", 4);
  out(b, "y", 2);
  run_case("Identity/Reshape/Unsqueeze/Squeeze/Flatten/Dropout", b, 2, 0);
}

static void cases_fp16_and_fusion(void) {
  /* Cast to/from float16 values (fp16 exports' edges): rounding must match the CPU's bit for bit
   * (tolerance 1e-4 covers the float16 steps near 1 exactly: they are 1e-3 apart) */
  sq_onnx_builder_t *b = model(13, "x", 4, D(2, 3, 5, 7));
  sq_onnx_builder_node(b, "Cast", "to16", "x", "h");
  sq_onnx_builder_attr_int(b, "to", SQ_DT_FLOAT16);
  sq_onnx_builder_node(b, "Cast", "to32", "h", "y");
  sq_onnx_builder_attr_int(b, "to", SQ_DT_FLOAT);
  sq_onnx_builder_node(b, "Relu", "r", "y", "z");
  out(b, "z", 4);
  run_case("Cast float16 and back", b, 2, 1);

  /* binary ops in fp16: same-shape tensors, a per-channel constant, a constant first operand */
  b = model(13, "x", 4, D(2, 6, 5, 7));
  sq_onnx_builder_input(b, "x2", SQ_DT_FLOAT, 4, D(2, 6, 5, 7));
  init_rand(b, "chan", 4, D(1, 6, 1, 1), 0.5f);
  init_f(b, "three", 1, (const float[]){3.0f});
  sq_onnx_builder_node(b, "Sub", "sub", "x,x2", "a");
  sq_onnx_builder_node(b, "Div", "div", "a,chan", "d");
  sq_onnx_builder_node(b, "Sub", "rsub", "three,d", "e");
  sq_onnx_builder_node(b, "Tanh", "tanh", "e", "t");
  sq_onnx_builder_node(b, "LeakyRelu", "leaky", "t", "y");
  sq_onnx_builder_attr_float(b, "alpha", 0.2f);
  sq_onnx_builder_node(b, "Mul", "mul", "y,x2", "z");
  out(b, "z", 4);
  run_case("Sub/Div/Tanh/LeakyRelu/Mul in fp16", b, 2, 0);

  /* Conv -> Add(residual) -> Relu: the Conv may write relu(conv + bias + z) itself */
  b = model(13, "x", 4, D(2, 8, 12, 12));
  init_rand(b, "w", 4, D(8, 8, 3, 3), -1);
  init_rand(b, "bias", 1, D(8), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,bias", "c");
  ints(b, "pads", 1, 1, 1, 1, 4);
  sq_onnx_builder_node(b, "Add", "add", "c,x", "a");
  sq_onnx_builder_node(b, "Relu", "relu", "a", "y");
  out(b, "y", 4);
  run_case("Conv + residual Add + Relu", b, 2, 0);

  /* channels that need padding (3 -> 8, 5 -> 8), a 1-channel first layer, channel Concat, a
   * per-channel constant Mul, BN, pools and Resize all in one fp16-able chain */
  b = model(13, "x", 4, D(2, 1, 16, 16));
  init_rand(b, "w1", 4, D(5, 1, 3, 3), -1);
  init_rand(b, "w2", 4, D(3, 5, 1, 1), -1);
  init_rand(b, "k", 4, D(1, 8, 1, 1), -1);
  init_rand(b, "s", 1, D(8), -1);
  init_rand(b, "bb", 1, D(8), -1);
  init_rand(b, "m", 1, D(8), -1);
  init_rand(b, "v", 1, D(8), 0.1f);
  init_f(b, "scales", 4, (const float[]){1, 1, 2, 2});
  sq_onnx_builder_node(b, "Conv", "c1", "x,w1", "a");
  ints(b, "pads", 1, 1, 1, 1, 4);
  sq_onnx_builder_node(b, "Conv", "c2", "a,w2", "b1");
  sq_onnx_builder_node(b, "Concat", "cat", "a,b1", "cat");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_node(b, "Mul", "mulk", "cat,k", "mk");
  sq_onnx_builder_node(b, "BatchNormalization", "bn", "mk,s,bb,m,v", "bn");
  sq_onnx_builder_node(b, "MaxPool", "mp", "bn", "mp");
  ints(b, "kernel_shape", 2, 2, 0, 0, 2);
  ints(b, "strides", 2, 2, 0, 0, 2);
  sq_onnx_builder_node(b, "Resize", "up", "mp,,scales", "up");
  sq_onnx_builder_attr_string(b, "mode", "linear");
  sq_onnx_builder_node(b, "Sigmoid", "sig", "up", "y");
  out(b, "y", 4);
  run_case("padded channels, concat, BN, pool, resize", b, 2, 0);
}

/* ---- sq_engine_run_image: device stages against the host ones ---- */

static void image_case(int in_bytes, int kind, int use16) {
  int K = kind == SQ_IMAGE_OUT_SOFTMAX ? 3 : 2;
  sq_onnx_builder_t *b = model(13, "x", 4, D(-1, 2, 9, 11));
  init_rand(b, "w", 4, D(K, 2, 3, 3), -1);
  init_rand(b, "bias", 1, D(K), -1);
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,bias", "c");
  ints(b, "pads", 1, 1, 1, 1, 4);
  if (kind == SQ_IMAGE_OUT_PROB)
    sq_onnx_builder_node(b, "Sigmoid", "sig", "c", "y");
  else
    sq_onnx_builder_node(b, "Identity", "id", "c", "y");
  out(b, "y", 4);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  const int N = 3, C = 2, HW = 9 * 11;
  sq_engine_plan_t *pc = e ? sq_engine_plan_new(e, N, &err) : NULL;
  sq_engine_plan_t *pg = e ? sq_engine_plan_new(e, N, &err) : NULL;
  CHECK(pc && pg);
  uint8_t *raw = malloc((size_t)N * C * HW * 4);
  float scale[6], offset[6], thr[3] = {0.5f, 0.3f, NAN}; /* the last sample: no mask */
  for (int i = 0; i < N * C * HW; i++) {
    uint32_t v = (uint32_t)(i * 2654435761u) >> 8;
    if (in_bytes == 1) raw[i] = (uint8_t)v;
    if (in_bytes == 2) ((uint16_t *)raw)[i] = (uint16_t)v;
    if (in_bytes == 4) ((float *)raw)[i] = (float)(v % 1000) * 0.25f;
  }
  for (int i = 0; i < N * C; i++) {
    scale[i] = (in_bytes == 2 ? 1.0f / 65535.0f : 1.0f / 255.0f) * (1.0f + 0.1f * (float)i);
    offset[i] = -0.3f + 0.05f * (float)i;
  }
  uint8_t mc[3 * 99], mg[3 * 99];
  float prc[3 * 99], prg[3 * 99];
  sq_engine_image_io_t io = {.in_bytes = in_bytes,
                             .in = raw,
                             .scale = scale,
                             .offset = offset,
                             .output = 0,
                             .kind = kind,
                             .channel = 1,
                             .threshold = thr};
  int rc = -1, rg = -1;
  if (pc && pg) {
    sq_backend_ctx_t *cc = sq_backend_ctx_new(cpu, sq_engine_arena_bytes(pc), &err);
    sq_backend_t *bg = use16 ? gpu16 : gpu;
    sq_backend_ctx_t *gc = sq_backend_ctx_new(bg, sq_engine_arena_bytes(pg), &err);
    io.mask = mc, io.prob = prc;
    rc = cc ? sq_engine_run_image(pc, cc, &io, &err) : -1;
    /* three runs on the GPU context: eager, captured, replayed */
    for (int r = 0; r < 3 && gc; r++) {
      io.mask = mg, io.prob = prg;
      memset(mg, 0x77, sizeof mg);
      rg = sq_engine_run_image(pg, gc, &io, &err);
      if (rg) break;
    }
    sq_backend_ctx_free(cc);
    sq_backend_ctx_free(gc);
  }
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(rg, 0);
  if (rg) fprintf(stderr, "image io: %s\n", err.msg);
  int bad = 0, unsure = 0;
  double maxd = 0;
  double tol = use16 ? 2e-2 : 1e-5;
  for (int i = 0; !rc && !rg && i < N * HW; i++) {
    double d = fabs((double)prc[i] - (double)prg[i]);
    if (d > maxd) maxd = d;
    if (!(d <= tol)) bad++;
    int s = i / HW;
    if (isnan(thr[s])) {
      bad += mc[i] != 0 || mg[i] != 0;
    } else if (mc[i] != mg[i]) {
      /* a probability this close to the threshold may round either way */
      if (fabs((double)prc[i] - thr[s]) <= tol)
        unsure++;
      else
        bad++;
    }
  }
  CHECK_EQ_INT(bad, 0);
  printf("run_image in_bytes=%d kind=%d%s: %s, max prob diff %.3g, %d borderline mask pixels\n",
         in_bytes, kind, use16 ? " fp16" : "", bad || rc || rg ? "FAIL" : "ok", maxd, unsure);
  free(raw);
  sq_engine_plan_free(pc);
  sq_engine_plan_free(pg);
  sq_engine_free(e);
}

static void cases_image_io(void) {
  for (int bytes = 1; bytes <= 4; bytes *= 2)
    for (int kind = 0; kind < 3; kind++) image_case(bytes, kind, 0);
  image_case(1, SQ_IMAGE_OUT_LOGITS, 1);
  image_case(2, SQ_IMAGE_OUT_SOFTMAX, 1);
}

/* A whole model, every intermediate tensor exposed as an output so that the first mismatch in
 * execution order names its node. batch 2 (the worker plans for several). */
/* The model in an fp16 plan against the CPU's fp32 outputs: reported, and held to a loose
 * bound (fp16 activations drift; test_gpu_models holds the masks to IoU >= 0.99). */
static void model_fp16(const char *rel, sq_engine_t *e, int nin, sq_engine_tensor_t *in,
                       run_out_t *ro) {
  sq_error_t err = {0};
  sq_engine_plan_t *ph = sq_engine_plan_new(e, 2, &err);
  CHECK(ph != NULL);
  if (!ph) return;
  sq_cuda_layout_info_t li = {0}, l32 = {0};
  CHECK_EQ_INT(sq_cuda_layout_info(ph, SQ_PRECISION_FP16, &li, &err), 0);
  CHECK_EQ_INT(sq_cuda_layout_info(ph, SQ_PRECISION_FP32, &l32, &err), 0);
  run_out_t ho = {0};
  uint64_t t0 = sq_clock_mono_us();
  int rh = run_plan(ph, gpu16, in, nin, &ho, &err);
  double ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
  CHECK_EQ_INT(rh, 0);
  if (rh) fprintf(stderr, "%s: cuda fp16: %s\n", rel, err.msg);
  double maxdiff = 0, sum = 0;
  size_t cnt = 0;
  int bad = 0;
  for (int i = 0; !rh && i < ro->n; i++) {
    if (compare(rel, ro, &ho, i, 0.25, &maxdiff)) bad++;
    const float *x = ro->t[i].data, *y = ho.t[i].data;
    for (size_t k = 0; k < ro->t[i].bytes / 4; k++, cnt++) sum += fabs((double)x[k] - y[k]);
  }
  CHECK(bad == 0);
  printf(
      "%-40s fp16: max abs diff %.3g, mean %.3g; %d/%d steps fp16 nodes, %d conversions, %d "
      "residual fusions; arena %.1f MiB (fp32 plan %.1f MiB); first run %.1f ms\n",
      rel, maxdiff, cnt ? sum / (double)cnt : 0.0, li.fp16_nodes, li.steps, li.conversions,
      li.fusions, (double)li.arena_bytes / 1048576.0, (double)l32.arena_bytes / 1048576.0, ms);
  run_out_free(&ho);
  sq_engine_plan_free(ph);
}

static void model_case(const char *rel) {
  char path[4096];
  model_path(rel, path, sizeof path);
  for (int expose = 0; expose < 2; expose++) {
    sq_error_t err = {0};
    sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
    CHECK(e != NULL);
    if (!e) {
      fprintf(stderr, "%s\n", err.msg);
      return;
    }
    sq_graph_t *g = &e->graph;
    if (expose) {
      int extra = 0;
      for (int i = 0; i < g->nnodes; i++) extra += g->nodes[i].nout;
      int *outs = realloc(g->outputs, sizeof *outs * (size_t)(g->noutputs + extra));
      CHECK(outs != NULL);
      if (!outs) return;
      g->outputs = outs;
      for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < g->nodes[i].nout && !g->nodes[i].dead; k++) {
          int t = g->nodes[i].out[k];
          if (t < 0 || g->tensors[t].is_output) continue;
          g->tensors[t].is_output = true;
          g->outputs[g->noutputs++] = t;
        }
    }
    sq_engine_plan_t *p = sq_engine_plan_new(e, 2, &err);
    sq_engine_plan_t *pg = p ? sq_engine_plan_new(e, 2, &err) : NULL;
    CHECK(pg != NULL);
    if (!pg) {
      fprintf(stderr, "%s: plan: %s\n", rel, err.msg);
      sq_engine_plan_free(p);
      sq_engine_free(e);
      return;
    }
    sq_engine_tensor_t in[8];
    int nin = make_inputs(p, in);
    run_out_t ro = {0}, go = {0};
    int rc = run_plan(p, cpu, in, nin, &ro, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "%s: cpu: %s\n", rel, err.msg);
    uint64_t t0 = sq_clock_mono_us();
    int rg = run_plan(pg, gpu, in, nin, &go, &err);
    double ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
    CHECK_EQ_INT(rg, 0);
    if (rg) fprintf(stderr, "%s: cuda: %s\n", rel, err.msg);
    double maxdiff = 0;
    int first_bad = -1;
    for (int i = 0; !rc && !rg && i < ro.n && first_bad < 0; i++)
      if (compare(rel, &ro, &go, i, 1e-3, &maxdiff)) first_bad = i;
    if (first_bad >= 0) {
      const sq_graph_t *pgr = &pg->graph;
      int t = pgr->outputs[first_bad];
      for (int i = 0; i < pgr->nnodes; i++)
        for (int k = 0; k < pgr->nodes[i].nout; k++)
          if (pgr->nodes[i].out[k] == t)
            fprintf(stderr, "%s: first differing node: '%s' (%s)\n", rel, pgr->nodes[i].name,
                    sq_op_info(pgr->nodes[i].op)->name);
    }
    CHECK(first_bad < 0);
    printf("%-40s %s %d outputs, max abs diff %.3g, first cuda run %.1f ms (incl. binding)\n", rel,
           expose ? "all tensors" : "outputs   ", ro.n, maxdiff, ms);
    if (!expose && !rg) { /* steady state: one context, the plan already bound */
      sq_backend_ctx_t *ctx = sq_backend_ctx_new(gpu, sq_engine_arena_bytes(pg), &err);
      double best = 1e30, sum = 0;
      int runs = 0;
      for (int r = 0; ctx && r < 6; r++) {
        uint64_t t1 = sq_clock_mono_us();
        int rr = sq_engine_run(pg, ctx, in, nin, go.t, go.n, &err);
        double ms1 = (double)(sq_clock_mono_us() - t1) / 1000.0;
        CHECK_EQ_INT(rr, 0);
        if (rr || r == 0) continue; /* the first run grows the context's buffers */
        best = ms1 < best ? ms1 : best;
        sum += ms1;
        runs++;
      }
      if (runs)
        printf(
            "%-40s batch 2: %.2f ms mean, %.2f ms best over %d runs (%s; runs 3+ replay a "
            "captured graph)\n",
            rel, sum / runs, best, runs, sq_backend_name(gpu));
      for (int i = 0; i < go.n; i++) CHECK(guards_intact(&go, i));
      double replay_diff = 0;
      int replay_bad = 0;
      for (int i = 0; !rc && i < ro.n; i++)
        if (compare(rel, &ro, &go, i, 1e-3, &replay_diff)) replay_bad++;
      CHECK(replay_bad == 0);
      sq_backend_ctx_free(ctx);
      model_fp16(rel, e, nin, in, &ro);
    }
    run_out_free(&ro);
    run_out_free(&go);
    free_inputs(in, nin);
    sq_engine_plan_free(pg);
    sq_engine_plan_free(p);
    sq_engine_free(e);
  }
}

/* An op without a CUDA kernel fails the run with SQ_EUNSUPPORTED naming the node. */
static void unsupported_case(void) {
  sq_onnx_builder_t *b = model(13, "x", 2, D(2, 5));
  sq_onnx_builder_node(b, "Softmax", "soft_1", "x", "y");
  out(b, "y", 2);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, 2, &err) : NULL;
  CHECK(p != NULL);
  if (p) {
    sq_engine_tensor_t in[2];
    int nin = make_inputs(p, in);
    run_out_t go = {0};
    CHECK_EQ_INT(run_plan(p, gpu, in, nin, &go, &err), SQ_EUNSUPPORTED);
    CHECK(strstr(err.msg, "soft_1") != NULL);
    run_out_free(&go);
    free_inputs(in, nin);
    sq_engine_plan_free(p);
  }
  sq_engine_free(e);
}

int main(void) {
  const char *why = NULL, *dry = getenv("SEGQ_GPU_TEST_DRYRUN");
  int dryrun = dry && *dry == '1';
  if (sq_cuda_device_count(&why) == 0 && !dryrun) {
    printf("SKIP: no usable CUDA device (%s); nothing ran on a GPU\n", why ? why : "none");
    return 77;
  }
  sq_error_t err = {0};
  cpu = sq_backend_cpu_new(4, &err);
  /* SEGQ_GPU_TEST_DRYRUN=1 (no GPU needed): the "gpu" side is a second cpu backend, which
   * checks the cases, the host-side CUDA plan checks and the comparison code themselves. */
  gpu = dryrun ? sq_backend_cpu_new(1, &err) : sq_backend_cuda_new(0, &err);
  gpu16 = dryrun ? sq_backend_cpu_new(1, &err) : sq_backend_cuda_new(0, &err);
  sq_backend_options_t fp16 = {.precision = SQ_PRECISION_FP16};
  if (gpu16 && sq_backend_configure(gpu16, &fp16, &err)) {
    fprintf(stderr, "fp16: %s\n", err.msg);
    return 1;
  }
  if (dryrun) printf("DRY RUN: both sides on the cpu backend; nothing runs on a GPU\n");
  if (!cpu || !gpu || !gpu16) {
    fprintf(stderr, "backends: %s\n", err.msg);
    return 1;
  }
  size_t fr = 0, tot = 0;
  sq_backend_memory_info(gpu, &fr, &tot);
  printf("backend %s: %zu MiB free of %zu MiB\n", sq_backend_name(gpu), fr >> 20, tot >> 20);
  cases_conv();
  cases_pool();
  cases_misc();
  cases_fp16_and_fusion();
  cases_image_io();
  for (int op = 0; op < SQ_OP_COUNT; op++) {
    if (sq_cuda_op_claimed(op) && !covered[op]) {
      fprintf(stderr, "op %s is claimed by the cuda backend but no case ran it\n",
              sq_op_info(op)->name);
      CHECK(0);
    }
    if (sq_cuda_op_fp16(op) && !covered16[op]) {
      fprintf(stderr, "op %s runs in fp16 on the cuda backend but no fp16 case ran it\n",
              sq_op_info(op)->name);
      CHECK(0);
    }
  }
  const char *quick = getenv("SEGQ_GPU_TEST_QUICK"); /* op cases only (compute-sanitizer) */
  for (size_t m = 0;
       m < sizeof gpu_test_models / sizeof *gpu_test_models && !(quick && *quick == '1'); m++)
    model_case(gpu_test_models[m]);
  if (!dryrun) unsupported_case();
  printf("%d op cases, %d unsupported\n", ncases, nunsupported);
  sq_backend_free(gpu16);
  sq_backend_free(gpu);
  sq_backend_free(cpu);
  CHECK_DONE();
}
#else
int main(void) {
  (void)check_passed, (void)check_failed;
  printf("SKIP: this build has no CUDA backend (SEGQ_CUDA=OFF or no CUDA toolkit/cuDNN)\n");
  return 77;
}
#endif
