/* engine: ONNX models (as torch.onnx.export writes them) loaded into one graph IR, planned for a
 * batch size (static shapes, folded shape subgraphs, BatchNorm folded into Conv, fused
 * activations, an activation arena planned by liveness) and run on a backend (`cpu` now,
 * `cuda` later) behind one interface. Never includes libuv, hiredis or CUDA headers.
 *
 * Objects and lifetimes:
 *   sq_engine_t       a loaded model (graph + weights). Immutable after load: may be shared by
 *                     threads. Free it after every plan made from it.
 *   sq_engine_plan_t  the model planned for fixed input shapes (one batch size). Immutable after
 *                     creation; may be run concurrently on different contexts of ONE backend
 *                     (a backend that keeps device weights binds the plan on first run).
 *   sq_backend_t      a compute backend (owns threads/devices). Free it after its contexts
 *                     and after the plans that ran on it (a plan may hold device weights).
 *   sq_backend_ctx_t  one executor context of a backend (CPU: arena + scratch; CUDA: stream,
 *                     handles, arena). Used by ONE thread at a time. */
#ifndef SQ_ENGINE_H
#define SQ_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types use ONNX's TensorProto.DataType numbers, so a value read from a file needs no
 * translation. Only these are handled; others are reported as unsupported at load. */
typedef enum {
  SQ_DT_UNDEF = 0,
  SQ_DT_FLOAT = 1,
  SQ_DT_UINT8 = 2,
  SQ_DT_INT8 = 3,
  SQ_DT_INT32 = 6,
  SQ_DT_INT64 = 7,
  SQ_DT_BOOL = 9,
  SQ_DT_FLOAT16 = 10, /* converted to float at load (weights, I/O, Cast targets) */
  SQ_DT_DOUBLE = 11   /* initializers/constants only; converted to float at load */
} sq_dtype_t;

#define SQ_ENGINE_MAX_DIMS 8

/* A tensor handed across the API: shape plus a pointer to dense row-major data. The data is
 * always owned by whoever filled the struct; the engine never keeps the pointer after a call. */
typedef struct {
  const char *name; /* graph input/output name (borrowed from the engine/plan) */
  int dtype;        /* sq_dtype_t */
  int rank;
  int64_t dims[SQ_ENGINE_MAX_DIMS];
  void *data;
  size_t bytes; /* size of data in bytes (checked against the shape) */
} sq_engine_tensor_t;

/* Load options; NULL means all defaults (everything on). The switches exist for tests that
 * compare the optimized graph against the plain one. */
typedef struct {
  int no_fold_bn; /* keep BatchNormalization nodes instead of folding them into Conv */
  int no_fuse;    /* keep activations as separate nodes */
} sq_engine_options_t;

typedef struct sq_engine sq_engine_t;
typedef struct sq_engine_plan sq_engine_plan_t;
typedef struct sq_backend sq_backend_t;
typedef struct sq_backend_ctx sq_backend_ctx_t;

/* ---- loading (any thread; no backend needed) ----
 * Parses an ONNX ModelProto. Every problem the engine cannot handle (unsupported op or domain,
 * data type, external data, sparse initializer...) is collected and reported at once in
 * err->msg, each with its node name ("unsupported: node 'conv3' op Foo; node 'x' op Bar").
 * Returns NULL with SQ_EUNSUPPORTED for those, SQ_EMODEL_LOAD for a corrupt/truncated file,
 * SQ_EIO when the file cannot be read. The caller owns the result (sq_engine_free). */
sq_engine_t *sq_engine_load_file(const char *path, const sq_engine_options_t *opt, sq_error_t *err);
/* Same from memory; `data` is only read during the call. */
sq_engine_t *sq_engine_load_buffer(const void *data, size_t len, const sq_engine_options_t *opt,
                                   sq_error_t *err);
void sq_engine_free(sq_engine_t *e);

/* Graph inputs (those without an initializer, in graph order) and outputs as declared in the
 * file: unknown dims are -1 (dim 0 is usually the symbolic batch). name/dims borrowed. An
 * input or output the file declares float16 is reported (and fed/returned) as float32: the
 * engine rounds such an input to float16 values on entry and such an output before returning
 * it, and computes in float32 in between. */
