/* bridge/config: defaults -> SEGQ_* environment -> flags, all driven by SQ_BRIDGE_OPTIONS (the
 * same shape as the worker's table), plus the derived values: the Redis URL (queue/'s parser, the
 * same forms as the worker) and the token secret.
 * Threads: main thread, at start-up. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge.h"
#include "bridge/bridge_internal.h"
#include "proto/proto.h"

#ifndef SEGQ_VERSION
#define SEGQ_VERSION "0.1.0"
#endif

#define SECRET_MAX 4096

enum { KIND_STR, KIND_UINT, KIND_BOOL };

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
  {#field, flag, env, KIND_##kind, def, lo, hi, help, offsetof(sq_bridge_config_t, field)},
static const option_t options[] = {SQ_BRIDGE_OPTIONS(SQ_X_OPT)};
#undef SQ_X_OPT
#define NOPTIONS (sizeof options / sizeof options[0])

static int set_value(sq_bridge_config_t *cfg, const option_t *o, const char *value,
                     const char *source, sq_error_t *err) {
  char *base = (char *)cfg + o->offset;
  if (o->kind == KIND_STR) {
    char *copy = sq_strdup(value);
    if (!copy) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    char **slot = (char **)(void *)base;
    free(*slot);
    *slot = copy;
    return 0;
  }
  if (o->kind == KIND_BOOL) {
    if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0) {
      *(uint32_t *)(void *)base = 1;
    } else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
               value[0] == '\0') {
      *(uint32_t *)(void *)base = 0;
    } else {
      return sq_error_set(err, SQ_EINVAL, "%s: \"%s\" is not 0 or 1", source, value);
    }
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

void sq_bridge_config_free(sq_bridge_config_t *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < NOPTIONS; i++)
    if (options[i].kind == KIND_STR) free(*(char **)(void *)((char *)cfg + options[i].offset));
  sq_redis_url_free(&cfg->redis);
  if (cfg->secret) {
    memset(cfg->secret, 0, cfg->secret_len);
    free(cfg->secret);
  }
  memset(cfg, 0, sizeof(*cfg));
}

/* The secret comes from exactly one of the flag/variable and the file. */
static int load_secret(sq_bridge_config_t *cfg, sq_error_t *err) {
  if (cfg->token_secret[0] && cfg->token_secret_file[0])
    return sq_error_set(err, SQ_EINVAL,
                        "token-secret and token-secret-file are both set: choose one");
  if (cfg->token_secret[0]) {
    cfg->secret_len = strlen(cfg->token_secret);
    cfg->secret = (uint8_t *)sq_strdup(cfg->token_secret);
    if (!cfg->secret) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    /* Not kept twice in memory. */
    memset(cfg->token_secret, 0, cfg->secret_len);
    cfg->token_secret[0] = '\0';
  } else if (cfg->token_secret_file[0]) {
    FILE *f = fopen(cfg->token_secret_file, "rb");
    if (!f)
      return sq_error_set(err, SQ_EINVAL, "token-secret-file: cannot open \"%s\": %s",
                          cfg->token_secret_file, strerror(errno));
    uint8_t *buf = malloc(SECRET_MAX + 1);
    size_t n = buf ? fread(buf, 1, SECRET_MAX + 1, f) : 0;
    fclose(f);
    if (!buf) return sq_error_set(err, SQ_ENOMEM, "out of memory");
    if (n > SECRET_MAX) {
      free(buf);
      return sq_error_set(err, SQ_EINVAL, "token-secret-file: \"%s\" is larger than %d bytes",
                          cfg->token_secret_file, SECRET_MAX);
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    cfg->secret = buf;
    cfg->secret_len = n;
  }
  if (cfg->secret && cfg->secret_len < 16)
    return sq_error_set(err, SQ_EINVAL,
                        "token secret: %zu bytes is too short to sign tokens (at least 16)",
                        cfg->secret_len);
  if (!cfg->secret && !cfg->demo)
    return sq_error_set(err, SQ_EINVAL,
                        "no token secret: set SEGQ_BRIDGE_TOKEN_SECRET or --token-secret-file "
                        "(the backend signs channel tokens with the same secret)");
  return 0;
}

int sq_bridge_config_parse(sq_bridge_config_t *cfg, int argc, char **argv,
                           sq_bridge_getenv_fn getenv_fn, sq_error_t *err) {
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
  int action = SQ_BRIDGE_RUN;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      action = SQ_BRIDGE_HELP;
      continue;
    }
    if (strcmp(a, "--help-markdown") == 0) {
      action = SQ_BRIDGE_HELP_MARKDOWN;
      continue;
    }
    if (strcmp(a, "--version") == 0) {
      action = SQ_BRIDGE_VERSION;
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
    const char *value;
    if (eq) {
      value = eq + 1;
    } else if (o->kind == KIND_BOOL) {
      value = "1"; /* a bare --demo */
    } else {
      if (i + 1 >= argc) return sq_error_set(err, SQ_EINVAL, "--%s needs a value", o->flag);
      value = argv[++i];
    }
    char source[80];
    snprintf(source, sizeof source, "--%s", o->flag);
    if ((rc = set_value(cfg, o, value, source, err)) != 0) return rc;
  }
  if (action != SQ_BRIDGE_RUN) return action;

  if ((rc = sq_redis_url_parse(&cfg->redis, cfg->redis_url, err)) != 0) return rc;
  /* As the worker: a password out of the process list, from a file or SEGQ_REDIS_PASSWORD. */
  const char *env_pw = getenv_fn ? getenv_fn("SEGQ_REDIS_PASSWORD") : NULL;
  if ((rc = sq_redis_url_apply_password(&cfg->redis, cfg->redis_password_file, env_pw, NULL,
                                        err)) != 0)
    return rc;
  if (cfg->demo && cfg->redis.sentinel)
    return sq_error_set(err, SQ_EINVAL,
                        "--demo enqueues through a plain connection: give it a redis:// URL "
                        "(the bridge itself follows redis+sentinel:// URLs)");
  if (!sq_proto_valid_name(cfg->prefix, strlen(cfg->prefix), 64))
    return sq_error_set(err, SQ_EINVAL, "prefix: \"%s\" must be 1-64 of [A-Za-z0-9._:-]",
                        cfg->prefix);
  if (sq_log_level_parse(cfg->log_level) < 0)
    return sq_error_set(err, SQ_EINVAL, "log-level: \"%s\" is not debug, info, warn or error",
                        cfg->log_level);
  if (cfg->host[0] == '\0') return sq_error_set(err, SQ_EINVAL, "host: must not be empty");
  if (!sq_proto_valid_name(cfg->demo_model, strlen(cfg->demo_model), SQ_PROTO_MAX_MODEL))
    return sq_error_set(err, SQ_EINVAL, "demo-model: \"%s\" is not a valid model name",
                        cfg->demo_model);
  if ((rc = sq_bridge_origins_check(cfg->allowed_origins, err)) != 0) return rc;
  if ((rc = load_secret(cfg, err)) != 0) return rc;
  return SQ_BRIDGE_RUN;
}

