/* The bridge hub on a fake event source and fake clients: one Redis subscription per channel,
 * snapshot start, resume from the log or one shared history read, live events arriving during a
 * read, duplicates, gaps, trimmed history, epoch changes, offsets ahead, source down + catch-up,
 * stalled live events, read failures, lingering channels. Every client must see each event once,
 * in order, or a resync. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_internal.h"
#include "check.h"

/* ---- fake world ---- */

#define MAX_FRAMES 4096
#define MAX_CALLS 256

typedef struct {
  char *frames[MAX_FRAMES];
  int n;
  int full; /* deliver refuses (queue full) */
} sink_t;

typedef struct {
  char channel[64];
  int with_hist;
  uint64_t after;
  char epoch[64];
} read_call_t;

static struct {
  char watched[MAX_CALLS][64];
  int nwatch;
  char unwatched[MAX_CALLS][64];
  int nunwatch;
  read_call_t reads[MAX_CALLS];
  int nreads;
} W;

static void fake_watch(void *ctx, const char *ch) {
  snprintf(W.watched[W.nwatch++], 64, "%s", ch);
  (void)ctx;
}
static void fake_unwatch(void *ctx, const char *ch) {
  snprintf(W.unwatched[W.nunwatch++], 64, "%s", ch);
  (void)ctx;
}
static void fake_read(void *ctx, const char *ch, int with_hist, uint64_t after, const char *epoch) {
  read_call_t *r = &W.reads[W.nreads++];
  snprintf(r->channel, sizeof r->channel, "%s", ch);
  r->with_hist = with_hist;
  r->after = after;
  snprintf(r->epoch, sizeof r->epoch, "%s", epoch);
  (void)ctx;
}
static int fake_deliver(void *ctx, void *sinkp, sq_msg_t *m) {
  sink_t *s = sinkp;
  if (s->full || s->n >= MAX_FRAMES) return -1;
  s->frames[s->n++] = strdup(sq_msg_text(m));
  (void)ctx;
  return 0;
}

static const sq_hub_iface_t iface = {fake_watch, fake_unwatch, fake_read, fake_deliver};

static sq_hub_t *new_hub(uint32_t cache) {
  memset(&W, 0, sizeof W);
  sq_hub_config_t cfg = {cache, 1000, 500};
  return sq_hub_new(&cfg, &iface, NULL);
}

static void sink_clear(sink_t *s) {
  for (int i = 0; i < s->n; i++) free(s->frames[i]);
  s->n = 0;
}

/* Frame i of s as JSON (borrowed into a static slot; freed on the next call). */
static json_t *frame(sink_t *s, int i) {
  static json_t *last;
  json_decref(last);
  last = s && i < s->n ? json_loads(s->frames[i], 0, NULL) : NULL;
  return last;
}
static const char *ftype(sink_t *s, int i) {
  json_t *j = frame(s, i);
  return j ? json_string_value(json_object_get(j, "type")) : "(none)";
}
static long long foffset(sink_t *s, int i) {
  json_t *j = frame(s, i);
  return j ? json_integer_value(json_object_get(j, "offset")) : -1;
}
static const char *freason(sink_t *s, int i) {
  json_t *j = frame(s, i);
  const char *r = j ? json_string_value(json_object_get(j, "reason")) : NULL;
  return r ? r : "(none)";
}

/* Checks that s's event frames from index `from` on are exactly offsets lo..hi in order. */
static void check_events(sink_t *s, int from, uint64_t lo, uint64_t hi) {
  int n = 0;
  for (int i = from; i < s->n; i++) {
    if (strcmp(ftype(s, i), "event") != 0) continue;
    CHECK_EQ_INT(foffset(s, i), (long long)(lo + (uint64_t)n));
    n++;
  }
  CHECK_EQ_INT(n, (long long)(hi + 1 - lo));
}

static char evbuf[64][64];
static sq_hub_event_t ev(uint64_t off) {
  static int k;
  char *b = evbuf[k++ % 64];
  int n = snprintf(b, 64, "{\"n\":%llu}", (unsigned long long)off);
  return (sq_hub_event_t){off, b, (size_t)n};
}

