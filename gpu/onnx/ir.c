/* ir.c: graph IR housekeeping: tensors and nodes in growable arrays addressed by index,
 * cloning (plans borrow the engine's weights), topological sort, use counts. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

void sq_tensor_clear(sq_tensor_t *t) {
  free(t->name);
  if (t->owns_data) free(t->data);
  memset(t, 0, sizeof *t);
}

static void attr_clear(sq_attr_t *a) {
  free(a->name);
  free(a->s);
  free(a->floats);
  free(a->ints);
  if (a->t) {
    sq_tensor_clear(a->t);
    free(a->t);
  }
}

void sq_node_clear(sq_node_t *n) {
  free(n->name);
  free(n->in);
  free(n->out);
  if (!n->attrs_borrowed) {
    for (int i = 0; i < n->nattrs; i++) attr_clear(&n->attrs[i]);
    free(n->attrs);
  }
  memset(n, 0, sizeof *n);
}

void sq_graph_free(sq_graph_t *g) {
  for (int i = 0; i < g->ntensors; i++) sq_tensor_clear(&g->tensors[i]);
  for (int i = 0; i < g->nnodes; i++) sq_node_clear(&g->nodes[i]);
  free(g->tensors);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
  memset(g, 0, sizeof *g);
}

int64_t sq_tensor_numel(const sq_tensor_t *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

size_t sq_tensor_bytes(const sq_tensor_t *t) {
  return (size_t)sq_tensor_numel(t) * sq_dtype_size(t->dtype);
}

int sq_graph_find_tensor(const sq_graph_t *g, const char *name) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

int sq_graph_add_tensor(sq_graph_t *g, const char *name, int kind) {
  if (g->ntensors == g->tensors_cap) {
    int cap = g->tensors_cap ? g->tensors_cap * 2 : 64;
    sq_tensor_t *t = realloc(g->tensors, (size_t)cap * sizeof *t);
    if (!t) return -1;
    g->tensors = t;
    g->tensors_cap = cap;
  }
  sq_tensor_t *t = &g->tensors[g->ntensors];
  memset(t, 0, sizeof *t);
  t->name = sq_strdup(name ? name : "");
  if (!t->name) return -1;
  t->kind = kind;
  t->rank = -1;
  t->producer = -1;
  t->last_use = -1;
  t->alias = -1;
  return g->ntensors++;
}

static int *dup_ints(const int *v, int n) {
  int *d = malloc((size_t)(n ? n : 1) * sizeof *d);
  if (d && n) memcpy(d, v, (size_t)n * sizeof *d);
  return d;
}

int sq_graph_clone(const sq_graph_t *src, sq_graph_t *dst) {
  memset(dst, 0, sizeof *dst);
  dst->tensors = calloc((size_t)(src->ntensors ? src->ntensors : 1), sizeof *dst->tensors);
  dst->nodes = calloc((size_t)(src->nnodes ? src->nnodes : 1), sizeof *dst->nodes);
  dst->inputs = dup_ints(src->inputs, src->ninputs);
  dst->outputs = dup_ints(src->outputs, src->noutputs);
  if (!dst->tensors || !dst->nodes || !dst->inputs || !dst->outputs) goto fail;
  dst->tensors_cap = src->ntensors ? src->ntensors : 1;
  dst->nodes_cap = src->nnodes ? src->nnodes : 1;
  dst->ninputs = src->ninputs;
  dst->noutputs = src->noutputs;
  dst->opset = src->opset;
  dst->stored_fp16 = src->stored_fp16;
  for (int i = 0; i < src->ntensors; i++) {
    sq_tensor_t *t = &dst->tensors[i];
    *t = src->tensors[i];
    t->owns_data = false;
    t->name = sq_strdup(src->tensors[i].name);
    dst->ntensors++;
    if (!t->name) goto fail;
  }
  for (int i = 0; i < src->nnodes; i++) {
    sq_node_t *n = &dst->nodes[i];
    *n = src->nodes[i];
    n->attrs_borrowed = true;
    n->name = NULL;
    n->in = NULL;
    n->out = NULL;
    dst->nnodes++;
    n->name = sq_strdup(src->nodes[i].name);
    n->in = dup_ints(src->nodes[i].in, n->nin);
    n->out = dup_ints(src->nodes[i].out, n->nout);
    if (!n->name || !n->in || !n->out) goto fail;
  }
  return 0;
fail:
  sq_graph_free(dst);
  return SQ_ENOMEM;
}

int sq_graph_use_count(const sq_graph_t *g, int t) {
  int uses = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const sq_node_t *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->nin; k++) uses += n->in[k] == t;
  }
  for (int i = 0; i < g->noutputs; i++) uses += g->outputs[i] == t;
  return uses;
}

/* Kahn's algorithm over the tensor producer relation; stable (keeps file order when it is
 * already valid, which torch exports are). */
