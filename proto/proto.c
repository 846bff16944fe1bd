/* proto: the job document (docs/protocol.md, "Job"): a strict decoder that names the field and
 * the rule every bad input breaks, the matching encoder, and the id-alphabet check.
 * Pure; any thread. Decoded strings and bytes are copied, so a job outlives its input buffer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_internal.h"

int sq_proto_valid_name(const char *s, size_t len, size_t max) {
  if (!s || len == 0 || len > max) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return 0;
  }
  return 1;
}

void sq_proto_job_free(sq_job_t *job) {
  if (!job) return;
  free(job->id);
  free(job->model);
  free(job->tenant);
  free(job->group);
  free(job->image_data);
  free(job->meta);
  for (size_t i = 0; i < job->nmembers && i < SQ_PROTO_MAX_MEMBERS; i++) free(job->member_names[i]);
  memset(job, 0, sizeof *job);
}

/* ---- field lookup ---- */

/* Finds the listed keys of a map with string keys. A nil value counts as absent (the doc says so,
 * and clients that write `None` for an unset option are common). A duplicate listed key or a
 * non-string key is malformed: a strict reader cannot guess which value was meant. */
static int get_fields(const msgpack_object *map, const char *where, const char *const *names,
                      const msgpack_object **out, size_t n, sq_error_t *err) {
  for (size_t i = 0; i < n; i++) out[i] = NULL;
  int seen[16] = {0};
  for (uint32_t k = 0; k < map->via.map.size; k++) {
    const msgpack_object_kv *kv = &map->via.map.ptr[k];
    if (kv->key.type != MSGPACK_OBJECT_STR)
      return sq_error_set(err, SQ_EMALFORMED, "%s: map key is %s, expected str", where,
                          sq_proto_type_name(&kv->key));
    for (size_t i = 0; i < n; i++) {
      if (!sq_proto_str_is(&kv->key, names[i])) continue;
      if (seen[i])
        return sq_error_set(err, SQ_EMALFORMED, "%s: duplicate key '%s'", where, names[i]);
      seen[i] = 1;
      if (kv->val.type != MSGPACK_OBJECT_NIL) out[i] = &kv->val;
      break;
    }
  }
  return 0;
}

static int type_error(const char *field, const char *expected, const msgpack_object *o,
                      sq_error_t *err) {
  return sq_error_set(err, SQ_ETYPE, "%s: expected %s, got %s", field, expected,
                      sq_proto_type_name(o));
}

static int get_uint(const msgpack_object *o, const char *field, uint64_t *out, sq_error_t *err) {
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return type_error(field, "uint", o, err);
  *out = o->via.u64;
  return 0;
}

/* A uint with an inclusive range; out of range is invalid_field_value. */
static int get_uint_range(const msgpack_object *o, const char *field, uint64_t lo, uint64_t hi,
                          uint64_t *out, sq_error_t *err) {
  int rc = get_uint(o, field, out, err);
  if (rc) return rc;
  if (*out < lo || *out > hi)
    return sq_error_set(err, SQ_EVALUE, "%s: %llu is out of range [%llu, %llu]", field,
                        (unsigned long long)*out, (unsigned long long)lo, (unsigned long long)hi);
  return 0;
}

/* A name in the id alphabet, 1..max bytes: too long is field_too_large, empty or a bad
 * character is invalid_field_value. */
static int get_name(const msgpack_object *o, const char *field, size_t max, char **out,
                    sq_error_t *err) {
  if (o->type != MSGPACK_OBJECT_STR) return type_error(field, "str", o, err);
  size_t n = o->via.str.size;
  if (n > max)
    return sq_error_set(err, SQ_EOVERSIZE, "%s: %zu bytes, at most %zu allowed", field, n, max);
  if (n == 0) return sq_error_set(err, SQ_EVALUE, "%s: empty", field);
  if (!sq_proto_valid_name(o->via.str.ptr, n, max)) {
    char shown[48];
    sq_proto_printable(o->via.str.ptr, n, shown, sizeof shown);
    return sq_error_set(err, SQ_EVALUE, "%s: \"%s\" has characters outside [A-Za-z0-9._:-]", field,
                        shown);
  }
  *out = sq_strndup(o->via.str.ptr, n);
  return *out ? 0 : sq_error_set(err, SQ_ENOMEM, "%s: out of memory", field);
}

