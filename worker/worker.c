/* worker/worker: the loop thread's story. Connect (command + blocking connection) -> heartbeat
 * (lease) -> claim up to the flow budget -> hand the jobs to the pipeline (pipeline.c: batchers,
 * work pool, executors) -> one ack per finished batch (kept and resent across reconnects) ->
 * claim again, or BRPOP the wake-up keys when the queues are empty. SIGTERM/SIGINT drains.
 * Threads: loop thread only. */
#include "worker/worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "worker/http.h"
#include "worker/worker_internal.h"

#define RETRY_MS 1000
#define MAX_ACK_ATTEMPTS 50

static void maybe_claim(sq_worker_t *w);
static void flush_acks(sq_worker_t *w);
static void check_drained(sq_worker_t *w);
static void on_retry(uv_timer_t *t);
static void worker_stop(sq_worker_t *w, int code);

/* ---- acks ---- */

/* xorshift32: the jitter of retry delays (the loop thread only; not for anything secret). */
static uint32_t rng_next(sq_worker_t *w) {
  uint32_t x = w->rng ? w->rng : 0x9e3779b9u;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  w->rng = x;
  return x;
}

static void ack_push(sq_worker_t *w, wbatch_t *b, int front) {
  if (b->queued) return;
  b->queued = 1;
  b->next = NULL;
  if (!w->ack_head) {
    w->ack_head = w->ack_tail = b;
  } else if (front) {
    b->next = w->ack_head;
    w->ack_head = b;
  } else {
    w->ack_tail->next = b;
    w->ack_tail = b;
  }
}

/* The batch's jobs leave this worker without an ack: the session hands them back. */
static void batch_abandon(sq_worker_t *w, wbatch_t *b) {
  for (size_t i = 0; i < b->n; i++)
    if (!b->jobs[i]->parent) sq_worker_forget(w, b->jobs[i]->c.id); /* members share the id */
  sq_pipeline_dropped(w, b->ms, b->n);
  sq_pipeline_batch_release(w, b);
}

/* Both Redis parts of b are done (or were never needed): it is freed. */
static void batch_parts_done(sq_worker_t *w, wbatch_t *b) {
  if (b->ack_part == PART_DONE || b->ack_part == PART_NONE)
    if (b->release_part == PART_DONE || b->release_part == PART_NONE)
      sq_pipeline_batch_release(w, b);
}

/* A part of b failed to reach Redis: keep the batch and resend the part later. */
static void part_failed(sq_worker_t *w, wbatch_t *b, int *part, int status, const char *what) {
  *part = PART_TODO;
  b->ack_attempts++;
  if (b->ack_attempts >= MAX_ACK_ATTEMPTS) {
    if (b->ack_part == PART_SENT || b->release_part == PART_SENT) {
      ack_push(w, b, 1); /* the other part still answers; give up then */
      return;
    }
    sq_log_error("worker", "ack failed too often; handing the jobs back",
                 "model=%s size=%zu part=%s code=%s", b->ms ? b->ms->name : "-", b->n, what,
                 sq_error_name(status));
    batch_abandon(w, b);
    return;
  }
  /* Keep the batch and resend once the connection/lease is back (the session says resume). */
  ack_push(w, b, 1);
  if (status != SQ_ELEASE_LOST && !w->stopping && sq_session_can_ack(w->session))
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
}

