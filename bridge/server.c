/* bridge/server: segq-bridge's libwebsockets context on the caller's libuv loop (a foreign loop),
 * the WebSocket clients (protocol in docs/bridge.md: subscribe/unsubscribe/ping in, subscribed/
 * event/resync/error/ping out), their bounded send queues and keepalive, and the glue between the
 * hub and the Redis source. HTTP requests go to http.c.
 * Threads: loop thread only. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bridge/server_internal.h"
#include "proto/proto.h"

_Static_assert(SQ_MSG_HEADROOM >= LWS_PRE, "messages need LWS_PRE bytes of headroom");

#define TICK_MS 250
#define STOP_GRACE_MS 1000
#define CLOSE_SEND_S 3
#define EPOCH_MAX 64
#define WS_PATH "/ws"

/* Close codes of docs/bridge.md (4000-4999 are the application's). */
enum {
  CLOSE_GOING_AWAY = 1001,
  CLOSE_UNSUPPORTED = 1003,
  CLOSE_TOO_BIG = 1009,
  CLOSE_TRY_LATER = 1013,
  CLOSE_SLOW = 4001,
  CLOSE_NO_PONG = 4002,
  CLOSE_ORIGIN = 4003,
  CLOSE_PATH = 4004,
};

typedef struct {
  char channel[SQ_CHANNEL_MAX];
  sq_hub_sub_t *sub;
} sub_slot_t;

struct client {
  client_t *prev, *next;
  sq_bridge_t *b;
  struct lws *wsi;
  /* Send queue: a ring of shared messages, bounded by count and bytes. */
  sq_msg_t **q;
  size_t qhead, qlen, qcap, qbytes;
  sub_slot_t *subs;
  size_t nsubs, subs_cap;
  int closing, close_code, close_sent;
  char close_reason[120];
  uint64_t next_ping_ms, ping_sent_ms;
  char *rx; /* a message in fragments, put together (grown as needed up to the limit) */
  size_t rxlen, rxcap;
};

typedef struct {
  client_t *client;
  http_req_t *http;
} pss_t;

static uint64_t now_ms(void) {
  return sq_clock_mono_us() / 1000;
}

/* ---- clients ---- */

static void queue_clear(client_t *c) {
  for (size_t i = 0; i < c->qlen; i++) sq_msg_unref(c->q[(c->qhead + i) % c->qcap]);
  c->qhead = c->qlen = c->qbytes = 0;
}

/* Closes c with code and reason (sent in the close frame when the socket takes it; the
 * connection is cut after CLOSE_SEND_S otherwise). What it had queued is dropped at once, so a
 * slow client's memory is given back now. */
static void client_close(client_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_close(client_t *c, int code, const char *fmt, ...) {
  if (c->closing) return;
  c->closing = 1;
  c->close_code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->close_reason, sizeof c->close_reason, fmt, ap);
  va_end(ap);
  queue_clear(c);
  sq_log_info("bridge", "closing client", "code=%d reason=\"%s\"", code, c->close_reason);
  lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, CLOSE_SEND_S);
  lws_callback_on_writable(c->wsi);
}

static int client_push(client_t *c, sq_msg_t *m) {
  const sq_bridge_config_t *cfg = c->b->cfg;
  if (c->closing) return -1;
  if (c->qlen + 1 > cfg->client_queue_max || c->qbytes + m->len > cfg->client_queue_bytes) {
    c->b->stats.closed_slow++;
    client_close(c, CLOSE_SLOW, "slow_consumer: %zu messages (%zu bytes) waiting to be sent",
                 c->qlen, c->qbytes);
    return -1;
  }
  if (c->qlen == c->qcap) {
    size_t n = c->qcap ? c->qcap * 2 : 16;
    sq_msg_t **nq = malloc(n * sizeof(*nq));
    if (!nq) {
      client_close(c, CLOSE_SLOW, "slow_consumer: out of memory for its queue");
      return -1;
    }
    for (size_t i = 0; i < c->qlen; i++) nq[i] = c->q[(c->qhead + i) % c->qcap];
    free(c->q);
    c->q = nq;
    c->qcap = n;
    c->qhead = 0;
  }
  c->q[(c->qhead + c->qlen) % c->qcap] = sq_msg_ref(m);
  c->qlen++;
  c->qbytes += m->len;
  if (c->qlen == 1) lws_callback_on_writable(c->wsi);
  return 0;
}

