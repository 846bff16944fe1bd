/* worker/worker_internal: the per-job and per-batch records that travel through the pipeline
 * (loop -> work pool -> executor -> work pool -> loop), the work-pool stage functions, and the
 * contract between worker.c (Redis, lifecycle), pipeline.c (batches) and executor.c (executor
 * threads). Private to worker/. A record is touched by one thread at a time: whoever holds it in
 * its stage; hand-overs go through uv_queue_work or a locked queue + uv_async_send. */
#ifndef SQ_WORKER_INTERNAL_H
#define SQ_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "proto/proto.h"
#include "queue/queue.h"
#include "worker/config.h"
#include "worker/http.h"
#include "worker/metrics.h"

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
  int release;   /* the device failed (SQ_EDEVICE): no result, handed back to its queue */
  int retryable; /* the failure is worth a retry even if err is not a transient code */
  /* Progress inside the run (tiles done / total): written by the executor thread's progress
   * hook, read by the loop thread's progress timer; reported = what was last sent. */
  _Atomic uint32_t steps_done, steps_total;
  uint32_t steps_reported;
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
  size_t ens_n; /* members (0 = a single-model job); ens_own = the index of ms */
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
  /* The batch's two Redis parts (worker.c): the ack of its results and the release of the jobs
   * a failed device could not run. PART_* each; the batch is freed when neither is left. */
  int ack_part, release_part;
  int queued; /* in the worker's ack queue */
  wbatch_t *next;
  wbatch_t *run_prev, *run_next; /* sq_worker.running: handed to an executor, not back yet */
};

enum { PART_NONE = 0, PART_TODO, PART_SENT, PART_DONE };

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

/* ---- the worker (worker.c: Redis, lifecycle; pipeline.c: batches and executors) ---- */

/* What the probes may read (the HTTP thread): a copy the loop thread refreshes. /metrics reads
 * the metrics registry instead, which snapshot_take feeds at the same time. */
typedef struct {
  uint64_t taken_us; /* monotonic; a stale snapshot means a stuck loop */
  sq_session_health_t redis;
  int draining, warm, device_failed;
} sq_worker_snapshot_t;

struct sq_worker {
  const sq_worker_config_t *cfg;
  uv_loop_t loop;
  sq_redis_loop_t hooks; /* the session's libuv glue */
  sq_session_t *session; /* Redis: connections, lease, heartbeat, sweeper, recovery */
  model_slot_t *models;
  size_t nmodels;
  uint32_t held; /* jobs claimed and not yet acked or dropped */
  int claim_inflight, unregister_inflight;
  int draining; /* signal seen: stop claiming, finish what we hold */
  int stopping; /* handles are closing */
  int aborted;  /* uv_stop'ed with work still running (drain timeout, second signal) */
  int exit_code;
  int fatal_code; /* the session's start-up refusal (credentials), with its message */
  char fatal_msg[400];
  uv_timer_t retry_timer, drain_timer, snapshot_timer;
  /* Open-loop claiming: after a claim that brought fewer jobs than asked (the queues ran dry),
   * the worker waits for a wake-up token (new work) at most the shortest batching delay of its
   * models, and claims no sooner than that delay after the short claim; with no token it goes
   * back to the idle wait without an empty claim. A trickle of jobs then costs one claim per
   * batch (fast arrivals) or one claim per job and no empty claims (slow ones). */
  uv_timer_t claim_pause_timer;
  uint32_t claim_asked;      /* jobs asked by the outstanding claim */
  int short_wait;            /* the outstanding wait follows a short claim */
  uint64_t claim_not_before; /* monotonic us: no claim before this (after a short claim) */
  uv_signal_t sigterm, sigint;
  uv_async_t done_async;
  sq_http_t *http;         /* NULL: no endpoint */
  pthread_mutex_t snap_mu; /* guards snap: loop thread writes, the HTTP thread reads */
  sq_worker_snapshot_t snap;
  pthread_mutex_t done_mu;
  wbatch_t *done_head, *done_tail; /* executor -> loop */
  int done_closed;                 /* done_async is closing (under done_mu) */
  wbatch_t *ack_head, *ack_tail;   /* finished batches waiting for (re)sending their ack */
  uint32_t acks_inflight;
  uint64_t jobs_ok, jobs_failed, jobs_dropped, jobs_canceled, jobs_retried, jobs_released, batches;
  uint64_t started_us;
  uint32_t rng;              /* retry jitter (rng_next in worker.c) */
  wbatch_t *running;         /* batches on an executor (progress reports; loop thread) */
  uv_timer_t progress_timer; /* every --progress-interval-ms while a batch runs */
  int progress_inflight;     /* a progress call is outstanding */
  sq_metrics_t *metrics;     /* made by sq_pipeline_open (it knows the models and devices) */
  uv_timer_t depth_timer;    /* reads the queue depth for the metrics (HTTP endpoint on) */
  int depth_inflight;
  int drain_code; /* exit code once drained: 0, or SQ_EXIT_DEVICE after a device error */
  /* Executors (executor.c) -> loop: warm-up progress, read on the loop after done_async. */
  atomic_uint warm_contexts; /* contexts whose warm-up finished */
  uint32_t total_contexts;   /* every model's contexts */
  int ready_logged;          /* the loop logged "warm" */
  atomic_int warm_failed;    /* an error code from a warm-up (first one wins) */
  char warm_msg[256];        /* its message (written before warm_failed is set) */
  int device_failed;         /* loop: SQ_EDEVICE seen; stop, hand jobs back, exit 3 */
};

