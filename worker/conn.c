/* worker/conn: a self-healing hiredis async connection (see conn.h). hiredis 0.14 semantics:
 * a failed connect only calls the connect callback; freeing a connected context fails every
 * pending callback with reply NULL and then calls the disconnect callback.
 * Threads: loop thread only. */
#include "worker/conn.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/common.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define WATCHDOG_TICK_MS 100
#define CONNECT_TIMEOUT_US 3000000

static void conn_start(sq_conn_t *c);

static void on_retry(uv_timer_t *t) {
  sq_conn_t *c = t->data;
  if (!c->closing && !c->ac) conn_start(c);
}

static void schedule_retry(sq_conn_t *c) {
  if (c->closing) return;
  uint64_t delay = c->backoff_ms;
  c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
  sq_log_info("conn", "reconnecting", "conn=%s addr=%s:%d attempt=%u delay_ms=%llu", c->name,
              c->host, c->port, c->attempts + 1, (unsigned long long)delay);
  c->progress_us = sq_clock_mono_us();
  uv_timer_start(&c->retry_timer, on_retry, delay, 0);
}

static void on_auth(redisAsyncContext *ac, void *reply, void *privdata) {
  sq_conn_t *c = privdata;
  redisReply *r = reply;
  if (!r) return; /* connection went away; the disconnect callback handles it */
  sq_conn_replied(c);
  if (r->type == REDIS_REPLY_ERROR) {
    sq_log_error("conn", "redis refused AUTH/SELECT", "conn=%s err=\"%.200s\"", c->name,
                 r->str ? r->str : "");
    sq_conn_drop(c, "auth/select failed");
  }
  (void)ac;
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sq_conn_t *c = ac->data;
  if (status != REDIS_OK) {
    sq_log_warn("conn", "connect failed", "conn=%s addr=%s:%d err=\"%s\"", c->name, c->host,
                c->port, ac->errstr);
    c->ac = NULL; /* hiredis frees the context after this callback */
    c->attempts++;
    schedule_retry(c);
    return;
  }
  c->ready = 1;
  c->pending = 0;
  c->progress_us = sq_clock_mono_us();
  sq_log_info("conn", "connected", "conn=%s addr=%s:%d attempts=%u", c->name, c->host, c->port,
              c->attempts);
  c->attempts = 0;
  c->backoff_ms = BACKOFF_MIN_MS;
  /* AUTH and SELECT go first; replies come back in order, so later commands run after them. */
  if (c->password) {
    sq_conn_sent(c);
    redisAsyncCommand(c->ac, on_auth, c, "AUTH %s", c->password);
  }
  if (c->db) {
    sq_conn_sent(c);
    redisAsyncCommand(c->ac, on_auth, c, "SELECT %u", (unsigned)c->db);
  }
  if (c->on_ready) c->on_ready(c, c->data);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sq_conn_t *c = ac->data;
  int was_ready = c->ready;
  c->ac = NULL;
  c->ready = 0;
  c->dropping = 0;
  c->pending = 0;
  if (!c->closing)
    sq_log_warn("conn", "disconnected", "conn=%s addr=%s:%d err=\"%s\"", c->name, c->host, c->port,
                status == REDIS_OK ? "dropped by us" : ac->errstr);
  if (was_ready && c->on_down) c->on_down(c, c->data);
  schedule_retry(c);
}

static void conn_start(sq_conn_t *c) {
  redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
  if (!ac || ac->err) {
    sq_log_warn("conn", "connect failed", "conn=%s addr=%s:%d err=\"%s\"", c->name, c->host,
                c->port, ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    c->attempts++;
    schedule_retry(c);
    return;
  }
  ac->data = c;
  c->ac = ac;
  c->progress_us = sq_clock_mono_us();
  if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
    c->ac = NULL;
    redisAsyncFree(ac);
    c->attempts++;
    schedule_retry(c);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_watchdog(uv_timer_t *t) {
  sq_conn_t *c = t->data;
  if (!c->ac || c->dropping) return;
  uint64_t now = sq_clock_mono_us();
  if (!c->ready) {
    /* hiredis 0.14's libuv adapter ignores poll errors, so a refused connect never reaches
     * on_connect: look at the socket's pending error ourselves. */
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (c->ac->c.fd >= 0 && getsockopt(c->ac->c.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 &&
        soerr != 0) {
      char why[128];
      snprintf(why, sizeof why, "connect failed: %s", strerror(soerr));
      sq_conn_drop(c, why);
    } else if (now - c->progress_us > CONNECT_TIMEOUT_US) {
      sq_conn_drop(c, "connect timed out"); /* SYN to a black hole */
    }
    return;
  }
  if (c->pending > 0 && now - c->progress_us > c->reply_limit_us) {
    char why[64];
    snprintf(why, sizeof why, "no reply in %llu ms",
             (unsigned long long)(c->reply_limit_us / 1000));
    sq_conn_drop(c, why);
  }
}

int sq_conn_init(sq_conn_t *c, uv_loop_t *loop, const char *name, const char *host, int port,
                 const char *password, uint32_t db, uint64_t reply_limit_us) {
  c->loop = loop;
  c->name = name;
  c->host = host;
  c->port = port;
  c->password = password;
  c->db = db;
  c->backoff_ms = BACKOFF_MIN_MS;
  c->reply_limit_us = reply_limit_us;
  uv_timer_init(loop, &c->retry_timer);
  uv_timer_init(loop, &c->watchdog_timer);
  c->retry_timer.data = c;
  c->watchdog_timer.data = c;
  c->handles_open = 2;
  uv_timer_start(&c->watchdog_timer, on_watchdog, WATCHDOG_TICK_MS, WATCHDOG_TICK_MS);
  c->progress_us = sq_clock_mono_us();
  conn_start(c);
  return 0;
}

void sq_conn_sent(sq_conn_t *c) {
  if (c->pending++ == 0) c->progress_us = sq_clock_mono_us();
}

void sq_conn_replied(sq_conn_t *c) {
  if (c->pending > 0) c->pending--;
  c->progress_us = sq_clock_mono_us();
}

void sq_conn_drop(sq_conn_t *c, const char *why) {
  if (!c->ac || c->dropping) return;
  sq_log_warn("conn", "dropping connection", "conn=%s reason=\"%s\"", c->name, why);
  redisAsyncContext *ac = c->ac;
  if (c->ready) {
    c->dropping = 1;
    redisAsyncFree(ac); /* on_disconnect runs (now, or after the current callback) */
  } else {
    c->ac = NULL; /* not connected yet: hiredis calls no callback */
    redisAsyncFree(ac);
    c->attempts++;
    schedule_retry(c);
  }
}

static void on_timer_closed(uv_handle_t *h) {
  sq_conn_t *c = h->data;
  if (--c->handles_open == 0 && c->on_closed) c->on_closed(c);
}

void sq_conn_close(sq_conn_t *c, void (*on_closed)(sq_conn_t *c)) {
  c->closing = 1;
  c->on_closed = on_closed;
  uv_timer_stop(&c->retry_timer);
  uv_timer_stop(&c->watchdog_timer);
  if (c->ac) {
    redisAsyncContext *ac = c->ac;
    if (!c->ready) c->ac = NULL;
    if (!c->dropping) redisAsyncFree(ac);
  }
  uv_close((uv_handle_t *)&c->retry_timer, on_timer_closed);
  uv_close((uv_handle_t *)&c->watchdog_timer, on_timer_closed);
}
