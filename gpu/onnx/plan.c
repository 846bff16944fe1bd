/* plan.c: the engine graph planned for fixed input shapes: static shape inference in
 * topological order, constant folding (every node whose inputs are all constant runs once here
 * on the CPU: this removes the Shape/Gather/Unsqueeze/Concat/... chains torch exports), then an
 * activation arena laid out by tensor liveness (views share their input's block). Also the
 * load-time folding of initializer-only nodes. Runs on the caller's thread. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define SQ_ARENA_ALIGN 64

void sq_view_of(const sq_tensor_t *t, uint8_t *arena, sq_view_t *v) {
  v->dtype = t->dtype;
  v->rank = t->rank;
  memcpy(v->dims, t->dims, sizeof v->dims);
  if (t->kind == SQ_TENSOR_CONST)
    v->data = t->data;
  else if (t->kind == SQ_TENSOR_ACT && arena)
    v->data = arena + t->offset;
  else
    v->data = NULL;
}

static int bind_input(sq_graph_t *g, int t, const sq_engine_tensor_t *in, sq_error_t *err) {
  sq_tensor_t *tt = &g->tensors[t];
  if (in->rank < 0 || in->rank > SQ_MAX_DIMS)
    return sq_error_set(err, SQ_EINVAL, "input '%s': rank %d", tt->name, in->rank);
  if (tt->rank >= 0 && tt->rank != in->rank)
    return sq_error_set(err, SQ_EINVAL, "input '%s': rank %d, model declares %d", tt->name,
                        in->rank, tt->rank);
  for (int d = 0; d < in->rank; d++) {
    if (in->dims[d] < 0)
      return sq_error_set(err, SQ_EINVAL, "input '%s': dim %d unknown", tt->name, d);
    if (tt->rank >= 0 && tt->dims[d] >= 0 && tt->dims[d] != in->dims[d] && d > 0)
      return sq_error_set(err, SQ_EINVAL, "input '%s': dim %d is %lld, model declares %lld",
                          tt->name, d, (long long)in->dims[d], (long long)tt->dims[d]);
    tt->dims[d] = in->dims[d];
  }
  tt->rank = in->rank;
  if (in->dtype && tt->dtype && in->dtype != tt->dtype)
    return sq_error_set(err, SQ_EINVAL, "input '%s': type %s, model declares %s", tt->name,
                        sq_dtype_name(in->dtype), sq_dtype_name(tt->dtype));
  if (!tt->dtype) tt->dtype = in->dtype;
  if (in->data) { /* bound: becomes a constant of the plan */
    size_t bytes = sq_tensor_bytes(tt);
    if (in->bytes != bytes)
      return sq_error_set(err, SQ_EINVAL, "input '%s': %zu bytes, shape needs %zu", tt->name,
                          in->bytes, bytes);
    tt->data = sq_xmalloc(bytes);
    if (!tt->data) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    memcpy(tt->data, in->data, bytes);
    tt->owns_data = true;
    tt->kind = SQ_TENSOR_CONST;
  }
  return 0;
}

