/* segq-tune: measures a repository model on the current device (what the worker's --device
 * picks: a GPU, or the CPU) over batch sizes and stream counts, the seeds' manual batch-size
 * study automated: for each stream count S the model is opened with S executor contexts (per
 * device) and warmed up like the worker does; then, for each batch size B, S threads each run
 * batches of B one-tile images through sq_model_run for --seconds, and the tool records
 * images/s (all threads), the p50/p99 time of one batch, and the device memory the contexts hold.
 * It prints one JSON document on stdout (the measurements and the recommendation: optimal_batch,
 * max_batch, streams) and a table on stderr; `tools/segq tune MODEL` (clients/python/segq/cli.py)
 * runs it and writes the recommendation into the model's model.json.
 * Threads: main, plus one measuring thread per stream. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "gpu/onnx/engine.h"

#define MAX_SIZES 16
#define MAX_STREAMS 8

typedef struct {
  uint32_t streams, batch;
  double images_per_s, p50_ms, p99_ms, memory_mb;
  int failed; /* the batch did not run (out of memory, ...) */
  char why[200];
} result_t;

typedef struct {
  sq_model_t *m;
  int ctx;
  uint32_t batch, width, height, channels;
  double seconds;
  double *lat_ms; /* batches' times */
  size_t nlat, cap;
  uint64_t images;
  int rc;
  char why[200];
} worker_arg_t;

static void usage(void) {
  fprintf(stderr,
          "usage: segq-tune MODEL [--model-dir DIR] [--device D] [--precision fp32|fp16]\n"
          "                 [--batches 1,2,4,8,16] [--streams 1,2] [--seconds S]\n"
          "Measures images/s, p50/p99 batch latency and memory of a repository model over batch\n"
          "sizes and stream counts on the device, and prints the measurements and the\n"
          "recommended optimal_batch, max_batch and streams as JSON (tools/segq tune writes them\n"
          "into model.json).\n");
}

static int parse_list(const char *s, uint32_t *out, int cap) {
  int n = 0;
  while (s && *s && n < cap) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v < 1 || v > 1024) return -1;
    out[n++] = (uint32_t)v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return -1;
  }
  return n;
}

/* A message as a JSON string body: quotes, backslashes and control characters dropped. */
static void json_clean(char *s) {
  for (char *p = s; *p; p++)
    if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = ' ';
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One synthetic image of the model's tile size: blobs on a dark background (not zeros: a float
 * CNN does the same work on any values, but honest data keeps denormals and shortcuts away). */
static void make_image(sq_image_t *img, uint32_t w, uint32_t h, uint32_t c, uint32_t seed) {
  memset(img, 0, sizeof *img);
  img->width = w;
  img->height = h;
  img->channels = c;
  img->bytes_per_sample = 1;
  img->data = malloc((size_t)w * h * c);
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t x = 0; x < w; x++) {
      seed = seed * 1103515245u + 12345u;
      int blob = ((x / 16 + y / 16) % 3) == 0;
      uint8_t v = (uint8_t)((blob ? 180 : 25) + ((seed >> 16) & 15));
      for (uint32_t k = 0; k < c; k++) img->data[((size_t)y * w + x) * c + k] = v;
    }
}

static void *measure(void *p) {
  worker_arg_t *a = p;
  sq_error_t err = {0};
  sq_postparams_t pp = {.threshold = 0.5f, .min_area = 0};
  sq_image_t img;
  make_image(&img, a->width, a->height, a->channels, 1234u + (uint32_t)a->ctx);
  void **samples = calloc(a->batch, sizeof *samples), **outputs = calloc(a->batch, sizeof *outputs);
  int *codes = calloc(a->batch, sizeof *codes);
  uint64_t deadline = sq_clock_mono_us() + (uint64_t)(a->seconds * 1e6);
  while (samples && outputs && codes && !a->rc) {
    for (uint32_t i = 0; i < a->batch && !a->rc; i++)
      a->rc = sq_model_prepare(a->m, &img, &pp, &samples[i], &err);
    if (a->rc) break;
    uint64_t t0 = sq_clock_mono_us();
    a->rc = sq_model_run(a->m, a->ctx, samples, a->batch, outputs, codes, &err);
    double ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
    for (uint32_t i = 0; i < a->batch; i++) {
      if (a->rc || codes[i]) {
        if (!a->rc) a->rc = codes[i];
        sq_model_sample_free(a->m, samples[i]);
      } else {
        sq_model_output_free(a->m, outputs[i]);
      }
    }
    if (a->rc) break;
    if (a->nlat == a->cap) {
      a->cap = a->cap ? 2 * a->cap : 256;
      double *nl = realloc(a->lat_ms, a->cap * sizeof *nl);
      if (!nl) break;
      a->lat_ms = nl;
    }
    a->lat_ms[a->nlat++] = ms;
    a->images += a->batch;
    if (sq_clock_mono_us() >= deadline && a->nlat >= 3) break;
  }
  if (a->rc) snprintf(a->why, sizeof a->why, "%s: %.150s", sq_error_name(a->rc), err.msg);
  free(samples);
  free(outputs);
  free(codes);
  sq_image_free(&img);
  return NULL;
}

