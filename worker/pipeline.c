/* worker/pipeline: the batch pipeline. Claimed jobs enter per-model batchers; a due batch is
 * prepared on the work pool (decode, preprocess), run on one of its model's executor contexts
 * (executor.c), finished on the work pool (postprocess, result encode), and handed to worker.c
 * for its ack. Ensemble members run as member records in their own model's batches. A device
 * error (SQ_EDEVICE) is not the job's fault: such jobs get no result and are handed back to
 * their queues, and the worker stops claiming, hands back everything it has not run, and exits.
 * Threads: the loop thread, except the uv_queue_work callbacks (work pool), which only touch
 * the job/batch they were handed. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "worker/worker_internal.h"

static void model_flush(model_slot_t *ms);
static void on_batch_timer(uv_timer_t *t);
static void batch_start(sq_worker_t *w, model_slot_t *ms, wjob_t **jobs, size_t n);

/* ---- progress of running batches (loop thread) ---- */

static void on_progress_timer(uv_timer_t *t);

static void running_add(sq_worker_t *w, wbatch_t *b) {
  b->run_prev = NULL;
  b->run_next = w->running;
  if (w->running) w->running->run_prev = b;
  w->running = b;
  if (!uv_is_active((uv_handle_t *)&w->progress_timer) && !w->stopping)
    uv_timer_start(&w->progress_timer, on_progress_timer, w->cfg->progress_interval_ms,
                   w->cfg->progress_interval_ms);
}

static void running_remove(sq_worker_t *w, wbatch_t *b) {
  if (b->run_prev)
    b->run_prev->run_next = b->run_next;
  else if (w->running == b)
    w->running = b->run_next;
  else
    return; /* not in the list */
  if (b->run_next) b->run_next->run_prev = b->run_prev;
  b->run_prev = b->run_next = NULL;
  if (!w->running) uv_timer_stop(&w->progress_timer);
}

/* Every --progress-interval-ms while batches run: one progress call for the jobs whose tiles
 * moved since the last report (jobs of one step have nothing to report). */
static void on_progress_timer(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  size_t cap = 0, n = 0;
  for (wbatch_t *b = w->running; b; b = b->run_next) cap += b->n;
  sq_progress_item_t *items = cap ? calloc(cap, sizeof(*items)) : NULL;
  if (!items) return;
  for (wbatch_t *b = w->running; b; b = b->run_next)
    for (size_t i = 0; i < b->n; i++) {
      wjob_t *j = b->jobs[i];
      uint32_t total = atomic_load(&j->steps_total), done = atomic_load(&j->steps_done);
      if (j->parent || total < 2 || done == j->steps_reported) continue;
      items[n].id = j->c.id;
      items[n].steps_done = done;
      items[n].steps_total = total;
      n++;
    }
  if (n && sq_worker_progress(w, items, n)) {
    for (wbatch_t *b = w->running; b; b = b->run_next)
      for (size_t i = 0; i < b->n; i++)
        b->jobs[i]->steps_reported = atomic_load(&b->jobs[i]->steps_done);
  }
  free(items);
}

/* ---- the work pool, in slices ----
 * A stage's per-job work (prepare, finish) goes to the pool in at most `pool threads` requests
 * per batch, each doing a slice of the jobs, rather than one request per job: for cheap jobs the
 * hand-off to a pool thread and back (a futex wake each way, a uv_async) costs more than the
 * job's own work (a null job), and with as many slices as threads the pool is as busy as before. */
typedef struct {
  uv_work_t work;
  void (*fn)(wjob_t *j);    /* work pool: the per-job work */
  void (*after)(wjob_t *j); /* loop thread: the per-job completion */
  size_t n;
  wjob_t *jobs[];
} slice_t;

static void slice_work(uv_work_t *req) {
  slice_t *sl = req->data;
  for (size_t i = 0; i < sl->n; i++) sl->fn(sl->jobs[i]);
}

static void slice_after(uv_work_t *req, int status) {
  slice_t *sl = req->data;
  (void)status; /* never canceled */
  for (size_t i = 0; i < sl->n; i++) sl->after(sl->jobs[i]);
  free(sl);
}

static size_t pool_threads(void) {
  static size_t n;
  if (!n) {
    const char *env = getenv("UV_THREADPOOL_SIZE"); /* set by main from --threads */
    long v = env ? strtol(env, NULL, 10) : 0;
    n = v > 0 ? (size_t)v : 4; /* libuv's default */
  }
  return n;
}