static void on_ack(sq_session_t *s, int status, const int *per_job, size_t n, void *data) {
  wbatch_t *b = data;
  sq_worker_t *w = b->w;
  (void)s;
  w->acks_inflight--;
  if (status != 0) {
    part_failed(w, b, &b->ack_part, status, "ack");
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < b->n && k < n; i++) {
    if (!b->jobs[i]->result) continue;
    const wjob_t *j = b->jobs[i];
    sq_outcome_t outcome = j->err ? SQ_OUTCOME_FAILED : SQ_OUTCOME_OK;
    switch (per_job[k]) {
      case SQ_CODE_ACK_NOT_OURS:
        w->jobs_dropped++;
        outcome = SQ_OUTCOME_DROPPED;
        sq_log_warn("worker", "ack refused: job no longer ours (swept), result dropped", "id=%s",
                    j->c.id);
        break;
      case SQ_CODE_ACK_DUPLICATE:
        outcome = SQ_OUTCOME_DROPPED; /* our result was not the one recorded */
        sq_log_debug("worker", "duplicate: job already had a result", "id=%s", j->c.id);
        break;
      case SQ_CODE_ACK_CANCELED:
        w->jobs_canceled++;
        outcome = SQ_OUTCOME_CANCELED;
        sq_log_info("worker", "job was canceled while it ran; its result is canceled", "id=%s",
                    j->c.id);
        break;
      case SQ_CODE_ACK_RETRYING:
        w->jobs_retried++;
        outcome = SQ_OUTCOME_RETRIED;
        break;
    }
    /* The outcome is the ack's answer, not the job's own verdict: a retried or canceled job is
     * not a failure, and a result another worker wrote first is not ours. */
    if (b->ms)
      sq_metrics_job_acked(w->metrics, (size_t)(b->ms - w->models), outcome, &j->t, j->err);
    k++;
  }
  b->ack_part = PART_DONE;
  batch_parts_done(w, b);
}

static void on_release(sq_session_t *s, int status, long long value, void *data) {
  wbatch_t *b = data;
  sq_worker_t *w = b->w;
  (void)s;
  w->acks_inflight--;
  if (status != 0) {
    part_failed(w, b, &b->release_part, status, "release");
    return;
  }
  size_t asked = 0;
  for (size_t i = 0; i < b->n; i++) asked += b->jobs[i]->release != 0;
  sq_log_info("worker", "jobs handed back to their queues", "model=%s released=%lld not_ours=%lld",
              b->ms ? b->ms->name : "-", value, (long long)asked - value);
  b->release_part = PART_DONE;
  batch_parts_done(w, b);
}

void sq_worker_ack_batch(sq_worker_t *w, wbatch_t *b) {
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (j->result)
      b->ack_part = PART_TODO;
    else if (j->release)
      b->release_part = PART_TODO;
    else if (!j->parent)
      sq_worker_forget(w, j->c.id); /* no result to ack (out of memory): hand it back */
  }
  if (b->ack_part == PART_NONE && b->release_part == PART_NONE) {
    batch_abandon(w, b); /* no result could be encoded (out of memory) */
    return;
  }
  ack_push(w, b, 0);
  flush_acks(w);
}

static void on_progress(sq_session_t *s, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)s;
  (void)value;
  w->progress_inflight = 0;
  if (status != 0 && status != SQ_ELEASE_LOST)
    sq_log_debug("worker", "progress report failed", "code=%s", sq_error_name(status));
}

int sq_worker_progress(sq_worker_t *w, const sq_progress_item_t *items, size_t n) {
  if (w->progress_inflight || w->stopping || !sq_session_can_ack(w->session)) return 0;
  if (sq_session_progress(w->session, items, n, on_progress, w) != 0) return 0;
  w->progress_inflight = 1;
  return 1;
}

void sq_worker_released(sq_worker_t *w) {
  maybe_claim(w);
  check_drained(w);
}

void sq_worker_forget(sq_worker_t *w, const char *id) {
  sq_session_forget(w->session, id);
}

/* Sends b's ack; 0 when sent, else the batch stays queued. */
static int send_ack(sq_worker_t *w, wbatch_t *b) {
  sq_ack_item_t *items = calloc(b->n, sizeof(*items));
  if (!items) return SQ_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (!j->result) continue;
    items[k].id = j->c.id;
    items[k].result = j->result;
    items[k].result_len = j->result_len;
    items[k].error_code = j->err;
    items[k].epoch = j->c.epoch;
    items[k].off = j->c.off;
    items[k].attempt = j->c.attempt;
    if (j->err && (j->retryable || sq_error_transient(j->err)))
      items[k].retry_ms = sq_queue_retry_delay_ms(j->c.attempt, w->cfg->retry_base_ms,
                                                  w->cfg->retry_max_ms, rng_next(w));
    k++;
  }
  int rc = sq_session_ack(w->session, items, k, on_ack, b);
  free(items);
  return rc;
}

