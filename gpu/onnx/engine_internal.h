/* engine_internal.h: the engine's graph IR, the op/kernel interface that ops.def lists, the CPU
 * thread pool kernels use, and the backend interface (ggml style: struct { iface; context; }).
 * Private to gpu/onnx/: kernels (kern_*.c, cpu_ops_*.c), loader, planner and backends. */
#ifndef SQ_ENGINE_INTERNAL_H
#define SQ_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define SQ_MAX_DIMS SQ_ENGINE_MAX_DIMS
#define SQ_MAX_NODE_IO 1024 /* inputs or outputs of one node */

/* ---- ops: the enum from ops.def (SQ_OP_Conv, ...) ---- */
typedef enum {
#define SQ_OP(name, kernel, shape, static_inputs, props, act, cpu, cuda) SQ_OP_##name,
#define SQ_OP_TODO(name, owner) SQ_OP_##name,
#include "ops.def"
#undef SQ_OP
#undef SQ_OP_TODO
  SQ_OP_COUNT
} sq_op_t;

/* ---- attributes (copied out of the protobuf at load; owned by the node) ---- */
typedef enum {
  SQ_ATTR_FLOAT = 1,
  SQ_ATTR_INT = 2,
  SQ_ATTR_STRING = 3,
  SQ_ATTR_TENSOR = 4,
  SQ_ATTR_FLOATS = 6,
  SQ_ATTR_INTS = 7,
  SQ_ATTR_STRINGS = 8
} sq_attr_type_t;

struct sq_tensor;

typedef struct {
  char *name;
  int type;      /* sq_attr_type_t */
  float f;       /* FLOAT */
  int64_t i;     /* INT */
  char *s;       /* STRING (NUL-terminated copy) */
  float *floats; /* FLOATS, n values */
  int64_t *ints; /* INTS, n values */
  size_t n;
  struct sq_tensor *t; /* TENSOR: a standalone tensor (kind SQ_TENSOR_CONST, data owned) */
} sq_attr_t;

/* ---- tensors ---- */
typedef enum {
  SQ_TENSOR_ACT = 0, /* intermediate value computed by a node: lives in the arena */
  SQ_TENSOR_INPUT,   /* graph input fed at run time */
  SQ_TENSOR_CONST    /* initializer, Constant, bound input or folded value: `data` is set */
} sq_tensor_kind_t;

typedef struct sq_tensor {
  char *name;
  int kind;                  /* sq_tensor_kind_t */
  int dtype;                 /* sq_dtype_t; SQ_DT_UNDEF until known */
  int rank;                  /* -1 until known */
  int64_t dims[SQ_MAX_DIMS]; /* -1 = unknown (symbolic) dim */
  void *data;                /* CONST: dense row-major data */
  bool owns_data; /* free data with the tensor (false: borrowed from the engine's graph) */
  bool is_output; /* a graph output: never aliased, never freed early */
  /* planning (plan.c) */
  int producer;  /* node index, -1 for inputs/consts */
  int last_use;  /* last node index reading it (in topological order) */
  size_t offset; /* arena offset of an ACT tensor */
  int alias;     /* ACT tensor whose block this one shares (views, in-place ops); -1 none */
} sq_tensor_t;

/* ---- fused activation applied by a kernel to its output (fuse.c sets, Conv applies) ---- */
typedef enum {
  SQ_ACT_NONE = 0,
  SQ_ACT_RELU,
  SQ_ACT_LEAKY_RELU, /* alpha */
  SQ_ACT_CLIP,       /* alpha = min, beta = max */
  SQ_ACT_SIGMOID
} sq_act_t;

/* ---- nodes ---- */
typedef struct {
  char *name;
  int op;    /* sq_op_t */
  int opset; /* the model's default-domain opset (ops changed attributes across versions) */
  int nin, nout;
  int *in; /* tensor indices into graph.tensors; -1 = optional input left out */
  int *out;
  sq_attr_t *attrs;
  int nattrs;
  int act; /* sq_act_t fused into this node's output */
  float act_alpha, act_beta;
  bool dead;           /* removed by folding/fusion; skipped everywhere */
  bool attrs_borrowed; /* attrs belong to the engine's graph (a plan's clone) */
} sq_node_t;

