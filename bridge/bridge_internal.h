/* bridge internals shared by the files of bridge/ (not part of the public API; the unit tests of
 * this module include it to drive the hub with a fake event source):
 *   msg     refcounted text frames, shared by every client they are sent to;
 *   hub     channels, their shared event log and the recovery of each subscription (pure logic);
 *   source  the Redis side of an event channel (subscribe, snapshot + history read, result);
 *   json    msgpack -> JSON text for events, snapshots and results.
 * Threads: everything runs on the loop thread, except the json helpers (pure). */
#ifndef SQ_BRIDGE_INTERNAL_H
#define SQ_BRIDGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/bridge.h"
#include "common/common.h"

/* ---- Origin helpers (origin.c) ---- */

/* Validates an --allowed-origins value ("", "*", or a comma-separated list of origins). */
int sq_bridge_origins_check(const char *list, sq_error_t *err);
/* 1 if a WebSocket from origin may be served. origin NULL/empty (not a browser) is allowed; list
 * "" means same origin: origin's host[:port] equals the Host header. */
int sq_bridge_origin_allowed(const char *list, const char *origin, const char *host_header);

/* ---- map: string -> pointer (keys copied, values borrowed) ---- */
typedef struct sq_map sq_map_t;
typedef void (*sq_map_each_fn)(const char *key, void *value, void *data);
sq_map_t *sq_map_new(void);
void sq_map_free(sq_map_t *m); /* frees the entries, not the values */
void *sq_map_get(const sq_map_t *m, const char *key);
int sq_map_put(sq_map_t *m, const char *key, void *value); /* replaces; 0 or SQ_ENOMEM */
void *sq_map_del(sq_map_t *m, const char *key);            /* the removed value or NULL */
size_t sq_map_count(const sq_map_t *m);
/* Calls fn for every entry; fn may delete the entry it is given (and no other). */
void sq_map_each(sq_map_t *m, sq_map_each_fn fn, void *data);

/* ---- msg: an immutable text frame with headroom for the WebSocket header ---- */
#define SQ_MSG_HEADROOM 32 /* >= LWS_PRE (checked in server.c) */

typedef struct sq_msg {
  uint32_t refs;
  uint32_t len;    /* text bytes, without the NUL */
  uint64_t offset; /* the event's offset; 0 for control frames */
  unsigned char data[];
} sq_msg_t;

/* A new message (refs = 1) holding a copy of text[0..len). NULL when out of memory. */
sq_msg_t *sq_msg_new(const char *text, size_t len);
/* printf into a new message; NULL on failure. */
sq_msg_t *sq_msg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *sq_msg_text(sq_msg_t *m) {
  return (char *)m->data + SQ_MSG_HEADROOM;
}
static inline sq_msg_t *sq_msg_ref(sq_msg_t *m) {
  m->refs++;
  return m;
}
void sq_msg_unref(sq_msg_t *m);

/* ---- hub: channels shared by subscriptions ----
 * A channel is followed in Redis once, however many clients subscribe to it. It keeps a log of
 * the last `cache` events with contiguous offsets (lo..hi); live events are appended in offset
 * order (duplicates dropped, gaps filled from history first); a subscription starts from its
 * (offset, epoch) when the log or one shared history read covers it, from the snapshot when it
 * has none, or with a resync when the history no longer reaches back to it. */

typedef struct sq_hub sq_hub_t;
typedef struct sq_hub_sub sq_hub_sub_t;

/* One event as the source hands it over: data is the event document as JSON text. */
typedef struct {
  uint64_t offset;
  const char *data;
  size_t len;
} sq_hub_event_t;

/* The answer to a read: the snapshot (state as JSON text, "null" when the channel has no state)
 * at snap_offset, the channel's epoch, and (if history was asked for) the events with offsets >
 * `after` in order plus the lowest offset history still holds (0 = empty). Read atomically, so
 * history ends at snap_offset. status < 0: the read failed (Redis down); retried later. */
typedef struct {
  int status;
  const char *epoch;
  uint64_t snap_offset;
  const char *snapshot;
  size_t snapshot_len;
  int has_history;
  const sq_hub_event_t *events;
  size_t nevents;
  uint64_t first_offset;
} sq_hub_read_t;

/* What the hub asks of the world. The source functions start asynchronous work whose outcome
 * comes back through sq_hub_on_*; deliver queues msg for a client (taking its own reference) and
 * returns -1 when that client's queue is full (the client is then closed by its owner, which
 * unsubscribes it). */
typedef struct {
  void (*watch)(void *ctx, const char *channel);
  void (*unwatch)(void *ctx, const char *channel);
  /* Starts a read of channel (snapshot, plus history after `after` when with_history); epoch is
   * the epoch `after` belongs to ("" = unknown). */
  void (*read)(void *ctx, const char *channel, int with_history, uint64_t after, const char *epoch);
  int (*deliver)(void *ctx, void *sink, sq_msg_t *msg);
} sq_hub_iface_t;

typedef struct {
  uint32_t cache;     /* events kept per channel */
  uint64_t linger_ms; /* a channel without subscriptions is kept this long */
  uint64_t stall_ms;  /* wait this long for a live event a read has shown before reading it */
} sq_hub_config_t;

sq_hub_t *sq_hub_new(const sq_hub_config_t *cfg, const sq_hub_iface_t *iface, void *ctx);
/* Frees every channel and subscription (no unwatch calls: the source is going away too). */
void sq_hub_free(sq_hub_t *h);

