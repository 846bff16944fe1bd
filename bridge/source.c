/* bridge/source: the Redis side of the bridge's channels, on queue/'s session core (the same URL
 * forms as the worker, Sentinel, ACL users, reconnects, per-command reply budgets): a subscriber
 * connection holds one Redis subscription per followed channel, a command connection reads
 * snapshots, history and results.
 * The event model (docs/protocol.md "Events and channels"): every event carries its channel's
 * `off` and `epoch`; a reader subscribes, then calls the recover script for the snapshot and what
 * it missed; a finished job's record is its terminal event followed by its result.
 * Threads: loop thread only. */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge/bridge_internal.h"
#include "queue/queue.h"

#define KEY_MAX 256

/* One followed Redis channel. queue/'s subscriber connection keeps the subscription across
 * reconnects and tells us each time it is confirmed (SUBSCRIBED) or gone (LOST). */
typedef struct {
  struct sq_source *src;
  char bridge_name[SQ_CHANNEL_MAX];
  char redis_name[KEY_MAX];
  sq_channel_kind_t kind;
  int confirmed;
} sub_entry_t;

struct sq_source {
  sq_source_config_t cfg;
  sq_hub_t *hub;
  sq_redis_loop_t hooks;
  sq_redis_t *redis;
  sq_redis_conn_t *cmd, *sub;
  sq_map_t *subs; /* bridge channel name -> sub_entry_t */
  size_t nsubscribed;
  int closing;
  void (*on_closed)(void *data);
  void *closed_data;
};

struct sq_source_result {
  sq_source_t *src;
  int canceled;
  sq_source_result_cb cb;
  void *data;
};

/* ---- names ---- */

static int redis_name(const sq_source_t *src, const char *bridge_channel, sq_queue_name_t job_name,
                      sq_queue_name_t group_name, char *out, size_t len, sq_channel_kind_t *kind) {
  const char *id;
  sq_channel_kind_t k;
  if (sq_bridge_channel_parse(bridge_channel, &k, &id) != 0) return SQ_ECHANNEL;
  if (kind) *kind = k;
  return sq_queue_key_name(out, len, src->cfg.prefix, k == SQ_CHANNEL_JOB ? job_name : group_name,
                           id);
}

static uint64_t now_ms(void) {
  return sq_clock_mono_us() / 1000;
}

/* ---- subscriptions ---- */

static void msgpack_str_field(const char *buf, size_t len, const char *key, char *out, size_t cap) {
  out[0] = '\0';
  sq_bridge_msgpack_str_field(buf, len, key, out, cap);
}

static void on_message(sq_source_t *src, sub_entry_t *e, const char *msg, size_t len) {
  uint64_t off = 0;
  char epoch[64];
  if (sq_bridge_msgpack_uint_field(msg, len, "off", &off) != 0 || off == 0) {
    sq_log_warn("bridge", "event without an offset ignored", "channel=%s", e->bridge_name);
    return;
  }
  msgpack_str_field(msg, len, "epoch", epoch, sizeof epoch);
  size_t jlen = 0;
  char *json = sq_bridge_msgpack_to_json(msg, len, &jlen);
  if (!json) return;
  sq_hub_event_t ev = {off, json, jlen};
  sq_hub_on_live(src->hub, e->bridge_name, &ev, epoch, now_ms());
  free(json);
}

static void on_sub_event(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                         size_t channel_len, const char *msg, size_t msg_len, void *data) {
  sub_entry_t *e = data;
  sq_source_t *src = e->src;
  (void)c;
  (void)channel;
  (void)channel_len;
  if (src->closing) return;
  if (ev == SQ_REDIS_SUB_SUBSCRIBED) {
    if (!e->confirmed) src->nsubscribed++;
    e->confirmed = 1;
    sq_hub_on_watching(src->hub, e->bridge_name, now_ms()); /* catches up from history */
  } else if (ev == SQ_REDIS_SUB_LOST) {
    if (e->confirmed) src->nsubscribed--;
    e->confirmed = 0;
    sq_hub_on_lost(src->hub, e->bridge_name);
  } else if (e->confirmed) {
    on_message(src, e, msg, msg_len);
  }
}

