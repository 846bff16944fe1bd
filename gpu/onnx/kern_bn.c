/* kern_bn.c: BatchNormalization in inference mode (y = (x - mean) / sqrt(var + eps) * scale + B)
 * for the graphs where it could not be folded into a preceding Conv. Executor thread. */
#include <math.h>

#include "engine_internal.h"

typedef struct {
  const float *x, *scale, *bias, *mean, *var;
  float *y;
  float eps;
  int64_t c, plane;
} bn_t;

static void bn_range(void *arg, int64_t b, int64_t e) {
  const bn_t *a = arg;
  for (int64_t i = b; i < e; i++) { /* i = n * C + c */
    int64_t c = i % a->c;
    float k = a->scale[c] / sqrtf(a->var[c] + a->eps), m = a->mean[c], bb = a->bias[c];
    const float *x = a->x + i * a->plane;
    float *y = a->y + i * a->plane;
    for (int64_t j = 0; j < a->plane; j++) y[j] = (x[j] - m) * k + bb;
  }
}

int sq_shape_batchnorm(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                       int nout, sq_error_t *err) {
  if (nin < 5 || in[0].rank < 2 || in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "needs float X of rank >= 2 and 5 inputs");
  if (sq_attr_int(node, "training_mode", 0))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "training_mode");
  for (int k = 1; k < 5; k++)
    if (in[k].dtype != SQ_DT_FLOAT || sq_view_numel(&in[k]) != in[0].dims[1])
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "parameter %d must have C floats", k);
  for (int k = 0; k < nout; k++) { /* old opsets' running-stat outputs are never computed */
    out[k] = in[k == 0 ? 0 : 1];
    out[k].data = NULL;
  }
  return 0;
}

int sq_kern_batchnorm(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                      const sq_view_t *out, int nout, sq_error_t *err) {
  if (nin < 5 || in[0].rank < 2 || in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "needs float X of rank >= 2 and 5 inputs");
  if (sq_attr_int(node, "training_mode", 0))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "training_mode");
  int64_t c = in[0].dims[1];
  for (int k = 1; k < 5; k++)
    if (in[k].dtype != SQ_DT_FLOAT || sq_view_numel(&in[k]) != c)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "parameter %d must have C values", k);
  bn_t a = {in[0].data,
            in[1].data,
            in[2].data,
            in[3].data,
            in[4].data,
            out[0].data,
            sq_attr_float(node, "epsilon", 1e-5f),
            c,
            1};
  for (int d = 2; d < in[0].rank; d++) a.plane *= in[0].dims[d];
  sq_cpu_parallel_for(cpu, in[0].dims[0] * c, 1, bn_range, &a);
  return 0;
}
