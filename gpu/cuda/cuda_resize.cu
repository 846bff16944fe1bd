/* cuda_resize.cu: separable 2-D resize (nearest and linear Resize on the last two axes): every
 * output pixel mixes two rows x two columns of its plane with the host-computed taps. */
#include "cuda_kernels.h"

static __global__ void resize2d_kernel(const float *x, float *y, int64_t n, int64_t ih,
                                       int64_t iw, int64_t oh, int64_t ow, const int32_t *yidx,
                                       const float *yw, const int32_t *xidx, const float *xw) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ox = i % ow, oy = (i / ow) % oh, plane = i / (ow * oh);
    const float *src = x + plane * ih * iw;
    float acc = 0.f;
    for (int ky = 0; ky < 2; ky++) {
      float wy = yw[oy * 2 + ky];
      if (wy == 0.f) continue;
      const float *row = src + (int64_t)yidx[oy * 2 + ky] * iw;
      float r = 0.f;
      for (int kx = 0; kx < 2; kx++) {
        float wx = xw[ox * 2 + kx];
        if (wx != 0.f) r += wx * row[xidx[ox * 2 + kx]];
      }
      acc += wy * r;
    }
    y[i] = acc;
  }
}

extern "C" cudaError_t sq_cuda_resize2d(const float *x, float *y, int64_t nc, int64_t ih,
                                        int64_t iw, int64_t oh, int64_t ow, const int32_t *yidx,
                                        const float *yw, const int32_t *xidx, const float *xw,
                                        cudaStream_t s) {
  int64_t n = nc * oh * ow;
  if (n <= 0) return cudaSuccess;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  resize2d_kernel<<<(unsigned)blocks, 256, 0, s>>>(x, y, n, ih, iw, oh, ow, yidx, yw, xidx, xw);
  return cudaGetLastError();
}
