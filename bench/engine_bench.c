/* engine_bench: throughput of the segq ONNX engine on a backend (--device, default cpu; cuda in
 * fp32 or --precision fp16). Loads a model, plans it for batch B, runs warm-up iterations (on a
 * CUDA backend the second one is captured into a graph that the timed runs replay), then R
 * repeats of N timed runs each; prints images/s and ms/batch (median over repeats, each repeat's
 * mean) as a human line and one JSON line: the counterpart of bench/ort_bench.c (ONNX Runtime's
 * C API) for bench/engine_vs_ort.py and of the PyTorch side of bench/gpu_vs_torch.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/bench_common.h"
#include "gpu/onnx/engine.h"

static void usage(void) {
  fprintf(stderr,
          "usage: engine_bench MODEL.onnx [--batch B] [--threads T] [--warmup W] [--iters N]\n"
          "                    [--repeats R] [--device D] [--precision fp32|fp16] [--out FILE]\n"
          "  defaults: batch 8, threads 0 (all online CPUs), warmup 3, iters 10, repeats 3,\n"
          "  device cpu, precision fp32; --out writes the outputs of the last run (raw, in\n"
          "  output order) for bench/engine_vs_ort.py's agreement check\n");
}

int main(int argc, char **argv) {
  sq_engine_process_init(argv); /* OpenMP waits passively (engine.h) */
  const char *model = NULL, *device = "cpu", *precision = "fp32", *out_path = NULL;
  int batch = 8, threads = 0, warmup = 3, iters = 10, repeats = 3;
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
    else if (!strcmp(argv[i], "--device") && more)
      device = argv[++i];
    else if (!strcmp(argv[i], "--precision") && more)
      precision = argv[++i];
    else if (!strcmp(argv[i], "--out") && more)
      out_path = argv[++i];
    else if (argv[i][0] != '-' && !model)
      model = argv[i];
    else {
      usage();
      return 2;
    }
  }
  if (!model || batch < 1 || threads < 0 || warmup < 0 || iters < 1 || repeats < 1 ||
      (strcmp(precision, "fp32") && strcmp(precision, "fp16"))) {
    usage();
    return 2;
  }

  sq_error_t err = {0};
  uint64_t t0 = sq_clock_mono_us();
  sq_engine_t *e = sq_engine_load_file(model, NULL, &err);
  if (!e) {
    fprintf(stderr, "engine_bench: load %s: %s (%s)\n", model, err.msg, sq_error_name(err.code));
    return 1;
  }
  double load_ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
  t0 = sq_clock_mono_us();
  sq_engine_plan_t *p = sq_engine_plan_new(e, (uint32_t)batch, &err);
  if (!p) {
    fprintf(stderr, "engine_bench: plan: %s (%s)\n", err.msg, sq_error_name(err.code));
    sq_engine_free(e);
    return 1;
  }
  double plan_ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
  sq_backend_t *b = NULL;
  if (sq_backend_open(device, threads, &b, 1, &err) < 1) b = NULL;
  sq_backend_options_t bo = {.precision =
                                 strcmp(precision, "fp16") ? SQ_PRECISION_FP32 : SQ_PRECISION_FP16};
  if (b && sq_backend_configure(b, &bo, &err)) {
    sq_backend_free(b);
    b = NULL;
  }
  sq_backend_props_t props = {0};
  if (b) sq_backend_props(b, &props);
  sq_backend_ctx_t *ctx = b ? sq_backend_ctx_new(b, sq_engine_arena_bytes(p), &err) : NULL;
  if (!ctx) {
    fprintf(stderr, "engine_bench: backend: %s (%s)\n", err.msg, sq_error_name(err.code));
    sq_backend_free(b);
    sq_engine_plan_free(p);
    sq_engine_free(e);
    return 1;
  }

  int rc = 1;
  int nin = sq_engine_plan_input_count(p), nout = sq_engine_plan_output_count(p);
  sq_engine_tensor_t *in = calloc((size_t)nin + 1, sizeof *in);
  sq_engine_tensor_t *out = calloc((size_t)nout + 1, sizeof *out);
  double *rep_ms = calloc((size_t)repeats, sizeof *rep_ms);
  double *rep_cpu = calloc((size_t)repeats, sizeof *rep_cpu);
  if (!in || !out || !rep_ms || !rep_cpu) goto done;
  for (int i = 0; i < nin; i++) {
    sq_engine_plan_input_info(p, i, &in[i]);
    in[i].data = calloc(1, in[i].bytes + 1);
    if (!in[i].data) goto done;
    if (in[i].dtype == SQ_DT_FLOAT) bench_fill_input(in[i].data, in[i].bytes / sizeof(float));
  }
  for (int i = 0; i < nout; i++) {
    sq_engine_plan_output_info(p, i, &out[i]);
    out[i].data = malloc(out[i].bytes + 1);
    if (!out[i].data) goto done;
  }

  double first_ms = 0;
  for (int w = 0; w < warmup; w++) {
    t0 = sq_clock_mono_us();
    if (sq_engine_run(p, ctx, in, nin, out, nout, &err)) goto run_failed;
    if (w == 0) first_ms = (double)(sq_clock_mono_us() - t0) / 1000.0;
  }
  for (int r = 0; r < repeats; r++) {
    double c0 = bench_cpu_ms_now();
    t0 = sq_clock_mono_us();
    for (int it = 0; it < iters; it++)
      if (sq_engine_run(p, ctx, in, nin, out, nout, &err)) goto run_failed;
    rep_ms[r] = (double)(sq_clock_mono_us() - t0) / 1000.0 / iters;
    rep_cpu[r] = (bench_cpu_ms_now() - c0) / iters;
  }
  if (out_path) {
    FILE *f = fopen(out_path, "wb");
    for (int i = 0; f && i < nout; i++) fwrite(out[i].data, 1, out[i].bytes, f);
    if (!f || fclose(f)) {
      fprintf(stderr, "engine_bench: cannot write %s\n", out_path);
      goto done;
    }
  }
  qsort(rep_ms, (size_t)repeats, sizeof *rep_ms, bench_cmp_double);
  qsort(rep_cpu, (size_t)repeats, sizeof *rep_cpu, bench_cmp_double);
  /* median of the repeats (the lower middle one for an even count: no averaging of outliers) */
  double med = rep_ms[(repeats - 1) / 2];
  double ips = batch * 1000.0 / med;
  printf(
      "%s: batch %d threads %d: %.2f images/s (%.3f ms/batch median of %d repeats x %d iters, "
      "min %.3f, max %.3f; %d nodes, arena %zu bytes)\n",
      model, batch, threads, ips, med, repeats, iters, rep_ms[0], rep_ms[repeats - 1],
      sq_engine_plan_node_count(p), sq_engine_arena_bytes(p));
  printf(
      "{\"model\": \"%s\", \"runtime\": \"segq-engine %s\", \"precision\": \"%s\", "
      "\"batch\": %d, \"threads\": %d, "
      "\"repeats\": %d, \"iters\": %d, \"ms_median\": %.3f, \"ms_min\": %.3f, \"ms_max\": %.3f, "
      "\"cpu_ms_median\": %.3f, \"images_per_s\": %.2f, \"load_ms\": %.2f, \"plan_ms\": %.2f, "
      "\"first_run_ms\": %.2f, \"nodes\": %d, \"arena_bytes\": %zu}\n",
      model, sq_backend_name(b), props.fp16 ? precision : "fp32", batch, threads, repeats, iters,
      med, rep_ms[0], rep_ms[repeats - 1], rep_cpu[(repeats - 1) / 2], ips, load_ms, plan_ms,
      first_ms, sq_engine_plan_node_count(p), sq_engine_arena_bytes(p));
  rc = 0;
  goto done;
run_failed:
  fprintf(stderr, "engine_bench: run: %s (%s)\n", err.msg, sq_error_name(err.code));
done:
  for (int i = 0; in && i < nin; i++) free(in[i].data);
  for (int i = 0; out && i < nout; i++) free(out[i].data);
  free(in);
  free(out);
  free(rep_ms);
  free(rep_cpu);
  sq_backend_ctx_free(ctx);
  sq_engine_plan_free(p);
  sq_backend_free(b);
  sq_engine_free(e);
  return rc;
}
