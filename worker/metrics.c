/* worker/metrics: storage and rendering of the families of SQ_METRIC_FAMILIES. Everything an
 * observation touches is a C11 atomic (relaxed: a scrape may see a histogram's count a job ahead
 * of its buckets, which Prometheus tolerates); a device's busy span is a small mutex-protected
 * counter of running executors; what the loop thread sets (its own state, the depth) sits behind
 * one mutex that render takes too. Families and their help text come from one table, so --help,
 * docs and dashboards cannot name a metric the worker does not serve (tests/deploy checks the
 * dashboards against a real scrape).
 * Threads: observe functions from any thread; set_* on the loop thread; render on any (the
 * HTTP endpoint renders on libmicrohttpd's thread). */
#include "worker/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "worker/config.h"

enum {
#define SQ_X_ID(id, name, type, labels, help) FAM_##id,
  SQ_METRIC_FAMILIES(SQ_X_ID)
#undef SQ_X_ID
      FAM_N
};

typedef struct {
  const char *name, *type, *help;
} family_t;

static const family_t families[FAM_N] = {
#define SQ_X_FAM(id, name, type, labels, help) {name, #type, help},
    SQ_METRIC_FAMILIES(SQ_X_FAM)
#undef SQ_X_FAM
};

/* Seconds: 1 ms to 10 min, so queue waits of a backlog and sub-millisecond stages both resolve. */
static const double time_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,    5,     10,   30,    60,   120, 300,  600};
static const double size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define NTIME (sizeof time_bounds / sizeof time_bounds[0])
#define NSIZE (sizeof size_bounds / sizeof size_bounds[0])
#define MAX_BOUNDS NTIME

typedef struct {
  atomic_uint_fast64_t bucket[MAX_BOUNDS + 1]; /* non-cumulative; last = above every bound */
  atomic_uint_fast64_t sum;                    /* microseconds (time) or samples (size) */
  atomic_uint_fast64_t count;
} histo_t;

enum { H_QUEUE_WAIT, H_DECODE, H_INFERENCE, H_POSTPROCESS, H_E2E, H_BATCH, H_N };
static const int histo_family[H_N] = {FAM_QUEUE_WAIT,  FAM_DECODE, FAM_INFERENCE,
                                      FAM_POSTPROCESS, FAM_E2E,    FAM_BATCH_SIZE};

#define NCODES 128 /* error numbers (-code) of SQ_ERRORS are below this */

typedef struct {
  char *name;
  size_t device;
  atomic_uint_fast64_t outcome[SQ_OUTCOME_N];
  atomic_uint_fast64_t codes[NCODES];
  atomic_uint_fast64_t infer_count, infer_exec;
  histo_t h[H_N];
  uint64_t in_flight, batcher; /* under state_mu */
  sq_model_stats_t mstats;     /* under state_mu */
} model_stats_t;

typedef struct {
  char *name;
  pthread_mutex_t mu;
  unsigned running;
  uint64_t since_us, busy_us;
  atomic_uint_fast64_t mem_used, mem_total;
  atomic_int mem_known;
} device_stats_t;

struct sq_metrics {
  model_stats_t *models;
  size_t nmodels;
  device_stats_t *devices;
  size_t ndevices;
  double start_time_s;
  uint64_t start_mono_us;
  pthread_mutex_t state_mu; /* guards what sq_metrics_set_* write: worker, depth, in_flight... */
  int state_mu_ready;
  sq_metrics_worker_t worker;
  int depth_known;
  uint64_t *queued, *delayed, dead;
};

static void add(atomic_uint_fast64_t *a, uint64_t v) {
  atomic_fetch_add_explicit(a, v, memory_order_relaxed);
}

static uint64_t get(const atomic_uint_fast64_t *a) {
  return atomic_load_explicit((atomic_uint_fast64_t *)a, memory_order_relaxed);
}

static void observe(histo_t *h, const double *bounds, size_t nb, double value, uint64_t sum_units) {
  size_t i = 0;
  while (i < nb && value > bounds[i]) i++;
  add(&h->bucket[i], 1);
  add(&h->sum, sum_units);
  add(&h->count, 1);
}

static void observe_us(histo_t *h, uint64_t us) {
  observe(h, time_bounds, NTIME, (double)us / 1e6, us);
}