static void send_json(client_t *c, json_t *j) {
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text) return;
  sq_msg_t *m = sq_msg_new(text, strlen(text));
  free(text);
  if (m) {
    client_push(c, m);
    sq_msg_unref(m);
  }
}

int sq_bridge_refusal_index(int code) {
  switch (code) {
    case SQ_ETOKEN_MISSING:
      return 0;
    case SQ_ETOKEN_MALFORMED:
      return 1;
    case SQ_ETOKEN_INVALID:
      return 2;
    case SQ_ETOKEN_EXPIRED:
      return 3;
    case SQ_ECHANNEL:
      return 4;
    case SQ_ETOO_MANY:
      return 5;
    case SQ_EORIGIN:
      return 6;
    default:
      return 7;
  }
}

static void send_error(client_t *c, const char *channel, int code, const char *message) {
  c->b->stats.refused[sq_bridge_refusal_index(code)]++;
  json_t *j = json_pack("{s:s, s:s?, s:s, s:s}", "type", "error", "channel", channel, "code",
                        sq_error_name(code), "message", message);
  if (j) send_json(c, j);
}

static sub_slot_t *find_sub(client_t *c, const char *channel) {
  for (size_t i = 0; i < c->nsubs; i++)
    if (strcmp(c->subs[i].channel, channel) == 0) return &c->subs[i];
  return NULL;
}

static void on_subscribe(client_t *c, json_t *cmd) {
  sq_bridge_t *b = c->b;
  const char *channel = json_string_value(json_object_get(cmd, "channel"));
  if (!channel || sq_bridge_channel_parse(channel, NULL, NULL) != 0) {
    send_error(c, channel, SQ_ECHANNEL,
               "channel must be job:<id> or group:<group> ([A-Za-z0-9._:-], at most 128)");
    return;
  }
  sq_error_t err;
  json_t *tok = json_object_get(cmd, "token");
  if (sq_bridge_token_check(b->secret, b->secret_len, channel,
                            json_is_string(tok) ? json_string_value(tok) : NULL,
                            sq_clock_wall_ms() / 1000, &err) != 0) {
    send_error(c, channel, err.code, err.msg);
    return;
  }
  if (find_sub(c, channel)) {
    send_error(c, channel, SQ_EALREADY, "this connection already follows the channel");
    return;
  }
  if (c->nsubs >= b->cfg->max_subscriptions) {
    char msg[96];
    snprintf(msg, sizeof msg, "a connection may follow at most %u channels",
             b->cfg->max_subscriptions);
    send_error(c, channel, SQ_ETOO_MANY, msg);
    return;
  }
  json_t *joff = json_object_get(cmd, "offset"), *jep = json_object_get(cmd, "epoch");
  int has_offset = joff && !json_is_null(joff);
  if (has_offset && (!json_is_integer(joff) || json_integer_value(joff) < 0)) {
    send_error(c, channel, SQ_EBAD_REQUEST, "offset must be an integer >= 0");
    return;
  }
  const char *epoch = json_is_string(jep) ? json_string_value(jep) : "";
  if ((jep && !json_is_null(jep) && !json_is_string(jep)) || strlen(epoch) >= EPOCH_MAX ||
      (epoch[0] && !sq_proto_valid_name(epoch, strlen(epoch), EPOCH_MAX - 1))) {
    send_error(c, channel, SQ_EBAD_REQUEST, "epoch must be the string the bridge sent");
    return;
  }
  if (c->nsubs == c->subs_cap) {
    /* Grown as needed: most pages follow one or two channels of the --max-subscriptions. */
    size_t n = c->subs_cap ? c->subs_cap * 2 : 2;
    if (n > b->cfg->max_subscriptions) n = b->cfg->max_subscriptions;
    sub_slot_t *ns = realloc(c->subs, n * sizeof(*ns));
    if (!ns) {
      send_error(c, channel, SQ_ENOMEM, "out of memory");
      return;
    }
    c->subs = ns;
    c->subs_cap = n;
  }
  sub_slot_t *slot = &c->subs[c->nsubs];
  snprintf(slot->channel, sizeof slot->channel, "%s", channel);
  c->nsubs++;
  /* The hub may answer (and even close a full client) before this returns. */
  slot->sub =
      sq_hub_subscribe(b->hub, channel, c, has_offset,
                       has_offset ? (uint64_t)json_integer_value(joff) : 0, epoch, now_ms());
  if (!slot->sub) c->nsubs--;
}

