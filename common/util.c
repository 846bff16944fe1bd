/* Clocks and allocation helpers. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

uint64_t sq_clock_mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t sq_clock_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void *sq_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) sq_log_error("common", "allocation failed", "bytes=%zu", n);
  return p;
}

char *sq_strndup(const char *s, size_t n) {
  char *p = sq_xmalloc(n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *sq_strdup(const char *s) { return sq_strndup(s, strlen(s)); }

void sq_polygons_free(sq_polygon_t *polys, size_t n) {
  if (!polys) return;
  for (size_t i = 0; i < n; i++) free(polys[i].points);
  free(polys);
}
