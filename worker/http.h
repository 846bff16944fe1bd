/* worker/http: a tiny HTTP/1.0 endpoint on the loop for health checks and metrics (GET only,
 * one request per connection, small responses). Not a general HTTP server.
 * Threads: loop thread only. */
#ifndef SQ_WORKER_HTTP_H
#define SQ_WORKER_HTTP_H

#include <stddef.h>
#include <uv.h>

/* Fills body (at most cap bytes, NUL-terminated) for path and returns the HTTP status;
 * *content_type is a static string. */
typedef int (*sq_http_handler_fn)(const char *path, char *body, size_t cap,
                                  const char **content_type, void *data);

typedef struct sq_http_client sq_http_client_t;

typedef struct {
  uv_loop_t *loop;
  uv_tcp_t server;
  int open;
  sq_http_handler_fn handler;
  void *data;
  sq_http_client_t *clients; /* open connections, closed at sq_http_close */
} sq_http_t;

/* Listens on host:port. Returns 0 or a libuv error code (negative). */
int sq_http_start(sq_http_t *h, uv_loop_t *loop, const char *host, int port,
                  sq_http_handler_fn handler, void *data);
/* Closes the listener and every open connection (their memory is freed in close callbacks). */
void sq_http_close(sq_http_t *h);

#endif
