/* cuda_backend.c: the `cuda:N` backend behind sq_backend_iface_t. load binds a plan: checks every
 * node, plans its layouts (cuda_layout.c: fp32, or fp16 NHWC where the ops allow, with the
 * conversions between), uploads constants, builds descriptors, picks conv algorithms and
 * converts fp16 weights once. A context is a stream with its cuDNN/cuBLAS handles, the
 * activation arena, workspace, image I/O buffers and pinned staging. A run enqueues copies,
 * conversions and kernels on that stream (for sq_engine_run_image also the normalization of raw
 * samples and the threshold, so only raw pixels and masks cross PCIe); from the second run of a
 * plan (and kind of run) on a context the whole sequence is captured once into a CUDA graph and
 * replayed. sync waits and hands the outputs back. Every CUDA error becomes SQ_EOOM_DEVICE or
 * SQ_EDEVICE with the call named; nothing aborts. Threads: a context on one executor thread at
 * a time; binding under the plan's lock and the backend's load lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define ALIGN_UP(x) (((x) + 255) & ~(size_t)255)
#define BLAS_WS_BYTES ((size_t)4 << 20) /* cuBLAS's own workspace, fixed so it can be captured */

int sq_cuda_check(cudaError_t e, sq_error_t *err, const char *what) {
  if (e == cudaSuccess) return 0;
  int code = e == cudaErrorMemoryAllocation ? SQ_EOOM_DEVICE : SQ_EDEVICE;
  return sq_error_set(err, code, "cuda: %s: %s (%s)", what, cudaGetErrorString(e),
                      cudaGetErrorName(e));
}

int sq_cudnn_check(cudnnStatus_t s, sq_error_t *err, const char *what) {
  if (s == CUDNN_STATUS_SUCCESS) return 0;
  int code = s == CUDNN_STATUS_ALLOC_FAILED    ? SQ_EOOM_DEVICE
             : s == CUDNN_STATUS_NOT_SUPPORTED ? SQ_EUNSUPPORTED
                                               : SQ_EDEVICE;
  return sq_error_set(err, code, "cudnn: %s: %s", what, cudnnGetErrorString(s));
}

int sq_cublas_check(cublasStatus_t s, sq_error_t *err, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return 0;
  int code = s == CUBLAS_STATUS_ALLOC_FAILED ? SQ_EOOM_DEVICE : SQ_EDEVICE;
  return sq_error_set(err, code, "cublas: %s: status %d", what, (int)s);
}

int sq_cuda_upload(const void *host, size_t bytes, void **dev, sq_error_t *err) {
  *dev = NULL;
  int rc = sq_cuda_check(cudaMalloc(dev, bytes ? bytes : 1), err, "cudaMalloc (constants)");
  if (!rc && bytes)
    rc = sq_cuda_check(cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice), err,
                       "cudaMemcpy (constants)");
  if (rc && *dev) {
    cudaFree(*dev);
    *dev = NULL;
  }
  return rc;
}

int sq_cuda_desc4(cudnnTensorDescriptor_t *d, const sq_view_t *v, sq_error_t *err) {
  return sq_cuda_desc4_mode(d, v, SQ_CUDA_F32, err);
}

int sq_cuda_desc4_mode(cudnnTensorDescriptor_t *d, const sq_view_t *v, int mode, sq_error_t *err) {
  int dims[4] = {1, 1, 1, 1};
  if (v->rank < 1 || v->rank > 4)
    return sq_error_set(err, SQ_EUNSUPPORTED, "cuda: rank %d tensor", v->rank);
  if (v->rank == 3) { /* n, c, w -> n, c, 1, w */
    dims[0] = (int)v->dims[0], dims[1] = (int)v->dims[1], dims[3] = (int)v->dims[2];
  } else {
    for (int i = 0; i < v->rank; i++) dims[4 - v->rank + i] = (int)v->dims[i];
  }
  int f16 = mode == SQ_CUDA_F16;
  if (f16 && v->rank != 4) return sq_error_set(err, SQ_EINTERNAL, "cuda: fp16 needs 4-D");
  if (f16) dims[1] = (int)SQ_CUDA_CPAD(dims[1]);
  int rc = sq_cudnn_check(cudnnCreateTensorDescriptor(d), err, "cudnnCreateTensorDescriptor");
  if (rc) return rc;
  return sq_cudnn_check(cudnnSetTensor4dDescriptor(*d, f16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                                   f16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT,
                                                   dims[0], dims[1], dims[2], dims[3]),
                        err, "cudnnSetTensor4dDescriptor");
}

int64_t sq_cuda_count16(const sq_view_t *v) {
  if (v->rank != 4) return 0;
  return v->dims[0] * v->dims[2] * v->dims[3] * SQ_CUDA_CPAD(v->dims[1]);
}

int sq_cuda_device_count(const char **why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError(); /* the runtime keeps the error sticky for the next call otherwise */
    return 0;
  }
  if (n <= 0 && why) *why = "no CUDA device";
  return n > 0 ? n : 0;
}

