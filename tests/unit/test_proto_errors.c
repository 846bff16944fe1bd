/* proto: every way a job document can be wrong gets its own error code and a message naming the
 * field; garbage and every truncation of a valid job are rejected without crashing or leaking
 * (run under -DSEGQ_SANITIZE=ON to make "without crashing" mean something). */
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/proto.h"

/* ---- a valid gray8 job, with one field replaced, removed or added ---- */

typedef void (*pack_fn)(msgpack_packer *pk);
typedef struct {
  const char *key;
  pack_fn fn;
} entry_t;

static const char *g_key; /* "v", "image.width", "params.outputs", ... */
static pack_fn g_fn;      /* what to pack there; NULL removes the key */

static void pstr(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}
static void pstr_n(msgpack_packer *pk, char c, size_t n) {
  char *s = malloc(n);
  memset(s, c, n);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
  free(s);
}

static void pack_entries(msgpack_packer *pk, const char *prefix, const entry_t *e, size_t n) {
  char full[64];
  size_t count = 0, plen = strlen(prefix);
  int replaced = 0;
  for (size_t i = 0; i < n; i++) {
    snprintf(full, sizeof full, "%s%s", prefix, e[i].key);
    if (g_key && strcmp(full, g_key) == 0) {
      replaced = 1;
      if (!g_fn) continue;
    }
    count++;
  }
  /* A key of this map that the default document lacks is added. */
  int add = g_key && g_fn && !replaced && strncmp(g_key, prefix, plen) == 0 &&
            strchr(g_key + plen, '.') == NULL;
  msgpack_pack_map(pk, count + (size_t)add);
  for (size_t i = 0; i < n; i++) {
    snprintf(full, sizeof full, "%s%s", prefix, e[i].key);
    if (g_key && strcmp(full, g_key) == 0) {
      if (!g_fn) continue;
      pstr(pk, e[i].key);
      g_fn(pk);
    } else {
      pstr(pk, e[i].key);
      e[i].fn(pk);
    }
  }
  if (add) {
    pstr(pk, g_key + plen);
    g_fn(pk);
  }
}

static void p_v1(msgpack_packer *pk) {
  msgpack_pack_uint8(pk, 1);
}
static void p_id(msgpack_packer *pk) {
  pstr(pk, "job-1");
}
static void p_model(msgpack_packer *pk) {
  pstr(pk, "otsu");
}
static void p_gray8(msgpack_packer *pk) {
  pstr(pk, "gray8");
}
static void p_data6(msgpack_packer *pk) {
  static const char px[6] = {0, 1, 2, 3, 4, 5};
  msgpack_pack_bin(pk, 6);
  msgpack_pack_bin_body(pk, px, 6);
}
static void p_uint3(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 3);
}
static void p_uint2(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 2);
}
static void p_image(msgpack_packer *pk) {
  static const entry_t e[] = {
      {"format", p_gray8}, {"data", p_data6}, {"width", p_uint3}, {"height", p_uint2}};
  pack_entries(pk, "image.", e, 4);
}
static void p_half(msgpack_packer *pk) {
  msgpack_pack_double(pk, 0.5);
}
static void p_uint4(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 4);
}
static void p_outputs(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  pstr(pk, "polygons");
  pstr(pk, "mask");
}
static void p_params(msgpack_packer *pk) {
  static const entry_t e[] = {{"threshold", p_half}, {"min_area", p_uint4}, {"outputs", p_outputs}};
  pack_entries(pk, "params.", e, 3);
}
static void p_prio(msgpack_packer *pk) {
  msgpack_pack_int64(pk, -5);
}
static void p_deadline(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 1700000000000ull);
}
static void p_group(msgpack_packer *pk) {
  pstr(pk, "upload-7");
}
static void p_tenant(msgpack_packer *pk) {
  pstr(pk, "acme");
}
static void p_meta(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  pstr(pk, "k");
  msgpack_pack_array(pk, 2);
  msgpack_pack_int(pk, 1);
  pstr(pk, "x");
}

