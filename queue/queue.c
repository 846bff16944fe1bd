/* queue/queue: the async operations on segq's Redis keys (claim, ack, progress, release,
 * heartbeat, sweep, wait, unregister) and the synchronous enqueue. Each operation is one script
 * call: EVALSHA with the SHA-1 of the embedded source, resent as EVAL when Redis answers NOSCRIPT
 * (after a restart or SCRIPT FLUSH); a claim then reads its jobs' documents with one MGET.
 * Threads: the async functions and their callbacks run on the loop thread that owns the
 * connection (queue/redis.c); sq_queue_enqueue_sync on whichever thread owns the redisContext. */
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "queue/queue_internal.h"

enum { SCRIPT_MAX = 24 };

/* Key name parts and text defaults from queue/scripts/schema.def (some are unused here). */
#define SQ_SCHEMA_KEY(sym, part) __attribute__((unused)) static const char key_##sym[] = part;
#define SQ_SCHEMA_TEXT(sym, value) __attribute__((unused)) static const char text_##sym[] = value;
#define SQ_SCHEMA_DEFAULT(sym, value)
#define SQ_SCHEMA_CODE(sym, value)
#include "queue/scripts/schema.def"
#undef SQ_SCHEMA_KEY
#undef SQ_SCHEMA_TEXT
#undef SQ_SCHEMA_DEFAULT
#undef SQ_SCHEMA_CODE

struct sq_queue {
  char *prefix;
  char *worker_id;
  char **models;
  size_t nmodels;
  uint32_t lease_ttl_ms;
  uint32_t max_attempts;
  uint32_t result_ttl_s;
  uint32_t dead_ttl_s;
  char token[33];
  size_t claim_rotation; /* index of the model the next claim serves first */
};

/* ---- scripts ---- */

const char *sq_queue_script_source(const char *name) {
  for (const struct sq_script_entry *e = sq_queue_scripts; e->name; e++)
    if (strcmp(e->name, name) == 0) return e->source;
  return NULL;
}

/* SHA-1s are computed once per process (the loop thread and a tool thread may both ask). */
static char script_shas[SCRIPT_MAX][41];
static pthread_once_t script_shas_once = PTHREAD_ONCE_INIT;

static void script_shas_init(void) {
  for (int i = 0; sq_queue_scripts[i].name && i < SCRIPT_MAX; i++)
    sq_queue_sha1_hex(sq_queue_scripts[i].source, strlen(sq_queue_scripts[i].source),
                      script_shas[i]);
}

static const char *script_sha(const char *name) {
  pthread_once(&script_shas_once, script_shas_init);
  for (int i = 0; sq_queue_scripts[i].name && i < SCRIPT_MAX; i++)
    if (strcmp(sq_queue_scripts[i].name, name) == 0) return script_shas[i];
  return NULL;
}

static int reply_is_noscript(const redisReply *r) {
  return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static int reply_is_lease(const redisReply *r) {
  return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "LEASE", 5) == 0;
}

/* ---- an owned argv: every argument copied, so callers' buffers can go at once ---- */

typedef struct {
  int argc, cap;
  char **argv;
  size_t *len;
  int failed;
} argv_t;

/* Room for one more argument; 0 (and a->failed) when out of memory. */
static int argv_push_slot(argv_t *a) {
  if (a->argc == a->cap) {
    int ncap = a->cap ? a->cap * 2 : 16;
    char **nv = realloc(a->argv, (size_t)ncap * sizeof(*nv));
    if (!nv) {
      a->failed = 1;
      return 0;
    }
    a->argv = nv;
    size_t *nl = realloc(a->len, (size_t)ncap * sizeof(*nl));
    if (!nl) {
      a->failed = 1;
      return 0;
    }
    a->len = nl;
    a->cap = ncap;
  }
  return 1;
}

static void argv_push(argv_t *a, const void *p, size_t n) {
  if (a->failed || !argv_push_slot(a)) return;
  char *copy = malloc(n + 1);
  if (!copy) {
    a->failed = 1;
    return;
  }
  if (n) memcpy(copy, p, n);
  copy[n] = '\0';
  a->argv[a->argc] = copy;
  a->len[a->argc] = n;
  a->argc++;
}

/* Appends buf (malloc'd, n bytes, room for a NUL after them) without copying: a owns it. */
static void argv_take(argv_t *a, char *buf, size_t n) {
  if (a->failed || !argv_push_slot(a)) {
    free(buf);
    return;
  }
  buf[n] = '\0';
  a->argv[a->argc] = buf;
  a->len[a->argc] = n;
  a->argc++;
}

static void argv_str(argv_t *a, const char *s) {
  argv_push(a, s, strlen(s));
}

static void argv_u64(argv_t *a, uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  argv_str(a, buf);
}

static void argv_free(argv_t *a) {
  for (int i = 0; i < a->argc; i++) free(a->argv[i]);
  free(a->argv);
  free(a->len);
  memset(a, 0, sizeof(*a));
}

/* Starts a script call: EVALSHA <sha> 0 (no KEYS: every key comes from the prefix). */
static void argv_script(argv_t *a, const char *name) {
  argv_str(a, "EVALSHA");
  const char *sha = script_sha(name);
  argv_str(a, sha ? sha : "0000000000000000000000000000000000000000");
  argv_str(a, "0");
}

/* Turns an EVALSHA argv into EVAL with the full source, for the NOSCRIPT fallback. */
static int argv_to_eval(argv_t *a, const char *name) {
  const char *src = sq_queue_script_source(name);
  if (!src || a->argc < 2) return SQ_EINTERNAL;
  char *e = sq_strdup("EVAL");
  char *s = sq_strdup(src);
  if (!e || !s) {
    free(e);
    free(s);
    return SQ_ENOMEM;
  }
  free(a->argv[0]);
  free(a->argv[1]);
  a->argv[0] = e;
  a->len[0] = 4;
  a->argv[1] = s;
  a->len[1] = strlen(s);
  return 0;
}

