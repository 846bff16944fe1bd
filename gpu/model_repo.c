/* gpu: model.json of the model repository (docs/models.md) -> sq_repo_config_t. Every field is
 * checked for type and range here, at start-up, so a bad file fails with its path and field
 * instead of producing wrong masks later. JSON by jansson. Any thread; no state. */
#include "gpu/model_repo.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Parsing context: the file for messages and the first error. */
typedef struct {
  const char *file;
  sq_error_t *err;
  int failed;
} pctx_t;

static int fail(pctx_t *p, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(pctx_t *p, const char *path, const char *fmt, ...) {
  if (p->failed) return SQ_EMODEL_LOAD;
  p->failed = 1;
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return sq_error_set(p->err, SQ_EMODEL_LOAD, "%s: %s: %s", p->file, path, what);
}

/* The field `key` of object `obj` (path `path` for messages), or NULL when absent/null. */
static json_t *field(json_t *obj, const char *key) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  return v && !json_is_null(v) ? v : NULL;
}

static void get_str(pctx_t *p, json_t *obj, const char *key, const char *path, char *out,
                    size_t cap) {
  json_t *v = field(obj, key);
  if (!v) return;
  if (!json_is_string(v)) {
    fail(p, path, "expected a string");
    return;
  }
  if (json_string_length(v) == 0 || json_string_length(v) >= cap) {
    fail(p, path, "expected a non-empty string of at most %zu bytes", cap - 1);
    return;
  }
  snprintf(out, cap, "%s", json_string_value(v));
}

/* One of the allowed strings; returns its index, or `dflt` when the field is absent. */
static int get_enum(pctx_t *p, json_t *obj, const char *key, const char *path,
                    const char *const *allowed, int dflt) {
  json_t *v = field(obj, key);
  if (!v) return dflt;
  if (json_is_string(v))
    for (int i = 0; allowed[i]; i++)
      if (!strcmp(json_string_value(v), allowed[i])) return i;
  char list[128] = "";
  for (int i = 0; allowed[i]; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s\"%s\"", i ? ", " : "", allowed[i]);
  }
  fail(p, path, "expected one of %s", list);
  return dflt;
}

static void get_uint(pctx_t *p, json_t *obj, const char *key, const char *path, uint64_t lo,
                     uint64_t hi, uint64_t *out) {
  json_t *v = field(obj, key);
  if (!v) return;
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < lo ||
      (uint64_t)json_integer_value(v) > hi) {
    fail(p, path, "expected an integer in [%llu, %llu]", (unsigned long long)lo,
         (unsigned long long)hi);
    return;
  }
  *out = (uint64_t)json_integer_value(v);
}

static void get_u32(pctx_t *p, json_t *obj, const char *key, const char *path, uint32_t lo,
                    uint32_t hi, uint32_t *out) {
  uint64_t v = *out;
  get_uint(p, obj, key, path, lo, hi, &v);
  *out = (uint32_t)v;
}

static int is_num(json_t *v) {
  return json_is_number(v) && isfinite(json_number_value(v));
}

static void get_float(pctx_t *p, json_t *obj, const char *key, const char *path, float *out) {
  json_t *v = field(obj, key);
  if (!v) return;
  if (!is_num(v)) {
    fail(p, path, "expected a finite number");
    return;
  }
  *out = (float)json_number_value(v);
}

/* A number (same for every channel) or an array of `n` numbers. */
static void get_per_channel(pctx_t *p, json_t *obj, const char *key, const char *path, uint32_t n,
                            float *out) {
  json_t *v = field(obj, key);
  if (!v) return;
  if (is_num(v)) {
    for (uint32_t c = 0; c < n; c++) out[c] = (float)json_number_value(v);
    return;
  }
  if (!json_is_array(v) || json_array_size(v) != n) {
    fail(p, path, "expected a number or an array of %u numbers (input.channels)", n);
    return;
  }
  for (uint32_t c = 0; c < n; c++) {
    if (!is_num(json_array_get(v, c))) {
      fail(p, path, "element %u: expected a finite number", c);
      return;
    }
    out[c] = (float)json_number_value(json_array_get(v, c));
  }
}

/* An object whose keys must all be in `known` (a typo in a nested field is an error). */
static json_t *get_object(pctx_t *p, json_t *root, const char *key, const char *const *known) {
  json_t *v = field(root, key);
  if (!v) return NULL;
  if (!json_is_object(v)) {
    fail(p, key, "expected an object");
    return NULL;
  }
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++) ok = !strcmp(k, known[i]);
    if (!ok) {
      char path[96];
      snprintf(path, sizeof path, "%s.%.40s", key, k);
      fail(p, path, "unknown field");
      return NULL;
    }
  }
  return v;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *const input_keys[] = {"name", "channels", "size", "layout", "dtype", NULL};
