/* queue: segq's Redis session and key layout. From the bottom up: Redis URLs (one parser for
 * every program), the connection core (self-healing hiredis async connections: reconnect with
 * backoff, AUTH, watchdog with per-command budgets, Sentinel discovery and role checks,
 * subscriptions; loop-agnostic behind a struct of hooks, with a small libuv glue), the Lua scripts
 * (queue/scripts/, embedded at build time) and the async operations on them (claim, ack,
 * heartbeat, sweep, wait), the worker's session on top (lease, heartbeat, sweeper, recovery after
 * lost replies), and the batching stage. See docs/protocol.md for keys and scripts. Never
 * includes CUDA or libuv (the libuv glue takes a forward-declared loop).
 * Threads: the connection core, the operations and the session run on the one loop thread that
 * owns them (callbacks too); the URL helpers and the batching stage are plain data and run
 * wherever their owner runs them. */
#ifndef SQ_QUEUE_H
#define SQ_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct redisAsyncContext;
struct redisContext;
struct redisReply;
struct uv_loop_s;

/* ---- Redis URLs ----
 *   redis://[[user][:password]@]host[:port][/db]                      (port 6379)
 *   redis+sentinel://[[user][:password]@]host[:port][,host[:port]...]/master[/db]   (port 26379)
 * user:password is percent-decoded; the user is a Redis ACL user (none: AUTH as `default`). In
 * sentinel URLs the credentials are those of the data nodes; sentinels are asked without AUTH.
 * rediss:// is refused with a message pointing to the stunnel setup (hiredis 0.14 has no TLS). */
enum { SQ_REDIS_MAX_NODES = 16 };

typedef struct {
  char *host;
  int port;
} sq_redis_node_t;

typedef struct {
  int sentinel;                              /* redis+sentinel://: nodes are the sentinels */
  sq_redis_node_t nodes[SQ_REDIS_MAX_NODES]; /* redis://: nodes[0] is the server */
  size_t nnodes;
  char *master;   /* sentinel: the master name */
  char *user;     /* NULL = default user */
  char *password; /* NULL = no AUTH */
  uint32_t db;
} sq_redis_url_t;

/* Fills u (owned strings; free with sq_redis_url_free, also after an error). Errors name the
 * problem and show the URL with its password masked. */
int sq_redis_url_parse(sq_redis_url_t *u, const char *url, sq_error_t *err);
void sq_redis_url_free(sq_redis_url_t *u);
int sq_redis_url_copy(sq_redis_url_t *dst, const sq_redis_url_t *src);
/* Replaces the password (NULL removes it); the string is copied. */
int sq_redis_url_set_password(sq_redis_url_t *u, const char *password, sq_error_t *err);
/* url with its password replaced by "***", for logs and messages. */
void sq_redis_url_mask(const char *url, char *out, size_t cap);
/* Overwrites the password in url in place with '*' (same length: argv memory). 1 if it did. */
int sq_redis_url_scrub(char *url);
/* The parsed URL without the password ("redis://user@host:6379/0"), for logs. */
void sq_redis_url_describe(const sq_redis_url_t *u, char *out, size_t cap);
/* Reads a password file: one line (a trailing newline is dropped), at most 4 KiB. *out is
 * malloc'ed. Errors name the file, never its content. */
int sq_redis_password_file_read(const char *path, char **out, sq_error_t *err);
/* The password the worker and the bridge use, out of the process list: file (read with
 * sq_redis_password_file_read; "" = none) first, else env ("" or NULL = none), else the URL's
 * own. *source (may be NULL): "file", "env", "url" or "none". */
int sq_redis_url_apply_password(sq_redis_url_t *u, const char *file, const char *env,
                                const char **source, sq_error_t *err);

/* ---- the connection core ----
 * Loop hooks, hiredis-adapter style: the core knows connections, not event loops. attach plugs
 * hiredis's event callbacks of a new context into the loop; timers are one-shot or repeating and
 * are closed asynchronously (closed(arg) runs once the loop has let go of them). */
