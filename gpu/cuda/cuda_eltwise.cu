/* cuda_eltwise.cu: elementwise kernels: activations, bias+activation (the epilogue of convs
 * cuDNN cannot fuse), broadcasting binary ops, per-channel affine (BatchNormalization).
 * Grid-stride loops, one thread per element; launchers in cuda_kernels.h. */
#include "cuda_kernels.h"

static const int kThreads = 256;

static unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

static __device__ __forceinline__ float act_apply(float v, int act, float alpha, float beta) {
  switch (act) {
  case SQ_CUDA_ACT_RELU: return v > 0.f ? v : 0.f;
  case SQ_CUDA_ACT_LEAKY: return v >= 0.f ? v : v * alpha;
  case SQ_CUDA_ACT_CLIP: /* numpy.clip: min first, then max (min > max gives max) */
    v = v < alpha ? alpha : v;
    return v > beta ? beta : v;
  case SQ_CUDA_ACT_SIGMOID: return 1.f / (1.f + expf(-v));
  case SQ_CUDA_ACT_TANH: return tanhf(v);
  default: return v;
  }
}

static __global__ void act_kernel(const float *x, float *y, int64_t n, int act, float alpha,
                                  float beta) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = act_apply(x[i], act, alpha, beta);
}

extern "C" cudaError_t sq_cuda_act(const float *x, float *y, int64_t n, int act, float alpha,
                                   float beta, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  act_kernel<<<grid_for(n), kThreads, 0, s>>>(x, y, n, act, alpha, beta);
  return cudaGetLastError();
}

static __global__ void bias_act_kernel(float *y, const float *bias, int64_t n, int64_t c,
                                       int64_t inner, int act, float alpha, float beta) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = y[i];
    if (bias) v += bias[(i / inner) % c];
    y[i] = act_apply(v, act, alpha, beta);
  }
}

extern "C" cudaError_t sq_cuda_bias_act(float *y, const float *bias, int64_t outer, int64_t c,
                                        int64_t inner, int act, float alpha, float beta,
                                        cudaStream_t s) {
  int64_t n = outer * c * inner;
  if (n <= 0) return cudaSuccess;
  bias_act_kernel<<<grid_for(n), kThreads, 0, s>>>(y, bias, n, c, inner, act, alpha, beta);
  return cudaGetLastError();
}

static __global__ void binary_kernel(int op, const float *a, const float *b, float *out,
                                     sq_cuda_bcast_t g, int64_t n, int act, float alpha,
                                     float beta) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, ia = 0, ib = 0;
    for (int d = g.rank - 1; d >= 0; d--) {
      int64_t k = rem % g.dims[d];
      rem /= g.dims[d];
      ia += k * g.sa[d];
      ib += k * g.sb[d];
    }
    float x = a[ia], y = b[ib], v;
    switch (op) {
    case SQ_CUDA_BIN_ADD: v = x + y; break;
    case SQ_CUDA_BIN_SUB: v = x - y; break;
    case SQ_CUDA_BIN_MUL: v = x * y; break;
    case SQ_CUDA_BIN_DIV: v = x / y; break;
    default: v = y; break;
    }
    out[i] = act_apply(v, act, alpha, beta);
  }
}

extern "C" cudaError_t sq_cuda_binary(int op, const float *a, const float *b, float *out,
                                      const sq_cuda_bcast_t *g, int act, float alpha, float beta,
                                      cudaStream_t s) {
  int64_t n = 1;
  for (int d = 0; d < g->rank; d++) n *= g->dims[d];
  if (n <= 0) return cudaSuccess;
  binary_kernel<<<grid_for(n), kThreads, 0, s>>>(op, a, b, out, *g, n, act, alpha, beta);
  return cudaGetLastError();
}

static __global__ void affine_kernel(const float *x, float *y, const float *scale,
                                     const float *shift, int64_t n, int64_t c, int64_t inner) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ch = (i / inner) % c;
    y[i] = x[i] * scale[ch] + shift[ch];
  }
}

extern "C" cudaError_t sq_cuda_affine_channel(const float *x, float *y, const float *scale,
                                              const float *shift, int64_t outer, int64_t c,
                                              int64_t inner, cudaStream_t s) {
  int64_t n = outer * c * inner;
  if (n <= 0) return cudaSuccess;
  affine_kernel<<<grid_for(n), kThreads, 0, s>>>(x, y, scale, shift, n, c, inner);
  return cudaGetLastError();
}
