/* gpu: mask -> polygons, shared by every model. Labels 8-connected components over runs (not
 * pixels, so memory follows the number of runs), traces each kept component's outer boundary
 * along pixel edges from its first pixel, and simplifies it with Douglas-Peucker.
 * Work pool; no shared state, no recursion (masks up to 16384x16384). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

typedef struct {
  uint32_t y, x0, x1; /* pixels [x0, x1) of row y */
} run_t;

typedef struct {
  uint64_t area;
  uint32_t minx, miny, maxx, maxy; /* inclusive */
  uint32_t first_run;              /* its first pixel in raster order is runs[first_run].x0 */
} comp_t;

/* A growable array of int32 corner points. */
typedef struct {
  int32_t *xy;
  size_t n, cap; /* in points */
} pts_t;

static int pts_push(pts_t *p, int32_t x, int32_t y) {
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    int32_t *xy = realloc(p->xy, cap * 2 * sizeof(*xy));
    if (!xy) return SQ_ENOMEM;
    p->xy = xy;
    p->cap = cap;
  }
  p->xy[2 * p->n] = x;
  p->xy[2 * p->n + 1] = y;
  p->n++;
  return 0;
}

static uint32_t uf_find(uint32_t *parent, uint32_t i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]]; /* path halving */
    i = parent[i];
  }
  return i;
}

/* The smaller index becomes the root, so a component's root is its first run in raster order. */
static void uf_union(uint32_t *parent, uint32_t a, uint32_t b) {
  a = uf_find(parent, a);
  b = uf_find(parent, b);
  if (a < b)
    parent[b] = a;
  else if (b < a)
    parent[a] = b;
}

static inline int mask_at(const uint8_t *mask, int32_t w, int32_t h, int32_t x, int32_t y) {
  return x >= 0 && y >= 0 && x < w && y < h && mask[(size_t)y * (size_t)w + (size_t)x] != 0;
}

/* Walks the outer boundary of the component whose first pixel (raster order) is (x0, y0), along
 * pixel edges with the component on the right (clockwise on screen, y down), and records the
 * corners where the direction changes, starting with (x0, y0). At each corner, with the two
 * pixels ahead L (ahead-left) and R (ahead-right): L set -> turn left (it touches the pixel
 * behind-right diagonally, which 8-connectivity counts), else R set -> straight, else turn
 * right. The walk ends when it is about to repeat its first edge. */
static int trace_outer(const uint8_t *mask, int32_t w, int32_t h, int32_t x0, int32_t y0,
                       pts_t *out) {
  static const int32_t dx[4] = {1, 0, -1, 0}, dy[4] = {0, 1, 0, -1}; /* right down left up */
  /* Offsets from the corner to the pixels ahead-right and ahead-left, per direction. */
  static const int32_t rx[4] = {0, -1, -1, 0}, ry[4] = {0, 0, -1, -1};
  static const int32_t lx[4] = {0, 0, -1, -1}, ly[4] = {-1, 0, 0, -1};
  out->n = 0;
  if (pts_push(out, x0, y0)) return SQ_ENOMEM;
  int32_t cx = x0, cy = y0;
  int d = 0;
  for (;;) {
    cx += dx[d];
    cy += dy[d];
    int nd;
    if (mask_at(mask, w, h, cx + lx[d], cy + ly[d]))
      nd = (d + 3) & 3;
    else if (mask_at(mask, w, h, cx + rx[d], cy + ry[d]))
      nd = d;
    else
      nd = (d + 1) & 3;
    if (cx == x0 && cy == y0 && nd == 0) break;
    if (nd != d && pts_push(out, cx, cy)) return SQ_ENOMEM;
    d = nd;
  }
  return 0;
}

/* Squared distance from p to the segment a-b. */
static double seg_dist2(const int32_t *p, const int32_t *a, const int32_t *b) {
  double vx = b[0] - a[0], vy = b[1] - a[1];
  double wx = p[0] - a[0], wy = p[1] - a[1];
  double len2 = vx * vx + vy * vy;
  double t = len2 > 0 ? (wx * vx + wy * vy) / len2 : 0;
  if (t < 0) t = 0;
  if (t > 1) t = 1;
  double ex = wx - t * vx, ey = wy - t * vy;
  return ex * ex + ey * ey;
}