/* ---- image ---- */

static int decode_image(const msgpack_object *img, sq_job_t *job, sq_error_t *err) {
  enum { F_FORMAT, F_DATA, F_WIDTH, F_HEIGHT, F_N };
  static const char *const names[F_N] = {"format", "data", "width", "height"};
  const msgpack_object *f[F_N];
  if (img->type != MSGPACK_OBJECT_MAP) return type_error("image", "map", img, err);
  int rc = get_fields(img, "image", names, f, F_N, err);
  if (rc) return rc;

  if (!f[F_FORMAT]) return sq_error_set(err, SQ_EMISSING, "image.format: missing");
  const msgpack_object *fmt = f[F_FORMAT];
  if (fmt->type != MSGPACK_OBJECT_STR) return type_error("image.format", "str", fmt, err);
  unsigned bpp = 0; /* bytes per pixel of a raw format; 0 = jpeg */
  int known = 0;
#define SQ_X_IMAGE_MATCH(id, value, name, channels, bytes) \
  if (!known && sq_proto_str_is(fmt, name))                \
    known = 1, job->image_format = id, bpp = (unsigned)(channels) * (bytes);
  SQ_IMAGE_FORMATS(SQ_X_IMAGE_MATCH)
#undef SQ_X_IMAGE_MATCH
  if (!known) {
    char shown[48];
    sq_proto_printable(fmt->via.str.ptr, fmt->via.str.size, shown, sizeof shown);
    return sq_error_set(err, SQ_EVALUE,
                        "image.format: unknown format \"%s\" (expected jpeg, gray8, gray16, rgb8 "
                        "or rgb16)",
                        shown);
  }

  if (!f[F_DATA]) return sq_error_set(err, SQ_EMISSING, "image.data: missing");
  const msgpack_object *data = f[F_DATA];
  if (data->type != MSGPACK_OBJECT_BIN) return type_error("image.data", "bin", data, err);
  if (data->via.bin.size > SQ_PROTO_MAX_IMAGE_BYTES)
    return sq_error_set(err, SQ_EOVERSIZE, "image.data: %u bytes, at most %u allowed",
                        (unsigned)data->via.bin.size, (unsigned)SQ_PROTO_MAX_IMAGE_BYTES);

  /* For jpeg the decoded size is authoritative; width/height, if sent, are ignored. */
  if (bpp) {
    uint64_t w = 0, h = 0;
    if (!f[F_WIDTH])
      return sq_error_set(err, SQ_EMISSING, "image.width: missing (required for raw formats)");
    rc = get_uint_range(f[F_WIDTH], "image.width", 0, UINT64_MAX, &w, err);
    if (rc) return rc;
    if (!f[F_HEIGHT])
      return sq_error_set(err, SQ_EMISSING, "image.height: missing (required for raw formats)");
    rc = get_uint_range(f[F_HEIGHT], "image.height", 0, UINT64_MAX, &h, err);
    if (rc) return rc;
    /* Size errors of raw images use the same codes as decoded JPEGs: the client learns the same
     * thing whichever format it sent. */
    if (w == 0 || h == 0)
      return sq_error_set(err, SQ_EIMAGE_EMPTY, "image: %llux%llu has no pixels",
                          (unsigned long long)w, (unsigned long long)h);
    if (w > SQ_PROTO_MAX_SIDE || h > SQ_PROTO_MAX_SIDE || w * h > SQ_PROTO_MAX_PIXELS)
      return sq_error_set(err, SQ_EIMAGE_TOO_LARGE,
                          "image: %llux%llu exceeds %u px per side or %u pixels",
                          (unsigned long long)w, (unsigned long long)h, SQ_PROTO_MAX_SIDE,
                          (unsigned)SQ_PROTO_MAX_PIXELS);
    if ((uint64_t)data->via.bin.size != w * h * bpp)
      return sq_error_set(err, SQ_EVALUE, "image.data: %u bytes, expected width*height*%u = %llu",
                          (unsigned)data->via.bin.size, bpp, (unsigned long long)(w * h * bpp));
    job->width = (uint32_t)w;
    job->height = (uint32_t)h;
  }

  job->image_size = data->via.bin.size;
  job->image_data = sq_xmalloc(job->image_size);
  if (!job->image_data) return sq_error_set(err, SQ_ENOMEM, "image.data: out of memory");
  if (job->image_size) memcpy(job->image_data, data->via.bin.ptr, job->image_size);
  return 0;
}

