/* cpu_dnnl_ops.c: the ops the cpu backend runs as oneDNN primitives, one builder per family:
 * Conv (bias, fused activation, and a following residual Add as a sum post-op), ConvTranspose
 * (kernel == stride as a 1x1 convolution plus a depth-to-space copy, else oneDNN's
 * deconvolution), pooling, the elementwise ops, binary arithmetic with broadcasting, inference
 * BatchNormalization and Concat. Each takes its inputs in whatever layout they already have
 * (or the one its primitive asks for) and leaves its output in the layout oneDNN chose; a
 * builder that cannot take a node returns 0 and the node runs on its reference kernel.
 * Compile time only (cpu_program.c calls it under the plan's lock). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_program.h"

static const sq_node_t *node_at(const sq_cpu_program_t *pr, int ni) {
  return &pr->plan->graph.nodes[ni];
}

static const sq_tensor_t *tensor(const sq_cpu_program_t *pr, int t) {
  return &pr->plan->graph.tensors[t];
}

static bool is_f32(const sq_cpu_program_t *pr, int t, int rank) {
  if (t < 0) return false;
  const sq_tensor_t *x = tensor(pr, t);
  if (x->dtype != SQ_DT_FLOAT || (rank && x->rank != rank)) return false;
  for (int d = 0; d < x->rank; d++)
    if (x->dims[d] <= 0) return false;
  return true;
}

static void md_any(dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims) {
  dnnl_memory_desc_init_by_tag(md, nd, dims, dnnl_f32, dnnl_format_tag_any);
}

static void dims4(const sq_tensor_t *t, dnnl_dim_t *d) {
  if (t->rank == 4) {
    for (int i = 0; i < 4; i++) d[i] = t->dims[i];
  } else { /* rank 3 (1-D conv/pool) runs as 2-D with a unit height */
    d[0] = t->dims[0];
    d[1] = t->dims[1];
    d[2] = 1;
    d[3] = t->dims[2];
  }
}

/* A 4-D output: rank 4 gets a fresh buffer in md; rank 3 a [N,C,1,W] buffer aliased back. */
static int new_out(sq_cpu_program_t *pr, int t, const dnnl_memory_desc_t *md, sq_error_t *err) {
  int b = sq_prog_buf_new(pr, md, SQ_BUF_ARENA);
  if (b < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  sq_prog_set_rep(pr, t, b);
  if (tensor(pr, t)->rank == 3 && sq_prog_md_is_plain(md)) {
    dnnl_memory_desc_t v;
    if (sq_prog_plain_md(tensor(pr, t), 0, &v)) {
      int a = sq_prog_buf_alias(pr, b, &v);
      if (a < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      sq_prog_set_rep(pr, t, a);
    }
  }
  return b;
}

/* ---- post-ops from the engine's fused activations ---- */

/* True when append_act can express act (checked before committing to a fusion). */
static bool append_act_ok(int act, float alpha, float beta) {
  return act == SQ_ACT_NONE || act == SQ_ACT_RELU || act == SQ_ACT_LEAKY_RELU ||
         act == SQ_ACT_SIGMOID || (act == SQ_ACT_CLIP && alpha <= beta);
}

/* Appends the eltwise post-op(s) for act; false when oneDNN has no match. */
static bool append_act(dnnl_post_ops_t po, int act, float alpha, float beta) {
  switch (act) {
    case SQ_ACT_NONE:
      return true;
    case SQ_ACT_RELU:
      return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0) == dnnl_success;
    case SQ_ACT_LEAKY_RELU:
      return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, alpha, 0) == dnnl_success;
    case SQ_ACT_CLIP:
      if (!(alpha <= beta)) return false; /* min > max: the reference's rule differs */
      return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, alpha, beta) == dnnl_success;
    case SQ_ACT_SIGMOID:
      return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_logistic, 0, 0) == dnnl_success;
    default:
      return false;
  }
}

/* attr with user scratchpad (it lives in segq's arena) and the given post-ops (consumed). */
static dnnl_primitive_attr_t make_attr(dnnl_post_ops_t po) {
  dnnl_primitive_attr_t attr = NULL;
  if (dnnl_primitive_attr_create(&attr) != dnnl_success) {
    if (po) dnnl_post_ops_destroy(po);
    return NULL;
  }
  dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (po) {
    dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_post_ops_destroy(po);
  }
  return attr;
}

static const dnnl_memory_desc_t *query(dnnl_primitive_desc_t pd, dnnl_query_t what) {
  return dnnl_primitive_desc_query_md(pd, what, 0);
}

static bool unary_alg(const sq_cpu_program_t *pr, const sq_node_t *n, dnnl_alg_kind_t *alg,
                      float *alpha, float *beta);

/* The only node reading tensor y (a graph output has none), or -1. */
static int sole_reader(const sq_cpu_program_t *pr, int y) {
  const sq_engine_plan_t *p = pr->plan;
  const sq_graph_t *g = &p->graph;
  if (g->tensors[y].is_output || sq_graph_use_count(g, y) != 1) return -1;
  for (int i = pr->pos + 1; i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == y) return p->order[i];
  }
  return -1;
}

/* Unary ops that alone read a conv's output y (and then each other's) become post-ops of the
 * conv: HardSwish, HardSigmoid and the rest that fuse.c leaves alone because not every backend
 * has them. Their nodes go to chain[] (the caller skips them once the conv is built); returns
 * the tensor the chain ends in. */
