/* gpu: the model-side half of ensembles (docs/protocol.md, "Ensembles"): each member's
 * probability map at the original image size, their weighted mean thresholded, and that mask as
 * a result (sq_ensemble_postprocess). The worker runs one job in several models' batches
 * (worker/pipeline.c). Work pool. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/model_internal.h"

int sq_model_finish_prob(sq_model_t *m, void *output, float **prob, uint32_t *width,
                         uint32_t *height, sq_error_t *err) {
  *prob = NULL;
  *width = *height = 0;
  if (m->iface->finish_prob) return m->iface->finish_prob(m, output, prob, width, height, err);
  /* A kind without probabilities (the built-ins): its mask as 0/1. */
  sq_postparams_t pp = {.threshold = m->info.default_threshold,
                        .min_area = m->info.default_min_area};
  uint8_t *mask = NULL;
  int rc = sq_model_finish(m, output, &pp, &mask, width, height, err);
  if (rc) return rc;
  size_t npix = (size_t)*width * *height;
  float *p = malloc((npix ? npix : 1) * sizeof(float));
  if (!p) {
    free(mask);
    return sq_error_set(err, SQ_ENOMEM, "model %s: out of memory", m->info.name);
  }
  for (size_t i = 0; i < npix; i++) p[i] = mask && mask[i] ? 1.0f : 0.0f; /* NULL: all zero */
  free(mask);
  *prob = p;
  return 0;
}

int sq_prob_combine(const float *const *probs, const float *weights, size_t n, size_t npix,
                    float threshold, uint8_t **mask, sq_error_t *err) {
  *mask = NULL;
  if (n == 0) return sq_error_set(err, SQ_EINVAL, "ensemble: no members");
  double wsum = 0;
  for (size_t k = 0; k < n; k++) {
    float w = weights ? weights[k] : 1.0f;
    if (!(w >= 0.0f) || !isfinite(w))
      return sq_error_set(err, SQ_EINVAL, "ensemble: weight %zu is %g", k, (double)w);
    wsum += w;
  }
  if (!(wsum > 0)) return sq_error_set(err, SQ_EINVAL, "ensemble: the weights sum to 0");
  uint8_t *mk = malloc(npix ? npix : 1);
  if (!mk) return sq_error_set(err, SQ_ENOMEM, "ensemble: out of memory");
  /* Compare the weighted sum with threshold * sum of weights: no division per pixel. */
  float t = (float)(threshold * wsum);
  for (size_t i = 0; i < npix; i++) {
    float s = 0.0f;
    for (size_t k = 0; k < n; k++) s += (weights ? weights[k] : 1.0f) * probs[k][i];
    mk[i] = s >= t;
  }
  *mask = mk;
  return 0;
}

int sq_ensemble_postprocess(sq_model_t *const *models, void **outputs, const float *weights,
                            size_t n, const sq_postparams_t *pp, int want_mask,
                            sq_model_result_t *res, sq_error_t *err) {
  memset(res, 0, sizeof *res);
  float **probs = calloc(n ? n : 1, sizeof *probs);
  uint32_t W = 0, H = 0;
  int rc = probs ? 0 : sq_error_set(err, SQ_ENOMEM, "ensemble: out of memory");
  for (size_t k = 0; k < n && !rc; k++) {
    const char *name = models[k]->info.name;
    uint32_t w = 0, h = 0;
    if (!outputs[k]) {
      rc = sq_error_set(err, SQ_EMODEL, "%s: the model produced no output", name);
      break;
    }
    rc = sq_model_finish_prob(models[k], outputs[k], &probs[k], &w, &h, err);
    if (rc) {
      char m[sizeof err->msg];
      snprintf(m, sizeof m, "%s", err->msg);
      sq_error_set(err, rc, "%s: %s", name, m);
      break;
    }
    outputs[k] = NULL; /* consumed */
    if (k == 0) {
      W = w, H = h;
    } else if (w != W || h != H) {
      rc =
          sq_error_set(err, SQ_EMODEL, "%s: probability map %ux%u, others %ux%u", name, w, h, W, H);
    }
    if (!rc && !probs[k] && (size_t)w * h > 0) {
      probs[k] = calloc((size_t)w * h, sizeof(float)); /* NULL = all 0 */
      if (!probs[k]) rc = sq_error_set(err, SQ_ENOMEM, "out of memory (probability map)");
    }
  }
  /* Whatever happened, no output is left for the caller to free twice. */
  for (size_t k = 0; k < n; k++)
    if (outputs[k]) {
      sq_model_output_free(models[k], outputs[k]);
      outputs[k] = NULL;
    }
  uint8_t *mask = NULL;
  if (!rc)
    rc = sq_prob_combine((const float *const *)probs, weights, n, (size_t)W * H, pp->threshold,
                         &mask, err);
  for (size_t k = 0; probs && k < n; k++) free(probs[k]);
  free(probs);
  if (rc) return rc;
  return sq_result_from_mask(mask, W, H, W, H, pp, want_mask, res, err);
}
