/* queue/redis against a private redis-server (skipped when none is installed): subscriptions
 * (channel and pattern) deliver SUBSCRIBED then messages, end with LOST when the connection is
 * killed and come back by themselves; an unsubscribed channel has no subscriber left; the
 * watchdog honours a per-command budget (a 600 ms command with a 200 ms budget is dropped, with a
 * 3 s budget it is answered); every handle is closed at the end (uv_loop_close == 0). */
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
static uv_loop_t loop;
static sq_redis_loop_t hooks;
static sq_redis_t *ep;
static sq_redis_conn_t *cmd, *sub;
static uv_timer_t deadline, pause_timer;
static int step, cmd_ready, cmd_down, sub_ready;
static int subscribed_ch, subscribed_pat, lost_ch, lost_pat, msgs_ch, msgs_pat, closed;
static uint64_t t0;

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
  fprintf(stderr, "deadline reached at step %d\n", step);
  CHECK(0);
  finish();
}

static void on_pause(uv_timer_t *t) {
  (void)t;
  advance();
}

static void on_sub(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                   size_t channel_len, const char *msg, size_t len, void *data) {
  (void)c;
  int pat = data != NULL;
  if (ev == SQ_REDIS_SUB_SUBSCRIBED) {
    pat ? subscribed_pat++ : subscribed_ch++;
  } else if (ev == SQ_REDIS_SUB_LOST) {
    pat ? lost_pat++ : lost_ch++;
  } else {
    if (pat) {
      msgs_pat++;
      CHECK(channel_len == 4 && memcmp(channel, "pp:", 3) == 0);
      CHECK(len == 5 && memcmp(msg, "world", 5) == 0);
    } else {
      msgs_ch++;
      CHECK(channel_len == 3 && memcmp(channel, "ch1", 3) == 0);
      CHECK(len == 5 && memcmp(msg, "hello", 5) == 0);
    }
  }
  advance();
}

static void on_reply(sq_redis_conn_t *c, redisReply *r, void *data) {
  const char *what = data;
  (void)c;
  if (!strcmp(what, "short-budget")) {
    uint64_t ms = (sq_clock_mono_us() - t0) / 1000;
    fprintf(stderr, "600 ms command with a 200 ms budget dropped after %llu ms\n",
            (unsigned long long)ms);
    CHECK(r == NULL);
    CHECK(ms >= 200 && ms < 580);
  } else if (!strcmp(what, "long-budget")) {
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS);
  } else if (!strcmp(what, "publish-after-unsub")) {
    CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
  } else if (!strcmp(what, "kill")) {
    CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
  }
  advance();
}

/* The steps run in order; each one waits for what the previous one asked for. */
static void advance(void) {
  {
    switch (step) {
      case 0: /* both connected: subscribe */
        if (!cmd_ready || !sub_ready) return;
        CHECK_EQ_INT(sq_redis_subscribe(sub, "ch1", 0, on_sub, NULL), 0);
        CHECK_EQ_INT(sq_redis_subscribe(sub, "pp:*", 1, on_sub, (void *)1), 0);
        CHECK_EQ_INT(sq_redis_subscribe(sub, "ch1", 0, on_sub, NULL), SQ_EINVAL); /* twice */
        CHECK_EQ_INT(sq_redis_command(sub, 0, NULL, NULL, "PING"), SQ_EINVAL);    /* subscriber */
        step = 1;
        return;
      case 1: /* confirmed: publish one message to each */
        if (subscribed_ch < 1 || subscribed_pat < 1) return;
        CHECK_EQ_INT(sq_redis_command(cmd, 0, NULL, NULL, "PUBLISH ch1 hello"), 0);
        CHECK_EQ_INT(sq_redis_command(cmd, 0, NULL, NULL, "PUBLISH pp:x world"), 0);
        step = 2;
        return;
      case 2: /* a command slower than its budget is dropped by the watchdog */
        if (msgs_ch < 1 || msgs_pat < 1) return;
        t0 = sq_clock_mono_us();
        CHECK_EQ_INT(sq_redis_command(cmd, 200, on_reply, "short-budget", "DEBUG SLEEP 0.6"), 0);
        step = 3;
        return;
      case 3: /* reply NULL seen; wait for the reconnect */
        step = 4;
        return;
      case 4:
        if (cmd_down < 1 || cmd_ready < 2) return;
        CHECK_EQ_INT(sq_redis_command(cmd, 3000, on_reply, "long-budget", "DEBUG SLEEP 0.6"), 0);
        step = 5;
        return;
      case 5: /* answered within its budget: unsubscribe ch1 and let that settle */
        CHECK_EQ_INT(sq_redis_unsubscribe(sub, "ch1", 0), 0);
        CHECK_EQ_INT(sq_redis_unsubscribe(sub, "ch1", 0), SQ_EINVAL);
        uv_timer_start(&pause_timer, on_pause, 300, 0);
        step = 6;
        return;
      case 6:
        CHECK_EQ_INT(sq_redis_command(cmd, 0, on_reply, "publish-after-unsub", "PUBLISH ch1 hello"),
                     0);
        step = 7;
        return;
      case 7: /* kill the subscriber's connection: LOST, then SUBSCRIBED again */
        CHECK_EQ_INT(sq_redis_command(cmd, 0, on_reply, "kill", "CLIENT KILL TYPE pubsub"), 0);
        step = 8;
        return;
      case 8:
        if (lost_pat < 1 || subscribed_pat < 2) return;
        CHECK_EQ_INT(lost_ch, 0); /* unsubscribed before the kill: no event */
        CHECK_EQ_INT(subscribed_ch, 1);
        CHECK_EQ_INT(sq_redis_command(cmd, 0, NULL, NULL, "PUBLISH pp:y world"), 0);
        step = 9;
        return;
      case 9:
        if (msgs_pat < 2) return;
        CHECK_EQ_INT(msgs_ch, 1);
        step = 10;
        finish();
        return;
      default:
        return;
    }
  }
}

static void on_cmd_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  cmd_ready++;
  advance();
}

static void on_cmd_down(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  cmd_down++;
}

static void on_sub_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  sub_ready++;
  advance();
}

int main(void) {
  const char *extra[] = {"--enable-debug-command", "local", NULL};
  redisContext *c = test_redis_start(&srv, extra);
  if (!c) {
    printf("skip: no redis-server\n");
    test_redis_stop(&srv);
    return 77;
  }
  uv_loop_init(&loop);
  uv_timer_init(&loop, &deadline);
  uv_timer_init(&loop, &pause_timer);
  uv_timer_start(&deadline, on_deadline, 20000, 0);
  sq_redis_loop_uv(&hooks, &loop);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  sq_redis_url_t u;
  sq_error_t err;
  CHECK_EQ_INT(sq_redis_url_parse(&u, url, &err), 0);
  sq_redis_options_t opt = {.backoff_max_ms = 200};
  ep = sq_redis_new(&u, &hooks, &opt, &err);
  sq_redis_url_free(&u);
  CHECK(ep != NULL);
  sq_redis_conn_events_t ce = {.ready = on_cmd_ready, .down = on_cmd_down};
  sq_redis_conn_events_t se = {.ready = on_sub_ready};
  cmd = sq_redis_conn_new(ep, "command", 5000, 0, &ce, NULL);
  sub = sq_redis_conn_new(ep, "subscriber", 5000, SQ_REDIS_CONN_SUBSCRIBER, &se, NULL);
  CHECK(cmd && sub);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(step, 10);
  CHECK(closed);
  CHECK(sq_redis_authenticated(NULL) == 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  redisFree(c);
  test_redis_stop(&srv);
  CHECK_DONE();
}