sq_metrics_t *sq_metrics_new(const char *const *models, const char *const *devices,
                             size_t nmodels) {
  sq_metrics_t *m = calloc(1, sizeof(*m));
  if (!m) return NULL;
  m->models = calloc(nmodels ? nmodels : 1, sizeof(*m->models));
  m->devices = calloc(nmodels ? nmodels : 1, sizeof(*m->devices));
  m->queued = calloc(nmodels ? nmodels : 1, sizeof(uint64_t));
  m->delayed = calloc(nmodels ? nmodels : 1, sizeof(uint64_t));
  if (!m->models || !m->devices || !m->queued || !m->delayed) {
    sq_metrics_free(m);
    return NULL;
  }
  m->start_time_s = (double)sq_clock_wall_ms() / 1000.0;
  m->start_mono_us = sq_clock_mono_us();
  pthread_mutex_init(&m->state_mu, NULL);
  m->state_mu_ready = 1;
  for (size_t i = 0; i < nmodels; i++) {
    const char *dev = devices && devices[i] ? devices[i] : "cpu";
    size_t d = 0;
    while (d < m->ndevices && strcmp(m->devices[d].name, dev) != 0) d++;
    if (d == m->ndevices) {
      if (!(m->devices[d].name = sq_strdup(dev))) {
        sq_metrics_free(m);
        return NULL;
      }
      pthread_mutex_init(&m->devices[d].mu, NULL);
      m->ndevices++;
    }
    m->models[i].device = d;
    if (!(m->models[i].name = sq_strdup(models[i]))) {
      sq_metrics_free(m);
      return NULL;
    }
    m->nmodels = i + 1;
  }
  return m;
}

void sq_metrics_free(sq_metrics_t *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nmodels; i++) free(m->models[i].name);
  for (size_t d = 0; d < m->ndevices; d++) {
    free(m->devices[d].name);
    pthread_mutex_destroy(&m->devices[d].mu);
  }
  free(m->models);
  free(m->devices);
  free(m->queued);
  free(m->delayed);
  if (m->state_mu_ready) pthread_mutex_destroy(&m->state_mu);
  free(m);
}

/* ---- observations ---- */

void sq_metrics_job_acked(sq_metrics_t *m, size_t model, sq_outcome_t outcome,
                          const sq_timings_t *t, int err) {
  if (!m || model >= m->nmodels || outcome >= SQ_OUTCOME_N) return;
  model_stats_t *s = &m->models[model];
  add(&s->outcome[outcome], 1);
  if (err && (outcome == SQ_OUTCOME_FAILED || outcome == SQ_OUTCOME_RETRIED)) {
    int num = -err;
    add(&s->codes[num > 0 && num < NCODES ? num : -SQ_EINTERNAL], 1);
  }
  observe_us(&s->h[H_QUEUE_WAIT], t->queue_wait_us);
  observe_us(&s->h[H_DECODE], t->decode_us);
  observe_us(&s->h[H_POSTPROCESS], t->postprocess_us);
  if (outcome == SQ_OUTCOME_OK || outcome == SQ_OUTCOME_FAILED)
    observe_us(&s->h[H_E2E], t->queue_wait_us + t->total_us);
}

void sq_metrics_jobs_dropped(sq_metrics_t *m, size_t model, uint64_t n) {
  if (m && model < m->nmodels) add(&m->models[model].outcome[SQ_OUTCOME_DROPPED], n);
}

void sq_metrics_jobs_released(sq_metrics_t *m, size_t model, uint64_t n) {
  if (m && model < m->nmodels) add(&m->models[model].outcome[SQ_OUTCOME_RELEASED], n);
}

void sq_metrics_run_begin(sq_metrics_t *m, size_t model) {
  if (!m || model >= m->nmodels) return;
  device_stats_t *d = &m->devices[m->models[model].device];
  pthread_mutex_lock(&d->mu);
  if (d->running++ == 0) d->since_us = sq_clock_mono_us();
  pthread_mutex_unlock(&d->mu);
}

void sq_metrics_run_end(sq_metrics_t *m, size_t model, uint32_t samples, uint64_t run_us) {
  if (!m || model >= m->nmodels) return;
  model_stats_t *s = &m->models[model];
  device_stats_t *d = &m->devices[s->device];
  pthread_mutex_lock(&d->mu);
  if (d->running > 0 && --d->running == 0) d->busy_us += sq_clock_mono_us() - d->since_us;
  pthread_mutex_unlock(&d->mu);
  if (samples == 0) return; /* nothing ran (every job of the batch had failed before) */
  add(&s->infer_count, samples);
  add(&s->infer_exec, 1);
  observe_us(&s->h[H_INFERENCE], run_us);
  observe(&s->h[H_BATCH], size_bounds, NSIZE, (double)samples, samples);
}

