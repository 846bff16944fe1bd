/* cpu_ops_matmul.c: Gemm (transA/transB, alpha, beta, C broadcast to [M, N]) and MatMul (numpy
 * semantics: 1-D operands promoted, batch dims broadcast) on oneDNN's sgemm. float32.
 * Executor thread; sgemm runs on the calling thread's OpenMP team (the backend's threads). */
#include <dnnl.h>
#include <string.h>

#include "engine_internal.h"

/* sgemm takes int sizes */
static bool fits_int(int64_t v) {
  return v >= 0 && v <= 0x7fffffff;
}

/* ---- Gemm ---- */
SQ_SHAPE_FN(sq_shape_gemm) {
  (void)nout;
  if (nin < 2 || in[0].rank != 2 || in[1].rank != 2)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "A and B must be 2-D");
  for (int k = 0; k < nin && k < 3; k++)
    if (sq_view_present(&in[k]) && in[k].dtype != SQ_DT_FLOAT)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "type %s", sq_dtype_name(in[k].dtype));
  bool ta = sq_attr_int(node, "transA", 0) != 0, tb = sq_attr_int(node, "transB", 0) != 0;
  int64_t m = in[0].dims[ta ? 1 : 0], k = in[0].dims[ta ? 0 : 1];
  int64_t kb = in[1].dims[tb ? 1 : 0], n = in[1].dims[tb ? 0 : 1];
  if (k != kb)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "inner dims %lld and %lld", (long long)k,
                         (long long)kb);
  if (!fits_int(m) || !fits_int(n) || !fits_int(k))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "dims too large");
  out[0].dtype = SQ_DT_FLOAT;
  out[0].rank = 2;
  out[0].dims[0] = m;
  out[0].dims[1] = n;
  if (nin > 2 && sq_view_present(&in[2])) {
    sq_view_t b;
    if (in[2].rank > 2 || sq_broadcast_shape(&in[2], &out[0], &b) || b.dims[0] != m ||
        b.dims[1] != n)
      return sq_node_error(err, SQ_EMODEL_LOAD, node, "C does not broadcast to [M, N]");
  }
  return 0;
}

SQ_KERNEL_FN(sq_kern_gemm) {
  (void)cpu, (void)nout, (void)err;
  bool ta = sq_attr_int(node, "transA", 0) != 0, tb = sq_attr_int(node, "transB", 0) != 0;
  float alpha = sq_attr_float(node, "alpha", 1.0f), beta = sq_attr_float(node, "beta", 1.0f);
  int64_t m = out[0].dims[0], n = out[0].dims[1], k = in[0].dims[ta ? 0 : 1];
  float *y = out[0].data;
  bool has_c = nin > 2 && sq_view_present(&in[2]) && beta != 0.0f;
  if (has_c) {
    /* y = beta * C broadcast, then sgemm accumulates onto it */
    int64_t st[SQ_MAX_DIMS];
    sq_broadcast_strides(&in[2], &out[0], st);
    const float *c = in[2].data;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) y[i * n + j] = beta * c[i * st[0] + j * st[1]];
  }
  if (m == 0 || n == 0) return 0;
  if (k == 0) {
    if (!has_c) memset(y, 0, (size_t)(m * n) * sizeof(float));
    return 0;
  }
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, in[0].data, in[0].dims[1], in[1].data,
             in[1].dims[1], has_c ? 1.0f : 0.0f, y, n);
  if (node->act) sq_act_apply(node->act, node->act_alpha, node->act_beta, y, m * n);
  return 0;
}

/* ---- MatMul ---- */
typedef struct {
  int64_t m, k, n;
  int brank;                                                    /* batch rank of the output */
  int64_t bdims[SQ_MAX_DIMS], sa[SQ_MAX_DIMS], sb[SQ_MAX_DIMS]; /* batch strides in matrices */
} matmul_t;

