/* worker/config: the worker's options, defined once in SQ_WORKER_OPTIONS. The table produces
 * the config struct, `--help`, flag parsing, SEGQ_* environment parsing (flags override the
 * environment) and the markdown table in docs/operations.md (`--help-markdown`).
 * Threads: main thread, at start-up, before the loop runs. */
#ifndef SQ_WORKER_CONFIG_H
#define SQ_WORKER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "queue/queue.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(field, flag, env, kind, default, min, max, help). kind: STR, UINT (min..max inclusive) or
 * SECRET (a string taken from the environment only: a flag would show in the process list).
 * A default of "" means unset (the help text says what is computed instead, if anything). */
#define SQ_WORKER_OPTIONS(X)                                                                       \
  X(redis_url, "redis-url", "SEGQ_REDIS_URL", STR, sq_queue_text_REDIS_URL, 0, 0,                  \
    "Redis server: redis://[[user][:password]@]host[:port][/db] or "                               \
    "redis+sentinel://[[user][:password]@]host[:port][,host[:port]...]/master[/db]")               \
  X(redis_password, "redis-password", "SEGQ_REDIS_PASSWORD", SECRET, "", 0, 0,                     \
    "Redis password (environment only); overrides the URL's")                                      \
  X(redis_password_file, "redis-password-file", "SEGQ_REDIS_PASSWORD_FILE", STR, "", 0, 0,         \
    "file holding the Redis password (one line); overrides SEGQ_REDIS_PASSWORD and the URL's")     \
  X(prefix, "prefix", "SEGQ_PREFIX", STR, sq_queue_text_PREFIX, 0, 0,                              \
    "key prefix of every segq key in Redis")                                                       \
  X(worker_id, "worker-id", "SEGQ_WORKER_ID", STR, "", 0, 0,                                       \
    "this worker's id ([A-Za-z0-9._:-], at most 128); default <hostname>-<pid>-<random4>")         \
  X(models, "models", "SEGQ_MODELS", STR, "null,otsu", 0, 0,                                       \
    "comma-separated list of the models this worker serves")                                       \
  X(model_dir, "model-dir", "SEGQ_MODEL_DIR", STR, "models", 0, 0,                                 \
    "model repository: <dir>/<name>/model.onnx + model.json")                                      \
  X(max_inflight_batches, "max-inflight-batches", "SEGQ_MAX_INFLIGHT_BATCHES", UINT, "2", 1, 1024, \
    "claim at most this many batches' worth of jobs per model ahead")                              \
  X(threads, "threads", "SEGQ_THREADS", UINT, "0", 0, 1024,                                        \
    "work pool size (decode, pre/postprocessing); 0 = number of CPU cores")                        \
  X(lease_ttl_ms, "lease-ttl-ms", "SEGQ_LEASE_TTL_MS", UINT, "10000", 300, 3600000,                \
    "worker lease TTL; heartbeat every ttl/3, sweeper every ttl/2")                                \
  X(max_attempts, "max-attempts", "SEGQ_MAX_ATTEMPTS", UINT, "3", 1, 1000,                         \
    "executions of a job (transient retries, or its workers dying) before it is dead-lettered")    \
  X(result_ttl_s, "result-ttl-s", "SEGQ_RESULT_TTL_S", UINT, "86400", 1, 31536000,                 \
    "TTL of a finished job's record (its result) and of group keys")                               \
  X(dead_ttl_s, "dead-ttl-s", "SEGQ_DEAD_TTL_S", UINT, "604800", 1, 31536000,                      \
    "TTL of a dead letter's record (error result + job document)")                                 \
  X(retry_base_ms, "retry-base-ms", "SEGQ_RETRY_BASE_MS", UINT, "1000", 1, 3600000,                \
    "first retry delay after a transient error; doubles per attempt, +-50% jitter")                \
  X(retry_max_ms, "retry-max-ms", "SEGQ_RETRY_MAX_MS", UINT, "60000", 1, 86400000,                 \
    "longest retry delay")                                                                         \
  X(max_claim_bytes, "max-claim-bytes", "SEGQ_MAX_CLAIM_BYTES", UINT, "67108864", 1, 4294967295u,  \
    "job documents per claim, in bytes (one larger job is still claimed alone)")                   \
  X(progress_interval_ms, "progress-interval-ms", "SEGQ_PROGRESS_INTERVAL_MS", UINT, "500", 50,    \
    3600000, "at most one progress event per running job per this interval")                       \
  X(wait_replicas, "wait-replicas", "SEGQ_WAIT_REPLICAS", UINT, "0", 0, 64,                        \
    "after each ack, WAIT until this many replicas have it; 0 = off (docs/RELIABILITY.md)")        \
  X(wait_replicas_timeout_ms, "wait-replicas-timeout-ms", "SEGQ_WAIT_REPLICAS_TIMEOUT_MS", UINT,   \
    "1000", 1, 600000, "how long an ack waits for --wait-replicas; then it is resent")             \
  X(drain_timeout_s, "drain-timeout-s", "SEGQ_DRAIN_TIMEOUT_S", UINT, "30", 1, 86400,              \
    "on SIGTERM/SIGINT: finish in-flight work within this time, else exit 1")                      \
  X(wait_timeout_s, "wait-timeout-s", "SEGQ_WAIT_TIMEOUT_S", UINT, "2", 1, 3600,                   \
    "BRPOP timeout on the wake-up keys when the queues are empty")                                 \
  X(max_batch, "max-batch", "SEGQ_MAX_BATCH", UINT, "0", 0, 4096,                                  \
    "override every model's max batch size; 0 = the model's own")                                  \
  X(max_delay_us, "max-delay-us", "SEGQ_MAX_DELAY_US", UINT, "0", 0, 60000000,                     \
    "override every model's max batching delay; 0 = the model's own")                              \
  X(device, "device", "SEGQ_DEVICE", STR, "auto", 0, 0,                                            \
    "where repository (ONNX) models run: auto (a CUDA GPU when usable, else cpu), cpu, cuda, "     \
    "cuda:N, or cuda:all (every GPU, one executor per context on each)")                           \
  X(streams, "streams", "SEGQ_STREAMS", UINT, "0", 0, 64,                                          \
    "executor contexts (CUDA streams) per device for every repository model; 0 = the model's "     \
    "own (model.json contexts)")                                                                   \
  X(precision, "precision", "SEGQ_PRECISION", STR, "model", 0, 0,                                  \
    "model (each model's model.json precision), fp32 or fp16 for every repository model; fp16 "    \
    "runs on the CUDA backend only (the cpu backend computes in fp32)")                            \
  X(log_level, "log-level", "SEGQ_LOG_LEVEL", STR, "info", 0, 0, "debug, info, warn or error")     \
  X(log_format, "log-format", "SEGQ_LOG_FORMAT", STR, "logfmt", 0, 0,                              \
    "log records on stderr: logfmt (k=v) or json (one object per line, every field a string)")     \
  X(http_port, "http-port", "SEGQ_HTTP_PORT", UINT, "0", 0, 65535,                                 \
    "serve GET /livez, /readyz, /healthz and /metrics (Prometheus text) on this port; 0 = off")    \
  X(http_host, "http-host", "SEGQ_HTTP_HOST", STR, "127.0.0.1", 0, 0,                              \
    "address the HTTP endpoint binds to (0.0.0.0 for probes from outside the host)")               \
  X(http_max_connections, "http-max-connections", "SEGQ_HTTP_MAX_CONNECTIONS", UINT, "64", 1,      \
    10000, "HTTP endpoint: concurrent connections (half per client address); more are closed")     \
  X(http_timeout_s, "http-timeout-s", "SEGQ_HTTP_TIMEOUT_S", UINT, "10", 1, 3600,                  \
    "HTTP endpoint: close a connection idle (or a request incomplete) this long")                  \
  X(queue_depth_interval_ms, "queue-depth-interval-ms", "SEGQ_QUEUE_DEPTH_INTERVAL_MS", UINT,      \
    "5000", 100, 3600000,                                                                          \
    "with --http-port: how often /metrics re-reads the models' queue depth from Redis")