/* Sends the release of b's jobs a failed device could not run. */
static int send_release(sq_worker_t *w, wbatch_t *b) {
  const char **ids = calloc(b->n, sizeof(*ids));
  if (!ids) return SQ_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->jobs[i]->release) ids[k++] = b->jobs[i]->c.id;
  int rc = sq_session_release(w->session, ids, k, on_release, b);
  free(ids);
  return rc;
}

static void flush_acks(sq_worker_t *w) {
  while (w->ack_head && !w->stopping && sq_session_can_ack(w->session)) {
    wbatch_t *b = w->ack_head;
    w->ack_head = b->next;
    if (!w->ack_head) w->ack_tail = NULL;
    b->next = NULL;
    b->queued = 0;
    int *parts[2] = {&b->ack_part, &b->release_part};
    for (int p = 0; p < 2; p++) {
      if (*parts[p] != PART_TODO) continue;
      int rc = p == 0 ? send_ack(w, b) : send_release(w, b);
      if (rc != 0) {
        ack_push(w, b, 1);
        return;
      }
      *parts[p] = PART_SENT;
      w->acks_inflight++;
    }
  }
}

/* ---- claiming ---- */

/* The pause after a short claim: the shortest max_delay of our models (at least 1 ms). */
static uint64_t claim_pause_ms(const sq_worker_t *w) {
  uint64_t us = UINT64_MAX;
  for (size_t m = 0; m < w->nmodels; m++)
    if (w->models[m].max_delay_us < us) us = w->models[m].max_delay_us;
  uint64_t ms = us == UINT64_MAX ? 1 : (us + 999) / 1000;
  return ms ? ms : 1;
}

static void on_claim_pause(uv_timer_t *t) {
  maybe_claim(t->data);
}

static void start_wait(sq_worker_t *w);

static void on_wait(sq_session_t *s, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)s;
  int after_short = w->short_wait;
  w->short_wait = 0;
  if (w->draining || w->stopping) return;
  if (status != 0) {
    if (sq_session_can_wait(w->session)) uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    return; /* else: the session's resume (blocking connection back) restarts the cycle */
  }
  if (after_short && value == 0) {
    start_wait(w); /* no new work within the pause: idle, without an empty claim */
    return;
  }
  uint64_t now = sq_clock_mono_us();
  if (now < w->claim_not_before)
    uv_timer_start(&w->claim_pause_timer, on_claim_pause, (w->claim_not_before - now + 999) / 1000,
                   0);
  else
    maybe_claim(w);
}

static void start_wait(sq_worker_t *w) {
  if (w->draining || w->stopping || !sq_session_can_wait(w->session)) return;
  if (sq_session_wait(w->session, on_wait, w) != 0)
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
}

/* After a short claim: wait for new work (a wake-up token) at most the pause. */
static void start_short_wait(sq_worker_t *w) {
  uint64_t pause_ms = claim_pause_ms(w);
  w->claim_not_before = sq_clock_mono_us() + pause_ms * 1000;
  if (w->draining || w->stopping) return;
  if (!sq_session_can_wait(w->session) ||
      sq_session_wait_ms(w->session, (uint32_t)pause_ms, on_wait, w) != 0) {
    /* The blocking connection is busy or down: pause, then claim. */
    uv_timer_start(&w->claim_pause_timer, on_claim_pause, pause_ms, 0);
    return;
  }
  w->short_wait = 1;
}

static void on_claim(sq_session_t *s, int status, sq_claimed_t *jobs, size_t n, void *data) {
  sq_worker_t *w = data;
  (void)s;
  w->claim_inflight = 0;
  if (status != 0) {
    /* A lost lease or a lost reply: the session recovers and says resume. */
    if (status != SQ_ELEASE_LOST && status != SQ_EREDIS && !w->stopping)
      uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    check_drained(w);
    return;
  }
  if (n > 0) sq_log_debug("worker", "claimed", "n=%zu", n);
  sq_pipeline_dispatch(w, jobs, n);
  free(jobs);
  if (n == 0) {
    start_wait(w);
    check_drained(w);
  } else if (n < w->claim_asked && !w->stopping) {
    start_short_wait(w);
  } else {
    maybe_claim(w);
  }
}

