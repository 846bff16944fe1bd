/* queue/redis: the connection core of the Redis session (see queue.h). An endpoint holds the URL
 * and, in Sentinel mode, the discovered primary; its connections reconnect by themselves with
 * backoff, authenticate (HELLO 2 AUTH user pass, which also reports the role), select the
 * database, check that they talk to the primary, and are guarded by one watchdog that honours a
 * budget per command. hiredis 0.14 semantics: a failed connect only calls the connect callback;
 * freeing a connected context fails every pending callback with reply NULL, then calls the
 * disconnect callback; a free requested inside a callback happens when that callback returns.
 * The core never touches an event loop itself: it goes through the sq_redis_loop_t hooks.
 * Threads: the loop thread that runs the hooks' loop, only. */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "queue/queue.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define WATCHDOG_TICK_MS 100
#define CONNECT_TIMEOUT_MS 3000

enum { KIND_DATA, KIND_SENTINEL_QUERY, KIND_SENTINEL_SUB };
enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_READY };

/* A command sent and not yet answered; conn->head is the oldest (replies come in order). */
typedef struct pending {
  struct pending *prev, *next;
  sq_redis_conn_t *c;
  sq_redis_reply_cb cb;
  void *data;
  uint64_t sent_us, budget_us;
} pending_t;

/* One subscription; in hiredis's channel dict while `active`. */
typedef struct sub {
  struct sub *next;
  sq_redis_conn_t *c;
  char *channel;
  size_t len;
  int pattern;
  int active;    /* SUBSCRIBE sent on the current connection (hiredis holds our pointer) */
  int confirmed; /* Redis confirmed it on the current connection */
  int removed;   /* unsubscribed: free once hiredis lets go */
  sq_redis_sub_cb cb;
  void *data;
} sub_t;

struct sq_redis_conn {
  sq_redis_t *r;
  sq_redis_conn_t *next; /* r->conns */
  char name[48];
  int kind, flags;
  sq_redis_conn_events_t ev;
  void *data;
  redisAsyncContext *ac; /* non-NULL while connecting or connected */
  int state;
  int closing;  /* never reconnect; freed when its timer has closed */
  int dropping; /* freed by us, disconnect callback not seen yet */
  int stopped;  /* a fatal handshake error: no more attempts */
  int waiting_primary;
  char host[256]; /* address of the current (or last) attempt */
  int port;
  size_t node; /* sentinel connections: index into r->url.nodes */
  uint64_t backoff_ms;
  uint32_t attempts;
  uint64_t start_us, last_reply_us, default_budget_us;
  pending_t *head, *tail;
  int hs_left, hs_failed;
  sub_t *subs;
  sq_redis_timer_t *retry_timer;
};

struct sq_redis {
  sq_redis_loop_t loop;
  sq_redis_url_t url;
  uint64_t backoff_max_ms;
  sq_redis_conn_t *conns;
  sq_redis_timer_t *watchdog;
  int authenticated;
  int closing;
  int handles_open;
  void (*closed)(void *arg);
  void *closed_arg;
  /* Sentinel mode */
  int have_primary;
  char primary_host[256];
  int primary_port;
  int discovering;
  sq_redis_conn_t *squery, *ssub;
};

static void conn_start(sq_redis_conn_t *c);
static void discovery_start(sq_redis_t *r);
static void conn_close(sq_redis_conn_t *c);

static const char hs_hello[] = "hello", hs_select[] = "select", hs_ping[] = "ping";

/* ---- pending commands ---- */

static void pending_unlink(sq_redis_conn_t *c, pending_t *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    c->head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  else
    c->tail = p->prev;
  p->prev = p->next = NULL;
}

static int reply_is_readonly(const redisReply *r) {
  /* A demoted primary answers READONLY, also from inside a script ("... -READONLY ..."). */
  return r && r->type == REDIS_REPLY_ERROR && r->str && strstr(r->str, "READONLY") != NULL;
}

