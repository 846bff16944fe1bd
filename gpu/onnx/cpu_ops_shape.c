/* cpu_ops_shape.c: data movement ops: Transpose, DepthToSpace/SpaceToDepth (as transposes of a
 * reshaped view), Expand, Tile, Pad (constant/reflect/edge), Split and Upsample.
 * Any element type (copied by size), since shape chains run some of them on int64.
 * Executor thread; output rows fan out over the pool. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

static inline void copy_elem(char *dst, const char *src, size_t es) {
  switch (es) {
    case 4:
      memcpy(dst, src, 4);
      break;
    case 8:
      memcpy(dst, src, 8);
      break;
    case 1:
      *dst = *src;
      break;
    default:
      memcpy(dst, src, es);
  }
}

/* ---- strided gather: dst (dense, dims odims) from src at sum(idx[d] * st[d]) ----
 * The workhorse of Transpose, DepthToSpace, SpaceToDepth and Expand (stride 0 = broadcast). */
typedef struct {
  const char *src;
  char *dst;
  size_t es;
  int rank;
  int64_t odims[SQ_MAX_DIMS], st[SQ_MAX_DIMS];
} gather_t;

static void gather_rows(void *arg, int64_t b, int64_t e) {
  const gather_t *g = arg;
  int r = g->rank;
  int64_t inner = g->odims[r - 1], s = g->st[r - 1];
  for (int64_t row = b; row < e; row++) {
    int64_t rem = row, off = 0;
    for (int d = r - 2; d >= 0; d--) {
      off += (rem % g->odims[d]) * g->st[d];
      rem /= g->odims[d];
    }
    char *dst = g->dst + (size_t)(row * inner) * g->es;
    const char *src = g->src + (size_t)off * g->es;
    if (s == 1) {
      memcpy(dst, src, (size_t)inner * g->es);
    } else if (g->es == 4) {
      for (int64_t i = 0; i < inner; i++) memcpy(dst + 4 * i, src + (size_t)(i * s) * 4, 4);
    } else {
      for (int64_t i = 0; i < inner; i++)
        copy_elem(dst + (size_t)i * g->es, src + (size_t)(i * s) * g->es, g->es);
    }
  }
}

static void gather_run(sq_cpu_t *cpu, gather_t *g) {
  int64_t n = 1;
  if (g->rank == 0) {
    copy_elem(g->dst, g->src, g->es);
    return;
  }
  for (int d = 0; d < g->rank; d++) n *= g->odims[d];
  int64_t inner = g->odims[g->rank - 1];
  if (n == 0) return;
  sq_cpu_parallel_for(cpu, n / inner, 1 + (1 << 13) / (inner + 1), gather_rows, g);
}

/* Copies src (dims, rank) permuted by perm into dense dst. */
static void permute(sq_cpu_t *cpu, const void *src, void *dst, size_t es, int rank,
                    const int64_t *dims, const int *perm) {
  gather_t g = {.src = src, .dst = dst, .es = es, .rank = rank};
  int64_t st[SQ_MAX_DIMS], s = 1;
  for (int d = rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= dims[d];
  }
  for (int d = 0; d < rank; d++) {
    g.odims[d] = dims[perm[d]];
    g.st[d] = st[perm[d]];
  }
  gather_run(cpu, &g);
}

/* ---- Transpose ---- */
static int transpose_perm(const sq_node_t *node, int rank, int *perm, sq_error_t *err) {
  const int64_t *p;
  size_t n = sq_attr_ints(node, "perm", &p);
  bool seen[SQ_MAX_DIMS] = {false};
  if (n && n != (size_t)rank) return sq_node_error(err, SQ_EMODEL_LOAD, node, "perm length");
  for (int d = 0; d < rank; d++) {
    int a = n ? sq_axis(p[d], rank) : rank - 1 - d;
    if (a < 0 || seen[a]) return sq_node_error(err, SQ_EMODEL_LOAD, node, "bad perm");
    seen[a] = true;
    perm[d] = a;
  }
  return 0;
}

