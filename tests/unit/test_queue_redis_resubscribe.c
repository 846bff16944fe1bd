/* queue/redis: a channel unsubscribed and subscribed again before Redis answered the UNSUBSCRIBE
 * (segq-bridge drops a lingering channel and a browser follows it again in the same moment).
 * hiredis 0.14 routes subscription replies by channel name, so the UNSUBSCRIBE's answer reached
 * the new subscription, which then counted itself as not subscribed: the old one was never freed,
 * and unsubscribing the new one later freed it without sending UNSUBSCRIBE, leaving Redis
 * subscribed and hiredis holding a freed pointer for the next message. The new subscription must
 * be confirmed and deliver messages, and a later unsubscribe must end it in Redis (no subscriber
 * left, no more callbacks). Real redis-server (skipped when none is installed); every handle
 * closed at the end. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "common/common.h"
#include "queue/queue.h"
#include "redis_proc.h"

static test_redis_t srv;
static redisContext *sync_c;
static uv_loop_t loop;
static sq_redis_loop_t hooks;
static sq_redis_t *ep;
static sq_redis_conn_t *cmd, *sub;
static uv_timer_t deadline;
static int step, cmd_ready, sub_ready, subscribed, msgs, old_cb_calls, closed;
static uv_timer_t pause_timer;

static void advance(void);

static void on_closed(void *arg) {
  (void)arg;
  closed = 1;
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void finish(void) {
  uv_timer_stop(&deadline);
  uv_close((uv_handle_t *)&deadline, on_handle_closed);
  uv_close((uv_handle_t *)&pause_timer, on_handle_closed);
  sq_redis_close(ep, on_closed, NULL);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "deadline reached at step %d (subscribed %d, messages %d)\n", step, subscribed,
          msgs);
  CHECK(0);
  finish();
}

static void on_old(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                   size_t channel_len, const char *msg, size_t len, void *data) {
  (void)c, (void)channel, (void)channel_len, (void)msg, (void)len, (void)data;
  if (ev == SQ_REDIS_SUB_SUBSCRIBED && step == 1) {
    step = 2;
    advance();
    return;
  }
  old_cb_calls++; /* after the unsubscribe: must not happen */
}

static void on_new(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                   size_t channel_len, const char *msg, size_t len, void *data) {
  (void)c, (void)data;
  if (ev == SQ_REDIS_SUB_SUBSCRIBED) {
    subscribed++;
  } else if (ev == SQ_REDIS_SUB_MESSAGE) {
    CHECK(channel_len == 4 && memcmp(channel, "rs:1", 4) == 0);
    CHECK(len == 5 && memcmp(msg, "hello", 5) == 0);
    msgs++;
  }
  advance();
}

static int numsub(void) {
  redisReply *r = redisCommand(sync_c, "PUBSUB NUMSUB rs:1");
  int n = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? (int)r->element[1]->integer : -1;
  if (r) freeReplyObject(r);
  return n;
}

static void on_pause(uv_timer_t *t) {
  (void)t;
  advance();
}

static void advance(void) {
  switch (step) {
    case 0:
      if (!cmd_ready || !sub_ready) return;
      CHECK_EQ_INT(sq_redis_subscribe(sub, "rs:1", 0, on_old, NULL), 0);
      step = 1;
      return;
    case 2: /* confirmed: drop it and follow it again before Redis answers the UNSUBSCRIBE */
      CHECK_EQ_INT(sq_redis_unsubscribe(sub, "rs:1", 0), 0);
      CHECK_EQ_INT(sq_redis_subscribe(sub, "rs:1", 0, on_new, NULL), 0);
      step = 3;
      return;
    case 3:
      if (subscribed < 1) return;
      CHECK_EQ_INT(sq_redis_command(cmd, 0, NULL, NULL, "PUBLISH rs:1 hello"), 0);
      step = 4;
      return;
    case 4:
      if (msgs < 1) return;
      CHECK_EQ_INT(numsub(), 1);
      CHECK_EQ_INT(old_cb_calls, 0);
      /* Now end the new subscription: Redis must drop it, and no callback may follow. */
      CHECK_EQ_INT(sq_redis_unsubscribe(sub, "rs:1", 0), 0);
      uv_timer_start(&pause_timer, on_pause, 300, 0);
      step = 5;
      return;
    case 5:
      CHECK_EQ_INT(numsub(), 0);
      CHECK_EQ_INT(sq_redis_command(cmd, 0, NULL, NULL, "PUBLISH rs:1 hello"), 0);
      uv_timer_start(&pause_timer, on_pause, 300, 0);
      step = 6;
      return;
    case 6:
      CHECK_EQ_INT(msgs, 1);
      step = 7;
      finish();
      return;
    default:
      return;
  }
}

static void on_cmd_ready(sq_redis_conn_t *c, void *data) {
  (void)c, (void)data;
  cmd_ready++;
  advance();
}

static void on_sub_ready(sq_redis_conn_t *c, void *data) {
  (void)c, (void)data;
  sub_ready++;
  advance();
}

int main(void) {
  sync_c = test_redis_start(&srv, NULL);
  if (!sync_c) {
    printf("skip: no redis-server\n");
    test_redis_stop(&srv);
    return 77;
  }
  uv_loop_init(&loop);
  uv_timer_init(&loop, &deadline);
  uv_timer_init(&loop, &pause_timer);
  uv_timer_start(&deadline, on_deadline, 10000, 0);
  sq_redis_loop_uv(&hooks, &loop);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  sq_redis_url_t u;
  sq_error_t err;
  CHECK_EQ_INT(sq_redis_url_parse(&u, url, &err), 0);
  ep = sq_redis_new(&u, &hooks, NULL, &err);
  sq_redis_url_free(&u);
  CHECK(ep != NULL);
  sq_redis_conn_events_t ce = {.ready = on_cmd_ready};
  sq_redis_conn_events_t se = {.ready = on_sub_ready};
  cmd = sq_redis_conn_new(ep, "command", 5000, 0, &ce, NULL);
  sub = sq_redis_conn_new(ep, "subscriber", 5000, SQ_REDIS_CONN_SUBSCRIBER, &se, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(step, 7);
  CHECK(closed);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  redisFree(sync_c);
  test_redis_stop(&srv);
  CHECK_DONE();
}
