/* shape.c: helpers shared by shape functions and kernels (node errors, numpy broadcasting,
 * axis normalization, reading integer tensors) and the generic shape functions (same, broadcast,
 * binary). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine_internal.h"

int sq_node_error(sq_error_t *err, int code, const sq_node_t *node, const char *fmt, ...) {
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  const sq_op_info_t *op = sq_op_info(node->op);
  return sq_error_set(err, code, "node '%s' (%s): %s", node->name, op ? op->name : "?", what);
}

int sq_broadcast_shape(const sq_view_t *a, const sq_view_t *b, sq_view_t *out) {
  /* Callers fold with out == a (acc = broadcast(acc, x)): read every input dim before writing. */
  int r = a->rank > b->rank ? a->rank : b->rank;
  int64_t dims[SQ_MAX_DIMS];
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da != db && da != 1 && db != 1) return SQ_EINVAL;
    dims[i] = da == 1 ? db : da;
  }
  memcpy(out->dims, dims, sizeof(int64_t) * (size_t)r);
  out->rank = r;
  return 0;
}

void sq_broadcast_strides(const sq_view_t *v, const sq_view_t *out, int64_t *strides) {
  int64_t s = 1;
  for (int i = out->rank - 1; i >= 0; i--) {
    int iv = i - (out->rank - v->rank);
    if (iv < 0) {
      strides[i] = 0;
      continue;
    }
    strides[i] = v->dims[iv] == 1 ? 0 : s;
    s *= v->dims[iv];
  }
}

int64_t sq_view_get_int(const sq_view_t *v, int64_t i) {
  switch (v->dtype) {
    case SQ_DT_INT64:
      return ((const int64_t *)v->data)[i];
    case SQ_DT_INT32:
      return ((const int32_t *)v->data)[i];
    case SQ_DT_FLOAT:
      return (int64_t)((const float *)v->data)[i];
    case SQ_DT_UINT8:
    case SQ_DT_BOOL:
      return ((const uint8_t *)v->data)[i];
    case SQ_DT_INT8:
      return ((const int8_t *)v->data)[i];
    default:
      return 0;
  }
}

int sq_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  return axis < 0 || axis >= (rank ? rank : 1) ? -1 : (int)axis;
}

int sq_shape_same(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                  sq_error_t *err) {
  if (nin < 1 || !sq_view_present(&in[0]))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "missing input");
  for (int k = 0; k < nout; k++) {
    out[k] = in[0];
    out[k].data = NULL;
  }
  return 0;
}

int sq_shape_broadcast(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                       int nout, sq_error_t *err) {
  if (nin < 1) return sq_node_error(err, SQ_EMODEL_LOAD, node, "no inputs");
  for (int k = 0; k < nin; k++)
    if (!sq_view_present(&in[k]))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "input %d is missing", k);
  sq_view_t acc = in[0];
  for (int k = 1; k < nin; k++) {
    if (in[k].dtype != in[0].dtype)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "inputs have types %s and %s",
                           sq_dtype_name(in[0].dtype), sq_dtype_name(in[k].dtype));
    if (sq_broadcast_shape(&acc, &in[k], &acc))
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "shapes do not broadcast");
  }
  acc.data = NULL;
  for (int k = 0; k < nout; k++) out[k] = acc;
  return 0;
}

void sq_act_apply(int act, float alpha, float beta, float *x, int64_t n) {
  switch (act) {
    case SQ_ACT_RELU:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
      break;
    case SQ_ACT_LEAKY_RELU:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] >= 0 ? x[i] : x[i] * alpha;
      break;
    case SQ_ACT_CLIP:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] < alpha ? alpha : x[i] > beta ? beta : x[i];
      break;
    case SQ_ACT_SIGMOID:
      for (int64_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + expf(-x[i]));
      break;
    default:
      break;
  }
}

int sq_shape_binary(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                    sq_error_t *err) {
  if (nin != 2) return sq_node_error(err, SQ_EMODEL_LOAD, node, "needs 2 inputs, has %d", nin);
  return sq_shape_broadcast(node, in, nin, out, nout, err);
}
