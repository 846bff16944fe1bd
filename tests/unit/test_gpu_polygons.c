/* gpu: mask -> polygons on synthetic masks with known answers (rectangle, pixel, disk, ring,
 * diagonal pairs, scale, min_area, order), a brute-force 8-connected labelling to compare
 * component counts on random masks, and a timing check on a large many-component mask. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/common.h"
#include "gpu/gpu.h"

static double shoelace(const sq_polygon_t *p) {
  double a = 0;
  for (uint32_t i = 0; i < p->npoints; i++) {
    uint32_t j = (i + 1) % p->npoints;
    a += (double)p->points[2 * i] * p->points[2 * j + 1] -
         (double)p->points[2 * j] * p->points[2 * i + 1];
  }
  return fabs(a) / 2;
}

static int has_point(const sq_polygon_t *p, float x, float y) {
  for (uint32_t i = 0; i < p->npoints; i++)
    if (p->points[2 * i] == x && p->points[2 * i + 1] == y) return 1;
  return 0;
}

static void test_rectangle(void) {
  uint32_t w = 32, h = 24;
  uint8_t *m = calloc(w * h, 1);
  for (uint32_t y = 3; y < 10; y++)
    for (uint32_t x = 5; x < 15; x++) m[y * w + x] = 255;
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK_EQ_INT(p[0].npoints, 4);
    CHECK(p[0].points[0] == 5 && p[0].points[1] == 3); /* starts at the first pixel's corner */
    CHECK(has_point(&p[0], 15, 3) && has_point(&p[0], 15, 10) && has_point(&p[0], 5, 10));
    CHECK(p[0].area == 70);
    CHECK(p[0].bbox[0] == 5 && p[0].bbox[1] == 3 && p[0].bbox[2] == 10 && p[0].bbox[3] == 7);
    CHECK(shoelace(&p[0]) == 70);
  }
  sq_polygons_free(p, n);
  /* Same rectangle, tolerance 0 (no simplification) gives the same 4 corners. */
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].npoints == 4);
  sq_polygons_free(p, n);
  /* Scale factors apply to points, bbox and area. */
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 2.0f, 0.5f, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK(p[0].points[0] == 10 && p[0].points[1] == 1.5f);
    CHECK(has_point(&p[0], 30, 1.5f) && has_point(&p[0], 30, 5) && has_point(&p[0], 10, 5));
    CHECK(p[0].area == 70);
    CHECK(p[0].bbox[0] == 10 && p[0].bbox[1] == 1.5f && p[0].bbox[2] == 20 && p[0].bbox[3] == 3.5f);
  }
  sq_polygons_free(p, n);
  /* min_area compares the scaled area: 70 * 4 * 1 = 280 */
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 281, 0.5f, 2.0f, 2.0f, &p, &n), 0);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 280, 0.5f, 2.0f, 2.0f, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  sq_polygons_free(p, n);
  free(m);
}

static void test_single_pixel_and_edges(void) {
  uint32_t w = 10, h = 8;
  uint8_t *m = calloc(w * h, 1);
  m[4 * w + 7] = 1;
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK_EQ_INT(p[0].npoints, 4);
    CHECK(p[0].points[0] == 7 && p[0].points[1] == 4);
    CHECK(has_point(&p[0], 8, 4) && has_point(&p[0], 8, 5) && has_point(&p[0], 7, 5));
    CHECK(p[0].area == 1 && shoelace(&p[0]) == 1);
    CHECK(p[0].bbox[0] == 7 && p[0].bbox[1] == 4 && p[0].bbox[2] == 1 && p[0].bbox[3] == 1);
  }
  sq_polygons_free(p, n);
  /* The whole image: the outline is the image border. */
  memset(m, 1, w * h);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].npoints == 4 && p[0].area == 80 && has_point(&p[0], 10, 8));
  sq_polygons_free(p, n);
  /* Empty and NULL masks give no polygons. */
  memset(m, 0, w * h);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 0 && p == NULL);
  CHECK_EQ_INT(sq_polygons_from_mask(NULL, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 0 && p == NULL);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, -1.0f, 1, 1, &p, &n), SQ_EINVAL);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 0, 1, &p, &n), SQ_EINVAL);
  free(m);
}

