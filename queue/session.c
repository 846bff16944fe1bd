/* queue/session: the worker's Redis session (see queue.h): one endpoint with a command, a
 * blocking and a lease connection, the permission check at start, the lease and its heartbeat, the
 * sweeper timer, the set of ids the worker holds, and the reconciliation of the in-flight list with
 * that set after every (re)connect and failed claim. The worker (worker/) asks it whether a claim,
 * an ack or a wait may go, and hears `resume` when one may go again. Threads: the loop thread that
 * runs the hooks' loop, only. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "queue/queue_internal.h"

struct sq_session {
  sq_redis_loop_t loop;
  sq_session_config_t cfg; /* strings are q's */
  sq_session_events_t ev;
  void *data;
  sq_queue_t *q;
  sq_redis_t *r;
  sq_redis_conn_t *cmd;   /* scripts: claim, ack, sweep, reconcile, unregister */
  sq_redis_conn_t *blk;   /* BRPOP on the wake-up keys only */
  sq_redis_conn_t *lease; /* permcheck + heartbeat only: never behind a big claim's reply */
  sq_idset_t *held;
  sq_redis_timer_t *heartbeat_timer, *sweep_timer;
  uint64_t cmd_budget_ms;
  int handles_open, closing, fatal_seen;
  void (*closed)(void *arg);
  void *closed_arg;
  int claim_inflight, heartbeat_inflight, sweep_inflight, wait_inflight;
  int lease_ok;   /* the last heartbeat holds the lease with our token */
  int lease_ever; /* a heartbeat succeeded once (so a later "re-acquired" means expiry) */
  uint64_t hb_sent_us, lease_until_us;
  /* Our in-flight list may hold ids we do not (a claim reply lost, an ack Redis lost): after
   * every (re)connect and failed claim, no claim goes until reconcile has handed them back. */
  int reconcile_needed, reconcile_inflight;
  int perm_ok, perm_inflight; /* the account's permissions were checked (once, at start) */
  char *user, *prefix;        /* for messages */
};

static void heartbeat_now(sq_session_t *s);
static void reconcile_maybe(sq_session_t *s);
static void fatal(sq_session_t *s, int code, const char *msg);

static void resume(sq_session_t *s) {
  if (!s->closing && s->ev.resume) s->ev.resume(s, s->data);
}

/* ---- heartbeat and sweeper ---- */

static void on_heartbeat_timer(void *arg);

static void on_heartbeat(sq_queue_t *q, int status, long long value, void *data) {
  sq_session_t *s = data;
  (void)q;
  s->heartbeat_inflight = 0;
  if (s->closing) return;
  if (status != 0) {
    sq_log_warn("worker", "heartbeat failed", "code=%s", sq_error_name(status));
    /* A Redis that is still loading its dataset answers LOADING: try again soon rather than a
     * whole tick later, the lease may be running out. (Down connections retry on reconnect.) */
    if (sq_redis_conn_ready(s->lease)) {
      uint64_t hb = s->cfg.lease_ttl_ms / 3 ? s->cfg.lease_ttl_ms / 3 : 1;
      s->loop.timer_start(s->heartbeat_timer, hb < 200 ? hb : 200, hb);
    }
    return;
  }
  if (value == 0) {
    sq_log_error("worker", "lease held by another token: is another worker using this id?", NULL);
    s->lease_ok = 0;
    return;
  }
  if (value == 2 && s->lease_ever)
    sq_log_warn("worker",
                "lease had expired and was re-acquired; jobs swept meanwhile will be refused "
                "at ack",
                NULL);
  else if (value == 2 || !s->lease_ever)
    sq_log_info("worker", "registered", "lease_ttl_ms=%u", s->cfg.lease_ttl_ms);
  s->lease_ok = 1;
  s->lease_ever = 1;
  s->lease_until_us = s->hb_sent_us + (uint64_t)s->cfg.lease_ttl_ms * 1000;
  reconcile_maybe(s);
  resume(s);
}

