/* proto: the result document (docs/protocol.md, "Result"): encoder used by the worker's ack path
 * (mask as RLE, polygons, timings, meta copied verbatim) and a decoder for tests and tools.
 * Pure; any thread. */
#include <stdlib.h>
#include <string.h>

#include "proto/proto_internal.h"

/* ---- encode ---- */

static int pack_key(msgpack_packer *pk, const char *key) {
  return sq_proto_pack_cstr(pk, key);
}

static int pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t v) {
  return pack_key(pk, key) || msgpack_pack_uint64(pk, v);
}

/* Runs of 0 and 1 in row-major order, starting with a (possibly empty) run of 0. Two passes:
 * count the runs so the array header can be written first, then write them. */
static int pack_mask_rle(msgpack_packer *pk, const uint8_t *mask, uint32_t w, uint32_t h) {
  size_t n = (size_t)w * h;
  size_t runs = 1;
  uint8_t cur = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = mask[i] != 0;
    if (b != cur) runs++, cur = b;
  }
  int bad = msgpack_pack_map(pk, 4);
  bad |= pack_key(pk, "encoding") || sq_proto_pack_cstr(pk, "rle");
  bad |= pack_kv_u64(pk, "width", w) || pack_kv_u64(pk, "height", h);
  bad |= pack_key(pk, "counts") || msgpack_pack_array(pk, runs);
  uint64_t run = 0;
  cur = 0;
  for (size_t i = 0; i < n && !bad; i++) {
    uint8_t b = mask[i] != 0;
    if (b != cur) {
      bad |= msgpack_pack_uint64(pk, run);
      run = 0;
      cur = b;
    }
    run++;
  }
  bad |= msgpack_pack_uint64(pk, run);
  return bad;
}

static int pack_polygon(msgpack_packer *pk, const sq_polygon_t *p) {
  int bad = msgpack_pack_map(pk, 3);
  bad |= pack_key(pk, "points") || msgpack_pack_array(pk, (size_t)p->npoints * 2);
  for (size_t i = 0; i < (size_t)p->npoints * 2 && !bad; i++)
    bad |= msgpack_pack_float(pk, p->points[i]);
  bad |= pack_key(pk, "area") || msgpack_pack_float(pk, p->area);
  bad |= pack_key(pk, "bbox") || msgpack_pack_array(pk, 4);
  for (int i = 0; i < 4; i++) bad |= msgpack_pack_float(pk, p->bbox[i]);
  return bad;
}

uint8_t *sq_proto_result_encode(const sq_result_t *res, size_t *out_len) {
  if (!res || !res->id) return NULL;
  int has_meta = res->meta && res->meta_size > 0;
  size_t n =
      10 + (res->model ? 1 : 0) + (res->mask ? 1 : 0) + (res->worker ? 1 : 0) + (has_meta ? 1 : 0);

  /* Start the buffer near the document's size: msgpack-c's first allocation is 8 KiB, and for
   * the ~100-byte results of empty masks that allocation (made on the work pool, freed on the
   * loop thread) was half of the worker's CPU per job in bench/run.py. */
  size_t estimate = 256 + strlen(res->id) + (res->error_message ? strlen(res->error_message) : 0) +
                    (has_meta ? res->meta_size : 0);
  for (size_t i = 0; res->polygons && i < res->npolygons; i++)
    estimate += 48 + (size_t)res->polygons[i].npoints * 10;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  sb.data = malloc(estimate);
  if (!sb.data) return NULL;
  sb.alloc = estimate;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int bad = msgpack_pack_map(&pk, n);
  bad |= pack_kv_u64(&pk, "v", SQ_PROTO_VERSION);
  bad |= pack_key(&pk, "id") || sq_proto_pack_cstr(&pk, res->id);
  bad |= pack_key(&pk, "status") || sq_proto_pack_cstr(&pk, res->error_code ? "error" : "ok");
  bad |= pack_key(&pk, "error");
  if (res->error_code) {
    const char *msg = res->error_message ? res->error_message : sq_error_text(res->error_code);
    bad |= msgpack_pack_map(&pk, 2);
    bad |= pack_key(&pk, "code") || sq_proto_pack_cstr(&pk, sq_error_name(res->error_code));
    bad |= pack_key(&pk, "message") || sq_proto_pack_cstr(&pk, msg);
  } else {
    bad |= msgpack_pack_nil(&pk);
  }
  if (res->model) bad |= pack_key(&pk, "model") || sq_proto_pack_cstr(&pk, res->model);
  bad |= pack_kv_u64(&pk, "width", res->width) || pack_kv_u64(&pk, "height", res->height);

  bad |= pack_key(&pk, "polygons") || msgpack_pack_array(&pk, res->polygons ? res->npolygons : 0);
  for (size_t i = 0; res->polygons && i < res->npolygons && !bad; i++)
    bad |= pack_polygon(&pk, &res->polygons[i]);
  if (res->mask)
    bad |= pack_key(&pk, "mask") || pack_mask_rle(&pk, res->mask, res->width, res->height);

  bad |= pack_key(&pk, "timings") || msgpack_pack_map(&pk, 5);
  bad |= pack_kv_u64(&pk, "queue_wait_us", res->timings.queue_wait_us);
  bad |= pack_kv_u64(&pk, "decode_us", res->timings.decode_us);
  bad |= pack_kv_u64(&pk, "inference_us", res->timings.inference_us);
  bad |= pack_kv_u64(&pk, "postprocess_us", res->timings.postprocess_us);
  bad |= pack_kv_u64(&pk, "total_us", res->timings.total_us);

  if (res->worker) bad |= pack_key(&pk, "worker") || sq_proto_pack_cstr(&pk, res->worker);
  bad |= pack_kv_u64(&pk, "batch_size", res->batch_size);
  bad |= pack_kv_u64(&pk, "attempt", res->attempt);
  /* meta came out of sq_proto_job_decode already encoded: written as-is after its key. */
  if (has_meta)
    bad |= pack_key(&pk, "meta") ||
           msgpack_sbuffer_write(&sb, (const char *)res->meta, res->meta_size);

  if (bad) {
    msgpack_sbuffer_destroy(&sb);
    return NULL;
  }
  if (out_len) *out_len = sb.size;
  return (uint8_t *)msgpack_sbuffer_release(&sb);
}

