/* backend_cpu.c: the `cpu` backend behind sq_backend_iface_t: float32, one thread pool and one
 * 64-byte-aligned arena per context, kernels from ops.def run by sq_exec_cpu. The reference
 * every other backend is compared against. Contexts run on their executor thread. */
#include <cblas.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine_internal.h"

typedef struct {
  int threads;
} cpu_backend_t;

typedef struct {
  sq_cpu_t *pool;
  uint8_t *arena;
} cpu_ctx_t;

static const char *cpu_name(sq_backend_t *b) {
  return "cpu";
}

static sq_backend_ctx_t *cpu_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err) {
  cpu_backend_t *cb = b->context;
  sq_backend_ctx_t *c = calloc(1, sizeof *c);
  cpu_ctx_t *cc = calloc(1, sizeof *cc);
  if (!c || !cc) goto fail;
  c->backend = b;
  c->arena_bytes = arena_bytes;
  c->context = cc;
  cc->pool = sq_cpu_new(cb->threads);
  if (!cc->pool) goto fail;
  if (posix_memalign((void **)&cc->arena, 64, arena_bytes ? arena_bytes : 64)) {
    cc->arena = NULL;
    goto fail;
  }
  return c;
fail:
  if (cc) {
    sq_cpu_free(cc->pool);
    free(cc);
  }
  free(c);
  sq_error_set(err, SQ_ENOMEM, "cpu context: cannot allocate a %zu-byte arena", arena_bytes);
  return NULL;
}

static void cpu_ctx_free(sq_backend_ctx_t *c) {
  cpu_ctx_t *cc = c->context;
  sq_cpu_free(cc->pool);
  free(cc->arena);
  free(cc);
  free(c);
}

static int cpu_run(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                   const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs, sq_error_t *err) {
  cpu_ctx_t *cc = c->context;
  return sq_exec_cpu(cc->pool, p, cc->arena, inputs, outputs, err);
}

static int cpu_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes) {
  long page = sysconf(_SC_PAGESIZE);
  long avail = sysconf(_SC_AVPHYS_PAGES), total = sysconf(_SC_PHYS_PAGES);
  if (page <= 0 || avail < 0 || total < 0) return SQ_EINTERNAL;
  if (free_bytes) *free_bytes = (size_t)avail * (size_t)page;
  if (total_bytes) *total_bytes = (size_t)total * (size_t)page;
  return 0;
}

static void cpu_free(sq_backend_t *b) {
  free(b->context);
  free(b);
}

static const sq_backend_iface_t cpu_iface = {
    .get_name = cpu_name,
    .load = NULL, /* weights are used in place */
    .unload = NULL,
    .ctx_new = cpu_ctx_new,
    .ctx_free = cpu_ctx_free,
    .run = cpu_run,
    .sync = NULL, /* synchronous */
    .memory_info = cpu_memory_info,
    .free = cpu_free,
    .host = 1,
};

sq_backend_t *sq_backend_cpu_new(int threads, sq_error_t *err) {
  sq_backend_t *b = calloc(1, sizeof *b);
  cpu_backend_t *cb = calloc(1, sizeof *cb);
  if (!b || !cb) {
    free(b);
    free(cb);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  cb->threads = threads;
  /* OpenBLAS keeps one global pool: GEMM inside Conv uses the same thread budget. */
  openblas_set_num_threads(threads);
  b->iface = &cpu_iface;
  b->context = cb;
  return b;
}
