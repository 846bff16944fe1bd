/* bridge/http: the bridge's HTTP API on libwebsockets (docs/bridge.md "HTTP"):
 *   GET /v1/result/<id>?token=T  a job's result document as JSON (T signed for job:<id>)
 *   GET /healthz                 200 when Redis is reachable, else 503; counts as JSON
 *   GET /metrics                 Prometheus text
 *   POST /demo/upload            --demo only (demo.c)
 * Responses are written headers first, body in the next writeable callback, as lws asks.
 * Threads: loop thread only. */
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/server_internal.h"

#define METRICS_MAX 16384

static void req_link(sq_bridge_t *b, http_req_t *req) {
  req->next = b->http_reqs;
  if (b->http_reqs) b->http_reqs->prev = req;
  b->http_reqs = req;
}

static void req_unlink(sq_bridge_t *b, http_req_t *req) {
  if (req->prev)
    req->prev->next = req->next;
  else if (b->http_reqs == req)
    b->http_reqs = req->next;
  if (req->next) req->next->prev = req->prev;
  req->prev = req->next = NULL;
}

static void req_free(http_req_t *req) {
  free(req->body);
  free(req);
}

void sq_bridge_http_respond(http_req_t *req, int status, const char *content_type, const char *body,
                            size_t len) {
  if (!req->wsi || req->status) return;
  unsigned char *buf = malloc(LWS_PRE + len + 1);
  if (!buf) {
    status = 500;
    len = 0;
    buf = malloc(LWS_PRE + 1);
    if (!buf) return;
  } else {
    memcpy(buf + LWS_PRE, body, len);
  }
  req->status = status;
  snprintf(req->content_type, sizeof req->content_type, "%s", content_type);
  req->body = buf;
  req->body_len = len;
  lws_callback_on_writable(req->wsi);
}

void sq_bridge_http_error(http_req_t *req, int status, int code, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", sq_error_name(code), "message", msg);
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  sq_bridge_http_respond(req, status, "application/json", text ? text : "{}",
                         text ? strlen(text) : 2);
  free(text);
}

static void on_result(int status, const char *json, size_t len, void *data) {
  http_req_t *req = data;
  req->result_req = NULL;
  if (status == 0)
    sq_bridge_http_respond(req, 200, "application/json", json, len);
  else if (status == SQ_ENOT_FOUND)
    sq_bridge_http_error(req, 404, SQ_ENOT_FOUND,
                         "no result for this job (not finished, never enqueued, or expired)");
  else if (status == SQ_EMALFORMED)
    sq_bridge_http_error(req, 502, SQ_EMALFORMED, "the stored result is not a msgpack document");
  else
    sq_bridge_http_error(req, 503, SQ_EREDIS, "Redis is not reachable; retry");
}

static void route_result(sq_bridge_t *b, http_req_t *req, struct lws *wsi, const char *id) {
  char channel[SQ_CHANNEL_MAX];
  snprintf(channel, sizeof channel, "job:%.140s", id);
  if (sq_bridge_channel_parse(channel, NULL, NULL) != 0) {
    sq_bridge_http_error(req, 400, SQ_ECHANNEL, "not a job id: [A-Za-z0-9._:-], at most 128");
    return;
  }
  char argbuf[SQ_BRIDGE_TOKEN_MAX + 16];
  const char *token = lws_get_urlarg_by_name(wsi, "token=", argbuf, (int)sizeof argbuf);
  sq_error_t err;
  if (sq_bridge_token_check(b->secret, b->secret_len, channel, token, sq_clock_wall_ms() / 1000,
                            &err) != 0) {
    b->stats.refused[sq_bridge_refusal_index(err.code)]++;
    sq_bridge_http_error(req, err.code == SQ_ETOKEN_MISSING ? 401 : 403, err.code, "%s", err.msg);
    return;
  }
  req->result_req = b->src ? sq_source_result(b->src, id, on_result, req) : NULL;
  if (!req->result_req) sq_bridge_http_error(req, 503, SQ_EREDIS, "Redis is not reachable; retry");
}

/* Access-Control-Allow-Origin for pages of an allowed origin (the token is the access control;
 * this only lets their fetch() read the answer). */
