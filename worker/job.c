/* worker/job: the pre- and postprocessing glue of one job (work pool) and the batch run
 * (executor thread). Every failure becomes that job's error code and message; nothing here
 * fails a whole batch or the process, whatever the input.
 * Threads: sq_wjob_prepare/sq_wjob_finish on the libuv work pool, sq_wbatch_run on an executor. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_internal.h"

static void job_fail(wjob_t *j, int code, const char *msg) {
  if (j->err) return; /* keep the first failure */
  j->err = code ? code : SQ_EINTERNAL;
  snprintf(j->msg, sizeof j->msg, "%s", msg && msg[0] ? msg : sq_error_text(j->err));
}

static int image_from_job(const sq_job_t *job, uint32_t channels, sq_image_t *img,
                          sq_error_t *err) {
  if (job->image_format == SQ_IMAGE_JPEG)
    return sq_image_decode_jpeg(job->image_data, job->image_size, SQ_PROTO_MAX_SIDE,
                                SQ_PROTO_MAX_PIXELS, channels == 3 ? 3 : 1, img, err);
  /* Raw formats keep their own channels: the model's prepare converts gray <-> RGB. */
  uint32_t raw_channels, bytes;
  sq_proto_image_format_layout(job->image_format, &raw_channels, &bytes);
  if (!raw_channels) return sq_error_set(err, SQ_EIMAGE_FORMAT, "image.format: unsupported");
  return sq_image_from_raw_channels(job->image_data, job->image_size, job->width, job->height,
                                    raw_channels, bytes, img, err);
}

/* The job's params.input_range as the gpu module's policy; NULL when the job has none. */
static const sq_input_range_t *job_range(const sq_job_t *job, sq_input_range_t *r) {
  switch (job->input_range_mode) {
    case SQ_PROTO_RANGE_FIXED:
      sq_input_range_default(r, SQ_RANGE_FIXED);
      return r;
    case SQ_PROTO_RANGE_FULL:
      sq_input_range_default(r, SQ_RANGE_FULL);
      r->bits = job->input_range_bits;
      return r;
    case SQ_PROTO_RANGE_PERCENTILE:
      sq_input_range_default(r, SQ_RANGE_PERCENTILE);
      r->low = job->input_range_low;
      r->high = job->input_range_high;
      return r;
    default:
      return NULL;
  }
}

/* The job's threshold and minimum area, its own or its model's defaults. */
static sq_postparams_t wjob_postparams(const wjob_t *j) {
  sq_postparams_t pp;
  pp.threshold = j->job.has_threshold ? j->job.threshold : j->ms->info.default_threshold;
  pp.min_area = j->job.has_min_area ? j->job.min_area : j->ms->info.default_min_area;
  return pp;
}

