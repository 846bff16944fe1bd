/* worker/worker: the loop thread's story. Connect (command + blocking connection) -> heartbeat
 * (lease) -> claim up to the flow budget -> hand the jobs to the pipeline (pipeline.c: batchers,
 * work pool, executors) -> one ack per finished batch (kept and resent across reconnects) ->
 * claim again, or BRPOP the wake-up keys when the queues are empty. SIGTERM/SIGINT drains.
 * Threads: loop thread only. */
#include "worker/worker.h"

#include <hiredis/async.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "worker/conn.h"
#include "worker/http.h"
#include "worker/worker_internal.h"

#define RETRY_MS 1000
#define MAX_ACK_ATTEMPTS 50
#define RESYNC_TICK_MS 250

static void maybe_claim(sq_worker_t *w);
static void flush_acks(sq_worker_t *w);
static void check_drained(sq_worker_t *w);
static void heartbeat_now(sq_worker_t *w);
static void on_retry(uv_timer_t *t);
static void on_resync_tick(uv_timer_t *t);
static void on_resync_unregister(sq_queue_t *q, int status, long long value, void *data);
static void on_heartbeat_timer(uv_timer_t *t);

/* ---- Redis operations (loop thread) ---- */

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
    sq_log_error("worker", "ack failed too often; jobs left to the sweeper",
                 "model=%s size=%zu part=%s code=%s", b->ms ? b->ms->name : "-", b->n, what,
                 sq_error_name(status));
    w->jobs_dropped += b->n;
    sq_pipeline_batch_release(w, b);
    return;
  }
  ack_push(w, b, 1);
  if (status == SQ_ELEASE_LOST) {
    sq_log_warn("worker", "ack refused: lease lost; re-registering", "size=%zu part=%s", b->n,
                what);
    w->lease_ok = 0;
    heartbeat_now(w);
  } else if (w->cmd.ready && !w->stopping) {
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
  }
}

static void on_ack(sq_queue_t *q, int status, const int *per_job, size_t n, void *data) {
  wbatch_t *b = data;
  sq_worker_t *w = b->w;
  (void)q;
  sq_conn_replied(&w->cmd);
  w->acks_inflight--;
  if (status != 0) {
    part_failed(w, b, &b->ack_part, status, "ack");
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < b->n && k < n; i++) {
    if (!b->jobs[i]->result) continue;
    if (per_job[k] == 0) {
      w->jobs_dropped++;
      sq_log_warn("worker", "ack refused: job no longer ours (swept), result dropped", "id=%s",
                  b->jobs[i]->c.id);
    } else if (per_job[k] == 2) {
      sq_log_debug("worker", "duplicate: job already had a result", "id=%s", b->jobs[i]->c.id);
    }
    k++;
  }
  b->ack_part = PART_DONE;
  batch_parts_done(w, b);
}

static void on_release(sq_queue_t *q, int status, const int *per_job, size_t n, void *data) {
  wbatch_t *b = data;
  sq_worker_t *w = b->w;
  (void)q;
  sq_conn_replied(&w->cmd);
  w->acks_inflight--;
  if (status != 0) {
    part_failed(w, b, &b->release_part, status, "release");
    return;
  }
  size_t back = 0, other = 0;
  for (size_t i = 0; i < n; i++) per_job[i] == 1 ? back++ : other++;
  sq_log_info("worker", "jobs handed back to their queues", "model=%s released=%zu not_ours=%zu",
              b->ms ? b->ms->name : "-", back, other);
  b->release_part = PART_DONE;
  batch_parts_done(w, b);
}

void sq_worker_ack_batch(sq_worker_t *w, wbatch_t *b) {
  for (size_t i = 0; i < b->n; i++) {
    if (b->jobs[i]->result) b->ack_part = PART_TODO;
    if (b->jobs[i]->release) b->release_part = PART_TODO;
  }
  if (b->ack_part == PART_NONE && b->release_part == PART_NONE) {
    w->jobs_dropped += b->n; /* no result and nothing to hand back: the sweeper's */
    sq_pipeline_batch_release(w, b);
    return;
  }
  ack_push(w, b, 0);
  flush_acks(w);
}