/* At start, before registering: may this account run everything the worker needs? Without it
 * an ack could fail half-way (Redis does not roll a script back) and leave a job stuck. */
static void on_permcheck(sq_queue_t *q, int status, const char *missing, void *data) {
  sq_session_t *s = data;
  (void)q;
  s->perm_inflight = 0;
  if (s->closing) return;
  if (status != 0) return; /* connection lost or a transient error: the next heartbeat asks again */
  if (missing && missing[0]) {
    char msg[1400];
    snprintf(msg, sizeof msg,
             "the Redis user '%s' may not do what segq needs: %s; grant it (e.g. ACL SETUSER %s "
             "~%s:* &%s:* +@all) or see docs/operations.md \"Redis users\"",
             s->user ? s->user : "default", missing, s->user ? s->user : "default", s->prefix,
             s->prefix);
    fatal(s, SQ_ENOPERM, msg);
    return;
  }
  s->perm_ok = 1;
  heartbeat_now(s);
}

static void heartbeat_now(sq_session_t *s) {
  if (s->heartbeat_inflight || s->closing || !sq_redis_conn_ready(s->lease) || s->fatal_seen)
    return;
  if (!s->perm_ok) {
    if (!s->perm_inflight && sq_queue_permcheck(s->q, s->lease, "worker", on_permcheck, s) == 0)
      s->perm_inflight = 1;
    return;
  }
  uint64_t now = sq_clock_mono_us();
  if (sq_queue_heartbeat(s->q, s->lease, on_heartbeat, s) != 0) return;
  s->heartbeat_inflight = 1;
  s->hb_sent_us = now;
}

static void on_heartbeat_timer(void *arg) {
  heartbeat_now(arg);
}

static void on_sweep(sq_queue_t *q, int status, long long value, void *data) {
  sq_session_t *s = data;
  (void)q;
  s->sweep_inflight = 0;
  if (status == 0 && value > 0 && !s->closing)
    sq_log_info("worker", "sweeper recovered jobs of dead workers", "jobs=%lld", value);
}

static void sweep_now(sq_session_t *s) {
  if (s->sweep_inflight || s->closing || !sq_redis_conn_ready(s->cmd)) return;
  if (sq_queue_sweep(s->q, s->cmd, s->cfg.lease_ttl_ms / 2, on_sweep, s) == 0)
    s->sweep_inflight = 1;
}

static void on_sweep_timer(void *arg) {
  sq_session_t *s = arg;
  if (s->lease_ok) sweep_now(s);
}

/* ---- reconciliation ---- */

static void on_reconcile(sq_queue_t *q, int status, long long released, void *data) {
  sq_session_t *s = data;
  (void)q;
  s->reconcile_inflight = 0;
  if (s->closing) return;
  if (status == SQ_ELEASE_LOST) {
    s->lease_ok = 0;
    heartbeat_now(s); /* reconciles again once the lease is back */
    return;
  }
  if (status != 0) return; /* lost: the next heartbeat (or reconnect) tries again */
  if (released > 0)
    sq_log_warn("worker", "in-flight ids we did not hold were handed back", "requeued=%lld",
                released);
  s->reconcile_needed = 0;
  resume(s);
}

/* Sends the reconcile once nothing can race it: the lease is ours and no claim is in flight
 * (a claim's ids join the held set only when its reply arrives). */
static void reconcile_maybe(sq_session_t *s) {
  if (!s->reconcile_needed || s->reconcile_inflight || s->claim_inflight || !s->lease_ok ||
      s->closing || !sq_redis_conn_ready(s->cmd))
    return;
  size_t n = sq_idset_len(s->held);
  const char **ids = malloc((n ? n : 1) * sizeof(*ids));
  if (!ids) return; /* the next heartbeat tries again */
  sq_idset_list(s->held, ids, n);
  if (sq_queue_reconcile(s->q, s->cmd, ids, n, on_reconcile, s) == 0) s->reconcile_inflight = 1;
  free(ids);
}

