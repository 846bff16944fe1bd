/* image_io.c: sq_engine_run_image, a run with pre- and postprocessing next to the model: raw
 * 8/16-bit (or float) samples normalized into the plan's input, one output channel turned into
 * foreground probabilities and thresholded per sample. A backend with a run_image hook does it
 * on its device (the CUDA kernels follow the host functions here exactly); for the others the
 * stages run here on the host around sq_engine_run. Executor thread (the context's owner). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

void sq_image_normalize(const sq_engine_image_io_t *io, int64_t n, int64_t c, int64_t hw,
                        float *dst) {
  for (int64_t plane = 0; plane < n * c; plane++) {
    float s = io->scale[plane], o = io->offset[plane];
    float *d = dst + plane * hw;
    int64_t base = plane * hw;
    if (io->in_bytes == 1) {
      const uint8_t *v = (const uint8_t *)io->in + base;
      for (int64_t i = 0; i < hw; i++) d[i] = (float)v[i] * s + o;
    } else if (io->in_bytes == 2) {
      const uint16_t *v = (const uint16_t *)io->in + base;
      for (int64_t i = 0; i < hw; i++) d[i] = (float)v[i] * s + o;
    } else {
      const float *v = (const float *)io->in + base;
      for (int64_t i = 0; i < hw; i++) d[i] = v[i] * s + o;
    }
  }
}

/* The foreground probability of pixel i of sample n (out is [n][k][hw]). */
static float post_prob(const sq_engine_image_io_t *io, const float *x, int64_t k, int64_t hw,
                       int64_t i) {
  if (io->kind == SQ_IMAGE_OUT_PROB) return x[io->channel * hw + i];
  if (io->kind == SQ_IMAGE_OUT_LOGITS) return 1.0f / (1.0f + expf(-x[io->channel * hw + i]));
  float m = x[i];
  for (int64_t c = 1; c < k; c++) m = fmaxf(m, x[c * hw + i]);
  float sum = 0.0f;
  for (int64_t c = 0; c < k; c++) sum += expf(x[c * hw + i] - m);
  return 1.0f - expf(x[io->channel * hw + i] - m) / sum;
}

void sq_image_post(const sq_engine_image_io_t *io, const float *out, int64_t n, int64_t k,
                   int64_t hw) {
  for (int64_t s = 0; s < n; s++) {
    const float *x = out + s * k * hw;
    float t = io->threshold ? io->threshold[s] : NAN;
    for (int64_t i = 0; i < hw; i++) {
      float p = post_prob(io, x, k, hw, i);
      if (io->prob) io->prob[s * hw + i] = p;
      if (io->mask) io->mask[s * hw + i] = p >= t; /* NaN (either side) gives 0 */
    }
  }
}

int sq_engine_run_image(sq_engine_plan_t *p, sq_backend_ctx_t *ctx, const sq_engine_image_io_t *io,
                        sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  if (p->ninputs != 1)
    return sq_error_set(err, SQ_EINVAL, "run_image: the plan has %d unbound inputs, needs 1",
                        p->ninputs);
  const sq_tensor_t *ti = &g->tensors[p->inputs[0]];
  if (ti->dtype != SQ_DT_FLOAT || ti->rank != 4)
    return sq_error_set(err, SQ_EINVAL, "run_image: input '%s' is not float [N, C, H, W]",
                        ti->name);
  if (io->output < 0 || io->output >= g->noutputs)
    return sq_error_set(err, SQ_EINVAL, "run_image: no output %d", io->output);
  const sq_tensor_t *to = &g->tensors[g->outputs[io->output]];
  if (to->dtype != SQ_DT_FLOAT || to->rank != 4 || to->dims[0] != ti->dims[0])
    return sq_error_set(err, SQ_EINVAL, "run_image: output '%s' is not float [N, K, H, W]",
                        to->name);
  if (io->channel < 0 || io->channel >= to->dims[1] ||
      (io->kind != SQ_IMAGE_OUT_PROB && io->kind != SQ_IMAGE_OUT_LOGITS &&
       io->kind != SQ_IMAGE_OUT_SOFTMAX))
    return sq_error_set(err, SQ_EINVAL, "run_image: channel %d / kind %d for output '%s'",
                        io->channel, io->kind, to->name);
  if ((io->in_bytes != 1 && io->in_bytes != 2 && io->in_bytes != 4) || !io->in || !io->scale ||
      !io->offset || (io->mask && !io->threshold) || (!io->mask && !io->prob))
    return sq_error_set(err, SQ_EINVAL, "run_image: incomplete image I/O");
  if (ctx->arena_bytes < p->arena_bytes)
    return sq_error_set(err, SQ_EINVAL, "run_image: context arena %zu bytes < plan's %zu",
                        ctx->arena_bytes, p->arena_bytes);
  sq_backend_t *b = ctx->backend;
  if (b->iface->run_image) {
    void *state = NULL;
    int rc = sq_engine_bind(p, b, &state, err);
    if (rc) return rc;
    rc = b->iface->run_image(ctx, p, state, io, err);
    int rc2 = b->iface->sync ? b->iface->sync(ctx, err) : 0;
    return rc ? rc : rc2;
  }
  int64_t n = ti->dims[0], c = ti->dims[1], hw = ti->dims[2] * ti->dims[3];
  int nout = g->noutputs;
  sq_engine_tensor_t in, *outs = calloc((size_t)nout, sizeof *outs);
  int rc = outs ? 0 : sq_error_set(err, SQ_ENOMEM, "run_image: out of memory");
  for (int i = 0; i < nout && !rc; i++) {
    sq_engine_plan_output_info(p, i, &outs[i]);
    outs[i].data = malloc(outs[i].bytes ? outs[i].bytes : 1);
    if (!outs[i].data) rc = sq_error_set(err, SQ_ENOMEM, "run_image: out of memory");
  }
  if (!rc) {
    sq_engine_plan_input_info(p, 0, &in);
    in.data = malloc(in.bytes ? in.bytes : 1);
    if (!in.data) rc = sq_error_set(err, SQ_ENOMEM, "run_image: out of memory for the input");
  }
  if (!rc) {
    sq_image_normalize(io, n, c, hw, in.data);
    rc = sq_engine_run(p, ctx, &in, 1, outs, nout, err);
    free(in.data);
  }
  if (!rc) sq_image_post(io, outs[io->output].data, n, to->dims[1], to->dims[2] * to->dims[3]);
  for (int i = 0; outs && i < nout; i++) free(outs[i].data);
  free(outs);
  return rc;
}

size_t sq_engine_plan_const_bytes(const sq_engine_plan_t *p) {
  const sq_graph_t *g = &p->graph;
  size_t total = 0;
  char *seen = calloc((size_t)g->ntensors + 1, 1);
  if (!seen) return 0;
  for (int i = 0; i < p->norder; i++) {
    const sq_node_t *nd = &g->nodes[p->order[i]];
    for (int k = 0; k < nd->nin; k++) {
      int t = nd->in[k];
      if (t < 0 || seen[t] || g->tensors[t].kind != SQ_TENSOR_CONST) continue;
      seen[t] = 1;
      total += sq_tensor_bytes(&g->tensors[t]);
    }
  }
  free(seen);
  return total;
}