SQ_SHAPE_FN(sq_shape_transpose) {
  (void)nin, (void)nout;
  int perm[SQ_MAX_DIMS];
  int rc = transpose_perm(node, in[0].rank, perm, err);
  if (rc) return rc;
  if (!sq_dtype_size(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  out[0] = in[0];
  out[0].data = NULL;
  for (int d = 0; d < in[0].rank; d++) out[0].dims[d] = in[0].dims[perm[d]];
  return 0;
}

SQ_KERNEL_FN(sq_kern_transpose) {
  (void)nin, (void)nout;
  int perm[SQ_MAX_DIMS];
  int rc = transpose_perm(node, in[0].rank, perm, err);
  if (rc) return rc;
  permute(cpu, in[0].data, out[0].data, sq_dtype_size(in[0].dtype), in[0].rank, in[0].dims, perm);
  return 0;
}

/* ---- DepthToSpace / SpaceToDepth ---- */
static int block_size(const sq_node_t *node, const sq_view_t *x, sq_error_t *err) {
  int64_t b = sq_attr_int(node, "blocksize", 0);
  if (x->rank != 4) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %d", x->rank);
  if (b < 1 || b > 1 << 16) return sq_node_error(err, SQ_EMODEL_LOAD, node, "blocksize");
  if (!sq_dtype_size(x->dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(x->dtype));
  return (int)b;
}

SQ_SHAPE_FN(sq_shape_depthtospace) {
  (void)nin, (void)nout;
  int b = block_size(node, &in[0], err);
  if (b < 0) return b;
  const char *mode = sq_attr_string(node, "mode", "DCR");
  if (strcmp(mode, "DCR") != 0 && strcmp(mode, "CRD") != 0)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "mode %s", mode);
  if (in[0].dims[1] % ((int64_t)b * b))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "channels not divisible by blocksize^2");
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dims[1] /= (int64_t)b * b;
  out[0].dims[2] *= b;
  out[0].dims[3] *= b;
  return 0;
}

SQ_KERNEL_FN(sq_kern_depthtospace) {
  (void)nin, (void)nout, (void)err;
  int64_t b = sq_attr_int(node, "blocksize", 0);
  const int64_t *x = in[0].dims;
  int64_t n = x[0], c = x[1] / (b * b), h = x[2], w = x[3];
  bool crd = strcmp(sq_attr_string(node, "mode", "DCR"), "CRD") == 0;
  int64_t dims[6];
  int perm[6];
  if (crd) { /* [n, c, b, b, h, w] -> [n, c, h, b, w, b] */
    int64_t d[6] = {n, c, b, b, h, w};
    int p[6] = {0, 1, 4, 2, 5, 3};
    memcpy(dims, d, sizeof d), memcpy(perm, p, sizeof p);
  } else { /* [n, b, b, c, h, w] -> [n, c, h, b, w, b] */
    int64_t d[6] = {n, b, b, c, h, w};
    int p[6] = {0, 3, 4, 1, 5, 2};
    memcpy(dims, d, sizeof d), memcpy(perm, p, sizeof p);
  }
  permute(cpu, in[0].data, out[0].data, sq_dtype_size(in[0].dtype), 6, dims, perm);
  return 0;
}

SQ_SHAPE_FN(sq_shape_spacetodepth) {
  (void)nin, (void)nout;
  int b = block_size(node, &in[0], err);
  if (b < 0) return b;
  if (in[0].dims[2] % b || in[0].dims[3] % b)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "spatial dims not divisible by blocksize");
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dims[1] *= (int64_t)b * b;
  out[0].dims[2] /= b;
  out[0].dims[3] /= b;
  return 0;
}

SQ_KERNEL_FN(sq_kern_spacetodepth) {
  (void)nin, (void)nout, (void)err;
  int64_t b = sq_attr_int(node, "blocksize", 0);
  const int64_t *x = in[0].dims;
  /* [n, c, h/b, b, w/b, b] -> [n, b, b, c, h/b, w/b] */
  int64_t dims[6] = {x[0], x[1], x[2] / b, b, x[3] / b, b};
  int perm[6] = {0, 3, 5, 1, 2, 4};
  permute(cpu, in[0].data, out[0].data, sq_dtype_size(in[0].dtype), 6, dims, perm);
  return 0;
}