static void live(sq_hub_t *h, const char *ch, uint64_t off, uint64_t now) {
  sq_hub_event_t e = ev(off);
  sq_hub_on_live(h, ch, &e, NULL, now);
}

/* Answers the last read with snapshot at snap (epoch) and, if it asked, history events
 * max(after+1, first)..snap. */
static void answer(sq_hub_t *h, const char *epoch, uint64_t snap, uint64_t first, uint64_t now) {
  read_call_t *rc = &W.reads[W.nreads - 1];
  static sq_hub_event_t evs[4096];
  size_t n = 0;
  if (rc->with_hist && first)
    for (uint64_t o = rc->after + 1 > first ? rc->after + 1 : first; o <= snap; o++)
      evs[n++] = ev(o);
  char state[64];
  int sl = snprintf(state, sizeof state, "{\"done\":%llu}", (unsigned long long)snap);
  sq_hub_read_t r = {0, epoch, snap, state, (size_t)sl, rc->with_hist, evs, n, first};
  sq_hub_on_read(h, rc->channel, &r, now);
}

/* ---- tests ---- */

static void test_fresh_subscribe_and_live(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_sub_t *s = sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  CHECK(s != NULL);
  CHECK_EQ_INT(W.nwatch, 1);
  CHECK_EQ_INT(W.nreads, 0); /* nothing is read before the Redis subscription is confirmed */
  sq_hub_on_watching(h, "group:g", 1);
  CHECK_EQ_INT(W.nreads, 1);
  CHECK_EQ_INT(W.reads[0].with_hist, 0);
  answer(h, "e1", 5, 1, 2);
  CHECK_EQ_INT(a.n, 1);
  CHECK_STR(ftype(&a, 0), "subscribed");
  CHECK_EQ_INT(foffset(&a, 0), 5);
  live(h, "group:g", 6, 3);
  live(h, "group:g", 6, 3); /* duplicate */
  live(h, "group:g", 5, 3); /* already in the snapshot */
  live(h, "group:g", 7, 3);
  check_events(&a, 1, 6, 7);
  sq_hub_unsubscribe(h, s, 4);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_live_during_anchor_read(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "job:j", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "job:j", 1);
  /* Published while the snapshot is being read: 4 and 5 are in it, 6 is not. */
  live(h, "job:j", 4, 1);
  live(h, "job:j", 6, 1);
  live(h, "job:j", 5, 1);
  answer(h, "e1", 5, 1, 2);
  CHECK_STR(ftype(&a, 0), "subscribed");
  CHECK_EQ_INT(foffset(&a, 0), 5);
  check_events(&a, 1, 6, 6);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_resume_from_log_without_read(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0}, b = {0};
  sq_hub_subscribe(h, "group:g", &a, 1, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  CHECK_EQ_INT(W.reads[0].with_hist, 1); /* resume from 0 asks for history in the first read */
  CHECK_EQ_INT((long long)W.reads[0].after, 0);
  answer(h, "e1", 10, 1, 2);
  CHECK_STR(ftype(&a, 0), "subscribed");
  check_events(&a, 1, 1, 10);
  int reads = W.nreads;
  sq_hub_subscribe(h, "group:g", &b, 1, 3, "e1", 3);
  CHECK_EQ_INT(W.nreads, reads + 1); /* a fresh snapshot, but no history: the log has it */
  CHECK_EQ_INT(W.reads[W.nreads - 1].with_hist, 0);
  answer(h, "e1", 10, 1, 3);
  CHECK_STR(ftype(&b, 0), "subscribed");
  CHECK_EQ_INT(foffset(&b, 0), 3);
  check_events(&b, 1, 4, 10);
  live(h, "group:g", 11, 4);
  check_events(&a, 1, 1, 11);
  check_events(&b, 1, 4, 11);
  CHECK_EQ_INT(W.nwatch, 1); /* one Redis subscription for both */
  sink_clear(&a);
  sink_clear(&b);
  sq_hub_free(h);
}

static void test_resume_older_than_log_one_shared_read(void) {
  sq_hub_t *h = new_hub(4);
  sink_t a = {0}, b = {0}, c = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 6, 1, 2);
  for (uint64_t o = 7; o <= 10; o++) live(h, "group:g", o, 3); /* log keeps 7..10 */
  int reads = W.nreads;
  sq_hub_subscribe(h, "group:g", &b, 1, 2, "e1", 4);
  sq_hub_subscribe(h, "group:g", &c, 1, 4, "e1", 4);
  CHECK_EQ_INT(W.nreads, reads + 1); /* one read for both */
  CHECK_EQ_INT(W.reads[W.nreads - 1].with_hist, 1);
  CHECK_EQ_INT((long long)W.reads[W.nreads - 1].after, 2);
  live(h, "group:g", 11, 5); /* arrives while history is read */
  answer(h, "e1", 10, 1, 6);
  CHECK_EQ_INT(W.nreads, reads + 1);
  CHECK_STR(ftype(&b, 0), "subscribed");
  check_events(&b, 1, 3, 11);
  check_events(&c, 1, 5, 11);
  check_events(&a, 1, 7, 11);
  sink_clear(&a);
  sink_clear(&b);
  sink_clear(&c);
  sq_hub_free(h);
}

