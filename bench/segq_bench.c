/* segq_bench: load generator and stopwatch for segq's queue-path benchmark (bench/run.py).
 * `tput` pre-fills N jobs (pipelined EVALSHA of enqueue.lua; the model registered as served, as
 * in a running deployment), then starts the worker processes and times until P:stats counts N
 * finished jobs, from the start and from when every worker holds its lease ("ready"); `lat` starts the workers, waits for their leases,
 * then enqueues at a fixed offered rate (open loop, pipelined) and times each job's `done` event.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "proto/proto.h"
#include "queue/queue.h"

enum { MAX_WORKERS = 16, PIPE_CHUNK = 500 };

typedef struct {
  const char *mode;
  const char *host;
  int port;
  const char *prefix;
  const char *model;
  const char *image; /* JPEG file; NULL = raw gray8 raw_w x raw_h */
  uint32_t raw_w, raw_h;
  long n;
  double rate;
  int workers;
  double timeout_s;
  char **worker_argv; /* after `--` */
  int worker_argc;
} opts_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void die(const char *what, const char *detail) {
  fprintf(stderr, "segq_bench: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static redisContext *connect_or_die(const opts_t *o) {
  struct timeval tv = {5, 0};
  redisContext *c = redisConnectWithTimeout(o->host, o->port, tv);
  if (!c || c->err) die("cannot connect to redis", c ? c->errstr : "out of memory");
  return c;
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open image", path);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
  if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) die("cannot read image", path);
  fclose(f);
  *len = (size_t)sz;
  return buf;
}

/* The image every job carries (the same bytes for all: the benchmark measures the queue path). */
static uint8_t *image_bytes;
static size_t image_len;

static uint8_t *encode_job(const opts_t *o, long i, char *id, size_t idlen, size_t *len) {
  snprintf(id, idlen, "j%ld", i);
  sq_job_t job = {0};
  job.id = id;
  job.model = (char *)o->model;
  job.image_data = image_bytes;
  job.image_size = image_len;
  if (o->image) {
    job.image_format = SQ_IMAGE_JPEG;
  } else {
    job.image_format = SQ_IMAGE_GRAY8;
    job.width = o->raw_w;
    job.height = o->raw_h;
  }
  uint8_t *buf = sq_proto_job_encode(&job, len);
  if (!buf) die("cannot encode job", id);
  return buf;
}

/* ---- worker processes ---- */

static pid_t pids[MAX_WORKERS];
static double workers_cpu_s; /* user+sys CPU of the workers reaped so far */

