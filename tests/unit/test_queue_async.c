/* Unit test of queue.c's async calls against a private redis-server (skipped when none is
 * installed): EVALSHA falls back to EVAL after SCRIPT FLUSH, our SHA-1 equals Redis's, and
 * heartbeat -> claim -> ack -> duplicate ack -> wait -> fenced claim -> sweep -> unregister
 * behave as the protocol says; fetched claims (docs/protocol.md "Fetched claims") deliver
 * fetched and inline jobs in claim order, leave gone jobs out (acked with how "!"), and fail as
 * a whole when the connection goes under a fetch; pending callbacks get SQ_EREDIS when the
 * connection is freed. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "queue/queue.h"
#include "queue/queue_internal.h"
#include "redis_proc.h"

static test_redis_t srv;

/* ---- the async chain: each callback checks its step and starts the next ---- */

static uv_loop_t loop;
static sq_redis_loop_t hooks;
static sq_redis_t *endpoint;
static sq_redis_conn_t *ac, *bac;
static int nready;
static sq_queue_t *q, *q2; /* q2: another worker (w2), whose sweeper recovers w1's jobs */
static int step;
static char *claimed_ids[4];
static char *fast_epoch; /* j0's: a fast run (docs/protocol.md "Fast runs") */
static redisContext *sc; /* synchronous: setup and checks between the async steps */

/* Fetched claims: worker wf of prefix tf serving models a and b. */
static sq_queue_t *qf;
static sq_claimed_t fetched[3]; /* what the mixed claim delivered, for its ack */
static int fetchfail_calls;

static const uint8_t fpayload[5] = {'F', 0, 0xfe, 'x', 'y'};

static void fetch_setup(void) {
  sq_error_t err = {0};
  /* In claim order once the rotation puts b first: f4 (b, fetched), then a's queue: f1 (in a
   * group: read by the script, inline), f0 (fetched), f2 (canceled while queued: its key is a
   * record), f3 (its hash deleted: no job at all). */
  CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f4", "b", "", "", 0, fpayload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f1", "a", "", "g", 0, fpayload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f0", "a", "", "", 0, fpayload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f2", "a", "", "", 0, fpayload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f3", "a", "", "", 0, fpayload, 5, &err), 1);
  char now[24];
  snprintf(now, sizeof now, "%llu", (unsigned long long)sq_clock_wall_ms());
  redisReply *r =
      redisCommand(sc, "EVAL %s 0 tf %s 600 job f2", sq_queue_script_source("cancel"), now);
  CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1);
  freeReplyObject(r);
  freeReplyObject(redisCommand(sc, "DEL tf:job:f3 tf:doc:f3")); /* the job lost */
}

/* After the mixed claim's ack, which went behind the gone jobs' ack on the same connection. */
static void fetch_check_after_ack(void) {
  redisReply *r = redisCommand(sc, "LRANGE tf:inflight:wf 0 -1");
  CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 0); /* the gone ones left too */
  freeReplyObject(r);
  r = redisCommand(sc, "GET tf:job:f3");
  CHECK(r && r->type == REDIS_REPLY_STRING && memmem(r->str, r->len, "job_not_found", 13) != NULL);
  freeReplyObject(r);
  r = redisCommand(sc, "ZSCORE tf:dead f3");
  CHECK(r && r->type == REDIS_REPLY_STRING); /* and a dead letter */
  freeReplyObject(r);
  r = redisCommand(sc, "GET tf:job:f2"); /* the cancel's record, left as it is */
  CHECK(r && r->type == REDIS_REPLY_STRING && memmem(r->str, r->len, "canceled", 8) != NULL &&
        memmem(r->str, r->len, "job_not_found", 13) == NULL);
  freeReplyObject(r);
  r = redisCommand(sc, "ZSCORE tf:dead f2");
  CHECK(r && r->type == REDIS_REPLY_NIL);
  freeReplyObject(r);
  /* Done records; the two fetched jobs' built here (fast runs): the offset after `queued`. */
  const char *done[] = {"f4", "f0", "f1"};
  static const char state_done[] =
      "\xa5state\xa4"
      "done";
  for (int i = 0; i < 3; i++) {
    r = redisCommand(sc, "GET tf:job:%s", done[i]);
    CHECK(r && r->type == REDIS_REPLY_STRING && r->len > 2 &&
          memmem(r->str, r->len, state_done, sizeof state_done - 1) != NULL &&
          memcmp(r->str + r->len - 2, "RF", 2) == 0);
    if (r && r->type == REDIS_REPLY_STRING && i < 2)
      CHECK(memmem(r->str, r->len, "\xa3off\x02", 5) != NULL);
    freeReplyObject(r);
  }
}

/* The last claim's fetch is still out when this PING's reply arrives (the PING went before the
 * claim's reply came, so the fetch queues behind it): closing now cuts the fetch off. */