/* ---- claim, ack, wait, unregister ---- */

typedef struct {
  sq_session_t *s;
  union {
    sq_session_claim_cb claim;
    sq_session_ack_cb ack;
    sq_session_status_cb status;
  } cb;
  void *data;
  size_t nids;
  char **ids; /* ack: the ids sent */
  /* ack with WAIT: the ack's answer, kept until the WAIT's reply decides */
  int ack_status, ack_answered, wait_sent;
  int *per_job;
  size_t nper;
} op_t;

static op_t *op_new(sq_session_t *s, void *data) {
  op_t *o = calloc(1, sizeof(*o));
  if (o) {
    o->s = s;
    o->data = data;
  }
  return o;
}

static void op_free(op_t *o) {
  free(o->per_job);
  for (size_t i = 0; i < o->nids; i++) free(o->ids[i]);
  free(o->ids);
  free(o);
}

int sq_session_can_claim(const sq_session_t *s) {
  return s && !s->closing && !s->claim_inflight && s->lease_ok && !s->reconcile_needed &&
         !s->reconcile_inflight && sq_redis_conn_ready(s->cmd);
}

int sq_session_can_ack(const sq_session_t *s) {
  return s && !s->closing && s->lease_ok && sq_redis_conn_ready(s->cmd);
}

int sq_session_can_wait(const sq_session_t *s) {
  return s && !s->closing && !s->wait_inflight && sq_redis_conn_ready(s->blk);
}

static void on_claim(sq_queue_t *q, int status, sq_claimed_t *jobs, size_t n, void *data) {
  op_t *o = data;
  sq_session_t *s = o->s;
  (void)q;
  s->claim_inflight = 0;
  if (status == SQ_ELEASE_LOST && !s->closing) {
    sq_log_warn("worker", "claim refused: lease lost; re-registering", NULL);
    s->lease_ok = 0;
    heartbeat_now(s);
  } else if (status != 0 && !s->closing) {
    /* The script may have moved jobs into our list before its reply was lost (or it failed
     * half-way): hand back whatever we do not hold before claiming again. */
    sq_log_warn("worker", "claim failed or its reply was lost; reconciling the in-flight list",
                "code=%s", sq_error_name(status));
    s->reconcile_needed = 1;
    reconcile_maybe(s);
  } else if (status == 0) {
    for (size_t i = 0; i < n; i++)
      if (sq_idset_add(s->held, jobs[i].id) < 0)
        sq_log_error("worker", "out of memory recording a claimed job", "id=%s", jobs[i].id);
  }
  o->cb.claim(s, status, jobs, n, o->data);
  op_free(o);
}

int sq_session_claim(sq_session_t *s, uint32_t n, uint64_t max_bytes, sq_session_claim_cb cb,
                     void *data) {
  if (!s || !cb) return SQ_EINVAL;
  if (!sq_session_can_claim(s)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o) return SQ_ENOMEM;
  o->cb.claim = cb;
  /* The watchdog allows the reply the time its payload bytes may take. */
  if (!max_bytes) max_bytes = SQ_DEFAULT_MAX_CLAIM_BYTES;
  uint64_t budget_ms = sq_redis_budget_ms_for_bytes(max_bytes);
  if (budget_ms < s->cmd_budget_ms) budget_ms = 0; /* the connection's default is longer */
  int rc = sq_queue_claim(s->q, s->cmd, n, max_bytes, budget_ms, on_claim, o);
  if (rc) {
    op_free(o);
    return rc;
  }
  s->claim_inflight = 1;
  return 0;
}

