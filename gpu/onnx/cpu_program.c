/* cpu_program.c: compiles a plan into the cpu backend's program (cpu_program.h) and runs it.
 * Compile (once per plan, under its lock): every node either becomes oneDNN primitives
 * (cpu_dnnl_ops.c) on tensors in the layout oneDNN picked, or a step running its reference
 * kernel on plain buffers; a reorder is added only where a consumer needs a layout its input
 * is not in; weights are reordered once into a cache the backend shares between plans; then
 * the arena (activations + scratchpads) is laid out by liveness over the steps. Run (any
 * executor thread, one context each): one pass over the steps. */
#include "cpu_program.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sq_wcache_entry {
  const void *key;
  int variant;
  dnnl_memory_desc_t md;
  void *data;
  int refs;
  sq_wcache_entry_t *next;
};

int sq_dnnl_error(sq_error_t *err, dnnl_status_t st, const sq_node_t *n, const char *what) {
  int code = st == dnnl_out_of_memory ? SQ_ENOMEM : SQ_EINTERNAL;
  if (n) return sq_node_error(err, code, n, "oneDNN %s: status %d", what, (int)st);
  return sq_error_set(err, code, "oneDNN %s: status %d", what, (int)st);
}

/* ---- buffers ---- */

static int root_of(const sq_cpu_program_t *pr, int b) {
  while (pr->bufs[b].alias >= 0) b = pr->bufs[b].alias;
  return b;
}

static int buf_push(sq_cpu_program_t *pr) {
  if (pr->nbufs == pr->bufs_cap) {
    int cap = pr->bufs_cap ? pr->bufs_cap * 2 : 64;
    sq_buf_t *nb = realloc(pr->bufs, (size_t)cap * sizeof *nb);
    if (!nb) return -1;
    pr->bufs = nb;
    pr->bufs_cap = cap;
  }
  sq_buf_t *b = &pr->bufs[pr->nbufs];
  memset(b, 0, sizeof *b);
  b->alias = -1;
  b->index = -1;
  b->birth = b->death = -1;
  b->last_reader = -1;
  return pr->nbufs++;
}

int sq_prog_buf_new(sq_cpu_program_t *pr, const dnnl_memory_desc_t *md, int where) {
  int b = buf_push(pr);
  if (b < 0) return -1;
  pr->bufs[b].where = where;
  if (md) {
    pr->bufs[b].md = *md;
    pr->bufs[b].has_md = true;
    pr->bufs[b].bytes = dnnl_memory_desc_get_size(md);
  }
  return b;
}

int sq_prog_buf_alias(sq_cpu_program_t *pr, int of, const dnnl_memory_desc_t *md) {
  int b = buf_push(pr);
  if (b < 0) return -1;
  sq_buf_t *nb = &pr->bufs[b], *o = &pr->bufs[of];
  nb->where = o->where;
  nb->index = o->index;
  nb->ptr = o->ptr;
  nb->alias = root_of(pr, of);
  nb->bytes = o->bytes;
  if (md) {
    nb->md = *md;
    nb->has_md = true;
  }
  return b;
}

static dnnl_data_type_t dnnl_type(int dtype) {
  switch (dtype) {
    case SQ_DT_FLOAT:
      return dnnl_f32;
    case SQ_DT_INT32:
      return dnnl_s32;
    case SQ_DT_INT8:
      return dnnl_s8;
    case SQ_DT_UINT8:
    case SQ_DT_BOOL:
      return dnnl_u8;
    default:
      return dnnl_data_type_undef;
  }
}

bool sq_prog_plain_md(const sq_tensor_t *t, int rank, dnnl_memory_desc_t *md) {
  static const dnnl_format_tag_t tags[] = {dnnl_a,    dnnl_a,     dnnl_ab,    dnnl_abc,
                                           dnnl_abcd, dnnl_abcde, dnnl_abcdef};
  dnnl_data_type_t dt = dnnl_type(t->dtype);
  int r = rank > 0 ? rank : t->rank;
  if (dt == dnnl_data_type_undef || t->rank > r || r > 6) return false;
  dnnl_dims_t dims;
  int pad = r - t->rank;
  for (int i = 0; i < r; i++) dims[i] = i < pad ? 1 : t->dims[i - pad];
  if (r == 0) { /* a scalar: one element */
    dims[0] = 1;
    r = 1;
  }
  for (int i = 0; i < r; i++)
    if (dims[i] <= 0) return false; /* oneDNN has no empty tensors */
  return dnnl_memory_desc_init_by_tag(md, r, dims, dt, tags[r]) == dnnl_success;
}

/* Marks a buffer as used by the step being appended (arena lifetimes). */
static void touch(sq_cpu_program_t *pr, int b, int step) {
  if (b < 0) return;
  sq_buf_t *r = &pr->bufs[root_of(pr, b)];
  if (r->birth < 0 || step < r->birth) r->birth = step;
  if (step > r->death) r->death = step;
}

int sq_prog_add_step(sq_cpu_program_t *pr, const sq_step_t *s) {
  if (pr->nsteps == pr->steps_cap) {
    int cap = pr->steps_cap ? pr->steps_cap * 2 : 64;
    sq_step_t *ns = realloc(pr->steps, (size_t)cap * sizeof *ns);
    if (!ns) return -1;
    pr->steps = ns;
    pr->steps_cap = cap;
  }
  pr->steps[pr->nsteps] = *s;
  /* a copy is a memcpy on the calling thread: it never opens a region */
  pr->steps[pr->nsteps].threads = s->kind == SQ_STEP_COPY ? 1 : pr->team;
  for (int k = 0; k < s->nargs; k++) touch(pr, s->buf[k], pr->nsteps);
  return pr->nsteps++;
}

