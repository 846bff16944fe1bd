/* gpu: what a model does about its device, tested on the CPU (issue 7 items 3, 4, 6). The pure
 * policies on fakes: memory pressure (warn above 90%, shrink above 95%, grow back, halve after
 * an out-of-memory error), the start-up budget, the batch sizes a graph-capturing backend is
 * planned for. Then through sq_model_* on the test-only fault backend (tests/support/
 * fault_backend.c): an out-of-memory batch is split in halves and every job still succeeds; a
 * job fails for memory only when it fails alone; a device error poisons the device; a model
 * that cannot fit at batch 1 is refused at open; a max batch that does not fit is lowered;
 * pressure read from the device shrinks the effective max batch and it grows back; graph
 * backends pad chunks up to the planned sizes and warm every size up; cuda:all-like devices
 * with several streams each get their own contexts; the precision a model resolves to (flag,
 * model.json, or the fp16 export itself). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fault_backend.h"
#include "gpu/devpolicy.h"
#include "gpu/gpu.h"
#include "test_files.h"
#include "tiny_model.h"

static char repo[256], logpath[300], memfile[300];

static void test_mempolicy(void) {
  sq_mempolicy_t p;
  sq_mempolicy_init(&p, 16);
  uint64_t G = 1000, t = 1000000;
  CHECK_EQ_INT(sq_mempolicy_observe(&p, 500, G, t), SQ_PRESSURE_NONE);
  CHECK_EQ_INT(p.pressure, SQ_PRESSURE_NONE);
  CHECK_EQ_INT(p.effective, 16);
  sq_mempolicy_observe(&p, 95, G, t += 1000); /* 90.5% used: warn only */
  CHECK_EQ_INT(p.pressure, SQ_PRESSURE_WARN);
  CHECK_EQ_INT(p.effective, 16);
  sq_mempolicy_observe(&p, 40, G, t += 1000); /* 96%: shrink at once */
  CHECK_EQ_INT(p.pressure, SQ_PRESSURE_SHRINK);
  CHECK_EQ_INT(p.effective, 8);
  sq_mempolicy_observe(&p, 40, G, t += 1000); /* still 96%, within the second: no step */
  CHECK_EQ_INT(p.effective, 8);
  sq_mempolicy_observe(&p, 40, G, t += SQ_MEM_STEP_US); /* a second later: halves again */
  CHECK_EQ_INT(p.effective, 4);
  sq_mempolicy_observe(&p, 80, G, t += 1000); /* 92%: no shrink, no growth */
  CHECK_EQ_INT(p.effective, 4);
  sq_mempolicy_observe(&p, 500, G, t += 1000); /* free again, but within a second of a step */
  CHECK_EQ_INT(p.effective, 4);
  sq_mempolicy_observe(&p, 500, G, t += SQ_MEM_STEP_US);
  CHECK_EQ_INT(p.effective, 8);
  CHECK_EQ_INT(p.pressure, SQ_PRESSURE_NONE);
  sq_mempolicy_oom(&p, 6, t += 1000); /* a run of 6 failed: at most 3 now */
  CHECK_EQ_INT(p.effective, 3);
  CHECK_EQ_INT(p.splits, 1);
  sq_mempolicy_observe(&p, 900, G, t += 2 * SQ_MEM_STEP_US); /* calm period after an OOM */
  CHECK_EQ_INT(p.effective, 3);
  sq_mempolicy_observe(&p, 900, G, t += SQ_MEM_CALM_US);
  CHECK_EQ_INT(p.effective, 6);
  for (int i = 0; i < 8; i++) sq_mempolicy_observe(&p, 900, G, t += SQ_MEM_STEP_US);
  CHECK_EQ_INT(p.effective, 16); /* never above max_batch */
  sq_mempolicy_oom(&p, 1, t);
  CHECK_EQ_INT(p.effective, 1);
  for (int i = 0; i < 4; i++) sq_mempolicy_observe(&p, 10, G, t += SQ_MEM_STEP_US);
  CHECK_EQ_INT(p.effective, 1);       /* never below 1 */
  sq_mempolicy_observe(&p, 10, 0, t); /* total unknown: nothing changes */
  CHECK_EQ_INT(p.pressure, SQ_PRESSURE_SHRINK);
}