/* ---- Expand: bidirectional broadcast of X with the constant `shape` ---- */
SQ_SHAPE_FN(sq_shape_expand) {
  (void)nout;
  if (nin < 2 || !in[1].data)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "shape must be constant at plan time");
  if (!sq_dtype_size(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  int64_t r = sq_view_numel(&in[1]);
  if (r > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %lld", (long long)r);
  sq_view_t s = {.rank = (int)r};
  for (int d = 0; d < r; d++) s.dims[d] = sq_view_get_int(&in[1], d);
  if (sq_broadcast_shape(&in[0], &s, &out[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "shape does not broadcast");
  out[0].dtype = in[0].dtype;
  out[0].data = NULL;
  return 0;
}

SQ_KERNEL_FN(sq_kern_expand) {
  (void)node, (void)nin, (void)nout, (void)err;
  gather_t g = {
      .src = in[0].data, .dst = out[0].data, .es = sq_dtype_size(in[0].dtype), .rank = out[0].rank};
  memcpy(g.odims, out[0].dims, sizeof g.odims);
  sq_broadcast_strides(&in[0], &out[0], g.st);
  gather_run(cpu, &g);
  return 0;
}

/* ---- Tile: out dim d = in dim d * repeats[d] ---- */
SQ_SHAPE_FN(sq_shape_tile) {
  (void)nout;
  if (nin < 2 || !in[1].data)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "repeats must be constant at plan time");
  if (!sq_dtype_size(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  if (sq_view_numel(&in[1]) != in[0].rank)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "repeats length");
  out[0] = in[0];
  out[0].data = NULL;
  for (int d = 0; d < in[0].rank; d++) {
    int64_t rep = sq_view_get_int(&in[1], d);
    if (rep < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "negative repeat");
    int64_t dim;
    /* a corrupt repeats value must not wrap the size (onnx_mutate seed 2) */
    if (__builtin_mul_overflow(out[0].dims[d], rep, &dim) || dim > (INT64_C(1) << 40))
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "repeats[%d] = %lld overflows the dim", d,
                           (long long)rep);
    out[0].dims[d] = dim;
  }
  return 0;
}

typedef struct {
  const sq_view_t *x, *y;
  size_t es;
} tile_t;

static void tile_rows(void *arg, int64_t b, int64_t e) {
  const tile_t *t = arg;
  int r = t->y->rank;
  int64_t inner = t->y->dims[r - 1], xin = t->x->dims[r - 1];
  for (int64_t row = b; row < e; row++) {
    int64_t rem = row, off = 0, s = xin;
    for (int d = r - 2; d >= 0; d--) {
      off += (rem % t->y->dims[d]) % t->x->dims[d] * s;
      rem /= t->y->dims[d];
      s *= t->x->dims[d];
    }
    char *dst = (char *)t->y->data + (size_t)(row * inner) * t->es;
    const char *src = (const char *)t->x->data + (size_t)off * t->es;
    for (int64_t i = 0; i < inner; i += xin)
      memcpy(dst + (size_t)i * t->es, src, (size_t)xin * t->es);
  }
}

SQ_KERNEL_FN(sq_kern_tile) {
  (void)node, (void)nin, (void)nout, (void)err;
  tile_t t = {&in[0], &out[0], sq_dtype_size(in[0].dtype)};
  int64_t n = sq_view_numel(&out[0]);
  if (n == 0) return 0;
  if (out[0].rank == 0) {
    memcpy(out[0].data, in[0].data, t.es);
    return 0;
  }
  int64_t inner = out[0].dims[out[0].rank - 1];
  sq_cpu_parallel_for(cpu, n / inner, 1 + (1 << 13) / (inner + 1), tile_rows, &t);
  return 0;
}

/* ---- Pad: pads as attribute (opset < 11) or input 1, constant value as attribute `value`
 * or input 2, axes as input 3 (opset 18); negative pads crop ---- */
enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE };

static int pad_params(const sq_node_t *node, const sq_view_t *in, int nin, int64_t *begin,
                      int64_t *end, int *mode, sq_error_t *err) {
  int rank = in[0].rank;
  int64_t pads[2 * SQ_MAX_DIMS];
  int np;
  const char *m = sq_attr_string(node, "mode", "constant");
  if (strcmp(m, "constant") == 0)
    *mode = PAD_CONSTANT;
  else if (strcmp(m, "reflect") == 0)
    *mode = PAD_REFLECT;
  else if (strcmp(m, "edge") == 0)
    *mode = PAD_EDGE;
  else
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "mode %s", m);
  if (node->opset < 11) {
    const int64_t *p;
    size_t n = sq_attr_ints(node, "pads", &p);
    if (n == 0) n = sq_attr_ints(node, "paddings", &p); /* opset 1 name */
    if (n > 2 * SQ_MAX_DIMS) return sq_node_error(err, SQ_EMODEL_LOAD, node, "pads length");
    np = (int)n;
    for (int i = 0; i < np; i++) pads[i] = p[i];
  } else {
    if (nin < 2 || !in[1].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "pads must be constant at plan time");
    int64_t n = sq_view_numel(&in[1]);
    if (n > 2 * SQ_MAX_DIMS) return sq_node_error(err, SQ_EMODEL_LOAD, node, "pads length");
    np = (int)n;
    for (int i = 0; i < np; i++) pads[i] = sq_view_get_int(&in[1], i);
  }
  int axes[SQ_MAX_DIMS], naxes = rank;
  for (int d = 0; d < rank; d++) axes[d] = d;
  if (nin > 3 && sq_view_present(&in[3])) {
    if (!in[3].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "axes must be constant at plan time");
    naxes = (int)sq_view_numel(&in[3]);
    if (naxes > rank) return sq_node_error(err, SQ_EMODEL_LOAD, node, "too many axes");
    for (int i = 0; i < naxes; i++) {
      axes[i] = sq_axis(sq_view_get_int(&in[3], i), rank);
      if (axes[i] < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
    }
  }
  if (np != 2 * naxes) return sq_node_error(err, SQ_EMODEL_LOAD, node, "pads length %d", np);
  for (int d = 0; d < rank; d++) begin[d] = end[d] = 0;
  for (int i = 0; i < naxes; i++) {
    begin[axes[i]] = pads[i];
    end[axes[i]] = pads[i + naxes];
  }
  for (int d = 0; d < rank; d++) {
    int64_t o = in[0].dims[d] + begin[d] + end[d];
    if (o < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "pads crop past the input");
    if (*mode != PAD_CONSTANT && o > 0 && in[0].dims[d] == 0)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "%s pad of an empty axis", m);
  }
  return 0;
}

SQ_SHAPE_FN(sq_shape_pad) {
  (void)nout;
  if (!sq_dtype_size(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  if (nin > 2 && sq_view_present(&in[2]) && in[2].dtype != in[0].dtype)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "constant_value type");
  int64_t b[SQ_MAX_DIMS], e[SQ_MAX_DIMS];
  int mode;
  int rc = pad_params(node, in, nin, b, e, &mode, err);
  if (rc) return rc;
  out[0] = in[0];
  out[0].data = NULL;
  for (int d = 0; d < in[0].rank; d++) out[0].dims[d] += b[d] + e[d];
  return 0;
}

typedef struct {
  const sq_view_t *x, *y;
  int64_t begin[SQ_MAX_DIMS];
  int mode;
  size_t es;
  char value[8]; /* the constant, in the element type */
} pad_t;

/* Source index of output index o along an axis of n input elements, or -1 (constant). */
static inline int64_t pad_src(int64_t o, int64_t begin, int64_t n, int mode) {
  int64_t i = o - begin;
  if (i >= 0 && i < n) return i;
  if (mode == PAD_CONSTANT) return -1;
  if (mode == PAD_EDGE) return i < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  /* reflect without repeating the edge: period 2n - 2 */
  int64_t p = 2 * n - 2;
  i %= p;
  if (i < 0) i += p;
  return i < n ? i : p - i;
}

static void pad_rows(void *arg, int64_t b, int64_t e) {
  const pad_t *a = arg;
  int r = a->y->rank;
  int64_t w = a->y->dims[r - 1], xw = a->x->dims[r - 1];
  size_t es = a->es;
  for (int64_t row = b; row < e; row++) {
    int64_t rem = row, off = 0, s = xw;
    bool fill = false;
    for (int d = r - 2; d >= 0; d--) {
      int64_t i = pad_src(rem % a->y->dims[d], a->begin[d], a->x->dims[d], a->mode);
      rem /= a->y->dims[d];
      if (i < 0) fill = true;
      off += i * s;
      s *= a->x->dims[d];
    }
    char *dst = (char *)a->y->data + (size_t)(row * w) * es;
    /* a filled row may have no source row at all (offsets are then meaningless) */
    const char *src = fill ? a->value : (const char *)a->x->data + (size_t)off * es;
    for (int64_t o = 0; o < w; o++) {
      int64_t i = fill ? -1 : pad_src(o, a->begin[r - 1], xw, a->mode);
      copy_elem(dst + (size_t)o * es, i < 0 ? a->value : src + (size_t)i * es, es);
    }
  }
}

SQ_KERNEL_FN(sq_kern_pad) {
  (void)nout;
  pad_t a = {.x = &in[0], .y = &out[0], .es = sq_dtype_size(in[0].dtype)};
  int64_t e[SQ_MAX_DIMS];
  int rc = pad_params(node, in, nin, a.begin, e, &a.mode, err);
  if (rc) return rc;
  memset(a.value, 0, sizeof a.value);
  if (nin > 2 && sq_view_present(&in[2]) && in[2].data)
    memcpy(a.value, in[2].data, a.es);
  else if (node->opset < 11 && in[0].dtype == SQ_DT_FLOAT) {
    float v = sq_attr_float(node, "value", 0.0f);
    memcpy(a.value, &v, sizeof v);
  }
  int64_t n = sq_view_numel(&out[0]);
  if (n == 0) return 0;
  if (out[0].rank == 0) {
    memcpy(out[0].data, in[0].data, a.es);
    return 0;
  }
  int64_t w = out[0].dims[out[0].rank - 1];
  sq_cpu_parallel_for(cpu, n / w, 1 + (1 << 13) / (w + 1), pad_rows, &a);
  return 0;
}

/* ---- Split: sizes from the attribute (opset < 13), input 1 (13+), or equal parts
 * (num_outputs in 18: the last part may be smaller) ---- */
static int split_sizes(const sq_node_t *node, const sq_view_t *in, int nin, int nout, int axis,
                       int64_t *sizes, sq_error_t *err) {
  int64_t n = in[0].dims[axis], total = 0;
  if (nin > 1 && sq_view_present(&in[1])) {
    if (!in[1].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "split must be constant at plan time");
    if (sq_view_numel(&in[1]) != nout)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "split length");
    for (int k = 0; k < nout; k++) sizes[k] = sq_view_get_int(&in[1], k);
  } else {
    const int64_t *s;
    size_t ns = sq_attr_ints(node, "split", &s);
    if (ns) {
      if (ns != (size_t)nout) return sq_node_error(err, SQ_EMODEL_LOAD, node, "split length");
      for (int k = 0; k < nout; k++) sizes[k] = s[k];
    } else {
      int64_t part = (n + nout - 1) / nout; /* ceil; equal when it divides */
      if (node->opset < 18 && n % nout)
        return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis not divisible into %d", nout);
      for (int k = 0; k < nout; k++) {
        int64_t left = n - part * k;
        sizes[k] = left < 0 ? 0 : left < part ? left : part;
      }
    }
  }
  for (int k = 0; k < nout; k++) {
    if (sizes[k] < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "negative split");
    total += sizes[k];
  }
  if (total != n)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "split sums to %lld, axis %lld",
                         (long long)total, (long long)n);
  return 0;
}

