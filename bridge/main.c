/* segq-bridge: main. Parses the options (bridge/bridge.h), runs the bridge on a libuv loop until
 * SIGTERM/SIGINT (a second signal exits 1 at once), and exits 0 once every handle is closed.
 * Exit codes: 0 clean stop, 1 start-up failure or second signal, 2 bad command line or
 * environment. Threads: main thread runs the loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <uv.h>

#include "bridge/bridge.h"

static sq_bridge_t *bridge;
static uv_signal_t sigterm, sigint;
static int signals;

static const char *env_get(const char *name) {
  return getenv(name);
}

static void on_closed(uv_handle_t *h) {
  (void)h;
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (++signals > 1) {
    sq_log_warn("bridge", "second signal: exiting now", "signal=%d", signum);
    exit(1);
  }
  sq_log_info("bridge", "signal: stopping", "signal=%d", signum);
  sq_bridge_stop(bridge);
  /* Keep listening for a second signal only while the stop runs, so the loop can end. */
  uv_unref((uv_handle_t *)&sigterm);
  uv_unref((uv_handle_t *)&sigint);
}

int main(int argc, char **argv) {
  sq_bridge_config_t cfg;
  sq_error_t err;
  int action = sq_bridge_config_parse(&cfg, argc, argv, env_get, &err);
  if (action < 0) {
    fprintf(stderr, "segq-bridge: %s\n", err.msg);
    sq_bridge_config_free(&cfg);
    return 2;
  }
  if (action == SQ_BRIDGE_HELP) {
    sq_bridge_config_print_help(stdout, argv[0]);
  } else if (action == SQ_BRIDGE_HELP_MARKDOWN) {
    sq_bridge_config_print_markdown(stdout);
  } else if (action == SQ_BRIDGE_VERSION) {
    printf("segq-bridge %s\n", sq_bridge_version());
  }
  if (action != SQ_BRIDGE_RUN) {
    sq_bridge_config_free(&cfg);
    return 0;
  }
  sq_log_set_level((sq_log_level_t)sq_log_level_parse(cfg.log_level));
  signal(SIGPIPE, SIG_IGN);
  /* One descriptor per client: take what the hard limit allows (often 1024 soft by default). */
  struct rlimit rl;
  rlim_t want = (rlim_t)cfg.max_clients + 64;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
    sq_log_warn("bridge", "fewer file descriptors than --max-clients needs",
                "nofile=%llu max_clients=%u", (unsigned long long)rl.rlim_cur, cfg.max_clients);
  char summary[1024];
  sq_bridge_config_summary(&cfg, summary, sizeof summary);
  sq_log_info("bridge", "starting", "version=%s %s", sq_bridge_version(), summary);

  uv_loop_t loop;
  uv_loop_init(&loop);
  bridge = sq_bridge_new(&loop, &cfg, &err);
  if (!bridge) {
    sq_log_error("bridge", "cannot start", "err=\"%s\"", err.msg);
    fprintf(stderr, "segq-bridge: %s\n", err.msg);
    uv_run(&loop, UV_RUN_DEFAULT); /* lets what was opened close */
    uv_loop_close(&loop);
    sq_bridge_config_free(&cfg);
    return 1;
  }
  sq_log_info("bridge", "listening", "addr=%s:%d demo=%u", cfg.host, sq_bridge_port(bridge),
              cfg.demo);
  uv_signal_init(&loop, &sigterm);
  uv_signal_init(&loop, &sigint);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&sigterm, on_closed);
  uv_close((uv_handle_t *)&sigint, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  sq_bridge_free(bridge);
  int rc = uv_loop_close(&loop);
  if (rc != 0) sq_log_warn("bridge", "loop closed with open handles", "rc=%d", rc);
  sq_log_info("bridge", "stopped", "%s", "");
  sq_bridge_config_free(&cfg);
  return 0;
}