static void maybe_claim(sq_worker_t *w) {
  /* Not before every context is warm: a job must never meet a cold shape. */
  if (w->draining || w->stopping || w->claim_inflight || !sq_session_can_claim(w->session) ||
      uv_is_active((uv_handle_t *)&w->claim_pause_timer) || w->short_wait ||
      sq_clock_mono_us() < w->claim_not_before || !sq_pipeline_warm(w))
    return;
  /* One claim may bring jobs of any of our models, so claim no more than the model with the
   * least room can take: no model ever holds more than max_inflight_batches of its batches. */
  uint32_t budget = UINT32_MAX;
  for (size_t m = 0; m < w->nmodels; m++) {
    uint32_t b = sq_flow_claim_budget(w->cfg->max_inflight_batches, w->models[m].max_batch,
                                      w->models[m].held);
    if (b < budget) budget = b;
  }
  if (budget == 0 || budget == UINT32_MAX) return;
  if (sq_session_claim(w->session, budget, w->cfg->max_claim_bytes, on_claim, w) != 0) {
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    return;
  }
  w->claim_inflight = 1;
  w->claim_asked = budget;
}

static void on_retry(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  flush_acks(w);
  maybe_claim(w);
  check_drained(w);
}

static void on_session_resume(sq_session_t *s, void *data) {
  sq_worker_t *w = data;
  (void)s;
  flush_acks(w);
  maybe_claim(w);
  check_drained(w);
}

static void on_session_fatal(sq_session_t *s, int code, const char *msg, void *data) {
  sq_worker_t *w = data;
  (void)s;
  sq_log_error("worker", "cannot start: redis refused us", "code=%s detail=\"%s\"",
               sq_error_name(code), msg);
  w->fatal_code = code;
  snprintf(w->fatal_msg, sizeof w->fatal_msg, "%s", msg);
  worker_stop(w, 1);
}

/* ---- lifecycle ---- */

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void worker_stop(sq_worker_t *w, int code) {
  if (w->stopping) return;
  w->stopping = 1;
  w->exit_code = code;
  uv_close((uv_handle_t *)&w->retry_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->claim_pause_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->depth_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->sigterm, on_handle_closed);
  uv_close((uv_handle_t *)&w->sigint, on_handle_closed);
  /* Closing the watchers restored the default action; a signal during the last milliseconds
   * of a clean exit must not turn it into a kill. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  sq_pipeline_loop_close(w, on_handle_closed);
  sq_session_close(w->session, NULL, NULL); /* freed once the loop has released it */
  uv_close((uv_handle_t *)&w->snapshot_timer, on_handle_closed);
  sq_http_stop(w->http); /* joins MHD's thread: no handler runs after this */
  w->http = NULL;
}

static void on_unregister(sq_session_t *s, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)s;
  w->unregister_inflight = 0;
  if (w->stopping) return;
  if (status != 0) {
    sq_log_warn("worker", "unregister failed; retrying", "code=%s", sq_error_name(status));
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    return;
  }
  sq_log_info("worker", "unregistered", "lease_removed=%lld", value);
  sq_log_info("worker", "drained",
              "jobs_ok=%" PRIu64 " jobs_failed=%" PRIu64 " jobs_dropped=%" PRIu64
              " jobs_released=%" PRIu64 " batches=%" PRIu64 " uptime_s=%.1f exit_code=%d",
              w->jobs_ok, w->jobs_failed, w->jobs_dropped, w->jobs_released, w->batches,
              (double)(sq_clock_mono_us() - w->started_us) / 1e6, w->drain_code);
  worker_stop(w, w->drain_code);
}

static void check_drained(sq_worker_t *w) {
  if (!w->draining || w->stopping || w->held > 0 || w->claim_inflight || w->unregister_inflight)
    return;
  int rc = sq_session_unregister(w->session, on_unregister, w);
  if (rc == 1) {
    /* Already unregistered (or never registered): nothing of ours is left to ack. */
    sq_log_info("worker", "drained",
                "jobs_ok=%" PRIu64 " jobs_failed=%" PRIu64 " jobs_released=%" PRIu64
                " exit_code=%d",
                w->jobs_ok, w->jobs_failed, w->jobs_released, w->drain_code);
    worker_stop(w, w->drain_code);
    return;
  }
  if (rc == 0) w->unregister_inflight = 1; /* else: resumes after reconnect + heartbeat */
}