typedef struct sq_redis_timer sq_redis_timer_t;
typedef struct {
  void *data;
  int (*attach)(void *data, struct redisAsyncContext *ac); /* 0 or negative */
  sq_redis_timer_t *(*timer_new)(void *data, void (*fire)(void *arg), void *arg);
  void (*timer_start)(sq_redis_timer_t *t, uint64_t after_ms, uint64_t repeat_ms);
  void (*timer_stop)(sq_redis_timer_t *t);
  void (*timer_close)(sq_redis_timer_t *t, void (*closed)(void *arg), void *arg);
} sq_redis_loop_t;

/* The libuv glue (queue/redis_uv.c): fills hooks for loop (borrowed; it must outlive every
 * endpoint and session using the hooks). */
void sq_redis_loop_uv(sq_redis_loop_t *hooks, struct uv_loop_s *loop);

/* An endpoint: one URL (a server, or a Sentinel-managed primary) shared by its connections. In
 * Sentinel mode it asks the sentinels for the primary (SENTINEL get-master-addr-by-name), checks
 * the role of what it connects to, rediscovers on READONLY, a role mismatch or a failed connect,
 * and follows +switch-master on a subscribed sentinel. */
typedef struct sq_redis sq_redis_t;
typedef struct sq_redis_conn sq_redis_conn_t;

typedef struct {
  uint64_t backoff_max_ms; /* reconnect backoff: 100 ms doubling up to this (0 = 5000) */
  const char *log_name;    /* prefix of connection names in logs (NULL = none) */
} sq_redis_options_t;

/* Copies url and opt. NULL on allocation failure (err says so). */
sq_redis_t *sq_redis_new(const sq_redis_url_t *url, const sq_redis_loop_t *loop,
                         const sq_redis_options_t *opt, sq_error_t *err);
/* Closes every connection of r (pending reply callbacks run with reply NULL, subscriptions end
 * with SQ_REDIS_SUB_LOST) and frees r once the loop has released everything; then closed(arg). */
void sq_redis_close(sq_redis_t *r, void (*closed)(void *arg), void *arg);
/* 1 once any connection of r has authenticated (credentials are known good). */
int sq_redis_authenticated(const sq_redis_t *r);

typedef struct {
  /* Connected, authenticated, database selected, role checked (the primary): commands may go. */
  void (*ready)(sq_redis_conn_t *c, void *data);
  /* Lost (or dropped); every pending reply callback has already run with reply NULL. */
  void (*down)(sq_redis_conn_t *c, void *data);
  /* Redis refused the credentials (or the database) before any connection of the endpoint had
   * ever authenticated: a configuration error. The connection stops retrying. code is
   * SQ_EAUTH; msg names the cause, never the password. Later refusals (after a good start) are
   * logged and retried with backoff instead. */
  void (*fatal)(sq_redis_conn_t *c, int code, const char *msg, void *data);
} sq_redis_conn_events_t;

enum {
  SQ_REDIS_CONN_SUBSCRIBER = 1, /* subscriptions only (hiredis's subscribed mode): no commands */
};

/* A connection of r that starts connecting now and reconnects by itself until closed.
 * reply_budget_ms: how long a reply may take by default (the watchdog drops the connection past
 * it; a command can ask for more). name is copied ("command", "blocking", ...). */
sq_redis_conn_t *sq_redis_conn_new(sq_redis_t *r, const char *name, uint64_t reply_budget_ms,
                                   int flags, const sq_redis_conn_events_t *ev, void *data);
