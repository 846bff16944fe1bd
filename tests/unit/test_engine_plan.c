/* Engine planning: static shape inference for a batch size with torch's Shape -> Gather ->
 * Unsqueeze -> Concat -> Reshape chain folded away at plan time, and the activation arena:
 * smaller than the sum of the tensors, and no two tensors that are live at the same time
 * overlap (checked over every pair, by construction of the plan). */
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static float frand(void) {
  return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
}

static void add_conv(sq_onnx_builder_t *b, const char *name, const char *in, const char *out,
                     int cin, int cout, int k) {
  char wn[64], bn[64], ins[200];
  int64_t wd[4] = {cout, cin, k, k}, bd[1] = {cout};
  float *w = malloc(sizeof(float) * (size_t)(cout * cin * k * k)),
        *bias = malloc(sizeof(float) * (size_t)cout);
  for (int i = 0; i < cout * cin * k * k; i++) w[i] = frand() * 0.3f;
  for (int i = 0; i < cout; i++) bias[i] = frand() * 0.1f;
  snprintf(wn, sizeof wn, "%s.w", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  snprintf(ins, sizeof ins, "%s,%s,%s", in, wn, bn);
  sq_onnx_builder_initializer(b, wn, SQ_DT_FLOAT, 4, wd, w);
  sq_onnx_builder_initializer(b, bn, SQ_DT_FLOAT, 1, bd, bias);
  sq_onnx_builder_node(b, "Conv", name, ins, out);
  int64_t pads[4] = {k / 2, k / 2, k / 2, k / 2};
  sq_onnx_builder_attr_ints(b, "pads", pads, 4);
  free(w);
  free(bias);
}

/* conv-relu-conv-relu-conv + skip add - maxpool - conv - resize: a small UNet-like chain */
static uint8_t *chain_model(size_t *len) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  int64_t xd[4] = {-1, 4, 16, 16}, yd[4] = {-1, 2, 16, 16};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  add_conv(b, "c1", "x", "a1", 4, 8, 3);
  sq_onnx_builder_node(b, "Relu", "r1", "a1", "b1");
  add_conv(b, "c2", "b1", "a2", 8, 8, 3);
  sq_onnx_builder_node(b, "Relu", "r2", "a2", "b2");
  add_conv(b, "c3", "b2", "a3", 8, 8, 1);
  sq_onnx_builder_node(b, "Add", "skip", "a3,b1", "s");
  sq_onnx_builder_node(b, "MaxPool", "pool", "s", "p");
  int64_t ks[2] = {2, 2};
  sq_onnx_builder_attr_ints(b, "kernel_shape", ks, 2);
  sq_onnx_builder_attr_ints(b, "strides", ks, 2);
  sq_onnx_builder_node(b, "Identity", "view", "p", "pv"); /* a view: shares p's block */
  add_conv(b, "c4", "pv", "a4", 8, 2, 3);
  float scales[4] = {1, 1, 2, 2};
  int64_t sd[1] = {4};
  sq_onnx_builder_initializer(b, "scales", SQ_DT_FLOAT, 1, sd, scales);
  sq_onnx_builder_node(b, "Resize", "up", "a4,,scales", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  uint8_t *buf = sq_onnx_builder_serialize(b, len);
  sq_onnx_builder_free(b);
  return buf;
}

static float *run_plan(sq_engine_plan_t *p, const float *x, size_t xbytes, size_t *n) {
  sq_error_t err = {0};
  sq_backend_t *be = sq_backend_cpu_new(2, &err);
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
  sq_engine_tensor_t in, out;
  sq_engine_plan_input_info(p, 0, &in);
  in.data = (void *)x;
  in.bytes = xbytes;
  sq_engine_plan_output_info(p, 0, &out);
  out.data = malloc(out.bytes);
  *n = out.bytes / sizeof(float);
  int rc = sq_engine_run(p, ctx, &in, 1, &out, 1, &err);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "run: %s\n", err.msg);
  sq_backend_ctx_free(ctx);
  sq_backend_free(be);
  return out.data;
}

