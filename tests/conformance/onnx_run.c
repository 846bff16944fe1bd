/* onnx_run: loads an ONNX model with the segq engine, plans it for a batch size and runs it on
 * the CPU backend: prints load/plan/run times, node count and arena size, and optionally reads
 * the first input from / writes the first output to raw float32 files (to compare with
 * tests/ort/run_ort.js). Usage:
 *   onnx_run MODEL.onnx [--batch N] [--shape HxW] [--threads N] [--iters N] [--in IN.bin]
 *            [--out OUT.bin] [--no-fold] [--no-fuse] [--dump] [--program] [--help]
 *   (other inputs get a fixed pattern; --shape fixes the spatial dims of 4-D inputs whose H/W
 *   are symbolic in the file; --dump prints the planned graph to stderr, --program the cpu
 *   backend's compiled program: one line per step and its counts, cpu_program.h)
 * Exit: 0 ok, 1 error, 2 usage, 3 the model uses unsupported ops/types. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/onnx/cpu_program.h"
#include "gpu/onnx/engine.h"

static double ms_since(uint64_t t0) {
  return (double)(sq_clock_mono_us() - t0) / 1000.0;
}

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: onnx_run MODEL.onnx [--batch N] [--shape HxW] [--threads N] [--iters N]\n"
      "                [--in IN.bin] [--out OUT.bin] [--no-fold] [--no-fuse] [--dump] [--program]\n"
      "  Loads, plans and runs MODEL on the cpu backend; prints one JSON line (times, nodes,\n"
      "  arena, output shape).\n"
      "  --batch N    dim 0 of every input (default 1)\n"
      "  --shape HxW  dims 2 and 3 of every 4-D input (models exported with symbolic H/W)\n"
      "  --threads N  cpu backend threads (default: all online CPUs)\n"
      "  --iters N    timed runs (default 3)\n"
      "  --in/--out   raw float32 data of the first input / output\n"
      "  --no-fold    keep BatchNormalization nodes; --no-fuse: keep activations apart\n"
      "  --dump       the planned graph on stderr\n"
      "  --program    the cpu backend's program on stderr: each step (primitive and its\n"
      "               oneDNN implementation, reference kernel, reorder, copy), then counts\n"
      "exit: 0 ok, 1 error, 2 usage, 3 the model uses unsupported ops/types\n");
}

int main(int argc, char **argv) {
  sq_engine_process_init(argv); /* OpenMP waits passively (engine.h) */
  const char *model = NULL, *in_path = NULL, *out_path = NULL;
  int batch = 1, threads = 0, iters = 3, dump = 0, program = 0;
  long shape_h = 0, shape_w = 0;
  sq_engine_options_t opt = {0};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--in") && i + 1 < argc)
      in_path = argv[++i];
    else if (!strcmp(argv[i], "--out") && i + 1 < argc)
      out_path = argv[++i];
    else if (!strcmp(argv[i], "--no-fold"))
      opt.no_fold_bn = 1;
    else if (!strcmp(argv[i], "--no-fuse"))
      opt.no_fuse = 1;
    else if (!strcmp(argv[i], "--program"))
      program = 1;
    else if (!strcmp(argv[i], "--dump"))
      dump = 1;
    else if (!strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
      if (sscanf(argv[++i], "%ldx%ld", &shape_h, &shape_w) != 2 || shape_h < 1 || shape_w < 1) {
        fprintf(stderr, "onnx_run: --shape wants HxW (e.g. 512x384), got '%s'\n", argv[i]);
        return 2;
      }
    } else if (argv[i][0] == '-' || model) {
      usage(stderr);
      return 2;
    } else
      model = argv[i];
  }
  if (!model || batch < 1) {
    usage(stderr);
    return 2;
  }
  sq_error_t err = {0};
  uint64_t t0 = sq_clock_mono_us();
  sq_engine_t *e = sq_engine_load_file(model, &opt, &err);
  if (!e) {
    fprintf(stderr, "load: %s (%s)\n", err.msg, sq_error_name(err.code));
    return err.code == SQ_EUNSUPPORTED ? 3 : 1; /* 3: the model needs ops we do not have */
  }
  double load_ms = ms_since(t0);
  t0 = sq_clock_mono_us();
  int ni = sq_engine_input_count(e);
  sq_engine_tensor_t *shapes = calloc((size_t)ni + 1, sizeof *shapes);
  for (int i = 0; shapes && i < ni; i++) {
    sq_engine_input_info(e, i, &shapes[i]);
    if (shapes[i].rank > 0) shapes[i].dims[0] = batch;
    if (shapes[i].rank == 4 && shape_h) {
      shapes[i].dims[2] = shape_h;
      shapes[i].dims[3] = shape_w;
    }
    for (int d = 0; d < shapes[i].rank; d++)
      if (shapes[i].dims[d] < 0) {
        fprintf(stderr,
                "plan: input '%s' dim %d is symbolic: give it with --shape HxW (4-D inputs)\n",
                shapes[i].name, d);
        return 1;
      }
  }
  sq_engine_plan_t *p = shapes ? sq_engine_plan_new_shapes(e, shapes, ni, &err) : NULL;
  free(shapes);
  if (!p) {
    fprintf(stderr, "plan: %s (%s)\n", err.msg, sq_error_name(err.code));
    return 1;
  }
  double plan_ms = ms_since(t0);
  if (dump) sq_engine_plan_dump(p, stderr);
  sq_backend_t *b = sq_backend_cpu_new(threads, &err);
  sq_backend_ctx_t *ctx = b ? sq_backend_ctx_new(b, sq_engine_arena_bytes(p), &err) : NULL;
  if (!ctx) {
    fprintf(stderr, "backend: %s\n", err.msg);
    return 1;
  }
  int nin = sq_engine_plan_input_count(p), nout = sq_engine_plan_output_count(p);
  sq_engine_tensor_t *in = calloc((size_t)nin + 1, sizeof *in),
                     *out = calloc((size_t)nout + 1, sizeof *out);
  for (int i = 0; i < nin; i++) {
    sq_engine_plan_input_info(p, i, &in[i]);
    in[i].data = calloc(1, in[i].bytes + 1);
    if (in[i].dtype == SQ_DT_FLOAT)
      for (size_t k = 0; k < in[i].bytes / 4; k++)
        ((float *)in[i].data)[k] = (float)(k % 251) / 251.0f;
    if (i == 0 && in_path) {
      FILE *f = fopen(in_path, "rb");
      size_t got = f ? fread(in[i].data, 1, in[i].bytes, f) : 0;
      if (f) fclose(f);
      if (got != in[i].bytes) {
        fprintf(stderr, "%s: expected %zu bytes\n", in_path, in[i].bytes);
        return 1;
      }
    }
  }
  for (int i = 0; i < nout; i++) {
    sq_engine_plan_output_info(p, i, &out[i]);
    out[i].data = malloc(out[i].bytes + 1);
  }
  double best = 1e30, total = 0;
  for (int it = 0; it < iters; it++) {
    t0 = sq_clock_mono_us();
    if (sq_engine_run(p, ctx, in, nin, out, nout, &err)) {
      fprintf(stderr, "run: %s (%s)\n", err.msg, sq_error_name(err.code));
      return 1;
    }
    double ms = ms_since(t0);
    total += ms;
    if (ms < best) best = ms;
  }
  if (program) {
    void *state = NULL;
    if (sq_engine_bind(p, b, &state, &err) || !state) {
      fprintf(stderr, "program: %s\n", err.msg);
      return 1;
    }
    const sq_cpu_program_t *pr = state;
    sq_cpu_program_stats_t st;
    sq_cpu_program_dump(pr, stderr);
    sq_cpu_program_stats(pr, &st);
    fprintf(stderr,
            "program: %d steps, %d primitives (%d convolutions, %d deconvolutions, %d on im2col "
            "gemm/ref), %d reorders (%d inside the graph), %d reference steps (%d convolutions), "
            "%d depth-to-space, %d copies, %d fused eltwise post-ops, %d fused sums, %d blocked "
            "buffers, %d steps without a parallel region, arena %zu bytes\n",
            st.steps, st.prims, st.convs, st.deconvs, st.gemm_convs, st.reorders, st.inner_reorders,
            st.ref_steps, st.ref_convs, st.d2s, st.copies, st.fused_eltwise, st.fused_sum,
            st.blocked_bufs, st.single_thread, sq_cpu_program_arena_bytes(pr));
    for (int op = 0; op < SQ_OP_COUNT; op++)
      if (st.ref_by_op[op])
        fprintf(stderr, "program: reference %s x%d\n", sq_op_info(op)->name, st.ref_by_op[op]);
  }
  printf(
      "{\"model\": \"%s\", \"batch\": %d, \"threads\": %d, \"nodes\": %d, \"arena_bytes\": %zu, "
      "\"load_ms\": %.2f, \"plan_ms\": %.2f, \"run_best_ms\": %.2f, \"run_mean_ms\": %.2f, "
      "\"output\": \"%s\", \"shape\": [",
      model, batch, threads, sq_engine_plan_node_count(p), sq_engine_arena_bytes(p), load_ms,
      plan_ms, best, iters ? total / iters : 0, nout ? out[0].name : "");
  for (int d = 0; nout && d < out[0].rank; d++)
    printf("%s%lld", d ? ", " : "", (long long)out[0].dims[d]);
  printf("]}\n");
  if (out_path && nout) {
    FILE *f = fopen(out_path, "wb");
    if (!f || fwrite(out[0].data, 1, out[0].bytes, f) != out[0].bytes) {
      fprintf(stderr, "%s: write failed\n", out_path);
      return 1;
    }
    fclose(f);
  }
  for (int i = 0; i < nin; i++) free(in[i].data);
  for (int i = 0; i < nout; i++) free(out[i].data);
  free(in);
  free(out);
  sq_backend_ctx_free(ctx);
  sq_engine_plan_free(p);
  sq_backend_free(b);
  sq_engine_free(e);
  return 0;
}