int sq_redis_conn_ready(const sq_redis_conn_t *c);
const char *sq_redis_conn_name(const sq_redis_conn_t *c);
/* Drops the connection now (a protocol error); it reconnects after the backoff. */
void sq_redis_conn_drop(sq_redis_conn_t *c, const char *why);
/* Closes one connection (as sq_redis_close does for all). */
void sq_redis_conn_close(sq_redis_conn_t *c);
/* Failed connect/handshake attempts since c was last ready (for logs, metrics and tests). */
uint32_t sq_redis_conn_attempts(const sq_redis_conn_t *c);
/* Monotonic time (sq_clock_mono_us) of the last reply on c, or of its last connect. */
uint64_t sq_redis_conn_last_reply_us(const sq_redis_conn_t *c);

/* reply: borrowed for the callback; NULL when the connection went away before the reply (or
 * the watchdog dropped it). A READONLY error (a demoted primary) reaches the callback as the
 * error it is, and the connection then rediscovers and reconnects. */
typedef void (*sq_redis_reply_cb)(sq_redis_conn_t *c, struct redisReply *reply, void *data);
/* Sends a command on a ready connection. budget_ms: how long its reply may take once Redis can
 * start on it (replies come in order: the clock starts at the later of the send, the reply
 * before it and the last byte received: a large reply still arriving is not late); 0 = the
 * connection's default. Returns 0 (cb will run exactly once) or a negative
 * code (not ready, not sendable; cb never runs). Arguments are copied. */
int sq_redis_command_argv(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb, void *data,
                          int argc, const char **argv, const size_t *lens);
int sq_redis_command(sq_redis_conn_t *c, uint64_t budget_ms, sq_redis_reply_cb cb, void *data,
                     const char *fmt, ...);
/* A budget for a command that moves `bytes` of payload through Redis (a claim): a base plus a
 * transfer allowance generous enough for a loaded server. */
uint64_t sq_redis_budget_ms_for_bytes(uint64_t bytes);

/* Subscriptions (SQ_REDIS_CONN_SUBSCRIBER connections): kept across reconnects and re-sent on
 * every connect. cb gets SUBSCRIBED when Redis confirms (after each connect: read any history
 * from then on), MESSAGE per message (channel = the message's channel; for a pattern
 * subscription, the channel it matched), and LOST when the connection goes (messages may be
 * missed until the next SUBSCRIBED). Strings are borrowed for the callback. */
typedef enum {
  SQ_REDIS_SUB_SUBSCRIBED = 0,
  SQ_REDIS_SUB_MESSAGE,
  SQ_REDIS_SUB_LOST,
} sq_redis_sub_event_t;
typedef void (*sq_redis_sub_cb)(sq_redis_conn_t *c, sq_redis_sub_event_t ev, const char *channel,
                                size_t channel_len, const char *msg, size_t msg_len, void *data);
/* One channel (or glob pattern when pattern != 0) per call; subscribing twice is SQ_EINVAL. */
int sq_redis_subscribe(sq_redis_conn_t *c, const char *channel, int pattern, sq_redis_sub_cb cb,
                       void *data);
/* Ends a subscription; cb is not called again. */
int sq_redis_unsubscribe(sq_redis_conn_t *c, const char *channel, int pattern);

/* Defaults and script return codes, from queue/scripts/schema.def (their one source; the Lua
 * scripts and the Python client read the same file). */
enum {
#define SQ_SCHEMA_KEY(sym, part)
#define SQ_SCHEMA_TEXT(sym, value)
#define SQ_SCHEMA_DEFAULT(sym, value) SQ_DEFAULT_##sym = (value),
#define SQ_SCHEMA_CODE(sym, value) SQ_CODE_##sym = (value),
#include "queue/scripts/schema.def"
#undef SQ_SCHEMA_KEY
#undef SQ_SCHEMA_TEXT
#undef SQ_SCHEMA_DEFAULT
#undef SQ_SCHEMA_CODE
};

/* The text defaults of schema.def as constants (sq_queue_text_PREFIX, sq_queue_text_REDIS_URL,
 * ...; defined in queue/keys.c), for the option tables of the worker and the bridge. */