static void on_unsubscribe(client_t *c, json_t *cmd) {
  const char *channel = json_string_value(json_object_get(cmd, "channel"));
  sub_slot_t *slot = channel ? find_sub(c, channel) : NULL;
  if (!slot) {
    send_error(c, channel, SQ_EBAD_REQUEST, "this connection does not follow the channel");
    return;
  }
  sq_hub_unsubscribe(c->b->hub, slot->sub, now_ms());
  *slot = c->subs[--c->nsubs];
  json_t *j = json_pack("{s:s, s:s}", "type", "unsubscribed", "channel", channel);
  if (j) send_json(c, j);
}

static void on_message(client_t *c, const char *text, size_t len) {
  json_error_t jerr;
  json_t *cmd = json_loadb(text, len, 0, &jerr);
  const char *type = cmd ? json_string_value(json_object_get(cmd, "type")) : NULL;
  if (!type) {
    send_error(c, NULL, SQ_EBAD_REQUEST,
               cmd ? "a message needs a \"type\"" : "a message must be a JSON object");
  } else if (strcmp(type, "subscribe") == 0) {
    on_subscribe(c, cmd);
  } else if (strcmp(type, "unsubscribe") == 0) {
    on_unsubscribe(c, cmd);
  } else if (strcmp(type, "ping") == 0) {
    json_t *j = json_pack("{s:s}", "type", "pong");
    if (j) send_json(c, j);
  } else if (strcmp(type, "pong") != 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "unknown type \"%.40s\" (subscribe, unsubscribe, ping, pong)", type);
    send_error(c, NULL, SQ_EBAD_REQUEST, msg);
  }
  json_decref(cmd);
}

static int header(struct lws *wsi, enum lws_token_indexes h, char *buf, int len) {
  int n = lws_hdr_copy(wsi, buf, len, h);
  if (n < 0) n = 0;
  buf[n < len ? n : len - 1] = '\0';
  return n;
}

static void client_open(sq_bridge_t *b, struct lws *wsi, pss_t *pss) {
  client_t *c = calloc(1, sizeof(*c));
  if (!c) return;
  c->b = b;
  c->wsi = wsi;
  c->next = b->clients;
  if (b->clients) b->clients->prev = c;
  b->clients = c;
  b->nclients++;
  b->stats.clients_total++;
  pss->client = c;
  c->next_ping_ms = now_ms() + (uint64_t)b->cfg->ping_interval_s * 1000;
  if (b->cfg->client_sndbuf_bytes) {
    int sz = (int)b->cfg->client_sndbuf_bytes;
    if (setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz) != 0)
      sq_log_warn("bridge", "cannot set SO_SNDBUF", "bytes=%d err=\"%s\"", sz, strerror(errno));
  }
  char origin[256], host[256], uri[256];
  header(wsi, WSI_TOKEN_ORIGIN, origin, sizeof origin);
  header(wsi, WSI_TOKEN_HOST, host, sizeof host);
  header(wsi, WSI_TOKEN_GET_URI, uri, sizeof uri);
  if (b->stopping) {
    client_close(c, CLOSE_GOING_AWAY, "going_away: the bridge is shutting down");
  } else if (strcmp(uri, WS_PATH) != 0 && strncmp(uri, WS_PATH "?", sizeof WS_PATH) != 0) {
    client_close(c, CLOSE_PATH, "not_found: WebSockets are served at " WS_PATH);
  } else if (!sq_bridge_origin_allowed(b->cfg->allowed_origins, origin, host)) {
    b->stats.refused[sq_bridge_refusal_index(SQ_EORIGIN)]++;
    client_close(c, CLOSE_ORIGIN, "origin_refused: %.80s may not open bridge WebSockets", origin);
  } else if (b->nclients > b->cfg->max_clients) {
    client_close(c, CLOSE_TRY_LATER, "too_many_clients: the bridge serves at most %u",
                 b->cfg->max_clients);
  }
}

