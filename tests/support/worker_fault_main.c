/* segq-worker-fault: the real worker with the test-only fault-injecting backend registered
 * (--device fault:...; tests/support/fault_backend.c). Built in tests/ only, never installed:
 * the production segq-worker has no such device. Fault tests run it as a real process. */
#include <stdio.h>

#include "fault_backend.h"
#include "worker/worker.h"

int main(int argc, char **argv) {
  if (sq_fault_backend_register() != 0) {
    fprintf(stderr, "segq-worker-fault: cannot register the fault backend\n");
    return 1;
  }
  return sq_worker_main(argc, argv);
}
