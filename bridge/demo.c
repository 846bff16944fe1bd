/* bridge/demo: the --demo upload (docs/bridge.md "Demo"): POST /demo/upload, a multipart form of
 * JPEG images (field "image", parsed by lws_spa), becomes one group of jobs for --demo-model,
 * enqueued through the enqueue script's C API (sq_queue_enqueue_sync) on a thread of libuv's pool
 * so the loop never waits on Redis; the answer names the group and the jobs with their tokens.
 * Threads: the upload is parsed on the loop thread; enqueue_work runs on the pool and touches
 * only the upload it was given. */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bridge/server_internal.h"
#include "proto/proto.h"
#include "queue/queue.h"

#define NAME_MAX_LEN 100

typedef struct {
  char name[NAME_MAX_LEN + 1];
  char id[SQ_PROTO_MAX_ID + 1];
  uint8_t *data;
  size_t len, cap;
  uint8_t *payload; /* the encoded job */
  size_t payload_len;
  int code; /* enqueue result: 1 queued, 0 pending, 2 has a result, 3 rejected, < 0 error */
} demo_file_t;

struct demo_upload {
  sq_bridge_t *b;
  http_req_t *req;
  demo_file_t *files;
  size_t nfiles;
  size_t total;
  int err_status, err_code;
  char err_msg[200];
  uv_work_t work;
  char group[48];
  char work_err[256];
};

static void upload_free(struct demo_upload *u) {
  if (!u) return;
  for (size_t i = 0; i < u->nfiles; i++) {
    free(u->files[i].data);
    free(u->files[i].payload);
  }
  free(u->files);
  free(u);
}

static void upload_fail(struct demo_upload *u, int status, int code, const char *msg) {
  if (u->err_status) return;
  u->err_status = status;
  u->err_code = code;
  snprintf(u->err_msg, sizeof u->err_msg, "%s", msg);
}

static int on_file(void *data, const char *name, const char *filename, char *buf, int len,
                   enum lws_spa_fileupload_states state) {
  struct demo_upload *u = data;
  const sq_bridge_config_t *cfg = u->b->cfg;
  if (u->err_status) return 0; /* read and drop the rest; the error is answered at the end */
  if (state == LWS_UFS_OPEN) {
    if (strcmp(name, "image") != 0) {
      upload_fail(u, 400, SQ_EBAD_REQUEST, "files must be sent in the form field \"image\"");
      return 0;
    }
    if (u->nfiles >= cfg->demo_max_files) {
      char msg[96];
      snprintf(msg, sizeof msg, "at most %u images per upload", cfg->demo_max_files);
      upload_fail(u, 413, SQ_EOVERSIZE, msg);
      return 0;
    }
    demo_file_t *nf = realloc(u->files, (u->nfiles + 1) * sizeof(*nf));
    if (!nf) {
      upload_fail(u, 500, SQ_ENOMEM, "out of memory");
      return 0;
    }
    u->files = nf;
    demo_file_t *f = &u->files[u->nfiles++];
    memset(f, 0, sizeof(*f));
    /* Printable ASCII only: the name only labels the image on the page. */
    size_t k = 0;
    for (const char *p = filename ? filename : ""; *p && k < NAME_MAX_LEN; p++)
      f->name[k++] = (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? *p : '_';
    f->name[k] = '\0';
    return 0;
  }
  if (state == LWS_UFS_CLOSE || u->nfiles == 0) return 0;
  demo_file_t *f = &u->files[u->nfiles - 1];
  if (len <= 0) return 0;
  if (u->total + (size_t)len > cfg->demo_max_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "an upload is at most %u bytes", cfg->demo_max_bytes);
    upload_fail(u, 413, SQ_EOVERSIZE, msg);
    return 0;
  }
  if (f->len + (size_t)len > f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 65536;
    while (cap < f->len + (size_t)len) cap *= 2;
    uint8_t *nd = realloc(f->data, cap);
    if (!nd) {
      upload_fail(u, 500, SQ_ENOMEM, "out of memory");
      return 0;
    }
    f->data = nd;
    f->cap = cap;
  }
  memcpy(f->data + f->len, buf, (size_t)len);
  f->len += (size_t)len;
  u->total += (size_t)len;
  return 0;
}

static const char *const param_names[] = {"note"};