/* ---- async requests ---- */

typedef enum { REQ_CLAIM, REQ_ACK, REQ_STATUS, REQ_DEPTH, REQ_RECOVER, REQ_PERMCHECK } req_kind_t;

typedef struct {
  sq_queue_t *q;
  req_kind_t kind;
  const char *script; /* NULL for plain commands (BRPOP) */
  argv_t argv;
  uint64_t budget_ms; /* how long the reply may take (0 = the connection's default) */
  int retried;
  size_t nack;        /* REQ_ACK: items sent */
  size_t first_model; /* REQ_CLAIM: index in q->models of the model sent first (the rotation) */
  union {
    sq_queue_claim_cb claim;
    sq_queue_ack_cb ack;
    sq_queue_status_cb status;
    sq_queue_depth_cb depth;
    sq_queue_recover_cb recover;
    sq_queue_permcheck_cb permcheck;
  } cb;
  void *data;
} queue_req_t;

static void req_free(queue_req_t *r) {
  argv_free(&r->argv);
  free(r);
}

static void req_fail(queue_req_t *r, int status) {
  switch (r->kind) {
    case REQ_CLAIM:
      r->cb.claim(r->q, status, NULL, 0, r->data);
      break;
    case REQ_ACK:
      r->cb.ack(r->q, status, NULL, 0, r->data);
      break;
    case REQ_STATUS:
      r->cb.status(r->q, status, 0, r->data);
      break;
    case REQ_DEPTH:
      r->cb.depth(r->q, status, NULL, r->data);
      break;
    case REQ_RECOVER:
      r->cb.recover(status, NULL, r->data);
      break;
    case REQ_PERMCHECK:
      r->cb.permcheck(r->q, status, NULL, r->data);
      break;
  }
}

static int reply_u64(const redisReply *e, uint64_t *out) {
  if (e->type == REDIS_REPLY_INTEGER) {
    if (e->integer < 0) return -1;
    *out = (uint64_t)e->integer;
    return 0;
  }
  if (e->type == REDIS_REPLY_STRING) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(e->str, &end, 10);
    if (errno || end == e->str) return -1;
    *out = v;
    return 0;
  }
  return -1;
}

/* Entries per job in the claim's reply: a job the script read is model, id, attempt,
 * enqueued_ms, off, epoch; a fetched job (a plain first run: the script read nothing of it) is
 * model_index (an integer), id. The RESP type of a job's first entry tells the two apart. No
 * script moves a document: they are read here, all of the claim's with one MGET of their
 * P:doc:<id>, each "<enqueued_ms> <epoch>\n" + the document (docs/protocol.md "Fetched claims"). */
#define CLAIM_READ_FIELDS 6
#define CLAIM_FETCHED_FIELDS 2

/* Fills job from a read entry (e: CLAIM_READ_FIELDS replies). 0, SQ_EREDIS or SQ_ENOMEM. */
static int claimed_read(sq_claimed_t *job, redisReply **e) {
  uint64_t attempt = 0, enq = 0, off = 0;
  int ok = e[0]->type == REDIS_REPLY_STRING && e[1]->type == REDIS_REPLY_STRING &&
           reply_u64(e[2], &attempt) == 0 && reply_u64(e[3], &enq) == 0 &&
           e[5]->type == REDIS_REPLY_STRING;
  int fast = ok && e[5]->len > 0;
  if (fast) ok = reply_u64(e[4], &off) == 0;
  if (!ok) return SQ_EREDIS;
  if (fast) {
    job->off = off;
    job->epoch = sq_strndup(e[5]->str, e[5]->len);
    if (!job->epoch) return SQ_ENOMEM;
  }
  job->model = sq_strndup(e[0]->str, e[0]->len);
  job->id = sq_strndup(e[1]->str, e[1]->len);
  job->attempt = (uint32_t)attempt;
  job->enqueued_ms = enq;
  return job->model && job->id ? 0 : SQ_ENOMEM;
}

/* Pushes P:doc:<id>. */
static void argv_doc_key(argv_t *a, const char *prefix, const char *id) {
  size_t np = strlen(prefix), nk = sizeof key_DOC - 1, ni = strlen(id);
  char *buf = malloc(np + nk + ni + 3);
  if (!buf) {
    a->failed = 1;
    return;
  }
  memcpy(buf, prefix, np);
  buf[np] = ':';
  memcpy(buf + np + 1, key_DOC, nk);
  buf[np + 1 + nk] = ':';
  memcpy(buf + np + nk + 2, id, ni);
  argv_take(a, buf, np + nk + ni + 2);
}

/* A claim waiting for its documents: the jobs in claim order (fetched ones marked), the claim's
 * callback. A job still without a payload after the MGET is gone. */
typedef struct {
  sq_queue_t *q;
  sq_redis_conn_t *c;
  sq_queue_claim_cb cb;
  void *data;
  sq_claimed_t *jobs;
  unsigned char *fetched; /* per job: 1 = its epoch and enqueue time come with its document */
  size_t njobs;
} claim_fetch_t;

static void claimed_free_all(sq_claimed_t *jobs, size_t n) {
  for (size_t i = 0; i < n; i++) sq_claimed_free(&jobs[i]);
  free(jobs);
}

static void gone_acked(sq_queue_t *q, int status, const int *per_job, size_t n, void *data) {
  (void)q;
  (void)per_job;
  (void)n;
  (void)data;
  if (status != 0)
    sq_log_warn("queue", "recording claimed jobs that were gone failed", "code=%s",
                sq_error_name(status));
}

static queue_req_t *req_new(sq_queue_t *q, req_kind_t kind, const char *script, void *data);
static int req_start(sq_redis_conn_t *c, queue_req_t *r);

