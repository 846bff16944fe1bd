/* gpu: decoded images. JPEG via TurboJPEG (header checked against the size limits before any
 * pixel buffer exists) and raw gray8/gray16 copies. Any thread: no shared state. */
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "gpu/gpu.h"

void sq_image_free(sq_image_t *img) {
  if (!img) return;
  free(img->data);
  memset(img, 0, sizeof(*img));
}

/* Finds the first SOFn marker's height and width, so a header TurboJPEG refuses can be told
 * apart as "zero size" (libjpeg rejects those with the same error as garbage). 0 if not found. */
static int jpeg_sof_size(const uint8_t *p, size_t len, uint32_t *w, uint32_t *h) {
  if (len < 4 || p[0] != 0xFF || p[1] != 0xD8) return 0;
  size_t i = 2;
  while (i + 4 <= len) {
    if (p[i] != 0xFF) return 0;
    uint8_t marker = p[i + 1];
    if (marker == 0xFF) { /* fill byte */
      i++;
      continue;
    }
    size_t seglen = ((size_t)p[i + 2] << 8) | p[i + 3];
    int is_sof =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (is_sof) {
      if (i + 9 > len) return 0;
      *h = ((uint32_t)p[i + 5] << 8) | p[i + 6];
      *w = ((uint32_t)p[i + 7] << 8) | p[i + 8];
      return 1;
    }
    if (marker == 0xDA || seglen < 2) return 0; /* scan data before any SOF: give up */
    i += 2 + seglen;
  }
  return 0;
}

int sq_image_decode_jpeg(const uint8_t *data, size_t len, uint32_t max_side, uint64_t max_pixels,
                         uint32_t channels, sq_image_t *out, sq_error_t *err) {
  memset(out, 0, sizeof(*out));
  if (channels != 1 && channels != 3)
    return sq_error_set(err, SQ_EINVAL, "jpeg: channels must be 1 or 3, not %u", channels);
  if (!data || len == 0) return sq_error_set(err, SQ_EIMAGE_DECODE, "jpeg: no data");
  if (len > (size_t)0xFFFFFFFFu)
    return sq_error_set(err, SQ_EIMAGE_TOO_LARGE, "jpeg: %zu bytes of data", len);

  tjhandle tj = tjInitDecompress();
  if (!tj) return sq_error_set(err, SQ_ENOMEM, "jpeg: %s", tjGetErrorStr2(NULL));
  int rc = 0;
  uint8_t *pixels = NULL;
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  /* TurboJPEG's API takes a non-const buffer but does not write to it. */
  unsigned char *buf = (unsigned char *)(uintptr_t)data;
  /* A header cut short may "succeed" with 0x0 (TurboJPEG feeds a fake EOI), so a size of zero
   * counts as empty only when the SOF segment itself says so. */
  int header_rc = tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &colorspace);
  if (header_rc != 0 || w <= 0 || h <= 0) {
    uint32_t sw = 1, sh = 1;
    if (jpeg_sof_size(data, len, &sw, &sh) && (sw == 0 || sh == 0))
      rc = sq_error_set(err, SQ_EIMAGE_EMPTY, "jpeg: image is %ux%u", sw, sh);
    else
      rc = sq_error_set(err, SQ_EIMAGE_DECODE, "jpeg header: %s",
                        header_rc ? tjGetErrorStr2(tj) : "no frame header (truncated?)");
    goto done;
  }
  if ((max_side && ((uint32_t)w > max_side || (uint32_t)h > max_side)) ||
      (max_pixels && (uint64_t)w * (uint64_t)h > max_pixels)) {
    rc = sq_error_set(err, SQ_EIMAGE_TOO_LARGE,
                      "jpeg: %dx%d exceeds the limit (side %u, %llu pixels)", w, h, max_side,
                      (unsigned long long)max_pixels);
    goto done;
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    rc = sq_error_set(err, SQ_EIMAGE_FORMAT, "jpeg: CMYK/YCCK images are not supported");
    goto done;
  }
  size_t bytes = (size_t)w * (size_t)h * channels;
  pixels = malloc(bytes);
  if (!pixels) {
    rc = sq_error_set(err, SQ_ENOMEM, "jpeg: out of memory for %dx%d", w, h);
    goto done;
  }
  /* STOPONWARNING: a truncated stream is only a libjpeg warning (the rest is filled grey), but
   * a result built on invented pixels is wrong, so it is an error here. LIMITSCANS bounds the
   * work a hostile progressive JPEG can ask for. */
  int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  if (tjDecompress2(tj, buf, (unsigned long)len, pixels, w, 0, h,
                    channels == 1 ? TJPF_GRAY : TJPF_RGB, flags) != 0) {
    rc = sq_error_set(err, SQ_EIMAGE_DECODE, "jpeg%s: %s",
                      tjGetErrorCode(tj) == TJERR_WARNING ? " (corrupt or truncated)" : "",
                      tjGetErrorStr2(tj));
    goto done;
  }
  out->width = (uint32_t)w;
  out->height = (uint32_t)h;
  out->channels = channels;
  out->bytes_per_sample = 1;
  out->data = pixels;
  pixels = NULL;
done:
  free(pixels);
  tjDestroy(tj);
  return rc;
}

int sq_image_from_raw(const uint8_t *data, size_t len, uint32_t w, uint32_t h,
                      uint32_t bytes_per_sample, sq_image_t *out, sq_error_t *err) {
  return sq_image_from_raw_channels(data, len, w, h, 1, bytes_per_sample, out, err);
}

int sq_image_from_raw_channels(const uint8_t *data, size_t len, uint32_t w, uint32_t h,
                               uint32_t channels, uint32_t bytes_per_sample, sq_image_t *out,
                               sq_error_t *err) {
  memset(out, 0, sizeof(*out));
  if (w == 0 || h == 0) return sq_error_set(err, SQ_EIMAGE_EMPTY, "raw image is %ux%u", w, h);
  if (bytes_per_sample != 1 && bytes_per_sample != 2)
    return sq_error_set(err, SQ_EIMAGE_FORMAT, "raw image: %u bytes per sample", bytes_per_sample);
  if (channels != 1 && channels != 3)
    return sq_error_set(err, SQ_EIMAGE_FORMAT, "raw image: %u channels (1 or 3)", channels);
  uint64_t npix = (uint64_t)w * h; /* cannot overflow: both factors are below 2^32 */
  uint64_t per_pixel = (uint64_t)channels * bytes_per_sample;
  uint64_t want = npix * per_pixel;
  if (npix > UINT64_MAX / per_pixel || want != len)
    return sq_error_set(err, SQ_EVALUE, "raw %s%u image %ux%u needs %llu bytes, got %zu",
                        channels == 3 ? "rgb" : "gray", 8 * bytes_per_sample, w, h,
                        (unsigned long long)want, len);
  uint8_t *pixels = malloc(len);
  if (!pixels) return sq_error_set(err, SQ_ENOMEM, "raw image: out of memory for %zu bytes", len);
  if (bytes_per_sample == 1) {
    memcpy(pixels, data, len);
  } else {
    /* Wire order is little-endian; sq_image_t holds native uint16. */
    uint16_t *dst = (uint16_t *)pixels;
    for (size_t i = 0; i < len / 2; i++)
      dst[i] = (uint16_t)(data[2 * i] | ((uint16_t)data[2 * i + 1] << 8));
  }
  out->width = w;
  out->height = h;
  out->channels = channels;
  out->bytes_per_sample = bytes_per_sample;
  out->data = pixels;
  return 0;
}
