/* ort_bench: ONNX Runtime's CPU execution provider timed through its C API, the peer of
 * bench/engine_bench.c in bench/engine_vs_ort.py. The library is the one onnxruntime-node ships
 * (tests/ort/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1, loaded
 * with dlopen), so nothing but `npm ci` is needed and no harness copies tensors per run: the
 * input and output OrtValues wrap buffers allocated once, like engine_bench's. Input names and
 * shapes come from the model file (read with segq's loader; the segq engine itself never runs
 * here). Prints a human line and one JSON line with the same fields as engine_bench.
 *
 *   ort_bench MODEL.onnx [--lib PATH] [--batch B] [--threads T] [--warmup W] [--iters N]
 *             [--repeats R] [--shape HxW] [--out FILE]
 *
 * The npm package has no C header, so the few OrtApi members used are declared here by their
 * position in the OrtApi function table: ONNX Runtime only appends to that table (it is its
 * stable ABI, versioned by ORT_API_VERSION), so positions 0..100 are the same in every release
 * since 1.x that has them; GetApi(ORT_API_VERSION_USED) fails cleanly on a library too old. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/bench_common.h"
#include "gpu/onnx/engine.h"

#define ORT_API_VERSION_USED 13 /* all members below exist since API 13 (ORT 1.13) */

typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtValue OrtValue;
typedef struct OrtRunOptions OrtRunOptions;

/* OrtApi positions (the table of function pointers GetApi returns) */
enum {
  ORT_GET_ERROR_MESSAGE = 2,
  ORT_CREATE_ENV = 3,
  ORT_CREATE_SESSION = 7,
  ORT_RUN = 9,
  ORT_CREATE_SESSION_OPTIONS = 10,
  ORT_SET_GRAPH_OPTIMIZATION_LEVEL = 23,
  ORT_SET_INTRA_OP_THREADS = 24,
  ORT_SET_INTER_OP_THREADS = 25,
  ORT_CREATE_TENSOR_WITH_DATA = 49,
  ORT_CREATE_CPU_MEMORY_INFO = 69,
  ORT_RELEASE_ENV = 92,
  ORT_RELEASE_STATUS = 93,
  ORT_RELEASE_MEMORY_INFO = 94,
  ORT_RELEASE_SESSION = 95,
  ORT_RELEASE_VALUE = 96,
  ORT_RELEASE_SESSION_OPTIONS = 100,
};

typedef void (*ort_fn_t)(void);
typedef struct {
  const ort_fn_t *(*get_api)(unsigned version);
  const char *(*get_version_string)(void);
} ort_api_base_t;

static const ort_fn_t *api; /* the OrtApi table */

#define ORT_FN(idx, type) ((type)api[idx])

static int check(OrtStatus *st, const char *what) {
  if (!st) return 0;
  const char *msg = ORT_FN(ORT_GET_ERROR_MESSAGE, const char *(*)(const OrtStatus *))(st);
  fprintf(stderr, "ort_bench: %s: %s\n", what, msg);
  ORT_FN(ORT_RELEASE_STATUS, void (*)(OrtStatus *))(st);
  return 1;
}

static const char *default_lib(void) {
  static char path[4096];
  const char *src = getenv("SEGQ_SOURCE_DIR");
  snprintf(path, sizeof path,
           "%s/tests/ort/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/"
           "libonnxruntime.so.1",
           src && *src ? src : ".");
  return path;
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: ort_bench MODEL.onnx [--lib PATH] [--batch B] [--threads T] [--warmup W]\n"
      "                 [--iters N] [--repeats R] [--shape HxW] [--out FILE]\n"
      "  defaults: batch 8, threads 2, warmup 3, iters 10, repeats 3; --lib defaults to\n"
      "  $SEGQ_SOURCE_DIR (or .)/tests/ort/node_modules/onnxruntime-node/.../libonnxruntime.so.1\n"
      "  --shape sets the spatial dims of a 4-D input whose H/W are symbolic; --out writes\n"
      "  the outputs of the last run (raw, in output order)\n");
}