/* The ack's ARGV up to the generation: prefix, worker, token, now_ms, result_ttl_s, dead_ttl_s,
 * max_attempts. Returns now_ms. */
static uint64_t argv_ack_head(argv_t *a, const sq_queue_t *q) {
  uint64_t now = sq_clock_wall_ms();
  argv_str(a, q->prefix);
  argv_str(a, q->worker_id);
  argv_str(a, q->token);
  argv_u64(a, now);
  argv_u64(a, q->result_ttl_s);
  argv_u64(a, q->dead_ttl_s);
  argv_u64(a, q->max_attempts);
  return now;
}

/* Acks the gone jobs of a claim in one script call (how "!", blob the model), not waited for:
 * the ack records a job_not_found for a job without its record (nothing for a finished one)
 * and takes the ids out of our in-flight list (docs/protocol.md "Fetched claims"). */
static void claim_ack_gone(claim_fetch_t *cf, size_t ngone) {
  sq_queue_t *q = cf->q;
  queue_req_t *r = req_new(q, REQ_ACK, "ack", NULL);
  int rc = SQ_ENOMEM;
  if (r) {
    r->cb.ack = gone_acked;
    r->nack = ngone;
    argv_ack_head(&r->argv, q);
    argv_str(&r->argv, ""); /* no fast records */
    for (size_t i = 0; i < cf->njobs; i++) {
      if (cf->jobs[i].payload) continue;
      argv_str(&r->argv, cf->jobs[i].id);
      argv_str(&r->argv, cf->jobs[i].model); /* for the job_not_found record's dead letter */
      argv_str(&r->argv, "!");               /* the worker found no document */
    }
    rc = req_start(cf->c, r);
  }
  /* Unacked, they stay in our in-flight list until a reconcile or the sweeper hands them back,
   * and a later claim finds them gone again. */
  if (rc)
    sq_log_warn("queue", "could not record claimed jobs that were gone", "jobs=%zu code=%s", ngone,
                sq_error_name(rc));
}

/* Takes a fetched job's epoch and enqueue time from its document key's header "<enqueued_ms>
 * <epoch>". 0, SQ_EREDIS (malformed) or SQ_ENOMEM. */
static int fetched_header(sq_claimed_t *job, const char *h, size_t n) {
  const char *sp = memchr(h, ' ', n);
  if (!sp || sp == h || (size_t)(sp - h) > 20 || sp + 1 == h + n) return SQ_EREDIS;
  uint64_t enq = 0;
  for (const char *p = h; p < sp; p++) {
    if (*p < '0' || *p > '9') return SQ_EREDIS;
    enq = enq * 10 + (uint64_t)(*p - '0');
  }
  job->enqueued_ms = enq;
  job->off = 1; /* its `queued` event, the only one a fetched job has had */
  job->attempt = 1;
  job->epoch = sq_strndup(sp + 1, (size_t)(h + n - sp - 1));
  return job->epoch ? 0 : SQ_ENOMEM;
}

/* The MGET's reply: per job its document key, nil when the job is gone (finished while queued,
 * or lost). Then the claim's callback, with the jobs found (the gone ones acked), or with the
 * failure: the ids are in our in-flight list, and the session's reconcile hands them back. */
static void fetch_reply(sq_redis_conn_t *c, redisReply *rep, void *privdata) {
  (void)c;
  claim_fetch_t *cf = privdata;
  int rc = 0;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != cf->njobs) {
    if (rep && rep->type == REDIS_REPLY_ERROR)
      sq_log_warn("queue", "redis error reply", "command=MGET err=\"%.200s\"",
                  rep->str ? rep->str : "");
    rc = SQ_EREDIS; /* the connection went, the budget ran out, or an error */
  }
  size_t ngone = 0;
  for (size_t i = 0; i < cf->njobs && rc == 0; i++) {
    const redisReply *e = rep->element[i];
    sq_claimed_t *job = &cf->jobs[i];
    if (e->type == REDIS_REPLY_NIL) {
      ngone++;
      continue;
    }
    const char *nl = e->type == REDIS_REPLY_STRING ? memchr(e->str, '\n', e->len) : NULL;
    if (!nl) {
      rc = SQ_EREDIS;
      break;
    }
    size_t hlen = (size_t)(nl - e->str), dlen = e->len - hlen - 1;
    if (cf->fetched[i]) rc = fetched_header(job, e->str, hlen);
    if (rc) break;
    job->payload = malloc(dlen ? dlen : 1);
    if (!job->payload) {
      rc = SQ_ENOMEM;
      break;
    }
    memcpy(job->payload, nl + 1, dlen);
    job->payload_len = dlen;
  }
  size_t n = 0;
  if (rc) {
    claimed_free_all(cf->jobs, cf->njobs);
    cf->jobs = NULL;
  } else {
    if (ngone) claim_ack_gone(cf, ngone);
    for (size_t i = 0; i < cf->njobs; i++) {
      if (cf->jobs[i].payload)
        cf->jobs[n++] = cf->jobs[i];
      else
        sq_claimed_free(&cf->jobs[i]);
    }
    if (n == 0) {
      free(cf->jobs);
      cf->jobs = NULL;
    }
  }
  cf->cb(cf->q, rc, cf->jobs, n, cf->data);
  free(cf->fetched);
  free(cf);
}

