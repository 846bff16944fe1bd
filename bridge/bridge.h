/* bridge: segq-bridge, the WebSocket fan-out of job and group channels to browsers
 * (docs/bridge.md): its options, the signed channel tokens, the channel names, and the server
 * object. Threads: the server runs on the libuv loop thread that created it; config and tokens are
 * pure functions that run on any thread. */
#ifndef SQ_BRIDGE_H
#define SQ_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "queue/queue.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(field, flag, env, kind, default, min, max, help). kind: STR, UINT (min..max inclusive) or
 * BOOL (a bare `--flag`, `--flag=0|1`, or the variable set to 0/1). */
#define SQ_BRIDGE_OPTIONS(X)                                                                     \
  X(redis_url, "redis-url", "SEGQ_REDIS_URL", STR, sq_queue_text_REDIS_URL, 0, 0,                \
    "Redis server: redis://[[user][:password]@]host[:port][/db] or "                             \
    "redis+sentinel://[[user][:password]@]host[:port][,host[:port]...]/master[/db]")             \
  X(redis_password_file, "redis-password-file", "SEGQ_REDIS_PASSWORD_FILE", STR, "", 0, 0,       \
    "file holding the Redis password (one line); overrides SEGQ_REDIS_PASSWORD (environment "    \
    "only) and the URL's")                                                                       \
  X(prefix, "prefix", "SEGQ_PREFIX", STR, sq_queue_text_PREFIX, 0, 0,                            \
    "key prefix of every segq key in Redis")                                                     \
  X(host, "host", "SEGQ_BRIDGE_HOST", STR, "127.0.0.1", 0, 0,                                    \
    "address to listen on (0.0.0.0 for every interface)")                                        \
  X(port, "port", "SEGQ_BRIDGE_PORT", UINT, "8700", 1, 65535,                                    \
    "TCP port for WebSocket (/ws) and HTTP (/v1/result, /healthz, /js, the demo)")               \
  X(token_secret, "token-secret", "SEGQ_BRIDGE_TOKEN_SECRET", STR, "", 0, 0,                     \
    "shared secret of the channel tokens (HMAC-SHA256); prefer the variable or the file to the " \
    "flag, which other users can see in the process list")                                       \
  X(token_secret_file, "token-secret-file", "SEGQ_BRIDGE_TOKEN_SECRET_FILE", STR, "", 0, 0,      \
    "read the token secret from this file (trailing newline ignored)")                           \
  X(allowed_origins, "allowed-origins", "SEGQ_BRIDGE_ALLOWED_ORIGINS", STR, "", 0, 0,            \
    "comma-separated Origins allowed to open WebSockets (e.g. https://app.example.com); "        \
    "empty = same origin as the bridge's Host only; * = any")                                    \
  X(ping_interval_s, "ping-interval-s", "SEGQ_BRIDGE_PING_INTERVAL_S", UINT, "25", 1, 3600,      \
    "send {\"type\":\"ping\"} to each client this often")                                        \
  X(pong_timeout_s, "pong-timeout-s", "SEGQ_BRIDGE_PONG_TIMEOUT_S", UINT, "10", 1, 3600,         \
    "close a client (code 4002 no_pong) that sent nothing this long after a ping")               \
  X(client_queue_max, "client-queue-max", "SEGQ_BRIDGE_CLIENT_QUEUE_MAX", UINT, "4096", 4,       \
    10000000, "messages queued for one client before it is closed as slow (4001)")               \
  X(client_queue_bytes, "client-queue-bytes", "SEGQ_BRIDGE_CLIENT_QUEUE_BYTES", UINT, "4194304", \
    4096, 2147483647, "bytes queued for one client before it is closed as slow (4001)")          \
  X(client_sndbuf_bytes, "client-sndbuf-bytes", "SEGQ_BRIDGE_CLIENT_SNDBUF_BYTES", UINT, "0", 0, \
    67108864,                                                                                    \
    "kernel send buffer of each client socket (SO_SNDBUF); 0 = the kernel's autotuned "          \
    "default. Lower it to bound the kernel memory a slow client can hold")                       \
  X(max_clients, "max-clients", "SEGQ_BRIDGE_MAX_CLIENTS", UINT, "10000", 1, 1000000,            \
    "WebSocket connections at most; more are refused (1013 try again later)")                    \
  X(max_subscriptions, "max-subscriptions", "SEGQ_BRIDGE_MAX_SUBSCRIPTIONS", UINT, "64", 1,      \
    100000, "channels one connection may follow at once")                                        \
  X(max_message_bytes, "max-message-bytes", "SEGQ_BRIDGE_MAX_MESSAGE_BYTES", UINT, "8192", 256,  \
    1048576, "largest message a client may send (close 1009 above)")                             \
  X(channel_cache, "channel-cache", "SEGQ_BRIDGE_CHANNEL_CACHE", UINT, "2048", 16, 1000000,      \
    "recent events each followed channel keeps in memory to replay to resuming clients")         \
  X(channel_linger_s, "channel-linger-s", "SEGQ_BRIDGE_CHANNEL_LINGER_S", UINT, "30", 0, 86400,  \
    "keep a channel's Redis subscription and cache this long after its last client left")        \
  X(demo, "demo", "SEGQ_BRIDGE_DEMO", BOOL, "0", 0, 1,                                           \
    "serve the demo page at / and its upload endpoint (enqueues jobs: not for production)")      \
  X(demo_model, "demo-model", "SEGQ_BRIDGE_DEMO_MODEL", STR, "otsu", 0, 0,                       \
    "model the demo enqueues uploaded images for")                                               \
  X(demo_dir, "demo-dir", "SEGQ_BRIDGE_DEMO_DIR", STR, "bridge/www", 0, 0,                       \
    "folder of the demo page (served at / with --demo)")                                         \
  X(js_dir, "js-dir", "SEGQ_BRIDGE_JS_DIR", STR, "clients/js", 0, 0,                             \
    "folder of the browser client, served at /js/ (segq.js)")                                    \
  X(demo_max_files, "demo-max-files", "SEGQ_BRIDGE_DEMO_MAX_FILES", UINT, "64", 1, 10000,        \
    "images one demo upload may carry")                                                          \
  X(demo_max_bytes, "demo-max-bytes", "SEGQ_BRIDGE_DEMO_MAX_BYTES", UINT, "67108864", 1024,      \
    1073741824, "bytes one demo upload may carry")                                               \
  X(token_ttl_s, "token-ttl-s", "SEGQ_BRIDGE_TOKEN_TTL_S", UINT, "3600", 10, 31536000,           \
    "lifetime of the tokens the demo mints for its uploads")                                     \
  X(log_level, "log-level", "SEGQ_LOG_LEVEL", STR, "info", 0, 0, "debug, info, warn or error")

