/* segq-worker: the process entry point; everything it does is sq_worker_main (worker/cli.c),
 * which test binaries call too after registering test-only backends.
 * Threads: main thread; the worker's loop runs on it. */
#include "gpu/onnx/engine.h"
#include "worker/worker.h"

int main(int argc, char **argv) {
  /* The cpu backend's OpenMP waits passively (engine.h); a worker of built-ins only needs no
   * re-exec for that. */
  if (sq_worker_uses_openmp(argc, argv)) sq_engine_process_init(argv);
  return sq_worker_main(argc, argv);
}