static void test_trimmed_history_resyncs(void) {
  sq_hub_t *h = new_hub(4);
  sink_t a = {0};
  sq_hub_subscribe(h, "group:g", &a, 1, 2, "e1", 0);
  sq_hub_on_watching(h, "group:g", 1);
  CHECK_STR(W.reads[0].epoch, "e1"); /* the client's position, before the channel knows one */
  answer(h, "e1", 20, 15, 2);        /* history only from 15 */
  CHECK_STR(ftype(&a, 0), "resync");
  CHECK_STR(freason(&a, 0), "history_trimmed");
  CHECK_EQ_INT(foffset(&a, 0), 20);
  live(h, "group:g", 21, 3);
  check_events(&a, 1, 21, 21);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_epoch_mismatch_needs_fresh_read(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0}, b = {0};
  sq_hub_subscribe(h, "job:j", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "job:j", 1);
  answer(h, "e1", 3, 1, 2);
  int reads = W.nreads;
  sq_hub_subscribe(h, "job:j", &b, 1, 2, "e0", 3);
  CHECK_EQ_INT(b.n, 0); /* our epoch may be stale: read again before deciding */
  CHECK_EQ_INT(W.nreads, reads + 1);
  answer(h, "e1", 3, 1, 4);
  CHECK_STR(ftype(&b, 0), "resync");
  CHECK_STR(freason(&b, 0), "epoch_changed");
  CHECK_EQ_INT(foffset(&b, 0), 3);
  sink_clear(&a);
  sink_clear(&b);
  sq_hub_free(h);
}