/* ---- params ---- */

#define SQ_PROTO_MAX_OUTPUTS 8

/* A float field (float32/64 or an integer). */
static int get_number(const msgpack_object *o, const char *field, double *out, sq_error_t *err) {
  if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
    *out = o->via.f64;
  else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    *out = (double)o->via.u64;
  else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    *out = (double)o->via.i64;
  else
    return type_error(field, "float", o, err);
  return 0;
}

/* params.input_range: {mode, low, high, bits}. Strict like an ensemble entry: an unknown key, or
 * a key of another mode ("bits" with percentile), is invalid_field_value, since it would
 * otherwise be silently ignored. */
static int decode_input_range(const msgpack_object *o, sq_job_t *job, sq_error_t *err) {
  enum { F_MODE, F_LOW, F_HIGH, F_BITS, F_N };
  static const char *const names[F_N] = {"mode", "low", "high", "bits"};
  static const char *const modes[] = {NULL, "fixed", "full", "percentile"};
  const msgpack_object *f[F_N];
  if (o->type != MSGPACK_OBJECT_MAP) return type_error("params.input_range", "map", o, err);
  int rc = get_fields(o, "params.input_range", names, f, F_N, err);
  if (rc) return rc;
  for (uint32_t k = 0; k < o->via.map.size; k++) {
    const msgpack_object *key = &o->via.map.ptr[k].key;
    int known = 0;
    for (int i = 0; i < F_N && !known; i++) known = sq_proto_str_is(key, names[i]);
    if (!known) {
      char shown[48];
      sq_proto_printable(key->via.str.ptr, key->via.str.size, shown, sizeof shown);
      return sq_error_set(err, SQ_EVALUE,
                          "params.input_range: unknown key \"%s\" (expected mode, low, high, bits)",
                          shown);
    }
  }
  if (!f[F_MODE]) return sq_error_set(err, SQ_EMISSING, "params.input_range.mode: missing");
  if (f[F_MODE]->type != MSGPACK_OBJECT_STR)
    return type_error("params.input_range.mode", "str", f[F_MODE], err);
  int mode = 0;
  for (int i = 1; i <= 3 && !mode; i++)
    if (sq_proto_str_is(f[F_MODE], modes[i])) mode = i;
  if (!mode) {
    char shown[48];
    sq_proto_printable(f[F_MODE]->via.str.ptr, f[F_MODE]->via.str.size, shown, sizeof shown);
    return sq_error_set(err, SQ_EVALUE,
                        "params.input_range.mode: unknown mode \"%s\" (expected fixed, full or "
                        "percentile)",
                        shown);
  }
  if ((f[F_LOW] || f[F_HIGH]) && mode != SQ_PROTO_RANGE_PERCENTILE)
    return sq_error_set(err, SQ_EVALUE, "params.input_range.%s: only for mode percentile",
                        f[F_LOW] ? "low" : "high");
  if (f[F_BITS] && mode != SQ_PROTO_RANGE_FULL)
    return sq_error_set(err, SQ_EVALUE, "params.input_range.bits: only for mode full");
  double low = 1.0, high = 99.8;
  if (f[F_LOW] && (rc = get_number(f[F_LOW], "params.input_range.low", &low, err))) return rc;
  if (f[F_HIGH] && (rc = get_number(f[F_HIGH], "params.input_range.high", &high, err))) return rc;
  if (!(low >= 0.0 && low < high && high <= 100.0)) /* also rejects NaN */
    return sq_error_set(
        err, SQ_EVALUE,
        "params.input_range: percentiles low %g, high %g: need 0 <= low < high <= 100", low, high);
  uint64_t bits = 16;
  if (f[F_BITS] && (rc = get_uint_range(f[F_BITS], "params.input_range.bits", 1, 16, &bits, err)))
    return rc;
  job->input_range_mode = (sq_proto_range_mode_t)mode;
  job->input_range_low = (float)low;
  job->input_range_high = (float)high;
  job->input_range_bits = (uint32_t)bits;
  return 0;
}