/* ---- plan binding ---- */

typedef struct {
  sq_cuda_layout_t lay;
  void **step_state; /* per step (NODE) */
  int *fused_ok;     /* per step: a Conv doing its Add (cuDNN accepted the fusion) */
  void *dconst;      /* every constant a node reads, packed */
  size_t *doff;      /* per buffer: offset in dconst (CONST) or din (INPUT) */
  size_t in_bytes;   /* graph inputs (aligned) */
  size_t *in_off;    /* per unbound input: offset in din and in pinned staging */
  size_t *out_off;   /* per graph output: offset in pinned staging after the inputs */
  size_t out_bytes;
  size_t ws_bytes; /* largest workspace a node asked for */
} cuda_plan_t;

static int node_check(const sq_engine_plan_t *p, const sq_node_t *n, sq_error_t *err) {
  const sq_cuda_op_t *op = sq_cuda_op(n->op);
  if (!op) return sq_node_error(err, SQ_EUNSUPPORTED, n, "no CUDA kernel for this op");
  sq_view_t in[n->nin + 1], out[n->nout + 1];
  sq_cuda_host_views(p, n, in, out);
  return op->check ? op->check(n, in, out, err) : 0;
}

int sq_cuda_plan_check(const sq_engine_plan_t *p, sq_error_t *err) {
  char msg[sizeof err->msg];
  size_t len = 0;
  int bad = 0;
  msg[0] = '\0';
  for (int i = 0; i < p->norder; i++) {
    sq_error_t e1 = {0};
    const sq_node_t *n = &p->graph.nodes[p->order[i]];
    if (!node_check(p, n, &e1)) continue;
    int w = snprintf(msg + len, sizeof msg - len, "%s%s", bad ? "; " : "", e1.msg);
    if (w > 0) len += (size_t)w < sizeof msg - len ? (size_t)w : sizeof msg - len - 1;
    bad++;
  }
  if (bad)
    return sq_error_set(err, SQ_EUNSUPPORTED, "cuda backend: %d node(s) unsupported: %s", bad, msg);
  return 0;
}

static void plan_free(cuda_plan_t *cp, const sq_engine_plan_t *p) {
  if (!cp) return;
  for (int s = 0; s < cp->lay.nsteps && cp->step_state; s++) {
    const sq_cuda_step_t *st = &cp->lay.steps[s];
    if (st->kind != SQ_CUDA_STEP_NODE || !cp->step_state[s]) continue;
    const sq_cuda_op_t *op = sq_cuda_op(p->graph.nodes[p->order[st->pos]].op);
    if (op && op->release) op->release(cp->step_state[s]);
  }
  free(cp->step_state);
  free(cp->fused_ok);
  if (cp->dconst) cudaFree(cp->dconst);
  free(cp->doff);
  free(cp->in_off);
  free(cp->out_off);
  sq_cuda_layout_free(&cp->lay);
  free(cp);
}

/* unload gets no plan; the state keeps what release needs */
typedef struct {
  cuda_plan_t *cp;
  const sq_engine_plan_t *p;
} cuda_bound_t;

/* The device address of buffer b for a run on context cc (NULL before the context grew). */
static void *buf_ptr(const sq_cuda_ctx_t *cc, const cuda_plan_t *cp, int b) {
  const sq_cuda_buf_t *u = &cp->lay.bufs[b];
  if (u->where == SQ_CUDA_BUF_ARENA) return cc ? cc->arena + u->offset : NULL;
  if (u->where == SQ_CUDA_BUF_CONST) return (uint8_t *)cp->dconst + cp->doff[b];
  return cc ? cc->din + cp->doff[b] : NULL;
}

/* The buffer node input/output tensor t is read/written through in `mode`. */
static int tensor_buf(const cuda_plan_t *cp, const sq_engine_plan_t *p, int t, int mode) {
  if (p->graph.tensors[t].kind == SQ_TENSOR_CONST) mode = SQ_CUDA_F32;
  return cp->lay.buf_of[t * 2 + mode];
}

