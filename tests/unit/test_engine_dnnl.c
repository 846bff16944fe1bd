/* The cpu backend's compiled programs (oneDNN primitives in oneDNN's layouts, compile-time
 * fusions, reorders at the edges) against the reference kernels run node by node on plain
 * NCHW (sq_exec_cpu), on graphs shaped like the models users bring: a residual block (residual
 * Add as a sum post-op), a MobileNetV3 block (HardSwish and HardSigmoid folded into convs,
 * squeeze-excite Mul), a UNet up step (ConvTranspose 2x2/2 + Concat), bilinear and nearest
 * Resize, an unfolded BatchNormalization after an Add, ceil-mode pooling, a 1-D conv and convs
 * whose weights the graph computes; batch 1 and 3, 1 and 2 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/onnx/cpu_program.h"

static float frand(void) {
  return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
}

static void init(sq_onnx_builder_t *b, const char *name, int rank, const int64_t *dims,
                 float scale) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  float *v = malloc((size_t)n * sizeof *v);
  for (int64_t i = 0; i < n; i++) v[i] = frand() * scale;
  sq_onnx_builder_initializer(b, name, SQ_DT_FLOAT, rank, dims, v);
  free(v);
}

/* Conv node "name" x -> y with fresh weights [m, c/group, k, k] (+ bias), pads k/2 */
static void conv(sq_onnx_builder_t *b, const char *name, const char *x, const char *y, int c, int m,
                 int k, int stride, int group) {
  char w[64], bias[64], in[160];
  snprintf(w, sizeof w, "%s.w", name);
  snprintf(bias, sizeof bias, "%s.b", name);
  int64_t wd[4] = {m, c / group, k, k}, bd[1] = {m};
  init(b, w, 4, wd, 1.0f / sqrtf((float)(c / group * k * k)));
  init(b, bias, 1, bd, 0.1f);
  snprintf(in, sizeof in, "%s,%s,%s", x, w, bias);
  sq_onnx_builder_node(b, "Conv", name, in, y);
  int64_t pads[4] = {k / 2, k / 2, k / 2, k / 2}, st[2] = {stride, stride};
  sq_onnx_builder_attr_ints(b, "pads", pads, 4);
  sq_onnx_builder_attr_ints(b, "strides", st, 2);
  if (group > 1) sq_onnx_builder_attr_int(b, "group", group);
}