/* ---- state (loop thread) ---- */

void sq_metrics_set_worker(sq_metrics_t *m, const sq_metrics_worker_t *w) {
  if (!m || !w) return;
  pthread_mutex_lock(&m->state_mu);
  m->worker = *w;
  pthread_mutex_unlock(&m->state_mu);
}

void sq_metrics_set_model(sq_metrics_t *m, size_t model, uint64_t in_flight, uint64_t batcher) {
  if (!m || model >= m->nmodels) return;
  pthread_mutex_lock(&m->state_mu);
  m->models[model].in_flight = in_flight;
  m->models[model].batcher = batcher;
  pthread_mutex_unlock(&m->state_mu);
}

void sq_metrics_set_model_stats(sq_metrics_t *m, size_t model, const sq_model_stats_t *st) {
  if (!m || model >= m->nmodels || !st) return;
  pthread_mutex_lock(&m->state_mu);
  m->models[model].mstats = *st;
  pthread_mutex_unlock(&m->state_mu);
  /* The backend says whether it has device memory (a total is reported), not the device name. */
  if (!st->device_total) return;
  device_stats_t *d = &m->devices[m->models[model].device];
  atomic_store_explicit(&d->mem_used, st->device_total - st->device_free, memory_order_relaxed);
  atomic_store_explicit(&d->mem_total, st->device_total, memory_order_relaxed);
  atomic_store_explicit(&d->mem_known, 1, memory_order_release);
}

void sq_metrics_set_depth(sq_metrics_t *m, const sq_queue_depth_t *d) {
  if (!m || !d || d->nmodels != m->nmodels) return;
  pthread_mutex_lock(&m->state_mu);
  for (size_t i = 0; i < m->nmodels; i++) {
    m->queued[i] = d->queued[i];
    m->delayed[i] = d->delayed[i];
  }
  m->dead = d->dead;
  m->depth_known = 1;
  pthread_mutex_unlock(&m->state_mu);
}

void sq_metrics_print_markdown(FILE *out) {
  static const char *const labels[FAM_N] = {
#define SQ_X_LABELS(id, name, type, labels, help) labels,
      SQ_METRIC_FAMILIES(SQ_X_LABELS)
#undef SQ_X_LABELS
  };
  fprintf(out, "| metric | type | labels | meaning |\n|---|---|---|---|\n");
  for (int f = 0; f < FAM_N; f++)
    fprintf(out, "| `%s` | %s | %s | %s |\n", families[f].name, families[f].type,
            labels[f][0] ? labels[f] : "—", families[f].help);
}

/* ---- rendering ---- */

typedef struct {
  char *buf;
  size_t cap, len; /* len: what the whole text needs, even past cap */
} out_t;

static void emit(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(out_t *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = o->len < o->cap ? o->cap - o->len : 0;
  int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) o->len += (size_t)n;
}

static void header(out_t *o, int fam) {
  emit(o, "# HELP %s %s\n# TYPE %s %s\n", families[fam].name, families[fam].help,
       families[fam].name, families[fam].type);
}

/* A label value in the exposition format's escaping (\\, \", \n). Names in segq use the id
 * alphabet, so this is defence, not the common case. */
static const char *esc(const char *s, char *buf, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; s[i] && j + 3 < cap; i++) {
    if (s[i] == '\\' || s[i] == '"')
      buf[j++] = '\\', buf[j++] = s[i];
    else if (s[i] == '\n')
      buf[j++] = '\\', buf[j++] = 'n';
    else
      buf[j++] = s[i];
  }
  buf[j] = '\0';
  return buf;
}

static void render_histo(out_t *o, const char *fname, const char *model, const histo_t *h,
                         const double *bounds, size_t nb, double sum_scale) {
  char e[200];
  esc(model, e, sizeof e);
  uint64_t cum = 0;
  for (size_t i = 0; i < nb; i++) {
    cum += get(&h->bucket[i]);
    emit(o, "%s_bucket{model=\"%s\",le=\"%g\"} %" PRIu64 "\n", fname, e, bounds[i], cum);
  }
  /* +Inf is the count itself, so the two always agree whatever the observers did meanwhile. */
  uint64_t count = get(&h->count);
  emit(o, "%s_bucket{model=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", fname, e, count > cum ? count : cum);
  emit(o, "%s_sum{model=\"%s\"} %.6f\n", fname, e, (double)get(&h->sum) * sum_scale);
  emit(o, "%s_count{model=\"%s\"} %" PRIu64 "\n", fname, e, count > cum ? count : cum);
}

