/* kern_conv_winograd.c: 3x3 stride-1 convolution as Winograd F(2x2,3x3) (Lavin & Gray 2015):
 * each 2x2 output tile costs 16 multiplies per (input, output) channel pair instead of 36, as 16
 * GEMMs [M x C] x [C x tiles]. Only additions in the input/output transforms and halves in the
 * weight transform, so the result differs from direct convolution by rounding alone. Work is
 * split in blocks of tile rows that fit in L2; each pool thread transforms a block, runs the 16
 * small sgemms itself (OpenBLAS keeps GEMMs this small on the calling thread) and writes the
 * output with bias and the fused activation. Executor thread; fans out over the pool. */
#include <cblas.h>
#include <stdatomic.h>
#include <string.h>

#include "kern_conv.h"

typedef struct {
  const sq_conv3x3_t *g;
  const sq_node_t *node;
  const float *x, *u, *bias; /* u: transformed weights [16][M][C] */
  float *y;
  float *scratch;      /* per slot: slot_floats */
  int64_t slot_floats; /* floats per slot (a multiple of 16: 64-byte aligned slots) */
  int64_t th, tw;      /* tiles down and across */
  int64_t rows;        /* tile rows per block */
  int64_t tb;          /* columns per block: rows * tw */
  int64_t nbr;         /* blocks per image */
  int64_t nblocks;
  int64_t dstride; /* floats per deinterleaved half row (even or odd columns) */
  atomic_llong next; /* next block to take */
} wino_t;

static int64_t round16(int64_t n) {
  return (n + 15) & ~(int64_t)15;
}

/* U = G g G^T for every (m, c), G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
static void weight_transform(const float *w, int64_t m, int64_t c, float *u) {
  for (int64_t o = 0; o < m; o++)
    for (int64_t i = 0; i < c; i++) {
      const float *g = w + (o * c + i) * 9;
      float t[4][3], r[4][4];
      for (int k = 0; k < 3; k++) {
        t[0][k] = g[k];
        t[1][k] = 0.5f * (g[k] + g[3 + k] + g[6 + k]);
        t[2][k] = 0.5f * (g[k] - g[3 + k] + g[6 + k]);
        t[3][k] = g[6 + k];
      }
      for (int k = 0; k < 4; k++) {
        r[k][0] = t[k][0];
        r[k][1] = 0.5f * (t[k][0] + t[k][1] + t[k][2]);
        r[k][2] = 0.5f * (t[k][0] - t[k][1] + t[k][2]);
        r[k][3] = t[k][2];
      }
      for (int k = 0; k < 16; k++) u[(k * m + o) * c + i] = r[k / 4][k % 4];
    }
}

/* 8 floats: GCC vector extensions, lowered to AVX2 in the avx2 clones and to SSE pairs in the
 * default ones (the build has no -march, and -O2 does not vectorize loops with a tail). */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int v8i __attribute__((vector_size(32)));
#define LD(p) (*(const v8f *)(p))
#define ST(p, v) (*(v8f *)(p) = (v))
#define HOT __attribute__((target_clones("avx2", "default")))

/* Even and odd input columns of the padded row: e[j] = row[2j - pw], o[j] = row[2j + 1 - pw]
 * for j in [0, n), zero outside the row. Splitting them makes every later access unit-stride. */
HOT static void deinterleave(const float *row, int64_t w, int64_t pw, int64_t n, float *e,
                             float *o) {
  int64_t j0 = (pw + 1) / 2, j1 = (w - 2 + pw) / 2 + 1; /* [j0, j1): both columns inside */
  if (w - 2 + pw < 0) j1 = 0;
  if (j1 > n) j1 = n;
  int64_t j = 0;
  for (; j < n && j < j0; j++) { /* leading edge */
    int64_t ce = 2 * j - pw;
    e[j] = ce >= 0 && ce < w ? row[ce] : 0.0f;
    o[j] = ce + 1 >= 0 && ce + 1 < w ? row[ce + 1] : 0.0f;
  }
  const v8i ev = {0, 2, 4, 6, 8, 10, 12, 14}, od = {1, 3, 5, 7, 9, 11, 13, 15};
  for (; j + 8 <= j1; j += 8) {
    const float *src = row + 2 * j - pw;
    v8f a = LD(src), b = LD(src + 8);
    ST(e + j, __builtin_shuffle(a, b, ev));
    ST(o + j, __builtin_shuffle(a, b, od));
  }
  for (; j < n; j++) {
    int64_t ce = 2 * j - pw;
    e[j] = ce >= 0 && ce < w ? row[ce] : 0.0f;
    o[j] = ce + 1 >= 0 && ce + 1 < w ? row[ce + 1] : 0.0f;
  }
}

