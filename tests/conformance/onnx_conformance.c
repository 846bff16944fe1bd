/* onnx_conformance: runs an engine backend (the CPU by default) over ONNX's own backend test
 * cases (node/, pytorch-converted/, pytorch-operator/ under $SEGQ_ONNX_TESTS), comparing every
 * output with rtol=1e-3, atol=1e-7 (ONNX's defaults; NaN/Inf must agree). A case whose model
 * uses an unsupported op or type (on that backend: its plan check refuses it) is counted apart
 * ("skipped-unsupported"); any other failure of a case fails the run, because claiming an op
 * means passing all of its cases. segq's own cases (tests/conformance/cases, $SEGQ_LOCAL_CASES)
 * cover the ops the corpus has none for, and a full run fails when an op the backend implements
 * (ops.def: every op on cpu, the cuda column on cuda) was run by no passing case.
 * Usage: onnx_conformance [-v] [--device D] [name-substring] (D: the device grammar, e.g. cuda;
 * default cpu). Exit 77 when the cases are absent, or when D asks for CUDA and no GPU is usable. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu/onnx/engine_internal.h"

/* Paths are built from the test tree's short names; a truncated one just fails to open. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#ifndef SEGQ_ONNX_TESTS_DEFAULT
#define SEGQ_ONNX_TESTS_DEFAULT "../shared/onnx-tests"
#endif

#define MAX_IO 16

static int verbose;
static sq_backend_t *backend;
/* ops seen in passing cases: every op ops.def implements must be among them (the cpu backend's
 * op coverage, as tests/gpu/test_gpu_ops.c checks the CUDA backend's) */
static int covered[SQ_OP_COUNT];

typedef enum { CASE_PASS, CASE_FAIL, CASE_SKIP } outcome_t;

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entries of dir whose name starts with prefix (NULL = all but dot-files). */
static int list_dir(const char *dir, const char *prefix, char ***out) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0, cap = 64;
  char **v = malloc((size_t)cap * sizeof *v);
  struct dirent *e;
  while (v && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
    if (n == cap) {
      cap *= 2;
      char **nv = realloc(v, (size_t)cap * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    v[n++] = sq_strdup(e->d_name);
  }
  closedir(d);
  if (v) qsort(v, (size_t)n, sizeof *v, cmp_str);
  *out = v;
  return n;
}

static void free_list(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
  if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)sz;
  return buf;
}

static int read_tensor(const char *path, sq_tensor_t *t, sq_error_t *err) {
  size_t len;
  uint8_t *buf = read_file(path, &len);
  if (!buf) return sq_error_set(err, SQ_EIO, "%s: cannot read", path);
  int rc = sq_onnx_tensor_parse(buf, len, t, err);
  free(buf);
  return rc;
}

static bool close_enough(float got, float want) {
  if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
  if (isinf(want) || isinf(got)) return got == want;
  return fabsf(got - want) <= 1e-7f + 1e-3f * fabsf(want);
}

/* Compares one output; prints the first mismatch. */
static bool compare(const char *name, const sq_engine_tensor_t *got, const sq_tensor_t *want) {
  if (got->rank != want->rank || memcmp(got->dims, want->dims, (size_t)want->rank * 8) != 0) {
    printf("    output '%s': shape differs (rank %d vs expected %d)\n", name, got->rank,
           want->rank);
    return false;
  }
  if (got->dtype != want->dtype) {
    printf("    output '%s': type %s, expected %s\n", name, sq_dtype_name(got->dtype),
           sq_dtype_name(want->dtype));
    return false;
  }
  int64_t n = sq_tensor_numel(want), bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++) {
    bool ok;
    if (want->dtype == SQ_DT_FLOAT)
      ok = close_enough(((const float *)got->data)[i], ((const float *)want->data)[i]);
    else
      ok = memcmp((const char *)got->data + i * sq_dtype_size(want->dtype),
                  (const char *)want->data + i * sq_dtype_size(want->dtype),
                  sq_dtype_size(want->dtype)) == 0;
    if (!ok && bad++ == 0) first = i;
  }
  if (bad) {
    if (want->dtype == SQ_DT_FLOAT)
      printf("    output '%s': %lld of %lld values differ; first at %lld: got %g, expected %g\n",
             name, (long long)bad, (long long)n, (long long)first,
             (double)((const float *)got->data)[first], (double)((const float *)want->data)[first]);
    else
      printf("    output '%s': %lld of %lld values differ (first at %lld)\n", name, (long long)bad,
             (long long)n, (long long)first);
  }
  return bad == 0;
}