int sq_graph_toposort(sq_graph_t *g, sq_error_t *err) {
  int n = g->nnodes, rc = 0;
  int *producer = malloc((size_t)(g->ntensors ? g->ntensors : 1) * sizeof *producer);
  bool *done = calloc((size_t)(n ? n : 1), sizeof *done);
  sq_node_t *sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
  bool *ready = calloc((size_t)(g->ntensors ? g->ntensors : 1), sizeof *ready);
  if (!producer || !done || !sorted || !ready) {
    rc = sq_error_set(err, SQ_ENOMEM, "toposort: out of memory");
    goto out;
  }
  for (int t = 0; t < g->ntensors; t++) {
    producer[t] = -1;
    ready[t] = g->tensors[t].kind != SQ_TENSOR_ACT;
  }
  for (int i = 0; i < n; i++)
    for (int k = 0; k < g->nodes[i].nout; k++) {
      int t = g->nodes[i].out[k];
      if (t < 0) continue;
      if (producer[t] >= 0 || g->tensors[t].kind != SQ_TENSOR_ACT) {
        rc = sq_error_set(err, SQ_EMODEL_LOAD, "tensor '%s' is produced twice (node '%s')",
                          g->tensors[t].name, g->nodes[i].name);
        goto out;
      }
      producer[t] = i;
    }
  int count = 0;
  while (count < n) {
    int progress = 0;
    for (int i = 0; i < n; i++) {
      if (done[i]) continue;
      bool ok = true;
      for (int k = 0; k < g->nodes[i].nin && ok; k++) {
        int t = g->nodes[i].in[k];
        ok = t < 0 || ready[t];
      }
      if (!ok) continue;
      done[i] = true;
      sorted[count++] = g->nodes[i];
      for (int k = 0; k < g->nodes[i].nout; k++)
        if (g->nodes[i].out[k] >= 0) ready[g->nodes[i].out[k]] = true;
      progress = 1;
    }
    if (!progress) {
      for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        for (int k = 0; k < g->nodes[i].nin; k++) {
          int t = g->nodes[i].in[k];
          if (t >= 0 && !ready[t]) {
            rc = sq_error_set(err, SQ_EMODEL_LOAD,
                              "node '%s' input '%s' is never produced (undefined or a cycle)",
                              g->nodes[i].name, g->tensors[t].name);
            goto out;
          }
        }
      }
      rc = sq_error_set(err, SQ_EMODEL_LOAD, "graph has a cycle");
      goto out;
    }
  }
  memcpy(g->nodes, sorted, (size_t)n * sizeof *sorted);
out:
  free(producer);
  free(done);
  free(sorted);
  free(ready);
  return rc;
}

void sq_graph_release_unused(sq_graph_t *g) {
  int *uses = calloc((size_t)g->ntensors + 1, sizeof *uses);
  if (!uses) return; /* only an optimization */
  for (int i = 0; i < g->nnodes; i++) {
    const sq_node_t *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] >= 0) uses[n->in[k]]++;
  }
  for (int t = 0; t < g->ntensors; t++) {
    sq_tensor_t *tt = &g->tensors[t];
    if (tt->kind == SQ_TENSOR_CONST && !uses[t] && !tt->is_output && tt->owns_data) {
      free(tt->data);
      tt->data = NULL;
      tt->owns_data = false;
    }
  }
  free(uses);
}