static uint8_t *graph_residual(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 16, 12, 10};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  conv(b, "c0", "x", "a", 16, 16, 3, 1, 1);
  sq_onnx_builder_node(b, "Relu", "r0", "a", "ar");
  conv(b, "c1", "ar", "b1", 16, 16, 3, 1, 1);
  sq_onnx_builder_node(b, "Relu", "r1", "b1", "br");
  conv(b, "c2", "br", "c", 16, 16, 3, 1, 1);
  sq_onnx_builder_node(b, "Add", "add", "c,ar", "s"); /* residual, then Relu on the sum */
  sq_onnx_builder_node(b, "Relu", "r2", "s", "y");
  conv(b, "down", "y", "d", 16, 32, 3, 2, 1);         /* strided */
  conv(b, "proj", "y", "p", 16, 32, 1, 2, 1);         /* 1x1 strided projection */
  sq_onnx_builder_node(b, "Add", "add2", "d,p", "z"); /* both sides computed by convs */
  sq_onnx_builder_output(b, "z", SQ_DT_FLOAT, 4, (int64_t[]){-1, 32, 6, 5});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static uint8_t *graph_mobilenet(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 3, 17, 15};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  conv(b, "stem", "x", "a", 3, 24, 3, 2, 1);
  sq_onnx_builder_node(b, "HardSwish", "hs0", "a", "ah");
  conv(b, "dw", "ah", "d", 24, 24, 3, 1, 24); /* depthwise */
  sq_onnx_builder_node(b, "HardSwish", "hs1", "d", "dh");
  sq_onnx_builder_node(b, "GlobalAveragePool", "gap", "dh", "g");
  conv(b, "se1", "g", "s1", 24, 8, 1, 1, 1);
  sq_onnx_builder_node(b, "Relu", "ser", "s1", "s1r");
  conv(b, "se2", "s1r", "s2", 8, 24, 1, 1, 1);
  sq_onnx_builder_node(b, "HardSigmoid", "hsig", "s2", "s");
  sq_onnx_builder_attr_float(b, "alpha", 1.0f / 6.0f);
  sq_onnx_builder_node(b, "Mul", "se", "dh,s", "e");
  conv(b, "pw", "e", "p", 24, 16, 1, 1, 1);
  sq_onnx_builder_node(b, "Sigmoid", "sig", "p", "q");
  sq_onnx_builder_node(b, "Tanh", "tanh", "q", "y"); /* a chain of unary ops after a conv */
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, (int64_t[]){-1, 16, 9, 8});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static uint8_t *graph_unet_up(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 8, 10, 12};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  conv(b, "enc", "x", "e", 8, 16, 3, 1, 1);
  sq_onnx_builder_node(b, "Relu", "er", "e", "er");
  sq_onnx_builder_node(b, "MaxPool", "pool", "er", "m");
  int64_t k2[2] = {2, 2}, wd[4] = {16, 24, 2, 2}, bd[1] = {24};
  sq_onnx_builder_attr_ints(b, "kernel_shape", k2, 2);
  sq_onnx_builder_attr_ints(b, "strides", k2, 2);
  conv(b, "mid", "m", "c", 16, 16, 3, 1, 1);
  init(b, "up.w", 4, wd, 0.3f);
  init(b, "up.b", 1, bd, 0.1f);
  sq_onnx_builder_node(b, "ConvTranspose", "up", "c,up.w,up.b", "u");
  sq_onnx_builder_attr_ints(b, "kernel_shape", k2, 2);
  sq_onnx_builder_attr_ints(b, "strides", k2, 2);
  sq_onnx_builder_node(b, "Concat", "cat", "u,er", "k");
  sq_onnx_builder_attr_int(b, "axis", 1);
  conv(b, "dec", "k", "y", 40, 4, 3, 1, 1);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, (int64_t[]){-1, 4, 10, 12});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static uint8_t *graph_resize_bn_pool(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 16, 9, 11};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  conv(b, "c0", "x", "a", 16, 16, 3, 1, 1);
  float sc[4] = {1, 1, 2, 2};
  int64_t d4[1] = {4}, d0[1] = {0}, cd[1] = {16};
  sq_onnx_builder_initializer(b, "scales", SQ_DT_FLOAT, 1, d4, sc);
  sq_onnx_builder_initializer(b, "roi", SQ_DT_FLOAT, 1, d0, sc);
  sq_onnx_builder_node(b, "Resize", "lin", "a,roi,scales", "l");
  sq_onnx_builder_attr_string(b, "mode", "linear");
  sq_onnx_builder_node(b, "Resize", "near", "a,roi,scales", "nn");
  sq_onnx_builder_attr_string(b, "mode", "nearest");
  sq_onnx_builder_attr_string(b, "coordinate_transformation_mode", "asymmetric");
  sq_onnx_builder_attr_string(b, "nearest_mode", "floor");
  sq_onnx_builder_node(b, "Add", "add", "l,nn", "s");
  init(b, "bn.s", 1, cd, 1.0f);
  init(b, "bn.b", 1, cd, 0.5f);
  init(b, "bn.m", 1, cd, 0.5f);
  float var[16];
  for (int i = 0; i < 16; i++) var[i] = 0.5f + (float)i / 16.0f;
  sq_onnx_builder_initializer(b, "bn.v", SQ_DT_FLOAT, 1, cd, var);
  sq_onnx_builder_node(b, "BatchNormalization", "bn", "s,bn.s,bn.b,bn.m,bn.v", "n");
  sq_onnx_builder_node(b, "MaxPool", "mp", "n", "p");
  int64_t k3[2] = {3, 3}, s2[2] = {2, 2}, p1[4] = {1, 1, 1, 1};
  sq_onnx_builder_attr_ints(b, "kernel_shape", k3, 2);
  sq_onnx_builder_attr_ints(b, "strides", s2, 2);
  sq_onnx_builder_attr_int(b, "ceil_mode", 1);
  sq_onnx_builder_node(b, "AveragePool", "ap", "p", "y");
  sq_onnx_builder_attr_ints(b, "kernel_shape", k3, 2);
  sq_onnx_builder_attr_ints(b, "pads", p1, 4);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, (int64_t[]){-1, 16, 9, 11});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static uint8_t *graph_conv1d(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[3] = {-1, 8, 33}, wd[3] = {12, 8, 5}, bd[1] = {12};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 3, xd);
  init(b, "w", 3, wd, 0.2f);
  init(b, "b", 1, bd, 0.1f);
  sq_onnx_builder_node(b, "Conv", "c", "x,w,b", "a");
  int64_t pads[2] = {2, 1}, st[1] = {2}, dil[1] = {1};
  sq_onnx_builder_attr_ints(b, "pads", pads, 2);
  sq_onnx_builder_attr_ints(b, "strides", st, 1);
  sq_onnx_builder_attr_ints(b, "dilations", dil, 1);
  sq_onnx_builder_node(b, "Relu", "r", "a", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 3, (int64_t[]){-1, 12, 16});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

