/* worker/config: defaults -> SEGQ_* environment -> flags, all driven by SQ_WORKER_OPTIONS, plus
 * the derived values (Redis URL parts, model list, generated worker id) and validation.
 * Threads: main thread, at start-up. */
#include "worker/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "gpu/gpu.h"
#include "proto/proto.h"

#ifndef SEGQ_VERSION
#define SEGQ_VERSION "0.1.0"
#endif

enum { KIND_STR, KIND_UINT, KIND_SECRET };

typedef struct {
  const char *field;
  const char *flag;
  const char *env;
  int kind;
  const char *def;
  uint32_t lo, hi;
  const char *help;
  size_t offset;
} option_t;

#define SQ_X_OPT(field, flag, env, kind, def, lo, hi, help) \
  {#field, flag, env, KIND_##kind, def, lo, hi, help, offsetof(sq_worker_config_t, field)},
static const option_t options[] = {SQ_WORKER_OPTIONS(SQ_X_OPT)};
#undef SQ_X_OPT
#define NOPTIONS (sizeof options / sizeof options[0])

static int set_value(sq_worker_config_t *cfg, const option_t *o, const char *value,
                     const char *source, sq_error_t *err) {
  char *base = (char *)cfg + o->offset;
  if (o->kind == KIND_STR || o->kind == KIND_SECRET) {
    char *copy = sq_strdup(value);
    if (!copy) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    char **slot = (char **)(void *)base;
    free(*slot);
    *slot = copy;
    return 0;
  }
  /* strtoul accepts "-1" and leading spaces; a count must be plain digits. */
  const char *p = value;
  if (*p == '\0') return sq_error_set(err, SQ_EINVAL, "%s: empty value", source);
  for (; *p; p++)
    if (*p < '0' || *p > '9')
      return sq_error_set(err, SQ_EINVAL, "%s: \"%s\" is not a non-negative integer", source,
                          value);
  errno = 0;
  unsigned long long v = strtoull(value, NULL, 10);
  if (errno || v < o->lo || v > o->hi)
    return sq_error_set(err, SQ_EINVAL, "%s: %s is out of range %u..%u", source, value, o->lo,
                        o->hi);
  *(uint32_t *)(void *)base = (uint32_t)v;
  return 0;
}

static const option_t *find_flag(const char *name, size_t len) {
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strlen(options[i].flag) == len && memcmp(options[i].flag, name, len) == 0)
      return &options[i];
  return NULL;
}

void sq_worker_config_free(sq_worker_config_t *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < NOPTIONS; i++)
    if (options[i].kind == KIND_STR || options[i].kind == KIND_SECRET) {
      char **slot = (char **)(void *)((char *)cfg + options[i].offset);
      if (*slot && options[i].kind == KIND_SECRET) memset(*slot, 0, strlen(*slot));
      free(*slot);
    }
  sq_redis_url_free(&cfg->redis);
  for (size_t i = 0; i < cfg->nmodels; i++) free(cfg->model_names[i]);
  free(cfg->model_names);
  memset(cfg, 0, sizeof(*cfg));
}

static int split_models(sq_worker_config_t *cfg, sq_error_t *err) {
  const char *s = cfg->models;
  size_t n = 1;
  for (const char *c = s; *c; c++) n += *c == ',';
  cfg->model_names = calloc(n, sizeof(char *));
  if (!cfg->model_names) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  const char *start = s;
  for (;;) {
    const char *end = strchr(start, ',');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if (!sq_proto_valid_name(start, len, SQ_PROTO_MAX_MODEL))
      return sq_error_set(err, SQ_EINVAL,
                          "models: \"%.*s\" is not a valid model name (1-64 of [A-Za-z0-9._:-])",
                          (int)(len > 80 ? 80 : len), start);
    for (size_t i = 0; i < cfg->nmodels; i++)
      if (strlen(cfg->model_names[i]) == len && memcmp(cfg->model_names[i], start, len) == 0)
        return sq_error_set(err, SQ_EINVAL, "models: \"%.*s\" is listed twice", (int)len, start);
    cfg->model_names[cfg->nmodels] = sq_strndup(start, len);
    if (!cfg->model_names[cfg->nmodels]) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    cfg->nmodels++;
    if (!end) break;
    start = end + 1;
  }
  return 0;
}

