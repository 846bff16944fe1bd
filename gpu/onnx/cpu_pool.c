/* cpu_pool.c: the CPU backend's thread pool. One pool per backend context, so contexts on
 * different executor threads never share workers; parallel_for is not reentrant (kernels do
 * not nest it). Workers sleep on a condition variable between calls: no busy waiting. */
#include <stdatomic.h>
#include <stdlib.h>

#include "engine_internal.h"

struct sq_cpu {
  int nthreads; /* including the caller */
  pthread_t *threads;
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  uint64_t generation; /* bumped per parallel_for call */
  int busy;            /* workers still inside the current call */
  bool stop;
  sq_range_fn fn;
  void *arg;
  int64_t n, chunk;
  atomic_llong next;
  void *scratch;
  size_t scratch_size;
};

static void run_chunks(sq_cpu_t *c) {
  for (;;) {
    int64_t b = atomic_fetch_add(&c->next, c->chunk);
    if (b >= c->n) return;
    int64_t e = b + c->chunk < c->n ? b + c->chunk : c->n;
    c->fn(c->arg, b, e);
  }
}

static void *worker(void *p) {
  sq_cpu_t *c = p;
  uint64_t seen = 0;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (!c->stop && c->generation == seen) pthread_cond_wait(&c->work_cv, &c->mu);
    if (c->stop) break;
    seen = c->generation;
    pthread_mutex_unlock(&c->mu);
    run_chunks(c);
    pthread_mutex_lock(&c->mu);
    if (--c->busy == 0) pthread_cond_signal(&c->done_cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

sq_cpu_t *sq_cpu_new(int threads) {
  sq_cpu_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->nthreads = threads < 1 ? 1 : threads;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->work_cv, NULL);
  pthread_cond_init(&c->done_cv, NULL);
  if (c->nthreads > 1) {
    c->threads = calloc((size_t)c->nthreads, sizeof *c->threads);
    if (!c->threads) {
      sq_cpu_free(c);
      return NULL;
    }
    for (int i = 0; i < c->nthreads - 1; i++)
      if (pthread_create(&c->threads[i], NULL, worker, c) != 0) {
        c->nthreads = i + 1; /* run with what started */
        break;
      }
  }
  return c;
}

void sq_cpu_free(sq_cpu_t *c) {
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  c->stop = true;
  pthread_cond_broadcast(&c->work_cv);
  pthread_mutex_unlock(&c->mu);
  if (c->threads)
    for (int i = 0; i < c->nthreads - 1; i++) pthread_join(c->threads[i], NULL);
  free(c->threads);
  free(c->scratch);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->work_cv);
  pthread_cond_destroy(&c->done_cv);
  free(c);
}

int sq_cpu_threads(const sq_cpu_t *c) {
  return c->nthreads;
}

void sq_cpu_parallel_for(sq_cpu_t *c, int64_t n, int64_t grain, sq_range_fn fn, void *arg) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (c->nthreads <= 1 || n <= grain) {
    fn(arg, 0, n);
    return;
  }
  int64_t chunk = (n + c->nthreads * 4 - 1) / (c->nthreads * 4);
  if (chunk < grain) chunk = grain;
  pthread_mutex_lock(&c->mu);
  c->fn = fn;
  c->arg = arg;
  c->n = n;
  c->chunk = chunk;
  atomic_store(&c->next, 0);
  c->busy = c->nthreads - 1;
  c->generation++;
  pthread_cond_broadcast(&c->work_cv);
  pthread_mutex_unlock(&c->mu);
  run_chunks(c);
  pthread_mutex_lock(&c->mu);
  while (c->busy > 0) pthread_cond_wait(&c->done_cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

void *sq_cpu_scratch(sq_cpu_t *c, size_t bytes) {
  if (bytes > c->scratch_size) {
    free(c->scratch);
    c->scratch = NULL;
    c->scratch_size = 0;
    if (posix_memalign(&c->scratch, 64, bytes)) return NULL;
    c->scratch_size = bytes;
  }
  return c->scratch;
}
