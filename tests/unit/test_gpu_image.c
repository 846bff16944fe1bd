/* gpu: image decode. JPEGs made here with tjCompress2 decode back to the right size and close
 * pixels; every truncation, empty input, patched header sizes (zero, too large), CMYK and raw
 * gray8/gray16 size and byte-order rules give the documented codes. */
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "check.h"
#include "common/common.h"
#include "gpu/gpu.h"

static unsigned char *encode(uint32_t w, uint32_t h, int pixel_format, int subsamp,
                             unsigned long *len) {
  int ps = tjPixelSize[pixel_format];
  uint8_t *px = malloc((size_t)w * h * ps);
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++)
      for (int c = 0; c < ps; c++)
        px[((size_t)y * w + x) * ps + c] = (uint8_t)((x * 4 + y * 2 + c * 40) & 0xFF);
  tjhandle tj = tjInitCompress();
  unsigned char *jpeg = NULL;
  *len = 0;
  int rc = tjCompress2(tj, px, (int)w, 0, (int)h, pixel_format, &jpeg, len, subsamp, 92, 0);
  CHECK_EQ_INT(rc, 0);
  tjDestroy(tj);
  free(px);
  return jpeg;
}

/* Offset of the SOFn segment's height field, found by walking the markers; 0 if none. */
static size_t sof_offset(const unsigned char *p, size_t len) {
  size_t i = 2;
  while (i + 4 <= len && p[i] == 0xFF) {
    uint8_t mk = p[i + 1];
    size_t seglen = ((size_t)p[i + 2] << 8) | p[i + 3];
    if (mk >= 0xC0 && mk <= 0xCF && mk != 0xC4 && mk != 0xC8 && mk != 0xCC) return i + 5;
    i += 2 + seglen;
  }
  return 0;
}

static void test_roundtrip(void) {
  unsigned long len = 0;
  unsigned char *jpeg = encode(64, 48, TJPF_RGB, TJSAMP_420, &len);
  sq_image_t img;
  sq_error_t err = {0};
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 16384, 64u << 20, 3, &img, &err), 0);
  CHECK(img.width == 64 && img.height == 48 && img.channels == 3 && img.bytes_per_sample == 1);
  if (img.data) { /* pixel (10, 5), red channel was 10*4+5*2 = 50 */
    int r = img.data[(5 * 64 + 10) * 3];
    CHECK(abs(r - 50) < 16);
  }
  sq_image_free(&img);
  CHECK(img.data == NULL && img.width == 0);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 1, &img, &err), 0);
  CHECK(img.width == 64 && img.height == 48 && img.channels == 1);
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 2, &img, &err), SQ_EINVAL);
  /* Limits: a side over max_side, or too many pixels. */
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 63, 0, 3, &img, &err), SQ_EIMAGE_TOO_LARGE);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 64, 64 * 48 - 1, 3, &img, &err),
               SQ_EIMAGE_TOO_LARGE);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 64, 64 * 48, 3, &img, &err), 0);
  sq_image_free(&img);
  tjFree(jpeg);

  /* A grayscale JPEG decodes to gray or RGB alike. */
  jpeg = encode(33, 17, TJPF_GRAY, TJSAMP_GRAY, &len);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 1, &img, &err), 0);
  CHECK(img.width == 33 && img.height == 17 && img.channels == 1);
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 3, &img, &err), 0);
  CHECK(img.channels == 3);
  sq_image_free(&img);
  tjFree(jpeg);
}

