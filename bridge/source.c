/* bridge/source: the Redis side of the bridge's channels, on queue/'s session core (the same URL
 * forms as the worker, Sentinel, ACL users, reconnects, per-command reply budgets): a subscriber
 * connection holds one Redis subscription per followed channel, a command connection reads
 * snapshots, history and results.
 * The event model it reads today (docs/protocol.md): a job is channel P:ev:<id>, snapshot
 * P:status:<id> (offset = seq), history P:events:<id>; a group is P:gev:<group>, P:group:<group>
 * (offset = gseq), P:gevents:<group>; events carry no epoch yet ("" throughout).
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

typedef struct {
  sq_source_t *src;
  char channel[SQ_CHANNEL_MAX];
  sq_channel_kind_t kind;
  int with_hist;
  uint64_t after;
} read_req_t;

struct sq_source_result {
  sq_source_t *src;
  int canceled;
  sq_source_result_cb cb;
  void *data;
};

/* ---- names ---- */

static const char *offset_field(sq_channel_kind_t kind) {
  return kind == SQ_CHANNEL_JOB ? "seq" : "gseq";
}

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

static void on_message(sq_source_t *src, sub_entry_t *e, const char *msg, size_t len) {
  uint64_t off = 0;
  if (sq_bridge_msgpack_uint_field(msg, len, offset_field(e->kind), &off) != 0 || off == 0) {
    sq_log_warn("bridge", "event without an offset ignored", "channel=%s", e->bridge_name);
    return;
  }
  size_t jlen = 0;
  char *json = sq_bridge_msgpack_to_json(msg, len, &jlen);
  if (!json) return;
  sq_hub_event_t ev = {off, json, jlen};
  sq_hub_on_live(src->hub, e->bridge_name, &ev, NULL, now_ms());
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

/* ---- reads ---- */

static const redisReply *hash_field(const redisReply *h, const char *field) {
  if (!h || h->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < h->elements; i += 2)
    if (h->element[i]->type == REDIS_REPLY_STRING && strcmp(h->element[i]->str, field) == 0)
      return h->element[i + 1];
  return NULL;
}

static uint64_t reply_uint(const redisReply *r) {
  if (!r || r->type != REDIS_REPLY_STRING) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < r->len; i++) {
    if (r->str[i] < '0' || r->str[i] > '9' || v > UINT64_MAX / 10) return 0;
    v = v * 10 + (uint64_t)(r->str[i] - '0');
  }
  return v;
}

static void fail_read(read_req_t *rq) {
  sq_hub_read_t r = {.status = SQ_EREDIS};
  sq_hub_on_read(rq->src->hub, rq->channel, &r, now_ms());
}

static void on_read_reply(sq_redis_conn_t *c, redisReply *r, void *data) {
  read_req_t *rq = data;
  sq_source_t *src = rq->src;
  (void)c;
  if (src->closing) {
    free(rq);
    return;
  }
  size_t want = rq->with_hist ? 2 : 1;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != want ||
      r->element[0]->type != REDIS_REPLY_ARRAY) {
    if (r)
      sq_log_warn("bridge", "channel read failed", "channel=%s err=\"%.200s\"", rq->channel,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    fail_read(rq);
    free(rq);
    return;
  }
  const redisReply *hash = r->element[0];
  size_t nf = hash->elements / 2;
  const char **keys = calloc(nf + 1, sizeof(*keys));
  const char **vals = calloc(nf + 1, sizeof(*vals));
  size_t *vlens = calloc(nf + 1, sizeof(*vlens));
  sq_hub_event_t *evs = NULL;
  size_t nev = 0;
  char *snap = NULL;
  size_t snap_len = 0;
  uint64_t first = 0;
  int ok = keys && vals && vlens;
  for (size_t i = 0; ok && i < nf; i++) {
    keys[i] = hash->element[2 * i]->str;
    vals[i] = hash->element[2 * i + 1]->str;
    vlens[i] = hash->element[2 * i + 1]->len;
  }
  if (ok) snap = nf ? sq_bridge_hash_to_json(keys, vals, vlens, nf, &snap_len) : NULL;
  if (ok && rq->with_hist) {
    const redisReply *entries = r->element[1];
    if (entries->type == REDIS_REPLY_ARRAY && entries->elements) {
      evs = calloc(entries->elements, sizeof(*evs));
      ok = evs != NULL;
      for (size_t i = 0; ok && i < entries->elements; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements < 2) continue;
        const redisReply *payload = hash_field(en->element[1], "e");
        uint64_t off = 0;
        if (!payload || payload->type != REDIS_REPLY_STRING ||
            sq_bridge_msgpack_uint_field(payload->str, payload->len, offset_field(rq->kind),
                                         &off) != 0 ||
            off == 0)
          continue;
        if (!first || off < first) first = off;
        if (off <= rq->after) continue;
        size_t len = 0;
        char *json = sq_bridge_msgpack_to_json(payload->str, payload->len, &len);
        if (!json) continue;
        evs[nev++] = (sq_hub_event_t){off, json, len};
      }
    }
  }
  if (ok) {
    uint64_t snap_off = reply_uint(hash_field(hash, offset_field(rq->kind)));
    sq_hub_read_t res = {
        0, "", snap_off, snap ? snap : "null", snap ? snap_len : 4, rq->with_hist, evs, nev, first};
    sq_hub_on_read(src->hub, rq->channel, &res, now_ms());
  } else {
    fail_read(rq);
  }
  for (size_t i = 0; i < nev; i++) free((char *)evs[i].data);
  free(evs);
  free(snap);
  free(keys);
  free(vals);
  free(vlens);
  free(rq);
}

