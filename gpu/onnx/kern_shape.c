/* kern_shape.c: the ops torch's shape subgraphs are made of (Shape, Gather, Unsqueeze, Concat,
 * Reshape, ConstantOfShape, Cast, CastLike, Constant, Identity, Size): their shape functions and
 * kernels. They handle integer types too, because plan-time constant folding runs them on int64
 * shapes. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

static size_t view_bytes(const sq_view_t *v) {
  return (size_t)sq_view_numel(v) * sq_dtype_size(v->dtype);
}

SQ_KERNEL_FN(sq_kern_identity) {
  if (out[0].data != in[0].data) memmove(out[0].data, in[0].data, view_bytes(&out[0]));
  return 0;
}

/* ---- Shape ---- */
static void shape_range(const sq_node_t *node, int rank, int64_t *start, int64_t *end) {
  *start = sq_attr_int(node, "start", 0);
  *end = sq_attr_int(node, "end", rank);
  if (*start < 0) *start += rank;
  if (*end < 0) *end += rank;
  *start = *start < 0 ? 0 : *start > rank ? rank : *start;
  *end = *end < *start ? *start : *end > rank ? rank : *end;
}

SQ_SHAPE_FN(sq_shape_shape) {
  int64_t s, e;
  shape_range(node, in[0].rank, &s, &e);
  out[0].dtype = SQ_DT_INT64;
  out[0].rank = 1;
  out[0].dims[0] = e - s;
  return 0;
}

SQ_KERNEL_FN(sq_kern_shape) {
  int64_t s, e;
  shape_range(node, in[0].rank, &s, &e);
  for (int64_t i = s; i < e; i++) ((int64_t *)out[0].data)[i - s] = in[0].dims[i];
  return 0;
}

/* ---- Gather ---- */
SQ_SHAPE_FN(sq_shape_gather) {
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  if (in[1].dtype != SQ_DT_INT64 && in[1].dtype != SQ_DT_INT32)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "indices of type %s",
                         sq_dtype_name(in[1].dtype));
  int r = in[0].rank - 1 + in[1].rank;
  if (r > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %d", r);
  out[0].dtype = in[0].dtype;
  out[0].rank = 0;
  for (int d = 0; d < axis; d++) out[0].dims[out[0].rank++] = in[0].dims[d];
  for (int d = 0; d < in[1].rank; d++) out[0].dims[out[0].rank++] = in[1].dims[d];
  for (int d = axis + 1; d < in[0].rank; d++) out[0].dims[out[0].rank++] = in[0].dims[d];
  return 0;
}

SQ_KERNEL_FN(sq_kern_gather) {
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  int64_t outer = 1, inner = 1, n = in[0].dims[axis], nidx = sq_view_numel(&in[1]);
  for (int d = 0; d < axis; d++) outer *= in[0].dims[d];
  for (int d = axis + 1; d < in[0].rank; d++) inner *= in[0].dims[d];
  size_t es = sq_dtype_size(in[0].dtype), row = (size_t)inner * es;
  const char *src = in[0].data;
  char *dst = out[0].data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < nidx; j++) {
      int64_t k = sq_view_get_int(&in[1], j);
      if (k < 0) k += n;
      if (k < 0 || k >= n)
        return sq_node_error(err, SQ_EINVAL, node, "index %lld out of range [0, %lld)",
                             (long long)k, (long long)n);
      memcpy(dst + ((size_t)o * (size_t)nidx + (size_t)j) * row,
             src + ((size_t)o * (size_t)n + (size_t)k) * row, row);
    }
  return 0;
}