static const char *const norm_keys[] = {"scale", "scale_16bit", "mean", "std", NULL};
static const char *const large_keys[] = {"mode", "tile", "overlap", "pad", NULL};
static const char *const output_keys[] = {"name", "kind", "channel", NULL};
static const char *const top_keys[] = {
    "name",          "description",   "file",      "input",
    "normalization", "large_images",  "output",    "threshold",
    "min_area",      "optimal_batch", "max_batch", "max_delay_us",
    "precision",     "contexts",      "training",  NULL};

static void parse(pctx_t *p, json_t *root, sq_repo_config_t *cfg, const char *name) {
  if (!json_is_object(root)) {
    fail(p, "(top level)", "expected a JSON object");
    return;
  }
  const char *k;
  json_t *x;
  json_object_foreach(root, k, x) {
    int ok = 0;
    for (int i = 0; top_keys[i] && !ok; i++) ok = !strcmp(k, top_keys[i]);
    if (!ok)
      sq_log_debug("gpu", "model.json: unknown top-level field ignored", "model=%s field=%s", name,
                   k);
  }
  if (field(root, "name") && !json_is_string(field(root, "name")))
    fail(p, "name", "expected a string");
  if (field(root, "description") && !json_is_string(field(root, "description")))
    fail(p, "description", "expected a string");
  char file[256] = "model.onnx";
  get_str(p, root, "file", "file", file, sizeof file);
  if (strstr(file, "..") || file[0] == '/')
    fail(p, "file", "must be a path inside the model folder");

  /* input */
  json_t *in = get_object(p, root, "input", input_keys);
  if (!p->failed && !in) fail(p, "input", "required field missing");
  if (p->failed) return;
  get_str(p, in, "name", "input.name", cfg->input_name, sizeof cfg->input_name);
  if (!field(in, "channels")) fail(p, "input.channels", "required field missing");
  get_u32(p, in, "channels", "input.channels", 1, 3, &cfg->channels);
  if (!p->failed && cfg->channels == 2) fail(p, "input.channels", "expected 1 or 3");
  json_t *size = field(in, "size");
  if (!size) {
    fail(p, "input.size", "required field missing");
  } else if (!json_is_array(size) || json_array_size(size) != 2 ||
             !json_is_integer(json_array_get(size, 0)) ||
             !json_is_integer(json_array_get(size, 1)) ||
             json_integer_value(json_array_get(size, 0)) < 1 ||
             json_integer_value(json_array_get(size, 1)) < 1 ||
             json_integer_value(json_array_get(size, 0)) > 16384 ||
             json_integer_value(json_array_get(size, 1)) > 16384) {
    fail(p, "input.size", "expected [H, W], integers in [1, 16384]");
  } else {
    cfg->size_h = (uint32_t)json_integer_value(json_array_get(size, 0));
    cfg->size_w = (uint32_t)json_integer_value(json_array_get(size, 1));
  }
  static const char *const layouts[] = {"NCHW", NULL}, *const dtypes[] = {"float32", NULL};
  get_enum(p, in, "layout", "input.layout", layouts, 0);
  get_enum(p, in, "dtype", "input.dtype", dtypes, 0);
  if (p->failed) return;

  /* normalization */
  json_t *norm = get_object(p, root, "normalization", norm_keys);
  if (p->failed) return;
  cfg->scale = 1.0f / 255.0f;
  get_float(p, norm, "scale", "normalization.scale", &cfg->scale);
  cfg->scale_16bit = cfg->scale / 257.0f;
  get_float(p, norm, "scale_16bit", "normalization.scale_16bit", &cfg->scale_16bit);
  for (int c = 0; c < 3; c++) {
    cfg->mean[c] = 0.0f;
    cfg->std[c] = 1.0f;
  }
  get_per_channel(p, norm, "mean", "normalization.mean", cfg->channels, cfg->mean);
  get_per_channel(p, norm, "std", "normalization.std", cfg->channels, cfg->std);
  for (uint32_t c = 0; c < cfg->channels && !p->failed; c++)
    if (cfg->std[c] == 0.0f) fail(p, "normalization.std", "must not be 0");
  if (p->failed) return;

  /* large_images */
  json_t *large = get_object(p, root, "large_images", large_keys);
  if (p->failed) return;
  static const char *const modes[] = {"tile", "resize", NULL}, *const pads[] = {"edge", "zero",
                                                                                NULL};
  cfg->mode_resize = get_enum(p, large, "mode", "large_images.mode", modes, 0);
  uint32_t tile = cfg->size_h;
  get_u32(p, large, "tile", "large_images.tile", 1, 16384, &tile);
  /* The tile edge is input.size (a rectangular input tiles with rectangular tiles); the field
   * only restates it. */
  if (!p->failed && field(large, "tile") && (tile != cfg->size_h || tile != cfg->size_w))
    fail(p, "large_images.tile", "must equal input.size (%u x %u)", cfg->size_h, cfg->size_w);
  cfg->overlap = 32;
  get_u32(p, large, "overlap", "large_images.overlap", 0, 16383, &cfg->overlap);
  if (!p->failed && !cfg->mode_resize &&
      (cfg->overlap >= cfg->size_h || cfg->overlap >= cfg->size_w))
    fail(p, "large_images.overlap", "must be smaller than the tile (%u x %u)", cfg->size_h,
         cfg->size_w);
  cfg->pad_zero = get_enum(p, large, "pad", "large_images.pad", pads, 0);
  if (p->failed) return;

  /* output */
  json_t *out = get_object(p, root, "output", output_keys);
  if (!p->failed && !out) fail(p, "output", "required field missing");
  if (p->failed) return;
  get_str(p, out, "name", "output.name", cfg->output_name, sizeof cfg->output_name);
  if (!field(out, "kind")) fail(p, "output.kind", "required field missing");
  static const char *const kinds[] = {"sigmoid", "logits_sigmoid", "softmax", NULL};
  int kind = get_enum(p, out, "kind", "output.kind", kinds, 0);
  cfg->output_kind = kind == 2   ? SQ_REPO_OUT_SOFTMAX
                     : kind == 1 ? SQ_REPO_OUT_LOGITS_SIGMOID
                                 : SQ_REPO_OUT_SIGMOID;
  get_u32(p, out, "channel", "output.channel", 0, 4095, &cfg->output_channel);

  /* top-level scalars */
  cfg->threshold = 0.5f;
  get_float(p, root, "threshold", "threshold", &cfg->threshold);
  if (!p->failed && (cfg->threshold < 0.0f || cfg->threshold > 1.0f))
    fail(p, "threshold", "expected a number in [0, 1]");
  get_u32(p, root, "min_area", "min_area", 0, UINT32_MAX, &cfg->min_area);
  cfg->max_batch = 16;
  get_u32(p, root, "max_batch", "max_batch", 1, 1024, &cfg->max_batch);
  cfg->optimal_batch = cfg->max_batch;
  get_u32(p, root, "optimal_batch", "optimal_batch", 1, 1024, &cfg->optimal_batch);
  if (!p->failed && cfg->optimal_batch > cfg->max_batch)
    fail(p, "optimal_batch", "must not exceed max_batch (%u)", cfg->max_batch);
  cfg->max_delay_us = 5000;
  get_uint(p, root, "max_delay_us", "max_delay_us", 0, 60000000, &cfg->max_delay_us);
  static const char *const precisions[] = {"fp32", "fp16", NULL};
  cfg->fp16 = get_enum(p, root, "precision", "precision", precisions, -1); /* -1: not given */
  cfg->contexts = 1;
  get_u32(p, root, "contexts", "contexts", 1, 64, &cfg->contexts);
  if (p->failed) return;

  int n = snprintf(cfg->onnx_path, sizeof cfg->onnx_path, "%.760s/%s", cfg->dir, file);
  if (n < 0 || (size_t)n >= sizeof cfg->onnx_path) {
    fail(p, "file", "path too long");
  } else if (!is_file(cfg->onnx_path)) {
    sq_error_set(p->err, SQ_EMODEL_LOAD, "%s: missing (named by %s \"file\")", cfg->onnx_path,
                 p->file);
    p->failed = 1;
  }
}