static void on_drain_timeout(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  sq_log_error("worker", "drain timed out; leaving the remaining jobs to the sweeper",
               "held=%u acks_pending=%s timeout_s=%u", w->held, w->ack_head ? "yes" : "no",
               w->cfg->drain_timeout_s);
  w->exit_code = w->drain_code ? w->drain_code : 1;
  w->aborted = 1;
  uv_stop(&w->loop);
}

void sq_worker_drain(sq_worker_t *w, int code, const char *why) {
  if (code > w->drain_code) w->drain_code = code;
  if (w->draining || w->stopping) return;
  w->draining = 1;
  sq_log_info("worker", "draining", "reason=\"%s\" held=%u timeout_s=%u", why, w->held,
              w->cfg->drain_timeout_s);
  uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->cfg->drain_timeout_s * 1000, 0);
  sq_pipeline_flush(w);
  check_drained(w);
}

static void on_signal(uv_signal_t *s, int signum) {
  sq_worker_t *w = s->data;
  if (w->draining) {
    sq_log_warn("worker", "second signal: exiting now", "signal=%d held=%u", signum, w->held);
    w->exit_code = 1;
    w->aborted = 1;
    uv_stop(&w->loop);
    return;
  }
  char why[32];
  snprintf(why, sizeof why, "signal %d", signum);
  sq_worker_drain(w, 0, why);
}

/* ---- health and metrics ----
 * The endpoint runs on libmicrohttpd's thread; it reads the snapshot the loop thread publishes
 * every SNAPSHOT_MS (and whenever it changes something the probes report), never loop state. */

#define SNAPSHOT_MS 200
#define LOOP_STUCK_US 5000000 /* /livez: the loop has not published a snapshot for this long */

static void on_depth(sq_session_t *s, int status, const sq_queue_depth_t *depth, void *data) {
  sq_worker_t *w = data;
  (void)s;
  w->depth_inflight = 0;
  if (status == 0) sq_metrics_set_depth(w->metrics, depth);
}

/* The queue depth is a Redis fact; reading it every few seconds lets autoscalers see every
 * tenant's queue through the workers' /metrics (one small read-only script per interval). */
static void on_depth_timer(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  if (w->depth_inflight || w->stopping) return;
  if (sq_session_depth(w->session, on_depth, w) == 0) w->depth_inflight = 1;
}

/* Loop thread: copies what the probes report, and hands the loop's own state to the metrics
 * registry (which has its own mutex: /metrics never takes snap_mu). */
static void snapshot_take(sq_worker_t *w) {
  sq_worker_snapshot_t *s = &w->snap;
  pthread_mutex_lock(&w->snap_mu);
  s->taken_us = sq_clock_mono_us();
  sq_session_health(w->session, &s->redis);
  s->draining = w->draining;
  s->warm = sq_pipeline_warm(w);
  s->device_failed = w->device_failed;
  pthread_mutex_unlock(&w->snap_mu);
  /* Model state first, the worker's (segq_ready among it) last: a scrape that sees ready sees
   * the memory policy the warm-ups left (each set takes the registry's mutex on its own). */
  for (size_t m = 0; m < w->nmodels; m++) {
    sq_metrics_set_model(w->metrics, m, w->models[m].held, sq_batcher_len(w->models[m].batcher));
    if (!w->models[m].model) continue;
    sq_model_stats_t st = {0};
    sq_model_stats(w->models[m].model, &st); /* a few mutexes: cheap every 200 ms */
    sq_metrics_set_model_stats(w->metrics, m, &st);
  }
  const sq_session_health_t *h = &s->redis; /* only the loop thread writes it */
  sq_metrics_worker_t mw = {
      .command_ready = h->command_ready,
      .blocking_ready = h->blocking_ready,
      .lease_ready = h->lease_ready,
      .lease_ok = h->lease_ok,
      .draining = w->draining,
      .ready = s->warm,
      .device_failed = w->device_failed,
      .command_connects = h->command_connects,
      .blocking_connects = h->blocking_connects,
      .lease_connects = h->lease_connects,
      .swept_jobs = h->swept_jobs,
      .batches = w->batches,
      .held = w->held,
  };
  sq_metrics_set_worker(w->metrics, &mw);
}

static void on_snapshot_timer(uv_timer_t *t) {
  snapshot_take(t->data);
}

