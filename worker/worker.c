/* worker/worker: the loop thread's story. Connect (command + blocking connection) -> heartbeat
 * (lease) -> claim up to the flow budget -> per-model batcher -> prepare on the work pool ->
 * executor -> finish on the work pool -> one ack per batch (kept and resent across reconnects)
 * -> claim again, or BRPOP the wake-up keys when the queues are empty. SIGTERM/SIGINT drains.
 * Threads: everything here runs on the loop thread except executor_main (executor threads) and
 * the uv_queue_work callbacks (work pool), which only touch the job/batch they were handed. */
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

/* A claim whose reply is lost (connection dropped) may still have moved jobs into our in-flight
 * list; we would never ack them, and our live lease keeps the sweeper away. So after such a
 * claim the worker stops claiming, finishes what it holds and, if the in-flight list is not
 * empty, removes its lease, lets the sweeper requeue the orphans, and registers again. */
enum { RESYNC_NONE = 0, RESYNC_NEEDED, RESYNC_SWEEPING };

struct sq_worker {
  const sq_worker_config_t *cfg;
  uv_loop_t loop;
  sq_queue_t *q;
  sq_conn_t cmd; /* scripts: heartbeat, claim, ack, sweep, unregister */
  sq_conn_t blk; /* BRPOP on the wake-up keys only */
  model_slot_t *models;
  size_t nmodels;
  uint32_t held; /* jobs claimed and not yet acked or dropped */
  int claim_inflight, wait_inflight, heartbeat_inflight, sweep_inflight, unregister_inflight;
  int lease_ok;   /* the last heartbeat holds the lease with our token */
  int lease_ever; /* a heartbeat succeeded once (so a later "re-acquired" means expiry) */
  int lease_dropped; /* we removed our lease (resync): the next "re-acquired" is expected */
  int draining;   /* signal seen: stop claiming, finish what we hold */
  int stopping;   /* handles are closing */
  int aborted;    /* uv_stop'ed with work still running (drain timeout, second signal) */
  int exit_code;
  int resync;     /* RESYNC_*: recovering jobs whose claim reply was lost */
  int resync_cmd; /* a resync command is outstanding */
  uv_timer_t resync_timer;
  uv_timer_t heartbeat_timer, sweep_timer, retry_timer, drain_timer;
  uv_signal_t sigterm, sigint;
  uv_async_t done_async;
  sq_http_t http;
  pthread_mutex_t done_mu;
  wbatch_t *done_head, *done_tail; /* executor -> loop */
  wbatch_t *ack_head, *ack_tail;   /* finished batches waiting for (re)sending their ack */
  uint32_t acks_inflight;
  uint64_t jobs_ok, jobs_failed, jobs_dropped, batches;
  uint64_t started_us;
};

static void maybe_claim(sq_worker_t *w);
static void flush_acks(sq_worker_t *w);
static void check_drained(sq_worker_t *w);
static void heartbeat_now(sq_worker_t *w);
static void on_retry(uv_timer_t *t);
static void on_resync_tick(uv_timer_t *t);
static void on_resync_unregister(sq_queue_t *q, int status, long long value, void *data);
static void on_batch_timer(uv_timer_t *t);
static void model_flush(model_slot_t *ms);
static void batch_start(sq_worker_t *w, model_slot_t *ms, wjob_t **jobs, size_t n);
static void on_heartbeat_timer(uv_timer_t *t);

/* ---- executor threads ---- */

typedef struct {
  model_slot_t *ms;
  int ctx;
} executor_arg_t;

static void *executor_main(void *arg) {
  executor_arg_t a = *(executor_arg_t *)arg;
  free(arg);
  model_slot_t *ms = a.ms;
  sq_worker_t *w = ms->w;
  for (;;) {
    pthread_mutex_lock(&ms->mu);
    while (!ms->head && !ms->stop) pthread_cond_wait(&ms->cond, &ms->mu);
    wbatch_t *b = ms->head;
    if (b) {
      ms->head = b->next;
      if (!ms->head) ms->tail = NULL;
      b->next = NULL;
    }
    pthread_mutex_unlock(&ms->mu);
    if (!b) break; /* stop and nothing queued */
    sq_wbatch_run(b, a.ctx);
    pthread_mutex_lock(&w->done_mu);
    if (w->done_tail)
      w->done_tail->next = b;
    else
      w->done_head = b;
    w->done_tail = b;
    pthread_mutex_unlock(&w->done_mu);
    /* Coalesces: the loop drains the whole done list on each wake-up. */
    uv_async_send(&w->done_async);
  }
  return NULL;
}