#define SQ_CHAIN_MAX 8
static int absorb_unary(sq_cpu_program_t *pr, int y, dnnl_post_ops_t po, int *chain, int *nchain) {
  *nchain = 0;
  while (*nchain < SQ_CHAIN_MAX) {
    int ni = sole_reader(pr, y);
    if (ni < 0) return y;
    const sq_node_t *n = node_at(pr, ni);
    if (n->nout != 1 || n->out[0] < 0 || n->in[0] != y) return y;
    dnnl_alg_kind_t alg;
    float a, b;
    if (n->op == SQ_OP_HardSigmoid) { /* max(0, min(1, alpha x + beta)) */
      if (dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear,
                                       sq_attr_float(n, "alpha", 0.2f),
                                       sq_attr_float(n, "beta", 0.5f)) != dnnl_success ||
          dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, 0.0f, 1.0f) != dnnl_success)
        return y;
    } else if (!unary_alg(pr, n, &alg, &a, &b) ||
               dnnl_post_ops_append_eltwise(po, 1.0f, alg, a, b) != dnnl_success) {
      return y;
    }
    chain[(*nchain)++] = ni;
    y = n->out[0];
  }
  return y;
}

/* ---- Conv ---- */

/* The Add that a conv output y feeds alone, if its other operand r has y's shape and lives in
 * a buffer the conv may write (nobody reads r between the conv and the Add): the conv then
 * computes y + r in r's buffer (sum post-op). Returns the Add's plan position or -1. */
static int residual_add(const sq_cpu_program_t *pr, int y, int *r_out) {
  const sq_engine_plan_t *p = pr->plan;
  const sq_graph_t *g = &p->graph;
  const sq_tensor_t *yt = &g->tensors[y];
  if (yt->is_output || sq_graph_use_count(g, y) != 1) return -1;
  int apos = -1;
  for (int i = pr->pos + 1; i < p->norder && apos < 0; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == y) apos = i;
  }
  if (apos < 0) return -1;
  const sq_node_t *a = &g->nodes[p->order[apos]];
  if (a->op != SQ_OP_Add || a->nin != 2 || a->nout != 1 || a->in[0] == a->in[1]) return -1;
  int r = a->in[0] == y ? a->in[1] : a->in[0];
  const sq_tensor_t *rt = &g->tensors[r];
  if (rt->kind != SQ_TENSOR_ACT || rt->is_output || rt->dtype != SQ_DT_FLOAT ||
      rt->rank != yt->rank || memcmp(rt->dims, yt->dims, sizeof(int64_t) * (size_t)yt->rank) ||
      rt->last_use != apos || rt->producer < 0 || pr->pos_of[rt->producer] >= pr->pos)
    return -1; /* r must exist already (computed before the conv) and die at the Add */
  for (int i = pr->pos + 1; i < apos; i++) { /* r must be dead before the Add except there */
    const sq_node_t *n = &g->nodes[p->order[i]];
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == r) return -1;
  }
  *r_out = r;
  return apos;
}