static void test_epoch_change_while_live(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 3, 1, 2);
  sq_hub_event_t e = ev(1);
  sq_hub_on_live(h, "group:g", &e, "e2", 3); /* history was lost and restarted */
  CHECK_EQ_INT(W.nreads, 2);
  answer(h, "e2", 1, 1, 4);
  CHECK_STR(ftype(&a, 1), "resync");
  CHECK_STR(freason(&a, 1), "epoch_changed");
  CHECK_EQ_INT(foffset(&a, 1), 1);
  live(h, "group:g", 2, 5);
  check_events(&a, 2, 2, 2);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_unknown_channel_adopts_first_epoch(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "job:j", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "job:j", 1);
  answer(h, "", 0, 0, 2); /* no such job yet: offset 0, no epoch */
  CHECK_STR(ftype(&a, 0), "subscribed");
  sq_hub_event_t e1 = ev(1), e2 = ev(2);
  sq_hub_on_live(h, "job:j", &e1, "e7", 3); /* its history begins: not a lost one */
  sq_hub_on_live(h, "job:j", &e2, "e7", 3);
  check_events(&a, 1, 1, 2);
  CHECK_EQ_INT(a.n, 3);
  CHECK(strstr(a.frames[2], "\"epoch\":\"e7\"") != NULL);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_gap_filled_from_history(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 10, 1, 2);
  live(h, "group:g", 11, 3);
  live(h, "group:g", 14, 3); /* 12 and 13 were missed */
  CHECK_EQ_INT(W.reads[W.nreads - 1].with_hist, 1);
  CHECK_EQ_INT((long long)W.reads[W.nreads - 1].after, 11);
  live(h, "group:g", 15, 3);
  answer(h, "e1", 14, 1, 4);
  check_events(&a, 1, 11, 15);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_gap_trimmed_resyncs(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 10, 1, 2);
  live(h, "group:g", 40, 3);
  answer(h, "e1", 40, 30, 4); /* 11..29 are gone */
  CHECK_STR(ftype(&a, 1), "resync");
  CHECK_STR(freason(&a, 1), "history_trimmed");
  CHECK_EQ_INT(foffset(&a, 1), 40);
  live(h, "group:g", 41, 5);
  check_events(&a, 2, 41, 41);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_source_down_catch_up(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "job:j", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "job:j", 1);
  answer(h, "e1", 2, 1, 2);
  sq_hub_on_source_down(h);
  live(h, "job:j", 3, 3); /* not watching: ignored */
  int reads = W.nreads;
  sq_hub_tick(h, 10);
  CHECK_EQ_INT(W.nreads, reads); /* no reads while the subscription is down */
  sq_hub_on_watching(h, "job:j", 11);
  CHECK_EQ_INT(W.nreads, reads + 1);
  CHECK_EQ_INT(W.reads[W.nreads - 1].with_hist, 1);
  CHECK_EQ_INT((long long)W.reads[W.nreads - 1].after, 2);
  CHECK_STR(W.reads[W.nreads - 1].epoch, "e1"); /* the position the catch-up resumes from */
  answer(h, "e1", 4, 1, 12);
  check_events(&a, 1, 3, 4);
  sq_hub_tick(h, 20);
  CHECK_EQ_INT(W.nreads, reads + 1); /* caught up: no more reads */
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_offset_ahead_resyncs(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "group:g", &a, 1, 50, "e1", 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 10, 1, 2);
  CHECK_STR(ftype(&a, 0), "resync");
  CHECK_STR(freason(&a, 0), "offset_ahead");
  CHECK_EQ_INT(foffset(&a, 0), 10);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_stalled_live_event_is_read(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0}, b = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 10, 1, 2);
  sq_hub_subscribe(h, "group:g", &b, 1, 12, "e1", 3); /* b saw 12 elsewhere: we must read */
  answer(h, "e1", 12, 1, 4);                          /* the read shows 11, 12; no live event */
  CHECK_STR(ftype(&b, 0), "subscribed");
  int reads = W.nreads;
  sq_hub_tick(h, 100);
  CHECK_EQ_INT(W.nreads, reads); /* waits stall_ms for the live messages */
  sq_hub_tick(h, 600);
  CHECK_EQ_INT(W.nreads, reads + 1);
  CHECK_EQ_INT((long long)W.reads[W.nreads - 1].after, 10);
  answer(h, "e1", 12, 1, 601);
  check_events(&a, 1, 11, 12);
  check_events(&b, 1, 1, 0); /* b already had them */
  live(h, "group:g", 13, 602);
  check_events(&b, 1, 13, 13);
  sink_clear(&a);
  sink_clear(&b);
  sq_hub_free(h);
}

static void test_read_failure_retried(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0};
  sq_hub_subscribe(h, "job:j", &a, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "job:j", 1);
  sq_hub_read_t fail = {.status = SQ_EREDIS};
  sq_hub_on_read(h, "job:j", &fail, 2);
  CHECK_EQ_INT(a.n, 0);
  CHECK_EQ_INT(W.nreads, 1);
  sq_hub_tick(h, 50);
  CHECK_EQ_INT(W.nreads, 1); /* backoff */
  sq_hub_tick(h, 200);
  CHECK_EQ_INT(W.nreads, 2);
  answer(h, "e1", 0, 0, 201);
  CHECK_STR(ftype(&a, 0), "subscribed");
  CHECK_EQ_INT(foffset(&a, 0), 0);
  live(h, "job:j", 1, 202);
  check_events(&a, 1, 1, 1);
  sink_clear(&a);
  sq_hub_free(h);
}

