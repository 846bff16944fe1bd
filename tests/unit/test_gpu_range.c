/* gpu: the input range policy (gpu/input_range.c), resolved per image into x = v*scale + offset:
 * fixed and full scales, percentiles against numpy.percentile's values for the same samples,
 * 8-bit, 16-bit and RGB images, a flat image, bad policies; and the point of it (issue 12 item
 * 8): the 8-, 12- and 16-bit versions of one picture map to the same model input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/gpu.h"

#define NEAR(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol))

static sq_image_t gray16(uint32_t w, uint32_t h, const uint16_t *v) {
  sq_image_t img = {w, h, 1, 2, malloc((size_t)w * h * 2)};
  memcpy(img.data, v, (size_t)w * h * 2);
  return img;
}

static void test_fixed_full(void) {
  sq_input_range_t r;
  sq_error_t err = {0};
  float s = 0, o = 1;
  uint8_t px8[4] = {0, 1, 2, 3};
  sq_image_t img8 = {2, 2, 1, 1, px8};
  uint16_t px16[4] = {0, 100, 4095, 65535};
  sq_image_t img16 = gray16(2, 2, px16);
  sq_input_range_default(&r, SQ_RANGE_FIXED);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img8, &s, &o, &err), 0);
  CHECK(NEAR(s, 1.0 / 255, 1e-9) && o == 0.0f);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img16, &s, &o, &err), 0);
  CHECK(NEAR(s, 1.0 / 65535, 1e-10)); /* 65535 maps where 255 does */
  sq_input_range_default(&r, SQ_RANGE_FULL);
  r.bits = 12;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img16, &s, &o, &err), 0);
  CHECK(NEAR(s, 1.0 / 4095, 1e-10) && o == 0.0f);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img8, &s, &o, &err), 0);
  CHECK(NEAR(s, 1.0 / 255, 1e-9)); /* an 8-bit image is its own full range */
  r.bits = 17;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img16, &s, &o, &err), SQ_EINVAL);
  sq_image_free(&img16);
}

static void test_percentile(void) {
  sq_input_range_t r;
  sq_error_t err = {0};
  float s, o;
  /* 0..99 once each: numpy.percentile(range(100), [1, 99.8]) = [0.99, 98.802]. */
  uint16_t v[100];
  for (int i = 0; i < 100; i++) v[i] = (uint16_t)(99 - i); /* order does not matter */
  sq_image_t img = gray16(10, 10, v);
  sq_input_range_default(&r, SQ_RANGE_PERCENTILE);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img, &s, &o, &err), 0);
  CHECK(NEAR(s, 1.0 / (98.802 - 0.99), 1e-7));
  CHECK(NEAR(0.99 * s + o, 0.0, 1e-6) && NEAR(98.802 * s + o, 1.0, 1e-6));
  sq_image_free(&img);
  /* 50 x 5, 30 x 1000, 20 x 3000: percentiles [10, 60] are [5, 1000] (numpy). */
  uint16_t w[100];
  for (int i = 0; i < 100; i++) w[i] = i < 50 ? 5 : i < 80 ? 1000 : 3000;
  img = gray16(25, 4, w);
  r.low = 10;
  r.high = 60;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img, &s, &o, &err), 0);
  CHECK(NEAR(5 * s + o, 0.0, 1e-6) && NEAR(1000 * s + o, 1.0, 1e-6));
  sq_image_free(&img);
  /* A flat image: no division by zero, everything maps to 0. */
  uint16_t flat[4] = {700, 700, 700, 700};
  img = gray16(2, 2, flat);
  sq_input_range_default(&r, SQ_RANGE_PERCENTILE);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &img, &s, &o, &err), 0);
  CHECK(isfinite(s) && NEAR(700 * s + o, 0.0, 1e-6));
  sq_image_free(&img);
  /* RGB: every channel's samples count. */
  uint8_t rgb[6] = {10, 20, 30, 40, 50, 60};
  sq_image_t c3 = {2, 1, 3, 1, rgb};
  r.low = 0;
  r.high = 100;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &c3, &s, &o, &err), 0);
  CHECK(NEAR(10 * s + o, 0.0, 1e-6) && NEAR(60 * s + o, 1.0, 1e-6));
  /* Bad policies. */
  r.low = 50;
  r.high = 50;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &c3, &s, &o, &err), SQ_EINVAL);
  r.low = -1;
  r.high = 50;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &c3, &s, &o, &err), SQ_EINVAL);
  r.mode = (sq_range_mode_t)9;
  CHECK_EQ_INT(sq_input_range_resolve(&r, &c3, &s, &o, &err), SQ_EINVAL);
}

/* One picture as 8-bit, 12-bit in 16 (the common camera case) and 16-bit: percentile maps all
 * three to the same input (up to quantization); fixed sends the 12-bit one 16x too dark. */
static void test_bit_depths(void) {
  enum { N = 64 * 64 };
  uint8_t *a8 = malloc(N);
  uint16_t *a12 = malloc(N * 2), *a16 = malloc(N * 2);
  uint32_t seed = 12345;
  for (int i = 0; i < N; i++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t v = (seed >> 16) % 200 + 20;
    a8[i] = (uint8_t)v;
    a12[i] = (uint16_t)(v * 4095 / 255);
    a16[i] = (uint16_t)(v * 257);
  }
  sq_image_t i8 = {64, 64, 1, 1, a8}, i12 = {64, 64, 1, 2, (uint8_t *)a12},
             i16 = {64, 64, 1, 2, (uint8_t *)a16};
  sq_input_range_t r;
  sq_error_t err = {0};
  float s8, o8, s12, o12, s16, o16;
  sq_input_range_default(&r, SQ_RANGE_PERCENTILE);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &i8, &s8, &o8, &err), 0);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &i12, &s12, &o12, &err), 0);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &i16, &s16, &o16, &err), 0);
  double worst = 0;
  for (int i = 0; i < N; i++) {
    double x8 = a8[i] * s8 + o8, x12 = a12[i] * s12 + o12, x16 = a16[i] * s16 + o16;
    worst = fmax(worst, fmax(fabs(x8 - x12), fabs(x8 - x16)));
  }
  CHECK(worst < 0.01);
  sq_input_range_default(&r, SQ_RANGE_FIXED);
  CHECK_EQ_INT(sq_input_range_resolve(&r, &i12, &s12, &o12, &err), 0);
  CHECK(a12[0] * s12 < 0.1 * (a8[0] / 255.0)); /* what made cellseg-unet see nothing */
  free(a8);
  free(a12);
  free(a16);
}

int main(void) {
  test_fixed_full();
  test_percentile();
  test_bit_depths();
  char buf[64];
  sq_input_range_t r;
  sq_input_range_default(&r, SQ_RANGE_PERCENTILE);
  sq_input_range_describe(&r, buf, sizeof buf);
  CHECK_STR(buf, "percentile(1,99.8)");
  CHECK_DONE();
}