static int cuda_load(sq_backend_t *b, const sq_engine_plan_t *p, void **state, sq_error_t *err) {
  sq_cuda_backend_t *be = b->context;
  const sq_graph_t *g = &p->graph;
  int rc = sq_cuda_plan_check(p, err);
  if (rc) return rc;
  rc = sq_cuda_check(cudaSetDevice(be->device), err, "cudaSetDevice");
  if (rc) return rc;
  cuda_plan_t *cp = calloc(1, sizeof *cp);
  cuda_bound_t *bound = calloc(1, sizeof *bound);
  uint8_t *staging = NULL;
  if (!cp || !bound) goto oom;
  rc = sq_cuda_layout_plan(p, be->precision, &cp->lay, err);
  if (rc) goto fail;
  const sq_cuda_layout_t *lay = &cp->lay;
  cp->step_state = calloc((size_t)lay->nsteps + 1, sizeof *cp->step_state);
  cp->fused_ok = calloc((size_t)lay->nsteps + 1, sizeof *cp->fused_ok);
  cp->doff = calloc((size_t)lay->nbufs + 1, sizeof *cp->doff);
  cp->in_off = calloc((size_t)p->ninputs + 1, sizeof *cp->in_off);
  cp->out_off = calloc((size_t)g->noutputs + 1, sizeof *cp->out_off);
  if (!cp->step_state || !cp->fused_ok || !cp->doff || !cp->in_off || !cp->out_off) goto oom;
  /* constants: one block, 256-byte aligned pieces; inputs: their offsets in din */
  size_t cbytes = 0;
  for (int i = 0; i < lay->nbufs; i++) {
    const sq_cuda_buf_t *u = &lay->bufs[i];
    if (u->where != SQ_CUDA_BUF_CONST) continue;
    cp->doff[i] = cbytes;
    cbytes += ALIGN_UP(u->bytes);
  }
  staging = malloc(cbytes ? cbytes : 1);
  if (!staging) goto oom;
  for (int i = 0; i < lay->nbufs; i++) {
    const sq_cuda_buf_t *u = &lay->bufs[i];
    if (u->where == SQ_CUDA_BUF_CONST && g->tensors[u->tensor].data)
      memcpy(staging + cp->doff[i], g->tensors[u->tensor].data, u->bytes);
  }
  rc = sq_cuda_upload(staging, cbytes, &cp->dconst, err);
  free(staging);
  staging = NULL;
  if (rc) goto fail;
  for (int i = 0; i < p->ninputs; i++) {
    cp->in_off[i] = cp->in_bytes;
    int bi = lay->buf_of[p->inputs[i] * 2 + SQ_CUDA_F32];
    if (bi >= 0) cp->doff[bi] = cp->in_bytes;
    cp->in_bytes += ALIGN_UP(sq_tensor_bytes(&g->tensors[p->inputs[i]]));
  }
  for (int i = 0; i < g->noutputs; i++) {
    cp->out_off[i] = cp->out_bytes;
    cp->out_bytes += ALIGN_UP(sq_tensor_bytes(&g->tensors[g->outputs[i]]));
  }
  /* per-node preparation on the backend's load-time handle (conv algorithm search) */
  pthread_mutex_lock(&be->lock);
  for (int s = 0; s < lay->nsteps && !rc; s++) {
    const sq_cuda_step_t *st = &lay->steps[s];
    if (st->kind != SQ_CUDA_STEP_NODE) continue;
    const sq_node_t *n = &g->nodes[p->order[st->pos]];
    const sq_cuda_op_t *op = sq_cuda_op(n->op);
    if (!op->prepare) continue;
    sq_view_t in[n->nin + 1], dev[n->nin + 1], out[n->nout + 1];
    sq_cuda_host_views(p, n, in, out);
    memcpy(dev, in, sizeof dev);
    for (int k = 0; k < n->nin; k++) {
      dev[k].data = NULL;
      if (n->in[k] >= 0 && g->tensors[n->in[k]].kind == SQ_TENSOR_CONST) {
        int bi = tensor_buf(cp, p, n->in[k], st->mode);
        if (bi >= 0) dev[k].data = buf_ptr(NULL, cp, bi);
      }
    }
    sq_cuda_fuse_t fuse = {.z = st->fuse_add >= 0, .act = st->act, .fused = &cp->fused_ok[s]};
    size_t ws = 0;
    rc = op->prepare(be, n, st->mode, in, dev, out, st->fuse_add >= 0 ? &fuse : NULL,
                     &cp->step_state[s], &ws, err);
    if (ws > cp->ws_bytes) cp->ws_bytes = ws;
  }
  pthread_mutex_unlock(&be->lock);
  if (rc) goto fail;
  int nfused = 0;
  for (int s = 0; s < lay->nsteps; s++) nfused += cp->fused_ok[s];
  sq_log_debug("cuda", "plan bound",
               "device=%s precision=%s steps=%d fp16_nodes=%d conversions=%d residual_fusions=%d "
               "arena_bytes=%zu const_bytes=%zu workspace=%zu",
               be->name, lay->precision == SQ_PRECISION_FP16 ? "fp16" : "fp32", lay->nsteps,
               lay->nf16, lay->nconvert, nfused, lay->arena_bytes, cbytes, cp->ws_bytes);
  bound->cp = cp;
  bound->p = p;
  *state = bound;
  return 0;
oom:
  rc = sq_error_set(err, SQ_ENOMEM, "cuda: out of host memory binding the plan");
fail:
  free(staging);
  plan_free(cp, p);
  free(bound);
  return rc;
}

static void cuda_unload(sq_backend_t *b, void *state) {
  cuda_bound_t *bound = state;
  if (!bound) return;
  sq_cuda_backend_t *be = b->context;
  cudaSetDevice(be->device);
  plan_free(bound->cp, bound->p);
  free(bound);
}

/* ---- contexts ---- */