static void primary_invalidate(sq_redis_t *r, const char *host, int port, const char *why) {
  if (!r->url.sentinel || !r->have_primary) return;
  if (host && (strcmp(host, r->primary_host) != 0 || port != r->primary_port)) return;
  r->have_primary = 0;
  sq_log_warn("redis", "asking the sentinels for the primary again", "primary=%s:%d reason=\"%s\"",
              r->primary_host, r->primary_port, why);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  pending_t *p = privdata;
  sq_redis_conn_t *c = p->c;
  redisReply *rep = reply;
  (void)ac;
  pending_unlink(c, p);
  if (rep) c->last_reply_us = sq_clock_mono_us();
  if (rep && c->kind == KIND_DATA && reply_is_readonly(rep) && !c->dropping) {
    /* The server we talk to is a replica now (a failover): find the primary again. */
    primary_invalidate(c->r, c->host, c->port, "READONLY");
    sq_redis_conn_drop(c, "READONLY: the server is a replica now");
  }
  if (p->cb) p->cb(c, rep, p->data);
  free(p);
}

static pending_t *pending_new(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb,
                              void *data) {
  pending_t *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->c = c;
  p->cb = cb;
  p->data = data;
  p->sent_us = sq_clock_mono_us();
  p->budget_us = budget_ms ? budget_ms * 1000 : c->default_budget_us;
  return p;
}

static void pending_link(sq_redis_conn_t *c, pending_t *p) {
  p->prev = c->tail;
  if (c->tail)
    c->tail->next = p;
  else
    c->head = p;
  c->tail = p;
}

/* Sends on a connected context, ready or not (the handshake goes first). */
static int send_argv(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb, void *data,
                     int argc, const char **argv, const size_t *lens) {
  pending_t *p = pending_new(c, budget_ms, cb, data);
  if (!p) return SQ_ENOMEM;
  if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
    free(p);
    return SQ_EREDIS;
  }
  pending_link(c, p);
  return 0;
}

static int usable(const sq_redis_conn_t *c) {
  return c && c->ac && c->state == ST_READY && !c->dropping && !c->closing;
}

int sq_redis_command_argv(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb, void *data,
                          int argc, const char **argv, const size_t *lens) {
  if (!c || (c->flags & SQ_REDIS_CONN_SUBSCRIBER)) return SQ_EINVAL;
  if (!usable(c)) return SQ_EREDIS;
  return send_argv(c, budget_ms, cb, data, argc, argv, lens);
}

int sq_redis_command(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb, void *data,
                     const char *fmt, ...) {
  if (!c || (c->flags & SQ_REDIS_CONN_SUBSCRIBER)) return SQ_EINVAL;
  if (!usable(c)) return SQ_EREDIS;
  pending_t *p = pending_new(c, budget_ms, cb, data);
  if (!p) return SQ_ENOMEM;
  va_list ap;
  va_start(ap, fmt);
  int rc = redisvAsyncCommand(c->ac, on_reply, p, fmt, ap);
  va_end(ap);
  if (rc != REDIS_OK) {
    free(p);
    return SQ_EREDIS;
  }
  pending_link(c, p);
  return 0;
}

uint64_t sq_redis_budget_ms_for_bytes(uint64_t bytes) {
  /* 5 s, plus 1 s per 16 MiB: a claim of 16 x 48 MB ran ~12 s inside a busy Redis; this
   * allows ~4x that. */
  return 5000 + bytes / (16u << 20) * 1000 + (bytes % (16u << 20) ? 1000 : 0);
}

/* ---- subscriptions ---- */

