/* cuda_conv.c: Conv and ConvTranspose on cuDNN, in fp32 NCHW or in fp16 NHWC with tensor cores
 * (weights converted once at bind into the padded NHWC half filter; fp32 accumulation: the
 * convolution's compute type is float). Conv: cudnnConvolutionBiasActivationForward when the
 * fused activation is ReLU (or none, with the algorithm that fusion allows), with the residual
 * Add's other input as cuDNN's z when the layout planner chose the fusion (then the Conv writes
 * the Add's output and the Add does not run); each fused configuration is tried once at bind on
 * scratch buffers and dropped if cuDNN refuses it. Otherwise cudnnConvolutionForward plus our
 * bias+activation kernel. ConvTranspose: the backward-data pass of the matching forward conv
 * (ONNX's weight layout is exactly its filter), then bias+act. Algorithms are measured once per
 * plan (cudnnFind*Ex) on the backend's load-time handle. fp32 math is FMA only (no TF32) unless
 * SEGQ_CUDA_TF32=1; fp16 uses CUDNN_TENSOR_OP_MATH. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda_internal.h"

typedef struct {
  int transpose, fused, mode;
  int fused_z; /* also adds z (the residual Add's other input) and writes the Add's output */
  cudnnTensorDescriptor_t x, y, bias;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnActivationDescriptor_t act_desc;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd;
  size_t ws;
  int64_t outer, c, inner; /* output as [outer][c][inner] for the epilogue (fp32) */
  int64_t count, cp;       /* fp16: output halves and padded channels */
  void *w16;               /* fp16: the converted filter (device) */
  float *bias32;           /* fp16: bias padded to cp, float (device), for our epilogue */
  void *bias16;            /* fp16: the same as halves, for cuDNN's fused call */
} conv_state_t;

typedef struct {
  int sp;
  int64_t k[2], s[2], d[2], p[2], group;
} geom_t;

static int get2(const sq_node_t *n, const char *name, int sp, int64_t def, int64_t *v) {
  const int64_t *a;
  size_t cnt = sq_attr_ints(n, name, &a);
  v[0] = v[1] = def;
  if (!cnt) return 0;
  if ((int)cnt != sp) return -1;
  for (int i = 0; i < sp; i++) v[2 - sp + i] = a[i];
  return 0;
}

