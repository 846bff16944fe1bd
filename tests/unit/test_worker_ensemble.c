/* Worker job glue for ensembles, without Redis or threads: an ensemble job (otsu + null) is
 * prepared once with one sample per member, the other member runs as a member record in its own
 * batch, hands its output back (sq_wjob_member_done counts down), and the job's finish combines
 * the maps with the weights. A member's failure fails the job with that member's error; a member
 * the worker does not serve is unknown_model. Nothing leaks (run under ASan). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "worker/worker_internal.h"

static model_slot_t slots[2]; /* otsu, null */

static uint8_t *ens_job(const char *id, float w_otsu, float w_null, float threshold, size_t *len) {
  uint32_t w = 40, h = 30;
  uint8_t *px = calloc((size_t)w * h, 1);
  for (uint32_t y = h / 4; y < h / 2; y++)
    for (uint32_t x = w / 4; x < w / 2; x++) px[(size_t)y * w + x] = 200;
  sq_job_t job = {0};
  job.id = (char *)id;
  job.model = "otsu";
  job.image_format = SQ_IMAGE_GRAY8;
  job.image_data = px;
  job.image_size = (size_t)w * h;
  job.width = w;
  job.height = h;
  job.has_threshold = 1;
  job.threshold = threshold;
  job.outputs = SQ_OUTPUT_POLYGONS;
  job.nmembers = 2;
  job.member_names[0] = "otsu";
  job.member_names[1] = "null";
  job.member_weights[0] = w_otsu;
  job.member_weights[1] = w_null;
  uint8_t *buf = sq_proto_job_encode(&job, len);
  free(px);
  return buf;
}

static wjob_t *job_new(const char *id, uint8_t *payload, size_t len, size_t nslots) {
  wjob_t *j = calloc(1, sizeof(*j));
  j->c.id = sq_strdup(id);
  j->c.model = sq_strdup("otsu");
  j->c.payload = payload;
  j->c.payload_len = len;
  j->c.attempt = 1;
  j->ms = &slots[0];
  j->slots = slots;
  j->nslots = nslots;
  j->worker_id = "unit";
  j->claimed_us = sq_clock_mono_us();
  return j;
}

static void run_one(model_slot_t *ms, wjob_t *j) {
  wbatch_t b = {0};
  wjob_t *jobs[1] = {j};
  b.ms = ms;
  b.jobs = jobs;
  b.n = 1;
  j->batch_size = 1;
  sq_wbatch_run(&b, 0);
}

/* The worker's path minus the loop: prepare, spawn the member record, run both, count down,
 * finish. member_err != 0 makes the member's run fail. Returns the decoded result. */
static void run_ensemble(wjob_t *j, int member_err, sq_result_decoded_t *r) {
  sq_wjob_prepare(j);
  wjob_t *m = NULL;
  if (!j->err) {
    CHECK_EQ_INT(j->ens_n, 2);
    CHECK_EQ_INT(j->ens_own, 0);
    CHECK(j->sample != NULL && j->ens_sample[1] != NULL);
    m = calloc(1, sizeof(*m));
    m->c.id = sq_strdup(j->c.id);
    m->c.model = sq_strdup("null");
    m->parent = j;
    m->member = 1;
    m->ms = &slots[1];
    m->sample = j->ens_sample[1];
    j->ens_sample[1] = NULL;
    j->members_left = 2;
    sq_wjob_prepare(m); /* a no-op for member records */
    CHECK(m->sample != NULL);
    run_one(&slots[1], m);
    if (member_err) {
      m->err = member_err;
      snprintf(m->msg, sizeof m->msg, "boom");
    }
    CHECK_EQ_INT(sq_wjob_member_done(m), 0); /* the job's own run is still out */
    run_one(&slots[0], j);
    CHECK_EQ_INT(--j->members_left, 0);
  }
  sq_wjob_finish(j);
  CHECK(j->result != NULL);
  sq_error_t err;
  CHECK_EQ_INT(sq_proto_result_decode(j->result, j->result_len, r, &err), 0);
  sq_wjob_free(m);
  sq_wjob_free(j);
}

int main(void) {
  sq_error_t err;
  const char *names[2] = {"otsu", "null"};
  for (int i = 0; i < 2; i++) {
    slots[i].name = names[i];
    slots[i].model = sq_model_open(names[i], "models", &err);
    CHECK(slots[i].model != NULL);
    if (!slots[i].model) CHECK_DONE();
    slots[i].info = *sq_model_info(slots[i].model);
  }
  size_t len;
  uint8_t *p; /* encoded before job_new reads len */
  sq_result_decoded_t r;

  /* Equal weights: otsu's 1 and null's 0 average to 0.5, foreground at threshold 0.5 ... */
  p = ens_job("e1", 1, 1, 0.5f, &len);
  run_ensemble(job_new("e1", p, len, 2), 0, &r);
  if (!r.ok) fprintf(stderr, "e1: %s: %s\n", r.error_code, r.error_message);
  CHECK(r.ok);
  CHECK_EQ_INT(r.npolygons, 1);
  CHECK_STR(r.model, "otsu");
  sq_proto_result_decoded_free(&r);
  /* ... and not at 0.6; with null at weight 0 it is otsu alone again. */
  p = ens_job("e2", 1, 1, 0.6f, &len);
  run_ensemble(job_new("e2", p, len, 2), 0, &r);
  CHECK(r.ok);
  CHECK_EQ_INT(r.npolygons, 0);
  sq_proto_result_decoded_free(&r);
  p = ens_job("e3", 1, 0, 0.99f, &len);
  run_ensemble(job_new("e3", p, len, 2), 0, &r);
  CHECK(r.ok);
  CHECK_EQ_INT(r.npolygons, 1);
  sq_proto_result_decoded_free(&r);

  /* A member's failure is the job's, named after the member. */
  p = ens_job("e4", 1, 1, 0.5f, &len);
  run_ensemble(job_new("e4", p, len, 2), SQ_EMODEL, &r);
  CHECK(!r.ok);
  CHECK_STR(r.error_code, sq_error_name(SQ_EMODEL));
  CHECK(r.error_message && strstr(r.error_message, "null: boom"));
  sq_proto_result_decoded_free(&r);

  /* A member this worker does not serve. */
  p = ens_job("e5", 1, 1, 0.5f, &len);
  run_ensemble(job_new("e5", p, len, 1), 0, &r);
  CHECK(!r.ok);
  CHECK_STR(r.error_code, "unknown_model");
  CHECK(r.error_message && strstr(r.error_message, "\"null\""));
  sq_proto_result_decoded_free(&r);

  for (int i = 0; i < 2; i++) sq_model_close(slots[i].model);
  CHECK_DONE();
}