static void test_diagonal(void) {
  uint32_t w = 6, h = 6;
  uint8_t m[36] = {0};
  m[2 * w + 2] = m[3 * w + 3] = 1; /* "\" pair */
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK(p[0].area == 2 && shoelace(&p[0]) == 2);
    CHECK_EQ_INT(p[0].npoints, 8);
    CHECK(p[0].bbox[0] == 2 && p[0].bbox[1] == 2 && p[0].bbox[2] == 2 && p[0].bbox[3] == 2);
  }
  sq_polygons_free(p, n);
  memset(m, 0, sizeof(m));
  m[2 * w + 3] = m[3 * w + 2] = 1; /* "/" pair */
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK(p[0].area == 2 && shoelace(&p[0]) == 2);
    CHECK(p[0].points[0] == 3 && p[0].points[1] == 2);
  }
  sq_polygons_free(p, n);
  /* Two pixels a knight's move apart are two components, in raster order. */
  memset(m, 0, sizeof(m));
  m[1 * w + 4] = m[2 * w + 1] = 1;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 2);
  if (n == 2) CHECK(p[0].bbox[0] == 4 && p[1].bbox[0] == 1);
  sq_polygons_free(p, n);
}

static uint32_t draw_disk(uint8_t *m, uint32_t w, uint32_t h, double cx, double cy, double r,
                          uint8_t v) {
  uint32_t count = 0;
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++) {
      double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r * r) {
        count += m[y * w + x] != v;
        m[y * w + x] = v;
      }
    }
  return count;
}

static void test_disk_and_ring(void) {
  uint32_t w = 100, h = 100;
  uint8_t *m = calloc(w * h, 1);
  uint32_t count = draw_disk(m, w, h, 50, 50, 20, 1);
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].area == count && shoelace(&p[0]) == count); /* exact outline */
  sq_polygons_free(p, n);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    double a = shoelace(&p[0]);
    CHECK(p[0].area == count);
    CHECK(fabs(a - count) / count < 0.03);
    CHECK(p[0].npoints >= 8 && p[0].npoints < 200);
    CHECK(p[0].bbox[0] == 30 && p[0].bbox[1] == 30 && p[0].bbox[2] == 40 && p[0].bbox[3] == 40);
  }
  sq_polygons_free(p, n);
  /* Ring: one polygon (outer boundary), area = pixel count without the hole. */
  uint32_t hole = draw_disk(m, w, h, 50, 50, 10, 0);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK(p[0].area == count - hole);
    CHECK(shoelace(&p[0]) == count); /* the outline still encloses the hole */
  }
  sq_polygons_free(p, n);
  /* A blob inside the hole is its own component, after the ring in raster order. */
  draw_disk(m, w, h, 50, 50, 3, 1);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 2);
  if (n == 2) CHECK(p[0].area == count - hole && p[1].area < 40 && p[1].bbox[0] > 45);
  sq_polygons_free(p, n);
  free(m);
}

static void test_min_area(void) {
  uint32_t w = 40, h = 10;
  uint8_t *m = calloc(w * h, 1);
  for (uint32_t y = 1; y < 3; y++)
    for (uint32_t x = 1; x < 3; x++) m[y * w + x] = 1; /* area 4 */
  for (uint32_t y = 1; y < 6; y++)
    for (uint32_t x = 10; x < 14; x++) m[y * w + x] = 1; /* area 20 */
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 2);
  sq_polygons_free(p, n);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 5, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].area == 20);
  sq_polygons_free(p, n);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 4, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 2);
  sq_polygons_free(p, n);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 21, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 0 && p == NULL);
  free(m);
}

