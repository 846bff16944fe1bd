/* bridge/source: the Redis side of the bridge's channels. A subscriber connection holds one Redis
 * subscription per followed channel (subscribe, unsubscribe and resubscribe after a reconnect are a
 * small state machine per channel, so a channel that is dropped and followed again never races
 * its own UNSUBSCRIBE); a command connection reads snapshots, history and results.
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
#include "worker/conn.h"

#define HEARTBEAT_MS 5000
#define KEY_MAX 256

typedef enum { SUB_IDLE, SUB_SUBSCRIBING, SUB_SUBSCRIBED, SUB_UNSUBSCRIBING } sub_state_t;

typedef struct {
  char bridge_name[SQ_CHANNEL_MAX];
  sq_channel_kind_t kind;
  sub_state_t state;
  int wanted;
} sub_entry_t;

struct sq_source {
  sq_source_config_t cfg;
  sq_hub_t *hub;
  sq_conn_t cmd, sub;
  sq_map_t *subs; /* Redis channel name -> sub_entry_t */
  size_t nsubscribed;
  uv_timer_t heartbeat;
  int closing;
  int open_parts; /* connections + the heartbeat timer not yet closed */
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

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void send_subscribe(sq_source_t *src, const char *redis_channel, sub_entry_t *e) {
  if (!src->sub.ready || !src->sub.ac) return; /* on_sub_ready subscribes it */
  if (redisAsyncCommand(src->sub.ac, on_sub_reply, src, "SUBSCRIBE %s", redis_channel) != REDIS_OK)
    return;
  sq_conn_sent(&src->sub);
  e->state = SUB_SUBSCRIBING;
}

static void send_unsubscribe(sq_source_t *src, const char *redis_channel, sub_entry_t *e) {
  if (src->sub.ready && src->sub.ac &&
      redisAsyncCommand(src->sub.ac, NULL, NULL, "UNSUBSCRIBE %s", redis_channel) == REDIS_OK) {
    sq_conn_sent(&src->sub);
    e->state = SUB_UNSUBSCRIBING;
    return;
  }
  free(sq_map_del(src->subs, redis_channel)); /* not subscribed on a live connection */
}

static void on_message(sq_source_t *src, sub_entry_t *e, const redisReply *payload) {
  if (payload->type != REDIS_REPLY_STRING) return;
  uint64_t off = 0;
  if (sq_bridge_msgpack_uint_field(payload->str, payload->len, offset_field(e->kind), &off) != 0 ||
      off == 0) {
    sq_log_warn("bridge", "event without an offset ignored", "channel=%s", e->bridge_name);
    return;
  }
  size_t len = 0;
  char *json = sq_bridge_msgpack_to_json(payload->str, payload->len, &len);
  if (!json) return;
  sq_hub_event_t ev = {off, json, len};
  sq_hub_on_live(src->hub, e->bridge_name, &ev, NULL, now_ms());
  free(json);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  sq_source_t *src = privdata;
  redisReply *r = reply;
  (void)ac;
  if (!r || src->closing) return;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
      r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *type = r->element[0]->str;
  const char *name = r->element[1]->str;
  sub_entry_t *e = sq_map_get(src->subs, name);
  if (strcmp(type, "message") == 0) {
    if (e && e->wanted && e->state == SUB_SUBSCRIBED) on_message(src, e, r->element[2]);
    return;
  }
  if (strcmp(type, "subscribe") == 0) {
    sq_conn_replied(&src->sub);
    if (!e || e->state != SUB_SUBSCRIBING) return; /* a heartbeat's answer */
    e->state = SUB_SUBSCRIBED;
    src->nsubscribed++;
    if (e->wanted)
      sq_hub_on_watching(src->hub, e->bridge_name, now_ms());
    else
      send_unsubscribe(src, name, e);
    return;
  }
  if (strcmp(type, "unsubscribe") == 0) {
    sq_conn_replied(&src->sub);
    if (!e) return;
    if (e->state == SUB_SUBSCRIBED || e->state == SUB_UNSUBSCRIBING) src->nsubscribed--;
    e->state = SUB_IDLE;
    if (e->wanted)
      send_subscribe(src, name, e); /* followed again while it was being dropped */
    else
      free(sq_map_del(src->subs, name));
  }
}