static void close_under_fetch(sq_redis_conn_t *c, struct redisReply *reply, void *data);

static void next(void);

static void on_status(sq_queue_t *qq, int status, long long value, void *data) {
  const char *what = data;
  if (strcmp(what, "heartbeat") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 2); /* fresh lease */
  } else if (strcmp(what, "heartbeat2") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 1);
  } else if (strcmp(what, "wait") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 1); /* wake tokens were left by the enqueues */
  } else if (strcmp(what, "sweep") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 1); /* j2 recovered from the old lease */
  } else if (strcmp(what, "unregister") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 1);
  } else if (strcmp(what, "progress") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(value, 1); /* j2 runs here; "nope" does not */
  } else if (strcmp(what, "pending") == 0) {
    CHECK_EQ_INT(status, SQ_EREDIS); /* the connection was freed under it */
    step = 100;
    return;
  }
  next();
}

static void on_claim(sq_queue_t *qq, int status, sq_claimed_t *jobs, size_t n, void *data) {
  const char *what = data;
  if (strcmp(what, "claim") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(n, 2);
    for (size_t i = 0; i < n && i < 2; i++) {
      CHECK_STR(jobs[i].model, "m");
      CHECK_EQ_INT(jobs[i].attempt, 1);
      CHECK(jobs[i].enqueued_ms > 0);
      CHECK_EQ_INT(jobs[i].payload_len, 5);
      CHECK(memcmp(jobs[i].payload,
                   "P\0\xff"
                   "ab",
                   5) == 0);
      claimed_ids[i] = strdup(jobs[i].id);
    }
    if (n >= 2) {
      CHECK_STR(claimed_ids[0], "j0");
      CHECK_STR(claimed_ids[1], "j1");
      /* j0 runs fast (the claim returns its position), j1 (in a group) does not. */
      CHECK(jobs[0].epoch != NULL && jobs[0].off == 1);
      CHECK(jobs[1].epoch == NULL);
      if (jobs[0].epoch) fast_epoch = strdup(jobs[0].epoch);
    }
  } else if (strcmp(what, "claim1") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(n, 1);
  } else if (strcmp(what, "fenced") == 0) {
    CHECK_EQ_INT(status, SQ_ELEASE_LOST);
    CHECK(jobs == NULL && n == 0);
  } else if (strcmp(what, "none") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK(jobs == NULL && n == 0);
  } else if (strcmp(what, "mixed") == 0) {
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(n, 3); /* f2 and f3 are gone: left out */
    static const char *const want_id[] = {"f4", "f1", "f0"}, *const want_model[] = {"b", "a", "a"};
    for (size_t i = 0; i < n && i < 3; i++) {
      CHECK_STR(jobs[i].id, want_id[i]);
      CHECK_STR(jobs[i].model, want_model[i]);
      CHECK_EQ_INT(jobs[i].attempt, 1);
      CHECK(jobs[i].enqueued_ms > 0);
      CHECK_EQ_INT(jobs[i].payload_len, 5);
      CHECK(memcmp(jobs[i].payload, fpayload, 5) == 0);
      /* Fetched: a fast run at the `queued` event; the group's job runs the ordinary way. */
      if (i == 1) {
        CHECK(jobs[i].epoch == NULL);
      } else {
        CHECK(jobs[i].epoch != NULL && jobs[i].epoch[0] != '\0');
        CHECK_EQ_INT(jobs[i].off, 1);
      }
      fetched[i] = jobs[i]; /* kept for the ack, freed at the end */
    }
    for (size_t i = 3; i < n; i++) sq_claimed_free(&jobs[i]);
    free(jobs);
    next();
    return;
  } else if (strcmp(what, "fetchfail") == 0) {
    fetchfail_calls++;
    CHECK_EQ_INT(status, SQ_EREDIS);
    CHECK(jobs == NULL && n == 0);
    return; /* the pending heartbeat ends the chain */
  }
  for (size_t i = 0; i < n; i++) sq_claimed_free(&jobs[i]);
  free(jobs);
  next();
}

static void on_ack(sq_queue_t *qq, int status, const int *per_job, size_t n, void *data) {
  const char *what = data;
  CHECK_EQ_INT(status, 0);
  if (strcmp(what, "ackf") == 0) {
    CHECK_EQ_INT(n, 3);
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(per_job[i], SQ_CODE_ACK_FINISHED);
    fetch_check_after_ack();
    next();
    return;
  }
  CHECK_EQ_INT(n, 2);
  int want = strcmp(what, "ack") == 0 ? 1 : 2;
  for (size_t i = 0; i < n; i++) CHECK_EQ_INT(per_job[i], want);
  next();
}