void sq_source_watch(void *srcp, const char *channel) {
  sq_source_t *src = srcp;
  if (sq_map_get(src->subs, channel)) return;
  sub_entry_t *e = calloc(1, sizeof(*e));
  if (!e || redis_name(src, channel, SQ_QUEUE_JOB_CHANNEL, SQ_QUEUE_GROUP_CHANNEL, e->redis_name,
                       sizeof e->redis_name, &e->kind) != 0) {
    free(e);
    return;
  }
  snprintf(e->bridge_name, sizeof e->bridge_name, "%s", channel);
  e->src = src;
  if (sq_map_put(src->subs, channel, e) != 0 ||
      sq_redis_subscribe(src->sub, e->redis_name, 0, on_sub_event, e) != 0) {
    sq_map_del(src->subs, channel);
    free(e);
    sq_log_error("bridge", "cannot follow a channel", "channel=%s", channel);
  }
}

void sq_source_unwatch(void *srcp, const char *channel) {
  sq_source_t *src = srcp;
  sub_entry_t *e = sq_map_del(src->subs, channel);
  if (!e) return;
  sq_redis_unsubscribe(src->sub, e->redis_name, 0); /* its callback is not called again */
  if (e->confirmed) src->nsubscribed--;
  free(e);
}

/* ---- reads: the recover script ----
 * A hub read is one or more calls of `recover` (docs/protocol.md "Reading without gaps"): the
 * snapshot and every event after `after` of `epoch`, or a resync. The hub keeps its own view of
 * offsets and epochs, so each outcome is told to it as a fact: the snapshot's (off, epoch), the
 * events, and, when history no longer reaches back to `after`, the lowest offset it still holds. */

#define RECOVER_LIMIT 1000
#define FAR_OFFSET 9007199254740991ull /* 2^53 - 1: "past everything", a snapshot-only recover */

typedef struct {
  sq_hub_event_t *v;
  size_t n, cap;
} events_t;

struct read_req {
  sq_source_t *src;
  char channel[SQ_CHANNEL_MAX];
  char id[SQ_CHANNEL_MAX];
  sq_channel_kind_t kind;
  int with_hist;
  uint64_t after, since;
  char epoch[64];
  events_t evs;
};

static void events_free(events_t *e) {
  for (size_t i = 0; i < e->n; i++) free((char *)e->v[i].data);
  free(e->v);
  memset(e, 0, sizeof(*e));
}

static void req_done(struct read_req *rq) {
  events_free(&rq->evs);
  free(rq);
}

static void fail_read(struct read_req *rq) {
  sq_hub_read_t r = {.status = SQ_EREDIS};
  sq_hub_on_read(rq->src->hub, rq->channel, &r, now_ms());
}

/* The string field key of a msgpack map into out ("" when absent). */
static void msgpack_str_field(const char *buf, size_t len, const char *key, char *out, size_t cap);

static int send_recover(struct read_req *rq);

static void deliver_read(struct read_req *rq, const sq_recover_t *rec, uint64_t first_offset) {
  sq_source_t *src = rq->src;
  char epoch[64] = "";
  uint64_t off = 0;
  char *snap = NULL;
  size_t snap_len = 0;
  if (rec->snapshot) {
    sq_bridge_msgpack_uint_field(rec->snapshot, rec->snapshot_len, "off", &off);
    msgpack_str_field(rec->snapshot, rec->snapshot_len, "epoch", epoch, sizeof epoch);
    snap = sq_bridge_msgpack_to_json(rec->snapshot, rec->snapshot_len, &snap_len);
  }
  sq_hub_read_t res = {
      0,         epoch,     off,         snap ? snap : "null", snap ? snap_len : 4, rq->with_hist,
      rq->evs.v, rq->evs.n, first_offset};
  sq_hub_on_read(src->hub, rq->channel, &res, now_ms());
  free(snap);
}

