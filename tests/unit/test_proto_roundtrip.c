/* proto: what the encoders write, the decoders read back unchanged: jobs with and without every
 * optional field (meta included), results with polygons, a mask through RLE, errors and meta. */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/proto.h"

static void test_job_full(void) {
  uint8_t px[3 * 2 * 2] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  /* meta = {"user": "ann", "tags": [1, -2, 3.5], "raw": bin(2)} */
  msgpack_sbuffer mb;
  msgpack_sbuffer_init(&mb);
  msgpack_packer mp;
  msgpack_packer_init(&mp, &mb, msgpack_sbuffer_write);
  msgpack_pack_map(&mp, 3);
  msgpack_pack_str_with_body(&mp, "user", 4);
  msgpack_pack_str_with_body(&mp, "ann", 3);
  msgpack_pack_str_with_body(&mp, "tags", 4);
  msgpack_pack_array(&mp, 3);
  msgpack_pack_int(&mp, 1);
  msgpack_pack_int(&mp, -2);
  msgpack_pack_double(&mp, 3.5);
  msgpack_pack_str_with_body(&mp, "raw", 3);
  msgpack_pack_bin_with_body(&mp, "\x00\xff", 2);

  sq_job_t in = {0};
  in.id = "job:42_a.b-c";
  in.model = "cellseg-unet";
  in.tenant = "acme";
  in.group = "upload-1";
  in.priority = -3;
  in.deadline_ms = 1700000000123ull;
  in.image_format = SQ_IMAGE_GRAY16;
  in.image_data = px;
  in.image_size = sizeof px;
  in.width = 3;
  in.height = 2;
  in.has_threshold = 1;
  in.threshold = 0.25f;
  in.has_min_area = 1;
  in.min_area = 9;
  in.outputs = SQ_OUTPUT_POLYGONS | SQ_OUTPUT_MASK;
  in.input_range_mode = SQ_PROTO_RANGE_PERCENTILE;
  in.input_range_low = 2.5f;
  in.input_range_high = 99.5f;
  in.meta = (uint8_t *)mb.data;
  in.meta_size = mb.size;

  size_t len = 0;
  uint8_t *buf = sq_proto_job_encode(&in, &len);
  CHECK(buf != NULL);
  sq_job_t out;
  sq_error_t err;
  int rc = sq_proto_job_decode(buf, len, &out, &err);
  if (rc) fprintf(stderr, "decode: %s\n", err.msg);
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(out.id, in.id);
  CHECK_STR(out.model, in.model);
  CHECK_STR(out.tenant, "acme");
  CHECK_STR(out.group, "upload-1");
  CHECK_EQ_INT(out.priority, -3);
  CHECK_EQ_INT(out.deadline_ms, 1700000000123ull);
  CHECK_EQ_INT(out.image_format, SQ_IMAGE_GRAY16);
  CHECK_EQ_INT(out.image_size, sizeof px);
  CHECK(out.image_data && memcmp(out.image_data, px, sizeof px) == 0);
  CHECK_EQ_INT(out.width, 3);
  CHECK_EQ_INT(out.height, 2);
  CHECK(out.has_threshold && out.threshold == 0.25f);
  CHECK(out.has_min_area && out.min_area == 9);
  CHECK_EQ_INT(out.outputs, SQ_OUTPUT_POLYGONS | SQ_OUTPUT_MASK);
  CHECK_EQ_INT(out.input_range_mode, SQ_PROTO_RANGE_PERCENTILE);
  CHECK(out.input_range_low == 2.5f && out.input_range_high == 99.5f);
  CHECK_EQ_INT(out.meta_size, mb.size);
  CHECK(out.meta && memcmp(out.meta, mb.data, mb.size) == 0);

  /* The decoded job owns its memory: wipe the input and look again. */
  memset(buf, 0, len);
  free(buf);
  CHECK_STR(out.id, "job:42_a.b-c");
  CHECK(out.image_data[0] == 1);

  /* Encode the decoded job again: same bytes as the first encoding's decode. */
  size_t len2 = 0;
  uint8_t *buf2 = sq_proto_job_encode(&out, &len2);
  sq_job_t out2;
  CHECK_EQ_INT(sq_proto_job_decode(buf2, len2, &out2, &err), 0);
  CHECK_STR(out2.id, out.id);
  CHECK_EQ_INT(out2.meta_size, out.meta_size);
  free(buf2);
  sq_proto_job_free(&out2);
  sq_proto_job_free(&out);
  CHECK(out.id == NULL && out.meta == NULL); /* free zeroes */
  sq_proto_job_free(&out);                   /* and twice is harmless */
  msgpack_sbuffer_destroy(&mb);
}

