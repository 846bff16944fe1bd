/* worker/worker: the worker process's runtime: one libuv loop thread doing all Redis I/O,
 * timers and batching decisions; the libuv work pool for decode and postprocessing; one
 * executor thread per model context. Lifecycle: register -> claim loop -> drain -> exit.
 * Threads: sq_worker_run is called from main and runs the loop on the calling thread. */
#ifndef SQ_WORKER_H
#define SQ_WORKER_H

#include <stdio.h>

#include "worker/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the worker until it is drained (SIGTERM/SIGINT) or fails at start-up.
 * Returns the process exit code: 0 clean drain, 1 drain timeout / second signal / start-up
 * failure (err says why when err->code != 0). cfg is borrowed. */
int sq_worker_run(const sq_worker_config_t *cfg, sq_error_t *err);

/* segq-worker --check-models: validates every model named by cfg->models and every folder of
 * cfg->model_dir (sq_model_check: all of a model.json's problems, then the graph), one line per
 * model and per problem on out. Connects to nothing. Returns the exit code: 0 all valid, 1 not. */
int sq_worker_check_models(const sq_worker_config_t *cfg, FILE *out);

/* The whole process (worker/cli.c): configuration from argv and SEGQ_*, logging, the work pool,
 * sq_worker_run. Returns the exit code (exits at once, without libuv's exit-time joins, when it
 * is not 0). Exit codes: 0 clean drain, 1 start-up failure / drain timeout / second signal,
 * 2 bad configuration, 3 (SQ_EXIT_DEVICE) the device failed and the jobs were handed back. */
int sq_worker_main(int argc, char **argv);

/* 0 when the configuration argv and SEGQ_* give serves built-in models only (nothing runs on
 * the engine's CPU backend, so its OpenMP never starts), else 1 (also when the configuration
 * does not parse: sq_worker_main reports that). main() re-executes for OMP_WAIT_POLICY
 * (sq_engine_process_init) only when this is 1: a second start-up costs as much CPU as the
 * first (dynamic loading of oneDNN, GnuTLS, ...: ~20-40 ms here), a few us per job of a short
 * run of null jobs. */
int sq_worker_uses_openmp(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