/* Convolutions whose weights and bias the graph computes (scaled by the input's mean, so they
 * change with every input): oneDNN runs them with a per-run weight reorder, plain and grouped. */
static uint8_t *graph_conv_dynamic_weights(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 8, 7, 9}, wd[4] = {12, 8, 3, 3}, gd[4] = {12, 3, 3, 3}, bd[1] = {12};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  init(b, "w0", 4, wd, 0.3f);
  init(b, "g0", 4, gd, 0.3f);
  init(b, "b0", 1, bd, 0.5f);
  sq_onnx_builder_node(b, "ReduceMean", "mean", "x", "m");
  sq_onnx_builder_attr_int(b, "keepdims", 0);
  sq_onnx_builder_node(b, "Mul", "wmul", "w0,m", "w");
  sq_onnx_builder_node(b, "Mul", "gmul", "g0,m", "gw");
  sq_onnx_builder_node(b, "Mul", "bmul", "b0,m", "bias");
  sq_onnx_builder_node(b, "Conv", "conv", "x,w,bias", "a");
  int64_t p1[4] = {1, 1, 1, 1};
  sq_onnx_builder_attr_ints(b, "pads", p1, 4);
  sq_onnx_builder_node(b, "Relu", "r", "a", "ar");
  sq_onnx_builder_node(b, "Conv", "gconv", "ar,gw", "y"); /* group 4: weights [12, 3, 3, 3] */
  sq_onnx_builder_attr_ints(b, "pads", p1, 4);
  sq_onnx_builder_attr_int(b, "group", 4);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, (int64_t[]){-1, 12, 7, 9});
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