int sq_engine_input_count(const sq_engine_t *e);
int sq_engine_output_count(const sq_engine_t *e);
int sq_engine_input_info(const sq_engine_t *e, int i, sq_engine_tensor_t *info);
int sq_engine_output_info(const sq_engine_t *e, int i, sq_engine_tensor_t *info);

/* 1 when the file is an fp16 export (float16 weights, or float16 inputs/outputs: what torch's
 * model.half() or onnxconverter-common's float16 converter write). The engine loads those as
 * float32 and computes in float32; a backend may take this as the hint that running the model
 * in fp16 loses nothing the file had not already lost. */
int sq_engine_stores_fp16(const sq_engine_t *e);

/* 1 when graph input i feeds a shape-like parameter (Reshape's shape, Resize's scales...): its
 * value must then be bound with sq_engine_plan_new_shapes(). 0 otherwise. */
int sq_engine_input_is_static(const sq_engine_t *e, int i);

/* ---- planning (any thread) ----
 * Plans the model for `batch`: every input's dim 0 becomes `batch`; its other dims must be
 * known from the file. Returns NULL with err on failure (SQ_EUNSUPPORTED when an op cannot
 * handle the shapes/types it meets, SQ_EMODEL_LOAD for inconsistent shapes). Caller owns. */
sq_engine_plan_t *sq_engine_plan_new(sq_engine_t *e, uint32_t batch, sq_error_t *err);
/* Plans for explicit input shapes, inputs[i] for graph input i (n == input count). An input
 * whose `data` is non-NULL is bound to that value for the plan's lifetime (copied) and folded
 * as a constant: that is how shape-valued inputs (e.g. Reshape's `shape` in conformance tests)
 * become static. Inputs bound this way need not (and must not) be passed to sq_engine_run. */
sq_engine_plan_t *sq_engine_plan_new_shapes(sq_engine_t *e, const sq_engine_tensor_t *inputs, int n,
                                            sq_error_t *err);
void sq_engine_plan_free(sq_engine_plan_t *p);

/* Bytes of activation memory one context needs for this plan (all intermediate tensors laid
 * out by liveness, so it is usually far smaller than their sum). */
size_t sq_engine_arena_bytes(const sq_engine_plan_t *p);
/* Number of nodes left after folding/fusion (for logs and tests). */
int sq_engine_plan_node_count(const sq_engine_plan_t *p);
/* Writes the planned graph, one line per node (name, op, fused activation, output shapes and
 * arena offsets), to f: a debugging aid (onnx_run --dump). */
void sq_engine_plan_dump(const sq_engine_plan_t *p, FILE *f);
/* Shapes of the plan's inputs (unbound ones, in graph order) and outputs; data is NULL. */
int sq_engine_plan_input_count(const sq_engine_plan_t *p);
int sq_engine_plan_output_count(const sq_engine_plan_t *p);
int sq_engine_plan_input_info(const sq_engine_plan_t *p, int i, sq_engine_tensor_t *info);
int sq_engine_plan_output_info(const sq_engine_plan_t *p, int i, sq_engine_tensor_t *info);

/* ---- process set-up (main thread, first thing in main) ----
 * The cpu backend runs on oneDNN's OpenMP runtime (libgomp), which reads OMP_WAIT_POLICY once,
 * when the process starts. Its default keeps a finished team spinning, which on a machine whose
 * cores are shared (the worker's decode pool, other processes) makes every later parallel region
 * wait for a descheduled spinner: measured 5-20x slower at batch 1 under load. When the
 * variable is unset, this sets OMP_WAIT_POLICY=PASSIVE and re-executes the program (same pid,
 * same argv) so libgomp starts with it; an explicit setting is kept. Returns only when no
 * re-exec was needed or it failed (then the process runs on with libgomp's default). */
void sq_engine_process_init(char **argv);

/* ---- backends ----
 * The CPU backend: float32, `threads` worker threads (0 = number of online CPUs). Caller owns. */
