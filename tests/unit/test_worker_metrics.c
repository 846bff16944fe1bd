/* worker/metrics: observations from several threads at once add up exactly (atomics), the text
 * is the exposition format (HELP/TYPE per family, cumulative buckets ending in +Inf = count,
 * sums in seconds), GPU families appear only for a device whose backend reports its own memory
 * (the model stats carry a total), the memory-policy families per model (effective max batch,
 * OOM splits, device memory: the gpu branch's metrics, now with HELP/TYPE),
 * depth families only once read, render reports the length it needs when cut short, and a
 * scraping thread can render (and set state) while the observers run. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "worker/metrics.h"

#define THREADS 4
#define PER_THREAD 5000

static sq_metrics_t *m;

static void *hammer(void *arg) {
  (void)arg;
  sq_timings_t t = {
      .queue_wait_us = 2000, .decode_us = 300, .postprocess_us = 100, .total_us = 8000};
  for (int i = 0; i < PER_THREAD; i++) {
    int failed = i % 10 == 0;
    sq_metrics_job_acked(m, 0, failed ? SQ_OUTCOME_FAILED : SQ_OUTCOME_OK, &t,
                         failed ? SQ_EVALUE : 0);
    if (i % 100 == 1) sq_metrics_job_acked(m, 0, SQ_OUTCOME_RETRIED, &t, SQ_ETIMEOUT);
    sq_metrics_run_begin(m, 1);
    sq_metrics_run_end(m, 1, 4, 1500);
  }
  sq_metrics_jobs_dropped(m, 0, 1);
  return NULL;
}

/* The value on the sample line starting with line_prefix (not a # HELP line naming it). */
/* Scrapes (and sets the loop's state) while the observers run, as an HTTP thread would. */
static volatile int observing = 1;
static void *scraper(void *arg) {
  (void)arg;
  char *buf = malloc(1 << 16);
  int renders = 0;
  while (observing || renders == 0) {
    sq_metrics_worker_t w = {1, 1, 1, 0, (uint64_t)renders, 1, 0};
    sq_metrics_set_worker(m, &w);
    sq_metrics_set_model(m, 0, (uint64_t)renders, 1);
    sq_metrics_render(m, buf, 1 << 16);
    renders++;
  }
  free(buf);
  return NULL;
}

static uint64_t sample(const char *text, const char *line_prefix) {
  char want[200];
  snprintf(want, sizeof want, "\n%s ", line_prefix);
  const char *p = strstr(text, want);
  if (p) p++;
  if (!p) {
    fprintf(stderr, "  no sample '%s'\n", line_prefix);
    return UINT64_MAX;
  }
  double v = -1;
  sscanf(p + strlen(line_prefix), " %lf", &v);
  return (uint64_t)v;
}

