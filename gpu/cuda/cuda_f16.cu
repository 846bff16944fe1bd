/* cuda_f16.cu: kernels of the fp16 NHWC layout (cuda_kernels.h): conversions to and from NCHW
 * float, activations, the bias+activation epilogue, binary ops, per-channel affine, resize,
 * channel concat, and Cast(to=FLOAT16) rounding in fp32. Grid-stride loops, one thread per
 * element, arithmetic in fp32, one rounding to half per stored value. */
#include <cuda_fp16.h>

#include "cuda_kernels.h"

static const int kThreads = 256;

static unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

#define GRID_LOOP(i, n)                                                     \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)gridDim.x * blockDim.x)

/* The engine's activations (sq_act_t numbers, see cuda_eltwise.cu) on one float. */
static __device__ __forceinline__ float act16_apply(float v, int act, float alpha, float beta) {
  switch (act) {
  case SQ_CUDA_ACT_RELU: return v > 0.f ? v : 0.f;
  case SQ_CUDA_ACT_LEAKY: return v >= 0.f ? v : v * alpha;
  case SQ_CUDA_ACT_CLIP:
    v = v < alpha ? alpha : v;
    return v > beta ? beta : v;
  case SQ_CUDA_ACT_SIGMOID: return 1.f / (1.f + expf(-v));
  case SQ_CUDA_ACT_TANH: return tanhf(v);
  default: return v;
  }
}

static __global__ void to_nhwc16_kernel(const float *x, __half *y, int64_t n, int64_t c,
                                        int64_t hw, int64_t cp) {
  int64_t total = n * hw * cp;
  GRID_LOOP(i, total) {
    int64_t ch = i % cp, pix = (i / cp) % hw, img = i / (cp * hw);
    float v = ch < c ? x[(img * c + ch) * hw + pix] : 0.f;
    y[i] = __float2half_rn(v);
  }
}

extern "C" cudaError_t sq_cuda_to_nhwc16(const float *x, void *y, int64_t n, int64_t c,
                                         int64_t hw, int64_t cp, cudaStream_t s) {
  int64_t total = n * hw * cp;
  if (total <= 0) return cudaSuccess;
  to_nhwc16_kernel<<<grid_for(total), kThreads, 0, s>>>(x, (__half *)y, n, c, hw, cp);
  return cudaGetLastError();
}

static __global__ void from_nhwc16_kernel(const __half *x, float *y, int64_t n, int64_t c,
                                          int64_t hw, int64_t cp) {
  int64_t total = n * c * hw;
  GRID_LOOP(i, total) {
    int64_t pix = i % hw, ch = (i / hw) % c, img = i / (hw * c);
    y[i] = __half2float(x[(img * hw + pix) * cp + ch]);
  }
}

extern "C" cudaError_t sq_cuda_from_nhwc16(const void *x, float *y, int64_t n, int64_t c,
                                           int64_t hw, int64_t cp, cudaStream_t s) {
  int64_t total = n * c * hw;
  if (total <= 0) return cudaSuccess;
  from_nhwc16_kernel<<<grid_for(total), kThreads, 0, s>>>((const __half *)x, y, n, c, hw, cp);
  return cudaGetLastError();
}

static __global__ void act16_kernel(const __half *x, __half *y, int64_t count, int act,
                                    float alpha, float beta) {
  GRID_LOOP(i, count) y[i] = __float2half_rn(act16_apply(__half2float(x[i]), act, alpha, beta));
}

extern "C" cudaError_t sq_cuda_act16(const void *x, void *y, int64_t count, int act, float alpha,
                                     float beta, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  act16_kernel<<<grid_for(count), kThreads, 0, s>>>((const __half *)x, (__half *)y, count, act,
                                                    alpha, beta);
  return cudaGetLastError();
}

static __global__ void bias_act16_kernel(__half *y, const float *bias, int64_t count, int64_t cp,
                                         int64_t c, int act, float alpha, float beta) {
  GRID_LOOP(i, count) {
    int64_t ch = i % cp;
    float v = __half2float(y[i]);
    if (bias && ch < c) v += bias[ch];
    y[i] = __float2half_rn(act16_apply(v, act, alpha, beta));
  }
}

extern "C" cudaError_t sq_cuda_bias_act16(void *y, const float *bias, int64_t count, int64_t cp,
                                          int64_t c, int act, float alpha, float beta,
                                          cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  bias_act16_kernel<<<grid_for(count), kThreads, 0, s>>>((__half *)y, bias, count, cp, c, act,
                                                         alpha, beta);
  return cudaGetLastError();
}

static __global__ void binary16_kernel(int op, const __half *a, const void *b, int b_kind,
                                       int swap, __half *out, int64_t count, int64_t cp,
                                       int64_t c, int act, float alpha, float beta) {
  GRID_LOOP(i, count) {
    int64_t ch = i % cp;
    float x = __half2float(a[i]), y;
    if (b_kind == SQ_CUDA_B_TENSOR16)
      y = __half2float(((const __half *)b)[i]);
    else if (b_kind == SQ_CUDA_B_SCALAR)
      y = ((const float *)b)[0];
    else /* padding channels get the op's identity, so they stay finite */
      y = ch < c ? ((const float *)b)[ch] : (op == SQ_CUDA_BIN_MUL || op == SQ_CUDA_BIN_DIV);
    if (swap) {
      float t = x;
      x = y;
      y = t;
    }
    float v;
    switch (op) {
    case SQ_CUDA_BIN_ADD: v = x + y; break;
    case SQ_CUDA_BIN_SUB: v = x - y; break;
    case SQ_CUDA_BIN_MUL: v = x * y; break;
    case SQ_CUDA_BIN_DIV: v = ch < c ? x / y : 0.f; break;
    default: v = y; break;
    }
    out[i] = __float2half_rn(act16_apply(v, act, alpha, beta));
  }
}