static uint8_t *build(const char *key, pack_fn fn, size_t *len) {
  static const entry_t e[] = {
      {"v", p_v1},          {"id", p_id},         {"model", p_model},          {"image", p_image},
      {"params", p_params}, {"priority", p_prio}, {"deadline_ms", p_deadline}, {"group", p_group},
      {"tenant", p_tenant}, {"meta", p_meta}};
  g_key = key;
  g_fn = fn;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  pack_entries(&pk, "", e, sizeof e / sizeof e[0]);
  *len = sb.size;
  return (uint8_t *)msgpack_sbuffer_release(&sb);
}

/* ---- bad values ---- */
static void p_nil(msgpack_packer *pk) {
  msgpack_pack_nil(pk);
}
static void p_true(msgpack_packer *pk) {
  msgpack_pack_true(pk);
}
static void p_str(msgpack_packer *pk) {
  pstr(pk, "abc");
}
static void p_str1(msgpack_packer *pk) {
  pstr(pk, "1");
}
static void p_uint0(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 0);
}
static void p_uint7(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 7);
}
static void p_uint16385(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 16385);
}
static void p_uint_max(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, UINT64_MAX);
}
static void p_uint_2p32(msgpack_packer *pk) {
  msgpack_pack_uint64(pk, 1ull << 32);
}
static void p_neg1(msgpack_packer *pk) {
  msgpack_pack_int64(pk, -1);
}
static void p_float(msgpack_packer *pk) {
  msgpack_pack_double(pk, 1.0);
}
static void p_float15(msgpack_packer *pk) {
  msgpack_pack_double(pk, 1.5);
}
static void p_float_neg(msgpack_packer *pk) {
  msgpack_pack_float(pk, -0.25f);
}
static void p_nan(msgpack_packer *pk) {
  msgpack_pack_double(pk, NAN);
}
static void p_array(msgpack_packer *pk) {
  msgpack_pack_array(pk, 0);
}
static void p_map(msgpack_packer *pk) {
  msgpack_pack_map(pk, 0);
}
static void p_bin(msgpack_packer *pk) {
  msgpack_pack_bin(pk, 3);
  msgpack_pack_bin_body(pk, "abc", 3);
}
static void p_str_empty(msgpack_packer *pk) {
  pstr(pk, "");
}
static void p_str_129(msgpack_packer *pk) {
  pstr_n(pk, 'a', 129);
}
static void p_str_128(msgpack_packer *pk) {
  pstr_n(pk, 'a', 128);
}
static void p_str_65(msgpack_packer *pk) {
  pstr_n(pk, 'a', 65);
}
static void p_str_space(msgpack_packer *pk) {
  pstr(pk, "a b");
}
static void p_str_slash(msgpack_packer *pk) {
  pstr(pk, "a/b");
}
static void p_str_nul(msgpack_packer *pk) {
  msgpack_pack_str(pk, 3);
  msgpack_pack_str_body(pk, "a\0b", 3);
}
static void p_str_bmp(msgpack_packer *pk) {
  pstr(pk, "bmp");
}
static void p_str_jpeg(msgpack_packer *pk) {
  pstr(pk, "jpeg");
}
static void p_str_gray16(msgpack_packer *pk) {
  pstr(pk, "gray16");
}
static void p_out_unknown(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  pstr(pk, "polygons");
  pstr(pk, "edges");
}
static void p_out_int(msgpack_packer *pk) {
  msgpack_pack_array(pk, 1);
  msgpack_pack_int(pk, 1);
}
static void p_out_9(msgpack_packer *pk) {
  msgpack_pack_array(pk, 9);
  for (int i = 0; i < 9; i++) pstr(pk, "mask");
}
static void p_meta_big(msgpack_packer *pk) {
  static char blob[70000];
  msgpack_pack_bin(pk, sizeof blob);
  msgpack_pack_bin_body(pk, blob, sizeof blob);
}
static void p_data_big(msgpack_packer *pk) {
  size_t n = SQ_PROTO_MAX_IMAGE_BYTES + 1u;
  char *b = calloc(1, n);
  msgpack_pack_bin(pk, n);
  msgpack_pack_bin_body(pk, b, n);
  free(b);
}
static void p_str_big(msgpack_packer *pk) {
  pstr_n(pk, 'a', SQ_PROTO_MAX_IMAGE_BYTES + 1u);
}

