/* One-line structured logs on stderr: logfmt (ts=... level=... comp=... msg="..." k=v), or one
 * JSON object per line (--log-format json) for pipelines that parse JSON. Both come from the
 * same record: callers pass their fields as logfmt, and the JSON writer parses them back.
 * A single fprintf per record keeps lines from different threads whole. Any thread. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static sq_log_level_t log_level = SQ_LOG_INFO;
static sq_log_format_t log_format = SQ_LOG_LOGFMT;
static char log_context[160];
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

void sq_log_set_level(sq_log_level_t level) { log_level = level; }

void sq_log_set_format(sq_log_format_t format) {
  log_format = format;
}

int sq_log_level_parse(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

int sq_log_format_parse(const char *s) {
  if (strcmp(s, "logfmt") == 0) return SQ_LOG_LOGFMT;
  if (strcmp(s, "json") == 0) return SQ_LOG_JSON;
  return -1;
}

void sq_log_set_context(const char *kv) {
  pthread_mutex_lock(&log_mutex);
  snprintf(log_context, sizeof log_context, "%s", kv ? kv : "");
  pthread_mutex_unlock(&log_mutex);
}

const char *sq_log_escape(const char *src, char *dst, size_t cap) {
  size_t j = 0;
  if (cap == 0) return dst;
  for (size_t i = 0; src && src[i] && j + 3 < cap; i++) {
    char c = src[i];
    if (c == '"' || c == '\\') {
      dst[j++] = '\\';
      dst[j++] = c;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      dst[j++] = ' ';
    } else {
      dst[j++] = c;
    }
  }
  dst[j] = '\0';
  return dst;
}

/* ---- JSON ---- */

typedef struct {
  char *buf;
  size_t len, cap;
} out_t;

static void put(out_t *o, const char *s, size_t n) {
  if (o->len + n + 1 > o->cap) n = o->cap > o->len + 1 ? o->cap - o->len - 1 : 0;
  memcpy(o->buf + o->len, s, n);
  o->len += n;
  o->buf[o->len] = '\0';
}

static void puts_(out_t *o, const char *s) {
  put(o, s, strlen(s));
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  size_t k = s[0] < 0x80             ? 1
             : (s[0] & 0xE0) == 0xC0 ? 2
             : (s[0] & 0xF0) == 0xE0 ? 3
             : (s[0] & 0xF8) == 0xF0 ? 4
                                     : 0;
  if (k == 0 || k > n || (k == 2 && s[0] < 0xC2)) return 0;
  for (size_t i = 1; i < k; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return k;
}

/* A JSON string of n bytes of s; control characters escaped, invalid UTF-8 replaced. */
static void put_json_str(out_t *o, const char *s, size_t n) {
  put(o, "\"", 1);
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(o, esc, 2);
      i++;
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      puts_(o, esc);
      i++;
    } else {
      size_t k = utf8_len((const unsigned char *)s + i, n - i);
      if (k) {
        put(o, s + i, k);
        i += k;
      } else {
        puts_(o, "\\ufffd");
        i++;
      }
    }
  }
  put(o, "\"", 1);
}

static int is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-' || c == ':';
}

/* Does a new key=... start at s (after a space)? */
static int key_starts(const char *s) {
  const char *k = s;
  while (is_key_char(*k)) k++;
  return k > s && *k == '=';
}

static int reserved(const char *k, size_t n) {
  static const char *const names[] = {"ts", "level", "comp", "msg"};
  for (int i = 0; i < 4; i++)
    if (strlen(names[i]) == n && memcmp(names[i], k, n) == 0) return 1;
  return 0;
}

/* Appends ,"k":"v" for every k=v of a logfmt string. A quoted value ends at the quote that is
 * followed by the end or by " key=", so a value whose caller forgot to escape an inner quote
 * still comes out whole. Every value is a JSON string, as in logfmt: a field never changes type
 * from one record to the next (ids that look like numbers), which log stores care about. */
static void put_logfmt_fields(out_t *o, const char *s) {
  while (*s) {
    while (*s == ' ') s++;
    if (!*s) break;
    const char *k = s;
    while (*s && *s != '=' && *s != ' ') s++;
    size_t klen = (size_t)(s - k);
    char val[768];
    size_t vlen = 0;
    if (*s == '=') {
      s++;
      if (*s == '"') {
        s++;
        while (*s) {
          if (*s == '\\' && s[1]) {
            if (vlen < sizeof val) val[vlen++] = s[1];
            s += 2;
            continue;
          }
          if (*s == '"' && (s[1] == '\0' || (s[1] == ' ' && key_starts(s + 2)))) {
            s++;
            break;
          }
          if (vlen < sizeof val) val[vlen++] = *s;
          s++;
        }
      } else {
        while (*s && *s != ' ') {
          if (vlen < sizeof val) val[vlen++] = *s;
          s++;
        }
      }
    }
    put(o, ",", 1);
    if (reserved(k, klen)) puts_(o, "\"field_");
    if (reserved(k, klen))
      put(o, k, klen), put(o, "\"", 1);
    else
      put_json_str(o, k, klen);
    put(o, ":", 1);
    put_json_str(o, val, vlen);
  }
}

void sq_log(sq_log_level_t level, const char *comp, const char *msg, const char *fields_fmt, ...) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  if (level < log_level) return;
  char fields[768] = "";
  if (fields_fmt && *fields_fmt) {
    va_list ap;
    va_start(ap, fields_fmt);
    vsnprintf(fields, sizeof fields, fields_fmt, ap);
    va_end(ap);
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char tbuf[32];
  strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
  pthread_mutex_lock(&log_mutex);
  if (log_format == SQ_LOG_JSON) {
    /* Inputs are bounded (msg cut at 511 bytes, fields 767, context 159) and escaping at most
     * sextuples a byte, so the record always fits whole. */
    char line[10240];
    out_t o = {line, 0, sizeof line};
    size_t mlen = strnlen(msg, 511);
    char t[96];
    snprintf(t, sizeof t, "{\"ts\":\"%s.%03ldZ\",\"level\":\"", tbuf, ts.tv_nsec / 1000000);
    puts_(&o, t);
    puts_(&o, names[level]);
    puts_(&o, "\",\"comp\":");
    put_json_str(&o, comp, strlen(comp));
    puts_(&o, ",\"msg\":");
    put_json_str(&o, msg, mlen);
    put_logfmt_fields(&o, log_context);
    put_logfmt_fields(&o, fields);
    fprintf(stderr, "%s}\n", line);
  } else {
    char qmsg[512];
    sq_log_escape(msg, qmsg, sizeof qmsg);
    fprintf(stderr, "ts=%s.%03ldZ level=%s comp=%s%s%s msg=\"%s\"%s%s\n", tbuf,
            ts.tv_nsec / 1000000, names[level], comp, log_context[0] ? " " : "", log_context, qmsg,
            fields[0] ? " " : "", fields);
  }
  pthread_mutex_unlock(&log_mutex);
}
