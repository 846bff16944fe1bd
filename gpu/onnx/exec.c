/* exec.c: runs a plan node by node on the CPU (the cpu backend's run, and the reference the
 * cuda backend is compared against), and sq_engine_run, which checks the caller's tensors and
 * dispatches through the backend interface. Executor thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* SEGQ_ENGINE_PROFILE=1 logs each node's time (debugging aid; read once). */
static int profile_enabled(void) {
  static int enabled = -1;
  if (enabled < 0) {
    const char *v = getenv("SEGQ_ENGINE_PROFILE");
    enabled = v && *v && strcmp(v, "0") != 0;
  }
  return enabled;
}

int sq_exec_cpu(sq_cpu_t *cpu, const sq_engine_plan_t *p, uint8_t *arena,
                const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs, sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  int profile = profile_enabled();
  for (int i = 0; i < p->norder; i++) {
    uint64_t t0 = profile ? sq_clock_mono_us() : 0;
    const sq_node_t *n = &g->nodes[p->order[i]];
    sq_view_t in[n->nin + 1], out[n->nout + 1];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    for (int k = 0; k < n->nin; k++) {
      if (n->in[k] < 0) continue;
      const sq_tensor_t *t = &g->tensors[n->in[k]];
      sq_view_of(t, arena, &in[k]);
      if (t->kind == SQ_TENSOR_INPUT)
        for (int j = 0; j < p->ninputs; j++)
          if (p->inputs[j] == n->in[k]) in[k].data = inputs[j].data;
    }
    for (int k = 0; k < n->nout; k++)
      if (n->out[k] >= 0) sq_view_of(&g->tensors[n->out[k]], arena, &out[k]);
    int rc = sq_op_info(n->op)->cpu(cpu, n, in, n->nin, out, n->nout, err);
    if (rc) return rc;
    if (profile)
      fprintf(stderr, "engine profile: %-40s %-18s %8.3f ms\n", n->name, sq_op_info(n->op)->name,
              (double)(sq_clock_mono_us() - t0) / 1000.0);
  }
  for (int i = 0; i < g->noutputs; i++) {
    const sq_tensor_t *t = &g->tensors[g->outputs[i]];
    const void *src = t->kind == SQ_TENSOR_CONST ? t->data : arena + t->offset;
    if (t->kind == SQ_TENSOR_INPUT)
      for (int j = 0; j < p->ninputs; j++)
        if (p->inputs[j] == g->outputs[i]) src = inputs[j].data;
    memcpy(outputs[i].data, src, sq_tensor_bytes(t));
  }
  return 0;
}

static int check_tensor(const sq_tensor_t *t, const sq_engine_tensor_t *x, bool is_out,
                        sq_error_t *err) {
  if (!x->data && sq_tensor_bytes(t))
    return sq_error_set(err, SQ_EINVAL, "tensor '%s': no data", t->name);
  if (is_out) {
    if (x->bytes < sq_tensor_bytes(t))
      return sq_error_set(err, SQ_EINVAL, "output '%s': buffer %zu bytes, needs %zu", t->name,
                          x->bytes, sq_tensor_bytes(t));
    return 0;
  }
  if (x->rank != t->rank || (x->dtype && x->dtype != t->dtype))
    return sq_error_set(err, SQ_EINVAL, "input '%s': rank/type differ from the plan", t->name);
  for (int d = 0; d < t->rank; d++)
    if (x->dims[d] != t->dims[d])
      return sq_error_set(err, SQ_EINVAL, "input '%s': dim %d is %lld, plan has %lld", t->name, d,
                          (long long)x->dims[d], (long long)t->dims[d]);
  if (x->bytes != sq_tensor_bytes(t))
    return sq_error_set(err, SQ_EINVAL, "input '%s': %zu bytes, plan needs %zu", t->name, x->bytes,
                        sq_tensor_bytes(t));
  return 0;
}

int sq_engine_run(sq_engine_plan_t *p, sq_backend_ctx_t *ctx, const sq_engine_tensor_t *inputs,
                  int nin, sq_engine_tensor_t *outputs, int nout, sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  if (nin != p->ninputs || nout != g->noutputs)
    return sq_error_set(err, SQ_EINVAL, "run: %d inputs/%d outputs, plan has %d/%d", nin, nout,
                        p->ninputs, g->noutputs);
  if (ctx->arena_bytes < p->arena_bytes)
    return sq_error_set(err, SQ_EINVAL, "run: context arena %zu bytes < plan's %zu",
                        ctx->arena_bytes, p->arena_bytes);
  for (int i = 0; i < nin; i++) {
    int rc = check_tensor(&g->tensors[p->inputs[i]], &inputs[i], false, err);
    if (rc) return rc;
  }
  for (int i = 0; i < nout; i++) {
    const sq_tensor_t *t = &g->tensors[g->outputs[i]];
    int rc = check_tensor(t, &outputs[i], true, err);
    if (rc) return rc;
    outputs[i].name = t->name;
    outputs[i].dtype = t->dtype;
    outputs[i].rank = t->rank;
    memcpy(outputs[i].dims, t->dims, sizeof t->dims);
  }
  sq_backend_t *b = ctx->backend;
  void *state = NULL;
  int rc = sq_engine_bind(p, b, &state, err);
  if (rc) return rc;
  rc = b->iface->run(ctx, p, state, inputs, outputs, err);
  int rc2 = b->iface->sync ? b->iface->sync(ctx, err) : 0;
  return rc ? rc : rc2;
}

int sq_engine_bind(sq_engine_plan_t *p, sq_backend_t *b, void **state, sq_error_t *err) {
  pthread_mutex_lock(&p->lock);
  int rc = 0;
  if (p->backend != b && p->backend_state) {
    /* another backend holds device state for this plan and may be running it right now */
    pthread_mutex_unlock(&p->lock);
    return sq_error_set(err, SQ_EINVAL, "plan is loaded on backend '%s'; make a plan per backend",
                        sq_backend_name(p->backend));
  }
  if (p->backend != b) {
    p->backend = NULL;
    p->backend_state = NULL;
    rc = b->iface->load ? b->iface->load(b, p, &p->backend_state, err) : 0;
    if (!rc) {
      p->backend = b;
      p->backend_iface = b->iface;
    }
  }
  *state = p->backend_state;
  pthread_mutex_unlock(&p->lock);
  return rc;
}

void sq_engine_plan_dump(const sq_engine_plan_t *p, FILE *f) {
  static const char *acts[] = {"", "+relu", "+leaky_relu", "+clip", "+sigmoid"};
  const sq_graph_t *g = &p->graph;
  fprintf(f, "plan: %d nodes, arena %zu bytes\n", p->norder, p->arena_bytes);
  for (int i = 0; i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    int act = n->act >= 0 && n->act <= SQ_ACT_SIGMOID ? n->act : 0;
    fprintf(f, "%4d %-18s %-36s", i, sq_op_info(n->op)->name, n->name);
    if (act) fprintf(f, " %s", acts[act]);
    for (int k = 0; k < n->nout; k++) {
      if (n->out[k] < 0) continue;
      const sq_tensor_t *t = &g->tensors[n->out[k]];
      fprintf(f, " -> %s %s[", t->name, sq_dtype_name(t->dtype));
      for (int d = 0; d < t->rank; d++) fprintf(f, "%s%lld", d ? "," : "", (long long)t->dims[d]);
      fprintf(f, "] @%zu%s", t->offset, t->alias >= 0 ? " (view)" : "");
    }
    fputc('\n', f);
  }
}
