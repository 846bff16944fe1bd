/* load.c: ONNX ModelProto (protobuf-c) -> engine graph. Every unsupported op, domain, data type
 * or external-data reference is collected and reported at once, so a model author sees the
 * whole list after one try; a corrupt or truncated file is a clean SQ_EMODEL_LOAD. float16
 * exports become float32 graphs here (see fp16_edges). Any thread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_internal.h"

/* The list of problems found so far; the first ones that fit go into err->msg. */
typedef struct {
  char msg[sizeof(((sq_error_t *)0)->msg)];
  size_t len;
  int count, shown;
} problems_t;

static void problem(problems_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(problems_t *p, const char *fmt, ...) {
  char item[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(item, sizeof item, fmt, ap);
  va_end(ap);
  p->count++;
  sq_log_debug("engine", "unsupported model feature", "what=\"%s\"", item);
  const char *sep = p->shown ? "; " : "unsupported: ";
  /* keep room for the "(+N more)" tail */
  if (p->len + strlen(sep) + strlen(item) + 16 < sizeof p->msg) {
    p->len += (size_t)snprintf(p->msg + p->len, sizeof p->msg - p->len, "%s%s", sep, item);
    p->shown++;
  }
}

static int tensor_or_add(sq_graph_t *g, const char *name, int kind) {
  int t = sq_graph_find_tensor(g, name);
  return t >= 0 ? t : sq_graph_add_tensor(g, name, kind);
}

/* Reads a graph input/output declaration. Returns true when it declares float16, which the
 * engine carries as float32 (the tensor's dtype is set to float). */
static bool value_info(sq_tensor_t *t, const Onnx__ValueInfoProto *vi) {
  if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) return false;
  const Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
  bool fp16 = tt->has_elem_type && tt->elem_type == SQ_DT_FLOAT16;
  if (tt->has_elem_type) t->dtype = fp16 ? SQ_DT_FLOAT : tt->elem_type;
  if (!tt->shape || tt->shape->n_dim > SQ_MAX_DIMS) return fp16;
  t->rank = (int)tt->shape->n_dim;
  for (size_t i = 0; i < tt->shape->n_dim; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    t->dims[i] =
        d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ? d->dim_value : -1;
  }
  return fp16;
}

/* Appends Cast(to=FLOAT16) from tensor `from` to tensor `to`: on the float32 tensors the engine
 * computes with, that node rounds each value to the nearest float16 (kern_shape.c). */
static int add_fp16_round(sq_graph_t *g, int from, int to) {
  sq_node_t *n = &g->nodes[g->nnodes];
  char name[160];
  snprintf(name, sizeof name, "fp16 round(%s)", g->tensors[to].name);
  n->name = sq_strdup(name);
  n->op = SQ_OP_Cast;
  n->opset = g->opset;
  n->nin = n->nout = 1;
  n->in = malloc(sizeof *n->in);
  n->out = malloc(sizeof *n->out);
  n->attrs = calloc(1, sizeof *n->attrs);
  if (!n->name || !n->in || !n->out || !n->attrs) {
    sq_node_clear(n);
    return SQ_ENOMEM;
  }
  g->nnodes++;
  n->in[0] = from;
  n->out[0] = to;
  n->nattrs = 1;
  n->attrs[0].type = SQ_ATTR_INT;
  n->attrs[0].i = SQ_DT_FLOAT16;
  n->attrs[0].name = sq_strdup("to");
  if (!n->attrs[0].name) return SQ_ENOMEM;
  g->tensors[to].producer = g->nnodes - 1;
  return 0;
}

/* A graph input or output declared float16 is carried as float32 with float16 values: a caller
 * feeds float32 and the engine rounds it to float16 on entry (as the model's own type would),
 * and a float16 output is rounded before it is returned, so results equal an fp16 runtime's at
 * the graph's edges while everything inside computes in float32. Rewrites: nodes that read
 * input X read the rounded copy; the node that produced output Y writes an fp32 copy that its
 * other readers use, and a rounding Cast produces Y. `fp16_in` / `fp16_out` flag graph
 * input/output positions. nodes[] must have room for one node per flag. */
static int fp16_edges(sq_graph_t *g, const bool *fp16_in, const bool *fp16_out) {
  for (int i = 0; i < g->ninputs; i++) {
    if (!fp16_in[i]) continue;
    int x = g->inputs[i];
    char name[160];
    snprintf(name, sizeof name, "%s#fp16", g->tensors[x].name);
    int r = sq_graph_add_tensor(g, name, SQ_TENSOR_ACT);
    if (r < 0) return SQ_ENOMEM;
    for (int k = 0; k < g->nnodes; k++)
      for (int j = 0; j < g->nodes[k].nin; j++)
        if (g->nodes[k].in[j] == x) g->nodes[k].in[j] = r;
    if (add_fp16_round(g, x, r)) return SQ_ENOMEM;
  }
  for (int i = 0; i < g->noutputs; i++) {
    int y = g->outputs[i];
    if (!fp16_out[i] || g->tensors[y].kind != SQ_TENSOR_ACT || g->tensors[y].producer < 0) continue;
    bool twice = false; /* the same tensor listed as an output twice: round it once */
    for (int j = 0; j < i; j++) twice = twice || (fp16_out[j] && g->outputs[j] == y);
    if (twice) continue;
    char name[160];
    snprintf(name, sizeof name, "%s#fp32", g->tensors[y].name);
    int u = sq_graph_add_tensor(g, name, SQ_TENSOR_ACT);
    if (u < 0) return SQ_ENOMEM;
    sq_node_t *p = &g->nodes[g->tensors[y].producer];
    for (int k = 0; k < p->nout; k++)
      if (p->out[k] == y) p->out[k] = u;
    g->tensors[u].producer = g->tensors[y].producer;
    for (int k = 0; k < g->nnodes; k++)
      for (int j = 0; j < g->nodes[k].nin; j++)
        if (g->nodes[k].in[j] == y) g->nodes[k].in[j] = u;
    if (add_fp16_round(g, u, y)) return SQ_ENOMEM;
  }
  return 0;
}

static int copy_attr(const Onnx__AttributeProto *ap, sq_attr_t *a, const char *node,
                     problems_t *pr) {
  a->name = sq_strdup(ap->name ? ap->name : "");
  if (!a->name) return SQ_ENOMEM;
  int type = ap->has_type ? (int)ap->type : 0;
  a->type = type;
  switch (type) {
    case SQ_ATTR_FLOAT:
      a->f = ap->f;
      break;
    case SQ_ATTR_INT:
      a->i = ap->i;
      break;
    case SQ_ATTR_STRING:
      a->s = sq_strndup(ap->s.data ? (const char *)ap->s.data : "", ap->s.len);
      if (!a->s) return SQ_ENOMEM;
      break;
    case SQ_ATTR_FLOATS:
      a->n = ap->n_floats;
      a->floats = sq_xmalloc(a->n * sizeof(float));
      if (!a->floats) return SQ_ENOMEM;
      if (a->n) memcpy(a->floats, ap->floats, a->n * sizeof(float));
      break;
    case SQ_ATTR_INTS:
      a->n = ap->n_ints;
      a->ints = sq_xmalloc(a->n * sizeof(int64_t));
      if (!a->ints) return SQ_ENOMEM;
      if (a->n) memcpy(a->ints, ap->ints, a->n * sizeof(int64_t));
      break;
    case SQ_ATTR_STRINGS:
      break; /* not used by any op we run; kept as a name only */
    case SQ_ATTR_TENSOR: {
      if (!ap->t) break;
      char why[128];
      a->t = calloc(1, sizeof *a->t);
      if (!a->t) return SQ_ENOMEM;
      a->t->kind = SQ_TENSOR_CONST;
      int rc = sq_onnx_tensor_convert(ap->t, a->t, why, sizeof why);
      if (rc == SQ_ENOMEM) return rc;
      if (rc) problem(pr, "node '%s' attribute '%s': %s", node, a->name, why);
      break;
    }
    default:
      problem(pr, "node '%s' attribute '%s' of type %d (graphs/sparse)", node, a->name, type);
  }
  return 0;
}

static bool io_dtype_ok(int dt) {
  return dt == SQ_DT_FLOAT || dt == SQ_DT_INT64 || dt == SQ_DT_INT32 || dt == SQ_DT_BOOL ||
         dt == SQ_DT_UINT8 || dt == SQ_DT_INT8;
}

static int build_graph(const Onnx__GraphProto *gp, sq_graph_t *g, bool *fp16_in, bool *fp16_out,
                       problems_t *pr, sq_error_t *err);

static int build(const Onnx__ModelProto *m, sq_graph_t *g, problems_t *pr, sq_error_t *err) {
  const Onnx__GraphProto *gp = m->graph;
  if (!gp) return sq_error_set(err, SQ_EMODEL_LOAD, "model has no graph");
  g->opset = -1;
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const char *d = m->opset_import[i]->domain ? m->opset_import[i]->domain : "";
    if (!*d || strcmp(d, "ai.onnx") == 0) g->opset = (int)m->opset_import[i]->version;
  }
  if (g->opset < 0) g->opset = 1; /* IR v1 models had no opset_import */
  char why[128];
  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    const char *name = tp->name ? tp->name : "";
    int t = sq_graph_add_tensor(g, name, SQ_TENSOR_CONST);
    if (t < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    int rc = sq_onnx_tensor_convert(tp, &g->tensors[t], why, sizeof why);
    if (rc == SQ_ENOMEM) return sq_error_set(err, rc, "out of memory");
    if (tp->has_data_type && tp->data_type == SQ_DT_FLOAT16) g->stored_fp16 = true;
    if (rc == SQ_EUNSUPPORTED)
      problem(pr, "initializer '%s': %s", name, why);
    else if (rc)
      return sq_error_set(err, rc, "initializer '%s': %s", name, why);
  }
  for (size_t i = 0; i < gp->n_sparse_initializer; i++) problem(pr, "sparse initializer #%zu", i);
  g->inputs = calloc(gp->n_input + 1, sizeof *g->inputs);
  g->outputs = calloc(gp->n_output + 1, sizeof *g->outputs);
  bool *fp16_in = calloc(gp->n_input + 1, sizeof *fp16_in);
  bool *fp16_out = calloc(gp->n_output + 1, sizeof *fp16_out);
  int rc = build_graph(gp, g, fp16_in, fp16_out, pr, err);
  free(fp16_in);
  free(fp16_out);
  return rc;
}

