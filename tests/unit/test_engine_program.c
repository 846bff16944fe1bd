/* The cpu backend's compiled programs keep their shape: the layout decisions and fusions that
 * make the engine fast are asserted here (sq_cpu_program_stats, counted from the steps and each
 * primitive's own descriptor), so a change that brings back a reorder between layers, loses a
 * fused activation or residual sum, or sends a convolution back to the reference im2col kernel
 * fails a test rather than only a benchmark. Models: the committed cellseg-unet (b1 and b8) and
 * tests/data/onnx's residual models; the counts are of the graph (ISA-independent), except the
 * oneDNN implementation check, which needs AVX2; and which steps run without a parallel region
 * (check_teams). Main thread only. */
#include <stdlib.h>

#include "check.h"
#include "gpu/onnx/cpu_program.h"

typedef struct {
  const char *path; /* relative to SEGQ_SOURCE_DIR */
  int batch;
  int convs;          /* convolution primitives (ConvTranspose taps included) */
  int d2s;            /* ConvTranspose 2x2/2 depth-to-space copies */
  int fused_eltwise;  /* activations folded into primitives */
  int fused_sum;      /* residual Adds folded into their conv */
  int ref_steps;      /* nodes left on reference kernels (ops oneDNN has no primitive for) */
  int inner_reorders; /* layout changes inside the graph (around those reference steps) */
  int min_blocked;    /* activation buffers in oneDNN's blocked/channels-last layouts */
} expect_t;

static const expect_t models[] = {
    /* 11 convs (10 + ReLU, the head + Sigmoid) and 2 ConvTransposes as 1x1 convs + copies */
    {"models/cellseg-unet/model.onnx", 1, 13, 2, 11, 0, 0, 0, 12},
    {"models/cellseg-unet/model.onnx", 8, 13, 2, 11, 0, 0, 0, 12},
    /* HRNet block: branch fusion by a residual sum */
    {"tests/data/onnx/hrnet_block.onnx", 1, 17, 0, 13, 1, 0, 0, 16},
    /* ResUNet + CBAM: 2 residual sums; the attention's ReduceMean/ReduceMax and the channel
     * MLP's Gemms stay on reference kernels (4 Gemm, 3 ReduceMax, 2 ReduceMean), with a
     * reorder to plain before each of the 3 reduce pairs and back before the 2 spatial
     * attention convs */
    {"tests/data/onnx/resunet_cbam.onnx", 2, 14, 0, 12, 2, 9, 5, 10},
};

static int check_model(const char *root, const expect_t *x) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, x->path);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, (uint32_t)x->batch, &err) : NULL;
  sq_backend_t *b = p ? sq_backend_cpu_new(1, &err) : NULL;
  void *state = NULL;
  int rc = b ? sq_engine_bind(p, b, &state, &err) : -1;
  CHECK_EQ_INT(rc, 0);
  if (rc || !state) {
    fprintf(stderr, "%s b%d: %s\n", x->path, x->batch, err.msg);
    sq_backend_free(b);
    sq_engine_plan_free(p);
    sq_engine_free(e);
    return 1;
  }
  const sq_cpu_program_t *pr = state;
  sq_cpu_program_stats_t st;
  sq_cpu_program_stats(pr, &st);
  int before = check_failed;
  printf("%s b%d: %d steps, %d convs, %d reorders (%d inner), %d ref, %d eltwise + %d sum fused\n",
         x->path, x->batch, st.steps, st.convs, st.reorders, st.inner_reorders, st.ref_steps,
         st.fused_eltwise, st.fused_sum);
  /* no layout change between layers except around reference kernels; the rest at the edges */
  CHECK_EQ_INT(st.inner_reorders, x->inner_reorders);
  CHECK(st.reorders - st.inner_reorders <=
        sq_engine_plan_input_count(p) + sq_engine_plan_output_count(p));
  /* every convolution on a oneDNN primitive, none on the reference im2col kernel */
  CHECK_EQ_INT(st.ref_convs, 0);
  CHECK_EQ_INT(st.convs, x->convs);
  CHECK_EQ_INT(st.deconvs, 0);
  CHECK_EQ_INT(st.d2s, x->d2s);
  CHECK_EQ_INT(st.fused_eltwise, x->fused_eltwise);
  CHECK_EQ_INT(st.fused_sum, x->fused_sum);
  CHECK_EQ_INT(st.ref_steps, x->ref_steps);
  /* activations stay in oneDNN's blocked/channels-last layouts between layers */
  CHECK(st.blocked_bufs >= x->min_blocked);