sq_backend_t *sq_backend_cpu_new(int threads, sq_error_t *err);
const char *sq_backend_name(const sq_backend_t *b);
/* Free/total memory of the backend's device in bytes (CPU: physical memory). */
int sq_backend_memory_info(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes);
void sq_backend_free(sq_backend_t *b);

/* ---- devices (backend.c, the backend registry): the ONE parser of the device grammar ----
 *   auto | cpu | cuda | cuda:N | cuda:all | NAME[:ARGS]
 * "auto" (and NULL/""): the CUDA backend on device 0 when one is usable, else cpu, with ONE info
 * log line saying it falls back and why. "cuda" = cuda:0. "cuda:all": one backend per device.
 * NAME[:ARGS]: a backend registered with sq_backend_register (test builds register a
 * fault-injecting one; production binaries register none), ARGS passed to it as they are. */
typedef enum {
  SQ_DEVICE_AUTO = 0,
  SQ_DEVICE_CPU,
  SQ_DEVICE_CUDA,      /* index: the ordinal, or -1 for cuda:all */
  SQ_DEVICE_REGISTERED /* name, args */
} sq_device_kind_t;

typedef struct {
  int kind; /* sq_device_kind_t */
  int index;
  char name[32];
  char args[224];
} sq_device_t;

/* Parses a device string: 0, or SQ_EINVAL with a message naming the string and the grammar. A
 * registered name parses only once registered. Any thread (after the registrations). */
int sq_device_parse(const char *device, sq_device_t *out, sq_error_t *err);

/* Opens up to `max` backends of a device string into out[] (caller owns each) and returns how
 * many (>= 1), or a negative SQ_E* with err: SQ_EINVAL for a malformed string, SQ_EDEVICE when
 * CUDA was asked for and no device is usable (no driver, no GPU, or a build without the CUDA
 * backend). cpu_threads as in sq_backend_cpu_new. NULL or "" means "auto". */
int sq_backend_open(const char *device, int cpu_threads, sq_backend_t **out, int max,
                    sq_error_t *err);
/* A backend kind opened by name (sq_backend_open("NAME:ARGS")): fills up to max backends. */
typedef int (*sq_backend_open_fn)(const char *args, int cpu_threads, sq_backend_t **out, int max,
                                  sq_error_t *err);
/* Registers a backend kind under `name` ([a-z0-9_], not auto/cpu/cuda). Call before any thread
 * opens devices (main, at start-up). SQ_EINVAL for a bad or taken name, SQ_ENOMEM when full. */
int sq_backend_register(const char *name, sq_backend_open_fn open);
/* Usable CUDA devices: 0 without a CUDA build, driver or device (never an error). */
int sq_backend_cuda_count(void);
/* The CUDA backend ("cuda:N") on one device; NULL with SQ_EDEVICE/SQ_EINVAL when unusable. */
sq_backend_t *sq_backend_cuda_new(int device, sq_error_t *err);
/* Plan-time check that every node of p runs on b, without running anything: 0, or
 * SQ_EUNSUPPORTED naming every node the backend cannot run (cpu: always 0). A plan that fails
 * it also fails its first sq_engine_run on b with the same message. */
int sq_backend_supports(sq_backend_t *b, const sq_engine_plan_t *p, sq_error_t *err);

/* What a backend is, asked through its interface (never by its name). */
typedef struct {
  int device_memory; /* memory_info describes a device's own memory, not the host's */
  int graphs;        /* a plan's runs on a context are replayed from one captured graph after
                      * its first run: callers plan a few fixed batch sizes and pad up to them */
  int image_io;      /* sq_engine_run_image's stages run on the device (else on the host) */
  int fp16;          /* it computes in fp16 (NHWC, tensor cores) when configured so */
} sq_backend_props_t;
void sq_backend_props(sq_backend_t *b, sq_backend_props_t *out);

enum { SQ_PRECISION_FP32 = 0, SQ_PRECISION_FP16 = 1 };
typedef struct {
  int precision; /* SQ_PRECISION_*: fp16 converts weights once when a plan binds, activations
                  * live in fp16; a backend without fp16 (props.fp16 == 0) computes in fp32 */
} sq_backend_options_t;
/* Sets options before any plan is bound on b (a bound plan keeps what it was bound with).
 * SQ_EINVAL for an unknown precision. */
