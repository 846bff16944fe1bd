/* cuda_pool.c: pooling and reductions on cuDNN: MaxPool/AveragePool (symmetric pads, no
 * dilation, the floor geometry cuDNN computes), GlobalAveragePool/GlobalMaxPool (one window per
 * plane), in fp32 NCHW or fp16 NHWC (2-D only); ReduceMax/ReduceMean/ReduceSum
 * (cudnnReduceTensor, rank <= 4, fp32). */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

typedef struct {
  cudnnTensorDescriptor_t x, y;
  cudnnPoolingDescriptor_t pool;
  cudnnReduceTensorDescriptor_t red;
  size_t ws;
  int copy; /* reduction over nothing: a copy */
} pool_state_t;

static int pool_geom(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, int win[2],
                     int pad[2], int str[2], sq_error_t *err) {
  const sq_view_t *x = &in[0];
  if (x->dtype != SQ_DT_FLOAT || (x->rank != 4 && x->rank != 3))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 1-D/2-D pooling only");
  for (int i = 0; i < x->rank; i++)
    if (x->dims[i] > INT32_MAX) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: dims");
  if (n->op == SQ_OP_GlobalAveragePool || n->op == SQ_OP_GlobalMaxPool) {
    win[0] = x->rank == 4 ? (int)x->dims[2] : 1;
    win[1] = (int)x->dims[x->rank - 1];
    pad[0] = pad[1] = 0;
    str[0] = win[0] > 0 ? win[0] : 1;
    str[1] = win[1] > 0 ? win[1] : 1;
    return 0;
  }
  if (n->nout > 1 && n->out[1] >= 0)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: MaxPool Indices output");
  sq_pool_t p;
  int rc = sq_pool_params(n, x, &p, err);
  if (rc) return rc;
  if (p.dh != 1 || p.dw != 1 || p.ph != p.ph_end || p.pw != p.pw_end)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: dilated or asymmetric pooling");
  if ((p.h + 2 * p.ph - p.kh) / p.sh + 1 != p.oh || (p.w + 2 * p.pw - p.kw) / p.sw + 1 != p.ow)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: ceil_mode geometry");
  if (p.ph >= p.kh || p.pw >= p.kw)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: padding as large as the window");
  win[0] = (int)p.kh, win[1] = (int)p.kw, pad[0] = (int)p.ph, pad[1] = (int)p.pw;
  str[0] = (int)p.sh, str[1] = (int)p.sw;
  return 0;
}

int sq_cuda_pool_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err) {
  int w[2] = {0, 0}, p[2] = {0, 0}, s[2] = {0, 0};
  return pool_geom(n, in, out, w, p, s, err);
}

int sq_cuda_pool_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  int w[2] = {0, 0}, p[2] = {0, 0}, s[2] = {0, 0};
  return in[0].rank == 4 && out[0].rank == 4 ? pool_geom(n, in, out, w, p, s, NULL) : -1;
}

void sq_cuda_pool_release(void *state) {
  pool_state_t *s = state;
  if (!s) return;
  if (s->x) cudnnDestroyTensorDescriptor(s->x);
  if (s->y) cudnnDestroyTensorDescriptor(s->y);
  if (s->pool) cudnnDestroyPoolingDescriptor(s->pool);
  if (s->red) cudnnDestroyReduceTensorDescriptor(s->red);
  free(s);
}

int sq_cuda_pool_prepare(SQ_CUDA_PREPARE_ARGS) {
  int win[2] = {0, 0}, pad[2] = {0, 0}, str[2] = {0, 0};
  int rc = pool_geom(n, in, out, win, pad, str, err);
  if (rc) return rc;
  pool_state_t *s = calloc(1, sizeof *s);
  if (!s) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  *state = s;
  int is_max = n->op == SQ_OP_MaxPool || n->op == SQ_OP_GlobalMaxPool;
  cudnnPoolingMode_t pm = is_max ? CUDNN_POOLING_MAX_DETERMINISTIC
                          : (n->op == SQ_OP_AveragePool && sq_attr_int(n, "count_include_pad", 0))
                              ? CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                              : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
  rc = sq_cuda_desc4_mode(&s->x, &in[0], mode, err);
  if (!rc) rc = sq_cuda_desc4_mode(&s->y, &out[0], mode, err);
  if (!rc) rc = sq_cudnn_check(cudnnCreatePoolingDescriptor(&s->pool), err, "pooling desc");
  if (!rc)
    rc = sq_cudnn_check(cudnnSetPooling2dDescriptor(s->pool, pm, CUDNN_PROPAGATE_NAN, win[0],
                                                    win[1], pad[0], pad[1], str[0], str[1]),
                        err, "cudnnSetPooling2dDescriptor");
  return rc;
}

