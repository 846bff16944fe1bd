/* worker/http: health and metrics over HTTP/1.0 on the loop thread. A connection sends one
 * GET request (at most 4 KiB of headers), gets one response and is closed. Anything else gets
 * 400/404/405; a client that sends nothing is closed when the endpoint closes.
 * Threads: loop thread only. */
#include "worker/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQ_MAX 4096
#define BODY_MAX (1u << 20) /* /metrics of many models; malloc'd per request */

struct sq_http_client {
  uv_tcp_t tcp;
  sq_http_t *h;
  char req[REQ_MAX + 1];
  size_t len;
  int responded;
  uv_write_t wr;
  char *out;
  sq_http_client_t *prev, *next;
};

static void client_closed(uv_handle_t *handle) {
  sq_http_client_t *c = handle->data;
  free(c->out);
  free(c);
}

static void client_close(sq_http_client_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  sq_http_t *h = c->h;
  if (c->prev)
    c->prev->next = c->next;
  else if (h->clients == c)
    h->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  client_close(req->data);
}

static void respond(sq_http_client_t *c, int code, const char *ctype, const char *body) {
  const char *reason = code == 200   ? "OK"
                       : code == 400 ? "Bad Request"
                       : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed"
                       : code == 503 ? "Service Unavailable"
                                     : "Error";
  size_t blen = strlen(body);
  size_t cap = blen + 256;
  c->out = malloc(cap);
  if (!c->out) {
    client_close(c);
    return;
  }
  int n = snprintf(c->out, cap,
                   "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n%s",
                   code, reason, ctype, blen, body);
  c->responded = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_buf_t buf = uv_buf_init(c->out, (unsigned)n);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) client_close(c);
}

static void handle_request(sq_http_client_t *c) {
  char method[8], path[256];
  if (sscanf(c->req, "%7s %255s", method, path) != 2) {
    respond(c, 400, "text/plain", "bad request\n");
    return;
  }
  if (strcmp(method, "GET") != 0) {
    respond(c, 405, "text/plain", "only GET\n");
    return;
  }
  char *q = strchr(path, '?');
  if (q) *q = '\0';
  char *body = malloc(BODY_MAX);
  if (!body) {
    client_close(c);
    return;
  }
  body[0] = '\0';
  const char *ctype = "text/plain";
  int code = c->h->handler(path, body, BODY_MAX, &ctype, c->h->data);
  respond(c, code, ctype, body);
  free(body);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  sq_http_client_t *c = handle->data;
  (void)suggested;
  buf->base = c->req + c->len;
  buf->len = REQ_MAX - c->len;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  sq_http_client_t *c = stream->data;
  (void)buf;
  if (nread < 0) {
    client_close(c);
    return;
  }
  if (c->responded) return;
  c->len += (size_t)nread;
  c->req[c->len] = '\0';
  if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
    handle_request(c);
  } else if (c->len >= REQ_MAX) {
    respond(c, 400, "text/plain", "request too large\n");
  }
}

static void on_connection(uv_stream_t *server, int status) {
  sq_http_t *h = server->data;
  if (status < 0) return;
  sq_http_client_t *c = calloc(1, sizeof(*c));
  if (!c) return;
  c->h = h;
  uv_tcp_init(h->loop, &c->tcp);
  c->tcp.data = c;
  c->next = h->clients;
  if (h->clients) h->clients->prev = c;
  h->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    client_close(c);
}

int sq_http_start(sq_http_t *h, uv_loop_t *loop, const char *host, int port,
                  sq_http_handler_fn handler, void *data) {
  memset(h, 0, sizeof(*h));
  h->loop = loop;
  h->handler = handler;
  h->data = data;
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) return rc;
  uv_tcp_init(loop, &h->server);
  h->server.data = h;
  h->open = 1;
  rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&h->server, 64, on_connection);
  if (rc != 0) sq_http_close(h);
  return rc;
}

void sq_http_close(sq_http_t *h) {
  if (!h->open) return;
  h->open = 0;
  while (h->clients) client_close(h->clients);
  uv_close((uv_handle_t *)&h->server, NULL);
}