static void test_budget_and_sizes(void) {
  sq_membudget_t b = {.arena1 = 10 << 20,
                      .arena_max = 160 << 20,
                      .max_batch = 16,
                      .staging_per_item = 1 << 20,
                      .consts = 5 << 20,
                      .contexts = 2};
  CHECK_EQ_INT(sq_membudget_need(&b, 1), 2 * ((10 << 20) + (1 << 20)) + (5 << 20));
  CHECK_EQ_INT(sq_membudget_need(&b, 16), 2 * ((160 << 20) + (16 << 20)) + (5 << 20));
  uint64_t total = 8ULL << 30; /* 512 MiB reserve */
  CHECK_EQ_INT(sq_membudget_fit(&b, 8ULL << 30, total), 16);
  uint64_t free_b = (512ULL << 20) + sq_membudget_need(&b, 7);
  CHECK_EQ_INT(sq_membudget_fit(&b, free_b, total), 7);
  CHECK_EQ_INT(sq_membudget_fit(&b, 512ULL << 20, total), 0);
  uint32_t s[16];
  size_t n = sq_run_sizes(16, 8, s, 16);
  CHECK_EQ_INT(n, 5);
  CHECK(s[0] == 1 && s[1] == 2 && s[2] == 4 && s[3] == 8 && s[4] == 16);
  n = sq_run_sizes(12, 6, s, 16);
  CHECK_EQ_INT(n, 6);
  CHECK(s[0] == 1 && s[1] == 2 && s[2] == 4 && s[3] == 6 && s[4] == 8 && s[5] == 12);
  CHECK_EQ_INT(sq_run_size_for(s, n, 5), 6);
  CHECK_EQ_INT(sq_run_size_for(s, n, 9), 12);
  CHECK_EQ_INT(sq_run_size_for(s, n, 99), 12);
  CHECK_EQ_INT(sq_run_size_for(NULL, 0, 5), 5);
  CHECK_EQ_INT(sq_run_sizes(1, 1, s, 16), 1);
}

/* ---- through the model API on the fault backend ---- */

static sq_model_t *open_tiny(const char *name, const char *device, uint32_t streams,
                             sq_error_t *err) {
  sq_model_options_t o = {.device = device, .streams = streams};
  return sq_model_open_with(name, repo, &o, err);
}

static void gray_image(sq_image_t *img, uint32_t w, uint32_t h, uint32_t seed) {
  memset(img, 0, sizeof *img);
  img->width = w;
  img->height = h;
  img->channels = 1;
  img->bytes_per_sample = 1;
  img->data = malloc((size_t)w * h);
  for (size_t k = 0; k < (size_t)w * h; k++) {
    seed = seed * 1103515245u + 12345u;
    img->data[k] = (uint8_t)(seed >> 16);
  }
}

/* Runs n images (with a threshold: masks come back from run) and checks each mask: foreground
 * where v <= 127. Returns how many samples failed alone; *rc the run's result. */
static int run_images(sq_model_t *m, int ctx, sq_image_t *imgs, int n, int expect_code, int *rc) {
  void *samples[16], *outputs[16];
  int codes[16], failed = 0;
  sq_error_t err = {0};
  sq_postparams_t pp = {.threshold = 0.5f, .min_area = 0};
  for (int i = 0; i < n; i++)
    CHECK_EQ_INT(sq_model_prepare(m, &imgs[i], &pp, &samples[i], &err), 0);
  *rc = sq_model_run(m, ctx, samples, (size_t)n, outputs, codes, &err);
  for (int i = 0; i < n; i++) {
    if (*rc || codes[i]) {
      if (!*rc) CHECK_EQ_INT(codes[i], expect_code);
      CHECK(outputs[i] == NULL);
      sq_model_sample_free(m, samples[i]);
      failed++;
      continue;
    }
    uint8_t *mask = NULL;
    uint32_t w = 0, h = 0;
    CHECK_EQ_INT(sq_model_finish(m, outputs[i], &pp, &mask, &w, &h, &err), 0);
    int bad = 0;
    for (size_t k = 0; mask && k < (size_t)w * h; k++) bad += mask[k] != (imgs[i].data[k] <= 127);
    CHECK_EQ_INT(bad, 0);
    free(mask);
  }
  return failed;
}

static int count_runs(const char *needle) {
  FILE *f = fopen(logpath, "r");
  if (!f) return 0;
  char line[128];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

static int max_run_batch(void) {
  FILE *f = fopen(logpath, "r");
  if (!f) return 0;
  char line[128], dev[32];
  int n = 0, b;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "run %31s %d", dev, &b) == 2 && b > n) n = b;
  fclose(f);
  return n;
}

