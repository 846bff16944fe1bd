/* backend.c: the generic sq_backend_* entry points. They only call through the backend's iface;
 * this is also where a backend registry (and the one CUDA #ifdef) will sit. */
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