static void claim_done(queue_req_t *r, sq_redis_conn_t *c, redisReply *rep) {
  /* One pass to check the layout and count, one to fill. */
  size_t n = 0, i = 0;
  int bad = rep->type != REDIS_REPLY_ARRAY;
  while (!bad && i < rep->elements) {
    int fetched = rep->element[i]->type == REDIS_REPLY_INTEGER;
    size_t width = fetched ? CLAIM_FETCHED_FIELDS : CLAIM_READ_FIELDS;
    bad = rep->elements - i < width;
    n++;
    i += width;
  }
  if (bad) {
    req_fail(r, SQ_EREDIS);
    return;
  }
  if (n == 0) {
    r->cb.claim(r->q, 0, NULL, 0, r->data);
    return;
  }
  claim_fetch_t *cf = calloc(1, sizeof(*cf));
  sq_claimed_t *jobs = calloc(n, sizeof(*jobs));
  unsigned char *fetched = calloc(n, 1);
  argv_t mget = {0};
  if (!cf || !jobs || !fetched) {
    /* The jobs stay in our in-flight list; the reconcile hands them back. */
    free(cf);
    free(jobs);
    free(fetched);
    req_fail(r, SQ_ENOMEM);
    return;
  }
  size_t nmodels = r->q->nmodels;
  int rc = 0;
  argv_str(&mget, "MGET");
  i = 0;
  for (size_t k = 0; k < n && rc == 0; k++) {
    redisReply **e = rep->element + i;
    if (e[0]->type != REDIS_REPLY_INTEGER) {
      rc = claimed_read(&jobs[k], e);
      i += CLAIM_READ_FIELDS;
    } else {
      i += CLAIM_FETCHED_FIELDS;
      long long m = e[0]->integer; /* 1-based, into the models as this claim sent them */
      if (m < 1 || (unsigned long long)m > nmodels || e[1]->type != REDIS_REPLY_STRING) {
        rc = SQ_EREDIS;
        break;
      }
      fetched[k] = 1;
      jobs[k].model = sq_strdup(r->q->models[(r->first_model + (size_t)m - 1) % nmodels]);
      jobs[k].id = sq_strndup(e[1]->str, e[1]->len);
      if (!jobs[k].model || !jobs[k].id) rc = SQ_ENOMEM;
    }
    if (rc == 0) argv_doc_key(&mget, r->q->prefix, jobs[k].id);
  }
  if (rc == 0 && mget.failed) rc = SQ_ENOMEM;
  if (rc == 0) {
    *cf = (claim_fetch_t){r->q, c, r->cb.claim, r->data, jobs, fetched, n};
    /* Right behind the claim's reply, on the same connection: the ids are in our in-flight list
     * for as long as the MGET is out. */
    rc = sq_redis_command_argv(c, r->budget_ms, fetch_reply, cf, mget.argc,
                               (const char **)mget.argv, mget.len);
    if (rc) rc = rc == SQ_ENOMEM ? SQ_ENOMEM : SQ_EREDIS;
  }
  argv_free(&mget);
  if (rc) {
    claimed_free_all(jobs, n);
    free(fetched);
    free(cf);
    req_fail(r, rc);
  }
}

static void ack_done(queue_req_t *r, redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != r->nack) {
    req_fail(r, SQ_EREDIS);
    return;
  }
  int *per = malloc((r->nack + 1) * sizeof(int));
  if (!per) {
    req_fail(r, SQ_ENOMEM);
    return;
  }
  for (size_t i = 0; i < r->nack; i++) {
    const redisReply *e = rep->element[i];
    per[i] = e->type == REDIS_REPLY_INTEGER ? (int)e->integer : 0;
  }
  r->cb.ack(r->q, 0, per, r->nack, r->data);
  free(per);
}

static void status_done(queue_req_t *r, redisReply *rep) {
  if (rep->type == REDIS_REPLY_INTEGER) {
    r->cb.status(r->q, 0, rep->integer, r->data);
  } else if (rep->type == REDIS_REPLY_NIL) {
    r->cb.status(r->q, 0, 0, r->data); /* BRPOP timed out */
  } else if (rep->type == REDIS_REPLY_ARRAY) {
    r->cb.status(r->q, 0, 1, r->data); /* BRPOP got a wake-up token */
  } else {
    req_fail(r, SQ_EREDIS);
  }
}

static void depth_done(queue_req_t *r, redisReply *rep) {
  size_t n = r->q->nmodels;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 1 + 2 * n) {
    req_fail(r, SQ_EREDIS);
    return;
  }
  sq_queue_depth_t d = {0};
  d.nmodels = n;
  d.queued = calloc(n ? n : 1, sizeof(uint64_t));
  d.delayed = calloc(n ? n : 1, sizeof(uint64_t));
  int bad = !d.queued || !d.delayed || reply_u64(rep->element[0], &d.dead) != 0;
  for (size_t i = 0; i < n && !bad; i++)
    bad = reply_u64(rep->element[1 + 2 * i], &d.queued[i]) != 0 ||
          reply_u64(rep->element[2 + 2 * i], &d.delayed[i]) != 0;
  if (bad)
    req_fail(r, d.queued && d.delayed ? SQ_EREDIS : SQ_ENOMEM);
  else
    r->cb.depth(r->q, 0, &d, r->data);
  free(d.queued);
  free(d.delayed);
}