static int add_events(struct read_req *rq, const sq_recover_t *rec) {
  for (size_t i = 0; i < rec->nevents; i++) {
    uint64_t off = 0;
    if (sq_bridge_msgpack_uint_field(rec->events[i], rec->event_lens[i], "off", &off) != 0 ||
        off <= rq->since)
      continue;
    if (rq->evs.n == rq->evs.cap) {
      size_t n = rq->evs.cap ? rq->evs.cap * 2 : 64;
      sq_hub_event_t *nv = realloc(rq->evs.v, n * sizeof(*nv));
      if (!nv) return SQ_ENOMEM;
      rq->evs.v = nv;
      rq->evs.cap = n;
    }
    size_t len = 0;
    char *json = sq_bridge_msgpack_to_json(rec->events[i], rec->event_lens[i], &len);
    if (!json) return SQ_EMALFORMED;
    rq->evs.v[rq->evs.n++] = (sq_hub_event_t){off, json, len};
    rq->since = off;
  }
  return 0;
}

/* A group's history was trimmed past `after`: its first entry tells the hub which resuming
 * clients can still be served (entry ids are <off>-0). The snapshot waits here for the answer. */
typedef struct {
  struct read_req *rq;
  char *snapshot;
  size_t len;
} first_entry_t;

static void on_first_entry(sq_redis_conn_t *c, redisReply *r, void *data);

static void on_recover(int status, const sq_recover_t *rec, void *data) {
  struct read_req *rq = data;
  sq_source_t *src = rq->src;
  if (src->closing) {
    req_done(rq);
    return;
  }
  if (status != 0 || !rec) {
    fail_read(rq);
    req_done(rq);
    return;
  }
  if (strcmp(rec->status, "unknown") == 0) {
    /* No such job or group (yet, or any more): offset 0, no epoch; events may follow. */
    events_free(&rq->evs);
    sq_hub_read_t res = {0, "", 0, "null", 4, rq->with_hist, NULL, 0, rq->with_hist ? 1 : 0};
    sq_hub_on_read(src->hub, rq->channel, &res, now_ms());
    req_done(rq);
    return;
  }
  if (!rec->snapshot || add_events(rq, rec) != 0) {
    sq_log_warn("bridge", "recover answered something unexpected", "channel=%s status=%s",
                rq->channel, rec->status);
    fail_read(rq);
    req_done(rq);
    return;
  }
  if (strcmp(rec->status, "more") == 0 && rq->evs.n > 0) {
    if (send_recover(rq) == 0) return; /* the next page, from the last event */
    fail_read(rq);
    req_done(rq);
    return;
  }
  if (strcmp(rec->status, "resync") != 0 || !rq->with_hist) {
    deliver_read(rq, rec, 0);
    req_done(rq);
    return;
  }
  /* resync on a read that asked for history: another epoch or an offset ahead (the hub sees
   * both in the snapshot), or history no longer reaching back to since. */
  char epoch[64] = "";
  uint64_t off = 0;
  sq_bridge_msgpack_uint_field(rec->snapshot, rec->snapshot_len, "off", &off);
  msgpack_str_field(rec->snapshot, rec->snapshot_len, "epoch", epoch, sizeof epoch);
  int trimmed = strcmp(epoch, rq->epoch) == 0 && rq->since < off;
  if (!trimmed) {
    deliver_read(rq, rec, 0);
    req_done(rq);
    return;
  }
  if (rq->kind == SQ_CHANNEL_JOB) {
    deliver_read(rq, rec, off + 1); /* a job keeps no history but its latest event */
    req_done(rq);
    return;
  }
  /* Keep the snapshot for the answer and look up the first entry still held. */
  char key[KEY_MAX];
  if (sq_queue_key_name(key, sizeof key, src->cfg.prefix, SQ_QUEUE_GROUP_HISTORY, rq->id) != 0) {
    deliver_read(rq, rec, off + 1);
    req_done(rq);
    return;
  }
  first_entry_t *p = malloc(sizeof(*p));
  char *copy = p ? malloc(rec->snapshot_len) : NULL;
  if (!p || !copy) {
    free(p);
    free(copy);
    deliver_read(rq, rec, off + 1);
    req_done(rq);
    return;
  }
  memcpy(copy, rec->snapshot, rec->snapshot_len);
  p->rq = rq;
  p->snapshot = copy;
  p->len = rec->snapshot_len;
  if (!sq_redis_conn_ready(src->cmd) ||
      sq_redis_command(src->cmd, 0, on_first_entry, p, "XRANGE %s - + COUNT 1", key) != 0) {
    free(copy);
    free(p);
    deliver_read(rq, rec, off + 1);
    req_done(rq);
  }
}