static void client_gone(sq_bridge_t *b, pss_t *pss) {
  client_t *c = pss->client;
  if (!c) return;
  uint64_t now = now_ms();
  for (size_t i = 0; i < c->nsubs; i++) sq_hub_unsubscribe(b->hub, c->subs[i].sub, now);
  queue_clear(c);
  free(c->q);
  free(c->subs);
  free(c->rx);
  if (c->prev)
    c->prev->next = c->next;
  else
    b->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  b->nclients--;
  free(c);
  pss->client = NULL;
}

/* Writes the close frame (code + reason) and waits up to CLOSE_SEND_S for the client's answer.
 * Returning -1 from a writeable callback after lws_close_reason() does not do it in lws 4.1: that
 * path marks the socket unusable, so no close frame goes out and the browser sees 1006 instead of
 * our code and reason. LWS_WRITE_CLOSE is private in lws 4.1; its value is 4 (after TEXT,
 * BINARY, CONTINUATION, HTTP) and lws_write frames a close for it. */
#define SQ_LWS_WRITE_CLOSE ((enum lws_write_protocol)4)
static int send_close(client_t *c) {
  unsigned char buf[LWS_PRE + 2 + sizeof c->close_reason];
  size_t rlen = strnlen(c->close_reason, 123);
  buf[LWS_PRE] = (unsigned char)(c->close_code >> 8);
  buf[LWS_PRE + 1] = (unsigned char)(c->close_code & 0xff);
  memcpy(buf + LWS_PRE + 2, c->close_reason, rlen);
  c->close_sent = 1;
  if (lws_write(c->wsi, buf + LWS_PRE, 2 + rlen, SQ_LWS_WRITE_CLOSE) < 0) return -1;
  lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_SEND_S);
  return 0;
}

static int client_writeable(client_t *c) {
  if (c->closing) return c->close_sent ? 0 : send_close(c);
  for (int k = 0; k < 64 && c->qlen > 0; k++) {
    sq_msg_t *m = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->qbytes -= m->len;
    int n = lws_write(c->wsi, m->data + SQ_MSG_HEADROOM, m->len, LWS_WRITE_TEXT);
    c->b->stats.frames_out++;
    c->b->stats.bytes_out += m->len;
    sq_msg_unref(m);
    if (n < 0) return -1;
    if (lws_send_pipe_choked(c->wsi)) break;
  }
  if (c->qlen > 0) lws_callback_on_writable(c->wsi);
  return 0;
}

static int client_receive(client_t *c, const void *in, size_t len) {
  struct lws *wsi = c->wsi;
  uint32_t max = c->b->cfg->max_message_bytes;
  if (c->closing) return 0;
  if (lws_frame_is_binary(wsi)) {
    client_close(c, CLOSE_UNSUPPORTED, "bad_request: messages are JSON text frames");
    return 0;
  }
  int first = lws_is_first_fragment(wsi);
  int last = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
  c->ping_sent_ms = 0; /* any message shows the client is there */
  if (first) c->rxlen = 0;
  if (c->rxlen + len > max) {
    client_close(c, CLOSE_TOO_BIG, "bad_request: a message is at most %u bytes", max);
    return 0;
  }
  if (first && last) {
    on_message(c, in, len); /* whole: no copy, and no buffer kept per client */
    return 0;
  }
  if (c->rxlen + len > c->rxcap) {
    size_t n = c->rxcap ? c->rxcap * 2 : 1024;
    while (n < c->rxlen + len) n *= 2;
    char *nb = realloc(c->rx, n);
    if (!nb) return -1;
    c->rx = nb;
    c->rxcap = n;
  }
  memcpy(c->rx + c->rxlen, in, len);
  c->rxlen += len;
  if (last) {
    on_message(c, c->rx, c->rxlen);
    c->rxlen = 0;
  }
  return 0;
}