/* ---- graph: arrays indexed by int, so rewriting never invalidates references ---- */
typedef struct {
  sq_tensor_t *tensors;
  int ntensors, tensors_cap;
  sq_node_t *nodes; /* topological order once sq_graph_toposort() succeeded */
  int nnodes, nodes_cap;
  int *inputs; /* graph inputs without initializer, in file order */
  int ninputs;
  int *outputs;
  int noutputs;
  int opset;
  bool stored_fp16; /* the file held float16 weights or I/O (now float32; load.c) */
} sq_graph_t;

/* ir.c */
void sq_graph_free(sq_graph_t *g);
/* Deep copy of metadata; const data is borrowed (owns_data false) so plans share weights. */
int sq_graph_clone(const sq_graph_t *src, sq_graph_t *dst);
int sq_graph_add_tensor(sq_graph_t *g, const char *name, int kind); /* index or -1 */
int sq_graph_find_tensor(const sq_graph_t *g, const char *name);    /* index or -1 */
/* Reorders nodes topologically; SQ_EMODEL_LOAD naming a node on a cycle / undefined input. */
int sq_graph_toposort(sq_graph_t *g, sq_error_t *err);
void sq_tensor_clear(sq_tensor_t *t); /* frees name, owned data and attribute payloads */
void sq_node_clear(sq_node_t *n);
int64_t sq_tensor_numel(const sq_tensor_t *t);
size_t sq_tensor_bytes(const sq_tensor_t *t);
/* Count of consumers of tensor t among live nodes (+1 if a graph output). */
int sq_graph_use_count(const sq_graph_t *g, int t);
/* Frees the data of constants no live node reads (weights replaced by folding). */
void sq_graph_release_unused(sq_graph_t *g);

/* ---- attribute lookup (attr.c); defaults returned when absent ---- */
const sq_attr_t *sq_attr_find(const sq_node_t *n, const char *name);
int64_t sq_attr_int(const sq_node_t *n, const char *name, int64_t def);
float sq_attr_float(const sq_node_t *n, const char *name, float def);
const char *sq_attr_string(const sq_node_t *n, const char *name, const char *def);
/* INTS attribute: returns count (0 if absent) and sets *vals (borrowed). */
size_t sq_attr_ints(const sq_node_t *n, const char *name, const int64_t **vals);
size_t sq_attr_floats(const sq_node_t *n, const char *name, const float **vals);

/* ---- the kernel interface ----
 * A view is what a kernel sees of one tensor: dtype, shape and data. An optional input that
 * was left out has dtype SQ_DT_UNDEF and data NULL. Output views come with their shape (from
 * shape inference) and data already allocated (arena or constant buffer). */
typedef struct {
  int dtype;
  int rank;
  int64_t dims[SQ_MAX_DIMS];
  void *data;
} sq_view_t;

static inline int64_t sq_view_numel(const sq_view_t *v) {
  int64_t n = 1;
  for (int i = 0; i < v->rank; i++) n *= v->dims[i];
  return n;
}
static inline bool sq_view_present(const sq_view_t *v) {
  return v->dtype != SQ_DT_UNDEF;
}

typedef struct sq_cpu sq_cpu_t;

/* CPU kernel: computes out[] from in[]. Runs on the executor thread; may fan out work with
 * sq_cpu_parallel_for. Also called at plan time by constant folding (cpu is then a 1-thread
 * pool). Returns 0 or a negative SQ_E* code with err set (naming the node). */
typedef int (*sq_kernel_fn)(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin,
                            const sq_view_t *out, int nout, sq_error_t *err);

/* Shape function: sets dtype, rank and dims of out[] from in[]. in[i].data is non-NULL only
 * when that input is a constant at plan time (value-dependent shapes such as Reshape's
 * `shape` need it; fail with SQ_EUNSUPPORTED when it is not constant). Also the place to
 * reject dtypes/attributes the kernel does not handle (SQ_EUNSUPPORTED, naming the node). */