static double device_used_mb(sq_model_t *m) {
  sq_model_stats_t st;
  sq_model_stats(m, &st);
  return st.device_total ? (double)(st.device_total - st.device_free) / 1048576.0 : 0.0;
}

/* Resident memory of this process in MiB (the CPU backend's contexts live there). */
static double rss_mb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return (double)rss * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

int main(int argc, char **argv) {
  sq_engine_process_init(argv); /* the cpu backend's OpenMP waits passively (engine.h) */
  const char *model = NULL, *model_dir = "models", *device = "auto", *precision = NULL;
  uint32_t batches[MAX_SIZES] = {1, 2, 4, 8, 16}, streams[MAX_STREAMS] = {1, 2};
  int nb = 5, ns = 2;
  double seconds = 3.0;
  for (int i = 1; i < argc; i++) {
    int more = i + 1 < argc;
    if (!strcmp(argv[i], "--model-dir") && more)
      model_dir = argv[++i];
    else if (!strcmp(argv[i], "--device") && more)
      device = argv[++i];
    else if (!strcmp(argv[i], "--precision") && more)
      precision = argv[++i];
    else if (!strcmp(argv[i], "--batches") && more)
      nb = parse_list(argv[++i], batches, MAX_SIZES);
    else if (!strcmp(argv[i], "--streams") && more)
      ns = parse_list(argv[++i], streams, MAX_STREAMS);
    else if (!strcmp(argv[i], "--seconds") && more)
      seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage();
      return 0;
    } else if (argv[i][0] != '-' && !model)
      model = argv[i];
    else {
      usage();
      return 2;
    }
  }
  if (!model || nb < 1 || ns < 1 || !(seconds > 0) ||
      (precision && strcmp(precision, "fp32") && strcmp(precision, "fp16"))) {
    fprintf(stderr, "segq-tune: %s\n",
            !model ? "no model named"
                   : "bad --batches/--streams/"
                     "--seconds/--precision");
    usage();
    return 2;
  }
  sq_log_set_level(SQ_LOG_WARN);
  uint32_t maxb = 0;
  for (int i = 0; i < nb; i++) maxb = batches[i] > maxb ? batches[i] : maxb;
  result_t res[MAX_SIZES * MAX_STREAMS];
  int nres = 0;
  char backend[64] = "?";
  int fp16 = 0;
  double base_mb = rss_mb();
  for (int si = 0; si < ns; si++) {
    sq_error_t err = {0};
    sq_model_options_t o = {
        .device = device, .streams = streams[si], .precision = precision, .max_batch = maxb};
    sq_model_t *m = sq_model_open_with(model, model_dir, &o, &err);
    if (!m) {
      fprintf(stderr, "segq-tune: %s: %s (%s)\n", model, err.msg, sq_error_name(err.code));
      return 1;
    }
    const sq_model_info_t *info = sq_model_info(m);
    snprintf(backend, sizeof backend, "%s", info->backend);
    fp16 = info->fp16;
    for (uint32_t c = 0; c < info->contexts; c++) {
      int rc = sq_model_warmup(m, (int)c, &err);
      if (rc) {
        fprintf(stderr, "segq-tune: warm-up: %s\n", err.msg);
        sq_model_close(m);
        return 1;
      }
    }
    double mem_mb = device_used_mb(m);
    if (mem_mb == 0) mem_mb = rss_mb() - base_mb;
    /* tile size: what prepare cuts an image into */
    uint32_t w = info->tile_w ? info->tile_w : 256, h = info->tile_h ? info->tile_h : 256;
    for (int bi = 0; bi < nb; bi++) {
      uint32_t nctx = info->contexts;
      worker_arg_t args[MAX_STREAMS * 16];
      pthread_t th[MAX_STREAMS * 16];
      if (nctx > MAX_STREAMS * 16) nctx = MAX_STREAMS * 16;
      uint64_t t0 = sq_clock_mono_us();
      for (uint32_t c = 0; c < nctx; c++) {
        memset(&args[c], 0, sizeof args[c]);
        args[c] = (worker_arg_t){.m = m,
                                 .ctx = (int)c,
                                 .batch = batches[bi],
                                 .width = w,
                                 .height = h,
                                 .channels = info->input_channels,
                                 .seconds = seconds};
        pthread_create(&th[c], NULL, measure, &args[c]);
      }
      for (uint32_t c = 0; c < nctx; c++) pthread_join(th[c], NULL);
      double wall = (double)(sq_clock_mono_us() - t0) / 1e6;
      result_t *r = &res[nres++];
      memset(r, 0, sizeof *r);
      r->streams = streams[si];
      r->batch = batches[bi];
      size_t nl = 0;
      uint64_t images = 0;
      for (uint32_t c = 0; c < nctx; c++) {
        if (args[c].rc && !r->failed) {
          r->failed = 1;
          snprintf(r->why, sizeof r->why, "%s", args[c].why);
        }
        nl += args[c].nlat;
        images += args[c].images;
      }
      double *all = malloc((nl ? nl : 1) * sizeof *all);
      size_t k = 0;
      for (uint32_t c = 0; c < nctx; c++) {
        for (size_t i = 0; all && i < args[c].nlat; i++) all[k++] = args[c].lat_ms[i];
        free(args[c].lat_ms);
      }
      json_clean(r->why);
      if (all && k) {
        qsort(all, k, sizeof *all, cmp_double);
        r->p50_ms = all[k / 2];
        r->p99_ms = all[(size_t)fmin((double)k - 1, ceil(0.99 * (double)k) - 1)];
      }
      free(all);
      r->images_per_s = wall > 0 ? (double)images / wall : 0;
      double now_mb = device_used_mb(m);
      r->memory_mb = now_mb > 0 ? now_mb : fmax(mem_mb, rss_mb() - base_mb);
      fprintf(stderr,
              "streams %u batch %4u: %9.1f images/s  p50 %8.2f ms  p99 %8.2f ms  %7.1f MiB%s%s\n",
              r->streams, r->batch, r->images_per_s, r->p50_ms, r->p99_ms, r->memory_mb,
              r->failed ? "  FAILED: " : "", r->failed ? r->why : "");
    }
    sq_model_close(m);
  }
  /* The recommendation: the stream count with the most images/s; there, optimal_batch is the
   * smallest batch reaching 95% of that count's best, and max_batch the largest batch that ran,
   * but no more than 4x optimal (past saturation a bigger batch only adds latency). */
  double best = -1;
  uint32_t best_s = streams[0];
  for (int i = 0; i < nres; i++)
    if (!res[i].failed && res[i].images_per_s > best * 1.02) {
      best = res[i].images_per_s;
      best_s = res[i].streams;
    }
  double best_at_s = 0;
  for (int i = 0; i < nres; i++)
    if (res[i].streams == best_s && !res[i].failed && res[i].images_per_s > best_at_s)
      best_at_s = res[i].images_per_s;
  uint32_t optimal = 0, max_ok = 0;
  for (int i = 0; i < nres; i++) {
    if (res[i].streams != best_s || res[i].failed) continue;
    if (res[i].images_per_s >= 0.95 * best_at_s && (!optimal || res[i].batch < optimal))
      optimal = res[i].batch;
    if (res[i].batch > max_ok) max_ok = res[i].batch;
  }
  if (!optimal) {
    fprintf(stderr, "segq-tune: no configuration ran\n");
    return 1;
  }
  uint32_t max_batch = max_ok < 4 * optimal ? max_ok : 4 * optimal;
  if (max_batch < optimal) max_batch = optimal;
  printf(
      "{\"model\": \"%s\", \"device\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\", "
      "\"seconds\": %.2f,\n \"results\": [",
      model, device, backend, fp16 ? "fp16" : "fp32", seconds);
  for (int i = 0; i < nres; i++)
    printf(
        "%s\n  {\"streams\": %u, \"batch\": %u, \"images_per_s\": %.2f, \"p50_ms\": %.3f, "
        "\"p99_ms\": %.3f, \"memory_mb\": %.1f, \"ok\": %s%s%s%s}",
        i ? "," : "", res[i].streams, res[i].batch, res[i].images_per_s, res[i].p50_ms,
        res[i].p99_ms, res[i].memory_mb, res[i].failed ? "false" : "true",
        res[i].failed ? ", \"error\": \"" : "", res[i].failed ? res[i].why : "",
        res[i].failed ? "\"" : "");
  printf("],\n \"recommended\": {\"optimal_batch\": %u, \"max_batch\": %u, \"contexts\": %u}}\n",
         optimal, max_batch, best_s);
  fprintf(stderr, "recommended: optimal_batch %u, max_batch %u, streams (model.json contexts) %u\n",
          optimal, max_batch, best_s);
  return 0;
}
