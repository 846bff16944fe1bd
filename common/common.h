/* common: error codes (one list for the whole project), logging and clocks.
 * Depends on nothing but libc. Every module may include it; it includes no module.
 * Thread-safety: all functions are safe to call from any thread. */
#ifndef SQ_COMMON_H
#define SQ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The error codes are part of the protocol: the snake_case name is what results, dead-letter
 * entries, logs and metrics carry. Append only; never renumber. */
#define SQ_ERRORS(X)                                                                         \
  X(SQ_OK, 0, "ok", "success")                                                               \
  X(SQ_EINVAL, 1, "invalid_argument", "invalid argument")                                     \
  X(SQ_ENOMEM, 2, "out_of_memory", "out of memory")                                           \
  X(SQ_EINTERNAL, 3, "internal_error", "internal error")                                      \
  X(SQ_EIO, 4, "io_error", "input/output error")                                              \
  X(SQ_EMALFORMED, 10, "malformed_msgpack", "payload is not a valid msgpack document")        \
  X(SQ_EVERSION, 11, "unsupported_version", "unsupported protocol version")                   \
  X(SQ_ETYPE, 12, "wrong_field_type", "a field has the wrong type")                           \
  X(SQ_EMISSING, 13, "missing_field", "a required field is missing")                          \
  X(SQ_EOVERSIZE, 14, "field_too_large", "a field exceeds its size limit")                    \
  X(SQ_EVALUE, 15, "invalid_field_value", "a field has an invalid value")                     \
  X(SQ_EIMAGE_DECODE, 20, "image_decode_failed", "the image could not be decoded")            \
  X(SQ_EIMAGE_EMPTY, 21, "image_empty", "the image has zero width or height")                 \
  X(SQ_EIMAGE_TOO_LARGE, 22, "image_too_large", "the image exceeds the size limit")           \
  X(SQ_EIMAGE_FORMAT, 23, "unsupported_image_format", "unsupported image format")            \
  X(SQ_EMODEL_UNKNOWN, 30, "unknown_model", "no such model on this worker")                   \
  X(SQ_EMODEL, 31, "model_error", "the model failed to run")                                  \
  X(SQ_EMODEL_LOAD, 32, "model_load_failed", "the model could not be loaded")                 \
  X(SQ_EUNSUPPORTED, 33, "unsupported", "unsupported operation or data type")                 \
  X(SQ_EDEADLINE, 40, "deadline_exceeded", "the job's deadline passed before it ran")         \
  X(SQ_EMAX_ATTEMPTS, 41, "max_attempts_exceeded", "the job was retried too many times")      \
  X(SQ_EJOB_NOT_FOUND, 42, "job_not_found", "the job's payload is missing")                   \
  X(SQ_ECANCELED, 43, "canceled", "the job was canceled")                                     \
  X(SQ_EID_MISMATCH, 44, "id_mismatch", "the payload's id differs from the queued id")        \
  X(SQ_ESUSPECTED_POISON, 45, "suspected_poison",                                             \
    "the job's workers died twice while running it")                                         \
  X(SQ_EREDIS, 50, "redis_error", "redis error")                                              \
  X(SQ_ELEASE_LOST, 51, "lease_lost", "the worker lost its lease")                            \
  X(SQ_ETIMEOUT, 52, "timeout", "operation timed out")                                        \
  X(SQ_EAUTH, 53, "redis_auth_failed", "redis refused the credentials")                       \
  X(SQ_ENOPERM, 54, "redis_permission_denied", "the redis user lacks a needed permission")    \
  X(SQ_EREPLICAS, 55, "not_replicated", "the write did not reach enough replicas in time")    \
  X(SQ_EOOM_DEVICE, 60, "device_out_of_memory", "the device ran out of memory")               \
  X(SQ_EDEVICE, 61, "device_error", "device error")                                           \
  X(SQ_ETOKEN_MISSING, 70, "token_missing", "the subscription carries no token")             \
  X(SQ_ETOKEN_MALFORMED, 71, "token_malformed", "the token is not v1.<expiry>.<signature>")  \
  X(SQ_ETOKEN_INVALID, 72, "token_invalid", "the token was not signed for this channel")      \
  X(SQ_ETOKEN_EXPIRED, 73, "token_expired", "the token has expired")                          \
  X(SQ_ECHANNEL, 74, "channel_invalid", "the channel is not job:<id> or group:<group>")      \
  X(SQ_EBAD_REQUEST, 75, "bad_request", "the message is not a valid bridge command")          \
  X(SQ_ETOO_MANY, 76, "too_many_subscriptions", "the connection has too many subscriptions") \
  X(SQ_EALREADY, 77, "already_subscribed", "the connection already follows this channel")    \
  X(SQ_ESLOW, 78, "slow_consumer", "the client did not read its messages in time")           \
  X(SQ_ENO_PONG, 79, "no_pong", "the client did not answer a ping in time")                  \
  X(SQ_EORIGIN, 80, "origin_refused", "the page's Origin is not allowed")                    \
  X(SQ_ENOT_FOUND, 81, "not_found", "no such result (never enqueued, not finished, or expired)")

