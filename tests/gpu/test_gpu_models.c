/* test_gpu_models.c: the shipped model through the whole model layer on the GPU (raw pixels
 * normalized and masks thresholded on the device, warm-up of every planned batch size, captured
 * graphs replayed, chunks padded up to the planned sizes): cellseg-unet on its evaluation set
 * (models/cellseg-unet/eval/eval_*.jpg, batches of 4 images) on cuda in fp32 against the cpu
 * backend (mask IoU >= 0.999 per image), and on cuda in fp16 against cuda in fp32 (IoU >= 0.99
 * per image, issue 7's fp16 criterion). Exits 77 without a GPU; SEGQ_GPU_TEST_DRYRUN=1 runs the
 * same with cpu on every side (checks the harness). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu/gpu.h"
#include "gpu/onnx/engine.h"
#include "test_files.h"

#define MAX_IMAGES 32

static char models_dir[2048], eval_dir[4096];

/* Masks of every image (in name order) on one device and precision; NULL entries on error. */
static int run_all(const char *device, const char *precision, char names[][64], int n,
                   uint8_t **masks, uint32_t *w, uint32_t *h) {
  sq_error_t err = {0};
  sq_model_options_t o = {.device = device, .precision = precision};
  sq_model_t *m = sq_model_open_with("cellseg-unet", models_dir, &o, &err);
  CHECK(m != NULL);
  if (!m) {
    fprintf(stderr, "%s %s: %s\n", device, precision, err.msg);
    return -1;
  }
  const sq_model_info_t *info = sq_model_info(m);
  for (uint32_t c = 0; c < info->contexts; c++) {
    int rc = sq_model_warmup(m, (int)c, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "warm-up: %s\n", err.msg);
  }
  uint64_t t0 = sq_clock_mono_us();
  sq_postparams_t pp = {.threshold = info->default_threshold, .min_area = 0};
  for (int i = 0; i < n; i += 4) {
    void *samples[4], *outputs[4];
    int codes[4], k = 0;
    for (int j = i; j < n && j < i + 4; j++) {
      char path[4200];
      snprintf(path, sizeof path, "%s/%s", eval_dir, names[j]);
      size_t len = 0;
      uint8_t *jpg = test_read_file(path, &len);
      sq_image_t img = {0};
      int rc = jpg ? sq_image_decode_jpeg(jpg, len, 0, 0, 1, &img, &err) : -1;
      free(jpg);
      CHECK_EQ_INT(rc, 0);
      w[j] = img.width, h[j] = img.height;
      rc = rc ? rc : sq_model_prepare(m, &img, &pp, &samples[k], &err);
      sq_image_free(&img);
      CHECK_EQ_INT(rc, 0);
      if (!rc) k++;
    }
    int rc = sq_model_run(m, 0, samples, (size_t)k, outputs, codes, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "%s %s run: %s\n", device, precision, err.msg);
    for (int j = 0; j < k; j++) {
      if (rc || codes[j]) {
        sq_model_sample_free(m, samples[j]);
        continue;
      }
      uint32_t mw = 0, mh = 0;
      CHECK_EQ_INT(sq_model_finish(m, outputs[j], &pp, &masks[i + j], &mw, &mh, &err), 0);
      CHECK(mw == w[i + j] && mh == h[i + j]);
    }
  }
  printf("%-8s %-5s backend %s: %d images in %.1f ms after warm-up (%s)\n", device, precision,
         info->backend, n, (double)(sq_clock_mono_us() - t0) / 1000.0,
         info->fp16 ? "fp16" : "fp32");
  sq_model_close(m);
  return 0;
}

static double iou(const uint8_t *a, const uint8_t *b, size_t n) {
  size_t inter = 0, uni = 0;
  for (size_t i = 0; i < n; i++) {
    inter += a[i] && b[i];
    uni += a[i] || b[i];
  }
  return uni ? (double)inter / (double)uni : 1.0;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(a, b);
}

int main(void) {
  const char *dry = getenv("SEGQ_GPU_TEST_DRYRUN");
  int dryrun = dry && *dry == '1';
  if (sq_backend_cuda_count() == 0 && !dryrun) {
    printf("SKIP: no usable CUDA device; nothing ran on a GPU\n");
    return 77;
  }
  const char *src = getenv("SEGQ_SOURCE_DIR");
  snprintf(models_dir, sizeof models_dir, "%.2000s/models", src && *src ? src : ".");
  snprintf(eval_dir, sizeof eval_dir, "%s/cellseg-unet/eval", models_dir);
  static char names[MAX_IMAGES][64];
  int n = 0;
  DIR *d = opendir(eval_dir);
  CHECK(d != NULL);
  for (struct dirent *e; d && (e = readdir(d)) && n < MAX_IMAGES;)
    if (strncmp(e->d_name, "eval_", 5) == 0 && strstr(e->d_name, ".jpg"))
      snprintf(names[n++], sizeof names[0], "%.63s", e->d_name);
  if (d) closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp_name);
  CHECK(n >= 10);
  const char *gpu = dryrun ? "cpu" : "cuda";
  if (dryrun) printf("DRY RUN: every side on the cpu backend; nothing runs on a GPU\n");
  uint8_t *cpu32[MAX_IMAGES] = {0}, *gpu32[MAX_IMAGES] = {0}, *gpu16[MAX_IMAGES] = {0};
  uint32_t w[MAX_IMAGES], h[MAX_IMAGES];
  run_all("cpu", "fp32", names, n, cpu32, w, h);
  run_all(gpu, "fp32", names, n, gpu32, w, h);
  run_all(gpu, "fp16", names, n, gpu16, w, h);
  double min32 = 1, min16 = 1, sum16 = 0;
  for (int i = 0; i < n; i++) {
    CHECK(cpu32[i] && gpu32[i] && gpu16[i]);
    if (!cpu32[i] || !gpu32[i] || !gpu16[i]) continue;
    size_t npix = (size_t)w[i] * h[i];
    double a = iou(cpu32[i], gpu32[i], npix), b = iou(gpu32[i], gpu16[i], npix);
    printf("%-14s %4ux%-4u IoU cuda fp32 vs cpu %.5f, cuda fp16 vs fp32 %.5f\n", names[i], w[i],
           h[i], a, b);
    CHECK(a >= 0.999);
    CHECK(b >= 0.99);
    min32 = a < min32 ? a : min32;
    min16 = b < min16 ? b : min16;
    sum16 += b;
  }
  printf("min IoU cuda fp32 vs cpu %.5f; fp16 vs fp32: min %.5f, mean %.5f over %d images\n", min32,
         min16, n ? sum16 / n : 0.0, n);
  for (int i = 0; i < n; i++) {
    free(cpu32[i]);
    free(gpu32[i]);
    free(gpu16[i]);
  }
  CHECK_DONE();
}
