/* backend.c: the generic sq_backend_* entry points, which only call through the backend's iface,
 * and the backend registry: the one parser of the device grammar, the one #ifdef for CUDA, and
 * the table of backends registered by name (test builds register a fault-injecting one).
 * Threads: any; sq_backend_register only before devices are opened (main, at start-up). */
#include <ctype.h>
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

int sq_backend_supports(sq_backend_t *b, const sq_engine_plan_t *p, sq_error_t *err) {
  return b->iface->supports ? b->iface->supports(b, p, err) : 0;
}

void sq_backend_props(sq_backend_t *b, sq_backend_props_t *out) {
  memset(out, 0, sizeof *out);
  if (b->iface->props) b->iface->props(b, out);
}

int sq_backend_configure(sq_backend_t *b, const sq_backend_options_t *opt, sq_error_t *err) {
  if (!opt) return 0;
  if (opt->precision != SQ_PRECISION_FP32 && opt->precision != SQ_PRECISION_FP16)
    return sq_error_set(err, SQ_EINVAL, "backend %s: unknown precision %d", sq_backend_name(b),
                        opt->precision);
  return b->iface->configure ? b->iface->configure(b, opt, err) : 0;
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

#define MAX_REGISTERED 8

static struct {
  char name[32];
  sq_backend_open_fn open;
} registered[MAX_REGISTERED];
static int nregistered;

static int registered_find(const char *name, size_t len) {
  for (int i = 0; i < nregistered; i++)
    if (strlen(registered[i].name) == len && memcmp(registered[i].name, name, len) == 0) return i;
  return -1;
}

static int valid_name(const char *s, size_t len) {
  if (len == 0 || len >= sizeof registered[0].name) return 0;
  for (size_t i = 0; i < len; i++)
    if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_')) return 0;
  return 1;
}

int sq_backend_register(const char *name, sq_backend_open_fn open) {
  size_t len = name ? strlen(name) : 0;
  if (!open || !valid_name(name, len) || !strcmp(name, "auto") || !strcmp(name, "cpu") ||
      !strcmp(name, "cuda") || registered_find(name, len) >= 0)
    return SQ_EINVAL;
  if (nregistered == MAX_REGISTERED) return SQ_ENOMEM;
  memcpy(registered[nregistered].name, name, len + 1);
  registered[nregistered].open = open;
  nregistered++;
  return 0;
}

int sq_device_parse(const char *device, sq_device_t *out, sq_error_t *err) {
  memset(out, 0, sizeof *out);
  if (!device || !*device || !strcmp(device, "auto")) {
    out->kind = SQ_DEVICE_AUTO;
    return 0;
  }
  if (!strcmp(device, "cpu")) {
    out->kind = SQ_DEVICE_CPU;
    return 0;
  }
  if (!strcmp(device, "cuda") || !strcmp(device, "cuda:all")) {
    out->kind = SQ_DEVICE_CUDA;
    out->index = device[4] ? -1 : 0;
    return 0;
  }
  if (!strncmp(device, "cuda:", 5) && device[5] >= '0' && device[5] <= '9') {
    char *end;
    long v = strtol(device + 5, &end, 10);
    if (*end || v > 4096) return sq_error_set(err, SQ_EINVAL, "device '%s': bad ordinal", device);
    out->kind = SQ_DEVICE_CUDA;
    out->index = (int)v;
    return 0;
  }
  const char *colon = strchr(device, ':');
  size_t len = colon ? (size_t)(colon - device) : strlen(device);
  int r = registered_find(device, len);
  if (r >= 0 && (!colon || strlen(colon + 1) < sizeof out->args)) {
    out->kind = SQ_DEVICE_REGISTERED;
    memcpy(out->name, device, len);
    snprintf(out->args, sizeof out->args, "%s", colon ? colon + 1 : "");
    return 0;
  }
  return sq_error_set(err, SQ_EINVAL, "device '%s': expected auto, cpu, cuda, cuda:N or cuda:all",
                      device);
}

int sq_backend_open(const char *device, int cpu_threads, sq_backend_t **out, int max,
                    sq_error_t *err) {
  const char *why = NULL;
  if (!out || max < 1) return sq_error_set(err, SQ_EINVAL, "backend: no room for a backend");
  sq_device_t d;
  int rc = sq_device_parse(device, &d, err);
  if (rc) return rc;
  if (!device || !*device) device = "auto";
  if (d.kind == SQ_DEVICE_REGISTERED) {
    int n = registered[registered_find(d.name, strlen(d.name))].open(d.args, cpu_threads, out, max,
                                                                     err);
    if (n == 0) return sq_error_set(err, SQ_EDEVICE, "device '%s': no backend opened", device);
    return n;
  }
  if (d.kind == SQ_DEVICE_CPU || (d.kind == SQ_DEVICE_AUTO && sq_cuda_device_count(&why) == 0)) {
    if (d.kind == SQ_DEVICE_AUTO)
      sq_log_info("engine", "no usable CUDA device; falling back to the cpu backend",
                  "reason=\"%s\"", why ? why : "none");
    out[0] = sq_backend_cpu_new(cpu_threads, err);
    return out[0] ? 1 : (err && err->code ? err->code : SQ_ENOMEM);
  }
  int first = d.kind == SQ_DEVICE_CUDA && d.index > 0 ? d.index : 0;
  int last = first;
  int count = sq_cuda_device_count(&why);
  if (count == 0)
    return sq_error_set(err, SQ_EDEVICE, "device '%s': no usable CUDA device (%s)", device,
                        why ? why : "none");
  if (d.kind == SQ_DEVICE_CUDA && d.index < 0) last = count - 1;
  if (last >= count)
    return sq_error_set(err, SQ_EDEVICE, "device '%s': only %d CUDA device(s)", device, count);
  int n = 0;
  for (int dev = first; dev <= last && n < max; dev++) {
    out[n] = sq_cuda_backend_new(dev, err);
    if (!out[n]) {
      rc = err && err->code ? err->code : SQ_EDEVICE;
      while (n > 0) sq_backend_free(out[--n]);
      return rc;
    }
    n++;
  }
  return n;
}