static void close_under_fetch(sq_redis_conn_t *c, struct redisReply *reply, void *data) {
  (void)c;
  (void)data;
  CHECK(reply != NULL);
  CHECK_EQ_INT(fetchfail_calls, 0); /* its fetch has not answered yet */
  CHECK_EQ_INT(sq_queue_heartbeat(q, ac, on_status, "pending"), 0);
  sq_redis_close(endpoint, NULL, NULL); /* calls the pending callbacks with a NULL reply */
  ac = bac = NULL;
}

static void next(void) {
  step++;
  int rc = 0;
  switch (step) {
    case 1:
      rc = sq_queue_heartbeat(q, ac, on_status, "heartbeat");
      break;
    case 2:
      rc = sq_queue_heartbeat(q, ac, on_status, "heartbeat2");
      break;
    case 3:
      rc = sq_queue_claim(q, ac, 2, 0, 0, on_claim, "claim");
      break;
    case 4: {
      sq_ack_item_t items[2] = {
          {claimed_ids[0], (const uint8_t *)"R0", 2, 0, 0, fast_epoch, 1, 1},
          {claimed_ids[1], (const uint8_t *)"R1", 2, SQ_EMODEL},
      };
      rc = sq_queue_ack(q, ac, items, 2, on_ack, "ack");
      break;
    }
    case 5: {
      sq_ack_item_t items[2] = {
          {claimed_ids[0], (const uint8_t *)"X", 1, 0},
          {claimed_ids[1], (const uint8_t *)"X", 1, 0},
      };
      rc = sq_queue_ack(q, ac, items, 2, on_ack, "dup");
      break;
    }
    case 6:
      rc = sq_queue_wait(q, bac, 1.0, on_status, "wait");
      break;
    case 7:
      rc = sq_queue_claim(q, ac, 1, 0, 0, on_claim, "claim1");
      break; /* j2 in flight */
    case 8: {
      sq_progress_item_t items[2] = {{"j2", 3, 8}, {"nope", 1, 2}};
      rc = sq_queue_progress(q, ac, items, 2, on_status, "progress");
      break;
    }
    case 9:
      sq_queue_new_token(q); /* as if our lease was lost: the old token's lease still exists */
      rc = sq_queue_claim(q, ac, 1, 0, 0, on_claim, "fenced");
      break;
    case 10: {
      /* Expire the old lease by hand so another worker's sweeper recovers j2 (a worker never
       * sweeps its own list: it is alive). */
      char key[64];
      snprintf(key, sizeof key, "tq:worker:w1");
      sq_redis_command(ac, 0, NULL, NULL, "DEL %s", key);
      rc = sq_queue_sweep(q2, ac, 1000, on_status, "sweep");
      break;
    }
    case 11:
      rc = sq_queue_heartbeat(q, ac, on_status, "heartbeat");
      break;
    case 12:
      rc = sq_queue_unregister(q, ac, on_status, "unregister");
      break;
    case 13:
      rc = sq_queue_heartbeat(qf, ac, on_status, "heartbeat");
      break;
    case 14:
      fetch_setup();
      /* n == 0 claims nothing; it moves the rotation, so the next claim sends b, a. */
      rc = sq_queue_claim(qf, ac, 0, 0, 0, on_claim, "none");
      break;
    case 15:
      rc = sq_queue_claim(qf, ac, 10, 0, 0, on_claim, "mixed");
      break;
    case 16: {
      sq_ack_item_t items[3];
      for (int i = 0; i < 3; i++)
        items[i] = (sq_ack_item_t){fetched[i].id,  (const uint8_t *)"RF", 2, 0, 0, fetched[i].epoch,
                                   fetched[i].off, fetched[i].attempt};
      rc = sq_queue_ack(qf, ac, items, 3, on_ack, "ackf");
      break;
    }
    case 17: {
      /* A claim whose fetch the connection's end cuts off: its callback runs once, SQ_EREDIS. */
      sq_error_t err = {0};
      CHECK_EQ_INT(sq_queue_enqueue_sync(sc, "tf", "f5", "a", "", "", 0, fpayload, 5, &err), 1);
      rc = sq_queue_claim(qf, ac, 1, 0, 0, on_claim, "fetchfail");
      if (rc == 0) rc = sq_redis_command(ac, 0, close_under_fetch, NULL, "PING");
      break;
    }
  }
  CHECK_EQ_INT(rc, 0);
}

static void on_ready(sq_redis_conn_t *c, void *data) {
  (void)c;
  (void)data;
  if (++nready == 2) next(); /* both connections up: run the chain */
}

