/* onnx_internal.h: glue between the protoc-c generated onnx.pb-c.h and the engine IR, shared
 * by the loader and the TensorProto reader. Private to gpu/onnx/. */
#ifndef SQ_ONNX_INTERNAL_H
#define SQ_ONNX_INTERNAL_H

#include "engine_internal.h"
#include "onnx.pb-c.h"

/* Fills t's dtype/rank/dims/data (owned) from a TensorProto: raw_data or the typed fields;
 * float16 and double become float. Returns 0, or SQ_EUNSUPPORTED / SQ_EMODEL_LOAD with a short
 * reason in why (no node name; the caller adds context). t->name is left alone. */
int sq_onnx_tensor_convert(const Onnx__TensorProto *tp, sq_tensor_t *t, char *why, size_t whylen);

#endif