typedef int (*sq_shape_fn)(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                           int nout, sq_error_t *err);

/* Kernels and shape functions are defined with these, so their signatures are written once. */
#define SQ_KERNEL_FN(name)                                                     \
  int name(sq_cpu_t *cpu, const sq_node_t *node, const sq_view_t *in, int nin, \
           const sq_view_t *out, int nout, sq_error_t *err)
#define SQ_SHAPE_FN(name)                                                                 \
  int name(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout, \
           sq_error_t *err)

#define SQ_OP(name, kernel, shape, static_inputs, props, act, cpu, cuda) \
  SQ_KERNEL_FN(kernel);                                                  \
  SQ_SHAPE_FN(shape);
#define SQ_OP_TODO(name, owner)
#include "ops.def"
#undef SQ_OP
#undef SQ_OP_TODO

/* ops.def's props column */
#define SQ_P_VIEW 0x1u    /* output = input 0's bytes */
#define SQ_P_INPLACE 0x2u /* elementwise: output may overwrite input 0 when it dies here */
#define SQ_P_HOST 0x4u    /* applies node->act to its output */
#define SQ_P_BINARY 0x8u  /* elementwise binary arithmetic, numpy broadcasting */

/* ops.c: the table built from ops.def */
typedef struct {
  const char *name;       /* ONNX op_type */
  sq_kernel_fn cpu;       /* NULL: listed but not implemented (unsupported) */
  sq_shape_fn shape;      /* NULL with cpu */
  unsigned static_inputs; /* bit i: input i must be a constant at plan time */
  unsigned props;         /* SQ_P_* */
  int act;                /* sq_act_t this op computes (fusable into a SQ_P_HOST producer) */
  bool cuda;              /* the CUDA backend has an implementation (gpu/cuda/cuda_ops.c) */
} sq_op_info_t;

const sq_op_info_t *sq_op_info(int op);
int sq_op_lookup(const char *op_type); /* sq_op_t or -1 when not listed */
static inline bool sq_op_has(int op, unsigned prop) {
  const sq_op_info_t *i = sq_op_info(op);
  return i && (i->props & prop) != 0;
}

