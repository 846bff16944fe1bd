/* proto: the ensemble field `models` (docs/protocol.md "Ensembles"): valid lists decode with
 * their weights (default 1) and round-trip through the encoder; every way the field can be wrong
 * has its error code and a message naming the entry, and nothing leaks (run under ASan). */
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/proto.h"

static void pstr(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

/* A member map: name (NULL = no name key), weight (< -1e30 = no weight key), an extra key. */
static void member(msgpack_packer *pk, const char *name, double weight, const char *extra) {
  int has_weight = isnan(weight) || weight > -1e30;
  msgpack_pack_map(pk, (size_t)(name != NULL) + (size_t)has_weight + (size_t)(extra != NULL));
  if (name) {
    pstr(pk, "name");
    pstr(pk, name);
  }
  if (has_weight) {
    pstr(pk, "weight");
    msgpack_pack_double(pk, weight);
  }
  if (extra) {
    pstr(pk, extra);
    msgpack_pack_uint8(pk, 1);
  }
}

typedef void (*models_fn)(msgpack_packer *pk);

/* A gray8 2x1 job of model "otsu" with `models` packed by fn. */
static int decode_with(models_fn fn, sq_job_t *job, sq_error_t *err) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 5);
  pstr(&pk, "v");
  msgpack_pack_uint8(&pk, 1);
  pstr(&pk, "id");
  pstr(&pk, "ens-1");
  pstr(&pk, "model");
  pstr(&pk, "otsu");
  pstr(&pk, "image");
  msgpack_pack_map(&pk, 4);
  pstr(&pk, "format");
  pstr(&pk, "gray8");
  pstr(&pk, "data");
  msgpack_pack_bin(&pk, 2);
  msgpack_pack_bin_body(&pk, "\x01\x02", 2);
  pstr(&pk, "width");
  msgpack_pack_uint8(&pk, 2);
  pstr(&pk, "height");
  msgpack_pack_uint8(&pk, 1);
  pstr(&pk, "models");
  fn(&pk);
  int rc = sq_proto_job_decode(sb.data, sb.size, job, err);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

static void m_two(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "cellseg-unet", 0.75, NULL);
  member(pk, "otsu", -1e31, NULL); /* weight defaults to 1 */
}
static void m_nil(msgpack_packer *pk) {
  msgpack_pack_nil(pk);
}
static void m_int_weight(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 0, NULL);
  msgpack_pack_map(pk, 2);
  pstr(pk, "name");
  pstr(pk, "a");
  pstr(pk, "weight");
  msgpack_pack_uint8(pk, 3);
}
static void m_not_array(msgpack_packer *pk) {
  pstr(pk, "otsu,null");
}
static void m_one(msgpack_packer *pk) {
  msgpack_pack_array(pk, 1);
  member(pk, "otsu", 1, NULL);
}
static void m_nine(msgpack_packer *pk) {
  msgpack_pack_array(pk, 9);
  member(pk, "otsu", 1, NULL);
  char name[8];
  for (int i = 1; i < 9; i++) {
    snprintf(name, sizeof name, "m%d", i);
    member(pk, name, 1, NULL);
  }
}
static void m_entry_str(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  pstr(pk, "null");
}
static void m_no_name(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  member(pk, NULL, 1, NULL);
}
static void m_bad_name(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  member(pk, "no spaces", 1, NULL);
}
static void m_name_type(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  msgpack_pack_map(pk, 1);
  pstr(pk, "name");
  msgpack_pack_uint8(pk, 7);
}
static void m_twice(msgpack_packer *pk) {
  msgpack_pack_array(pk, 3);
  member(pk, "otsu", 1, NULL);
  member(pk, "null", 1, NULL);
  member(pk, "null", 2, NULL);
}
static void m_not_own(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "null", 1, NULL);
  member(pk, "cellseg-unet", 1, NULL);
}
static void m_negative(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  member(pk, "null", -0.5, NULL);
}
static void m_nan(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  member(pk, "null", NAN, NULL);
}
static void m_inf(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", INFINITY, NULL);
  member(pk, "null", 1, NULL);
}
static void m_all_zero(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 0, NULL);
  member(pk, "null", 0, NULL);
}
static void m_weight_str(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  msgpack_pack_map(pk, 2);
  pstr(pk, "name");
  pstr(pk, "null");
  pstr(pk, "weight");
  pstr(pk, "1");
}
static void m_unknown_key(msgpack_packer *pk) {
  msgpack_pack_array(pk, 2);
  member(pk, "otsu", 1, NULL);
  member(pk, "null", 1, "wieght");
}