static void sub_free(sq_redis_conn_t *c, sub_t *s) {
  for (sub_t **pp = &c->subs; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  free(s->channel);
  free(s);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  sub_t *s = privdata;
  sq_redis_conn_t *c = s->c;
  redisReply *r = reply;
  (void)ac;
  if (!r) { /* the connection went away: hiredis lets go of s */
    int was = s->confirmed;
    s->active = s->confirmed = 0;
    if (s->removed)
      sub_free(c, s);
    else if (was)
      s->cb(c, SQ_REDIS_SUB_LOST, s->channel, s->len, NULL, 0, s->data);
    return;
  }
  c->last_reply_us = sq_clock_mono_us();
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = r->element[0]->str;
  if (!strcasecmp(kind, "subscribe") || !strcasecmp(kind, "psubscribe")) {
    s->confirmed = 1;
    if (!s->removed) s->cb(c, SQ_REDIS_SUB_SUBSCRIBED, s->channel, s->len, NULL, 0, s->data);
  } else if (!strcasecmp(kind, "message")) {
    if (!s->removed)
      s->cb(c, SQ_REDIS_SUB_MESSAGE, r->element[1]->str, r->element[1]->len, r->element[2]->str,
            r->element[2]->len, s->data);
  } else if (!strcasecmp(kind, "pmessage") && r->elements >= 4) {
    if (!s->removed)
      s->cb(c, SQ_REDIS_SUB_MESSAGE, r->element[2]->str, r->element[2]->len, r->element[3]->str,
            r->element[3]->len, s->data);
  } else if (!strcasecmp(kind, "unsubscribe") || !strcasecmp(kind, "punsubscribe")) {
    /* hiredis routes these by channel name. When the channel was subscribed again before this
     * answer came, s is that new subscription (its SUBSCRIBE is still on the wire) and the
     * answer ends the removed one, which hiredis let go of when the new one replaced it. */
    sub_t *ended = s->removed ? s : NULL;
    for (sub_t *o = c->subs; !ended && o; o = o->next)
      if (o != s && o->removed && o->active && o->pattern == s->pattern && o->len == s->len &&
          !memcmp(o->channel, s->channel, s->len))
        ended = o;
    if (ended) {
      ended->active = ended->confirmed = 0;
      sub_free(c, ended);
    } else {
      s->active = s->confirmed = 0; /* hiredis has dropped s from its dict */
    }
  }
}

static void sub_send(sq_redis_conn_t *c, sub_t *s) {
  if (s->active || s->removed || !usable(c)) return;
  if (redisAsyncCommand(c->ac, on_sub_reply, s, s->pattern ? "PSUBSCRIBE %b" : "SUBSCRIBE %b",
                        s->channel, s->len) == REDIS_OK)
    s->active = 1;
}

int sq_redis_subscribe(sq_redis_conn_t *c, const char *channel, int pattern, sq_redis_sub_cb cb,
                       void *data) {
  if (!c || !channel || !cb || !(c->flags & SQ_REDIS_CONN_SUBSCRIBER)) return SQ_EINVAL;
  size_t len = strlen(channel);
  for (sub_t *s = c->subs; s; s = s->next)
    if (!s->removed && s->pattern == !!pattern && s->len == len &&
        !memcmp(s->channel, channel, len))
      return SQ_EINVAL;
  sub_t *s = calloc(1, sizeof(*s));
  if (!s || !(s->channel = sq_strdup(channel))) {
    free(s);
    return SQ_ENOMEM;
  }
  s->c = c;
  s->len = len;
  s->pattern = !!pattern;
  s->cb = cb;
  s->data = data;
  s->next = c->subs;
  c->subs = s;
  sub_send(c, s);
  return 0;
}

int sq_redis_unsubscribe(sq_redis_conn_t *c, const char *channel, int pattern) {
  if (!c || !channel) return SQ_EINVAL;
  size_t len = strlen(channel);
  for (sub_t *s = c->subs; s; s = s->next) {
    if (s->removed || s->pattern != !!pattern || s->len != len || memcmp(s->channel, channel, len))
      continue;
    s->removed = 1;
    if (!s->active) {
      sub_free(c, s);
    } else if (usable(c)) {
      /* (P)UNSUBSCRIBE has no callback of its own: its reply reaches on_sub_reply. */
      redisAsyncCommand(c->ac, NULL, NULL, pattern ? "PUNSUBSCRIBE %b" : "UNSUBSCRIBE %b",
                        s->channel, s->len);
    }
    return 0;
  }
  return SQ_EINVAL;
}

/* ---- connecting ---- */

static void on_retry(void *arg) {
  sq_redis_conn_t *c = arg;
  if (!c->closing && !c->stopped && !c->ac) conn_start(c);
}

static void schedule_retry(sq_redis_conn_t *c) {
  if (c->closing || c->stopped) return;
  uint64_t max = c->r->backoff_max_ms;
  uint64_t delay = c->backoff_ms > max ? max : c->backoff_ms;
  c->backoff_ms = delay * 2 > max ? max : delay * 2;
  sq_log_info("conn", "reconnecting", "conn=%s attempt=%u delay_ms=%llu", c->name, c->attempts + 1,
              (unsigned long long)delay);
  c->r->loop.timer_start(c->retry_timer, delay, 0);
}

/* A connect (or handshake) attempt failed: count it, pick another server, retry later. */
static void attempt_failed(sq_redis_conn_t *c, const char *why) {
  c->attempts++;
  c->state = ST_IDLE;
  if (c->kind == KIND_DATA)
    primary_invalidate(c->r, c->host, c->port, why);
  else
    c->node++; /* the next sentinel */
  schedule_retry(c);
}

static void conn_ready(sq_redis_conn_t *c) {
  sq_redis_t *r = c->r;
  c->state = ST_READY;
  c->last_reply_us = sq_clock_mono_us();
  if (c->kind == KIND_DATA) r->authenticated = 1;
  sq_log_info("conn", "connected", "conn=%s addr=%s:%d attempts=%u", c->name, c->host, c->port,
              c->attempts);
  c->attempts = 0;
  c->backoff_ms = BACKOFF_MIN_MS;
  for (sub_t *s = c->subs; s; s = s->next) sub_send(c, s);
  if (c->ev.ready) c->ev.ready(c, c->data);
}

static int starts_with(const char *s, const char *prefix) {
  return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* HELLO's reply (RESP2): a flat array of field, value pairs. */
static const char *hello_field(const redisReply *r, const char *field) {
  if (r->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < r->elements; i += 2)
    if (r->element[i]->type == REDIS_REPLY_STRING && !strcmp(r->element[i]->str, field) &&
        r->element[i + 1]->type == REDIS_REPLY_STRING)
      return r->element[i + 1]->str;
  return NULL;
}

static void handshake_refused(sq_redis_conn_t *c, const char *step, const char *err) {
  sq_redis_t *r = c->r;
  c->hs_failed = 1;
  int config_error = starts_with(err, "WRONGPASS") || starts_with(err, "NOAUTH") ||
                     starts_with(err, "NOPERM") || starts_with(err, "ERR AUTH") ||
                     starts_with(err, "ERR invalid password") || starts_with(err, "ERR DB index") ||
                     starts_with(err, "ERR invalid DB") ||
                     (starts_with(err, "ERR unknown command") && step == hs_hello);
  char msg[800];
  if (starts_with(err, "ERR unknown command"))
    snprintf(msg, sizeof msg, "%s:%d does not know HELLO: segq needs Redis >= 6.2", c->host,
             c->port);
  else if (step == hs_select)
    snprintf(msg, sizeof msg, "%s:%d refused SELECT %u: %.200s", c->host, c->port,
             (unsigned)r->url.db, err);
  else
    snprintf(msg, sizeof msg, "%s:%d refused the login of user '%.128s'%s: %.200s", c->host,
             c->port, r->url.user ? r->url.user : "default",
             r->url.password ? "" : " (no password given)", err);
  if (config_error && c->kind == KIND_DATA && !r->authenticated && c->ev.fatal) {
    /* Before any good login this is a configuration error: stop, let the owner say so. */
    sq_log_error("conn", "redis refused the credentials", "conn=%s msg=\"%s\"", c->name, msg);
    c->stopped = 1;
    sq_redis_conn_drop(c, "credentials refused");
    c->ev.fatal(c, SQ_EAUTH, msg, c->data);
    return;
  }
  sq_log_error("conn", "redis refused the connection handshake; retrying", "conn=%s msg=\"%s\"",
               c->name, msg);
  sq_redis_conn_drop(c, "handshake refused");
}

static void on_handshake(sq_redis_conn_t *c, redisReply *reply, void *data) {
  const char *step = data;
  if (!reply || c->hs_failed || c->closing) return; /* gone: on_disconnect takes over */
  if (reply->type == REDIS_REPLY_ERROR) {
    handshake_refused(c, step, reply->str ? reply->str : "");
    return;
  }
  if (step == hs_hello) {
    const char *role = hello_field(reply, "role");
    if (role && strcmp(role, "master") != 0) {
      c->hs_failed = 1;
      if (c->r->url.sentinel) {
        sq_log_warn("conn", "not the primary; asking the sentinels again",
                    "conn=%s addr=%s:%d role=%s", c->name, c->host, c->port, role);
        primary_invalidate(c->r, c->host, c->port, "role is not master");
      } else {
        sq_log_error("conn",
                     "the server is a read-only replica; point --redis-url at the primary or use "
                     "redis+sentinel://",
                     "conn=%s addr=%s:%d role=%s", c->name, c->host, c->port, role);
      }
      sq_redis_conn_drop(c, "not the primary");
      return;
    }
  }
  if (--c->hs_left == 0) conn_ready(c);
}

static void handshake_start(sq_redis_conn_t *c) {
  sq_redis_t *r = c->r;
  c->state = ST_HANDSHAKE;
  c->hs_failed = 0;
  c->hs_left = 0;
  int rc = 0;
  if (c->kind != KIND_DATA) {
    const char *argv[] = {"PING"};
    rc = send_argv(c, CONNECT_TIMEOUT_MS, on_handshake, (void *)hs_ping, 1, argv, NULL);
    c->hs_left += rc == 0;
  } else {
    /* HELLO 2 [AUTH user pass]: logs in (an ACL user, or `default` for a bare password) and
     * reports the role in one round trip; every later command runs after it. */
    const char *argv[] = {"HELLO", "2", "AUTH", r->url.user ? r->url.user : "default",
                          r->url.password ? r->url.password : ""};
    int login = r->url.user || r->url.password;
    rc =
        send_argv(c, CONNECT_TIMEOUT_MS, on_handshake, (void *)hs_hello, login ? 5 : 2, argv, NULL);
    c->hs_left += rc == 0;
    if (rc == 0 && r->url.db) {
      char db[16];
      snprintf(db, sizeof db, "%u", (unsigned)r->url.db);
      const char *sv[] = {"SELECT", db};
      rc = send_argv(c, CONNECT_TIMEOUT_MS, on_handshake, (void *)hs_select, 2, sv, NULL);
      c->hs_left += rc == 0;
    }
  }
  /* Not dropped here: freeing the context inside hiredis's connect callback is unsafe in 0.14.
   * The watchdog drops a handshake with nothing pending. */
  if (rc != 0) c->hs_failed = 1;
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sq_redis_conn_t *c = ac->data;
  if (status != REDIS_OK) {
    sq_log_warn("conn", "connect failed", "conn=%s addr=%s:%d err=\"%s\"", c->name, c->host,
                c->port, ac->errstr);
    c->ac = NULL; /* hiredis frees the context after this callback */
    attempt_failed(c, "connect failed");
    return;
  }
  redisEnableKeepAlive((redisContext *)&ac->c); /* a silent peer is found out eventually */
  c->last_reply_us = sq_clock_mono_us();
  handshake_start(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sq_redis_conn_t *c = ac->data;
  int was_ready = c->state == ST_READY;
  int was_connected = c->state >= ST_HANDSHAKE;
  int by_us = c->dropping || status == REDIS_OK;
  c->ac = NULL;
  c->state = ST_IDLE;
  c->dropping = 0;
  if (!c->closing)
    sq_log_warn("conn", "disconnected", "conn=%s addr=%s:%d err=\"%s\"", c->name, c->host, c->port,
                status == REDIS_OK ? "dropped by us" : ac->errstr);
  if (!c->closing && !by_us) {
    /* Sentinel mode: a failover closes the clients of the old primary; ask again. */
    if (c->kind == KIND_DATA)
      primary_invalidate(c->r, c->host, c->port, "connection lost");
    else
      c->node++;
  }
  if (was_ready && c->ev.down) c->ev.down(c, c->data);
  if (!was_ready && was_connected) c->attempts++; /* the handshake failed */
  schedule_retry(c);
}

/* The one place where a connection is made (a hiredis with TLS would initiate it here). */
static void conn_open(sq_redis_conn_t *c, const char *host, int port) {
  snprintf(c->host, sizeof c->host, "%s", host);
  c->port = port;
  redisAsyncContext *ac = redisAsyncConnect(host, port);
  if (!ac || ac->err) {
    sq_log_warn("conn", "connect failed", "conn=%s addr=%s:%d err=\"%s\"", c->name, host, port,
                ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    attempt_failed(c, "connect failed");
    return;
  }
  ac->data = c;
  c->ac = ac;
  c->state = ST_CONNECTING;
  c->start_us = sq_clock_mono_us();
  if (c->r->loop.attach(c->r->loop.data, ac) != 0) {
    c->ac = NULL;
    redisAsyncFree(ac);
    attempt_failed(c, "event loop attach failed");
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void conn_start(sq_redis_conn_t *c) {
  sq_redis_t *r = c->r;
  if (c->closing || c->stopped || c->ac || r->closing) return;
  if (c->kind != KIND_DATA) {
    const sq_redis_node_t *n = &r->url.nodes[c->node % r->url.nnodes];
    conn_open(c, n->host, n->port);
  } else if (!r->url.sentinel) {
    conn_open(c, r->url.nodes[0].host, r->url.nodes[0].port);
  } else if (r->have_primary) {
    conn_open(c, r->primary_host, r->primary_port);
  } else {
    c->waiting_primary = 1; /* discovery calls conn_start again */
    discovery_start(r);
  }
}

/* ---- Sentinel discovery ---- */

static void on_master_addr(sq_redis_conn_t *c, redisReply *reply, void *data) {
  sq_redis_t *r = data;
  if (!reply || r->closing) return; /* the query connection retries when it is back */
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
      reply->element[0]->type == REDIS_REPLY_STRING &&
      reply->element[1]->type == REDIS_REPLY_STRING) {
    int port = atoi(reply->element[1]->str);
    if (port > 0 && port < 65536 && reply->element[0]->len < sizeof r->primary_host) {
      snprintf(r->primary_host, sizeof r->primary_host, "%s", reply->element[0]->str);
      r->primary_port = port;
      r->have_primary = 1;
      r->discovering = 0;
      sq_log_info("redis", "primary discovered", "master=%s primary=%s:%d sentinel=%s:%d",
                  r->url.master, r->primary_host, port, c->host, c->port);
      for (sq_redis_conn_t *d = r->conns; d; d = d->next)
        if (d->kind == KIND_DATA && d->waiting_primary) {
          d->waiting_primary = 0;
          conn_start(d);
        }
      return;
    }
  }
  sq_log_warn("redis", "sentinel does not know the master; trying the next one",
              "sentinel=%s:%d master=%s reply=\"%.100s\"", c->host, c->port, r->url.master,
              reply->type == REDIS_REPLY_ERROR && reply->str ? reply->str : "nil");
  c->node++;
  sq_redis_conn_drop(c, "no master address");
}

static void discovery_send(sq_redis_t *r) {
  const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->url.master};
  if (!usable(r->squery)) return; /* sent from its ready event */
  send_argv(r->squery, 0, on_master_addr, r, 3, argv, NULL);
}

static void on_squery_ready(sq_redis_conn_t *c, void *data) {
  sq_redis_t *r = data;
  (void)c;
  if (r->discovering) discovery_send(r);
}

static sq_redis_conn_t *conn_create(sq_redis_t *r, const char *name, int kind, int flags,
                                    uint64_t budget_ms, const sq_redis_conn_events_t *ev,
                                    void *data);

static void discovery_start(sq_redis_t *r) {
  if (r->discovering || r->closing) return;
  r->discovering = 1;
  if (!r->squery) {
    sq_redis_conn_events_t ev = {.ready = on_squery_ready};
    r->squery = conn_create(r, "sentinel", KIND_SENTINEL_QUERY, 0, CONNECT_TIMEOUT_MS, &ev, r);
    if (!r->squery) r->discovering = 0;
  } else {
    discovery_send(r);
  }
}

/* +switch-master <name> <old-ip> <old-port> <new-ip> <new-port> */
static void on_switch_master(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                             size_t channel_len, const char *msg, size_t len, void *data) {
  sq_redis_t *r = data;
  (void)c;
  (void)channel;
  (void)channel_len;
  if (ev != SQ_REDIS_SUB_MESSAGE || r->closing) return;
  char buf[600], name[200], oldh[256], newh[256];
  int oldp, newp;
  if (len >= sizeof buf) return;
  memcpy(buf, msg, len);
  buf[len] = '\0';
  if (sscanf(buf, "%199s %255s %d %255s %d", name, oldh, &oldp, newh, &newp) != 5 ||
      strcmp(name, r->url.master) != 0 || newp <= 0 || newp > 65535)
    return;
  sq_log_warn("redis", "sentinel switched the primary", "master=%s old=%s:%d new=%s:%d", name, oldh,
              oldp, newh, newp);
  snprintf(r->primary_host, sizeof r->primary_host, "%s", newh);
  r->primary_port = newp;
  r->have_primary = 1;
  for (sq_redis_conn_t *d = r->conns; d; d = d->next) {
    if (d->kind != KIND_DATA) continue;
    if (d->waiting_primary) {
      d->waiting_primary = 0;
      conn_start(d);
    } else if (d->ac && (strcmp(d->host, newh) != 0 || d->port != newp)) {
      sq_redis_conn_drop(d, "the primary moved (+switch-master)");
    }
  }
}

/* ---- watchdog ---- */

static void on_watchdog(void *arg) {
  sq_redis_t *r = arg;
  uint64_t now = sq_clock_mono_us();
  for (sq_redis_conn_t *c = r->conns; c; c = c->next) {
    if (!c->ac || c->dropping || c->closing) continue;
    if (c->state == ST_CONNECTING) {
      /* The glue hands poll errors to hiredis; this stays as a backstop for a refused connect
       * whose error the poll did not report, and for a SYN into a black hole. */
      int soerr = 0;
      socklen_t slen = sizeof soerr;
      if (c->ac->c.fd >= 0 && getsockopt(c->ac->c.fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) == 0 &&
          soerr != 0) {
        char why[128];
        snprintf(why, sizeof why, "connect failed: %s", strerror(soerr));
        sq_redis_conn_drop(c, why);
      } else if (now - c->start_us > (uint64_t)CONNECT_TIMEOUT_MS * 1000) {
        sq_redis_conn_drop(c, "connect timed out");
      }
      continue;
    }
    pending_t *p = c->head;
    if (!p && c->state == ST_HANDSHAKE && now - c->start_us > (uint64_t)CONNECT_TIMEOUT_MS * 1000)
      sq_redis_conn_drop(c, "handshake could not be sent");
    if (!p) continue;
    uint64_t from = p->sent_us > c->last_reply_us ? p->sent_us : c->last_reply_us;
    if (now - from > p->budget_us) {
      char why[96];
      snprintf(why, sizeof why, "no reply in %llu ms%s", (unsigned long long)(p->budget_us / 1000),
               c->state == ST_HANDSHAKE ? " (handshake)" : "");
      sq_redis_conn_drop(c, why);
    }
  }
}

/* ---- lifecycle ---- */

static sq_redis_conn_t *conn_create(sq_redis_t *r, const char *name, int kind, int flags,
                                    uint64_t budget_ms, const sq_redis_conn_events_t *ev,
                                    void *data) {
  sq_redis_conn_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->r = r;
  snprintf(c->name, sizeof c->name, "%s", name ? name : "redis");
  c->kind = kind;
  c->flags = flags;
  if (ev) c->ev = *ev;
  c->data = data;
  c->backoff_ms = BACKOFF_MIN_MS;
  c->default_budget_us = (budget_ms ? budget_ms : 5000) * 1000;
  c->retry_timer = r->loop.timer_new(r->loop.data, on_retry, c);
  if (!c->retry_timer) {
    free(c);
    return NULL;
  }
  r->handles_open++;
  c->next = r->conns;
  r->conns = c;
  c->last_reply_us = sq_clock_mono_us();
  conn_start(c);
  return c;
}

sq_redis_conn_t *sq_redis_conn_new(sq_redis_t *r, const char *name, uint64_t reply_budget_ms,
                                   int flags, const sq_redis_conn_events_t *ev, void *data) {
  if (!r || r->closing) return NULL;
  return conn_create(r, name, KIND_DATA, flags, reply_budget_ms, ev, data);
}

sq_redis_t *sq_redis_new(const sq_redis_url_t *url, const sq_redis_loop_t *loop,
                         const sq_redis_options_t *opt, sq_error_t *err) {
  sq_redis_t *r = calloc(1, sizeof(*r));
  if (!r || sq_redis_url_copy(&r->url, url) != 0) {
    free(r);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  if (r->url.nnodes == 0 || (r->url.sentinel && !r->url.master)) {
    sq_redis_url_free(&r->url);
    free(r);
    sq_error_set(err, SQ_EINVAL, "redis: the URL names no server");
    return NULL;
  }
  r->loop = *loop;
  r->backoff_max_ms = opt && opt->backoff_max_ms ? opt->backoff_max_ms : BACKOFF_MAX_MS;
  if (r->backoff_max_ms < BACKOFF_MIN_MS) r->backoff_max_ms = BACKOFF_MIN_MS;
  r->watchdog = r->loop.timer_new(r->loop.data, on_watchdog, r);
  if (!r->watchdog) {
    sq_redis_url_free(&r->url);
    free(r);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  r->handles_open = 1;
  r->loop.timer_start(r->watchdog, WATCHDOG_TICK_MS, WATCHDOG_TICK_MS);
  if (r->url.sentinel) {
    /* Follow failovers as they happen, not only when a command fails. */
    r->ssub = conn_create(r, "sentinel-sub", KIND_SENTINEL_SUB, SQ_REDIS_CONN_SUBSCRIBER,
                          CONNECT_TIMEOUT_MS, NULL, NULL);
    if (r->ssub) {
      r->ssub->node = r->url.nnodes > 1 ? 1 : 0; /* spread over the sentinels */
      sq_redis_subscribe(r->ssub, "+switch-master", 0, on_switch_master, r);
    }
  }
  return r;
}

int sq_redis_authenticated(const sq_redis_t *r) {
  return r && r->authenticated;
}

int sq_redis_conn_ready(const sq_redis_conn_t *c) {
  return usable(c);
}

const char *sq_redis_conn_name(const sq_redis_conn_t *c) {
  return c ? c->name : "-";
}

uint32_t sq_redis_conn_attempts(const sq_redis_conn_t *c) {
  return c ? c->attempts : 0;
}

uint64_t sq_redis_conn_last_reply_us(const sq_redis_conn_t *c) {
  return c ? c->last_reply_us : 0;
}

void sq_redis_conn_drop(sq_redis_conn_t *c, const char *why) {
  if (!c || !c->ac || c->dropping) return;
  sq_log_warn("conn", "dropping connection", "conn=%s addr=%s:%d reason=\"%s\"", c->name, c->host,
              c->port, why);
  redisAsyncContext *ac = c->ac;
  if (c->state >= ST_HANDSHAKE) {
    c->dropping = 1;
    redisAsyncFree(ac); /* on_disconnect runs (now, or when the current callback returns) */
  } else {
    c->ac = NULL; /* not connected yet: hiredis calls no callback */
    redisAsyncFree(ac);
    attempt_failed(c, why);
  }
}

static void finish_close(sq_redis_t *r) {
  void (*closed)(void *) = r->closed;
  void *arg = r->closed_arg;
  sq_redis_url_free(&r->url);
  free(r);
  if (closed) closed(arg);
}

static void on_handle_closed(void *arg) {
  sq_redis_t *r = arg;
  if (--r->handles_open == 0 && r->closing) finish_close(r);
}

static void on_conn_timer_closed(void *arg) {
  sq_redis_conn_t *c = arg;
  sq_redis_t *r = c->r;
  for (sq_redis_conn_t **pp = &r->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  while (c->subs) sub_free(c, c->subs);
  if (r->squery == c) r->squery = NULL;
  if (r->ssub == c) r->ssub = NULL;
  free(c);
  on_handle_closed(r);
}

static void conn_close(sq_redis_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  c->r->loop.timer_stop(c->retry_timer);
  if (c->ac) {
    redisAsyncContext *ac = c->ac;
    if (c->state < ST_HANDSHAKE) c->ac = NULL;
    if (!c->dropping) redisAsyncFree(ac); /* pending callbacks run with NULL */
  }
  c->r->loop.timer_close(c->retry_timer, on_conn_timer_closed, c);
}

void sq_redis_conn_close(sq_redis_conn_t *c) {
  if (c) conn_close(c);
}

void sq_redis_close(sq_redis_t *r, void (*closed)(void *arg), void *arg) {
  if (!r || r->closing) return;
  r->closing = 1;
  r->closed = closed;
  r->closed_arg = arg;
  for (sq_redis_conn_t *c = r->conns; c; c = c->next) conn_close(c);
  r->loop.timer_stop(r->watchdog);
  r->loop.timer_close(r->watchdog, on_handle_closed, r);
}
