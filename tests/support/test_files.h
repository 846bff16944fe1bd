/* Reading test data files (models, raw tensors) in C unit tests: one helper, shared, so tests
 * do not each carry their own copy. Header-only; the test's thread. */
#ifndef SQ_TEST_FILES_H
#define SQ_TEST_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file in a malloc'ed buffer (caller frees; one spare NUL byte after the data), its
 * size in *len; NULL when it cannot be read. */
static inline uint8_t *test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *buf = NULL;
  long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) buf[n] = 0;
  if (len) *len = buf ? (size_t)n : 0;
  return buf;
}

/* "$SEGQ_SOURCE_DIR/rel" into out (size n); 0, or -1 when SEGQ_SOURCE_DIR is unset. */
static inline int test_source_path(char *out, size_t n, const char *rel) {
  const char *src = getenv("SEGQ_SOURCE_DIR");
  if (!src || !*src) return -1;
  snprintf(out, n, "%s/%s", src, rel);
  return 0;
}

#endif