/* One tile row of V from its 4 deinterleaved input rows (e[k], o[k], k = 0..3):
 * V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], columns first (across rows k),
 * then rows: tile tx reads d = (e[tx], o[tx], e[tx+1], o[tx+1]). v[xi] points at its column. */
#define COLT(x0, x1, x2, x3, q0, q1, q2, q3) \
  q0 = x0 - x2;                              \
  q1 = x1 + x2;                              \
  q2 = x2 - x1;                              \
  q3 = x1 - x3
HOT static void input_tile_row(const float *const *e, const float *const *o, int64_t tw,
                               float *const *v) {
  int64_t tx = 0;
  for (; tx + 8 <= tw; tx += 8) {
    v8f a[4], b[4], c[4], d[4]; /* columns 0..3 of the tile after the column transform */
    COLT(LD(e[0] + tx), LD(e[1] + tx), LD(e[2] + tx), LD(e[3] + tx), a[0], a[1], a[2], a[3]);
    COLT(LD(o[0] + tx), LD(o[1] + tx), LD(o[2] + tx), LD(o[3] + tx), b[0], b[1], b[2], b[3]);
    COLT(LD(e[0] + tx + 1), LD(e[1] + tx + 1), LD(e[2] + tx + 1), LD(e[3] + tx + 1), c[0], c[1],
         c[2], c[3]);
    COLT(LD(o[0] + tx + 1), LD(o[1] + tx + 1), LD(o[2] + tx + 1), LD(o[3] + tx + 1), d[0], d[1],
         d[2], d[3]);
    for (int i = 0; i < 4; i++) {
      ST(v[i * 4 + 0] + tx, a[i] - c[i]);
      ST(v[i * 4 + 1] + tx, b[i] + c[i]);
      ST(v[i * 4 + 2] + tx, c[i] - b[i]);
      ST(v[i * 4 + 3] + tx, b[i] - d[i]);
    }
  }
  for (; tx < tw; tx++) {
    float a[4], b[4], c[4], d[4];
    COLT(e[0][tx], e[1][tx], e[2][tx], e[3][tx], a[0], a[1], a[2], a[3]);
    COLT(o[0][tx], o[1][tx], o[2][tx], o[3][tx], b[0], b[1], b[2], b[3]);
    COLT(e[0][tx + 1], e[1][tx + 1], e[2][tx + 1], e[3][tx + 1], c[0], c[1], c[2], c[3]);
    COLT(o[0][tx + 1], o[1][tx + 1], o[2][tx + 1], o[3][tx + 1], d[0], d[1], d[2], d[3]);
    for (int i = 0; i < 4; i++) {
      v[i * 4 + 0][tx] = a[i] - c[i];
      v[i * 4 + 1][tx] = b[i] + c[i];
      v[i * 4 + 2][tx] = c[i] - b[i];
      v[i * 4 + 3][tx] = b[i] - d[i];
    }
  }
}

/* V[xi][c][r*tw + tx] for the block's tile rows: the 2*nrows + 2 input rows it reads are
 * deinterleaved once per channel (de: [rows][2][tw + 1], stride dstride per half). */
static void input_transform(const wino_t *a, int64_t n, int64_t ty0, int64_t nrows, float *v,
                            float *de, int64_t dstride) {
  const sq_conv3x3_t *g = a->g;
  int64_t tw = a->tw, tb = a->tb, nin = 2 * nrows + 2, iy0 = 2 * ty0 - g->ph;
  for (int64_t c = 0; c < g->c; c++) {
    const float *xc = a->x + (n * g->c + c) * g->h * g->w;
    for (int64_t rr = 0; rr < nin; rr++) {
      float *e = de + 2 * rr * dstride, *o = e + dstride;
      int64_t iy = iy0 + rr;
      if (iy < 0 || iy >= g->h) {
        memset(e, 0, (size_t)(2 * dstride) * sizeof(float));
        continue;
      }
      deinterleave(xc + iy * g->w, g->w, g->pw, tw + 1, e, o);
    }
    for (int64_t r = 0; r < nrows; r++) {
      const float *er[4], *or[4];
      float *vr[16];
      for (int k = 0; k < 4; k++) {
        er[k] = de + 2 * (2 * r + k) * dstride;
        or[k] = er[k] + dstride;
      }
      for (int k = 0; k < 16; k++) vr[k] = v + (k * g->c + c) * tb + r * tw;
      input_tile_row(er, or, tw, vr);
    }
  }
}