static int decode_params(const msgpack_object *params, sq_job_t *job, sq_error_t *err) {
  enum { F_THRESHOLD, F_MIN_AREA, F_OUTPUTS, F_INPUT_RANGE, F_N };
  static const char *const names[F_N] = {"threshold", "min_area", "outputs", "input_range"};
  const msgpack_object *f[F_N];
  if (params->type != MSGPACK_OBJECT_MAP) return type_error("params", "map", params, err);
  int rc = get_fields(params, "params", names, f, F_N, err);
  if (rc) return rc;

  if (f[F_THRESHOLD]) {
    const msgpack_object *o = f[F_THRESHOLD];
    double t;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
      t = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      t = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
      t = (double)o->via.i64;
    else
      return type_error("params.threshold", "float", o, err);
    if (!(t >= 0.0 && t <= 1.0)) /* also rejects NaN */
      return sq_error_set(err, SQ_EVALUE, "params.threshold: %g is outside [0, 1]", t);
    job->has_threshold = 1;
    job->threshold = (float)t;
  }

  if (f[F_MIN_AREA]) {
    uint64_t a = 0;
    rc = get_uint_range(f[F_MIN_AREA], "params.min_area", 0, UINT32_MAX, &a, err);
    if (rc) return rc;
    job->has_min_area = 1;
    job->min_area = (uint32_t)a;
  }

  job->outputs = SQ_OUTPUT_POLYGONS;
  if (f[F_OUTPUTS]) {
    const msgpack_object *o = f[F_OUTPUTS];
    if (o->type != MSGPACK_OBJECT_ARRAY)
      return type_error("params.outputs", "array of str", o, err);
    if (o->via.array.size > SQ_PROTO_MAX_OUTPUTS)
      return sq_error_set(err, SQ_EOVERSIZE, "params.outputs: %u entries, at most %d allowed",
                          (unsigned)o->via.array.size, SQ_PROTO_MAX_OUTPUTS);
    if (o->via.array.size == 0)
      return sq_error_set(err, SQ_EVALUE, "params.outputs: empty (omit it for the default)");
    unsigned bits = 0;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      const msgpack_object *e = &o->via.array.ptr[i];
      char field[32];
      snprintf(field, sizeof field, "params.outputs[%u]", (unsigned)i);
      if (e->type != MSGPACK_OBJECT_STR) return type_error(field, "str", e, err);
      if (sq_proto_str_is(e, "polygons")) {
        bits |= SQ_OUTPUT_POLYGONS;
      } else if (sq_proto_str_is(e, "mask")) {
        bits |= SQ_OUTPUT_MASK;
      } else {
        char shown[48];
        sq_proto_printable(e->via.str.ptr, e->via.str.size, shown, sizeof shown);
        return sq_error_set(err, SQ_EVALUE, "%s: unknown output \"%s\" (expected polygons or mask)",
                            field, shown);
      }
    }
    job->outputs = bits;
  }
  if (f[F_INPUT_RANGE] && (rc = decode_input_range(f[F_INPUT_RANGE], job, err))) return rc;
  return 0;
}

/* ---- models (ensembles) ---- */

