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

/* ---- fp16 NHWC (tensor-core) layout: a 4-D tensor [N, C, H, W] stored as [N][H][W][Cp] halves,
 * Cp = C rounded up to 8 (cuDNN's tensor cores want multiples of 8); channels >= C are padding
 * that every kernel writes (zero where it can), so it never holds NaN/Inf. Half buffers are
 * passed as void* (the .cu side reads them as __half). Arithmetic is fp32; rounding to half
 * happens once per stored value. `count` = N*H*W*Cp. ---- */

/* y[n][p][c] = x[n][c][p] (c < C, else 0), p over hw pixels: NCHW float -> NHWC half. */
cudaError_t sq_cuda_to_nhwc16(const float *x, void *y, int64_t n, int64_t c, int64_t hw, int64_t cp,
                              cudaStream_t s);
/* The reverse (padding dropped). */
cudaError_t sq_cuda_from_nhwc16(const void *x, float *y, int64_t n, int64_t c, int64_t hw,
                                int64_t cp, cudaStream_t s);
/* y = act(x) over count halves (x == y allowed). */
cudaError_t sq_cuda_act16(const void *x, void *y, int64_t count, int act, float alpha, float beta,
                          cudaStream_t s);
/* y[i] = act(y[i] + bias[i % cp]) with bias[c] = 0 for c >= C (bias may be NULL). */
cudaError_t sq_cuda_bias_act16(void *y, const float *bias, int64_t count, int64_t cp, int64_t c,
                               int act, float alpha, float beta, cudaStream_t s);
/* Binary op (SQ_CUDA_BIN_*) of half a with b, then act: b_kind 0 = half tensor of a's shape,
 * 1 = float per channel [C] (padding channels read as the op's identity), 2 = float scalar.
 * swap: out = op(b, a) (a constant first operand). */
enum { SQ_CUDA_B_TENSOR16 = 0, SQ_CUDA_B_CHANNEL = 1, SQ_CUDA_B_SCALAR = 2 };
cudaError_t sq_cuda_binary16(int op, const void *a, const void *b, int b_kind, int swap, void *out,
                             int64_t count, int64_t cp, int64_t c, int act, float alpha, float beta,
                             cudaStream_t s);
/* y = x * scale[c] + shift[c] per channel (float [C]; padding channels -> 0). */
cudaError_t sq_cuda_affine16(const void *x, void *y, const float *scale, const float *shift,
                             int64_t count, int64_t cp, int64_t c, cudaStream_t s);
/* sq_cuda_resize2d on NHWC halves: n images of ih x iw x cp -> oh x ow x cp. */
cudaError_t sq_cuda_resize16(const void *x, void *y, int64_t n, int64_t ih, int64_t iw, int64_t oh,
                             int64_t ow, int64_t cp, const int32_t *yidx, const float *yw,
                             const int32_t *xidx, const float *xw, cudaStream_t s);
/* Concat on channels: copies channels [0, cin) of every pixel of x (cin_p per pixel) into y
 * (cout_p per pixel) at channel offset coff; npix = N*H*W. */
cudaError_t sq_cuda_concat16(const void *x, void *y, int64_t npix, int64_t cin_p, int64_t cin,
                             int64_t cout_p, int64_t coff, cudaStream_t s);
/* Zeroes channels [cfrom, cp) of every pixel (a Concat's padding). */
cudaError_t sq_cuda_zero_pad16(void *y, int64_t npix, int64_t cp, int64_t cfrom, cudaStream_t s);
/* y[i] = x[i] rounded to the nearest half (ties to even), as float: Cast(to=FLOAT16) in fp32. */
cudaError_t sq_cuda_round16(const float *x, float *y, int64_t n, cudaStream_t s);

/* ---- image I/O (sq_engine_run_image; gpu/onnx/image_io.c is the host reference) ---- */
/* dst[n][c][i] = raw[n][c][i] * scale[n*C+c] + offset[n*C+c]; raw of in_bytes 1, 2 or 4. */
cudaError_t sq_cuda_normalize(int in_bytes, const void *raw, const float *scale,
                              const float *offset, float *dst, int64_t n, int64_t c, int64_t hw,
                              cudaStream_t s);
/* From out [n][k][hw]: the foreground probability (kind SQ_IMAGE_OUT_*: 0 the channel as it is,
 * 1 its sigmoid, 2 one minus softmax at the channel) into prob (may be NULL) and the 0/1 mask
 * prob >= threshold[n] into mask (may be NULL; NaN threshold -> 0). */
cudaError_t sq_cuda_post(int kind, const float *out, int64_t n, int64_t k, int64_t hw, int channel,
                         const float *threshold, uint8_t *mask, float *prob, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