void sq_bridge_config_print_help(FILE *out, const char *argv0) {
  fprintf(out,
          "Usage: %s [options]\n"
          "segq bridge: follows segq job and group channels in Redis and serves them to browsers\n"
          "over WebSocket, with recovery by (offset, epoch) and signed channel tokens.\n"
          "Every option can also be set by its environment variable; a flag overrides it.\n\n",
          argv0 ? argv0 : "segq-bridge");
  for (size_t i = 0; i < NOPTIONS; i++) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s", options[i].flag,
             options[i].kind == KIND_UINT  ? " N"
             : options[i].kind == KIND_STR ? " S"
                                           : "");
    fprintf(out, "  %-28s %s\n  %-28s [env %s, default \"%s\"]\n", left, options[i].help, "",
            options[i].env, options[i].def);
  }
  fprintf(out,
          "  %-28s %s\n  %-28s %s\n  %-28s %s\n\n"
          "Signals: SIGTERM/SIGINT close every client (1001 going away) and exit 0.\n",
          "--help", "print this help", "--help-markdown", "print the options as a markdown table",
          "--version", "print the version");
}

void sq_bridge_config_print_markdown(FILE *out) {
  fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
  for (size_t i = 0; i < NOPTIONS; i++) {
    /* Markdown tables cannot hold a bare '|'; none of the help texts has one. */
    fprintf(out, "| `--%s` | `%s` | %s%s%s | %s |\n", options[i].flag, options[i].env,
            options[i].def[0] ? "`" : "", options[i].def[0] ? options[i].def : "(none)",
            options[i].def[0] ? "`" : "", options[i].help);
  }
}

void sq_bridge_config_summary(const sq_bridge_config_t *cfg, char *buf, size_t len) {
  char redis[512];
  sq_redis_url_describe(&cfg->redis, redis, sizeof redis);
  snprintf(buf, len,
           "redis=%s auth=%s prefix=%s listen=%s:%u origins=\"%s\" ping_s=%u "
           "pong_timeout_s=%u queue_max=%u queue_bytes=%u max_clients=%u max_subs=%u "
           "channel_cache=%u linger_s=%u demo=%u demo_model=%s log_level=%s",
           redis, cfg->redis.password ? "yes" : "no", cfg->prefix, cfg->host, cfg->port,
           cfg->allowed_origins, cfg->ping_interval_s, cfg->pong_timeout_s, cfg->client_queue_max,
           cfg->client_queue_bytes, cfg->max_clients, cfg->max_subscriptions, cfg->channel_cache,
           cfg->channel_linger_s, cfg->demo, cfg->demo_model, cfg->log_level);
}

const char *sq_bridge_version(void) {
  return SEGQ_VERSION;
}