void sq_source_read(void *srcp, const char *channel, int with_history, uint64_t after,
                    const char *epoch) {
  sq_source_t *src = srcp;
  (void)epoch; /* today's events have no epoch */
  read_req_t *rq = calloc(1, sizeof(*rq));
  char snap_key[KEY_MAX], hist_key[KEY_MAX];
  if (!rq) {
    read_req_t tmp = {.src = src};
    snprintf(tmp.channel, sizeof tmp.channel, "%s", channel);
    fail_read(&tmp);
    return;
  }
  rq->src = src;
  snprintf(rq->channel, sizeof rq->channel, "%s", channel);
  rq->with_hist = with_history;
  rq->after = after;
  int ok = redis_name(src, channel, SQ_QUEUE_JOB_SNAPSHOT, SQ_QUEUE_GROUP_SNAPSHOT, snap_key,
                      sizeof snap_key, &rq->kind) == 0 &&
           redis_name(src, channel, SQ_QUEUE_JOB_HISTORY, SQ_QUEUE_GROUP_HISTORY, hist_key,
                      sizeof hist_key, NULL) == 0;
  /* Snapshot and history in one MULTI, so the history ends exactly at the snapshot's offset.
   * The reply budget grows with the history a read may bring (a group keeps ~10 000 events). */
  sq_redis_conn_t *c = sq_redis_conn_ready(src->cmd) ? src->cmd : NULL;
  uint64_t budget = with_history ? sq_redis_budget_ms_for_bytes(8u << 20) : 0;
  ok = ok && c && sq_redis_command(c, 0, NULL, NULL, "MULTI") == 0 &&
       sq_redis_command(c, 0, NULL, NULL, "HGETALL %s", snap_key) == 0 &&
       (!with_history || sq_redis_command(c, 0, NULL, NULL, "XRANGE %s - +", hist_key) == 0);
  if (ok && sq_redis_command(c, budget, on_read_reply, rq, "EXEC") != 0) {
    sq_redis_conn_drop(c, "a MULTI could not be finished"); /* never leave it open */
    ok = 0;
  }
  if (!ok) {
    fail_read(rq);
    free(rq);
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
  if (!r || r->type == REDIS_REPLY_ERROR) {
    req->cb(SQ_EREDIS, NULL, 0, req->data);
  } else if (r->type != REDIS_REPLY_STRING) {
    req->cb(SQ_ENOT_FOUND, NULL, 0, req->data);
  } else {
    size_t len = 0;
    char *json = sq_bridge_msgpack_to_json(r->str, r->len, &len);
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
  if (sq_queue_key_name(key, sizeof key, src->cfg.prefix, SQ_QUEUE_RESULT, id) != 0) return NULL;
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