static int geom(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out, geom_t *g,
                sq_error_t *err) {
  const sq_view_t *x = &in[0], *w = &in[1];
  int tr = n->op == SQ_OP_ConvTranspose;
  if (x->rank != 3 && x->rank != 4)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: only 1-D and 2-D convolutions");
  if (x->dtype != SQ_DT_FLOAT || w->dtype != SQ_DT_FLOAT || w->rank != x->rank ||
      out[0].rank != x->rank)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 input and weight");
  if (n->nin > 2 && sq_view_present(&in[2]) && in[2].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: float32 bias");
  g->sp = x->rank - 2;
  g->k[0] = g->sp == 2 ? w->dims[2] : 1;
  g->k[1] = w->dims[w->rank - 1];
  g->group = sq_attr_int(n, "group", 1);
  if (strcmp(sq_attr_string(n, "auto_pad", "NOTSET"), "NOTSET") &&
      strcmp(sq_attr_string(n, "auto_pad", "NOTSET"), "VALID"))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: auto_pad SAME_*");
  const int64_t *a;
  if (tr && sq_attr_ints(n, "output_shape", &a))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: ConvTranspose output_shape");
  if (get2(n, "strides", g->sp, 1, g->s) || get2(n, "dilations", g->sp, 1, g->d))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: strides/dilations rank");
  size_t np = sq_attr_ints(n, "pads", &a);
  g->p[0] = g->p[1] = 0;
  if (np && strcmp(sq_attr_string(n, "auto_pad", "NOTSET"), "VALID")) {
    if (np != (size_t)2 * g->sp) return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: pads rank");
    for (int i = 0; i < g->sp; i++) {
      if (a[i] != a[i + g->sp])
        return sq_node_error(err, SQ_EUNSUPPORTED, n,
                             "cuda: asymmetric pads (cuDNN pads both sides)");
      g->p[2 - g->sp + i] = a[i];
    }
  }
  int64_t opad[2] = {0, 0};
  if (tr && get2(n, "output_padding", g->sp, 0, opad))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: output_padding rank");
  int64_t xin[2] = {g->sp == 2 ? x->dims[2] : 1, x->dims[x->rank - 1]};
  int64_t yout[2] = {g->sp == 2 ? out[0].dims[2] : 1, out[0].dims[out[0].rank - 1]};
  for (int i = 0; i < 2; i++) {
    int64_t ext = (g->k[i] - 1) * g->d[i] + 1, want;
    if (!tr)
      want = (xin[i] + 2 * g->p[i] - ext) / g->s[i] + 1;
    else
      want = g->s[i] * (xin[i] - 1) + opad[i] + ext - 2 * g->p[i];
    if (want != yout[i] || (tr && opad[i] >= g->s[i]))
      return sq_node_error(err, SQ_EUNSUPPORTED, n,
                           "cuda: output size the cuDNN geometry cannot give");
    if (g->k[i] > (1 << 20) || g->s[i] > (1 << 20) || g->d[i] > (1 << 20) || g->p[i] > (1 << 20))
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: geometry out of range");
  }
  for (int i = 0; i < x->rank; i++)
    if (x->dims[i] > INT32_MAX || out[0].dims[i] > INT32_MAX || w->dims[i] > INT32_MAX)
      return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: dims beyond int32");
  return 0;
}

int sq_cuda_conv_check(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out,
                       sq_error_t *err) {
  geom_t g;
  if (n->nin < 2 || !sq_view_present(&in[1]))
    return sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: no weight");
  return geom(n, in, out, &g, err);
}

/* fp16 NHWC: 2-D, constant weight (converted at bind), groups only when the channels need no
 * padding (padding would break the channel groups). */
int sq_cuda_conv_check16(const sq_node_t *n, const sq_view_t *in, const sq_view_t *out) {
  geom_t g;
  if (n->nin < 2 || !sq_view_present(&in[1]) || !in[1].data || in[0].rank != 4) return -1;
  if (n->nin > 2 && sq_view_present(&in[2]) && !in[2].data) return -1;
  if (geom(n, in, out, &g, NULL)) return -1;
  if (g.group != 1 && (in[0].dims[1] % 8 || out[0].dims[1] % 8)) return -1;
  return 0;
}

void sq_cuda_conv_release(void *state) {
  conv_state_t *s = state;
  if (!s) return;
  if (s->w16) cudaFree(s->w16);
  if (s->bias32) cudaFree(s->bias32);
  if (s->bias16) cudaFree(s->bias16);
  if (s->x) cudnnDestroyTensorDescriptor(s->x);
  if (s->y) cudnnDestroyTensorDescriptor(s->y);
  if (s->bias) cudnnDestroyTensorDescriptor(s->bias);
  if (s->w) cudnnDestroyFilterDescriptor(s->w);
  if (s->conv) cudnnDestroyConvolutionDescriptor(s->conv);
  if (s->act_desc) cudnnDestroyActivationDescriptor(s->act_desc);
  free(s);
}

static int cuda_act_of(int act) {
  switch (act) {
    case SQ_ACT_RELU:
      return SQ_CUDA_ACT_RELU;
    case SQ_ACT_LEAKY_RELU:
      return SQ_CUDA_ACT_LEAKY;
    case SQ_ACT_CLIP:
      return SQ_CUDA_ACT_CLIP;
    case SQ_ACT_SIGMOID:
      return SQ_CUDA_ACT_SIGMOID;
    default:
      return SQ_CUDA_ACT_NONE;
  }
}

/* ---- algorithm cache on disk ----
 * cudnnFind*Ex runs every algorithm (tens of ms per layer). Its answer depends on the GPU, the
 * cuDNN version, the math mode and the layer's geometry, not on the weights, so the key is
 * exactly that (a layer shared by two models, or a re-exported model, reuses the entry).
 * File: $SEGQ_CUDA_ALGO_CACHE, else $XDG_CACHE_HOME/segq/cudnn_algos.v1 (~/.cache when unset);
 * "off" disables it. One line per entry, "<key> <algo> <workspace bytes>", appended with one
 * write(2) (O_APPEND: concurrent workers do not interleave lines); the first match wins. */
static int cache_path(char *out, size_t n) {
  const char *env = getenv("SEGQ_CUDA_ALGO_CACHE");
  if (env && strcmp(env, "off") == 0) return -1;
  if (env && *env) return snprintf(out, n, "%s", env) < (int)n ? 0 : -1;
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  char dir[3072];
  if (xdg && *xdg)
    snprintf(dir, sizeof dir, "%s/segq", xdg);
  else if (home && *home)
    snprintf(dir, sizeof dir, "%s/.cache/segq", home);
  else
    return -1;
  char parent[3072];
  snprintf(parent, sizeof parent, "%s", dir);
  char *slash = strrchr(parent, '/');
  if (slash && slash != parent) {
    *slash = '\0';
    mkdir(parent, 0755);
  }
  mkdir(dir, 0755);
  return snprintf(out, n, "%s/cudnn_algos.v1", dir) < (int)n ? 0 : -1;
}

static void cache_key(const sq_cuda_backend_t *be, const conv_state_t *s, const geom_t *g,
                      const sq_view_t *x, const sq_view_t *w, const char *math, char *key,
                      size_t n) {
  char gpu[256];
  size_t k = 0;
  for (const char *c = be->gpu_name; *c && k + 1 < sizeof gpu; c++) gpu[k++] = *c == ' ' ? '_' : *c;
  gpu[k] = '\0';
  int sp = x->rank - 2;
  snprintf(key, n,
           "%s|cudnn%zu|%s%s|%s|x%lldx%lldx%lldx%lld|w%lldx%lldx%lldx%lld|p%lld,%lld|s%lld,%lld|"
           "d%lld,%lld|g%lld",
           gpu, cudnnGetVersion(), math, s->mode == SQ_CUDA_F16 ? "-nhwc16" : "",
           s->transpose ? "bwd" : "fwd", (long long)x->dims[0], (long long)x->dims[1],
           (long long)(sp == 2 ? x->dims[2] : 1), (long long)x->dims[x->rank - 1],
           (long long)w->dims[0], (long long)w->dims[1], (long long)g->k[0], (long long)g->k[1],
           (long long)g->p[0], (long long)g->p[1], (long long)g->s[0], (long long)g->s[1],
           (long long)g->d[0], (long long)g->d[1], (long long)g->group);
}

static int cache_lookup(const char *key, int *algo, size_t *ws) {
  char path[4096], line[1024];
  if (cache_path(path, sizeof path)) return -1;
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t klen = strlen(key);
  int found = -1;
  while (found && fgets(line, sizeof line, f)) {
    unsigned long long w;
    int a;
    if (strncmp(line, key, klen) == 0 && line[klen] == ' ' &&
        sscanf(line + klen + 1, "%d %llu", &a, &w) == 2) {
      *algo = a;
      *ws = (size_t)w;
      found = 0;
    }
  }
  fclose(f);
  return found;
}

static void cache_store(const char *key, int algo, size_t ws) {
  char path[4096], line[1100];
  if (cache_path(path, sizeof path)) return;
  int len = snprintf(line, sizeof line, "%s %d %zu\n", key, algo, ws);
  if (len <= 0 || len >= (int)sizeof line) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t wr = write(fd, line, (size_t)len);
  (void)wr; /* a cache: a failed write only costs a search next time */
  close(fd);
}

/* Measures the algorithms on scratch buffers (x, y and, when not constant, w) and keeps the
 * fastest that fits the workspace limit. */
static int find_algo(sq_cuda_backend_t *be, const sq_node_t *n, conv_state_t *s,
                     const sq_view_t *in, const sq_view_t *dev, const sq_view_t *out,
                     sq_error_t *err) {
  void *x = NULL, *y = NULL, *wtmp = NULL, *ws = NULL;
  size_t wsz = be->workspace_limit;
  size_t xb = s->mode == SQ_CUDA_F16 ? (size_t)sq_cuda_count16(&in[0]) * 2
                                     : (size_t)sq_view_numel(&in[0]) * 4;
  size_t yb = s->mode == SQ_CUDA_F16 ? (size_t)sq_cuda_count16(&out[0]) * 2
                                     : (size_t)sq_view_numel(&out[0]) * 4;
  const void *w = s->mode == SQ_CUDA_F16 ? s->w16 : dev[1].data;
  int rc = sq_cuda_check(cudaMalloc(&x, xb ? xb : 4), err, "cudaMalloc (conv search)");
  if (!rc) rc = sq_cuda_check(cudaMalloc(&y, yb ? yb : 4), err, "cudaMalloc (conv search)");
  if (!rc && !w) {
    rc = sq_cuda_check(cudaMalloc(&wtmp, (size_t)sq_view_numel(&in[1]) * 4 + 4), err,
                       "cudaMalloc (conv search)");
    w = wtmp;
  }
  if (!rc) rc = sq_cuda_check(cudaMemsetAsync(x, 0, xb, be->load_stream), err, "cudaMemset");
  while (!rc && wsz && cudaMalloc(&ws, wsz) != cudaSuccess) {
    cudaGetLastError();
    ws = NULL;
    wsz /= 2;
  }
  if (!rc) {
    int got = 0;
    if (!s->transpose) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      rc = sq_cudnn_check(cudnnFindConvolutionForwardAlgorithmEx(
                              be->load_dnn, s->x, x, s->w, w, s->conv, s->y, y,
                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf, ws, wsz),
                          err, "cudnnFindConvolutionForwardAlgorithmEx");
      int pick = -1;
      for (int i = 0; i < got && !rc && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= wsz) pick = i;
      if (!rc && pick < 0) rc = sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: no conv algorithm");
      if (!rc) {
        s->fwd = perf[pick].algo;
        s->ws = perf[pick].memory;
      }
    } else {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      rc = sq_cudnn_check(cudnnFindConvolutionBackwardDataAlgorithmEx(
                              be->load_dnn, s->w, w, s->x, x, s->conv, s->y, y,
                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf, ws, wsz),
                          err, "cudnnFindConvolutionBackwardDataAlgorithmEx");
      int pick = -1;
      for (int i = 0; i < got && !rc && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= wsz) pick = i;
      if (!rc && pick < 0)
        rc = sq_node_error(err, SQ_EUNSUPPORTED, n, "cuda: no transposed-conv algorithm");
      if (!rc) {
        s->bwd = perf[pick].algo;
        s->ws = perf[pick].memory;
      }
    }
  }
  cudaStreamSynchronize(be->load_stream);
  if (x) cudaFree(x);
  if (y) cudaFree(y);
  if (wtmp) cudaFree(wtmp);
  if (ws) cudaFree(ws);
  return rc;
}

