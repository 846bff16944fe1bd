/* gpu: Otsu's threshold on known histograms, and the built-in models end to end (open, info,
 * prepare, run, finish, polygons): N bright disks on a noisy dark background must come back as
 * N polygons at the right centroids, from gray8, gray16 and RGB input, one by one or batched. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/common.h"
#include "gpu/gpu.h"

/* per-sample results of sq_model_run (single-threaded tests) */
static int codes[64];

static void test_threshold(void) {
  uint32_t hist[256] = {0};
  CHECK_EQ_INT(sq_otsu_threshold(hist, 256), 0);
  hist[77] = 1000;
  CHECK_EQ_INT(sq_otsu_threshold(hist, 256), 77); /* one value: nothing is above */
  /* Two bumps around 50 and 200. */
  memset(hist, 0, sizeof(hist));
  for (int i = -10; i <= 10; i++) {
    hist[50 + i] = 1000 - 80 * abs(i);
    hist[200 + i] = 300 - 25 * abs(i);
  }
  uint32_t t = sq_otsu_threshold(hist, 256);
  CHECK(t >= 60 && t < 190);
  CHECK(t > 100 && t < 150); /* middle of the empty gap, not its lower edge */
  /* Two spikes: a threshold strictly between them. */
  memset(hist, 0, sizeof(hist));
  hist[10] = 5;
  hist[11] = 5;
  t = sq_otsu_threshold(hist, 256);
  CHECK_EQ_INT(t, 10);
  /* 16-bit histogram. */
  uint32_t *h16 = calloc(65536, sizeof(uint32_t));
  for (int i = 0; i < 500; i++) {
    h16[2000 + i * 3] += 10;
    h16[40000 + i * 7] += 4;
  }
  t = sq_otsu_threshold(h16, 65536);
  CHECK(t >= 3500 && t < 40000);
  free(h16);
}

#define NDISKS 7
static const double disk_cx[NDISKS] = {30, 90, 160, 220, 50, 130, 200};
static const double disk_cy[NDISKS] = {30, 40, 35, 50, 130, 150, 140};
static const double disk_r[NDISKS] = {10, 8, 12, 9, 11, 8, 10};

/* gray8 fluorescence-like image: background 10..40 (noise), disks 170..230. */
static uint8_t *make_cells(uint32_t w, uint32_t h) {
  uint8_t *g = malloc((size_t)w * h);
  srand(7);
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++) {
      int v = 10 + rand() % 31;
      for (int k = 0; k < NDISKS; k++) {
        double dx = x + 0.5 - disk_cx[k], dy = y + 0.5 - disk_cy[k];
        if (dx * dx + dy * dy <= disk_r[k] * disk_r[k]) v = 170 + rand() % 61;
      }
      g[(size_t)y * w + x] = (uint8_t)v;
    }
  return g;
}

static void centroid(const sq_polygon_t *p, double *cx, double *cy) {
  double a = 0, sx = 0, sy = 0;
  for (uint32_t i = 0; i < p->npoints; i++) {
    uint32_t j = (i + 1) % p->npoints;
    double x0 = p->points[2 * i], y0 = p->points[2 * i + 1];
    double x1 = p->points[2 * j], y1 = p->points[2 * j + 1];
    double c = x0 * y1 - x1 * y0;
    a += c;
    sx += (x0 + x1) * c;
    sy += (y0 + y1) * c;
  }
  *cx = sx / (3 * a);
  *cy = sy / (3 * a);
}

/* Checks the polygons found in a mask against the disks. */
static void check_cells(const uint8_t *mask, uint32_t w, uint32_t h, uint32_t min_area) {
  sq_polygon_t *p = NULL;
  size_t n = 0;
  CHECK_EQ_INT(sq_polygons_from_mask(mask, w, h, min_area, 0.5f, 1, 1, &p, &n), 0);
  CHECK_EQ_INT(n, NDISKS);
  int matched = 0;
  for (size_t i = 0; i < n; i++) {
    double cx, cy;
    centroid(&p[i], &cx, &cy);
    for (int k = 0; k < NDISKS; k++)
      if (fabs(cx - disk_cx[k]) < 1.0 && fabs(cy - disk_cy[k]) < 1.0) {
        matched++;
        double want = M_PI * disk_r[k] * disk_r[k];
        CHECK(fabs(p[i].area - want) / want < 0.1);
      }
  }
  CHECK_EQ_INT(matched, NDISKS);
  sq_polygons_free(p, n);
}

/* Runs one image through a model's three stages; returns the mask (caller frees). */
static uint8_t *run_one(sq_model_t *m, const sq_image_t *img, uint32_t *w, uint32_t *h) {
  sq_error_t err = {0};
  void *sample = NULL, *output = NULL;
  uint8_t *mask = NULL;
  sq_postparams_t pp = {sq_model_info(m)->default_threshold, sq_model_info(m)->default_min_area};
  CHECK_EQ_INT(sq_model_prepare(m, img, NULL, &sample, &err), 0);
  CHECK_EQ_INT(sq_model_run(m, 0, &sample, 1, &output, codes, &err), 0);
  CHECK_EQ_INT(sq_model_finish(m, output, &pp, &mask, w, h, &err), 0);
  return mask;
}