/* ---- Unsqueeze: axes from the attribute (opset < 13) or input 1 ---- */
SQ_SHAPE_FN(sq_shape_unsqueeze) {
  int64_t axes[SQ_MAX_DIMS];
  int naxes = sq_node_axes(node, in, nin, axes, err);
  if (naxes < 0) return naxes;
  int r = in[0].rank + naxes;
  if (r > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %d", r);
  bool is_new[SQ_MAX_DIMS] = {false};
  for (int i = 0; i < naxes; i++) {
    int a = sq_axis(axes[i], r);
    if (a < 0 || is_new[a]) return sq_node_error(err, SQ_EMODEL_LOAD, node, "bad axes");
    is_new[a] = true;
  }
  out[0].dtype = in[0].dtype;
  out[0].rank = r;
  for (int d = 0, k = 0; d < r; d++) out[0].dims[d] = is_new[d] ? 1 : in[0].dims[k++];
  return 0;
}

/* ---- Reshape ---- */
SQ_SHAPE_FN(sq_shape_reshape) {
  if (nin < 2 || !in[1].data)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "shape must be constant at plan time");
  int64_t r = sq_view_numel(&in[1]);
  if (r > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %lld", (long long)r);
  bool allowzero = sq_attr_int(node, "allowzero", 0) != 0;
  int64_t known = 1, total = sq_view_numel(&in[0]);
  int infer = -1;
  out[0].dtype = in[0].dtype;
  out[0].rank = (int)r;
  for (int d = 0; d < r; d++) {
    int64_t v = sq_view_get_int(&in[1], d);
    if (v == 0 && !allowzero) {
      if (d >= in[0].rank) return sq_node_error(err, SQ_EMODEL_LOAD, node, "0 past input rank");
      v = in[0].dims[d];
    }
    if (v == -1) {
      if (infer >= 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "two -1 dims");
      infer = d;
      continue;
    }
    if (v < 0 || (v > 0 && known > (INT64_C(1) << 40) / v))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "dim %lld", (long long)v);
    out[0].dims[d] = v;
    known *= v;
  }
  if (infer >= 0) {
    if (known == 0 || total % known)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "cannot infer -1 dim");
    out[0].dims[infer] = total / known;
    known *= out[0].dims[infer];
  }
  if (known != total)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "%lld elements into %lld", (long long)total,
                         (long long)known);
  return 0;
}

/* ---- Concat ---- */
SQ_SHAPE_FN(sq_shape_concat) {
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  int axis = sq_axis(sq_attr_int(node, "axis", 0), in[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "axis out of range");
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dims[axis] = 0;
  for (int k = 0; k < nin; k++) {
    if (!sq_view_present(&in[k])) continue;
    if (in[k].rank != in[0].rank || in[k].dtype != in[0].dtype)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "input %d rank/type differs", k);
    for (int d = 0; d < in[0].rank; d++)
      if (d != axis && in[k].dims[d] != in[0].dims[d])
        return sq_node_error(err, SQ_EMODEL_LOAD, node, "input %d dim %d differs", k, d);
    out[0].dims[axis] += in[k].dims[axis];
  }
  return 0;
}

typedef struct {
  const sq_view_t *in;
  int nin;
  const sq_view_t *out;
  int axis;
  size_t es, inner;
} concat_t;

static void concat_range(void *arg, int64_t b, int64_t e) {
  concat_t *c = arg;
  size_t out_row = (size_t)c->out->dims[c->axis] * c->inner * c->es;
  for (int64_t o = b; o < e; o++) {
    char *dst = (char *)c->out->data + (size_t)o * out_row;
    for (int k = 0; k < c->nin; k++) {
      if (!sq_view_present(&c->in[k])) continue;
      size_t row = (size_t)c->in[k].dims[c->axis] * c->inner * c->es;
      memcpy(dst, (const char *)c->in[k].data + (size_t)o * row, row);
      dst += row;
    }
  }
}

SQ_KERNEL_FN(sq_kern_concat) {
  concat_t c = {
      in, nin, out, sq_axis(sq_attr_int(node, "axis", 0), in[0].rank), sq_dtype_size(out[0].dtype),
      1};
  int64_t outer = 1;
  for (int d = 0; d < c.axis; d++) outer *= out[0].dims[d];
  for (int d = c.axis + 1; d < out[0].rank; d++) c.inner *= (size_t)out[0].dims[d];
  sq_cpu_parallel_for(cpu, outer, 1, concat_range, &c);
  return 0;
}

