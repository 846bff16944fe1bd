/* attr.c: attribute lookup by name on a node, with defaults for absent attributes. */
#include <string.h>

#include "engine_internal.h"

const sq_attr_t *sq_attr_find(const sq_node_t *n, const char *name) {
  for (int i = 0; i < n->nattrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

int64_t sq_attr_int(const sq_node_t *n, const char *name, int64_t def) {
  const sq_attr_t *a = sq_attr_find(n, name);
  if (!a) return def;
  if (a->type == SQ_ATTR_INT) return a->i;
  if (a->type == SQ_ATTR_FLOAT) return (int64_t)a->f;
  return def;
}

float sq_attr_float(const sq_node_t *n, const char *name, float def) {
  const sq_attr_t *a = sq_attr_find(n, name);
  if (!a) return def;
  if (a->type == SQ_ATTR_FLOAT) return a->f;
  if (a->type == SQ_ATTR_INT) return (float)a->i;
  return def;
}

const char *sq_attr_string(const sq_node_t *n, const char *name, const char *def) {
  const sq_attr_t *a = sq_attr_find(n, name);
  return a && a->type == SQ_ATTR_STRING && a->s ? a->s : def;
}

size_t sq_attr_ints(const sq_node_t *n, const char *name, const int64_t **vals) {
  const sq_attr_t *a = sq_attr_find(n, name);
  *vals = NULL;
  if (!a || a->type != SQ_ATTR_INTS) return 0;
  *vals = a->ints;
  return a->n;
}

size_t sq_attr_floats(const sq_node_t *n, const char *name, const float **vals) {
  const sq_attr_t *a = sq_attr_find(n, name);
  *vals = NULL;
  if (!a || a->type != SQ_ATTR_FLOATS) return 0;
  *vals = a->floats;
  return a->n;
}

int sq_node_axes(const sq_node_t *node, const sq_view_t *in, int nin, int64_t axes[SQ_MAX_DIMS],
                 sq_error_t *err) {
  int naxes = 0;
  if (nin > 1 && sq_view_present(&in[1])) {
    if (!in[1].data)
      return sq_node_error(err, SQ_EUNSUPPORTED, node, "axes must be constant at plan time");
    int64_t n = sq_view_numel(&in[1]);
    if (n > SQ_MAX_DIMS) return sq_node_error(err, SQ_EMODEL_LOAD, node, "too many axes");
    for (int64_t i = 0; i < n; i++) axes[naxes++] = sq_view_get_int(&in[1], i);
  } else {
    const int64_t *a;
    size_t n = sq_attr_ints(node, "axes", &a);
    if (n > SQ_MAX_DIMS) return sq_node_error(err, SQ_EMODEL_LOAD, node, "too many axes");
    for (size_t i = 0; i < n; i++) axes[naxes++] = a[i];
  }
  return naxes;
}
