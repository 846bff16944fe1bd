/* queue/redis against a fake server thread. A demoted primary is never worked against:
 * connection 1 logs in as a primary, then answers the first command with READONLY (what a
 * primary demoted by a failover says); the client must hand that reply to the caller, drop the
 * connection and reconnect (before: workers kept sending to the demoted primary and failed with
 * READONLY forever). Connection 2 says in its HELLO that it is a replica: the client must not
 * count it as ready. Connection 3 is a primary again: ready, and commands work. Then a large
 * reply that streams in for 1 s is not dropped by a 300 ms budget: bytes arriving are progress
 * (before: the watchdog dropped a claim of big payloads while it was still being received). */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
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
static int g_ready, g_down, g_down_at_pong, g_readonly_seen, g_pong_seen, g_accepted, g_big_ok;
static uint64_t g_big_ms;

#define BIG_LEN 1000000
#define BIG_CHUNKS 20 /* sent 50 ms apart: 1 s in all */
static sq_redis_loop_t g_hooks;
static sq_redis_t *g_redis;
static sq_redis_conn_t *g_conn;
static uv_timer_t g_deadline;

static const char hello_master[] = "*2\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
static const char hello_replica[] = "*2\r\n$4\r\nrole\r\n$7\r\nreplica\r\n";

/* Reads one request (all we need: the client sends one command at a time here).
 */
static int read_request(int fd) {
  char buf[1024];
  return read(fd, buf, sizeof buf) > 0;
}

static void reply(int fd, const char *s) {
  if (write(fd, s, strlen(s)) < 0) perror("write");
}

static void *server_main(void *arg) {
  (void)arg;
  /* 1: a primary that is demoted under the client. */
  int fd1 = accept(g_listen_fd, NULL, NULL);
  g_accepted++;
  if (fd1 < 0 || !read_request(fd1)) return NULL;
  reply(fd1, hello_master);
  if (read_request(fd1)) reply(fd1, "-READONLY You can't write against a read only replica.\r\n");
  /* 2: still a replica. */
  int fd2 = accept(g_listen_fd, NULL, NULL);
  g_accepted++;
  if (fd2 >= 0 && read_request(fd2)) reply(fd2, hello_replica);
  /* 3: a primary again; answers one PING, then a big reply slowly. */
  int fd3 = accept(g_listen_fd, NULL, NULL);
  g_accepted++;
  if (fd3 >= 0 && read_request(fd3)) {
    reply(fd3, hello_master);
    if (read_request(fd3)) reply(fd3, "+PONG\r\n");
    if (read_request(fd3)) {
      char head[32];
      snprintf(head, sizeof head, "$%d\r\n", BIG_LEN);
      reply(fd3, head);
      char *chunk = calloc(1, BIG_LEN / BIG_CHUNKS);
      for (int i = 0; chunk && i < BIG_CHUNKS; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        if (write(fd3, chunk, BIG_LEN / BIG_CHUNKS) < 0) perror("write");
      }
      free(chunk);
      reply(fd3, "\r\n");
    }
  }
  /* Hold the sockets until the client is done with them. */
  char buf[64];
  if (fd3 >= 0)
    while (read(fd3, buf, sizeof buf) > 0) {
    }
  close(fd1);
  if (fd2 >= 0) close(fd2);
  if (fd3 >= 0) close(fd3);
  close(g_listen_fd);
  return NULL;
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void finish(void) {
  uv_timer_stop(&g_deadline);
  uv_close((uv_handle_t *)&g_deadline, on_handle_closed);
  sq_redis_close(g_redis, NULL, NULL);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "deadline: ready=%d down=%d readonly=%d pong=%d\n", g_ready, g_down,
          g_readonly_seen, g_pong_seen);
  finish();
}

static void on_big(sq_redis_conn_t *c, redisReply *r, void *data) {
  (void)c;
  (void)data;
  g_big_ms = (sq_clock_mono_us() - g_big_ms) / 1000;
  fprintf(stderr, "a %d-byte reply over %llu ms with a 300 ms budget: %s\n", BIG_LEN,
          (unsigned long long)g_big_ms, r ? "received" : "dropped");
  g_big_ok = r && r->type == REDIS_REPLY_STRING && r->len == BIG_LEN;
  finish();
}

static void on_reply(sq_redis_conn_t *c, redisReply *r, void *data) {
  (void)c;
  (void)data;
  if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0) {
    g_readonly_seen++;
    /* The connection is being dropped: nothing more may be sent on it. */
    CHECK(!sq_redis_conn_ready(g_conn));
  } else if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) {
    g_pong_seen++;
    g_down_at_pong = g_down; /* closing the endpoint reports its own down */
    g_big_ms = sq_clock_mono_us();
    CHECK_EQ_INT(sq_redis_command(g_conn, 300, on_big, NULL, "GET big"), 0);
  }
}

static void on_ready(sq_redis_conn_t *c, void *data) {
  (void)data;
  g_ready++;
  CHECK_EQ_INT(sq_redis_command(c, 0, on_reply, NULL, "PING"), 0);
}

static void on_down(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  g_down++;
}

int main(void) {
  g_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK_EQ_INT(bind(g_listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_EQ_INT(listen(g_listen_fd, 4), 0);
  socklen_t sl = sizeof sa;
  CHECK_EQ_INT(getsockname(g_listen_fd, (struct sockaddr *)&sa, &sl), 0);
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, server_main, NULL), 0);

  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &g_deadline);
  uv_timer_start(&g_deadline, on_deadline, 10000, 0);
  sq_redis_loop_uv(&g_hooks, &loop);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
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

  CHECK_EQ_INT(g_readonly_seen, 1); /* the caller saw the error */
  CHECK_EQ_INT(g_down_at_pong, 1);  /* and the connection went */
  CHECK_EQ_INT(g_accepted, 3);      /* reconnected twice: the replica was not taken for ready */
  CHECK_EQ_INT(g_ready, 2);         /* primary, (replica refused), primary */
  CHECK_EQ_INT(g_pong_seen, 1);
  CHECK(g_big_ok);
  CHECK(g_big_ms >= 600); /* it did take longer than its budget */
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_DONE();
}
