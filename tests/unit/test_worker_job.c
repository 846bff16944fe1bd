/* Worker job glue without Redis: a claimed payload goes through prepare -> batch run -> finish
 * and always ends as one encoded result under the queued id; every bad input becomes that job's
 * own error code, and the good jobs of the same batch still succeed. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "worker/worker_internal.h"

static model_slot_t slot;

static wjob_t *job_new(const char *queued_id, const char *model, uint8_t *payload, size_t len) {
  wjob_t *j = calloc(1, sizeof(*j));
  j->c.id = sq_strdup(queued_id);
  j->c.model = sq_strdup(model);
  j->c.payload = payload ? payload : malloc(1);
  j->c.payload_len = len;
  j->c.attempt = 1;
  j->ms = &slot;
  j->worker_id = "unit";
  j->claimed_us = sq_clock_mono_us();
  return j;
}

static uint8_t *gray_job(const char *id, const char *model, uint32_t w, uint32_t h,
                         uint64_t deadline_ms, size_t *len) {
  uint8_t *px = calloc((size_t)w * h, 1);
  for (uint32_t y = h / 4; y < h / 2; y++)
    for (uint32_t x = w / 4; x < w / 2; x++) px[(size_t)y * w + x] = 200;
  sq_job_t job = {0};
  job.id = (char *)id;
  job.model = (char *)model;
  job.image_format = SQ_IMAGE_GRAY8;
  job.image_data = px;
  job.image_size = (size_t)w * h;
  job.width = w;
  job.height = h;
  job.deadline_ms = deadline_ms;
  job.outputs = SQ_OUTPUT_POLYGONS | SQ_OUTPUT_MASK;
  uint8_t *buf = sq_proto_job_encode(&job, len);
  free(px);
  return buf;
}

/* Runs a batch the way the worker does (minus the threads) and checks each result. */
static void run_batch(wjob_t **jobs, size_t n) {
  wbatch_t b = {0};
  b.ms = &slot;
  b.jobs = jobs;
  b.n = n;
  for (size_t i = 0; i < n; i++) {
    jobs[i]->batch = &b;
    jobs[i]->batch_size = (uint32_t)n;
    sq_wjob_prepare(jobs[i]);
  }
  sq_wbatch_run(&b, 0);
  for (size_t i = 0; i < n; i++) sq_wjob_finish(jobs[i]);
}

static void expect_result(wjob_t *j, const char *code) {
  sq_result_decoded_t r;
  sq_error_t err;
  CHECK(j->result != NULL);
  if (!j->result) return;
  CHECK_EQ_INT(sq_proto_result_decode(j->result, j->result_len, &r, &err), 0);
  CHECK_STR(r.id, j->c.id);
  if (code) {
    CHECK(!r.ok);
    CHECK_STR(r.error_code, code);
    CHECK(r.error_message && r.error_message[0]);
    CHECK_EQ_INT(j->err, sq_error_from_name(code));
  } else {
    if (!r.ok) fprintf(stderr, "unexpected error %s: %s\n", r.error_code, r.error_message);
    CHECK(r.ok);
    CHECK_EQ_INT(r.npolygons, 1);
    CHECK(r.mask != NULL);
    CHECK_STR(r.worker, "unit");
  }
  sq_proto_result_decoded_free(&r);
}

int main(void) {
  sq_error_t err;
  slot.name = "otsu";
  slot.model = sq_model_open("otsu", "models", &err);
  CHECK(slot.model != NULL);
  if (!slot.model) CHECK_DONE();
  slot.info = *sq_model_info(slot.model);

  size_t len;
  wjob_t *jobs[8];
  size_t n = 0;
  uint8_t *p = gray_job("good1", "otsu", 40, 30, 0, &len);
  jobs[n++] = job_new("good1", "otsu", p, len);
  p = gray_job("other", "otsu", 40, 30, 0, &len);
  jobs[n++] = job_new("mismatch", "otsu", p, len);
  p = gray_job("wrongmodel", "null", 40, 30, 0, &len);
  jobs[n++] = job_new("wrongmodel", "otsu", p, len);
  p = gray_job("late", "otsu", 40, 30, 1000, &len);
  jobs[n++] = job_new("late", "otsu", p, len);
  uint8_t *junk = malloc(5);
  memcpy(junk, "\xc1\x00\x01\x02\x03", 5);
  jobs[n++] = job_new("junk", "otsu", junk, 5);
  jobs[n++] = job_new("empty", "otsu", NULL, 0);
  p = gray_job("good2", "otsu", 64, 64, 0, &len);
  jobs[n++] = job_new("good2", "otsu", p, len);
  /* A truncated payload of a valid job. */
  p = gray_job("trunc", "otsu", 40, 30, 0, &len);
  jobs[n++] = job_new("trunc", "otsu", p, len / 2);

  run_batch(jobs, n);
  expect_result(jobs[0], NULL);
  expect_result(jobs[1], "id_mismatch");
  expect_result(jobs[2], "unknown_model");
  expect_result(jobs[3], "deadline_exceeded");
  expect_result(jobs[4], "malformed_msgpack");
  expect_result(jobs[5], "malformed_msgpack");
  expect_result(jobs[6], NULL);
  expect_result(jobs[7], "malformed_msgpack");
  for (size_t i = 0; i < n; i++) sq_wjob_free(jobs[i]);

  /* A job for a model this worker does not serve (no slot) still gets a result. */
  p = gray_job("noslot", "otsu", 8, 8, 0, &len);
  wjob_t *j = job_new("noslot", "otsu", p, len);
  j->ms = NULL;
  sq_wjob_prepare(j);
  sq_wjob_finish(j);
  expect_result(j, "unknown_model");
  sq_wjob_free(j);

  sq_model_close(slot.model);
  CHECK_DONE();
}
