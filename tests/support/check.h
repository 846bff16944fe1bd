/* Minimal assertions for C unit tests: each failed CHECK prints file:line and the expression,
 * the test continues, and CHECK_DONE() prints "N passed, N failed" and sets the exit code. */
#ifndef SQ_TEST_CHECK_H
#define SQ_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (cond) {                                                                 \
      check_passed++;                                                           \
    } else {                                                                    \
      check_failed++;                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                           \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                   \
  do {                                                                                       \
    long long check_a = (long long)(a), check_b = (long long)(b);                            \
    if (check_a == check_b) {                                                                \
      check_passed++;                                                                        \
    } else {                                                                                 \
      check_failed++;                                                                        \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, \
              #a, #b, check_a, check_b);                                                     \
    }                                                                                        \
  } while (0)

#define CHECK_STR(a, b)                                                                    \
  do {                                                                                     \
    const char *check_a = (a), *check_b = (b);                                             \
    if (check_a && check_b && strcmp(check_a, check_b) == 0) {                             \
      check_passed++;                                                                      \
    } else {                                                                               \
      check_failed++;                                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,     \
              __LINE__, #a, #b, check_a ? check_a : "(null)", check_b ? check_b : "(null)"); \
    }                                                                                      \
  } while (0)

#define CHECK_DONE()                                                \
  do {                                                              \
    printf("%d passed, %d failed\n", check_passed, check_failed);   \
    return check_failed ? 1 : 0;                                    \
  } while (0)

#endif