static int decode_models(const msgpack_object *o, sq_job_t *job, sq_error_t *err) {
  if (o->type != MSGPACK_OBJECT_ARRAY) return type_error("models", "array of map", o, err);
  uint32_t n = o->via.array.size;
  if (n < 2 || n > SQ_PROTO_MAX_MEMBERS)
    return sq_error_set(err, SQ_EVALUE, "models: %u entries, expected 2 to %d", (unsigned)n,
                        SQ_PROTO_MAX_MEMBERS);
  double sum = 0.0;
  int own = 0;
  for (uint32_t i = 0; i < n; i++) {
    enum { F_NAME, F_WEIGHT, F_N };
    static const char *const names[F_N] = {"name", "weight"};
    const msgpack_object *f[F_N];
    const msgpack_object *e = &o->via.array.ptr[i];
    char field[40];
    snprintf(field, sizeof field, "models[%u]", (unsigned)i);
    if (e->type != MSGPACK_OBJECT_MAP) return type_error(field, "map", e, err);
    int rc = get_fields(e, field, names, f, F_N, err);
    if (rc) return rc;
    /* Unknown keys are refused here (unlike the document's): a misspelt "wieght" would
     * silently weigh 1. */
    for (uint32_t k = 0; k < e->via.map.size; k++) {
      const msgpack_object *key = &e->via.map.ptr[k].key;
      if (!sq_proto_str_is(key, "name") && !sq_proto_str_is(key, "weight")) {
        char shown[48];
        sq_proto_printable(key->via.str.ptr, key->via.str.size, shown, sizeof shown);
        return sq_error_set(err, SQ_EVALUE, "%s: unknown key \"%s\" (expected name, weight)", field,
                            shown);
      }
    }
    char nfield[48];
    snprintf(nfield, sizeof nfield, "%s.name", field);
    if (!f[F_NAME]) return sq_error_set(err, SQ_EMISSING, "%s: missing", nfield);
    char *name = NULL;
    if ((rc = get_name(f[F_NAME], nfield, SQ_PROTO_MAX_MODEL, &name, err))) return rc;
    for (size_t k = 0; k < job->nmembers; k++)
      if (strcmp(job->member_names[k], name) == 0) {
        rc = sq_error_set(err, SQ_EVALUE, "%s: \"%s\" is named twice", nfield, name);
        free(name);
        return rc;
      }
    job->member_names[job->nmembers] = name;
    job->member_weights[job->nmembers] = 1.0f;
    job->nmembers++;
    if (strcmp(name, job->model) == 0) own = 1;
    if (f[F_WEIGHT]) {
      const msgpack_object *w = f[F_WEIGHT];
      double v;
      snprintf(nfield, sizeof nfield, "%s.weight", field);
      if (w->type == MSGPACK_OBJECT_FLOAT32 || w->type == MSGPACK_OBJECT_FLOAT64)
        v = w->via.f64;
      else if (w->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = (double)w->via.u64;
      else if (w->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = (double)w->via.i64;
      else
        return type_error(nfield, "float", w, err);
      if (!(v >= 0.0 && v <= 3.4e38)) /* also rejects NaN and infinities */
        return sq_error_set(err, SQ_EVALUE, "%s: %g is not a finite number >= 0", nfield, v);
      job->member_weights[job->nmembers - 1] = (float)v;
    }
    sum += job->member_weights[job->nmembers - 1];
  }
  if (!own)
    return sq_error_set(err, SQ_EVALUE, "models: the job's model \"%s\" is not among them",
                        job->model);
  if (!(sum > 0.0)) return sq_error_set(err, SQ_EVALUE, "models: every weight is 0");
  return 0;
}

/* ---- the document ---- */

static int decode_root(const msgpack_object *root, sq_job_t *job, sq_error_t *err) {
  enum {
    F_V,
    F_ID,
    F_MODEL,
    F_IMAGE,
    F_PARAMS,
    F_PRIORITY,
    F_DEADLINE,
    F_GROUP,
    F_TENANT,
    F_META,
    F_MODELS,
    F_N
  };
  static const char *const names[F_N] = {"v",      "id",       "model",       "image",
                                         "params", "priority", "deadline_ms", "group",
                                         "tenant", "meta",     "models"};
  const msgpack_object *f[F_N];
  if (root->type != MSGPACK_OBJECT_MAP)
    return sq_error_set(err, SQ_EMALFORMED, "document: expected map, got %s",
                        sq_proto_type_name(root));
  int rc = get_fields(root, "document", names, f, F_N, err);
  if (rc) return rc;

  /* The id first, quietly: whatever fails next, the error result can be filed under it. */
  if (f[F_ID] && f[F_ID]->type == MSGPACK_OBJECT_STR &&
      sq_proto_valid_name(f[F_ID]->via.str.ptr, f[F_ID]->via.str.size, SQ_PROTO_MAX_ID)) {
    job->id = sq_strndup(f[F_ID]->via.str.ptr, f[F_ID]->via.str.size);
    if (!job->id) return sq_error_set(err, SQ_ENOMEM, "id: out of memory");
  }

  /* The version before anything else: a v2 document may mean other things by the same keys. */
  if (!f[F_V]) return sq_error_set(err, SQ_EMISSING, "v: missing");
  uint64_t v = 0;
  rc = get_uint(f[F_V], "v", &v, err);
  if (rc) return rc;
  if (v != SQ_PROTO_VERSION)
    return sq_error_set(err, SQ_EVERSION, "v: version %llu is not supported (expected %d)",
                        (unsigned long long)v, SQ_PROTO_VERSION);

  if (!f[F_ID]) return sq_error_set(err, SQ_EMISSING, "id: missing");
  if (!job->id && (rc = get_name(f[F_ID], "id", SQ_PROTO_MAX_ID, &job->id, err))) return rc;
  if (!f[F_MODEL]) return sq_error_set(err, SQ_EMISSING, "model: missing");
  if ((rc = get_name(f[F_MODEL], "model", SQ_PROTO_MAX_MODEL, &job->model, err))) return rc;
  if (f[F_MODELS] && (rc = decode_models(f[F_MODELS], job, err))) return rc;
  if (!f[F_IMAGE]) return sq_error_set(err, SQ_EMISSING, "image: missing");
  if ((rc = decode_image(f[F_IMAGE], job, err))) return rc;

  if (f[F_PARAMS]) {
    if ((rc = decode_params(f[F_PARAMS], job, err))) return rc;
  } else {
    job->outputs = SQ_OUTPUT_POLYGONS;
  }

  if (f[F_PRIORITY]) {
    const msgpack_object *o = f[F_PRIORITY];
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
      job->priority = o->via.i64;
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
      if (o->via.u64 > INT64_MAX)
        return sq_error_set(err, SQ_EVALUE, "priority: %llu does not fit in int64",
                            (unsigned long long)o->via.u64);
      job->priority = (int64_t)o->via.u64;
    } else {
      return type_error("priority", "int", o, err);
    }
  }

  if (f[F_DEADLINE] && (rc = get_uint(f[F_DEADLINE], "deadline_ms", &job->deadline_ms, err)))
    return rc;
  if (f[F_GROUP] && (rc = get_name(f[F_GROUP], "group", SQ_PROTO_MAX_ID, &job->group, err)))
    return rc;
  if (f[F_TENANT]) {
    if ((rc = get_name(f[F_TENANT], "tenant", SQ_PROTO_MAX_TENANT, &job->tenant, err))) return rc;
  } else {
    job->tenant = sq_strdup("default");
    if (!job->tenant) return sq_error_set(err, SQ_ENOMEM, "tenant: out of memory");
  }

  if (f[F_META]) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *f[F_META]) != 0) {
      msgpack_sbuffer_destroy(&sb);
      return sq_error_set(err, SQ_ENOMEM, "meta: out of memory");
    }
    if (sb.size > SQ_PROTO_MAX_META) {
      size_t n = sb.size;
      msgpack_sbuffer_destroy(&sb);
      return sq_error_set(err, SQ_EOVERSIZE, "meta: %zu bytes encoded, at most %u allowed", n,
                          (unsigned)SQ_PROTO_MAX_META);
    }
    job->meta_size = sb.size;
    job->meta = (uint8_t *)msgpack_sbuffer_release(&sb);
  }
  return 0;
}

