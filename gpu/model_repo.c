/* gpu: model.json of the model repository (docs/models.md) -> sq_repo_config_t. Every field is
 * checked for type and range here, at start-up (and by segq-worker --check-models), so a bad
 * file fails with its path and field instead of producing wrong masks later. Validation goes on
 * past the first problem and reports all of them, so one edit fixes a file; unknown keys are
 * problems at every level, as in the job protocol. JSON by jansson. Any thread; no state. */
#include "gpu/model_repo.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SUMMARY_MAX 8 /* problems spelled out in the error message */

/* Parsing context: the file for messages, where problems go, and how many there were. */
typedef struct {
  const char *file;
  sq_repo_problem_fn report;
  void *data;
  sq_error_t *err;
  unsigned failed;             /* problems so far */
  int code;                    /* the first problem's code */
  char first[256];             /* the first problem, "<file>: <path>: <what>" */
  char list[SUMMARY_MAX][120]; /* "<path>: <what>" of the first few, for the summary */
} pctx_t;

static void problem(pctx_t *p, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(pctx_t *p, int code, const char *path, const char *fmt, ...) {
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  char line[512];
  if (path)
    snprintf(line, sizeof line, "%s: %s: %s", p->file, path, what);
  else
    snprintf(line, sizeof line, "%s: %s", p->file, what);
  if (p->failed == 0) {
    p->code = code;
    snprintf(p->first, sizeof p->first, "%.255s", line);
  }
  if (p->failed < SUMMARY_MAX) {
    if (path)
      snprintf(p->list[p->failed], sizeof p->list[0], "%.50s: %.66s", path, what);
    else
      snprintf(p->list[p->failed], sizeof p->list[0], "%.119s", what);
  }
  p->failed++;
  if (p->report) p->report(line, p->data);
}

#define fail(p, path, ...) problem(p, SQ_EMODEL_LOAD, path, __VA_ARGS__)

/* The field `key` of object `obj`, or NULL when absent/null. */
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

/* One of the allowed strings; returns its index, or `dflt` when the field is absent or bad. */
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

/* Returns 1 when the field is present and valid (then *out is set), 0 otherwise. */
static int get_uint(pctx_t *p, json_t *obj, const char *key, const char *path, uint64_t lo,
                    uint64_t hi, uint64_t *out) {
  json_t *v = field(obj, key);
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < lo ||
      (uint64_t)json_integer_value(v) > hi) {
    fail(p, path, "expected an integer in [%llu, %llu]", (unsigned long long)lo,
         (unsigned long long)hi);
    return 0;
  }
  *out = (uint64_t)json_integer_value(v);
  return 1;
}

static int get_u32(pctx_t *p, json_t *obj, const char *key, const char *path, uint32_t lo,
                   uint32_t hi, uint32_t *out) {
  uint64_t v = *out;
  int ok = get_uint(p, obj, key, path, lo, hi, &v);
  *out = (uint32_t)v;
  return ok;
}

static int is_num(json_t *v) {
  return json_is_number(v) && isfinite(json_number_value(v));
}

static int get_float(pctx_t *p, json_t *obj, const char *key, const char *path, float *out) {
  json_t *v = field(obj, key);
  if (!v) return 0;
  if (!is_num(v)) {
    fail(p, path, "expected a finite number");
    return 0;
  }
  *out = (float)json_number_value(v);
  return 1;
}

/* A number (same for every channel) or an array of `n` numbers (n = 0: channels unknown, because
 * input.channels has its own problem; only the types are checked). */
static void get_per_channel(pctx_t *p, json_t *obj, const char *key, const char *path, uint32_t n,
                            float *out) {
  json_t *v = field(obj, key);
  if (!v) return;
  if (is_num(v)) {
    for (uint32_t c = 0; c < 3; c++) out[c] = (float)json_number_value(v);
    return;
  }
  if (!json_is_array(v) || (n && json_array_size(v) != n)) {
    if (n)
      fail(p, path, "expected a number or an array of %u numbers (input.channels)", n);
    else
      fail(p, path, "expected a number or an array of numbers");
    return;
  }
  for (size_t c = 0; c < json_array_size(v); c++) {
    if (!is_num(json_array_get(v, c))) {
      fail(p, path, "element %zu: expected a finite number", c);
      return;
    }
    if (c < 3) out[c] = (float)json_number_value(json_array_get(v, c));
  }
}

/* The object `key` of `parent` (NULL when absent or not an object: *bad says which). Each key
 * not in `known` is reported; the known ones are still read. */
