/* ops.c: the op table built from ops.def (name, reference kernel, shape function, properties)
 * and the lookups the loader (supported check), the planner, the fusion pass and the backends
 * share. */
#include <string.h>

#include "engine_internal.h"

/* the cuda column's families (gpu/cuda/cuda_ops.c has their functions): 1 = implemented */
enum {
  CUDA_NONE = 0,
  CUDA_CONV = 1,
  CUDA_POOL = 1,
  CUDA_REDUCE = 1,
  CUDA_ELTWISE = 1,
  CUDA_CLIP = 1,
  CUDA_BN = 1,
  CUDA_RESIZE = 1,
  CUDA_CONCAT = 1,
  CUDA_GEMM = 1,
  CUDA_CAST = 1,
  CUDA_VIEW = 1
};

static const sq_op_info_t op_table[SQ_OP_COUNT] = {
#define SQ_OP(name, kernel, shape, static_inputs, props, act, cpu, cuda) \
  {#name, kernel, shape, static_inputs, props, SQ_ACT_##act, CUDA_##cuda},
#define SQ_OP_TODO(name, owner) {#name, NULL, NULL, 0, 0, SQ_ACT_NONE, false},
#include "ops.def"
#undef SQ_OP
#undef SQ_OP_TODO
};

const sq_op_info_t *sq_op_info(int op) {
  if (op < 0 || op >= SQ_OP_COUNT) return NULL;
  return &op_table[op];
}

int sq_op_lookup(const char *op_type) {
  for (int i = 0; i < SQ_OP_COUNT; i++)
    if (strcmp(op_table[i].name, op_type) == 0) return i;
  return -1;
}

size_t sq_dtype_size(int dtype) {
  switch (dtype) {
    case SQ_DT_FLOAT:
      return 4;
    case SQ_DT_UINT8:
      return 1;
    case SQ_DT_INT8:
      return 1;
    case SQ_DT_INT32:
      return 4;
    case SQ_DT_INT64:
      return 8;
    case SQ_DT_BOOL:
      return 1;
    case SQ_DT_FLOAT16:
      return 2;
    case SQ_DT_DOUBLE:
      return 8;
    default:
      return 0;
  }
}

const char *sq_dtype_name(int dtype) {
  static const char *names[] = {"undefined",  "float",   "uint8",  "int8",   "uint16",
                                "int16",      "int32",   "int64",  "string", "bool",
                                "float16",    "double",  "uint32", "uint64", "complex64",
                                "complex128", "bfloat16"};
  if (dtype < 0 || dtype >= (int)(sizeof names / sizeof names[0])) return "unknown";
  return names[dtype];
}
