/* cuda_layout.c: how a plan lives on the device, decided on the host without any CUDA call (so
 * tests check it on machines without a GPU): each node's mode (fp16 NHWC when the plan is fp16
 * and the op's check16 accepts the node, else fp32 NCHW), the buffers (a tensor in a layout),
 * the conversion steps where a tensor is read in the other layout, the residual fusion of a
 * Conv into the Add that consumes it, and the arena by liveness over the steps. Also the host
 * half conversion and the fp16 filter layout the Conv binding uploads. Any thread; no state. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define ALIGN 256

uint16_t sq_cuda_f32_to_f16(float x) {
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  uint32_t sign = (b >> 16) & 0x8000u, a = b & 0x7fffffffu;
  if (a >= 0x7f800000u)
    return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0)); /* inf, NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);              /* rounds past 65504: inf */
  if (a < 0x38800000u) { /* below 2^-14: a subnormal half (or zero), m * 2^-24 */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    if (e < 102) return (uint16_t)sign; /* below half of 2^-24: rounds to 0 */
    uint32_t shift = 126 - e;           /* m * 2^(e-150) = (m >> shift) * 2^-24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t e = (a >> 23) - 112, m = a & 0x7fffffu; /* rebias 127 -> 15 */
  uint32_t q = (e << 10) | (m >> 13), rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++; /* may carry into the exponent: fine */
  return (uint16_t)(sign | q);
}