/* Two output rows of one channel from a tile row: y = A^T Y A + bias, A^T = [1 1 1 0;
 * 0 1 -1 -1], rows first; ReLU fused. s[xi] points at the tile row in the GEMM result. */
#define ROWT(y0, y1, y2, y3, t0, t1) \
  t0 = y0 + y1 + y2;                 \
  t1 = y1 - y2 - y3
HOT static void output_tile_row(const float *const *s, int64_t tw, float bv, bool relu,
                                float *d0, float *d1) {
  int64_t tx = 0;
  const v8i lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = {4, 12, 5, 13, 6, 14, 7, 15};
  const v8f vb = {bv, bv, bv, bv, bv, bv, bv, bv}, zero = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; tx + 8 <= tw; tx += 8) {
    v8f t0[4], t1[4];
    for (int i = 0; i < 4; i++) {
      ROWT(LD(s[i * 4] + tx), LD(s[i * 4 + 1] + tx), LD(s[i * 4 + 2] + tx), LD(s[i * 4 + 3] + tx),
           t0[i], t1[i]);
    }
    v8f o00 = t0[0] + t0[1] + t0[2] + vb, o01 = t1[0] + t1[1] + t1[2] + vb;
    v8f o10 = t0[1] - t0[2] - t0[3] + vb, o11 = t1[1] - t1[2] - t1[3] + vb;
    if (relu) {
      o00 = (v8f)((v8i)o00 & (o00 > zero));
      o01 = (v8f)((v8i)o01 & (o01 > zero));
      o10 = (v8f)((v8i)o10 & (o10 > zero));
      o11 = (v8f)((v8i)o11 & (o11 > zero));
    }
    ST(d0 + 2 * tx, __builtin_shuffle(o00, o01, lo));
    ST(d0 + 2 * tx + 8, __builtin_shuffle(o00, o01, hi));
    ST(d1 + 2 * tx, __builtin_shuffle(o10, o11, lo));
    ST(d1 + 2 * tx + 8, __builtin_shuffle(o10, o11, hi));
  }
  for (; tx < tw; tx++) {
    float t0[4], t1[4];
    for (int i = 0; i < 4; i++) {
      ROWT(s[i * 4][tx], s[i * 4 + 1][tx], s[i * 4 + 2][tx], s[i * 4 + 3][tx], t0[i], t1[i]);
    }
    float o[4] = {t0[0] + t0[1] + t0[2] + bv, t1[0] + t1[1] + t1[2] + bv,
                  t0[1] - t0[2] - t0[3] + bv, t1[1] - t1[2] - t1[3] + bv};
    if (relu)
      for (int i = 0; i < 4; i++) o[i] = o[i] > 0 ? o[i] : 0;
    d0[2 * tx] = o[0];
    d0[2 * tx + 1] = o[1];
    d1[2 * tx] = o[2];
    d1[2 * tx + 1] = o[3];
  }
}

HOT void sq_conv_interleave2(const float *s0, const float *s1, int64_t n, float bias, bool relu,
                             float *dst) {
  const v8i lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = {4, 12, 5, 13, 6, 14, 7, 15};
  const v8f vb = {bias, bias, bias, bias, bias, bias, bias, bias};
  const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f a = LD(s0 + i) + vb, b = LD(s1 + i) + vb;
    if (relu) {
      a = (v8f)((v8i)a & (a > zero));
      b = (v8f)((v8i)b & (b > zero));
    }
    ST(dst + 2 * i, __builtin_shuffle(a, b, lo));
    ST(dst + 2 * i + 8, __builtin_shuffle(a, b, hi));
  }
  for (; i < n; i++) {
    float a = s0[i] + bias, b = s1[i] + bias;
    dst[2 * i] = relu && a < 0 ? 0 : a;
    dst[2 * i + 1] = relu && b < 0 ? 0 : b;
  }
}

/* Writes the block's output rows; an odd width or height goes through orow (2 rows of 2*tw),
 * an even one straight into y. Other fused activations run over the finished rows. */