static void executor_push(model_slot_t *ms, wbatch_t *b) {
  pthread_mutex_lock(&ms->mu);
  b->next = NULL;
  if (ms->tail)
    ms->tail->next = b;
  else
    ms->head = b;
  ms->tail = b;
  pthread_cond_signal(&ms->cond);
  pthread_mutex_unlock(&ms->mu);
}

/* ---- batches ---- */

static void batch_release(sq_worker_t *w, wbatch_t *b) {
  w->held -= (uint32_t)b->n;
  if (b->ms) b->ms->held -= (uint32_t)b->n;
  for (size_t i = 0; i < b->n; i++) sq_wjob_free(b->jobs[i]);
  free(b->jobs);
  free(b);
  maybe_claim(w);
  check_drained(w);
}

static void ack_push(sq_worker_t *w, wbatch_t *b, int front) {
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

static void finish_work(uv_work_t *req) {
  sq_wjob_finish(req->data);
}

/* One of b's jobs is done (finished, or a member record handed to its parent); the last one
 * sends the batch to the ack (a batch of member records only has nothing to ack). */
static void batch_step(wbatch_t *b) {
  sq_worker_t *w = b->w;
  if (--b->pending > 0) return;
  w->batches++;
  sq_log_debug("worker", "batch done", "model=%s size=%zu ms=%.3f", b->ms ? b->ms->name : "-", b->n,
               (double)(sq_clock_mono_us() - b->formed_us) / 1000.0);
  size_t jobs = 0;
  for (size_t i = 0; i < b->n; i++) jobs += !b->jobs[i]->parent;
  if (jobs == 0) {
    batch_release(w, b);
    return;
  }
  ack_push(w, b, 0);
  flush_acks(w);
}

static void finish_after(uv_work_t *req, int status) {
  wjob_t *j = req->data;
  wbatch_t *b = j->batch;
  sq_worker_t *w = b->w;
  if (status == UV_ECANCELED || !j->result) {
    /* Never happens (we never cancel; encode has a fallback); the sweeper would recover it. */
    sq_log_error("worker", "job has no result", "id=%s", j->c.id);
  }
  if (j->err) {
    w->jobs_failed++;
    sq_log_info("worker", "job failed", "id=%s model=%s code=%s attempt=%u msg=\"%.200s\"", j->c.id,
                j->c.model, sq_error_name(j->err), j->c.attempt, j->msg);
  } else {
    w->jobs_ok++;
  }
  batch_step(b);
}

static void job_finish_start(sq_worker_t *w, wjob_t *j) {
  j->work.data = j;
  if (uv_queue_work(&w->loop, &j->work, finish_work, finish_after) != 0) {
    /* Cannot happen with a valid loop; finish inline rather than lose the job. */
    sq_wjob_finish(j);
    finish_after(&j->work, 0);
  }
}

/* The batch's runs are over (or it had nothing to run). An ensemble member record goes back to
 * its parent; an ensemble job waits for its members' runs (the last one starts its finish). */
static void batch_finish(wbatch_t *b) {
  sq_worker_t *w = b->w;
  b->pending = b->n + 1; /* + 1: the batch cannot complete while this loop walks it */
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (j->parent) {
      if (sq_wjob_member_done(j)) job_finish_start(w, j->parent);
      batch_step(b);
      continue;
    }
    if (j->members_left > 0 && --j->members_left > 0) continue;
    job_finish_start(w, j);
  }
  batch_step(b);
}

/* Loop thread, between prepare and run: each prepared ensemble job of b gets one member record
 * per other member, entered into that member's batcher with the sample prepared for it. */