int main(void) {
  const char *models[] = {"otsu", "cellseg-unet"};
  const char *devices[] = {"cpu", "cuda:0"};
  m = sq_metrics_new(models, devices, 2);
  CHECK(m != NULL);
  pthread_t th[THREADS], scr;
  pthread_create(&scr, NULL, scraper, NULL);
  for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, hammer, NULL);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  observing = 0;
  pthread_join(scr, NULL);

  size_t need = sq_metrics_render(m, NULL, 0);
  char *text = malloc(need + 1);
  CHECK_EQ_INT(sq_metrics_render(m, text, need + 1), need);
  CHECK_EQ_INT(strlen(text), need);
  const uint64_t N = THREADS * PER_THREAD;
  CHECK_EQ_INT(sample(text, "segq_jobs_total{model=\"otsu\",outcome=\"ok\"}"), N - N / 10);
  CHECK_EQ_INT(sample(text, "segq_jobs_total{model=\"otsu\",outcome=\"failed\"}"), N / 10);
  CHECK_EQ_INT(sample(text, "segq_jobs_total{model=\"otsu\",outcome=\"dropped\"}"), THREADS);
  CHECK_EQ_INT(sample(text, "segq_job_errors_total{model=\"otsu\",code=\"invalid_field_value\"}"),
               N / 10);
  CHECK_EQ_INT(sample(text, "segq_jobs_total{model=\"otsu\",outcome=\"retried\"}"), N / 100);
  CHECK_EQ_INT(sample(text, "segq_job_errors_total{model=\"otsu\",code=\"timeout\"}"), N / 100);
  CHECK_EQ_INT(sample(text, "segq_jobs_total{model=\"otsu\",outcome=\"canceled\"}"), 0);
  CHECK_EQ_INT(sample(text, "segq_inference_count_total{model=\"cellseg-unet\"}"), 4 * N);
  CHECK_EQ_INT(sample(text, "segq_inference_exec_count_total{model=\"cellseg-unet\"}"), N);
  /* queue wait 2 ms: in the 2.5 ms bucket and above, not in 1 ms; +Inf and count agree. */
  CHECK_EQ_INT(sample(text, "segq_queue_wait_seconds_bucket{model=\"otsu\",le=\"0.001\"}"), 0);
  const uint64_t E = N + N / 100; /* executions: retried ones too */
  CHECK_EQ_INT(sample(text, "segq_queue_wait_seconds_bucket{model=\"otsu\",le=\"0.0025\"}"), E);
  CHECK_EQ_INT(sample(text, "segq_queue_wait_seconds_bucket{model=\"otsu\",le=\"+Inf\"}"), E);
  CHECK_EQ_INT(sample(text, "segq_queue_wait_seconds_count{model=\"otsu\"}"), E);
  CHECK(strstr(text, "segq_queue_wait_seconds_sum{model=\"otsu\"} 40.400000\n") != NULL);
  CHECK_EQ_INT(sample(text, "segq_job_duration_seconds_count{model=\"otsu\"}"), N);
  /* end to end = queue wait + time in the worker = 10 ms */
  CHECK_EQ_INT(sample(text, "segq_job_duration_seconds_bucket{model=\"otsu\",le=\"0.005\"}"), 0);
  CHECK_EQ_INT(sample(text, "segq_job_duration_seconds_bucket{model=\"otsu\",le=\"0.01\"}"), N);
  CHECK_EQ_INT(sample(text, "segq_batch_size_bucket{model=\"cellseg-unet\",le=\"2\"}"), 0);
  CHECK_EQ_INT(sample(text, "segq_batch_size_bucket{model=\"cellseg-unet\",le=\"4\"}"), N);
  CHECK(strstr(text, "segq_batch_size_sum{model=\"cellseg-unet\"} 80000.000000\n") != NULL);
  /* Every family: HELP then TYPE. */
  int helps = 0, types = 0;
  for (const char *p = text; (p = strstr(p, "# HELP ")); p++) helps++;
  for (const char *p = text; (p = strstr(p, "# TYPE ")); p++) types++;
  CHECK(helps == types && helps >= 20);
  CHECK(strstr(text, "# TYPE segq_queue_wait_seconds histogram\n") != NULL);
  CHECK(strstr(text, "# TYPE segq_jobs_total counter\n") != NULL);
  /* Not yet known: no depth, no GPU memory. */
  CHECK(strstr(text, "segq_queue_depth") == NULL);
  CHECK(strstr(text, "segq_gpu_memory") == NULL);
  free(text);

  uint64_t queued[2] = {7, 0}, delayed[2] = {1, 2};
  sq_queue_depth_t d = {2, queued, delayed, 3};
  sq_metrics_set_depth(m, &d);
  sq_model_stats_t cpu = {.effective_max_batch = 8}; /* no device memory: no GPU family */
  sq_metrics_set_model_stats(m, 0, &cpu);
  sq_model_stats_t gpu = {.effective_max_batch = 6,
                          .oom_splits = 2,
                          .device_free = 77ull << 30,
                          .device_total = 80ull << 30};
  sq_metrics_set_model_stats(m, 1, &gpu);
  char small[64];
  need = sq_metrics_render(m, small, sizeof small);
  CHECK(need > sizeof small);
  CHECK_EQ_INT(strlen(small), sizeof small - 1);
  text = malloc(need + 1);
  sq_metrics_render(m, text, need + 1);
  CHECK_EQ_INT(sample(text, "segq_queue_depth{model=\"otsu\"}"), 7);
  CHECK_EQ_INT(sample(text, "segq_queue_delayed{model=\"cellseg-unet\"}"), 2);
  CHECK_EQ_INT(sample(text, "segq_dead_letters"), 3);
  CHECK_EQ_INT(sample(text, "segq_gpu_memory_used_bytes{device=\"cuda:0\"}"), 3ull << 30);
  CHECK_EQ_INT(sample(text, "segq_gpu_memory_total_bytes{device=\"cuda:0\"}"), 80ull << 30);
  CHECK(strstr(text, "segq_gpu_memory_used_bytes{device=\"cpu\"}") == NULL);
  CHECK_EQ_INT(sample(text, "segq_model_effective_max_batch{model=\"otsu\"}"), 8);
  CHECK_EQ_INT(sample(text, "segq_model_effective_max_batch{model=\"cellseg-unet\"}"), 6);
  CHECK_EQ_INT(sample(text, "segq_model_oom_splits_total{model=\"cellseg-unet\"}"), 2);
  CHECK_EQ_INT(sample(text, "segq_device_memory_bytes{model=\"cellseg-unet\",kind=\"free\"}"),
               77ull << 30);
  CHECK(strstr(text, "segq_device_memory_bytes{model=\"otsu\"") == NULL);
  CHECK(strstr(text, "# TYPE segq_model_oom_splits_total counter\n") != NULL);
  CHECK(strstr(text, "segq_device_busy_seconds_total{device=\"cuda:0\"}") != NULL);
  free(text);
  sq_metrics_free(m);
  CHECK_DONE();
}