/* ---- Constant ---- */
SQ_SHAPE_FN(sq_shape_constant) {
  const sq_attr_t *a = sq_attr_find(node, "value");
  out[0].rank = 0;
  if (a && a->type == SQ_ATTR_TENSOR && a->t && a->t->data) {
    out[0].dtype = a->t->dtype;
    out[0].rank = a->t->rank;
    memcpy(out[0].dims, a->t->dims, sizeof out[0].dims);
  } else if ((a = sq_attr_find(node, "value_float"))) {
    out[0].dtype = SQ_DT_FLOAT;
  } else if ((a = sq_attr_find(node, "value_int"))) {
    out[0].dtype = SQ_DT_INT64;
  } else if ((a = sq_attr_find(node, "value_floats"))) {
    out[0].dtype = SQ_DT_FLOAT;
    out[0].rank = 1;
    out[0].dims[0] = (int64_t)a->n;
  } else if ((a = sq_attr_find(node, "value_ints"))) {
    out[0].dtype = SQ_DT_INT64;
    out[0].rank = 1;
    out[0].dims[0] = (int64_t)a->n;
  } else {
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "no supported value attribute");
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_constant) {
  const sq_attr_t *a = sq_attr_find(node, "value");
  if (a && a->type == SQ_ATTR_TENSOR && a->t && a->t->data)
    memcpy(out[0].data, a->t->data, view_bytes(&out[0]));
  else if ((a = sq_attr_find(node, "value_float")))
    *(float *)out[0].data = a->f;
  else if ((a = sq_attr_find(node, "value_int")))
    *(int64_t *)out[0].data = a->i;
  else if ((a = sq_attr_find(node, "value_floats")))
    memcpy(out[0].data, a->floats, a->n * sizeof(float));
  else if ((a = sq_attr_find(node, "value_ints")))
    memcpy(out[0].data, a->ints, a->n * sizeof(int64_t));
  return 0;
}

/* ---- ConstantOfShape ---- */
SQ_SHAPE_FN(sq_shape_constantofshape) {
  if (!in[0].data)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "shape must be constant at plan time");
  int64_t r = sq_view_numel(&in[0]);
  if (r > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank %lld", (long long)r);
  const sq_attr_t *a = sq_attr_find(node, "value");
  out[0].dtype = a && a->t && a->t->data ? a->t->dtype : SQ_DT_FLOAT;
  out[0].rank = (int)r;
  for (int d = 0; d < r; d++) {
    out[0].dims[d] = sq_view_get_int(&in[0], d);
    if (out[0].dims[d] < 0) return sq_node_error(err, SQ_EMODEL_LOAD, node, "negative dim");
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_constantofshape) {
  const sq_attr_t *a = sq_attr_find(node, "value");
  size_t es = sq_dtype_size(out[0].dtype);
  int64_t n = sq_view_numel(&out[0]);
  if (!(a && a->t && a->t->data)) {
    memset(out[0].data, 0, (size_t)n * es);
    return 0;
  }
  for (int64_t i = 0; i < n; i++) memcpy((char *)out[0].data + (size_t)i * es, a->t->data, es);
  return 0;
}

/* ---- Cast ----
 * float16 never reaches a kernel: the loader converts float16 weights and I/O to float32, so
 * Cast(to=FLOAT16) produces float32 holding float16 values (rounded here) and Cast from a
 * float16 tensor reads float32. That is how fp16 exports run in fp32 on the CPU. */
static bool cast_type_ok(int dt) {
  return dt == SQ_DT_FLOAT || dt == SQ_DT_INT64 || dt == SQ_DT_INT32 || dt == SQ_DT_BOOL ||
         dt == SQ_DT_UINT8 || dt == SQ_DT_INT8;
}

SQ_SHAPE_FN(sq_shape_cast) {
  int to = (int)sq_attr_int(node, "to", 0);
  if (to == SQ_DT_FLOAT16) to = SQ_DT_FLOAT;
  if (!cast_type_ok(to) || !cast_type_ok(in[0].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "cast %s -> %s", sq_dtype_name(in[0].dtype),
                         sq_dtype_name(to));
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dtype = to;
  return 0;
}

float sq_round_fp16(float x) {
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  uint32_t a = b & 0x7fffffffu, sign = b & 0x80000000u;
  if (a >= 0x7f800000u) return x; /* inf, NaN */
  if (a >= 0x477ff000u) {         /* >= 65520: rounds past the largest half (65504) */
    b = sign | 0x7f800000u;
  } else if (a < 0x38800000u) {       /* below 2^-14: half subnormals are multiples of 2^-24 */
    float q = fabsf(x) * 16777216.0f; /* exact scaling by 2^24 */
    q = nearbyintf(q);                /* ties to even in the default rounding mode */
    float r = q / 16777216.0f;
    return sign ? -r : r;
  } else { /* normal: keep 10 of the 23 mantissa bits, ties to even */
    uint32_t rem = a & 0x1fffu, keep = a & ~0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (keep & 0x2000u))) keep += 0x2000u;
    b = sign | keep;
  }
  memcpy(&x, &b, sizeof x);
  return x;
}