static void test_truncated_and_garbage(void) {
  unsigned long len = 0;
  unsigned char *jpeg = encode(120, 90, TJPF_RGB, TJSAMP_444, &len);
  sq_image_t img;
  sq_error_t err = {0};
  int bad = 0;
  for (unsigned long n = 0; n < len; n += 10) {
    int rc = sq_image_decode_jpeg(jpeg, n, 0, 0, 3, &img, &err);
    if (rc != SQ_EIMAGE_DECODE || img.data != NULL) {
      bad++;
      fprintf(stderr, "prefix %lu of %lu: rc %d (%s)\n", n, len, rc, err.msg);
    }
  }
  CHECK_EQ_INT(bad, 0);
  /* Just the EOI marker missing, and the last scan byte too: still an error. */
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len - 2, 0, 0, 3, &img, &err), SQ_EIMAGE_DECODE);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len - 3, 0, 0, 3, &img, &err), SQ_EIMAGE_DECODE);
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 3, &img, &err), 0);
  sq_image_free(&img);
  /* Zero bytes, NULL, garbage, a PNG signature. */
  CHECK(sq_image_decode_jpeg(jpeg, 0, 0, 0, 3, &img, &err) < 0);
  CHECK(sq_image_decode_jpeg(NULL, 0, 0, 0, 3, &img, &err) < 0);
  uint8_t junk[300];
  for (int i = 0; i < 300; i++) junk[i] = (uint8_t)(i * 37 + 11);
  CHECK_EQ_INT(sq_image_decode_jpeg(junk, sizeof(junk), 0, 0, 3, &img, &err), SQ_EIMAGE_DECODE);
  const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0};
  CHECK_EQ_INT(sq_image_decode_jpeg(png, sizeof(png), 0, 0, 3, &img, &err), SQ_EIMAGE_DECODE);
  /* Corrupt scan data in the middle. */
  unsigned char *copy = malloc(len);
  memcpy(copy, jpeg, len);
  for (unsigned long i = len / 2; i < len / 2 + 40; i++) copy[i] = 0xFF;
  int rc = sq_image_decode_jpeg(copy, len, 0, 0, 3, &img, &err);
  CHECK(rc == SQ_EIMAGE_DECODE && img.data == NULL);
  free(copy);
  tjFree(jpeg);
}

static void test_patched_header(void) {
  unsigned long len = 0;
  unsigned char *jpeg = encode(40, 30, TJPF_RGB, TJSAMP_420, &len);
  size_t off = sof_offset(jpeg, len);
  CHECK(off > 0);
  if (!off) return;
  CHECK(jpeg[off] == 0 && jpeg[off + 1] == 30 && jpeg[off + 2] == 0 && jpeg[off + 3] == 40);
  sq_image_t img;
  sq_error_t err = {0};
  unsigned char *p = malloc(len);
  /* 20000 x 20000: refused by the header check before allocating 1.2 GB. */
  memcpy(p, jpeg, len);
  p[off] = p[off + 2] = 20000 >> 8;
  p[off + 1] = p[off + 3] = 20000 & 0xFF;
  CHECK_EQ_INT(sq_image_decode_jpeg(p, len, 16384, 64u << 20, 3, &img, &err), SQ_EIMAGE_TOO_LARGE);
  /* 10000 x 10000: each side is fine, the pixel count is not. */
  p[off] = p[off + 2] = 10000 >> 8;
  p[off + 1] = p[off + 3] = 10000 & 0xFF;
  CHECK_EQ_INT(sq_image_decode_jpeg(p, len, 16384, 64u << 20, 3, &img, &err), SQ_EIMAGE_TOO_LARGE);
  CHECK(img.data == NULL);
  /* ... and without limits it is the data that is short. */
  CHECK_EQ_INT(sq_image_decode_jpeg(p, len, 0, 0, 1, &img, &err), SQ_EIMAGE_DECODE);
  /* Zero width or height. */
  memcpy(p, jpeg, len);
  p[off + 2] = p[off + 3] = 0;
  CHECK_EQ_INT(sq_image_decode_jpeg(p, len, 16384, 64u << 20, 3, &img, &err), SQ_EIMAGE_EMPTY);
  memcpy(p, jpeg, len);
  p[off] = p[off + 1] = 0;
  CHECK_EQ_INT(sq_image_decode_jpeg(p, len, 16384, 64u << 20, 3, &img, &err), SQ_EIMAGE_EMPTY);
  free(p);
  tjFree(jpeg);
}

static void test_cmyk(void) {
  unsigned long len = 0;
  unsigned char *jpeg = encode(16, 16, TJPF_CMYK, TJSAMP_444, &len);
  sq_image_t img;
  sq_error_t err = {0};
  CHECK_EQ_INT(sq_image_decode_jpeg(jpeg, len, 0, 0, 3, &img, &err), SQ_EIMAGE_FORMAT);
  tjFree(jpeg);
}

