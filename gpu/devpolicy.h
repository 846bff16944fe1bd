/* gpu: the decisions a model makes about its device, as pure logic on observations and an
 * injected clock (tests/unit/test_gpu_devpolicy.c runs them on fakes): the memory policy
 * (warn above 90% used, shrink the effective max batch above 95%, halve after an out-of-memory
 * error, grow back when memory is free again), the start-up budget, and the batch sizes a
 * backend that replays captured graphs is planned for. Private to gpu/. The caller serializes
 * calls on one policy (model_onnx.c: under its device's mutex). */
#ifndef SQ_GPU_DEVPOLICY_H
#define SQ_GPU_DEVPOLICY_H

#include <stddef.h>
#include <stdint.h>

#define SQ_MEM_WARN_PCT 90        /* used above this: a warning */
#define SQ_MEM_SHRINK_PCT 95      /* used above this: the effective max batch shrinks */
#define SQ_MEM_STEP_US 1000000ULL /* at most one shrink or growth step per second */
#define SQ_MEM_CALM_US 5000000ULL /* no growth until this long after an out-of-memory error */

enum { SQ_PRESSURE_NONE = 0, SQ_PRESSURE_WARN = 1, SQ_PRESSURE_SHRINK = 2 };

typedef struct {
  uint32_t max_batch; /* the ceiling: never exceeded */
  uint32_t effective; /* what a run may use now, 1..max_batch */
  int pressure;       /* SQ_PRESSURE_* of the last observation */
  uint64_t last_step_us, last_oom_us;
  uint64_t splits; /* out-of-memory errors that halved a run */
  uint64_t free_bytes, total_bytes;
} sq_mempolicy_t;

void sq_mempolicy_init(sq_mempolicy_t *p, uint32_t max_batch);
/* One look at the device's memory at now_us. Returns the previous pressure level, so the caller
 * can log a change (p->pressure is the new one). total 0 (unknown) changes nothing. */
int sq_mempolicy_observe(sq_mempolicy_t *p, uint64_t free_bytes, uint64_t total_bytes,
                         uint64_t now_us);
/* A run of `batch` items failed for memory at now_us: later runs use at most batch / 2. */
void sq_mempolicy_oom(sq_mempolicy_t *p, uint32_t batch, uint64_t now_us);

/* Start-up budget: device bytes a model needs at batch b, from the arena at batch 1 and at
 * batch max (linear in between: the planner's arena grows with the batch), per context, plus
 * the per-run staging and the constants once per device. */
typedef struct {
  uint64_t arena1, arena_max; /* sq_engine_arena_bytes at batch 1 and at max_batch */
  uint32_t max_batch;
  uint64_t staging_per_item; /* raw input + mask + probabilities of one batch item */
  uint64_t consts;           /* sq_engine_plan_const_bytes */
  uint32_t contexts;         /* on this device */
} sq_membudget_t;
uint64_t sq_membudget_need(const sq_membudget_t *b, uint32_t batch);
/* The largest batch in 1..max_batch whose need fits `free_bytes` (keeping 1/16 of the device,
 * at least 64 MiB of it, for the library's own allocations); 0 when not even batch 1 fits. */
uint32_t sq_membudget_fit(const sq_membudget_t *b, uint64_t free_bytes, uint64_t total_bytes);

/* The batch sizes a model plans on a backend that captures graphs: powers of two below
 * max_batch, plus optimal_batch and max_batch; ascending, at most cap. Returns the count. */
size_t sq_run_sizes(uint32_t max_batch, uint32_t optimal_batch, uint32_t *out, size_t cap);
/* The smallest size in sizes[0..n) that holds `batch` (n == 0: batch itself; none: the largest). */
uint32_t sq_run_size_for(const uint32_t *sizes, size_t n, uint32_t batch);

#endif