/* ---- decode (tests and tools) ---- */

void sq_proto_result_decoded_free(sq_result_decoded_t *res) {
  if (!res) return;
  free(res->id);
  free(res->error_code);
  free(res->error_message);
  free(res->model);
  sq_polygons_free(res->polygons, res->npolygons);
  free(res->mask);
  free(res->worker);
  memset(res, 0, sizeof *res);
}

static int type_error(const char *field, const char *expected, const msgpack_object *o,
                      sq_error_t *err) {
  return sq_error_set(err, SQ_ETYPE, "%s: expected %s, got %s", field, expected,
                      sq_proto_type_name(o));
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key) {
  for (uint32_t i = 0; i < map->via.map.size; i++)
    if (sq_proto_str_is(&map->via.map.ptr[i].key, key) &&
        map->via.map.ptr[i].val.type != MSGPACK_OBJECT_NIL)
      return &map->via.map.ptr[i].val;
  return NULL;
}

static int get_str(const msgpack_object *map, const char *key, int required, char **out,
                   sq_error_t *err) {
  const msgpack_object *o = map_get(map, key);
  if (!o) return required ? sq_error_set(err, SQ_EMISSING, "%s: missing", key) : 0;
  if (o->type != MSGPACK_OBJECT_STR) return type_error(key, "str", o, err);
  /* An empty str may have a NULL pointer; memcpy from NULL is undefined even for 0 bytes. */
  *out = o->via.str.size ? sq_strndup(o->via.str.ptr, o->via.str.size) : sq_strdup("");
  return *out ? 0 : sq_error_set(err, SQ_ENOMEM, "%s: out of memory", key);
}

static int get_u64(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out,
                   sq_error_t *err) {
  const msgpack_object *o = map_get(map, key);
  if (!o) return 0;
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return type_error(key, "uint", o, err);
  if (o->via.u64 > max)
    return sq_error_set(err, SQ_EVALUE, "%s: %llu is too large", key,
                        (unsigned long long)o->via.u64);
  *out = o->via.u64;
  return 0;
}

static int get_u32(const msgpack_object *map, const char *key, uint32_t *out, sq_error_t *err) {
  uint64_t v = 0;
  int rc = get_u64(map, key, UINT32_MAX, &v, err);
  if (!rc) *out = (uint32_t)v;
  return rc;
}

static int as_float(const msgpack_object *o, const char *field, float *out, sq_error_t *err) {
  switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      *out = (float)o->via.f64;
      return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      *out = (float)o->via.u64;
      return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      *out = (float)o->via.i64;
      return 0;
    default:
      return type_error(field, "float", o, err);
  }
}