static void cors(sq_bridge_t *b, http_req_t *req, struct lws *wsi) {
  char origin[256] = "", host[256] = "";
  int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
  if (n <= 0) return;
  if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) < 0) host[0] = '\0';
  if (sq_bridge_origin_allowed(b->cfg->allowed_origins, origin, host))
    snprintf(req->allow_origin, sizeof req->allow_origin, "%s", origin);
}

static int on_http(sq_bridge_t *b, http_req_t *req, struct lws *wsi) {
  char *uri = NULL;
  int ulen = 0;
  int method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
  char path[512];
  snprintf(path, sizeof path, "%.*s", ulen > 0 ? ulen : 0, uri ? uri : "");
  char *q = strchr(path, '?');
  if (q) *q = '\0';
  b->stats.http_requests++;
  req_link(b, req);
  cors(b, req, wsi);
  if (method == LWSHUMETH_GET && strncmp(path, "/v1/result/", 11) == 0) {
    route_result(b, req, wsi, path + 11);
  } else if (method == LWSHUMETH_GET && strcmp(path, "/healthz") == 0) {
    int ok = 0;
    char *text = sq_bridge_health_json(b, &ok);
    sq_bridge_http_respond(req, ok ? 200 : 503, "application/json", text ? text : "{}",
                           text ? strlen(text) : 2);
    free(text);
  } else if (method == LWSHUMETH_GET && strcmp(path, "/metrics") == 0) {
    char *buf = malloc(METRICS_MAX);
    size_t n = 0;
    if (buf) sq_bridge_metrics_text(b, buf, METRICS_MAX, &n);
    sq_bridge_http_respond(req, 200, "text/plain; version=0.0.4", buf ? buf : "", n);
    free(buf);
  } else if (strcmp(path, "/demo/upload") == 0 && b->cfg->demo) {
    if (method != LWSHUMETH_POST) {
      sq_bridge_http_error(req, 405, SQ_EBAD_REQUEST, "POST a multipart form of images here");
    } else {
      return sq_bridge_demo_begin(b, req, wsi); /* the body follows */
    }
  } else {
    sq_bridge_http_error(req, 404, SQ_ENOT_FOUND, "no such path: %.200s", path);
  }
  return 0;
}

static int on_writeable(http_req_t *req, struct lws *wsi) {
  if (!req->status || req->done) return 0;
  if (!req->headers_sent) {
    unsigned char hbuf[LWS_PRE + 1024], *start = hbuf + LWS_PRE, *p = start,
                                        *end = hbuf + sizeof hbuf - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)req->status, req->content_type, req->body_len,
                                    &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end))
      return -1;
    if (req->allow_origin[0] &&
        (lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                     (const unsigned char *)req->allow_origin,
                                     (int)strlen(req->allow_origin), &p, end) ||
         lws_add_http_header_by_name(
             wsi, (const unsigned char *)"vary:", (const unsigned char *)"Origin", 6, &p, end)))
      return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
    req->headers_sent = 1;
    lws_callback_on_writable(wsi);
    return 0;
  }
  if (lws_write(wsi, req->body + LWS_PRE, req->body_len, LWS_WRITE_HTTP_FINAL) !=
      (int)req->body_len)
    return -1;
  req->done = 1;
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The connection (or the transaction's user space) is going away. */
static void detach(sq_bridge_t *b, http_req_t *req) {
  req_unlink(b, req);
  req->wsi = NULL;
  if (req->result_req) sq_source_result_cancel(req->result_req);
  req->result_req = NULL;
  if (req->spa || req->upload) sq_bridge_demo_drop(req);
  if (!req->in_work) req_free(req); /* else demo.c frees it when its work is back */
}

int sq_bridge_http_callback(sq_bridge_t *b, struct lws *wsi, enum lws_callback_reasons reason,
                            http_req_t *req, void *in, size_t len) {
  switch (reason) {
    case LWS_CALLBACK_HTTP:
      return on_http(b, req, wsi);
    case LWS_CALLBACK_HTTP_BODY:
      return req->spa ? sq_bridge_demo_body(req, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
      return req->spa ? sq_bridge_demo_complete(b, req) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
      return on_writeable(req, wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
      detach(b, req);
      return 0;
    default:
      return 0;
  }
}

void sq_bridge_http_cancel_all(sq_bridge_t *b) {
  for (http_req_t *r = b->http_reqs; r; r = r->next) {
    if (r->result_req) sq_source_result_cancel(r->result_req);
    r->result_req = NULL;
  }
}
