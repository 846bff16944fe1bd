/* engine.c: the public sq_engine_* entry points for loading: read the file, parse it, apply the
 * load-time rewrites (initializer-only folding, BatchNorm folding, activation fusion), answer
 * questions about I/O. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

sq_engine_t *sq_engine_load_buffer(const void *data, size_t len, const sq_engine_options_t *opt,
                                   sq_error_t *err) {
  sq_engine_t *e = calloc(1, sizeof *e);
  if (!e) {
    sq_error_set(err, SQ_ENOMEM, "out of memory");
    return NULL;
  }
  if (opt) e->opt = *opt;
  if (sq_onnx_load(data, len, &e->graph, err)) {
    free(e);
    return NULL;
  }
  if (sq_graph_fold_constants(&e->graph, err) ||
      (!e->opt.no_fold_bn && sq_graph_fold_batchnorm(&e->graph, err)) ||
      (!e->opt.no_fuse && sq_graph_fuse_activations(&e->graph, err))) {
    sq_engine_free(e);
    return NULL;
  }
  sq_graph_release_unused(&e->graph);
  return e;
}

sq_engine_t *sq_engine_load_file(const char *path, const sq_engine_options_t *opt,
                                 sq_error_t *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    sq_error_set(err, SQ_EIO, "%s: %s", path, strerror(errno));
    return NULL;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      uint8_t *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        sq_error_set(err, SQ_ENOMEM, "%s: out of memory", path);
        return NULL;
      }
      buf = nb;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  int ioerr = ferror(f);
  fclose(f);
  if (ioerr) {
    free(buf);
    sq_error_set(err, SQ_EIO, "%s: read error", path);
    return NULL;
  }
  sq_engine_t *e = sq_engine_load_buffer(buf, len, opt, err);
  free(buf);
  if (!e && err) { /* prefix the path so logs say which model */
    char msg[sizeof err->msg + 512];
    snprintf(msg, sizeof msg, "%s: %s", path, err->msg);
    size_t n = strlen(msg);
    if (n >= sizeof err->msg) n = sizeof err->msg - 1;
    memcpy(err->msg, msg, n);
    err->msg[n] = '\0';
  }
  return e;
}

void sq_engine_free(sq_engine_t *e) {
  if (!e) return;
  sq_graph_free(&e->graph);
  free(e);
}

static void tensor_info(const sq_tensor_t *t, sq_engine_tensor_t *info) {
  memset(info, 0, sizeof *info);
  info->name = t->name;
  info->dtype = t->dtype;
  info->rank = t->rank < 0 ? 0 : t->rank;
  for (int i = 0; i < info->rank; i++) info->dims[i] = t->dims[i];
  info->bytes = t->rank >= 0 && sq_tensor_numel(t) >= 0 ? sq_tensor_bytes(t) : 0;
  for (int i = 0; i < info->rank; i++)
    if (t->dims[i] < 0) info->bytes = 0;
}

int sq_engine_input_count(const sq_engine_t *e) {
  return e->graph.ninputs;
}
int sq_engine_output_count(const sq_engine_t *e) {
  return e->graph.noutputs;
}

int sq_engine_input_info(const sq_engine_t *e, int i, sq_engine_tensor_t *info) {
  if (i < 0 || i >= e->graph.ninputs) return SQ_EINVAL;
  tensor_info(&e->graph.tensors[e->graph.inputs[i]], info);
  return 0;
}

int sq_engine_output_info(const sq_engine_t *e, int i, sq_engine_tensor_t *info) {
  if (i < 0 || i >= e->graph.noutputs) return SQ_EINVAL;
  tensor_info(&e->graph.tensors[e->graph.outputs[i]], info);
  return 0;
}

int sq_engine_plan_input_count(const sq_engine_plan_t *p) {
  return p->ninputs;
}
int sq_engine_plan_output_count(const sq_engine_plan_t *p) {
  return p->graph.noutputs;
}

int sq_engine_plan_input_info(const sq_engine_plan_t *p, int i, sq_engine_tensor_t *info) {
  if (i < 0 || i >= p->ninputs) return SQ_EINVAL;
  tensor_info(&p->graph.tensors[p->inputs[i]], info);
  return 0;
}

int sq_engine_plan_output_info(const sq_engine_plan_t *p, int i, sq_engine_tensor_t *info) {
  if (i < 0 || i >= p->graph.noutputs) return SQ_EINVAL;
  tensor_info(&p->graph.tensors[p->graph.outputs[i]], info);
  return 0;
}

size_t sq_engine_arena_bytes(const sq_engine_plan_t *p) {
  return p->arena_bytes;
}
int sq_engine_plan_node_count(const sq_engine_plan_t *p) {
  return p->norder;
}

int sq_engine_stores_fp16(const sq_engine_t *e) {
  return e->graph.stored_fp16;
}

int sq_engine_input_is_static(const sq_engine_t *e, int i) {
  if (i < 0 || i >= e->graph.ninputs) return 0;
  int t = e->graph.inputs[i];
  for (int n = 0; n < e->graph.nnodes; n++) {
    const sq_node_t *nd = &e->graph.nodes[n];
    if (nd->dead) continue;
    unsigned mask = sq_op_info(nd->op)->static_inputs;
    for (int k = 0; k < nd->nin && k < 32; k++)
      if (nd->in[k] == t && (mask >> k & 1u)) return 1;
  }
  return 0;
}