SQ_SHAPE_FN(sq_shape_split) {
  if (nout < 1) return sq_node_error(err, SQ_EMODEL_LOAD, node, "no outputs");
  if (nout > SQ_MAX_NODE_IO) return sq_node_error(err, SQ_EUNSUPPORTED, node, "outputs");
  if (!sq_dtype_size(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  int64_t sizes[nout];
  int rc = split_sizes(node, in, nin, nout, axis, sizes, err);
  if (rc) return rc;
  for (int k = 0; k < nout; k++) {
    out[k] = in[0];
    out[k].data = NULL;
    out[k].dims[axis] = sizes[k];
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_split) {
  (void)cpu;
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  int64_t sizes[nout];
  int rc = split_sizes(node, in, nin, nout, axis, sizes, err);
  if (rc) return rc;
  size_t es = sq_dtype_size(in[0].dtype), inner = es;
  int64_t outer = 1;
  for (int d = 0; d < axis; d++) outer *= in[0].dims[d];
  for (int d = axis + 1; d < in[0].rank; d++) inner *= (size_t)in[0].dims[d];
  const char *src = in[0].data;
  size_t in_row = (size_t)in[0].dims[axis] * inner;
  size_t at = 0;
  for (int k = 0; k < nout; k++) {
    size_t row = (size_t)sizes[k] * inner;
    if (out[k].data)
      for (int64_t o = 0; o < outer; o++)
        memcpy((char *)out[k].data + (size_t)o * row, src + (size_t)o * in_row + at, row);
    at += row;
  }
  return 0;
}

/* ---- Upsample (deprecated; opset 7: scales attribute, 9: input): nearest (Resize's
 * asymmetric/floor nearest) on any axes, linear (asymmetric) on the last two ---- */
static int upsample_scales(const sq_node_t *node, const sq_view_t *in, int nin, float *scales,
                           sq_error_t *err) {
  int rank = in[0].rank;
  if (nin > 1 && sq_view_present(&in[1])) {
    if (!in[1].data || in[1].dtype != SQ_DT_FLOAT)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "scales must be constant float");
    if (sq_view_numel(&in[1]) != rank)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "scales length");
    for (int d = 0; d < rank; d++) scales[d] = ((const float *)in[1].data)[d];
  } else {
    const float *s;
    size_t n = sq_attr_floats(node, "scales", &s);
    if (n == 0 && node->opset < 7) {
      /* opset 1: width_scale/height_scale on NCHW */
      if (rank != 4) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %d", rank);
      scales[0] = scales[1] = 1.0f;
      scales[2] = sq_attr_float(node, "height_scale", 1.0f);
      scales[3] = sq_attr_float(node, "width_scale", 1.0f);
      return 0;
    }
    if (n != (size_t)rank) return sq_node_error(err, SQ_EMODEL_LOAD, node, "scales length");
    for (int d = 0; d < rank; d++) scales[d] = s[d];
  }
  for (int d = 0; d < rank; d++)
    if (!(scales[d] > 0)) return sq_node_error(err, SQ_EMODEL_LOAD, node, "scale <= 0");
  return 0;
}

SQ_SHAPE_FN(sq_shape_upsample) {
  (void)nout;
  const char *mode = sq_attr_string(node, "mode", "nearest");
  bool linear = strcmp(mode, "linear") == 0 || strcmp(mode, "bilinear") == 0;
  if (strcmp(mode, "nearest") != 0 && !linear)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "mode %s", mode);
  if (!sq_dtype_size(in[0].dtype) || (linear && in[0].dtype != SQ_DT_FLOAT))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  float scales[SQ_MAX_DIMS];
  int rc = upsample_scales(node, in, nin, scales, err);
  if (rc) return rc;
  if (linear) { /* bilinear on the last two axes only */
    if (in[0].rank < 2) return sq_node_error(err, SQ_EUNSUPPORTED, node, "linear of rank < 2");
    for (int d = 0; d < in[0].rank - 2; d++)
      if (scales[d] != 1.0f)
        return sq_node_error(err, SQ_EUNSUPPORTED, node, "linear scale on axis %d", d);
  }
  out[0] = in[0];
  out[0].data = NULL;
  for (int d = 0; d < in[0].rank; d++)
    out[0].dims[d] = (int64_t)floorf((float)in[0].dims[d] * scales[d]);
  return 0;
}

