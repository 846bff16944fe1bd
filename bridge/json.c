/* bridge/json: msgpack documents (events, snapshots, results) as JSON text for the browser,
 * through msgpack-c and jansson. Invalid UTF-8 in a string is replaced by U+FFFD so every frame
 * is a valid WebSocket text frame.
 * Threads: any (pure functions). */
#include <jansson.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_internal.h"

#define MAX_DEPTH 32

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t left) {
  unsigned char c = s[0];
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (left < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

static json_t *string_value(const char *s, size_t len) {
  json_t *j = json_stringn(s, len);
  if (j) return j;
  /* Invalid UTF-8 (or a NUL jansson refuses): rebuild with U+FFFD for each bad byte. */
  char *buf = malloc(len * 3 + 1);
  if (!buf) return NULL;
  size_t o = 0;
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t n = u[i] ? utf8_seq(u + i, len - i) : 0;
    if (n == 0) {
      memcpy(buf + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
    } else {
      memcpy(buf + o, s + i, n);
      o += n;
      i += n;
    }
  }
  j = json_stringn(buf, o);
  free(buf);
  return j;
}

static json_t *to_json(const msgpack_object *o, int depth) {
  if (depth > MAX_DEPTH) return json_null();
  switch (o->type) {
    case MSGPACK_OBJECT_NIL:
      return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
      return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
      return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
      double d = o->via.f64;
      return d == d && d - d == 0 ? json_real(d) : json_null(); /* JSON has no NaN/Inf */
    }
    case MSGPACK_OBJECT_STR:
      return string_value(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: {
      size_t n = o->via.bin.size;
      unsigned char *b64 = malloc(4 * ((n + 2) / 3) + 1);
      if (!b64) return NULL;
      int len = EVP_EncodeBlock(b64, (const unsigned char *)o->via.bin.ptr, (int)n);
      json_t *j = json_stringn((const char *)b64, len < 0 ? 0 : (size_t)len);
      free(b64);
      return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
      json_t *a = json_array();
      for (uint32_t i = 0; a && i < o->via.array.size; i++) {
        json_t *v = to_json(&o->via.array.ptr[i], depth + 1);
        if (!v || json_array_append_new(a, v) != 0) {
          json_decref(a);
          return NULL;
        }
      }
      return a;
    }
    case MSGPACK_OBJECT_MAP: {
      json_t *m = json_object();
      for (uint32_t i = 0; m && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) continue;
        json_t *k = string_value(kv->key.via.str.ptr, kv->key.via.str.size);
        json_t *v = to_json(&kv->val, depth + 1);
        int bad = !k || !v || json_object_set_new(m, json_string_value(k), v) != 0;
        json_decref(k);
        if (bad) {
          json_decref(m);
          return NULL;
        }
      }
      return m;
    }
    default:
      return json_null(); /* ext */
  }
}

char *sq_bridge_msgpack_to_json(const void *buf, size_t len, size_t *out_len) {
  return sq_bridge_msgpack_nth_to_json(buf, len, 0, out_len);
}

char *sq_bridge_msgpack_nth_to_json(const void *buf, size_t len, unsigned n, size_t *out_len) {
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  char *text = NULL;
  int rc = msgpack_unpack_next(&u, buf, len, &off);
  for (unsigned k = 0; k < n && rc == MSGPACK_UNPACK_SUCCESS; k++)
    rc = msgpack_unpack_next(&u, buf, len, &off);
  if (rc == MSGPACK_UNPACK_SUCCESS) {
    json_t *j = to_json(&u.data, 0);
    if (j) text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
  }
  msgpack_unpacked_destroy(&u);
  if (text && out_len) *out_len = strlen(text);
  return text;
}

int sq_bridge_msgpack_uint_field(const void *buf, size_t len, const char *key, uint64_t *out) {
  *out = 0;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  int rc = -1;
  if (msgpack_unpack_next(&u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    rc = 0;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
      if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == klen &&
          memcmp(kv->key.via.str.ptr, key, klen) == 0 &&
          kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *out = kv->val.via.u64;
        break;
      }
    }
  }
  msgpack_unpacked_destroy(&u);
  return rc;
}

char *sq_bridge_hash_to_json(const char *const *keys, const char *const *values,
                             const size_t *value_lens, size_t n, size_t *out_len) {
  json_t *o = json_object();
  for (size_t i = 0; o && i < n; i++) {
    const char *v = values[i];
    size_t len = value_lens[i];
    int digits = len > 0 && len <= 15 && (v[0] != '0' || len == 1);
    for (size_t k = 0; digits && k < len; k++) digits = v[k] >= '0' && v[k] <= '9';
    json_t *jv = digits ? json_integer((json_int_t)strtoll(v, NULL, 10)) : string_value(v, len);
    json_t *jk = string_value(keys[i], strlen(keys[i]));
    if (!jv || !jk || json_object_set_new(o, json_string_value(jk), jv) != 0) {
      json_decref(jk);
      json_decref(o);
      return NULL;
    }
    json_decref(jk);
  }
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text && out_len) *out_len = strlen(text);
  return text;
}

int sq_bridge_msgpack_str_field(const void *buf, size_t len, const char *key, char *out,
                                size_t cap) {
  if (cap) out[0] = '\0';
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  int rc = -1;
  if (msgpack_unpack_next(&u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    rc = 0;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
      if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == klen &&
          memcmp(kv->key.via.str.ptr, key, klen) == 0 && kv->val.type == MSGPACK_OBJECT_STR) {
        if (kv->val.via.str.size >= cap) {
          rc = -1; /* too long for out: not a value we accept */
        } else {
          memcpy(out, kv->val.via.str.ptr, kv->val.via.str.size);
          out[kv->val.via.str.size] = '\0';
        }
        break;
      }
    }
  }
  msgpack_unpacked_destroy(&u);
  return rc;
}
