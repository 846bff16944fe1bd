/* segq-worker: the process entry point; everything it does is sq_worker_main (worker/cli.c),
 * which test binaries call too after registering test-only backends.
 * Threads: main thread; the worker's loop runs on it. */
#include "gpu/onnx/engine.h"
#include "worker/worker.h"

int main(int argc, char **argv) {
  sq_engine_process_init(argv); /* the cpu backend's OpenMP waits passively (engine.h) */
  return sq_worker_main(argc, argv);
}