/* fp16: the filter as padded NHWC halves and the bias as padded floats and halves (device). */
static int upload16(const sq_node_t *n, const geom_t *g, const sq_view_t *in, conv_state_t *s,
                    int64_t kp, int64_t cgp, int64_t kout, sq_error_t *err) {
  const sq_view_t *w = &in[1];
  int64_t k = w->dims[0], cg = w->dims[1];
  size_t wn = (size_t)(kp * g->k[0] * g->k[1] * cgp);
  uint16_t *hw = malloc(wn * sizeof *hw);
  float *b32 = calloc((size_t)s->cp, sizeof *b32);
  uint16_t *b16 = calloc((size_t)s->cp, sizeof *b16);
  int rc = hw && b32 && b16 ? 0 : sq_error_set(err, SQ_ENOMEM, "out of memory");
  if (!rc) {
    sq_cuda_filter_nhwc16(w->data, k, cg, g->k[0], g->k[1], kp, cgp, hw);
    if (n->nin > 2 && sq_view_present(&in[2]))
      for (int64_t i = 0; i < kout; i++) b32[i] = ((const float *)in[2].data)[i];
    for (int64_t i = 0; i < s->cp; i++) b16[i] = sq_cuda_f32_to_f16(b32[i]);
    rc = sq_cuda_upload(hw, wn * sizeof *hw, &s->w16, err);
  }
  if (!rc) rc = sq_cuda_upload(b32, (size_t)s->cp * sizeof *b32, (void **)&s->bias32, err);
  if (!rc) rc = sq_cuda_upload(b16, (size_t)s->cp * sizeof *b16, &s->bias16, err);
  free(hw);
  free(b32);
  free(b16);
  return rc;
}

