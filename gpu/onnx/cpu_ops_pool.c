/* cpu_ops_pool.c: GlobalAveragePool, GlobalMaxPool (any spatial rank) and AveragePool (1-D/2-D,
 * geometry from sq_pool_params: pads, auto_pad, ceil_mode, dilations, count_include_pad).
 * float32. Executor thread; (n, c) planes fan out over the pool. */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

/* ---- global pooling: out is N x C x 1 x ... x 1 ---- */
static int shape_global(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                        int nout, sq_error_t *err) {
  (void)nin;
  (void)nout;
  if (in[0].rank < 3) return sq_node_error(err, SQ_EMODEL_LOAD, node, "rank %d", in[0].rank);
  if (in[0].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[0].dtype));
  out[0] = in[0];
  out[0].data = NULL;
  for (int d = 2; d < in[0].rank; d++) out[0].dims[d] = 1;
  return 0;
}

typedef struct {
  const float *x;
  float *y;
  int64_t plane;
  bool max;
} global_t;

static void global_range(void *arg, int64_t b, int64_t e) {
  const global_t *g = arg;
  for (int64_t p = b; p < e; p++) {
    const float *x = g->x + p * g->plane;
    if (g->max) {
      float m = -INFINITY;
      for (int64_t i = 0; i < g->plane; i++)
        if (x[i] > m || isnan(x[i])) m = x[i];
      g->y[p] = m;
    } else {
      /* double accumulator: planes of 10^5+ elements lose precision in float */
      double s = 0;
      for (int64_t i = 0; i < g->plane; i++) s += x[i];
      g->y[p] = (float)(s / (double)g->plane);
    }
  }
}

static int run_global(sq_cpu_t *cpu, const sq_view_t *in, const sq_view_t *out, bool max) {
  global_t g = {in[0].data, out[0].data, 1, max};
  for (int d = 2; d < in[0].rank; d++) g.plane *= in[0].dims[d];
  sq_cpu_parallel_for(cpu, in[0].dims[0] * in[0].dims[1], 1 + (1 << 14) / (g.plane + 1),
                      global_range, &g);
  return 0;
}

SQ_SHAPE_FN(sq_shape_globalaveragepool) {
  return shape_global(node, in, nin, out, nout, err);
}
SQ_SHAPE_FN(sq_shape_globalmaxpool) {
  return shape_global(node, in, nin, out, nout, err);
}
SQ_KERNEL_FN(sq_kern_globalaveragepool) {
  (void)node, (void)nin, (void)nout, (void)err;
  return run_global(cpu, in, out, false);
}
SQ_KERNEL_FN(sq_kern_globalmaxpool) {
  (void)node, (void)nin, (void)nout, (void)err;
  return run_global(cpu, in, out, true);
}

/* ---- AveragePool ---- */
SQ_SHAPE_FN(sq_shape_averagepool) {
  if (nout > 1) return sq_node_error(err, SQ_EMODEL_LOAD, node, "one output");
  return sq_shape_pool(node, in, nin, out, nout, err);
}

typedef struct {
  const sq_pool_t *p;
  const float *x;
  float *y;
  bool include_pad;
} avgpool_t;

static void avgpool_range(void *arg, int64_t b, int64_t e) {
  const avgpool_t *a = arg;
  const sq_pool_t *p = a->p;
  for (int64_t plane = b; plane < e; plane++) {
    const float *x = a->x + plane * p->h * p->w;
    float *y = a->y + plane * p->oh * p->ow;
    for (int64_t oy = 0; oy < p->oh; oy++)
      for (int64_t ox = 0; ox < p->ow; ox++) {
        float s = 0;
        int64_t valid = 0, padded = 0;
        for (int64_t ky = 0; ky < p->kh; ky++) {
          int64_t iy = oy * p->sh - p->ph + ky * p->dh;
          /* count_include_pad counts the window inside the padded input, not past it */
          bool y_in_pad = iy >= -p->ph && iy < p->h + p->ph_end;
          bool y_in = iy >= 0 && iy < p->h;
          for (int64_t kx = 0; kx < p->kw; kx++) {
            int64_t ix = ox * p->sw - p->pw + kx * p->dw;
            if (y_in_pad && ix >= -p->pw && ix < p->w + p->pw_end) padded++;
            if (!y_in || ix < 0 || ix >= p->w) continue;
            s += x[iy * p->w + ix];
            valid++;
          }
        }
        int64_t cnt = a->include_pad ? padded : valid;
        y[oy * p->ow + ox] = cnt ? s / (float)cnt : 0.0f;
      }
  }
}

SQ_KERNEL_FN(sq_kern_averagepool) {
  (void)nin, (void)nout;
  sq_pool_t p;
  int rc = sq_pool_params(node, &in[0], &p, err);
  if (rc) return rc;
  avgpool_t a = {&p, in[0].data, out[0].data, sq_attr_int(node, "count_include_pad", 0) != 0};
  sq_cpu_parallel_for(cpu, p.n * p.c, 1, avgpool_range, &a);
  return 0;
}