int main(int argc, char **argv) {
  const char *model = NULL, *lib = NULL, *out_path = NULL;
  int batch = 8, threads = 2, warmup = 3, iters = 10, repeats = 3;
  long shape_h = 0, shape_w = 0;
  for (int i = 1; i < argc; i++) {
    int more = i + 1 < argc;
    if (!strcmp(argv[i], "--batch") && more)
      batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && more)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && more)
      warmup = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && more)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeats") && more)
      repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--lib") && more)
      lib = argv[++i];
    else if (!strcmp(argv[i], "--out") && more)
      out_path = argv[++i];
    else if (!strcmp(argv[i], "--shape") && more) {
      if (sscanf(argv[++i], "%ldx%ld", &shape_h, &shape_w) != 2 || shape_h < 1 || shape_w < 1) {
        usage();
        return 2;
      }
    } else if (!strcmp(argv[i], "--help")) {
      usage();
      return 0;
    } else if (argv[i][0] != '-' && !model)
      model = argv[i];
    else {
      usage();
      return 2;
    }
  }
  if (!model || batch < 1 || threads < 1 || warmup < 0 || iters < 1 || repeats < 1) {
    usage();
    return 2;
  }
  if (!lib) lib = default_lib();
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "ort_bench: %s (npm ci --ignore-scripts --prefix tests/ort)\n", dlerror());
    return 77;
  }
  const ort_api_base_t *(*get_base)(void) = NULL;
  *(void **)&get_base = dlsym(h, "OrtGetApiBase"); /* POSIX's way from dlsym to a function */
  const ort_api_base_t *base = get_base ? get_base() : NULL;
  api = base ? base->get_api(ORT_API_VERSION_USED) : NULL;
  if (!api) {
    fprintf(stderr, "ort_bench: %s has no OrtApi version %d\n", lib, ORT_API_VERSION_USED);
    return 1;
  }
  const char *version = base->get_version_string();

  /* the model's inputs and outputs, with the batch (and --shape) applied, from segq's planner */
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_file(model, NULL, &err);
  if (!e) {
    fprintf(stderr, "ort_bench: %s\n", err.msg);
    return 1;
  }
  int nin = sq_engine_input_count(e);
  sq_engine_tensor_t *shapes = calloc((size_t)nin + 1, sizeof *shapes);
  for (int i = 0; i < nin; i++) {
    sq_engine_input_info(e, i, &shapes[i]);
    shapes[i].dims[0] = batch;
    if (shapes[i].rank == 4 && shape_h) {
      shapes[i].dims[2] = shape_h;
      shapes[i].dims[3] = shape_w;
    }
  }
  sq_engine_plan_t *p = sq_engine_plan_new_shapes(e, shapes, nin, &err);
  free(shapes);
  if (!p) {
    fprintf(stderr, "ort_bench: shapes: %s\n", err.msg);
    return 1;
  }
  nin = sq_engine_plan_input_count(p);
  int nout = sq_engine_plan_output_count(p);

  OrtEnv *env = NULL;
  OrtSessionOptions *so = NULL;
  OrtSession *sess = NULL;
  OrtMemoryInfo *mi = NULL;
  typedef OrtStatus *(*create_env_fn)(int, const char *, OrtEnv **);
  typedef OrtStatus *(*so_int_fn)(OrtSessionOptions *, int);
  if (check(ORT_FN(ORT_CREATE_ENV, create_env_fn)(3 /* error */, "ort_bench", &env), "env") ||
      check(ORT_FN(ORT_CREATE_SESSION_OPTIONS, OrtStatus * (*)(OrtSessionOptions **))(&so),
            "options") ||
      check(ORT_FN(ORT_SET_INTRA_OP_THREADS, so_int_fn)(so, threads), "intra-op threads") ||
      check(ORT_FN(ORT_SET_INTER_OP_THREADS, so_int_fn)(so, 1), "inter-op threads") ||
      check(ORT_FN(ORT_SET_GRAPH_OPTIMIZATION_LEVEL, so_int_fn)(so, 99 /* all */), "opt level"))
    return 1;
  uint64_t t0 = sq_clock_mono_us();
  typedef OrtStatus *(*create_session_fn)(const OrtEnv *, const char *, const OrtSessionOptions *,
                                          OrtSession **);
  if (check(ORT_FN(ORT_CREATE_SESSION, create_session_fn)(env, model, so, &sess), "session") ||
      check(ORT_FN(ORT_CREATE_CPU_MEMORY_INFO, OrtStatus * (*)(int, int, OrtMemoryInfo **))(
                1 /* arena */, 0 /* default */, &mi),
            "memory info"))
    return 1;
  double load_ms = (double)(sq_clock_mono_us() - t0) / 1000.0;

  typedef OrtStatus *(*tensor_fn)(const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t,
                                  int, OrtValue **);
  const char **in_names = calloc((size_t)nin + 1, sizeof *in_names);
  const char **out_names = calloc((size_t)nout + 1, sizeof *out_names);
  OrtValue **in_vals = calloc((size_t)nin + 1, sizeof *in_vals);
  OrtValue **out_vals = calloc((size_t)nout + 1, sizeof *out_vals);
  void **bufs = calloc((size_t)(nin + nout) + 1, sizeof *bufs);
  double *rep_ms = calloc((size_t)repeats, sizeof *rep_ms);
  double *rep_cpu = calloc((size_t)repeats, sizeof *rep_cpu);
  size_t *buf_bytes = calloc((size_t)(nin + nout) + 1, sizeof *buf_bytes);
  for (int i = 0; i < nin + nout; i++) {
    sq_engine_tensor_t t;
    if (i < nin)
      sq_engine_plan_input_info(p, i, &t);
    else
      sq_engine_plan_output_info(p, i - nin, &t);
    bufs[i] = calloc(1, t.bytes + 1);
    buf_bytes[i] = t.bytes;
    if (i < nin && t.dtype == SQ_DT_FLOAT) bench_fill_input(bufs[i], t.bytes / sizeof(float));
    (i < nin ? in_names : out_names)[i < nin ? i : i - nin] = t.name;
    OrtValue **v = i < nin ? &in_vals[i] : &out_vals[i - nin];
    if (check(ORT_FN(ORT_CREATE_TENSOR_WITH_DATA, tensor_fn)(mi, bufs[i], t.bytes, t.dims,
                                                             (size_t)t.rank, t.dtype, v),
              "tensor"))
      return 1;
  }
  typedef OrtStatus *(*run_fn)(OrtSession *, const OrtRunOptions *, const char *const *,
                               const OrtValue *const *, size_t, const char *const *, size_t,
                               OrtValue **);
  run_fn run = ORT_FN(ORT_RUN, run_fn);
  for (int w = 0; w < warmup; w++)
    if (check(run(sess, NULL, in_names, (const OrtValue *const *)in_vals, (size_t)nin, out_names,
                  (size_t)nout, out_vals),
              "run"))
      return 1;
  for (int r = 0; r < repeats; r++) {
    double c0 = bench_cpu_ms_now();
    t0 = sq_clock_mono_us();
    for (int it = 0; it < iters; it++)
      if (check(run(sess, NULL, in_names, (const OrtValue *const *)in_vals, (size_t)nin, out_names,
                    (size_t)nout, out_vals),
                "run"))
        return 1;
    rep_ms[r] = (double)(sq_clock_mono_us() - t0) / 1000.0 / iters;
    rep_cpu[r] = (bench_cpu_ms_now() - c0) / iters;
  }
  if (out_path) { /* the output OrtValues wrap bufs[nin..]: ORT wrote into them */
    FILE *f = fopen(out_path, "wb");
    for (int i = nin; f && i < nin + nout; i++) fwrite(bufs[i], 1, buf_bytes[i], f);
    if (!f || fclose(f)) {
      fprintf(stderr, "ort_bench: cannot write %s\n", out_path);
      return 1;
    }
  }
  qsort(rep_ms, (size_t)repeats, sizeof *rep_ms, bench_cmp_double);
  qsort(rep_cpu, (size_t)repeats, sizeof *rep_cpu, bench_cmp_double);
  double med = rep_ms[(repeats - 1) / 2];
  printf(
      "%s: onnxruntime %s (C API): batch %d threads %d: %.2f images/s (%.3f ms/batch median "
      "of %d repeats x %d iters, min %.3f, max %.3f)\n",
      model, version, batch, threads, batch * 1000.0 / med, med, repeats, iters, rep_ms[0],
      rep_ms[repeats - 1]);
  printf(
      "{\"model\": \"%s\", \"runtime\": \"onnxruntime %s C API\", \"batch\": %d, "
      "\"threads\": %d, \"repeats\": %d, \"iters\": %d, \"ms_median\": %.3f, \"ms_min\": %.3f, "
      "\"ms_max\": %.3f, \"cpu_ms_median\": %.3f, \"images_per_s\": %.2f, \"load_ms\": %.2f}\n",
      model, version, batch, threads, repeats, iters, med, rep_ms[0], rep_ms[repeats - 1],
      rep_cpu[(repeats - 1) / 2], batch * 1000.0 / med, load_ms);
  for (int i = 0; i < nin; i++) ORT_FN(ORT_RELEASE_VALUE, void (*)(OrtValue *))(in_vals[i]);
  for (int i = 0; i < nout; i++) ORT_FN(ORT_RELEASE_VALUE, void (*)(OrtValue *))(out_vals[i]);
  for (int i = 0; i < nin + nout; i++) free(bufs[i]);
  ORT_FN(ORT_RELEASE_MEMORY_INFO, void (*)(OrtMemoryInfo *))(mi);
  ORT_FN(ORT_RELEASE_SESSION, void (*)(OrtSession *))(sess);
  ORT_FN(ORT_RELEASE_SESSION_OPTIONS, void (*)(OrtSessionOptions *))(so);
  ORT_FN(ORT_RELEASE_ENV, void (*)(OrtEnv *))(env);
  free(in_names);
  free(out_names);
  free(in_vals);
  free(out_vals);
  free(bufs);
  free(rep_ms);
  free(rep_cpu);
  free(buf_bytes);
  sq_engine_plan_free(p);
  sq_engine_free(e);
  return 0;
}