/* One fused call on scratch buffers: cuDNN refuses some fused configurations (algorithm,
 * layout, z) at run time only, so the binding asks once instead of failing the first job. */
static int probe_fused(sq_cuda_backend_t *be, conv_state_t *s, const sq_view_t *in,
                       const sq_view_t *dev, const sq_view_t *out) {
  size_t xb = s->mode == SQ_CUDA_F16 ? (size_t)sq_cuda_count16(&in[0]) * 2
                                     : (size_t)sq_view_numel(&in[0]) * 4;
  size_t yb = s->mode == SQ_CUDA_F16 ? (size_t)s->count * 2 : (size_t)sq_view_numel(&out[0]) * 4;
  void *x = NULL, *y = NULL, *ws = NULL;
  const void *w = s->mode == SQ_CUDA_F16 ? s->w16 : dev[1].data;
  const void *bias = s->mode == SQ_CUDA_F16 ? s->bias16 : dev[2].data;
  int ok = cudaMalloc(&x, xb ? xb : 4) == cudaSuccess &&
           cudaMalloc(&y, yb ? yb : 4) == cudaSuccess &&
           (!s->ws || cudaMalloc(&ws, s->ws) == cudaSuccess) &&
           cudaMemsetAsync(x, 0, xb, be->load_stream) == cudaSuccess &&
           cudaMemsetAsync(y, 0, yb, be->load_stream) == cudaSuccess;
  const float one = 1.f, zero = 0.f;
  if (ok)
    ok = cudnnConvolutionBiasActivationForward(be->load_dnn, &one, s->x, x, s->w, w, s->conv,
                                               s->fwd, ws, s->ws, s->fused_z ? &one : &zero, s->y,
                                               y, s->bias, bias, s->act_desc, s->y,
                                               y) == CUDNN_STATUS_SUCCESS;
  if (ok) ok = cudaStreamSynchronize(be->load_stream) == cudaSuccess;
  cudaGetLastError();
  if (x) cudaFree(x);
  if (y) cudaFree(y);
  if (ws) cudaFree(ws);
  return ok;
}