static void graphs_drop(sq_cuda_ctx_t *cc) {
  for (int i = 0; i < cc->ngraphs; i++)
    if (cc->graphs[i].exec) cudaGraphExecDestroy(cc->graphs[i].exec);
  cc->ngraphs = 0;
}

static void ctx_release(sq_cuda_ctx_t *cc) {
  graphs_drop(cc);
  if (cc->blas) cublasDestroy(cc->blas);
  if (cc->dnn) cudnnDestroy(cc->dnn);
  if (cc->arena) cudaFree(cc->arena);
  if (cc->ws) cudaFree(cc->ws);
  if (cc->din) cudaFree(cc->din);
  if (cc->dio) cudaFree(cc->dio);
  if (cc->pinned) cudaFreeHost(cc->pinned);
  if (cc->stream) cudaStreamDestroy(cc->stream);
  free(cc);
}

static sq_backend_ctx_t *cuda_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err) {
  sq_cuda_backend_t *be = b->context;
  sq_backend_ctx_t *c = calloc(1, sizeof *c);
  sq_cuda_ctx_t *cc = calloc(1, sizeof *cc);
  if (!c || !cc) {
    free(c);
    free(cc);
    sq_error_set(err, SQ_ENOMEM, "cuda context: out of host memory");
    return NULL;
  }
  cc->be = be;
  int rc = sq_cuda_check(cudaSetDevice(be->device), err, "cudaSetDevice");
  if (!rc)
    rc = sq_cuda_check(cudaStreamCreateWithFlags(&cc->stream, cudaStreamNonBlocking), err,
                       "cudaStreamCreate");
  if (!rc) rc = sq_cudnn_check(cudnnCreate(&cc->dnn), err, "cudnnCreate");
  if (!rc) rc = sq_cudnn_check(cudnnSetStream(cc->dnn, cc->stream), err, "cudnnSetStream");
  if (!rc) rc = sq_cublas_check(cublasCreate(&cc->blas), err, "cublasCreate");
  if (!rc) rc = sq_cublas_check(cublasSetStream(cc->blas, cc->stream), err, "cublasSetStream");
  /* cuBLAS gets a workspace of its own that never moves: inside a captured graph it must not
   * allocate. The first BLAS_WS_BYTES of dio are it. */
  if (!rc)
    rc = sq_cuda_check(cudaMalloc((void **)&cc->dio, BLAS_WS_BYTES), err, "cudaMalloc (cublas)");
  if (!rc) cc->dio_bytes = BLAS_WS_BYTES;
  if (!rc)
    rc = sq_cublas_check(cublasSetWorkspace(cc->blas, cc->dio, BLAS_WS_BYTES), err,
                         "cublasSetWorkspace");
  if (!rc)
    rc = sq_cuda_check(cudaMalloc((void **)&cc->arena, arena_bytes ? arena_bytes : 256), err,
                       "cudaMalloc (arena)");
  if (rc) {
    ctx_release(cc);
    free(c);
    return NULL;
  }
  cc->arena_bytes = arena_bytes ? arena_bytes : 256;
  c->backend = b;
  c->arena_bytes = arena_bytes;
  c->context = cc;
  return c;
}

static void cuda_ctx_free(sq_backend_ctx_t *c) {
  sq_cuda_ctx_t *cc = c->context;
  cudaSetDevice(cc->be->device);
  cudaStreamSynchronize(cc->stream);
  ctx_release(cc);
  free(c);
}

/* Grows a device (pinned: host) buffer to at least `need` bytes; contents are not kept. A
 * growth moves the buffer: graphs captured on the old address are captured again. */
static int grow(sq_cuda_ctx_t *cc, void **buf, size_t *have, size_t need, int pinned,
                sq_error_t *err) {
  if (*have >= need && *buf) return 0;
  cudaStreamSynchronize(cc->stream); /* nothing may still read the old buffer */
  if (*buf) pinned ? cudaFreeHost(*buf) : cudaFree(*buf);
  *buf = NULL;
  *have = 0;
  cudaError_t e = pinned ? cudaHostAlloc(buf, need ? need : 256, cudaHostAllocDefault)
                         : cudaMalloc(buf, need ? need : 256);
  if (e != cudaSuccess) {
    *buf = NULL;
    return sq_cuda_check(e, err, pinned ? "cudaHostAlloc (staging)" : "cudaMalloc (buffers)");
  }
  *have = need;
  cc->gen++;
  return 0;
}

/* ---- runs ---- */

/* Where an image run keeps its parts, in both dio (after the cuBLAS workspace) and pinned:
 * raw input, scale, offset, threshold (one host-to-device copy), then mask and probabilities. */
typedef struct {
  size_t raw, scale, offset, thr, in_end, mask, prob, end;
} io_map_t;