static void ensemble_spawn(sq_worker_t *w, wbatch_t *b) {
  int spawned = 0;
  uint64_t now_us = sq_clock_mono_us();
  for (size_t i = 0; i < b->n; i++) {
    wjob_t *j = b->jobs[i];
    if (!j->ens_n || j->err || !j->sample) continue;
    j->members_left = 1; /* its own run */
    for (uint32_t k = 0; k < j->ens_n; k++) {
      if (k == j->ens_own || !j->ens_sample[k]) continue;
      wjob_t *m = calloc(1, sizeof(*m));
      if (m) {
        m->c.id = sq_strdup(j->c.id);
        m->c.model = sq_strdup(j->ens_ms[k]->name);
      }
      if (!m || !m->c.id || !m->c.model) {
        sq_wjob_free(m);
        if (!j->err) {
          j->err = SQ_ENOMEM;
          snprintf(j->msg, sizeof j->msg, "out of memory (ensemble member)");
        }
        continue; /* its sample is freed with j */
      }
      m->parent = j;
      m->member = k;
      m->ms = j->ens_ms[k];
      m->worker_id = j->worker_id;
      m->claimed_us = j->claimed_us;
      m->sample = j->ens_sample[k];
      j->ens_sample[k] = NULL;
      j->members_left++;
      w->held++;
      m->ms->held++;
      spawned = 1;
      if (sq_batcher_push(m->ms->batcher, m, now_us) != 0) batch_start(w, m->ms, &m, 1);
    }
  }
  /* Due batches start now; the others' timers are re-armed. */
  if (spawned)
    for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
}

static void prepare_work(uv_work_t *req) {
  sq_wjob_prepare(req->data);
}

static void prepare_after(uv_work_t *req, int status) {
  wjob_t *j = req->data;
  wbatch_t *b = j->batch;
  (void)status;
  if (--b->pending > 0) return;
  ensemble_spawn(b->w, b);
  size_t valid = 0;
  for (size_t i = 0; i < b->n; i++) valid += !b->jobs[i]->err && b->jobs[i]->sample;
  if (valid > 0 && b->ms)
    executor_push(b->ms, b);
  else
    batch_finish(b);
}

static void batch_start(sq_worker_t *w, model_slot_t *ms, wjob_t **jobs, size_t n) {
  wbatch_t *b = calloc(1, sizeof(*b));
  wjob_t **copy = malloc(n * sizeof(*copy));
  if (!b || !copy) {
    /* Out of memory: drop these jobs; they stay in our in-flight list for the sweeper. */
    sq_log_error("worker", "out of memory forming a batch; jobs left to the sweeper", "n=%zu", n);
    free(b);
    free(copy);
    for (size_t i = 0; i < n; i++) {
      /* A member record is not a job: its parent must still hear of it, or never finish. */
      if (jobs[i]->parent) {
        jobs[i]->err = SQ_ENOMEM;
        snprintf(jobs[i]->msg, sizeof jobs[i]->msg, "out of memory forming a batch");
        if (sq_wjob_member_done(jobs[i])) job_finish_start(w, jobs[i]->parent);
      }
      sq_wjob_free(jobs[i]);
    }
    w->held -= (uint32_t)n;
    if (ms) ms->held -= (uint32_t)n;
    w->jobs_dropped += n;
    return;
  }
  memcpy(copy, jobs, n * sizeof(*copy));
  b->w = w;
  b->ms = ms;
  b->jobs = copy;
  b->n = n;
  b->formed_us = sq_clock_mono_us();
  b->pending = n;
  for (size_t i = 0; i < n; i++) {
    copy[i]->batch = b;
    copy[i]->batch_size = (uint32_t)n;
    copy[i]->work.data = copy[i];
  }
  for (size_t i = 0; i < n; i++)
    if (uv_queue_work(&w->loop, &copy[i]->work, prepare_work, prepare_after) != 0) {
      sq_wjob_prepare(copy[i]);
      prepare_after(&copy[i]->work, 0);
    }
}