/* Why the worker is not alive / healthy / ready, or NULL. s is read under snap_mu. */
static const char *livez_why(const sq_worker_snapshot_t *s, uint64_t now, char *buf, size_t cap) {
  if (now - s->taken_us > LOOP_STUCK_US) {
    snprintf(buf, cap, "event loop stuck for %.1f s", (double)(now - s->taken_us) / 1e6);
    return buf;
  }
  return NULL;
}

static const char *healthz_why(const sq_worker_snapshot_t *s, uint64_t now, char *buf, size_t cap) {
  const char *why = livez_why(s, now, buf, cap);
  if (why) return why;
  const sq_session_health_t *h = &s->redis;
  if (s->device_failed) return "device failed";
  if (h->lease_ever && now > h->lease_until_us) {
    snprintf(buf, cap, "lease lost (last renewed %.1f s ago)",
             (double)(now - (h->lease_until_us - h->lease_ttl_ms * 1000)) / 1e6);
    return buf;
  }
  if (now - h->last_reply_us > h->reply_budget_ms * 1000) {
    snprintf(buf, cap, "redis unreachable for %.1f s (watchdog %.1f s)",
             (double)(now - h->last_reply_us) / 1e6, (double)h->reply_budget_ms / 1e3);
    return buf;
  }
  return NULL;
}

static const char *readyz_why(const sq_worker_snapshot_t *s, uint64_t now, char *buf, size_t cap) {
  const char *why = healthz_why(s, now, buf, cap); /* not healthy: not ready either */
  if (why) return why;
  const sq_session_health_t *h = &s->redis;
  return !h->command_ready    ? "redis command connection down"
         : !h->blocking_ready ? "redis blocking connection down"
         : !h->lease_ready    ? "redis lease connection down"
         : !h->lease_ok       ? "no lease"
         : h->recovering      ? "reconciling the in-flight list"
         : s->draining        ? "draining"
         : !s->warm           ? "warming up"
                              : NULL;
}

/* MHD's thread. */
static int http_handler(const char *path, char *body, size_t cap, const char **ctype, void *data) {
  sq_worker_t *w = data;
  if (strcmp(path, "/metrics") == 0) {
    /* The registry (worker/metrics.c) holds what the threads observed and what the loop last
     * handed it (snapshot_take); it renders under its own mutex. */
    *ctype = SQ_METRICS_CONTENT_TYPE;
    if (sq_metrics_render(w->metrics, body, cap) >= cap) {
      snprintf(body, cap, "metrics exceed the response buffer (%zu bytes)\n", cap);
      return 500;
    }
    return 200;
  }
  char buf[160];
  uint64_t now = sq_clock_mono_us();
  int code = 404;
  pthread_mutex_lock(&w->snap_mu);
  const sq_worker_snapshot_t *s = &w->snap;
  const char *why = NULL;
  if (strcmp(path, "/livez") == 0) {
    why = livez_why(s, now, buf, sizeof buf);
    code = why ? 503 : 200;
  } else if (strcmp(path, "/healthz") == 0) {
    why = healthz_why(s, now, buf, sizeof buf);
    code = why ? 503 : 200;
  } else if (strcmp(path, "/readyz") == 0) {
    why = readyz_why(s, now, buf, sizeof buf);
    code = why ? 503 : 200;
  }
  /* why points into buf (or a literal), so the text is made before anything changes. */
  if (code == 404)
    snprintf(body, cap, "not found (try /livez, /readyz, /healthz or /metrics)\n");
  else
    snprintf(body, cap, "%s\n", why ? why : "ok");
  pthread_mutex_unlock(&w->snap_mu);
  return code;
}

