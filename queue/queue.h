/* queue: segq's Redis key layout, its Lua scripts (the .lua files in queue/scripts/, embedded at
 * build time), the async operations on them (claim, ack, heartbeat, sweep, wait), and the batching
 * stage.
 * See docs/protocol.md for keys and scripts. Never includes CUDA.
 * Threads: everything taking a redisAsyncContext runs on the loop thread that owns that
 * connection; the batching stage is plain data and runs wherever its owner runs it. */
#ifndef SQ_QUEUE_H
#define SQ_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct redisAsyncContext;
struct redisContext;

typedef struct {
  const char *prefix;        /* key prefix, "segq" by default */
  const char *worker_id;     /* this worker's id (id alphabet) */
  const char *const *models; /* the models this worker serves */
  size_t nmodels;
  uint32_t lease_ttl_ms; /* lease TTL; heartbeat every ttl/3 */
  uint32_t max_attempts; /* dead-letter after this many executions */
  uint32_t result_ttl_s; /* TTL of results, status, events */
} sq_queue_config_t;

typedef struct sq_queue sq_queue_t;

/* Copies cfg. Generates a random fencing token. Returns NULL on allocation failure. */
sq_queue_t *sq_queue_new(const sq_queue_config_t *cfg);
void sq_queue_free(sq_queue_t *q);
const char *sq_queue_token(const sq_queue_t *q);
/* Replaces the fencing token with a fresh one (after the lease was lost). */
void sq_queue_new_token(sq_queue_t *q);

/* A claimed job; owned by whoever receives it. */
typedef struct {
  char *model;
  char *id;
  uint8_t *payload;
  size_t payload_len;
  uint32_t attempt;     /* 1 on first execution */
  uint64_t enqueued_ms; /* for queue-wait timing */
} sq_claimed_t;

void sq_claimed_free(sq_claimed_t *c); /* frees the members, not c */

/* Claim and ack are fenced on the lease that sq_queue_heartbeat creates: heartbeat first (and
 * every lease_ttl_ms/3), or they fail with SQ_ELEASE_LOST.
 * status: 0, or a negative code (SQ_EREDIS: connection gone / error reply; SQ_ELEASE_LOST).
 * Every async function below returns 0 when the command was sent (its callback will be called
 * exactly once, with status SQ_EREDIS if the connection goes away), or a negative code when it
 * could not be sent (the callback is then never called). */
typedef void (*sq_queue_claim_cb)(sq_queue_t *q, int status, sq_claimed_t *jobs, size_t n,
                                  void *data);
/* Claims up to n jobs in one round trip. The callback receives ownership of the jobs array and
 * every job in it (free each with sq_claimed_free, then free(jobs)). */
int sq_queue_claim(sq_queue_t *q, struct redisAsyncContext *ac, uint32_t n, sq_queue_claim_cb cb,
                   void *data);

typedef struct {
  const char *id;
  const uint8_t *result; /* encoded result document */
  size_t result_len;
  int error_code; /* 0 = done, else the job failed with this code */
} sq_ack_item_t;

/* per_job[i]: 1 written, 2 duplicate (result existed), 0 not ours (swept). Borrowed. */
typedef void (*sq_queue_ack_cb)(sq_queue_t *q, int status, const int *per_job, size_t n,
                                void *data);
/* Acks a batch in one script call. Copies what it needs from items before returning. */
int sq_queue_ack(sq_queue_t *q, struct redisAsyncContext *ac, const sq_ack_item_t *items, size_t n,
                 sq_queue_ack_cb cb, void *data);

/* Hands claimed jobs back to the front of their queues without charging an attempt (a worker
 * whose device failed: the job did not). per_job[i]: 1 back in its queue, 2 it had a result
 * (only removed from in-flight), 3 its payload was gone (dead-lettered, job_not_found), 0 not
 * in our in-flight list. Fenced like ack (SQ_ELEASE_LOST). Copies ids before returning. */
int sq_queue_release(sq_queue_t *q, struct redisAsyncContext *ac, const char *const *ids, size_t n,
                     sq_queue_ack_cb cb, void *data);

/* status 0 and lease_state: 1 renewed, 2 re-acquired after expiry (we may have been swept). */
typedef void (*sq_queue_status_cb)(sq_queue_t *q, int status, long long value, void *data);
int sq_queue_heartbeat(sq_queue_t *q, struct redisAsyncContext *ac, sq_queue_status_cb cb,
                       void *data);
/* Runs the sweeper if the sweeper lock is free; value = jobs requeued + dead-lettered. */
int sq_queue_sweep(sq_queue_t *q, struct redisAsyncContext *ac, uint32_t interval_ms,
                   sq_queue_status_cb cb, void *data);
/* Blocks (on its own connection!) up to timeout_s for a wake-up token of any served model.
 * value = 1 woken, 0 timed out. */
int sq_queue_wait(sq_queue_t *q, struct redisAsyncContext *blocking_ac, double timeout_s,
                  sq_queue_status_cb cb, void *data);
/* Removes this worker's lease (clean shutdown, after its in-flight list is empty). */
int sq_queue_unregister(sq_queue_t *q, struct redisAsyncContext *ac, sq_queue_status_cb cb,
                        void *data);

/* Synchronous enqueue through the enqueue script (tools, tests, benchmarks).
 * Returns 1 queued, 0 already pending, 2 already has a result, 3 rejected at once with an
 * `unknown_model` error result (workers are registered and none serves model), or a negative
 * code. Uses the default result TTL (24 h) for rejected jobs. */
int sq_queue_enqueue_sync(struct redisContext *c, const char *prefix, const char *id,
                          const char *model, const char *tenant, const char *group,
                          int64_t priority, const uint8_t *payload, size_t len, sq_error_t *err);

/* The embedded script sources, by name ("enqueue", "claim", "ack", "heartbeat", "sweep",
 * "unregister", "release"); NULL if no such script. Static storage, never freed. */
const char *sq_queue_script_source(const char *name);

/* ---- batching stage: pure logic, no I/O, clock passed in (so tests use a fake clock) ---- */
typedef struct sq_batcher sq_batcher_t;

/* NULL if max_batch is 0 or on allocation failure. The batcher holds item pointers, not items. */
sq_batcher_t *sq_batcher_new(uint32_t max_batch, uint64_t max_delay_us);
void sq_batcher_free(sq_batcher_t *b); /* does not free items */
/* Adds an item that arrived at now_us. */
int sq_batcher_push(sq_batcher_t *b, void *item, uint64_t now_us);
/* If a batch is due (max_batch items waiting, or the oldest waited >= max_delay_us, or force),
 * moves up to max_batch items (oldest first) into out and returns how many; else 0. */
size_t sq_batcher_pop(sq_batcher_t *b, uint64_t now_us, int force, void **out);
/* Absolute time the oldest item becomes due, or UINT64_MAX when empty (when max_batch items
 * already wait: the oldest item's arrival time, i.e. due now). */
uint64_t sq_batcher_due_us(const sq_batcher_t *b);
size_t sq_batcher_len(const sq_batcher_t *b);
uint32_t sq_batcher_max_batch(const sq_batcher_t *b);

/* Flow control: how many jobs a worker may claim now so that it only holds work it can start
 * soon. capacity = max_inflight_batches * max_batch; held = waiting in batchers + running. */
uint32_t sq_flow_claim_budget(uint32_t max_inflight_batches, uint32_t max_batch, uint32_t held);

#ifdef __cplusplus
}
#endif
#endif