int sq_bridge_demo_begin(sq_bridge_t *b, http_req_t *req, struct lws *wsi) {
  char clen[32] = "", ctype[128] = "";
  if (lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0) clen[0] = '\0';
  if (lws_hdr_copy(wsi, ctype, sizeof ctype, WSI_TOKEN_HTTP_CONTENT_TYPE) < 0) ctype[0] = '\0';
  if (strncmp(ctype, "multipart/form-data", 19) != 0) {
    sq_bridge_http_error(req, 415, SQ_EBAD_REQUEST,
                         "send a multipart/form-data form with images in field \"image\"");
    return 0;
  }
  if (clen[0] && strtoull(clen, NULL, 10) > (unsigned long long)b->cfg->demo_max_bytes + 65536) {
    sq_bridge_http_error(req, 413, SQ_EOVERSIZE, "an upload is at most %u bytes",
                         b->cfg->demo_max_bytes);
    return 0;
  }
  struct demo_upload *u = calloc(1, sizeof(*u));
  if (!u) return -1;
  u->b = b;
  u->req = req;
  lws_spa_create_info_t info;
  memset(&info, 0, sizeof info);
  info.param_names = param_names;
  info.count_params = 1;
  info.max_storage = 1024;
  info.opt_cb = on_file;
  info.opt_data = u;
  req->spa = lws_spa_create_via_info(wsi, &info);
  if (!req->spa) {
    free(u);
    sq_bridge_http_error(req, 400, SQ_EBAD_REQUEST, "cannot parse this form");
    return 0;
  }
  req->upload = u;
  return 0;
}

int sq_bridge_demo_body(http_req_t *req, const void *in, size_t len) {
  if (lws_spa_process(req->spa, in, (int)len) != 0 && req->upload)
    upload_fail(req->upload, 400, SQ_EBAD_REQUEST, "the multipart form is malformed");
  return 0;
}

/* Connects (AUTH, SELECT like the bridge's own connections) and enqueues every file's job. */
static void enqueue_work(uv_work_t *w) {
  struct demo_upload *u = w->data;
  const sq_bridge_config_t *cfg = u->b->cfg;
  struct timeval tv = {5, 0};
  /* A plain connection of its own (config.c refuses --demo with a Sentinel URL): this thread
   * must not touch the loop's connections. */
  redisContext *c = redisConnectWithTimeout(cfg->redis.nodes[0].host, cfg->redis.nodes[0].port, tv);
  if (!c || c->err) {
    snprintf(u->work_err, sizeof u->work_err, "cannot connect to Redis: %s",
             c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return;
  }
  redisSetTimeout(c, tv);
  redisReply *r = NULL;
  if (cfg->redis.password && cfg->redis.user)
    r = redisCommand(c, "AUTH %s %s", cfg->redis.user, cfg->redis.password);
  else if (cfg->redis.password)
    r = redisCommand(c, "AUTH %s", cfg->redis.password);
  if (cfg->redis.password && (!r || r->type == REDIS_REPLY_ERROR)) {
    snprintf(u->work_err, sizeof u->work_err, "Redis refused AUTH");
    if (r) freeReplyObject(r);
    redisFree(c);
    return;
  }
  if (r) freeReplyObject(r);
  if (cfg->redis.db) {
    r = redisCommand(c, "SELECT %u", (unsigned)cfg->redis.db);
    if (r) freeReplyObject(r);
  }
  for (size_t i = 0; i < u->nfiles; i++) {
    demo_file_t *f = &u->files[i];
    sq_error_t err;
    f->code = sq_queue_enqueue_sync(c, cfg->prefix, f->id, cfg->demo_model, "", u->group, 0,
                                    f->payload, f->payload_len, &err);
    if (f->code < 0) {
      snprintf(u->work_err, sizeof u->work_err, "enqueue of %.60s failed: %.160s", f->id, err.msg);
      break;
    }
  }
  redisFree(c);
}

static void respond_enqueued(sq_bridge_t *b, http_req_t *req, struct demo_upload *u) {
  uint64_t exp = sq_clock_wall_ms() / 1000 + b->cfg->token_ttl_s;
  char channel[SQ_CHANNEL_MAX], token[SQ_BRIDGE_TOKEN_MAX];
  snprintf(channel, sizeof channel, "group:%s", u->group);
  sq_bridge_token_mint(b->secret, b->secret_len, channel, exp, token, sizeof token);
  json_t *jobs = json_array();
  json_t *doc =
      json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "group", u->group, "channel", channel, "token",
                token, "model", b->cfg->demo_model, "expires", (json_int_t)exp, "jobs", jobs);
  for (size_t i = 0; doc && i < u->nfiles; i++) {
    demo_file_t *f = &u->files[i];
    char jch[SQ_CHANNEL_MAX], jtok[SQ_BRIDGE_TOKEN_MAX];
    snprintf(jch, sizeof jch, "job:%s", f->id);
    sq_bridge_token_mint(b->secret, b->secret_len, jch, exp, jtok, sizeof jtok);
    json_array_append_new(jobs, json_pack("{s:s, s:s, s:s, s:s, s:i}", "id", f->id, "name", f->name,
                                          "channel", jch, "token", jtok, "enqueued", f->code));
  }
  char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text)
    sq_bridge_http_respond(req, 200, "application/json", text, strlen(text));
  else
    sq_bridge_http_error(req, 500, SQ_ENOMEM, "out of memory");
  free(text);
}