static void io_map(const sq_engine_plan_t *p, const sq_engine_image_io_t *io, io_map_t *m) {
  const sq_graph_t *g = &p->graph;
  const sq_tensor_t *ti = &g->tensors[p->inputs[0]], *to = &g->tensors[g->outputs[io->output]];
  int64_t n = ti->dims[0], c = ti->dims[1], hw = ti->dims[2] * ti->dims[3];
  int64_t hwo = to->dims[2] * to->dims[3];
  m->raw = 0;
  m->scale = ALIGN_UP((size_t)(n * c * hw) * (size_t)io->in_bytes);
  m->offset = m->scale + ALIGN_UP((size_t)(n * c) * 4);
  m->thr = m->offset + ALIGN_UP((size_t)(n * c) * 4);
  m->in_end = m->thr + ALIGN_UP((size_t)n * 4);
  m->mask = m->in_end;
  m->prob = m->mask + ALIGN_UP((size_t)(n * hwo));
  m->end = m->prob + ALIGN_UP((size_t)(n * hwo) * 4);
}

/* Enqueues a conversion of buffer src into dst (their tensor is 4-D). */
static int convert(sq_cuda_ctx_t *cc, const cuda_plan_t *cp, const sq_engine_plan_t *p, int src,
                   int dst, sq_error_t *err) {
  const sq_cuda_buf_t *s = &cp->lay.bufs[src], *d = &cp->lay.bufs[dst];
  const sq_tensor_t *t = &p->graph.tensors[s->tensor];
  int64_t n = t->dims[0], c = t->dims[1], hw = t->dims[2] * t->dims[3];
  cudaError_t e = s->layout == SQ_CUDA_F32
                      ? sq_cuda_to_nhwc16(buf_ptr(cc, cp, src), buf_ptr(cc, cp, dst), n, c, hw,
                                          d->cpad, cc->stream)
                      : sq_cuda_from_nhwc16(buf_ptr(cc, cp, src), buf_ptr(cc, cp, dst), n, c, hw,
                                            s->cpad, cc->stream);
  return sq_cuda_check(e, err, "layout conversion kernel");
}

/* The plan's steps on cc's stream (between the input copies and the output copies). */
static int enqueue_steps(sq_cuda_ctx_t *cc, const cuda_plan_t *cp, const sq_engine_plan_t *p,
                         sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  int rc = 0;
  for (int s = 0; s < cp->lay.nsteps && !rc; s++) {
    const sq_cuda_step_t *st = &cp->lay.steps[s];
    if (st->kind == SQ_CUDA_STEP_CONVERT) {
      rc = convert(cc, cp, p, st->src, st->dst, err);
      continue;
    }
    if (st->fused_by >= 0 && cp->fused_ok[st->fused_by]) continue; /* its Conv did it */
    const sq_node_t *n = &g->nodes[p->order[st->pos]];
    sq_view_t in[n->nin + 1], out[n->nout + 1];
    sq_cuda_host_views(p, n, in, out);
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] >= 0) {
        int bi = tensor_buf(cp, p, n->in[k], st->mode);
        in[k].data = bi >= 0 ? buf_ptr(cc, cp, bi) : NULL;
      }
    for (int k = 0; k < n->nout; k++)
      if (n->out[k] >= 0) {
        int bi = tensor_buf(cp, p, n->out[k], st->mode);
        out[k].data = bi >= 0 ? buf_ptr(cc, cp, bi) : NULL;
      }
    if (st->fuse_add >= 0 && cp->fused_ok[s]) { /* the residual: z in, the Add's output out */
      in[n->nin] = out[0];
      in[n->nin].data = buf_ptr(cc, cp, st->zbuf);
      out[0].data = buf_ptr(cc, cp, st->ybuf);
    }
    rc = sq_cuda_op(n->op)->forward(cc, n, cp->step_state[s], st->mode, in, out, err);
  }
  return rc;
}

/* The whole device side of one run on cc's stream: inputs in, steps, outputs out. io NULL: a
 * plain run (inputs already in pinned staging); else an image run (raw parts in pinned). */