typedef struct {
  const sq_view_t *x, *y;
  float scales[SQ_MAX_DIMS];
  size_t es;
} upsample_t;

static inline int64_t nearest_src(int64_t o, float scale, int64_t n) {
  int64_t i = (int64_t)floorf((float)o / scale);
  return i < n ? i : n - 1;
}

static void upsample_rows(void *arg, int64_t b, int64_t e) {
  const upsample_t *u = arg;
  int r = u->y->rank;
  int64_t w = u->y->dims[r - 1], xw = u->x->dims[r - 1];
  for (int64_t row = b; row < e; row++) {
    int64_t rem = row, off = 0, s = xw;
    for (int d = r - 2; d >= 0; d--) {
      off += nearest_src(rem % u->y->dims[d], u->scales[d], u->x->dims[d]) * s;
      rem /= u->y->dims[d];
      s *= u->x->dims[d];
    }
    char *dst = (char *)u->y->data + (size_t)(row * w) * u->es;
    const char *src = (const char *)u->x->data + (size_t)off * u->es;
    for (int64_t o = 0; o < w; o++)
      copy_elem(dst + (size_t)o * u->es, src + (size_t)nearest_src(o, u->scales[r - 1], xw) * u->es,
                u->es);
  }
}

/* linear: asymmetric source coordinate out / scale, clamped at the last input element */
static void linear_coord(int64_t o, float scale, int64_t n, int64_t *i0, int64_t *i1, float *f) {
  float c = (float)o / scale;
  int64_t i = (int64_t)floorf(c);
  if (i > n - 1) i = n - 1;
  *i0 = i;
  *i1 = i + 1 < n ? i + 1 : n - 1;
  *f = c - (float)i;
  if (*f > 1.0f) *f = 1.0f;
}

