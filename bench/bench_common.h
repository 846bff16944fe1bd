/* bench/bench_common: what engine_bench and ort_bench must do alike (the same input pattern
 * for the agreement check, the same CPU-time clock). Header-only; single-threaded callers. */
#ifndef SEGQ_BENCH_COMMON_H
#define SEGQ_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

/* CPU time of the whole process (user + sys, every thread), ms: on a shared machine the
 * steadier signal than wall time (a descheduled process accrues none). */
static inline double bench_cpu_ms_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* A fixed pseudo-random input in [-1, 1), the same pattern in both programs and on every run
 * (the values do not change the work of a float CNN; denormal-free non-zero data is the honest
 * case, and equal inputs make the outputs comparable). */
static inline void bench_fill_input(float *x, size_t n) {
  uint32_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)s / 4294967296.0f * 2.0f - 1.0f;
  }
}

#endif