static void on_first_entry(sq_redis_conn_t *c, redisReply *r, void *data) {
  first_entry_t *p = data;
  struct read_req *rq = p->rq;
  (void)c;
  if (!rq->src->closing) {
    sq_recover_t rec = {"resync", p->snapshot, p->len, NULL, NULL, 0};
    uint64_t off = 0, first = 0;
    sq_bridge_msgpack_uint_field(p->snapshot, p->len, "off", &off);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 1 &&
        r->element[0]->element[0]->type == REDIS_REPLY_STRING)
      first = strtoull(r->element[0]->element[0]->str, NULL, 10);
    /* History holds first.. (if it is past since; else something else is wrong: say none). */
    deliver_read(rq, &rec, first > rq->after + 1 ? first : off + 1);
  }
  free(p->snapshot);
  free(p);
  req_done(rq);
}

static int send_recover(struct read_req *rq) {
  sq_source_t *src = rq->src;
  if (!sq_redis_conn_ready(src->cmd)) return SQ_EREDIS;
  /* Without history a read only wants the snapshot: an offset past everything gets exactly
   * that (a resync with the snapshot) from recover. A job reader marks the job watched, so its
   * claim publishes `started`. */
  uint64_t since = rq->with_hist ? rq->since : FAR_OFFSET;
  return sq_queue_recover(src->cmd, src->cfg.prefix, rq->kind == SQ_CHANNEL_JOB ? "job" : "group",
                          rq->id, since, rq->epoch, RECOVER_LIMIT, rq->kind == SQ_CHANNEL_JOB,
                          sq_redis_budget_ms_for_bytes(8u << 20), on_recover, rq);
}

void sq_source_read(void *srcp, const char *channel, int with_history, uint64_t after,
                    const char *epoch) {
  sq_source_t *src = srcp;
  struct read_req *rq = calloc(1, sizeof(*rq));
  const char *id = NULL;
  if (!rq || sq_bridge_channel_parse(channel, &rq->kind, &id) != 0) {
    struct read_req tmp = {.src = src};
    snprintf(tmp.channel, sizeof tmp.channel, "%s", channel);
    fail_read(&tmp);
    free(rq);
    return;
  }
  rq->src = src;
  snprintf(rq->channel, sizeof rq->channel, "%s", channel);
  snprintf(rq->id, sizeof rq->id, "%s", id);
  snprintf(rq->epoch, sizeof rq->epoch, "%s", epoch ? epoch : "");
  rq->with_hist = with_history;
  rq->after = rq->since = after;
  if (send_recover(rq) != 0) {
    fail_read(rq);
    req_done(rq);
  }
}

/* ---- results ---- */

