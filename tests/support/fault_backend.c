/* fault_backend: a TEST-ONLY backend that wraps the cpu backend and injects the device faults a
 * GPU can produce, so the policies above the backend (memory pressure, out-of-memory splits,
 * device errors, several devices) are tested on machines without one. It is linked into test
 * binaries only (the unit tests and tests/support/segq-worker-fault); the production segq-worker
 * never registers it, so "fault:..." is not a device string there.
 *
 *   fault[:key=value,...]
 *     devices=N        open N backends "fault:0".."fault:N-1" (like cuda:all)
 *     oom_above=B      a run of more than B batch items fails with SQ_EOOM_DEVICE
 *     oom_file=PATH    every run fails with SQ_EOOM_DEVICE while PATH exists (transient)
 *     poison_after=K   after K successful runs (all devices together, warm-up runs included)
 *                      every run fails with SQ_EDEVICE, as a poisoned CUDA context does
 *     poison_file=PATH the same from the moment PATH exists (a test decides when)
 *     total_mb=T       memory_info reports T MiB in total ...
 *     free_mb=F        ... and F MiB free (device_memory is then reported as set)
 *     mem_file=PATH    read "free_mb total_mb" from PATH at every memory_info (a test changes
 *                      the pressure while the worker runs)
 *     delay_ms=D       every run sleeps D ms first (keeps batches in flight)
 *     graphs=1         report props.graphs (callers plan fixed sizes and pad up to them)
 *     fp16=1           report props.fp16 (it still computes in fp32: tests see the precision
 *                      a model resolved to)
 *     log=PATH         append "run <device> <batch>" per run (what sizes really ran)
 * Threads: as the cpu backend (a context is used by one thread at a time). */
#include "fault_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"

typedef struct {
  int devices;
  long oom_above, poison_after;
  long total_mb, free_mb;
  char mem_file[256];
  long delay_ms;
  int graphs, fp16;
  char log[256];
  char poison_file[256];
  char oom_file[256];
} fault_cfg_t;

/* Shared by every device of one open: the run counter behind poison_after. */
typedef struct {
  pthread_mutex_t mu;
  long runs;
  int refs;
  fault_cfg_t cfg;
} fault_shared_t;

typedef struct {
  sq_backend_t *inner; /* the cpu backend doing the work */
  fault_shared_t *shared;
  int index;
  char name[32];
} fault_backend_t;

static int parse_cfg(const char *args, fault_cfg_t *c, sq_error_t *err) {
  memset(c, 0, sizeof *c);
  c->devices = 1;
  c->oom_above = -1;
  c->poison_after = -1;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", args ? args : "");
  for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    if (!eq) return sq_error_set(err, SQ_EINVAL, "fault device: '%s' is not key=value", kv);
    *eq = '\0';
    const char *k = kv, *v = eq + 1;
    long n = strtol(v, NULL, 10);
    if (!strcmp(k, "devices"))
      c->devices = n < 1 ? 1 : n > 8 ? 8 : (int)n;
    else if (!strcmp(k, "oom_above"))
      c->oom_above = n;
    else if (!strcmp(k, "poison_after"))
      c->poison_after = n;
    else if (!strcmp(k, "total_mb"))
      c->total_mb = n;
    else if (!strcmp(k, "free_mb"))
      c->free_mb = n;
    else if (!strcmp(k, "mem_file"))
      snprintf(c->mem_file, sizeof c->mem_file, "%s", v);
    else if (!strcmp(k, "delay_ms"))
      c->delay_ms = n;
    else if (!strcmp(k, "graphs"))
      c->graphs = n != 0;
    else if (!strcmp(k, "fp16"))
      c->fp16 = n != 0;
    else if (!strcmp(k, "log"))
      snprintf(c->log, sizeof c->log, "%s", v);
    else if (!strcmp(k, "poison_file"))
      snprintf(c->poison_file, sizeof c->poison_file, "%s", v);
    else if (!strcmp(k, "oom_file"))
      snprintf(c->oom_file, sizeof c->oom_file, "%s", v);
    else
      return sq_error_set(err, SQ_EINVAL, "fault device: unknown key '%s'", k);
  }
  return 0;
}

static const char *fault_name(sq_backend_t *b) {
  return ((fault_backend_t *)b->context)->name;
}

static int fault_load(sq_backend_t *b, const sq_engine_plan_t *p, void **state, sq_error_t *err) {
  fault_backend_t *fb = b->context;
  *state = NULL;
  return fb->inner->iface->load ? fb->inner->iface->load(fb->inner, p, state, err) : 0;
}

static void fault_unload(sq_backend_t *b, void *state) {
  fault_backend_t *fb = b->context;
  if (fb->inner->iface->unload) fb->inner->iface->unload(fb->inner, state);
}

/* The outer context is ours (backend = the fault backend), the inner one the cpu backend's. */
static sq_backend_ctx_t *fault_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err) {
  fault_backend_t *fb = b->context;
  sq_backend_ctx_t *c = calloc(1, sizeof *c);
  if (!c) {
    sq_error_set(err, SQ_ENOMEM, "fault context: out of memory");
    return NULL;
  }
  c->context = fb->inner->iface->ctx_new(fb->inner, arena_bytes, err);
  if (!c->context) {
    free(c);
    return NULL;
  }
  c->backend = b;
  c->arena_bytes = arena_bytes;
  return c;
}

static void fault_ctx_free(sq_backend_ctx_t *c) {
  sq_backend_ctx_t *inner = c->context;
  inner->backend->iface->ctx_free(inner);
  free(c);
}

