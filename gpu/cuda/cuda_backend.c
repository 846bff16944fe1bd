/* cuda_backend.c: the `cuda:N` backend behind sq_backend_iface_t. load binds a plan (checks
 * every node, uploads constants, builds descriptors and picks conv algorithms); a context is a
 * stream with its cuDNN/cuBLAS handles, the activation arena, workspace and pinned staging; run
 * enqueues copies and kernels on that stream, sync waits and hands the outputs back. Every CUDA
 * error becomes SQ_EOOM_DEVICE or SQ_EDEVICE with the call named; nothing aborts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define ALIGN_UP(x) (((x) + 255) & ~(size_t)255)

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
  int dims[4] = {1, 1, 1, 1};
  if (v->rank < 1 || v->rank > 4)
    return sq_error_set(err, SQ_EUNSUPPORTED, "cuda: rank %d tensor", v->rank);
  if (v->rank == 3) { /* n, c, w -> n, c, 1, w */
    dims[0] = (int)v->dims[0], dims[1] = (int)v->dims[1], dims[3] = (int)v->dims[2];
  } else {
    for (int i = 0; i < v->rank; i++) dims[4 - v->rank + i] = (int)v->dims[i];
  }
  int rc = sq_cudnn_check(cudnnCreateTensorDescriptor(d), err, "cudnnCreateTensorDescriptor");
  if (rc) return rc;
  return sq_cudnn_check(cudnnSetTensor4dDescriptor(*d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, dims[0],
                                                   dims[1], dims[2], dims[3]),
                        err, "cudnnSetTensor4dDescriptor");
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
  int norder;
  void **node_state; /* per position in p->order */
  void *dconst;      /* every constant a node reads, packed */
  size_t *const_off; /* per tensor: offset in dconst, SIZE_MAX if not uploaded */
  size_t *in_off;    /* per unbound input: offset in ctx->din and in pinned staging */
  size_t in_bytes;   /* inputs total (aligned) */
  size_t *out_off;   /* per graph output: offset in pinned staging after the inputs */
  size_t out_bytes;
  size_t ws_bytes; /* largest workspace a node asked for */
} cuda_plan_t;

static void view_host(const sq_tensor_t *t, sq_view_t *v) {
  v->dtype = t->dtype;
  v->rank = t->rank < 0 ? 0 : t->rank;
  memcpy(v->dims, t->dims, sizeof v->dims);
  v->data = t->kind == SQ_TENSOR_CONST ? t->data : NULL;
}

/* Views of a node's tensors with shapes; data only for constants (host memory). */
static void host_views(const sq_engine_plan_t *p, const sq_node_t *n, sq_view_t *in,
                       sq_view_t *out) {
  const sq_graph_t *g = &p->graph;
  memset(in, 0, sizeof *in * (size_t)(n->nin + 1));
  memset(out, 0, sizeof *out * (size_t)(n->nout + 1));
  for (int k = 0; k < n->nin; k++)
    if (n->in[k] >= 0) view_host(&g->tensors[n->in[k]], &in[k]);
  for (int k = 0; k < n->nout; k++)
    if (n->out[k] >= 0) view_host(&g->tensors[n->out[k]], &out[k]);
}

static int node_check(const sq_engine_plan_t *p, const sq_node_t *n, sq_error_t *err) {
  const sq_cuda_op_t *op = sq_cuda_op(n->op);
  if (!op) return sq_node_error(err, SQ_EUNSUPPORTED, n, "no CUDA kernel for this op");
  sq_view_t in[n->nin + 1], out[n->nout + 1];
  host_views(p, n, in, out);
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
  for (int i = 0; i < cp->norder && cp->node_state; i++) {
    const sq_cuda_op_t *op = sq_cuda_op(p->graph.nodes[p->order[i]].op);
    if (cp->node_state[i] && op && op->release) op->release(cp->node_state[i]);
  }
  free(cp->node_state);
  if (cp->dconst) cudaFree(cp->dconst);
  free(cp->const_off);
  free(cp->in_off);
  free(cp->out_off);
  free(cp);
}

/* unload gets no plan; the state keeps what release needs */
typedef struct {
  cuda_plan_t *cp;
  const sq_engine_plan_t *p;
} cuda_bound_t;