/* Exit code of a worker that stopped because its device failed (jobs handed back). */
#define SQ_EXIT_DEVICE 3

/* executor.c: one thread per model context; warms its context up, then runs batches. */
int sq_executor_start(sq_worker_t *w, model_slot_t *ms, sq_error_t *err);
/* Stops and joins a model's executor threads (queued batches are run first). */
void sq_executor_stop(model_slot_t *ms);
/* Loop thread: queues a prepared batch for the model's next free context. */
void sq_executor_push(model_slot_t *ms, wbatch_t *b);

/* pipeline.c, loop thread unless noted. */
/* Opens every configured model and starts its executor threads. */
int sq_pipeline_open(sq_worker_t *w, sq_error_t *err);
/* Stops and joins the executors and closes the models (after the loop has closed). */
void sq_pipeline_close(sq_worker_t *w);
/* Initializes the loop handles of the pipeline (batch timers, the executor -> loop async) and
 * starts the executor threads, which warm their contexts up first. */
int sq_pipeline_loop_init(sq_worker_t *w, sq_error_t *err);
/* Closes those handles (worker_stop). */
void sq_pipeline_loop_close(sq_worker_t *w, uv_close_cb on_closed);
/* Takes ownership of n claimed jobs (their members, not the array) into the batchers. */
void sq_pipeline_dispatch(sq_worker_t *w, sq_claimed_t *jobs, size_t n);
/* Starts every due batch (all of them when draining) and re-arms the batch timers. */
void sq_pipeline_flush(sq_worker_t *w);
/* 1 once every model context has finished its warm-up (what /readyz waits for; claims start
 * then). Any thread. */
int sq_pipeline_warm(const sq_worker_t *w);
/* n jobs of ms (NULL: unknown) leave without an ack: counted (jobs_dropped, metrics). */
void sq_pipeline_dropped(sq_worker_t *w, const model_slot_t *ms, uint64_t n);
/* Frees an acked (or abandoned) batch and its jobs; then claims more / checks the drain. */
void sq_pipeline_batch_release(sq_worker_t *w, wbatch_t *b);

/* Loop thread: executors reported (finished batches, warm-ups): hand them on. */
void sq_pipeline_on_done(sq_worker_t *w);

/* worker.c, loop thread. */
/* A batch is finished: queue its ack and the release of the jobs it hands back (sent now if the
 * connection and the lease allow). */
void sq_worker_ack_batch(sq_worker_t *w, wbatch_t *b);
/* Jobs were released: claim more if there is room, finish the drain if it is over. */
void sq_worker_released(sq_worker_t *w);
/* Stops claiming and drains: what is held is finished (or handed back), then the worker
 * unregisters and exits with `code` (0 for a signal, SQ_EXIT_DEVICE after a device error). */
void sq_worker_drain(sq_worker_t *w, int code, const char *why);
/* Sends the progress of running jobs (one script call; dropped when Redis is not ready or a
 * progress call is outstanding: the next tick reports the newer state anyway). Returns 1 sent. */
int sq_worker_progress(sq_worker_t *w, const sq_progress_item_t *items, size_t n);
/* A claimed job is given up without an ack (out of memory): the session hands it back. */
void sq_worker_forget(sq_worker_t *w, const char *id);

#endif