static int enqueue_run(sq_cuda_ctx_t *cc, const cuda_plan_t *cp, const sq_engine_plan_t *p,
                       const sq_engine_image_io_t *io, sq_error_t *err) {
  const sq_graph_t *g = &p->graph;
  int rc = 0;
  if (!io) {
    for (int i = 0; i < p->ninputs && !rc; i++) {
      size_t n = sq_tensor_bytes(&g->tensors[p->inputs[i]]);
      rc = sq_cuda_check(cudaMemcpyAsync(cc->din + cp->in_off[i], cc->pinned + cp->in_off[i], n,
                                         cudaMemcpyHostToDevice, cc->stream),
                         err, "cudaMemcpyAsync (input)");
    }
  } else {
    io_map_t m;
    io_map(p, io, &m);
    uint8_t *d = cc->dio + BLAS_WS_BYTES;
    const sq_tensor_t *ti = &g->tensors[p->inputs[0]];
    rc = sq_cuda_check(cudaMemcpyAsync(d, cc->pinned, m.in_end, cudaMemcpyHostToDevice, cc->stream),
                       err, "cudaMemcpyAsync (raw input)");
    if (!rc)
      rc = sq_cuda_check(
          sq_cuda_normalize(io->in_bytes, d + m.raw, (const float *)(d + m.scale),
                            (const float *)(d + m.offset), (float *)(cc->din + cp->in_off[0]),
                            ti->dims[0], ti->dims[1], ti->dims[2] * ti->dims[3], cc->stream),
          err, "normalize kernel");
  }
  if (!rc) rc = enqueue_steps(cc, cp, p, err);
  if (rc) return rc;
  if (!io) {
    for (int i = 0; i < g->noutputs && !rc; i++) {
      size_t n = sq_tensor_bytes(&g->tensors[g->outputs[i]]);
      void *src = cp->lay.out_buf[i] >= 0 ? buf_ptr(cc, cp, cp->lay.out_buf[i]) : NULL;
      if (!src) return sq_error_set(err, SQ_EINTERNAL, "cuda: output %d has no device memory", i);
      rc = sq_cuda_check(cudaMemcpyAsync(cc->pinned + cp->in_bytes + cp->out_off[i], src, n,
                                         cudaMemcpyDeviceToHost, cc->stream),
                         err, "cudaMemcpyAsync (output)");
    }
    return rc;
  }
  io_map_t m;
  io_map(p, io, &m);
  uint8_t *d = cc->dio + BLAS_WS_BYTES;
  const sq_tensor_t *to = &g->tensors[g->outputs[io->output]];
  int64_t n = to->dims[0], k = to->dims[1], hwo = to->dims[2] * to->dims[3];
  const float *out = buf_ptr(cc, cp, cp->lay.out_buf[io->output]);
  rc = sq_cuda_check(sq_cuda_post(io->kind, out, n, k, hwo, io->channel, (const float *)(d + m.thr),
                                  io->mask ? d + m.mask : NULL,
                                  io->prob ? (float *)(d + m.prob) : NULL, cc->stream),
                     err, "postprocess kernel");
  if (!rc && io->mask)
    rc = sq_cuda_check(cudaMemcpyAsync(cc->pinned + m.mask, d + m.mask, (size_t)(n * hwo),
                                       cudaMemcpyDeviceToHost, cc->stream),
                       err, "cudaMemcpyAsync (mask)");
  if (!rc && io->prob)
    rc = sq_cuda_check(cudaMemcpyAsync(cc->pinned + m.prob, d + m.prob, (size_t)(n * hwo) * 4,
                                       cudaMemcpyDeviceToHost, cc->stream),
                       err, "cudaMemcpyAsync (probabilities)");
  return rc;
}

static int graphs_enabled(void) {
  const char *v = getenv("SEGQ_CUDA_GRAPHS");
  return !(v && !strcmp(v, "0"));
}

/* Runs the device side: replays the captured graph of (plan, key) when there is one for the
 * context's current buffers; captures it on its second eager run; else runs eagerly. A capture
 * that fails leaves that key eager for good (logged once). */
static int launch(sq_cuda_ctx_t *cc, const cuda_plan_t *cp, const sq_engine_plan_t *p,
                  const sq_engine_image_io_t *io, int key, sq_error_t *err) {
  sq_cuda_graph_t *gr = NULL;
  for (int i = 0; i < cc->ngraphs && !gr; i++)
    if (cc->graphs[i].plan == cp && cc->graphs[i].key == key) gr = &cc->graphs[i];
  if (!gr && cc->ngraphs < SQ_CUDA_MAX_GRAPHS) {
    gr = &cc->graphs[cc->ngraphs++];
    memset(gr, 0, sizeof *gr);
    gr->plan = cp;
    gr->key = key;
    gr->gen = cc->gen;
  }
  if (!cc->be->graphs || !gr || gr->failed) return enqueue_run(cc, cp, p, io, err);
  if (gr->gen != cc->gen) { /* buffers moved since: start over */
    if (gr->exec) cudaGraphExecDestroy(gr->exec);
    gr->exec = NULL;
    gr->runs = 0;
    gr->gen = cc->gen;
  }
  if (gr->exec) return sq_cuda_check(cudaGraphLaunch(gr->exec, cc->stream), err, "cudaGraphLaunch");
  if (gr->runs++ < 1) return enqueue_run(cc, cp, p, io, err); /* the first run binds/grows */
  cudaGraph_t graph = NULL;
  sq_error_t cerr = {0};
  int rc = sq_cuda_check(cudaStreamBeginCapture(cc->stream, cudaStreamCaptureModeThreadLocal),
                         &cerr, "cudaStreamBeginCapture");
  if (!rc) {
    rc = enqueue_run(cc, cp, p, io, &cerr);
    cudaError_t e = cudaStreamEndCapture(cc->stream, &graph);
    if (!rc) rc = sq_cuda_check(e, &cerr, "cudaStreamEndCapture");
  }
  if (!rc)
    rc = sq_cuda_check(cudaGraphInstantiate(&gr->exec, graph, 0), &cerr, "cudaGraphInstantiate");
  if (graph) cudaGraphDestroy(graph);
  if (rc) {
    cudaGetLastError(); /* a failed capture leaves no sticky error behind */
    gr->failed = 1;
    gr->exec = NULL;
    sq_log_warn("cuda", "graph capture failed; this plan runs without a graph",
                "device=%s key=%d msg=\"%s\"", cc->be->name, key, cerr.msg);
    return enqueue_run(cc, cp, p, io, err);
  }
  return sq_cuda_check(cudaGraphLaunch(gr->exec, cc->stream), err, "cudaGraphLaunch");
}