static void test_otsu_model(void) {
  sq_error_t err = {0};
  sq_model_t *m = sq_model_open("otsu", NULL, &err);
  CHECK(m != NULL);
  if (!m) return;
  const sq_model_info_t *info = sq_model_info(m);
  CHECK_STR(info->name, "otsu");
  CHECK_EQ_INT(info->max_batch, 8);
  CHECK_EQ_INT(info->max_delay_us, 5000);
  CHECK_EQ_INT(info->contexts, 1);
  CHECK_EQ_INT(info->default_min_area, 16);
  CHECK(info->default_threshold == 0.5f);

  uint32_t w = 256, h = 192, mw = 0, mh = 0;
  uint8_t *g8 = make_cells(w, h);
  sq_image_t img = {w, h, 1, 1, g8};
  uint8_t *mask = run_one(m, &img, &mw, &mh);
  CHECK(mask != NULL && mw == w && mh == h);
  if (mask) check_cells(mask, w, h, info->default_min_area);
  free(mask);

  /* gray16 through sq_image_from_raw (little-endian wire bytes), values * 200. */
  uint8_t *raw = malloc((size_t)w * h * 2);
  for (size_t i = 0; i < (size_t)w * h; i++) {
    uint16_t v = (uint16_t)(g8[i] * 200);
    raw[2 * i] = (uint8_t)(v & 0xFF);
    raw[2 * i + 1] = (uint8_t)(v >> 8);
  }
  sq_image_t img16;
  CHECK_EQ_INT(sq_image_from_raw(raw, (size_t)w * h * 2, w, h, 2, &img16, &err), 0);
  mask = run_one(m, &img16, &mw, &mh);
  CHECK(mask != NULL && mw == w && mh == h);
  if (mask) check_cells(mask, w, h, info->default_min_area);
  free(mask);

  /* RGB: the cells in the green channel only still stand out in luma. */
  uint8_t *rgb = malloc((size_t)w * h * 3);
  for (size_t i = 0; i < (size_t)w * h; i++) {
    rgb[3 * i] = g8[i] / 4;
    rgb[3 * i + 1] = g8[i];
    rgb[3 * i + 2] = g8[i] / 8;
  }
  sq_image_t imgrgb = {w, h, 3, 1, rgb};
  mask = run_one(m, &imgrgb, &mw, &mh);
  CHECK(mask != NULL);
  if (mask) check_cells(mask, w, h, info->default_min_area);
  free(mask);

  /* One batch of three; the masks match the single runs. */
  void *samples[3] = {0}, *outputs[3] = {0};
  const sq_image_t *imgs[3] = {&img, &img16, &imgrgb};
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(sq_model_prepare(m, imgs[i], NULL, &samples[i], &err), 0);
  CHECK_EQ_INT(sq_model_run(m, 1, samples, 3, outputs, codes, &err), SQ_EINVAL); /* no context 1 */
  CHECK_EQ_INT(sq_model_run(m, 0, samples, 3, outputs, codes, &err), 0);
  sq_postparams_t pp = {0.5f, 16};
  for (int i = 0; i < 3; i++) {
    mask = NULL;
    CHECK_EQ_INT(sq_model_finish(m, outputs[i], &pp, &mask, &mw, &mh, &err), 0);
    if (mask) check_cells(mask, w, h, 16);
    free(mask);
  }
  /* Error-path frees: a prepared sample and a run output dropped without finishing. */
  void *s = NULL, *o = NULL;
  CHECK_EQ_INT(sq_model_prepare(m, &img, NULL, &s, &err), 0);
  sq_model_sample_free(m, s);
  CHECK_EQ_INT(sq_model_prepare(m, &img, NULL, &s, &err), 0);
  CHECK_EQ_INT(sq_model_run(m, 0, &s, 1, &o, codes, &err), 0);
  sq_model_output_free(m, o);
  sq_model_sample_free(m, NULL);
  /* An image prepare cannot take. */
  sq_image_t bad = {w, h, 2, 1, g8};
  CHECK_EQ_INT(sq_model_prepare(m, &bad, NULL, &s, &err), SQ_EIMAGE_FORMAT);
  CHECK(s == NULL);

  sq_image_free(&img16);
  free(rgb);
  free(raw);
  free(g8);
  sq_model_close(m);
}

static void test_null_and_unknown(void) {
  sq_error_t err = {0};
  sq_model_t *m = sq_model_open("null", "/nonexistent", &err);
  CHECK(m != NULL);
  if (!m) return;
  const sq_model_info_t *info = sq_model_info(m);
  CHECK_STR(info->name, "null");
  CHECK_EQ_INT(info->max_batch, 64);
  CHECK_EQ_INT(info->max_delay_us, 2000);
  CHECK_EQ_INT(info->default_min_area, 0);
  CHECK_EQ_INT(info->contexts, 1);
  uint8_t px[12] = {0};
  sq_image_t img = {4, 3, 1, 1, px};
  uint32_t w = 0, h = 0;
  uint8_t *mask = run_one(m, &img, &w, &h);
  CHECK(mask == NULL && w == 4 && h == 3); /* NULL = all zero */
  sq_polygon_t *p = NULL;
  size_t n = 1;
  CHECK_EQ_INT(sq_polygons_from_mask(mask, w, h, 0, 0.5f, 1, 1, &p, &n), 0);
  CHECK(n == 0 && p == NULL);
  sq_model_close(m);

  m = sq_model_open("no-such-model", NULL, &err);
  CHECK(m == NULL);
  CHECK_EQ_INT(err.code, SQ_EMODEL_UNKNOWN);
  CHECK(strstr(err.msg, "no-such-model") != NULL);
  m = sq_model_open("", NULL, &err);
  CHECK(m == NULL && err.code == SQ_EINVAL);
  sq_model_close(NULL);
}

int main(void) {
  test_threshold();
  test_otsu_model();
  test_null_and_unknown();
  CHECK_DONE();
}