static void reap(pid_t p, int flags, int *reaped) {
  struct rusage ru;
  int st;
  *reaped = wait4(p, &st, flags, &ru) == p;
  if (*reaped)
    workers_cpu_s += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* user+sys CPU seconds of the live workers so far (/proc/<pid>/stat utime + stime), for the CPU
 * between two moments of a run (the whole-lifetime figure above includes start-up and exit). */
static double workers_cpu_now_s(int nworkers) {
  static long ticks;
  if (!ticks) ticks = sysconf(_SC_CLK_TCK);
  double s = 0;
  for (int k = 0; k < nworkers; k++) {
    if (pids[k] <= 0) continue;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pids[k]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields after the command name (which may hold spaces) in parentheses: state is field 3,
     * utime 14 and stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
      s += (double)(ut + st) / (double)ticks;
  }
  return s;
}

static void worker_id(const opts_t *o, int k, char *buf, size_t len) {
  snprintf(buf, len, "%s-w%d", o->prefix, k);
}

static void start_workers(const opts_t *o) {
  for (int k = 0; k < o->workers; k++) {
    char id[160];
    worker_id(o, k, id, sizeof id);
    char **argv = calloc((size_t)o->worker_argc + 3, sizeof(*argv));
    if (!argv) die("out of memory", NULL);
    for (int i = 0; i < o->worker_argc; i++) argv[i] = o->worker_argv[i];
    argv[o->worker_argc] = "--worker-id";
    argv[o->worker_argc + 1] = id;
    pid_t p = fork();
    if (p < 0) die("fork failed", strerror(errno));
    if (p == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
      execvp(argv[0], argv);
      fprintf(stderr, "segq_bench: exec %s: %s\n", argv[0], strerror(errno));
      _exit(127);
    }
    free(argv);
    pids[k] = p;
  }
}

static void stop_workers(const opts_t *o) {
  for (int k = 0; k < o->workers; k++)
    if (pids[k] > 0) kill(pids[k], SIGTERM);
  for (int k = 0; k < o->workers; k++) {
    if (pids[k] <= 0) continue;
    double deadline = now_s() + 10;
    int reaped = 0;
    for (reap(pids[k], WNOHANG, &reaped); !reaped; reap(pids[k], WNOHANG, &reaped)) {
      if (now_s() > deadline) {
        kill(pids[k], SIGKILL);
        reap(pids[k], 0, &reaped);
        break;
      }
      sleep_s(0.01);
    }
    pids[k] = 0;
  }
}

static void check_workers_alive(const opts_t *o) {
  for (int k = 0; k < o->workers; k++) {
    int st;
    if (pids[k] > 0 && waitpid(pids[k], &st, WNOHANG) == pids[k]) {
      pids[k] = 0;
      stop_workers(o);
      die("a worker exited early", NULL);
    }
  }
}

static long long hget_ll(redisContext *c, const char *key, const char *field) {
  redisReply *r = redisCommand(c, "HGET %s %s", key, field);
  if (!r) die("redis connection lost", c->errstr);
  long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
  freeReplyObject(r);
  return v;
}

/* Redis's own accounting: CPU seconds (user+sys) of the server and the time spent in scripts
 * (EVALSHA + EVAL, Lua included) since the last CONFIG RESETSTAT. */
typedef struct {
  double cpu_s;
  long long script_calls, script_us;
} redis_acct_t;

static double info_double(const char *info, const char *field) {
  const char *p = strstr(info, field);
  return p ? atof(p + strlen(field)) : 0;
}

static redis_acct_t redis_acct(redisContext *c) {
  redis_acct_t a = {0};
  redisReply *r = redisCommand(c, "INFO everything");
  if (!r || r->type != REDIS_REPLY_STRING) die("INFO failed", c->errstr);
  a.cpu_s = info_double(r->str, "used_cpu_user:") + info_double(r->str, "used_cpu_sys:");
  const char *names[] = {"cmdstat_evalsha:", "cmdstat_eval:"};
  for (int k = 0; k < 2; k++) {
    const char *p = strstr(r->str, names[k]);
    long long calls = 0, us = 0;
    if (p && sscanf(p + strlen(names[k]), "calls=%lld,usec=%lld", &calls, &us) == 2) {
      a.script_calls += calls;
      a.script_us += us;
    }
  }
  freeReplyObject(r);
  return a;
}

/* enqueue.lua answers one code per job: [1] for one job queued. */
static int enqueued(const redisReply *r) {
  return r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
         r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1;
}

static void reset_stats(redisContext *c) {
  redisReply *r = redisCommand(c, "CONFIG RESETSTAT");
  if (!r) die("redis connection lost", c->errstr);
  freeReplyObject(r);
}

/* ---- tput ---- */

static void run_tput(const opts_t *o) {
  redisContext *c = connect_or_die(o);
  sq_error_t err = {0};
  /* Pre-fill: pipelined EVALSHA of enqueue.lua (PIPE_CHUNK per round trip). */
  const char *src = sq_queue_script_source("enqueue");
  redisReply *r = redisCommand(c, "SCRIPT LOAD %s", src);
  if (!r || r->type != REDIS_REPLY_STRING) die("SCRIPT LOAD failed", c->errstr);
  char sha[41];
  snprintf(sha, sizeof sha, "%s", r->str);
  freeReplyObject(r);

  /* As in a running deployment, a worker has served the model before (it is in
   * P:models:served): the jobs get no TTL at enqueue and the first heartbeat has no backlog to
   * make permanent (the first-ever deployment's case, ~1.3 us per queued job at start). */
  r = redisCommand(c, "SADD %s:models:served %s", o->prefix, o->model);
  if (!r || r->type == REDIS_REPLY_ERROR) die("SADD models:served failed", c->errstr);
  freeReplyObject(r);

  size_t job_len = 0;
  double t_fill = now_s();
  {
    /* The first job through the library's own enqueue (checks the script works end to end). */
    char id[32];
    uint8_t *job = encode_job(o, 0, id, sizeof id, &job_len);
    int rc = sq_queue_enqueue_sync(c, o->prefix, id, o->model, NULL, NULL, 0, job, job_len, &err);
    free(job);
    if (rc != 1) die("enqueue failed", err.msg);
  }
  for (long base = 1; base < o->n; base += PIPE_CHUNK) {
    long end = base + PIPE_CHUNK < o->n ? base + PIPE_CHUNK : o->n;
    char now_ms[24];
    snprintf(now_ms, sizeof now_ms, "%" PRIu64, sq_clock_wall_ms());
    for (long i = base; i < end; i++) {
      char id[32];
      size_t len;
      uint8_t *job = encode_job(o, i, id, sizeof id, &len);
      job_len = len;
      /* enqueue.lua: prefix, now_ms, result_ttl_s, group, watch, then id, model, tenant,
       * priority, payload. */
      const char *argv[] = {"EVALSHA", sha, "0",      o->prefix, now_ms, "86400",    "",
                            "0",       id,  o->model, "",        "0",    (char *)job};
      size_t argl[13];
      for (int k = 0; k < 13; k++) argl[k] = strlen(argv[k]);
      argl[12] = len;
      redisAppendCommandArgv(c, 13, argv, argl);
      free(job);
    }
    for (long i = base; i < end; i++) {
      void *rep = NULL;
      if (redisGetReply(c, &rep) != REDIS_OK) die("redis connection lost", c->errstr);
      redisReply *rr = rep;
      if (!enqueued(rr))
        die("enqueue did not return [1]", rr->type == REDIS_REPLY_ERROR ? rr->str : NULL);
      freeReplyObject(rr);
    }
  }
  double fill_s = now_s() - t_fill;

  char stats[256];
  snprintf(stats, sizeof stats, "%s:stats", o->prefix);
  reset_stats(c);
  redis_acct_t a0 = redis_acct(c);
  double t0 = now_s();
  start_workers(o);
  long long finished = 0, finished_first = 0;
  double t_first = 0, cpu_first = 0;
  /* Ready: every worker holds its lease (connected, permissions checked, registered), the point
   * BullMQ's bench starts its clock at (`new Worker` in a node process already running). */
  double t_ready = 0;
  int ready = 0;
  while (1) {
    while (!t_ready && ready < o->workers) {
      char id[160];
      worker_id(o, ready, id, sizeof id);
      redisReply *e = redisCommand(c, "EXISTS %s:worker:%s", o->prefix, id);
      if (!e) die("redis connection lost", c->errstr);
      int have = e->type == REDIS_REPLY_INTEGER && e->integer == 1;
      freeReplyObject(e);
      if (!have) break;
      if (++ready == o->workers) t_ready = now_s();
    }
    long long done = hget_ll(c, stats, "done"), failed = hget_ll(c, stats, "failed");
    finished = done + failed;
    if (finished > 0 && t_first == 0) {
      t_first = now_s();
      cpu_first = workers_cpu_now_s(o->workers);
      finished_first = finished;
    }
    if (finished >= o->n) break;
    if (now_s() - t0 > o->timeout_s) {
      stop_workers(o);
      die("timed out waiting for results", NULL);
    }
    check_workers_alive(o);
    sleep_s(0.001);
  }
  double t1 = now_s();
  double cpu_last = workers_cpu_now_s(o->workers);
  redis_acct_t a1 = redis_acct(c);
  long long failed = hget_ll(c, stats, "failed");
  stop_workers(o);
  /* Steady state: the workers' CPU from the first result to the last over the jobs finished in
   * between (start-up, the first claim and the exit left out; /proc ticks are 10 ms, so use it
   * on runs of many jobs). */
  double steady_cpu_us = finished > finished_first
                             ? (cpu_last - cpu_first) * 1e6 / (double)(finished - finished_first)
                             : 0.0;
  redisFree(c);
  double nj = (double)o->n;
  printf(
      "{\"mode\":\"tput\",\"model\":\"%s\",\"workers\":%d,\"n\":%ld,\"job_bytes\":%zu,"
      "\"fill_s\":%.4f,\"secs\":%.4f,\"jobs_per_s\":%.1f,\"ready_s\":%.4f,"
      "\"jobs_per_s_from_ready\":%.1f,\"first_result_s\":%.4f,"
      "\"steady_jobs_per_s\":%.1f,\"failed\":%lld,\"redis_cpu_us_per_job\":%.2f,"
      "\"script_us_per_job\":%.2f,\"script_calls\":%lld,\"jobs_per_script_call\":%.1f,"
      "\"worker_cpu_us_per_job\":%.2f,\"worker_start_cpu_ms\":%.1f,"
      "\"steady_worker_cpu_us_per_job\":%.2f}\n",
      o->model, o->workers, o->n, job_len, fill_s, t1 - t0, (double)o->n / (t1 - t0),
      t_ready ? t_ready - t0 : 0.0, t_ready && t1 > t_ready ? (double)o->n / (t1 - t_ready) : 0.0,
      t_first - t0,
      t1 > t_first ? (double)o->n / (t1 - t_first) : 0.0, failed, (a1.cpu_s - a0.cpu_s) * 1e6 / nj,
      (double)a1.script_us / nj, a1.script_calls,
      a1.script_calls ? nj / (double)a1.script_calls : 0.0, workers_cpu_s * 1e6 / nj,
      cpu_first * 1e3, steady_cpu_us);
}

/* ---- lat ---- */

static double *sched, *seen;
static long nseen;

/* An event message: counts it if its state is done/failed. */
static void on_event(const opts_t *o, const char *chan, size_t chan_len, const char *msg,
                     size_t msg_len, double t) {
  size_t plen = strlen(o->prefix) + 5; /* "<prefix>:ev:j" */
  if (chan_len <= plen) return;
  long i = strtol(chan + plen, NULL, 10);
  if (i < 0 || i >= o->n) return;
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  int terminal = 0;
  if (msgpack_unpack_next(&up, msg, msg_len, NULL) == MSGPACK_UNPACK_SUCCESS &&
      up.data.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t k = 0; k < up.data.via.map.size; k++) {
      msgpack_object_kv *kv = &up.data.via.map.ptr[k];
      if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 5 &&
          memcmp(kv->key.via.str.ptr, "state", 5) == 0 && kv->val.type == MSGPACK_OBJECT_STR) {
        const char *s = kv->val.via.str.ptr;
        uint32_t n = kv->val.via.str.size;
        terminal = (n == 4 && memcmp(s, "done", 4) == 0) || (n == 6 && memcmp(s, "failed", 6) == 0);
      }
    }
  }
  msgpack_unpacked_destroy(&up);
  if (terminal && seen[i] == 0) {
    seen[i] = t;
    nseen++;
  }
}