static void test_many_subscribers_share_and_linger(void) {
  sq_hub_t *h = new_hub(64);
  enum { N = 200 };
  static sink_t sinks[N];
  sq_hub_sub_t *subs[N];
  memset(sinks, 0, sizeof sinks);
  for (int i = 0; i < N; i++) subs[i] = sq_hub_subscribe(h, "group:g", &sinks[i], 1, 0, "", 0);
  CHECK_EQ_INT(W.nwatch, 1);
  sq_hub_on_watching(h, "group:g", 1);
  CHECK_EQ_INT(W.nreads, 1);
  answer(h, "", 5, 1, 2);
  for (uint64_t o = 6; o <= 30; o++) live(h, "group:g", o, 3);
  CHECK_EQ_INT(W.nreads, 1);
  int ok = 1;
  for (int i = 0; i < N; i++) {
    ok &= sinks[i].n == 31;
    for (int k = 1; k < sinks[i].n; k++) ok &= foffset(&sinks[i], k) == k;
  }
  CHECK(ok);
  sq_hub_stats_t st;
  sq_hub_stats(h, &st);
  CHECK_EQ_INT(st.channels, 1);
  CHECK_EQ_INT(st.subscriptions, N);
  for (int i = 0; i < N; i++) sq_hub_unsubscribe(h, subs[i], 100);
  sq_hub_tick(h, 500);
  CHECK_EQ_INT(W.nunwatch, 0); /* lingering */
  sink_clear(&sinks[0]);
  sq_hub_sub_t *again = sq_hub_subscribe(h, "group:g", &sinks[0], 1, 28, "", 600);
  CHECK_EQ_INT(W.nwatch, 1);                        /* still followed: no new Redis subscription */
  CHECK_EQ_INT(W.reads[W.nreads - 1].with_hist, 0); /* the log has the events */
  answer(h, "", 30, 1, 601);
  check_events(&sinks[0], 1, 29, 30);
  sq_hub_unsubscribe(h, again, 700);
  sq_hub_tick(h, 1600);
  CHECK_EQ_INT(W.nunwatch, 0);
  sq_hub_tick(h, 1800);
  CHECK_EQ_INT(W.nunwatch, 1);
  sq_hub_stats(h, &st);
  CHECK_EQ_INT(st.channels, 0);
  for (int i = 0; i < N; i++) sink_clear(&sinks[i]);
  sq_hub_free(h);
}

static void test_full_sink_does_not_stop_others(void) {
  sq_hub_t *h = new_hub(64);
  sink_t a = {0}, b = {0};
  sq_hub_subscribe(h, "group:g", &a, 0, 0, NULL, 0);
  sq_hub_subscribe(h, "group:g", &b, 0, 0, NULL, 0);
  sq_hub_on_watching(h, "group:g", 1);
  answer(h, "e1", 0, 0, 2);
  a.full = 1;
  live(h, "group:g", 1, 3);
  live(h, "group:g", 2, 3);
  check_events(&b, 1, 1, 2);
  CHECK_EQ_INT(a.n, 1);
  sink_clear(&a);
  sink_clear(&b);
  sq_hub_free(h);
}

int main(void) {
  test_fresh_subscribe_and_live();
  test_live_during_anchor_read();
  test_resume_from_log_without_read();
  test_resume_older_than_log_one_shared_read();
  test_trimmed_history_resyncs();
  test_epoch_mismatch_needs_fresh_read();
  test_epoch_change_while_live();
  test_unknown_channel_adopts_first_epoch();
  test_gap_filled_from_history();
  test_gap_trimmed_resyncs();
  test_source_down_catch_up();
  test_offset_ahead_resyncs();
  test_stalled_live_event_is_read();
  test_read_failure_retried();
  test_many_subscribers_share_and_linger();
  test_full_sink_does_not_stop_others();
  frame(NULL, 0);
  CHECK_DONE();
}