static int fault_run(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                     const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs,
                     sq_error_t *err) {
  fault_backend_t *fb = c->backend->context;
  fault_shared_t *sh = fb->shared;
  const fault_cfg_t *cfg = &sh->cfg;
  int64_t batch = p->ninputs > 0 ? p->graph.tensors[p->inputs[0]].dims[0] : 1;
  if (cfg->delay_ms > 0) {
    struct timespec ts = {cfg->delay_ms / 1000, (cfg->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (cfg->log[0]) {
    FILE *f = fopen(cfg->log, "a");
    if (f) {
      fprintf(f, "run %s %lld\n", fb->name, (long long)batch);
      fclose(f);
    }
  }
  pthread_mutex_lock(&sh->mu);
  int poisoned = cfg->poison_after >= 0 && sh->runs >= cfg->poison_after;
  pthread_mutex_unlock(&sh->mu);
  if (cfg->poison_file[0] && access(cfg->poison_file, F_OK) == 0) poisoned = 1;
  if (poisoned)
    return sq_error_set(err, SQ_EDEVICE,
                        "%s: injected device error (an illegal address, as a "
                        "poisoned CUDA context reports it)",
                        fb->name);
  if (cfg->oom_file[0] && access(cfg->oom_file, F_OK) == 0)
    return sq_error_set(err, SQ_EOOM_DEVICE, "%s: injected out of memory (%s exists)", fb->name,
                        cfg->oom_file);
  if (cfg->oom_above >= 0 && batch > cfg->oom_above)
    return sq_error_set(err, SQ_EOOM_DEVICE, "%s: injected out of memory at batch %lld (> %ld)",
                        fb->name, (long long)batch, cfg->oom_above);
  sq_backend_ctx_t *inner = c->context;
  int rc = fb->inner->iface->run(inner, p, state, inputs, outputs, err);
  if (!rc && fb->inner->iface->sync) rc = fb->inner->iface->sync(inner, err);
  if (!rc) {
    pthread_mutex_lock(&sh->mu);
    sh->runs++;
    pthread_mutex_unlock(&sh->mu);
  }
  return rc;
}

static int fault_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes) {
  fault_backend_t *fb = b->context;
  const fault_cfg_t *cfg = &fb->shared->cfg;
  long fr = cfg->free_mb, tot = cfg->total_mb;
  if (cfg->mem_file[0]) {
    FILE *f = fopen(cfg->mem_file, "r");
    if (f) {
      if (fscanf(f, "%ld %ld", &fr, &tot) != 2) fr = cfg->free_mb, tot = cfg->total_mb;
      fclose(f);
    }
  }
  if (tot <= 0) return fb->inner->iface->memory_info(fb->inner, free_bytes, total_bytes);
  if (free_bytes) *free_bytes = (size_t)fr << 20;
  if (total_bytes) *total_bytes = (size_t)tot << 20;
  return 0;
}

static void fault_props(sq_backend_t *b, sq_backend_props_t *out) {
  fault_backend_t *fb = b->context;
  out->device_memory = fb->shared->cfg.total_mb > 0 || fb->shared->cfg.mem_file[0];
  out->graphs = fb->shared->cfg.graphs;
  out->fp16 = fb->shared->cfg.fp16;
}

static void fault_free(sq_backend_t *b) {
  fault_backend_t *fb = b->context;
  sq_backend_free(fb->inner);
  fault_shared_t *sh = fb->shared;
  pthread_mutex_lock(&sh->mu);
  int last = --sh->refs == 0;
  pthread_mutex_unlock(&sh->mu);
  if (last) {
    pthread_mutex_destroy(&sh->mu);
    free(sh);
  }
  free(fb);
  free(b);
}

static const sq_backend_iface_t fault_iface = {
    .get_name = fault_name,
    .load = fault_load,
    .unload = fault_unload,
    .ctx_new = fault_ctx_new,
    .ctx_free = fault_ctx_free,
    .run = fault_run,
    .sync = NULL, /* fault_run completes the inner run */
    .memory_info = fault_memory_info,
    .free = fault_free,
    .props = fault_props,
};

static int fault_open(const char *args, int cpu_threads, sq_backend_t **out, int max,
                      sq_error_t *err) {
  fault_shared_t *sh = calloc(1, sizeof *sh);
  if (!sh) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  int rc = parse_cfg(args, &sh->cfg, err);
  if (rc) {
    free(sh);
    return rc;
  }
  pthread_mutex_init(&sh->mu, NULL);
  int n = 0;
  for (int i = 0; i < sh->cfg.devices && n < max; i++) {
    sq_backend_t *b = calloc(1, sizeof *b);
    fault_backend_t *fb = calloc(1, sizeof *fb);
    sq_backend_t *inner = b && fb ? sq_backend_cpu_new(cpu_threads, err) : NULL;
    if (!inner) {
      free(b);
      free(fb);
      rc = err && err->code ? err->code : SQ_ENOMEM;
      break;
    }
    fb->inner = inner;
    fb->shared = sh;
    fb->index = i;
    snprintf(fb->name, sizeof fb->name, "fault:%d", i);
    b->iface = &fault_iface;
    b->context = fb;
    sh->refs++;
    out[n++] = b;
  }
  if (rc) {
    while (n > 0) sq_backend_free(out[--n]);
    if (sh->refs == 0) {
      pthread_mutex_destroy(&sh->mu);
      free(sh);
    }
    return rc;
  }
  return n;
}

int sq_fault_backend_register(void) {
  return sq_backend_register("fault", fault_open);
}