/* Pops every due batch of ms (all of them when draining) and re-arms its timer. */
static void model_flush(model_slot_t *ms) {
  sq_worker_t *w = ms->w;
  void **items = malloc(ms->max_batch * sizeof(void *));
  if (items) {
    size_t n;
    while ((n = sq_batcher_pop(ms->batcher, sq_clock_mono_us(), w->draining, items)) > 0)
      batch_start(w, ms, (wjob_t **)items, n);
    free(items);
  }
  if (w->stopping) return;
  uint64_t due = sq_batcher_due_us(ms->batcher);
  if (due == UINT64_MAX) {
    uv_timer_stop(&ms->timer);
    return;
  }
  uint64_t now = sq_clock_mono_us();
  uint64_t delay_ms = due > now ? (due - now + 999) / 1000 : 0;
  uv_timer_start(&ms->timer, on_batch_timer, delay_ms, 0);
}

static void on_batch_timer(uv_timer_t *t) {
  model_flush(t->data);
}

static void on_done_async(uv_async_t *a) {
  sq_worker_t *w = a->data;
  pthread_mutex_lock(&w->done_mu);
  wbatch_t *b = w->done_head;
  w->done_head = w->done_tail = NULL;
  pthread_mutex_unlock(&w->done_mu);
  while (b) {
    wbatch_t *next = b->next;
    b->next = NULL;
    batch_finish(b);
    b = next;
  }
}

/* ---- Redis operations (loop thread) ---- */

static void on_ack(sq_queue_t *q, int status, const int *per_job, size_t n, void *data) {
  wbatch_t *b = data;
  sq_worker_t *w = b->w;
  (void)q;
  sq_conn_replied(&w->cmd);
  w->acks_inflight--;
  if (status == 0) {
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
    batch_release(w, b);
    return;
  }
  b->ack_attempts++;
  if (b->ack_attempts >= MAX_ACK_ATTEMPTS) {
    sq_log_error("worker", "ack failed too often; jobs left to the sweeper",
                 "model=%s size=%zu code=%s", b->ms ? b->ms->name : "-", b->n,
                 sq_error_name(status));
    w->jobs_dropped += b->n;
    batch_release(w, b);
    return;
  }
  /* Keep the batch and resend once the connection/lease is back. */
  ack_push(w, b, 1);
  if (status == SQ_ELEASE_LOST) {
    sq_log_warn("worker", "ack refused: lease lost; re-registering", "size=%zu", b->n);
    w->lease_ok = 0;
    heartbeat_now(w);
  } else if (w->cmd.ready && !w->stopping) {
    uv_timer_start(&w->retry_timer, on_retry, RETRY_MS, 0);
  }
}

static void flush_acks(sq_worker_t *w) {
  while (w->ack_head && w->cmd.ready && w->lease_ok && !w->stopping) {
    wbatch_t *b = w->ack_head;
    w->ack_head = b->next;
    if (!w->ack_head) w->ack_tail = NULL;
    b->next = NULL;
    sq_ack_item_t *items = calloc(b->n, sizeof(*items));
    size_t k = 0;
    if (items)
      for (size_t i = 0; i < b->n; i++) {
        wjob_t *j = b->jobs[i];
        if (!j->result) continue;
        items[k].id = j->c.id;
        items[k].result = j->result;
        items[k].result_len = j->result_len;
        items[k].error_code = j->err;
        k++;
      }
    if (!items || k == 0) {
      free(items);
      if (!items) {
        ack_push(w, b, 1);
        return;
      }
      w->jobs_dropped += b->n;
      batch_release(w, b);
      continue;
    }
    int rc = sq_queue_ack(w->q, w->cmd.ac, items, k, on_ack, b);
    free(items);
    if (rc != 0) {
      ack_push(w, b, 1);
      return;
    }
    w->acks_inflight++;
    sq_conn_sent(&w->cmd);
  }
}