/* The ack's final answer (after its WAIT, if any). */
static void ack_finish(op_t *o, int status, const int *per_job, size_t n) {
  sq_session_t *s = o->s;
  if (status == 0) {
    /* Written, duplicate, or swept: in every case the id is no longer ours. */
    for (size_t i = 0; i < o->nids; i++) sq_idset_remove(s->held, o->ids[i]);
  } else if (status == SQ_ELEASE_LOST && !s->closing) {
    sq_log_warn("worker", "ack refused: lease lost; re-registering", "size=%zu", o->nids);
    s->lease_ok = 0;
    heartbeat_now(s);
  }
  o->cb.ack(s, status, per_job, n, o->data);
  op_free(o);
}

static void on_ack(sq_queue_t *q, int status, const int *per_job, size_t n, void *data) {
  op_t *o = data;
  (void)q;
  if (!o->s->cfg.wait_replicas) {
    ack_finish(o, status, per_job, n);
    return;
  }
  if (!o->wait_sent) { /* the WAIT could not be sent: not known to be replicated, resend */
    ack_finish(o, status ? status : SQ_EREPLICAS, NULL, 0);
    return;
  }
  /* The WAIT sent right behind the ack answers next; keep this answer until then. */
  o->ack_answered = 1;
  o->ack_status = status;
  if (status == 0 && n) {
    o->per_job = malloc(n * sizeof(int));
    if (!o->per_job) {
      o->ack_status = SQ_ENOMEM;
      return;
    }
    memcpy(o->per_job, per_job, n * sizeof(int));
    o->nper = n;
  }
}

static int send_ack_wait(sq_session_t *s, op_t *o);

static void on_ack_wait(sq_redis_conn_t *c, struct redisReply *reply, void *data) {
  op_t *o = data;
  sq_session_t *s = o->s;
  (void)c;
  if (!o->ack_answered) {
    /* The ack went out again behind this WAIT (EVALSHA -> NOSCRIPT -> EVAL): this WAIT counted
     * nothing of it. Wait again behind it (or, if that cannot go, let the ack's reply decide). */
    o->wait_sent = send_ack_wait(s, o);
    return;
  }
  int status = o->ack_status;
  long long acked = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
  if (status == 0 && acked < (long long)s->cfg.wait_replicas) {
    /* Written on the primary only: a failover now could lose it. Keep the ids held; the worker
     * resends the ack (idempotent: it answers "duplicate") and waits again. */
    status = reply ? SQ_EREPLICAS : SQ_EREDIS;
    if (reply && !s->closing)
      sq_log_warn("worker", "ack not replicated in time; resending",
                  "replicas=%lld wanted=%u timeout_ms=%u", acked < 0 ? 0 : acked,
                  s->cfg.wait_replicas, s->cfg.wait_replicas_timeout_ms);
  }
  ack_finish(o, status, status == 0 ? o->per_job : NULL, status == 0 ? o->nper : 0);
}

int sq_session_ack(sq_session_t *s, const sq_ack_item_t *items, size_t n, sq_session_ack_cb cb,
                   void *data) {
  if (!s || !cb || (n && !items)) return SQ_EINVAL;
  if (!sq_session_can_ack(s)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o || !(o->ids = calloc(n ? n : 1, sizeof(char *)))) {
    free(o);
    return SQ_ENOMEM;
  }
  o->cb.ack = cb;
  for (size_t i = 0; i < n; i++) {
    if (!(o->ids[i] = sq_strdup(items[i].id))) {
      op_free(o);
      return SQ_ENOMEM;
    }
    o->nids = i + 1;
  }
  int rc = sq_queue_ack(s->q, s->cmd, items, n, on_ack, o);
  if (rc) {
    op_free(o);
    return rc;
  }
  /* Right behind the ack on the same connection: WAIT counts this connection's writes. */
  if (s->cfg.wait_replicas) o->wait_sent = send_ack_wait(s, o);
  return 0;
}