void sq_worker_released(sq_worker_t *w) {
  maybe_claim(w);
  check_drained(w);
}

/* Sends b's ack; 0 when sent (or nothing to send), else leave it queued. */
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
    k++;
  }
  int rc = sq_queue_ack(w->q, w->cmd.ac, items, k, on_ack, b);
  free(items);
  return rc;
}

static int send_release(sq_worker_t *w, wbatch_t *b) {
  const char **ids = calloc(b->n, sizeof(*ids));
  if (!ids) return SQ_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->jobs[i]->release) ids[k++] = b->jobs[i]->c.id;
  int rc = sq_queue_release(w->q, w->cmd.ac, ids, k, on_release, b);
  free(ids);
  return rc;
}

static void flush_acks(sq_worker_t *w) {
  while (w->ack_head && w->cmd.ready && w->lease_ok && !w->stopping) {
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
      sq_conn_sent(&w->cmd);
    }
  }
}

static void on_wait(sq_queue_t *q, int status, long long value, void *data);

static void start_wait(sq_worker_t *w) {
  if (w->draining || w->stopping || w->wait_inflight || !w->blk.ready) return;
  if (sq_queue_wait(w->q, w->blk.ac, (double)w->cfg->wait_timeout_s, on_wait, w) != 0) {
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    return;
  }
  w->wait_inflight = 1;
  sq_conn_sent(&w->blk);
}

static void on_wait(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  (void)value;
  w->wait_inflight = 0;
  sq_conn_replied(&w->blk);
  if (w->draining || w->stopping) return;
  if (status == 0)
    maybe_claim(w);
  else if (w->blk.ready)
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
  /* else: the blocking connection's on_ready resumes the cycle */
}

static void on_claim(sq_queue_t *q, int status, sq_claimed_t *jobs, size_t n, void *data) {
  sq_worker_t *w = data;
  (void)q;
  w->claim_inflight = 0;
  sq_conn_replied(&w->cmd);
  if (status == SQ_ELEASE_LOST) {
    sq_log_warn("worker", "claim refused: lease lost; re-registering", NULL);
    w->lease_ok = 0;
    heartbeat_now(w);
    return;
  }
  if (status != 0) {
    if (status == SQ_EREDIS && w->resync == RESYNC_NONE && !w->stopping) {
      sq_log_warn("worker", "claim reply lost; will check the in-flight list for orphans", NULL);
      w->resync = RESYNC_NEEDED;
      uv_timer_start(&w->resync_timer, on_resync_tick, RESYNC_TICK_MS, RESYNC_TICK_MS);
    } else if (w->cmd.ready && !w->stopping) {
      uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    }
    check_drained(w);
    return;
  }
  if (n > 0) sq_log_debug("worker", "claimed", "n=%zu", n);
  sq_pipeline_dispatch(w, jobs, n);
  free(jobs);
  if (n == 0) {
    start_wait(w);
    check_drained(w);
  } else {
    maybe_claim(w);
  }
}

static void resync_done(sq_worker_t *w) {
  w->resync = RESYNC_NONE;
  uv_timer_stop(&w->resync_timer);
  heartbeat_now(w); /* re-registers (after a self-sweep) and resumes claiming */
  maybe_claim(w);
}

static void on_resync_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  sq_worker_t *w = privdata;
  redisReply *r = reply;
  (void)ac;
  w->resync_cmd = 0;
  if (!r) return; /* connection gone: the next tick retries */
  sq_conn_replied(&w->cmd);
  if (w->stopping || r->type != REDIS_REPLY_INTEGER) return;
  long long orphans = r->integer;
  if (orphans == 0) {
    if (w->resync == RESYNC_SWEEPING)
      sq_log_info("worker", "orphaned jobs requeued; registering again", NULL);
    resync_done(w);
    return;
  }
  if (w->resync == RESYNC_NEEDED) {
    /* We hold nothing, so every id in the list is an orphan. */
    sq_log_warn("worker",
                "jobs in our in-flight list that we never received; handing them to the sweeper",
                "jobs=%lld", orphans);
    w->resync_cmd = 1;
    if (sq_queue_unregister(w->q, w->cmd.ac, on_resync_unregister, w) != 0) {
      w->resync_cmd = 0;
      return;
    }
    sq_conn_sent(&w->cmd);
  }
}