/* Runs fn then after for each of jobs[0..n) on the pool, in up to pool_threads() slices. */
static void pool_run(sq_worker_t *w, wjob_t **jobs, size_t n, void (*fn)(wjob_t *),
                     void (*after)(wjob_t *)) {
  size_t k = pool_threads() < n ? pool_threads() : n;
  for (size_t s = 0, lo = 0; s < k; s++) {
    size_t hi = n * (s + 1) / k, cnt = hi - lo;
    slice_t *sl = malloc(sizeof(*sl) + cnt * sizeof(wjob_t *));
    if (sl) {
      sl->work.data = sl;
      sl->fn = fn;
      sl->after = after;
      sl->n = cnt;
      memcpy(sl->jobs, jobs + lo, cnt * sizeof(wjob_t *));
    }
    if (!sl || uv_queue_work(&w->loop, &sl->work, slice_work, slice_after) != 0) {
      /* No memory for the request (or no loop): do the work inline rather than lose the jobs. */
      free(sl);
      for (size_t i = lo; i < hi; i++) {
        fn(jobs[i]);
        after(jobs[i]);
      }
    }
    lo = hi;
  }
}

/* ---- batches ---- */

void sq_pipeline_batch_release(sq_worker_t *w, wbatch_t *b) {
  w->held -= (uint32_t)b->n;
  if (b->ms) b->ms->held -= (uint32_t)b->n;
  for (size_t i = 0; i < b->n; i++) sq_wjob_free(b->jobs[i]);
  free(b->jobs);
  free(b);
  sq_worker_released(w);
}

/* One of b's jobs is done (finished, or a member record handed to its parent); the last one
 * sends the batch to the ack (a batch of member records only has nothing to ack). */
static void batch_step(wbatch_t *b) {
  sq_worker_t *w = b->w;
  if (--b->pending > 0) return;
  w->batches++;
  sq_log_debug("worker", "batch done", "model=%s size=%zu ms=%.3f", b->ms ? b->ms->name : "-", b->n,
               (double)(sq_clock_mono_us() - b->formed_us) / 1000.0);
  size_t jobs = 0;
  for (size_t i = 0; i < b->n; i++) jobs += !b->jobs[i]->parent;
  if (jobs == 0) {
    sq_pipeline_batch_release(w, b);
    return;
  }
  sq_worker_ack_batch(w, b);
}

static void finish_after(wjob_t *j) {
  wbatch_t *b = j->batch;
  sq_worker_t *w = b->w;
  if (!j->result && !j->release) {
    /* Never happens (encode has a fallback); the sweeper would recover it. */
    sq_log_error("worker", "job has no result", "id=%s", j->c.id);
  }
  if (j->release) {
    w->jobs_released++;
    if (j->ms) sq_metrics_jobs_released(w->metrics, (size_t)(j->ms - w->models), 1);
    sq_log_info("worker", "job handed back (device error)", "id=%s model=%s attempt=%u", j->c.id,
                j->c.model, j->c.attempt);
  } else if (j->err) {
    w->jobs_failed++;
    char q[256];
    sq_log_info("worker", "job failed", "id=%s model=%s code=%s attempt=%u error=\"%.200s\"",
                j->c.id, j->c.model, sq_error_name(j->err), j->c.attempt,
                sq_log_escape(j->msg, q, sizeof q));
  } else {
    w->jobs_ok++;
  }
  batch_step(b);
}

static void job_finish_start(sq_worker_t *w, wjob_t *j) {
  pool_run(w, &j, 1, sq_wjob_finish, finish_after);
}

/* The batch's runs are over (or it had nothing to run). An ensemble member record goes back to
 * its parent; an ensemble job waits for its members' runs (the last one starts its finish). */
static void device_failed(sq_worker_t *w, const char *msg);

static void batch_finish(wbatch_t *b) {
  sq_worker_t *w = b->w;
  for (size_t i = 0; i < b->n; i++)
    if (b->jobs[i]->err == SQ_EDEVICE) device_failed(w, b->jobs[i]->msg);
  b->pending = b->n + 1; /* + 1: the batch cannot complete while this loop walks it */
  /* The jobs whose finish can start now go to the pool together, in slices. */
  wjob_t **ready = malloc(b->n * sizeof(*ready));
  size_t nready = 0;
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (j->parent) {
      if (sq_wjob_member_done(j)) job_finish_start(w, j->parent);
      batch_step(b);
      continue;
    }
    if (j->members_left > 0 && --j->members_left > 0) continue;
    if (ready)
      ready[nready++] = j;
    else
      job_finish_start(w, j);
  }
  if (nready) pool_run(w, ready, nready, sq_wjob_finish, finish_after);
  free(ready);
  batch_step(b);
}