static outcome_t run_data_set(sq_engine_t *e, const char *dir, char *why, size_t whylen) {
  sq_error_t err = {0};
  sq_tensor_t ins[MAX_IO], outs[MAX_IO];
  int nin = 0, nout = 0;
  outcome_t res = CASE_FAIL;
  memset(ins, 0, sizeof ins);
  memset(outs, 0, sizeof outs);
  char path[4096];
  for (; nin < MAX_IO; nin++) {
    snprintf(path, sizeof path, "%s/input_%d.pb", dir, nin);
    struct stat st;
    if (stat(path, &st)) break;
    if (read_tensor(path, &ins[nin], &err)) {
      snprintf(why, whylen, "%s", err.msg);
      res = err.code == SQ_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
      goto out;
    }
  }
  for (; nout < MAX_IO; nout++) {
    snprintf(path, sizeof path, "%s/output_%d.pb", dir, nout);
    struct stat st;
    if (stat(path, &st)) break;
    if (read_tensor(path, &outs[nout], &err)) {
      snprintf(why, whylen, "%s", err.msg);
      res = err.code == SQ_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
      goto out;
    }
  }
  if (nin != sq_engine_input_count(e) || nout != sq_engine_output_count(e)) {
    snprintf(why, whylen, "%d/%d data files for %d/%d graph inputs/outputs", nin, nout,
             sq_engine_input_count(e), sq_engine_output_count(e));
    goto out;
  }
  sq_engine_tensor_t shapes[MAX_IO];
  memset(shapes, 0, sizeof shapes);
  for (int i = 0; i < nin; i++) {
    shapes[i].dtype = ins[i].dtype;
    shapes[i].rank = ins[i].rank;
    memcpy(shapes[i].dims, ins[i].dims, sizeof ins[i].dims);
    if (sq_engine_input_is_static(e, i)) { /* shape-like inputs are bound at plan time */
      shapes[i].data = ins[i].data;
      shapes[i].bytes = sq_tensor_bytes(&ins[i]);
    }
  }
  sq_engine_plan_t *p = sq_engine_plan_new_shapes(e, shapes, nin, &err);
  if (!p) {
    snprintf(why, whylen, "plan: %s", err.msg);
    res = err.code == SQ_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
    goto out;
  }
  sq_engine_tensor_t run_in[MAX_IO], run_out[MAX_IO];
  memset(run_in, 0, sizeof run_in);
  memset(run_out, 0, sizeof run_out);
  int k = 0;
  for (int i = 0; i < nin; i++) {
    if (shapes[i].data) continue;
    run_in[k] = shapes[i];
    run_in[k].data = ins[i].data;
    run_in[k].bytes = sq_tensor_bytes(&ins[i]);
    k++;
  }
  bool ok = true;
  for (int i = 0; i < nout; i++) {
    sq_engine_tensor_t info;
    sq_engine_plan_output_info(p, i, &info);
    /* guard bytes after each output catch kernels writing past the end */
    run_out[i].bytes = info.bytes;
    run_out[i].data = malloc(info.bytes + 64);
    if (run_out[i].data) memset((char *)run_out[i].data + info.bytes, 0xA5, 64);
  }
  if (sq_backend_supports(backend, p, &err)) {
    snprintf(why, whylen, "%s", err.msg);
    res = CASE_SKIP;
    for (int i = 0; i < nout; i++) free(run_out[i].data);
    sq_engine_plan_free(p);
    goto out;
  }
  sq_backend_ctx_t *ctx = sq_backend_ctx_new(backend, sq_engine_arena_bytes(p), &err);
  int rc = ctx ? sq_engine_run(p, ctx, run_in, k, run_out, nout, &err) : err.code;
  if (rc) {
    snprintf(why, whylen, "run: %s", err.msg);
    ok = false;
    res = CASE_FAIL;
  } else {
    for (int i = 0; i < nout; i++) {
      sq_engine_tensor_t info;
      sq_engine_plan_output_info(p, i, &info);
      for (int g = 0; g < 64; g++)
        if (((uint8_t *)run_out[i].data)[info.bytes + g] != 0xA5) {
          printf("    output '%s': guard bytes overwritten\n", info.name);
          ok = false;
          break;
        }
      if (!compare(info.name, &run_out[i], &outs[i])) ok = false;
    }
    if (!ok) snprintf(why, whylen, "wrong output");
    res = ok ? CASE_PASS : CASE_FAIL;
  }
  sq_backend_ctx_free(ctx);
  for (int i = 0; i < nout; i++) free(run_out[i].data);
  sq_engine_plan_free(p);
out:
  for (int i = 0; i < nin; i++) sq_tensor_clear(&ins[i]);
  for (int i = 0; i < nout; i++) sq_tensor_clear(&outs[i]);
  return res;
}

static outcome_t run_case_with(const char *dir, const sq_engine_options_t *opt, char *why,
                               size_t whylen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_file(path, opt, &err);
  if (!e) {
    snprintf(why, whylen, "%s", err.msg);
    return err.code == SQ_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
  }
  char **sets;
  int nsets = list_dir(dir, "test_data_set_", &sets);
  outcome_t res = nsets > 0 ? CASE_PASS : CASE_FAIL;
  if (nsets <= 0) snprintf(why, whylen, "no test_data_set_*");
  for (int i = 0; i < nsets && res == CASE_PASS; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, sets[i]);
    res = run_data_set(e, path, why, whylen);
  }
  /* load-time folding ran the dead nodes' kernels too: they count */
  for (int i = 0; res == CASE_PASS && i < e->graph.nnodes; i++)
    if (e->graph.nodes[i].op >= 0) covered[e->graph.nodes[i].op]++;
  if (nsets > 0) free_list(sets, nsets);
  sq_engine_free(e);
  return res;
}