static void on_resync_unregister(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  (void)value;
  w->resync_cmd = 0;
  sq_conn_replied(&w->cmd);
  if (status == 0 && w->resync == RESYNC_NEEDED) {
    w->resync = RESYNC_SWEEPING;
    w->lease_ok = 0;
    w->lease_dropped = 1; /* we removed it ourselves: registering again is no expiry */
  }
}

static void on_resync_sweep(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  (void)status;
  (void)value;
  w->sweep_inflight = 0;
  sq_conn_replied(&w->cmd);
}

static void on_resync_tick(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  if (w->stopping || w->resync_cmd || !w->cmd.ready) return;
  if (w->resync == RESYNC_NEEDED) {
    /* Wait until we hold nothing: then the in-flight list holds only orphans. */
    if (w->held > 0 || w->claim_inflight || !w->lease_ok) return;
  } else if (w->resync == RESYNC_SWEEPING && !w->sweep_inflight) {
    /* The sweep lock may be held by another worker's sweeper; it sweeps us too. */
    if (sq_queue_sweep(w->q, w->cmd.ac, w->cfg->lease_ttl_ms / 2, on_resync_sweep, w) == 0) {
      w->sweep_inflight = 1;
      sq_conn_sent(&w->cmd);
    }
  }
  /* The in-flight key's name follows docs/protocol.md (P:inflight:<worker>). */
  if (redisAsyncCommand(w->cmd.ac, on_resync_reply, w, "LLEN %s:inflight:%s", w->cfg->prefix,
                        w->cfg->worker_id) == REDIS_OK) {
    w->resync_cmd = 1;
    sq_conn_sent(&w->cmd);
  }
}

static void maybe_claim(sq_worker_t *w) {
  /* Not before every context is warm: a job must never meet a cold shape. */
  if (w->draining || w->stopping || w->claim_inflight || !w->cmd.ready || !w->lease_ok ||
      w->resync != RESYNC_NONE || !sq_pipeline_warm(w))
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
  if (sq_queue_claim(w->q, w->cmd.ac, budget, on_claim, w) != 0) {
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
    return;
  }
  w->claim_inflight = 1;
  sq_conn_sent(&w->cmd);
}

static void on_retry(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  flush_acks(w);
  maybe_claim(w);
  check_drained(w);
}

static void on_heartbeat(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  w->heartbeat_inflight = 0;
  sq_conn_replied(&w->cmd);
  if (status != 0) {
    sq_log_warn("worker", "heartbeat failed", "code=%s", sq_error_name(status));
    /* A Redis that is still loading its dataset answers LOADING: try again soon rather than a
     * whole tick later, the lease may be running out. (Down connections retry on reconnect.) */
    if (w->cmd.ready && !w->stopping) {
      uint64_t hb = w->cfg->lease_ttl_ms / 3 ? w->cfg->lease_ttl_ms / 3 : 1;
      uv_timer_start(&w->heartbeat_timer, on_heartbeat_timer, hb < 200 ? hb : 200, hb);
    }
    return;
  }
  if (value == 0) {
    sq_log_error("worker", "lease held by another token: is another worker using this id?", NULL);
    w->lease_ok = 0;
    return;
  }
  if (value == 2 && w->lease_ever && !w->lease_dropped)
    sq_log_warn("worker",
                "lease had expired and was re-acquired; jobs swept meanwhile will be refused "
                "at ack",
                NULL);
  else if (value == 2 || !w->lease_ever)
    sq_log_info("worker", "registered", "lease_ttl_ms=%u", w->cfg->lease_ttl_ms);
  w->lease_ok = 1;
  w->lease_ever = 1;
  w->lease_dropped = 0;
  flush_acks(w);
  maybe_claim(w);
  check_drained(w);
}

static void heartbeat_now(sq_worker_t *w) {
  if (w->heartbeat_inflight || !w->cmd.ready || w->stopping || w->resync == RESYNC_SWEEPING) return;
  if (sq_queue_heartbeat(w->q, w->cmd.ac, on_heartbeat, w) != 0) return;
  w->heartbeat_inflight = 1;
  sq_conn_sent(&w->cmd);
}