/* params.input_range maps: {"mode": m} plus one optional extra key k = v (v < 0: none). */
static void p_range(msgpack_packer *pk, const char *mode, const char *k, double v) {
  msgpack_pack_map(pk, (mode ? 1 : 0) + (k ? 1 : 0));
  if (mode) {
    pstr(pk, "mode");
    pstr(pk, mode);
  }
  if (k) {
    pstr(pk, k);
    if (!strcmp(k, "bits"))
      msgpack_pack_uint64(pk, (uint64_t)v);
    else if (v >= 0)
      msgpack_pack_double(pk, v);
    else
      pstr(pk, "x");
  }
}
static void p_range_nomode(msgpack_packer *pk) {
  p_range(pk, NULL, "low", 1);
}
static void p_range_badmode(msgpack_packer *pk) {
  p_range(pk, "minmax", NULL, 0);
}
static void p_range_mode_int(msgpack_packer *pk) {
  msgpack_pack_map(pk, 1);
  pstr(pk, "mode");
  msgpack_pack_uint8(pk, 3);
}
static void p_range_unknown(msgpack_packer *pk) {
  p_range(pk, "percentile", "lo", 1);
}
static void p_range_bits_pct(msgpack_packer *pk) {
  p_range(pk, "percentile", "bits", 12);
}
static void p_range_low_full(msgpack_packer *pk) {
  p_range(pk, "full", "low", 1);
}
static void p_range_low_high(msgpack_packer *pk) {
  p_range(pk, "percentile", "low", 99.9);
}
static void p_range_bits17(msgpack_packer *pk) {
  p_range(pk, "full", "bits", 17);
}
static void p_range_high_str(msgpack_packer *pk) {
  p_range(pk, "percentile", "high", -1);
}
static void p_range_full12(msgpack_packer *pk) {
  p_range(pk, "full", "bits", 12);
}

typedef struct {
  const char *key;
  pack_fn fn; /* NULL: remove the key */
  int code;
  const char *msg; /* substring of err.msg */
} error_case_t;

