/* bridge/hub: the channels that clients follow and how each subscription recovers (see
 * bridge_internal.h and docs/bridge.md "Recovery"). Pure logic: Redis is reached through the
 * iface's watch/unwatch/read, clients through deliver, time is passed in.
 * Threads: loop thread only. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_internal.h"
#include "proto/proto.h"

#define EPOCH_MAX 64
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000

/* ---- messages ---- */

sq_msg_t *sq_msg_new(const char *text, size_t len) {
  if (len > UINT32_MAX - SQ_MSG_HEADROOM - 1) return NULL;
  sq_msg_t *m = malloc(sizeof(*m) + SQ_MSG_HEADROOM + len + 1);
  if (!m) return NULL;
  m->refs = 1;
  m->len = (uint32_t)len;
  m->offset = 0;
  memcpy(m->data + SQ_MSG_HEADROOM, text, len);
  m->data[SQ_MSG_HEADROOM + len] = '\0';
  return m;
}

sq_msg_t *sq_msg_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  sq_msg_t *m = malloc(sizeof(*m) + SQ_MSG_HEADROOM + (size_t)n + 1);
  if (!m) return NULL;
  m->refs = 1;
  m->len = (uint32_t)n;
  m->offset = 0;
  va_start(ap, fmt);
  vsnprintf((char *)m->data + SQ_MSG_HEADROOM, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return m;
}

void sq_msg_unref(sq_msg_t *m) {
  if (m && --m->refs == 0) free(m);
}

/* ---- structures ---- */

typedef enum { SUB_WAITING, SUB_ACTIVE } sub_state_t;
typedef enum { START_FRESH, START_RESUME, START_RESYNC } sub_mode_t;

typedef struct channel channel_t;

struct sq_hub_sub {
  sq_hub_sub_t *prev, *next;
  channel_t *ch;
  void *sink;
  sub_state_t state;
  sub_mode_t mode;
  const char *resync_reason; /* static string */
  uint64_t want_offset;
  char want_epoch[EPOCH_MAX];
  /* Reads are numbered; need_gen is the first read made after the subscription came (needed
   * to decide a resync), start_gen the first whose snapshot it may start from (also the read
   * already in flight when it came: at most one round trip old). */
  uint64_t need_gen, start_gen;
  uint64_t pos; /* last offset delivered (ACTIVE) */
};

/* An event not yet in the log: its frame is built when it is appended (the epoch is known). */
typedef struct {
  uint64_t offset;
  char *data;
  size_t len;
} raw_event_t;

struct channel {
  char *name;
  int watching; /* the Redis subscription is confirmed */
  int anchored; /* epoch and hi are known */
  char epoch[EPOCH_MAX];
  /* The log: frames of offsets hi-count+1 .. hi, at log[first .. first+count). */
  sq_msg_t **log;
  size_t log_first, log_count, log_alloc;
  uint64_t hi;
  /* The last snapshot read, at snap_off, by the read of generation snap_gen. */
  int has_snap;
  char *snap;
  size_t snap_len;
  uint64_t snap_off, snap_gen;
  /* Live events past a gap (offset > hi + 1), ascending, at most `cache`. */
  raw_event_t *pend;
  size_t npend, pend_alloc;
  /* Lowest offset history holds as of the last history read (0 = not known). */
  uint64_t hist_first;
  /* Reads: one at a time. */
  int reading, read_hist, read_catchup;
  uint64_t read_seq, read_after;
  uint64_t retry_at_ms;
  uint32_t failures;
  int catchup; /* (re)subscribed in Redis: events may have been missed; read after hi */
  uint64_t top_seen, top_seen_at_ms; /* a read showed offsets up to top_seen > hi */
  /* What waiting subscriptions need (recomputed by serve_waiting). */
  int need_snap;
  uint64_t need_hist_after;   /* UINT64_MAX = none */
  char need_epoch[EPOCH_MAX]; /* before anchoring: the epoch of the subscription that set it */
  sq_hub_sub_t *subs;
  size_t nsubs;
  uint64_t linger_until_ms; /* 0 = not lingering */
};

struct sq_hub {
  sq_hub_config_t cfg;
  sq_hub_iface_t iface;
  void *ctx;
  sq_map_t *channels;
  size_t nsubs;
  sq_hub_stats_t stats;
};

/* ---- channel table ---- */

static channel_t *find_channel(sq_hub_t *h, const char *name) {
  return sq_map_get(h->channels, name);
}