static void dispatch_claimed(sq_worker_t *w, sq_claimed_t *jobs, size_t n) {
  uint64_t now_ms = sq_clock_wall_ms(), now_us = sq_clock_mono_us();
  for (size_t i = 0; i < n; i++) {
    wjob_t *j = calloc(1, sizeof(*j));
    if (!j) {
      sq_log_error("worker", "out of memory; job left to the sweeper", "id=%s", jobs[i].id);
      sq_claimed_free(&jobs[i]);
      w->jobs_dropped++;
      continue;
    }
    j->c = jobs[i]; /* takes ownership of the members */
    j->worker_id = w->cfg->worker_id;
    j->claimed_us = now_us;
    j->slots = w->models;
    j->nslots = w->nmodels;
    j->t.queue_wait_us =
        now_ms > j->c.enqueued_ms && j->c.enqueued_ms ? (now_ms - j->c.enqueued_ms) * 1000 : 0;
    for (size_t m = 0; m < w->nmodels; m++)
      if (strcmp(w->models[m].name, j->c.model) == 0) j->ms = &w->models[m];
    w->held++;
    if (j->ms) j->ms->held++;
    if (!j->ms) {
      /* Not one of ours (the claim only serves our models, so this is a bug): fail it alone. */
      batch_start(w, NULL, &j, 1);
      continue;
    }
    if (sq_batcher_push(j->ms->batcher, j, now_us) != 0) {
      batch_start(w, j->ms, &j, 1);
    }
  }
  for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
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
  dispatch_claimed(w, jobs, n);
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
  if (w->draining || w->stopping || w->claim_inflight || !w->cmd.ready || !w->lease_ok ||
      w->resync != RESYNC_NONE)
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
  uv_close((uv_handle_t *)&w->done_async, on_handle_closed);
  for (size_t m = 0; m < w->nmodels; m++)
    uv_close((uv_handle_t *)&w->models[m].timer, on_handle_closed);
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
              " batches=%" PRIu64 " uptime_s=%.1f",
              w->jobs_ok, w->jobs_failed, w->jobs_dropped, w->batches,
              (double)(sq_clock_mono_us() - w->started_us) / 1e6);
  worker_stop(w, 0);
}

static void check_drained(sq_worker_t *w) {
  if (!w->draining || w->stopping || w->held > 0 || w->claim_inflight || w->unregister_inflight)
    return;
  if (w->resync == RESYNC_SWEEPING || !w->lease_ever) {
    /* Already unregistered (or never registered): nothing of ours is left to ack. */
    sq_log_info("worker", "drained", "jobs_ok=%" PRIu64 " jobs_failed=%" PRIu64, w->jobs_ok,
                w->jobs_failed);
    worker_stop(w, 0);
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
  w->exit_code = 1;
  w->aborted = 1;
  uv_stop(&w->loop);
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
  w->draining = 1;
  sq_log_info("worker", "draining", "signal=%d held=%u timeout_s=%u", signum, w->held,
              w->cfg->drain_timeout_s);
  uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->cfg->drain_timeout_s * 1000, 0);
  for (size_t m = 0; m < w->nmodels; m++) model_flush(&w->models[m]);
  check_drained(w);
}

/* ---- health and metrics ---- */

static int http_handler(const char *path, char *body, size_t cap, const char **ctype, void *data) {
  sq_worker_t *w = data;
  if (strcmp(path, "/healthz") == 0) {
    /* Healthy = able to take work: connected, holding the lease, not draining. */
    const char *why = !w->cmd.ready   ? "redis command connection down"
                      : !w->blk.ready ? "redis blocking connection down"
                      : !w->lease_ok  ? "no lease"
                      : w->draining   ? "draining"
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
                     "# TYPE segq_batches_total counter\nsegq_batches_total %" PRIu64
                     "\n"
                     "# TYPE segq_jobs_held gauge\nsegq_jobs_held %u\n"
                     "# TYPE segq_redis_connected gauge\n"
                     "segq_redis_connected{conn=\"command\"} %d\n"
                     "segq_redis_connected{conn=\"blocking\"} %d\n"
                     "# TYPE segq_lease_ok gauge\nsegq_lease_ok %d\n"
                     "# TYPE segq_draining gauge\nsegq_draining %d\n"
                     "# TYPE segq_uptime_seconds gauge\nsegq_uptime_seconds %.1f\n"
                     "# TYPE segq_batcher_jobs gauge\n",
                     w->jobs_ok, w->jobs_failed, w->jobs_dropped, w->batches, w->held, w->cmd.ready,
                     w->blk.ready, w->lease_ok, w->draining,
                     (double)(sq_clock_mono_us() - w->started_us) / 1e6);
    for (size_t m = 0; m < w->nmodels && n > 0 && (size_t)n < cap; m++)
      n += snprintf(body + n, cap - (size_t)n, "segq_batcher_jobs{model=\"%s\"} %zu\n",
                    w->models[m].name, sq_batcher_len(w->models[m].batcher));
    return 200;
  }
  snprintf(body, cap, "not found (try /healthz or /metrics)\n");
  return 404;
}