static void test_oom_split(void) {
  char dev[512];
  unlink(logpath);
  snprintf(dev, sizeof dev, "fault:oom_above=2,log=%s", logpath);
  sq_error_t err = {0};
  sq_model_t *m = open_tiny("big", dev, 1, &err);
  CHECK(m != NULL);
  if (!m) {
    fprintf(stderr, "  open: %s\n", err.msg);
    return;
  }
  /* 3 jobs of 2 tiles (13x8 with overlap 3): 6 tiles, max batch 8, one chunk of 6 -> OOM ->
   * 3 + 3 -> OOM -> 1 + 2, 1 + 2: every job succeeds, in runs of at most 2 tiles. */
  sq_image_t imgs[3];
  for (int i = 0; i < 3; i++) gray_image(&imgs[i], 13, 8, 7u + (uint32_t)i);
  int rc = 0;
  CHECK_EQ_INT(run_images(m, 0, imgs, 3, 0, &rc), 0);
  CHECK_EQ_INT(rc, 0);
  sq_model_stats_t st;
  sq_model_stats(m, &st);
  CHECK(st.oom_splits >= 2);
  CHECK(st.effective_max_batch <= 2);
  CHECK(count_runs("run fault:0 6") == 1 && count_runs("run fault:0 3") == 2);
  printf("oom split: %llu splits, effective max batch %u\n", (unsigned long long)st.oom_splits,
         st.effective_max_batch);
  /* The next batch starts at the learned size: no run above 2 any more. */
  unlink(logpath);
  CHECK_EQ_INT(run_images(m, 0, imgs, 3, 0, &rc), 0);
  CHECK(max_run_batch() <= 2);
  for (int i = 0; i < 3; i++) sq_image_free(&imgs[i]);
  sq_model_close(m);

  /* Nothing fits: every job fails alone with device_out_of_memory; the run itself is fine. */
  m = open_tiny("big", "fault:oom_above=0", 1, &err);
  CHECK(m != NULL);
  if (!m) return;
  for (int i = 0; i < 3; i++) gray_image(&imgs[i], 13, 8, 1u + (uint32_t)i);
  CHECK_EQ_INT(run_images(m, 0, imgs, 3, SQ_EOOM_DEVICE, &rc), 3);
  CHECK_EQ_INT(rc, 0);
  for (int i = 0; i < 3; i++) sq_image_free(&imgs[i]);
  sq_model_close(m);
}

static void test_poison(void) {
  sq_error_t err = {0};
  sq_model_t *m = open_tiny("big", "fault:poison_after=1", 1, &err);
  CHECK(m != NULL);
  if (!m) return;
  sq_image_t img;
  gray_image(&img, 8, 8, 3);
  int rc = 0;
  CHECK_EQ_INT(run_images(m, 0, &img, 1, 0, &rc), 0);
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(run_images(m, 0, &img, 1, 0, &rc), 1);
  CHECK_EQ_INT(rc, SQ_EDEVICE);
  /* Poisoned for good: the next run fails at once, naming the first error. */
  void *s = NULL, *o = NULL;
  int code = 0;
  CHECK_EQ_INT(sq_model_prepare(m, &img, NULL, &s, &err), 0);
  CHECK_EQ_INT(sq_model_run(m, 0, &s, 1, &o, &code, &err), SQ_EDEVICE);
  CHECK(strstr(err.msg, "failed earlier") && strstr(err.msg, "injected device error"));
  sq_model_sample_free(m, s);
  sq_image_free(&img);
  sq_model_close(m);
}

static void test_budget_at_open(void) {
  sq_error_t err = {0};
  /* 1 MiB free: not even batch 1 (the reserve alone is 64 MiB). */
  sq_model_t *m = open_tiny("big", "fault:total_mb=1000,free_mb=1", 1, &err);
  CHECK(m == NULL);
  CHECK_EQ_INT(err.code, SQ_EOOM_DEVICE);
  CHECK(strstr(err.msg, "even at batch 1") != NULL);
  printf("budget refusal: %s\n", err.msg);
  /* cellseg-unet (256x256 tiles, max_batch 16) with 100 MiB usable: a smaller max batch. */
  const char *src = getenv("SEGQ_SOURCE_DIR");
  char models[512];
  snprintf(models, sizeof models, "%s/models", src && *src ? src : ".");
  sq_model_options_t o = {.device = "fault:total_mb=2000,free_mb=228"};
  m = sq_model_open_with("cellseg-unet", models, &o, &err);
  CHECK(m != NULL);
  if (m) {
    const sq_model_info_t *info = sq_model_info(m);
    printf("cellseg-unet with 100 MiB usable: max_batch %u\n", info->max_batch);
    CHECK(info->max_batch >= 1 && info->max_batch < 16);
    sq_model_close(m);
  } else {
    fprintf(stderr, "  cellseg-unet: %s\n", err.msg);
  }
}

