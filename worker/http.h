/* worker/http: the health and metrics endpoint, on libmicrohttpd with its own thread: GET and
 * HEAD only, a connection cap, a timeout for idle and incomplete connections, 400 for a request
 * line with a NUL byte. The handler runs on MHD's thread: it may only read what the loop thread
 * handed over (the worker's snapshot, under its mutex), never loop-owned state.
 * Threads: sq_http_start/sq_http_stop on the loop thread; the handler on MHD's thread. */
#ifndef SQ_WORKER_HTTP_H
#define SQ_WORKER_HTTP_H

#include <stddef.h>

#include "common/common.h"

/* Fills body (at most cap bytes, NUL-terminated) for path and returns the HTTP status;
 * *content_type is a static string. Called on MHD's thread. */
typedef int (*sq_http_handler_fn)(const char *path, char *body, size_t cap,
                                  const char **content_type, void *data);

typedef struct sq_http sq_http_t;

typedef struct {
  unsigned max_connections; /* concurrent connections; more are accepted and closed at once */
  unsigned timeout_s;       /* a connection idle (or a request incomplete) this long is closed */
} sq_http_limits_t;

/* Listens on host:port (IPv4 or IPv6 literal, or a name). NULL on failure (err says why). */
sq_http_t *sq_http_start(const char *host, int port, const sq_http_limits_t *limits,
                         sq_http_handler_fn handler, void *data, sq_error_t *err);
/* Stops listening, closes every connection and joins MHD's thread. NULL is a no-op. */
void sq_http_stop(sq_http_t *h);

#endif