/* Loop thread, between prepare and run: each prepared ensemble job of b gets one member record
 * per other member, entered into that member's batcher with the sample prepared for it. */
static void ensemble_spawn(sq_worker_t *w, wbatch_t *b) {
  int spawned = 0;
  uint64_t now_us = sq_clock_mono_us();
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (!j->ens_n || j->err || !j->sample) continue;
    j->members_left = 1; /* its own run */
    for (uint32_t k = 0; k < j->ens_n; k++) {
      if (k == j->ens_own || !j->ens_sample[k]) continue;
      wjob_t *m = calloc(1, sizeof(*m));
      if (m) {
        m->c.id = sq_strdup(j->c.id);
        m->c.model = sq_strdup(j->ens_ms[k]->name);
      }
      if (!m || !m->c.id || !m->c.model) {
        sq_wjob_free(m);
        if (!j->err) {
          j->err = SQ_ENOMEM;
          snprintf(j->msg, sizeof j->msg, "out of memory (ensemble member)");
        }
        continue; /* its sample is freed with j */
      }
      m->parent = j;
      m->member = k;
      m->ms = j->ens_ms[k];
      m->worker_id = j->worker_id;
      m->claimed_us = j->claimed_us;
      m->sample = j->ens_sample[k];
      j->ens_sample[k] = NULL;
      j->members_left++;
      w->held++;
      m->ms->held++;
      spawned = 1;
      if (sq_batcher_push(m->ms->batcher, m, now_us) != 0) batch_start(w, m->ms, &m, 1);
    }
  }
  /* Due batches start now; the others' timers are re-armed. */
  if (spawned)
    for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
}

static void prepare_after(wjob_t *j) {
  wbatch_t *b = j->batch;
  if (--b->pending > 0) return;
  ensemble_spawn(b->w, b);
  size_t valid = 0;
  for (size_t i = 0; i < b->n; i++) valid += !b->jobs[i]->err && b->jobs[i]->sample;
  if (valid > 0 && b->ms) {
    running_add(b->w, b);
    sq_executor_push(b->ms, b);
  } else
    batch_finish(b);
}

static void batch_start(sq_worker_t *w, model_slot_t *ms, wjob_t **jobs, size_t n) {
  wbatch_t *b = calloc(1, sizeof(*b));
  wjob_t **copy = malloc(n * sizeof(*copy));
  if (!b || !copy) {
    /* Out of memory: drop these jobs; the session hands them back (reconcile). */
    sq_log_error("worker", "out of memory forming a batch; jobs handed back", "n=%zu", n);
    free(b);
    free(copy);
    for (size_t i = 0; i < n; i++) {
      /* A member record is not a job: its parent must still hear of it, or never finish. */
      if (jobs[i]->parent) {
        jobs[i]->err = SQ_ENOMEM;
        snprintf(jobs[i]->msg, sizeof jobs[i]->msg, "out of memory forming a batch");
        if (sq_wjob_member_done(jobs[i])) job_finish_start(w, jobs[i]->parent);
      } else {
        sq_worker_forget(w, jobs[i]->c.id);
      }
      sq_wjob_free(jobs[i]);
    }
    w->held -= (uint32_t)n;
    if (ms) ms->held -= (uint32_t)n;
    sq_pipeline_dropped(w, ms, n);
    return;
  }
  memcpy(copy, jobs, n * sizeof(*copy));
  b->w = w;
  b->ms = ms;
  b->jobs = copy;
  b->n = n;
  b->formed_us = sq_clock_mono_us();
  b->pending = n;
  for (size_t i = 0; i < n; i++) {
    copy[i]->batch = b;
    copy[i]->batch_size = (uint32_t)n;
  }
  if (w->device_failed) {
    /* Not started, and never will be here: straight back to their queues. */
    for (size_t i = 0; i < n; i++)
      if (!copy[i]->err) {
        copy[i]->err = SQ_EDEVICE;
        snprintf(copy[i]->msg, sizeof copy[i]->msg, "not run: this worker's device failed");
      }
    batch_finish(b);
    return;
  }
  pool_run(w, copy, n, sq_wjob_prepare, prepare_after);
}

/* Pops every due batch of ms (all of them when draining) and re-arms its timer. */
static void model_flush(model_slot_t *ms) {
  sq_worker_t *w = ms->w;
  void **items = malloc(ms->max_batch * sizeof(void *));
  if (items) {
    size_t n;
    while ((n = sq_batcher_pop(ms->batcher, sq_clock_mono_us(), w->draining, items)) > 0)
      batch_start(w, ms, (wjob_t **)items, n);
    free(items);
  }
  if (w->stopping) return;
  uint64_t due = sq_batcher_due_us(ms->batcher);
  if (due == UINT64_MAX) {
    uv_timer_stop(&ms->timer);
    return;
  }
  uint64_t now = sq_clock_mono_us();
  uint64_t delay_ms = due > now ? (due - now + 999) / 1000 : 0;
  uv_timer_start(&ms->timer, on_batch_timer, delay_ms, 0);
}