/* Device buffers a run of cp needs on cc (io: an image run). */
static int ensure_buffers(sq_cuda_ctx_t *cc, const cuda_plan_t *cp, const sq_engine_plan_t *p,
                          const sq_engine_image_io_t *io, sq_error_t *err) {
  size_t pin = cp->in_bytes + cp->out_bytes, dio = BLAS_WS_BYTES;
  if (io) {
    io_map_t m;
    io_map(p, io, &m);
    if (m.end > pin) pin = m.end;
    dio += m.end;
  }
  int rc = grow(cc, &cc->ws, &cc->ws_bytes, cp->ws_bytes, 0, err);
  if (!rc) rc = grow(cc, (void **)&cc->arena, &cc->arena_bytes, cp->lay.arena_bytes, 0, err);
  if (!rc) rc = grow(cc, (void **)&cc->din, &cc->din_bytes, cp->in_bytes, 0, err);
  if (!rc) rc = grow(cc, (void **)&cc->pinned, &cc->pinned_bytes, pin, 1, err);
  if (!rc && cc->dio_bytes < dio) {
    rc = grow(cc, (void **)&cc->dio, &cc->dio_bytes, dio, 0, err);
    if (!rc)
      rc = sq_cublas_check(cublasSetWorkspace(cc->blas, cc->dio, BLAS_WS_BYTES), err,
                           "cublasSetWorkspace");
  }
  return rc;
}

static int cuda_run(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                    const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs,
                    sq_error_t *err) {
  sq_cuda_ctx_t *cc = c->context;
  cuda_plan_t *cp = ((cuda_bound_t *)state)->cp;
  const sq_graph_t *g = &p->graph;
  int rc = sq_cuda_check(cudaSetDevice(cc->be->device), err, "cudaSetDevice");
  if (!rc) rc = ensure_buffers(cc, cp, p, NULL, err);
  if (rc) return rc;
  for (int i = 0; i < p->ninputs; i++)
    memcpy(cc->pinned + cp->in_off[i], inputs[i].data, sq_tensor_bytes(&g->tensors[p->inputs[i]]));
  rc = launch(cc, cp, p, NULL, 0, err);
  if (rc) {
    cudaStreamSynchronize(cc->stream); /* leave nothing in flight on our buffers */
    return rc;
  }
  cc->npend = 0;
  for (int i = 0; i < g->noutputs && i < SQ_MAX_NODE_IO; i++) {
    cc->pend[cc->npend].dst = outputs[i].data;
    cc->pend[cc->npend].src = cc->pinned + cp->in_bytes + cp->out_off[i];
    cc->pend[cc->npend].bytes = sq_tensor_bytes(&g->tensors[g->outputs[i]]);
    cc->npend++;
  }
  return 0;
}

static int cuda_run_image(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                          const sq_engine_image_io_t *io, sq_error_t *err) {
  sq_cuda_ctx_t *cc = c->context;
  cuda_plan_t *cp = ((cuda_bound_t *)state)->cp;
  const sq_graph_t *g = &p->graph;
  int rc = sq_cuda_check(cudaSetDevice(cc->be->device), err, "cudaSetDevice");
  if (!rc) rc = ensure_buffers(cc, cp, p, io, err);
  if (rc) return rc;
  io_map_t m;
  io_map(p, io, &m);
  const sq_tensor_t *ti = &g->tensors[p->inputs[0]], *to = &g->tensors[g->outputs[io->output]];
  int64_t n = ti->dims[0], ch = ti->dims[1], hw = ti->dims[2] * ti->dims[3];
  int64_t hwo = to->dims[2] * to->dims[3];
  memcpy(cc->pinned + m.raw, io->in, (size_t)(n * ch * hw) * (size_t)io->in_bytes);
  memcpy(cc->pinned + m.scale, io->scale, (size_t)(n * ch) * 4);
  memcpy(cc->pinned + m.offset, io->offset, (size_t)(n * ch) * 4);
  if (io->threshold)
    memcpy(cc->pinned + m.thr, io->threshold, (size_t)n * 4);
  else
    memset(cc->pinned + m.thr, 0xff, (size_t)n * 4); /* NaN: no mask */
  int key = 0x100 | io->in_bytes << 4 | (io->mask ? 2 : 0) | (io->prob ? 1 : 0) | io->kind << 12 |
            io->channel << 16 | io->output << 24;
  rc = launch(cc, cp, p, io, key, err);
  if (rc) {
    cudaStreamSynchronize(cc->stream);
    return rc;
  }
  cc->npend = 0;
  if (io->mask) {
    cc->pend[cc->npend].dst = io->mask;
    cc->pend[cc->npend].src = cc->pinned + m.mask;
    cc->pend[cc->npend++].bytes = (size_t)(n * hwo);
  }
  if (io->prob) {
    cc->pend[cc->npend].dst = io->prob;
    cc->pend[cc->npend].src = cc->pinned + m.prob;
    cc->pend[cc->npend++].bytes = (size_t)(n * hwo) * 4;
  }
  return 0;
}