#define SQ_CONFIG_KIND_STR char *
#define SQ_CONFIG_KIND_UINT uint32_t
#define SQ_CONFIG_KIND_SECRET char *

typedef struct {
#define SQ_X_FIELD(field, flag, env, kind, def, lo, hi, help) SQ_CONFIG_KIND_##kind field;
  SQ_WORKER_OPTIONS(SQ_X_FIELD)
#undef SQ_X_FIELD
  /* Derived from redis_url, with the password from the file, SEGQ_REDIS_PASSWORD or the URL. */
  sq_redis_url_t redis;
  const char *redis_password_source; /* "file", "env", "url" or "none" (static) */
  /* Derived from models. */
  char **model_names;
  size_t nmodels;
} sq_worker_config_t;

typedef enum {
  SQ_CONFIG_RUN = 0,
  SQ_CONFIG_HELP,
  SQ_CONFIG_HELP_MARKDOWN,
  SQ_CONFIG_VERSION,
  SQ_CONFIG_CHECK_MODELS, /* validate the model repository and exit (no Redis) */
  SQ_CONFIG_HELP_METRICS, /* print the metric families as a markdown table */
} sq_config_action_t;

/* Looks up an environment variable; getenv in production, a table in tests. */
typedef const char *(*sq_config_getenv_fn)(const char *name);

/* Fills cfg from defaults, then the environment (getenv_fn may be NULL = no environment), then
 * argv (`--flag value` or `--flag=value`). Returns an sq_config_action_t (>= 0) or a negative
 * SQ_EINVAL with err naming the flag or variable and the problem. cfg owns its strings: call
 * sq_worker_config_free in every case. */
int sq_worker_config_parse(sq_worker_config_t *cfg, int argc, char **argv,
                           sq_config_getenv_fn getenv_fn, sq_error_t *err);
void sq_worker_config_free(sq_worker_config_t *cfg);

/* Overwrites (in place, same length) the password of every Redis URL in argv (`--redis-url X`,
 * `--redis-url=X`) with '*', so the process list stops showing it. Returns how many it masked. */
int sq_worker_config_scrub_argv(int argc, char **argv);

void sq_worker_config_print_help(FILE *out, const char *argv0);
void sq_worker_config_print_markdown(FILE *out);
/* One logfmt-ish line of the effective configuration (password masked), for the start log. */
void sq_worker_config_summary(const sq_worker_config_t *cfg, char *buf, size_t len);
const char *sq_worker_version(void);

#ifdef __cplusplus
}
#endif

#endif