/* ---- the protocol callback ---- */

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  struct lws_context *ctx = lws_get_context(wsi);
  sq_bridge_t *b = ctx ? lws_context_user(ctx) : NULL;
  pss_t *pss = user;
  switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
      client_open(b, wsi, pss);
      return 0;
    case LWS_CALLBACK_CLOSED:
      client_gone(b, pss);
      return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
      return pss->client ? client_writeable(pss->client) : 0;
    case LWS_CALLBACK_RECEIVE:
      return pss->client ? client_receive(pss->client, in, len) : 0;
    case LWS_CALLBACK_HTTP:
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    case LWS_CALLBACK_HTTP_WRITEABLE:
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: {
      if (!pss) break;
      if (reason == LWS_CALLBACK_HTTP && pss->http && !pss->http->in_work && pss->http->done) {
        /* keep-alive: a new transaction on the same connection */
        sq_bridge_http_callback(b, wsi, LWS_CALLBACK_HTTP_DROP_PROTOCOL, pss->http, NULL, 0);
        pss->http = NULL;
      }
      if (reason == LWS_CALLBACK_HTTP && !pss->http) {
        pss->http = calloc(1, sizeof(*pss->http));
        if (!pss->http) return -1;
        pss->http->b = b;
        pss->http->wsi = wsi;
      }
      if (!pss->http) break;
      int rc = sq_bridge_http_callback(b, wsi, reason, pss->http, in, len);
      if (reason == LWS_CALLBACK_CLOSED_HTTP || reason == LWS_CALLBACK_HTTP_DROP_PROTOCOL)
        pss->http = NULL; /* http.c freed it, or the demo's work will */
      return rc;
    }
    default:
      break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static struct lws_protocols protocols[] = {
    /* 1 KiB of receive buffer per connection: commands are small; a longer one arrives in
     * fragments and is put together (client_receive). */
    {"segq.v1", callback, sizeof(pss_t), 1024, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- hub glue ---- */

static int hub_deliver(void *ctx, void *sink, sq_msg_t *m) {
  (void)ctx;
  return client_push(sink, m);
}

static const sq_hub_iface_t hub_iface = {sq_source_watch, sq_source_unwatch, sq_source_read,
                                         hub_deliver};

static void on_tick(uv_timer_t *t) {
  sq_bridge_t *b = t->data;
  uint64_t now = now_ms();
  sq_hub_tick(b->hub, now);
  uint64_t interval = (uint64_t)b->cfg->ping_interval_s * 1000;
  uint64_t timeout = (uint64_t)b->cfg->pong_timeout_s * 1000;
  for (client_t *c = b->clients; c; c = c->next) {
    if (c->closing) continue;
    if (c->ping_sent_ms && now - c->ping_sent_ms >= timeout) {
      b->stats.closed_pong++;
      client_close(c, CLOSE_NO_PONG, "no_pong: nothing received for %" PRIu64 " ms after a ping",
                   now - c->ping_sent_ms);
    } else if (now >= c->next_ping_ms) {
      if (client_push(c, b->ping_msg) == 0 && !c->ping_sent_ms) c->ping_sent_ms = now;
      c->next_ping_ms = now + interval;
    }
  }
}

static void lws_log(int level, const char *line) {
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
  if (level & LLL_ERR)
    sq_log_error("lws", "libwebsockets", "line=\"%.*s\"", (int)n, line);
  else
    sq_log_warn("lws", "libwebsockets", "line=\"%.*s\"", (int)n, line);
}

static int dir_has(const char *dir, const char *file) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  return access(path, R_OK) == 0;
}

static void add_mount(sq_bridge_t *b, size_t *n, const char *mountpoint, const char *origin,
                      int kind, const char *def) {
  struct lws_http_mount *m = &b->mounts[*n];
  memset(m, 0, sizeof(*m));
  m->mountpoint = mountpoint;
  m->mountpoint_len = (unsigned char)strlen(mountpoint);
  m->origin = origin;
  m->origin_protocol = (unsigned char)kind;
  m->def = def;
  m->cache_max_age = 0;
  if (*n > 0) b->mounts[*n - 1].mount_next = m;
  (*n)++;
}

sq_bridge_t *sq_bridge_new(uv_loop_t *loop, const sq_bridge_config_t *cfg, sq_error_t *err) {
  sq_bridge_t *b = calloc(1, sizeof(*b));
  if (!b) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  b->loop = loop;
  b->cfg = cfg;
  if (cfg->secret) {
    b->secret = cfg->secret;
    b->secret_len = cfg->secret_len;
  } else {
    /* --demo without a secret: the demo mints its own tokens, nobody else can. */
    if (getrandom(b->demo_secret, sizeof b->demo_secret, 0) != (ssize_t)sizeof b->demo_secret) {
      sq_error_set(err, SQ_EINTERNAL, "no random bytes for the demo's token secret");
      free(b);
      return NULL;
    }
    b->secret = b->demo_secret;
    b->secret_len = sizeof b->demo_secret;
  }
  if (cfg->demo && !dir_has(cfg->demo_dir, "index.html")) {
    sq_error_set(err, SQ_EINVAL,
                 "demo-dir: %s/index.html not found (run from the repository root or set "
                 "--demo-dir)",
                 cfg->demo_dir);
    free(b);
    return NULL;
  }
  int have_js = dir_has(cfg->js_dir, "segq.js");
  if (!have_js && cfg->demo) {
    sq_error_set(err, SQ_EINVAL, "js-dir: %s/segq.js not found (set --js-dir)", cfg->js_dir);
    free(b);
    return NULL;
  }
  if (!have_js)
    sq_log_warn("bridge", "browser client not served", "js_dir=%s reason=\"no segq.js\"",
                cfg->js_dir);
  b->ping_msg = sq_msg_new("{\"type\":\"ping\"}", 15);
  sq_source_config_t scfg = {loop, &cfg->redis, cfg->prefix, 10000};
  b->src = sq_source_new(&scfg, err);
  if (!b->src) {
    sq_msg_unref(b->ping_msg);
    free(b);
    return NULL;
  }
  sq_hub_config_t hcfg = {cfg->channel_cache, (uint64_t)cfg->channel_linger_s * 1000, 1000};
  b->hub = b->src ? sq_hub_new(&hcfg, &hub_iface, b->src) : NULL;
  if (!b->ping_msg || !b->src || !b->hub) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    if (b->src) sq_source_close(b->src, NULL, NULL);
    sq_hub_free(b->hub);
    sq_msg_unref(b->ping_msg);
    free(b);
    return NULL;
  }
  sq_source_set_hub(b->src, b->hub);

  size_t nm = 0;
  add_mount(b, &nm, "/v1", "segq.v1", LWSMPRO_CALLBACK, NULL);
  add_mount(b, &nm, "/healthz", "segq.v1", LWSMPRO_CALLBACK, NULL);
  add_mount(b, &nm, "/metrics", "segq.v1", LWSMPRO_CALLBACK, NULL);
  if (have_js) add_mount(b, &nm, "/js", cfg->js_dir, LWSMPRO_FILE, "segq.js");
  if (cfg->demo) {
    add_mount(b, &nm, "/demo", "segq.v1", LWSMPRO_CALLBACK, NULL);
    add_mount(b, &nm, "/", cfg->demo_dir, LWSMPRO_FILE, "index.html");
  }

  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  void *foreign_loops[1] = {loop};
  info.port = (int)cfg->port;
  info.iface = cfg->host;
  info.protocols = protocols;
  info.mounts = b->mounts;
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8 |
                 LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE |
                 LWS_SERVER_OPTION_DISABLE_IPV6;
  info.foreign_loops = foreign_loops;
  info.user = b;
  info.vhost_name = "segq-bridge";
  info.pcontext = &b->ctx; /* lws clears it once the context is wholly destroyed */
  info.server_string = "segq-bridge";
  b->ctx = lws_create_context(&info);
  if (!b->ctx || !lws_get_vhost_by_name(b->ctx, "segq-bridge")) {
    sq_error_set(err, SQ_EIO, "cannot listen on %s:%u (port in use, or a bad --host)", cfg->host,
                 cfg->port);
    if (b->ctx) lws_context_destroy(b->ctx);
    sq_source_close(b->src, NULL, NULL);
    sq_hub_free(b->hub);
    sq_msg_unref(b->ping_msg);
    free(b);
    return NULL;
  }
  uv_timer_init(loop, &b->tick);
  b->tick.data = b;
  uv_timer_start(&b->tick, on_tick, TICK_MS, TICK_MS);
  uv_timer_init(loop, &b->stop_timer);
  b->stop_timer.data = b;
  return b;
}