static void check_arena(const sq_engine_plan_t *p) {
  const sq_graph_t *g = &p->graph;
  int pos[256];
  for (int i = 0; i < p->norder && i < 256; i++) pos[p->order[i]] = i;
  size_t sum = 0;
  int overlaps = 0, pairs = 0;
  for (int a = 0; a < g->ntensors; a++) {
    const sq_tensor_t *ta = &g->tensors[a];
    if (ta->kind != SQ_TENSOR_ACT || ta->producer < 0 || g->nodes[ta->producer].dead) continue;
    sum += sq_tensor_bytes(ta);
    CHECK(ta->offset + sq_tensor_bytes(ta) <= p->arena_bytes);
    int a0 = pos[ta->producer], a1 = ta->is_output ? p->norder : ta->last_use;
    for (int b = a + 1; b < g->ntensors; b++) {
      const sq_tensor_t *tb = &g->tensors[b];
      if (tb->kind != SQ_TENSOR_ACT || tb->producer < 0 || g->nodes[tb->producer].dead) continue;
      int b0 = pos[tb->producer], b1 = tb->is_output ? p->norder : tb->last_use;
      if (a1 < b0 || b1 < a0) continue; /* never live together */
      if (ta->alias == b || tb->alias == a || (ta->alias >= 0 && ta->alias == tb->alias))
        continue; /* a view that shares its input's block on purpose */
      pairs++;
      if (ta->offset < tb->offset + sq_tensor_bytes(tb) &&
          tb->offset < ta->offset + sq_tensor_bytes(ta))
        overlaps++;
    }
  }
  printf("arena %zu bytes for %zu bytes of tensors, %d live pairs, %d overlaps\n", p->arena_bytes,
         sum, pairs, overlaps);
  CHECK(p->arena_bytes < sum);
  CHECK(pairs > 0);
  CHECK_EQ_INT(overlaps, 0);
}

static void test_arena(void) {
  size_t len;
  uint8_t *buf = chain_model(&len);
  sq_error_t err = {0};
  sq_engine_options_t plain = {.no_fuse = 1};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, &plain, &err);
  sq_engine_t *ef = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e && ef);
  if (!e || !ef) return;
  sq_engine_plan_t *p = sq_engine_plan_new(e, 3, &err), *pf = sq_engine_plan_new(ef, 3, &err);
  sq_engine_plan_t *p1 = sq_engine_plan_new(e, 1, &err);
  CHECK(p && pf && p1);
  if (!p || !pf || !p1) {
    fprintf(stderr, "plan: %s\n", err.msg);
    return;
  }
  check_arena(p);
  check_arena(pf);
  const sq_tensor_t *pt = &p->graph.tensors[sq_graph_find_tensor(&p->graph, "p")];
  const sq_tensor_t *pv = &p->graph.tensors[sq_graph_find_tensor(&p->graph, "pv")];
  CHECK_EQ_INT(pv->alias, sq_graph_find_tensor(&p->graph, "p"));
  CHECK(pv->offset == pt->offset);
  /* the skip Add runs in place over the 1x1 conv output, which dies there */
  const sq_tensor_t *st = &p->graph.tensors[sq_graph_find_tensor(&p->graph, "s")];
  CHECK_EQ_INT(st->alias, sq_graph_find_tensor(&p->graph, "a3"));
  CHECK(sq_engine_arena_bytes(p1) * 3 <= sq_engine_arena_bytes(p) + 3 * 64 * 16);
  CHECK(sq_engine_arena_bytes(p1) < sq_engine_arena_bytes(p));
  CHECK(sq_engine_plan_node_count(pf) < sq_engine_plan_node_count(p)); /* relus fused */
  sq_engine_tensor_t out;
  sq_engine_plan_output_info(p, 0, &out);
  CHECK_EQ_INT(out.rank, 4);
  CHECK_EQ_INT(out.dims[0], 3);
  CHECK_EQ_INT(out.dims[1], 2);
  CHECK_EQ_INT(out.dims[2], 16);
  CHECK_EQ_INT(out.dims[3], 16);
  /* different layouts (fused or not) must give the same numbers */
  float x[3 * 4 * 16 * 16];
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = frand();
  size_t n1, n2;
  float *y1 = run_plan(p, x, sizeof x, &n1), *y2 = run_plan(pf, x, sizeof x, &n2);
  CHECK(n1 == n2);
  int same = 1;
  for (size_t i = 0; i < n1; i++)
    if (y1[i] != y2[i]) same = 0;
  CHECK(same);
  free(y1);
  free(y2);
  sq_engine_plan_free(p);
  sq_engine_plan_free(pf);
  sq_engine_plan_free(p1);
  sq_engine_free(e);
  sq_engine_free(ef);
  free(buf);
}