#define SQ_SCHEMA_KEY(sym, part)
#define SQ_SCHEMA_TEXT(sym, value) extern const char sq_queue_text_##sym[];
#define SQ_SCHEMA_DEFAULT(sym, value)
#define SQ_SCHEMA_CODE(sym, value)
#include "queue/scripts/schema.def"
#undef SQ_SCHEMA_KEY
#undef SQ_SCHEMA_TEXT
#undef SQ_SCHEMA_DEFAULT
#undef SQ_SCHEMA_CODE

typedef struct {
  const char *prefix;        /* key prefix, "segq" by default */
  const char *worker_id;     /* this worker's id (id alphabet) */
  const char *const *models; /* the models this worker serves */
  size_t nmodels;
  uint32_t lease_ttl_ms; /* lease TTL; heartbeat every ttl/3 */
  uint32_t max_attempts; /* executions before a job is failed for good (and dead-lettered) */
  uint32_t result_ttl_s; /* TTL of finished records and group keys */
  uint32_t dead_ttl_s;   /* TTL of dead-letter records */
} sq_queue_config_t;

typedef struct sq_queue sq_queue_t;

/* Copies cfg. Generates a random fencing token. Returns NULL on allocation failure. */
sq_queue_t *sq_queue_new(const sq_queue_config_t *cfg);
void sq_queue_free(sq_queue_t *q);
const char *sq_queue_token(const sq_queue_t *q);
/* Replaces the fencing token with a fresh one (after the lease was lost). */
void sq_queue_new_token(sq_queue_t *q);

/* A claimed job; owned by whoever receives it. */
typedef struct {
  char *model;
  char *id;
  uint8_t *payload;
  size_t payload_len;
  uint32_t attempt;     /* 1 on first execution */
  uint64_t enqueued_ms; /* for queue-wait timing */
  /* A fast run (docs/protocol.md "Fast runs"): the job's last event offset and its epoch, from
   * which the ack builds the record. epoch NULL: an ordinary run. */
  uint64_t off;
  char *epoch;
} sq_claimed_t;

void sq_claimed_free(sq_claimed_t *c); /* frees the members, not c */

/* ---- script operations (on a connection of the connection core) ----
 * Claim and ack are fenced on the lease that sq_queue_heartbeat creates: heartbeat first (and
 * every lease_ttl_ms/3), or they fail with SQ_ELEASE_LOST.
 * status: 0, or a negative code (SQ_EREDIS: connection gone / error reply; SQ_ELEASE_LOST).
 * Every async function below returns 0 when the command was sent (its callback will be called
 * exactly once, with status SQ_EREDIS if the connection goes away), or a negative code when it
 * could not be sent (the callback is then never called). */
typedef void (*sq_queue_claim_cb)(sq_queue_t *q, int status, sq_claimed_t *jobs, size_t n,
                                  void *data);
/* Claims up to n jobs, and at most max_bytes of job documents (the first job is taken whatever
 * its size; 0 = SQ_DEFAULT_MAX_CLAIM_BYTES): one round trip for the claim script (ids and what it
 * read), one for an MGET of the claimed jobs' documents (docs/protocol.md "Fetched claims": no
 * script moves a document; a fetched job's epoch and enqueue time come with it). A job found
 * gone (no document: it finished while queued, e.g. canceled, or its keys were lost) is not
 * delivered: one ack with how "!" records it and takes it out of the in-flight list. Jobs come
 * in claim order. The MGET's reply carries the documents: at most about max_bytes + n * 64
 * bytes. Size budget_ms (how long each reply may take; 0 = the connection's default) from it
 * with sq_redis_budget_ms_for_bytes. A failed or late MGET fails the whole claim (SQ_EREDIS).
 * The callback receives ownership of the jobs array and every job in it (free each with
 * sq_claimed_free, then free(jobs)). */
int sq_queue_claim(sq_queue_t *q, sq_redis_conn_t *c, uint32_t n, uint64_t max_bytes,
                   uint64_t budget_ms, sq_queue_claim_cb cb, void *data);

