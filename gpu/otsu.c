/* gpu: Otsu's threshold of a histogram (the `otsu` built-in model's whole "inference").
 * Pure function of its input; any thread. */
#include "gpu/gpu.h"

uint32_t sq_otsu_threshold(const uint32_t *hist, uint32_t nbins) {
  double total = 0, sum_all = 0;
  uint32_t last = 0;
  for (uint32_t i = 0; i < nbins; i++) {
    total += hist[i];
    sum_all += (double)i * hist[i];
    if (hist[i]) last = i;
  }
  /* With no split possible (0 or 1 occupied bins) the top occupied bin leaves nothing above. */
  uint32_t best_lo = last, best_hi = last;
  double best = -1.0, w_back = 0, sum_back = 0;
  for (uint32_t t = 0; t < nbins; t++) {
    w_back += hist[t];
    if (w_back == 0) continue;
    double w_fore = total - w_back;
    if (w_fore == 0) break;
    sum_back += (double)t * hist[t];
    double diff = sum_back / w_back - (sum_all - sum_back) / w_fore;
    double between = w_back * w_fore * diff * diff;
    if (between > best) {
      best = between;
      best_lo = best_hi = t;
    } else if (between == best && best_hi + 1 == t) {
      /* Empty bins between the modes give a plateau of equal variance: take its middle, so
       * the threshold sits between the classes rather than hugging the lower one. */
      best_hi = t;
    }
  }
  return best_lo + (best_hi - best_lo) / 2;
}