/* Subscribes sink to channel. has_offset: resume after `offset` (0 = from the first event) of
 * `epoch` (NULL/"" = unknown: any epoch but a matching one leads to a resync); otherwise start
 * from the current snapshot. Returns the subscription, or NULL (out of memory). Messages for it
 * go to iface.deliver(sink, ...) from now on, possibly before this returns. */
sq_hub_sub_t *sq_hub_subscribe(sq_hub_t *h, const char *channel, void *sink, int has_offset,
                               uint64_t offset, const char *epoch, uint64_t now_ms);
void sq_hub_unsubscribe(sq_hub_t *h, sq_hub_sub_t *s, uint64_t now_ms);

/* Source events. */
void sq_hub_on_watching(sq_hub_t *h, const char *channel, uint64_t now_ms);
/* A live event; epoch NULL when events carry none. */
void sq_hub_on_live(sq_hub_t *h, const char *channel, const sq_hub_event_t *ev, const char *epoch,
                    uint64_t now_ms);
void sq_hub_on_read(sq_hub_t *h, const char *channel, const sq_hub_read_t *r, uint64_t now_ms);
/* The Redis subscription of channel (or of every channel) was lost with its connection;
 * sq_hub_on_watching follows once it is back, and the channel then catches up from history. */
void sq_hub_on_lost(sq_hub_t *h, const char *channel);
void sq_hub_on_source_down(sq_hub_t *h);
/* Timers: channel linger, read retries, stalled live events. Call every ~100-250 ms. */
void sq_hub_tick(sq_hub_t *h, uint64_t now_ms);

typedef struct {
  size_t channels;      /* channels held (followed or lingering) */
  size_t subscriptions; /* subscriptions of clients */
  size_t cached_events; /* events held in channel logs */
  uint64_t events_in;   /* live events appended to logs */
  uint64_t reads;       /* reads started */
  uint64_t resyncs;     /* resync messages sent */
} sq_hub_stats_t;
void sq_hub_stats(const sq_hub_t *h, sq_hub_stats_t *out);

/* ---- source: the Redis side of the channels (one command and one subscriber connection) ----
 * Adapts segq's event model (docs/protocol.md "Events") to the hub: which Redis channel, snapshot
 * and history a bridge channel is, and how offsets and epochs are read. The only file that knows
 * the event model's details. */
typedef struct sq_source sq_source_t;
struct uv_loop_s;

typedef struct {
  struct uv_loop_s *loop;
  const sq_redis_url_t *redis; /* borrowed */
  const char *prefix;
  uint64_t reply_limit_ms; /* watchdog: a reply slower than this drops the connection */
} sq_source_config_t;

/* Connects both connections through queue/'s session core (reconnecting by themselves,
 * Sentinel, ACL users). cfg's pointers are borrowed. NULL with err on failure. */
sq_source_t *sq_source_new(const sq_source_config_t *cfg, sq_error_t *err);
/* Where live events, subscription confirmations and read results go (set before the first
 * watch). */
void sq_source_set_hub(sq_source_t *src, sq_hub_t *hub);
/* The hub's iface functions, with ctx = the source. */
void sq_source_watch(void *src, const char *channel);
void sq_source_unwatch(void *src, const char *channel);
void sq_source_read(void *src, const char *channel, int with_history, uint64_t after,
                    const char *epoch);
/* 1 when both connections are up. */
int sq_source_ready(const sq_source_t *src);
size_t sq_source_subscriptions(const sq_source_t *src); /* Redis channels subscribed */

/* A job's result document as JSON (status 0), SQ_ENOT_FOUND when it has none, or SQ_EREDIS.
 * json is borrowed for the call. The callback runs exactly once unless sq_source_result_cancel
 * was called first. */
typedef struct sq_source_result sq_source_result_t;
typedef void (*sq_source_result_cb)(int status, const char *json, size_t len, void *data);
sq_source_result_t *sq_source_result(sq_source_t *src, const char *id, sq_source_result_cb cb,
                                     void *data);
void sq_source_result_cancel(sq_source_result_t *req);

/* Closes both connections; on_closed runs when their handles are closed, then the source is
 * freed. Pending reads fail (status SQ_EREDIS) without reaching the hub. */
void sq_source_close(sq_source_t *src, void (*on_closed)(void *data), void *data);

/* ---- json: msgpack -> JSON text (malloc'd, NUL-terminated; NULL on bad input) ----
 * Maps with string keys become objects, bin becomes base64 text, ext and non-string keys are
 * dropped; floats keep their value (float32 printed exactly). */
char *sq_bridge_msgpack_to_json(const void *buf, size_t len, size_t *out_len);
/* The same for the n-th (0-based) of several msgpack objects packed one after the other. */
char *sq_bridge_msgpack_nth_to_json(const void *buf, size_t len, unsigned n, size_t *out_len);
/* Copies the string field `key` of a msgpack map into out (cap bytes with the NUL; "" when
 * absent). Returns -1 when buf is not a map or the value does not fit. */
int sq_bridge_msgpack_str_field(const void *buf, size_t len, const char *key, char *out,
                                size_t cap);
/* A Redis hash (n field/value pairs) as a JSON object; values of decimal digits become numbers. */
char *sq_bridge_hash_to_json(const char *const *keys, const char *const *values,
                             const size_t *value_lens, size_t n, size_t *out_len);
/* Reads the unsigned integer field `key` of a msgpack map; 0 if absent. Returns -1 when buf is
 * not a map. */
int sq_bridge_msgpack_uint_field(const void *buf, size_t len, const char *key, uint64_t *out);

#endif