typedef struct {
  const char *id;
  const uint8_t *result; /* encoded result document */
  size_t result_len;
  int error_code;    /* 0 = done, else the job failed with this code */
  uint32_t retry_ms; /* > 0: error_code is transient; retry after this delay if attempts remain */
  /* As the claim returned them (sq_claimed_t): a done fast run's record is built here, so the
   * script stores it without reading the job. epoch NULL: the script builds the record. */
  const char *epoch;
  uint64_t off;
  uint32_t attempt;
} sq_ack_item_t;

/* per_job[i]: SQ_CODE_ACK_* (1 finished, 2 duplicate, 0 not ours (swept), 3 canceled, 4 retrying,
 * 5 failed after its last attempt). Borrowed. */
typedef void (*sq_queue_ack_cb)(sq_queue_t *q, int status, const int *per_job, size_t n,
                                void *data);
/* Acks a batch in one script call. Copies what it needs from items before returning. */
int sq_queue_ack(sq_queue_t *q, sq_redis_conn_t *c, const sq_ack_item_t *items, size_t n,
                 sq_queue_ack_cb cb, void *data);

/* The retry delay of a transient failure at `attempt` (1 = the first run): base * 2^(attempt-1)
 * capped at max_ms, times a uniform factor in [0.5, 1.5) from `random` (any 32 random bits). */
uint32_t sq_queue_retry_delay_ms(uint32_t attempt, uint32_t base_ms, uint32_t max_ms,
                                 uint32_t random);

typedef struct {
  const char *id;
  uint32_t steps_done, steps_total;
} sq_progress_item_t;

/* value = jobs updated. Reports progress inside running jobs (fenced; SQ_ELEASE_LOST). */
typedef void (*sq_queue_status_cb)(sq_queue_t *q, int status, long long value, void *data);
int sq_queue_progress(sq_queue_t *q, sq_redis_conn_t *c, const sq_progress_item_t *items, size_t n,
                      sq_queue_status_cb cb, void *data);
/* Hands jobs of our in-flight list back unrun (attempt refunded, `requeued` event); ids == NULL
 * hands back every job of the list. value = jobs released. Fenced (SQ_ELEASE_LOST). */
int sq_queue_release(sq_queue_t *q, sq_redis_conn_t *c, const char *const *ids, size_t n,
                     sq_queue_status_cb cb, void *data);

/* status 0 and lease_state: 1 renewed, 2 re-acquired after expiry (we may have been swept). */
int sq_queue_heartbeat(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_status_cb cb, void *data);
/* Runs the sweeper if the sweeper lock is free; value = jobs requeued + dead-lettered. */
int sq_queue_sweep(sq_queue_t *q, sq_redis_conn_t *c, uint32_t interval_ms, sq_queue_status_cb cb,
                   void *data);
/* Blocks (on its own connection!) up to timeout_s for a wake-up token of any served model.
 * value = 1 woken, 0 timed out. */
int sq_queue_wait(sq_queue_t *q, sq_redis_conn_t *blocking, double timeout_s, sq_queue_status_cb cb,
                  void *data);
/* Removes this worker's lease (clean shutdown, after its in-flight list is empty). */
int sq_queue_unregister(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_status_cb cb, void *data);
/* What waits in Redis for the served models (depth.lua), for metrics and autoscaling: per model
 * (in sq_queue_config_t order) the jobs in all its tenants' queues and the retries waiting in its
 * delayed set; and the dead-letter count. Borrowed for the callback; NULL when status != 0. */
typedef struct {
  size_t nmodels;
  uint64_t *queued, *delayed;
  uint64_t dead;
} sq_queue_depth_t;
typedef void (*sq_queue_depth_cb)(sq_queue_t *q, int status, const sq_queue_depth_t *depth,
                                  void *data);