/* torch's flatten: y = x.view(x.size(0), -1) after a conv */
static void test_shape_chain(void) {
  sq_onnx_builder_t *b = sq_onnx_builder_new(11);
  int64_t xd[4] = {-1, 3, 8, 8}, yd[2] = {-1, 128}, cd[4] = {-1, 2, 8, 8}, one[1] = {1};
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  add_conv(b, "conv", "x", "c", 3, 2, 1);
  int64_t zero = 0, minus1 = -1;
  sq_onnx_builder_initializer(b, "idx0", SQ_DT_INT64, 0, NULL, &zero);
  sq_onnx_builder_initializer(b, "m1", SQ_DT_INT64, 1, one, &minus1);
  sq_onnx_builder_node(b, "Shape", "shape", "c", "s");
  sq_onnx_builder_node(b, "Gather", "gather", "s,idx0", "n");
  sq_onnx_builder_attr_int(b, "axis", 0);
  sq_onnx_builder_node(b, "Unsqueeze", "unsq", "n", "n1");
  int64_t axes[1] = {0};
  sq_onnx_builder_attr_ints(b, "axes", axes, 1);
  sq_onnx_builder_node(b, "Concat", "cat", "n1,m1", "shp");
  sq_onnx_builder_attr_int(b, "axis", 0);
  sq_onnx_builder_node(b, "Reshape", "flat", "c,shp", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 2, yd);
  sq_onnx_builder_output(b, "c", SQ_DT_FLOAT, 4, cd);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  CHECK(e != NULL);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, 5, &err) : NULL;
  CHECK(p != NULL);
  if (!p) {
    fprintf(stderr, "%s\n", err.msg);
    sq_engine_free(e);
    free(buf);
    return;
  }
  CHECK_EQ_INT(sq_engine_plan_node_count(p), 2); /* Conv + Reshape; the chain is folded */
  const sq_tensor_t *s = &p->graph.tensors[sq_graph_find_tensor(&p->graph, "s")];
  CHECK_EQ_INT(s->kind, SQ_TENSOR_CONST);
  CHECK_EQ_INT(s->rank, 1);
  CHECK_EQ_INT(s->dims[0], 4);
  CHECK_EQ_INT(((int64_t *)s->data)[0], 5);
  const sq_tensor_t *shp = &p->graph.tensors[sq_graph_find_tensor(&p->graph, "shp")];
  CHECK_EQ_INT(((int64_t *)shp->data)[0], 5);
  CHECK_EQ_INT(((int64_t *)shp->data)[1], -1);
  sq_engine_tensor_t out, out2;
  sq_engine_plan_output_info(p, 0, &out);
  sq_engine_plan_output_info(p, 1, &out2);
  CHECK_EQ_INT(out.rank, 2);
  CHECK_EQ_INT(out.dims[0], 5);
  CHECK_EQ_INT(out.dims[1], 128);
  CHECK_EQ_INT(out2.dims[0], 5);
  /* run: the flattened output equals the conv output */
  float x[5 * 3 * 8 * 8];
  for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = frand();
  sq_backend_t *be = sq_backend_cpu_new(1, &err);
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
  sq_engine_tensor_t in, outs[2] = {out, out2};
  sq_engine_plan_input_info(p, 0, &in);
  in.data = x;
  in.bytes = sizeof x;
  outs[0].data = malloc(out.bytes);
  outs[1].data = malloc(out2.bytes);
  CHECK_EQ_INT(sq_engine_run(p, ctx, &in, 1, outs, 2, &err), 0);
  CHECK(out.bytes == out2.bytes && memcmp(outs[0].data, outs[1].data, out.bytes) == 0);
  /* wrong input shape is refused */
  in.dims[0] = 4;
  CHECK_EQ_INT(sq_engine_run(p, ctx, &in, 1, outs, 2, &err), SQ_EINVAL);
  free(outs[0].data);
  free(outs[1].data);
  sq_backend_ctx_free(ctx);
  sq_engine_plan_free(p);
  sq_backend_free(be);
  sq_engine_free(e);
  free(buf);
}

/* A rank-1 operand before a rank-4 one: the broadcast fold reads its dims before writing the
 * result (it once overwrote them in place and refused 3 - x for a [1] constant). */
static void test_broadcast_rank1_first(void) {
  int64_t d4[4] = {-1, 6, 5, 7}, d1[1] = {1};
  float three = 3.0f;
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, d4);
  sq_onnx_builder_initializer(b, "three", SQ_DT_FLOAT, 1, d1, &three);
  sq_onnx_builder_node(b, "Sub", "rsub", "three,x", "y");
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, d4);
  size_t len;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  free(buf);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, 2, &err) : NULL;
  CHECK(p != NULL);
  if (!p) fprintf(stderr, "  3 - x: %s\n", err.msg);
  if (p) {
    sq_engine_tensor_t out;
    sq_engine_plan_output_info(p, 0, &out);
    CHECK(out.rank == 4 && out.dims[0] == 2 && out.dims[1] == 6 && out.dims[2] == 5 &&
          out.dims[3] == 7);
  }
  sq_engine_plan_free(p);
  sq_engine_free(e);
}

int main(void) {
  sq_log_set_level(SQ_LOG_WARN);
  srand(3);
  test_arena();
  test_shape_chain();
  test_broadcast_rank1_first();
  CHECK_DONE();
}