/* Shape inference for one node; then folds it if every input is constant. */
static int infer_node(sq_graph_t *g, int ni, sq_cpu_t *cpu, sq_error_t *err) {
  sq_node_t *n = &g->nodes[ni];
  const sq_op_info_t *op = sq_op_info(n->op);
  sq_view_t in[n->nin + 1], out[n->nout + 1];
  bool all_const = true;
  memset(in, 0, sizeof in);
  memset(out, 0, sizeof out);
  for (int k = 0; k < n->nin; k++) {
    if (n->in[k] < 0) continue;
    const sq_tensor_t *t = &g->tensors[n->in[k]];
    if (t->rank < 0 || !t->dtype)
      return sq_node_error(err, SQ_EMODEL_LOAD, n, "input '%s' has no known shape", t->name);
    sq_view_of(t, NULL, &in[k]);
    all_const = all_const && t->kind == SQ_TENSOR_CONST;
  }
  int rc = op->shape(n, in, n->nin, out, n->nout, err);
  if (rc) return rc;
  for (int k = 0; k < n->nout; k++) {
    if (n->out[k] < 0) continue;
    sq_tensor_t *t = &g->tensors[n->out[k]];
    if (out[k].rank < 0 || out[k].rank > SQ_MAX_DIMS || !sq_dtype_size(out[k].dtype))
      return sq_node_error(err, SQ_EMODEL_LOAD, n, "output %d has no valid type/shape", k);
    for (int d = 0; d < out[k].rank; d++)
      if (out[k].dims[d] < 0)
        return sq_node_error(err, SQ_EMODEL_LOAD, n, "output '%s' dim %d is negative", t->name, d);
    /* a corrupt model must not make us overflow sizes: cap any one tensor at 2^40 bytes */
    double bytes = (double)sq_dtype_size(out[k].dtype);
    for (int d = 0; d < out[k].rank; d++) bytes *= (double)out[k].dims[d];
    if (bytes > (double)(INT64_C(1) << 40))
      return sq_node_error(err, SQ_EMODEL_LOAD, n, "output '%s' would need %.3g bytes", t->name,
                           bytes);
    t->dtype = out[k].dtype;
    t->rank = out[k].rank;
    memcpy(t->dims, out[k].dims, sizeof t->dims);
    t->producer = ni;
  }
  /* Shape and Size read only their input's dims, which are all static now: constants */
  if (!all_const && n->op != SQ_OP_Shape && n->op != SQ_OP_Size) return 0;
  for (int k = 0; k < n->nout; k++) {
    if (n->out[k] < 0) continue;
    sq_tensor_t *t = &g->tensors[n->out[k]];
    t->data = sq_xmalloc(sq_tensor_bytes(t) + 1);
    if (!t->data) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    t->owns_data = true;
    t->kind = SQ_TENSOR_CONST;
    out[k].data = t->data;
  }
  rc = op->cpu(cpu, n, in, n->nin, out, n->nout, err);
  if (rc) return rc;
  n->dead = true;
  return 0;
}

/* Load-time folding: nodes computed only from initializers (weight transposes, Constant
 * nodes, ...) run once for the engine, so every plan and batch size shares the result. */
int sq_graph_fold_constants(sq_graph_t *g, sq_error_t *err) {
  sq_cpu_t *cpu = NULL;
  int rc = 0;
  for (int i = 0; i < g->nnodes && !rc; i++) {
    const sq_node_t *n = &g->nodes[i];
    bool all_const = !n->dead;
    for (int k = 0; k < n->nin && all_const; k++)
      all_const = n->in[k] < 0 || g->tensors[n->in[k]].kind == SQ_TENSOR_CONST;
    if (!all_const) continue;
    if (!cpu && !(cpu = sq_cpu_new(1))) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    rc = infer_node(g, i, cpu, err);
  }
  sq_cpu_free(cpu);
  return rc;
}

/* Marks in-place outputs as aliases of their input 0. Conservative: the input is not a view,
 * has no views, is no graph output and nobody reads it later. */
static void plan_in_place(sq_engine_plan_t *p, bool *viewed) {
  sq_graph_t *g = &p->graph;
  for (int t = 0; t < g->ntensors; t++)
    if (g->tensors[t].alias >= 0) viewed[g->tensors[t].alias] = true;
  for (int i = 0; i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    if (!sq_op_has(n->op, SQ_P_INPLACE) || n->nin < 1 || n->in[0] < 0 || n->nout != 1 ||
        n->out[0] < 0)
      continue;
    int xi = n->in[0], yi = n->out[0];
    sq_tensor_t *x = &g->tensors[xi], *y = &g->tensors[yi];
    if (x->kind != SQ_TENSOR_ACT || y->kind != SQ_TENSOR_ACT || x->alias >= 0 || viewed[xi] ||
        x->is_output || x->last_use != i || x->dtype != y->dtype || x->rank != y->rank ||
        memcmp(x->dims, y->dims, (size_t)x->rank * sizeof x->dims[0]) != 0)
      continue;
    for (int t = 0; t < g->ntensors; t++) /* views of y now view x's block */
      if (g->tensors[t].alias == yi) g->tensors[t].alias = xi;
    y->alias = xi;
    viewed[xi] = true;
  }
}

static size_t aligned(size_t n) {
  return (n + SQ_ARENA_ALIGN - 1) / SQ_ARENA_ALIGN * SQ_ARENA_ALIGN;
}