int sq_queue_depth(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_depth_cb cb, void *data);
/* Reconciliation: hands back (release, "!" mode) every id of this worker's in-flight list that
 * is not in held (the ids it holds): a claim whose reply was lost, an ack Redis lost. value = ids
 * handed back. Fenced (SQ_ELEASE_LOST). */
int sq_queue_reconcile(sq_queue_t *q, sq_redis_conn_t *c, const char *const *held, size_t n,
                       sq_queue_status_cb cb, void *data);
/* Runs the permcheck script (probes every command, key kind and channel segq's scripts use, plus
 * the role's own commands: role "worker" or "client"). missing: "" when all is allowed, else one
 * sentence naming what is refused; NULL when status != 0. Borrowed. */
typedef void (*sq_queue_permcheck_cb)(sq_queue_t *q, int status, const char *missing, void *data);
int sq_queue_permcheck(sq_queue_t *q, sq_redis_conn_t *c, const char *role,
                       sq_queue_permcheck_cb cb, void *data);

/* ---- the worker's session ----
 * One object for everything a worker keeps in Redis: an endpoint with three connections
 * (command: scripts; blocking: BRPOP on the wake-up keys; lease: the heartbeat, so it never waits
 * behind a BRPOP or a claim moving large payloads), the
 * permission check at start, the lease (heartbeat every lease_ttl/3), the sweeper (every
 * lease_ttl/2), the set of ids the worker holds (claimed, not yet acked or given up), and the
 * reconciliation of its in-flight list with that set after every (re)connect and failed claim
 * (ids it does not hold are handed back: a lost claim reply, an ack Redis lost).
 * The worker keeps its own story (claim policy, acks, drain) and asks the session whether a claim,
 * an ack or a wait may go now. */
typedef struct sq_session sq_session_t;

typedef struct {
  const char *prefix;        /* key prefix ("segq") */
  const char *worker_id;     /* this worker's id */
  const char *const *models; /* the models it serves */
  size_t nmodels;
  uint32_t lease_ttl_ms;
  uint32_t max_attempts;
  uint32_t result_ttl_s;
  uint32_t dead_ttl_s;
  uint32_t wait_timeout_s; /* BRPOP timeout on the wake-up keys */
  /* After each ack, WAIT for this many replicas (0 = no WAIT) for up to the timeout; an ack
   * that does not reach them fails with SQ_EREPLICAS (its ids stay held: resend it). */
  uint32_t wait_replicas, wait_replicas_timeout_ms;
} sq_session_config_t;

typedef struct {
  /* Claims, acks or waits that could not go may go now (connection back, lease confirmed,
   * recovery over). */
  void (*resume)(sq_session_t *s, void *data);
  /* A configuration error found at start (credentials refused): the worker should stop. */
  void (*fatal)(sq_session_t *s, int code, const char *msg, void *data);
} sq_session_events_t;

typedef void (*sq_session_claim_cb)(sq_session_t *s, int status, sq_claimed_t *jobs, size_t n,
                                    void *data);
typedef void (*sq_session_ack_cb)(sq_session_t *s, int status, const int *per_job, size_t n,
                                  void *data);
typedef void (*sq_session_status_cb)(sq_session_t *s, int status, long long value, void *data);

/* Starts connecting now. url and cfg are copied. NULL on failure (err says why). */
sq_session_t *sq_session_new(const sq_redis_url_t *url, const sq_redis_loop_t *loop,
                             const sq_session_config_t *cfg, const sq_session_events_t *ev,
                             void *data, sq_error_t *err);
/* Closes the connections (pending callbacks run with SQ_EREDIS) and timers; closed(arg) runs
 * once the loop has released everything. */
void sq_session_close(sq_session_t *s, void (*closed)(void *arg), void *arg);