int sq_prog_add_prim(sq_cpu_program_t *pr, dnnl_primitive_desc_t pd, int nargs, const int *args,
                     const int *bufs, sq_error_t *err) {
  /* pos == norder while the graph outputs are added (add_outputs): no node */
  bool at_node = pr->pos >= 0 && pr->pos < pr->plan->norder;
  const sq_node_t *n = at_node ? &pr->plan->graph.nodes[pr->plan->order[pr->pos]] : NULL;
  sq_step_t s;
  memset(&s, 0, sizeof s);
  s.kind = SQ_STEP_PRIM;
  s.node = n ? pr->plan->order[pr->pos] : -1;
  const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  int scratch = -1;
  if (sp && dnnl_memory_desc_get_size(sp) > 0) {
    scratch = sq_prog_buf_new(pr, sp, SQ_BUF_ARENA);
    if (scratch < 0) {
      dnnl_primitive_desc_destroy(pd);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
  }
  dnnl_status_t st = dnnl_primitive_create(&s.prim, pd);
  dnnl_primitive_desc_destroy(pd);
  if (st != dnnl_success) return sq_dnnl_error(err, st, n, "primitive create");
  if (nargs + 1 > SQ_STEP_MAX_ARGS) {
    dnnl_primitive_destroy(s.prim);
    return sq_error_set(err, SQ_EINTERNAL, "too many primitive arguments");
  }
  for (int k = 0; k < nargs; k++) {
    s.arg[k] = args[k];
    s.buf[k] = bufs[k];
  }
  s.nargs = nargs;
  if (scratch >= 0) {
    s.arg[s.nargs] = DNNL_ARG_SCRATCHPAD;
    s.buf[s.nargs++] = scratch;
  }
  if (sq_prog_add_step(pr, &s) < 0) {
    dnnl_primitive_destroy(s.prim);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  return 0;
}

/* ---- representations: which buffers hold a tensor ---- */

void sq_prog_set_rep(sq_cpu_program_t *pr, int t, int b) {
  int *r = pr->reps[t];
  for (int k = 0; k < 4; k++)
    if (r[k] == b) return;
  int k = 0;
  while (k < 3 && r[k] >= 0) k++;
  r[k] = b; /* the 4th slot is recycled when a tensor has many layouts (rare) */
  const sq_tensor_t *tt = &pr->plan->graph.tensors[t];
  sq_buf_t *root = &pr->bufs[root_of(pr, b)];
  int last = tt->last_use > pr->pos ? tt->last_use : pr->pos;
  if (last > root->last_reader) root->last_reader = last;
  if (tt->is_output || tt->kind != SQ_TENSOR_ACT) root->keep = true;
}

bool sq_prog_can_overwrite(const sq_cpu_program_t *pr, int b) {
  const sq_buf_t *r = &pr->bufs[root_of(pr, b)];
  return r->where == SQ_BUF_ARENA && !r->keep && r->last_reader <= pr->pos;
}

/* The tensor's natural first buffer: graph inputs and constants start plain. */
static int seed_rep(sq_cpu_program_t *pr, int t) {
  const sq_tensor_t *tt = &pr->plan->graph.tensors[t];
  if (pr->reps[t][0] >= 0) return pr->reps[t][0];
  if (tt->kind == SQ_TENSOR_ACT) return -1; /* not produced yet: a compile bug */
  dnnl_memory_desc_t md;
  bool has = sq_prog_plain_md(tt, 0, &md);
  int b = sq_prog_buf_new(pr, has ? &md : NULL,
                          tt->kind == SQ_TENSOR_CONST ? SQ_BUF_CONST : SQ_BUF_INPUT);
  if (b < 0) return -1;
  pr->bufs[b].bytes = sq_tensor_bytes(tt);
  if (tt->kind == SQ_TENSOR_CONST) {
    pr->bufs[b].ptr = tt->data;
  } else {
    for (int j = 0; j < pr->plan->ninputs; j++)
      if (pr->plan->inputs[j] == t) pr->bufs[b].index = j;
  }
  sq_prog_set_rep(pr, t, b);
  return b;
}

static bool md_equal(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b) {
  return dnnl_memory_desc_equal(a, b) != 0;
}

bool sq_prog_md_is_plain(const dnnl_memory_desc_t *md) {
  if (md->format_kind != dnnl_blocked || md->format_desc.blocking.inner_nblks != 0) return false;
  dnnl_dim_t stride = 1;
  for (int i = md->ndims - 1; i >= 0; i--) {
    if (md->dims[i] != 1 && md->format_desc.blocking.strides[i] != stride) return false;
    stride *= md->dims[i];
  }
  return true;
}

/* Which team a node's steps run on. The engine's OpenMP runtime waits passively (backend_cpu.c),
 * so every parallel region wakes the other threads with a futex and joins them, which costs
 * tens of microseconds on the 2-vCPU bench machine and more when a neighbour holds the other
 * core. Measured there per step (1 vs 2 threads, load ~2, mobilenet_v3_small, deeplabv3,
 * resnet18, cellseg; docs/BENCHMARKS.md): steps under 100 us of one-thread time were 1.3-3x
 * slower on a team of 2, 100-400 us broke even, longer ones gained. So a step whose estimated
 * one-thread time is under 100 us runs on the calling thread alone; the small models are made
 * of such steps (mobilenet_v3_small: 71 of its 76). The estimate is a roofline of this machine
 * class, FLOPs at 100 GFLOP/s plus bytes at 30 GB/s (one AVX-512 core, cache-resident
 * tensors): it put every measured step under 60 us below the threshold and none over 200 us. */
#define SQ_TEAM_MIN_US 100.0
#define SQ_FLOP_PER_US 1e5
#define SQ_BYTES_PER_US 3e4

static double node_cost_us(const sq_graph_t *g, const sq_node_t *n) {
  double bytes = 0, flops = 0;
  for (int k = 0; k < n->nin; k++)
    if (n->in[k] >= 0) bytes += (double)sq_tensor_bytes(&g->tensors[n->in[k]]);
  for (int k = 0; k < n->nout; k++)
    if (n->out[k] >= 0) bytes += (double)sq_tensor_bytes(&g->tensors[n->out[k]]);
  const sq_tensor_t *a = n->nin > 0 && n->in[0] >= 0 ? &g->tensors[n->in[0]] : NULL;
  const sq_tensor_t *w = n->nin > 1 && n->in[1] >= 0 ? &g->tensors[n->in[1]] : NULL;
  const sq_tensor_t *y = n->nout > 0 && n->out[0] >= 0 ? &g->tensors[n->out[0]] : NULL;
  if (a && w && y && w->rank >= 1 && w->dims[0] > 0) {
    switch (n->op) {
      case SQ_OP_Conv: /* W [M, C/g, kh, kw]: one MAC per weight of a filter per output */
        flops = 2.0 * (double)sq_tensor_numel(y) * (double)sq_tensor_numel(w) / (double)w->dims[0];
        break;
      case SQ_OP_ConvTranspose: /* W [C, M/g, kh, kw]: per input element */
        flops = 2.0 * (double)sq_tensor_numel(a) * (double)sq_tensor_numel(w) / (double)w->dims[0];
        break;
      case SQ_OP_Gemm:
      case SQ_OP_MatMul: /* A [.., M, K], Y [.., M, N]: 2 M K N */
        if (y->rank >= 1) flops = 2.0 * (double)sq_tensor_numel(a) * (double)y->dims[y->rank - 1];
        break;
      default:
        break;
    }
  }
  return flops / SQ_FLOP_PER_US + bytes / SQ_BYTES_PER_US;
}

static int team_for(const sq_cpu_program_t *pr, double cost_us) {
  int threads = pr->backend->threads;
  return threads > 1 && cost_us < SQ_TEAM_MIN_US ? 1 : threads;
}

static int node_team(const sq_cpu_program_t *pr, int ni) {
  const sq_graph_t *g = &pr->plan->graph;
  return team_for(pr, node_cost_us(g, &g->nodes[ni]));
}

/* Reorder from buffer src into a new arena buffer of layout md. Its team is sized by its own bytes
 * (the input reorder of a small conv is small even when the conv is not). */
static int add_reorder(sq_cpu_program_t *pr, int src, const dnnl_memory_desc_t *md, int dst_where,
                       sq_error_t *err) {
  int outer = pr->team; /* the team of the node that needs the reorder */
  pr->team =
      team_for(pr, (double)(pr->bufs[src].bytes + dnnl_memory_desc_get_size(md)) / SQ_BYTES_PER_US);
  omp_set_num_threads(pr->team);
  dnnl_primitive_desc_t pd;
  dnnl_status_t st =
      dnnl_reorder_primitive_desc_create(&pd, &pr->bufs[src].md, pr->engine, md, pr->engine, NULL);
  int dst = st == dnnl_success ? sq_prog_buf_new(pr, md, dst_where) : -1;
  int rc = 0;
  if (st != dnnl_success) {
    rc = sq_dnnl_error(err, st, NULL, "reorder");
  } else if (dst < 0) {
    dnnl_primitive_desc_destroy(pd);
    rc = sq_error_set(err, SQ_ENOMEM, "out of memory");
  } else {
    int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, bufs[2] = {src, dst};
    rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
    if (!rc) pr->steps[pr->nsteps - 1].is_reorder = true;
  }
  pr->team = outer;
  omp_set_num_threads(outer);
  return rc ? rc : dst;
}

int sq_prog_reorder(sq_cpu_program_t *pr, int b, const dnnl_memory_desc_t *md, sq_error_t *err) {
  if (md_equal(&pr->bufs[b].md, md)) return b;
  return add_reorder(pr, b, md, SQ_BUF_ARENA, err);
}

int sq_prog_get_as(sq_cpu_program_t *pr, int t, const dnnl_memory_desc_t *md, sq_error_t *err) {
  if (seed_rep(pr, t) < 0 && pr->reps[t][0] < 0)
    return sq_error_set(err, SQ_EINTERNAL, "tensor '%s' used before it is computed",
                        pr->plan->graph.tensors[t].name);
  int src = -1;
  for (int k = 0; k < 4 && pr->reps[t][k] >= 0; k++) {
    const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
    if (!b->has_md) continue;
    if (md_equal(&b->md, md)) return pr->reps[t][k];
    if (b->md.ndims == md->ndims) {
      bool same = true;
      for (int d = 0; d < md->ndims; d++) same = same && b->md.dims[d] == md->dims[d];
      if (same && (src < 0 || !sq_prog_md_is_plain(&b->md))) src = pr->reps[t][k];
    }
  }
  if (src < 0) { /* a plain buffer with other dims (rank alignment): view it */
    for (int k = 0; k < 4 && pr->reps[t][k] >= 0 && src < 0; k++) {
      const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
      if (b->has_md && sq_prog_md_is_plain(&b->md)) {
        dnnl_memory_desc_t v;
        bool fits = sq_prog_plain_md(&pr->plan->graph.tensors[t], md->ndims, &v) &&
                    dnnl_memory_desc_get_size(&v) == b->bytes;
        for (int d = 0; fits && d < md->ndims; d++) fits = v.dims[d] == md->dims[d];
        if (fits) {
          src = sq_prog_buf_alias(pr, pr->reps[t][k], &v);
          if (src < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
          if (md_equal(&v, md)) return src;
        }
      }
    }
  }
  const sq_tensor_t *tt = &pr->plan->graph.tensors[t];
  /* 1-D convs and pools run as 2-D: a [N, C, W] tensor is also seen as [N, C, 1, W] */
  dnnl_dims_t d4 = {tt->rank == 3 ? tt->dims[0] : 0, tt->rank == 3 ? tt->dims[1] : 0, 1,
                    tt->rank == 3 ? tt->dims[2] : 0};
  if (src < 0 && tt->rank == 3 && md->ndims == 4 && md->dims[0] == d4[0] && md->dims[1] == d4[1] &&
      md->dims[2] == 1 && md->dims[3] == d4[3]) {
    for (int k = 0; k < 4 && pr->reps[t][k] >= 0 && src < 0; k++) {
      const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
      if (b->has_md && b->md.ndims == 3 && sq_prog_md_is_plain(&b->md)) {
        dnnl_memory_desc_t v;
        dnnl_memory_desc_init_by_tag(&v, 4, d4, md->data_type, dnnl_nchw);
        src = sq_prog_buf_alias(pr, pr->reps[t][k], &v);
        if (src < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
        sq_prog_set_rep(pr, t, src);
        if (md_equal(&v, md)) return src;
      }
    }
  }
  if (src < 0 && tt->rank == 3 && md->ndims == 3) { /* back from a 4-D layout: via nchw */
    for (int k = 0; k < 4 && pr->reps[t][k] >= 0 && src < 0; k++) {
      const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
      if (b->has_md && b->md.ndims == 4 && b->md.dims[2] == 1) src = pr->reps[t][k];
    }
    if (src >= 0) {
      dnnl_memory_desc_t v;
      dnnl_memory_desc_init_by_tag(&v, 4, d4, md->data_type, dnnl_nchw);
      int p4 = add_reorder(pr, src, &v, SQ_BUF_ARENA, err);
      if (p4 < 0) return p4;
      sq_prog_set_rep(pr, t, p4);
      int a = sq_prog_buf_alias(pr, p4, md);
      if (a < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      sq_prog_set_rep(pr, t, a);
      if (md_equal(md, &pr->bufs[a].md)) return a;
      src = a;
    }
  }
  if (src < 0)
    return sq_error_set(err, SQ_EINTERNAL, "tensor '%s' has no layout to reorder from",
                        pr->plan->graph.tensors[t].name);
  int b;
  if (tt->kind == SQ_TENSOR_CONST) { /* reordered once, at compile time */
    b = sq_prog_weights(pr, pr->bufs[src].ptr, &pr->bufs[src].md, md, err);
  } else {
    b = add_reorder(pr, src, md, SQ_BUF_ARENA, err);
  }
  if (b >= 0) sq_prog_set_rep(pr, t, b);
  return b;
}

int sq_prog_get_plain(sq_cpu_program_t *pr, int t, int rank, sq_error_t *err) {
  const sq_tensor_t *tt = &pr->plan->graph.tensors[t];
  dnnl_memory_desc_t md;
  if (!sq_prog_plain_md(tt, rank, &md)) { /* oneDNN cannot describe it: only a plain buffer */
    int b = seed_rep(pr, t);
    for (int k = 0; b < 0 && k < 4; k++)
      if (pr->reps[t][k] >= 0 && !pr->bufs[pr->reps[t][k]].has_md) b = pr->reps[t][k];
    if (b < 0) b = pr->reps[t][0];
    if (b < 0 || (pr->bufs[b].has_md && !sq_prog_md_is_plain(&pr->bufs[b].md)))
      return sq_error_set(err, SQ_EINTERNAL, "tensor '%s' has no plain buffer", tt->name);
    return b;
  }
  return sq_prog_get_as(pr, t, &md, err);
}

int sq_prog_get_any(sq_cpu_program_t *pr, int t, sq_error_t *err) {
  seed_rep(pr, t);
  int best = -1;
  for (int k = 0; k < 4 && pr->reps[t][k] >= 0; k++) {
    const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
    if (!b->has_md) continue;
    if (best < 0 || (sq_prog_md_is_plain(&pr->bufs[best].md) && !sq_prog_md_is_plain(&b->md)))
      best = pr->reps[t][k];
  }
  if (best >= 0) return best;
  return sq_prog_get_plain(pr, t, 0, err);
}

/* ---- constants and the weight cache ---- */

static int own(sq_cpu_program_t *pr, void *blob) {
  if (pr->nowned == pr->owned_cap) {
    int cap = pr->owned_cap ? pr->owned_cap * 2 : 16;
    void **n = realloc(pr->owned, (size_t)cap * sizeof *n);
    if (!n) return -1;
    pr->owned = n;
    pr->owned_cap = cap;
  }
  pr->owned[pr->nowned++] = blob;
  return 0;
}

int sq_prog_const(sq_cpu_program_t *pr, const void *data, const dnnl_memory_desc_t *md,
                  bool owned) {
  if (owned && own(pr, (void *)data)) {
    free((void *)data);
    return -1;
  }
  int b = sq_prog_buf_new(pr, md, SQ_BUF_CONST);
  if (b >= 0) pr->bufs[b].ptr = data;
  return b;
}

/* Runs one reorder now (compile time): weights into the layout their primitive wants. */
static int reorder_now(dnnl_engine_t eng, const void *src, const dnnl_memory_desc_t *src_md,
                       void *dst, const dnnl_memory_desc_t *md, sq_error_t *err) {
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t prim = NULL;
  dnnl_memory_t ms = NULL, md_mem = NULL;
  dnnl_stream_t stream = NULL;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, src_md, eng, md, eng, NULL);
  if (st == dnnl_success) st = dnnl_primitive_create(&prim, pd);
  if (st == dnnl_success) st = dnnl_memory_create(&ms, src_md, eng, (void *)src);
  if (st == dnnl_success) st = dnnl_memory_create(&md_mem, md, eng, dst);
  if (st == dnnl_success) st = dnnl_stream_create(&stream, eng, dnnl_stream_default_flags);
  if (st == dnnl_success) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md_mem}};
    st = dnnl_primitive_execute(prim, stream, 2, args);
  }
  if (stream) dnnl_stream_wait(stream);
  if (stream) dnnl_stream_destroy(stream);
  if (ms) dnnl_memory_destroy(ms);
  if (md_mem) dnnl_memory_destroy(md_mem);
  if (prim) dnnl_primitive_destroy(prim);
  if (pd) dnnl_primitive_desc_destroy(pd);
  return st == dnnl_success ? 0 : sq_dnnl_error(err, st, NULL, "weight reorder");
}

static int hold(sq_cpu_program_t *pr, sq_wcache_entry_t *e) {
  if (pr->nweights == pr->weights_cap) {
    int cap = pr->weights_cap ? pr->weights_cap * 2 : 16;
    sq_wcache_entry_t **n = realloc(pr->weights, (size_t)cap * sizeof *n);
    if (!n) return -1;
    pr->weights = n;
    pr->weights_cap = cap;
  }
  pr->weights[pr->nweights++] = e;
  return 0;
}

/* The cache is keyed by (source pointer, layout): plans of one engine share weights, which
 * stay put for the engine's lifetime; a derived source (ConvTranspose's repacked weights) is
 * not cached (variant < 0). */
static int weights_keyed(sq_cpu_program_t *pr, const void *key, int variant, const void *src,
                         const dnnl_memory_desc_t *src_md, const dnnl_memory_desc_t *md,
                         sq_error_t *err) {
  sq_cpu_backend_t *be = pr->backend;
  size_t bytes = dnnl_memory_desc_get_size(md);
  if (variant < 0) {
    void *blob = NULL;
    if (posix_memalign(&blob, 64, bytes ? bytes : 64)) return sq_error_set(err, SQ_ENOMEM, "oom");
    int rc = reorder_now(pr->engine, src, src_md, blob, md, err);
    if (rc) {
      free(blob);
      return rc;
    }
    int b = sq_prog_const(pr, blob, md, true);
    return b < 0 ? sq_error_set(err, SQ_ENOMEM, "out of memory") : b;
  }
  pthread_mutex_lock(&be->wlock);
  sq_wcache_entry_t *e = be->wcache;
  while (e && !(e->key == key && e->variant == variant && md_equal(&e->md, md))) e = e->next;
  int rc = 0;
  if (!e) {
    e = calloc(1, sizeof *e);
    if (!e || posix_memalign(&e->data, 64, bytes ? bytes : 64)) {
      free(e);
      pthread_mutex_unlock(&be->wlock);
      return sq_error_set(err, SQ_ENOMEM, "out of memory for weights");
    }
    e->key = key;
    e->variant = variant;
    e->md = *md;
    rc = reorder_now(pr->engine, src, src_md, e->data, md, err);
    if (rc) {
      free(e->data);
      free(e);
      pthread_mutex_unlock(&be->wlock);
      return rc;
    }
    e->next = be->wcache;
    be->wcache = e;
  }
  e->refs++;
  pthread_mutex_unlock(&be->wlock);
  if (hold(pr, e)) {
    pthread_mutex_lock(&be->wlock);
    e->refs--;
    pthread_mutex_unlock(&be->wlock);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  int b = sq_prog_const(pr, e->data, md, false);
  return b < 0 ? sq_error_set(err, SQ_ENOMEM, "out of memory") : b;
}

int sq_prog_weights(sq_cpu_program_t *pr, const void *src, const dnnl_memory_desc_t *src_md,
                    const dnnl_memory_desc_t *md, sq_error_t *err) {
  return weights_keyed(pr, src, 0, src, src_md, md, err);
}

int sq_prog_weights_derived(sq_cpu_program_t *pr, const void *src, const dnnl_memory_desc_t *src_md,
                            const dnnl_memory_desc_t *md, sq_error_t *err) {
  return weights_keyed(pr, NULL, -1, src, src_md, md, err);
}

static void release_weights(sq_cpu_program_t *pr) {
  sq_cpu_backend_t *be = pr->backend;
  pthread_mutex_lock(&be->wlock);
  for (int i = 0; i < pr->nweights; i++) {
    sq_wcache_entry_t *e = pr->weights[i];
    if (--e->refs > 0) continue;
    for (sq_wcache_entry_t **pp = &be->wcache; *pp; pp = &(*pp)->next)
      if (*pp == e) {
        *pp = e->next;
        break;
      }
    free(e->data);
    free(e);
  }
  pthread_mutex_unlock(&be->wlock);
  pr->nweights = 0;
}

/* ---- compile ---- */

/* A node oneDNN does not run: its reference kernel on plain buffers. View ops only alias. */
static int add_ref_node(sq_cpu_program_t *pr, int ni, sq_error_t *err) {
  const sq_graph_t *g = &pr->plan->graph;
  const sq_node_t *n = &g->nodes[ni];
  bool view = sq_op_has(n->op, SQ_P_VIEW);
  if (view && n->nin >= 1 && n->in[0] >= 0 && n->nout == 1 && n->out[0] >= 0) {
    int src = sq_prog_get_plain(pr, n->in[0], 0, err);
    if (src < 0) return src;
    dnnl_memory_desc_t md;
    bool has = sq_prog_plain_md(&g->tensors[n->out[0]], 0, &md);
    int b = sq_prog_buf_alias(pr, src, has ? &md : NULL);
    if (b < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_prog_set_rep(pr, n->out[0], b);
    return 0;
  }
  if (n->nin + n->nout > SQ_STEP_MAX_ARGS) {
    /* reference steps keep their buffers in the fixed array: route big nodes through the
     * plan's own arena-free path (never happens for the ops that take many inputs we know:
     * Concat/Sum/Max run on at most a dozen) */
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "%d inputs/outputs on the cpu backend",
                         n->nin + n->nout);
  }
  sq_step_t s;
  memset(&s, 0, sizeof s);
  s.kind = SQ_STEP_REF;
  s.node = ni;
  s.nref_in = n->nin;
  s.nref_out = n->nout;
  for (int k = 0; k < n->nin; k++) {
    s.buf[k] = -1;
    if (n->in[k] < 0) continue;
    int b = sq_prog_get_plain(pr, n->in[k], 0, err);
    if (b < 0) return b;
    s.buf[k] = b;
  }
  for (int k = 0; k < n->nout; k++) {
    s.buf[n->nin + k] = -1;
    if (n->out[k] < 0) continue;
    const sq_tensor_t *t = &g->tensors[n->out[k]];
    dnnl_memory_desc_t md;
    bool has = sq_prog_plain_md(t, 0, &md);
    int b = sq_prog_buf_new(pr, has ? &md : NULL, SQ_BUF_ARENA);
    if (b < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    pr->bufs[b].bytes = sq_tensor_bytes(t);
    s.buf[n->nin + k] = b;
    sq_prog_set_rep(pr, n->out[k], b);
  }
  s.nargs = n->nin + n->nout;
  return sq_prog_add_step(pr, &s) < 0 ? sq_error_set(err, SQ_ENOMEM, "out of memory") : 0;
}

/* Graph outputs end in the caller's buffers, plain. */
static int add_outputs(sq_cpu_program_t *pr, sq_error_t *err) {
  const sq_graph_t *g = &pr->plan->graph;
  pr->pos = pr->plan->norder;
  for (int i = 0; i < g->noutputs; i++) {
    int t = g->outputs[i];
    const sq_tensor_t *tt = &g->tensors[t];
    dnnl_memory_desc_t md;
    bool has = sq_prog_plain_md(tt, 0, &md);
    int out = sq_prog_buf_new(pr, has ? &md : NULL, SQ_BUF_OUTPUT);
    if (out < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    pr->bufs[out].index = i;
    pr->bufs[out].bytes = sq_tensor_bytes(tt);
    int src = -1;
    seed_rep(pr, t);
    for (int k = 0; k < 4 && pr->reps[t][k] >= 0 && src < 0; k++) {
      const sq_buf_t *b = &pr->bufs[pr->reps[t][k]];
      if (!b->has_md || sq_prog_md_is_plain(&b->md)) src = pr->reps[t][k];
    }
    sq_step_t s;
    memset(&s, 0, sizeof s);
    s.node = -1;
    if (src >= 0 || !has) {
      if (src < 0) src = pr->reps[t][0];
      if (src < 0) return sq_error_set(err, SQ_EINTERNAL, "output '%s' not computed", tt->name);
      s.kind = SQ_STEP_COPY;
      s.nargs = 2;
      s.buf[0] = src;
      s.buf[1] = out;
      if (sq_prog_add_step(pr, &s) < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      continue;
    }
    src = sq_prog_get_any(pr, t, err);
    if (src < 0) return src;
    if (pr->bufs[src].md.ndims != md.ndims) { /* a 1-D op's [N,C,1,W] layout: via get_as */
      src = sq_prog_get_as(pr, t, &md, err);
      if (src < 0) return src;
      s.kind = SQ_STEP_COPY;
      s.nargs = 2;
      s.buf[0] = src;
      s.buf[1] = out;
      if (sq_prog_add_step(pr, &s) < 0) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      continue;
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, &pr->bufs[src].md, pr->engine, &md,
                                                          pr->engine, NULL);
    if (st != dnnl_success) return sq_dnnl_error(err, st, NULL, "output reorder");
    int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, bufs[2] = {src, out};
    int rc = sq_prog_add_prim(pr, pd, 2, args, bufs, err);
    if (rc) return rc;
    pr->steps[pr->nsteps - 1].is_reorder = true;
  }
  return 0;
}

/* Places the arena buffers: greedy by decreasing size, each at the lowest offset clear of
 * every placed buffer whose step lifetime overlaps (as plan.c does for the plan's tensors). */
static int place_arena(sq_cpu_program_t *pr, sq_error_t *err) {
  int n = 0;
  int *order = malloc((size_t)(pr->nbufs + 1) * sizeof *order);
  if (!order) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  for (int b = 0; b < pr->nbufs; b++) {
    sq_buf_t *x = &pr->bufs[b];
    if (x->alias < 0 && x->where == SQ_BUF_ARENA && x->birth >= 0) order[n++] = b;
  }
  size_t *sizes = calloc((size_t)n + 1, sizeof *sizes);
  int *birth = calloc((size_t)n + 1, sizeof *birth), *death = calloc((size_t)n + 1, sizeof *death);
  size_t *offs = malloc((size_t)(n + 1) * sizeof *offs);
  if (!sizes || !birth || !death || !offs) {
    free(order);
    free(sizes);
    free(birth);
    free(death);
    free(offs);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  for (int i = 0; i < n; i++) {
    sq_buf_t *x = &pr->bufs[order[i]];
    sizes[i] = x->bytes;
    birth[i] = x->birth;
    death[i] = x->death;
  }
  pr->arena_bytes = sq_arena_place(sizes, birth, death, n, offs);
  for (int i = 0; i < n; i++) pr->bufs[order[i]].offset = offs[i];
  free(order);
  free(sizes);
  free(birth);
  free(death);
  free(offs);
  return 0;
}

static atomic_uint_fast64_t program_ids = 1;

void sq_cpu_program_free(sq_cpu_program_t *pr) {
  if (!pr) return;
  for (int i = 0; i < pr->nsteps; i++)
    if (pr->steps[i].prim) dnnl_primitive_destroy(pr->steps[i].prim);
  if (pr->backend) {
    release_weights(pr);
    sq_cpu_backend_unref(pr->backend);
  }
  for (int i = 0; i < pr->nowned; i++) free(pr->owned[i]);
  free(pr->owned);
  free(pr->weights);
  free(pr->steps);
  free(pr->bufs);
  free(pr->reps);
  free(pr->pos_of);
  free(pr->skip);
  free(pr);
}

sq_cpu_program_t *sq_cpu_program_new(sq_cpu_backend_t *be, const sq_engine_plan_t *p,
                                     sq_error_t *err) {
  sq_cpu_program_t *pr = calloc(1, sizeof *pr);
  if (!pr) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  pr->id = atomic_fetch_add(&program_ids, 1);
  pr->plan = p;
  pthread_mutex_lock(&be->wlock);
  be->refs++;
  pthread_mutex_unlock(&be->wlock);
  pr->backend = be;
  pr->engine = be->engine;
  pr->reps = malloc((size_t)(p->graph.ntensors + 1) * sizeof *pr->reps);
  pr->pos_of = malloc((size_t)(p->graph.nnodes + 1) * sizeof *pr->pos_of);
  pr->skip = calloc((size_t)(p->graph.nnodes + 1), sizeof *pr->skip);
  if (!pr->reps || !pr->pos_of || !pr->skip) {
    sq_cpu_program_free(pr);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  memset(pr->reps, 0xff, (size_t)(p->graph.ntensors + 1) * sizeof *pr->reps);
  for (int i = 0; i <= p->graph.nnodes; i++) pr->pos_of[i] = -1;
  for (int i = 0; i < p->norder; i++) pr->pos_of[p->order[i]] = i;
  /* oneDNN sizes a primitive for the calling thread's team when it creates it (a conv splits
   * its work for that many threads and opens a region of that size whatever the team is when
   * it runs): each node is built with the team its steps will run on */
  int rc = 0;
  for (int i = 0; i < p->norder && !rc; i++) {
    pr->pos = i;
    pr->team = pr->skip[p->order[i]] ? be->threads : node_team(pr, p->order[i]);
    omp_set_num_threads(pr->team);
    rc = sq_dnnl_build_node(pr, p->order[i], err);
    if (rc == 0)
      rc = add_ref_node(pr, p->order[i], err);
    else if (rc > 0)
      rc = 0;
  }
  pr->team = be->threads;
  omp_set_num_threads(be->threads);
  if (!rc) rc = add_outputs(pr, err);
  if (!rc) rc = place_arena(pr, err);
  if (rc) {
    sq_cpu_program_free(pr);
    return NULL;
  }
  return pr;
}

/* ---- run ---- */

typedef struct sq_prog_mems {
  uint64_t id;
  int n;
  dnnl_memory_t *mems;
  struct sq_prog_mems *next;
} sq_prog_mems_t;

void sq_prog_mems_free(sq_prog_mems_t *m) {
  while (m) {
    sq_prog_mems_t *next = m->next;
    for (int i = 0; i < m->n; i++)
      if (m->mems[i]) dnnl_memory_destroy(m->mems[i]);
    free(m->mems);
    free(m);
    m = next;
  }
}

static void *buf_addr(const sq_cpu_program_t *pr, int b, uint8_t *arena,
                      const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs) {
  const sq_buf_t *x = &pr->bufs[root_of(pr, b)];
  switch (x->where) {
    case SQ_BUF_ARENA:
      return arena + x->offset;
    case SQ_BUF_CONST:
      return (void *)x->ptr;
    case SQ_BUF_INPUT:
      return x->index >= 0 ? inputs[x->index].data : NULL;
    default:
      return outputs[x->index].data;
  }
}

typedef struct {
  const sq_step_t *s;
  const float *src;
  float *dst;
} d2s_t;

/* Depth-to-space of ConvTranspose's taps (cpu_dnnl_ops.c). Channels last (block 0):
 *   out[n][y*kh+i][x*kw+j][0:M] = tmp[n][y][x][(i*kw+j)*M : +M];
 * channel blocks of B: out[n][cb][y*kh+i][x*kw+j][:] = tmp[n][(i*kw+j)*CB + cb][y][x][:]. */
static void d2s_range(void *arg, int64_t b, int64_t e) {
  const d2s_t *a = arg;
  const sq_step_t *s = a->s;
  int64_t CB = s->d2s[1], H = s->d2s[2], W = s->d2s[3], kh = s->d2s[4], kw = s->d2s[5];
  int64_t B = s->block, T = kh * kw, OW = W * kw, M = s->channels;
  for (int64_t r = b; r < e; r++) { /* r = (n, cb, y) */
    int64_t y = r % H, cb = (r / H) % CB, n = r / (H * CB);
    for (int64_t i = 0; i < kh; i++) {
      if (B == 0) {
        float *orow = a->dst + ((n * H * kh + y * kh + i) * OW) * M;
        const float *srow = a->src + ((n * H + y) * W) * T * M;
        for (int64_t x = 0; x < W; x++)
          for (int64_t j = 0; j < kw; j++)
            memcpy(orow + (x * kw + j) * M, srow + x * T * M + (i * kw + j) * M,
                   (size_t)M * sizeof(float));
        continue;
      }
      float *orow = a->dst + (((n * CB + cb) * H * kh + y * kh + i) * OW) * B;
      for (int64_t j = 0; j < kw; j++) {
        const float *src = a->src + (((n * T * CB + (i * kw + j) * CB + cb) * H + y) * W) * B;
        for (int64_t x = 0; x < W; x++)
          memcpy(orow + (x * kw + j) * B, src + x * B, (size_t)B * sizeof(float));
      }
    }
  }
}

static double thread_cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int sq_cpu_program_run(const sq_cpu_program_t *pr, sq_cpu_t *pool, dnnl_stream_t stream,
                       uint8_t *arena, sq_prog_mems_t **cache, const sq_engine_tensor_t *inputs,
                       sq_engine_tensor_t *outputs, int profile, sq_error_t *err) {
  sq_prog_mems_t *m = *cache;
  while (m && m->id != pr->id) m = m->next;
  if (!m) {
    m = calloc(1, sizeof *m);
    if (m) m->mems = calloc((size_t)pr->nbufs + 1, sizeof *m->mems);
    if (!m || !m->mems) {
      free(m);
      return sq_error_set(err, SQ_ENOMEM, "out of memory");
    }
    m->id = pr->id;
    m->n = pr->nbufs;
    for (int b = 0; b < pr->nbufs; b++) {
      if (!pr->bufs[b].has_md) continue;
      dnnl_status_t st =
          dnnl_memory_create(&m->mems[b], &pr->bufs[b].md, pr->engine, DNNL_MEMORY_NONE);
      if (st != dnnl_success) {
        sq_prog_mems_free(m);
        return sq_dnnl_error(err, st, NULL, "memory create");
      }
    }
    m->next = *cache;
    *cache = m;
  }
  for (int b = 0; b < pr->nbufs; b++)
    if (m->mems[b])
      dnnl_memory_set_data_handle(m->mems[b], buf_addr(pr, b, arena, inputs, outputs));
  const sq_graph_t *g = &pr->plan->graph;
  int team = omp_get_max_threads();
  int rc = 0;
  for (int i = 0; i < pr->nsteps && !rc; i++) {
    const sq_step_t *s = &pr->steps[i];
    if (s->threads != team) { /* an ICV write of this thread: no cost */
      team = s->threads;
      omp_set_num_threads(team);
    }
    uint64_t t0 = profile ? sq_clock_mono_us() : 0;
    double c0 = profile ? thread_cpu_ms() : 0;
    const sq_node_t *n = s->node >= 0 ? &g->nodes[s->node] : NULL;
    switch (s->kind) {
      case SQ_STEP_PRIM: {
        dnnl_exec_arg_t args[SQ_STEP_MAX_ARGS];
        for (int k = 0; k < s->nargs; k++) {
          args[k].arg = s->arg[k];
          args[k].memory = m->mems[s->buf[k]];
        }
        dnnl_status_t st = dnnl_primitive_execute(s->prim, stream, s->nargs, args);
        if (st != dnnl_success) rc = sq_dnnl_error(err, st, n, "execute");
        break;
      }
      case SQ_STEP_REF: {
        sq_view_t in[SQ_STEP_MAX_ARGS], out[SQ_STEP_MAX_ARGS];
        memset(in, 0, sizeof in);
        memset(out, 0, sizeof out);
        for (int k = 0; k < s->nref_in; k++) {
          if (n->in[k] < 0) continue;
          sq_view_of(&g->tensors[n->in[k]], NULL, &in[k]);
          in[k].data = buf_addr(pr, s->buf[k], arena, inputs, outputs);
        }
        for (int k = 0; k < s->nref_out; k++) {
          if (n->out[k] < 0) continue;
          sq_view_of(&g->tensors[n->out[k]], NULL, &out[k]);
          out[k].data = buf_addr(pr, s->buf[s->nref_in + k], arena, inputs, outputs);
        }
        rc = sq_op_info(n->op)->cpu(pool, n, in, s->nref_in, out, s->nref_out, err);
        break;
      }
      case SQ_STEP_D2S: {
        d2s_t a = {s, buf_addr(pr, s->buf[0], arena, inputs, outputs),
                   buf_addr(pr, s->buf[1], arena, inputs, outputs)};
        sq_cpu_parallel_for(pool, s->d2s[0] * s->d2s[1] * s->d2s[2], 1, d2s_range, &a);
        break;
      }
      case SQ_STEP_COPY: {
        void *dst = buf_addr(pr, s->buf[1], arena, inputs, outputs);
        const void *src = buf_addr(pr, s->buf[0], arena, inputs, outputs);
        if (dst != src) memcpy(dst, src, pr->bufs[s->buf[1]].bytes);
        break;
      }
    }
    if (profile && !rc) /* wall time, and the calling thread's CPU time (all of it with 1 thread) */
      fprintf(stderr, "engine profile: %-40s %-18s %8.3f ms %8.3f thread-cpu-ms\n",
              n ? n->name : "(graph output)",
              s->kind == SQ_STEP_COPY  ? "copy"
              : s->is_reorder          ? "reorder"
              : s->kind == SQ_STEP_D2S ? "depth-to-space"
                                       : sq_op_info(n->op)->name,
              (double)(sq_clock_mono_us() - t0) / 1000.0, thread_cpu_ms() - c0);
  }
  if (team != pr->backend->threads) omp_set_num_threads(pr->backend->threads);
  return rc;
}

size_t sq_cpu_program_arena_bytes(const sq_cpu_program_t *pr) {
  return pr->arena_bytes;
}

/* ---- what a program is made of (tests, onnx_run --stats) ---- */

static const_dnnl_primitive_desc_t step_pd(const sq_step_t *s) {
  const_dnnl_primitive_desc_t pd = NULL;
  if (s->kind != SQ_STEP_PRIM || !s->prim ||
      dnnl_primitive_get_primitive_desc(s->prim, &pd) != dnnl_success)
    return NULL;
  return pd;
}

static const char *step_impl(const sq_step_t *s) {
  const_dnnl_primitive_desc_t pd = step_pd(s);
  const char *impl = NULL;
  if (!pd || dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success)
    return "";
  return impl ? impl : "";
}

static dnnl_primitive_kind_t step_kind(const sq_step_t *s) {
  const_dnnl_primitive_desc_t pd = step_pd(s);
  dnnl_primitive_kind_t k = dnnl_undefined_primitive;
  if (pd) dnnl_primitive_desc_query(pd, dnnl_query_primitive_kind, 0, &k);
  return k;
}

void sq_cpu_program_stats(const sq_cpu_program_t *pr, sq_cpu_program_stats_t *st) {
  memset(st, 0, sizeof *st);
  const sq_graph_t *g = &pr->plan->graph;
  for (int i = 0; i < pr->nsteps; i++) {
    const sq_step_t *s = &pr->steps[i];
    st->steps++;
    if (s->threads == 1 && pr->backend->threads > 1) st->single_thread++;
    switch (s->kind) {
      case SQ_STEP_REF: {
        int op = g->nodes[s->node].op;
        st->ref_steps++;
        st->ref_by_op[op]++;
        if (op == SQ_OP_Conv || op == SQ_OP_ConvTranspose) st->ref_convs++;
        continue;
      }
      case SQ_STEP_D2S:
        st->d2s++;
        continue;
      case SQ_STEP_COPY:
        st->copies++;
        continue;
      default:
        break;
    }
    st->prims++;
    if (s->is_reorder) {
      st->reorders++;
      const sq_buf_t *from = &pr->bufs[root_of(pr, s->buf[0])];
      const sq_buf_t *to = &pr->bufs[root_of(pr, s->buf[1])];
      if (from->where != SQ_BUF_INPUT && to->where != SQ_BUF_OUTPUT) st->inner_reorders++;
      continue;
    }
    dnnl_primitive_kind_t kind = step_kind(s);
    if (kind == dnnl_convolution || kind == dnnl_deconvolution) {
      const char *impl = step_impl(s);
      if (kind == dnnl_convolution) st->convs++;
      if (kind == dnnl_deconvolution) st->deconvs++;
      if (strstr(impl, "gemm") || strstr(impl, "ref")) st->gemm_convs++;
    }
    const_dnnl_primitive_desc_t pd = step_pd(s);
    const_dnnl_primitive_attr_t attr = NULL;
    const_dnnl_post_ops_t po = NULL;
    if (!pd || dnnl_primitive_desc_get_attr(pd, &attr) != dnnl_success ||
        dnnl_primitive_attr_get_post_ops(attr, &po) != dnnl_success || !po)
      continue;
    for (int k = 0; k < dnnl_post_ops_len(po); k++) {
      dnnl_primitive_kind_t pk = dnnl_post_ops_get_kind(po, k);
      if (pk == dnnl_eltwise) st->fused_eltwise++;
      if (pk == dnnl_sum) st->fused_sum++;
    }
  }
  for (int b = 0; b < pr->nbufs; b++) {
    const sq_buf_t *x = &pr->bufs[b];
    if (x->alias < 0 && x->where == SQ_BUF_ARENA && x->has_md && x->birth >= 0 &&
        !sq_prog_md_is_plain(&x->md))
      st->blocked_bufs++;
  }
}

/* A short name of a layout: dims from outermost to innermost stride, inner blocks after
 * ("acdb" is channels last, "aBcd16b" channel blocks of 16). */
static void md_name(const dnnl_memory_desc_t *md, char *out, size_t cap) {
  if (md->format_kind != dnnl_blocked || md->ndims < 1 || md->ndims > 6) {
    snprintf(out, cap, "%s", md->format_kind == dnnl_blocked ? "?" : "opaque");
    return;
  }
  const dnnl_blocking_desc_t *bk = &md->format_desc.blocking;
  int order[6], nd = md->ndims;
  for (int i = 0; i < nd; i++) order[i] = i;
  for (int i = 1; i < nd; i++) /* stable: by decreasing stride */
    for (int j = i; j > 0 && bk->strides[order[j]] > bk->strides[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  size_t len = 0;
  for (int i = 0; i < nd && len + 1 < cap; i++) {
    bool blocked = false;
    for (int k = 0; k < bk->inner_nblks; k++) blocked = blocked || bk->inner_idxs[k] == order[i];
    out[len++] = (char)((blocked ? 'A' : 'a') + order[i]);
  }
  out[len] = 0;
  for (int k = 0; k < bk->inner_nblks && len + 8 < cap; k++)
    len += (size_t)snprintf(out + len, cap - len, "%lld%c", (long long)bk->inner_blks[k],
                            (char)('a' + bk->inner_idxs[k]));
}

void sq_cpu_program_dump(const sq_cpu_program_t *pr, FILE *f) {
  const sq_graph_t *g = &pr->plan->graph;
  for (int i = 0; i < pr->nsteps; i++) {
    const sq_step_t *s = &pr->steps[i];
    const sq_node_t *n = s->node >= 0 ? &g->nodes[s->node] : NULL;
    const char *kind = s->kind == SQ_STEP_REF    ? "ref"
                       : s->kind == SQ_STEP_D2S  ? "d2s"
                       : s->kind == SQ_STEP_COPY ? "copy"
                       : s->is_reorder           ? "reorder"
                                                 : "prim";
    char layout[48] = "-";
    int out = s->kind == SQ_STEP_PRIM ? -1 : s->kind == SQ_STEP_REF ? s->nref_in : 1;
    for (int k = 0; s->kind == SQ_STEP_PRIM && k < s->nargs; k++)
      if (s->arg[k] == DNNL_ARG_DST) out = k;
    if (out >= 0 && out < s->nargs && s->buf[out] >= 0 && pr->bufs[s->buf[out]].has_md)
      md_name(&pr->bufs[s->buf[out]].md, layout, sizeof layout);
    int npo = 0;
    const_dnnl_primitive_desc_t pd = step_pd(s);
    const_dnnl_primitive_attr_t attr = NULL;
    const_dnnl_post_ops_t po = NULL;
    if (pd && dnnl_primitive_desc_get_attr(pd, &attr) == dnnl_success &&
        dnnl_primitive_attr_get_post_ops(attr, &po) == dnnl_success && po)
      npo = dnnl_post_ops_len(po);
    fprintf(f, "%4d %-8s %-18s %-36s %-26s -> %-10s post-ops %d threads %d\n", i, kind,
            n ? sq_op_info(n->op)->name : "-", n ? n->name : "(graph output)", step_impl(s), layout,
            npo, s->threads);
  }
}
