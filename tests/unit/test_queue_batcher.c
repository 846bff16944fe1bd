/* Unit test of the batching stage with a fake clock: flush when full, flush at exactly
 * max_delay and not before, FIFO order, forced flush, due time, growth, claim budget math. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "queue/queue.h"

static int items[1000];

static void test_full_flush(void) {
  sq_batcher_t *b = sq_batcher_new(4, 1000);
  void *out[8];
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(sq_batcher_push(b, &items[i], 100), 0);
  CHECK_EQ_INT(sq_batcher_pop(b, 100, 0, out), 0); /* 3 < 4 and not yet due */
  CHECK_EQ_INT(sq_batcher_push(b, &items[3], 150), 0);
  CHECK_EQ_INT(sq_batcher_push(b, &items[4], 150), 0);
  CHECK_EQ_INT(sq_batcher_due_us(b), 100); /* full: due now */
  CHECK_EQ_INT(sq_batcher_pop(b, 150, 0, out), 4);
  for (int i = 0; i < 4; i++) CHECK(out[i] == &items[i]);
  CHECK_EQ_INT(sq_batcher_len(b), 1);
  CHECK_EQ_INT(sq_batcher_due_us(b), 1150);
  sq_batcher_free(b);
}

static void test_delay(void) {
  sq_batcher_t *b = sq_batcher_new(8, 500);
  void *out[8];
  CHECK_EQ_INT(sq_batcher_due_us(b), UINT64_MAX);
  CHECK_EQ_INT(sq_batcher_pop(b, 0, 0, out), 0);
  sq_batcher_push(b, &items[0], 1000);
  sq_batcher_push(b, &items[1], 1200);
  CHECK_EQ_INT(sq_batcher_due_us(b), 1500);
  CHECK_EQ_INT(sq_batcher_pop(b, 1499, 0, out), 0); /* not before */
  CHECK_EQ_INT(sq_batcher_pop(b, 1500, 0, out), 2); /* exactly at max_delay */
  CHECK(out[0] == &items[0] && out[1] == &items[1]);
  CHECK_EQ_INT(sq_batcher_len(b), 0);
  CHECK_EQ_INT(sq_batcher_due_us(b), UINT64_MAX);
  /* max_delay 0: every item is due at once. */
  sq_batcher_t *z = sq_batcher_new(8, 0);
  sq_batcher_push(z, &items[2], 7);
  CHECK_EQ_INT(sq_batcher_pop(z, 7, 0, out), 1);
  sq_batcher_free(z);
  sq_batcher_free(b);
}

static void test_force(void) {
  sq_batcher_t *b = sq_batcher_new(3, 1000000);
  void *out[3];
  CHECK_EQ_INT(sq_batcher_pop(b, 0, 1, out), 0); /* force on empty */
  for (int i = 0; i < 5; i++) sq_batcher_push(b, &items[i], 10);
  CHECK_EQ_INT(sq_batcher_pop(b, 10, 1, out), 3); /* never more than max_batch */
  CHECK(out[0] == &items[0] && out[2] == &items[2]);
  CHECK_EQ_INT(sq_batcher_pop(b, 10, 0, out), 0);
  CHECK_EQ_INT(sq_batcher_pop(b, 10, 1, out), 2);
  CHECK(out[0] == &items[3] && out[1] == &items[4]);
  CHECK_EQ_INT(sq_batcher_max_batch(b), 3);
  sq_batcher_free(b);
  CHECK(sq_batcher_new(0, 10) == NULL);
}

/* Many pushes and pops with wrap-around and growth keep strict FIFO order. */
static void test_order_and_growth(void) {
  sq_batcher_t *b = sq_batcher_new(5, 100);
  void *out[5];
  int next_in = 0, next_out = 0, bad = 0;
  uint64_t now = 0;
  for (int round = 0; round < 200; round++) {
    int k = (round * 7) % 13;
    for (int i = 0; i < k && next_in < 1000; i++) sq_batcher_push(b, &items[next_in++], now);
    now += 37;
    size_t n = sq_batcher_pop(b, now, 0, out);
    for (size_t i = 0; i < n; i++)
      if (out[i] != &items[next_out++]) bad++;
  }
  size_t n;
  while ((n = sq_batcher_pop(b, now, 1, out)) > 0)
    for (size_t i = 0; i < n; i++)
      if (out[i] != &items[next_out++]) bad++;
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(next_out, next_in);
  CHECK(next_in > 100);
  sq_batcher_free(b);
}

static void test_budget(void) {
  CHECK_EQ_INT(sq_flow_claim_budget(2, 8, 0), 16);
  CHECK_EQ_INT(sq_flow_claim_budget(2, 8, 5), 11);
  CHECK_EQ_INT(sq_flow_claim_budget(2, 8, 16), 0);
  CHECK_EQ_INT(sq_flow_claim_budget(2, 8, 40), 0);
  CHECK_EQ_INT(sq_flow_claim_budget(0, 8, 0), 0);
  CHECK_EQ_INT(sq_flow_claim_budget(UINT32_MAX, UINT32_MAX, 0), UINT32_MAX);
}

int main(void) {
  test_full_flush();
  test_delay();
  test_force();
  test_order_and_growth();
  test_budget();
  CHECK_DONE();
}