int sq_worker_run(const sq_worker_config_t *cfg, sq_error_t *err) {
  sq_error_clear(err);
  sq_worker_t *w = calloc(1, sizeof(*w));
  if (!w) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return 1;
  }
  w->cfg = cfg;
  w->started_us = sq_clock_mono_us();
  w->rng = (uint32_t)(w->started_us ^ ((uint64_t)getpid() << 16)) | 1u;
  pthread_mutex_init(&w->done_mu, NULL);
  int rc = sq_pipeline_open(w, err);
  if (rc) {
    sq_pipeline_close(w);
    pthread_mutex_destroy(&w->done_mu);
    free(w);
    return 1;
  }
  uv_loop_init(&w->loop);
  uv_timer_init(&w->loop, &w->retry_timer);
  uv_timer_init(&w->loop, &w->claim_pause_timer);
  w->claim_pause_timer.data = w;
  uv_timer_init(&w->loop, &w->drain_timer);
  uv_timer_init(&w->loop, &w->snapshot_timer);
  uv_timer_init(&w->loop, &w->depth_timer);
  w->retry_timer.data = w->drain_timer.data = w->snapshot_timer.data = w->depth_timer.data = w;
  pthread_mutex_init(&w->snap_mu, NULL);
  uv_signal_init(&w->loop, &w->sigterm);
  uv_signal_init(&w->loop, &w->sigint);
  w->sigterm.data = w->sigint.data = w;
  uv_signal_start(&w->sigterm, on_signal, SIGTERM);
  uv_signal_start(&w->sigint, on_signal, SIGINT);
  int prc = sq_pipeline_loop_init(w, err);

  sq_session_config_t sc = {0};
  sc.prefix = cfg->prefix;
  sc.worker_id = cfg->worker_id;
  sc.models = (const char *const *)cfg->model_names;
  sc.nmodels = cfg->nmodels;
  sc.lease_ttl_ms = cfg->lease_ttl_ms;
  sc.max_attempts = cfg->max_attempts;
  sc.result_ttl_s = cfg->result_ttl_s;
  sc.dead_ttl_s = cfg->dead_ttl_s;
  sc.wait_timeout_s = cfg->wait_timeout_s;
  sc.wait_replicas = cfg->wait_replicas;
  sc.wait_replicas_timeout_ms = cfg->wait_replicas_timeout_ms;
  sq_session_events_t se = {.resume = on_session_resume, .fatal = on_session_fatal};
  sq_redis_loop_uv(&w->hooks, &w->loop);
  w->session = sq_session_new(&cfg->redis, &w->hooks, &sc, &se, w, err);
  if (!w->session) {
    /* Nothing was sent yet: close what the loop holds and leave. */
    worker_stop(w, 1);
    w->stopping = 1;
  } else if (prc) {
    sq_log_error("worker", "cannot start the executors", "msg=\"%s\"", err ? err->msg : "");
    worker_stop(w, 1);
  }

  if (cfg->http_port && w->session) {
    snapshot_take(w);
    uv_timer_start(&w->snapshot_timer, on_snapshot_timer, SNAPSHOT_MS, SNAPSHOT_MS);
    sq_http_limits_t lim = {cfg->http_max_connections, cfg->http_timeout_s};
    sq_error_t herr = {0};
    w->http = sq_http_start(cfg->http_host, (int)cfg->http_port, &lim, http_handler, w, &herr);
    if (!w->http)
      sq_log_error("worker", "cannot serve HTTP; continuing without it", "addr=%s:%u detail=\"%s\"",
                   cfg->http_host, cfg->http_port, herr.msg);
    else
      sq_log_info("worker", "serving /livez, /readyz, /healthz and /metrics",
                  "addr=%s:%u max_connections=%u timeout_s=%u", cfg->http_host, cfg->http_port,
                  cfg->http_max_connections, cfg->http_timeout_s);
    uv_timer_start(&w->depth_timer, on_depth_timer, 100, cfg->queue_depth_interval_ms);
  }
  uv_run(&w->loop, UV_RUN_DEFAULT);
  int code = w->exit_code;
  if (w->aborted) {
    /* Work is still running on other threads: leave without freeing what they use. The
     * process exits right after; the sweeper recovers our in-flight jobs. */
    return code;
  }
  int lc = uv_loop_close(&w->loop);
  if (lc != 0) {
    sq_log_error("worker", "loop did not close cleanly", "err=%s", uv_strerror(lc));
    code = 1;
  }
  if (w->fatal_code && err && !err->code) sq_error_set(err, w->fatal_code, "%s", w->fatal_msg);
  sq_pipeline_close(w);
  pthread_mutex_destroy(&w->done_mu);
  pthread_mutex_destroy(&w->snap_mu);
  free(w);
  sq_log_info("worker", "exit", "code=%d", code);
  return code;
}
