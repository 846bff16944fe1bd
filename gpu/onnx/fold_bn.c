/* fold_bn.c: load-time rewrite: Conv (or ConvTranspose) -> BatchNormalization becomes one conv with
 * scaled weights and a new bias (W' = W * g, B' = (B - mean) * g + beta, g = scale / sqrt(var +
 * eps)), when the Conv's weights and all BN parameters are constants and nothing else reads the
 * Conv output. Works on the sorted engine graph, before any plan exists. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

static const float *const_floats(const sq_graph_t *g, const sq_node_t *n, int k, int64_t count) {
  if (k >= n->nin || n->in[k] < 0) return NULL;
  const sq_tensor_t *t = &g->tensors[n->in[k]];
  if (t->kind != SQ_TENSOR_CONST || t->dtype != SQ_DT_FLOAT || !t->data) return NULL;
  return sq_tensor_numel(t) == count ? t->data : NULL;
}

static int consumer_of(const sq_graph_t *g, int t) {
  for (int i = 0; i < g->nnodes; i++) {
    const sq_node_t *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == t) return i;
  }
  return -1;
}

/* Adds a constant float tensor that owns `data`; returns its index or -1. */
static int add_const(sq_graph_t *g, const char *base, const char *suffix, float *data, int rank,
                     const int64_t *dims) {
  char name[256];
  snprintf(name, sizeof name, "%s%s", base, suffix);
  int t = sq_graph_add_tensor(g, name, SQ_TENSOR_CONST);
  if (t < 0) return -1;
  sq_tensor_t *tt = &g->tensors[t];
  tt->dtype = SQ_DT_FLOAT;
  tt->rank = rank;
  memcpy(tt->dims, dims, (size_t)rank * sizeof *dims);
  tt->data = data;
  tt->owns_data = true;
  return t;
}

int sq_graph_fold_batchnorm(sq_graph_t *g, sq_error_t *err) {
  for (int i = 0; i < g->nnodes; i++) {
    sq_node_t *conv = &g->nodes[i];
    bool tr = conv->op == SQ_OP_ConvTranspose;
    if (conv->dead || (conv->op != SQ_OP_Conv && !tr) || conv->nin < 2 || conv->nout != 1) continue;
    int y = conv->out[0];
    if (y < 0 || g->tensors[y].is_output || sq_graph_use_count(g, y) != 1) continue;
    int bi = consumer_of(g, y);
    if (bi < 0) continue;
    sq_node_t *bn = &g->nodes[bi];
    if (bn->op != SQ_OP_BatchNormalization || bn->nin < 5 || bn->in[0] != y) continue;
    if (sq_attr_int(bn, "training_mode", 0)) continue;
    if (bn->nout > 1) { /* old opsets list running stats as outputs: only fold if unused */
      bool used = false;
      for (int k = 1; k < bn->nout; k++)
        used |= bn->out[k] >= 0 && sq_graph_use_count(g, bn->out[k]);
      if (used) continue;
    }
    const sq_tensor_t *w = &g->tensors[conv->in[1]];
    if (w->kind != SQ_TENSOR_CONST || w->dtype != SQ_DT_FLOAT || !w->data || w->rank < 3) continue;
    /* output channels: Conv W is [M, C/g, k..]; ConvTranspose W is [C, M/g, k..] */
    int64_t group = sq_attr_int(conv, "group", 1);
    if (group < 1 || (tr && w->dims[0] % group)) continue;
    int64_t m = tr ? w->dims[1] * group : w->dims[0], numel = sq_tensor_numel(w);
    const float *scale = const_floats(g, bn, 1, m), *beta = const_floats(g, bn, 2, m);
    const float *mean = const_floats(g, bn, 3, m), *var = const_floats(g, bn, 4, m);
    const float *bias = conv->nin > 2 ? const_floats(g, conv, 2, m) : NULL;
    if (!scale || !beta || !mean || !var) continue;
    if (conv->nin > 2 && conv->in[2] >= 0 && !bias) continue; /* runtime bias: leave it */
    float eps = sq_attr_float(bn, "epsilon", 1e-5f);
    float *nw = malloc((size_t)numel * sizeof *nw), *nb = malloc((size_t)m * sizeof *nb);
    float *k = malloc((size_t)m * sizeof *k);
    if (!nw || !nb || !k) {
      free(nw);
      free(nb);
      free(k);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    const float *wd = w->data;
    for (int64_t c = 0; c < m; c++) {
      /* same float math order as the unfolded kernel: scale / sqrtf(var + eps) */
      k[c] = scale[c] / sqrtf(var[c] + eps);
      nb[c] = ((bias ? bias[c] : 0.0f) - mean[c]) * k[c] + beta[c];
    }
    if (!tr) {
      int64_t per = numel / (m ? m : 1);
      for (int64_t c = 0; c < m; c++)
        for (int64_t j = 0; j < per; j++) nw[c * per + j] = wd[c * per + j] * k[c];
    } else {
      int64_t cin = w->dims[0], mg = w->dims[1], cg = cin / group;
      int64_t khw = cin * mg > 0 ? numel / (cin * mg) : 0;
      for (int64_t c = 0; c < cin; c++)
        for (int64_t j = 0; j < mg; j++) {
          float kc = k[(c / cg) * mg + j];
          for (int64_t q = 0; q < khw; q++) {
            int64_t at = (c * mg + j) * khw + q;
            nw[at] = wd[at] * kc;
          }
        }
    }
    free(k);
    int64_t bdim = m;
    int64_t wdims[SQ_MAX_DIMS];
    memcpy(wdims, w->dims, sizeof wdims);
    int wrank = w->rank;
    int old_w = conv->in[1], old_b = conv->nin > 2 ? conv->in[2] : -1;
    int tw = add_const(g, bn->name, "/folded_w", nw, wrank, wdims);
    if (tw < 0) {
      free(nw);
      free(nb);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    int tb = add_const(g, bn->name, "/folded_b", nb, 1, &bdim);
    if (tb < 0) {
      free(nb);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    conv = &g->nodes[i]; /* add_tensor may not move nodes, but keep the pattern safe */
    bn = &g->nodes[bi];
    if (conv->nin < 3) {
      int *in = realloc(conv->in, 3 * sizeof *in);
      if (!in) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      conv->in = in;
      conv->nin = 3;
    }
    conv->in[1] = tw;
    conv->in[2] = tb;
    conv->out[0] = bn->out[0];
    bn->dead = true;
    /* the conv's old output tensor is now unused */
    /* release the original weights when nothing else reads them */
    if (sq_graph_use_count(g, old_w) == 0 && g->tensors[old_w].owns_data) {
      free(g->tensors[old_w].data);
      g->tensors[old_w].data = NULL;
      g->tensors[old_w].owns_data = false;
    }
    if (old_b >= 0 && sq_graph_use_count(g, old_b) == 0 && g->tensors[old_b].owns_data) {
      free(g->tensors[old_b].data);
      g->tensors[old_b].data = NULL;
      g->tensors[old_b].owns_data = false;
    }
  }
  return 0;
}