static void on_heartbeat_timer(uv_timer_t *t) {
  heartbeat_now(t->data);
}

static void on_sweep(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  w->sweep_inflight = 0;
  sq_conn_replied(&w->cmd);
  if (status == 0 && value > 0)
    sq_log_info("worker", "sweeper recovered jobs of dead workers", "jobs=%lld", value);
}

static void on_sweep_timer(uv_timer_t *t) {
  sq_worker_t *w = t->data;
  if (w->sweep_inflight || !w->cmd.ready || !w->lease_ok || w->stopping) return;
  if (sq_queue_sweep(w->q, w->cmd.ac, w->cfg->lease_ttl_ms / 2, on_sweep, w) != 0) return;
  w->sweep_inflight = 1;
  sq_conn_sent(&w->cmd);
}

static void on_cmd_ready(sq_conn_t *c, void *data) {
  sq_worker_t *w = data;
  (void)c;
  heartbeat_now(w); /* claims and acks resume once the lease is confirmed */
}

static void on_blk_ready(sq_conn_t *c, void *data) {
  (void)c;
  maybe_claim(data);
}

static void on_conn_down(sq_conn_t *c, void *data) {
  (void)c;
  (void)data; /* pending callbacks already failed; state resumes in on_ready */
}

/* ---- lifecycle ---- */

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void on_conn_closed(sq_conn_t *c) {
  (void)c;
}

static void worker_stop(sq_worker_t *w, int code) {
  if (w->stopping) return;
  w->stopping = 1;
  w->exit_code = code;
  uv_close((uv_handle_t *)&w->heartbeat_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->sweep_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->retry_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->resync_timer, on_handle_closed);
  uv_close((uv_handle_t *)&w->sigterm, on_handle_closed);
  uv_close((uv_handle_t *)&w->sigint, on_handle_closed);
  /* Closing the watchers restored the default action; a signal during the last milliseconds
   * of a clean exit must not turn it into a kill. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  sq_pipeline_loop_close(w, on_handle_closed);
  sq_conn_close(&w->cmd, on_conn_closed);
  sq_conn_close(&w->blk, on_conn_closed);
  sq_http_close(&w->http);
}

static void on_unregister(sq_queue_t *q, int status, long long value, void *data) {
  sq_worker_t *w = data;
  (void)q;
  w->unregister_inflight = 0;
  sq_conn_replied(&w->cmd);
  if (w->stopping) return;
  if (status != 0) {
    sq_log_warn("worker", "unregister failed; retrying", "code=%s", sq_error_name(status));
    if (w->cmd.ready) uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
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
  if (w->resync == RESYNC_SWEEPING || !w->lease_ever) {
    /* Already unregistered (or never registered): nothing of ours is left to ack. */
    sq_log_info("worker", "drained",
                "jobs_ok=%" PRIu64 " jobs_failed=%" PRIu64 " jobs_released=%" PRIu64
                " exit_code=%d",
                w->jobs_ok, w->jobs_failed, w->jobs_released, w->drain_code);
    worker_stop(w, w->drain_code);
    return;
  }
  if (!w->cmd.ready || !w->lease_ok) return; /* resumes after reconnect + heartbeat */
  if (sq_queue_unregister(w->q, w->cmd.ac, on_unregister, w) != 0) return;
  w->unregister_inflight = 1;
  sq_conn_sent(&w->cmd);
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

/* ---- health and metrics ---- */