static void enqueue_done(uv_work_t *w, int status) {
  struct demo_upload *u = w->data;
  http_req_t *req = u->req;
  sq_bridge_t *b = u->b;
  req->in_work = 0;
  if (!req->wsi) {
    /* The browser left; its jobs are queued anyway (or not, if Redis failed). */
    req->upload = NULL;
    upload_free(u);
    free(req->body);
    free(req);
    return;
  }
  if (status != 0 || u->work_err[0]) {
    sq_log_warn("bridge", "demo upload not enqueued", "group=%s err=\"%s\"", u->group, u->work_err);
    sq_bridge_http_error(req, 503, SQ_EREDIS, "%s", u->work_err[0] ? u->work_err : "canceled");
  } else {
    b->stats.demo_uploads++;
    b->stats.demo_jobs += u->nfiles;
    sq_log_info("bridge", "demo upload enqueued", "group=%s jobs=%zu bytes=%zu model=%s", u->group,
                u->nfiles, u->total, b->cfg->demo_model);
    respond_enqueued(b, req, u);
  }
  req->upload = NULL;
  upload_free(u);
}

int sq_bridge_demo_complete(sq_bridge_t *b, http_req_t *req) {
  struct demo_upload *u = req->upload;
  lws_spa_finalize(req->spa);
  lws_spa_destroy(req->spa);
  req->spa = NULL;
  if (!u) return 0;
  if (!u->err_status && u->nfiles == 0)
    upload_fail(u, 400, SQ_EBAD_REQUEST, "no images in the form (field \"image\")");
  uint8_t rnd[6];
  if (!u->err_status && getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
    upload_fail(u, 500, SQ_EINTERNAL, "no random bytes for the group id");
  if (!u->err_status) {
    snprintf(u->group, sizeof u->group, "demo-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5]);
    for (size_t i = 0; i < u->nfiles && !u->err_status; i++) {
      demo_file_t *f = &u->files[i];
      if (f->len < 3 || f->data[0] != 0xFF || f->data[1] != 0xD8 || f->data[2] != 0xFF) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s is not a JPEG (the demo page converts images to JPEG)",
                 f->name[0] ? f->name : "an image");
        upload_fail(u, 400, SQ_EIMAGE_FORMAT, msg);
        break;
      }
      snprintf(f->id, sizeof f->id, "%s-%03zu", u->group, i + 1);
      sq_job_t job;
      memset(&job, 0, sizeof job);
      job.id = f->id;
      job.model = (char *)b->cfg->demo_model;
      job.group = u->group;
      job.image_format = SQ_IMAGE_JPEG;
      job.image_data = f->data;
      job.image_size = f->len;
      job.outputs = SQ_OUTPUT_POLYGONS;
      f->payload = sq_proto_job_encode(&job, &f->payload_len);
      if (!f->payload) upload_fail(u, 500, SQ_ENOMEM, "out of memory");
    }
  }
  if (u->err_status) {
    sq_bridge_http_error(req, u->err_status, u->err_code, "%s", u->err_msg);
    req->upload = NULL;
    upload_free(u);
    return 0;
  }
  u->work.data = u;
  if (uv_queue_work(b->loop, &u->work, enqueue_work, enqueue_done) != 0) {
    sq_bridge_http_error(req, 500, SQ_EINTERNAL, "cannot start the enqueue");
    req->upload = NULL;
    upload_free(u);
    return 0;
  }
  req->in_work = 1;
  return 0;
}

void sq_bridge_demo_drop(http_req_t *req) {
  if (req->spa) {
    lws_spa_destroy(req->spa);
    req->spa = NULL;
  }
  if (req->upload && !req->in_work) {
    upload_free(req->upload);
    req->upload = NULL;
  }
}