static void on_result_reply(sq_redis_conn_t *c, redisReply *r, void *data) {
  sq_source_result_t *req = data;
  (void)c;
  if (req->canceled || req->src->closing) {
    free(req);
    return;
  }
  if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) != 0)) {
    req->cb(SQ_EREDIS, NULL, 0, req->data);
  } else if (r->type != REDIS_REPLY_STRING) {
    req->cb(SQ_ENOT_FOUND, NULL, 0, req->data); /* nil, or a live job (a hash: WRONGTYPE) */
  } else {
    /* The finished record: the terminal event, then the result document (then, for a dead
     * letter, the job document). */
    size_t len = 0;
    char *json = sq_bridge_msgpack_nth_to_json(r->str, r->len, 1, &len);
    if (json)
      req->cb(0, json, len, req->data);
    else
      req->cb(SQ_EMALFORMED, NULL, 0, req->data);
    free(json);
  }
  free(req);
}

sq_source_result_t *sq_source_result(sq_source_t *src, const char *id, sq_source_result_cb cb,
                                     void *data) {
  char key[KEY_MAX];
  if (sq_queue_key_name(key, sizeof key, src->cfg.prefix, SQ_QUEUE_JOB_RECORD, id) != 0)
    return NULL;
  if (!sq_redis_conn_ready(src->cmd)) return NULL;
  sq_source_result_t *req = calloc(1, sizeof(*req));
  if (!req) return NULL;
  req->src = src;
  req->cb = cb;
  req->data = data;
  if (sq_redis_command(src->cmd, sq_redis_budget_ms_for_bytes(64u << 20), on_result_reply, req,
                       "GET %s", key) != 0) {
    free(req);
    return NULL;
  }
  return req;
}

void sq_source_result_cancel(sq_source_result_t *req) {
  if (req) req->canceled = 1;
}

/* ---- lifecycle ---- */

static void on_fatal(sq_redis_conn_t *c, int code, const char *msg, void *data) {
  (void)data;
  sq_log_error("bridge", "Redis refused the bridge's credentials; not retrying",
               "conn=%s code=%s err=\"%s\"", sq_redis_conn_name(c), sq_error_name(code), msg);
}

static const sq_redis_conn_events_t conn_events = {NULL, NULL, on_fatal};

sq_source_t *sq_source_new(const sq_source_config_t *cfg, sq_error_t *err) {
  sq_source_t *src = calloc(1, sizeof(*src));
  if (!src || !(src->subs = sq_map_new())) {
    free(src);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  src->cfg = *cfg;
  sq_redis_loop_uv(&src->hooks, cfg->loop);
  sq_redis_options_t opt = {0, "bridge"};
  src->redis = sq_redis_new(cfg->redis, &src->hooks, &opt, err);
  uint64_t budget = cfg->reply_limit_ms ? cfg->reply_limit_ms : 10000;
  if (src->redis) {
    src->cmd = sq_redis_conn_new(src->redis, "command", budget, 0, &conn_events, src);
    src->sub = sq_redis_conn_new(src->redis, "subscriber", budget, SQ_REDIS_CONN_SUBSCRIBER,
                                 &conn_events, src);
  }
  if (!src->redis || !src->cmd || !src->sub) {
    if (src->redis) sq_redis_close(src->redis, NULL, NULL);
    sq_map_free(src->subs);
    free(src);
    if (err && !err->code) sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  return src;
}

void sq_source_set_hub(sq_source_t *src, sq_hub_t *hub) {
  src->hub = hub;
}

int sq_source_ready(const sq_source_t *src) {
  return sq_redis_conn_ready(src->cmd) && sq_redis_conn_ready(src->sub);
}

size_t sq_source_subscriptions(const sq_source_t *src) {
  return src->nsubscribed;
}

static void free_entry(const char *key, void *value, void *data) {
  free(value);
  (void)key;
  (void)data;
}

static void redis_closed(void *arg) {
  sq_source_t *src = arg;
  void (*cb)(void *) = src->on_closed;
  void *data = src->closed_data;
  sq_map_each(src->subs, free_entry, NULL);
  sq_map_free(src->subs);
  free(src);
  if (cb) cb(data);
}

void sq_source_close(sq_source_t *src, void (*on_closed)(void *data), void *data) {
  src->closing = 1;
  src->on_closed = on_closed;
  src->closed_data = data;
  sq_redis_close(src->redis, redis_closed, src);
}