static int default_worker_id(sq_worker_config_t *cfg, sq_error_t *err) {
  char host[256] = "worker";
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') strcpy(host, "worker");
  host[sizeof host - 1] = '\0';
  host[64] = '\0'; /* leaves room for -<pid>-<random4> within the 128-byte id limit */
  for (char *c = host; *c; c++)
    if (!sq_proto_valid_name(c, 1, 1)) *c = '-';
  uint16_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
    rnd = (uint16_t)(sq_clock_mono_us() ^ (uint64_t)getpid());
  char id[128];
  /* %.64s: the compiler cannot see the host[64] cut above, and would warn of truncation. */
  snprintf(id, sizeof id, "%.64s-%ld-%04x", host, (long)getpid(), (unsigned)rnd);
  free(cfg->worker_id);
  cfg->worker_id = sq_strdup(id);
  return cfg->worker_id ? 0 : sq_error_set(err, SQ_ENOMEM, "out of memory");
}

int sq_worker_config_parse(sq_worker_config_t *cfg, int argc, char **argv,
                           sq_config_getenv_fn getenv_fn, sq_error_t *err) {
  memset(cfg, 0, sizeof(*cfg));
  sq_error_clear(err);
  int rc;
  for (size_t i = 0; i < NOPTIONS; i++)
    if ((rc = set_value(cfg, &options[i], options[i].def, options[i].flag, err)) != 0) return rc;
  if (getenv_fn) {
    for (size_t i = 0; i < NOPTIONS; i++) {
      const char *v = getenv_fn(options[i].env);
      if (v && (rc = set_value(cfg, &options[i], v, options[i].env, err)) != 0) return rc;
    }
  }
  int action = SQ_CONFIG_RUN;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      action = SQ_CONFIG_HELP;
      continue;
    }
    if (strcmp(a, "--help-markdown") == 0) {
      action = SQ_CONFIG_HELP_MARKDOWN;
      continue;
    }
    if (strcmp(a, "--version") == 0) {
      action = SQ_CONFIG_VERSION;
      continue;
    }
    if (strcmp(a, "--help-metrics") == 0) {
      action = SQ_CONFIG_HELP_METRICS;
      continue;
    }
    if (strcmp(a, "--check-models") == 0) {
      action = SQ_CONFIG_CHECK_MODELS;
      continue;
    }
    if (strncmp(a, "--", 2) != 0)
      return sq_error_set(err, SQ_EINVAL, "unexpected argument \"%s\" (options start with --)", a);
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const option_t *o = find_flag(name, nlen);
    if (!o)
      return sq_error_set(err, SQ_EINVAL, "unknown option --%.*s (see --help)", (int)nlen, name);
    if (o->kind == KIND_SECRET)
      return sq_error_set(err, SQ_EINVAL,
                          "--%s is not accepted: the process list would show it; set %s or use "
                          "--redis-password-file",
                          o->flag, o->env);
    const char *value;
    if (eq) {
      value = eq + 1;
    } else {
      if (i + 1 >= argc) return sq_error_set(err, SQ_EINVAL, "--%s needs a value", o->flag);
      value = argv[++i];
    }
    char source[80];
    snprintf(source, sizeof source, "--%s", o->flag);
    if ((rc = set_value(cfg, o, value, source, err)) != 0) return rc;
  }
  /* --check-models needs the model list and repository validated like a run; the rest too, so
   * a configuration that passes the check also starts. */
  if (action != SQ_CONFIG_RUN && action != SQ_CONFIG_CHECK_MODELS) return action;

  if ((rc = sq_redis_url_parse(&cfg->redis, cfg->redis_url, err)) != 0) return rc;
  if ((rc = sq_redis_url_apply_password(&cfg->redis, cfg->redis_password_file,
                                        cfg->redis_password, &cfg->redis_password_source,
                                        err)) != 0)
    return rc;
  if (!sq_proto_valid_name(cfg->prefix, strlen(cfg->prefix), 64))
    return sq_error_set(err, SQ_EINVAL, "prefix: \"%s\" must be 1-64 of [A-Za-z0-9._:-]",
                        cfg->prefix);
  if (cfg->worker_id[0] == '\0') {
    if ((rc = default_worker_id(cfg, err)) != 0) return rc;
  } else if (!sq_proto_valid_name(cfg->worker_id, strlen(cfg->worker_id), SQ_PROTO_MAX_ID)) {
    return sq_error_set(err, SQ_EINVAL, "worker-id: \"%.80s\" must be 1-128 of [A-Za-z0-9._:-]",
                        cfg->worker_id);
  }
  if ((rc = split_models(cfg, err)) != 0) return rc;
  sq_error_t derr = {0};
  if (sq_model_device_check(cfg->device, &derr) != 0)
    return sq_error_set(err, SQ_EINVAL, "--device/SEGQ_DEVICE: %s", derr.msg);
  if (strcmp(cfg->precision, "model") && strcmp(cfg->precision, "fp32") &&
      strcmp(cfg->precision, "fp16"))
    return sq_error_set(err, SQ_EINVAL,
                        "--precision/SEGQ_PRECISION: \"%s\" is not model, fp32 or fp16",
                        cfg->precision);
  if (sq_log_level_parse(cfg->log_level) < 0)
    return sq_error_set(err, SQ_EINVAL, "log-level: \"%s\" is not debug, info, warn or error",
                        cfg->log_level);
  if (sq_log_format_parse(cfg->log_format) < 0)
    return sq_error_set(err, SQ_EINVAL, "log-format: \"%s\" is not logfmt or json",
                        cfg->log_format);
  if (cfg->model_dir[0] == '\0')
    return sq_error_set(err, SQ_EINVAL, "model-dir: must not be empty");
  return action;
}

