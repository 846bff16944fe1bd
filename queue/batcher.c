/* queue/batcher: the batching stage. A FIFO ring of (item, arrival time) that releases a batch
 * when max_batch items wait or the oldest has waited max_delay_us. Pure logic: no I/O, no clock
 * of its own (the caller passes now_us), so tests drive it with a fake clock.
 * Threads: none of its own; not thread-safe, used by whichever thread owns it. */
#include <stdlib.h>

#include "queue/queue.h"

typedef struct {
  void *item;
  uint64_t arrived_us;
} batch_slot_t;

struct sq_batcher {
  uint32_t max_batch;
  uint64_t max_delay_us;
  batch_slot_t *slots; /* ring buffer of cap slots */
  size_t cap;
  size_t head; /* index of the oldest item */
  size_t len;
};

sq_batcher_t *sq_batcher_new(uint32_t max_batch, uint64_t max_delay_us) {
  if (max_batch == 0) return NULL;
  sq_batcher_t *b = calloc(1, sizeof(*b));
  if (!b) return NULL;
  b->max_batch = max_batch;
  b->max_delay_us = max_delay_us;
  b->cap = max_batch < 16 ? 16 : max_batch;
  b->slots = calloc(b->cap, sizeof(*b->slots));
  if (!b->slots) {
    free(b);
    return NULL;
  }
  return b;
}

void sq_batcher_free(sq_batcher_t *b) {
  if (!b) return;
  free(b->slots);
  free(b);
}

/* Doubles the ring, unrolling it so the oldest item lands at index 0. */
static int batcher_grow(sq_batcher_t *b) {
  size_t ncap = b->cap * 2;
  batch_slot_t *ns = calloc(ncap, sizeof(*ns));
  if (!ns) return SQ_ENOMEM;
  for (size_t i = 0; i < b->len; i++) ns[i] = b->slots[(b->head + i) % b->cap];
  free(b->slots);
  b->slots = ns;
  b->cap = ncap;
  b->head = 0;
  return 0;
}

int sq_batcher_push(sq_batcher_t *b, void *item, uint64_t now_us) {
  if (!b) return SQ_EINVAL;
  if (b->len == b->cap) {
    int rc = batcher_grow(b);
    if (rc) return rc;
  }
  batch_slot_t *s = &b->slots[(b->head + b->len) % b->cap];
  s->item = item;
  s->arrived_us = now_us;
  b->len++;
  return 0;
}

uint64_t sq_batcher_due_us(const sq_batcher_t *b) {
  if (!b || b->len == 0) return UINT64_MAX;
  uint64_t oldest = b->slots[b->head].arrived_us;
  /* A full batch is due the moment it filled; report the oldest arrival (already past). */
  if (b->len >= b->max_batch) return oldest;
  if (oldest > UINT64_MAX - b->max_delay_us) return UINT64_MAX;
  return oldest + b->max_delay_us;
}

size_t sq_batcher_pop(sq_batcher_t *b, uint64_t now_us, int force, void **out) {
  if (!b || b->len == 0) return 0;
  if (!force && b->len < b->max_batch && now_us < sq_batcher_due_us(b)) return 0;
  size_t n = b->len < b->max_batch ? b->len : b->max_batch;
  for (size_t i = 0; i < n; i++) {
    out[i] = b->slots[b->head].item;
    b->slots[b->head].item = NULL;
    b->head = (b->head + 1) % b->cap;
  }
  b->len -= n;
  if (b->len == 0) b->head = 0;
  return n;
}

size_t sq_batcher_len(const sq_batcher_t *b) {
  return b ? b->len : 0;
}

uint32_t sq_batcher_max_batch(const sq_batcher_t *b) {
  return b ? b->max_batch : 0;
}

uint32_t sq_flow_claim_budget(uint32_t max_inflight_batches, uint32_t max_batch, uint32_t held) {
  /* Hold at most what the pipeline can start soon: a few batches' worth, minus what we hold. */
  uint64_t capacity = (uint64_t)max_inflight_batches * max_batch;
  if (capacity <= held) return 0;
  uint64_t budget = capacity - held;
  return budget > UINT32_MAX ? UINT32_MAX : (uint32_t)budget;
}
