/* Structural pre-scan of untrusted msgpack bytes, run before msgpack-c unpacks them: msgpack-c
 * allocates room for a container's elements as soon as it reads the header, so a 5-byte
 * "array of 2^32 elements" would ask for 64 GiB. The scan proves the document is complete and
 * small enough first. Pure; any thread. */
#include <string.h>

#include "proto/proto_internal.h"

typedef struct {
  const uint8_t *start, *p, *end;
  unsigned max_depth;
  uint64_t objects, max_objects;
  sq_error_t *err;
} scanner_t;

static int scan_fail(scanner_t *s, const char *what) {
  return sq_error_set(s->err, SQ_EMALFORMED, "not a valid msgpack document: %s at byte %zu", what,
                      (size_t)(s->p - s->start));
}

/* Reads an n-byte big-endian length. */
static int scan_be(scanner_t *s, size_t n, uint64_t *out) {
  if ((size_t)(s->end - s->p) < n) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v = (v << 8) | s->p[i];
  s->p += n;
  *out = v;
  return 0;
}

static int scan_skip(scanner_t *s, uint64_t n) {
  if ((uint64_t)(s->end - s->p) < n) return -1;
  s->p += n;
  return 0;
}

/* Each scan_* returns 0, or SQ_EMALFORMED with the reason in s->err. Recursion depth is bounded
 * by max_depth. */
static int scan_object(scanner_t *s, unsigned depth);

static int scan_elements(scanner_t *s, uint64_t n, unsigned depth) {
  if (depth > s->max_depth) return scan_fail(s, "nesting too deep");
  /* Every element takes at least one byte: reject impossible counts before walking them. */
  if (n > (uint64_t)(s->end - s->p)) return scan_fail(s, "truncated");
  for (uint64_t i = 0; i < n; i++)
    if (scan_object(s, depth) < 0) return SQ_EMALFORMED;
  return 0;
}

/* A str/bin/ext: an n_bytes big-endian length, then extra + length bytes. */
static int scan_sized(scanner_t *s, size_t n_bytes, uint64_t extra) {
  uint64_t n = 0;
  if (scan_be(s, n_bytes, &n) || scan_skip(s, n + extra)) return scan_fail(s, "truncated");
  return 0;
}

static int scan_fixed(scanner_t *s, uint64_t n) {
  if (scan_skip(s, n)) return scan_fail(s, "truncated");
  return 0;
}

/* An array or map with an n_bytes big-endian count; a map has 2 objects per entry. */
static int scan_container(scanner_t *s, size_t n_bytes, uint64_t per_entry, unsigned depth) {
  uint64_t n = 0;
  if (scan_be(s, n_bytes, &n)) return scan_fail(s, "truncated");
  return scan_elements(s, n * per_entry, depth + 1);
}

static int scan_object(scanner_t *s, unsigned depth) {
  if (s->p >= s->end) return scan_fail(s, "truncated");
  if (++s->objects > s->max_objects) return scan_fail(s, "too many objects");
  uint8_t b = *s->p++;
  /* The type byte's ranges, in the order of the msgpack spec's format table. */
  if (b <= 0x7f || b >= 0xe0) return 0;                                     /* fixint */
  if (b <= 0x8f) return scan_elements(s, 2u * (b & 0x0f), depth + 1);       /* fixmap */
  if (b <= 0x9f) return scan_elements(s, b & 0x0f, depth + 1);              /* fixarray */
  if (b <= 0xbf) return scan_fixed(s, b & 0x1f);                            /* fixstr */
  if (b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;                        /* nil, false, true */
  if (b >= 0xc4 && b <= 0xc6) return scan_sized(s, 1u << (b - 0xc4), 0);    /* bin 8/16/32 */
  if (b >= 0xc7 && b <= 0xc9) return scan_sized(s, 1u << (b - 0xc7), 1);    /* ext: + type */
  if (b == 0xca) return scan_fixed(s, 4);                                   /* float32 */
  if (b == 0xcb) return scan_fixed(s, 8);                                   /* float64 */
  if (b >= 0xcc && b <= 0xcf) return scan_fixed(s, 1u << (b - 0xcc));       /* uint 8..64 */
  if (b >= 0xd0 && b <= 0xd3) return scan_fixed(s, 1u << (b - 0xd0));       /* int 8..64 */
  if (b >= 0xd4 && b <= 0xd8) return scan_fixed(s, 1 + (1u << (b - 0xd4))); /* fixext */
  if (b >= 0xd9 && b <= 0xdb) return scan_sized(s, 1u << (b - 0xd9), 0);    /* str 8/16/32 */
  if (b == 0xdc || b == 0xdd) return scan_container(s, b == 0xdc ? 2 : 4, 1, depth);
  if (b == 0xde || b == 0xdf) return scan_container(s, b == 0xde ? 2 : 4, 2, depth);
  s->p--; /* 0xc1: never used */
  return scan_fail(s, "reserved byte 0xc1");
}

int sq_proto_scan(const uint8_t *buf, size_t len, unsigned max_depth, uint64_t max_objects,
                  sq_error_t *err) {
  if (!buf || len == 0)
    return sq_error_set(err, SQ_EMALFORMED, "not a valid msgpack document: empty");
  scanner_t s = {buf, buf, buf + len, max_depth, 0, max_objects, err};
  if (scan_object(&s, 0) < 0) return SQ_EMALFORMED;
  if (s.p != s.end)
    return sq_error_set(err, SQ_EMALFORMED,
                        "not a valid msgpack document: %zu trailing bytes after the document",
                        (size_t)(s.end - s.p));
  return 0;
}

const char *sq_proto_type_name(const msgpack_object *o) {
  switch (o->type) {
    case MSGPACK_OBJECT_NIL:
      return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
      return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      return "negative int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      return "float";
    case MSGPACK_OBJECT_STR:
      return "str";
    case MSGPACK_OBJECT_BIN:
      return "bin";
    case MSGPACK_OBJECT_ARRAY:
      return "array";
    case MSGPACK_OBJECT_MAP:
      return "map";
    case MSGPACK_OBJECT_EXT:
      return "ext";
  }
  return "unknown";
}

int sq_proto_str_is(const msgpack_object *o, const char *s) {
  size_t n = strlen(s);
  return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
         (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}

void sq_proto_printable(const char *s, size_t len, char *out, size_t out_size) {
  size_t n = 0;
  for (size_t i = 0; i < len && i < 32 && n + 4 < out_size; i++)
    out[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') ? s[i] : '?';
  if (len > 32 && n + 4 < out_size) out[n++] = '.', out[n++] = '.', out[n++] = '.';
  out[n] = '\0';
}

int sq_proto_pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}