static void round_fp16_range(void *arg, int64_t b, int64_t e) {
  float *y = arg;
  for (int64_t i = b; i < e; i++) y[i] = sq_round_fp16(y[i]);
}

static double load_num(const sq_view_t *v, int64_t i) {
  switch (v->dtype) {
    case SQ_DT_FLOAT:
      return ((const float *)v->data)[i];
    case SQ_DT_INT64:
      return (double)((const int64_t *)v->data)[i];
    case SQ_DT_INT32:
      return ((const int32_t *)v->data)[i];
    case SQ_DT_INT8:
      return ((const int8_t *)v->data)[i];
    default:
      return ((const uint8_t *)v->data)[i];
  }
}

SQ_KERNEL_FN(sq_kern_cast) {
  int64_t n = sq_view_numel(&out[0]);
  const sq_view_t *x = &in[0];
  void *y = out[0].data;
  if (x->dtype == SQ_DT_FLOAT && out[0].dtype == SQ_DT_FLOAT) {
    if (y != x->data) memmove(y, x->data, (size_t)n * sizeof(float));
    if (node->op == SQ_OP_Cast && sq_attr_int(node, "to", 0) == SQ_DT_FLOAT16)
      sq_cpu_parallel_for(cpu, n, 16384, round_fp16_range, y);
    return 0;
  }
  for (int64_t i = 0; i < n; i++) {
    /* int64 -> int64 and friends go through double only when the types differ */
    if (x->dtype == SQ_DT_INT64 && out[0].dtype == SQ_DT_INT64) {
      ((int64_t *)y)[i] = ((const int64_t *)x->data)[i];
      continue;
    }
    double v = load_num(x, i);
    switch (out[0].dtype) {
      case SQ_DT_FLOAT:
        ((float *)y)[i] = (float)v;
        break;
      case SQ_DT_INT64:
        ((int64_t *)y)[i] = x->dtype == SQ_DT_FLOAT && v != v ? INT64_MIN : (int64_t)v;
        break;
      case SQ_DT_INT32:
        ((int32_t *)y)[i] = (int32_t)(int64_t)v;
        break;
      case SQ_DT_INT8:
        ((int8_t *)y)[i] = (int8_t)(int64_t)v;
        break;
      case SQ_DT_UINT8:
        ((uint8_t *)y)[i] = (uint8_t)(int64_t)v;
        break;
      case SQ_DT_BOOL:
        ((uint8_t *)y)[i] = v != 0;
        break;
    }
  }
  return 0;
}

/* ---- CastLike: Cast to the type of input 1 (the kernel is Cast's: it reads out's dtype) ---- */
SQ_SHAPE_FN(sq_shape_castlike) {
  if (nin < 2 || !cast_type_ok(in[0].dtype) || !cast_type_ok(in[1].dtype))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "cast %s -> %s", sq_dtype_name(in[0].dtype),
                         nin < 2 ? "?" : sq_dtype_name(in[1].dtype));
  out[0] = in[0];
  out[0].data = NULL;
  out[0].dtype = in[1].dtype;
  return 0;
}

/* ---- Size: element count as an int64 scalar (reads only the shape, like Shape) ---- */
SQ_SHAPE_FN(sq_shape_size) {
  out[0].dtype = SQ_DT_INT64;
  out[0].rank = 0;
  return 0;
}

SQ_KERNEL_FN(sq_kern_size) {
  *(int64_t *)out[0].data = sq_view_numel(&in[0]);
  return 0;
}
