/* backend.c: the generic sq_backend_* entry points. They only call through the backend's iface;
 * this is also where a backend registry (and the one CUDA #ifdef) will sit. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

const char *sq_backend_name(const sq_backend_t *b) {
  return b->iface->get_name((sq_backend_t *)b);
}

int sq_backend_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes) {
  return b->iface->memory_info ? b->iface->memory_info(b, free_bytes, total_bytes)
                               : SQ_EUNSUPPORTED;
}

void sq_backend_free(sq_backend_t *b) {
  if (b) b->iface->free(b);
}

sq_backend_ctx_t *sq_backend_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err) {
  return b->iface->ctx_new(b, arena_bytes, err);
}

void sq_backend_ctx_free(sq_backend_ctx_t *c) {
  if (c) c->backend->iface->ctx_free(c);
}

/* ---- registry: device strings -> backends. The one #ifdef for CUDA in the engine. ---- */
#ifdef SEGQ_HAVE_CUDA
#include "../cuda/cuda_backend.h"
#else
static int sq_cuda_device_count(const char **why) {
  if (why) *why = "this build has no CUDA backend (SEGQ_CUDA=OFF or no CUDA toolkit/cuDNN)";
  return 0;
}
static sq_backend_t *sq_cuda_backend_new(int device, sq_error_t *err) {
  sq_error_set(err, SQ_EDEVICE, "cuda:%d: this build has no CUDA backend", device);
  return NULL;
}
#endif

int sq_backend_cuda_count(void) {
  return sq_cuda_device_count(NULL);
}

sq_backend_t *sq_backend_cuda_new(int device, sq_error_t *err) {
  return sq_cuda_backend_new(device, err);
}

int sq_backend_supports(sq_backend_t *b, const sq_engine_plan_t *p, sq_error_t *err) {
  return b->iface->supports ? b->iface->supports(b, p, err) : 0;
}

int sq_backend_open(const char *device, int cpu_threads, sq_backend_t **out, int max,
                    sq_error_t *err) {
  const char *why = NULL;
  if (!device || !*device) device = "auto";
  if (!out || max < 1) return sq_error_set(err, SQ_EINVAL, "backend: no room for a backend");
  if (strcmp(device, "cpu") == 0 ||
      (strcmp(device, "auto") == 0 && sq_cuda_device_count(&why) == 0)) {
    if (strcmp(device, "auto") == 0)
      sq_log_info("engine", "no usable CUDA device; falling back to the cpu backend",
                  "reason=\"%s\"", why ? why : "none");
    out[0] = sq_backend_cpu_new(cpu_threads, err);
    return out[0] ? 1 : (err && err->code ? err->code : SQ_ENOMEM);
  }
  int first = 0, last = 0; /* device range [first, last] */
  if (strcmp(device, "auto") == 0 || strcmp(device, "cuda") == 0) {
  } else if (strcmp(device, "cuda:all") == 0) {
    last = -1;
  } else if (strncmp(device, "cuda:", 5) == 0 && device[5] >= '0' && device[5] <= '9') {
    char *end;
    long v = strtol(device + 5, &end, 10);
    if (*end || v > 4096) return sq_error_set(err, SQ_EINVAL, "device '%s': bad ordinal", device);
    first = last = (int)v;
  } else {
    return sq_error_set(err, SQ_EINVAL, "device '%s': expected auto, cpu, cuda, cuda:N or cuda:all",
                        device);
  }
  int count = sq_cuda_device_count(&why);
  if (count == 0)
    return sq_error_set(err, SQ_EDEVICE, "device '%s': no usable CUDA device (%s)", device,
                        why ? why : "none");
  if (last < 0) last = count - 1;
  if (last >= count)
    return sq_error_set(err, SQ_EDEVICE, "device '%s': only %d CUDA device(s)", device, count);
  int n = 0;
  for (int d = first; d <= last && n < max; d++) {
    out[n] = sq_cuda_backend_new(d, err);
    if (!out[n]) {
      int rc = err && err->code ? err->code : SQ_EDEVICE;
      while (n > 0) sq_backend_free(out[--n]);
      return rc;
    }
    n++;
  }
  return n;
}
