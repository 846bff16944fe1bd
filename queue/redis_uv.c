/* queue/redis_uv: the libuv glue of the connection core (sq_redis_loop_t hooks): hiredis's event
 * callbacks on a uv_poll_t, and timers on uv_timer_t. The poll part is our own copy of hiredis
 * 0.14's libuv adapter (adapters/libuv.h) with one difference: that adapter returns early when
 * libuv reports a poll error. libuv reports POLLERR (an RST, e.g. a Redis that exits with our
 * unread command in its socket buffer) as status UV_EBADF and stops the poll, so hiredis never
 * learnt that the connection had died: it waited for the watchdog. Here an error hands the socket
 * to hiredis, whose read/connect check then sees the error and disconnects at once, like an EOF.
 * Threads: the loop's thread only. */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <uv.h>

#include "queue/queue.h"

/* ---- hiredis events ---- */

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

static int uv_attach(void *data, redisAsyncContext *ac) {
  uv_loop_t *loop = data;
  if (ac->ev.data != NULL) return SQ_EINVAL;
  conn_events_t *p = calloc(1, sizeof(*p));
  if (!p) return SQ_ENOMEM;
  if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
    free(p);
    return SQ_EIO;
  }
  p->handle.data = p;
  p->ac = ac;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  ac->ev.data = p;
  return 0;
}

/* ---- timers ---- */

struct sq_redis_timer {
  uv_timer_t t;
  void (*fire)(void *arg);
  void *arg;
  void (*closed)(void *arg);
  void *closed_arg;
};

static void t_fire(uv_timer_t *h) {
  sq_redis_timer_t *t = h->data;
  t->fire(t->arg);
}

static sq_redis_timer_t *uv_timer_new_hook(void *data, void (*fire)(void *arg), void *arg) {
  sq_redis_timer_t *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  uv_timer_init(data, &t->t);
  t->t.data = t;
  t->fire = fire;
  t->arg = arg;
  return t;
}

static void uv_timer_start_hook(sq_redis_timer_t *t, uint64_t after_ms, uint64_t repeat_ms) {
  uv_timer_start(&t->t, t_fire, after_ms, repeat_ms);
}

static void uv_timer_stop_hook(sq_redis_timer_t *t) {
  uv_timer_stop(&t->t);
}

static void t_closed(uv_handle_t *h) {
  sq_redis_timer_t *t = h->data;
  void (*closed)(void *) = t->closed;
  void *arg = t->closed_arg;
  free(t);
  if (closed) closed(arg);
}

static void uv_timer_close_hook(sq_redis_timer_t *t, void (*closed)(void *arg), void *arg) {
  t->closed = closed;
  t->closed_arg = arg;
  uv_close((uv_handle_t *)&t->t, t_closed);
}

void sq_redis_loop_uv(sq_redis_loop_t *hooks, uv_loop_t *loop) {
  hooks->data = loop;
  hooks->attach = uv_attach;
  hooks->timer_new = uv_timer_new_hook;
  hooks->timer_start = uv_timer_start_hook;
  hooks->timer_stop = uv_timer_stop_hook;
  hooks->timer_close = uv_timer_close_hook;
}