static const error_case_t cases[] = {
    /* version */
    {"v", p_uint2, SQ_EVERSION, "v: version 2"},
    {"v", p_uint0, SQ_EVERSION, "v:"},
    {"v", p_str1, SQ_ETYPE, "v: expected uint, got str"},
    {"v", p_neg1, SQ_ETYPE, "v: expected uint"},
    {"v", p_float, SQ_ETYPE, "v: expected uint, got float"},
    {"v", NULL, SQ_EMISSING, "v: missing"},
    {"v", p_nil, SQ_EMISSING, "v: missing"},
    /* id */
    {"id", NULL, SQ_EMISSING, "id: missing"},
    {"id", p_uint7, SQ_ETYPE, "id: expected str, got uint"},
    {"id", p_bin, SQ_ETYPE, "id: expected str, got bin"},
    {"id", p_str_129, SQ_EOVERSIZE, "id: 129 bytes"},
    {"id", p_str_empty, SQ_EVALUE, "id: empty"},
    {"id", p_str_space, SQ_EVALUE, "id: \"a b\""},
    {"id", p_str_slash, SQ_EVALUE, "id:"},
    {"id", p_str_nul, SQ_EVALUE, "id:"},
    /* model */
    {"model", NULL, SQ_EMISSING, "model: missing"},
    {"model", p_array, SQ_ETYPE, "model: expected str, got array"},
    {"model", p_str_65, SQ_EOVERSIZE, "model: 65 bytes"},
    {"model", p_str_empty, SQ_EVALUE, "model: empty"},
    {"model", p_str_slash, SQ_EVALUE, "model:"},
    /* image */
    {"image", NULL, SQ_EMISSING, "image: missing"},
    {"image", p_bin, SQ_ETYPE, "image: expected map, got bin"},
    {"image.format", NULL, SQ_EMISSING, "image.format: missing"},
    {"image.format", p_uint7, SQ_ETYPE, "image.format: expected str"},
    {"image.format", p_str_bmp, SQ_EVALUE, "image.format: unknown format \"bmp\""},
    {"image.data", NULL, SQ_EMISSING, "image.data: missing"},
    {"image.data", p_str, SQ_ETYPE, "image.data: expected bin, got str"},
    {"image.data", p_data_big, SQ_EOVERSIZE, "image.data:"},
    {"image.data", p_bin, SQ_EVALUE, "image.data: 3 bytes, expected width*height*1 = 6"},
    {"image.format", p_str_gray16, SQ_EVALUE, "image.data: 6 bytes, expected width*height*2 = 12"},
    {"image.width", NULL, SQ_EMISSING, "image.width: missing"},
    {"image.height", NULL, SQ_EMISSING, "image.height: missing"},
    {"image.width", p_str, SQ_ETYPE, "image.width: expected uint, got str"},
    {"image.height", p_float, SQ_ETYPE, "image.height: expected uint, got float"},
    {"image.width", p_neg1, SQ_ETYPE, "image.width: expected uint, got negative int"},
    {"image.width", p_uint0, SQ_EIMAGE_EMPTY, "image: 0x2 has no pixels"},
    {"image.height", p_uint16385, SQ_EIMAGE_TOO_LARGE, "image: 3x16385 exceeds"},
    {"image.width", p_uint7, SQ_EVALUE, "image.data: 6 bytes"},
    /* params */
    {"params", p_array, SQ_ETYPE, "params: expected map, got array"},
    {"params.threshold", p_str, SQ_ETYPE, "params.threshold: expected float, got str"},
    {"params.threshold", p_true, SQ_ETYPE, "params.threshold: expected float, got bool"},
    {"params.threshold", p_float15, SQ_EVALUE, "params.threshold: 1.5 is outside [0, 1]"},
    {"params.threshold", p_float_neg, SQ_EVALUE, "params.threshold: -0.25"},
    {"params.threshold", p_uint2, SQ_EVALUE, "params.threshold: 2"},
    {"params.threshold", p_nan, SQ_EVALUE, "params.threshold:"},
    {"params.min_area", p_float, SQ_ETYPE, "params.min_area: expected uint, got float"},
    {"params.min_area", p_neg1, SQ_ETYPE, "params.min_area: expected uint"},
    {"params.min_area", p_uint_2p32, SQ_EVALUE, "params.min_area:"},
    {"params.outputs", p_str, SQ_ETYPE, "params.outputs: expected array of str, got str"},
    {"params.outputs", p_out_int, SQ_ETYPE, "params.outputs[0]: expected str, got uint"},
    {"params.outputs", p_out_unknown, SQ_EVALUE, "params.outputs[1]: unknown output \"edges\""},
    {"params.outputs", p_array, SQ_EVALUE, "params.outputs: empty"},
    {"params.outputs", p_out_9, SQ_EOVERSIZE, "params.outputs: 9 entries"},
    {"params.input_range", p_str, SQ_ETYPE, "params.input_range: expected map, got str"},
    {"params.input_range", p_range_nomode, SQ_EMISSING, "params.input_range.mode: missing"},
    {"params.input_range", p_range_badmode, SQ_EVALUE, "unknown mode \"minmax\""},
    {"params.input_range", p_range_mode_int, SQ_ETYPE, "params.input_range.mode: expected str"},
    {"params.input_range", p_range_unknown, SQ_EVALUE, "params.input_range: unknown key \"lo\""},
    {"params.input_range", p_range_bits_pct, SQ_EVALUE,
     "params.input_range.bits: only for mode full"},
    {"params.input_range", p_range_low_full, SQ_EVALUE,
     "params.input_range.low: only for mode percentile"},
    {"params.input_range", p_range_low_high, SQ_EVALUE, "low 99.9, high 99.8"},
    {"params.input_range", p_range_bits17, SQ_EVALUE,
     "params.input_range.bits: 17 is out of range"},
    {"params.input_range", p_range_high_str, SQ_ETYPE, "params.input_range.high: expected float"},
    /* optional top-level fields */
    {"priority", p_str, SQ_ETYPE, "priority: expected int, got str"},
    {"priority", p_float, SQ_ETYPE, "priority: expected int, got float"},
    {"priority", p_uint_max, SQ_EVALUE, "priority:"},
    {"deadline_ms", p_neg1, SQ_ETYPE, "deadline_ms: expected uint, got negative int"},
    {"deadline_ms", p_str, SQ_ETYPE, "deadline_ms: expected uint, got str"},
    {"group", p_uint7, SQ_ETYPE, "group: expected str, got uint"},
    {"group", p_str_129, SQ_EOVERSIZE, "group: 129 bytes"},
    {"group", p_str_empty, SQ_EVALUE, "group: empty"},
    {"group", p_str_space, SQ_EVALUE, "group:"},
    {"tenant", p_map, SQ_ETYPE, "tenant: expected str, got map"},
    {"tenant", p_str_65, SQ_EOVERSIZE, "tenant: 65 bytes"},
    {"tenant", p_str_empty, SQ_EVALUE, "tenant: empty"},
    {"tenant", p_str_slash, SQ_EVALUE, "tenant:"},
    {"meta", p_meta_big, SQ_EOVERSIZE, "meta: "},
};