/* Reference: iterative flood fill with an explicit stack, 8-connectivity. Components come out
 * in raster order of their first pixel, like sq_polygons_from_mask's; their areas and bboxes
 * go to area[] and bbox[] (4 per component). */
static size_t brute_count(const uint8_t *m, uint32_t w, uint32_t h, uint64_t *total, uint32_t *area,
                          uint32_t *bbox) {
  uint8_t *seen = calloc(w * h, 1);
  uint32_t *stack = malloc(sizeof(uint32_t) * w * h);
  size_t comps = 0;
  *total = 0;
  for (uint32_t s = 0; s < w * h; s++) {
    if (!m[s] || seen[s]) continue;
    uint32_t *bb = &bbox[4 * comps];
    bb[0] = bb[2] = s % w;
    bb[1] = bb[3] = s / w;
    area[comps] = 0;
    size_t sp = 0;
    stack[sp++] = s;
    seen[s] = 1;
    while (sp) {
      uint32_t i = stack[--sp], x = i % w, y = i / w;
      (*total)++;
      area[comps]++;
      if (x < bb[0]) bb[0] = x;
      if (x > bb[2]) bb[2] = x;
      if (y > bb[3]) bb[3] = y;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int64_t nx = (int64_t)x + dx, ny = (int64_t)y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          uint32_t j = (uint32_t)(ny * w + nx);
          if (m[j] && !seen[j]) {
            seen[j] = 1;
            stack[sp++] = j;
          }
        }
    }
    comps++;
  }
  free(seen);
  free(stack);
  return comps;
}

static void test_random_vs_brute(void) {
  uint32_t w = 73, h = 51;
  uint8_t *m = malloc(w * h);
  uint32_t *area = malloc(sizeof(uint32_t) * w * h), *bbox = malloc(sizeof(uint32_t) * 4 * w * h);
  srand(12345);
  for (int round = 0; round < 40; round++) {
    int density = 10 + round * 2; /* % foreground */
    for (uint32_t i = 0; i < w * h; i++) m[i] = (rand() % 100) < density;
    uint64_t total = 0;
    size_t want = brute_count(m, w, h, &total, area, bbox);
    sq_polygon_t *p = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, round % 2 ? 0.5f : 0, 1, 1, &p, &n), 0);
    CHECK_EQ_INT(n, want);
    double sum = 0;
    int outline_ok = 1, order_ok = 1, stats_ok = n == want;
    for (size_t i = 0; i < n; i++) {
      sum += p[i].area;
      if (stats_ok) {
        const uint32_t *bb = &bbox[4 * i];
        stats_ok = p[i].area == area[i] && p[i].bbox[0] == bb[0] && p[i].bbox[1] == bb[1] &&
                   p[i].bbox[2] == bb[2] - bb[0] + 1 && p[i].bbox[3] == bb[3] - bb[1] + 1;
      }
      /* Unsimplified, the outline encloses at least the component's pixels. */
      if (round % 2 == 0 && shoelace(&p[i]) + 1e-9 < p[i].area) outline_ok = 0;
      if (i > 0) { /* raster order of the first pixel = of the polygon's first point */
        double a = p[i - 1].points[1] * w + p[i - 1].points[0];
        double b = p[i].points[1] * w + p[i].points[0];
        if (!(a < b)) order_ok = 0;
      }
    }
    CHECK(sum == (double)total);
    CHECK(outline_ok);
    CHECK(order_ok);
    CHECK(stats_ok);
    sq_polygons_free(p, n);
  }
  free(area);
  free(bbox);
  free(m);
}

/* A one-pixel-wide square spiral: one long, thin, hole-free component whose outline has
 * thousands of corners (no recursion anywhere, exact area). Also a 16384-wide strip. */
