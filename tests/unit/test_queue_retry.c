/* Unit test of the retry policy (issue 8 item 10): which error codes are transient
 * (SQ_TRANSIENT_ERRORS, plus a model's retryable flag in the worker), and the retry delay:
 * exponential in the attempt, capped, with +-50% jitter. */
#include <stdint.h>

#include "check.h"
#include "common/common.h"
#include "queue/queue.h"

int main(void) {
  /* Transient: worth a retry. Permanent: the input or the request is wrong. */
  CHECK(sq_error_transient(SQ_EOOM_DEVICE));
  CHECK(sq_error_transient(SQ_EDEVICE));
  CHECK(sq_error_transient(SQ_ENOMEM));
  CHECK(sq_error_transient(SQ_ETIMEOUT));
  CHECK(sq_error_transient(SQ_EREDIS));
  CHECK(!sq_error_transient(SQ_EIMAGE_DECODE));
  CHECK(!sq_error_transient(SQ_EMODEL_UNKNOWN));
  CHECK(!sq_error_transient(SQ_EMODEL));
  CHECK(!sq_error_transient(SQ_EDEADLINE));
  CHECK(!sq_error_transient(0));
  CHECK_STR(sq_error_name(SQ_ESUSPECTED_POISON), "suspected_poison");

  /* The middle of the jitter range (random = 2^31) is the plain exponential delay. */
  const uint32_t mid = 1u << 31;
  CHECK_EQ_INT(sq_queue_retry_delay_ms(1, 1000, 60000, mid), 1000);
  CHECK_EQ_INT(sq_queue_retry_delay_ms(2, 1000, 60000, mid), 2000);
  CHECK_EQ_INT(sq_queue_retry_delay_ms(3, 1000, 60000, mid), 4000);
  CHECK_EQ_INT(sq_queue_retry_delay_ms(7, 1000, 60000, mid), 60000); /* 64 s, capped */
  CHECK_EQ_INT(sq_queue_retry_delay_ms(40, 1000, 60000, mid), 60000);
  /* Jitter: x0.5 for random 0, just under x1.5 for the largest. */
  CHECK_EQ_INT(sq_queue_retry_delay_ms(2, 1000, 60000, 0), 1000);
  uint32_t hi = sq_queue_retry_delay_ms(2, 1000, 60000, UINT32_MAX);
  CHECK(hi >= 2999 && hi < 3000);
  /* Never 0, even from a 0 base. */
  CHECK(sq_queue_retry_delay_ms(1, 0, 0, 0) >= 1);
  /* Spread: 1000 draws of a simple generator cover the range without clumping at one end. */
  uint32_t x = 12345, lo_n = 0, hi_n = 0;
  for (int i = 0; i < 1000; i++) {
    x = x * 1664525u + 1013904223u;
    uint32_t d = sq_queue_retry_delay_ms(1, 1000, 60000, x);
    CHECK(d >= 500 && d < 1500);
    lo_n += d < 1000;
    hi_n += d >= 1000;
  }
  CHECK(lo_n > 400 && hi_n > 400);
  CHECK_DONE();
}