/* runs the plan on the backend and on the reference kernels; returns the max abs difference */
static double compare(const char *what, uint8_t *(*make)(size_t *), int batch, int threads,
                      sq_cpu_program_stats_t *st) {
  size_t len;
  uint8_t *buf = make(&len);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  if (!e) {
    fprintf(stderr, "%s: load: %s\n", what, err.msg);
    return INFINITY;
  }
  sq_engine_plan_t *p = sq_engine_plan_new(e, (uint32_t)batch, &err);
  sq_backend_t *be = sq_backend_cpu_new(threads, &err);
  sq_backend_ctx_t *c = p && be ? sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err) : NULL;
  double diff = INFINITY;
  if (!c) {
    fprintf(stderr, "%s: %s\n", what, err.msg);
    goto out;
  }
  sq_engine_tensor_t in, out[2];
  sq_engine_plan_input_info(p, 0, &in);
  sq_engine_plan_output_info(p, 0, &out[0]);
  out[1] = out[0];
  in.data = malloc(in.bytes);
  out[0].data = malloc(out[0].bytes);
  out[1].data = malloc(out[1].bytes);
  for (size_t i = 0; i < in.bytes / 4; i++) ((float *)in.data)[i] = frand();
  int rc = sq_engine_run(p, c, &in, 1, &out[0], 1, &err);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "%s: run: %s\n", what, err.msg);
  void *state = NULL;
  if (!rc && !sq_engine_bind(p, be, &state, &err) && state) sq_cpu_program_stats(state, st);
  uint8_t *arena = malloc(sq_engine_arena_bytes(p) + 64);
  sq_cpu_t *pool = sq_cpu_new(1);
  int rr = sq_exec_cpu(pool, p, arena, &in, &out[1], &err);
  CHECK_EQ_INT(rr, 0);
  if (!rc && !rr) {
    diff = 0;
    const float *a = out[0].data, *r = out[1].data;
    for (size_t i = 0; i < out[0].bytes / 4; i++) {
      double d = fabs((double)a[i] - r[i]);
      if (!(d <= diff)) diff = d;
    }
  }
  printf("%-22s batch %d threads %d: max |backend - reference| = %.3g\n", what, batch, threads,
         diff);
  sq_cpu_free(pool);
  free(arena);
  free(in.data);
  free(out[0].data);
  free(out[1].data);
out:
  sq_backend_ctx_free(c);
  sq_engine_plan_free(p);
  sq_backend_free(be);
  sq_engine_free(e);
  return diff;
}

int main(void) {
  /* and what each program is made of: the fusions and layouts these graphs exist to test
   * (-1: not checked) */
  static const struct {
    const char *name;
    uint8_t *(*make)(size_t *);
    int fused_sum, fused_eltwise, ref_steps, inner_reorders;
  } graphs[] = {{"residual block", graph_residual, 2, 3, 0, 0},
                {"mobilenet block", graph_mobilenet, -1, -1, 0, 0},
                {"unet up step", graph_unet_up, 0, -1, 0, 0},
                {"resize + bn + pools", graph_resize_bn_pool, -1, -1, 0, -1},
                {"conv1d", graph_conv1d, -1, -1, 0, -1},
                {"conv dynamic weights", graph_conv_dynamic_weights, 0, 1, -1, -1}};
  srand(7);
  for (size_t g = 0; g < sizeof graphs / sizeof graphs[0]; g++)
    for (int batch = 1; batch <= 3; batch += 2)
      for (int threads = 1; threads <= 2; threads++) {
        sq_cpu_program_stats_t st;
        memset(&st, 0xff, sizeof st);
        double d = compare(graphs[g].name, graphs[g].make, batch, threads, &st);
        CHECK(d <= 1e-4);
        printf(
            "  program: %d steps, %d ref (%d convs), %d reorders (%d inner), %d eltwise + %d "
            "sum fused\n",
            st.steps, st.ref_steps, st.ref_convs, st.reorders, st.inner_reorders, st.fused_eltwise,
            st.fused_sum);
        CHECK_EQ_INT(st.ref_convs, 0); /* every conv on oneDNN, computed weights included */
        if (graphs[g].fused_sum >= 0) CHECK_EQ_INT(st.fused_sum, graphs[g].fused_sum);
        if (graphs[g].fused_eltwise >= 0) CHECK_EQ_INT(st.fused_eltwise, graphs[g].fused_eltwise);
        if (graphs[g].ref_steps >= 0) CHECK_EQ_INT(st.ref_steps, graphs[g].ref_steps);
        if (graphs[g].inner_reorders >= 0)
          CHECK_EQ_INT(st.inner_reorders, graphs[g].inner_reorders);
      }
  CHECK_DONE();
}
