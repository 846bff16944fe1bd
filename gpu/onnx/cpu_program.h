/* cpu_program.h: the cpu backend's compiled form of a plan: oneDNN primitives created once per
 * plan, tensors kept in the layout oneDNN chose (blocked, e.g. nChw16c) between the ops it runs,
 * reorders only where an op needs plain NCHW (graph edges, reference kernels), and one arena
 * laid out by liveness over the program's steps for activations and scratchpads. Shared by
 * cpu_program.c (buffers, layouts, arena, run) and cpu_dnnl_ops.c (one builder per op family).
 * Compiled under the plan's lock by whichever executor thread runs the plan first; run by any
 * number of contexts at once (the program is immutable after compile). */
#ifndef SQ_CPU_PROGRAM_H
#define SQ_CPU_PROGRAM_H

#include <dnnl.h>

#include "engine_internal.h"

#define SQ_STEP_MAX_ARGS 16

typedef enum {
  SQ_BUF_ARENA = 0, /* in the context's arena at `offset` */
  SQ_BUF_CONST,     /* a constant (weights, folded values, reordered weights): `ptr` */
  SQ_BUF_INPUT,     /* the caller's input `index` */
  SQ_BUF_OUTPUT     /* the caller's output `index` */
} sq_buf_where_t;

/* One memory region as the program sees it: a layout (md) over some bytes. A buffer with
 * alias >= 0 is another view (md) of that buffer's bytes. */
typedef struct {
  dnnl_memory_desc_t md;
  bool has_md; /* false: a tensor oneDNN cannot describe (int64, bool...): reference only */
  int where, index, alias;
  const void *ptr;
  size_t bytes, offset;
  int birth, death; /* step positions (arena placement) */
  int last_reader;  /* plan position of the last node reading any tensor held here */
  bool keep;        /* a graph output or input lives here: never written in place */
} sq_buf_t;

typedef enum {
  SQ_STEP_PRIM = 0, /* a oneDNN primitive */
  SQ_STEP_REF,      /* the op's reference kernel (ops.def) on plain buffers */
  SQ_STEP_D2S,      /* ConvTranspose k == stride: taps of a 1x1 conv to their pixels */
  SQ_STEP_COPY      /* bytes from buf[0] to buf[1] (graph outputs) */
} sq_step_kind_t;

typedef struct {
  int kind, node;
  dnnl_primitive_t prim;
  int nargs;
  int arg[SQ_STEP_MAX_ARGS]; /* DNNL_ARG_* */
  int buf[SQ_STEP_MAX_ARGS]; /* program buffers; REF: inputs then outputs (-1 absent) */
  int nref_in, nref_out;
  int64_t d2s[6];  /* n, channel blocks of the output, h, w, kh, kw (blocked layout) */
  bool is_reorder; /* a layout change the compiler inserted (profile label) */
  int block;       /* channel block of the D2S layout; output channels */
  int64_t channels;
  int threads; /* OpenMP team it runs on: 1 (no parallel region) for tiny work, see node_team */
} sq_step_t;

/* A weight blob owned by the backend's cache (reordered once, shared by plans). */
typedef struct sq_wcache_entry sq_wcache_entry_t;

typedef struct sq_cpu_program {
  uint64_t id; /* unique: contexts key their memory objects by it */
  const sq_engine_plan_t *plan;
  dnnl_engine_t engine;
  sq_buf_t *bufs;
  int nbufs, bufs_cap;
  sq_step_t *steps;
  int nsteps, steps_cap;
  int (*reps)[4]; /* per tensor: up to 4 buffers holding it (plain and/or blocked), -1 */
  int pos;        /* plan position of the node being compiled */
  int team;       /* team size of the node being compiled (its steps run on it) */
  int *pos_of;    /* node index -> plan position (-1: not run) */
  bool *skip;     /* per node: fused into an earlier step */
  size_t arena_bytes;
  sq_wcache_entry_t **weights; /* cache entries this program holds */
  int nweights, weights_cap;
  void **owned; /* blobs the program owns (derived constants) */
  int nowned, owned_cap;
  struct sq_cpu_backend *backend;
} sq_cpu_program_t;

/* the cpu backend's state (backend_cpu.c) */
typedef struct sq_cpu_backend {
  int refs; /* the backend + each program (programs may outlive the backend), under wlock */
  int threads;
  dnnl_engine_t engine;
  pthread_mutex_t wlock; /* guards the weight cache */
  sq_wcache_entry_t *wcache;
} sq_cpu_backend_t;

/* ---- cpu_program.c: buffers and layouts ---- */
int sq_prog_buf_new(sq_cpu_program_t *pr, const dnnl_memory_desc_t *md, int where);
/* A view (another md) of buffer b's bytes. */
int sq_prog_buf_alias(sq_cpu_program_t *pr, int b, const dnnl_memory_desc_t *md);
/* Plain (row-major) md of a tensor, optionally right-aligned to `rank` dims (0: its own). */
bool sq_prog_plain_md(const sq_tensor_t *t, int rank, dnnl_memory_desc_t *md);
/* Buffer holding tensor t exactly in layout md (a reorder step is added when needed), or -1
 * with err set. */
int sq_prog_get_as(sq_cpu_program_t *pr, int t, const dnnl_memory_desc_t *md, sq_error_t *err);
/* Buffer b itself when it has layout md, else a new arena buffer that a reorder step (run
 * every time the program runs) fills from b. -1 with err on failure. */
