/* worker/worker_internal: the per-job and per-batch records that travel through the pipeline
 * (loop -> work pool -> executor -> work pool -> loop), and the work-pool stage functions.
 * Private to worker/. A record is touched by one thread at a time: whoever holds it in its
 * stage; hand-overs go through uv_queue_work or a locked queue + uv_async_send. */
#ifndef SQ_WORKER_INTERNAL_H
#define SQ_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "proto/proto.h"
#include "queue/queue.h"

typedef struct sq_worker sq_worker_t;
typedef struct wbatch wbatch_t;

typedef struct model_slot {
  sq_worker_t *w;
  const char *name;
  sq_model_t *model;
  sq_model_info_t info;
  uint32_t max_batch;
  uint64_t max_delay_us;
  sq_batcher_t *batcher;
  uint32_t held; /* jobs of this model claimed and not yet acked (loop thread) */
  uv_timer_t timer;
  /* Executor: one thread per model context, fed through a mutex+cond queue. */
  pthread_t *threads;
  uint32_t nthreads;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  wbatch_t *head, *tail;
  int stop;
} model_slot_t;

typedef struct wjob {
  sq_claimed_t c;   /* model, id (the queued id: results are filed under it), payload */
  model_slot_t *ms; /* NULL: a model this worker does not serve */
  const char *worker_id;
  uint64_t claimed_us; /* monotonic, for total_us */
  sq_timings_t t;
  sq_job_t job; /* decoded payload (owned) */
  void *sample; /* model input, prepare -> run */
  void *output; /* model output, run -> finish */
  uint32_t width, height;
  int err; /* 0 or the job's error code; then msg says why */
  char msg[256];
  uint8_t *result; /* encoded result document */
  size_t result_len;
  uint32_t batch_size;
  uv_work_t work;
  wbatch_t *batch;
  /* Ensembles (docs/protocol.md "Ensembles"). The job (the parent) runs in its own model's
   * batch with its own sample; every other member runs as a member record (parent != NULL,
   * no payload, no result, never acked) in that member's batcher. The parent's finish waits
   * until members_left (own run + member runs, loop thread) reaches 0. */
  model_slot_t *slots; /* every model this worker serves, to resolve members */
  size_t nslots;
  struct wjob *parent; /* member record: the job it belongs to; member = its index there */
  uint32_t member;
  size_t ens_n;   /* members (0 = a single-model job); ens_own = the index of ms */
  uint32_t ens_own;
  model_slot_t *ens_ms[SQ_PROTO_MAX_MEMBERS];
  void *ens_sample[SQ_PROTO_MAX_MEMBERS]; /* prepare -> member records (not ens_own) */
  void *ens_out[SQ_PROTO_MAX_MEMBERS];    /* member outputs (not ens_own: that is output) */
  uint32_t members_left;
  /* Written by sq_wjob_member_done (loop thread) while the parent may be running: merged into
   * t / err by sq_wjob_finish. */
  uint64_t ens_inference_us;
  int ens_err;
  char ens_msg[256];
} wjob_t;

struct wbatch {
  sq_worker_t *w;
  model_slot_t *ms;
  wjob_t **jobs;
  size_t n;
  size_t pending; /* work-pool requests outstanding (loop thread counter) */
  uint64_t formed_us;
  uint32_t ack_attempts;
  wbatch_t *next;
};

/* Work pool: payload decode, id/model/deadline checks, image decode, model prepare.
 * Sets j->err on any failure; never fails the batch. */
void sq_wjob_prepare(wjob_t *j);
/* Executor thread: runs the prepared samples of b as one batch (ctx = executor index). */
void sq_wbatch_run(wbatch_t *b, int ctx);
/* Work pool: model finish, polygons, result encode (an error result when j->err). */
void sq_wjob_finish(wjob_t *j);
void sq_wjob_free(wjob_t *j);
/* Loop thread: a member record's run is over; hands its output (or its error) to its parent.
 * Returns 1 when that was the parent's last outstanding run (its finish may be scheduled). */
int sq_wjob_member_done(wjob_t *m);

#endif