static void test_job_minimal(void) {
  uint8_t jpeg[4] = {0xff, 0xd8, 0xff, 0xd9};
  sq_job_t in = {0};
  in.id = "j";
  in.model = "null";
  in.image_format = SQ_IMAGE_JPEG;
  in.image_data = jpeg;
  in.image_size = sizeof jpeg;
  size_t len = 0;
  uint8_t *buf = sq_proto_job_encode(&in, &len);
  sq_job_t out;
  sq_error_t err;
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &out, &err), 0);
  CHECK_STR(out.id, "j");
  CHECK_STR(out.tenant, "default");
  CHECK(out.group == NULL);
  CHECK(out.meta == NULL && out.meta_size == 0);
  CHECK_EQ_INT(out.outputs, SQ_OUTPUT_POLYGONS);
  CHECK(!out.has_threshold && !out.has_min_area);
  CHECK_EQ_INT(out.priority, 0);
  CHECK_EQ_INT(out.deadline_ms, 0);
  CHECK_EQ_INT(out.width, 0);
  CHECK_EQ_INT(out.image_format, SQ_IMAGE_JPEG);
  CHECK(out.image_size == 4 && memcmp(out.image_data, jpeg, 4) == 0);
  free(buf);
  sq_proto_job_free(&out);

  /* gray8, mask only, a positive priority. */
  uint8_t g[2] = {7, 8};
  in.image_format = SQ_IMAGE_GRAY8;
  in.image_data = g;
  in.image_size = 2;
  in.width = 1;
  in.height = 2;
  in.outputs = SQ_OUTPUT_MASK;
  in.priority = 9;
  buf = sq_proto_job_encode(&in, &len);
  CHECK_EQ_INT(sq_proto_job_decode(buf, len, &out, &err), 0);
  CHECK_EQ_INT(out.outputs, SQ_OUTPUT_MASK);
  CHECK_EQ_INT(out.priority, 9);
  CHECK_EQ_INT(out.height, 2);
  free(buf);
  sq_proto_job_free(&out);

  /* rgb8 and rgb16: 3 and 6 bytes per pixel; a size that counts one channel is refused. */
  uint8_t rgb[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const sq_image_format_t rgb_formats[2] = {SQ_IMAGE_RGB8, SQ_IMAGE_RGB16};
  for (int k = 0; k < 2; k++) {
    in.image_format = rgb_formats[k];
    in.image_data = rgb;
    in.image_size = k == 0 ? 6 : 12;
    in.width = 2;
    in.height = 1;
    buf = sq_proto_job_encode(&in, &len);
    CHECK(buf != NULL);
    CHECK_EQ_INT(sq_proto_job_decode(buf, len, &out, &err), 0);
    CHECK_EQ_INT(out.image_format, rgb_formats[k]);
    CHECK(out.image_size == in.image_size && memcmp(out.image_data, rgb, in.image_size) == 0);
    free(buf);
    sq_proto_job_free(&out);
    in.image_size = 2; /* width*height bytes: one channel only */
    buf = sq_proto_job_encode(&in, &len);
    CHECK_EQ_INT(sq_proto_job_decode(buf, len, &out, &err), SQ_EVALUE);
    free(buf);
    sq_proto_job_free(&out);
  }
  CHECK_STR(sq_proto_image_format_name(SQ_IMAGE_RGB16), "rgb16");
  CHECK(sq_proto_image_format_name((sq_image_format_t)99) == NULL);
  uint32_t ch, bytes;
  sq_proto_image_format_layout(SQ_IMAGE_RGB16, &ch, &bytes);
  CHECK(ch == 3 && bytes == 2);
  sq_proto_image_format_layout(SQ_IMAGE_JPEG, &ch, &bytes);
  CHECK(ch == 0 && bytes == 0);
  in.image_format = SQ_IMAGE_GRAY8;
  in.image_data = g;
  in.image_size = 2;
  in.width = 1;
  in.height = 2;

  /* The encoder refuses what it cannot write. */
  in.id = NULL;
  CHECK(sq_proto_job_encode(&in, &len) == NULL);
}