/* Reads whatever has arrived on the enqueue connection (replies, each must be 1) and on the
 * subscription (events), waiting up to wait_s for something. */
static void drain(const opts_t *o, redisContext *c, redisContext *sub, double wait_s,
                  long *replies) {
  struct pollfd pfd[2] = {{.fd = sub->fd, .events = POLLIN}, {.fd = c->fd, .events = POLLIN}};
  int ms = wait_s > 0 ? (int)(wait_s * 1000) : 0;
  if (poll(pfd, 2, ms) <= 0) return;
  double t = now_s();
  void *rep;
  if (pfd[0].revents) {
    if (redisBufferRead(sub) != REDIS_OK) die("subscription lost", sub->errstr);
    while (redisGetReplyFromReader(sub, &rep) == REDIS_OK && rep) {
      redisReply *r = rep;
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
          strcmp(r->element[0]->str, "pmessage") == 0)
        on_event(o, r->element[2]->str, r->element[2]->len, r->element[3]->str, r->element[3]->len,
                 t);
      freeReplyObject(r);
    }
  }
  if (pfd[1].revents) {
    if (redisBufferRead(c) != REDIS_OK) die("redis connection lost", c->errstr);
    while (redisGetReplyFromReader(c, &rep) == REDIS_OK && rep) {
      redisReply *r = rep;
      if (!enqueued(r))
        die("enqueue did not return [1]", r->type == REDIS_REPLY_ERROR ? r->str : NULL);
      freeReplyObject(r);
      (*replies)++;
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p) {
  long k = (long)(p * (double)(n - 1) + 0.5);
  return v[k < n ? k : n - 1];
}

static void run_lat(const opts_t *o) {
  redisContext *c = connect_or_die(o), *sub = connect_or_die(o);
  sched = calloc((size_t)o->n, sizeof(double));
  seen = calloc((size_t)o->n, sizeof(double));
  if (!sched || !seen) die("out of memory", NULL);
  redisReply *r = redisCommand(sub, "PSUBSCRIBE %s:ev:*", o->prefix);
  if (!r) die("PSUBSCRIBE failed", sub->errstr);
  freeReplyObject(r);

  start_workers(o);
  double deadline = now_s() + 20;
  for (int k = 0; k < o->workers; k++) {
    char id[160];
    worker_id(o, k, id, sizeof id);
    while (1) {
      r = redisCommand(c, "EXISTS %s:worker:%s", o->prefix, id);
      if (!r) die("redis connection lost", c->errstr);
      long long e = r->integer;
      freeReplyObject(r);
      if (e) break;
      check_workers_alive(o);
      if (now_s() > deadline) die("worker did not register", id);
      sleep_s(0.01);
    }
  }
  sleep_s(0.2); /* let every worker reach its idle BRPOP */

  /* Open loop: job i is sent at start + i/rate whether or not earlier enqueues have replied
   * (pipelined EVALSHA of enqueue.lua, the script sq_queue_enqueue_sync runs, with the same
   * arguments); replies and events are read whenever they arrive. */
  char sha[41];
  r = redisCommand(c, "SCRIPT LOAD %s", sq_queue_script_source("enqueue"));
  if (!r || r->type != REDIS_REPLY_STRING) die("SCRIPT LOAD failed", c->errstr);
  snprintf(sha, sizeof sha, "%s", r->str);
  freeReplyObject(r);
  reset_stats(c);
  redis_acct_t a0 = redis_acct(c);
  double start = now_s() + 0.01, max_lag = 0;
  size_t job_len = 0;
  long replies = 0;
  for (long i = 0; i < o->n; i++) {
    sched[i] = start + (double)i / o->rate;
    for (double t = now_s(); t < sched[i]; t = now_s()) drain(o, c, sub, sched[i] - t, &replies);
    double t = now_s();
    if (t - sched[i] > max_lag) max_lag = t - sched[i];
    char id[32], now_ms[24];
    snprintf(now_ms, sizeof now_ms, "%" PRIu64, sq_clock_wall_ms());
    uint8_t *job = encode_job(o, i, id, sizeof id, &job_len);
    /* watch = 1: the job channel publishes its events only for watched jobs, and the
     * latency is timed to the `done` event on it. */
    const char *argv[] = {"EVALSHA", sha, "0",      o->prefix, now_ms, "86400",    "",
                          "1",       id,  o->model, "",        "0",    (char *)job};
    size_t argl[13];
    for (int k = 0; k < 13; k++) argl[k] = strlen(argv[k]);
    argl[12] = job_len;
    redisAppendCommandArgv(c, 13, argv, argl);
    free(job);
    int done = 0;
    while (!done)
      if (redisBufferWrite(c, &done) != REDIS_OK) die("redis connection lost", c->errstr);
  }
  double sent_s = now_s() - start;
  deadline = now_s() + o->timeout_s;
  while ((nseen < o->n || replies < o->n) && now_s() < deadline) drain(o, c, sub, 0.05, &replies);
  redis_acct_t a1 = redis_acct(c);
  stop_workers(o);
  /* Redis CPU over the whole run (enqueue included: in an open loop it shares the server), and
   * the workers' script calls (claims, acks, heartbeats, sweeps: all but the n enqueues). */
  double nj = (double)o->n;
  long long worker_calls = a1.script_calls - a0.script_calls - o->n;
  long n = 0;
  double *lat = malloc((size_t)o->n * sizeof(double));
  if (!lat) die("out of memory", NULL);
  for (long i = 0; i < o->n; i++)
    if (seen[i] > 0) lat[n++] = (seen[i] - sched[i]) * 1e3;
  qsort(lat, (size_t)n, sizeof(double), cmp_double);
  double sum = 0;
  for (long i = 0; i < n; i++) sum += lat[i];
  printf(
      "{\"mode\":\"lat\",\"model\":\"%s\",\"workers\":%d,\"n\":%ld,\"seen\":%ld,"
      "\"job_bytes\":%zu,\"rate\":%.1f,\"achieved_rate\":%.1f,\"max_send_lag_ms\":%.3f,"
      "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f,"
      "\"redis_cpu_us_per_job\":%.2f,\"worker_script_calls\":%lld,\"jobs_per_worker_script_call\":%"
      ".2f}\n",
      o->model, o->workers, o->n, n, job_len, o->rate, (double)o->n / sent_s, max_lag * 1e3,
      n ? pct(lat, n, 0.5) : 0, n ? pct(lat, n, 0.9) : 0, n ? pct(lat, n, 0.99) : 0,
      n ? lat[n - 1] : 0, n ? sum / (double)n : 0, (a1.cpu_s - a0.cpu_s) * 1e6 / nj, worker_calls,
      worker_calls > 0 ? nj / (double)worker_calls : 0.0);
  free(lat);
  redisFree(sub);
  redisFree(c);
  if (n < o->n) {
    fprintf(stderr, "segq_bench: only %ld of %ld results seen\n", n, o->n);
    exit(1);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: segq_bench tput|lat --port P [--host H] [--prefix S] [--model M] [--n N]\n"
          "         [--image FILE.jpg | --raw WxH] [--rate JOBS_PER_S] [--workers K]\n"
          "         [--timeout-s S] -- WORKER_ARGV...\n"
          "  tput: pre-fill N jobs, start K workers, time until N jobs finished\n"
          "  lat:  start K workers, enqueue N jobs at --rate, time each job to its done event\n"
          "  Each worker gets `--worker-id <prefix>-w<k>` appended to WORKER_ARGV.\n");
  exit(2);
}

int main(int argc, char **argv) {
  opts_t o = {.host = "127.0.0.1",
              .prefix = "bench",
              .model = "null",
              .raw_w = 16,
              .raw_h = 16,
              .n = 20000,
              .rate = 1000,
              .workers = 1,
              .timeout_s = 120};
  if (argc < 2) usage();
  o.mode = argv[1];
  int i;
  for (i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (strcmp(a, "--host") == 0)
      o.host = v;
    else if (strcmp(a, "--port") == 0)
      o.port = atoi(v);
    else if (strcmp(a, "--prefix") == 0)
      o.prefix = v;
    else if (strcmp(a, "--model") == 0)
      o.model = v;
    else if (strcmp(a, "--image") == 0)
      o.image = v;
    else if (strcmp(a, "--raw") == 0) {
      if (sscanf(v, "%ux%u", &o.raw_w, &o.raw_h) != 2) usage();
    } else if (strcmp(a, "--n") == 0)
      o.n = atol(v);
    else if (strcmp(a, "--rate") == 0)
      o.rate = atof(v);
    else if (strcmp(a, "--workers") == 0)
      o.workers = atoi(v);
    else if (strcmp(a, "--timeout-s") == 0)
      o.timeout_s = atof(v);
    else
      usage();
  }
  o.worker_argv = argv + i;
  o.worker_argc = argc - i;
  if (o.port <= 0 || o.n <= 0 || o.rate <= 0 || o.workers < 1 || o.workers > MAX_WORKERS ||
      o.worker_argc < 1)
    usage();
  if (o.image) {
    image_bytes = read_file(o.image, &image_len);
  } else {
    image_len = (size_t)o.raw_w * o.raw_h;
    image_bytes = malloc(image_len);
    if (!image_bytes) die("out of memory", NULL);
    for (size_t k = 0; k < image_len; k++) image_bytes[k] = (uint8_t)(k * 7);
  }
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(o.mode, "tput") == 0)
    run_tput(&o);
  else if (strcmp(o.mode, "lat") == 0)
    run_lat(&o);
  else
    usage();
  free(image_bytes);
  return 0;
}