int sq_cuda_conv_prepare(SQ_CUDA_PREPARE_ARGS) {
  geom_t g;
  int rc = geom(n, in, out, &g, err);
  if (rc) return rc;
  conv_state_t *s = calloc(1, sizeof *s);
  if (!s) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  *state = s;
  s->transpose = n->op == SQ_OP_ConvTranspose;
  s->mode = mode;
  const sq_view_t *w = &in[1];
  int fp16 = mode == SQ_CUDA_F16;
  int64_t cin = in[0].dims[1], cout = out[0].dims[1];
  int64_t cin_p = fp16 ? SQ_CUDA_CPAD(cin) : cin, cout_p = fp16 ? SQ_CUDA_CPAD(cout) : cout;
  /* filter dims: forward [K, C/g] = [cout, cin/g]; backward data [K, C] = [cin, cout/g] */
  int64_t fk = s->transpose ? cin_p : cout_p;
  int64_t fc = g.group == 1 ? (s->transpose ? cout_p : cin_p) : w->dims[1];
  int fdims[4] = {(int)(fp16 ? fk : w->dims[0]), (int)(fp16 ? fc : w->dims[1]), (int)g.k[0],
                  (int)g.k[1]};
  cudnnDataType_t dt = fp16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  s->cp = cout_p;
  s->count = fp16 ? sq_cuda_count16(&out[0]) : sq_view_numel(&out[0]);
  if (fp16) rc = upload16(n, &g, in, s, fk, fc, cout, err);
  if (!rc) rc = sq_cuda_desc4_mode(&s->x, &in[0], mode, err);
  if (!rc) rc = sq_cuda_desc4_mode(&s->y, &out[0], mode, err);
  if (!rc) rc = sq_cudnn_check(cudnnCreateFilterDescriptor(&s->w), err, "cudnnCreateFilter");
  if (!rc)
    rc = sq_cudnn_check(
        cudnnSetFilter4dDescriptor(s->w, dt, fp16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, fdims[0],
                                   fdims[1], fdims[2], fdims[3]),
        err, "cudnnSetFilter4dDescriptor");
  if (!rc) rc = sq_cudnn_check(cudnnCreateConvolutionDescriptor(&s->conv), err, "cudnnCreateConv");
  /* compute type float in both modes: fp16 data with fp32 accumulation */
  if (!rc)
    rc = sq_cudnn_check(cudnnSetConvolution2dDescriptor(
                            s->conv, (int)g.p[0], (int)g.p[1], (int)g.s[0], (int)g.s[1],
                            (int)g.d[0], (int)g.d[1], CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                        err, "cudnnSetConvolution2dDescriptor");
  if (!rc)
    rc = sq_cudnn_check(cudnnSetConvolutionGroupCount(s->conv, (int)g.group), err,
                        "cudnnSetConvolutionGroupCount");
  const char *tf32 = getenv("SEGQ_CUDA_TF32");
  const char *math = fp16 ? "tensor" : tf32 && *tf32 == '1' ? "tf32" : "fma";
  if (!rc)
    rc = sq_cudnn_check(
        cudnnSetConvolutionMathType(s->conv, fp16                   ? CUDNN_TENSOR_OP_MATH
                                             : tf32 && *tf32 == '1' ? CUDNN_DEFAULT_MATH
                                                                    : CUDNN_FMA_MATH),
        err, "cudnnSetConvolutionMathType");
  s->c = out[0].dims[1];
  s->outer = out[0].dims[0];
  s->inner = s->outer * s->c > 0 ? sq_view_numel(&out[0]) / (s->outer * s->c) : 1;
  char key[768];
  int cached = -1;
  size_t cached_ws = 0;
  cache_key(be, s, &g, &in[0], w, math, key, sizeof key);
  if (!rc && !cache_lookup(key, &cached, &cached_ws) && cached >= 0 &&
      cached_ws <= be->workspace_limit) {
    if (s->transpose)
      s->bwd = (cudnnConvolutionBwdDataAlgo_t)cached;
    else
      s->fwd = (cudnnConvolutionFwdAlgo_t)cached;
    s->ws = cached_ws;
  } else if (!rc) {
    rc = find_algo(be, n, s, in, dev, out, err);
    if (!rc) cache_store(key, s->transpose ? (int)s->bwd : (int)s->fwd, s->ws);
  }
  int has_bias = n->nin > 2 && sq_view_present(&in[2]);
  /* The activation cuDNN applies: the Conv's own, or the Add's when it takes the Add in too. */
  int want_z = fuse && fuse->z && !s->transpose && n->act == SQ_ACT_NONE;
  int act = want_z ? fuse->act : n->act;
  /* cuDNN's fused path: ReLU with any algorithm, identity only with IMPLICIT_PRECOMP_GEMM; a
   * bias is required (fp16 always has one, zero padded). */
  if (!rc && !s->transpose && (has_bias || fp16) &&
      (act == SQ_ACT_RELU ||
       (act == SQ_ACT_NONE && s->fwd == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM))) {
    sq_view_t bv = {.dtype = SQ_DT_FLOAT, .rank = 4, .dims = {1, cout_p, 1, 1}};
    rc = sq_cuda_desc4(&s->bias, &bv, err);
    if (!rc && fp16)
      rc = sq_cudnn_check(cudnnSetTensor4dDescriptor(s->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_HALF, 1,
                                                     (int)cout_p, 1, 1),
                          err, "cudnnSetTensor4dDescriptor (bias)");
    if (!rc) rc = sq_cudnn_check(cudnnCreateActivationDescriptor(&s->act_desc), err, "act desc");
    if (!rc)
      rc = sq_cudnn_check(
          cudnnSetActivationDescriptor(
              s->act_desc, act == SQ_ACT_RELU ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
              CUDNN_NOT_PROPAGATE_NAN, 0.0), /* as the CPU: ReLU(NaN) = 0 */
          err, "cudnnSetActivationDescriptor");
    s->fused_z = want_z;
    s->fused = !rc && probe_fused(be, s, in, dev, out);
    if (!s->fused) s->fused_z = 0;
  }
  if (fuse && fuse->fused) *fuse->fused = s->fused_z;
  *ws_bytes = s->ws;
  return rc;
}

int sq_cuda_conv_forward(SQ_CUDA_FORWARD_ARGS) {
  conv_state_t *s = state;
  const float one = 1.f, zero = 0.f;
  int fp16 = s->mode == SQ_CUDA_F16;
  const void *w = fp16 ? s->w16 : in[1].data;
  const float *bias32 = fp16                                    ? s->bias32
                        : n->nin > 2 && sq_view_present(&in[2]) ? in[2].data
                                                                : NULL;
  int rc;
  if (s->fused)
    return sq_cudnn_check(
        cudnnConvolutionBiasActivationForward(
            c->dnn, &one, s->x, in[0].data, s->w, w, s->conv, s->fwd, c->ws, s->ws,
            s->fused_z ? &one : &zero, s->y, s->fused_z ? in[n->nin].data : out[0].data, s->bias,
            fp16 ? s->bias16 : (const void *)bias32, s->act_desc, s->y, out[0].data),
        err, "cudnnConvolutionBiasActivationForward");
  if (!s->transpose)
    rc = sq_cudnn_check(cudnnConvolutionForward(c->dnn, &one, s->x, in[0].data, s->w, w, s->conv,
                                                s->fwd, c->ws, s->ws, &zero, s->y, out[0].data),
                        err, "cudnnConvolutionForward");
  else
    rc = sq_cudnn_check(
        cudnnConvolutionBackwardData(c->dnn, &one, s->w, w, s->x, in[0].data, s->conv, s->bwd,
                                     c->ws, s->ws, &zero, s->y, out[0].data),
        err, "cudnnConvolutionBackwardData");
  if (rc) return rc;
  if (fp16) {
    if (n->nin <= 2 && n->act == SQ_ACT_NONE) return 0;
    return sq_cuda_check(
        sq_cuda_bias_act16(out[0].data, s->bias32, s->count, s->cp, s->c, cuda_act_of(n->act),
                           n->act_alpha, n->act_beta, c->stream),
        err, "bias/activation kernel (fp16)");
  }
  if (!bias32 && n->act == SQ_ACT_NONE) return 0;
  return sq_cuda_check(sq_cuda_bias_act(out[0].data, bias32, s->outer, s->c, s->inner,
                                        cuda_act_of(n->act), n->act_alpha, n->act_beta, c->stream),
                       err, "bias/activation kernel");
}