#define SQ_BRIDGE_KIND_STR char *
#define SQ_BRIDGE_KIND_UINT uint32_t
#define SQ_BRIDGE_KIND_BOOL uint32_t

typedef struct {
#define SQ_X_FIELD(field, flag, env, kind, def, lo, hi, help) SQ_BRIDGE_KIND_##kind field;
  SQ_BRIDGE_OPTIONS(SQ_X_FIELD)
#undef SQ_X_FIELD
  sq_redis_url_t redis; /* derived from redis_url (queue/'s one parser) */
  /* The token secret (from token_secret or the file), secret_len bytes; NULL when none is set
   * (allowed only with --demo, which then draws a random one). */
  uint8_t *secret;
  size_t secret_len;
} sq_bridge_config_t;

typedef enum {
  SQ_BRIDGE_RUN = 0,
  SQ_BRIDGE_HELP,
  SQ_BRIDGE_HELP_MARKDOWN,
  SQ_BRIDGE_VERSION,
} sq_bridge_action_t;

typedef const char *(*sq_bridge_getenv_fn)(const char *name);

/* Fills cfg from defaults, then the environment (getenv_fn may be NULL), then argv. Returns an
 * sq_bridge_action_t (>= 0) or SQ_EINVAL with err naming the flag or variable and the problem.
 * cfg owns its strings: call sq_bridge_config_free in every case. */
int sq_bridge_config_parse(sq_bridge_config_t *cfg, int argc, char **argv,
                           sq_bridge_getenv_fn getenv_fn, sq_error_t *err);
void sq_bridge_config_free(sq_bridge_config_t *cfg);
void sq_bridge_config_print_help(FILE *out, const char *argv0);
void sq_bridge_config_print_markdown(FILE *out);
/* One line of the effective configuration for the start log (no secrets). */
void sq_bridge_config_summary(const sq_bridge_config_t *cfg, char *buf, size_t len);

/* ---- channels: "job:<id>" or "group:<group>", names in the id alphabet ---- */
typedef enum { SQ_CHANNEL_JOB = 1, SQ_CHANNEL_GROUP = 2 } sq_channel_kind_t;
#define SQ_CHANNEL_MAX 160 /* "group:" + 128 + NUL, rounded up */

/* Returns 0 and sets *kind and *name (pointing into channel) if channel is well formed, else
 * SQ_ECHANNEL. */
int sq_bridge_channel_parse(const char *channel, sq_channel_kind_t *kind, const char **name);

/* ---- tokens: "v1.<expiry unix s>.<base64url HMAC-SHA256(secret, "segq-bridge-v1\n" channel
 * "\n" expiry)>" (clients/python/segq/tokens.py mints the same) ---- */
#define SQ_BRIDGE_TOKEN_MAX 96

/* Writes the token for channel valid until expires_s into out (>= SQ_BRIDGE_TOKEN_MAX bytes).
 * Returns 0, or SQ_EINVAL (no secret, bad channel, out too small). */
int sq_bridge_token_mint(const uint8_t *secret, size_t secret_len, const char *channel,
                         uint64_t expires_s, char *out, size_t out_len);
/* 0 if token grants channel at now_s; else SQ_ETOKEN_MISSING (NULL or empty), SQ_ETOKEN_MALFORMED,
 * SQ_ETOKEN_INVALID (signature does not match this channel and expiry) or SQ_ETOKEN_EXPIRED, with
 * err saying which. The signature is compared in constant time. */
int sq_bridge_token_check(const uint8_t *secret, size_t secret_len, const char *channel,
                          const char *token, uint64_t now_s, sq_error_t *err);

/* ---- the server ---- */
struct uv_loop_s;
typedef struct sq_bridge sq_bridge_t;

/* Starts listening and connecting to Redis on loop. cfg must outlive the bridge. NULL on error
 * (err says why: the port is taken, the demo folder is missing, ...). */
sq_bridge_t *sq_bridge_new(struct uv_loop_s *loop, const sq_bridge_config_t *cfg, sq_error_t *err);
/* Closes every client (1001 going away, given up to a second to leave), then the listener and
 * the Redis connections. Every handle of the bridge is closed once the loop has run out of work
 * (uv_run returns); then call sq_bridge_free (which finishes libwebsockets' destruction, running
 * the loop once more for it). */
void sq_bridge_stop(sq_bridge_t *b);
void sq_bridge_free(sq_bridge_t *b);
/* The port the bridge listens on (cfg->port). */
int sq_bridge_port(const sq_bridge_t *b);

const char *sq_bridge_version(void);

#ifdef __cplusplus
}
#endif
#endif
