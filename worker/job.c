/* worker/job: the pre- and postprocessing glue of one job (work pool) and the batch run
 * (executor thread). Every failure becomes that job's error code and message; nothing here
 * fails a whole batch or the process, whatever the input.
 * Threads: sq_wjob_prepare/sq_wjob_finish on the libuv work pool, sq_wbatch_run on an executor. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_internal.h"

#define POLYGON_TOLERANCE 0.5f

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
  rc = sq_model_prepare_range(j->ms->model, &img, range, &j->sample, &err);
  if (rc) {
    j->sample = NULL;
    job_fail(j, rc, err.msg);
  }
  for (size_t k = 0; k < j->ens_n && !rc; k++) {
    if (k == j->ens_own) continue;
    rc = sq_model_prepare_range(j->ens_ms[k]->model, &img, range, &j->ens_sample[k], &err);
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
  void **samples = calloc(b->n ? b->n : 1, sizeof(void *));
  void **outputs = calloc(b->n ? b->n : 1, sizeof(void *));
  wjob_t **valid = calloc(b->n ? b->n : 1, sizeof(wjob_t *));
  size_t k = 0;
  if (!samples || !outputs || !valid) {
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
    int rc = sq_model_run(b->ms->model, ctx, samples, k, outputs, &err);
    sq_model_progress_set(NULL, NULL);
    uint64_t dt = sq_clock_mono_us() - t0;
    for (size_t i = 0; i < k; i++) {
      valid[i]->t.inference_us = dt;
      if (rc) {
        job_fail(valid[i], rc, err.msg[0] ? err.msg : "the model failed to run");
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
  free(valid);
}

static void encode_result(wjob_t *j, const sq_polygon_t *polys, size_t npolys,
                          const uint8_t *mask) {
  sq_result_t r = {0};
  r.id = j->c.id;
  r.error_code = j->err;
  r.error_message = j->err ? j->msg : NULL;
  r.model = j->job.model ? j->job.model : j->c.model;
  r.width = j->width;
  r.height = j->height;
  r.polygons = j->err ? NULL : polys;
  r.npolygons = j->err ? 0 : npolys;
  r.mask = j->err ? NULL : mask;
  r.timings = j->t;
  r.worker = j->worker_id;
  r.batch_size = j->batch_size;
  r.attempt = j->c.attempt;
  r.meta = j->job.meta;
  r.meta_size = j->job.meta_size;
  j->result = sq_proto_result_encode(&r, &j->result_len);
}

/* An ensemble's mask: every member's probability map, combined with the job's weights. The
 * outputs consumed are set to NULL; the others are left for sq_wjob_free. */
static int ensemble_finish(wjob_t *j, const sq_postparams_t *pp, uint8_t **mask, uint32_t *mw,
                           uint32_t *mh, sq_error_t *err) {
  float *probs[SQ_PROTO_MAX_MEMBERS] = {0};
  uint32_t W = 0, H = 0;
  int rc = 0;
  for (size_t k = 0; k < j->ens_n && !rc; k++) {
    void **out = k == j->ens_own ? &j->output : &j->ens_out[k];
    sq_model_t *model = j->ens_ms[k]->model;
    uint32_t w = 0, h = 0;
    if (!*out) {
      rc = sq_error_set(err, SQ_EMODEL, "%s: the model produced no output", j->ens_ms[k]->name);
      break;
    }
    rc = sq_model_finish_prob(model, *out, &probs[k], &w, &h, err);
    *out = NULL; /* consumed (like finish above: never freed twice, whatever the model did) */
    if (rc) {
      char m[sizeof err->msg];
      snprintf(m, sizeof m, "%s", err->msg);
      sq_error_set(err, rc, "%s: %s", j->ens_ms[k]->name, m);
      break;
    }
    if (k == 0) {
      W = w, H = h;
    } else if (w != W || h != H) {
      rc = sq_error_set(err, SQ_EMODEL, "%s: probability map %ux%u, others %ux%u",
                        j->ens_ms[k]->name, w, h, W, H);
    }
    if (!rc && !probs[k] && (size_t)w * h > 0) {
      probs[k] = calloc((size_t)w * h, sizeof(float)); /* NULL = all 0 */
      if (!probs[k]) rc = sq_error_set(err, SQ_ENOMEM, "out of memory (probability map)");
    }
  }
  if (!rc)
    rc = sq_prob_combine((const float *const *)probs, j->job.member_weights, j->ens_n,
                         (size_t)W * H, pp->threshold, mask, err);
  for (size_t k = 0; k < j->ens_n; k++) free(probs[k]);
  if (rc) {
    *mask = NULL;
    return rc;
  }
  *mw = W;
  *mh = H;
  return 0;
}

void sq_wjob_finish(wjob_t *j) {
  uint64_t t0 = sq_clock_mono_us();
  sq_polygon_t *polys = NULL;
  size_t npolys = 0;
  uint8_t *mask = NULL;
  /* The members' share, recorded on the loop thread (see sq_wjob_member_done). */
  j->t.inference_us += j->ens_inference_us;
  if (j->ens_err) job_fail(j, j->ens_err, j->ens_msg);
  if (!j->err && j->output) {
    sq_error_t err = {0};
    sq_postparams_t pp;
    pp.threshold = j->job.has_threshold ? j->job.threshold : j->ms->info.default_threshold;
    pp.min_area = j->job.has_min_area ? j->job.min_area : j->ms->info.default_min_area;
    uint32_t mw = 0, mh = 0;
    int rc;
    if (j->ens_n) {
      rc = ensemble_finish(j, &pp, &mask, &mw, &mh, &err);
    } else {
      rc = sq_model_finish(j->ms->model, j->output, &pp, &mask, &mw, &mh, &err);
      j->output = NULL; /* finish consumes the output */
    }
    if (rc) {
      mask = NULL;
      job_fail(j, rc, err.msg);
    } else if (mw == 0 || mh == 0) {
      free(mask);
      mask = NULL;
      job_fail(j, SQ_EMODEL, "the model produced a mask of zero size");
    } else {
      float sx = j->width ? (float)j->width / (float)mw : 1.0f;
      float sy = j->height ? (float)j->height / (float)mh : 1.0f;
      rc = sq_polygons_from_mask(mask, mw, mh, pp.min_area, POLYGON_TOLERANCE, sx, sy, &polys,
                                 &npolys);
      if (rc) {
        polys = NULL;
        npolys = 0;
        job_fail(j, rc, "mask to polygons failed");
      }
      /* The result's mask is in original image pixels; a model mask of another size is not. */
      if (!(j->job.outputs & SQ_OUTPUT_MASK) || mw != j->width || mh != j->height) {
        free(mask);
        mask = NULL;
      } else if (!mask) {
        /* NULL from finish means all zero; the result still carries the mask that was asked. */
        mask = calloc((size_t)mw * mh, 1);
        if (!mask) job_fail(j, SQ_ENOMEM, "out of memory for the result mask");
      }
    }
  }
  j->t.postprocess_us = sq_clock_mono_us() - t0;
  j->t.total_us = sq_clock_mono_us() - j->claimed_us;
  encode_result(j, polys, npolys, mask);
  if (!j->result) {
    /* Out of memory for the full result: a small error result still lets the job finish. */
    job_fail(j, SQ_ENOMEM, "out of memory while encoding the result");
    j->err = SQ_ENOMEM;
    encode_result(j, NULL, 0, NULL);
  }
  sq_polygons_free(polys, npolys);
  free(mask);
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