static void expect_error(const char *what, models_fn fn, int code, const char *needle) {
  sq_job_t job;
  sq_error_t err = {0};
  int rc = decode_with(fn, &job, &err);
  if (rc != code || !strstr(err.msg, needle))
    fprintf(stderr, "case %s: rc=%d (%s) msg=\"%s\"\n", what, rc, sq_error_name(rc), err.msg);
  CHECK_EQ_INT(rc, code);
  CHECK(strstr(err.msg, needle) != NULL);
  CHECK_EQ_INT(job.nmembers, 0); /* zeroed on error, members freed */
  CHECK_STR(job.id, "ens-1");   /* the id is kept for the error result */
  sq_proto_job_free(&job);
}

int main(void) {
  sq_job_t job;
  sq_error_t err = {0};

  /* Valid: names and weights, default weight 1; the encoder writes them back. */
  CHECK_EQ_INT(decode_with(m_two, &job, &err), 0);
  CHECK_EQ_INT(job.nmembers, 2);
  CHECK_STR(job.member_names[0], "cellseg-unet");
  CHECK_STR(job.member_names[1], "otsu");
  CHECK(job.member_weights[0] == 0.75f);
  CHECK(job.member_weights[1] == 1.0f);
  size_t len = 0;
  uint8_t *buf = sq_proto_job_encode(&job, &len);
  CHECK(buf != NULL);
  sq_job_t back;
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &back, &err), 0);
  CHECK_EQ_INT(back.nmembers, 2);
  CHECK_STR(back.member_names[0], "cellseg-unet");
  CHECK_STR(back.member_names[1], "otsu");
  CHECK(back.member_weights[0] == 0.75f && back.member_weights[1] == 1.0f);
  free(buf);
  sq_proto_job_free(&back);
  sq_proto_job_free(&job);

  /* nil = absent; integer weights; a 0 weight is fine while another is positive. */
  CHECK_EQ_INT(decode_with(m_nil, &job, &err), 0);
  CHECK_EQ_INT(job.nmembers, 0);
  sq_proto_job_free(&job);
  CHECK_EQ_INT(decode_with(m_int_weight, &job, &err), 0);
  CHECK_EQ_INT(job.nmembers, 2);
  CHECK(job.member_weights[0] == 0.0f && job.member_weights[1] == 3.0f);
  sq_proto_job_free(&job);

  /* Without `models` nothing changes (and the encoder writes no `models`). */
  sq_job_t plain = {0};
  plain.id = "p-1";
  plain.model = "otsu";
  plain.image_format = SQ_IMAGE_GRAY8;
  plain.image_data = (uint8_t *)"\x05";
  plain.image_size = 1;
  plain.width = plain.height = 1;
  buf = sq_proto_job_encode(&plain, &len);
  CHECK(buf != NULL);
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &job, &err), 0);
  CHECK_EQ_INT(job.nmembers, 0);
  sq_proto_job_free(&job);
  free(buf);

  expect_error("not array", m_not_array, SQ_ETYPE, "models: expected array");
  expect_error("one", m_one, SQ_EVALUE, "models: 1 entries");
  expect_error("nine", m_nine, SQ_EVALUE, "models: 9 entries");
  expect_error("entry str", m_entry_str, SQ_ETYPE, "models[1]: expected map");
  expect_error("no name", m_no_name, SQ_EMISSING, "models[1].name: missing");
  expect_error("bad name", m_bad_name, SQ_EVALUE, "models[1].name");
  expect_error("name type", m_name_type, SQ_ETYPE, "models[1].name: expected str");
  expect_error("twice", m_twice, SQ_EVALUE, "named twice");
  expect_error("not own", m_not_own, SQ_EVALUE, "\"otsu\" is not among them");
  expect_error("negative", m_negative, SQ_EVALUE, "models[1].weight");
  expect_error("nan", m_nan, SQ_EVALUE, "models[1].weight");
  expect_error("inf", m_inf, SQ_EVALUE, "models[0].weight");
  expect_error("all zero", m_all_zero, SQ_EVALUE, "every weight is 0");
  expect_error("weight str", m_weight_str, SQ_ETYPE, "models[1].weight: expected float");
  expect_error("unknown key", m_unknown_key, SQ_EVALUE, "unknown key \"wieght\"");
  CHECK_DONE();
}
