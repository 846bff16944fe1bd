/* worker/metrics: the worker's Prometheus metrics, in the conventions Prometheus and Triton
 * users know (docs/operations.md "Metrics"): a fixed registry of counters, gauges and
 * histograms (fixed buckets) per model, per device and per Redis connection, defined once in
 * SQ_METRIC_FAMILIES, and one render function for the HTTP endpoint.
 * Threads: the observe functions are lock-free (C11 atomics) and may be called from any thread
 * (loop, work pool, executors); the sq_metrics_set_* state and sq_metrics_render share a mutex,
 * so the loop thread may set while an HTTP thread renders. */
#ifndef SQ_WORKER_METRICS_H
#define SQ_WORKER_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gpu/gpu.h"
#include "proto/proto.h"
#include "queue/queue.h"

/* X(id, name, type, labels, help). type: counter, gauge or histogram; labels as rendered. Every
 * family gets # HELP and # TYPE; names follow Prometheus (base units: seconds, bytes; counters
 * end in _total). */
#define SQ_METRIC_FAMILIES(X)                                                                     \
  X(JOBS, "segq_jobs_total", counter, "model,outcome",                                            \
    "Job executions by this worker, by how their ack ended: ok (result recorded), failed (error " \
    "result recorded), retried (transient error, delayed), canceled, dropped (not recorded), "    \
    "released (handed back to its queue after a device error)")                                   \
  X(JOB_ERRORS, "segq_job_errors_total", counter, "model,code",                                   \
    "Failed executions (failed or retried) by protocol error code (docs/protocol.md)")            \
  X(INFER_COUNT, "segq_inference_count_total", counter, "model",                                  \
    "Samples (jobs and ensemble member runs) the model ran; divided by the execution count it "   \
    "is the average batch size")                                                                  \
  X(INFER_EXEC, "segq_inference_exec_count_total", counter, "model",                              \
    "Model executions (batches run), as Triton's nv_inference_exec_count")                        \
  X(DEVICE_BUSY, "segq_device_busy_seconds_total", counter, "device",                             \
    "Time at least one executor of the device was running a batch; rate() is its utilization "    \
    "as the worker sees it")                                                                      \
  X(REDIS_RECONNECTS, "segq_redis_reconnects_total", counter, "conn",                             \
    "Times a Redis connection came back after the first connect")                                 \
  X(SWEPT, "segq_sweeper_recovered_jobs_total", counter, "",                                      \
    "Jobs of dead workers this worker's sweeper requeued or dead-lettered")                       \
  X(BATCHES, "segq_batches_total", counter, "", "Batches this worker ran, all models")            \
  X(IN_FLIGHT, "segq_jobs_in_flight", gauge, "model",                                             \
    "Jobs claimed by this worker and not yet acked (batcher, decode, run, ack), ensemble member " \
    "runs included")                                                                              \
  X(HELD, "segq_jobs_held", gauge, "",                                                            \
    "Jobs claimed by this worker and not yet acked or dropped, all models (the sum of "           \
    "segq_jobs_in_flight)")                                                                       \
  X(BATCHER, "segq_batcher_jobs", gauge, "model", "Jobs waiting in the model's batcher")          \
  X(QUEUE_DEPTH, "segq_queue_depth", gauge, "model",                                              \
    "Jobs waiting in Redis for the model, all tenants' queues (the same for every worker: "       \
    "aggregate with max)")                                                                        \
  X(QUEUE_DELAYED, "segq_queue_delayed", gauge, "model",                                          \
    "Retries waiting in Redis for their time (delayed set)")                                      \
  X(DEAD_LETTERS, "segq_dead_letters", gauge, "", "Dead-lettered jobs kept in Redis")             \
  X(REDIS_UP, "segq_redis_connected", gauge, "conn",                                              \
    "Whether the Redis connection is ready (1) or not (0)")                                       \
  X(LEASE, "segq_lease_ok", gauge, "", "Whether this worker holds its lease (1) or not (0)")      \
  X(DRAINING, "segq_draining", gauge, "", "Whether a drain (SIGTERM) has begun (1) or not (0)")   \
  X(READY, "segq_ready", gauge, "",                                                               \
    "Whether every model context has warmed up (1; the worker claims nothing before)")            \
  X(DEVICE_FAILED, "segq_device_failed", gauge, "",                                               \
    "Whether a device error happened (1: the worker hands its jobs back and exits 3)")            \
  X(EFFECTIVE_MAX_BATCH, "segq_model_effective_max_batch", gauge, "model",                        \
    "The largest batch the model may run now (shrinks under device memory pressure)")             \
  X(OOM_SPLITS, "segq_model_oom_splits_total", counter, "model",                                  \
    "Batches split in halves after an out-of-memory error on the device")                         \
  X(DEVICE_MEMORY, "segq_device_memory_bytes", gauge, "model,kind",                               \
    "Memory of the model's most loaded device, kind free or total (devices with their own "       \
    "memory only)")                                                                               \
  X(GPU_MEM_USED, "segq_gpu_memory_used_bytes", gauge, "device",                                  \
    "GPU memory in use on the device (backend memory info; GPUs only)")                           \
  X(GPU_MEM_TOTAL, "segq_gpu_memory_total_bytes", gauge, "device",                                \
    "GPU memory of the device (GPUs only)")                                                       \
  X(BUILD, "segq_build_info", gauge, "version", "Always 1; the version label says which build")   \
  X(START_TIME, "process_start_time_seconds", gauge, "",                                          \
    "Start time of the process since unix epoch in seconds")                                      \
  X(UPTIME, "segq_uptime_seconds", gauge, "", "Seconds since the worker started (monotonic)")     \
  X(QUEUE_WAIT, "segq_queue_wait_seconds", histogram, "model", "Time from enqueue to claim")      \
  X(DECODE, "segq_decode_seconds", histogram, "model",                                            \
    "Payload and image decode plus preprocessing of one job")                                     \
  X(INFERENCE, "segq_inference_seconds", histogram, "model",                                      \
    "One model execution (a whole batch)")                                                        \
  X(POSTPROCESS, "segq_postprocess_seconds", histogram, "model",                                  \
    "Mask to polygons and result encoding of one job")                                            \
  X(E2E, "segq_job_duration_seconds", histogram, "model",                                         \
    "End to end: enqueue to result written (queue wait + time in the worker)")                    \
  X(BATCH_SIZE, "segq_batch_size", histogram, "model", "Samples per model execution")

