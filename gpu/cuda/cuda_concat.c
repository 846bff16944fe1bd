/* cuda_concat.c: Concat (one strided 2-D copy per input: rows = product of the dims before the
 * axis) and the view ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout), which the
 * planner usually aliases to their input's block: then there is nothing to do. */
#include <string.h>

#include "cuda_internal.h"

int sq_cuda_concat_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err) {
  int axis = sq_axis(sq_attr_int(n, "axis", 0), out[0].rank);
  if (axis < 0) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Concat axis");
  if (!sq_dtype_size(out[0].dtype)) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: dtype");
  for (int i = 0; i < n->nin; i++)
    if (!sq_view_present(&in[i]) || in[i].dtype != out[0].dtype || in[i].rank != out[0].rank)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: Concat inputs");
  return 0;
}

int sq_cuda_concat_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                           const sq_view_t *out, sq_error_t *err) {
  int axis = sq_axis(sq_attr_int(n, "axis", 0), out[0].rank);
  size_t es = sq_dtype_size(out[0].dtype);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= out[0].dims[d];
  for (int d = axis + 1; d < out[0].rank; d++) inner *= out[0].dims[d];
  size_t dst_row = (size_t)(out[0].dims[axis] * inner) * es, off = 0;
  for (int i = 0; i < n->nin; i++) {
    size_t row = (size_t)(in[i].dims[axis] * inner) * es;
    if (row && outer) {
      int rc =
          sq_cuda_check(cudaMemcpy2DAsync((uint8_t *)out[0].data + off, dst_row, in[i].data, row,
                                          row, (size_t)outer, cudaMemcpyDeviceToDevice, c->stream),
                        err, "cudaMemcpy2DAsync (concat)");
      if (rc) return rc;
    }
    off += row;
  }
  return 0;
}

int sq_cuda_view_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err) {
  for (int k = 1; k < n->nout; k++)
    if (n->out[k] >= 0) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: second output");
  if (!sq_dtype_size(out[0].dtype)) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: dtype");
  return 0;
}

int sq_cuda_view_forward(sq_cuda_ctx_t *c, const sq_node_t *n, void *state, const sq_view_t *in,
                         const sq_view_t *out, sq_error_t *err) {
  if (in[0].data == out[0].data) return 0;
  size_t bytes = (size_t)sq_view_numel(&out[0]) * sq_dtype_size(out[0].dtype);
  if (!bytes) return 0;
  return sq_cuda_check(
      cudaMemcpyAsync(out[0].data, in[0].data, bytes, cudaMemcpyDeviceToDevice, c->stream), err,
      "cudaMemcpyAsync (view)");
}