static channel_t *add_channel(sq_hub_t *h, const char *name) {
  channel_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->name = sq_strdup(name);
  if (!c->name || sq_map_put(h->channels, name, c) != 0) {
    free(c->name);
    free(c);
    return NULL;
  }
  c->need_hist_after = UINT64_MAX;
  return c;
}

static void log_clear(channel_t *c) {
  for (size_t i = 0; i < c->log_count; i++) sq_msg_unref(c->log[c->log_first + i]);
  c->log_first = c->log_count = 0;
}

static void pend_clear(channel_t *c) {
  for (size_t i = 0; i < c->npend; i++) free(c->pend[i].data);
  c->npend = 0;
}

static void free_channel_data(channel_t *c) {
  log_clear(c);
  free(c->log);
  pend_clear(c);
  free(c->pend);
  free(c->snap);
  while (c->subs) {
    sq_hub_sub_t *s = c->subs;
    c->subs = s->next;
    free(s);
  }
  free(c->name);
  free(c);
}

static void remove_channel(sq_hub_t *h, channel_t *c) {
  sq_map_del(h->channels, c->name);
  h->nsubs -= c->nsubs;
  free_channel_data(c);
}

/* ---- the log ---- */

static uint64_t log_lo(const channel_t *c) {
  return c->hi - c->log_count + 1;
}

static int log_reserve(channel_t *c, size_t extra) {
  if (c->log_first + c->log_count + extra <= c->log_alloc) return 0;
  if (c->log_first > 0) {
    memmove(c->log, c->log + c->log_first, c->log_count * sizeof(*c->log));
    c->log_first = 0;
    if (c->log_count + extra <= c->log_alloc) return 0;
  }
  size_t n = c->log_alloc ? c->log_alloc * 2 : 64;
  while (n < c->log_count + extra) n *= 2;
  sq_msg_t **nl = realloc(c->log, n * sizeof(*nl));
  if (!nl) return -1;
  c->log = nl;
  c->log_alloc = n;
  return 0;
}

static void log_trim(sq_hub_t *h, channel_t *c) {
  while (c->log_count > h->cfg.cache) {
    sq_msg_unref(c->log[c->log_first]);
    c->log_first++;
    c->log_count--;
  }
  if (c->log_count == 0) c->log_first = 0;
}

static sq_msg_t *event_frame(const channel_t *c, uint64_t offset, const char *data, size_t len) {
  sq_msg_t *m = sq_msg_printf("{\"type\":\"event\",\"channel\":\"%s\",\"offset\":%" PRIu64
                              ",\"epoch\":\"%s\",\"data\":%.*s}",
                              c->name, offset, c->epoch, (int)len, data);
  if (m) m->offset = offset;
  return m;
}

static void deliver(sq_hub_t *h, sq_hub_sub_t *s, sq_msg_t *m) {
  h->iface.deliver(h->ctx, s->sink, m); /* a full queue closes the client; nothing to undo here */
}

/* Appends the event hi+1 and sends it to every active subscription that has not had it. */
static void append(sq_hub_t *h, channel_t *c, const char *data, size_t len) {
  sq_msg_t *m = event_frame(c, c->hi + 1, data, len);
  if (!m || log_reserve(c, 1) != 0) {
    /* Out of memory: the event stays missing; the next one makes a gap that history fills. */
    sq_msg_unref(m);
    return;
  }
  c->log[c->log_first + c->log_count++] = m;
  c->hi++;
  if (c->top_seen <= c->hi) c->top_seen = 0;
  h->stats.events_in++;
  for (sq_hub_sub_t *s = c->subs; s; s = s->next) {
    if (s->state != SUB_ACTIVE || m->offset <= s->pos) continue;
    deliver(h, s, m);
    s->pos = m->offset;
  }
  log_trim(h, c);
}

static void pend_drain(sq_hub_t *h, channel_t *c) {
  size_t i = 0;
  for (; i < c->npend && c->pend[i].offset <= c->hi + 1; i++) {
    if (c->pend[i].offset == c->hi + 1) append(h, c, c->pend[i].data, c->pend[i].len);
    free(c->pend[i].data);
  }
  if (i) {
    memmove(c->pend, c->pend + i, (c->npend - i) * sizeof(*c->pend));
    c->npend -= i;
  }
}

