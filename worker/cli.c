/* worker/cli: the worker process: parses the configuration (flags > SEGQ_* environment >
 * defaults), sets up logging and the work pool size, and runs the worker until it is drained.
 * main.c is only this; a test binary may register test-only backends first.
 * Threads: main thread; the worker's loop runs on it. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "worker/config.h"
#include "worker/metrics.h"
#include "worker/worker.h"

static const char *env_lookup(const char *name) {
  return getenv(name);
}

int sq_worker_uses_openmp(int argc, char **argv) {
  sq_worker_config_t cfg;
  sq_error_t err = {0};
  int uses = 1;
  if (sq_worker_config_parse(&cfg, argc, argv, env_lookup, &err) == SQ_CONFIG_RUN) {
    uses = 0;
    for (size_t i = 0; i < cfg.nmodels; i++)
      if (!sq_model_is_builtin(cfg.model_names[i])) uses = 1;
  }
  sq_worker_config_free(&cfg);
  return uses;
}

int sq_worker_main(int argc, char **argv) {
  sq_worker_config_t cfg;
  sq_error_t err = {0};
  int action = sq_worker_config_parse(&cfg, argc, argv, env_lookup, &err);
  if (action < 0) {
    fprintf(stderr, "segq-worker: %s\n", err.msg);
    sq_worker_config_free(&cfg);
    return 2;
  }
  if (action == SQ_CONFIG_HELP) {
    sq_worker_config_print_help(stdout, argv[0]);
    sq_worker_config_free(&cfg);
    return 0;
  }
  if (action == SQ_CONFIG_HELP_MARKDOWN) {
    sq_worker_config_print_markdown(stdout);
    sq_worker_config_free(&cfg);
    return 0;
  }
  if (action == SQ_CONFIG_HELP_METRICS) {
    sq_metrics_print_markdown(stdout);
    sq_worker_config_free(&cfg);
    return 0;
  }
  if (action == SQ_CONFIG_VERSION) {
    printf("segq-worker %s\n", sq_worker_version());
    sq_worker_config_free(&cfg);
    return 0;
  }

  sq_log_set_level((sq_log_level_t)sq_log_level_parse(cfg.log_level));
  sq_log_set_format((sq_log_format_t)sq_log_format_parse(cfg.log_format));
  if (action == SQ_CONFIG_CHECK_MODELS) {
    int code = sq_worker_check_models(&cfg, stdout);
    sq_worker_config_free(&cfg);
    return code;
  }
  char ctx[160];
  snprintf(ctx, sizeof ctx, "worker=%s", cfg.worker_id);
  sq_log_set_context(ctx);
  /* A password in --redis-url is in /proc/<pid>/cmdline for every user of the machine: mask it
   * there now, and say how to keep it out of the arguments altogether. */
  if (sq_worker_config_scrub_argv(argc, argv) > 0)
    sq_log_warn("worker",
                "the Redis password was given in --redis-url (visible in the process list until "
                "now, masked from here on); use SEGQ_REDIS_PASSWORD or --redis-password-file",
                NULL);

  /* libuv sizes its work pool from UV_THREADPOOL_SIZE at the first uv_queue_work. */
  unsigned threads = cfg.threads ? cfg.threads : uv_available_parallelism();
  if (threads < 1) threads = 1;
  if (threads > 1024) threads = 1024;
  char tbuf[16];
  snprintf(tbuf, sizeof tbuf, "%u", threads);
  setenv("UV_THREADPOOL_SIZE", tbuf, 1);

  char summary[1024];
  sq_worker_config_summary(&cfg, summary, sizeof summary);
  sq_log_info("worker", "start", "version=%s pid=%ld work_threads=%u %s", sq_worker_version(),
              (long)getpid(), threads, summary);

  int code = sq_worker_run(&cfg, &err);
  if (err.code) {
    char q[512];
    sq_log_error("worker", "start-up failed", "code=%s error=\"%s\"", sq_error_name(err.code),
                 sq_log_escape(err.msg, q, sizeof q));
  }
  sq_worker_config_free(&cfg);
  sq_log_set_context(NULL);
  if (code != 0) {
    /* Past the drain timeout work may still run on the pool; libuv's exit-time destructor
     * would join those threads and delay the exit. Leave now; the sweeper recovers the jobs. */
    fflush(NULL);
    _exit(code);
  }
  return code;
}