#if defined(__x86_64__) || defined(__i386__)
  /* with AVX2 or better oneDNN has a direct (jit/brgemm) kernel for every one of these
   * shapes; its im2col + gemm fallback would be a sign of a layout forced on it */
  if (__builtin_cpu_supports("avx2")) CHECK_EQ_INT(st.gemm_convs, 0);
#endif
  if (check_failed != before) sq_cpu_program_dump(pr, stderr);
  sq_backend_free(b); /* the program holds its own reference on the backend */
  sq_engine_plan_free(p);
  sq_engine_free(e);
  return 0;
}

/* Team sizes (cpu_program.c, node_team): with a 2-thread backend a step whose work is below a
 * parallel region's wake-up cost runs on the calling thread alone (threads 1), the rest on the
 * team. cellseg b8's steps are all large (8 tiles of 256x256): every one runs on the team.
 * resunet_cbam's attention works on pooled 1x1 and 2-channel maps: its reference steps (the
 * channel MLP's Gemms, ReduceMax/ReduceMean) are tiny and run single-threaded, while its
 * full-resolution encoder convs keep the team. */
static int check_teams(const char *root, const char *rel, int batch, bool all_team) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_file(path, NULL, &err);
  sq_engine_plan_t *p = e ? sq_engine_plan_new(e, (uint32_t)batch, &err) : NULL;
  sq_backend_t *b = p ? sq_backend_cpu_new(2, &err) : NULL;
  void *state = NULL;
  int rc = b ? sq_engine_bind(p, b, &state, &err) : -1;
  CHECK_EQ_INT(rc, 0);
  if (rc || !state) {
    fprintf(stderr, "%s b%d: %s\n", rel, batch, err.msg);
    sq_backend_free(b);
    sq_engine_plan_free(p);
    sq_engine_free(e);
    return 1;
  }
  const sq_cpu_program_t *pr = state;
  int before = check_failed, single = 0, team_convs = 0, single_refs = 0, refs = 0;
  for (int i = 0; i < pr->nsteps; i++) {
    const sq_step_t *s = &pr->steps[i];
    CHECK(s->threads == 1 || s->threads == 2);
    if (s->kind == SQ_STEP_COPY) {
      CHECK_EQ_INT(s->threads, 1); /* a memcpy: never a region */
      continue;
    }
    single += s->threads == 1;
    if (s->kind == SQ_STEP_REF) {
      refs++;
      single_refs += s->threads == 1;
    }
    if (s->kind == SQ_STEP_PRIM && !s->is_reorder && s->node >= 0 &&
        pr->plan->graph.nodes[s->node].op == SQ_OP_Conv && s->threads == 2)
      team_convs++;
  }
  sq_cpu_program_stats_t st;
  sq_cpu_program_stats(pr, &st);
  printf("%s b%d at 2 threads: %d of %d steps single-threaded, %d convs on the team\n", rel, batch,
         st.single_thread, st.steps, team_convs);
  if (all_team) {
    CHECK_EQ_INT(single, 0);
  } else {
    CHECK(refs > 0);
    CHECK_EQ_INT(single_refs, refs);
    CHECK(team_convs > 0);
    CHECK(single > refs);
  }
  if (check_failed != before) sq_cpu_program_dump(pr, stderr);
  sq_backend_free(b);
  sq_engine_plan_free(p);
  sq_engine_free(e);
  return 0;
}

int main(void) {
  const char *root = getenv("SEGQ_SOURCE_DIR");
  if (!root || !*root) {
    printf("SEGQ_SOURCE_DIR not set: nothing to check\n");
    return 77;
  }
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) check_model(root, &models[i]);
  check_teams(root, "models/cellseg-unet/model.onnx", 8, true);
  check_teams(root, "tests/data/onnx/resunet_cbam.onnx", 2, false);
  CHECK_DONE();
}