static void test_spiral_and_strip(void) {
  uint32_t w = 401, h = 401;
  uint8_t *m = calloc((size_t)w * h, 1);
  int32_t x = 0, y = 0, dir = 0, len = (int32_t)w - 1;
  static const int32_t sdx[4] = {1, 0, -1, 0}, sdy[4] = {0, 1, 0, -1};
  uint32_t count = 0;
  m[0] = 1;
  count = 1;
  for (int leg = 0; len > 0; leg++) {
    for (int32_t k = 0; k < len; k++) {
      x += sdx[dir];
      y += sdy[dir];
      count += !m[(size_t)y * w + x];
      m[(size_t)y * w + x] = 1;
    }
    dir = (dir + 1) & 3;
    if (leg >= 1 && leg % 2 == 1) len -= 2; /* keep a one-pixel gap between arms */
  }
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, 1);
  if (n == 1) {
    CHECK(p[0].area == count);
    CHECK(shoelace(&p[0]) == count);
    CHECK(p[0].npoints > 400);
  }
  sq_polygons_free(p, n);
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].area == count);
  sq_polygons_free(p, n);
  free(m);

  w = 16384;
  h = 3;
  m = calloc((size_t)w * h, 1);
  for (uint32_t i = 0; i < w; i++) m[w + i] = 1;
  m[16383] = 1; /* top-right corner pixel joins the row */
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 1 && p[0].area == 16385 && p[0].bbox[2] == 16384 && p[0].bbox[3] == 2);
  if (n == 1) CHECK(p[0].points[0] == 16383 && p[0].points[1] == 0);
  sq_polygons_free(p, n);
  free(m);
}

static void test_many_components_fast(void) {
  uint32_t w = 2048, h = 2048;
  uint8_t *m = calloc((size_t)w * h, 1);
  /* 3x3 squares every 8 px (65536 of them) plus 200 disks of radius 12 overlapping some. */
  for (uint32_t y = 0; y < h; y += 8)
    for (uint32_t x = 0; x < w; x += 8)
      for (uint32_t k = 0; k < 9; k++) m[(size_t)(y + k / 3) * w + x + k % 3] = 1;
  uint64_t t0 = sq_clock_mono_us();
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  uint64_t dt = sq_clock_mono_us() - t0;
  CHECK_EQ_INT(n, 65536);
  int all_ok = 1;
  for (size_t i = 0; i < n; i++)
    if (p[i].npoints != 4 || p[i].area != 9) all_ok = 0;
  CHECK(all_ok);
  sq_polygons_free(p, n);
  /* Cell-like blobs: disks of radius 6 on a grid. */
  memset(m, 0, (size_t)w * h);
  uint32_t ndisks = 0;
  for (uint32_t cy = 10; cy + 10 < h; cy += 20)
    for (uint32_t cx = 10; cx + 10 < w; cx += 20) {
      for (uint32_t y = cy - 7; y < cy + 7; y++)
        for (uint32_t x = cx - 7; x < cx + 7; x++) {
          double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
          if (dx * dx + dy * dy <= 36) m[(size_t)y * w + x] = 1;
        }
      ndisks++;
    }
  uint64_t t1 = sq_clock_mono_us();
  CHECK_EQ_INT(sq_polygons_from_mask(m, w, h, 16, 0.5f, 1, 1, &p, &n), 0);
  uint64_t dt2 = sq_clock_mono_us() - t1;
  CHECK_EQ_INT(n, ndisks);
  sq_polygons_free(p, n);
  printf("2048x2048: 65536 squares in %.1f ms, %u disks in %.1f ms\n", dt / 1000.0, ndisks,
         dt2 / 1000.0);
  /* Generous bound: the target is well under 100 ms, but sanitizers and a shared machine
   * slow this down several times. */
  CHECK(dt < 2000000 && dt2 < 2000000);
  free(m);
}

int main(void) {
  test_rectangle();
  test_single_pixel_and_edges();
  test_diagonal();
  test_disk_and_ring();
  test_min_area();
  test_random_vs_brute();
  test_spiral_and_strip();
  test_many_components_fast();
  CHECK_DONE();
}