/* How a job's execution by this worker ended, as its ack told (docs/protocol.md, ack codes). */
typedef enum {
  SQ_OUTCOME_OK = 0,  /* its result was recorded */
  SQ_OUTCOME_FAILED,  /* its error result was recorded (for good) */
  SQ_OUTCOME_RETRIED, /* a transient error: delayed for another attempt */
  SQ_OUTCOME_CANCELED,
  SQ_OUTCOME_DROPPED,  /* not recorded: swept meanwhile, already had a result, ack given up */
  SQ_OUTCOME_RELEASED, /* handed back to its queue unrun (a device error) */
  SQ_OUTCOME_N
} sq_outcome_t;

typedef struct sq_metrics sq_metrics_t;

/* models: the served models (copied); devices[i]: where models[i] runs ("cpu", "cuda:0"; copied;
 * NULL = "cpu"). NULL on allocation failure. */
sq_metrics_t *sq_metrics_new(const char *const *models, const char *const *devices, size_t nmodels);
void sq_metrics_free(sq_metrics_t *m);

/* ---- observations (any thread, lock-free) ---- */
/* A job's ack answered (loop thread in practice; any thread is safe): its outcome, its error
 * code (err != 0: counted by code), its stage timings; end to end only for a recorded result.
 * model: index into the models given to sq_metrics_new. */
void sq_metrics_job_acked(sq_metrics_t *m, size_t model, sq_outcome_t outcome,
                          const sq_timings_t *t, int err);
/* n jobs of model left without an ack (out of memory, ack given up). */
void sq_metrics_jobs_dropped(sq_metrics_t *m, size_t model, uint64_t n);
/* n jobs of model handed back to their queue (a device error). */
void sq_metrics_jobs_released(sq_metrics_t *m, size_t model, uint64_t n);
/* Around one model execution (executor thread): begin marks the device busy; end records the
 * batch (samples, run time) and ends the busy span. */
void sq_metrics_run_begin(sq_metrics_t *m, size_t model);
void sq_metrics_run_end(sq_metrics_t *m, size_t model, uint32_t samples, uint64_t run_us);

/* ---- the worker's state, as the loop thread last set it (any thread; under the mutex) ---- */
typedef struct {
  int command_ready, blocking_ready, lease_ready, lease_ok, draining, ready, device_failed;
  uint64_t command_connects, blocking_connects, lease_connects, swept_jobs;
  uint64_t batches; /* batches run (all models) */
  uint64_t held;    /* jobs claimed and not yet acked or dropped (all models) */
} sq_metrics_worker_t;
void sq_metrics_set_worker(sq_metrics_t *m, const sq_metrics_worker_t *w);
void sq_metrics_set_model(sq_metrics_t *m, size_t model, uint64_t in_flight, uint64_t batcher);
/* The model's memory policy and device memory (sq_model_stats): effective max batch, OOM splits,
 * and, when the device has its own memory (device_total > 0), its free/total bytes, which are also
 * the device's segq_gpu_memory_* (the last model of a device to report sets them). */
void sq_metrics_set_model_stats(sq_metrics_t *m, size_t model, const sq_model_stats_t *st);
/* From the last depth read (sq_session_depth); never called: the gauges are not rendered. */
void sq_metrics_set_depth(sq_metrics_t *m, const sq_queue_depth_t *d);

/* The families as a markdown table (name, type, labels, meaning): docs/operations.md's list,
 * generated by tools/update_docs.py through `segq-worker --help-metrics`. */
void sq_metrics_print_markdown(FILE *out);

/* Prometheus text exposition format 0.0.4 into buf (NUL-terminated, cut at cap). Returns the
 * length the whole text needs (snprintf-style: call again with a larger buffer when >= cap).
 * Any thread. */
size_t sq_metrics_render(const sq_metrics_t *m, char *buf, size_t cap);
#define SQ_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