static void pend_add(sq_hub_t *h, channel_t *c, const sq_hub_event_t *ev) {
  size_t i = c->npend;
  while (i > 0 && c->pend[i - 1].offset > ev->offset) i--;
  if (i > 0 && c->pend[i - 1].offset == ev->offset) return; /* duplicate */
  if (c->npend >= h->cfg.cache) return;                     /* bounded: history will bring it */
  if (c->npend == c->pend_alloc) {
    size_t n = c->pend_alloc ? c->pend_alloc * 2 : 16;
    raw_event_t *np = realloc(c->pend, n * sizeof(*np));
    if (!np) return;
    c->pend = np;
    c->pend_alloc = n;
  }
  char *copy = malloc(ev->len + 1);
  if (!copy) return;
  memcpy(copy, ev->data, ev->len);
  copy[ev->len] = '\0';
  memmove(c->pend + i + 1, c->pend + i, (c->npend - i) * sizeof(*c->pend));
  c->pend[i] = (raw_event_t){ev->offset, copy, ev->len};
  c->npend++;
}

/* ---- subscriptions ---- */

static void send_start(sq_hub_t *h, channel_t *c, sq_hub_sub_t *s, uint64_t pos, int recovered) {
  const char *state = c->has_snap ? c->snap : "null";
  int state_len = c->has_snap ? (int)c->snap_len : 4;
  sq_msg_t *m;
  if (s->mode == START_RESYNC) {
    m = sq_msg_printf(
        "{\"type\":\"resync\",\"channel\":\"%s\",\"reason\":\"%s\",\"epoch\":\"%s\","
        "\"offset\":%" PRIu64 ",\"snapshot\":{\"offset\":%" PRIu64 ",\"state\":%.*s}}",
        c->name, s->resync_reason, c->epoch, pos, c->snap_off, state_len, state);
    h->stats.resyncs++;
  } else {
    m = sq_msg_printf(
        "{\"type\":\"subscribed\",\"channel\":\"%s\",\"epoch\":\"%s\",\"offset\":%" PRIu64
        ",\"recovered\":%s,\"snapshot\":{\"offset\":%" PRIu64 ",\"state\":%.*s}}",
        c->name, c->epoch, pos, recovered ? "true" : "false", c->snap_off, state_len, state);
  }
  if (m) {
    deliver(h, s, m);
    sq_msg_unref(m);
  }
  s->pos = pos;
  s->state = SUB_ACTIVE;
  /* Replay what the log holds after pos; from now on append() keeps the subscription current. */
  uint64_t lo = log_lo(c);
  for (uint64_t o = pos + 1 > lo ? pos + 1 : lo; o <= c->hi; o++) {
    deliver(h, s, c->log[c->log_first + (o - lo)]);
    s->pos = o;
  }
}

static void become_resync(sq_hub_sub_t *s, const char *reason) {
  s->mode = START_RESYNC;
  s->resync_reason = reason;
}

/* Starts s if the channel has what it needs; else records the need on the channel. */
static void try_start(sq_hub_t *h, channel_t *c, sq_hub_sub_t *s) {
  if (!c->anchored) {
    if (s->mode == START_RESUME && s->want_offset < c->need_hist_after) {
      c->need_hist_after = s->want_offset; /* ask for it in the anchoring read */
      snprintf(c->need_epoch, sizeof c->need_epoch, "%s", s->want_epoch);
    }
    return;
  }
  uint64_t lo = log_lo(c);
  int fresh = c->has_snap && c->snap_gen >= s->need_gen;
  if (!c->has_snap || c->snap_gen < s->start_gen) {
    /* Every start carries a snapshot read after the subscription came (one read serves all
     * the subscriptions waiting for it), so the state it shows is current; that read brings the
     * history the log lacks too. */
    c->need_snap = 1;
    if (s->mode == START_RESUME && s->want_offset + 1 < lo &&
        !(c->hist_first && s->want_offset + 1 < c->hist_first) &&
        s->want_offset < c->need_hist_after)
      c->need_hist_after = s->want_offset;
    return;
  }
  if (s->mode == START_RESUME) {
    uint64_t x = s->want_offset;
    int other_epoch = x > 0 && strcmp(s->want_epoch, c->epoch) != 0;
    int ahead = x > (c->hi > c->snap_off ? c->hi : c->snap_off);
    if ((other_epoch || ahead) && !fresh) {
      c->need_snap = 1; /* our view may be older than the client's: a newer read decides */
      return;
    }
    if (other_epoch) {
      become_resync(s, "epoch_changed");
    } else if (ahead) {
      become_resync(s, "offset_ahead");
    } else if (x + 1 >= lo) {
      send_start(h, c, s, x, 1);
      return;
    } else if (c->hist_first && x + 1 < c->hist_first) {
      become_resync(s, "history_trimmed");
    } else {
      if (x < c->need_hist_after) c->need_hist_after = x;
      return;
    }
  }
  /* FRESH or RESYNC: from a snapshot the log continues without a hole. */
  if (c->has_snap && c->snap_off + 1 >= lo) {
    send_start(h, c, s, c->snap_off, 0);
    return;
  }
  c->need_snap = 1;
}