int sq_proto_job_decode(const void *buf, size_t len, sq_job_t *job, sq_error_t *err) {
  memset(job, 0, sizeof *job);
  sq_error_clear(err);
  int rc = sq_proto_scan(buf, len, SQ_PROTO_MAX_DEPTH, SQ_PROTO_MAX_JOB_OBJECTS, err);
  if (rc) return rc;

  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  msgpack_unpack_return ur = msgpack_unpack_next(&u, buf, len, &off);
  if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
    rc = sq_error_set(err, SQ_ENOMEM, "document: out of memory while unpacking");
  } else if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
    /* The scan accepted it, so this is a disagreement with msgpack-c: still the sender's fault. */
    rc = sq_error_set(err, SQ_EMALFORMED, "not a valid msgpack document (unpack status %d)",
                      (int)ur);
  } else {
    rc = decode_root(&u.data, job, err);
  }
  msgpack_unpacked_destroy(&u);

  if (rc) {
    char *id = job->id;
    job->id = NULL;
    sq_proto_job_free(job);
    job->id = id;
  }
  return rc;
}

/* ---- encode ---- */

static int pack_kv_cstr(msgpack_packer *pk, const char *key, const char *val) {
  return sq_proto_pack_cstr(pk, key) || sq_proto_pack_cstr(pk, val);
}