static json_t *get_object(pctx_t *p, json_t *parent, const char *key, const char *path,
                          const char *const *known, int *bad) {
  *bad = 0;
  json_t *v = field(parent, key);
  if (!v) return NULL;
  if (!json_is_object(v)) {
    fail(p, path, "expected an object");
    *bad = 1;
    return NULL;
  }
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++) ok = !strcmp(k, known[i]);
    if (!ok) {
      char sub[160];
      snprintf(sub, sizeof sub, "%s.%.60s", path, k);
      fail(p, sub, "unknown field");
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
static const char *const norm_keys[] = {"scale", "scale_16bit", "range", "mean", "std", NULL};
static const char *const range_keys[] = {"mode", "low", "high", "bits", NULL};
static const char *const large_keys[] = {"mode", "tile", "overlap", "pad", NULL};
static const char *const output_keys[] = {"name", "kind", "channel", NULL};
/* `description` and `training` are free-form: the place for metadata next to the model. */
static const char *const top_keys[] = {
    "name",          "description",   "file",      "input",
    "normalization", "large_images",  "output",    "threshold",
    "min_area",      "optimal_batch", "max_batch", "max_delay_us",
    "precision",     "contexts",      "training",  NULL};

/* normalization.range: {mode, low, high, bits}; the keys of the other modes are problems, so a
 * "bits" that would be ignored does not look like it works. */
static void parse_range(pctx_t *p, json_t *norm, sq_input_range_t *r) {
  int bad;
  json_t *o = get_object(p, norm, "range", "normalization.range", range_keys, &bad);
  if (!o) return;
  static const char *const modes[] = {"fixed", "full", "percentile", NULL};
  if (!field(o, "mode")) fail(p, "normalization.range.mode", "required field missing");
  unsigned before = p->failed;
  int mode = get_enum(p, o, "mode", "normalization.range.mode", modes, 0);
  r->mode = (sq_range_mode_t)mode;
  /* Which keys belong is only known with a valid mode; without one, only their values. */
  int mode_ok = field(o, "mode") && p->failed == before;
  static const char *const names[] = {"low", "high", "bits"};
  static const int owner[] = {SQ_RANGE_PERCENTILE, SQ_RANGE_PERCENTILE, SQ_RANGE_FULL};
  for (int i = 0; i < 3; i++)
    if (mode_ok && field(o, names[i]) && mode != owner[i]) {
      char path[64];
      snprintf(path, sizeof path, "normalization.range.%s", names[i]);
      fail(p, path, "only applies to mode \"%s\"", modes[owner[i]]);
    }
  get_u32(p, o, "bits", "normalization.range.bits", 1, 16, &r->bits);
  int lo_ok = get_float(p, o, "low", "normalization.range.low", &r->low);
  int hi_ok = get_float(p, o, "high", "normalization.range.high", &r->high);
  if (lo_ok && !(r->low >= 0.0f && r->low < 100.0f))
    fail(p, "normalization.range.low", "expected a percentile in [0, 100)");
  else if (hi_ok && !(r->high > 0.0f && r->high <= 100.0f))
    fail(p, "normalization.range.high", "expected a percentile in (0, 100]");
  else if (mode_ok && mode == SQ_RANGE_PERCENTILE && !(r->low < r->high))
    fail(p, "normalization.range", "low (%g) must be below high (%g)", (double)r->low,
         (double)r->high);
}

static void parse(pctx_t *p, json_t *root, sq_repo_config_t *cfg) {
  if (!json_is_object(root)) {
    fail(p, "(top level)", "expected a JSON object");
    return;
  }
  const char *k;
  json_t *x;
  json_object_foreach(root, k, x) {
    int ok = 0;
    for (int i = 0; top_keys[i] && !ok; i++) ok = !strcmp(k, top_keys[i]);
    if (!ok) fail(p, k, "unknown field (free-form metadata goes in \"training\")");
  }
  if (field(root, "name") && !json_is_string(field(root, "name")))
    fail(p, "name", "expected a string");
  if (field(root, "description") && !json_is_string(field(root, "description")))
    fail(p, "description", "expected a string");
  if (field(root, "training") && !json_is_object(field(root, "training")))
    fail(p, "training", "expected an object");
  char file[256] = "model.onnx";
  unsigned before = p->failed;
  get_str(p, root, "file", "file", file, sizeof file);
  int file_ok = p->failed == before;
  if (file_ok && (strstr(file, "..") || file[0] == '/')) {
    fail(p, "file", "must be a path inside the model folder");
    file_ok = 0;
  }

  /* input */
  int bad;
  json_t *in = get_object(p, root, "input", "input", input_keys, &bad);
  if (!in && !bad) fail(p, "input", "required field missing");
  get_str(p, in, "name", "input.name", cfg->input_name, sizeof cfg->input_name);
  uint32_t channels = 0; /* 0 = not known (missing or bad) */
  if (in && !field(in, "channels")) {
    fail(p, "input.channels", "required field missing");
  } else if (in && get_u32(p, in, "channels", "input.channels", 1, 3, &channels) && channels == 2) {
    fail(p, "input.channels", "expected 1 or 3");
    channels = 0;
  }
  cfg->channels = channels ? channels : 1;
  int have_size = 0;
  json_t *size = field(in, "size");
  if (in && !size) {
    fail(p, "input.size", "required field missing");
  } else if (in && (!json_is_array(size) || json_array_size(size) != 2 ||
                    !json_is_integer(json_array_get(size, 0)) ||
                    !json_is_integer(json_array_get(size, 1)) ||
                    json_integer_value(json_array_get(size, 0)) < 1 ||
                    json_integer_value(json_array_get(size, 1)) < 1 ||
                    json_integer_value(json_array_get(size, 0)) > 16384 ||
                    json_integer_value(json_array_get(size, 1)) > 16384)) {
    fail(p, "input.size", "expected [H, W], integers in [1, 16384]");
  } else if (in) {
    cfg->size_h = (uint32_t)json_integer_value(json_array_get(size, 0));
    cfg->size_w = (uint32_t)json_integer_value(json_array_get(size, 1));
    have_size = 1;
  }
  static const char *const layouts[] = {"NCHW", NULL}, *const dtypes[] = {"float32", NULL};
  get_enum(p, in, "layout", "input.layout", layouts, 0);
  get_enum(p, in, "dtype", "input.dtype", dtypes, 0);

  /* normalization */
  json_t *norm = get_object(p, root, "normalization", "normalization", norm_keys, &bad);
  sq_input_range_default(&cfg->range, SQ_RANGE_FIXED);
  parse_range(p, norm, &cfg->range);
  int has_scale = get_float(p, norm, "scale", "normalization.scale", &cfg->range.scale);
  cfg->range.scale_16bit = cfg->range.scale / 257.0f;
  has_scale |=
      get_float(p, norm, "scale_16bit", "normalization.scale_16bit", &cfg->range.scale_16bit);
  if (has_scale && cfg->range.mode != SQ_RANGE_FIXED)
    fail(p, "normalization.scale", "only applies to range mode \"fixed\" (the default)");
  for (int c = 0; c < 3; c++) {
    cfg->mean[c] = 0.0f;
    cfg->std[c] = 1.0f;
  }
  get_per_channel(p, norm, "mean", "normalization.mean", channels, cfg->mean);
  get_per_channel(p, norm, "std", "normalization.std", channels, cfg->std);
  for (uint32_t c = 0; c < cfg->channels; c++)
    if (cfg->std[c] == 0.0f) {
      fail(p, "normalization.std", "must not be 0");
      break;
    }

  /* large_images */
  json_t *large = get_object(p, root, "large_images", "large_images", large_keys, &bad);
  static const char *const modes[] = {"tile", "resize", NULL}, *const pads[] = {"edge", "zero",
                                                                                NULL};
  cfg->mode_resize = get_enum(p, large, "mode", "large_images.mode", modes, 0);
  uint32_t tile = cfg->size_h;
  /* The tile edge is input.size (a rectangular input tiles with rectangular tiles); the field
   * only restates it. */
  if (get_u32(p, large, "tile", "large_images.tile", 1, 16384, &tile) && have_size &&
      (tile != cfg->size_h || tile != cfg->size_w))
    fail(p, "large_images.tile", "must equal input.size (%u x %u)", cfg->size_h, cfg->size_w);
  cfg->overlap = 32;
  int overlap_ok = 1;
  if (field(large, "overlap"))
    overlap_ok = get_u32(p, large, "overlap", "large_images.overlap", 0, 16383, &cfg->overlap);
  if (overlap_ok && have_size && !cfg->mode_resize &&
      (cfg->overlap >= cfg->size_h || cfg->overlap >= cfg->size_w))
    fail(p, "large_images.overlap", "must be smaller than the tile (%u x %u)", cfg->size_h,
         cfg->size_w);
  cfg->pad_zero = get_enum(p, large, "pad", "large_images.pad", pads, 0);

  /* output */
  json_t *out = get_object(p, root, "output", "output", output_keys, &bad);
  if (!out && !bad) fail(p, "output", "required field missing");
  get_str(p, out, "name", "output.name", cfg->output_name, sizeof cfg->output_name);
  if (out && !field(out, "kind")) fail(p, "output.kind", "required field missing");
  static const char *const kinds[] = {"sigmoid", "logits_sigmoid", "softmax", NULL};
  int kind = get_enum(p, out, "kind", "output.kind", kinds, 0);
  cfg->output_kind = kind == 2   ? SQ_REPO_OUT_SOFTMAX
                     : kind == 1 ? SQ_REPO_OUT_LOGITS_SIGMOID
                                 : SQ_REPO_OUT_SIGMOID;
  get_u32(p, out, "channel", "output.channel", 0, 4095, &cfg->output_channel);

  /* top-level scalars */
  cfg->threshold = 0.5f;
  if (get_float(p, root, "threshold", "threshold", &cfg->threshold) &&
      (cfg->threshold < 0.0f || cfg->threshold > 1.0f))
    fail(p, "threshold", "expected a number in [0, 1]");
  get_u32(p, root, "min_area", "min_area", 0, UINT32_MAX, &cfg->min_area);
  cfg->max_batch = 16;
  int max_ok = !field(root, "max_batch") ||
               get_u32(p, root, "max_batch", "max_batch", 1, 1024, &cfg->max_batch);
  cfg->optimal_batch = cfg->max_batch;
  if (get_u32(p, root, "optimal_batch", "optimal_batch", 1, 1024, &cfg->optimal_batch) && max_ok &&
      cfg->optimal_batch > cfg->max_batch)
    fail(p, "optimal_batch", "must not exceed max_batch (%u)", cfg->max_batch);
  if (cfg->optimal_batch > cfg->max_batch) cfg->optimal_batch = cfg->max_batch;
  cfg->max_delay_us = 5000;
  get_uint(p, root, "max_delay_us", "max_delay_us", 0, 60000000, &cfg->max_delay_us);
  static const char *const precisions[] = {"fp32", "fp16", NULL};
  cfg->fp16 = get_enum(p, root, "precision", "precision", precisions, -1); /* -1: not given */
  cfg->contexts = 1;
  get_u32(p, root, "contexts", "contexts", 1, 64, &cfg->contexts);

  if (!file_ok) return;
  int n = snprintf(cfg->onnx_path, sizeof cfg->onnx_path, "%.760s/%s", cfg->dir, file);
  if (n < 0 || (size_t)n >= sizeof cfg->onnx_path)
    fail(p, "file", "path too long");
  else if (!is_file(cfg->onnx_path))
    fail(p, "file", "%s is missing", cfg->onnx_path);
}

/* err from what p collected: the one problem as it is, or a count and the first few. */
static int summarize(pctx_t *p) {
  if (p->failed == 1) return sq_error_set(p->err, p->code, "%s", p->first);
  char buf[sizeof p->err->msg];
  int n = snprintf(buf, sizeof buf, "%s: %u problems:", p->file, p->failed);
  for (unsigned i = 0; i < p->failed && i < SUMMARY_MAX && n > 0 && (size_t)n < sizeof buf; i++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s %s", i ? ";" : "", p->list[i]);
  return sq_error_set(p->err, p->code, "%s", buf);
}

static void log_problem(const char *problem_text, void *data) {
  (void)data;
  char q[600];
  sq_log_error("gpu", "model.json problem", "problem=\"%s\"",
               sq_log_escape(problem_text, q, sizeof q));
}

int sq_repo_config_check(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                         sq_repo_problem_fn report, void *data, sq_error_t *err) {
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
  pctx_t p = {.file = cfg->json_path, .report = report, .data = data, .err = err};
  if (!is_file(cfg->json_path)) {
    problem(&p, SQ_EMODEL_LOAD, NULL, "missing (every repository model needs one)");
    return summarize(&p);
  }
  json_error_t jerr;
  json_t *root = json_load_file(cfg->json_path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    char where[32];
    snprintf(where, sizeof where, "line %d, column %d", jerr.line, jerr.column);
    problem(&p, SQ_EMODEL_LOAD, where, "bad JSON: %s", jerr.text);
    return summarize(&p);
  }
  /* Without a report function each problem of several is logged, so none hides behind the
   * summary that fits in err. */
  if (!report) {
    pctx_t probe = p;
    probe.report = NULL;
    sq_repo_config_t scratch = *cfg;
    parse(&probe, root, &scratch);
    if (probe.failed > 1) p.report = log_problem;
  }
  parse(&p, root, cfg);
  json_decref(root);
  if (p.failed) return summarize(&p);
  sq_error_clear(err);
  return 0;
}

int sq_repo_config_load(const char *repo_dir, const char *name, sq_repo_config_t *cfg,
                        sq_error_t *err) {
  return sq_repo_config_check(repo_dir, name, cfg, NULL, NULL, err);
}