static void serve_waiting(sq_hub_t *h, channel_t *c) {
  c->need_snap = 0;
  c->need_hist_after = UINT64_MAX;
  c->need_epoch[0] = '\0';
  for (sq_hub_sub_t *s = c->subs; s; s = s->next)
    if (s->state == SUB_WAITING) try_start(h, c, s);
}

static void issue_read(sq_hub_t *h, channel_t *c, int with_hist, uint64_t after) {
  c->reading = 1;
  c->read_seq++;
  c->read_hist = with_hist;
  c->read_after = with_hist ? after : 0;
  c->read_catchup = c->catchup && with_hist && after <= c->hi;
  h->stats.reads++;
  h->iface.read(h->ctx, c->name, with_hist, c->read_after, c->anchored ? c->epoch : c->need_epoch);
}

/* Serves what can be served, then starts the one read the channel needs next, if any. */
static void progress(sq_hub_t *h, channel_t *c, uint64_t now_ms) {
  serve_waiting(h, c);
  log_trim(h, c);
  if (!c->watching || c->reading || now_ms < c->retry_at_ms) return;
  int need = !c->anchored || c->need_snap;
  uint64_t after = c->need_hist_after;
  if (c->anchored) {
    int gap = c->npend > 0 || c->catchup ||
              (c->top_seen > c->hi && now_ms - c->top_seen_at_ms >= h->cfg.stall_ms);
    if (gap && c->hi < after) after = c->hi;
  }
  if (after != UINT64_MAX) need = 1;
  if (need) issue_read(h, c, after != UINT64_MAX, after == UINT64_MAX ? 0 : after);
}

/* The channel's history is not the one its log came from (epoch changed) or cannot be made
 * contiguous again: forget the log; every active subscription restarts with a resync. Live
 * events past the gap are kept when they belong to the same epoch (keep_pend). */
static void reset_channel(sq_hub_t *h, channel_t *c, const char *reason, int keep_pend) {
  log_clear(c);
  if (!keep_pend) pend_clear(c);
  c->anchored = 0;
  c->has_snap = 0;
  c->hist_first = 0;
  c->top_seen = 0;
  c->catchup = 0;
  for (sq_hub_sub_t *s = c->subs; s; s = s->next) {
    if (s->state == SUB_ACTIVE) {
      s->state = SUB_WAITING;
      become_resync(s, reason);
    }
  }
}

/* A channel that never had an event (its job or group did not exist yet: offset 0, no epoch)
 * takes the epoch its first events bring: nothing was lost, its history just began. */
static int adopts_epoch(const channel_t *c, const char *epoch) {
  return c->epoch[0] == '\0' && c->hi == 0 && epoch[0] != '\0';
}

/* ---- public ---- */

sq_hub_t *sq_hub_new(const sq_hub_config_t *cfg, const sq_hub_iface_t *iface, void *ctx) {
  sq_hub_t *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->cfg = *cfg;
  if (h->cfg.cache < 1) h->cfg.cache = 1;
  h->iface = *iface;
  h->ctx = ctx;
  if (!(h->channels = sq_map_new())) {
    free(h);
    return NULL;
  }
  return h;
}

static void free_each(const char *key, void *value, void *data) {
  free_channel_data(value);
  (void)key;
  (void)data;
}

void sq_hub_free(sq_hub_t *h) {
  if (!h) return;
  sq_map_each(h->channels, free_each, NULL);
  sq_map_free(h->channels);
  free(h);
}