/* A job as the Python client (clients/python/segq/proto.py encode_job) writes it, with every
 * optional field: the C decoder must read what the other encoder produces, not only its own. */
static void test_job_from_python(void) {
  static const char py[] =
      "\x8a\xa1\x76\x01\xa2\x69\x64\xa4\x70\x79\x2d\x31\xa5\x6d\x6f\x64\x65\x6c\xa4\x6f\x74\x73"
      "\x75\xa5\x69\x6d\x61\x67\x65\x84\xa6\x66\x6f\x72\x6d\x61\x74\xa6\x67\x72\x61\x79\x31\x36"
      "\xa4\x64\x61\x74\x61\xc4\x04\x00\xff\x07\x09\xa5\x77\x69\x64\x74\x68\x02\xa6\x68\x65\x69"
      "\x67\x68\x74\x01\xa6\x70\x61\x72\x61\x6d\x73\x83\xa9\x74\x68\x72\x65\x73\x68\x6f\x6c\x64"
      "\xcb\x3f\xe8\x00\x00\x00\x00\x00\x00\xa7\x6f\x75\x74\x70\x75\x74\x73\x91\xa4\x6d\x61\x73"
      "\x6b\xa8\x6d\x69\x6e\x5f\x61\x72\x65\x61\x03\xa8\x70\x72\x69\x6f\x72\x69\x74\x79\xff\xab"
      "\x64\x65\x61\x64\x6c\x69\x6e\x65\x5f\x6d\x73\xcf\x00\x00\x01\xa3\x18\x5c\x50\x00\xa5\x67"
      "\x72\x6f\x75\x70\xa3\x67\x72\x70\xa6\x74\x65\x6e\x61\x6e\x74\xa3\x74\x65\x6e\xa4\x6d\x65"
      "\x74\x61\x81\xa1\x61\x93\x01\xc0\xa1\x78";
  sq_job_t job;
  sq_error_t err;
  int rc = sq_proto_job_decode(py, sizeof py - 1, &job, &err);
  if (rc) fprintf(stderr, "python job: %s\n", err.msg);
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(job.id, "py-1");
  CHECK_STR(job.model, "otsu");
  CHECK_STR(job.group, "grp");
  CHECK_STR(job.tenant, "ten");
  CHECK_EQ_INT(job.image_format, SQ_IMAGE_GRAY16);
  CHECK(job.width == 2 && job.height == 1 && job.image_size == 4);
  CHECK(job.image_data && job.image_data[1] == 0xff);
  CHECK(job.has_threshold && job.threshold == 0.75f);
  CHECK(job.has_min_area && job.min_area == 3);
  CHECK_EQ_INT(job.outputs, SQ_OUTPUT_MASK);
  CHECK_EQ_INT(job.priority, -1);
  CHECK_EQ_INT(job.deadline_ms, 1800000000000ull);
  /* {"a": [1, nil, "x"]} is already in its smallest encoding, so the bytes are unchanged. */
  CHECK(job.meta_size == 8 && memcmp(job.meta, "\x81\xa1\x61\x93\x01\xc0\xa1\x78", 8) == 0);
  sq_proto_job_free(&job);
}

/* Finds key in the top-level map of a result and re-packs its value. */
static int result_field(const uint8_t *buf, size_t len, const char *key, msgpack_sbuffer *out) {
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  int found = 0;
  if (msgpack_unpack_next(&u, (const char *)buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      msgpack_object_kv *kv = &u.data.via.map.ptr[i];
      if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
          memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, kv->val);
        found = 1;
      }
    }
  }
  msgpack_unpacked_destroy(&u);
  return found;
}