static void write_mem(long free_mb, long total_mb) {
  FILE *f = fopen(memfile, "w");
  CHECK(f != NULL);
  if (!f) return;
  fprintf(f, "%ld %ld\n", free_mb, total_mb);
  fclose(f);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void test_pressure(void) {
  char dev[512];
  write_mem(900, 1000);
  snprintf(dev, sizeof dev, "fault:mem_file=%s", memfile);
  sq_error_t err = {0};
  sq_model_t *m = open_tiny("big", dev, 1, &err);
  CHECK(m != NULL);
  if (!m) return;
  sq_image_t img;
  gray_image(&img, 8, 8, 5);
  int rc = 0;
  sq_model_stats_t st;
  run_images(m, 0, &img, 1, 0, &rc);
  sq_model_stats(m, &st);
  CHECK_EQ_INT(st.pressure, SQ_PRESSURE_NONE);
  CHECK_EQ_INT(st.effective_max_batch, 8);
  CHECK_EQ_INT(st.device_total, 1000ULL << 20);
  write_mem(40, 1000); /* 96% used: the next batch runs at half the max */
  sleep_ms(250);       /* past the 200 ms between looks at the device */
  CHECK_EQ_INT(run_images(m, 0, &img, 1, 0, &rc), 0);
  sq_model_stats(m, &st);
  CHECK_EQ_INT(st.pressure, SQ_PRESSURE_SHRINK);
  CHECK_EQ_INT(st.effective_max_batch, 4);
  write_mem(950, 1000); /* free again: grows back a step per second */
  sleep_ms(1100);
  run_images(m, 0, &img, 1, 0, &rc);
  sq_model_stats(m, &st);
  CHECK_EQ_INT(st.pressure, SQ_PRESSURE_NONE);
  CHECK_EQ_INT(st.effective_max_batch, 8);
  sq_image_free(&img);
  sq_model_close(m);
}

static void test_graph_sizes_and_devices(void) {
  char dev[512];
  unlink(logpath);
  snprintf(dev, sizeof dev, "fault:graphs=1,devices=2,log=%s", logpath);
  sq_error_t err = {0};
  sq_model_t *m = open_tiny("big", dev, 2, &err);
  CHECK(m != NULL);
  if (!m) {
    fprintf(stderr, "  open: %s\n", err.msg);
    return;
  }
  const sq_model_info_t *info = sq_model_info(m);
  CHECK_EQ_INT(info->devices, 2);
  CHECK_EQ_INT(info->contexts, 4); /* 2 streams on each of 2 devices */
  /* Warm-up: sizes 1, 2, 4, 8 (max 8, optimal 8), each twice (bind, then the capture). */
  CHECK_EQ_INT(sq_model_warmup(m, 0, &err), 0);
  CHECK_EQ_INT(sq_model_warmup(m, 3, &err), 0);
  CHECK_EQ_INT(count_runs("run fault:0 1"), 2);
  CHECK_EQ_INT(count_runs("run fault:0 8"), 2);
  CHECK_EQ_INT(count_runs("run fault:1 4"), 2);
  CHECK_EQ_INT(count_runs("run fault:1 3"), 0);
  unlink(logpath);
  /* 3 tiles (one 13x8 job, one 8x8) run padded to 4 on context 1 (device 0) and context 2
   * (device 1); the padding never shows in the masks. */
  sq_image_t imgs[2];
  gray_image(&imgs[0], 13, 8, 11);
  gray_image(&imgs[1], 8, 8, 12);
  int rc = 0;
  CHECK_EQ_INT(run_images(m, 1, imgs, 2, 0, &rc), 0);
  CHECK_EQ_INT(run_images(m, 2, imgs, 2, 0, &rc), 0);
  CHECK_EQ_INT(count_runs("run fault:0 4"), 1);
  CHECK_EQ_INT(count_runs("run fault:1 4"), 1);
  CHECK_EQ_INT(count_runs(" 3\n"), 0);
  for (int i = 0; i < 2; i++) sq_image_free(&imgs[i]);
  sq_model_close(m);
}

/* Which precision a model runs in: the worker's flag, else model.json's "precision", else the
 * file (an fp16 export runs in fp16); a backend without fp16 computes in fp32 whatever it was
 * asked. */
static void test_precision(void) {
  const char *src = getenv("SEGQ_SOURCE_DIR");
  char onnx[1024], dir[600];
  snprintf(onnx, sizeof onnx, "%s/tests/data/onnx/unet_fp16io.onnx", src && *src ? src : ".");
  static const struct {
    const char *name, *precision_json, *flag, *device;
    int want;
  } cases[] = {{"h16", NULL, NULL, "fault:fp16=1", 1},      {"h16", "fp32", NULL, "fault:fp16=1", 0},
               {"h16", NULL, "fp32", "fault:fp16=1", 0},    {"h16", NULL, "fp16", "fault:fp16=1", 1},
               {"h16", NULL, NULL, "fault", 0},             {"h16", "fp16", NULL, "cpu", 0},
               {"h32", NULL, NULL, "fault:fp16=1", 0},      {"h32", NULL, "fp16", "fault:fp16=1", 1}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char json[1400];
    const char *file = !strcmp(cases[i].name, "h16") ? onnx : NULL;
    snprintf(dir, sizeof dir, "%s/prec%zu", repo, i);
    mkdir(dir, 0755);
    if (file) {
      size_t len = 0;
      uint8_t *buf = test_read_file(file, &len);
      CHECK(buf != NULL);
      tiny_write_file(dir, "model.onnx", buf, len);
      free(buf);
      snprintf(json, sizeof json,
               "{\"input\": {\"name\": \"input\", \"channels\": 1, \"size\": [64, 64]},"
               " \"large_images\": {\"overlap\": 8}, \"output\": {\"kind\": \"sigmoid\"},"
               " \"max_batch\": 2%s%s%s}",
               cases[i].precision_json ? ", \"precision\": \"" : "",
               cases[i].precision_json ? cases[i].precision_json : "",
               cases[i].precision_json ? "\"" : "");
    } else {
      tiny_write_onnx(dir, "Neg");
      snprintf(json, sizeof json,
               "{\"input\": {" TINY_INPUT "}, \"large_images\": {\"overlap\": 3},"
               " \"output\": {\"name\": \"y\", \"kind\": \"logits_sigmoid\", \"channel\": 1}}");
    }
    tiny_write_file(dir, "model.json", json, strlen(json));
    char name[32];
    snprintf(name, sizeof name, "prec%zu", i);
    sq_model_options_t o = {.device = cases[i].device, .precision = cases[i].flag};
    sq_error_t err = {0};
    sq_model_t *m = sq_model_open_with(name, repo, &o, &err);
    CHECK(m != NULL);
    if (!m) {
      fprintf(stderr, "  %s: %s\n", name, err.msg);
      continue;
    }
    CHECK_EQ_INT(sq_model_info(m)->fp16, cases[i].want);
    if (sq_model_info(m)->fp16 != cases[i].want)
      fprintf(stderr, "  case %zu (%s json=%s flag=%s %s): fp16=%d\n", i, cases[i].name,
              cases[i].precision_json ? cases[i].precision_json : "-",
              cases[i].flag ? cases[i].flag : "-", cases[i].device, sq_model_info(m)->fp16);
    sq_model_close(m);
  }
}

int main(void) {
  CHECK_EQ_INT(sq_fault_backend_register(), 0);
  CHECK_EQ_INT(sq_fault_backend_register(), SQ_EINVAL); /* a name registers once */
  test_mempolicy();
  test_budget_and_sizes();
  snprintf(repo, sizeof repo, "/tmp/segq-devices-XXXXXX");
  if (!mkdtemp(repo)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(logpath, sizeof logpath, "%s/runs.log", repo);
  snprintf(memfile, sizeof memfile, "%s/mem.txt", repo);
  /* The tiny pixelwise model with max_batch 8 (tiles of 8x8, overlap 3). */
  tiny_make_model(repo, "big",
                  "{\"input\": {" TINY_INPUT
                  "},\n"
                  " \"normalization\": {\"mean\": 0.5, \"std\": 1},\n"
                  " \"large_images\": {\"overlap\": 3},\n"
                  " \"output\": {\"name\": \"y\", \"kind\": \"logits_sigmoid\", \"channel\": 1},\n"
                  " \"max_batch\": 8, \"threshold\": 0.5}\n",
                  "Neg");
  test_oom_split();
  test_poison();
  test_budget_at_open();
  test_pressure();
  test_graph_sizes_and_devices();
  test_precision();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", repo);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", repo);
  CHECK_DONE();
}