void sq_source_watch(void *srcp, const char *channel) {
  sq_source_t *src = srcp;
  char name[KEY_MAX];
  sq_channel_kind_t kind;
  if (redis_name(src, channel, SQ_QUEUE_JOB_CHANNEL, SQ_QUEUE_GROUP_CHANNEL, name, sizeof name,
                 &kind) != 0)
    return;
  sub_entry_t *e = sq_map_get(src->subs, name);
  if (!e) {
    e = calloc(1, sizeof(*e));
    if (!e || sq_map_put(src->subs, name, e) != 0) {
      free(e);
      sq_log_error("bridge", "out of memory following a channel", "channel=%s", channel);
      return;
    }
    snprintf(e->bridge_name, sizeof e->bridge_name, "%s", channel);
    e->kind = kind;
  }
  e->wanted = 1;
  if (e->state == SUB_IDLE) send_subscribe(src, name, e);
  /* SUBSCRIBING: its answer reports it; UNSUBSCRIBING: resubscribed when that is answered;
   * SUBSCRIBED (a lingering channel followed again): the hub still has it. */
}

void sq_source_unwatch(void *srcp, const char *channel) {
  sq_source_t *src = srcp;
  char name[KEY_MAX];
  if (redis_name(src, channel, SQ_QUEUE_JOB_CHANNEL, SQ_QUEUE_GROUP_CHANNEL, name, sizeof name,
                 NULL) != 0)
    return;
  sub_entry_t *e = sq_map_get(src->subs, name);
  if (!e) return;
  e->wanted = 0;
  if (e->state == SUB_SUBSCRIBED)
    send_unsubscribe(src, name, e);
  else if (e->state == SUB_IDLE)
    free(sq_map_del(src->subs, name));
}

static void resubscribe_each(const char *key, void *value, void *data) {
  sub_entry_t *e = value;
  if (e->wanted && e->state == SUB_IDLE) send_subscribe(data, key, e);
}

static void on_sub_ready(sq_conn_t *c, void *data) {
  sq_source_t *src = data;
  (void)c;
  if (!src->closing) sq_map_each(src->subs, resubscribe_each, src);
}

static void drop_each(const char *key, void *value, void *data) {
  sq_source_t *src = data;
  sub_entry_t *e = value;
  e->state = SUB_IDLE;
  if (!e->wanted) free(sq_map_del(src->subs, key));
}

static void on_sub_down(sq_conn_t *c, void *data) {
  sq_source_t *src = data;
  (void)c;
  if (src->closing) return;
  src->nsubscribed = 0;
  sq_map_each(src->subs, drop_each, src);
  sq_hub_on_source_down(src->hub);
}

typedef struct {
  const char *name;
} first_subscribed_t;

static void find_subscribed(const char *key, void *value, void *data) {
  first_subscribed_t *f = data;
  if (!f->name && ((sub_entry_t *)value)->state == SUB_SUBSCRIBED) f->name = key;
}

/* hiredis 0.14 cannot route a PING's answer in subscribed mode, so the subscriber connection
 * proves it is alive by subscribing again to a channel it holds: Redis answers "subscribe", and
 * the watchdog drops the connection if that answer does not come. */