static void test_result_ok(void) {
  enum { W = 37, H = 11 };
  uint8_t mask[W * H];
  srand(7);
  for (int i = 0; i < W * H; i++) mask[i] = (uint8_t)((rand() % 5) == 0 ? 0 : (rand() % 3 ? 1 : 0));
  mask[0] = 1; /* the first run of zeros is empty */

  float pts0[] = {0, 0, 2, 0, 2, 3, 0, 3};
  float pts1[] = {10.5f, 1, 12, 1, 11, 4};
  sq_polygon_t polys[2] = {
      {pts0, 4, 6.0f, {0, 0, 2, 3}},
      {pts1, 3, 2.0f, {10.5f, 1, 1.5f, 3}},
  };
  uint8_t meta[] = {0x81, 0xa1, 'k', 0x92, 0x01, 0xc3}; /* {"k": [1, true]} */

  sq_result_t r = {0};
  r.id = "job-9";
  r.model = "otsu";
  r.width = W;
  r.height = H;
  r.polygons = polys;
  r.npolygons = 2;
  r.mask = mask;
  r.timings = (sq_timings_t){1, 2, 3, 4, 5000000000ull};
  r.worker = "w-1";
  r.batch_size = 8;
  r.attempt = 2;
  r.meta = meta;
  r.meta_size = sizeof meta;

  size_t len = 0;
  uint8_t *buf = sq_proto_result_encode(&r, &len);
  CHECK(buf != NULL);
  sq_result_decoded_t d;
  sq_error_t err;
  int rc = sq_proto_result_decode(buf, len, &d, &err);
  if (rc) fprintf(stderr, "result decode: %s\n", err.msg);
  CHECK_EQ_INT(rc, 0);
  CHECK_STR(d.id, "job-9");
  CHECK(d.ok);
  CHECK(d.error_code == NULL && d.error_message == NULL);
  CHECK_STR(d.model, "otsu");
  CHECK_STR(d.worker, "w-1");
  CHECK_EQ_INT(d.width, W);
  CHECK_EQ_INT(d.height, H);
  CHECK_EQ_INT(d.batch_size, 8);
  CHECK_EQ_INT(d.attempt, 2);
  CHECK_EQ_INT(d.timings.queue_wait_us, 1);
  CHECK_EQ_INT(d.timings.decode_us, 2);
  CHECK_EQ_INT(d.timings.inference_us, 3);
  CHECK_EQ_INT(d.timings.postprocess_us, 4);
  CHECK_EQ_INT(d.timings.total_us, 5000000000ll);
  CHECK_EQ_INT(d.npolygons, 2);
  if (d.npolygons == 2) {
    for (int p = 0; p < 2; p++) {
      CHECK_EQ_INT(d.polygons[p].npoints, polys[p].npoints);
      CHECK(memcmp(d.polygons[p].points, polys[p].points, polys[p].npoints * 2 * sizeof(float)) ==
            0);
      CHECK(d.polygons[p].area == polys[p].area);
      CHECK(memcmp(d.polygons[p].bbox, polys[p].bbox, sizeof polys[p].bbox) == 0);
    }
  }
  CHECK(d.mask != NULL);
  if (d.mask) {
    int same = 1;
    for (int i = 0; i < W * H; i++) same &= d.mask[i] == (mask[i] != 0);
    CHECK(same);
  }
  /* meta is copied verbatim, and the RLE starts with an empty run of zeros. */
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  CHECK(result_field(buf, len, "meta", &sb));
  CHECK(sb.size == sizeof meta && memcmp(sb.data, meta, sizeof meta) == 0);
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_init(&sb);
  CHECK(result_field(buf, len, "mask", &sb));
  CHECK(sb.size > 0 && memmem(sb.data, sb.size,
                              "\xa6"
                              "counts",
                              7) != NULL);
  const char *counts = memmem(sb.data, sb.size,
                              "\xa6"
                              "counts",
                              7);
  if (counts) CHECK((uint8_t)counts[7 + 3] == 0x00); /* array16 header (3 bytes), then 0 */
  msgpack_sbuffer_destroy(&sb);

  sq_proto_result_decoded_free(&d);
  free(buf);
}

