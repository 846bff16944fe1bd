/* Fuzz target for the strict job decoder (and, when a job decodes, the encoder and a second
 * decode of its output, which must succeed). Not built by default. Build and run with:
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *     tests/fuzz/fuzz_proto_job.c $(find proto common -name '*.c') -lmsgpackc -lm -lpthread -o
 * fuzz_proto_job
 *   ./fuzz_proto_job -max_len=4096 -timeout=5 corpus/   (run from the repository root) */
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sq_job_t job;
  sq_error_t err;
  int rc = sq_proto_job_decode(data, size, &job, &err);
  if (rc == 0) {
    size_t len = 0;
    uint8_t *buf = sq_proto_job_encode(&job, &len);
    if (!buf) abort();
    sq_job_t again;
    if (sq_proto_job_decode(buf, len, &again, &err) != 0) abort();
    if (strcmp(again.id, job.id) != 0 || again.image_size != job.image_size ||
        again.meta_size != job.meta_size)
      abort();
    sq_proto_job_free(&again);
    free(buf);
  } else {
    /* Every error names its code and leaves nothing but the id behind. */
    if (err.code != rc || err.msg[0] == '\0') abort();
    if (job.model || job.image_data || job.meta || job.tenant || job.group) abort();
  }
  sq_proto_job_free(&job);
  return 0;
}