static void bilinear_planes(void *arg, int64_t b, int64_t e) {
  const upsample_t *u = arg;
  int r = u->y->rank;
  int64_t oh = u->y->dims[r - 2], ow = u->y->dims[r - 1];
  int64_t ih = u->x->dims[r - 2], iw = u->x->dims[r - 1];
  for (int64_t p = b; p < e; p++) {
    const float *x = (const float *)u->x->data + p * ih * iw;
    float *y = (float *)u->y->data + p * oh * ow;
    for (int64_t oy = 0; oy < oh; oy++) {
      int64_t y0, y1;
      float fy;
      linear_coord(oy, u->scales[r - 2], ih, &y0, &y1, &fy);
      for (int64_t ox = 0; ox < ow; ox++) {
        int64_t x0, x1;
        float fx;
        linear_coord(ox, u->scales[r - 1], iw, &x0, &x1, &fx);
        float top = x[y0 * iw + x0] * (1 - fx) + x[y0 * iw + x1] * fx;
        float bot = x[y1 * iw + x0] * (1 - fx) + x[y1 * iw + x1] * fx;
        y[oy * ow + ox] = top * (1 - fy) + bot * fy;
      }
    }
  }
}

SQ_KERNEL_FN(sq_kern_upsample) {
  (void)nout;
  upsample_t u = {.x = &in[0], .y = &out[0], .es = sq_dtype_size(in[0].dtype)};
  int rc = upsample_scales(node, in, nin, u.scales, err);
  if (rc) return rc;
  int64_t n = sq_view_numel(&out[0]);
  if (n == 0 || out[0].rank == 0) return 0;
  if (strcmp(sq_attr_string(node, "mode", "nearest"), "nearest") != 0) {
    int64_t planes = n / (out[0].dims[out[0].rank - 2] * out[0].dims[out[0].rank - 1]);
    if (sq_view_numel(&in[0]) == 0) return sq_node_error(err, SQ_EINVAL, node, "empty input");
    sq_cpu_parallel_for(cpu, planes, 1, bilinear_planes, &u);
    return 0;
  }
  int64_t w = out[0].dims[out[0].rank - 1];
  sq_cpu_parallel_for(cpu, n / w, 1 + (1 << 13) / (w + 1), upsample_rows, &u);
  return 0;
}