static void on_heartbeat(uv_timer_t *t) {
  sq_source_t *src = t->data;
  if (src->closing || !src->sub.ready || !src->sub.ac) return;
  first_subscribed_t f = {NULL};
  sq_map_each(src->subs, find_subscribed, &f);
  if (f.name &&
      redisAsyncCommand(src->sub.ac, on_sub_reply, src, "SUBSCRIBE %s", f.name) == REDIS_OK)
    sq_conn_sent(&src->sub);
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

static void on_read_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  read_req_t *rq = privdata;
  sq_source_t *src = rq->src;
  redisReply *r = reply;
  (void)ac;
  if (src->closing) {
    free(rq);
    return;
  }
  if (r) sq_conn_replied(&src->cmd);
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
  redisAsyncContext *ac = src->cmd.ready ? src->cmd.ac : NULL;
  /* Snapshot and history in one MULTI, so the history ends exactly at the snapshot's offset. */
  ok =
      ok && ac && redisAsyncCommand(ac, NULL, NULL, "MULTI") == REDIS_OK &&
      redisAsyncCommand(ac, NULL, NULL, "HGETALL %s", snap_key) == REDIS_OK &&
      (!with_history || redisAsyncCommand(ac, NULL, NULL, "XRANGE %s - +", hist_key) == REDIS_OK) &&
      redisAsyncCommand(ac, on_read_reply, rq, "EXEC") == REDIS_OK;
  if (!ok) {
    /* Nothing sent (or a partial MULTI the connection will drop): report the failure now. */
    fail_read(rq);
    free(rq);
    return;
  }
  sq_conn_sent(&src->cmd);
}

/* ---- results ---- */

static void on_result_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  sq_source_result_t *req = privdata;
  redisReply *r = reply;
  (void)ac;
  if (!req->src->closing && r) sq_conn_replied(&req->src->cmd);
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
  if (!src->cmd.ready || !src->cmd.ac) return NULL;
  sq_source_result_t *req = calloc(1, sizeof(*req));
  if (!req) return NULL;
  req->src = src;
  req->cb = cb;
  req->data = data;
  if (redisAsyncCommand(src->cmd.ac, on_result_reply, req, "GET %s", key) != REDIS_OK) {
    free(req);
    return NULL;
  }
  sq_conn_sent(&src->cmd);
  return req;
}

void sq_source_result_cancel(sq_source_result_t *req) {
  if (req) req->canceled = 1;
}

/* ---- lifecycle ---- */

sq_source_t *sq_source_new(const sq_source_config_t *cfg) {
  sq_source_t *src = calloc(1, sizeof(*src));
  if (!src) return NULL;
  src->cfg = *cfg;
  if (!(src->subs = sq_map_new())) {
    free(src);
    return NULL;
  }
  uint64_t limit_us = (cfg->reply_limit_ms ? cfg->reply_limit_ms : 10000) * 1000;
  src->sub.on_ready = on_sub_ready;
  src->sub.on_down = on_sub_down;
  src->sub.data = src;
  src->cmd.data = src;
  src->open_parts = 3;
  uv_timer_init(cfg->loop, &src->heartbeat);
  src->heartbeat.data = src;
  uv_timer_start(&src->heartbeat, on_heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  sq_conn_init(&src->cmd, cfg->loop, "command", cfg->host, cfg->port, cfg->password, cfg->db,
               limit_us);
  sq_conn_init(&src->sub, cfg->loop, "subscriber", cfg->host, cfg->port, cfg->password, cfg->db,
               limit_us);
  return src;
}

void sq_source_set_hub(sq_source_t *src, sq_hub_t *hub) {
  src->hub = hub;
}

int sq_source_ready(const sq_source_t *src) {
  return src->cmd.ready && src->sub.ready;
}

size_t sq_source_subscriptions(const sq_source_t *src) {
  return src->nsubscribed;
}

static void free_entry(const char *key, void *value, void *data) {
  free(value);
  (void)key;
  (void)data;
}

static void part_closed(sq_source_t *src) {
  if (--src->open_parts > 0) return;
  void (*cb)(void *) = src->on_closed;
  void *data = src->closed_data;
  sq_map_each(src->subs, free_entry, NULL);
  sq_map_free(src->subs);
  free(src);
  if (cb) cb(data);
}

static void conn_closed(sq_conn_t *c) {
  part_closed(c->data);
}

static void timer_closed(uv_handle_t *h) {
  part_closed(h->data);
}

void sq_source_close(sq_source_t *src, void (*on_closed)(void *data), void *data) {
  src->closing = 1;
  src->on_closed = on_closed;
  src->closed_data = data;
  uv_timer_stop(&src->heartbeat);
  uv_close((uv_handle_t *)&src->heartbeat, timer_closed);
  sq_conn_close(&src->cmd, conn_closed);
  sq_conn_close(&src->sub, conn_closed);
}