/* Whether a claim / an ack / a wait would be sent now. */
int sq_session_can_claim(const sq_session_t *s);
int sq_session_can_ack(const sq_session_t *s);
int sq_session_can_wait(const sq_session_t *s);
/* As sq_queue_claim / sq_queue_ack / sq_queue_wait, on the session's connections, fenced on its
 * lease; a claim's reply budget (the watchdog) is sized from max_bytes (0 = the default
 * SQ_DEFAULT_MAX_CLAIM_BYTES). Claimed ids join the held set; acked ids (written, duplicate or not
 * ours) leave it. Returns 0 (cb runs exactly once) or a negative code (cb never runs). */
int sq_session_claim(sq_session_t *s, uint32_t n, uint64_t max_bytes, sq_session_claim_cb cb,
                     void *data);
int sq_session_ack(sq_session_t *s, const sq_ack_item_t *items, size_t n, sq_session_ack_cb cb,
                   void *data);
int sq_session_wait(sq_session_t *s, sq_session_status_cb cb, void *data);
/* A wait of timeout_ms instead of wait_timeout_s (0 = wait_timeout_s). */
int sq_session_wait_ms(sq_session_t *s, uint32_t timeout_ms, sq_session_status_cb cb, void *data);
/* As sq_queue_progress, on the command connection (sent when an ack could be). */
int sq_session_progress(sq_session_t *s, const sq_progress_item_t *items, size_t n,
                        sq_session_status_cb cb, void *data);
/* As sq_queue_release (a device failed under these jobs: back to their queues, no attempt
 * charged), on the session's command connection, fenced on its lease; the ids leave the held
 * set once the script answered. value = jobs released. Returns 0 (cb runs exactly once) or a
 * negative code. */
int sq_session_release(sq_session_t *s, const char *const *ids, size_t n, sq_session_status_cb cb,
                       void *data);
/* The worker gives up a claimed job without acking it (it could not keep it): the id leaves the
 * held set, so the session hands it back to its queue. */
void sq_session_forget(sq_session_t *s, const char *id);
/* sq_queue_depth on the session's command connection (for metrics). Returns 0 (cb runs exactly
 * once) or a negative code (not connected: cb never runs). */
typedef void (*sq_session_depth_cb)(sq_session_t *s, int status, const sq_queue_depth_t *depth,
                                    void *data);
int sq_session_depth(sq_session_t *s, sq_session_depth_cb cb, void *data);
/* Removes the lease (clean shutdown, once nothing is held). Returns 0 sent, 1 nothing to remove
 * (never registered, or already given up: cb is not called), or a negative code. */
int sq_session_unregister(sq_session_t *s, sq_session_status_cb cb, void *data);

typedef struct {
  int command_ready, blocking_ready, lease_ready; /* the three connections: up and logged in */
  int lease_ok;             /* the last heartbeat holds the lease with our token */
  int lease_ever;           /* registered at least once */
  int recovering;           /* reconciling the in-flight list: not claiming yet */
  uint64_t last_reply_us;   /* last reply (or byte) on the lease connection (monotonic) */
  uint64_t lease_until_us;  /* our lease surely expired after this (monotonic; 0 = never had) */
  uint64_t reply_budget_ms; /* the command connection's reply budget (the watchdog) */
  uint64_t lease_ttl_ms;
  size_t held; /* ids claimed and not yet acked or forgotten */
  /* times each connection became ready (for metrics: reconnects = connects - 1) */
  uint64_t command_connects, blocking_connects, lease_connects;
  uint64_t swept_jobs; /* jobs of dead workers this worker's sweeper requeued or dead-lettered */
} sq_session_health_t;
void sq_session_health(const sq_session_t *s, sq_session_health_t *out);

/* Synchronous enqueue of one job through the enqueue script (tools, tests, benchmarks).
 * Returns SQ_CODE_ENQUEUE_*: 1 queued, 0 already pending, 2 already finished, 3 rejected at once
 * with an `unknown_model` record (workers are registered and none serves model), 4 rejected
 * (its group was canceled), or a negative code. Uses the default result TTL for rejected jobs. */
int sq_queue_enqueue_sync(struct redisContext *c, const char *prefix, const char *id,
                          const char *model, const char *tenant, const char *group,
                          int64_t priority, const uint8_t *payload, size_t len, sq_error_t *err);