sq_hub_sub_t *sq_hub_subscribe(sq_hub_t *h, const char *channel, void *sink, int has_offset,
                               uint64_t offset, const char *epoch, uint64_t now_ms) {
  channel_t *c = find_channel(h, channel);
  int created = 0;
  if (!c) {
    if (!(c = add_channel(h, channel))) return NULL;
    created = 1;
  }
  sq_hub_sub_t *s = calloc(1, sizeof(*s));
  if (!s) {
    if (created) remove_channel(h, c);
    return NULL;
  }
  s->ch = c;
  s->sink = sink;
  s->state = SUB_WAITING;
  s->mode = has_offset ? START_RESUME : START_FRESH;
  s->want_offset = offset;
  snprintf(s->want_epoch, sizeof s->want_epoch, "%s", epoch ? epoch : "");
  s->need_gen = c->read_seq + 1;
  s->start_gen = c->reading ? c->read_seq : c->read_seq + 1;
  /* Append at the tail: waiting subscriptions start in the order they came. */
  sq_hub_sub_t **pp = &c->subs;
  sq_hub_sub_t *prev = NULL;
  while (*pp) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  *pp = s;
  s->prev = prev;
  c->nsubs++;
  h->nsubs++;
  c->linger_until_ms = 0;
  if (created) h->iface.watch(h->ctx, c->name);
  progress(h, c, now_ms);
  return s;
}

void sq_hub_unsubscribe(sq_hub_t *h, sq_hub_sub_t *s, uint64_t now_ms) {
  if (!s) return;
  channel_t *c = s->ch;
  if (s->prev)
    s->prev->next = s->next;
  else
    c->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  free(s);
  c->nsubs--;
  h->nsubs--;
  if (c->nsubs == 0) {
    c->linger_until_ms = now_ms + h->cfg.linger_ms;
    if (c->linger_until_ms == 0) c->linger_until_ms = 1;
  }
}

void sq_hub_on_watching(sq_hub_t *h, const char *channel, uint64_t now_ms) {
  channel_t *c = find_channel(h, channel);
  if (!c) return;
  c->watching = 1;
  if (c->anchored) c->catchup = 1;
  progress(h, c, now_ms);
}

static void down_each(const char *key, void *value, void *data) {
  ((channel_t *)value)->watching = 0;
  (void)key;
  (void)data;
}

void sq_hub_on_lost(sq_hub_t *h, const char *channel) {
  channel_t *c = find_channel(h, channel);
  if (c) c->watching = 0;
}

void sq_hub_on_source_down(sq_hub_t *h) {
  sq_map_each(h->channels, down_each, NULL);
}

void sq_hub_on_live(sq_hub_t *h, const char *channel, const sq_hub_event_t *ev, const char *epoch,
                    uint64_t now_ms) {
  channel_t *c = find_channel(h, channel);
  if (!c || !c->watching) return;
  if (c->anchored && epoch && strcmp(epoch, c->epoch) != 0) {
    if (adopts_epoch(c, epoch))
      snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    else
      reset_channel(h, c, "epoch_changed", 0);
  }
  if (!c->anchored) {
    pend_add(h, c, ev); /* sorted out against the anchoring read's snapshot */
  } else if (ev->offset == c->hi + 1) {
    append(h, c, ev->data, ev->len);
    pend_drain(h, c);
  } else if (ev->offset > c->hi + 1) {
    pend_add(h, c, ev); /* a gap: the next read fills it from history */
  }                     /* else a duplicate of what the log has */
  progress(h, c, now_ms);
}

/* Puts the history events older than the log in front of it, if they join it without a hole. */
static void prepend_history(sq_hub_t *h, channel_t *c, const sq_hub_read_t *r) {
  uint64_t lo = log_lo(c);
  size_t n = 0, start = 0;
  for (size_t i = 0; i < r->nevents && r->events[i].offset < lo; i++) n = i + 1;
  if (n == 0) return;
  for (size_t i = 1; i < n; i++)
    if (r->events[i].offset != r->events[i - 1].offset + 1) start = i; /* keep the tail run */
  if (r->events[n - 1].offset != lo - 1) {
    if (!c->hist_first || c->hist_first < lo) c->hist_first = lo; /* treat below lo as gone */
    return;
  }
  size_t k = n - start;
  sq_msg_t **tmp = malloc(k * sizeof(*tmp));
  if (!tmp) return;
  size_t got = 0;
  for (size_t i = start; i < n; i++) {
    const sq_hub_event_t *e = &r->events[i];
    if (!(tmp[got] = event_frame(c, e->offset, e->data, e->len))) break;
    got++;
  }
  if (got == k && log_reserve(c, k) == 0) {
    memmove(c->log + c->log_first + k, c->log + c->log_first, c->log_count * sizeof(*c->log));
    memcpy(c->log + c->log_first, tmp, k * sizeof(*tmp));
    c->log_count += k;
  } else {
    for (size_t i = 0; i < got; i++) sq_msg_unref(tmp[i]);
  }
  free(tmp);
  (void)h;
}

