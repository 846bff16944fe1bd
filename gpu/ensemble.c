/* gpu: the model-side half of ensembles (docs/protocol.md, "Ensembles (proposed)"): each
 * member's probability map at the original image size, and their weighted mean thresholded.
 * The worker-side half (one job in several models' batches) is not built yet. Work pool. */
#include <math.h>
#include <stdlib.h>

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