void sq_wjob_prepare(wjob_t *j) {
  if (j->parent) return; /* an ensemble member record: its parent prepared its sample */
  uint64_t t0 = sq_clock_mono_us();
  sq_error_t err = {0};
  int rc = sq_proto_job_decode(j->c.payload, j->c.payload_len, &j->job, &err);
  if (rc) {
    job_fail(j, rc, err.msg);
    goto out;
  }
  if (strcmp(j->job.id, j->c.id) != 0) {
    char m[256];
    snprintf(m, sizeof m, "id: payload id \"%.100s\" differs from the queued id \"%.100s\"",
             j->job.id, j->c.id);
    job_fail(j, SQ_EID_MISMATCH, m);
    goto out;
  }
  if (strcmp(j->job.model, j->c.model) != 0) {
    char m[256];
    snprintf(m, sizeof m, "model: payload model \"%.64s\" differs from its queue's model \"%.64s\"",
             j->job.model, j->c.model);
    job_fail(j, SQ_EMODEL_UNKNOWN, m);
    goto out;
  }
  if (!j->ms) {
    char m[256];
    snprintf(m, sizeof m, "model: \"%.64s\" is not served by this worker", j->c.model);
    job_fail(j, SQ_EMODEL_UNKNOWN, m);
    goto out;
  }
  if (j->job.deadline_ms && sq_clock_wall_ms() > j->job.deadline_ms) {
    char m[256];
    snprintf(m, sizeof m, "deadline_ms %llu had passed %llu ms earlier when the job was claimed",
             (unsigned long long)j->job.deadline_ms,
             (unsigned long long)(sq_clock_wall_ms() - j->job.deadline_ms));
    job_fail(j, SQ_EDEADLINE, m);
    goto out;
  }
  uint32_t channels = j->ms->info.input_channels;
  if (j->job.nmembers) {
    /* Every member must be served here (deployments run the members on the same workers). */
    for (size_t k = 0; k < j->job.nmembers; k++) {
      model_slot_t *slot = NULL;
      for (size_t m = 0; m < j->nslots; m++)
        if (strcmp(j->slots[m].name, j->job.member_names[k]) == 0) slot = &j->slots[m];
      if (!slot) {
        char m[256];
        snprintf(m, sizeof m, "models: member \"%.64s\" is not served by this worker",
                 j->job.member_names[k]);
        job_fail(j, SQ_EMODEL_UNKNOWN, m);
        goto out;
      }
      j->ens_ms[k] = slot;
      if (slot == j->ms) j->ens_own = (uint32_t)k;
      /* Decoded once for all: RGB if any member wants it (prepare converts either way). */
      if (slot->info.input_channels == 3) channels = 3;
    }
    j->ens_n = j->job.nmembers;
  }
  sq_image_t img = {0};
  rc = image_from_job(&j->job, channels, &img, &err);
  if (rc) {
    job_fail(j, rc, err.msg);
    sq_image_free(&img);
    goto out;
  }
  j->width = img.width;
  j->height = img.height;
  /* The encoded image is not needed any more: free it early, it may be large. */
  free(j->job.image_data);
  j->job.image_data = NULL;
  free(j->c.payload);
  j->c.payload = NULL;
  sq_input_range_t range_buf;
  const sq_input_range_t *range = job_range(&j->job, &range_buf);
  /* A single model may threshold next to the model (a GPU then returns only the mask); an
   * ensemble needs every member's probabilities. */
  sq_postparams_t pp = wjob_postparams(j);
  rc = sq_model_prepare_range(j->ms->model, &img, range, j->ens_n ? NULL : &pp, &j->sample, &err);
  if (rc) {
    j->sample = NULL;
    job_fail(j, rc, err.msg);
  }
  for (size_t k = 0; k < j->ens_n && !rc; k++) {
    if (k == j->ens_own) continue;
    rc = sq_model_prepare_range(j->ens_ms[k]->model, &img, range, NULL, &j->ens_sample[k], &err);
    if (rc) {
      j->ens_sample[k] = NULL;
      char m[256];
      snprintf(m, sizeof m, "%.60s: %.190s", j->ens_ms[k]->name, err.msg);
      job_fail(j, rc, m);
    }
  }
  sq_image_free(&img);
out:
  j->t.decode_us = sq_clock_mono_us() - t0;
}

/* Executor thread: the model reports tiles done per sample of the run (gpu.h). */
static void on_model_progress(void *data, size_t sample, uint32_t done, uint32_t total) {
  wjob_t **valid = data;
  atomic_store(&valid[sample]->steps_total, total);
  atomic_store(&valid[sample]->steps_done, done);
}

void sq_wbatch_run(wbatch_t *b, int ctx) {
  size_t n = b->n ? b->n : 1;
  void **samples = calloc(n, sizeof(void *));
  void **outputs = calloc(n, sizeof(void *));
  int *codes = calloc(n, sizeof(int));
  wjob_t **valid = calloc(n, sizeof(wjob_t *));
  size_t k = 0;
  if (!samples || !outputs || !codes || !valid) {
    for (size_t i = 0; i < b->n; i++) job_fail(b->jobs[i], SQ_ENOMEM, "out of memory (batch)");
    goto out;
  }
  for (size_t i = 0; i < b->n; i++) {
    if (b->jobs[i]->err || !b->jobs[i]->sample) continue;
    valid[k] = b->jobs[i];
    samples[k++] = b->jobs[i]->sample;
  }
  if (k > 0) {
    uint64_t t0 = sq_clock_mono_us();
    sq_error_t err = {0};
    sq_model_progress_set(on_model_progress, valid);
    int rc = sq_model_run(b->ms->model, ctx, samples, k, outputs, codes, &err);
    sq_model_progress_set(NULL, NULL);
    uint64_t dt = sq_clock_mono_us() - t0;
    for (size_t i = 0; i < k; i++) {
      valid[i]->t.inference_us = dt;
      if (rc || codes[i]) {
        /* The whole batch failed, or this job alone (out of memory even by itself). */
        job_fail(valid[i], rc ? rc : codes[i], err.msg[0] ? err.msg : "the model failed to run");
        valid[i]->retryable = err.retryable;
      } else {
        /* run consumed the sample; the output now belongs to the job. */
        valid[i]->sample = NULL;
        valid[i]->output = outputs[i];
        if (!outputs[i]) job_fail(valid[i], SQ_EMODEL, "the model produced no output");
      }
    }
  }
out:
  free(samples);
  free(outputs);
  free(codes);
  free(valid);
}