static void anchor(channel_t *c, const char *epoch, const sq_hub_read_t *r) {
  c->anchored = 1;
  snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
  c->hi = r->snap_offset;
  c->hist_first = 0;
  c->top_seen = 0;
}

void sq_hub_on_read(sq_hub_t *h, const char *channel, const sq_hub_read_t *r, uint64_t now_ms) {
  channel_t *c = find_channel(h, channel);
  if (!c) return;
  uint64_t gen = c->read_seq;
  int was_catchup = c->read_catchup;
  c->reading = 0;
  c->read_catchup = 0;
  if (r->status < 0) {
    uint64_t delay = RETRY_MIN_MS << (c->failures < 6 ? c->failures : 6);
    c->failures++;
    c->retry_at_ms = now_ms + (delay > RETRY_MAX_MS ? RETRY_MAX_MS : delay);
    return;
  }
  c->failures = 0;
  c->retry_at_ms = 0;
  const char *epoch = r->epoch ? r->epoch : "";
  if (strlen(epoch) >= EPOCH_MAX ||
      !(epoch[0] == '\0' || sq_proto_valid_name(epoch, strlen(epoch), EPOCH_MAX - 1)))
    epoch = "invalid";
  if (c->anchored && strcmp(epoch, c->epoch) != 0) {
    if (adopts_epoch(c, epoch)) {
      snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    } else {
      reset_channel(h, c, "epoch_changed", 0);
      was_catchup = 0;
    }
  }
  if (!c->anchored) anchor(c, epoch, r);
  char *snap = malloc(r->snapshot_len + 1);
  if (snap) {
    memcpy(snap, r->snapshot, r->snapshot_len);
    snap[r->snapshot_len] = '\0';
    free(c->snap);
    c->snap = snap;
    c->snap_len = r->snapshot_len;
    c->snap_off = r->snap_offset;
    c->snap_gen = gen;
    c->has_snap = 1;
  }
  if (r->snap_offset > c->hi && r->snap_offset > c->top_seen) {
    c->top_seen = r->snap_offset;
    c->top_seen_at_ms = now_ms;
  }
  if (r->has_history) {
    /* Nothing below first_offset (or below snap+1 when history is empty) can be read again. */
    uint64_t first = r->first_offset ? r->first_offset : r->snap_offset + 1;
    if (first > c->hist_first) c->hist_first = first;
    prepend_history(h, c, r);
    for (size_t i = 0; i < r->nevents; i++) {
      const sq_hub_event_t *e = &r->events[i];
      if (e->offset == c->hi + 1) append(h, c, e->data, e->len);
    }
    if (was_catchup) c->catchup = 0;
  }
  pend_drain(h, c);
  if (r->has_history && c->hi < r->snap_offset) {
    /* History ends at the snapshot, yet events after hi are neither in it nor in the log: they
     * were trimmed before we read them. Start over from this snapshot. */
    reset_channel(h, c, "history_trimmed", 1);
    anchor(c, epoch, r);
    c->has_snap = snap != NULL;
    c->hist_first = r->snap_offset + 1;
    pend_drain(h, c);
  }
  if (c->top_seen <= c->hi) c->top_seen = 0;
  progress(h, c, now_ms);
}

typedef struct {
  sq_hub_t *h;
  uint64_t now_ms;
} tick_ctx_t;

static void tick_each(const char *key, void *value, void *data) {
  tick_ctx_t *t = data;
  channel_t *c = value;
  if (c->nsubs == 0 && c->linger_until_ms && t->now_ms >= c->linger_until_ms) {
    t->h->iface.unwatch(t->h->ctx, c->name);
    remove_channel(t->h, c); /* deletes this entry only, as sq_map_each allows */
  } else {
    progress(t->h, c, t->now_ms);
  }
  (void)key;
}

void sq_hub_tick(sq_hub_t *h, uint64_t now_ms) {
  tick_ctx_t t = {h, now_ms};
  sq_map_each(h->channels, tick_each, &t);
}

static void count_each(const char *key, void *value, void *data) {
  *(size_t *)data += ((channel_t *)value)->log_count;
  (void)key;
}

void sq_hub_stats(const sq_hub_t *h, sq_hub_stats_t *out) {
  *out = h->stats;
  out->channels = sq_map_count(h->channels);
  out->subscriptions = h->nsubs;
  size_t cached = 0;
  sq_map_each(h->channels, count_each, &cached);
  out->cached_events = cached;
}