static int send_ack_wait(sq_session_t *s, op_t *o) {
  char nrep[16], tmo[16];
  snprintf(nrep, sizeof nrep, "%u", s->cfg.wait_replicas);
  snprintf(tmo, sizeof tmo, "%u", s->cfg.wait_replicas_timeout_ms);
  const char *argv[] = {"WAIT", nrep, tmo};
  return sq_redis_command_argv(s->cmd, s->cfg.wait_replicas_timeout_ms + s->cmd_budget_ms,
                               on_ack_wait, o, 3, argv, NULL) == 0;
}

static void on_release(sq_queue_t *q, int status, long long value, void *data) {
  op_t *o = data;
  sq_session_t *s = o->s;
  (void)q;
  if (status == 0) {
    /* Back in their queues (or no longer ours): in every case not held any more. */
    for (size_t i = 0; i < o->nids; i++) sq_idset_remove(s->held, o->ids[i]);
  } else if (status == SQ_ELEASE_LOST && !s->closing) {
    sq_log_warn("worker", "release refused: lease lost; re-registering", "size=%zu", o->nids);
    s->lease_ok = 0;
    heartbeat_now(s);
  }
  o->cb.status(s, status, value, o->data);
  op_free(o);
}

int sq_session_release(sq_session_t *s, const char *const *ids, size_t n, sq_session_status_cb cb,
                       void *data) {
  if (!s || !cb || !n || !ids) return SQ_EINVAL;
  if (!sq_session_can_ack(s)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o || !(o->ids = calloc(n, sizeof(char *)))) {
    free(o);
    return SQ_ENOMEM;
  }
  o->cb.status = cb;
  for (size_t i = 0; i < n; i++) {
    if (!(o->ids[i] = sq_strdup(ids[i]))) {
      op_free(o);
      return SQ_ENOMEM;
    }
    o->nids = i + 1;
  }
  int rc = sq_queue_release(s->q, s->cmd, ids, n, on_release, o);
  if (rc) op_free(o);
  return rc;
}

static void on_wait(sq_queue_t *q, int status, long long value, void *data) {
  op_t *o = data;
  sq_session_t *s = o->s;
  (void)q;
  s->wait_inflight = 0;
  o->cb.status(s, status, value, o->data);
  op_free(o);
}

int sq_session_wait(sq_session_t *s, sq_session_status_cb cb, void *data) {
  return sq_session_wait_ms(s, 0, cb, data);
}

int sq_session_wait_ms(sq_session_t *s, uint32_t timeout_ms, sq_session_status_cb cb, void *data) {
  if (!s || !cb) return SQ_EINVAL;
  if (!sq_session_can_wait(s)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o) return SQ_ENOMEM;
  o->cb.status = cb;
  double timeout_s = timeout_ms ? timeout_ms / 1000.0 : (double)s->cfg.wait_timeout_s;
  int rc = sq_queue_wait(s->q, s->blk, timeout_s, on_wait, o);
  if (rc) {
    op_free(o);
    return rc;
  }
  s->wait_inflight = 1;
  return 0;
}

static void on_progress(sq_queue_t *q, int status, long long value, void *data) {
  op_t *o = data;
  (void)q;
  o->cb.status(o->s, status, value, o->data);
  op_free(o);
}

int sq_session_progress(sq_session_t *s, const sq_progress_item_t *items, size_t n,
                        sq_session_status_cb cb, void *data) {
  if (!s || !cb || (n && !items)) return SQ_EINVAL;
  if (!sq_session_can_ack(s)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o) return SQ_ENOMEM;
  o->cb.status = cb;
  int rc = sq_queue_progress(s->q, s->cmd, items, n, on_progress, o);
  if (rc) op_free(o);
  return rc;
}

void sq_session_forget(sq_session_t *s, const char *id) {
  if (s && id) sq_idset_remove(s->held, id);
}

static void on_unregister(sq_queue_t *q, int status, long long value, void *data) {
  op_t *o = data;
  (void)q;
  o->cb.status(o->s, status, value, o->data);
  op_free(o);
}