/* Each case runs twice: as loaded (BatchNorm folded, activations fused) and plain, so both the
 * rewrites and the kernels they replace are checked against the expected outputs. */
static outcome_t run_case(const char *dir, char *why, size_t whylen) {
  static const sq_engine_options_t plain = {.no_fold_bn = 1, .no_fuse = 1};
  outcome_t res = run_case_with(dir, NULL, why, whylen);
  if (res != CASE_PASS) return res;
  res = run_case_with(dir, &plain, why, whylen);
  if (res == CASE_FAIL) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "without folding/fusion: %s", why);
    snprintf(why, whylen, "%s", tmp);
  }
  return res;
}

int main(int argc, char **argv) {
  const char *filter = NULL, *device = "cpu";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-v") == 0)
      verbose = 1;
    else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
      device = argv[++i];
    else
      filter = argv[i];
  }
  const char *root = getenv("SEGQ_ONNX_TESTS");
  if (!root || !*root) root = SEGQ_ONNX_TESTS_DEFAULT;
  struct stat st;
  if (stat(root, &st) || !S_ISDIR(st.st_mode)) {
    printf("onnx conformance cases not found at %s (set SEGQ_ONNX_TESTS): skipped\n", root);
    return 77;
  }
  sq_log_set_level(SQ_LOG_WARN);
  sq_error_t err = {0};
  const char *threads = getenv("SEGQ_THREADS");
  sq_device_t dev;
  if (sq_device_parse(device, &dev, &err)) {
    fprintf(stderr, "onnx_conformance: %s\n", err.msg);
    return 2;
  }
  if (dev.kind == SQ_DEVICE_CUDA && sq_backend_cuda_count() == 0) {
    printf("no usable CUDA device: %s skipped (nothing ran on a GPU)\n", device);
    return 77;
  }
  if (sq_backend_open(device, threads ? atoi(threads) : 2, &backend, 1, &err) < 1) {
    fprintf(stderr, "backend %s: %s\n", device, err.msg);
    return 1;
  }
  printf("backend %s\n", sq_backend_name(backend));
  /* ONNX's own cases, then segq's (tests/conformance/cases: ops the corpus has no case for,
   * written by tools/make_conformance_cases.py) */
  static const char *suites[] = {"node", "pytorch-converted", "pytorch-operator", "segq"};
  const char *local = getenv("SEGQ_LOCAL_CASES");
  if (!local || !*local) local = SEGQ_LOCAL_CASES_DEFAULT;
  int run = 0, passed = 0, failed = 0, skipped = 0;
  for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
    char dir[4096];
    if (strcmp(suites[s], "segq") == 0)
      snprintf(dir, sizeof dir, "%s", local);
    else
      snprintf(dir, sizeof dir, "%s/%s", root, suites[s]);
    char **cases;
    int n = list_dir(dir, NULL, &cases);
    for (int i = 0; i < n; i++) {
      if (filter && !strstr(cases[i], filter)) continue;
      char cdir[4096 + 256], why[512] = "";
      snprintf(cdir, sizeof cdir, "%s/%s", dir, cases[i]);
      outcome_t r = run_case(cdir, why, sizeof why);
      if (r == CASE_SKIP) {
        skipped++;
        if (verbose) printf("SKIP %s/%s: %s\n", suites[s], cases[i], why);
        continue;
      }
      run++;
      if (r == CASE_PASS) {
        passed++;
        if (verbose) printf("PASS %s/%s\n", suites[s], cases[i]);
      } else {
        failed++;
        printf("FAIL %s/%s: %s\n", suites[s], cases[i], why);
      }
    }
    if (n > 0) free_list(cases, n);
  }
  sq_backend_free(backend);
  /* the ops this backend claims: every implemented op on cpu, ops.def's cuda column on cuda */
  bool on_cuda = dev.kind == SQ_DEVICE_CUDA;
  int uncovered = 0;
  for (int op = 0; !filter && op < SQ_OP_COUNT; op++)
    if ((on_cuda ? sq_op_info(op)->cuda : sq_op_info(op)->cpu != NULL) && !covered[op]) {
      printf("FAIL op %s: implemented (ops.def) but no passing case ran it on the %s backend\n",
             sq_op_info(op)->name, on_cuda ? "cuda" : "cpu");
      uncovered++;
    }
  printf("run %d, passed %d, failed %d, skipped-unsupported %d, ops without a case %d\n", run,
         passed, failed, skipped, uncovered);
  return failed || uncovered ? 1 : 0;
}
