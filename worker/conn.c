/* worker/conn: a self-healing hiredis async connection (see conn.h). hiredis 0.14 semantics:
 * a failed connect only calls the connect callback; freeing a connected context fails every
 * pending callback with reply NULL and then calls the disconnect callback.
 * Threads: loop thread only. */
#include "worker/conn.h"

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

/* ---- event adapter ----
 * Our own copy of hiredis 0.14's libuv adapter (adapters/libuv.h), with one difference: that
 * adapter returns early when libuv reports a poll error. libuv reports POLLERR (an RST, e.g. a
 * Redis that exits with our unread command in its socket buffer) as status UV_EBADF and stops
 * the poll, so hiredis never learnt that the connection had died: it waited for the watchdog.
 * Here an error hands the socket to hiredis, whose read/connect check then sees the error and
 * disconnects at once, like an EOF. */

typedef struct conn_events {
  redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
  uv_poll_t handle;
  int events;
} conn_events_t;

static void ev_poll(uv_poll_t *handle, int status, int events) {
  conn_events_t *p = handle->data;
  if (status < 0) {
    if (!p->ac) return;
    /* libuv stopped the poll; hiredis re-adds what it needs (it always re-adds reading). */
    p->events = 0;
    if (p->ac->c.flags & REDIS_CONNECTED)
      redisAsyncHandleRead(p->ac); /* read() returns the error: hiredis disconnects */
    else
      redisAsyncHandleWrite(p->ac); /* the connect check sees the error: connect callback */
    return;
  }
  if (p->ac && (events & UV_READABLE)) redisAsyncHandleRead(p->ac);
  if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void ev_update(conn_events_t *p) {
  if (p->events)
    uv_poll_start(&p->handle, p->events, ev_poll);
  else
    uv_poll_stop(&p->handle);
}

static void ev_add_read(void *privdata) {
  conn_events_t *p = privdata;
  p->events |= UV_READABLE;
  ev_update(p);
}

static void ev_del_read(void *privdata) {
  conn_events_t *p = privdata;
  p->events &= ~UV_READABLE;
  ev_update(p);
}

static void ev_add_write(void *privdata) {
  conn_events_t *p = privdata;
  p->events |= UV_WRITABLE;
  ev_update(p);
}

static void ev_del_write(void *privdata) {
  conn_events_t *p = privdata;
  p->events &= ~UV_WRITABLE;
  ev_update(p);
}

static void ev_on_close(uv_handle_t *h) {
  free(h->data);
}

static void ev_cleanup(void *privdata) {
  conn_events_t *p = privdata;
  p->ac = NULL; /* hiredis is freeing the context */
  uv_close((uv_handle_t *)&p->handle, ev_on_close);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  if (ac->ev.data != NULL) return REDIS_ERR;
  conn_events_t *p = calloc(1, sizeof(*p));
  if (!p) return REDIS_ERR;
  if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
    free(p);
    return REDIS_ERR;
  }
  p->handle.data = p;
  p->ac = ac;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  ac->ev.data = p;
  return REDIS_OK;
}

static void on_retry(uv_timer_t *t) {
  sq_conn_t *c = t->data;
  if (!c->closing && !c->ac) conn_start(c);
}

static void schedule_retry(sq_conn_t *c) {
  if (c->closing) return;
  uint64_t max = c->backoff_max_ms ? c->backoff_max_ms : BACKOFF_MAX_MS;
  uint64_t delay = c->backoff_ms > max ? max : c->backoff_ms;
  c->backoff_ms = delay * 2 > max ? max : delay * 2;
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
  if (ev_attach(ac, c->loop) != REDIS_OK) {
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
    /* The adapter hands poll errors to hiredis (see ev_poll); this check stays as a backstop
     * for a refused connect whose error the poll did not report. */
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
