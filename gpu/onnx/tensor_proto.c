/* tensor_proto.c: ONNX TensorProto -> engine tensor data (initializers, Constant attributes and
 * the conformance suite's input/output .pb files). Handles raw_data and the typed fields. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_internal.h"

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: value = mant * 2^-24 */
      float f = (float)mant * 5.9604644775390625e-8f;
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static int dtype_supported(int dt) {
  switch (dt) {
    case SQ_DT_FLOAT:
    case SQ_DT_UINT8:
    case SQ_DT_INT8:
    case SQ_DT_INT32:
    case SQ_DT_INT64:
    case SQ_DT_BOOL:
    case SQ_DT_FLOAT16:
    case SQ_DT_DOUBLE:
      return 1;
    default:
      return 0;
  }
}

int sq_onnx_tensor_convert(const Onnx__TensorProto *tp, sq_tensor_t *t, char *why, size_t whylen) {
  int dt = tp->has_data_type ? tp->data_type : 0;
  if (!dtype_supported(dt)) {
    snprintf(why, whylen, "data type %s", sq_dtype_name(dt));
    return SQ_EUNSUPPORTED;
  }
  if ((tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
      tp->n_external_data > 0) {
    snprintf(why, whylen, "external data");
    return SQ_EUNSUPPORTED;
  }
  if (tp->segment) {
    snprintf(why, whylen, "segmented tensor");
    return SQ_EUNSUPPORTED;
  }
  if (tp->n_dims > SQ_MAX_DIMS) {
    snprintf(why, whylen, "rank %zu > %d", tp->n_dims, SQ_MAX_DIMS);
    return SQ_EUNSUPPORTED;
  }
  int64_t numel = 1;
  for (size_t i = 0; i < tp->n_dims; i++) {
    if (tp->dims[i] < 0 || (tp->dims[i] > 0 && numel > (INT64_C(1) << 40) / tp->dims[i])) {
      snprintf(why, whylen, "invalid dims");
      return SQ_EMODEL_LOAD;
    }
    numel *= tp->dims[i];
    t->dims[i] = tp->dims[i];
  }
  t->rank = (int)tp->n_dims;
  size_t esize = sq_dtype_size(dt);
  size_t n = (size_t)numel;
  /* stored type after conversion */
  int out_dt = (dt == SQ_DT_FLOAT16 || dt == SQ_DT_DOUBLE) ? SQ_DT_FLOAT : dt;
  void *data = malloc(n * sq_dtype_size(out_dt) + 1);
  if (!data) {
    snprintf(why, whylen, "out of memory");
    return SQ_ENOMEM;
  }
  size_t have;
  if (tp->has_raw_data)
    have = tp->raw_data.len / esize;
  else if (dt == SQ_DT_FLOAT)
    have = tp->n_float_data;
  else if (dt == SQ_DT_INT64)
    have = tp->n_int64_data;
  else if (dt == SQ_DT_DOUBLE)
    have = tp->n_double_data;
  else
    have = tp->n_int32_data; /* int32, int8, uint8, bool, float16 (as uint16 bits) */
  if (have != n || (tp->has_raw_data && tp->raw_data.len != n * esize)) {
    free(data);
    snprintf(why, whylen, "holds %zu values, shape needs %zu", have, n);
    return SQ_EMODEL_LOAD;
  }
  const uint8_t *raw = tp->has_raw_data ? tp->raw_data.data : NULL;
  for (size_t i = 0; i < n; i++) {
    switch (dt) {
      case SQ_DT_FLOAT:
        if (raw)
          memcpy((float *)data + i, raw + 4 * i, 4);
        else
          ((float *)data)[i] = tp->float_data[i];
        break;
      case SQ_DT_INT64:
        if (raw)
          memcpy((int64_t *)data + i, raw + 8 * i, 8);
        else
          ((int64_t *)data)[i] = tp->int64_data[i];
        break;
      case SQ_DT_INT32:
        if (raw)
          memcpy((int32_t *)data + i, raw + 4 * i, 4);
        else
          ((int32_t *)data)[i] = tp->int32_data[i];
        break;
      case SQ_DT_UINT8:
      case SQ_DT_INT8:
      case SQ_DT_BOOL:
        ((uint8_t *)data)[i] = raw ? raw[i] : (uint8_t)tp->int32_data[i];
        if (dt == SQ_DT_BOOL) ((uint8_t *)data)[i] = ((uint8_t *)data)[i] != 0;
        break;
      case SQ_DT_FLOAT16: {
        uint16_t h;
        if (raw)
          memcpy(&h, raw + 2 * i, 2);
        else
          h = (uint16_t)tp->int32_data[i];
        ((float *)data)[i] = half_to_float(h);
        break;
      }
      case SQ_DT_DOUBLE: {
        double d;
        if (raw)
          memcpy(&d, raw + 8 * i, 8);
        else
          d = tp->double_data[i];
        ((float *)data)[i] = (float)d;
        break;
      }
    }
  }
  t->dtype = out_dt;
  t->data = data;
  t->owns_data = true;
  return 0;
}

int sq_onnx_tensor_parse(const void *buf, size_t len, sq_tensor_t *t, sq_error_t *err) {
  Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
  if (!tp) return sq_error_set(err, SQ_EMODEL_LOAD, "not a valid TensorProto (%zu bytes)", len);
  char why[128];
  memset(t, 0, sizeof *t);
  t->kind = SQ_TENSOR_CONST;
  t->producer = -1;
  t->last_use = -1;
  t->alias = -1;
  int rc = sq_onnx_tensor_convert(tp, t, why, sizeof why);
  if (rc == 0) {
    t->name = sq_strdup(tp->name ? tp->name : "");
    if (!t->name) rc = SQ_ENOMEM;
  } else {
    sq_error_set(err, rc, "tensor '%s': %s", tp->name ? tp->name : "", why);
  }
  onnx__tensor_proto__free_unpacked(tp, NULL);
  if (rc) sq_tensor_clear(t);
  return rc;
}