static void test_error_cases(void) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const error_case_t *c = &cases[i];
    size_t len;
    uint8_t *buf = build(c->key, c->fn, &len);
    sq_job_t job;
    sq_error_t err;
    int rc = sq_proto_job_decode(buf, len, &job, &err);
    if (rc != c->code || err.code != c->code || !strstr(err.msg, c->msg))
      fprintf(stderr, "case %zu (%s): rc=%d (%s) msg=\"%s\", want %s \"%s\"\n", i, c->key, rc,
              sq_error_name(rc), err.msg, sq_error_name(c->code), c->msg);
    CHECK_EQ_INT(rc, c->code);
    CHECK(strstr(err.msg, c->msg) != NULL);
    /* On error, everything but the id is zeroed. */
    CHECK(job.model == NULL && job.image_data == NULL && job.meta == NULL && job.tenant == NULL);
    CHECK(job.width == 0 && job.outputs == 0 && job.priority == 0);
    /* The id is there whenever it was readable. */
    if (strcmp(c->key, "id") != 0)
      CHECK_STR(job.id, "job-1");
    else
      CHECK(job.id == NULL);
    sq_proto_job_free(&job);
    free(buf);
  }
}

/* Any integer encoding is fine, signed ones included. */
static void p_v_int8(msgpack_packer *pk) {
  msgpack_pack_fix_int8(pk, 1);
}
static void p_width_u32(msgpack_packer *pk) {
  msgpack_pack_fix_uint32(pk, 3);
}
static void p_height_i64(msgpack_packer *pk) {
  msgpack_pack_fix_int64(pk, 2);
}
static void p_float32_half(msgpack_packer *pk) {
  msgpack_pack_float(pk, 0.5f);
}

/* Things that are fine: limits exactly reached, nil optional fields, unknown keys, jpeg without
 * width/height. */
