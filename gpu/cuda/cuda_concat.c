/* cuda_concat.c: Concat (fp32: one strided 2-D copy per input, rows = product of the dims before
 * the axis; fp16 NHWC on the channel axis: a copy kernel per input into its channel range, then
 * the padding channels zeroed) and the view ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity,
 * Dropout; fp32), which the layout plan usually places in their input's block: then there is
 * nothing to do. */
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

int sq_cuda_concat_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  if (sq_cuda_concat_check(n, in, out, NULL) || out[0].rank != 4 || out[0].dtype != SQ_DT_FLOAT ||
      sq_axis(sq_attr_int(n, "axis", 0), 4) != 1)
    return -1;
  for (int i = 0; i < n->nin; i++)
    if (in[i].data) return -1; /* constants stay fp32 */
  return 0;
}

static int concat16(sq_cuda_ctx_t *c, const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                    sq_error_t *err) {
  int64_t npix = out[0].dims[0] * out[0].dims[2] * out[0].dims[3];
  int64_t cout_p = SQ_CUDA_CPAD(out[0].dims[1]), off = 0;
  for (int i = 0; i < n->nin; i++) {
    int64_t ci = in[i].dims[1];
    int rc = sq_cuda_check(sq_cuda_concat16(in[i].data, out[0].data, npix, SQ_CUDA_CPAD(ci), ci,
                                            cout_p, off, c->stream),
                           err, "concat kernel (fp16)");
    if (rc) return rc;
    off += ci;
  }
  return sq_cuda_check(sq_cuda_zero_pad16(out[0].data, npix, cout_p, off, c->stream), err,
                       "concat padding (fp16)");
}

int sq_cuda_concat_forward(SQ_CUDA_FORWARD_ARGS) {
  if (mode == SQ_CUDA_F16) return concat16(c, n, in, out, err);
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

int sq_cuda_view_forward(SQ_CUDA_FORWARD_ARGS) {
  if (in[0].data == out[0].data) return 0;
  size_t bytes = (size_t)sq_view_numel(&out[0]) * sq_dtype_size(out[0].dtype);
  if (!bytes) return 0;
  return sq_cuda_check(
      cudaMemcpyAsync(out[0].data, in[0].data, bytes, cudaMemcpyDeviceToDevice, c->stream), err,
      "cudaMemcpyAsync (view)");
}