static void output_transform(const wino_t *a, int64_t n, int64_t ty0, int64_t nrows,
                             const float *yb, float *orow) {
  const sq_conv3x3_t *g = a->g;
  const sq_node_t *node = a->node;
  int64_t tw = a->tw, tb = a->tb, m = g->m, ow = g->ow;
  bool relu = node->act == SQ_ACT_RELU, even = ow % 2 == 0;
  for (int64_t oc = 0; oc < m; oc++) {
    float bv = a->bias ? a->bias[oc] : 0.0f;
    float *yc = a->y + (n * m + oc) * g->oh * ow;
    for (int64_t r = 0; r < nrows; r++) {
      const float *s[16];
      for (int k = 0; k < 16; k++) s[k] = yb + (k * m + oc) * tb + r * tw;
      int64_t oy = 2 * (ty0 + r);
      bool two = oy + 1 < g->oh;
      float *d0 = even ? yc + oy * ow : orow;
      float *d1 = even && two ? yc + (oy + 1) * ow : orow + 2 * tw;
      output_tile_row(s, tw, bv, relu, d0, d1);
      if (d0 == orow) memcpy(yc + oy * ow, d0, (size_t)ow * sizeof(float));
      if (two && d1 == orow + 2 * tw) memcpy(yc + (oy + 1) * ow, d1, (size_t)ow * sizeof(float));
      if (node->act && !relu)
        sq_act_apply(node->act, node->act_alpha, node->act_beta, yc + oy * ow,
                     two ? 2 * ow : ow);
    }
  }
}

static void wino_slots(void *arg, int64_t b, int64_t e) {
  wino_t *a = arg;
  const sq_conv3x3_t *g = a->g;
  int64_t tb = a->tb, tw = a->tw;
  for (int64_t slot = b; slot < e; slot++) {
    float *v = a->scratch + slot * a->slot_floats;
    float *yb = v + round16(16 * g->c * tb);
    float *orow = yb + round16(16 * g->m * tb);
    float *de = orow + round16(4 * tw);
    for (;;) {
      int64_t bi = atomic_fetch_add(&a->next, 1);
      if (bi >= a->nblocks) break;
      int64_t n = bi / a->nbr, ty0 = (bi % a->nbr) * a->rows;
      int64_t nrows = a->th - ty0 < a->rows ? a->th - ty0 : a->rows, cols = nrows * tw;
      input_transform(a, n, ty0, nrows, v, de, a->dstride);
      for (int k = 0; k < 16; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->m, (int)cols, (int)g->c,
                    1.0f, a->u + k * g->m * g->c, (int)g->c, v + k * g->c * tb, (int)tb, 0.0f,
                    yb + k * g->m * tb, (int)tb);
      output_transform(a, n, ty0, nrows, yb, orow);
    }
  }
}

int sq_conv_winograd(sq_cpu_t *cpu, const sq_node_t *node, const sq_conv3x3_t *g, const float *x,
                     const float *w, const float *bias, float *y, sq_error_t *err) {
  wino_t a = {.g = g, .node = node, .x = x, .bias = bias, .y = y};
  a.th = (g->oh + 1) / 2;
  a.tw = (g->ow + 1) / 2;
  /* a block's transformed input (16*C*tb floats) should stay around 256 KiB: L2-resident */
  int64_t cmax = g->c > g->m ? g->c : g->m, target = 4096 / cmax;
  if (target < 32) target = 32;
  a.rows = target / a.tw;
  if (a.rows < 1) a.rows = 1;
  if (a.rows > a.th) a.rows = a.th;
  a.tb = a.rows * a.tw;
  a.nbr = (a.th + a.rows - 1) / a.rows;
  a.nblocks = g->n * a.nbr;
  int slots = sq_cpu_threads(cpu);
  if (slots > a.nblocks) slots = (int)a.nblocks;
  a.dstride = round16(a.tw + 1);
  a.slot_floats = round16(16 * g->c * a.tb) + round16(16 * g->m * a.tb) + round16(4 * a.tw) +
                  (2 * a.rows + 2) * 2 * a.dstride;
  int64_t ufloats = round16(16 * g->m * g->c);
  float *s = sq_cpu_scratch(cpu, (size_t)(ufloats + slots * a.slot_floats) * sizeof(float));
  if (!s) return sq_node_error(err, SQ_ENOMEM, node, "winograd buffers");
  weight_transform(w, g->m, g->c, s);
  a.u = s;
  a.scratch = s + ufloats;
  atomic_store(&a.next, 0);
  sq_cpu_parallel_for(cpu, slots, 1, wino_slots, &a);
  return 0;
}