static void expect_ok(const char *key, pack_fn fn) {
  size_t len;
  uint8_t *buf = build(key, fn, &len);
  sq_job_t job;
  sq_error_t err;
  int rc = sq_proto_job_decode(buf, len, &job, &err);
  if (rc) fprintf(stderr, "expect_ok(%s): %s\n", key, err.msg);
  CHECK_EQ_INT(rc, 0);
  sq_proto_job_free(&job);
  free(buf);
}

static void test_accepted(void) {
  expect_ok(NULL, NULL);
  expect_ok("id", p_str_128);
  expect_ok("params", NULL);
  expect_ok("params", p_map);
  expect_ok("params.threshold", p_uint0);
  expect_ok("group", p_nil);
  expect_ok("meta", p_nil);
  expect_ok("tenant", NULL);
  expect_ok("unknown_field", p_out_9);
  expect_ok("image.unknown", p_str);
  expect_ok("params.unknown", p_str);
  expect_ok("meta", p_bin);
  expect_ok("v", p_v_int8);
  expect_ok("image.width", p_width_u32);
  expect_ok("image.height", p_height_i64);
  expect_ok("params.threshold", p_float32_half);
  expect_ok("params.input_range", p_nil);
  /* A decoded input_range, and its defaults. */
  size_t len;
  uint8_t *buf = build("params.input_range", p_range_full12, &len);
  sq_job_t job;
  sq_error_t err;
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &job, &err), 0);
  CHECK_EQ_INT(job.input_range_mode, SQ_PROTO_RANGE_FULL);
  CHECK_EQ_INT(job.input_range_bits, 12);
  sq_proto_job_free(&job);
  free(buf);
  buf = build(NULL, NULL, &len);
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &job, &err), 0);
  CHECK_EQ_INT(job.input_range_mode, SQ_PROTO_RANGE_NONE);
  sq_proto_job_free(&job);
  free(buf);
}

static void test_jpeg(void) {
  /* A jpeg ignores width/height; the decoder checks bytes later. */
  size_t len;
  uint8_t *buf = build("image.format", p_str_jpeg, &len);
  sq_job_t job;
  sq_error_t err;
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &job, &err), 0);
  CHECK_EQ_INT(job.image_format, SQ_IMAGE_JPEG);
  CHECK_EQ_INT(job.width, 0);
  CHECK_EQ_INT(job.image_size, 6);
  sq_proto_job_free(&job);
  free(buf);
}

static int decode_code(const void *buf, size_t len, char *msg, size_t msg_size) {
  sq_job_t job;
  sq_error_t err;
  int rc = sq_proto_job_decode(buf, len, &job, &err);
  if (msg) snprintf(msg, msg_size, "%s", err.msg);
  sq_proto_job_free(&job);
  return rc;
}

