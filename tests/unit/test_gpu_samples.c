/* gpu: the committed sample JPEGs (samples/cells_*.jpg) through decode -> otsu -> polygons, as
 * the worker runs them: every image decodes at its size, and otsu finds a plausible foreground
 * and a plausible number of cells. Skipped (77) without SEGQ_SOURCE_DIR or the samples. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "common/common.h"
#include "gpu/gpu.h"

/* per-sample results of sq_model_run (single-threaded tests) */
static int codes[64];

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = buf ? (size_t)n : 0;
  return buf;
}

int main(void) {
  const char *src = getenv("SEGQ_SOURCE_DIR");
  if (!src) {
    printf("SKIP: SEGQ_SOURCE_DIR not set\n");
    return 77;
  }
  sq_error_t err = {0};
  sq_model_t *m = sq_model_open("otsu", NULL, &err);
  CHECK(m != NULL);
  if (!m) CHECK_DONE();
  int found = 0;
  for (int i = 1; i <= 12; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/samples/cells_%02d.jpg", src, i);
    size_t len = 0;
    uint8_t *jpeg = read_file(path, &len);
    if (!jpeg) continue;
    found++;
    uint64_t t0 = sq_clock_mono_us();
    sq_image_t img;
    CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 16384, 64u << 20, 1, &img, &err), 0);
    uint64_t t1 = sq_clock_mono_us();
    void *sample = NULL, *output = NULL;
    uint8_t *mask = NULL;
    uint32_t w = 0, h = 0;
    sq_postparams_t pp = {0.5f, sq_model_info(m)->default_min_area};
    CHECK_EQ_INT(sq_model_prepare(m, &img, NULL, &sample, &err), 0);
    CHECK_EQ_INT(sq_model_run(m, 0, &sample, 1, &output, codes, &err), 0);
    CHECK_EQ_INT(sq_model_finish(m, output, &pp, &mask, &w, &h, &err), 0);
    CHECK(mask && w == img.width && h == img.height);
    uint64_t t2 = sq_clock_mono_us();
    sq_polygon_t *p = NULL;
    size_t n = 0;
    if (mask) CHECK_EQ_INT(sq_polygons_from_mask(mask, w, h, pp.min_area, 0.5f, 1, 1, &p, &n), 0);
    uint64_t t3 = sq_clock_mono_us();
    size_t fg = 0;
    for (size_t k = 0; mask && k < (size_t)w * h; k++) fg += mask[k];
    double frac = (double)fg / ((double)w * h);
    CHECK(frac > 0.02 && frac < 0.6);
    CHECK(n >= 5 && n < 400);
    printf(
        "cells_%02d %ux%u: %zu polygons, %.1f%% foreground; decode %.1f ms, otsu %.1f ms, "
        "polygons %.1f ms\n",
        i, w, h, n, 100 * frac, (t1 - t0) / 1e3, (t2 - t1) / 1e3, (t3 - t2) / 1e3);
    sq_polygons_free(p, n);
    free(mask);
    sq_image_free(&img);
    free(jpeg);
  }
  sq_model_close(m);
  if (!found) {
    printf("SKIP: no samples under %s/samples\n", src);
    return 77;
  }
  CHECK_DONE();
}