int main(void) {
  redisContext *c = sc = test_redis_start(&srv, NULL);
  if (!c) {
    printf("skip: no redis-server\n");
    test_redis_stop(&srv);
    return 77;
  }
  /* Our SHA-1 is the id Redis gives the script. */
  const char *src = sq_queue_script_source("claim");
  redisReply *r = redisCommand(c, "SCRIPT LOAD %s", src);
  char sha[41];
  sq_queue_sha1_hex(src, strlen(src), sha);
  CHECK(r && r->type == REDIS_REPLY_STRING);
  if (r && r->type == REDIS_REPLY_STRING) CHECK_STR(r->str, sha);
  freeReplyObject(r);
  freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));

  sq_error_t err = {0};
  const uint8_t payload[5] = {'P', 0, 0xff, 'a', 'b'};
  CHECK_EQ_INT(sq_queue_enqueue_sync(c, "tq", "j0", "m", "", "", 0, payload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(c, "tq", "j0", "m", "", "", 0, payload, 5, &err), 0);
  CHECK_EQ_INT(sq_queue_enqueue_sync(c, "tq", "j1", "m", "t2", "g", 0, payload, 5, &err), 1);
  CHECK_EQ_INT(sq_queue_enqueue_sync(c, "tq", "j2", "m", "", "", 0, payload, 5, &err), 1);
  freeReplyObject(redisCommand(c, "SCRIPT FLUSH")); /* the async path must fall back too */

  const char *models[] = {"m"};
  sq_queue_config_t cfg = {"tq", "w1", models, 1, 5000, 3, 600};
  q = sq_queue_new(&cfg);
  CHECK(q != NULL);
  sq_queue_config_t cfg2 = {"tq", "w2", models, 1, 5000, 3, 600};
  q2 = sq_queue_new(&cfg2);
  CHECK(q2 != NULL);
  CHECK(strlen(sq_queue_token(q)) == 32);
  const char *fmodels[] = {"a", "b"};
  sq_queue_config_t cfgf = {"tf", "wf", fmodels, 2, 5000, 3, 600};
  qf = sq_queue_new(&cfgf);
  CHECK(qf != NULL);

  uv_loop_init(&loop);
  sq_redis_loop_uv(&hooks, &loop);
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
  sq_redis_url_t u;
  CHECK_EQ_INT(sq_redis_url_parse(&u, url, &err), 0);
  endpoint = sq_redis_new(&u, &hooks, NULL, &err);
  sq_redis_url_free(&u);
  CHECK(endpoint != NULL);
  sq_redis_conn_events_t ev = {.ready = on_ready};
  ac = sq_redis_conn_new(endpoint, "command", 5000, 0, &ev, NULL);
  bac = sq_redis_conn_new(endpoint, "blocking", 5000, 0, &ev, NULL);
  CHECK(ac && bac);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(step, 100);
  CHECK_EQ_INT(fetchfail_calls, 1);

  /* Everything acked, j2 back in the queue: the result and the queue say so. */
  /* A finished job's record is its terminal event followed by the result document. */
  r = redisCommand(c, "GET tq:job:j0");
  CHECK(r && r->type == REDIS_REPLY_STRING && r->len > 2 &&
        memcmp(r->str + r->len - 2, "R0", 2) == 0 && memmem(r->str, r->len, "done", 4) != NULL);
  /* j0's record was built here (a fast run): the terminal event the scripts write, the claimed
   * epoch, the next offset, the attempt and the worker. */
  if (r && r->type == REDIS_REPLY_STRING && fast_epoch) {
    char want[96];
    size_t ne = strlen(fast_epoch);
    CHECK(ne < 32);
    int k = snprintf(want, sizeof want, "\xa5" "epoch%c%s", (char)(0xa0 | ne), fast_epoch);
    CHECK((unsigned char)r->str[0] == 0x89);
    CHECK(memmem(r->str, r->len, want, (size_t)k) != NULL);
    CHECK(memmem(r->str, r->len, "\xa3off\x02", 5) != NULL);
    CHECK(memmem(r->str, r->len, "\xa7" "attempt\x01", 9) != NULL);
    CHECK(memmem(r->str, r->len, "\xa6worker\xa2w1", 10) != NULL);
    CHECK(memmem(r->str, r->len, "\xa5state\xa4" "done", 11) != NULL);
  }
  freeReplyObject(r);
  r = redisCommand(c, "GET tq:job:j1");
  CHECK(r && r->type == REDIS_REPLY_STRING && memmem(r->str, r->len, "model_error", 11) != NULL);
  freeReplyObject(r);
  r = redisCommand(c, "HGET tq:job:j2 steps_done");
  CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "3") == 0);
  freeReplyObject(r);
  r = redisCommand(c, "LRANGE tq:q:m:default 0 -1");
  CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
  freeReplyObject(r);

  for (int i = 0; i < 4; i++) free(claimed_ids[i]);
  free(fast_epoch);
  for (int i = 0; i < 3; i++) sq_claimed_free(&fetched[i]);
  sq_queue_free(qf);
  sq_queue_free(q);
  sq_queue_free(q2);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  redisFree(c);
  test_redis_stop(&srv);
  CHECK_DONE();
}
