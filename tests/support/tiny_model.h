/* tiny_model.h: a model repository entry for tests: a pixelwise ONNX graph built in memory
 * (x [N,1,8,8] -> Concat(x, op(x)) [N,2,8,8]; op Neg gives logits whose channel 1 is foreground
 * where v <= 127) and its model.json. Header-only (static); uses check.h. */
#ifndef SQ_TEST_TINY_MODEL_H
#define SQ_TEST_TINY_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "gpu/onnx/engine_internal.h"

static inline void tiny_write_file(const char *dir, const char *name, const void *data,
                                   size_t len) {
  char path[2048];
  snprintf(path, sizeof path, "%.1000s/%.1000s", dir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, len, f) == len);
  fclose(f);
}

/* x [N,1,8,8] -> y = Concat(x, op(x)) [N,2,8,8] (op may be one the engine lacks). */
static inline void tiny_write_onnx(const char *dir, const char *op) {
  int64_t xd[4] = {-1, 1, 8, 8}, yd[4] = {-1, 2, 8, 8};
  sq_onnx_builder_t *b = sq_onnx_builder_new(13);
  sq_onnx_builder_input(b, "x", SQ_DT_FLOAT, 4, xd);
  sq_onnx_builder_node(b, op, "neg1", "x", "n");
  sq_onnx_builder_node(b, "Concat", "cat1", "x,n", "y");
  sq_onnx_builder_attr_int(b, "axis", 1);
  sq_onnx_builder_output(b, "y", SQ_DT_FLOAT, 4, yd);
  size_t len = 0;
  uint8_t *buf = sq_onnx_builder_serialize(b, &len);
  sq_onnx_builder_free(b);
  tiny_write_file(dir, "model.onnx", buf, len);
  free(buf);
}

/* A model folder <repo>/<name> with model.json = json (NULL: none) and the tiny graph (op NULL:
 * no model.onnx). */
static inline void tiny_make_model(const char *repo, const char *name, const char *json,
                                   const char *op) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", repo, name);
  mkdir(dir, 0755);
  if (json) tiny_write_file(dir, "model.json", json, strlen(json));
  if (op) tiny_write_onnx(dir, op);
}

/* model.json of the tiny model: input fields, then extra top-level fields (", \"k\": v"). */
#define TINY_JSON(input, extra)                                                     \
  "{\"input\": {" input                                                             \
  "},\n"                                                                            \
  " \"normalization\": {\"mean\": 0.5, \"std\": 1},\n"                              \
  " \"large_images\": {\"overlap\": 3},\n"                                          \
  " \"output\": {\"name\": \"y\", \"kind\": \"logits_sigmoid\", \"channel\": 1},\n" \
  " \"max_batch\": 3, \"threshold\": 0.5, \"min_area\": 2" extra "}\n"

#define TINY_INPUT "\"name\": \"x\", \"channels\": 1, \"size\": [8, 8]"

#endif
