/* gpu: the memory policy, start-up budget and run sizes of devpolicy.h. Pure functions of
 * their arguments (the caller serializes calls on one policy). */
#include "gpu/devpolicy.h"

#include <string.h>

void sq_mempolicy_init(sq_mempolicy_t *p, uint32_t max_batch) {
  memset(p, 0, sizeof *p);
  p->max_batch = max_batch ? max_batch : 1;
  p->effective = p->max_batch;
}

int sq_mempolicy_observe(sq_mempolicy_t *p, uint64_t free_bytes, uint64_t total_bytes,
                         uint64_t now_us) {
  int before = p->pressure;
  if (total_bytes == 0) return before;
  p->free_bytes = free_bytes;
  p->total_bytes = total_bytes;
  uint64_t used = free_bytes < total_bytes ? total_bytes - free_bytes : 0;
  /* used/total > pct/100, in integers */
  int level = used * 100 > (uint64_t)SQ_MEM_SHRINK_PCT * total_bytes ? SQ_PRESSURE_SHRINK
              : used * 100 > (uint64_t)SQ_MEM_WARN_PCT * total_bytes ? SQ_PRESSURE_WARN
                                                                     : SQ_PRESSURE_NONE;
  p->pressure = level;
  int step_due = before != level || now_us - p->last_step_us >= SQ_MEM_STEP_US;
  if (level == SQ_PRESSURE_SHRINK && step_due && p->effective > 1) {
    p->effective /= 2;
    p->last_step_us = now_us;
  } else if (level == SQ_PRESSURE_NONE && p->effective < p->max_batch &&
             now_us - p->last_step_us >= SQ_MEM_STEP_US &&
             (p->last_oom_us == 0 || now_us - p->last_oom_us >= SQ_MEM_CALM_US)) {
    p->effective = p->effective * 2 < p->max_batch ? p->effective * 2 : p->max_batch;
    p->last_step_us = now_us;
  }
  return before;
}

void sq_mempolicy_oom(sq_mempolicy_t *p, uint32_t batch, uint64_t now_us) {
  uint32_t half = batch / 2 ? batch / 2 : 1;
  if (half < p->effective) p->effective = half;
  p->splits++;
  p->last_oom_us = now_us ? now_us : 1;
  p->last_step_us = now_us;
}

uint64_t sq_membudget_need(const sq_membudget_t *b, uint32_t batch) {
  uint64_t arena = b->arena1;
  if (b->max_batch > 1 && batch > 1 && b->arena_max > b->arena1)
    arena += (b->arena_max - b->arena1) * (uint64_t)(batch - 1) / (b->max_batch - 1);
  uint64_t per_ctx = arena + b->staging_per_item * batch;
  return per_ctx * (b->contexts ? b->contexts : 1) + b->consts;
}

uint32_t sq_membudget_fit(const sq_membudget_t *b, uint64_t free_bytes, uint64_t total_bytes) {
  uint64_t reserve = total_bytes / 16 > (64ULL << 20) ? total_bytes / 16 : (64ULL << 20);
  uint64_t usable = free_bytes > reserve ? free_bytes - reserve : 0;
  uint32_t best = 0;
  for (uint32_t batch = 1; batch <= b->max_batch; batch++)
    if (sq_membudget_need(b, batch) <= usable) best = batch;
  return best;
}

size_t sq_run_sizes(uint32_t max_batch, uint32_t optimal_batch, uint32_t *out, size_t cap) {
  size_t n = 0;
  if (max_batch == 0) max_batch = 1;
  for (uint32_t s = 1; s < max_batch && n < cap; s *= 2) out[n++] = s;
  if (optimal_batch && optimal_batch < max_batch) {
    size_t i = 0;
    while (i < n && out[i] < optimal_batch) i++;
    if ((i == n || out[i] != optimal_batch) && n < cap) {
      memmove(out + i + 1, out + i, (n - i) * sizeof *out);
      out[i] = optimal_batch;
      n++;
    }
  }
  if (n < cap) out[n++] = max_batch;
  return n;
}

uint32_t sq_run_size_for(const uint32_t *sizes, size_t n, uint32_t batch) {
  if (n == 0) return batch;
  for (size_t i = 0; i < n; i++)
    if (sizes[i] >= batch) return sizes[i];
  return sizes[n - 1];
}