/* permcheck's reply: (command, kind, error) triples -> one sentence per kind. */
static void permcheck_done(queue_req_t *r, redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 3 != 0) {
    req_fail(r, SQ_EREDIS);
    return;
  }
  static const char *const kinds[] = {"command", "keys", "channels"};
  char msg[1024] = "";
  size_t len = 0;
  for (size_t k = 0; k < 3; k++) {
    char cmds[256] = "";
    const char *example = NULL;
    size_t cl = 0;
    for (size_t i = 0; i + 2 < rep->elements; i += 3) {
      redisReply **e = rep->element + i;
      if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING ||
          strcmp(e[1]->str, kinds[k]) != 0)
        continue;
      int seen = 0; /* a command probed twice (two channels) is named once */
      for (size_t j = 0; j < i && !seen; j += 3)
        seen = rep->element[j]->type == REDIS_REPLY_STRING &&
               rep->element[j + 1]->type == REDIS_REPLY_STRING &&
               !strcmp(rep->element[j]->str, e[0]->str) &&
               !strcmp(rep->element[j + 1]->str, kinds[k]);
      if (seen) continue;
      int n = snprintf(cmds + cl, sizeof cmds - cl, "%s%s", cl ? ", " : "", e[0]->str);
      if (n > 0) cl = cl + (size_t)n < sizeof cmds ? cl + (size_t)n : sizeof cmds - 1;
      if (!example && e[2]->type == REDIS_REPLY_STRING) example = e[2]->str;
    }
    if (!cl) continue;
    int n;
    if (k == 0)
      n = snprintf(msg + len, sizeof msg - len, "%scommands refused: %s (\"%.120s\")",
                   len ? "; " : "", cmds, example ? example : "");
    else if (k == 1)
      n = snprintf(msg + len, sizeof msg - len, "%skeys %s:* refused to %s (\"%.120s\")",
                   len ? "; " : "", r->q->prefix, cmds, example ? example : "");
    else
      n = snprintf(msg + len, sizeof msg - len,
                   "%schannels %s:%s:* and %s:%s:* refused to %s (\"%.120s\")", len ? "; " : "",
                   r->q->prefix, key_JOB_CHANNEL, r->q->prefix, key_GROUP_CHANNEL, cmds,
                   example ? example : "");
    if (n > 0) len = len + (size_t)n < sizeof msg ? len + (size_t)n : sizeof msg - 1;
  }
  r->cb.permcheck(r->q, 0, msg, r->data);
}

static int req_send(sq_redis_conn_t *c, queue_req_t *r);

/* [status, snapshot or nil, event...], all strings (the packed documents). */
static void recover_done(queue_req_t *r, redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING) {
    req_fail(r, SQ_EREDIS);
    return;
  }
  size_t n = rep->elements - 2;
  const char **evs = calloc(n + 1, sizeof(*evs));
  size_t *lens = calloc(n + 1, sizeof(*lens));
  if (!evs || !lens) {
    free(evs);
    free(lens);
    req_fail(r, SQ_ENOMEM);
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = rep->element[2 + i];
    if (e->type != REDIS_REPLY_STRING) continue;
    evs[k] = e->str;
    lens[k++] = e->len;
  }
  const redisReply *snap = rep->element[1];
  sq_recover_t rec = {rep->element[0]->str,
                      snap->type == REDIS_REPLY_STRING ? snap->str : NULL,
                      snap->type == REDIS_REPLY_STRING ? snap->len : 0,
                      evs,
                      lens,
                      k};
  r->cb.recover(0, &rec, r->data);
  free(evs);
  free(lens);
}

static void req_reply(sq_redis_conn_t *c, redisReply *rep, void *privdata) {
  queue_req_t *r = privdata;
  if (!rep) { /* disconnected or freed: every pending callback ends here */
    req_fail(r, SQ_EREDIS);
    req_free(r);
    return;
  }
  if (reply_is_noscript(rep) && r->script && !r->retried) {
    r->retried = 1;
    if (argv_to_eval(&r->argv, r->script) == 0 && req_send(c, r) == 0) return;
    req_fail(r, SQ_EREDIS);
    req_free(r);
    return;
  }
  if (rep->type == REDIS_REPLY_ERROR && r->kind == REQ_PERMCHECK && rep->str &&
      strncmp(rep->str, "NOPERM", 6) == 0) {
    /* The script call itself is refused: that is the answer. */
    char msg[300];
    snprintf(msg, sizeof msg, "scripts refused (EVALSHA/EVAL: \"%.200s\")", rep->str);
    r->cb.permcheck(r->q, 0, msg, r->data);
    req_free(r);
    return;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    if (!reply_is_lease(rep))
      sq_log_warn("queue", "redis error reply", "script=%s err=\"%.200s\"",
                  r->script ? r->script : "-", rep->str ? rep->str : "");
    req_fail(r, reply_is_lease(rep) ? SQ_ELEASE_LOST : SQ_EREDIS);
    req_free(r);
    return;
  }
  switch (r->kind) {
    case REQ_CLAIM:
      claim_done(r, c, rep);
      break;
    case REQ_ACK:
      ack_done(r, rep);
      break;
    case REQ_STATUS:
      status_done(r, rep);
      break;
    case REQ_DEPTH:
      depth_done(r, rep);
      break;
    case REQ_RECOVER:
      recover_done(r, rep);
      break;
    case REQ_PERMCHECK:
      permcheck_done(r, rep);
      break;
  }
  req_free(r);
}

static int req_send(sq_redis_conn_t *c, queue_req_t *r) {
  return sq_redis_command_argv(c, r->budget_ms, req_reply, r, r->argv.argc,
                               (const char **)r->argv.argv, r->argv.len);
}

static queue_req_t *req_new(sq_queue_t *q, req_kind_t kind, const char *script, void *data) {
  queue_req_t *r = calloc(1, sizeof(*r));
  if (!r) return NULL;
  r->q = q;
  r->kind = kind;
  r->script = script;
  r->data = data;
  if (script) argv_script(&r->argv, script);
  return r;
}

/* Sends r; on failure frees it (the callback is not called) and returns the error. */
static int req_start(sq_redis_conn_t *c, queue_req_t *r) {
  int rc = r->argv.failed ? SQ_ENOMEM : req_send(c, r);
  if (rc) req_free(r);
  return rc;
}

/* ---- lifecycle ---- */

