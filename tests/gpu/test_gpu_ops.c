/* test_gpu_ops.c: the CUDA backend against the CPU reference (ggml's test-backend-ops idea):
 * every op the CUDA backend claims runs as small models on random inputs (with and without
 * fusion), then the shipped/test models with every intermediate tensor exposed, so a mismatch
 * names the first node that differs. Checks NaN/Inf agreement, guard bytes around every
 * output, fp32 max abs diff (<= 1e-4 per op, <= 1e-3 per model). Exits 77 without a GPU. */
#include "gpu_common.h"
#ifdef SEGQ_HAVE_CUDA
#include "gpu/cuda/cuda_backend.h"

static sq_backend_t *cpu, *gpu;
static int covered[SQ_OP_COUNT];
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

/* A whole model, every intermediate tensor exposed as an output so that the first mismatch in
 * execution order names its node. batch 2 (the worker plans for several). */
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
        printf("%-40s batch 2: %.2f ms mean, %.2f ms best over %d runs (%s)\n", rel, sum / runs,
               best, runs, sq_backend_name(gpu));
      for (int i = 0; i < go.n; i++) CHECK(guards_intact(&go, i));
      sq_backend_ctx_free(ctx);
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
  if (dryrun) printf("DRY RUN: both sides on the cpu backend; nothing runs on a GPU\n");
  if (!cpu || !gpu) {
    fprintf(stderr, "backends: %s\n", err.msg);
    return 1;
  }
  size_t fr = 0, tot = 0;
  sq_backend_memory_info(gpu, &fr, &tot);
  printf("backend %s: %zu MiB free of %zu MiB\n", sq_backend_name(gpu), fr >> 20, tot >> 20);
  cases_conv();
  cases_pool();
  cases_misc();
  for (int op = 0; op < SQ_OP_COUNT; op++)
    if (sq_cuda_op_claimed(op) && !covered[op]) {
      fprintf(stderr, "op %s is claimed by the cuda backend but no case ran it\n",
              sq_op_info(op)->name);
      CHECK(0);
    }
  const char *quick = getenv("SEGQ_GPU_TEST_QUICK"); /* op cases only (compute-sanitizer) */
  for (size_t m = 0;
       m < sizeof gpu_test_models / sizeof *gpu_test_models && !(quick && *quick == '1'); m++)
    model_case(gpu_test_models[m]);
  if (!dryrun) unsupported_case();
  printf("%d op cases, %d unsupported\n", ncases, nunsupported);
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