static int build_conv(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nin < 2 || n->nout != 1 || !is_f32(pr, n->in[0], 0) || !is_f32(pr, n->in[1], 0)) return 0;
  const sq_tensor_t *x = tensor(pr, n->in[0]), *w = tensor(pr, n->in[1]);
  if (x->rank != 4 && x->rank != 3) return 0;
  bool has_bias = n->nin > 2 && n->in[2] >= 0;
  if (has_bias && !is_f32(pr, n->in[2], 1)) return 0;
  /* weights (or bias) computed by the graph, or fed by the caller: reordered on every run
   * rather than once, but still oneDNN's convolution (the reference im2col path is slower by
   * far than a reorder of the weights) */
  bool wconst = w->kind == SQ_TENSOR_CONST && w->data;
  bool bconst =
      !has_bias || (tensor(pr, n->in[2])->kind == SQ_TENSOR_CONST && tensor(pr, n->in[2])->data);
  sq_view_t xv, wv;
  sq_view_of(x, NULL, &xv);
  sq_view_of(w, NULL, &wv);
  sq_conv_params_t c;
  if (sq_conv_params(n, &xv, &wv, false, &c, err)) return -1;
  int64_t g = c.group;
  dnnl_dims_t sd, dd = {c.n, c.m, c.oh, c.ow};
  dims4(x, sd);
  dnnl_dims_t wd = {g, c.m / g, c.c / g, c.kh, c.kw};
  int wnd = g > 1 ? 5 : 4;
  if (g == 1) memmove(wd, wd + 1, 4 * sizeof wd[0]);
  dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md, wplain;
  md_any(&src_md, 4, sd);
  md_any(&wei_md, wnd, wd);
  md_any(&dst_md, 4, dd);
  dnnl_dims_t bd = {c.m};
  dnnl_memory_desc_init_by_tag(&bias_md, 1, bd, dnnl_f32, dnnl_x);
  dnnl_memory_desc_init_by_tag(&wplain, wnd, wd, dnnl_f32, g > 1 ? dnnl_goihw : dnnl_oihw);
  if (!append_act_ok(n->act, n->act_alpha, n->act_beta)) return 0;
  dnnl_dims_t strides = {c.sh, c.sw}, dil = {c.dh - 1, c.dw - 1};
  dnnl_dims_t pl = {c.ph, c.pw}, pr_ = {c.ph_end, c.pw_end};
  /* attempt 0: with the residual Add as a sum post-op (if there is one); attempt 1: without */
  int chain[SQ_CHAIN_MAX], nchain = 0, y = n->out[0], apos = -1, rbuf = -1;
  const sq_node_t *add = NULL;
  dnnl_primitive_desc_t pd = NULL;
  for (int attempt = 0; attempt < 2 && !pd; attempt++) {
    dnnl_post_ops_t po = NULL;
    if (dnnl_post_ops_create(&po) != dnnl_success) return sq_error_set(err, SQ_ENOMEM, "oom");
    append_act(po, n->act, n->act_alpha, n->act_beta);
    y = absorb_unary(pr, n->out[0], po, chain, &nchain);
    md_any(&dst_md, 4, dd);
    add = NULL;
    int r = -1;
    apos = attempt == 0 ? residual_add(pr, y, &r) : -1;
    if (apos >= 0) { /* y + r computed in r's buffer, when nobody else needs that buffer */
      rbuf = sq_prog_get_any(pr, r, err);
      if (rbuf < 0) {
        dnnl_post_ops_destroy(po);
        return rbuf;
      }
      const sq_buf_t *rb = &pr->bufs[rbuf];
      const sq_node_t *an = node_at(pr, pr->plan->order[apos]);
      if (rb->md.ndims == 4 && rb->md.format_kind == dnnl_blocked &&
          !sq_prog_md_is_plain(&rb->md) && rb->alias < 0 && rb->where == SQ_BUF_ARENA &&
          !rb->keep && rb->last_reader <= apos &&
          append_act_ok(an->act, an->act_alpha, an->act_beta) &&
          dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
          append_act(po, an->act, an->act_alpha, an->act_beta)) {
        add = an;
        dst_md = rb->md;
      }
    }
    if (attempt == 0 && !add) attempt = 1; /* nothing to fuse: one attempt is enough */
    dnnl_primitive_attr_t attr = make_attr(po);
    dnnl_convolution_desc_t cd;
    dnnl_status_t st = dnnl_dilated_convolution_forward_desc_init(
        &cd, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &wei_md,
        has_bias ? &bias_md : NULL, &dst_md, strides, dil, pl, pr_);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &cd, attr, pr->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) pd = NULL;
  }
  if (!pd) return 0; /* the reference kernel runs it (and the unary chain runs as steps) */
  int bx = sq_prog_get_as(pr, n->in[0], query(pd, dnnl_query_src_md), err);
  int bw = -1;
  if (bx >= 0 && wconst) {
    bw = sq_prog_weights(pr, w->data, &wplain, query(pd, dnnl_query_weights_md), err);
  } else if (bx >= 0) { /* the plain tensor's bytes seen as (g)oihw, reordered per run */
    int pw = sq_prog_get_plain(pr, n->in[1], 0, err);
    int view = pw < 0 ? -1 : sq_prog_buf_alias(pr, pw, &wplain);
    if (pw >= 0 && view < 0) sq_error_set(err, SQ_ENOMEM, "out of memory");
    bw = view < 0 ? -1 : sq_prog_reorder(pr, view, query(pd, dnnl_query_weights_md), err);
  }
  int bb = -1;
  if (bw >= 0 && has_bias && bconst) {
    bb = sq_prog_const(pr, tensor(pr, n->in[2])->data, &bias_md, false);
    if (bb < 0) sq_error_set(err, SQ_ENOMEM, "out of memory");
  } else if (bw >= 0 && has_bias) {
    bb = sq_prog_get_as(pr, n->in[2], &bias_md, err);
  }
  if (bx < 0 || bw < 0 || (has_bias && bb < 0)) {
    dnnl_primitive_desc_destroy(pd);
    return -1;
  }
  for (int k = 0; k < nchain; k++) pr->skip[chain[k]] = true;
  int by;
  if (add) {
    by = rbuf;
    sq_prog_set_rep(pr, add->out[0], by);
    pr->skip[pr->plan->order[apos]] = true;
  } else {
    by = new_out(pr, y, query(pd, dnnl_query_dst_md), err);
    if (by < 0) {
      dnnl_primitive_desc_destroy(pd);
      return by;
    }
  }
  int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  int bufs[4] = {bx, bw, by, bb};
  int rc = sq_prog_add_prim(pr, pd, has_bias ? 4 : 3, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- ConvTranspose ---- */

/* Which layout family a md is: 0 = channels last (acdb), B = channel blocks of B (aBcdBb),
 * -1 = something else. */
static int layout_family(const dnnl_memory_desc_t *md) {
  if (md->ndims != 4 || md->format_kind != dnnl_blocked) return -1;
  const dnnl_blocking_desc_t *bk = &md->format_desc.blocking;
  if (bk->inner_nblks == 0) {
    dnnl_memory_desc_t want;
    dnnl_memory_desc_init_by_tag(&want, 4, md->dims, md->data_type, dnnl_acdb);
    return dnnl_memory_desc_equal(&want, md) ? 0 : -1;
  }
  if (bk->inner_nblks == 1 && bk->inner_idxs[0] == 1 &&
      (bk->inner_blks[0] == 8 || bk->inner_blks[0] == 16)) {
    dnnl_memory_desc_t want;
    dnnl_memory_desc_init_by_tag(&want, 4, md->dims, md->data_type,
                                 bk->inner_blks[0] == 16 ? dnnl_aBcd16b : dnnl_aBcd8b);
    return dnnl_memory_desc_equal(&want, md) ? (int)bk->inner_blks[0] : -1;
  }
  return -1;
}

/* kernel == stride, no pads/dilation/output padding, group 1: every output pixel comes from
 * one input pixel and one tap, so the op is a 1x1 convolution to taps x channels followed by
 * a depth-to-space copy (faster than oneDNN's deconvolution here, see gpu/onnx/README.md). The
 * 1x1 conv keeps the layout oneDNN picks (channels-last or channel blocks); the copy moves
 * whole channel vectors. 0 (not built) when the layout has no such copy. */
static int build_convtranspose_taps(sq_cpu_program_t *pr, int ni, const sq_conv_params_t *c,
                                    sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  const sq_tensor_t *w = tensor(pr, n->in[1]);
  bool has_bias = n->nin > 2 && n->in[2] >= 0;
  int64_t T = c->kh * c->kw, M = c->m, C = c->c;
  /* W'[t*M + m][c] = W[c][m][i][j] with t = i*kw + j */
  float *wt = malloc((size_t)(T * M * C) * sizeof(float));
  float *bt = malloc((size_t)(T * M) * sizeof(float));
  if (!wt || !bt) {
    free(wt);
    free(bt);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  const float *W = w->data, *bias = has_bias ? tensor(pr, n->in[2])->data : NULL;
  for (int64_t ci = 0; ci < C; ci++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t t = 0; t < T; t++) wt[(t * M + m) * C + ci] = W[(ci * M + m) * T + t];
  for (int64_t t = 0; t < T; t++)
    for (int64_t m = 0; m < M; m++) bt[t * M + m] = bias ? bias[m] : 0.0f;
  const sq_tensor_t *x = tensor(pr, n->in[0]);
  dnnl_dims_t sd = {x->dims[0], C, x->dims[2], x->dims[3]};
  dnnl_dims_t td = {x->dims[0], T * M, x->dims[2], x->dims[3]};
  dnnl_dims_t wd = {T * M, C, 1, 1}, bd = {T * M};
  dnnl_dims_t od = {c->n, M, c->oh, c->ow};
  dnnl_memory_desc_t src_md, wei_md, bias_md, tmp_md, wplain, out_md;
  md_any(&src_md, 4, sd);
  md_any(&wei_md, 4, wd);
  md_any(&tmp_md, 4, td);
  dnnl_memory_desc_init_by_tag(&bias_md, 1, bd, dnnl_f32, dnnl_x);
  dnnl_memory_desc_init_by_tag(&wplain, 4, wd, dnnl_f32, dnnl_oihw);
  dnnl_post_ops_t po = NULL;
  dnnl_post_ops_create(&po);
  if (!po || !append_act(po, n->act, n->act_alpha, n->act_beta)) {
    if (po) dnnl_post_ops_destroy(po);
    free(wt);
    free(bt);
    return 0;
  }
  dnnl_primitive_attr_t attr = make_attr(po);
  dnnl_convolution_desc_t cd;
  dnnl_dims_t one = {1, 1}, zero = {0, 0};
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st =
      dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                         &src_md, &wei_md, &bias_md, &tmp_md, one, zero, zero);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &cd, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  int fam = st == dnnl_success ? layout_family(query(pd, dnnl_query_dst_md)) : -1;
  if (fam < 0 || (fam > 0 && M % fam != 0)) { /* tap groups must be whole channel blocks */
    if (pd) dnnl_primitive_desc_destroy(pd);
    free(wt);
    free(bt);
    return 0;
  }
  dnnl_memory_desc_init_by_tag(&out_md, 4, od, dnnl_f32,
                               fam == 0    ? dnnl_acdb
                               : fam == 16 ? dnnl_aBcd16b
                                           : dnnl_aBcd8b);
  int bx = sq_prog_get_as(pr, n->in[0], query(pd, dnnl_query_src_md), err);
  int bw =
      bx < 0 ? -1 : sq_prog_weights_derived(pr, wt, &wplain, query(pd, dnnl_query_weights_md), err);
  int bb = -1;
  if (bw >= 0) {
    bb = sq_prog_const(pr, bt, &bias_md, true); /* takes bt */
    bt = NULL;
  }
  free(wt);
  free(bt);
  if (bx < 0 || bw < 0 || bb < 0) {
    dnnl_primitive_desc_destroy(pd);
    return bx < 0 || bw < 0 ? -1 : sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  int tmp = sq_prog_buf_new(pr, query(pd, dnnl_query_dst_md), SQ_BUF_ARENA);
  if (tmp < 0) {
    dnnl_primitive_desc_destroy(pd);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
  int bufs[4] = {bx, bw, bb, tmp};
  int rc = sq_prog_add_prim(pr, pd, 4, args, bufs, err);
  if (rc) return rc;
  int out = new_out(pr, n->out[0], &out_md, err);
  if (out < 0) return out;
  sq_step_t s;
  memset(&s, 0, sizeof s);
  s.kind = SQ_STEP_D2S;
  s.node = ni;
  s.nargs = 2;
  s.buf[0] = tmp;
  s.buf[1] = out;
  s.block = fam; /* 0: channels last */
  s.channels = M;
  s.d2s[0] = c->n;
  s.d2s[1] = fam ? M / fam : 1;
  s.d2s[2] = x->dims[2];
  s.d2s[3] = x->dims[3];
  s.d2s[4] = c->kh;
  s.d2s[5] = c->kw;
  if (sq_prog_add_step(pr, &s) < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  return 1;
}

static int build_convtranspose(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nin < 2 || n->nout != 1 || !is_f32(pr, n->in[0], 4) || !is_f32(pr, n->in[1], 4) ||
      tensor(pr, n->in[1])->kind != SQ_TENSOR_CONST || !tensor(pr, n->in[1])->data)
    return 0;
  bool has_bias = n->nin > 2 && n->in[2] >= 0;
  if (has_bias && (tensor(pr, n->in[2])->kind != SQ_TENSOR_CONST || !tensor(pr, n->in[2])->data))
    return 0;
  const sq_tensor_t *x = tensor(pr, n->in[0]), *w = tensor(pr, n->in[1]);
  sq_view_t xv, wv;
  sq_view_of(x, NULL, &xv);
  sq_view_of(w, NULL, &wv);
  sq_conv_params_t c;
  if (sq_conv_params(n, &xv, &wv, true, &c, err)) return -1;
  if (c.group == 1 && c.kh == c.sh && c.kw == c.sw && c.dh == 1 && c.dw == 1 && c.ph == 0 &&
      c.pw == 0 && c.oh == c.h * c.kh && c.ow == c.w * c.kw) {
    int rc = build_convtranspose_taps(pr, ni, &c, err);
    if (rc) return rc;
  }
  /* general case: oneDNN's deconvolution; output size fixed by the plan, so the right pad is
   * what makes oneDNN's size formula give it (output_padding/output_shape included) */
  int64_t g = c.group;
  int64_t ph_end = (c.h - 1) * c.sh + (c.kh - 1) * c.dh + 1 - c.ph - c.oh;
  int64_t pw_end = (c.w - 1) * c.sw + (c.kw - 1) * c.dw + 1 - c.pw - c.ow;
  if (ph_end < 0 || pw_end < 0) return 0;
  dnnl_dims_t sd = {c.n, c.c, c.h, c.w}, dd = {c.n, c.m, c.oh, c.ow};
  dnnl_dims_t wd = {g, c.m / g, c.c / g, c.kh, c.kw};
  int wnd = g > 1 ? 5 : 4;
  if (g == 1) memmove(wd, wd + 1, 4 * sizeof wd[0]);
  dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md, wplain;
  md_any(&src_md, 4, sd);
  md_any(&wei_md, wnd, wd);
  md_any(&dst_md, 4, dd);
  dnnl_dims_t bd = {c.m};
  dnnl_memory_desc_init_by_tag(&bias_md, 1, bd, dnnl_f32, dnnl_x);
  /* ONNX stores [C_in, C_out/group, kh, kw]: oneDNN's (g)iohw */
  dnnl_memory_desc_init_by_tag(&wplain, wnd, wd, dnnl_f32, g > 1 ? dnnl_giohw : dnnl_iohw);
  dnnl_post_ops_t po = NULL;
  dnnl_post_ops_create(&po);
  if (!po || !append_act(po, n->act, n->act_alpha, n->act_beta)) {
    if (po) dnnl_post_ops_destroy(po);
    return 0;
  }
  dnnl_primitive_attr_t attr = make_attr(po);
  dnnl_deconvolution_desc_t dc;
  dnnl_dims_t strides = {c.sh, c.sw}, dil = {c.dh - 1, c.dw - 1};
  dnnl_dims_t pl = {c.ph, c.pw}, prr = {ph_end, pw_end};
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_dilated_deconvolution_forward_desc_init(
      &dc, dnnl_forward_inference, dnnl_deconvolution_direct, &src_md, &wei_md,
      has_bias ? &bias_md : NULL, &dst_md, strides, dil, pl, prr);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &dc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int bx = sq_prog_get_as(pr, n->in[0], query(pd, dnnl_query_src_md), err);
  int bw =
      bx < 0 ? -1 : sq_prog_weights(pr, w->data, &wplain, query(pd, dnnl_query_weights_md), err);
  int bb = -1;
  if (bw >= 0 && has_bias) bb = sq_prog_const(pr, tensor(pr, n->in[2])->data, &bias_md, false);
  int by = bw >= 0 ? new_out(pr, n->out[0], query(pd, dnnl_query_dst_md), err) : -1;
  if (bx < 0 || bw < 0 || by < 0 || (has_bias && bb < 0)) {
    dnnl_primitive_desc_destroy(pd);
    return -1;
  }
  int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  int bufs[4] = {bx, bw, by, bb};
  int rc = sq_prog_add_prim(pr, pd, has_bias ? 4 : 3, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- pooling ---- */

static int build_pool(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nin < 1 || n->nout != 1 || !is_f32(pr, n->in[0], 4) || n->out[0] < 0) return 0;
  const sq_tensor_t *x = tensor(pr, n->in[0]), *y = tensor(pr, n->out[0]);
  dnnl_alg_kind_t alg;
  dnnl_dims_t k, s = {1, 1}, dil = {0, 0}, pl = {0, 0}, prr = {0, 0};
  if (n->op == SQ_OP_GlobalAveragePool || n->op == SQ_OP_GlobalMaxPool) {
    alg = n->op == SQ_OP_GlobalMaxPool ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    k[0] = x->dims[2];
    k[1] = x->dims[3];
  } else {
    sq_view_t xv;
    sq_view_of(x, NULL, &xv);
    sq_pool_t p;
    if (sq_pool_params(n, &xv, &p, err)) return -1;
    if (p.oh != y->dims[2] || p.ow != y->dims[3]) return 0;
    k[0] = p.kh;
    k[1] = p.kw;
    s[0] = p.sh;
    s[1] = p.sw;
    dil[0] = p.dh - 1;
    dil[1] = p.dw - 1;
    pl[0] = p.ph;
    pl[1] = p.pw;
    /* the right pad that gives the planned size (ceil_mode adds to the file's pads) */
    prr[0] = (p.oh - 1) * p.sh + (p.kh - 1) * p.dh + 1 - p.h - p.ph;
    prr[1] = (p.ow - 1) * p.sw + (p.kw - 1) * p.dw + 1 - p.w - p.pw;
    if (prr[0] < 0 || prr[1] < 0) return 0;
    if (n->op == SQ_OP_MaxPool) {
      alg = dnnl_pooling_max;
    } else {
      bool include = sq_attr_int(n, "count_include_pad", 0) != 0;
      /* counting pad cells the file did not ask for (ceil_mode) differs: reference */
      if (include && (prr[0] > p.ph_end || prr[1] > p.pw_end)) return 0;
      alg = include ? dnnl_pooling_avg_include_padding : dnnl_pooling_avg_exclude_padding;
    }
  }
  int bx = sq_prog_get_any(pr, n->in[0], err);
  if (bx < 0) return bx;
  dnnl_dims_t dd = {y->dims[0], y->dims[1], y->dims[2], y->dims[3]};
  dnnl_memory_desc_t dst_md;
  md_any(&dst_md, 4, dd);
  dnnl_pooling_v2_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st = dnnl_pooling_v2_forward_desc_init(
      &desc, dnnl_forward_inference, alg, &pr->bufs[bx].md, &dst_md, s, k, dil, pl, prr);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by = new_out(pr, n->out[0], query(pd, dnnl_query_dst_md), err);
  if (by < 0) {
    dnnl_primitive_desc_destroy(pd);
    return by;
  }
  int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST}, bufs[2] = {bx, by};
  int rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- elementwise ---- */

/* oneDNN's algorithm for a unary op; false when it has none (or the semantics differ). */
static bool unary_alg(const sq_cpu_program_t *pr, const sq_node_t *n, dnnl_alg_kind_t *alg,
                      float *alpha, float *beta) {
  *alpha = *beta = 0;
  switch (n->op) {
    case SQ_OP_Relu:
      *alg = dnnl_eltwise_relu;
      return true;
    case SQ_OP_LeakyRelu:
      *alg = dnnl_eltwise_relu;
      *alpha = sq_attr_float(n, "alpha", 0.01f);
      return true;
    case SQ_OP_Sigmoid:
      *alg = dnnl_eltwise_logistic;
      return true;
    case SQ_OP_Tanh:
      *alg = dnnl_eltwise_tanh;
      return true;
    case SQ_OP_HardSwish:
      *alg = dnnl_eltwise_hardswish;
      return true;
    case SQ_OP_Elu:
      *alg = dnnl_eltwise_elu;
      *alpha = sq_attr_float(n, "alpha", 1.0f);
      return true;
    case SQ_OP_Clip: {
      float lo = -FLT_MAX, hi = FLT_MAX;
      if (n->opset < 11) {
        lo = sq_attr_float(n, "min", -FLT_MAX);
        hi = sq_attr_float(n, "max", FLT_MAX);
      } else {
        for (int k = 1; k < 3 && k < n->nin; k++) {
          if (n->in[k] < 0) continue;
          const sq_tensor_t *b = tensor(pr, n->in[k]);
          if (b->kind != SQ_TENSOR_CONST || b->dtype != SQ_DT_FLOAT || !b->data ||
              sq_tensor_numel(b) != 1)
            return false;
          *(k == 1 ? &lo : &hi) = *(const float *)b->data;
        }
      }
      if (!(lo <= hi)) return false;
      *alg = dnnl_eltwise_clip;
      *alpha = lo;
      *beta = hi;
      return true;
    }
    default:
      return false;
  }
}

static int build_unary(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  dnnl_alg_kind_t alg;
  float alpha, beta;
  if (n->nin < 1 || n->nout != 1 || !is_f32(pr, n->in[0], 0) || n->out[0] < 0 ||
      tensor(pr, n->in[0])->rank < 1 || !unary_alg(pr, n, &alg, &alpha, &beta))
    return 0;
  int bx = sq_prog_get_any(pr, n->in[0], err);
  if (bx < 0) return bx;
  dnnl_eltwise_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st = dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg,
                                                    &pr->bufs[bx].md, alpha, beta);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by = bx;
  if (sq_prog_can_overwrite(pr, bx) && pr->bufs[bx].alias < 0) {
    sq_prog_set_rep(pr, n->out[0], bx);
  } else {
    by = sq_prog_buf_new(pr, &pr->bufs[bx].md, SQ_BUF_ARENA);
    if (by < 0) {
      dnnl_primitive_desc_destroy(pd);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    sq_prog_set_rep(pr, n->out[0], by);
  }
  int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST}, bufs[2] = {bx, by};
  int rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- binary arithmetic ---- */

static bool same_dims(const sq_tensor_t *a, const sq_tensor_t *b) {
  return a->rank == b->rank && memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->rank) == 0;
}

static int build_binary(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nin != 2 || n->nout != 1 || !is_f32(pr, n->in[0], 0) || !is_f32(pr, n->in[1], 0) ||
      n->out[0] < 0)
    return 0;
  dnnl_alg_kind_t alg = n->op == SQ_OP_Add   ? dnnl_binary_add
                        : n->op == SQ_OP_Sub ? dnnl_binary_sub
                        : n->op == SQ_OP_Mul ? dnnl_binary_mul
                                             : dnnl_binary_div;
  const sq_tensor_t *y = tensor(pr, n->out[0]);
  int a = n->in[0], b = n->in[1];
  if (!same_dims(tensor(pr, a), y)) {
    bool commutes = n->op == SQ_OP_Add || n->op == SQ_OP_Mul;
    if (!commutes || !same_dims(tensor(pr, b), y)) return 0; /* broadcast src0: reference */
    a = n->in[1];
    b = n->in[0];
  }
  if (y->rank < 1 || y->rank > 5) return 0;
  int ba = sq_prog_get_any(pr, a, err);
  if (ba < 0) return ba;
  const dnnl_memory_desc_t *md0 = &pr->bufs[ba].md;
  if (md0->ndims != y->rank) return 0;
  int bb;
  if (same_dims(tensor(pr, b), y)) {
    bb = sq_prog_get_as(pr, b, md0, err);
  } else {
    bb = sq_prog_get_plain(pr, b, y->rank, err);
  }
  if (bb < 0) return bb;
  dnnl_post_ops_t po = NULL;
  dnnl_post_ops_create(&po);
  if (!po || !append_act(po, n->act, n->act_alpha, n->act_beta)) {
    if (po) dnnl_post_ops_destroy(po);
    return 0;
  }
  dnnl_primitive_attr_t attr = make_attr(po);
  dnnl_binary_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_binary_desc_init(&desc, alg, md0, &pr->bufs[bb].md, md0);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by;
  if (sq_prog_can_overwrite(pr, ba) && pr->bufs[ba].alias < 0 && bb != ba) {
    by = ba;
  } else {
    by = sq_prog_buf_new(pr, md0, SQ_BUF_ARENA);
    if (by < 0) {
      dnnl_primitive_desc_destroy(pd);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
  }
  sq_prog_set_rep(pr, n->out[0], by);
  int args[3] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1, DNNL_ARG_DST}, bufs[3] = {ba, bb, by};
  int rc = sq_prog_add_prim(pr, pd, 3, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- BatchNormalization (inference, statistics from the file) ---- */

static int build_batchnorm(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nin != 5 || n->nout != 1 || !is_f32(pr, n->in[0], 4) ||
      sq_attr_int(n, "training_mode", 0) != 0)
    return 0;
  int64_t C = tensor(pr, n->in[0])->dims[1];
  for (int k = 1; k < 5; k++) {
    const sq_tensor_t *p = tensor(pr, n->in[k]);
    if (p->kind != SQ_TENSOR_CONST || p->dtype != SQ_DT_FLOAT || !p->data || p->rank != 1 ||
        p->dims[0] != C)
      return 0;
  }
  int bx = sq_prog_get_any(pr, n->in[0], err);
  if (bx < 0) return bx;
  dnnl_batch_normalization_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st = dnnl_batch_normalization_forward_desc_init(
      &desc, dnnl_forward_inference, &pr->bufs[bx].md, sq_attr_float(n, "epsilon", 1e-5f),
      dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  dnnl_dims_t cd = {C};
  dnnl_memory_desc_t vmd;
  dnnl_memory_desc_init_by_tag(&vmd, 1, cd, dnnl_f32, dnnl_x);
  int bp[4];
  for (int k = 0; k < 4; k++) {
    bp[k] = sq_prog_const(pr, tensor(pr, n->in[k + 1])->data, &vmd, false);
    if (bp[k] < 0) {
      dnnl_primitive_desc_destroy(pd);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
  }
  int by = bx;
  if (!(sq_prog_can_overwrite(pr, bx) && pr->bufs[bx].alias < 0)) {
    by = sq_prog_buf_new(pr, &pr->bufs[bx].md, SQ_BUF_ARENA);
    if (by < 0) {
      dnnl_primitive_desc_destroy(pd);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
  }
  sq_prog_set_rep(pr, n->out[0], by);
  int args[6] = {DNNL_ARG_SRC,   DNNL_ARG_DST,  DNNL_ARG_SCALE,
                 DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE};
  int bufs[6] = {bx, by, bp[0], bp[1], bp[2], bp[3]};
  int rc = sq_prog_add_prim(pr, pd, 6, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- Concat ---- */

static int build_concat(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nout != 1 || n->nin < 1 || n->nin > SQ_STEP_MAX_ARGS - 2 || n->out[0] < 0) return 0;
  const sq_tensor_t *y = tensor(pr, n->out[0]);
  if (!is_f32(pr, n->out[0], 4)) return 0;
  int axis = sq_axis(sq_attr_int(n, "axis", 0), y->rank);
  if (axis < 0) return 0;
  dnnl_memory_desc_t srcs[SQ_STEP_MAX_ARGS];
  int bufs[SQ_STEP_MAX_ARGS], args[SQ_STEP_MAX_ARGS], ns = 0;
  for (int k = 0; k < n->nin; k++) {
    if (n->in[k] < 0 || !is_f32(pr, n->in[k], 4)) return 0;
    int b = sq_prog_get_any(pr, n->in[k], err);
    if (b < 0) return b;
    srcs[ns] = pr->bufs[b].md;
    args[ns] = DNNL_ARG_MULTIPLE_SRC + ns;
    bufs[ns++] = b;
  }
  dnnl_dims_t dd = {y->dims[0], y->dims[1], y->dims[2], y->dims[3]};
  dnnl_memory_desc_t dst_md;
  md_any(&dst_md, 4, dd);
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st =
      dnnl_concat_primitive_desc_create(&pd, &dst_md, ns, axis, srcs, attr, pr->engine);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by = new_out(pr, n->out[0], query(pd, dnnl_query_dst_md), err);
  if (by < 0) {
    dnnl_primitive_desc_destroy(pd);
    return by;
  }
  args[ns] = DNNL_ARG_DST;
  bufs[ns] = by;
  int rc = sq_prog_add_prim(pr, pd, ns + 1, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- Resize: oneDNN resampling where its coordinate rule is ONNX's ---- */

static int build_resize(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (n->nout != 1 || !is_f32(pr, n->in[0], 4) || !is_f32(pr, n->out[0], 4)) return 0;
  sq_view_t in[4];
  memset(in, 0, sizeof in);
  for (int k = 0; k < n->nin && k < 4; k++)
    if (n->in[k] >= 0) sq_view_of(tensor(pr, n->in[k]), NULL, &in[k]);
  sq_resize_params_t r;
  if (sq_resize_params(n, in, n->nin < 4 ? n->nin : 4, &r, err)) return -1;
  for (int d = 0; d < 4; d++)
    if (r.roi0[d] != 0.0 || r.roi1[d] != 1.0) return 0;
  if (r.scale[0] != 1.0 || r.scale[1] != 1.0 || sq_attr_int(n, "antialias", 0)) return 0;
  /* upsampling with scale == out / in exactly: oneDNN derives its factors from the sizes */
  for (int d = 2; d < 4; d++)
    if (r.scale[d] < 1.0 || (double)r.out[d] != (double)r.in[d] * r.scale[d]) return 0;
  const char *mode = sq_attr_string(n, "mode", "nearest");
  const char *coord = sq_attr_string(n, "coordinate_transformation_mode", "half_pixel");
  dnnl_alg_kind_t alg;
  if (strcmp(mode, "linear") == 0) {
    /* oneDNN's linear resampling: src = (dst + 0.5) / scale - 0.5, clamped: ONNX's half_pixel
     * (and pytorch_half_pixel, which differs only for an output size of 1) */
    bool ph = strcmp(coord, "pytorch_half_pixel") == 0 && r.out[2] > 1 && r.out[3] > 1;
    if (strcmp(coord, "half_pixel") != 0 && !ph) return 0;
    alg = dnnl_resampling_linear;
  } else if (strcmp(mode, "nearest") == 0) {
    /* integer upscaling with ONNX's asymmetric + floor: every rule gives src = dst / k */
    const char *nm = sq_attr_string(n, "nearest_mode", "round_prefer_floor");
    if (strcmp(coord, "asymmetric") != 0 || strcmp(nm, "floor") != 0) return 0;
    for (int d = 2; d < 4; d++)
      if (r.out[d] != r.in[d] * (int64_t)r.scale[d] || r.scale[d] != (double)(int64_t)r.scale[d])
        return 0;
    alg = dnnl_resampling_nearest;
  } else {
    return 0;
  }
  int bx = sq_prog_get_any(pr, n->in[0], err);
  if (bx < 0) return bx;
  float factors[2] = {(float)r.scale[2], (float)r.scale[3]};
  dnnl_dims_t dd = {r.out[0], r.out[1], r.out[2], r.out[3]};
  dnnl_memory_desc_t dst_md;
  md_any(&dst_md, 4, dd);
  dnnl_resampling_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st = dnnl_resampling_forward_desc_init(&desc, dnnl_forward_inference, alg, factors,
                                                       &pr->bufs[bx].md, &dst_md);
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by = new_out(pr, n->out[0], query(pd, dnnl_query_dst_md), err);
  if (by < 0) {
    dnnl_primitive_desc_destroy(pd);
    return by;
  }
  int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST}, bufs[2] = {bx, by};
  int rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
  return rc ? rc : 1;
}

/* ---- LRN across channels (odd sizes: oneDNN's window is centred, ONNX's leans right for
 * even ones) ---- */
static int build_lrn(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  int64_t size = sq_attr_int(n, "size", 0);
  if (n->nout != 1 || !is_f32(pr, n->in[0], 4) || size < 1 || size % 2 == 0) return 0;
  int bx = sq_prog_get_any(pr, n->in[0], err);
  if (bx < 0) return bx;
  dnnl_lrn_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = make_attr(NULL);
  dnnl_status_t st =
      dnnl_lrn_forward_desc_init(&desc, dnnl_forward_inference, dnnl_lrn_across_channels,
                                 &pr->bufs[bx].md, size, sq_attr_float(n, "alpha", 1e-4f),
                                 sq_attr_float(n, "beta", 0.75f), sq_attr_float(n, "bias", 1.0f));
  if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, pr->engine, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return 0;
  int by = new_out(pr, n->out[0], query(pd, dnnl_query_dst_md), err);
  if (by < 0) {
    dnnl_primitive_desc_destroy(pd);
    return by;
  }
  int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST}, bufs[2] = {bx, by};
  int rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
  return rc ? rc : 1;
}

/* ops.def's cpu column: which builder takes the op (REF: none, its reference kernel runs) */
typedef int (*builder_fn)(sq_cpu_program_t *pr, int ni, sq_error_t *err);
#define build_REF NULL
#define build_CONV build_conv
#define build_DECONV build_convtranspose
#define build_POOL build_pool
#define build_UNARY build_unary
#define build_BINARY build_binary
#define build_BNORM build_batchnorm
#define build_CONCAT build_concat
#define build_RESIZE build_resize
#define build_LRN build_lrn
static const builder_fn builders[SQ_OP_COUNT] = {
#define SQ_OP(name, kernel, shape, static_inputs, props, act, cpu, cuda) \
  [SQ_OP_##name] = build_##cpu,
#define SQ_OP_TODO(name, owner)
#include "ops.def"
#undef SQ_OP
#undef SQ_OP_TODO
};

bool sq_dnnl_runs(int op) {
  return op >= 0 && op < SQ_OP_COUNT && builders[op] != NULL;
}

int sq_dnnl_build_node(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_node_t *n = node_at(pr, ni);
  if (pr->skip[ni]) return 1; /* fused into an earlier step */
  builder_fn b = sq_dnnl_runs(n->op) ? builders[n->op] : NULL;
  return b ? b(pr, ni, err) : 0;
}
