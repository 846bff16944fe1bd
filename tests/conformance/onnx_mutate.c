/* onnx_mutate: mutation fuzzing of the engine with the conformance models as seeds. Each model
 * is corrupted (random bytes overwritten, sometimes truncated) and pushed through load, plan
 * and run; the engine must answer every input with an error or a result, never a crash, a
 * sanitizer report or a hang (run it in the -DSEGQ_SANITIZE=ON build for full value).
 * Usage: onnx_mutate [seed] [mutations-per-model]. Deterministic for a seed. Exit 77 when
 * the cases are absent. */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu/onnx/engine.h"

#ifndef SEGQ_ONNX_TESTS_DEFAULT
#define SEGQ_ONNX_TESTS_DEFAULT "../shared/onnx-tests"
#endif

#define MAX_IO 16
#define MAX_BYTES (64u << 20) /* skip plans whose arena or outputs exceed this */

static uint64_t rng_state;
static uint32_t rnd(void) { /* xorshift64*: same sequence everywhere, unlike rand() */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

typedef struct {
  int loaded, planned, ran;
} counts_t;

static void try_model(const uint8_t *buf, size_t len, sq_backend_t *be, counts_t *c) {
  sq_error_t err = {0};
  sq_engine_t *e = sq_engine_load_buffer(buf, len, NULL, &err);
  if (!e) return;
  c->loaded++;
  int ni = sq_engine_input_count(e);
  sq_engine_tensor_t in[MAX_IO];
  memset(in, 0, sizeof in);
  bool ok = ni <= MAX_IO;
  for (int i = 0; ok && i < ni; i++) { /* symbolic or huge dims become 2 */
    sq_engine_input_info(e, i, &in[i]);
    for (int d = 0; d < in[i].rank; d++)
      if (in[i].dims[d] < 0 || in[i].dims[d] > 64) in[i].dims[d] = 2;
    ok = in[i].dtype != 0;
  }
  sq_engine_plan_t *p = ok ? sq_engine_plan_new_shapes(e, in, ni, &err) : NULL;
  int pi = p ? sq_engine_plan_input_count(p) : 0, po = p ? sq_engine_plan_output_count(p) : 0;
  if (p && sq_engine_arena_bytes(p) < MAX_BYTES && pi <= MAX_IO && po <= MAX_IO) {
    c->planned++;
    sq_engine_tensor_t ri[MAX_IO], ro[MAX_IO];
    size_t total = 0;
    for (int i = 0; i < pi; i++) {
      sq_engine_plan_input_info(p, i, &ri[i]);
      total += ri[i].bytes;
    }
    for (int i = 0; i < po; i++) {
      sq_engine_plan_output_info(p, i, &ro[i]);
      total += ro[i].bytes;
    }
    if (total < MAX_BYTES) {
      for (int i = 0; i < pi; i++) ri[i].data = calloc(1, ri[i].bytes + 1);
      for (int i = 0; i < po; i++) ro[i].data = malloc(ro[i].bytes + 1);
      sq_backend_ctx_t *ctx = sq_backend_ctx_new(be, sq_engine_arena_bytes(p), &err);
      if (ctx && sq_engine_run(p, ctx, ri, pi, ro, po, &err) == 0) c->ran++;
      sq_backend_ctx_free(ctx);
      for (int i = 0; i < pi; i++) free(ri[i].data);
      for (int i = 0; i < po; i++) free(ro[i].data);
    }
  }
  sq_engine_plan_free(p);
  sq_engine_free(e);
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

int main(int argc, char **argv) {
  unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 10) : 1;
  int per_model = argc > 2 ? atoi(argv[2]) : 8;
  rng_state = 0x9E3779B97F4A7C15ULL ^ (seed * 0xBF58476D1CE4E5B9ULL);
  const char *root = getenv("SEGQ_ONNX_TESTS");
  if (!root || !*root) root = SEGQ_ONNX_TESTS_DEFAULT;
  struct stat st;
  if (stat(root, &st) || !S_ISDIR(st.st_mode)) {
    printf("onnx conformance cases not found at %s (set SEGQ_ONNX_TESTS): skipped\n", root);
    return 77;
  }
  sq_log_set_level(SQ_LOG_ERROR);
  sq_error_t err = {0};
  sq_backend_t *be = sq_backend_cpu_new(1, &err);
  if (!be) return 1;
  static const char *suites[] = {"node", "pytorch-converted", "pytorch-operator"};
  counts_t c = {0};
  int total = 0;
  for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/%s", root, suites[s]);
    DIR *d = opendir(dir);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
      if (ent->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s/model.onnx", dir, ent->d_name);
      size_t len;
      uint8_t *orig = read_all(path, &len);
      if (!orig) continue;
      uint8_t *m = malloc(len);
      for (int it = 0; m && it < per_model; it++) {
        memcpy(m, orig, len);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) m[rnd() % len] = (uint8_t)rnd();
        size_t cut = rnd() % 4 == 0 ? rnd() % len : len;
        try_model(m, cut, be, &c);
        total++;
      }
      free(m);
      free(orig);
    }
    if (d) closedir(d);
  }
  sq_backend_free(be);
  printf("seed %lu: %d mutants, %d loaded, %d planned, %d ran; no crash\n", seed, total, c.loaded,
         c.planned, c.ran);
  return 0;
}