static int decode_polygon(const msgpack_object *o, sq_polygon_t *p, sq_error_t *err) {
  if (o->type != MSGPACK_OBJECT_MAP) return type_error("polygons[]", "map", o, err);
  const msgpack_object *pts = map_get(o, "points"), *area = map_get(o, "area"),
                       *bbox = map_get(o, "bbox");
  if (!pts || !area || !bbox)
    return sq_error_set(err, SQ_EMISSING, "polygons[]: needs points, area and bbox");
  if (pts->type != MSGPACK_OBJECT_ARRAY) return type_error("polygons[].points", "array", pts, err);
  if (pts->via.array.size % 2)
    return sq_error_set(err, SQ_EVALUE, "polygons[].points: odd number of coordinates");
  if (bbox->type != MSGPACK_OBJECT_ARRAY) return type_error("polygons[].bbox", "array", bbox, err);
  if (bbox->via.array.size != 4)
    return sq_error_set(err, SQ_EVALUE, "polygons[].bbox: expected 4 numbers");
  int rc = as_float(area, "polygons[].area", &p->area, err);
  for (int i = 0; i < 4 && !rc; i++)
    rc = as_float(&bbox->via.array.ptr[i], "polygons[].bbox", &p->bbox[i], err);
  if (rc) return rc;
  p->npoints = pts->via.array.size / 2;
  p->points = sq_xmalloc(pts->via.array.size * sizeof(float));
  if (!p->points) return sq_error_set(err, SQ_ENOMEM, "polygons[].points: out of memory");
  for (uint32_t i = 0; i < pts->via.array.size && !rc; i++)
    rc = as_float(&pts->via.array.ptr[i], "polygons[].points", &p->points[i], err);
  return rc;
}

