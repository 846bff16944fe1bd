/* queue/redis: sq_redis_budget_ms_for_bytes, the watchdog budget of a command moving payload
 * bytes (a claim): its base, its steps per 16 MiB, that it never shrinks as bytes grow, that the
 * issue's claim (16 x 48 MB, ~12 s inside Redis) gets about 4x that, and no wrap-around. */
#include <stdint.h>

#include "check.h"
#include "queue/queue.h"

#define MIB (UINT64_C(1) << 20)

int main(void) {
  /* Base 5 s; each started 16 MiB adds 1 s. */
  CHECK_EQ_INT(sq_redis_budget_ms_for_bytes(0), 5000);
  CHECK_EQ_INT(sq_redis_budget_ms_for_bytes(1), 6000);
  CHECK_EQ_INT(sq_redis_budget_ms_for_bytes(16 * MIB), 6000);
  CHECK_EQ_INT(sq_redis_budget_ms_for_bytes(16 * MIB + 1), 7000);
  /* The default claim budget (--max-claim-bytes, 64 MiB). */
  CHECK_EQ_INT(sq_redis_budget_ms_for_bytes(SQ_DEFAULT_MAX_CLAIM_BYTES), 9000);
  /* The claim: 16 payloads of 48 MB ran ~12 s inside Redis; allow at least 4x. */
  CHECK(sq_redis_budget_ms_for_bytes(UINT64_C(16) * 48000000) >= 4 * 12000);
  /* Never shrinks as the bytes grow (sampled across 0 .. 4 GiB, steps straddling 16 MiB). */
  uint64_t prev = 0;
  int monotone = 1;
  for (uint64_t b = 0; b <= 4096 * MIB; b += 3 * MIB + 12345) {
    uint64_t ms = sq_redis_budget_ms_for_bytes(b);
    if (ms < prev) monotone = 0;
    prev = ms;
  }
  CHECK(monotone);
  /* The largest size does not wrap around to a short budget. */
  CHECK(sq_redis_budget_ms_for_bytes(UINT64_MAX) > sq_redis_budget_ms_for_bytes(4096 * MIB));
  CHECK_DONE();
}