const char *sq_proto_image_format_name(sq_image_format_t format) {
  switch (format) {
#define SQ_X_IMAGE_NAME(id, value, name, channels, bytes) \
  case id:                                                \
    return name;
    SQ_IMAGE_FORMATS(SQ_X_IMAGE_NAME)
#undef SQ_X_IMAGE_NAME
  }
  return NULL;
}

void sq_proto_image_format_layout(sq_image_format_t format, uint32_t *channels,
                                  uint32_t *bytes_per_sample) {
  *channels = *bytes_per_sample = 0;
  switch (format) {
#define SQ_X_IMAGE_LAYOUT(id, value, name, ch, bytes) \
  case id:                                            \
    *channels = ch;                                   \
    *bytes_per_sample = bytes;                        \
    break;
    SQ_IMAGE_FORMATS(SQ_X_IMAGE_LAYOUT)
#undef SQ_X_IMAGE_LAYOUT
  }
}

uint8_t *sq_proto_job_encode(const sq_job_t *job, size_t *out_len) {
  if (!job || !job->id || !job->model) return NULL;
  const char *format_name = sq_proto_image_format_name(job->image_format);
  if (!format_name) return NULL;
  int raw = job->image_format != SQ_IMAGE_JPEG;
  int want_outputs = job->outputs != 0 && job->outputs != SQ_OUTPUT_POLYGONS;
  int has_range = job->input_range_mode > SQ_PROTO_RANGE_NONE &&
                  job->input_range_mode <= SQ_PROTO_RANGE_PERCENTILE;
  int has_params = job->has_threshold || job->has_min_area || want_outputs || has_range;
  int has_meta = job->meta && job->meta_size > 0;

  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  size_t n = 4 + (has_params ? 1 : 0) + (job->priority ? 1 : 0) + (job->deadline_ms ? 1 : 0) +
             (job->group ? 1 : 0) + (job->tenant ? 1 : 0) + (has_meta ? 1 : 0) +
             (job->nmembers ? 1 : 0);
  int bad = msgpack_pack_map(&pk, n);
  bad |= sq_proto_pack_cstr(&pk, "v") || msgpack_pack_uint32(&pk, SQ_PROTO_VERSION);
  bad |= pack_kv_cstr(&pk, "id", job->id);
  bad |= pack_kv_cstr(&pk, "model", job->model);

  bad |= sq_proto_pack_cstr(&pk, "image") || msgpack_pack_map(&pk, raw ? 4 : 2);
  bad |= pack_kv_cstr(&pk, "format", format_name);
  bad |= sq_proto_pack_cstr(&pk, "data") || msgpack_pack_bin(&pk, job->image_size) ||
         msgpack_pack_bin_body(&pk, job->image_data, job->image_size);
  if (raw) {
    bad |= sq_proto_pack_cstr(&pk, "width") || msgpack_pack_uint32(&pk, job->width);
    bad |= sq_proto_pack_cstr(&pk, "height") || msgpack_pack_uint32(&pk, job->height);
  }

  if (has_params) {
    bad |= sq_proto_pack_cstr(&pk, "params") ||
           msgpack_pack_map(&pk, (size_t)job->has_threshold + (size_t)job->has_min_area +
                                     (size_t)want_outputs + (size_t)has_range);
    if (job->has_threshold)
      bad |= sq_proto_pack_cstr(&pk, "threshold") || msgpack_pack_float(&pk, job->threshold);
    if (job->has_min_area)
      bad |= sq_proto_pack_cstr(&pk, "min_area") || msgpack_pack_uint32(&pk, job->min_area);
    if (want_outputs) {
      int np = !!(job->outputs & SQ_OUTPUT_POLYGONS), nm = !!(job->outputs & SQ_OUTPUT_MASK);
      bad |= sq_proto_pack_cstr(&pk, "outputs") || msgpack_pack_array(&pk, (size_t)(np + nm));
      if (np) bad |= sq_proto_pack_cstr(&pk, "polygons");
      if (nm) bad |= sq_proto_pack_cstr(&pk, "mask");
    }
    if (has_range) {
      static const char *const modes[] = {NULL, "fixed", "full", "percentile"};
      int pct = job->input_range_mode == SQ_PROTO_RANGE_PERCENTILE;
      int full = job->input_range_mode == SQ_PROTO_RANGE_FULL;
      bad |= sq_proto_pack_cstr(&pk, "input_range") ||
             msgpack_pack_map(&pk, 1 + (pct ? 2 : 0) + (full ? 1 : 0)) ||
             pack_kv_cstr(&pk, "mode", modes[job->input_range_mode]);
      if (pct)
        bad |= sq_proto_pack_cstr(&pk, "low") || msgpack_pack_float(&pk, job->input_range_low) ||
               sq_proto_pack_cstr(&pk, "high") || msgpack_pack_float(&pk, job->input_range_high);
      if (full)
        bad |= sq_proto_pack_cstr(&pk, "bits") || msgpack_pack_uint32(&pk, job->input_range_bits);
    }
  }
  if (job->priority)
    bad |= sq_proto_pack_cstr(&pk, "priority") || msgpack_pack_int64(&pk, job->priority);
  if (job->deadline_ms)
    bad |= sq_proto_pack_cstr(&pk, "deadline_ms") || msgpack_pack_uint64(&pk, job->deadline_ms);
  if (job->group) bad |= pack_kv_cstr(&pk, "group", job->group);
  if (job->tenant) bad |= pack_kv_cstr(&pk, "tenant", job->tenant);
  if (job->nmembers) {
    size_t nm = job->nmembers < SQ_PROTO_MAX_MEMBERS ? job->nmembers : SQ_PROTO_MAX_MEMBERS;
    bad |= sq_proto_pack_cstr(&pk, "models") || msgpack_pack_array(&pk, nm);
    for (size_t i = 0; i < nm; i++) {
      if (!job->member_names[i]) {
        bad = 1;
        break;
      }
      bad |= msgpack_pack_map(&pk, 2) || pack_kv_cstr(&pk, "name", job->member_names[i]);
      bad |= sq_proto_pack_cstr(&pk, "weight") || msgpack_pack_float(&pk, job->member_weights[i]);
    }
  }
  /* meta is already msgpack: written as-is after its key. */
  if (has_meta)
    bad |= sq_proto_pack_cstr(&pk, "meta") ||
           msgpack_sbuffer_write(&sb, (const char *)job->meta, job->meta_size);

  if (bad) {
    msgpack_sbuffer_destroy(&sb);
    return NULL;
  }
  if (out_len) *out_len = sb.size;
  return (uint8_t *)msgpack_sbuffer_release(&sb);
}