/* ---- helpers for kernels and shape functions (shape.c / kern_util.c) ---- */
/* Error naming the node: "node 'conv1' (Conv): <fmt>". Returns code. */
int sq_node_error(sq_error_t *err, int code, const sq_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Numpy-style broadcast of a and b into out (rank = max); SQ_EINVAL on mismatch. */
int sq_broadcast_shape(const sq_view_t *a, const sq_view_t *b, sq_view_t *out);
/* Strides (in elements) of `v` broadcast to out's shape: 0 where v's dim is 1/absent. */
void sq_broadcast_strides(const sq_view_t *v, const sq_view_t *out, int64_t *strides);
/* Reads an integer tensor (int64 or int32) element i as int64. */
int64_t sq_view_get_int(const sq_view_t *v, int64_t i);
/* The axes of an op that takes them as input 1 (newer opsets) or as the "axes" attribute (older
 * ones): fills axes[] and returns their count (>= 0), or a negative code naming the node (input
 * not constant at plan time: SQ_EUNSUPPORTED; more than SQ_MAX_DIMS: SQ_EMODEL_LOAD). attr.c. */
int sq_node_axes(const sq_node_t *node, const sq_view_t *in, int nin, int64_t axes[SQ_MAX_DIMS],
                 sq_error_t *err);
/* Normalizes a possibly negative axis against rank; -1 if out of range. */
int sq_axis(int64_t axis, int rank);
/* Generic shape functions usable by many ops (listed in ops.def by name). */
int sq_shape_same(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                  sq_error_t *err);
int sq_shape_broadcast(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out,
                       int nout, sq_error_t *err);
/* sq_shape_broadcast for ops with exactly two inputs (Add, Sub, Mul, Div, Pow...) */
int sq_shape_binary(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                    sq_error_t *err);
/* Broadcast driver for binary elementwise ops (Add, Pow, Max, Equal...): calls row() once per
 * innermost row of out, with a/b pointers and their element strides (0 = broadcast, 1 = dense)
 * and n elements; rows run in parallel on cpu. Element sizes come from each view's dtype. */
typedef void (*sq_binary_row_fn)(const void *a, int64_t sa, const void *b, int64_t sb, void *o,
                                 int64_t n, void *ctx);
void sq_binary_broadcast(sq_cpu_t *cpu, const sq_view_t *a, const sq_view_t *b,
                         const sq_view_t *out, sq_binary_row_fn row, void *ctx);
/* Pooling geometry (kern_pool.c), shared by MaxPool and AveragePool: 1-D runs as 2-D with
 * h = kh = 1. Handles auto_pad, ceil_mode, dilations; sq_shape_pool uses it for ops.def. */
typedef struct {
  int64_t n, c, h, w, kh, kw, sh, sw, dh, dw;
  int64_t ph, pw, ph_end, pw_end; /* pads: begin/end per spatial axis */
  int64_t oh, ow;
} sq_pool_t;
int sq_pool_params(const sq_node_t *node, const sq_view_t *x, sq_pool_t *p, sq_error_t *err);
int sq_shape_pool(const sq_node_t *node, const sq_view_t *in, int nin, sq_view_t *out, int nout,
                  sq_error_t *err);
/* x rounded to the nearest float16 value (ties to even; overflow to inf; NaN kept), as a
 * float: what Cast(to=FLOAT16) computes on the engine's float32 tensors (kern_shape.c). */
float sq_round_fp16(float x);
/* Convolution geometry (kern_conv.c), shared by the reference kernels and every backend:
 * 1-D runs as 2-D with h = kh = 1; auto_pad, output_shape/output_padding (ConvTranspose)
 * resolved into explicit begin/end pads. transpose selects ConvTranspose's rules. */
typedef struct {
  int64_t n, c, h, w; /* input */
  int64_t m, kh, kw;  /* output channels, kernel */
  int64_t oh, ow;     /* output */
  int64_t sh, sw, dh, dw, ph, pw, ph_end, pw_end;
  int64_t group;
} sq_conv_params_t;
int sq_conv_params(const sq_node_t *node, const sq_view_t *x, const sq_view_t *w, bool transpose,
                   sq_conv_params_t *p, sq_error_t *err);
/* Lays out blocks of the given sizes and [birth, death] lifetimes (inclusive positions) in one
 * arena: greedy by decreasing size, each at the lowest 64-byte aligned offset overlapping no
 * placed block alive at the same time. Fills offsets; returns the arena size (plan.c). */
size_t sq_arena_place(const size_t *sizes, const int *birth, const int *death, int n,
                      size_t *offsets);
/* Resize geometry (kern_resize.c): output dims and the scale per axis (given scales, or
 * out/in from sizes, after keep_aspect_ratio_policy), roi per axis (default 0..1). */
typedef struct {
  int rank;
  int64_t in[SQ_MAX_DIMS], out[SQ_MAX_DIMS];
  double scale[SQ_MAX_DIMS];
  double roi0[SQ_MAX_DIMS], roi1[SQ_MAX_DIMS];
} sq_resize_params_t;
int sq_resize_params(const sq_node_t *node, const sq_view_t *in, int nin, sq_resize_params_t *r,
                     sq_error_t *err);
/* Applies a fused activation in place to n floats. */
void sq_act_apply(int act, float alpha, float beta, float *x, int64_t n);

/* ---- CPU thread pool (backend_cpu.c) ---- */
/* Calls fn(arg, begin, end) over [0, n) split in contiguous chunks across the pool's threads
 * (and the calling thread); returns when all chunks are done. grain: minimum chunk size. */
typedef void (*sq_range_fn)(void *arg, int64_t begin, int64_t end);
void sq_cpu_parallel_for(sq_cpu_t *cpu, int64_t n, int64_t grain, sq_range_fn fn, void *arg);
int sq_cpu_threads(const sq_cpu_t *cpu);
sq_cpu_t *sq_cpu_new(int threads); /* threads <= 1: runs everything on the caller */
void sq_cpu_free(sq_cpu_t *cpu);
/* Scratch memory for kernels (im2col...): at least `bytes`, valid until the next call on the
 * same cpu. Owned by the pool. NULL on allocation failure. */
void *sq_cpu_scratch(sq_cpu_t *cpu, size_t bytes);

/* ---- engine objects ---- */
struct sq_engine {
  sq_graph_t graph; /* after load-time rewrites (BN folding, fusion); topologically sorted */
  sq_engine_options_t opt;
};

struct sq_engine_plan {
  sq_engine_t *engine;
  sq_graph_t graph; /* shapes static, constants folded, dead nodes removed */
  int *order;       /* live node indices in execution order */
  int norder;
  int *inputs; /* unbound graph inputs (tensor indices) */
  int ninputs;
  size_t arena_bytes;
  pthread_mutex_t lock;  /* guards backend_state */
  sq_backend_t *backend; /* the backend backend_state belongs to (one per plan for now) */
  /* its iface: a backend whose plan state does not need it alive (cpu) is unloaded through
   * this after the backend itself was freed */
  const struct sq_backend_iface *backend_iface;
  void *backend_state;
};

/* load.c: protobuf -> graph (unsupported ops/types collected into one message) */
int sq_onnx_load(const void *buf, size_t len, sq_graph_t *g, sq_error_t *err);
/* tensor_proto.c: a serialized TensorProto (conformance data) -> tensor with owned data */
int sq_onnx_tensor_parse(const void *buf, size_t len, sq_tensor_t *t, sq_error_t *err);
/* fold_bn.c / fuse.c: load-time rewrites on a sorted graph */
int sq_graph_fold_constants(sq_graph_t *g, sq_error_t *err); /* plan.c */
int sq_graph_fold_batchnorm(sq_graph_t *g, sq_error_t *err);
int sq_graph_fuse_activations(sq_graph_t *g, sq_error_t *err);
/* plan.c helpers shared with tests */
int sq_plan_arena(sq_engine_plan_t *p, sq_error_t *err);

/* builder.c: builds small ONNX models in memory (unit tests, tools). Calls never fail on
 * their own; sq_onnx_builder_serialize reports allocation failure with NULL. dims of -1 are
 * written as the symbolic dim "N". Attributes attach to the most recent node. */
typedef struct sq_onnx_builder sq_onnx_builder_t;
sq_onnx_builder_t *sq_onnx_builder_new(int opset);
void sq_onnx_builder_input(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                           const int64_t *dims);
void sq_onnx_builder_output(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                            const int64_t *dims);
/* data: numel * size of dtype bytes (float, int64, int32...), copied */
void sq_onnx_builder_initializer(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                                 const int64_t *dims, const void *data);
/* inputs/outputs: comma-separated names ("x,w,b"; an empty item is an omitted input) */
void sq_onnx_builder_node(sq_onnx_builder_t *b, const char *op_type, const char *name,
                          const char *inputs, const char *outputs);
void sq_onnx_builder_attr_int(sq_onnx_builder_t *b, const char *name, int64_t v);
void sq_onnx_builder_attr_float(sq_onnx_builder_t *b, const char *name, float v);
void sq_onnx_builder_attr_string(sq_onnx_builder_t *b, const char *name, const char *v);
void sq_onnx_builder_attr_ints(sq_onnx_builder_t *b, const char *name, const int64_t *v, int n);
/* an initializer whose data lives in an external file (the loader must refuse it) */
void sq_onnx_builder_external(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                              const int64_t *dims);
uint8_t *sq_onnx_builder_serialize(sq_onnx_builder_t *b, size_t *len); /* caller frees */
void sq_onnx_builder_free(sq_onnx_builder_t *b);

/* ---- backend interface (ggml style) ----
 * Every backend fills one iface; sq_engine_run and the sq_backend_* functions only call through
 * it. CUDA adds its own file with the same hooks; the only #ifdef for it sits in the registry. */
typedef struct sq_backend_iface {
  const char *(*get_name)(sq_backend_t *b);
  /* Prepares a plan on this backend (upload weights/folded constants...). *state is kept in
   * the plan and passed back to run; called once per (plan, backend), under plan->lock. */
  int (*load)(sq_backend_t *b, const sq_engine_plan_t *p, void **state, sq_error_t *err);
  /* Frees a plan's state. b is the backend that loaded it; a backend whose state keeps what it
   * needs alive (cpu: reference counted) must not touch b, so its plans may outlive it. */
  void (*unload)(sq_backend_t *b, void *state);
  sq_backend_ctx_t *(*ctx_new)(sq_backend_t *b, size_t arena_bytes, sq_error_t *err);
  void (*ctx_free)(sq_backend_ctx_t *c);
  /* Runs a whole plan: inputs already checked against the plan's shapes. May be asynchronous;
   * sync waits for completion and reports the first deferred error. */
  int (*run)(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
             const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs, sq_error_t *err);
  int (*sync)(sq_backend_ctx_t *c, sq_error_t *err);
  int (*memory_info)(sq_backend_t *b, size_t *free_bytes, size_t *total_bytes);
  /* Optional. Host-only plan-time check that the backend runs every node of p
   * (sq_backend_supports); NULL: it runs whatever the engine loads (cpu, whose reference kernels
   * cover every op in ops.def). */
  int (*supports)(sq_backend_t *b, const sq_engine_plan_t *p, sq_error_t *err);
  void (*free)(sq_backend_t *b);
  /* Optional. What the backend is (sq_backend_props); NULL: all zero. */
  void (*props)(sq_backend_t *b, sq_backend_props_t *out);
  /* Optional. Options before any plan binds (sq_backend_configure); NULL: options ignored
   * (the backend computes in fp32). */
  int (*configure)(sq_backend_t *b, const sq_backend_options_t *opt, sq_error_t *err);
  /* Optional. sq_engine_run_image on the device (io already checked against the plan; may be
   * asynchronous like run, sync completes it); NULL: the engine runs the stages on the host. */
  int (*run_image)(sq_backend_ctx_t *c, const sq_engine_plan_t *p, void *state,
                   const sq_engine_image_io_t *io, sq_error_t *err);
} sq_backend_iface_t;

struct sq_backend {
  const sq_backend_iface_t *iface;
  void *context;
};

struct sq_backend_ctx {
  sq_backend_t *backend;
  size_t arena_bytes;
  void *context;
};

/* exec.c: runs a plan's nodes on the CPU over `arena` (also used by plan-time folding with
 * arena NULL for const-only nodes). */
int sq_exec_cpu(sq_cpu_t *cpu, const sq_engine_plan_t *p, uint8_t *arena,
                const sq_engine_tensor_t *inputs, sq_engine_tensor_t *outputs, sq_error_t *err);
/* Builds the view of tensor t for a run over `arena` (inputs come from `input_data`). */
void sq_view_of(const sq_tensor_t *t, uint8_t *arena, sq_view_t *v);
/* exec.c: binds p to ctx's backend on first use (under p->lock); the backend's state in *state. */
int sq_engine_bind(sq_engine_plan_t *p, sq_backend_t *b, void **state, sq_error_t *err);

/* image_io.c: the host stages of sq_engine_run_image, the reference the device kernels follow.
 * normalize: dst[n][c][i] = v[n][c][i] * scale[n*C+c] + offset[n*C+c] over n x c planes of hw.
 * post: from out ([n][k][hw] floats) the probability of each pixel of each sample into
 * io->prob and/or the 0/1 mask into io->mask. */
void sq_image_normalize(const sq_engine_image_io_t *io, int64_t n, int64_t c, int64_t hw,
                        float *dst);
void sq_image_post(const sq_engine_image_io_t *io, const float *out, int64_t n, int64_t k,
                   int64_t hw);

#endif