/* The rest of build(): inputs, nodes, outputs; fp16_in/fp16_out have one flag per graph
 * input/output of the file (NULL: out of memory). */
static int build_graph(const Onnx__GraphProto *gp, sq_graph_t *g, bool *fp16_in, bool *fp16_out,
                       problems_t *pr, sq_error_t *err) {
  if (!g->inputs || !g->outputs || !fp16_in || !fp16_out)
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  for (size_t i = 0; i < gp->n_input; i++) {
    const char *name = gp->input[i]->name ? gp->input[i]->name : "";
    if (sq_graph_find_tensor(g, name) >= 0) continue; /* an initializer (default value) */
    int t = sq_graph_add_tensor(g, name, SQ_TENSOR_INPUT);
    if (t < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    fp16_in[g->ninputs] = value_info(&g->tensors[t], gp->input[i]);
    g->stored_fp16 = g->stored_fp16 || fp16_in[g->ninputs];
    if (!io_dtype_ok(g->tensors[t].dtype))
      problem(pr, "input '%s' of type %s", name, sq_dtype_name(g->tensors[t].dtype));
    g->inputs[g->ninputs++] = t;
  }
  /* room for one fp16 rounding node per graph input and output */
  g->nodes = calloc(gp->n_node + gp->n_input + gp->n_output + 1, sizeof *g->nodes);
  if (!g->nodes) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  g->nodes_cap = (int)(gp->n_node + gp->n_input + gp->n_output) + 1;
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    sq_node_t *n = &g->nodes[g->nnodes++];
    const char *op_type = np->op_type ? np->op_type : "";
    char gen[96];
    if (np->name && *np->name) {
      n->name = sq_strdup(np->name);
    } else { /* torch sometimes leaves names empty: name it by position and first output */
      snprintf(gen, sizeof gen, "%s#%zu(%s)", op_type, i, np->n_output ? np->output[0] : "");
      n->name = sq_strdup(gen);
    }
    n->opset = g->opset;
    /* views of a node's tensors live on the executor's stack: keep nodes reasonable */
    if (np->n_input > SQ_MAX_NODE_IO || np->n_output > SQ_MAX_NODE_IO)
      return sq_error_set(err, SQ_EMODEL_LOAD, "node '%s': %zu inputs, %zu outputs (max %d)",
                          n->name, np->n_input, np->n_output, SQ_MAX_NODE_IO);
    n->nin = (int)np->n_input;
    n->nout = (int)np->n_output;
    n->in = calloc(np->n_input + 1, sizeof *n->in);
    n->out = calloc(np->n_output + 1, sizeof *n->out);
    n->attrs = calloc(np->n_attribute + 1, sizeof *n->attrs);
    if (!n->name || !n->in || !n->out || !n->attrs)
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    const char *domain = np->domain ? np->domain : "";
    n->op = sq_op_lookup(op_type);
    if (*domain && strcmp(domain, "ai.onnx") != 0)
      problem(pr, "node '%s' op %s:%s", n->name, domain, op_type);
    else if (n->op < 0 || !sq_op_info(n->op)->cpu)
      problem(pr, "node '%s' op %s", n->name, op_type);
    for (size_t k = 0; k < np->n_attribute; k++) {
      n->nattrs++;
      if (copy_attr(np->attribute[k], &n->attrs[k], n->name, pr))
        return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < np->n_input; k++) {
      const char *name = np->input[k];
      n->in[k] = *name ? tensor_or_add(g, name, SQ_TENSOR_ACT) : -1;
      if (*name && n->in[k] < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < np->n_output; k++) {
      const char *name = np->output[k];
      if (!*name) {
        n->out[k] = -1;
        continue;
      }
      int t = sq_graph_find_tensor(g, name);
      if (t >= 0 && (g->tensors[t].kind != SQ_TENSOR_ACT || g->tensors[t].producer >= 0))
        return sq_error_set(err, SQ_EMODEL_LOAD, "node '%s': output '%s' is defined twice", n->name,
                            name);
      if (t < 0) t = sq_graph_add_tensor(g, name, SQ_TENSOR_ACT);
      if (t < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      g->tensors[t].producer = (int)i;
      n->out[k] = t;
    }
  }
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *name = gp->output[i]->name ? gp->output[i]->name : "";
    int t = sq_graph_find_tensor(g, name);
    if (t < 0) return sq_error_set(err, SQ_EMODEL_LOAD, "output '%s' is never produced", name);
    sq_tensor_t *ot = &g->tensors[t];
    ot->is_output = true;
    if (ot->kind == SQ_TENSOR_ACT && ot->producer < 0)
      return sq_error_set(err, SQ_EMODEL_LOAD, "output '%s' is never produced", name);
    int dt = ot->dtype;
    fp16_out[g->noutputs] = value_info(ot, gp->output[i]);
    g->stored_fp16 = g->stored_fp16 || fp16_out[g->noutputs];
    if (ot->kind == SQ_TENSOR_CONST) ot->dtype = dt; /* keep the converted type */
    if (ot->dtype && !io_dtype_ok(ot->dtype))
      problem(pr, "output '%s' of type %s", name, sq_dtype_name(ot->dtype));
    g->outputs[g->noutputs++] = t;
  }
  if (fp16_edges(g, fp16_in, fp16_out)) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  /* value_info of intermediates is only a hint; shape inference recomputes everything, so
   * drop what the loader might have kept for ACT tensors. */
  for (int t = 0; t < g->ntensors; t++) {
    sq_tensor_t *tt = &g->tensors[t];
    if (tt->kind == SQ_TENSOR_ACT) {
      tt->producer = -1;
      tt->dtype = 0;
      tt->rank = -1;
    }
  }
  return 0;
}

int sq_onnx_load(const void *buf, size_t len, sq_graph_t *g, sq_error_t *err) {
  memset(g, 0, sizeof *g);
  if (!buf || len == 0) return sq_error_set(err, SQ_EMODEL_LOAD, "empty model file");
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  if (!m)
    return sq_error_set(err, SQ_EMODEL_LOAD,
                        "not a valid ONNX model: protobuf parse failed (%zu bytes; truncated "
                        "or corrupt?)",
                        len);
  problems_t pr = {0};
  int rc = build(m, g, &pr, err);
  onnx__model_proto__free_unpacked(m, NULL);
  if (rc == 0 && pr.count) {
    if (pr.count > pr.shown)
      snprintf(pr.msg + pr.len, sizeof pr.msg - pr.len, " (+%d more)", pr.count - pr.shown);
    rc = sq_error_set(err, SQ_EUNSUPPORTED, "%s", pr.msg);
  }
  if (rc == 0) rc = sq_graph_toposort(g, err);
  if (rc) sq_graph_free(g);
  return rc;
}
