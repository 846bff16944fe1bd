/* builder.c: small ONNX models built in memory and serialized with protobuf-c, for unit tests
 * and tools that need a model without Python. Keeps plain records and only assembles the
 * protobuf-c structs inside sq_onnx_builder_serialize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_internal.h"

#define B_MAX 64

typedef struct {
  char name[64];
  int type; /* sq_attr_type_t */
  int64_t i;
  float f;
  char s[64];
  int64_t ints[16];
  int n;
} battr_t;

typedef struct {
  char op[32], name[64];
  char *in[16], *out[8];
  int nin, nout;
  battr_t attrs[12];
  int nattrs;
} bnode_t;

typedef struct {
  char name[64];
  int dtype, rank;
  int64_t dims[SQ_MAX_DIMS];
  void *data;    /* initializers */
  bool external; /* data_location = EXTERNAL, no data */
} bvalue_t;

struct sq_onnx_builder {
  int opset;
  bvalue_t inputs[B_MAX], outputs[B_MAX], inits[B_MAX];
  int ninputs, noutputs, ninits;
  bnode_t nodes[B_MAX];
  int nnodes;
};

sq_onnx_builder_t *sq_onnx_builder_new(int opset) {
  sq_onnx_builder_t *b = calloc(1, sizeof *b);
  if (b) b->opset = opset;
  return b;
}

static void set_value(bvalue_t *v, const char *name, int dtype, int rank, const int64_t *dims) {
  snprintf(v->name, sizeof v->name, "%s", name);
  v->dtype = dtype;
  v->rank = rank;
  for (int i = 0; i < rank && i < SQ_MAX_DIMS; i++) v->dims[i] = dims[i];
}

void sq_onnx_builder_input(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                           const int64_t *dims) {
  if (b->ninputs < B_MAX) set_value(&b->inputs[b->ninputs++], name, dtype, rank, dims);
}

void sq_onnx_builder_output(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                            const int64_t *dims) {
  if (b->noutputs < B_MAX) set_value(&b->outputs[b->noutputs++], name, dtype, rank, dims);
}

void sq_onnx_builder_initializer(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                                 const int64_t *dims, const void *data) {
  if (b->ninits >= B_MAX) return;
  bvalue_t *v = &b->inits[b->ninits++];
  set_value(v, name, dtype, rank, dims);
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  size_t bytes = (size_t)n * sq_dtype_size(dtype);
  v->data = malloc(bytes + 1);
  if (v->data && bytes) memcpy(v->data, data, bytes);
}

void sq_onnx_builder_external(sq_onnx_builder_t *b, const char *name, int dtype, int rank,
                              const int64_t *dims) {
  if (b->ninits >= B_MAX) return;
  bvalue_t *v = &b->inits[b->ninits++];
  set_value(v, name, dtype, rank, dims);
  v->external = true;
}

static int split(const char *list, char **items, int max) {
  int n = 0;
  if (!list) return 0;
  const char *p = list;
  while (n < max) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    items[n++] = sq_strndup(p, len);
    if (!c) break;
    p = c + 1;
  }
  return n;
}

void sq_onnx_builder_node(sq_onnx_builder_t *b, const char *op_type, const char *name,
                          const char *inputs, const char *outputs) {
  if (b->nnodes >= B_MAX) return;
  bnode_t *n = &b->nodes[b->nnodes++];
  snprintf(n->op, sizeof n->op, "%s", op_type);
  snprintf(n->name, sizeof n->name, "%s", name ? name : "");
  n->nin = split(inputs, n->in, 16);
  n->nout = split(outputs, n->out, 8);
}

static battr_t *new_attr(sq_onnx_builder_t *b, const char *name, int type) {
  if (!b->nnodes) return NULL;
  bnode_t *n = &b->nodes[b->nnodes - 1];
  if (n->nattrs >= 12) return NULL;
  battr_t *a = &n->attrs[n->nattrs++];
  snprintf(a->name, sizeof a->name, "%s", name);
  a->type = type;
  return a;
}