static int decode_mask(const msgpack_object *o, sq_result_decoded_t *res, sq_error_t *err) {
  if (o->type != MSGPACK_OBJECT_MAP) return type_error("mask", "map", o, err);
  const msgpack_object *enc = map_get(o, "encoding"), *counts = map_get(o, "counts");
  if (!enc || !counts) return sq_error_set(err, SQ_EMISSING, "mask: needs encoding and counts");
  if (!sq_proto_str_is(enc, "rle"))
    return sq_error_set(err, SQ_EVALUE, "mask.encoding: expected \"rle\"");
  if (counts->type != MSGPACK_OBJECT_ARRAY) return type_error("mask.counts", "array", counts, err);
  uint32_t w = 0, h = 0;
  int rc = get_u32(o, "width", &w, err);
  if (!rc) rc = get_u32(o, "height", &h, err);
  if (rc) return rc;
  if (w != res->width || h != res->height)
    return sq_error_set(err, SQ_EVALUE, "mask: %ux%u differs from the result's %ux%u", w, h,
                        res->width, res->height);
  uint64_t n = (uint64_t)w * h;
  if (n > SQ_PROTO_MAX_PIXELS) return sq_error_set(err, SQ_EVALUE, "mask: too many pixels");
  res->mask = sq_xmalloc((size_t)n);
  if (!res->mask) return sq_error_set(err, SQ_ENOMEM, "mask: out of memory");
  uint64_t pos = 0;
  for (uint32_t i = 0; i < counts->via.array.size; i++) {
    const msgpack_object *c = &counts->via.array.ptr[i];
    if (c->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
      return type_error("mask.counts[]", "uint", c, err);
    if (c->via.u64 > n - pos)
      return sq_error_set(err, SQ_EVALUE, "mask.counts: runs exceed width*height");
    memset(res->mask + pos, (int)(i & 1), (size_t)c->via.u64);
    pos += c->via.u64;
  }
  if (pos != n)
    return sq_error_set(err, SQ_EVALUE, "mask.counts: runs cover %llu of %llu pixels",
                        (unsigned long long)pos, (unsigned long long)n);
  return 0;
}

static int decode_result(const msgpack_object *root, sq_result_decoded_t *res, sq_error_t *err) {
  if (root->type != MSGPACK_OBJECT_MAP)
    return sq_error_set(err, SQ_EMALFORMED, "document: expected map, got %s",
                        sq_proto_type_name(root));
  for (uint32_t i = 0; i < root->via.map.size; i++)
    if (root->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
      return sq_error_set(err, SQ_EMALFORMED, "document: map key is not a str");
  const msgpack_object *v = map_get(root, "v");
  if (!v) return sq_error_set(err, SQ_EMISSING, "v: missing");
  if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return type_error("v", "uint", v, err);
  if (v->via.u64 != SQ_PROTO_VERSION)
    return sq_error_set(err, SQ_EVERSION, "v: version %llu is not supported",
                        (unsigned long long)v->via.u64);
  int rc = get_str(root, "id", 1, &res->id, err);
  if (rc) return rc;
  const msgpack_object *status = map_get(root, "status");
  if (!status) return sq_error_set(err, SQ_EMISSING, "status: missing");
  if (sq_proto_str_is(status, "ok"))
    res->ok = 1;
  else if (!sq_proto_str_is(status, "error"))
    return sq_error_set(err, status->type == MSGPACK_OBJECT_STR ? SQ_EVALUE : SQ_ETYPE,
                        "status: expected \"ok\" or \"error\"");
  const msgpack_object *e = map_get(root, "error");
  if (e) {
    if (e->type != MSGPACK_OBJECT_MAP) return type_error("error", "map", e, err);
    if ((rc = get_str(e, "code", 1, &res->error_code, err))) return rc;
    if ((rc = get_str(e, "message", 0, &res->error_message, err))) return rc;
  } else if (!res->ok) {
    return sq_error_set(err, SQ_EMISSING, "error: missing for status \"error\"");
  }
  if ((rc = get_str(root, "model", 0, &res->model, err))) return rc;
  if ((rc = get_str(root, "worker", 0, &res->worker, err))) return rc;
  if ((rc = get_u32(root, "width", &res->width, err))) return rc;
  if ((rc = get_u32(root, "height", &res->height, err))) return rc;
  if ((rc = get_u32(root, "batch_size", &res->batch_size, err))) return rc;
  if ((rc = get_u32(root, "attempt", &res->attempt, err))) return rc;

  const msgpack_object *t = map_get(root, "timings");
  if (t) {
    if (t->type != MSGPACK_OBJECT_MAP) return type_error("timings", "map", t, err);
    if ((rc = get_u64(t, "queue_wait_us", UINT64_MAX, &res->timings.queue_wait_us, err)) ||
        (rc = get_u64(t, "decode_us", UINT64_MAX, &res->timings.decode_us, err)) ||
        (rc = get_u64(t, "inference_us", UINT64_MAX, &res->timings.inference_us, err)) ||
        (rc = get_u64(t, "postprocess_us", UINT64_MAX, &res->timings.postprocess_us, err)) ||
        (rc = get_u64(t, "total_us", UINT64_MAX, &res->timings.total_us, err)))
      return rc;
  }

  const msgpack_object *polys = map_get(root, "polygons");
  if (polys) {
    if (polys->type != MSGPACK_OBJECT_ARRAY) return type_error("polygons", "array", polys, err);
    if (polys->via.array.size) {
      res->polygons = calloc(polys->via.array.size, sizeof *res->polygons);
      if (!res->polygons) return sq_error_set(err, SQ_ENOMEM, "polygons: out of memory");
      for (uint32_t i = 0; i < polys->via.array.size; i++) {
        res->npolygons = i + 1; /* so a partial polygon is freed too */
        if ((rc = decode_polygon(&polys->via.array.ptr[i], &res->polygons[i], err))) return rc;
      }
    }
  }
  const msgpack_object *mask = map_get(root, "mask");
  if (mask && (rc = decode_mask(mask, res, err))) return rc;
  return 0;
}

int sq_proto_result_decode(const void *buf, size_t len, sq_result_decoded_t *res, sq_error_t *err) {
  memset(res, 0, sizeof *res);
  sq_error_clear(err);
  int rc = sq_proto_scan(buf, len, SQ_PROTO_MAX_DEPTH, SQ_PROTO_MAX_RESULT_OBJECTS, err);
  if (rc) return rc;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  msgpack_unpack_return ur = msgpack_unpack_next(&u, buf, len, &off);
  if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
    rc = sq_error_set(err, SQ_ENOMEM, "document: out of memory while unpacking");
  else if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
    rc = sq_error_set(err, SQ_EMALFORMED, "not a valid msgpack document (unpack status %d)",
                      (int)ur);
  else
    rc = decode_result(&u.data, res, err);
  msgpack_unpacked_destroy(&u);
  if (rc) sq_proto_result_decoded_free(res);
  return rc;
}