/* The embedded script sources, by name ("enqueue", "claim", "ack", "heartbeat", "sweep",
 * "unregister", "progress", "release", "cancel", "recover", "dead", "permcheck", "depth"); NULL
 * if no such script. Static storage, never freed. */
const char *sq_queue_script_source(const char *name);

/* ---- readers of events (segq-bridge) ----
 * The read side of the recovery algorithm (docs/protocol.md "Reading without gaps") as one call
 * of the recover script, and the names a reader needs, so no key name is spelled outside queue/. */
typedef struct {
  const char *status;   /* "unknown", "recovered", "more" or "resync" */
  const char *snapshot; /* the snapshot, a packed msgpack map; NULL for "unknown" */
  size_t snapshot_len;
  const char *const *events; /* the events after since_off, packed msgpack maps, in order */
  const size_t *event_lens;
  size_t nevents;
} sq_recover_t;

/* status 0 and rec (borrowed for the call), or a negative code and rec NULL. */
typedef void (*sq_queue_recover_cb)(int status, const sq_recover_t *rec, void *data);
/* recover(kind "job" | "group", id, since_off, since_epoch, limit (0 = the default), watch) on a
 * command connection. Returns 0 when sent (cb runs exactly once) or a negative code (never). */
int sq_queue_recover(sq_redis_conn_t *c, const char *prefix, const char *kind, const char *id,
                     uint64_t since_off, const char *since_epoch, uint32_t limit, int watch,
                     uint64_t budget_ms, sq_queue_recover_cb cb, void *data);

typedef enum {
  SQ_QUEUE_JOB_CHANNEL = 0, /* PUBLISHed job events */
  SQ_QUEUE_GROUP_CHANNEL,   /* PUBLISHed group events */
  SQ_QUEUE_GROUP_HISTORY,   /* a group's stored events (stream, entry id <off>-0) */
  SQ_QUEUE_JOB_RECORD,      /* a job: a hash while live, the finished record (event + result) */
} sq_queue_name_t;

/* Writes the key or channel `which` of job/group id under prefix into out. Returns 0, or
 * SQ_EINVAL (unknown name, out too small). */
int sq_queue_key_name(char *out, size_t len, const char *prefix, sq_queue_name_t which,
                      const char *id);

/* ---- batching stage: pure logic, no I/O, clock passed in (so tests use a fake clock) ---- */
typedef struct sq_batcher sq_batcher_t;

/* NULL if max_batch is 0 or on allocation failure. The batcher holds item pointers, not items. */
sq_batcher_t *sq_batcher_new(uint32_t max_batch, uint64_t max_delay_us);
void sq_batcher_free(sq_batcher_t *b); /* does not free items */
/* Adds an item that arrived at now_us. */
int sq_batcher_push(sq_batcher_t *b, void *item, uint64_t now_us);
/* If a batch is due (max_batch items waiting, or the oldest waited >= max_delay_us, or force),
 * moves up to max_batch items (oldest first) into out and returns how many; else 0. */
size_t sq_batcher_pop(sq_batcher_t *b, uint64_t now_us, int force, void **out);
/* Absolute time the oldest item becomes due, or UINT64_MAX when empty (when max_batch items
 * already wait: the oldest item's arrival time, i.e. due now). */
uint64_t sq_batcher_due_us(const sq_batcher_t *b);
size_t sq_batcher_len(const sq_batcher_t *b);
uint32_t sq_batcher_max_batch(const sq_batcher_t *b);

/* Flow control: how many jobs a worker may claim now so that it only holds work it can start
 * soon. capacity = max_inflight_batches * max_batch; held = waiting in batchers + running. */
uint32_t sq_flow_claim_budget(uint32_t max_inflight_batches, uint32_t max_batch, uint32_t held);

#ifdef __cplusplus
}
#endif
#endif