size_t sq_arena_place(const size_t *sizes, const int *birth, const int *death, int n,
                      size_t *offsets) {
  int *order = malloc((size_t)(n + 1) * sizeof *order);
  size_t total = 0;
  if (!order) { /* no room to sort: one block after the other (correct, just larger) */
    for (int a = 0; a < n; a++) {
      offsets[a] = total;
      total += aligned(sizes[a]);
    }
    return total;
  }
  for (int a = 0; a < n; a++) order[a] = a;
  for (int a = 1; a < n; a++) { /* insertion sort by size, descending (counts are small) */
    int t = order[a], b = a - 1;
    while (b >= 0 && sizes[order[b]] < sizes[t]) {
      order[b + 1] = order[b];
      b--;
    }
    order[b + 1] = t;
  }
  for (int a = 0; a < n; a++) {
    int t = order[a];
    size_t size = aligned(sizes[t]), offset = 0;
    for (bool moved = true; moved;) { /* until a pass over the placed blocks finds no conflict */
      moved = false;
      for (int b = 0; b < a; b++) {
        int o = order[b];
        if (death[o] < birth[t] || birth[o] > death[t]) continue;
        size_t ooff = offsets[o], osize = aligned(sizes[o]);
        if (offset < ooff + osize && ooff < offset + size) {
          offset = ooff + osize;
          moved = true;
        }
      }
    }
    offsets[t] = offset;
    if (offset + size > total) total = offset + size;
  }
  free(order);
  return total;
}

/* Lays out the ACT tensors. Outputs of view ops, and of elementwise ops that can run in place,
 * alias their input (one block, whose lifetime is the union of the group's); the blocks go
 * through sq_arena_place with their lifetimes in node positions. */
int sq_plan_arena(sq_engine_plan_t *p, sq_error_t *err) {
  sq_graph_t *g = &p->graph;
  size_t nt = (size_t)g->ntensors + 1;
  int *pos = malloc((size_t)(g->nnodes + 1) * sizeof *pos);
  int *blocks = malloc(nt * sizeof *blocks), *birth = malloc(nt * sizeof *birth);
  int *death = malloc(nt * sizeof *death);
  bool *viewed = calloc(nt, sizeof *viewed);
  int nblocks = 0;
  if (!pos || !blocks || !birth || !death || !viewed) {
    free(viewed);
    free(pos);
    free(blocks);
    free(birth);
    free(death);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  for (int i = 0; i < p->norder; i++) pos[p->order[i]] = i;
  for (int t = 0; t < g->ntensors; t++) {
    g->tensors[t].last_use = -1;
    g->tensors[t].alias = -1;
  }
  for (int i = 0; i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] >= 0) g->tensors[n->in[k]].last_use = i;
    if (sq_op_has(n->op, SQ_P_VIEW) && n->nin >= 1 && n->in[0] >= 0 && n->nout == 1 &&
        n->out[0] >= 0 && g->tensors[n->in[0]].kind == SQ_TENSOR_ACT &&
        g->tensors[n->out[0]].kind == SQ_TENSOR_ACT) {
      int root = g->tensors[n->in[0]].alias >= 0 ? g->tensors[n->in[0]].alias : n->in[0];
      g->tensors[n->out[0]].alias = root;
    }
  }
  plan_in_place(p, viewed);
  free(viewed);
  for (int t = 0; t < g->ntensors; t++) {
    sq_tensor_t *tt = &g->tensors[t];
    birth[t] = death[t] = -1;
    if (tt->kind != SQ_TENSOR_ACT || tt->producer < 0 || g->nodes[tt->producer].dead) continue;
    birth[t] = pos[tt->producer];
    death[t] = tt->is_output ? p->norder : (tt->last_use < birth[t] ? birth[t] : tt->last_use);
  }
  for (int t = 0; t < g->ntensors; t++) { /* a block lives as long as any of its views */
    int r = g->tensors[t].alias;
    if (r >= 0 && death[t] > death[r]) death[r] = death[t];
  }
  for (int t = 0; t < g->ntensors; t++)
    if (birth[t] >= 0 && g->tensors[t].alias < 0) blocks[nblocks++] = t;
  size_t *sizes = calloc((size_t)nblocks + 1, sizeof *sizes);
  int *bb = calloc((size_t)nblocks + 1, sizeof *bb), *bd = calloc((size_t)nblocks + 1, sizeof *bd);
  size_t *offs = malloc((size_t)(nblocks + 1) * sizeof *offs);
  if (!sizes || !bb || !bd || !offs) {
    free(sizes);
    free(bb);
    free(bd);
    free(offs);
    free(pos);
    free(blocks);
    free(birth);
    free(death);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  for (int a = 0; a < nblocks; a++) {
    sizes[a] = sq_tensor_bytes(&g->tensors[blocks[a]]);
    bb[a] = birth[blocks[a]];
    bd[a] = death[blocks[a]];
  }
  size_t total = sq_arena_place(sizes, bb, bd, nblocks, offs);
  for (int a = 0; a < nblocks; a++) g->tensors[blocks[a]].offset = offs[a];
  free(sizes);
  free(bb);
  free(bd);
  free(offs);
  for (int t = 0; t < g->ntensors; t++)
    if (g->tensors[t].alias >= 0) g->tensors[t].offset = g->tensors[g->tensors[t].alias].offset;
  p->arena_bytes = total;
  free(pos);
  free(blocks);
  free(birth);
  free(death);
  return 0;
}

