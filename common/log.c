/* One-line structured logs (logfmt) on stderr. A single fprintf per record keeps lines
 * from different threads whole. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static sq_log_level_t log_level = SQ_LOG_INFO;
static char log_context[160];
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

void sq_log_set_level(sq_log_level_t level) { log_level = level; }

int sq_log_level_parse(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

void sq_log_set_context(const char *kv) {
  pthread_mutex_lock(&log_mutex);
  snprintf(log_context, sizeof log_context, "%s", kv ? kv : "");
  pthread_mutex_unlock(&log_mutex);
}

static void quote_into(char *dst, size_t cap, const char *src) {
  size_t j = 0;
  for (size_t i = 0; src[i] && j + 3 < cap; i++) {
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
  char qmsg[512];
  quote_into(qmsg, sizeof qmsg, msg);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char tbuf[32];
  strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
  pthread_mutex_lock(&log_mutex);
  fprintf(stderr, "ts=%s.%03ldZ level=%s comp=%s%s%s msg=\"%s\"%s%s\n", tbuf,
          ts.tv_nsec / 1000000, names[level], comp, log_context[0] ? " " : "", log_context, qmsg,
          fields[0] ? " " : "", fields);
  pthread_mutex_unlock(&log_mutex);
}
