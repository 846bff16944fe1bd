/* bridge server internals shared by server.c (the lws context, WebSocket clients), http.c (the
 * HTTP API: results, health, metrics) and demo.c (the demo's upload). Includes libwebsockets.
 * Threads: loop thread, except the demo's enqueue work (libuv's thread pool, see demo.c). */
#ifndef SQ_BRIDGE_SERVER_INTERNAL_H
#define SQ_BRIDGE_SERVER_INTERNAL_H

#include <libwebsockets.h>
#include <uv.h>

#include "bridge/bridge.h"
#include "bridge/bridge_internal.h"

typedef struct client client_t;
typedef struct http_req http_req_t;

typedef struct {
  uint64_t frames_out, bytes_out;    /* WebSocket frames written */
  uint64_t clients_total;            /* WebSocket connections accepted */
  uint64_t closed_slow, closed_pong; /* clients closed for a full queue / no pong */
  uint64_t refused[8];               /* subscriptions refused, by refusal_index() */
  uint64_t http_requests;
  uint64_t demo_uploads, demo_jobs;
} sq_bridge_stats_t;

struct sq_bridge {
  uv_loop_t *loop;
  const sq_bridge_config_t *cfg;
  struct lws_context *ctx;
  sq_source_t *src;
  sq_hub_t *hub;
  uv_timer_t tick;
  client_t *clients; /* every WebSocket client (doubly linked) */
  size_t nclients;
  http_req_t *http_reqs; /* HTTP requests in progress (doubly linked) */
  const uint8_t *secret;
  size_t secret_len;
  uint8_t demo_secret[32]; /* --demo without a configured secret: drawn at start */
  sq_msg_t *ping_msg;
  struct lws_http_mount mounts[8];
  int stopping;
  uv_timer_t stop_timer;
  sq_bridge_stats_t stats;
};

/* ---- http.c ---- */

/* The HTTP side of one lws transaction (in the per-session data). */
struct http_req {
  http_req_t *prev, *next;
  sq_bridge_t *b;
  struct lws *wsi; /* NULL once the connection is gone (work still in flight) */
  int status;      /* 0 until the response is known */
  char content_type[48];
  char allow_origin[256]; /* Access-Control-Allow-Origin to send, "" = none */
  unsigned char *body;    /* LWS_PRE headroom + body_len bytes */
  size_t body_len;
  int headers_sent, done;
  sq_source_result_t *result_req;
  /* demo upload */
  struct lws_spa *spa;
  struct demo_upload *upload;
  int in_work; /* the demo's enqueue runs on the thread pool */
};

/* LWS_CALLBACK_HTTP etc. for the protocol; returns what the lws callback should return. */
int sq_bridge_http_callback(sq_bridge_t *b, struct lws *wsi, enum lws_callback_reasons reason,
                            http_req_t *req, void *in, size_t len);
/* Sets the response (JSON) and asks lws to write it. */
void sq_bridge_http_respond(http_req_t *req, int status, const char *content_type, const char *body,
                            size_t len);
/* {"error":{"code":...,"message":...}} with the status. */
void sq_bridge_http_error(http_req_t *req, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Cancels what every request still waits for (the bridge is stopping). */
void sq_bridge_http_cancel_all(sq_bridge_t *b);

/* ---- demo.c ---- */
struct demo_upload;
int sq_bridge_demo_begin(sq_bridge_t *b, http_req_t *req, struct lws *wsi);
int sq_bridge_demo_body(http_req_t *req, const void *in, size_t len);
int sq_bridge_demo_complete(sq_bridge_t *b, http_req_t *req);
void sq_bridge_demo_drop(http_req_t *req); /* the connection went away */

/* ---- server.c ---- */
/* Index in stats.refused of a refusal code (token_missing ... origin_refused). */
int sq_bridge_refusal_index(int code);
void sq_bridge_metrics_text(sq_bridge_t *b, char *buf, size_t len, size_t *out_len);
/* The health document; sets *ok to 1 when Redis is reachable. */
char *sq_bridge_health_json(sq_bridge_t *b, int *ok);

#endif