static void test_raw(void) {
  sq_image_t img;
  sq_error_t err = {0};
  uint8_t g8[6] = {1, 2, 3, 4, 5, 6};
  CHECK_EQ_INT(sq_image_from_raw(g8, 6, 3, 2, 1, &img, &err), 0);
  CHECK(img.width == 3 && img.height == 2 && img.channels == 1 && img.bytes_per_sample == 1);
  CHECK(img.data && img.data != g8 && memcmp(img.data, g8, 6) == 0);
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_from_raw(g8, 5, 3, 2, 1, &img, &err), SQ_EVALUE);
  CHECK_EQ_INT(sq_image_from_raw(g8, 6, 0, 2, 1, &img, &err), SQ_EIMAGE_EMPTY);
  CHECK_EQ_INT(sq_image_from_raw(g8, 6, 3, 0, 1, &img, &err), SQ_EIMAGE_EMPTY);
  CHECK_EQ_INT(sq_image_from_raw(g8, 6, 1, 2, 3, &img, &err), SQ_EIMAGE_FORMAT);
  /* gray16: little-endian on the wire. */
  uint8_t g16[8] = {0x34, 0x12, 0xFF, 0x00, 0x00, 0xFF, 0xCD, 0xAB};
  CHECK_EQ_INT(sq_image_from_raw(g16, 8, 2, 2, 2, &img, &err), 0);
  CHECK(img.bytes_per_sample == 2 && img.channels == 1);
  if (img.data) {
    const uint16_t *v = (const uint16_t *)img.data;
    CHECK(v[0] == 0x1234 && v[1] == 0x00FF && v[2] == 0xFF00 && v[3] == 0xABCD);
  }
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_from_raw(g16, 7, 2, 2, 2, &img, &err), SQ_EVALUE);
  CHECK_EQ_INT(sq_image_from_raw(g16, 8, 4, 2, 2, &img, &err), SQ_EVALUE);
  CHECK_EQ_INT(sq_image_from_raw(g16, 4, 2, 2, 2, &img, &err), SQ_EVALUE);
  CHECK(img.data == NULL);
  /* Overflowing sizes are a mismatch, not a wrap-around. */
  CHECK_EQ_INT(sq_image_from_raw(g16, 8, 0xFFFFFFFFu, 0xFFFFFFFFu, 2, &img, &err), SQ_EVALUE);
  sq_image_free(NULL);

  /* rgb8 and rgb16 (issue 12 item 7): interleaved samples kept as they are, 16-bit from
   * little-endian; sizes count all three channels; only 1 or 3 channels. */
  uint8_t rgb8[6] = {10, 20, 30, 40, 50, 60};
  CHECK_EQ_INT(sq_image_from_raw_channels(rgb8, 6, 2, 1, 3, 1, &img, &err), 0);
  CHECK(img.width == 2 && img.height == 1 && img.channels == 3 && img.bytes_per_sample == 1);
  CHECK(img.data && memcmp(img.data, rgb8, 6) == 0);
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_from_raw_channels(rgb8, 6, 3, 1, 3, 1, &img, &err), SQ_EVALUE);
  CHECK_EQ_INT(sq_image_from_raw_channels(rgb8, 6, 3, 1, 2, 1, &img, &err), SQ_EIMAGE_FORMAT);
  uint8_t rgb16[12] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0xFF, 0xFF, 0x00, 0x80, 0x34, 0x12};
  CHECK_EQ_INT(sq_image_from_raw_channels(rgb16, 12, 1, 2, 3, 2, &img, &err), 0);
  CHECK(img.channels == 3 && img.bytes_per_sample == 2 && img.width == 1 && img.height == 2);
  if (img.data) {
    const uint16_t *v = (const uint16_t *)img.data;
    CHECK(v[0] == 0x0201 && v[1] == 0x0403 && v[2] == 0x0605 && v[3] == 0xFFFF && v[4] == 0x8000 &&
          v[5] == 0x1234);
  }
  sq_image_free(&img);
  CHECK_EQ_INT(sq_image_from_raw_channels(rgb16, 8, 1, 2, 3, 2, &img, &err), SQ_EVALUE);
}

int main(void) {
  test_roundtrip();
  test_truncated_and_garbage();
  test_patched_header();
  test_cmyk();
  test_raw();
  CHECK_DONE();
}
