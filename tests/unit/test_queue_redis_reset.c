/* queue/redis (libuv glue): a connection reset (RST) is noticed at once, not by the reply
 * watchdog (5 s here). A fake server thread accepts the connection, answers its HELLO, and resets
 * it (SO_LINGER 0); hiredis 0.14's own libuv adapter ignored the poll error libuv reports for
 * that, which left an idle command connection for dead until the watchdog fired. The listener is
 * closed too, so the reconnect attempts are refused, and those must be noticed promptly as
 * well. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "common/common.h"
#include "queue/queue.h"

static int g_listen_fd = -1;
static uint64_t g_reset_us, g_ready_us, g_down_us;
static int g_ready, g_down, g_closed;
static sq_redis_loop_t g_hooks;
static sq_redis_t *g_redis;
static sq_redis_conn_t *g_conn;
static uv_timer_t g_deadline, g_after;

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void *server_main(void *arg) {
  (void)arg;
  int fd = accept(g_listen_fd, NULL, NULL);
  close(g_listen_fd); /* reconnects are refused from now on */
  if (fd < 0) return NULL;
  /* Answer the handshake (HELLO 2) as a primary would, then let the client sit idle. */
  char buf[512];
  if (read(fd, buf, sizeof buf) > 0) {
    static const char hello[] = "*2\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
    if (write(fd, hello, sizeof hello - 1) < 0) perror("write");
  }
  sleep_ms(200); /* the client is connected and idle by now */
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  g_reset_us = sq_clock_mono_us();
  close(fd); /* linger 0: RST */
  return NULL;
}

static void on_closed(void *arg) {
  (void)arg;
  g_closed = 1;
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static int g_finished;

static void finish(void) {
  if (g_finished++) return;
  uv_timer_stop(&g_deadline);
  uv_timer_stop(&g_after);
  uv_close((uv_handle_t *)&g_deadline, on_handle_closed);
  uv_close((uv_handle_t *)&g_after, on_handle_closed);
  sq_redis_close(g_redis, on_closed, NULL);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  finish();
}

static int g_refused;

static void on_after(uv_timer_t *t) {
  (void)t;
  g_refused = (int)sq_redis_conn_attempts(g_conn);
  finish();
}

static void on_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  g_ready++;
  g_ready_us = sq_clock_mono_us();
}

static void on_down(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  g_down++;
  g_down_us = sq_clock_mono_us();
  /* Let it try to reconnect for a while (refused), then stop. */
  uv_timer_start(&g_after, on_after, 700, 0);
}

int main(void) {
  g_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(g_listen_fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  CHECK_EQ_INT(bind(g_listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_EQ_INT(listen(g_listen_fd, 4), 0);
  socklen_t sl = sizeof sa;
  CHECK_EQ_INT(getsockname(g_listen_fd, (struct sockaddr *)&sa, &sl), 0);
  int port = ntohs(sa.sin_port);
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, server_main, NULL), 0);

  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g_deadline);
  uv_timer_init(&loop, &g_after);
  uv_timer_start(&g_deadline, on_deadline, 4000, 0); /* below the 5 s watchdog */
  sq_redis_loop_uv(&g_hooks, &loop);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
  sq_redis_url_t u;
  sq_error_t err;
  CHECK_EQ_INT(sq_redis_url_parse(&u, url, &err), 0);
  sq_redis_options_t opt = {.backoff_max_ms = 200};
  g_redis = sq_redis_new(&u, &g_hooks, &opt, &err);
  sq_redis_url_free(&u);
  sq_redis_conn_events_t ev = {.ready = on_ready, .down = on_down};
  g_conn = sq_redis_conn_new(g_redis, "command", 5000, 0, &ev, NULL);
  CHECK(g_conn != NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);

  CHECK_EQ_INT(g_ready, 1);
  CHECK_EQ_INT(g_down, 1);
  CHECK(g_closed);
  CHECK(g_ready_us > 0 && g_reset_us > g_ready_us);
  if (g_down) {
    uint64_t lag_ms = (g_down_us - g_reset_us) / 1000;
    fprintf(stderr, "reset noticed after %llu ms\n", (unsigned long long)lag_ms);
    CHECK(g_down_us >= g_reset_us);
    CHECK(lag_ms < 500);
  }
  /* The refused reconnects were each seen and retried (100, 200, 200 ms apart) in 700 ms. */
  fprintf(stderr, "reconnect attempts after the reset: %d\n", g_refused);
  CHECK(g_refused >= 3);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_DONE();
}