static int is_read_const(const sq_engine_plan_t *p, int t) {
  const sq_graph_t *g = &p->graph;
  if (g->tensors[t].kind != SQ_TENSOR_CONST || !g->tensors[t].data) return 0;
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i] == t) return 1;
  for (int i = 0; i < p->norder; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] == t) return 1;
  }
  return 0;
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
  cp->norder = p->norder;
  cp->node_state = calloc((size_t)p->norder + 1, sizeof *cp->node_state);
  cp->const_off = malloc(((size_t)g->ntensors + 1) * sizeof *cp->const_off);
  cp->in_off = calloc((size_t)p->ninputs + 1, sizeof *cp->in_off);
  cp->out_off = calloc((size_t)g->noutputs + 1, sizeof *cp->out_off);
  if (!cp->node_state || !cp->const_off || !cp->in_off || !cp->out_off) goto oom;
  /* constants: one block, 256-byte aligned pieces */
  size_t cbytes = 0;
  for (int t = 0; t < g->ntensors; t++) {
    cp->const_off[t] = SIZE_MAX;
    if (!is_read_const(p, t)) continue;
    cp->const_off[t] = cbytes;
    cbytes += ALIGN_UP(sq_tensor_bytes(&g->tensors[t]));
  }
  staging = malloc(cbytes ? cbytes : 1);
  if (!staging) goto oom;
  for (int t = 0; t < g->ntensors; t++)
    if (cp->const_off[t] != SIZE_MAX)
      memcpy(staging + cp->const_off[t], g->tensors[t].data, sq_tensor_bytes(&g->tensors[t]));
  rc = sq_cuda_upload(staging, cbytes, &cp->dconst, err);
  free(staging);
  staging = NULL;
  if (rc) goto fail;
  for (int i = 0; i < p->ninputs; i++) {
    cp->in_off[i] = cp->in_bytes;
    cp->in_bytes += ALIGN_UP(sq_tensor_bytes(&g->tensors[p->inputs[i]]));
  }
  for (int i = 0; i < g->noutputs; i++) {
    cp->out_off[i] = cp->out_bytes;
    cp->out_bytes += ALIGN_UP(sq_tensor_bytes(&g->tensors[g->outputs[i]]));
  }
  /* per-node preparation on the backend's load-time handle (conv algorithm search) */
  pthread_mutex_lock(&be->lock);
  for (int i = 0; i < p->norder && !rc; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    const sq_cuda_op_t *op = sq_cuda_op(n->op);
    if (!op->prepare) continue;
    sq_view_t in[n->nin + 1], dev[n->nin + 1], out[n->nout + 1];
    host_views(p, n, in, out);
    memcpy(dev, in, sizeof dev);
    for (int k = 0; k < n->nin; k++) {
      dev[k].data = NULL;
      if (n->in[k] >= 0 && cp->const_off[n->in[k]] != SIZE_MAX)
        dev[k].data = (uint8_t *)cp->dconst + cp->const_off[n->in[k]];
    }
    size_t ws = 0;
    rc = op->prepare(be, n, in, dev, out, &cp->node_state[i], &ws, err);
    if (ws > cp->ws_bytes) cp->ws_bytes = ws;
  }
  pthread_mutex_unlock(&be->lock);
  if (rc) goto fail;
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

