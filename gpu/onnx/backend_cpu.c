/* backend_cpu.c: the `cpu` backend behind sq_backend_iface_t, on oneDNN 2.6 (Debian's
 * libdnnl, OpenMP runtime): a plan is compiled once into a program of oneDNN primitives and
 * reference kernels (cpu_program.c) when it first runs; weights are reordered once into a
 * cache shared by the backend's plans; each context has its arena (activations and oneDNN
 * scratchpads), a oneDNN stream and its thread count. The reference every other backend is
 * compared against. Contexts run on their executor thread; load runs under the plan's lock. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_program.h"

typedef struct {
  sq_cpu_t *pool; /* reference kernels' thread count + scratch */
  uint8_t *arena;
  size_t arena_cap;
  dnnl_stream_t stream;
  sq_prog_mems_t *mems; /* memory objects of the programs this context ran */
} cpu_ctx_t;

static const char *cpu_name(sq_backend_t *b) {
  return "cpu";
}

/* SEGQ_ENGINE_PROFILE=1 logs each step's time (debugging aid; read once). */
static int profile_enabled(void) {
  static int enabled = -1;
  if (enabled < 0) {
    const char *v = getenv("SEGQ_ENGINE_PROFILE");
    enabled = v && *v && strcmp(v, "0") != 0;
  }
  return enabled;
}

static int cpu_load(sq_backend_t *b, const sq_engine_plan_t *p, void **state, sq_error_t *err) {
  sq_cpu_program_t *pr = sq_cpu_program_new(b->context, p, err);
  if (!pr) return err && err->code ? err->code : SQ_ENOMEM;
  *state = pr;
  return 0;
}

static void cpu_unload(sq_backend_t *b, void *state) {
  sq_cpu_program_free(state); /* never touches b: the program holds its own reference */
}

static int grow_arena(cpu_ctx_t *cc, size_t bytes) {
  if (bytes <= cc->arena_cap && cc->arena) return 0;
  void *a = NULL;
  if (posix_memalign(&a, 64, bytes ? bytes : 64)) return SQ_ENOMEM;
  free(cc->arena);
  cc->arena = a;
  cc->arena_cap = bytes;
  return 0;
}

static sq_backend_ctx_t *cpu_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err) {
  sq_cpu_backend_t *cb = b->context;
  sq_backend_ctx_t *c = calloc(1, sizeof *c);
  cpu_ctx_t *cc = calloc(1, sizeof *cc);
  if (!c || !cc) goto fail;
  c->backend = b;
  c->arena_bytes = arena_bytes;
  c->context = cc;
  cc->pool = sq_cpu_new(cb->threads);
  if (!cc->pool || grow_arena(cc, arena_bytes)) goto fail;
  if (dnnl_stream_create(&cc->stream, cb->engine, dnnl_stream_default_flags) != dnnl_success)
    goto fail;
  return c;
fail:
  if (cc) {
    sq_cpu_free(cc->pool);
    free(cc->arena);
    free(cc);
  }
  free(c);
  sq_error_set(err, SQ_ENOMEM, "cpu context: cannot allocate a %zu-byte arena", arena_bytes);
  return NULL;
}

static void cpu_ctx_free(sq_backend_ctx_t *c) {
  cpu_ctx_t *cc = c->context;
  sq_prog_mems_free(cc->mems);
  if (cc->stream) dnnl_stream_destroy(cc->stream);
  sq_cpu_free(cc->pool);
  free(cc->arena);
  free(cc);
  free(c);
}

static int cpu_run(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                   const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs, sq_error_t *err) {
  cpu_ctx_t *cc = c->context;
  sq_cpu_backend_t *cb = c->backend->context;
  const sq_cpu_program_t *pr = state;
  /* blocked layouts pad channels, so a program may need more than the plan's plain arena:
   * the context grows once to what its largest program needs */
  if (grow_arena(cc, sq_cpu_program_arena_bytes(pr)))
    return sq_error_set(err, SQ_ENOMEM, "cpu context: cannot grow the arena to %zu bytes",
                        sq_cpu_program_arena_bytes(pr));
  omp_set_num_threads(cb->threads); /* this executor thread's team, for oneDNN and our loops */
  return sq_cpu_program_run(pr, cc->pool, cc->stream, cc->arena, &cc->mems, inputs, outputs,
                            profile_enabled(), err);
}

static int cpu_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes) {
  long page = sysconf(_SC_PAGESIZE);
  long avail = sysconf(_SC_AVPHYS_PAGES), total = sysconf(_SC_PHYS_PAGES);
  if (page <= 0 || avail < 0 || total < 0) return SQ_EINTERNAL;
  if (free_bytes) *free_bytes = (size_t)avail * (size_t)page;
  if (total_bytes) *total_bytes = (size_t)total * (size_t)page;
  return 0;
}

void sq_cpu_backend_unref(sq_cpu_backend_t *cb) {
  pthread_mutex_lock(&cb->wlock);
  int left = --cb->refs;
  pthread_mutex_unlock(&cb->wlock);
  if (left > 0) return;
  if (cb->engine) dnnl_engine_destroy(cb->engine);
  pthread_mutex_destroy(&cb->wlock);
  free(cb);
}

static void cpu_free(sq_backend_t *b) {
  sq_cpu_backend_unref(b->context);
  free(b);
}

static const sq_backend_iface_t cpu_iface = {
    .get_name = cpu_name,
    .load = cpu_load,
    .unload = cpu_unload,
    .ctx_new = cpu_ctx_new,
    .ctx_free = cpu_ctx_free,
    .run = cpu_run,
    .sync = NULL, /* synchronous */
    .memory_info = cpu_memory_info,
    .free = cpu_free,
};

void sq_engine_process_init(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || !argv || !argv[0]) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv); /* returns only on failure */
}

sq_backend_t *sq_backend_cpu_new(int threads, sq_error_t *err) {
  sq_backend_t *b = calloc(1, sizeof *b);
  sq_cpu_backend_t *cb = calloc(1, sizeof *cb);
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
  cb->refs = 1;
  pthread_mutex_init(&cb->wlock, NULL);
  if (dnnl_engine_create(&cb->engine, dnnl_cpu, 0) != dnnl_success) {
    pthread_mutex_destroy(&cb->wlock);
    free(cb);
    free(b);
    sq_error_set(err, SQ_EDEVICE, "cpu backend: oneDNN has no CPU engine");
    return NULL;
  }
  b->iface = &cpu_iface;
  b->context = cb;
  return b;
}