int sq_session_unregister(sq_session_t *s, sq_session_status_cb cb, void *data) {
  if (!s || !cb) return SQ_EINVAL;
  /* Already unregistered (or never registered): nothing of ours is left to remove. */
  if (!s->lease_ever) return 1;
  if (s->closing || !s->lease_ok || !sq_redis_conn_ready(s->cmd)) return SQ_EREDIS;
  op_t *o = op_new(s, data);
  if (!o) return SQ_ENOMEM;
  o->cb.status = cb;
  int rc = sq_queue_unregister(s->q, s->cmd, on_unregister, o);
  if (rc) op_free(o);
  return rc;
}

void sq_session_health(const sq_session_t *s, sq_session_health_t *out) {
  memset(out, 0, sizeof(*out));
  out->command_ready = sq_redis_conn_ready(s->cmd);
  out->blocking_ready = sq_redis_conn_ready(s->blk);
  out->lease_ready = sq_redis_conn_ready(s->lease);
  out->lease_ok = s->lease_ok;
  out->lease_ever = s->lease_ever;
  out->recovering = s->reconcile_needed || s->reconcile_inflight;
  /* The lease connection answers a heartbeat every lease_ttl/3, busy or idle. */
  out->last_reply_us = sq_redis_conn_last_reply_us(s->lease);
  out->lease_until_us = s->lease_until_us;
  out->reply_budget_ms = s->cmd_budget_ms;
  out->lease_ttl_ms = s->cfg.lease_ttl_ms;
  out->held = sq_idset_len(s->held);
}

/* ---- connection events ---- */

static void on_cmd_ready(sq_redis_conn_t *c, void *data) {
  sq_session_t *s = data;
  (void)c;
  s->reconcile_needed = 1; /* anything may have happened while we were away */
  if (s->lease_ok)
    reconcile_maybe(s);
  else
    heartbeat_now(s); /* claims and acks resume once the lease is confirmed */
}

static void on_lease_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  heartbeat_now(data);
}

static void on_blk_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  resume(data);
}

static void fatal(sq_session_t *s, int code, const char *msg) {
  if (s->fatal_seen || s->closing) return;
  s->fatal_seen = 1;
  if (s->ev.fatal) s->ev.fatal(s, code, msg, s->data);
}

static void on_conn_fatal(sq_redis_conn_t *c, int code, const char *msg, void *data) {
  (void)c;
  fatal(data, code, msg);
}

/* ---- lifecycle ---- */

static void session_free(sq_session_t *s) {
  free(s->user);
  free(s->prefix);
  sq_idset_free(s->held);
  sq_queue_free(s->q);
  free(s);
}

static void on_handle_closed(void *arg) {
  sq_session_t *s = arg;
  if (--s->handles_open > 0) return;
  void (*closed)(void *) = s->closed;
  void *carg = s->closed_arg;
  session_free(s);
  if (closed) closed(carg);
}

