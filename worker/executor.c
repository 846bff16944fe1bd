/* worker/executor: the executor pool. Each model context (a CUDA stream on a device, or a CPU
 * context) has one thread: it first warms its context up (every batch size it will run: plans
 * bound, algorithms chosen, graphs captured), then takes prepared batches from its model's
 * queue, whichever context is free first, runs them and hands them back to the loop.
 * Threads: executor_main on the executor threads; sq_executor_push on the loop thread;
 * start/stop on the loop thread before the loop runs / after it ended. */
#include <stdio.h>
#include <stdlib.h>

#include "worker/worker_internal.h"

typedef struct {
  model_slot_t *ms;
  int ctx;
} executor_arg_t;

/* Hands a finished batch to the loop (NULL: only a warm-up report). */
static void report(sq_worker_t *w, wbatch_t *b) {
  pthread_mutex_lock(&w->done_mu);
  if (b) {
    if (w->done_tail)
      w->done_tail->next = b;
    else
      w->done_head = b;
    w->done_tail = b;
  }
  /* Coalesces: the loop drains the whole done list and reads the warm-up state each time. A
   * warm-up may still end while the loop is closing (a signal at start-up): then nobody waits. */
  if (!w->done_closed) uv_async_send(&w->done_async);
  pthread_mutex_unlock(&w->done_mu);
}

static void warm_up(model_slot_t *ms, int ctx) {
  sq_worker_t *w = ms->w;
  sq_error_t err = {0};
  int rc = sq_model_warmup(ms->model, ctx, &err);
  if (rc) {
    pthread_mutex_lock(&w->done_mu);
    if (!atomic_load(&w->warm_failed)) {
      snprintf(w->warm_msg, sizeof w->warm_msg, "model %.60s context %d: %.160s", ms->name, ctx,
               err.msg);
      atomic_store(&w->warm_failed, rc);
    }
    pthread_mutex_unlock(&w->done_mu);
  }
  atomic_fetch_add(&w->warm_contexts, 1);
  report(w, NULL);
}

static void *executor_main(void *arg) {
  executor_arg_t a = *(executor_arg_t *)arg;
  free(arg);
  model_slot_t *ms = a.ms;
  warm_up(ms, a.ctx);
  for (;;) {
    pthread_mutex_lock(&ms->mu);
    while (!ms->head && !ms->stop) pthread_cond_wait(&ms->cond, &ms->mu);
    wbatch_t *b = ms->head;
    if (b) {
      ms->head = b->next;
      if (!ms->head) ms->tail = NULL;
      b->next = NULL;
    }
    pthread_mutex_unlock(&ms->mu);
    if (!b) break; /* stop and nothing queued */
    sq_worker_t *w = ms->w;
    size_t mi = (size_t)(ms - w->models);
    uint32_t samples = 0; /* what the model is given: jobs that did not fail before the run */
    for (size_t i = 0; i < b->n; i++) samples += !b->jobs[i]->err && b->jobs[i]->sample;
    uint64_t t0 = sq_clock_mono_us();
    sq_metrics_run_begin(w->metrics, mi);
    sq_wbatch_run(b, a.ctx);
    sq_metrics_run_end(w->metrics, mi, samples, sq_clock_mono_us() - t0);
    report(w, b);
  }
  return NULL;
}

void sq_executor_push(model_slot_t *ms, wbatch_t *b) {
  pthread_mutex_lock(&ms->mu);
  b->next = NULL;
  if (ms->tail)
    ms->tail->next = b;
  else
    ms->head = b;
  ms->tail = b;
  pthread_cond_signal(&ms->cond);
  pthread_mutex_unlock(&ms->mu);
}

int sq_executor_start(sq_worker_t *w, model_slot_t *ms, sq_error_t *err) {
  pthread_mutex_init(&ms->mu, NULL);
  pthread_cond_init(&ms->cond, NULL);
  uint32_t nctx = ms->info.contexts ? ms->info.contexts : 1;
  ms->threads = calloc(nctx, sizeof(pthread_t));
  if (!ms->threads) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  w->total_contexts += nctx;
  for (uint32_t c = 0; c < nctx; c++) {
    executor_arg_t *a = malloc(sizeof(*a));
    if (!a) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    a->ms = ms;
    a->ctx = (int)c;
    if (pthread_create(&ms->threads[c], NULL, executor_main, a) != 0) {
      free(a);
      return sq_error_set(err, SQ_EINTERNAL, "cannot start executor thread for %s", ms->name);
    }
    ms->nthreads++;
  }
  return 0;
}

void sq_executor_stop(model_slot_t *ms) {
  if (!ms->threads) return;
  pthread_mutex_lock(&ms->mu);
  ms->stop = 1;
  pthread_cond_broadcast(&ms->cond);
  pthread_mutex_unlock(&ms->mu);
  for (uint32_t c = 0; c < ms->nthreads; c++) pthread_join(ms->threads[c], NULL);
  free(ms->threads);
  ms->threads = NULL;
  pthread_mutex_destroy(&ms->mu);
  pthread_cond_destroy(&ms->cond);
}