size_t sq_metrics_render(const sq_metrics_t *m_const, char *buf, size_t cap) {
  sq_metrics_t *m = (sq_metrics_t *)m_const; /* only for the mutex */
  out_t o = {buf, cap, 0};
  if (cap) buf[0] = '\0';
  pthread_mutex_lock(&m->state_mu);
  static const char *const outcomes[SQ_OUTCOME_N] = {"ok",       "failed",  "retried",
                                                     "canceled", "dropped", "released"};
  char e[200];
  const sq_metrics_worker_t *w = &m->worker;

  header(&o, FAM_JOBS);
  for (size_t i = 0; i < m->nmodels; i++)
    for (int k = 0; k < SQ_OUTCOME_N; k++)
      emit(&o, "segq_jobs_total{model=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
           esc(m->models[i].name, e, sizeof e), outcomes[k], get(&m->models[i].outcome[k]));
  header(&o, FAM_JOB_ERRORS);
  for (size_t i = 0; i < m->nmodels; i++)
    for (int c = 1; c < NCODES; c++) {
      uint64_t v = get(&m->models[i].codes[c]);
      if (v)
        emit(&o, "segq_job_errors_total{model=\"%s\",code=\"%s\"} %" PRIu64 "\n",
             esc(m->models[i].name, e, sizeof e), sq_error_name(-c), v);
    }
  header(&o, FAM_INFER_COUNT);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_inference_count_total{model=\"%s\"} %" PRIu64 "\n",
         esc(m->models[i].name, e, sizeof e), get(&m->models[i].infer_count));
  header(&o, FAM_INFER_EXEC);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_inference_exec_count_total{model=\"%s\"} %" PRIu64 "\n",
         esc(m->models[i].name, e, sizeof e), get(&m->models[i].infer_exec));
  header(&o, FAM_DEVICE_BUSY);
  uint64_t now = sq_clock_mono_us();
  for (size_t d = 0; d < m->ndevices; d++) {
    device_stats_t *dev = &m->devices[d];
    pthread_mutex_lock(&dev->mu);
    uint64_t busy = dev->busy_us + (dev->running ? now - dev->since_us : 0);
    pthread_mutex_unlock(&dev->mu);
    emit(&o, "segq_device_busy_seconds_total{device=\"%s\"} %.6f\n", esc(dev->name, e, sizeof e),
         (double)busy / 1e6);
  }
  header(&o, FAM_REDIS_RECONNECTS);
  emit(&o, "segq_redis_reconnects_total{conn=\"command\"} %" PRIu64 "\n",
       w->command_connects > 1 ? w->command_connects - 1 : 0);
  emit(&o, "segq_redis_reconnects_total{conn=\"blocking\"} %" PRIu64 "\n",
       w->blocking_connects > 1 ? w->blocking_connects - 1 : 0);
  emit(&o, "segq_redis_reconnects_total{conn=\"lease\"} %" PRIu64 "\n",
       w->lease_connects > 1 ? w->lease_connects - 1 : 0);
  header(&o, FAM_SWEPT);
  emit(&o, "segq_sweeper_recovered_jobs_total %" PRIu64 "\n", w->swept_jobs);
  header(&o, FAM_BATCHES);
  emit(&o, "segq_batches_total %" PRIu64 "\n", w->batches);

  header(&o, FAM_IN_FLIGHT);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_jobs_in_flight{model=\"%s\"} %" PRIu64 "\n", esc(m->models[i].name, e, sizeof e),
         m->models[i].in_flight);
  header(&o, FAM_HELD);
  emit(&o, "segq_jobs_held %" PRIu64 "\n", w->held);
  header(&o, FAM_BATCHER);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_batcher_jobs{model=\"%s\"} %" PRIu64 "\n", esc(m->models[i].name, e, sizeof e),
         m->models[i].batcher);
  /* Redis facts are only shown once read: a 0 before the first read would be a lie. */
  if (m->depth_known) {
    header(&o, FAM_QUEUE_DEPTH);
    for (size_t i = 0; i < m->nmodels; i++)
      emit(&o, "segq_queue_depth{model=\"%s\"} %" PRIu64 "\n", esc(m->models[i].name, e, sizeof e),
           m->queued[i]);
    header(&o, FAM_QUEUE_DELAYED);
    for (size_t i = 0; i < m->nmodels; i++)
      emit(&o, "segq_queue_delayed{model=\"%s\"} %" PRIu64 "\n",
           esc(m->models[i].name, e, sizeof e), m->delayed[i]);
    header(&o, FAM_DEAD_LETTERS);
    emit(&o, "segq_dead_letters %" PRIu64 "\n", m->dead);
  }
  header(&o, FAM_REDIS_UP);
  emit(&o, "segq_redis_connected{conn=\"command\"} %d\n", w->command_ready ? 1 : 0);
  emit(&o, "segq_redis_connected{conn=\"blocking\"} %d\n", w->blocking_ready ? 1 : 0);
  emit(&o, "segq_redis_connected{conn=\"lease\"} %d\n", w->lease_ready ? 1 : 0);
  header(&o, FAM_LEASE);
  emit(&o, "segq_lease_ok %d\n", w->lease_ok ? 1 : 0);
  header(&o, FAM_DRAINING);
  emit(&o, "segq_draining %d\n", w->draining ? 1 : 0);
  header(&o, FAM_READY);
  emit(&o, "segq_ready %d\n", w->ready ? 1 : 0);
  header(&o, FAM_DEVICE_FAILED);
  emit(&o, "segq_device_failed %d\n", w->device_failed ? 1 : 0);
  header(&o, FAM_EFFECTIVE_MAX_BATCH);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_model_effective_max_batch{model=\"%s\"} %u\n",
         esc(m->models[i].name, e, sizeof e), m->models[i].mstats.effective_max_batch);
  header(&o, FAM_OOM_SPLITS);
  for (size_t i = 0; i < m->nmodels; i++)
    emit(&o, "segq_model_oom_splits_total{model=\"%s\"} %" PRIu64 "\n",
         esc(m->models[i].name, e, sizeof e), m->models[i].mstats.oom_splits);
  int any_device_memory = 0;
  for (size_t i = 0; i < m->nmodels; i++) any_device_memory |= m->models[i].mstats.device_total > 0;
  if (any_device_memory) { /* absent on a CPU-only worker rather than zeros */
    header(&o, FAM_DEVICE_MEMORY);
    for (size_t i = 0; i < m->nmodels; i++) {
      const sq_model_stats_t *st = &m->models[i].mstats;
      if (!st->device_total) continue;
      esc(m->models[i].name, e, sizeof e);
      emit(&o, "segq_device_memory_bytes{model=\"%s\",kind=\"free\"} %" PRIu64 "\n", e,
           st->device_free);
      emit(&o, "segq_device_memory_bytes{model=\"%s\",kind=\"total\"} %" PRIu64 "\n", e,
           st->device_total);
    }
  }
  int any_gpu = 0;
  for (size_t d = 0; d < m->ndevices; d++)
    any_gpu |= atomic_load_explicit(&m->devices[d].mem_known, memory_order_acquire);
  if (any_gpu) {
    for (int f = FAM_GPU_MEM_USED; f <= FAM_GPU_MEM_TOTAL; f++) {
      header(&o, f);
      for (size_t d = 0; d < m->ndevices; d++) {
        const device_stats_t *dev = &m->devices[d];
        if (!atomic_load_explicit(&dev->mem_known, memory_order_acquire)) continue;
        emit(&o, "%s{device=\"%s\"} %" PRIu64 "\n", families[f].name, esc(dev->name, e, sizeof e),
             get(f == FAM_GPU_MEM_USED ? &dev->mem_used : &dev->mem_total));
      }
    }
  }
  header(&o, FAM_BUILD);
  emit(&o, "segq_build_info{version=\"%s\"} 1\n", esc(sq_worker_version(), e, sizeof e));
  header(&o, FAM_START_TIME);
  emit(&o, "process_start_time_seconds %.3f\n", m->start_time_s);
  header(&o, FAM_UPTIME);
  emit(&o, "segq_uptime_seconds %.1f\n", (double)(now - m->start_mono_us) / 1e6);

  for (int k = 0; k < H_N; k++) {
    int f = histo_family[k];
    header(&o, f);
    for (size_t i = 0; i < m->nmodels; i++) {
      if (k == H_BATCH)
        render_histo(&o, families[f].name, m->models[i].name, &m->models[i].h[k], size_bounds,
                     NSIZE, 1.0);
      else
        render_histo(&o, families[f].name, m->models[i].name, &m->models[i].h[k], time_bounds,
                     NTIME, 1e-6);
    }
  }
  pthread_mutex_unlock(&m->state_mu);
  return o.len;
}