int sq_prog_reorder(sq_cpu_program_t *pr, int b, const dnnl_memory_desc_t *md, sq_error_t *err);
/* Buffer holding t in plain layout (rank-aligned as sq_prog_plain_md), or -1. */
int sq_prog_get_plain(sq_cpu_program_t *pr, int t, int rank, sq_error_t *err);
/* A buffer holding t in some layout oneDNN understands, preferring a blocked one (the input
 * of layout-agnostic ops: eltwise, pooling, binary...). -1 with err on failure. */
int sq_prog_get_any(sq_cpu_program_t *pr, int t, sq_error_t *err);
/* True for a row-major md (abcd...: the layout reference kernels read). */
bool sq_prog_md_is_plain(const dnnl_memory_desc_t *md);
/* Records that buffer b now holds tensor t (a producer's output). */
void sq_prog_set_rep(sq_cpu_program_t *pr, int t, int b);
/* True when an op at the current position may overwrite buffer b (its tensors all die here). */
bool sq_prog_can_overwrite(const sq_cpu_program_t *pr, int b);
/* Appends a primitive step; args/bufs pairs. Creates the primitive from pd (destroyed here),
 * and a scratchpad buffer when pd needs one. */
int sq_prog_add_prim(sq_cpu_program_t *pr, dnnl_primitive_desc_t pd, int nargs, const int *args,
                     const int *bufs, sq_error_t *err);
int sq_prog_add_step(sq_cpu_program_t *pr, const sq_step_t *s); /* -1 on ENOMEM */
/* A constant blob from the cache: `src` reordered from src_md to md (shared by plans). */
int sq_prog_weights(sq_cpu_program_t *pr, const void *src, const dnnl_memory_desc_t *src_md,
                    const dnnl_memory_desc_t *md, sq_error_t *err);
/* Same for a blob computed at compile time (not cached; `src` is only read). */
int sq_prog_weights_derived(sq_cpu_program_t *pr, const void *src, const dnnl_memory_desc_t *src_md,
                            const dnnl_memory_desc_t *md, sq_error_t *err);
/* A constant buffer over `data`; owned: the program frees it (also on failure). */
int sq_prog_const(sq_cpu_program_t *pr, const void *data, const dnnl_memory_desc_t *md, bool owned);
/* oneDNN status -> SQ error naming the node */
int sq_dnnl_error(sq_error_t *err, dnnl_status_t st, const sq_node_t *n, const char *what);

/* Drops one reference; the last one destroys the oneDNN engine and the weight cache. */
void sq_cpu_backend_unref(sq_cpu_backend_t *be);

/* ---- the program's life (cpu_program.c) ---- */
sq_cpu_program_t *sq_cpu_program_new(sq_cpu_backend_t *be, const sq_engine_plan_t *p,
                                     sq_error_t *err);
void sq_cpu_program_free(sq_cpu_program_t *pr);
size_t sq_cpu_program_arena_bytes(const sq_cpu_program_t *pr);
/* A context's oneDNN memory objects for the programs it ran (one list per context). */
typedef struct sq_prog_mems sq_prog_mems_t;
void sq_prog_mems_free(sq_prog_mems_t *m);
/* Runs the program over `arena` (>= its arena bytes); profile: per-step times on stderr. */
int sq_cpu_program_run(const sq_cpu_program_t *pr, sq_cpu_t *pool, dnnl_stream_t stream,
                       uint8_t *arena, sq_prog_mems_t **cache, const sq_engine_tensor_t *inputs,
                       sq_engine_tensor_t *outputs, int profile, sq_error_t *err);

/* What a compiled program is made of (tests assert layout decisions and fusions with it, so a
 * regression fails a test rather than only a benchmark; onnx_run --stats prints it). Counted
 * from the steps and from each primitive's own descriptor (kind, attributes, implementation). */
typedef struct {
  int steps;
  int prims;          /* oneDNN primitives (reorders included) */
  int reorders;       /* layout changes the compiler inserted (graph edges included) */
  int inner_reorders; /* reorders that neither read a graph input nor write a graph output */
  int convs;          /* convolution primitives (ConvTranspose's taps convs included) */
  int deconvs;        /* deconvolution primitives */
  int ref_steps;      /* nodes on their reference kernel */
  int ref_convs;      /* Conv/ConvTranspose nodes on the reference kernel (im2col + sgemm) */
  int d2s;            /* ConvTranspose depth-to-space copies */
  int copies;         /* plain copies into the caller's outputs */
  int fused_eltwise;  /* eltwise post-ops (activations folded into a primitive) */
  int fused_sum;      /* sum post-ops (a residual Add folded into its conv) */
  int gemm_convs;     /* convolutions oneDNN runs as im2col + gemm or its reference code */
  int blocked_bufs;   /* activation buffers in a non-plain layout */
  int single_thread;  /* primitive/reference/copy steps that run without a parallel region
                         (their work is below what a team's wake-up costs) */
  int ref_by_op[SQ_OP_COUNT]; /* reference steps per op */
} sq_cpu_program_stats_t;
void sq_cpu_program_stats(const sq_cpu_program_t *pr, sq_cpu_program_stats_t *st);
/* One line per step (kind, node, op, oneDNN implementation, layout of its output, team size)
 * to f. */
void sq_cpu_program_dump(const sq_cpu_program_t *pr, FILE *f);

/* ---- cpu_dnnl_ops.c: one builder per op family; 1 = built, 0 = not for oneDNN (the node
 * runs on its reference kernel), < 0 = error ---- */
int sq_dnnl_build_node(sq_cpu_program_t *pr, int ni, sq_error_t *err);
/* ops.def's cpu column: true when the op has a oneDNN builder (the builder may still decline
 * a node whose attributes/types it does not take) */
bool sq_dnnl_runs(int op);

#endif