static int cuda_sync(sq_backend_ctx_t *c, sq_error_t *err) {
  sq_cuda_ctx_t *cc = c->context;
  int npend = cc->npend;
  cc->npend = 0;
  int rc = sq_cuda_check(cudaStreamSynchronize(cc->stream), err, "cudaStreamSynchronize");
  if (rc) return rc;
  for (int i = 0; i < npend; i++) memcpy(cc->pend[i].dst, cc->pend[i].src, cc->pend[i].bytes);
  return 0;
}

static const char *cuda_name(sq_backend_t *b) {
  return ((sq_cuda_backend_t *)b->context)->name;
}

static int cuda_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes) {
  sq_cuda_backend_t *be = b->context;
  size_t f = 0, t = 0;
  if (cudaSetDevice(be->device) != cudaSuccess || cudaMemGetInfo(&f, &t) != cudaSuccess)
    return SQ_EDEVICE;
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
  return 0;
}

static void cuda_free(sq_backend_t *b) {
  sq_cuda_backend_t *be = b->context;
  cudaSetDevice(be->device);
  if (be->load_dnn) cudnnDestroy(be->load_dnn);
  if (be->load_stream) cudaStreamDestroy(be->load_stream);
  pthread_mutex_destroy(&be->lock);
  free(be);
  free(b);
}

static int cuda_supports(sq_backend_t *b, const sq_engine_plan_t *p, sq_error_t *err) {
  return sq_cuda_plan_check(p, err);
}

static void cuda_props(sq_backend_t *b, sq_backend_props_t *out) {
  sq_cuda_backend_t *be = b->context;
  out->device_memory = 1;
  out->graphs = be->graphs;
  out->image_io = 1;
  out->fp16 = 1;
}

static int cuda_configure(sq_backend_t *b, const sq_backend_options_t *opt, sq_error_t *err) {
  ((sq_cuda_backend_t *)b->context)->precision = opt->precision;
  return 0;
}

static const sq_backend_iface_t cuda_iface = {
    .get_name = cuda_name,
    .supports = cuda_supports,
    .load = cuda_load,
    .unload = cuda_unload,
    .ctx_new = cuda_ctx_new,
    .ctx_free = cuda_ctx_free,
    .run = cuda_run,
    .sync = cuda_sync,
    .memory_info = cuda_memory_info,
    .free = cuda_free,
    .props = cuda_props,
    .configure = cuda_configure,
    .run_image = cuda_run_image,
};

sq_backend_t *sq_cuda_backend_new(int device, sq_error_t *err) {
  const char *why = NULL;
  int count = sq_cuda_device_count(&why);
  if (count == 0) {
    sq_error_set(err, SQ_EDEVICE, "cuda: no usable CUDA device (%s)", why ? why : "none");
    return NULL;
  }
  if (device < 0 || device >= count) {
    sq_error_set(err, SQ_EINVAL, "cuda: device %d does not exist (%d device(s))", device, count);
    return NULL;
  }
  sq_backend_t *b = calloc(1, sizeof *b);
  sq_cuda_backend_t *be = calloc(1, sizeof *be);
  if (!b || !be) {
    free(b);
    free(be);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&be->lock, NULL);
  be->device = device;
  be->graphs = graphs_enabled();
  snprintf(be->name, sizeof be->name, "cuda:%d", device);
  struct cudaDeviceProp prop;
  int rc = sq_cuda_check(cudaSetDevice(device), err, "cudaSetDevice");
  if (!rc)
    rc = sq_cuda_check(cudaGetDeviceProperties(&prop, device), err, "cudaGetDeviceProperties");
  if (!rc) {
    snprintf(be->gpu_name, sizeof be->gpu_name, "%s", prop.name);
    size_t f = 0, t = 0;
    cudaMemGetInfo(&f, &t);
    /* cuDNN's fastest algorithms may want large workspaces; a context holds one */
    be->workspace_limit = f / 16 > ((size_t)1 << 30) ? ((size_t)1 << 30) : f / 16;
  }
  if (!rc)
    rc = sq_cuda_check(cudaStreamCreateWithFlags(&be->load_stream, cudaStreamNonBlocking), err,
                       "cudaStreamCreate");
  if (!rc) rc = sq_cudnn_check(cudnnCreate(&be->load_dnn), err, "cudnnCreate");
  if (!rc)
    rc = sq_cudnn_check(cudnnSetStream(be->load_dnn, be->load_stream), err, "cudnnSetStream");
  b->iface = &cuda_iface;
  b->context = be;
  if (rc) {
    cuda_free(b);
    return NULL;
  }
  return b;
}