/* Douglas-Peucker on the closed ring pts[0..n-1]: split at 0 and the vertex farthest from it,
 * simplify both chains with an explicit stack. Sets keep[i]; returns the number kept. */
static size_t simplify_ring(const int32_t *xy, size_t n, double tol, uint8_t *keep,
                            uint32_t *stack) {
  if (n <= 3 || tol <= 0) {
    memset(keep, 1, n);
    return n;
  }
  memset(keep, 0, n);
  size_t far = 0;
  double far_d = -1;
  for (size_t i = 1; i < n; i++) {
    double ddx = xy[2 * i] - xy[0], ddy = xy[2 * i + 1] - xy[1];
    double d2 = ddx * ddx + ddy * ddy;
    if (d2 > far_d) {
      far_d = d2;
      far = i;
    }
  }
  keep[0] = keep[far] = 1;
  double tol2 = tol * tol;
  size_t sp = 0;
  /* Chains as index pairs; index n stands for vertex 0 closing the ring. */
  stack[sp++] = 0;
  stack[sp++] = (uint32_t)far;
  stack[sp++] = (uint32_t)far;
  stack[sp++] = (uint32_t)n;
  while (sp) {
    size_t j = stack[--sp], i = stack[--sp];
    if (j <= i + 1) continue;
    const int32_t *a = &xy[2 * i], *b = &xy[2 * (j % n)];
    size_t best = 0;
    double best_d = -1;
    for (size_t k = i + 1; k < j; k++) {
      double d2 = seg_dist2(&xy[2 * k], a, b);
      if (d2 > best_d) {
        best_d = d2;
        best = k;
      }
    }
    if (best_d > tol2) {
      keep[best] = 1;
      stack[sp++] = (uint32_t)i;
      stack[sp++] = (uint32_t)best;
      stack[sp++] = (uint32_t)best;
      stack[sp++] = (uint32_t)j;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) kept += keep[i];
  return kept;
}

int sq_polygons_from_mask(const uint8_t *mask, uint32_t width, uint32_t height, uint32_t min_area,
                          float tolerance, float scale_x, float scale_y, sq_polygon_t **out,
                          size_t *count) {
  *out = NULL;
  *count = 0;
  if (!mask || width == 0 || height == 0) return 0;
  if (width > INT32_MAX - 1 || height > INT32_MAX - 1) return SQ_EINVAL;
  if (!(tolerance >= 0) || !(scale_x > 0) || !(scale_y > 0)) return SQ_EINVAL;

  int rc = SQ_ENOMEM;
  run_t *runs = NULL;
  uint32_t *parent = NULL, *stack = NULL;
  comp_t *comps = NULL;
  uint8_t *keep = NULL;
  sq_polygon_t *polys = NULL;
  size_t npolys = 0;
  pts_t ring = {0};
  size_t nruns = 0, runs_cap = 0;

  /* Pass 1: runs of each row, joined to the overlapping runs of the row above. A run of row y
   * touches (8-connectivity) a run of row y-1 when their x ranges overlap after widening one of
   * them by a pixel on each side. */
  size_t prev_begin = 0, prev_end = 0;
  for (uint32_t y = 0; y < height; y++) {
    const uint8_t *row = mask + (size_t)y * width;
    size_t cur_begin = nruns;
    uint32_t x = 0;
    while (x < width) {
      /* Masks are mostly background: skip it eight bytes at a time. */
      for (uint64_t word; x + 8 <= width; x += 8) {
        memcpy(&word, row + x, 8);
        if (word) break;
      }
      while (x < width && !row[x]) x++;
      if (x == width) break;
      uint32_t x0 = x;
      while (x < width && row[x]) x++;
      if (nruns == runs_cap) {
        size_t cap = runs_cap ? runs_cap * 2 : 1024;
        if (cap > UINT32_MAX) goto done;
        run_t *r = realloc(runs, cap * sizeof(*r));
        uint32_t *p = realloc(parent, cap * sizeof(*p));
        if (r) runs = r;
        if (p) parent = p;
        if (!r || !p) goto done;
        runs_cap = cap;
      }
      runs[nruns] = (run_t){y, x0, x};
      parent[nruns] = (uint32_t)nruns;
      nruns++;
    }
    size_t i = prev_begin;
    for (size_t c = cur_begin; c < nruns; c++) {
      while (i < prev_end && runs[i].x1 < runs[c].x0) i++;
      for (size_t k = i; k < prev_end && runs[k].x0 <= runs[c].x1; k++)
        uf_union(parent, (uint32_t)k, (uint32_t)c);
    }
    prev_begin = cur_begin;
    prev_end = nruns;
  }
  if (nruns == 0) {
    rc = 0;
    goto done;
  }

  /* Pass 2: flatten (a parent always precedes its child, so one forward sweep suffices) and
   * gather per-component stats; components come out in raster order of their first pixel.
   * `parent` then holds the component index of each run. */
  size_t ncomps = 0;
  for (size_t r = 0; r < nruns; r++) {
    if (parent[r] == r)
      ncomps++;
    else
      parent[r] = parent[parent[r]];
  }
  comps = malloc(ncomps * sizeof(*comps));
  if (!comps) goto done;
  ncomps = 0;
  for (size_t r = 0; r < nruns; r++) {
    const run_t *run = &runs[r];
    comp_t *c;
    if (parent[r] == r) {
      c = &comps[ncomps];
      *c = (comp_t){0, run->x0, run->y, run->x1 - 1, run->y, (uint32_t)r};
      parent[r] = (uint32_t)ncomps++;
    } else {
      /* parent[r] is a root run index < r, already rewritten to its component index. */
      parent[r] = parent[parent[r]];
      c = &comps[parent[r]];
      if (run->x0 < c->minx) c->minx = run->x0;
      if (run->x1 - 1 > c->maxx) c->maxx = run->x1 - 1;
      c->maxy = run->y;
    }
    c->area += run->x1 - run->x0;
  }

  /* Pass 3: trace and simplify the components big enough to keep. */
  double px_area = (double)scale_x * (double)scale_y;
  size_t nkeep = 0;
  for (size_t i = 0; i < ncomps; i++) nkeep += (double)comps[i].area * px_area >= min_area;
  if (nkeep == 0) {
    rc = 0;
    goto done;
  }
  polys = calloc(nkeep, sizeof(*polys));
  if (!polys) goto done;
  size_t keep_cap = 0;
  for (size_t i = 0; i < ncomps; i++) {
    const comp_t *c = &comps[i];
    if ((double)c->area * px_area < min_area) continue;
    const run_t *first = &runs[c->first_run];
    if (trace_outer(mask, (int32_t)width, (int32_t)height, (int32_t)first->x0, (int32_t)first->y,
                    &ring))
      goto done;
    if (ring.n > keep_cap) {
      uint8_t *k = realloc(keep, ring.n);
      uint32_t *s = realloc(stack, ring.n * 4 * sizeof(*s) + 16);
      if (k) keep = k;
      if (s) stack = s;
      if (!k || !s) goto done;
      keep_cap = ring.n;
    }
    size_t kept = simplify_ring(ring.xy, ring.n, tolerance, keep, stack);
    if (kept < 3) { /* a huge tolerance must not collapse an outline into a line */
      memset(keep, 1, ring.n);
      kept = ring.n;
    }
    sq_polygon_t *p = &polys[npolys];
    p->points = malloc(kept * 2 * sizeof(float));
    if (!p->points) goto done;
    npolys++;
    size_t o = 0;
    for (size_t k = 0; k < ring.n; k++) {
      if (!keep[k]) continue;
      p->points[o++] = (float)ring.xy[2 * k] * scale_x;
      p->points[o++] = (float)ring.xy[2 * k + 1] * scale_y;
    }
    p->npoints = (uint32_t)kept;
    p->area = (float)((double)c->area * px_area);
    p->bbox[0] = (float)c->minx * scale_x;
    p->bbox[1] = (float)c->miny * scale_y;
    p->bbox[2] = (float)(c->maxx - c->minx + 1) * scale_x;
    p->bbox[3] = (float)(c->maxy - c->miny + 1) * scale_y;
  }
  *out = polys;
  *count = npolys;
  polys = NULL;
  npolys = 0;
  rc = 0;
done:
  sq_polygons_free(polys, npolys);
  free(runs);
  free(parent);
  free(comps);
  free(keep);
  free(stack);
  free(ring.xy);
  return rc;
}