int sq_cuda_pool_forward(SQ_CUDA_FORWARD_ARGS) {
  pool_state_t *s = state;
  const float one = 1.f, zero = 0.f;
  return sq_cudnn_check(
      cudnnPoolingForward(c->dnn, s->pool, &one, s->x, in[0].data, &zero, s->y, out[0].data), err,
      "cudnnPoolingForward");
}

/* ---- reductions ---- */

static int reduce_axes(const sq_node_t *n, const sq_view_t *in, bool *red, bool *noop,
                       sq_error_t *err) {
  int rank = in[0].rank, naxes = 0;
  int64_t axes[SQ_MAX_DIMS];
  if (n->nin > 1 && sq_view_present(&in[1])) {
    if (!in[1].data) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: axes not constant");
    int64_t cnt = sq_view_numel(&in[1]);
    if (cnt > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: axes");
    for (int64_t i = 0; i < cnt; i++) axes[naxes++] = sq_view_get_int(&in[1], i);
  } else {
    const int64_t *a;
    size_t cnt = sq_attr_ints(n, "axes", &a);
    if (cnt > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: axes");
    for (size_t i = 0; i < cnt; i++) axes[naxes++] = a[i];
  }
  *noop = naxes == 0 && sq_attr_int(n, "noop_with_empty_axes", 0) != 0;
  for (int d = 0; d < rank; d++) red[d] = naxes == 0 && !*noop;
  for (int i = 0; i < naxes; i++) {
    int a = sq_axis(axes[i], rank);
    if (a < 0) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: axis out of range");
    red[a] = true;
  }
  return 0;
}

int sq_cuda_reduce_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                         sq_error_t *err) {
  bool red[SQ_MAX_DIMS], noop;
  if (in[0].dtype != SQ_DT_FLOAT || in[0].rank < 1 || in[0].rank > 4)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 rank 1-4 reductions only");
  for (int i = 0; i < in[0].rank; i++)
    if (in[0].dims[i] > INT32_MAX || in[0].dims[i] < 1)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: empty or huge dims");
  return reduce_axes(n, in, red, &noop, err);
}

int sq_cuda_reduce_prepare(SQ_CUDA_PREPARE_ARGS) {
  bool red[SQ_MAX_DIMS], noop;
  int rc = reduce_axes(n, in, red, &noop, err);
  if (rc) return rc;
  pool_state_t *s = calloc(1, sizeof *s);
  if (!s) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  *state = s;
  s->copy = noop;
  if (noop) return 0;
  sq_view_t ov = in[0]; /* the output with keepdims: reduced axes become 1 */
  for (int d = 0; d < ov.rank; d++)
    if (red[d]) ov.dims[d] = 1;
  cudnnReduceTensorOp_t op = n->op == SQ_OP_ReduceMax    ? CUDNN_REDUCE_TENSOR_MAX
                             : n->op == SQ_OP_ReduceMean ? CUDNN_REDUCE_TENSOR_AVG
                                                         : CUDNN_REDUCE_TENSOR_ADD;
  rc = sq_cuda_desc4(&s->x, &in[0], err);
  if (!rc) rc = sq_cuda_desc4(&s->y, &ov, err);
  if (!rc) rc = sq_cudnn_check(cudnnCreateReduceTensorDescriptor(&s->red), err, "reduce desc");
  if (!rc)
    rc = sq_cudnn_check(
        cudnnSetReduceTensorDescriptor(s->red, op, CUDNN_DATA_FLOAT, CUDNN_PROPAGATE_NAN,
                                       CUDNN_REDUCE_TENSOR_NO_INDICES, CUDNN_32BIT_INDICES),
        err, "cudnnSetReduceTensorDescriptor");
  if (!rc)
    rc = sq_cudnn_check(cudnnGetReductionWorkspaceSize(be->load_dnn, s->red, s->x, s->y, &s->ws),
                        err, "cudnnGetReductionWorkspaceSize");
  *ws_bytes = s->ws;
  return rc;
}

int sq_cuda_reduce_forward(SQ_CUDA_FORWARD_ARGS) {
  pool_state_t *s = state;
  if (s->copy)
    return sq_cuda_check(cudaMemcpyAsync(out[0].data, in[0].data, (size_t)sq_view_numel(&in[0]) * 4,
                                         cudaMemcpyDeviceToDevice, c->stream),
                         err, "cudaMemcpyAsync (reduce)");
  const float one = 1.f, zero = 0.f;
  return sq_cudnn_check(cudnnReduceTensor(c->dnn, s->red, NULL, 0, c->ws, s->ws, &one, s->x,
                                          in[0].data, &zero, s->y, out[0].data),
                        err, "cudnnReduceTensor");
}

void sq_cuda_reduce_release(void *state) {
  sq_cuda_pool_release(state);
}