int sq_bridge_port(const sq_bridge_t *b) {
  return (int)b->cfg->port;
}

static void finish_stop(uv_timer_t *t) {
  sq_bridge_t *b = t->data;
  sq_bridge_http_cancel_all(b);
  /* Closes the remaining connections (CLOSED runs for each) and lws' handles on our loop; with a
   * foreign loop the destruction finishes in a second call once the loop has let go of them
   * (sq_bridge_free). */
  lws_context_destroy(b->ctx);
  sq_source_close(b->src, NULL, NULL);
  b->src = NULL;
  uv_timer_stop(&b->tick);
  uv_close((uv_handle_t *)&b->tick, NULL);
  uv_close((uv_handle_t *)&b->stop_timer, NULL);
}

void sq_bridge_stop(sq_bridge_t *b) {
  if (b->stopping) return;
  b->stopping = 1;
  sq_log_info("bridge", "stopping", "clients=%zu", b->nclients);
  for (client_t *c = b->clients; c; c = c->next)
    client_close(c, CLOSE_GOING_AWAY, "going_away: the bridge is shutting down");
  uv_timer_start(&b->stop_timer, finish_stop, b->nclients ? STOP_GRACE_MS : 0, 0);
}

void sq_bridge_free(sq_bridge_t *b) {
  if (!b) return;
  if (b->ctx) {
    /* The second lws_context_destroy of a foreign loop: frees what the first one left for
     * after the loop's last callbacks; whatever it closes then is run out here. */
    lws_context_destroy(b->ctx);
    uv_run(b->loop, UV_RUN_DEFAULT);
  }
  sq_hub_free(b->hub);
  sq_msg_unref(b->ping_msg);
  memset(b->demo_secret, 0, sizeof b->demo_secret);
  free(b);
}

