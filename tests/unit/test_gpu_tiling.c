/* gpu: the tiling rule of docs/models.md on synthetic data. Tile starts and owned intervals are
 * checked against a brute-force reading of the rule (nearest tile centre, ties to the later
 * tile); a position-encoding "model" (each output pixel = tile index and its place in the tile)
 * stitched back must equal the expected owner map exactly; extraction pads by edge replication
 * or a constant. Sizes smaller than, equal to and larger than a tile, 1-px remainders. Also the
 * bilinear resize of `large_images.mode = "resize"`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/tile.h"

/* The rule as the doc states it, written independently of tile.c. */
static uint32_t ref_starts(uint32_t len, uint32_t tile, uint32_t overlap, uint32_t *out) {
  uint32_t n = 0;
  if (len <= tile) {
    out[n++] = 0;
    return n;
  }
  for (uint32_t s = 0; s < len - tile; s += tile - overlap) out[n++] = s;
  out[n++] = len - tile;
  return n;
}

/* Index of the tile whose centre is nearest pixel p's centre (later tile on a tie). */
static uint32_t ref_owner(const uint32_t *starts, uint32_t n, uint32_t tile, uint32_t p) {
  uint32_t best = 0;
  long long bestd = -1;
  for (uint32_t i = 0; i < n; i++) {
    if (p < starts[i] || p >= starts[i] + tile) continue;
    long long d = llabs(2LL * p + 1 - (2LL * starts[i] + tile)); /* 2 x distance of centres */
    if (bestd < 0 || d <= bestd) {
      bestd = d;
      best = i;
    }
  }
  return best;
}

static void check_axis(uint32_t len, uint32_t tile, uint32_t overlap) {
  sq_tile_axis_t a;
  sq_error_t err = {0};
  CHECK_EQ_INT(sq_tile_axis_init(&a, len, tile, overlap, &err), 0);
  uint32_t *ref = malloc((len / (tile - overlap) + 3) * sizeof(uint32_t));
  uint32_t n = ref_starts(len, tile, overlap, ref);
  CHECK_EQ_INT(a.n, n);
  for (uint32_t i = 0; i < n && i < a.n; i++) CHECK_EQ_INT(a.start[i], ref[i]);
  /* Owned intervals tile [0, len) in order, and each pixel's owner is the nearest centre. */
  CHECK_EQ_INT(a.lo[0], 0);
  CHECK_EQ_INT(a.hi[a.n - 1], len);
  int bad = 0;
  for (uint32_t i = 0; i < a.n; i++) {
    if (i > 0 && a.lo[i] != a.hi[i - 1]) bad++;
    for (uint32_t p = a.lo[i]; p < a.hi[i]; p++)
      if (ref_owner(a.start, a.n, tile, p) != i) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  if (bad) fprintf(stderr, "  axis len=%u tile=%u overlap=%u\n", len, tile, overlap);
  free(ref);
  sq_tile_axis_free(&a);
}

/* The worked example of docs/models.md (cuts at the overlap midpoints 240 and 462). */
static void test_doc_example(void) {
  sq_tile_axis_t a;
  CHECK_EQ_INT(sq_tile_axis_init(&a, 700, 256, 32, NULL), 0);
  CHECK_EQ_INT(a.n, 3);
  uint32_t st[] = {0, 224, 444}, lo[] = {0, 240, 462}, hi[] = {240, 462, 700};
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(a.start[i], st[i]);
    CHECK_EQ_INT(a.lo[i], lo[i]);
    CHECK_EQ_INT(a.hi[i], hi[i]);
  }
  sq_tile_axis_free(&a);
  CHECK_EQ_INT(sq_tile_axis_init(&a, 10, 8, 8, NULL), SQ_EINVAL); /* overlap must be < tile */
  CHECK(a.start == NULL);
  CHECK_EQ_INT(sq_tile_axis_init(&a, 0, 8, 2, NULL), SQ_EINVAL);
}

/* Extract every tile of a position-encoded image (value = y * w + x), run the "model" that
 * replaces each pixel with (tile index, position in the tile), stitch, and compare with the
 * owner map; also the identity model must give the image back. */
