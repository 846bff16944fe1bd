/* fuse.c: load-time rewrite: an activation (an op with an act in ops.def: Relu, LeakyRelu,
 * Clip with constant bounds, Sigmoid) that is the only reader of an output of an op that can
 * host one (SQ_P_HOST: Conv, ConvTranspose, Add, Sub, Mul, Div) becomes an attribute of that
 * node (node->act), applied by its kernel while the data is hot. The cpu backend maps it onto
 * oneDNN post-ops, the CUDA backend onto cuDNN's fused conv+bias+activation. */
#include <float.h>

#include "engine_internal.h"

static bool const_scalar(const sq_graph_t *g, const sq_node_t *n, int k, float *v) {
  if (k >= n->nin || n->in[k] < 0) return true; /* absent: keep the default */
  const sq_tensor_t *t = &g->tensors[n->in[k]];
  if (t->kind != SQ_TENSOR_CONST || t->dtype != SQ_DT_FLOAT || !t->data || sq_tensor_numel(t) != 1)
    return false;
  *v = *(const float *)t->data;
  return true;
}

/* Reads the activation a node computes (ops.def's act column) and its parameters; false when
 * it is not a fusable one. */
static bool activation_of(const sq_graph_t *g, const sq_node_t *n, int *act, float *a, float *b) {
  *a = *b = 0;
  *act = sq_op_info(n->op)->act;
  switch (*act) {
    case SQ_ACT_RELU:
    case SQ_ACT_SIGMOID:
      return true;
    case SQ_ACT_LEAKY_RELU:
      *a = sq_attr_float(n, "alpha", 0.01f);
      return true;
    case SQ_ACT_CLIP:
      *a = -FLT_MAX;
      *b = FLT_MAX;
      if (n->opset < 11) {
        *a = sq_attr_float(n, "min", -FLT_MAX);
        *b = sq_attr_float(n, "max", FLT_MAX);
        return true;
      }
      return const_scalar(g, n, 1, a) && const_scalar(g, n, 2, b);
    default:
      return false;
  }
}

int sq_graph_fuse_activations(sq_graph_t *g, sq_error_t *err) {
  for (int i = 0; i < g->nnodes; i++) {
    sq_node_t *host = &g->nodes[i];
    if (host->dead || !sq_op_has(host->op, SQ_P_HOST) || host->act || host->nout != 1) continue;
    int y = host->out[0];
    if (y < 0 || g->tensors[y].is_output || sq_graph_use_count(g, y) != 1) continue;
    for (int j = i + 1; j < g->nnodes; j++) {
      sq_node_t *n = &g->nodes[j];
      if (n->dead || n->nin < 1 || n->in[0] != y) continue;
      int act;
      float a, b;
      if (n->nout == 1 && activation_of(g, n, &act, &a, &b)) {
        host->act = act;
        host->act_alpha = a;
        host->act_beta = b;
        host->out[0] = n->out[0];
        n->dead = true;
      }
      break;
    }
  }
  return 0;
}
