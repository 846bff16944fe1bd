/* worker/http: health and metrics over HTTP on libmicrohttpd (see http.h). MHD does the HTTP:
 * parsing, timeouts, the connection cap, keep-alive, 400 for malformed requests. One thing it does
 * not: a NUL byte in the request line only truncates the URL (0.9.75), so "GET /healthz\0x" would
 * be answered as /healthz. We catch it from where MHD points: in the URI log callback the URI is
 * intact up to the first NUL, and the version string MHD later passes to the handler starts right
 * after the URI's terminating NUL only if the URI had no NUL of its own.
 * Threads: start/stop on the loop thread; callbacks on MHD's internal thread. */
#include "worker/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BODY_MAX (1u << 20) /* /metrics of many models; malloc'd per request */

struct sq_http {
  struct MHD_Daemon *d;
  sq_http_handler_fn handler;
  void *data;
};

/* Per request: where the version string must start if the request line had no NUL byte. */
typedef struct {
  const char *after_uri;
} req_ctx_t;

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  (void)cls;
  (void)c;
  req_ctx_t *r = calloc(1, sizeof(*r));
  if (r) r->after_uri = uri + strlen(uri) + 1;
  return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx,
                         enum MHD_RequestTerminationCode why) {
  (void)cls;
  (void)c;
  (void)why;
  free(*ctx);
  *ctx = NULL;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *ctype,
                               const char *body) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  enum MHD_Result ret = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **ctx) {
  sq_http_t *h = cls;
  req_ctx_t *r = *ctx;
  (void)upload_data;
  if (r && version && version[0] && version != r->after_uri)
    return respond(c, MHD_HTTP_BAD_REQUEST, "text/plain", "bad request: NUL byte in the URL\n");
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
  if (*upload_size) return respond(c, MHD_HTTP_BAD_REQUEST, "text/plain", "no body expected\n");
  char *body = malloc(BODY_MAX);
  if (!body) return MHD_NO; /* MHD closes the connection */
  body[0] = '\0';
  const char *ctype = "text/plain";
  int code = h->handler(url, body, BODY_MAX, &ctype, h->data);
  enum MHD_Result ret = respond(c, (unsigned)code, ctype, body);
  free(body);
  return ret;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[256];
  vsnprintf(msg, sizeof msg, fmt, ap);
  msg[strcspn(msg, "\n")] = '\0';
  /* Refused connections over the cap and bad requests are the clients' problem: debug. */
  sq_log_debug("http", "libmicrohttpd", "detail=\"%s\"", msg);
}

sq_http_t *sq_http_start(const char *host, int port, const sq_http_limits_t *limits,
                         sq_http_handler_fn handler, void *data, sq_error_t *err) {
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int gai = getaddrinfo(host, service, &hints, &ai);
  if (gai != 0 || !ai) {
    sq_error_set(err, SQ_EINVAL, "http-host: cannot resolve \"%s\": %s", host, gai_strerror(gai));
    return NULL;
  }
  sq_http_t *h = calloc(1, sizeof(*h));
  if (!h) {
    freeaddrinfo(ai);
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  h->handler = handler;
  h->data = data;
  /* At the global cap MHD stops accepting, so idle sockets would queue in the backlog ahead of
   * every probe (1,100 of them: minutes). Over the per-address cap it accepts and closes at once:
   * one flooding address cannot fill the global cap, and its backlog drains. */
  unsigned max_conn = limits->max_connections ? limits->max_connections : 64;
  unsigned per_ip = max_conn / 2 ? max_conn / 2 : 1;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES) flags |= MHD_USE_EPOLL;
  h->d = MHD_start_daemon(
      flags, (uint16_t)port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(limits->timeout_s ? limits->timeout_s : 10),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_URI_LOG_CALLBACK, on_uri,
      NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
      NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
  freeaddrinfo(ai);
  if (!h->d) {
    free(h);
    sq_error_set(err, SQ_EIO, "cannot listen on %s:%d (in use, or not an address of this host)",
                 host, port);
    return NULL;
  }
  return h;
}

void sq_http_stop(sq_http_t *h) {
  if (!h) return;
  MHD_stop_daemon(h->d);
  free(h);
}