static int http_handler(const char *path, char *body, size_t cap, const char **ctype, void *data) {
  sq_worker_t *w = data;
  if (strcmp(path, "/healthz") == 0) {
    /* Healthy = able to take work: connected, holding the lease, not draining. */
    const char *why = w->device_failed ? "device failed"
                      : !w->cmd.ready  ? "redis command connection down"
                      : !w->blk.ready  ? "redis blocking connection down"
                      : !w->lease_ok   ? "no lease"
                      : w->draining    ? "draining"
                                       : NULL;
    snprintf(body, cap, "%s\n", why ? why : "ok");
    return why ? 503 : 200;
  }
  if (strcmp(path, "/metrics") == 0) {
    *ctype = "text/plain; version=0.0.4";
    int n = snprintf(body, cap,
                     "# TYPE segq_jobs_total counter\n"
                     "segq_jobs_total{result=\"ok\"} %" PRIu64
                     "\n"
                     "segq_jobs_total{result=\"failed\"} %" PRIu64
                     "\n"
                     "segq_jobs_total{result=\"dropped\"} %" PRIu64
                     "\n"
                     "segq_jobs_total{result=\"released\"} %" PRIu64
                     "\n"
                     "# TYPE segq_batches_total counter\nsegq_batches_total %" PRIu64
                     "\n"
                     "# TYPE segq_jobs_held gauge\nsegq_jobs_held %u\n"
                     "# TYPE segq_redis_connected gauge\n"
                     "segq_redis_connected{conn=\"command\"} %d\n"
                     "segq_redis_connected{conn=\"blocking\"} %d\n"
                     "# TYPE segq_lease_ok gauge\nsegq_lease_ok %d\n"
                     "# TYPE segq_draining gauge\nsegq_draining %d\n"
                     "# TYPE segq_uptime_seconds gauge\nsegq_uptime_seconds %.1f\n"
                     "# TYPE segq_ready gauge\nsegq_ready %d\n"
                     "# TYPE segq_device_failed gauge\nsegq_device_failed %d\n"
                     "# TYPE segq_batcher_jobs gauge\n",
                     w->jobs_ok, w->jobs_failed, w->jobs_dropped, w->jobs_released, w->batches,
                     w->held, w->cmd.ready, w->blk.ready, w->lease_ok, w->draining,
                     (double)(sq_clock_mono_us() - w->started_us) / 1e6, sq_pipeline_warm(w),
                     w->device_failed);
    for (size_t m = 0; m < w->nmodels && n > 0 && (size_t)n < cap; m++)
      n += snprintf(body + n, cap - (size_t)n, "segq_batcher_jobs{model=\"%s\"} %zu\n",
                    w->models[m].name, sq_batcher_len(w->models[m].batcher));
    /* Device memory and the memory policy, per model (its most loaded device). */
    if (n > 0 && (size_t)n < cap)
      n += snprintf(body + n, cap - (size_t)n,
                    "# TYPE segq_model_effective_max_batch gauge\n"
                    "# TYPE segq_model_oom_splits_total counter\n"
                    "# TYPE segq_device_memory_bytes gauge\n");
    for (size_t m = 0; m < w->nmodels && n > 0 && (size_t)n < cap; m++) {
      sq_model_stats_t st;
      sq_model_stats(w->models[m].model, &st);
      n += snprintf(body + n, cap - (size_t)n,
                    "segq_model_effective_max_batch{model=\"%s\"} %u\n"
                    "segq_model_oom_splits_total{model=\"%s\"} %" PRIu64 "\n",
                    w->models[m].name, st.effective_max_batch, w->models[m].name, st.oom_splits);
      if (st.device_total && n > 0 && (size_t)n < cap)
        n += snprintf(body + n, cap - (size_t)n,
                      "segq_device_memory_bytes{model=\"%s\",kind=\"free\"} %" PRIu64
                      "\n"
                      "segq_device_memory_bytes{model=\"%s\",kind=\"total\"} %" PRIu64 "\n",
                      w->models[m].name, st.device_free, w->models[m].name, st.device_total);
    }
    return 200;
  }
  snprintf(body, cap, "not found (try /healthz or /metrics)\n");
  return 404;
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
  pthread_mutex_init(&w->done_mu, NULL);
  int rc = sq_pipeline_open(w, err);
  if (rc) {
    sq_pipeline_close(w);
    pthread_mutex_destroy(&w->done_mu);
    free(w);
    return 1;
  }
  sq_queue_config_t qc = {0};
  qc.prefix = cfg->prefix;
  qc.worker_id = cfg->worker_id;
  qc.models = (const char *const *)cfg->model_names;
  qc.nmodels = cfg->nmodels;
  qc.lease_ttl_ms = cfg->lease_ttl_ms;
  qc.max_attempts = cfg->max_attempts;
  qc.result_ttl_s = cfg->result_ttl_s;
  w->q = sq_queue_new(&qc);
  if (!w->q) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_pipeline_close(w);
    pthread_mutex_destroy(&w->done_mu);
    free(w);
    return 1;
  }

  uv_loop_init(&w->loop);
  uv_timer_init(&w->loop, &w->heartbeat_timer);
  uv_timer_init(&w->loop, &w->sweep_timer);
  uv_timer_init(&w->loop, &w->retry_timer);
  uv_timer_init(&w->loop, &w->drain_timer);
  uv_timer_init(&w->loop, &w->resync_timer);
  w->resync_timer.data = w;
  w->heartbeat_timer.data = w->sweep_timer.data = w->retry_timer.data = w->drain_timer.data = w;
  uv_signal_init(&w->loop, &w->sigterm);
  uv_signal_init(&w->loop, &w->sigint);
  w->sigterm.data = w->sigint.data = w;
  uv_signal_start(&w->sigterm, on_signal, SIGTERM);
  uv_signal_start(&w->sigint, on_signal, SIGINT);
  int prc = sq_pipeline_loop_init(w, err);
  uint32_t hb = cfg->lease_ttl_ms / 3 ? cfg->lease_ttl_ms / 3 : 1;
  uint32_t sw = cfg->lease_ttl_ms / 2 ? cfg->lease_ttl_ms / 2 : 1;
  uv_timer_start(&w->heartbeat_timer, on_heartbeat_timer, hb, hb);
  uv_timer_start(&w->sweep_timer, on_sweep_timer, sw, sw);

  /* A command reply may legitimately take a while (a claim moving large payloads); past the
   * lease TTL the lease is gone anyway. The BRPOP may take its timeout, plus 3 s of slack. */
  uint64_t cmd_limit_us = (uint64_t)(cfg->lease_ttl_ms > 5000 ? cfg->lease_ttl_ms : 5000) * 1000;
  uint64_t blk_limit_us = ((uint64_t)cfg->wait_timeout_s + 3) * 1000000;
  /* Reconnect attempts at most lease_ttl/6 apart (100 ms..5 s): after a short Redis outage the
   * command connection is back, and the lease renewed, before the lease can run out. */
  uint64_t backoff_max_ms = cfg->lease_ttl_ms / 6;
  if (backoff_max_ms < 100) backoff_max_ms = 100;
  if (backoff_max_ms > 5000) backoff_max_ms = 5000;
  w->cmd.backoff_max_ms = w->blk.backoff_max_ms = backoff_max_ms;
  w->cmd.on_ready = on_cmd_ready;
  w->cmd.on_down = on_conn_down;
  w->cmd.data = w;
  w->blk.on_ready = on_blk_ready;
  w->blk.on_down = on_conn_down;
  w->blk.data = w;
  sq_conn_init(&w->cmd, &w->loop, "command", cfg->redis_host, cfg->redis_port, cfg->redis_password,
               cfg->redis_db, cmd_limit_us);
  sq_conn_init(&w->blk, &w->loop, "blocking", cfg->redis_host, cfg->redis_port, cfg->redis_password,
               cfg->redis_db, blk_limit_us);

  if (cfg->http_port) {
    int hrc =
        sq_http_start(&w->http, &w->loop, cfg->http_host, (int)cfg->http_port, http_handler, w);
    if (hrc != 0)
      sq_log_error("worker", "cannot serve HTTP; continuing without it", "addr=%s:%u err=%s",
                   cfg->http_host, cfg->http_port, uv_strerror(hrc));
    else
      sq_log_info("worker", "serving /healthz and /metrics", "addr=%s:%u", cfg->http_host,
                  cfg->http_port);
  }
  if (prc) {
    sq_log_error("worker", "cannot start the executors", "msg=\"%s\"", err ? err->msg : "");
    worker_stop(w, 1);
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
  sq_pipeline_close(w);
  sq_queue_free(w->q);
  pthread_mutex_destroy(&w->done_mu);
  free(w);
  sq_log_info("worker", "exit", "code=%d", code);
  return code;
}