/* The transient codes: a job that fails with one of them is retried (backoff, then dead-letter
 * after max_attempts); every other code fails the job at once (docs/protocol.md "Error codes").
 * model_error is transient only when the model says so (sq_error_t.retryable). */
#define SQ_TRANSIENT_ERRORS(X) \
  X(SQ_ENOMEM)                 \
  X(SQ_EOOM_DEVICE)            \
  X(SQ_EDEVICE)                \
  X(SQ_ETIMEOUT)               \
  X(SQ_EREDIS)

typedef enum {
#define SQ_X_ENUM(sym, num, name, text) sym = -(num),
  SQ_ERRORS(SQ_X_ENUM)
#undef SQ_X_ENUM
} sq_errcode_t;

typedef struct {
  int code;       /* 0 or a negative SQ_E* code */
  char msg[256];  /* human message, specific to the failure ("image.width: expected uint") */
  int retryable;  /* set by whoever fails: 1 = worth retrying even if the code is not transient */
} sq_error_t;

/* snake_case protocol name of a code ("wrong_field_type"); "unknown_error" if not a code. */
const char *sq_error_name(int code);
/* Generic text of a code. */
const char *sq_error_text(int code);
/* 1 if a job failing with code should be retried (SQ_TRANSIENT_ERRORS), else 0. */
int sq_error_transient(int code);
/* Code from a protocol name, or SQ_EINTERNAL if unknown. */
int sq_error_from_name(const char *name);
/* Sets err (if not NULL) and returns code, so `return sq_error_set(err, SQ_EINVAL, ...)` works. */
int sq_error_set(sq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sq_error_clear(sq_error_t *err);

/* ---- logging: one line per record, logfmt (ts=... level=... comp=... msg="..." k=v) ---- */
typedef enum { SQ_LOG_DEBUG = 0, SQ_LOG_INFO, SQ_LOG_WARN, SQ_LOG_ERROR } sq_log_level_t;

void sq_log_set_level(sq_log_level_t level);
/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int sq_log_level_parse(const char *s);
/* Sets a key=value pair appended to every record (e.g. worker=<id>); NULL clears. */
void sq_log_set_context(const char *kv);
/* fields: preformatted extra "k=v k2=v2" (may be NULL). msg is quoted and escaped. */
void sq_log(sq_log_level_t level, const char *comp, const char *msg, const char *fields_fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define sq_log_debug(comp, msg, ...) sq_log(SQ_LOG_DEBUG, comp, msg, __VA_ARGS__)
#define sq_log_info(comp, msg, ...) sq_log(SQ_LOG_INFO, comp, msg, __VA_ARGS__)
#define sq_log_warn(comp, msg, ...) sq_log(SQ_LOG_WARN, comp, msg, __VA_ARGS__)
#define sq_log_error(comp, msg, ...) sq_log(SQ_LOG_ERROR, comp, msg, __VA_ARGS__)

/* ---- clocks ---- */
uint64_t sq_clock_mono_us(void);  /* monotonic, for durations and timers */
uint64_t sq_clock_wall_ms(void);  /* unix epoch milliseconds, for deadlines and events */

/* ---- shared value types ---- */
/* One object outline: produced by gpu/ (mask -> polygons), encoded by proto/. */
typedef struct {
  float *points;    /* x0,y0,x1,y1,... in original image pixel coordinates; owned */
  uint32_t npoints; /* number of (x,y) pairs */
  float area;       /* pixel count of the component */
  float bbox[4];    /* x, y, w, h */
} sq_polygon_t;

void sq_polygons_free(sq_polygon_t *polys, size_t n);

/* ---- small helpers ---- */
/* malloc that never returns NULL for n>0 without logging; callers still check. */
void *sq_xmalloc(size_t n);
char *sq_strdup(const char *s);
char *sq_strndup(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