static void on_batch_timer(uv_timer_t *t) {
  model_flush(t->data);
}

/* The whole worker goes: every model's jobs not yet run are handed back, the rest finish. */
static void device_failed(sq_worker_t *w, const char *msg) {
  if (w->device_failed) return;
  w->device_failed = 1;
  sq_log_error("worker", "device error: handing the jobs back and exiting",
               "exit_code=%d msg=\"%.200s\"", SQ_EXIT_DEVICE, msg);
  sq_worker_drain(w, SQ_EXIT_DEVICE, "device error");
}

void sq_pipeline_on_done(sq_worker_t *w) {
  pthread_mutex_lock(&w->done_mu);
  wbatch_t *b = w->done_head;
  w->done_head = w->done_tail = NULL;
  pthread_mutex_unlock(&w->done_mu);
  while (b) {
    wbatch_t *next = b->next;
    b->next = NULL;
    running_remove(w, b);
    batch_finish(b);
    b = next;
  }
  int failed = atomic_load(&w->warm_failed);
  if (failed && !w->ready_logged) {
    w->ready_logged = 1;
    pthread_mutex_lock(&w->done_mu);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", w->warm_msg);
    pthread_mutex_unlock(&w->done_mu);
    if (failed == SQ_EDEVICE) {
      device_failed(w, msg);
    } else {
      sq_log_error("worker", "warm-up failed; stopping", "code=%s msg=\"%s\"",
                   sq_error_name(failed), msg);
      sq_worker_drain(w, 1, "warm-up failed");
    }
  } else if (!w->ready_logged && sq_pipeline_warm(w)) {
    w->ready_logged = 1;
    sq_log_info("worker", "warm", "contexts=%u ms_since_start=%.1f", w->total_contexts,
                (double)(sq_clock_mono_us() - w->started_us) / 1000.0);
    sq_worker_released(w); /* claims start now */
  }
}

static void on_done_async(uv_async_t *a) {
  sq_pipeline_on_done(a->data);
}

void sq_pipeline_dispatch(sq_worker_t *w, sq_claimed_t *jobs, size_t n) {
  uint64_t now_ms = sq_clock_wall_ms(), now_us = sq_clock_mono_us();
  for (size_t i = 0; i < n; i++) {
    wjob_t *j = calloc(1, sizeof(*j));
    if (!j) {
      sq_log_error("worker", "out of memory; job handed back", "id=%s", jobs[i].id);
      sq_worker_forget(w, jobs[i].id);
      const model_slot_t *slot = NULL;
      for (size_t m = 0; m < w->nmodels; m++)
        if (strcmp(w->models[m].name, jobs[i].model) == 0) slot = &w->models[m];
      sq_pipeline_dropped(w, slot, 1);
      sq_claimed_free(&jobs[i]);
      continue;
    }
    j->c = jobs[i]; /* takes ownership of the members */
    j->worker_id = w->cfg->worker_id;
    j->claimed_us = now_us;
    j->slots = w->models;
    j->nslots = w->nmodels;
    j->t.queue_wait_us =
        now_ms > j->c.enqueued_ms && j->c.enqueued_ms ? (now_ms - j->c.enqueued_ms) * 1000 : 0;
    for (size_t m = 0; m < w->nmodels; m++)
      if (strcmp(w->models[m].name, j->c.model) == 0) j->ms = &w->models[m];
    w->held++;
    if (j->ms) j->ms->held++;
    if (!j->ms) {
      /* Not one of ours (the claim only serves our models, so this is a bug): fail it alone. */
      batch_start(w, NULL, &j, 1);
      continue;
    }
    if (sq_batcher_push(j->ms->batcher, j, now_us) != 0) {
      batch_start(w, j->ms, &j, 1);
    }
  }
  for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
}

void sq_pipeline_dropped(sq_worker_t *w, const model_slot_t *ms, uint64_t n) {
  w->jobs_dropped += n;
  if (ms) sq_metrics_jobs_dropped(w->metrics, (size_t)(ms - w->models), n);
}

/* ---- set-up and tear-down ---- */