int sq_repo_config_load(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                        sq_error_t *err) {
  memset(cfg, 0, sizeof(*cfg));
  if (!repo_dir || !*repo_dir) return sq_error_set(err, SQ_EMODEL_UNKNOWN, "no model repository");
  /* Names come from the worker's configuration; still keep them inside the repository. */
  if (!name || !*name || name[0] == '.' || strchr(name, '/') || strlen(name) > 63)
    return sq_error_set(err, SQ_EMODEL_UNKNOWN, "'%s' is not a repository model name",
                        name ? name : "");
  int n = snprintf(cfg->dir, sizeof cfg->dir, "%s/%s", repo_dir, name);
  if (n < 0 || (size_t)n >= sizeof cfg->dir)
    return sq_error_set(err, SQ_EMODEL_LOAD, "model %s: repository path too long", name);
  if (!is_dir(cfg->dir)) return sq_error_set(err, SQ_EMODEL_UNKNOWN, "no folder %s", cfg->dir);
  n = snprintf(cfg->json_path, sizeof cfg->json_path, "%.1000s/model.json", cfg->dir);
  if (n < 0 || (size_t)n >= sizeof cfg->json_path)
    return sq_error_set(err, SQ_EMODEL_LOAD, "model %s: repository path too long", name);
  if (!is_file(cfg->json_path))
    return sq_error_set(err, SQ_EMODEL_LOAD, "%s: missing (every repository model needs one)",
                        cfg->json_path);
  json_error_t jerr;
  json_t *root = json_load_file(cfg->json_path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return sq_error_set(err, SQ_EMODEL_LOAD, "%s:%d:%d: bad JSON: %s", cfg->json_path, jerr.line,
                        jerr.column, jerr.text);
  pctx_t p = {.file = cfg->json_path, .err = err, .failed = 0};
  parse(&p, root, cfg, name);
  json_decref(root);
  if (p.failed) return err && err->code ? err->code : SQ_EMODEL_LOAD;
  sq_error_clear(err);
  return 0;
}
