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

/* Returns 0, or -1 with the reason in s->err. Recursion depth is bounded by max_depth. */
static int scan_object(scanner_t *s, unsigned depth);

static int scan_elements(scanner_t *s, uint64_t n, unsigned depth) {
  if (depth > s->max_depth) {
    scan_fail(s, "nesting too deep");
    return -1;
  }
  /* Every element takes at least one byte: reject impossible counts before walking them. */
  if (n > (uint64_t)(s->end - s->p)) {
    scan_fail(s, "truncated");
    return -1;
  }
  for (uint64_t i = 0; i < n; i++)
    if (scan_object(s, depth) < 0) return -1;
  return 0;
}

static int scan_object(scanner_t *s, unsigned depth) {
  if (s->p >= s->end) {
    scan_fail(s, "truncated");
    return -1;
  }
  if (++s->objects > s->max_objects) {
    scan_fail(s, "too many objects");
    return -1;
  }
  uint8_t b = *s->p++;
  uint64_t n = 0;
  int rc = 0;
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0; /* fixint, nil, bool */
  if ((b & 0xf0) == 0x80) return scan_elements(s, 2u * (b & 0x0f), depth + 1); /* fixmap */
  if ((b & 0xf0) == 0x90) return scan_elements(s, b & 0x0f, depth + 1);        /* fixarray */
  if ((b & 0xe0) == 0xa0) rc = scan_skip(s, b & 0x1f);                         /* fixstr */
  else {
    switch (b) {
      case 0xc4: case 0xd9: rc = scan_be(s, 1, &n) || scan_skip(s, n); break; /* bin8, str8 */
      case 0xc5: case 0xda: rc = scan_be(s, 2, &n) || scan_skip(s, n); break;
      case 0xc6: case 0xdb: rc = scan_be(s, 4, &n) || scan_skip(s, n); break;
      case 0xc7: rc = scan_be(s, 1, &n) || scan_skip(s, n + 1); break; /* ext8: type byte + data */
      case 0xc8: rc = scan_be(s, 2, &n) || scan_skip(s, n + 1); break;
      case 0xc9: rc = scan_be(s, 4, &n) || scan_skip(s, n + 1); break;
      case 0xca: rc = scan_skip(s, 4); break; /* float32 */
      case 0xcb: rc = scan_skip(s, 8); break; /* float64 */
      case 0xcc: case 0xd0: rc = scan_skip(s, 1); break;
      case 0xcd: case 0xd1: rc = scan_skip(s, 2); break;
      case 0xce: case 0xd2: rc = scan_skip(s, 4); break;
      case 0xcf: case 0xd3: rc = scan_skip(s, 8); break;
      case 0xd4: rc = scan_skip(s, 2); break; /* fixext: type byte + 1, 2, 4, 8, 16 */
      case 0xd5: rc = scan_skip(s, 3); break;
      case 0xd6: rc = scan_skip(s, 5); break;
      case 0xd7: rc = scan_skip(s, 9); break;
      case 0xd8: rc = scan_skip(s, 17); break;
      case 0xdc: if (scan_be(s, 2, &n)) break; return scan_elements(s, n, depth + 1);
      case 0xdd: if (scan_be(s, 4, &n)) break; return scan_elements(s, n, depth + 1);
      case 0xde: if (scan_be(s, 2, &n)) break; return scan_elements(s, 2 * n, depth + 1);
      case 0xdf: if (scan_be(s, 4, &n)) break; return scan_elements(s, 2 * n, depth + 1);
      default: /* 0xc1 is reserved */
        s->p--;
        scan_fail(s, "reserved byte 0xc1");
        return -1;
    }
  }
  if (rc) {
    scan_fail(s, "truncated");
    return -1;
  }
  return 0;
}

int sq_proto_scan(const uint8_t *buf, size_t len, unsigned max_depth, uint64_t max_objects,
                  sq_error_t *err) {
  if (!buf || len == 0) return sq_error_set(err, SQ_EMALFORMED, "not a valid msgpack document: empty");
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
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
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