int sq_backend_configure(sq_backend_t *b, const sq_backend_options_t *opt, sq_error_t *err);

/* A context that can run any plan whose sq_engine_arena_bytes() <= arena_bytes (size it for
 * the model's max batch). Caller owns; free before the backend. */
sq_backend_ctx_t *sq_backend_ctx_new(sq_backend_t *b, size_t arena_bytes, sq_error_t *err);
void sq_backend_ctx_free(sq_backend_ctx_t *c);

/* ---- running (the thread that owns ctx) ----
 * inputs[0..nin-1]: the plan's unbound inputs in order, shapes exactly as planned, float32
 * (or the declared integer type). outputs[0..nout-1]: caller buffers (data, bytes) sized for
 * sq_engine_plan_output_info; the engine fills dtype/rank/dims and the data.
 * The result is complete when this returns (it calls the backend's sync). Errors:
 * SQ_EINVAL (shape/size mismatch), SQ_EOOM_DEVICE, SQ_EMODEL, SQ_EDEVICE. */
int sq_engine_run(sq_engine_plan_t *p, sq_backend_ctx_t *ctx, const sq_engine_tensor_t *inputs,
                  int nin, sq_engine_tensor_t *outputs, int nout, sq_error_t *err);

/* ---- image I/O around a run: pre- and postprocessing next to the model ----
 * The plan's one unbound input ([N, C, H, W] float) is filled from raw samples normalized per
 * sample and channel; one channel of one [N, K, Ho, Wo] float output becomes a foreground
 * probability per pixel, and per sample a 0/1 mask (prob >= threshold). A backend whose props say
 * image_io does all of it on the device, so only raw samples go in and only the mask (or the
 * probabilities asked for) come back; others do it on the host around their run, with the same
 * arithmetic (image_io.c is the reference for the device kernels). */
enum {
  SQ_IMAGE_OUT_PROB = 0,   /* the channel already is a probability */
  SQ_IMAGE_OUT_LOGITS = 1, /* sigmoid of the channel */
  SQ_IMAGE_OUT_SOFTMAX = 2 /* 1 - softmax over the K channels, taken at the background channel */
};
typedef struct {
  int in_bytes;                /* 1 (uint8), 2 (uint16, native endian) or 4 (float) per value */
  const void *in;              /* N x C x H x W values, NCHW like the plan's input */
  const float *scale, *offset; /* [N * C]: x = v * scale[n * C + c] + offset[n * C + c] */
  int output;                  /* plan output index */
  int kind;                    /* SQ_IMAGE_OUT_* */
  int channel;                 /* foreground channel (PROB, LOGITS) or background (SOFTMAX) */
  const float *threshold;      /* [N], needed with mask; a NaN leaves that sample's mask 0 */
  uint8_t *mask;               /* N x Ho x Wo, 0/1; or NULL */
  float *prob;                 /* N x Ho x Wo probabilities; or NULL */
} sq_engine_image_io_t;
/* Runs p on ctx with image I/O (executor thread, like sq_engine_run). SQ_EINVAL when the plan
 * does not have exactly one unbound float [N, C, H, W] input, the output is not float rank 4,
 * the channel is out of range or io is incomplete; otherwise as sq_engine_run. */
int sq_engine_run_image(sq_engine_plan_t *p, sq_backend_ctx_t *ctx, const sq_engine_image_io_t *io,
                        sq_error_t *err);

/* Bytes of the constants (weights, folded values) the plan's nodes read: with the arena, what
 * a backend keeps on its device for the plan (sizing device memory before binding). */
size_t sq_engine_plan_const_bytes(const sq_engine_plan_t *p);

/* Bytes per element of a dtype (0 if unknown) and its ONNX name ("float", "int64"...). */
size_t sq_dtype_size(int dtype);
const char *sq_dtype_name(int dtype);

#ifdef __cplusplus
}
#endif
#endif