static void check_image(uint32_t w, uint32_t h, uint32_t tw, uint32_t th, uint32_t overlap) {
  sq_tile_axis_t ax, ay;
  CHECK_EQ_INT(sq_tile_axis_init(&ax, w, tw, overlap, NULL), 0);
  CHECK_EQ_INT(sq_tile_axis_init(&ay, h, th, overlap, NULL), 0);
  size_t ntiles = (size_t)ax.n * ay.n, plane = (size_t)tw * th;
  float *src = malloc((size_t)w * h * sizeof(float));
  float *tiles = malloc(ntiles * plane * sizeof(float));
  float *coded = malloc(ntiles * plane * sizeof(float));
  float *out = malloc((size_t)w * h * sizeof(float));
  for (size_t i = 0; i < (size_t)w * h; i++) src[i] = (float)i;
  int bad_extract = 0;
  for (uint32_t iy = 0; iy < ay.n; iy++)
    for (uint32_t ix = 0; ix < ax.n; ix++) {
      size_t t = (size_t)iy * ax.n + ix;
      float *d = tiles + t * plane;
      sq_tile_extract(&ax, &ay, ix, iy, src, 1, NULL, d);
      for (uint32_t y = 0; y < th; y++)
        for (uint32_t x = 0; x < tw; x++) {
          uint32_t sy = ay.start[iy] + y, sx = ax.start[ix] + x;
          if (sy >= h) sy = h - 1; /* edge padding */
          if (sx >= w) sx = w - 1;
          if (d[(size_t)y * tw + x] != (float)((size_t)sy * w + sx)) bad_extract++;
          coded[t * plane + (size_t)y * tw + x] = (float)(t * 65536 + (size_t)y * tw + x);
        }
    }
  CHECK_EQ_INT(bad_extract, 0);
  sq_tile_stitch(&ax, &ay, tiles, plane, out);
  CHECK(memcmp(out, src, (size_t)w * h * sizeof(float)) == 0);
  sq_tile_stitch(&ax, &ay, coded, plane, out);
  int bad = 0;
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++) {
      uint32_t oy = ref_owner(ay.start, ay.n, th, y), ox = ref_owner(ax.start, ax.n, tw, x);
      size_t t = (size_t)oy * ax.n + ox;
      float want = (float)(t * 65536 + (size_t)(y - ay.start[oy]) * tw + (x - ax.start[ox]));
      if (out[(size_t)y * w + x] != want) bad++;
    }
  CHECK_EQ_INT(bad, 0);
  if (bad || bad_extract)
    fprintf(stderr, "  image %ux%u tile %ux%u overlap %u\n", w, h, tw, th, overlap);
  free(src);
  free(tiles);
  free(coded);
  free(out);
  sq_tile_axis_free(&ax);
  sq_tile_axis_free(&ay);
}

/* Constant padding: the pad value fills what lies past the image, per channel. */
static void test_zero_pad(void) {
  sq_tile_axis_t ax, ay;
  CHECK_EQ_INT(sq_tile_axis_init(&ax, 3, 5, 1, NULL), 0);
  CHECK_EQ_INT(sq_tile_axis_init(&ay, 2, 4, 1, NULL), 0);
  float src[2 * 3 * 2], dst[2 * 5 * 4], pad[2] = {-1.5f, 7.0f};
  for (int i = 0; i < 12; i++) src[i] = (float)i;
  sq_tile_extract(&ax, &ay, 0, 0, src, 2, pad, dst);
  int bad = 0;
  for (int c = 0; c < 2; c++)
    for (int y = 0; y < 4; y++)
      for (int x = 0; x < 5; x++) {
        float want = (y < 2 && x < 3) ? src[c * 6 + y * 3 + x] : pad[c];
        if (dst[c * 20 + y * 5 + x] != want) bad++;
      }
  CHECK_EQ_INT(bad, 0);
  sq_tile_axis_free(&ax);
  sq_tile_axis_free(&ay);
}

/* Bilinear with half-pixel centres, as PyTorch's interpolate(align_corners=False). */
static void test_resize(void) {
  float a[2] = {0, 1}, up[4], b[4] = {0, 1, 2, 3}, down[2];
  CHECK_EQ_INT(sq_resize_bilinear(a, 2, 1, up, 4, 1), 0);
  CHECK(up[0] == 0.0f && up[1] == 0.25f && up[2] == 0.75f && up[3] == 1.0f);
  CHECK_EQ_INT(sq_resize_bilinear(b, 4, 1, down, 2, 1), 0);
  CHECK(down[0] == 0.5f && down[1] == 2.5f);
  /* Same size: a copy. 2-D: f = x + 10 y is reproduced exactly inside (linear in both axes). */
  float src[5 * 3], same[5 * 3], big[10 * 6];
  for (int y = 0; y < 3; y++)
    for (int x = 0; x < 5; x++) src[y * 5 + x] = (float)(x + 10 * y);
  CHECK_EQ_INT(sq_resize_bilinear(src, 5, 3, same, 5, 3), 0);
  CHECK(memcmp(src, same, sizeof src) == 0);
  CHECK_EQ_INT(sq_resize_bilinear(src, 5, 3, big, 10, 6), 0);
  int bad = 0;
  for (int y = 1; y < 5; y++)
    for (int x = 1; x < 9; x++) {
      float sx = (x + 0.5f) / 2 - 0.5f, sy = (y + 0.5f) / 2 - 0.5f;
      if (fabsf(big[y * 10 + x] - (sx + 10 * sy)) > 1e-5f) bad++;
    }
  CHECK_EQ_INT(bad, 0);
  CHECK(big[0] == 0.0f); /* clamped at the edge */
}

int main(void) {
  test_resize();
  test_doc_example();
  test_zero_pad();
  /* Axes: shorter, equal, 1 px longer, a stride + 1, exact multiples, large overlaps. */
  uint32_t lens[] = {1, 2, 7, 15, 16, 17, 28, 29, 30, 40, 41, 100, 257, 481, 700, 1024};
  uint32_t cfg[][2] = {{16, 4}, {16, 0}, {16, 15}, {8, 3}, {256, 32}, {5, 2}};
  for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++)
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
      check_axis(lens[i], cfg[c][0], cfg[c][1]);
  /* Whole images, square and rectangular tiles: smaller than, equal to, larger than a tile. */
  uint32_t sizes[][2] = {{5, 3},   {16, 16},  {17, 16}, {16, 17}, {29, 41},
                         {40, 13}, {100, 80}, {1, 1},   {64, 33}};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    check_image(sizes[i][0], sizes[i][1], 16, 16, 4);
    check_image(sizes[i][0], sizes[i][1], 12, 8, 3);
  }
  check_image(700, 300, 256, 256, 32);
  check_image(257, 513, 256, 256, 32);
  CHECK_DONE();
}