void sq_onnx_builder_attr_int(sq_onnx_builder_t *b, const char *name, int64_t v) {
  battr_t *a = new_attr(b, name, SQ_ATTR_INT);
  if (a) a->i = v;
}

void sq_onnx_builder_attr_float(sq_onnx_builder_t *b, const char *name, float v) {
  battr_t *a = new_attr(b, name, SQ_ATTR_FLOAT);
  if (a) a->f = v;
}

void sq_onnx_builder_attr_string(sq_onnx_builder_t *b, const char *name, const char *v) {
  battr_t *a = new_attr(b, name, SQ_ATTR_STRING);
  if (a) snprintf(a->s, sizeof a->s, "%s", v);
}

void sq_onnx_builder_attr_ints(sq_onnx_builder_t *b, const char *name, const int64_t *v, int n) {
  battr_t *a = new_attr(b, name, SQ_ATTR_INTS);
  if (!a) return;
  a->n = n > 16 ? 16 : n;
  memcpy(a->ints, v, (size_t)a->n * sizeof *v);
}

/* ---- serialization: everything below lives only for the duration of the call ---- */
typedef struct {
  Onnx__ValueInfoProto vi;
  Onnx__TypeProto tp;
  Onnx__TypeProto__Tensor tt;
  Onnx__TensorShapeProto shape;
  Onnx__TensorShapeProto__Dimension dims[SQ_MAX_DIMS];
  Onnx__TensorShapeProto__Dimension *dimp[SQ_MAX_DIMS];
} pvalue_t;

static void fill_value(pvalue_t *p, bvalue_t *v) {
  onnx__value_info_proto__init(&p->vi);
  onnx__type_proto__init(&p->tp);
  onnx__type_proto__tensor__init(&p->tt);
  onnx__tensor_shape_proto__init(&p->shape);
  for (int i = 0; i < v->rank; i++) {
    onnx__tensor_shape_proto__dimension__init(&p->dims[i]);
    if (v->dims[i] >= 0) {
      p->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      p->dims[i].dim_value = v->dims[i];
    } else {
      p->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      p->dims[i].dim_param = "N";
    }
    p->dimp[i] = &p->dims[i];
  }
  p->shape.n_dim = (size_t)v->rank;
  p->shape.dim = p->dimp;
  p->tt.has_elem_type = 1;
  p->tt.elem_type = v->dtype;
  p->tt.shape = &p->shape;
  p->tp.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  p->tp.tensor_type = &p->tt;
  p->vi.name = v->name;
  p->vi.type = &p->tp;
}

typedef struct {
  pvalue_t pin[B_MAX], pout[B_MAX];
  Onnx__ValueInfoProto *ins[B_MAX], *outs[B_MAX];
  Onnx__TensorProto inits[B_MAX], *initp[B_MAX];
  Onnx__NodeProto nodes[B_MAX], *nodep[B_MAX];
  Onnx__AttributeProto attrs[B_MAX][12], *attrp[B_MAX][12];
  Onnx__StringStringEntryProto ext[B_MAX], *extp[B_MAX];
} pmodel_t;

