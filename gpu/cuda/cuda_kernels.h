/* cuda_kernels.h: the launchers of our own CUDA kernels (*.cu), callable from C. Each takes an
 * explicit stream and only enqueues work; it returns the launch's cudaError_t (0 = queued), which
 * the caller maps to an SQ_E* code. Plain C types only: the .cu files never see engine headers. */
#ifndef SQ_CUDA_KERNELS_H
#define SQ_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activations: the same numbers as the engine's sq_act_t (NONE, RELU, LEAKY_RELU, CLIP,
 * SIGMOID) plus TANH; alpha/beta as in sq_act_t. */
enum {
  SQ_CUDA_ACT_NONE = 0,
  SQ_CUDA_ACT_RELU,
  SQ_CUDA_ACT_LEAKY,
  SQ_CUDA_ACT_CLIP,
  SQ_CUDA_ACT_SIGMOID,
  SQ_CUDA_ACT_TANH
};

/* y[i] = act(x[i]) for n floats (x == y allowed). */
cudaError_t sq_cuda_act(const float *x, float *y, int64_t n, int act, float alpha, float beta,
                        cudaStream_t s);
/* y[n][c][i] = act(y[n][c][i] + bias[c]) over outer*c*inner floats; bias may be NULL. */
cudaError_t sq_cuda_bias_act(float *y, const float *bias, int64_t outer, int64_t c, int64_t inner,
                             int act, float alpha, float beta, cudaStream_t s);

/* Binary elementwise ops with numpy broadcasting. Strides are in elements of a/b for each
 * output dim (0 where broadcast); rank <= 8. The fused activation applies to the result. */
enum { SQ_CUDA_BIN_ADD = 0, SQ_CUDA_BIN_SUB, SQ_CUDA_BIN_MUL, SQ_CUDA_BIN_DIV, SQ_CUDA_BIN_B };
typedef struct {
  int rank;
  int64_t dims[8];
  int64_t sa[8], sb[8];
} sq_cuda_bcast_t;
cudaError_t sq_cuda_binary(int op, const float *a, const float *b, float *out,
                           const sq_cuda_bcast_t *g, int act, float alpha, float beta,
                           cudaStream_t s);

/* Separable 2-D resize of nc planes ih x iw -> oh x ow: two taps per output row/column,
 * idx clamped to the input, weights w (nearest: 0/1). Taps computed on the host. */
cudaError_t sq_cuda_resize2d(const float *x, float *y, int64_t nc, int64_t ih, int64_t iw,
                             int64_t oh, int64_t ow, const int32_t *yidx, const float *yw,
                             const int32_t *xidx, const float *xw, cudaStream_t s);

/* y = (x - mean) * scale + shift per channel, with scale/shift precomputed on the host. */
cudaError_t sq_cuda_affine_channel(const float *x, float *y, const float *scale, const float *shift,
                                   int64_t outer, int64_t c, int64_t inner, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
