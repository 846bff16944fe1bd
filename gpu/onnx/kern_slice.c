/* kern_slice.c: Slice (opset 1-9 attributes, 10+ inputs; negative steps), Squeeze and
 * Flatten: the indexing ops torch emits in shape subgraphs (x.shape[2:]) and around heads.
 * Any element type (they also run at plan time on int64 shapes). */
#include <string.h>

#include "engine_internal.h"

typedef struct {
  int64_t start[SQ_MAX_DIMS], step[SQ_MAX_DIMS];
} slice_t;

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* Reads starts/ends/axes/steps (from inputs or, before opset 10, attributes) into per-dim
 * start/step and the output dims. */
static int slice_params(const sq_node_t *node, const sq_view_t *in, int nin, slice_t *s,
                        int64_t *odims, sq_error_t *err) {
  const sq_view_t *x = &in[0];
  int64_t starts[SQ_MAX_DIMS], ends[SQ_MAX_DIMS], axes[SQ_MAX_DIMS], steps[SQ_MAX_DIMS];
  int n;
  if (node->opset < 10) {
    const int64_t *a, *b, *c;
    size_t ns = sq_attr_ints(node, "starts", &a), ne = sq_attr_ints(node, "ends", &b);
    size_t na = sq_attr_ints(node, "axes", &c);
    if (ns != ne || ns > SQ_MAX_DIMS || (na && na != ns))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "starts/ends/axes lengths");
    n = (int)ns;
    for (int i = 0; i < n; i++) {
      starts[i] = a[i];
      ends[i] = b[i];
      axes[i] = na ? c[i] : i;
      steps[i] = 1;
    }
  } else {
    if (nin < 3 || !in[1].data || !in[2].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "starts/ends must be constant");
    n = (int)sq_view_numel(&in[1]);
    if (n > SQ_MAX_DIMS || sq_view_numel(&in[2]) != n)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "starts/ends lengths");
    bool has_axes = nin > 3 && sq_view_present(&in[3]),
         has_steps = nin > 4 && sq_view_present(&in[4]);
    if ((has_axes && (!in[3].data || sq_view_numel(&in[3]) != n)) ||
        (has_steps && (!in[4].data || sq_view_numel(&in[4]) != n)))
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "axes/steps must be constant, same length");
    for (int i = 0; i < n; i++) {
      starts[i] = sq_view_get_int(&in[1], i);
      ends[i] = sq_view_get_int(&in[2], i);
      axes[i] = has_axes ? sq_view_get_int(&in[3], i) : i;
      steps[i] = has_steps ? sq_view_get_int(&in[4], i) : 1;
    }
  }
  for (int d = 0; d < x->rank; d++) {
    s->start[d] = 0;
    s->step[d] = 1;
    odims[d] = x->dims[d];
  }
  bool seen[SQ_MAX_DIMS] = {false};
  for (int i = 0; i < n; i++) {
    int a = sq_axis(axes[i], x->rank);
    if (a < 0 || seen[a] || steps[i] == 0)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "bad axis or zero step");
    seen[a] = true;
    int64_t dim = x->dims[a], st = starts[i], en = ends[i], step = steps[i];
    if (st < 0) st += dim;
    if (en < 0) en += dim;
    if (step > 0) {
      st = clamp64(st, 0, dim);
      en = clamp64(en, 0, dim);
      odims[a] = en > st ? (en - st + step - 1) / step : 0;
    } else {
      st = clamp64(st, 0, dim - 1);
      en = clamp64(en, -1, dim - 1);
      odims[a] = st > en ? (st - en + (-step) - 1) / (-step) : 0;
    }
    s->start[a] = st;
    s->step[a] = step;
  }
  return 0;
}

int sq_shape_slice(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                   sq_error_t *err) {
  slice_t s;
  out[0].dtype = in[0].dtype;
  out[0].rank = in[0].rank;
  return slice_params(node, in, nin, &s, out[0].dims, err);
}

int sq_kern_slice(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                  const sq_view_t *out, int nout, sq_error_t *err) {
  slice_t s;
  int64_t odims[SQ_MAX_DIMS];
  int rc = slice_params(node, in, nin, &s, odims, err);
  if (rc) return rc;
  const sq_view_t *x = &in[0];
  int r = x->rank;
  size_t es = sq_dtype_size(x->dtype);
  int64_t total = sq_view_numel(&out[0]);
  if (total == 0) return 0;
  int64_t istride[SQ_MAX_DIMS], idx[SQ_MAX_DIMS] = {0};
  int64_t acc = 1;
  for (int d = r - 1; d >= 0; d--) {
    istride[d] = acc;
    acc *= x->dims[d];
  }
  if (r == 0) {
    memcpy(out[0].data, x->data, es);
    return 0;
  }
  const char *src = x->data;
  char *dst = out[0].data;
  int64_t inner = odims[r - 1];
  for (int64_t o = 0; o < total; o += inner) {
    int64_t off = 0;
    for (int d = 0; d < r - 1; d++) off += (s.start[d] + idx[d] * s.step[d]) * istride[d];
    int64_t base = off + s.start[r - 1];
    if (s.step[r - 1] == 1) {
      memcpy(dst + (size_t)o * es, src + (size_t)base * es, (size_t)inner * es);
    } else {
      for (int64_t j = 0; j < inner; j++)
        memcpy(dst + (size_t)(o + j) * es, src + (size_t)(base + j * s.step[r - 1]) * es, es);
    }
    for (int d = r - 2; d >= 0; d--) { /* next row: odometer over the outer dims */
      if (++idx[d] < odims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

/* ---- Squeeze: axes from the attribute (opset < 13) or input 1; none = all 1-dims ---- */
int sq_shape_squeeze(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                     sq_error_t *err) {
  bool drop[SQ_MAX_DIMS] = {false};
  int64_t axes[SQ_MAX_DIMS];
  int naxes = sq_node_axes(node, in, nin, axes, err);
  if (naxes < 0) return naxes;
  for (int i = 0; i < naxes; i++) {
    int a = sq_axis(axes[i], in[0].rank);
    if (a < 0 || in[0].dims[a] != 1)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis %lld is not a 1-dim",
                           (long long)axes[i]);
    drop[a] = true;
  }
  if (!naxes)
    for (int d = 0; d < in[0].rank; d++) drop[d] = in[0].dims[d] == 1;
  out[0].dtype = in[0].dtype;
  out[0].rank = 0;
  for (int d = 0; d < in[0].rank; d++)
    if (!drop[d]) out[0].dims[out[0].rank++] = in[0].dims[d];
  return 0;
}

/* ---- Flatten: [d0..d(axis-1)] x [d(axis)..] ---- */
int sq_shape_flatten(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                     sq_error_t *err) {
  int64_t axis = sq_attr_int(node, "axis", 1);
  if (axis < 0) axis += in[0].rank;
  if (axis < 0 || axis > in[0].rank)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  int64_t a = 1, b = 1;
  for (int d = 0; d < in[0].rank; d++) *(d < axis ? &a : &b) *= in[0].dims[d];
  out[0].dtype = in[0].dtype;
  out[0].rank = 2;
  out[0].dims[0] = a;
  out[0].dims[1] = b;
  return 0;
}