static void test_garbage(void) {
  char msg[256];
  CHECK_EQ_INT(decode_code("", 0, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code(NULL, 0, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code("hello world", 11, NULL, 0), SQ_EMALFORMED); /* fixstr 'h'... */
  CHECK_EQ_INT(decode_code("\xc1", 1, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code("\x93\x01\x02\x03", 4, msg, sizeof msg), SQ_EMALFORMED); /* array */
  CHECK(strstr(msg, "expected map, got array") != NULL);
  CHECK_EQ_INT(decode_code("\x01", 1, NULL, 0), SQ_EMALFORMED);
  /* Containers claiming 2^32 elements: must fail fast without msgpack-c allocating for them. */
  CHECK_EQ_INT(decode_code("\xdd\xff\xff\xff\xff", 5, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code("\xdf\xff\xff\xff\xff\x01\x01", 7, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code("\xc6\xff\xff\xff\xff", 5, NULL, 0), SQ_EMALFORMED);
  CHECK_EQ_INT(decode_code("\x81\x01\x02", 3, msg, sizeof msg), SQ_EMALFORMED); /* int key */
  CHECK(strstr(msg, "map key") != NULL);
  CHECK_EQ_INT(decode_code("\x82\xa1v\x01\xa1v\x01", 7, msg, sizeof msg), SQ_EMALFORMED);
  CHECK(strstr(msg, "duplicate key 'v'") != NULL);
  CHECK_EQ_INT(decode_code("\x80", 1, msg, sizeof msg), SQ_EMISSING); /* empty map */

  /* Trailing garbage after a valid job. */
  size_t len;
  uint8_t *buf = build(NULL, NULL, &len);
  uint8_t *more = malloc(len + 1);
  memcpy(more, buf, len);
  more[len] = 0xc0;
  CHECK_EQ_INT(decode_code(more, len + 1, msg, sizeof msg), SQ_EMALFORMED);
  CHECK(strstr(msg, "trailing") != NULL);
  free(more);
  free(buf);

  /* Nesting deeper than the limit (in meta, where any shape is allowed). */
  uint8_t deep[64];
  size_t n = 0;
  deep[n++] = 0x81;
  deep[n++] = 0xa4;
  memcpy(deep + n, "meta", 4);
  n += 4;
  for (int i = 0; i < 40; i++) deep[n++] = 0x91;
  deep[n++] = 0xc0;
  CHECK_EQ_INT(decode_code(deep, n, msg, sizeof msg), SQ_EMALFORMED);
  CHECK(strstr(msg, "too deep") != NULL);

  /* Random bytes never crash; with a leading fixmap they get past the first byte. */
  srand(12345);
  uint8_t rnd[256];
  for (int round = 0; round < 20000; round++) {
    size_t rlen = (size_t)(rand() % 64) + 1;
    for (size_t i = 0; i < rlen; i++) rnd[i] = (uint8_t)rand();
    if (round & 1) rnd[0] = 0x80 | (rnd[0] & 0x0f);
    int rc = decode_code(rnd, rlen, NULL, 0);
    CHECK(rc < 0);
  }
}

static void test_truncation(void) {
  size_t len;
  uint8_t *buf = build(NULL, NULL, &len);
  int all_err = 1;
  for (size_t n = 0; n < len; n++) {
    /* A heap copy of exactly n bytes, so ASan sees any read past the end. */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    if (decode_code(n ? copy : NULL, n, NULL, 0) != SQ_EMALFORMED) all_err = 0;
    free(copy);
  }
  CHECK(all_err);
  CHECK_EQ_INT(decode_code(buf, len, NULL, 0), 0);
  /* Byte flips of the valid job: any outcome but a crash. */
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      buf[i] ^= (uint8_t)(1u << bit);
      (void)decode_code(buf, len, NULL, 0);
      buf[i] ^= (uint8_t)(1u << bit);
    }
  }
  free(buf);
}

static void test_huge_string_field(void) {
  /* A 64 MiB+1 str as the image data: wrong type is reported before any copy. */
  size_t len;
  uint8_t *buf = build("image.data", p_str_big, &len);
  char msg[256];
  CHECK_EQ_INT(decode_code(buf, len, msg, sizeof msg), SQ_ETYPE);
  free(buf);
}

static void test_valid_name(void) {
  CHECK(sq_proto_valid_name("a", 1, 128));
  CHECK(sq_proto_valid_name("A-z_0.9:x", 9, 128));
  CHECK(!sq_proto_valid_name("", 0, 128));
  CHECK(!sq_proto_valid_name(NULL, 0, 128));
  CHECK(!sq_proto_valid_name("abc", 3, 2));
  CHECK(!sq_proto_valid_name("a b", 3, 128));
  CHECK(!sq_proto_valid_name("a/b", 3, 128));
  CHECK(!sq_proto_valid_name("a\0b", 3, 128));
  CHECK(!sq_proto_valid_name("caf\xc3\xa9", 5, 128));
}

int main(void) {
  test_error_cases();
  test_accepted();
  test_jpeg();
  test_garbage();
  test_truncation();
  test_huge_string_field();
  test_valid_name();
  CHECK_DONE();
}
