/* C test helper: a throwaway redis-server on a free loopback port (the C twin of
 * segq_testlib.RedisServer), started with extra arguments and stopped by pid. Header-only, for
 * the unit tests that need a real server; they exit 77 (skip) when redis-server is missing. */
#ifndef SQ_TEST_REDIS_PROC_H
#define SQ_TEST_REDIS_PROC_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
  pid_t pid;
  int port;
} test_redis_t;

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static inline int test_free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(s, (struct sockaddr *)&a, &len) != 0) {
    if (s >= 0) close(s);
    return -1;
  }
  close(s);
  return ntohs(a.sin_port);
}

/* Starts redis-server (no persistence) with extra NULL-terminated arguments; returns a connected
 * redisContext (the caller frees it) once it answers, or NULL (no redis-server, or no answer in
 * 5 s). extra may be NULL. */
static inline redisContext *test_redis_start(test_redis_t *t, const char *const *extra) {
  memset(t, 0, sizeof(*t));
  if (system("command -v redis-server >/dev/null 2>&1") != 0) return NULL;
  t->port = test_free_port();
  if (t->port <= 0) return NULL;
  char port[16];
  snprintf(port, sizeof port, "%d", t->port);
  const char *argv[48] = {"redis-server", "--port", port,    "--bind", "127.0.0.1",  "--save", "",
                          "--appendonly", "no",     "--dir", "/tmp",   "--loglevel", "warning"};
  int argc = 13;
  for (int i = 0; extra && extra[i] && argc < 46; i++) argv[argc++] = extra[i];
  argv[argc] = NULL;
  t->pid = fork();
  if (t->pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  for (int i = 0; i < 200; i++) {
    redisContext *c = redisConnect("127.0.0.1", t->port);
    if (c && !c->err) return c;
    redisFree(c);
    usleep(25000);
  }
  return NULL;
}

static inline void test_redis_signal(const test_redis_t *t, int sig) {
  if (t->pid > 0) kill(t->pid, sig);
}

static inline void test_redis_stop(test_redis_t *t) {
  if (t->pid > 0) {
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    t->pid = 0;
  }
}

#endif