int sq_worker_config_scrub_argv(int argc, char **argv) {
  int n = 0;
  for (int i = 1; i < argc; i++) {
    char *url = NULL;
    if (strcmp(argv[i], "--redis-url") == 0 && i + 1 < argc)
      url = argv[++i];
    else if (strncmp(argv[i], "--redis-url=", 12) == 0)
      url = argv[i] + 12;
    if (url) n += sq_redis_url_scrub(url);
  }
  return n;
}

void sq_worker_config_print_help(FILE *out, const char *argv0) {
  fprintf(out,
          "Usage: %s [options]\n"
          "segq worker: claims image-segmentation jobs from Redis, runs the models, acks results.\n"
          "Every option can also be set by its environment variable; a flag overrides it.\n\n",
          argv0 ? argv0 : "segq-worker");
  for (size_t i = 0; i < NOPTIONS; i++) {
    char left[64];
    if (options[i].kind == KIND_SECRET) {
      fprintf(out, "  %-28s %s\n", options[i].env, options[i].help);
      continue;
    }
    snprintf(left, sizeof left, "--%s %s", options[i].flag,
             options[i].kind == KIND_UINT ? "N" : "S");
    fprintf(out, "  %-28s %s\n  %-28s [env %s, default \"%s\"]\n", left, options[i].help, "",
            options[i].env, options[i].def);
  }
  fprintf(out,
          "  %-28s %s\n  %-28s %s\n  %-28s %s\n  %-28s %s\n  %-28s %s\n  %-28s %s\n\n"
          "Signals: SIGTERM/SIGINT drain (stop claiming, finish and ack in-flight jobs, exit 0;\n"
          "exit 1 past --drain-timeout-s); a second signal exits 1 at once.\n",
          "--check-models", "validate every model of --model-dir and --models, print each", "",
          "problem, exit 0 (all valid) or 1; connects to nothing", "--help", "print this help",
          "--help-markdown", "print the options as a markdown table", "--help-metrics",
          "print the /metrics families as a markdown table", "--version", "print the version");
}

void sq_worker_config_print_markdown(FILE *out) {
  fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
  for (size_t i = 0; i < NOPTIONS; i++)
    if (options[i].kind == KIND_SECRET)
      fprintf(out, "| (none) | `%s` | | %s |\n", options[i].env, options[i].help);
    else
      fprintf(out, "| `--%s` | `%s` | %s%s%s | %s |\n", options[i].flag, options[i].env,
              options[i].def[0] ? "`" : "", options[i].def[0] ? options[i].def : "(none)",
              options[i].def[0] ? "`" : "", options[i].help);
}

void sq_worker_config_summary(const sq_worker_config_t *cfg, char *buf, size_t len) {
  char redis[512];
  sq_redis_url_describe(&cfg->redis, redis, sizeof redis);
  snprintf(buf, len,
           "redis=%s auth=%s prefix=%s models=%s model_dir=%s max_inflight_batches=%u "
           "threads=%u lease_ttl_ms=%u max_attempts=%u result_ttl_s=%u drain_timeout_s=%u "
           "wait_timeout_s=%u max_batch=%u max_delay_us=%u device=%s streams=%u precision=%s "
           "log_level=%s log_format=%s http=%s:%u",
           redis, cfg->redis.password ? cfg->redis_password_source : "no", cfg->prefix, cfg->models,
           cfg->model_dir, cfg->max_inflight_batches, cfg->threads, cfg->lease_ttl_ms,
           cfg->max_attempts, cfg->result_ttl_s, cfg->drain_timeout_s, cfg->wait_timeout_s,
           cfg->max_batch, cfg->max_delay_us, cfg->device, cfg->streams, cfg->precision,
           cfg->log_level, cfg->log_format, cfg->http_host, cfg->http_port);
}

const char *sq_worker_version(void) {
  return SEGQ_VERSION;
}
