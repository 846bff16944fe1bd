/* segq-worker: the process entry point; everything it does is sq_worker_main (worker/cli.c),
 * which test binaries call too after registering test-only backends.
 * Threads: main thread; the worker's loop runs on it. */
#include "worker/worker.h"

int main(int argc, char **argv) {
  return sq_worker_main(argc, argv);
}