static void ctx_release(sq_cuda_ctx_t *cc) {
  if (cc->blas) cublasDestroy(cc->blas);
  if (cc->dnn) cudnnDestroy(cc->dnn);
  if (cc->arena) cudaFree(cc->arena);
  if (cc->ws) cudaFree(cc->ws);
  if (cc->din) cudaFree(cc->din);
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
  if (!rc)
    rc = sq_cuda_check(cudaMalloc((void **)&cc->arena, arena_bytes ? arena_bytes : 256), err,
                       "cudaMalloc (arena)");
  if (rc) {
    ctx_release(cc);
    free(c);
    return NULL;
  }
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

/* Grows a device (pinned: host) buffer to at least `need` bytes; contents are not kept. */
static int grow(void **buf, size_t *have, size_t need, int pinned, sq_error_t *err) {
  if (*have >= need && *buf) return 0;
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
  return 0;
}

static void *dev_ptr(sq_cuda_ctx_t *cc, const sq_engine_plan_t *p, const cuda_plan_t *cp, int t) {
  const sq_tensor_t *x = &p->graph.tensors[t];
  if (x->kind == SQ_TENSOR_ACT) return cc->arena + x->offset;
  if (x->kind == SQ_TENSOR_CONST)
    return cp->const_off[t] == SIZE_MAX ? NULL : (uint8_t *)cp->dconst + cp->const_off[t];
  for (int j = 0; j < p->ninputs; j++)
    if (p->inputs[j] == t) return cc->din + cp->in_off[j];
  return NULL;
}

static int cuda_run(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                    const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs,
                    sq_error_t *err) {
  sq_cuda_ctx_t *cc = c->context;
  cuda_plan_t *cp = ((cuda_bound_t *)state)->cp;
  const sq_graph_t *g = &p->graph;
  int rc = sq_cuda_check(cudaSetDevice(cc->be->device), err, "cudaSetDevice");
  if (!rc) rc = grow(&cc->ws, &cc->ws_bytes, cp->ws_bytes, 0, err);
  if (!rc) rc = grow((void **)&cc->din, &cc->din_bytes, cp->in_bytes, 0, err);
  if (!rc) rc = grow((void **)&cc->pinned, &cc->pinned_bytes, cp->in_bytes + cp->out_bytes, 1, err);
  if (rc) return rc;
  for (int i = 0; i < p->ninputs && !rc; i++) {
    size_t n = sq_tensor_bytes(&g->tensors[p->inputs[i]]);
    memcpy(cc->pinned + cp->in_off[i], inputs[i].data, n);
    rc = sq_cuda_check(cudaMemcpyAsync(cc->din + cp->in_off[i], cc->pinned + cp->in_off[i], n,
                                       cudaMemcpyHostToDevice, cc->stream),
                       err, "cudaMemcpyAsync (input)");
  }
  for (int i = 0; i < p->norder && !rc; i++) {
    const sq_node_t *n = &g->nodes[p->order[i]];
    sq_view_t in[n->nin + 1], out[n->nout + 1];
    host_views(p, n, in, out);
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] >= 0) in[k].data = dev_ptr(cc, p, cp, n->in[k]);
    for (int k = 0; k < n->nout; k++)
      if (n->out[k] >= 0) out[k].data = dev_ptr(cc, p, cp, n->out[k]);
    rc = sq_cuda_op(n->op)->forward(cc, n, cp->node_state[i], in, out, err);
  }
  for (int i = 0; i < g->noutputs && !rc; i++) {
    size_t n = sq_tensor_bytes(&g->tensors[g->outputs[i]]);
    void *src = dev_ptr(cc, p, cp, g->outputs[i]);
    if (!src) return sq_error_set(err, SQ_EINTERNAL, "cuda: output %d has no device memory", i);
    rc = sq_cuda_check(cudaMemcpyAsync(cc->pinned + cp->in_bytes + cp->out_off[i], src, n,
                                       cudaMemcpyDeviceToHost, cc->stream),
                       err, "cudaMemcpyAsync (output)");
  }
  if (rc) {
    cudaStreamSynchronize(cc->stream); /* leave nothing in flight on our buffers */
    return rc;
  }
  cc->pend_plan = p;
  cc->pend_state = cp;
  cc->pend_out = outputs;
  return 0;
}

static int cuda_sync(sq_backend_ctx_t *c, sq_error_t *err) {
  sq_cuda_ctx_t *cc = c->context;
  const sq_engine_plan_t *p = cc->pend_plan;
  cuda_plan_t *cp = cc->pend_state;
  sq_engine_tensor_t *outs = cc->pend_out;
  cc->pend_plan = NULL;
  cc->pend_out = NULL;
  int rc = sq_cuda_check(cudaStreamSynchronize(cc->stream), err, "cudaStreamSynchronize");
  if (rc || !p) return rc;
  for (int i = 0; i < p->graph.noutputs; i++)
    memcpy(outs[i].data, cc->pinned + cp->in_bytes + cp->out_off[i],
           sq_tensor_bytes(&p->graph.tensors[p->graph.outputs[i]]));
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
  out->device_memory = 1;
}

static const sq_backend_iface_t cuda_iface = {
    .get_name = cuda_name,
    .load = cuda_load,
    .unload = cuda_unload,
    .ctx_new = cuda_ctx_new,
    .ctx_free = cuda_ctx_free,
    .run = cuda_run,
    .sync = cuda_sync,
    .memory_info = cuda_memory_info,
    .free = cuda_free,
    .supports = cuda_supports,
    .props = cuda_props,
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
