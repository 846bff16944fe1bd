/* kern_conv.h: what kern_conv.c shares with its fast paths in kern_conv_winograd.c: the 3x3
 * stride-1 Winograd convolution and a vectorized row interleave. Private to gpu/onnx. */
#ifndef SQ_KERN_CONV_H
#define SQ_KERN_CONV_H

#include "engine_internal.h"

/* Geometry of one 2-D, group-1, 3x3, stride-1, dilation-1 convolution over NCHW float32. */
typedef struct {
  int64_t n, c, h, w; /* input */
  int64_t m, oh, ow;  /* output channels and size */
  int64_t ph, pw;     /* leading pads (trailing ones follow from oh/ow) */
} sq_conv3x3_t;

/* Winograd F(2x2,3x3): y[n, m, oh, ow] = conv(x, w[m, c, 3, 3]) + bias, then node's fused
 * activation. bias may be NULL. Uses cpu's scratch buffer and pool; sgemm per tile block runs
 * single-threaded inside the pool's workers. Returns 0 or SQ_ENOMEM (err names the node). */
int sq_conv_winograd(sq_cpu_t *cpu, const sq_node_t *node, const sq_conv3x3_t *g, const float *x,
                     const float *w, const float *bias, float *y, sq_error_t *err);

/* dst[2i] = act(s0[i] + bias), dst[2i + 1] = act(s1[i] + bias) for i < n, act = ReLU when
 * relu, else none: a 2-wide ConvTranspose row (vectorized; kern_conv_winograd.c). */
void sq_conv_interleave2(const float *s0, const float *s1, int64_t n, float bias, bool relu,
                         float *dst);

#endif