int sq_pipeline_open(sq_worker_t *w, sq_error_t *err) {
  const sq_worker_config_t *cfg = w->cfg;
  w->models = calloc(cfg->nmodels, sizeof(*w->models));
  if (!w->models) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  for (size_t i = 0; i < cfg->nmodels; i++) {
    model_slot_t *ms = &w->models[i];
    ms->w = w;
    ms->name = cfg->model_names[i];
    sq_model_options_t mo = {.device = cfg->device,
                             .streams = cfg->streams,
                             .precision = strcmp(cfg->precision, "model") ? cfg->precision : NULL};
    ms->model = sq_model_open_with(ms->name, cfg->model_dir, &mo, err);
    if (!ms->model) return err && err->code ? err->code : SQ_EMODEL_LOAD;
    w->nmodels = i + 1;
    ms->info = *sq_model_info(ms->model);
    ms->max_batch = cfg->max_batch ? cfg->max_batch : ms->info.max_batch;
    if (ms->max_batch == 0) ms->max_batch = 1;
    ms->max_delay_us = cfg->max_delay_us ? cfg->max_delay_us : ms->info.max_delay_us;
    ms->batcher = sq_batcher_new(ms->max_batch, ms->max_delay_us);
    if (!ms->batcher) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_log_info("worker", "model loaded",
                "model=%s max_batch=%u max_delay_us=%" PRIu64
                " contexts=%u backend=%s devices=%u "
                "precision=%s",
                ms->name, ms->max_batch, ms->max_delay_us,
                ms->info.contexts ? ms->info.contexts : 1, ms->info.backend, ms->info.devices,
                ms->info.fp16 ? "fp16" : "fp32");
  }
  /* Executors only see batches once the loop runs, after this (through their queue's mutex). */
  const char **names = calloc(w->nmodels ? w->nmodels : 1, sizeof(char *));
  const char **devnames = calloc(w->nmodels ? w->nmodels : 1, sizeof(char *));
  if (names && devnames) {
    for (size_t i = 0; i < w->nmodels; i++) {
      names[i] = w->models[i].name;
      const char *backend = sq_model_info(w->models[i].model)->backend;
      devnames[i] = backend[0] ? backend : "cpu"; /* built-ins run on the host */
    }
    w->metrics = sq_metrics_new(names, devnames, w->nmodels);
    for (size_t i = 0; i < w->nmodels && w->metrics; i++) {
      sq_model_stats_t st = {0};
      sq_model_stats(w->models[i].model, &st);
      sq_metrics_set_model_stats(w->metrics, i, &st);
    }
  }
  free(names);
  free(devnames);
  if (!w->metrics) return sq_error_set(err, SQ_ENOMEM, "out of memory (metrics)");
  return 0;
}

void sq_pipeline_close(sq_worker_t *w) {
  for (size_t i = 0; i < w->nmodels; i++) {
    model_slot_t *ms = &w->models[i];
    sq_executor_stop(ms);
    sq_batcher_free(ms->batcher);
    sq_model_close(ms->model);
  }
  free(w->models);
  sq_metrics_free(w->metrics);
  w->metrics = NULL;
}

void sq_pipeline_flush(sq_worker_t *w) {
  for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
}

int sq_pipeline_loop_init(sq_worker_t *w, sq_error_t *err) {
  uv_async_init(&w->loop, &w->done_async, on_done_async);
  w->done_async.data = w;
  uv_timer_init(&w->loop, &w->progress_timer);
  w->progress_timer.data = w;
  for (size_t m = 0; m < w->nmodels; m++) {
    uv_timer_init(&w->loop, &w->models[m].timer);
    w->models[m].timer.data = &w->models[m];
  }
  /* The executors report through done_async (warm-up first): start them once it exists. */
  for (size_t m = 0; m < w->nmodels; m++) {
    int rc = sq_executor_start(w, &w->models[m], err);
    if (rc) return rc;
  }
  return 0;
}

void sq_pipeline_loop_close(sq_worker_t *w, uv_close_cb on_closed) {
  pthread_mutex_lock(&w->done_mu);
  w->done_closed = 1; /* executors stop sending before the handle goes */
  pthread_mutex_unlock(&w->done_mu);
  uv_close((uv_handle_t *)&w->done_async, on_closed);
  uv_close((uv_handle_t *)&w->progress_timer, on_closed);
  for (size_t m = 0; m < w->nmodels; m++) uv_close((uv_handle_t *)&w->models[m].timer, on_closed);
}

int sq_pipeline_warm(const sq_worker_t *w) {
  sq_worker_t *mw = (sq_worker_t *)w; /* atomics are read, not changed */
  return w->total_contexts > 0 && atomic_load(&mw->warm_contexts) >= w->total_contexts &&
         !atomic_load(&mw->warm_failed);
}