sq_engine_plan_t *sq_engine_plan_new_shapes(sq_engine_t *e, const sq_engine_tensor_t *inputs, int n,
                                            sq_error_t *err) {
  if (n != e->graph.ninputs) {
    sq_error_set(err, SQ_EINVAL, "plan: %d input shapes for %d inputs", n, e->graph.ninputs);
    return NULL;
  }
  sq_engine_plan_t *p = calloc(1, sizeof *p);
  sq_cpu_t *cpu = sq_cpu_new(1);
  if (!p || !cpu || sq_graph_clone(&e->graph, &p->graph)) {
    free(p);
    sq_cpu_free(cpu);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  p->engine = e;
  pthread_mutex_init(&p->lock, NULL);
  sq_graph_t *g = &p->graph;
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) rc = bind_input(g, g->inputs[i], &inputs[i], err);
  for (int i = 0; i < g->nnodes && !rc; i++)
    if (!g->nodes[i].dead) rc = infer_node(g, i, cpu, err);
  sq_cpu_free(cpu);
  if (!rc) {
    p->order = malloc((size_t)(g->nnodes + 1) * sizeof *p->order);
    p->inputs = malloc((size_t)(g->ninputs + 1) * sizeof *p->inputs);
    if (!p->order || !p->inputs) rc = sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  if (!rc) {
    /* nodes whose outputs nobody reads are dropped too (e.g. Dropout masks' producers) */
    for (int i = g->nnodes - 1; i >= 0; i--) {
      sq_node_t *nd = &g->nodes[i];
      if (nd->dead) continue;
      bool used = false;
      for (int k = 0; k < nd->nout && !used; k++)
        used = nd->out[k] >= 0 && sq_graph_use_count(g, nd->out[k]) > 0;
      if (!used) nd->dead = true;
    }
    for (int i = 0; i < g->nnodes; i++)
      if (!g->nodes[i].dead) p->order[p->norder++] = i;
    for (int i = 0; i < g->ninputs; i++)
      if (g->tensors[g->inputs[i]].kind == SQ_TENSOR_INPUT) p->inputs[p->ninputs++] = g->inputs[i];
    rc = sq_plan_arena(p, err);
  }
  if (rc) {
    sq_engine_plan_free(p);
    return NULL;
  }
  return p;
}

sq_engine_plan_t *sq_engine_plan_new(sq_engine_t *e, uint32_t batch, sq_error_t *err) {
  int n = e->graph.ninputs;
  sq_engine_tensor_t *in = calloc((size_t)(n ? n : 1), sizeof *in);
  if (!in) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    const sq_tensor_t *t = &e->graph.tensors[e->graph.inputs[i]];
    in[i].dtype = t->dtype;
    in[i].rank = t->rank;
    for (int d = 0; d < t->rank; d++) {
      in[i].dims[d] = d == 0 ? (int64_t)batch : t->dims[d];
      if (in[i].dims[d] < 0) {
        sq_error_set(err, SQ_EUNSUPPORTED,
                     "input '%s': dim %d is symbolic (only dim 0, the "
                     "batch, may be)",
                     t->name, d);
        free(in);
        return NULL;
      }
    }
    if (t->rank < 0) {
      sq_error_set(err, SQ_EUNSUPPORTED, "input '%s' has no declared shape", t->name);
      free(in);
      return NULL;
    }
  }
  sq_engine_plan_t *p = sq_engine_plan_new_shapes(e, in, n, err);
  free(in);
  return p;
}

void sq_engine_plan_free(sq_engine_plan_t *p) {
  if (!p) return;
  /* the cuda backend must outlive its plans; the cpu backend's plan state holds a reference
   * on what it needs, so any free order works with it */
  if (p->backend_iface && p->backend_state && p->backend_iface->unload)
    p->backend_iface->unload(p->backend, p->backend_state);
  sq_graph_free(&p->graph);
  free(p->order);
  free(p->inputs);
  pthread_mutex_destroy(&p->lock);
  free(p);
}