sq_session_t *sq_session_new(const sq_redis_url_t *url, const sq_redis_loop_t *loop,
                             const sq_session_config_t *cfg, const sq_session_events_t *ev,
                             void *data, sq_error_t *err) {
  sq_session_t *s = calloc(1, sizeof(*s));
  if (!s) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  s->loop = *loop;
  s->cfg = *cfg;
  if (ev) s->ev = *ev;
  s->data = data;
  sq_queue_config_t qc = {0};
  qc.prefix = cfg->prefix;
  qc.worker_id = cfg->worker_id;
  qc.models = cfg->models;
  qc.nmodels = cfg->nmodels;
  qc.lease_ttl_ms = cfg->lease_ttl_ms;
  qc.max_attempts = cfg->max_attempts;
  qc.result_ttl_s = cfg->result_ttl_s;
  qc.dead_ttl_s = cfg->dead_ttl_s;
  s->q = sq_queue_new(&qc);
  s->held = sq_idset_new();
  if (url->user) s->user = sq_strdup(url->user);
  s->prefix = sq_strdup(cfg->prefix ? cfg->prefix : "segq");
  /* cfg's strings are the caller's: only q's copies are used from here on. */
  s->cfg.prefix = s->cfg.worker_id = NULL;
  s->cfg.models = NULL;
  if (!s->q || !s->held || !s->prefix || (url->user && !s->user)) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    session_free(s);
    return NULL;
  }
  if (!s->cfg.lease_ttl_ms) s->cfg.lease_ttl_ms = 10000;
  if (!s->cfg.wait_timeout_s) s->cfg.wait_timeout_s = 2;

  /* Reconnect attempts at most lease_ttl/6 apart (100 ms..5 s): after a short Redis outage the
   * command connection is back, and the lease renewed, before the lease can run out. */
  sq_redis_options_t ro = {0};
  ro.backoff_max_ms = s->cfg.lease_ttl_ms / 6;
  if (ro.backoff_max_ms < 100) ro.backoff_max_ms = 100;
  if (ro.backoff_max_ms > 5000) ro.backoff_max_ms = 5000;
  s->r = sq_redis_new(url, loop, &ro, err);
  if (!s->r) {
    session_free(s);
    return NULL;
  }
  s->heartbeat_timer = s->loop.timer_new(s->loop.data, on_heartbeat_timer, s);
  s->sweep_timer = s->loop.timer_new(s->loop.data, on_sweep_timer, s);
  s->handles_open = 1 + !!s->heartbeat_timer + !!s->sweep_timer;
  if (!s->heartbeat_timer || !s->sweep_timer) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_session_close(s, NULL, NULL);
    return NULL;
  }
  uint32_t hb = s->cfg.lease_ttl_ms / 3 ? s->cfg.lease_ttl_ms / 3 : 1;
  uint32_t sw = s->cfg.lease_ttl_ms / 2 ? s->cfg.lease_ttl_ms / 2 : 1;
  s->loop.timer_start(s->heartbeat_timer, hb, hb);
  s->loop.timer_start(s->sweep_timer, sw, sw);

  /* A command reply may legitimately take a while; past the lease TTL the lease is gone anyway.
   * The blocking connection's BRPOP asks for its own budget (timeout + slack). */
  s->cmd_budget_ms = s->cfg.lease_ttl_ms > 5000 ? s->cfg.lease_ttl_ms : 5000;
  sq_redis_conn_events_t ce = {.ready = on_cmd_ready, .fatal = on_conn_fatal};
  sq_redis_conn_events_t be = {.ready = on_blk_ready, .fatal = on_conn_fatal};
  sq_redis_conn_events_t le = {.ready = on_lease_ready, .fatal = on_conn_fatal};
  s->cmd = sq_redis_conn_new(s->r, "command", s->cmd_budget_ms, 0, &ce, s);
  s->blk =
      sq_redis_conn_new(s->r, "blocking", ((uint64_t)s->cfg.wait_timeout_s + 3) * 1000, 0, &be, s);
  s->lease = sq_redis_conn_new(s->r, "lease", s->cmd_budget_ms, 0, &le, s);
  if (!s->cmd || !s->blk || !s->lease) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    sq_session_close(s, NULL, NULL);
    return NULL;
  }
  return s;
}

static void on_redis_closed(void *arg) {
  on_handle_closed(arg);
}

void sq_session_close(sq_session_t *s, void (*closed)(void *arg), void *arg) {
  if (!s || s->closing) return;
  s->closing = 1;
  s->closed = closed;
  s->closed_arg = arg;
  sq_redis_timer_t *timers[] = {s->heartbeat_timer, s->sweep_timer};
  for (size_t i = 0; i < 2; i++)
    if (timers[i]) {
      s->loop.timer_stop(timers[i]);
      s->loop.timer_close(timers[i], on_handle_closed, s);
    }
  sq_redis_close(s->r, on_redis_closed, s); /* pending callbacks run now with SQ_EREDIS */
}