float sq_cuda_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, b;
  if (e == 0x1f) {
    b = sign | 0x7f800000u | (m << 13);
  } else if (e == 0) {
    float v = (float)m / 16777216.0f; /* m * 2^-24, exact */
    return sign ? -v : v;
  } else {
    b = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

void sq_cuda_filter_nhwc16(const float *w, int64_t k, int64_t c, int64_t kh, int64_t kw, int64_t kp,
                           int64_t cp, uint16_t *out) {
  for (int64_t o = 0; o < kp; o++)
    for (int64_t y = 0; y < kh; y++)
      for (int64_t x = 0; x < kw; x++)
        for (int64_t i = 0; i < cp; i++) {
          float v = o < k && i < c ? w[((o * c + i) * kh + y) * kw + x] : 0.0f;
          out[((o * kh + y) * kw + x) * cp + i] = sq_cuda_f32_to_f16(v);
        }
}

static void view_host(const sq_tensor_t *t, sq_view_t *v) {
  v->dtype = t->dtype;
  v->rank = t->rank < 0 ? 0 : t->rank;
  memcpy(v->dims, t->dims, sizeof v->dims);
  v->data = t->kind == SQ_TENSOR_CONST ? t->data : NULL;
}

void sq_cuda_host_views(const sq_engine_plan_t *p, const sq_node_t *n, sq_view_t *in,
                        sq_view_t *out) {
  const sq_graph_t *g = &p->graph;
  memset(in, 0, sizeof *in * (size_t)(n->nin + 1));
  memset(out, 0, sizeof *out * (size_t)(n->nout + 1));
  for (int k = 0; k < n->nin; k++)
    if (n->in[k] >= 0) view_host(&g->tensors[n->in[k]], &in[k]);
  for (int k = 0; k < n->nout; k++)
    if (n->out[k] >= 0) view_host(&g->tensors[n->out[k]], &out[k]);
}

void sq_cuda_layout_free(sq_cuda_layout_t *l) {
  if (!l) return;
  free(l->steps);
  free(l->bufs);
  free(l->buf_of);
  free(l->out_buf);
  memset(l, 0, sizeof *l);
}

typedef struct {
  const sq_engine_plan_t *p;
  sq_cuda_layout_t *l;
  int cap_bufs, cap_steps;
  int *made_at; /* per buffer: the step that first writes it (-1: before any step) */
} builder_t;

static size_t buf_bytes(const sq_tensor_t *t, int layout, int64_t *cpad) {
  *cpad = 0;
  if (layout == SQ_CUDA_F32 || t->rank != 4) return sq_tensor_bytes(t);
  *cpad = SQ_CUDA_CPAD(t->dims[1]);
  return (size_t)(t->dims[0] * t->dims[2] * t->dims[3] * *cpad) * 2;
}

static int new_buf(builder_t *b, int t, int layout, int where, int made_at) {
  sq_cuda_layout_t *l = b->l;
  if (l->nbufs == b->cap_bufs) {
    int cap = b->cap_bufs ? 2 * b->cap_bufs : 64;
    sq_cuda_buf_t *nb = realloc(l->bufs, (size_t)cap * sizeof *nb);
    int *nm = realloc(b->made_at, (size_t)cap * sizeof *nm);
    if (nb) l->bufs = nb;
    if (nm) b->made_at = nm;
    if (!nb || !nm) return -1;
    b->cap_bufs = cap;
  }
  int id = l->nbufs++;
  sq_cuda_buf_t *u = &l->bufs[id];
  memset(u, 0, sizeof *u);
  u->tensor = t;
  u->layout = layout;
  u->where = where;
  u->bytes = buf_bytes(&b->p->graph.tensors[t], layout, &u->cpad);
  u->first = u->last = -1;
  u->group = id;
  b->made_at[id] = made_at;
  l->buf_of[t * 2 + layout] = id;
  return id;
}

static sq_cuda_step_t *new_step(builder_t *b) {
  sq_cuda_layout_t *l = b->l;
  if (l->nsteps == b->cap_steps) {
    int cap = b->cap_steps ? 2 * b->cap_steps : 64;
    sq_cuda_step_t *ns = realloc(l->steps, (size_t)cap * sizeof *ns);
    if (!ns) return NULL;
    l->steps = ns;
    b->cap_steps = cap;
  }
  sq_cuda_step_t *s = &l->steps[l->nsteps++];
  memset(s, 0, sizeof *s);
  s->fuse_add = s->fused_by = s->zbuf = s->ybuf = -1;
  return s;
}

/* The buffer of tensor t in `layout`, converted from its other layout (a new step) if needed. */
static int buf_in(builder_t *b, int t, int layout) {
  sq_cuda_layout_t *l = b->l;
  const sq_tensor_t *x = &b->p->graph.tensors[t];
  if (x->kind == SQ_TENSOR_CONST) layout = SQ_CUDA_F32; /* constants stay float32 */
  int id = l->buf_of[t * 2 + layout];
  if (id >= 0) return id;
  if (x->kind == SQ_TENSOR_CONST) return new_buf(b, t, SQ_CUDA_F32, SQ_CUDA_BUF_CONST, -1);
  int src = l->buf_of[t * 2 + (1 - layout)];
  if (src < 0) return -1; /* never produced: the plan is inconsistent */
  id = new_buf(b, t, layout, SQ_CUDA_BUF_ARENA, l->nsteps);
  sq_cuda_step_t *s = id < 0 ? NULL : new_step(b);
  if (!s) return -1;
  s->kind = SQ_CUDA_STEP_CONVERT;
  s->src = src;
  s->dst = id;
  l->nconvert++;
  return id;
}

static int same_shape(const sq_tensor_t *a, const sq_tensor_t *b) {
  if (a->rank != b->rank || a->dtype != b->dtype) return 0;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

/* Conv (act none) whose output only feeds an Add of the same mode and shape whose other input
 * already exists: the Conv may write act(conv + bias + z) into the Add's output. */
static void plan_fusions(builder_t *b) {
  const sq_engine_plan_t *p = b->p;
  const sq_graph_t *g = &p->graph;
  sq_cuda_layout_t *l = b->l;
  for (int s = 0; s < l->nsteps; s++) {
    sq_cuda_step_t *cs = &l->steps[s];
    if (cs->kind != SQ_CUDA_STEP_NODE) continue;
    const sq_node_t *c = &g->nodes[p->order[cs->pos]];
    if (c->op != SQ_OP_Conv || c->act != SQ_ACT_NONE || c->nout < 1 || c->out[0] < 0) continue;
    int t = c->out[0];
    if (g->tensors[t].is_output || sq_graph_use_count(g, t) != 1) continue;
    for (int s2 = s + 1; s2 < l->nsteps; s2++) {
      sq_cuda_step_t *as = &l->steps[s2];
      if (as->kind != SQ_CUDA_STEP_NODE) continue;
      const sq_node_t *a = &g->nodes[p->order[as->pos]];
      int reads = 0;
      for (int k = 0; k < a->nin; k++) reads += a->in[k] == t;
      if (!reads) continue;
      /* the one consumer: an Add of two different inputs in the same mode */
      if (a->op != SQ_OP_Add || a->nin != 2 || reads != 1 || as->mode != cs->mode ||
          (a->act != SQ_ACT_NONE && a->act != SQ_ACT_RELU) || a->nout != 1 || a->out[0] < 0)
        break;
      int z = a->in[0] == t ? a->in[1] : a->in[0];
      if (z < 0 || g->tensors[z].kind == SQ_TENSOR_CONST ||
          !same_shape(&g->tensors[z], &g->tensors[t]) ||
          !same_shape(&g->tensors[a->out[0]], &g->tensors[t]))
        break;
      int zb = l->buf_of[z * 2 + cs->mode], yb = l->buf_of[a->out[0] * 2 + cs->mode];
      if (zb < 0 || yb < 0 || b->made_at[zb] >= s) break; /* z must exist before the Conv */
      /* The Add may write over z in place (the engine's choice): then the Conv would read z
       * while writing it; keep them apart by not fusing. */
      int yr = g->tensors[a->out[0]].alias, zr = g->tensors[z].alias;
      if ((yr >= 0 ? yr : a->out[0]) == (zr >= 0 ? zr : z)) break;
      cs->fuse_add = s2;
      cs->zbuf = zb;
      cs->ybuf = yb;
      cs->act = a->act;
      as->fused_by = s;
      l->nfused++;
      break;
    }
  }
}

static void use(sq_cuda_buf_t *u, int step) {
  if (u->first < 0 || step < u->first) u->first = step;
  if (step > u->last) u->last = step;
}

static int root(const sq_cuda_layout_t *l, int id) {
  while (l->bufs[id].group != id) id = l->bufs[id].group;
  return id;
}

/* Lifetimes over the steps, the engine's alias groups where layouts agree, greedy placement. */
static int plan_arena(builder_t *b, sq_error_t *err) {
  const sq_engine_plan_t *p = b->p;
  const sq_graph_t *g = &p->graph;
  sq_cuda_layout_t *l = b->l;
  for (int s = 0; s < l->nsteps; s++) {
    sq_cuda_step_t *st = &l->steps[s];
    if (st->kind == SQ_CUDA_STEP_CONVERT) {
      use(&l->bufs[st->src], s);
      use(&l->bufs[st->dst], s);
      continue;
    }
    const sq_node_t *n = &g->nodes[p->order[st->pos]];
    for (int k = 0; k < n->nin; k++) {
      if (n->in[k] < 0) continue;
      int id = l->buf_of[n->in[k] * 2 +
                         (g->tensors[n->in[k]].kind == SQ_TENSOR_CONST ? SQ_CUDA_F32 : st->mode)];
      if (id >= 0) use(&l->bufs[id], s);
    }
    for (int k = 0; k < n->nout; k++)
      if (n->out[k] >= 0 && l->buf_of[n->out[k] * 2 + st->mode] >= 0)
        use(&l->bufs[l->buf_of[n->out[k] * 2 + st->mode]], s);
    if (st->fuse_add >= 0) {
      use(&l->bufs[st->zbuf], s);
      use(&l->bufs[st->ybuf], s);
    }
  }
  for (int i = 0; i < g->noutputs; i++)
    if (l->out_buf[i] >= 0) use(&l->bufs[l->out_buf[i]], l->nsteps);
  /* Views and in-place outputs share their root's block when both live in the arena in the
   * same layout (the engine decided they may). */
  for (int t = 0; t < g->ntensors; t++) {
    int r = g->tensors[t].alias;
    if (r < 0) continue;
    for (int lay = 0; lay < 2; lay++) {
      int a = l->buf_of[t * 2 + lay], c = l->buf_of[r * 2 + lay];
      if (a < 0 || c < 0 || l->bufs[a].where != SQ_CUDA_BUF_ARENA ||
          l->bufs[c].where != SQ_CUDA_BUF_ARENA || l->bufs[a].bytes != l->bufs[c].bytes)
        continue;
      l->bufs[root(l, a)].group = root(l, c);
    }
  }
  int n = l->nbufs;
  int *first = malloc((size_t)(n + 1) * sizeof *first),
      *last = malloc((size_t)(n + 1) * sizeof *last);
  int *order = malloc((size_t)(n + 1) * sizeof *order);
  if (!first || !last || !order) {
    free(first);
    free(last);
    free(order);
    return sq_error_set(err, SQ_ENOMEM, "cuda: out of memory planning the arena");
  }
  int nroots = 0;
  for (int i = 0; i < n; i++) first[i] = last[i] = -1;
  for (int i = 0; i < n; i++) {
    sq_cuda_buf_t *u = &l->bufs[i];
    if (u->where != SQ_CUDA_BUF_ARENA || u->first < 0) continue;
    int r = root(l, i);
    u->group = r;
    if (first[r] < 0 || u->first < first[r]) first[r] = u->first;
    if (u->last > last[r]) last[r] = u->last;
  }
  for (int i = 0; i < n; i++)
    if (l->bufs[i].where == SQ_CUDA_BUF_ARENA && l->bufs[i].group == i && first[i] >= 0)
      order[nroots++] = i;
  for (int a = 1; a < nroots; a++) { /* by size, descending */
    int x = order[a], k = a - 1;
    while (k >= 0 && l->bufs[order[k]].bytes < l->bufs[x].bytes) {
      order[k + 1] = order[k];
      k--;
    }
    order[k + 1] = x;
  }
  size_t total = 0;
  for (int a = 0; a < nroots; a++) {
    int x = order[a];
    size_t size = (l->bufs[x].bytes + ALIGN - 1) / ALIGN * ALIGN, off = 0;
    for (int moved = 1; moved;) {
      moved = 0;
      for (int k = 0; k < a; k++) {
        int o = order[k];
        if (last[o] < first[x] || first[o] > last[x]) continue;
        size_t osz = (l->bufs[o].bytes + ALIGN - 1) / ALIGN * ALIGN, ooff = l->bufs[o].offset;
        if (off < ooff + osz && ooff < off + size) {
          off = ooff + osz;
          moved = 1;
        }
      }
    }
    l->bufs[x].offset = off;
    if (off + size > total) total = off + size;
  }
  for (int i = 0; i < n; i++)
    if (l->bufs[i].where == SQ_CUDA_BUF_ARENA) l->bufs[i].offset = l->bufs[l->bufs[i].group].offset;
  l->arena_bytes = total;
  free(first);
  free(last);
  free(order);
  return 0;
}

int sq_cuda_layout_plan(const sq_engine_plan_t *p, int precision, sq_cuda_layout_t *out,
                        sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  memset(out, 0, sizeof *out);
  out->precision = precision;
  builder_t b = {.p = p, .l = out};
  out->buf_of = malloc(((size_t)g->ntensors + 1) * 2 * sizeof *out->buf_of);
  out->out_buf = malloc(((size_t)g->noutputs + 1) * sizeof *out->out_buf);
  int rc = out->buf_of && out->out_buf ? 0 : SQ_ENOMEM;
  for (int i = 0; !rc && i < g->ntensors * 2; i++) out->buf_of[i] = -1;
  for (int i = 0; !rc && i < p->ninputs; i++)
    if (new_buf(&b, p->inputs[i], SQ_CUDA_F32, SQ_CUDA_BUF_INPUT, -1) < 0) rc = SQ_ENOMEM;
  for (int i = 0; !rc && i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    const sq_cuda_op_t *op = sq_cuda_op(n->op);
    int mode = SQ_CUDA_F32;
    if (precision == SQ_PRECISION_FP16 && op && op->check16) {
      sq_view_t in[n->nin + 1], outv[n->nout + 1];
      sq_cuda_host_views(p, n, in, outv);
      if (op->check16(n, in, outv) == 0) mode = SQ_CUDA_F16;
    }
    for (int k = 0; k < n->nin && !rc; k++)
      if (n->in[k] >= 0 && buf_in(&b, n->in[k], mode) < 0) rc = SQ_ENOMEM;
    int at = out->nsteps;
    for (int k = 0; k < n->nout && !rc; k++)
      if (n->out[k] >= 0 && g->tensors[n->out[k]].kind == SQ_TENSOR_ACT &&
          new_buf(&b, n->out[k], mode, SQ_CUDA_BUF_ARENA, at) < 0)
        rc = SQ_ENOMEM;
    sq_cuda_step_t *s = rc ? NULL : new_step(&b);
    if (!rc && !s) rc = SQ_ENOMEM;
    if (s) {
      s->kind = SQ_CUDA_STEP_NODE;
      s->pos = i;
      s->mode = mode;
      out->nf16 += mode == SQ_CUDA_F16;
    }
  }
  /* graph outputs come back as float32 NCHW */
  for (int i = 0; !rc && i < g->noutputs; i++) {
    out->out_buf[i] = buf_in(&b, g->outputs[i], SQ_CUDA_F32);
    if (out->out_buf[i] < 0) rc = SQ_ENOMEM;
  }
  if (!rc) plan_fusions(&b);
  if (!rc) rc = plan_arena(&b, err);
  free(b.made_at);
  if (rc) {
    sq_cuda_layout_free(out);
    return rc == SQ_ENOMEM ? sq_error_set(err, SQ_ENOMEM, "cuda: out of memory planning layouts")
                           : rc;
  }
  return 0;
}

int sq_cuda_layout_info(const sq_engine_plan_t *p, int precision, sq_cuda_layout_info_t *out,
                        sq_error_t *err) {
  sq_cuda_layout_t l;
  memset(out, 0, sizeof *out);
  int rc = sq_cuda_layout_plan(p, precision, &l, err);
  if (rc) return rc;
  out->steps = l.nsteps;
  out->fp16_nodes = l.nf16;
  out->conversions = l.nconvert;
  out->fusions = l.nfused;
  out->arena_bytes = l.arena_bytes;
  /* every pair of arena buffers that may hold different values at once must not overlap */
  for (int a = 0; a < l.nbufs; a++)
    for (int b = a + 1; b < l.nbufs; b++) {
      const sq_cuda_buf_t *x = &l.bufs[a], *y = &l.bufs[b];
      if (x->where != SQ_CUDA_BUF_ARENA || y->where != SQ_CUDA_BUF_ARENA || x->first < 0 ||
          y->first < 0 || x->group == y->group || x->last < y->first || y->last < x->first)
        continue;
      if (x->offset < y->offset + y->bytes && y->offset < x->offset + x->bytes) out->overlaps++;
      if (x->offset + x->bytes > l.arena_bytes) out->overlaps++;
    }
  sq_cuda_layout_free(&l);
  return 0;
}
