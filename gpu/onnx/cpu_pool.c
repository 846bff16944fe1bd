/* cpu_pool.c: the CPU backend's parallel loops, on OpenMP: oneDNN (Debian's build) runs its
 * primitives on the calling thread's OpenMP team, so the reference kernels use the same team
 * and the engine has one thread runtime (no second pool competing with OpenMP's spinning
 * threads on a small machine). One sq_cpu_t per backend context: a thread count plus the
 * scratch buffer of its kernels; each executor thread gets its own OpenMP team. Never nested. */
#include <omp.h>
#include <stdlib.h>

#include "engine_internal.h"

struct sq_cpu {
  int nthreads; /* the most threads parallel_for uses (1: the caller alone) */
  void *scratch;
  size_t scratch_size;
};

sq_cpu_t *sq_cpu_new(int threads) {
  sq_cpu_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->nthreads = threads < 1 ? 1 : threads;
  return c;
}

void sq_cpu_free(sq_cpu_t *c) {
  if (!c) return;
  free(c->scratch);
  free(c);
}

int sq_cpu_threads(const sq_cpu_t *c) {
  return c->nthreads;
}

void sq_cpu_parallel_for(sq_cpu_t *c, int64_t n, int64_t grain, sq_range_fn fn, void *arg) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  /* the calling thread's OpenMP team size caps ours: a program step with too little work for
   * a team sets it to 1 (cpu_program.c), like the oneDNN primitives it runs between */
  int team = omp_get_max_threads();
  if (team > c->nthreads) team = c->nthreads;
  if (team <= 1 || n <= grain) {
    fn(arg, 0, n);
    return;
  }
  /* a few chunks per thread, handed out dynamically: rows of unequal cost balance out */
  int64_t chunk = (n + team * 4 - 1) / (team * 4);
  if (chunk < grain) chunk = grain;
  int64_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(team) schedule(dynamic, 1)
  for (int64_t k = 0; k < nchunks; k++) {
    int64_t b = k * chunk, e = b + chunk < n ? b + chunk : n;
    fn(arg, b, e);
  }
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