uint8_t *sq_onnx_builder_serialize(sq_onnx_builder_t *b, size_t *len) {
  pmodel_t *pm = calloc(1, sizeof *pm); /* large: kept off the stack */
  if (!pm) return NULL;
  pvalue_t *pin = pm->pin, *pout = pm->pout;
  Onnx__ValueInfoProto **ins = pm->ins, **outs = pm->outs;
  Onnx__TensorProto *inits = pm->inits, **initp = pm->initp;
  Onnx__NodeProto *nodes = pm->nodes, **nodep = pm->nodep;
  for (int i = 0; i < b->ninputs; i++) {
    fill_value(&pin[i], &b->inputs[i]);
    ins[i] = &pin[i].vi;
  }
  for (int i = 0; i < b->noutputs; i++) {
    fill_value(&pout[i], &b->outputs[i]);
    outs[i] = &pout[i].vi;
  }
  for (int i = 0; i < b->ninits; i++) {
    bvalue_t *v = &b->inits[i];
    onnx__tensor_proto__init(&inits[i]);
    inits[i].name = v->name;
    inits[i].n_dims = (size_t)v->rank;
    inits[i].dims = v->dims;
    inits[i].has_data_type = 1;
    inits[i].data_type = v->dtype;
    int64_t n = 1;
    for (int d = 0; d < v->rank; d++) n *= v->dims[d];
    if (v->external) {
      inits[i].has_data_location = 1;
      inits[i].data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
      onnx__string_string_entry_proto__init(&pm->ext[i]);
      pm->ext[i].key = "location";
      pm->ext[i].value = "weights.bin";
      pm->extp[i] = &pm->ext[i];
      inits[i].n_external_data = 1;
      inits[i].external_data = &pm->extp[i];
    } else {
      inits[i].has_raw_data = 1;
      inits[i].raw_data.len = (size_t)n * sq_dtype_size(v->dtype);
      inits[i].raw_data.data = v->data;
    }
    initp[i] = &inits[i];
  }
  for (int i = 0; i < b->nnodes; i++) {
    bnode_t *n = &b->nodes[i];
    onnx__node_proto__init(&nodes[i]);
    nodes[i].op_type = n->op;
    nodes[i].name = n->name;
    nodes[i].n_input = (size_t)n->nin;
    nodes[i].input = n->in;
    nodes[i].n_output = (size_t)n->nout;
    nodes[i].output = n->out;
    for (int k = 0; k < n->nattrs; k++) {
      battr_t *a = &n->attrs[k];
      Onnx__AttributeProto *ap = &pm->attrs[i][k];
      onnx__attribute_proto__init(ap);
      ap->name = a->name;
      ap->has_type = 1;
      ap->type = (Onnx__AttributeProto__AttributeType)a->type;
      switch (a->type) {
        case SQ_ATTR_INT:
          ap->has_i = 1;
          ap->i = a->i;
          break;
        case SQ_ATTR_FLOAT:
          ap->has_f = 1;
          ap->f = a->f;
          break;
        case SQ_ATTR_STRING:
          ap->has_s = 1;
          ap->s.data = (uint8_t *)a->s;
          ap->s.len = strlen(a->s);
          break;
        case SQ_ATTR_INTS:
          ap->n_ints = (size_t)a->n;
          ap->ints = a->ints;
          break;
      }
      pm->attrp[i][k] = ap;
    }
    nodes[i].n_attribute = (size_t)n->nattrs;
    nodes[i].attribute = pm->attrp[i];
    nodep[i] = &nodes[i];
  }
  Onnx__GraphProto g;
  onnx__graph_proto__init(&g);
  g.name = "builder";
  g.n_node = (size_t)b->nnodes;
  g.node = nodep;
  g.n_initializer = (size_t)b->ninits;
  g.initializer = initp;
  g.n_input = (size_t)b->ninputs;
  g.input = ins;
  g.n_output = (size_t)b->noutputs;
  g.output = outs;
  Onnx__OperatorSetIdProto opset, *opsetp = &opset;
  onnx__operator_set_id_proto__init(&opset);
  opset.domain = "";
  opset.has_version = 1;
  opset.version = b->opset;
  Onnx__ModelProto m;
  onnx__model_proto__init(&m);
  m.has_ir_version = 1;
  m.ir_version = 8;
  m.producer_name = "segq-builder";
  m.n_opset_import = 1;
  m.opset_import = &opsetp;
  m.graph = &g;
  *len = onnx__model_proto__get_packed_size(&m);
  uint8_t *buf = malloc(*len + 1);
  if (buf) onnx__model_proto__pack(&m, buf);
  free(pm);
  return buf;
}

void sq_onnx_builder_free(sq_onnx_builder_t *b) {
  if (!b) return;
  for (int i = 0; i < b->ninits; i++) free(b->inits[i].data);
  for (int i = 0; i < b->nnodes; i++) {
    for (int k = 0; k < b->nodes[i].nin; k++) free(b->nodes[i].in[k]);
    for (int k = 0; k < b->nodes[i].nout; k++) free(b->nodes[i].out[k]);
  }
  free(b);
}