static void encode_result(wjob_t *j, const sq_model_result_t *res) {
  sq_result_t r = {0};
  r.id = j->c.id;
  r.error_code = j->err;
  r.error_message = j->err ? j->msg : NULL;
  r.model = j->job.model ? j->job.model : j->c.model;
  r.width = j->width;
  r.height = j->height;
  r.polygons = j->err || !res ? NULL : res->polygons;
  r.npolygons = j->err || !res ? 0 : res->npolygons;
  r.mask = j->err || !res ? NULL : res->mask;
  r.timings = j->t;
  r.worker = j->worker_id;
  r.batch_size = j->batch_size;
  r.attempt = j->c.attempt;
  r.meta = j->job.meta;
  r.meta_size = j->job.meta_size;
  j->result = sq_proto_result_encode(&r, &j->result_len);
}

void sq_wjob_finish(wjob_t *j) {
  uint64_t t0 = sq_clock_mono_us();
  sq_model_result_t res = {0};
  /* The members' share, recorded on the loop thread (see sq_wjob_member_done). */
  j->t.inference_us += j->ens_inference_us;
  if (j->ens_err) job_fail(j, j->ens_err, j->ens_msg);
  if (!j->err && j->output) {
    sq_error_t err = {0};
    sq_postparams_t pp = wjob_postparams(j);
    int want_mask = (j->job.outputs & SQ_OUTPUT_MASK) != 0;
    int rc;
    if (j->ens_n) {
      sq_model_t *models[SQ_PROTO_MAX_MEMBERS];
      void *outs[SQ_PROTO_MAX_MEMBERS];
      for (size_t k = 0; k < j->ens_n; k++) {
        models[k] = j->ens_ms[k]->model;
        outs[k] = k == j->ens_own ? j->output : j->ens_out[k];
      }
      rc = sq_ensemble_postprocess(models, outs, j->job.member_weights, j->ens_n, &pp, want_mask,
                                   &res, &err);
      j->output = NULL; /* every member output was consumed, whatever happened */
      for (size_t k = 0; k < j->ens_n; k++) j->ens_out[k] = NULL;
    } else {
      rc = sq_model_postprocess(j->ms->model, j->output, &pp, want_mask, &res, &err);
      if (!rc) j->output = NULL; /* consumed; a failed one is freed with the job */
    }
    if (rc) job_fail(j, rc, err.msg);
  }
  j->t.postprocess_us = sq_clock_mono_us() - t0;
  j->t.total_us = sq_clock_mono_us() - j->claimed_us;
  if (j->err == SQ_EDEVICE) {
    /* The device failed, not the job: no result; the worker hands it back to its queue. */
    j->release = 1;
    sq_model_result_free(&res);
    return;
  }
  encode_result(j, &res);
  if (!j->result) {
    /* Out of memory for the full result: a small error result still lets the job finish. */
    job_fail(j, SQ_ENOMEM, "out of memory while encoding the result");
    j->err = SQ_ENOMEM;
    encode_result(j, NULL);
  }
  sq_model_result_free(&res);
}

int sq_wjob_member_done(wjob_t *m) {
  wjob_t *p = m->parent;
  /* The parent may be on an executor right now: only fields no other thread touches. */
  p->ens_inference_us += m->t.inference_us;
  if (m->err) {
    if (!p->ens_err) {
      p->ens_err = m->err;
      snprintf(p->ens_msg, sizeof p->ens_msg, "%.60s: %.190s", m->ms->name, m->msg);
    }
  } else if (m->output) {
    p->ens_out[m->member] = m->output;
    m->output = NULL;
  }
  return --p->members_left == 0;
}

void sq_wjob_free(wjob_t *j) {
  if (!j) return;
  for (size_t k = 0; k < j->ens_n; k++) {
    if (j->ens_sample[k]) sq_model_sample_free(j->ens_ms[k]->model, j->ens_sample[k]);
    if (j->ens_out[k]) sq_model_output_free(j->ens_ms[k]->model, j->ens_out[k]);
  }
  if (j->sample && j->ms) sq_model_sample_free(j->ms->model, j->sample);
  if (j->output && j->ms) sq_model_output_free(j->ms->model, j->output);
  sq_proto_job_free(&j->job);
  sq_claimed_free(&j->c);
  free(j->result);
  free(j);
}