static void token_fill(char out[33]) {
  uint8_t raw[16];
  ssize_t got = getrandom(raw, sizeof raw, GRND_NONBLOCK);
  if (got != (ssize_t)sizeof raw) {
    /* No entropy yet (early boot): time and pid still make collisions practically impossible. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 17);
    for (size_t i = 0; i < sizeof raw; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      raw[i] = (uint8_t)x;
    }
  }
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof raw; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[32] = '\0';
}

sq_queue_t *sq_queue_new(const sq_queue_config_t *cfg) {
  if (!cfg || !cfg->worker_id) return NULL;
  sq_queue_t *q = calloc(1, sizeof(*q));
  if (!q) return NULL;
  q->prefix = sq_strdup(cfg->prefix ? cfg->prefix : text_PREFIX);
  q->worker_id = sq_strdup(cfg->worker_id);
  q->nmodels = cfg->nmodels;
  q->models = calloc(cfg->nmodels ? cfg->nmodels : 1, sizeof(char *));
  q->lease_ttl_ms = cfg->lease_ttl_ms ? cfg->lease_ttl_ms : SQ_DEFAULT_LEASE_TTL_MS;
  q->max_attempts = cfg->max_attempts ? cfg->max_attempts : SQ_DEFAULT_MAX_ATTEMPTS;
  q->result_ttl_s = cfg->result_ttl_s ? cfg->result_ttl_s : SQ_DEFAULT_RESULT_TTL_S;
  q->dead_ttl_s = cfg->dead_ttl_s ? cfg->dead_ttl_s : SQ_DEFAULT_DEAD_TTL_S;
  int ok = q->prefix && q->worker_id && q->models;
  for (size_t i = 0; ok && i < cfg->nmodels; i++) {
    q->models[i] = sq_strdup(cfg->models[i]);
    ok = q->models[i] != NULL;
  }
  if (!ok) {
    sq_queue_free(q);
    return NULL;
  }
  token_fill(q->token);
  return q;
}

void sq_queue_free(sq_queue_t *q) {
  if (!q) return;
  if (q->models)
    for (size_t i = 0; i < q->nmodels; i++) free(q->models[i]);
  free(q->models);
  free(q->prefix);
  free(q->worker_id);
  free(q);
}

const char *sq_queue_token(const sq_queue_t *q) {
  return q->token;
}

void sq_queue_new_token(sq_queue_t *q) {
  token_fill(q->token);
}

void sq_claimed_free(sq_claimed_t *c) {
  if (!c) return;
  free(c->model);
  free(c->id);
  free(c->payload);
  free(c->epoch);
  memset(c, 0, sizeof(*c));
}

/* ---- operations ---- */

int sq_queue_claim(sq_queue_t *q, sq_redis_conn_t *c, uint32_t n, uint64_t max_bytes,
                   uint64_t budget_ms, sq_queue_claim_cb cb, void *data) {
  if (!q || !c || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_CLAIM, "claim", data);
  if (!r) return SQ_ENOMEM;
  r->cb.claim = cb;
  r->budget_ms = budget_ms;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  argv_u64(&r->argv, n);
  argv_u64(&r->argv, max_bytes ? max_bytes : (uint64_t)SQ_DEFAULT_MAX_CLAIM_BYTES);
  argv_u64(&r->argv, sq_clock_wall_ms());
  argv_u64(&r->argv, q->result_ttl_s);
  /* The script serves the models in the order given; rotating the start on every claim keeps a
   * busy first model from starving the others when claims are small. */
  r->first_model = q->claim_rotation;
  for (size_t i = 0; i < q->nmodels; i++)
    argv_str(&r->argv, q->models[(q->claim_rotation + i) % q->nmodels]);
  if (q->nmodels) q->claim_rotation = (q->claim_rotation + 1) % q->nmodels;
  return req_start(c, r);
}

/* ---- a fast run's record (docs/protocol.md "Fast runs") ----
 * The terminal event {v, id, type, state, off, epoch, ts_ms, attempt, worker} as the scripts'
 * pack_terminal writes it, then the result document: built here, so that Redis stores it
 * without reading the job or building a string (its CPU is the one the workers share). */

static uint8_t *mp_str(uint8_t *p, const char *s, size_t n) {
  if (n < 32) {
    *p++ = (uint8_t)(0xa0 | n);
  } else if (n < 256) {
    *p++ = 0xd9;
    *p++ = (uint8_t)n;
  } else if (n < 65536) {
    *p++ = 0xda;
    *p++ = (uint8_t)(n >> 8);
    *p++ = (uint8_t)n;
  } else {
    *p++ = 0xdb;
    for (int k = 3; k >= 0; k--) *p++ = (uint8_t)(n >> (8 * k));
  }
  memcpy(p, s, n);
  return p + n;
}

static uint8_t *mp_uint(uint8_t *p, uint64_t x) {
  int bytes;
  if (x < 128) {
    *p++ = (uint8_t)x;
    return p;
  } else if (x < 256) {
    *p++ = 0xcc;
    bytes = 1;
  } else if (x < 65536) {
    *p++ = 0xcd;
    bytes = 2;
  } else if (x <= UINT32_MAX) {
    *p++ = 0xce;
    bytes = 4;
  } else {
    *p++ = 0xcf;
    bytes = 8;
  }
  for (int k = bytes - 1; k >= 0; k--) *p++ = (uint8_t)(x >> (8 * k));
  return p;
}

#define MP_KEY(p, lit) mp_str((p), (lit), sizeof(lit) - 1)

/* Pushes the record of a done fast run (item it) onto a. */
static void argv_fast_record(argv_t *a, const sq_ack_item_t *it, const char *worker,
                             uint64_t now_ms) {
  size_t nid = strlen(it->id), nep = strlen(it->epoch), nw = strlen(worker);
  /* 97 bytes at most besides the three strings and the result; + argv_take's NUL */
  size_t cap = 128 + nid + nep + nw + it->result_len;
  uint8_t *buf = malloc(cap), *p = buf;
  if (!buf) {
    a->failed = 1;
    return;
  }
  *p++ = 0x89; /* a map of 9 */
  p = MP_KEY(p, "v");
  p = mp_uint(p, 1);
  p = MP_KEY(p, "id");
  p = mp_str(p, it->id, nid);
  p = MP_KEY(p, "type");
  p = MP_KEY(p, "done");
  p = MP_KEY(p, "state");
  p = MP_KEY(p, "done");
  p = MP_KEY(p, "off");
  p = mp_uint(p, it->off + 1);
  p = MP_KEY(p, "epoch");
  p = mp_str(p, it->epoch, nep);
  p = MP_KEY(p, "ts_ms");
  p = mp_uint(p, now_ms);
  p = MP_KEY(p, "attempt");
  p = mp_uint(p, it->attempt);
  p = MP_KEY(p, "worker");
  p = mp_str(p, worker, nw);
  if (it->result_len) memcpy(p, it->result, it->result_len);
  p += it->result_len;
  argv_take(a, (char *)buf, (size_t)(p - buf));
}

/* The data generation of an epoch ("<gen>.<n>"): its length, 0 if it has none. */
static size_t epoch_gen_len(const char *epoch) {
  const char *dot = epoch ? strrchr(epoch, '.') : NULL;
  return dot ? (size_t)(dot - epoch) : 0;
}

int sq_queue_ack(sq_queue_t *q, sq_redis_conn_t *c, const sq_ack_item_t *items, size_t n,
                 sq_queue_ack_cb cb, void *data) {
  if (!q || !c || !cb || (n && !items)) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_ACK, "ack", data);
  if (!r) return SQ_ENOMEM;
  r->cb.ack = cb;
  r->nack = n;
  uint64_t now = argv_ack_head(&r->argv, q); /* also the fast records' ts_ms */
  /* One generation per call: a fast run of another one (Redis lost its data in between) goes
   * the ordinary way. */
  const char *gen = NULL;
  size_t ngen = 0;
  for (size_t i = 0; i < n && !gen; i++)
    if (!items[i].error_code && (ngen = epoch_gen_len(items[i].epoch)) > 0) gen = items[i].epoch;
  argv_push(&r->argv, gen ? gen : "", gen ? ngen : 0);
  for (size_t i = 0; i < n; i++) {
    const sq_ack_item_t *it = &items[i];
    argv_str(&r->argv, it->id);
    if (!it->error_code && gen && epoch_gen_len(it->epoch) == ngen &&
        memcmp(it->epoch, gen, ngen) == 0) {
      argv_fast_record(&r->argv, it, q->worker_id, now);
      argv_str(&r->argv, "");
      continue;
    }
    argv_push(&r->argv, it->result, it->result_len);
    if (!it->error_code) {
      argv_str(&r->argv, "-");
    } else {
      char how[96];
      snprintf(how, sizeof how, "%s:%" PRIu32, sq_error_name(it->error_code),
               it->retry_ms);
      argv_str(&r->argv, how);
    }
  }
  return req_start(c, r);
}

uint32_t sq_queue_retry_delay_ms(uint32_t attempt, uint32_t base_ms, uint32_t max_ms,
                                 uint32_t random) {
  uint64_t d = base_ms ? base_ms : 1;
  for (uint32_t i = 1; i < attempt && d < max_ms; i++) d *= 2;
  if (max_ms && d > max_ms) d = max_ms;
  /* x [0.5, 1.5): spreads the retries of jobs that failed together (a device reset). */
  d = d / 2 + (d * (uint64_t)random) / 4294967296u;
  return d ? (uint32_t)d : 1;
}

int sq_queue_progress(sq_queue_t *q, sq_redis_conn_t *c, const sq_progress_item_t *items, size_t n,
                      sq_queue_status_cb cb, void *data) {
  if (!q || !c || !cb || (n && !items)) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "progress", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  argv_u64(&r->argv, sq_clock_wall_ms());
  argv_u64(&r->argv, q->result_ttl_s);
  for (size_t i = 0; i < n; i++) {
    argv_str(&r->argv, items[i].id);
    argv_u64(&r->argv, items[i].steps_done);
    argv_u64(&r->argv, items[i].steps_total);
  }
  return req_start(c, r);
}

int sq_queue_release(sq_queue_t *q, sq_redis_conn_t *c, const char *const *ids, size_t n,
                     sq_queue_status_cb cb, void *data) {
  if (!q || !c || !cb || (n && !ids)) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "release", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  argv_u64(&r->argv, sq_clock_wall_ms());
  argv_u64(&r->argv, q->result_ttl_s);
  if (!ids) {
    argv_str(&r->argv, "*");
  } else {
    for (size_t i = 0; i < n; i++) argv_str(&r->argv, ids[i]);
  }
  return req_start(c, r);
}

int sq_queue_heartbeat(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_status_cb cb, void *data) {
  if (!q || !c || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "heartbeat", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  argv_u64(&r->argv, q->lease_ttl_ms);
  argv_u64(&r->argv, sq_clock_wall_ms());
  for (size_t i = 0; i < q->nmodels; i++) argv_str(&r->argv, q->models[i]);
  return req_start(c, r);
}

int sq_queue_sweep(sq_queue_t *q, sq_redis_conn_t *c, uint32_t interval_ms, sq_queue_status_cb cb,
                   void *data) {
  if (!q || !c || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "sweep", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_u64(&r->argv, 2 * (uint64_t)(interval_ms ? interval_ms : 1000));
  argv_u64(&r->argv, q->max_attempts);
  argv_u64(&r->argv, sq_clock_wall_ms());
  argv_u64(&r->argv, q->result_ttl_s);
  argv_u64(&r->argv, q->dead_ttl_s);
  return req_start(c, r);
}

int sq_queue_wait(sq_queue_t *q, sq_redis_conn_t *blocking, double timeout_s, sq_queue_status_cb cb,
                  void *data) {
  if (!q || !blocking || !cb || q->nmodels == 0) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, NULL, data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  /* The reply takes the timeout by design; 3 s of slack for a loaded server. */
  r->budget_ms = (uint64_t)(timeout_s * 1000) + 3000;
  argv_str(&r->argv, "BRPOP");
  for (size_t i = 0; i < q->nmodels; i++) {
    size_t len = strlen(q->prefix) + strlen(key_WAKE) + strlen(q->models[i]) + 3;
    char *key = malloc(len);
    if (!key) {
      r->argv.failed = 1;
      break;
    }
    snprintf(key, len, "%s:%s:%s", q->prefix, key_WAKE, q->models[i]);
    argv_str(&r->argv, key);
    free(key);
  }
  char t[32];
  /* BRPOP 0 blocks forever; never ask for that by accident. */
  snprintf(t, sizeof t, "%.3f", timeout_s > 0.001 ? timeout_s : 0.001);
  argv_str(&r->argv, t);
  return req_start(blocking, r);
}

int sq_queue_unregister(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_status_cb cb, void *data) {
  if (!q || !c || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "unregister", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  return req_start(c, r);
}

int sq_queue_depth(sq_queue_t *q, sq_redis_conn_t *c, sq_queue_depth_cb cb, void *data) {
  if (!q || !c || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_DEPTH, "depth", data);
  if (!r) return SQ_ENOMEM;
  r->cb.depth = cb;
  argv_str(&r->argv, q->prefix);
  for (size_t i = 0; i < q->nmodels; i++) argv_str(&r->argv, q->models[i]);
  return req_start(c, r);
}

int sq_queue_reconcile(sq_queue_t *q, sq_redis_conn_t *c, const char *const *held, size_t n,
                       sq_queue_status_cb cb, void *data) {
  if (!q || !c || !cb || (n && !held)) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_STATUS, "release", data);
  if (!r) return SQ_ENOMEM;
  r->cb.status = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->worker_id);
  argv_str(&r->argv, q->token);
  argv_u64(&r->argv, sq_clock_wall_ms());
  argv_u64(&r->argv, q->result_ttl_s);
  argv_str(&r->argv, "!"); /* every id of the list but the held ones */
  for (size_t i = 0; i < n; i++) argv_str(&r->argv, held[i]);
  return req_start(c, r);
}

int sq_queue_permcheck(sq_queue_t *q, sq_redis_conn_t *c, const char *role,
                       sq_queue_permcheck_cb cb, void *data) {
  if (!q || !c || !cb || !role) return SQ_EINVAL;
  queue_req_t *r = req_new(q, REQ_PERMCHECK, "permcheck", data);
  if (!r) return SQ_ENOMEM;
  r->cb.permcheck = cb;
  argv_str(&r->argv, q->prefix);
  argv_str(&r->argv, q->token);
  argv_str(&r->argv, role);
  return req_start(c, r);
}

int sq_queue_enqueue_sync(redisContext *c, const char *prefix, const char *id, const char *model,
                          const char *tenant, const char *group, int64_t priority,
                          const uint8_t *payload, size_t len, sq_error_t *err) {
  if (!c || !id || !model || (len && !payload))
    return sq_error_set(err, SQ_EINVAL, "enqueue: missing argument");
  argv_t a = {0};
  argv_script(&a, "enqueue");
  argv_str(&a, prefix ? prefix : text_PREFIX);
  argv_u64(&a, sq_clock_wall_ms());
  argv_u64(&a, SQ_DEFAULT_RESULT_TTL_S); /* rejected jobs only; workers apply their own TTL */
  argv_str(&a, group ? group : "");
  argv_str(&a, "0");
  argv_str(&a, id);
  argv_str(&a, model);
  argv_str(&a, tenant ? tenant : "");
  char pr[24];
  snprintf(pr, sizeof pr, "%" PRId64, priority);
  argv_str(&a, pr);
  argv_push(&a, payload, len);
  if (a.failed) {
    argv_free(&a);
    return sq_error_set(err, SQ_ENOMEM, "enqueue: out of memory");
  }
  redisReply *rep = redisCommandArgv(c, a.argc, (const char **)a.argv, a.len);
  if (reply_is_noscript(rep)) {
    freeReplyObject(rep);
    rep = NULL;
    if (argv_to_eval(&a, "enqueue") == 0)
      rep = redisCommandArgv(c, a.argc, (const char **)a.argv, a.len);
  }
  argv_free(&a);
  int rc;
  if (!rep) {
    rc = sq_error_set(err, SQ_EREDIS, "enqueue: %s", c->err ? c->errstr : "no reply");
  } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER) {
    rc = (int)rep->element[0]->integer;
  } else {
    rc = sq_error_set(err, SQ_EREDIS, "enqueue: %s",
                      rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "unexpected reply");
  }
  freeReplyObject(rep);
  return rc;
}

/* ---- readers of events ---- */

int sq_queue_recover(sq_redis_conn_t *c, const char *prefix, const char *kind, const char *id,
                     uint64_t since_off, const char *since_epoch, uint32_t limit, int watch,
                     uint64_t budget_ms, sq_queue_recover_cb cb, void *data) {
  if (!c || !kind || !id || !cb) return SQ_EINVAL;
  queue_req_t *r = req_new(NULL, REQ_RECOVER, "recover", data);
  if (!r) return SQ_ENOMEM;
  r->cb.recover = cb;
  r->budget_ms = budget_ms;
  argv_str(&r->argv, prefix ? prefix : text_PREFIX);
  argv_str(&r->argv, kind);
  argv_str(&r->argv, id);
  argv_u64(&r->argv, since_off);
  argv_str(&r->argv, since_epoch ? since_epoch : "");
  argv_u64(&r->argv, limit ? limit : SQ_DEFAULT_RECOVER_LIMIT);
  argv_str(&r->argv, watch ? "1" : "0");
  return req_start(c, r);
}