/* Shapes as numpy: a 1-D A is [1, K] (dim dropped after), a 1-D B is [K, 1]. */
static int matmul_params(const sq_node_t *node, const sq_view_t *a, const sq_view_t *b, matmul_t *p,
                         sq_view_t *o, sq_error_t *err) {
  if (a->rank < 1 || b->rank < 1) return sq_node_error(err, SQ_EMODEL_LOAD, node, "scalar operand");
  p->m = a->rank == 1 ? 1 : a->dims[a->rank - 2];
  p->k = a->dims[a->rank - 1];
  int64_t kb = b->rank == 1 ? b->dims[0] : b->dims[b->rank - 2];
  p->n = b->rank == 1 ? 1 : b->dims[b->rank - 1];
  if (p->k != kb)
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "inner dims %lld and %lld", (long long)p->k,
                         (long long)kb);
  if (!fits_int(p->m) || !fits_int(p->n) || !fits_int(p->k))
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "dims too large");
  /* batch dims: broadcast of the leading dims */
  sq_view_t ba = {.rank = a->rank > 2 ? a->rank - 2 : 0},
            bb = {.rank = b->rank > 2 ? b->rank - 2 : 0};
  memcpy(ba.dims, a->dims, sizeof(int64_t) * (size_t)ba.rank);
  memcpy(bb.dims, b->dims, sizeof(int64_t) * (size_t)bb.rank);
  sq_view_t bo;
  if (sq_broadcast_shape(&ba, &bb, &bo))
    return sq_node_error(err, SQ_EMODEL_LOAD, node, "batch dims do not broadcast");
  p->brank = bo.rank;
  memcpy(p->bdims, bo.dims, sizeof p->bdims);
  sq_broadcast_strides(&ba, &bo, p->sa);
  sq_broadcast_strides(&bb, &bo, p->sb);
  for (int d = 0; d < bo.rank; d++) {
    p->sa[d] *= p->m * p->k;
    p->sb[d] *= p->k * p->n;
  }
  if (o) {
    o->dtype = SQ_DT_FLOAT;
    o->rank = 0;
    for (int d = 0; d < bo.rank; d++) o->dims[o->rank++] = bo.dims[d];
    if (a->rank > 1) o->dims[o->rank++] = p->m;
    if (b->rank > 1) o->dims[o->rank++] = p->n;
    if (o->rank > SQ_MAX_DIMS) return sq_node_error(err, SQ_EUNSUPPORTED, node, "rank");
  }
  return 0;
}

SQ_SHAPE_FN(sq_shape_matmul) {
  (void)nout;
  if (nin < 2) return sq_node_error(err, SQ_EMODEL_LOAD, node, "two inputs");
  if (in[0].dtype != SQ_DT_FLOAT || in[1].dtype != SQ_DT_FLOAT)
    return sq_node_error(err, SQ_EUNSUPPORTED, node, "types %s, %s", sq_dtype_name(in[0].dtype),
                         sq_dtype_name(in[1].dtype));
  matmul_t p;
  return matmul_params(node, &in[0], &in[1], &p, &out[0], err);
}

SQ_KERNEL_FN(sq_kern_matmul) {
  (void)cpu, (void)nin, (void)nout;
  matmul_t p;
  int rc = matmul_params(node, &in[0], &in[1], &p, NULL, err);
  if (rc) return rc;
  int64_t nb = 1;
  for (int d = 0; d < p.brank; d++) nb *= p.bdims[d];
  float *y = out[0].data;
  if (p.m == 0 || p.n == 0 || nb == 0) return 0;
  if (p.k == 0) {
    memset(y, 0, (size_t)(nb * p.m * p.n) * sizeof(float));
    return 0;
  }
  const float *a = in[0].data, *b = in[1].data;
  bool b_shared = true;
  for (int d = 0; d < p.brank; d++) b_shared = b_shared && p.sb[d] == 0;
  if (nb > 1 && b_shared && sq_view_numel(&in[0]) == nb * p.m * p.k &&
      fits_int(nb * p.m)) { /* [batch, M, K] x [K, N]: one sgemm over all rows */
    dnnl_sgemm('N', 'N', nb * p.m, p.n, p.k, 1.0f, a, p.k, b, p.n, 0.0f, y, p.n);
    return 0;
  }
  for (int64_t i = 0; i < nb; i++) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int d = p.brank - 1; d >= 0; d--) {
      int64_t idx = rem % p.bdims[d];
      rem /= p.bdims[d];
      oa += idx * p.sa[d];
      ob += idx * p.sb[d];
    }
    dnnl_sgemm('N', 'N', p.m, p.n, p.k, 1.0f, a + oa, p.k, b + ob, p.n, 0.0f, y + i * p.m * p.n,
               p.n);
  }
  return 0;
}