/* ---- health and metrics ---- */

char *sq_bridge_health_json(sq_bridge_t *b, int *ok) {
  sq_hub_stats_t hs;
  sq_hub_stats(b->hub, &hs);
  *ok = b->src && sq_source_ready(b->src) && !b->stopping;
  json_t *j =
      json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "status", *ok ? "ok" : "degraded", "redis",
                b->src && sq_source_ready(b->src), "clients", (json_int_t)b->nclients, "channels",
                (json_int_t)hs.channels, "redis_subscriptions",
                (json_int_t)(b->src ? sq_source_subscriptions(b->src) : 0), "subscriptions",
                (json_int_t)hs.subscriptions, "cached_events", (json_int_t)hs.cached_events);
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return text;
}

void sq_bridge_metrics_text(sq_bridge_t *b, char *buf, size_t len, size_t *out_len) {
  static const int refusal_codes[8] = {SQ_ETOKEN_MISSING, SQ_ETOKEN_MALFORMED, SQ_ETOKEN_INVALID,
                                       SQ_ETOKEN_EXPIRED, SQ_ECHANNEL,         SQ_ETOO_MANY,
                                       SQ_EORIGIN,        SQ_EBAD_REQUEST};
  sq_hub_stats_t hs;
  sq_hub_stats(b->hub, &hs);
  size_t qmsgs = 0, qbytes = 0;
  for (client_t *c = b->clients; c; c = c->next) {
    qmsgs += c->qlen;
    qbytes += c->qbytes;
  }
  size_t o = 0;
#define OUT(...)                                                               \
  do {                                                                         \
    int n_ = snprintf(buf + o, o < len ? len - o : 0, __VA_ARGS__);            \
    if (n_ > 0) o = o + (size_t)n_ < len ? o + (size_t)n_ : len ? len - 1 : 0; \
  } while (0)
  OUT("# TYPE segq_bridge_clients gauge\nsegq_bridge_clients %zu\n", b->nclients);
  OUT("# TYPE segq_bridge_channels gauge\nsegq_bridge_channels %zu\n", hs.channels);
  OUT("# TYPE segq_bridge_redis_subscriptions gauge\nsegq_bridge_redis_subscriptions %zu\n",
      b->src ? sq_source_subscriptions(b->src) : 0);
  OUT("# TYPE segq_bridge_subscriptions gauge\nsegq_bridge_subscriptions %zu\n", hs.subscriptions);
  OUT("# TYPE segq_bridge_cached_events gauge\nsegq_bridge_cached_events %zu\n", hs.cached_events);
  OUT("# TYPE segq_bridge_queued_messages gauge\nsegq_bridge_queued_messages %zu\n", qmsgs);
  OUT("# TYPE segq_bridge_queued_bytes gauge\nsegq_bridge_queued_bytes %zu\n", qbytes);
  OUT("# TYPE segq_bridge_redis_up gauge\nsegq_bridge_redis_up %d\n",
      b->src && sq_source_ready(b->src));
  OUT("# TYPE segq_bridge_events_total counter\nsegq_bridge_events_total %" PRIu64 "\n",
      hs.events_in);
  OUT("# TYPE segq_bridge_reads_total counter\nsegq_bridge_reads_total %" PRIu64 "\n", hs.reads);
  OUT("# TYPE segq_bridge_resyncs_total counter\nsegq_bridge_resyncs_total %" PRIu64 "\n",
      hs.resyncs);
  OUT("# TYPE segq_bridge_frames_out_total counter\nsegq_bridge_frames_out_total %" PRIu64 "\n",
      b->stats.frames_out);
  OUT("# TYPE segq_bridge_bytes_out_total counter\nsegq_bridge_bytes_out_total %" PRIu64 "\n",
      b->stats.bytes_out);
  OUT("# TYPE segq_bridge_connections_total counter\nsegq_bridge_connections_total %" PRIu64 "\n",
      b->stats.clients_total);
  OUT("# TYPE segq_bridge_closed_total counter\n");
  OUT("segq_bridge_closed_total{reason=\"slow_consumer\"} %" PRIu64 "\n", b->stats.closed_slow);
  OUT("segq_bridge_closed_total{reason=\"no_pong\"} %" PRIu64 "\n", b->stats.closed_pong);
  OUT("# TYPE segq_bridge_refused_total counter\n");
  for (int i = 0; i < 8; i++)
    OUT("segq_bridge_refused_total{code=\"%s\"} %" PRIu64 "\n", sq_error_name(refusal_codes[i]),
        b->stats.refused[i]);
  OUT("# TYPE segq_bridge_http_requests_total counter\nsegq_bridge_http_requests_total %" PRIu64
      "\n",
      b->stats.http_requests);
  OUT("# TYPE segq_bridge_demo_jobs_total counter\nsegq_bridge_demo_jobs_total %" PRIu64 "\n",
      b->stats.demo_jobs);
#undef OUT
  *out_len = o;
}