static void test_result_mask_patterns(void) {
  /* All zeros, all ones, a 1x1 mask, alternating: RLE runs must cover exactly w*h. */
  uint8_t m[64];
  for (int pattern = 0; pattern < 4; pattern++) {
    uint32_t w = pattern == 2 ? 1 : 8, h = pattern == 2 ? 1 : 8;
    for (uint32_t i = 0; i < w * h; i++)
      m[i] = pattern == 0 ? 0 : pattern == 1 ? 1 : pattern == 2 ? 1 : (uint8_t)(i & 1);
    sq_result_t r = {0};
    r.id = "m";
    r.width = w;
    r.height = h;
    r.mask = m;
    size_t len;
    uint8_t *buf = sq_proto_result_encode(&r, &len);
    sq_result_decoded_t d;
    sq_error_t err;
    CHECK_EQ_INT(sq_proto_result_decode(buf, len, &d, &err), 0);
    CHECK(d.mask && memcmp(d.mask, m, w * h) == 0);
    CHECK(d.model == NULL && d.worker == NULL && d.npolygons == 0);
    sq_proto_result_decoded_free(&d);
    free(buf);
  }
}

static void test_result_error(void) {
  sq_result_t r = {0};
  r.id = "bad-1";
  r.error_code = SQ_ETYPE;
  r.error_message = "image.width: expected uint, got str";
  r.attempt = 1;
  size_t len;
  uint8_t *buf = sq_proto_result_encode(&r, &len);
  sq_result_decoded_t d;
  sq_error_t err;
  CHECK_EQ_INT(sq_proto_result_decode(buf, len, &d, &err), 0);
  CHECK(!d.ok);
  CHECK_STR(d.error_code, "wrong_field_type");
  CHECK_STR(d.error_message, "image.width: expected uint, got str");
  CHECK(d.model == NULL);
  CHECK(d.mask == NULL && d.npolygons == 0);
  CHECK_EQ_INT(d.width, 0);
  CHECK_EQ_INT(d.attempt, 1);
  sq_proto_result_decoded_free(&d);
  free(buf);

  /* Without a message the code's text is used. */
  r.error_message = NULL;
  r.error_code = SQ_EDEADLINE;
  buf = sq_proto_result_encode(&r, &len);
  CHECK_EQ_INT(sq_proto_result_decode(buf, len, &d, &err), 0);
  CHECK_STR(d.error_code, "deadline_exceeded");
  CHECK_STR(d.error_message, sq_error_text(SQ_EDEADLINE));
  /* Every truncation of a result is rejected as well. */
  int all_err = 1;
  for (size_t n = 0; n < len; n++) {
    sq_result_decoded_t t;
    if (sq_proto_result_decode(buf, n, &t, &err) != SQ_EMALFORMED) all_err = 0;
    sq_proto_result_decoded_free(&t);
  }
  CHECK(all_err);
  sq_proto_result_decoded_free(&d);
  free(buf);

  /* Byte flips of a full result (polygons, mask) decode or fail, never crash. */
  float pts[] = {0, 0, 1, 0, 1, 1};
  sq_polygon_t poly = {pts, 3, 1.0f, {0, 0, 1, 1}};
  uint8_t mask[6] = {0, 1, 1, 0, 0, 1};
  sq_result_t full = {0};
  full.id = "f";
  full.error_message = "";
  full.width = 3;
  full.height = 2;
  full.polygons = &poly;
  full.npolygons = 1;
  full.mask = mask;
  buf = sq_proto_result_encode(&full, &len);
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      buf[i] ^= (uint8_t)(1u << bit);
      sq_result_decoded_t t;
      (void)sq_proto_result_decode(buf, len, &t, &err);
      sq_proto_result_decoded_free(&t);
      buf[i] ^= (uint8_t)(1u << bit);
    }
  }
  free(buf);

  r.id = NULL;
  CHECK(sq_proto_result_encode(&r, &len) == NULL);
}

int main(void) {
  test_job_full();
  test_job_minimal();
  test_job_from_python();
  test_result_ok();
  test_result_mask_patterns();
  test_result_error();
  CHECK_DONE();
}
