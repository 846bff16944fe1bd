/* cuda_image.cu: the stages of sq_engine_run_image on the device: raw 8/16-bit (or float)
 * samples normalized into the plan's float input, and one output channel turned into
 * probabilities and a 0/1 mask per sample. The same arithmetic as gpu/onnx/image_io.c (explicit
 * _rn operations so no fused multiply-add changes the normalized value). */
#include <math.h>

#include "cuda_kernels.h"

static const int kThreads = 256;

static unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

template <typename T>
static __global__ void normalize_kernel(const T *raw, const float *scale, const float *offset,
                                        float *dst, int64_t total, int64_t hw) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t plane = i / hw;
    dst[i] = __fadd_rn(__fmul_rn((float)raw[i], scale[plane]), offset[plane]);
  }
}

extern "C" cudaError_t sq_cuda_normalize(int in_bytes, const void *raw, const float *scale,
                                         const float *offset, float *dst, int64_t n, int64_t c,
                                         int64_t hw, cudaStream_t s) {
  int64_t total = n * c * hw;
  if (total <= 0) return cudaSuccess;
  if (in_bytes == 1)
    normalize_kernel<<<grid_for(total), kThreads, 0, s>>>((const uint8_t *)raw, scale, offset, dst,
                                                          total, hw);
  else if (in_bytes == 2)
    normalize_kernel<<<grid_for(total), kThreads, 0, s>>>((const uint16_t *)raw, scale, offset,
                                                          dst, total, hw);
  else
    normalize_kernel<<<grid_for(total), kThreads, 0, s>>>((const float *)raw, scale, offset, dst,
                                                          total, hw);
  return cudaGetLastError();
}

static __global__ void post_kernel(int kind, const float *out, int64_t n, int64_t k, int64_t hw,
                                   int channel, const float *threshold, uint8_t *mask,
                                   float *prob) {
  int64_t total = n * hw;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t s = i / hw, px = i % hw;
    const float *x = out + s * k * hw;
    float p;
    if (kind == 0) {
      p = x[channel * hw + px];
    } else if (kind == 1) {
      p = 1.0f / (1.0f + expf(-x[channel * hw + px]));
    } else {
      float m = x[px];
      for (int64_t c = 1; c < k; c++) m = fmaxf(m, x[c * hw + px]);
      float sum = 0.0f;
      for (int64_t c = 0; c < k; c++) sum += expf(x[c * hw + px] - m);
      p = 1.0f - expf(x[channel * hw + px] - m) / sum;
    }
    if (prob) prob[i] = p;
    if (mask) mask[i] = p >= threshold[s]; /* NaN (either side) gives 0 */
  }
}

extern "C" cudaError_t sq_cuda_post(int kind, const float *out, int64_t n, int64_t k, int64_t hw,
                                    int channel, const float *threshold, uint8_t *mask,
                                    float *prob, cudaStream_t s) {
  int64_t total = n * hw;
  if (total <= 0) return cudaSuccess;
  post_kernel<<<grid_for(total), kThreads, 0, s>>>(kind, out, n, k, hw, channel, threshold, mask,
                                                   prob);
  return cudaGetLastError();
}