extern "C" cudaError_t sq_cuda_binary16(int op, const void *a, const void *b, int b_kind, int swap,
                                        void *out, int64_t count, int64_t cp, int64_t c, int act,
                                        float alpha, float beta, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  binary16_kernel<<<grid_for(count), kThreads, 0, s>>>(op, (const __half *)a, b, b_kind, swap,
                                                       (__half *)out, count, cp, c, act, alpha,
                                                       beta);
  return cudaGetLastError();
}

static __global__ void affine16_kernel(const __half *x, __half *y, const float *scale,
                                       const float *shift, int64_t count, int64_t cp, int64_t c) {
  GRID_LOOP(i, count) {
    int64_t ch = i % cp;
    y[i] = ch < c ? __float2half_rn(__half2float(x[i]) * scale[ch] + shift[ch])
                  : __float2half_rn(0.f);
  }
}

extern "C" cudaError_t sq_cuda_affine16(const void *x, void *y, const float *scale,
                                        const float *shift, int64_t count, int64_t cp, int64_t c,
                                        cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  affine16_kernel<<<grid_for(count), kThreads, 0, s>>>((const __half *)x, (__half *)y, scale,
                                                       shift, count, cp, c);
  return cudaGetLastError();
}

static __global__ void resize16_kernel(const __half *x, __half *y, int64_t total, int64_t ih,
                                       int64_t iw, int64_t oh, int64_t ow, int64_t cp,
                                       const int32_t *yidx, const float *yw, const int32_t *xidx,
                                       const float *xw) {
  GRID_LOOP(i, total) {
    int64_t ch = i % cp, ox = (i / cp) % ow, oy = (i / (cp * ow)) % oh, img = i / (cp * ow * oh);
    const __half *src = x + img * ih * iw * cp;
    float acc = 0.f;
    for (int ky = 0; ky < 2; ky++) {
      float wy = yw[oy * 2 + ky];
      if (wy == 0.f) continue;
      int64_t row = (int64_t)yidx[oy * 2 + ky] * iw;
      float r = 0.f;
      for (int kx = 0; kx < 2; kx++) {
        float wx = xw[ox * 2 + kx];
        if (wx != 0.f) r += wx * __half2float(src[(row + xidx[ox * 2 + kx]) * cp + ch]);
      }
      acc += wy * r;
    }
    y[i] = __float2half_rn(acc);
  }
}

extern "C" cudaError_t sq_cuda_resize16(const void *x, void *y, int64_t n, int64_t ih, int64_t iw,
                                        int64_t oh, int64_t ow, int64_t cp, const int32_t *yidx,
                                        const float *yw, const int32_t *xidx, const float *xw,
                                        cudaStream_t s) {
  int64_t total = n * oh * ow * cp;
  if (total <= 0) return cudaSuccess;
  resize16_kernel<<<grid_for(total), kThreads, 0, s>>>((const __half *)x, (__half *)y, total, ih,
                                                       iw, oh, ow, cp, yidx, yw, xidx, xw);
  return cudaGetLastError();
}

static __global__ void concat16_kernel(const __half *x, __half *y, int64_t npix, int64_t cin_p,
                                       int64_t cin, int64_t cout_p, int64_t coff) {
  int64_t total = npix * cin;
  GRID_LOOP(i, total) {
    int64_t ch = i % cin, pix = i / cin;
    y[pix * cout_p + coff + ch] = x[pix * cin_p + ch];
  }
}

extern "C" cudaError_t sq_cuda_concat16(const void *x, void *y, int64_t npix, int64_t cin_p,
                                        int64_t cin, int64_t cout_p, int64_t coff,
                                        cudaStream_t s) {
  int64_t total = npix * cin;
  if (total <= 0) return cudaSuccess;
  concat16_kernel<<<grid_for(total), kThreads, 0, s>>>((const __half *)x, (__half *)y, npix,
                                                       cin_p, cin, cout_p, coff);
  return cudaGetLastError();
}

static __global__ void zero_pad16_kernel(__half *y, int64_t npix, int64_t cp, int64_t cfrom) {
  int64_t w = cp - cfrom, total = npix * w;
  GRID_LOOP(i, total) y[(i / w) * cp + cfrom + i % w] = __float2half_rn(0.f);
}

extern "C" cudaError_t sq_cuda_zero_pad16(void *y, int64_t npix, int64_t cp, int64_t cfrom,
                                          cudaStream_t s) {
  int64_t total = npix * (cp - cfrom);
  if (total <= 0) return cudaSuccess;
  zero_pad16_kernel<<<grid_for(total), kThreads, 0, s>>>((__half *)y, npix, cp, cfrom);
  return cudaGetLastError();
}

static __global__ void round16_kernel(const float *x, float *y, int64_t n) {
  GRID_LOOP(i, n) y[i] = __half2float(__float2half_rn(x[i]));
}

extern "C" cudaError_t sq_cuda_round16(const float *x, float *y, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  round16_kernel<<<grid_for(n), kThreads, 0, s>>>(x, y, n);
  return cudaGetLastError();
}
