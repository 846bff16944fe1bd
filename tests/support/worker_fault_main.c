/* segq-worker-fault: the real worker with the test-only fault-injecting backend registered
 * (--device fault:...; tests/support/fault_backend.c). Built in tests/ only, never installed:
 * the production segq-worker has no such device. Fault tests run it as a real process. */
#include <stdio.h>

#include "fault_backend.h"
#include "gpu/onnx/engine.h"
#include "worker/worker.h"

int main(int argc, char **argv) {
  sq_engine_process_init(argv); /* as segq-worker: OpenMP waits passively (engine.h) */
  if (sq_fault_backend_register() != 0) {
    fprintf(stderr, "segq-worker-fault: cannot register the fault backend\n");
    return 1;
  }
  return sq_worker_main(argc, argv);
}