/* ---- set-up and tear-down ---- */

static int models_open(sq_worker_t *w, sq_error_t *err) {
  const sq_worker_config_t *cfg = w->cfg;
  w->models = calloc(cfg->nmodels, sizeof(*w->models));
  if (!w->models) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  for (size_t i = 0; i < cfg->nmodels; i++) {
    model_slot_t *ms = &w->models[i];
    ms->w = w;
    ms->name = cfg->model_names[i];
    ms->model = sq_model_open_device(ms->name, cfg->model_dir, cfg->device, err);
    if (!ms->model) return err && err->code ? err->code : SQ_EMODEL_LOAD;
    w->nmodels = i + 1;
    ms->info = *sq_model_info(ms->model);
    ms->max_batch = cfg->max_batch ? cfg->max_batch : ms->info.max_batch;
    if (ms->max_batch == 0) ms->max_batch = 1;
    ms->max_delay_us = cfg->max_delay_us ? cfg->max_delay_us : ms->info.max_delay_us;
    ms->batcher = sq_batcher_new(ms->max_batch, ms->max_delay_us);
    if (!ms->batcher) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    pthread_mutex_init(&ms->mu, NULL);
    pthread_cond_init(&ms->cond, NULL);
    uint32_t nctx = ms->info.contexts ? ms->info.contexts : 1;
    ms->threads = calloc(nctx, sizeof(pthread_t));
    if (!ms->threads) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    for (uint32_t c = 0; c < nctx; c++) {
      executor_arg_t *a = malloc(sizeof(*a));
      if (!a) return sq_error_set(err, SQ_ENOMEM, "out of memory");
      a->ms = ms;
      a->ctx = (int)c;
      if (pthread_create(&ms->threads[c], NULL, executor_main, a) != 0) {
        free(a);
        return sq_error_set(err, SQ_EINTERNAL, "cannot start executor thread for %s", ms->name);
      }
      ms->nthreads++;
    }
    sq_log_info("worker", "model loaded",
                "model=%s max_batch=%u max_delay_us=%" PRIu64 " contexts=%u", ms->name,
                ms->max_batch, ms->max_delay_us, nctx);
  }
  return 0;
}

static void models_close(sq_worker_t *w) {
  for (size_t i = 0; i < w->nmodels; i++) {
    model_slot_t *ms = &w->models[i];
    pthread_mutex_lock(&ms->mu);
    ms->stop = 1;
    pthread_cond_broadcast(&ms->cond);
    pthread_mutex_unlock(&ms->mu);
    for (uint32_t c = 0; c < ms->nthreads; c++) pthread_join(ms->threads[c], NULL);
    free(ms->threads);
    pthread_mutex_destroy(&ms->mu);
    pthread_cond_destroy(&ms->cond);
    sq_batcher_free(ms->batcher);
    sq_model_close(ms->model);
  }
  free(w->models);
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
  int rc = models_open(w, err);
  if (rc) {
    models_close(w);
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
    models_close(w);
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
  uv_async_init(&w->loop, &w->done_async, on_done_async);
  w->done_async.data = w;
  for (size_t m = 0; m < w->nmodels; m++) {
    uv_timer_init(&w->loop, &w->models[m].timer);
    w->models[m].timer.data = &w->models[m];
  }
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
  models_close(w);
  sq_queue_free(w->q);
  pthread_mutex_destroy(&w->done_mu);
  free(w);
  sq_log_info("worker", "exit", "code=%d", code);
  return code;
}
