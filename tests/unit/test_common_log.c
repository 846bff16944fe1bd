/* common/log: both formats from the same records. JSON lines must parse (jansson) whatever the
 * fields hold: quotes escaped or not, a field named like a reserved key, control characters,
 * invalid UTF-8, a message longer than the cut; logfmt escapes quotes in msg; the level filter
 * applies to both. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/common.h"

/* Runs fn with stderr redirected to a temp file; returns what was written (caller frees). */
static char *capture(void (*fn)(void)) {
  char path[] = "/tmp/segq-log-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  off_t n = lseek(fd, 0, SEEK_END);
  char *buf = calloc((size_t)n + 1, 1);
  CHECK(pread(fd, buf, (size_t)n, 0) == n);
  close(fd);
  unlink(path);
  return buf;
}

static void records(void) {
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  char q[128];
  sq_log_info("t", "plain", "a=1 b=two");
  sq_log_warn("t", "quoted", "err=\"%s\" next=3", sq_log_escape("say \"hi\"\n", q, sizeof q));
  sq_log_warn("t", "unescaped", "err=\"say \"hi\" there\" next=4"); /* a careless caller */
  sq_log_error("t", "reserved", "msg=\"inner\" level=x ts=1");
  sq_log_info("t", "ctl\x01\ttab", "bytes=\"\xff\xfe ok \xc3\xa9\"");
  sq_log_info("t", big, "k=v");
  sq_log_info("t", "no fields", NULL);
  sq_log_debug("t", "filtered", "x=1");
}

static void test_json(void) {
  sq_log_set_format(SQ_LOG_JSON);
  sq_log_set_context("worker=w-1");
  char *out = capture(records);
  int lines = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    json_error_t e;
    json_t *o = json_loads(line, 0, &e);
    CHECK(o != NULL && json_is_object(o));
    if (!o) {
      fprintf(stderr, "  not JSON (%s): %s\n", e.text, line);
      continue;
    }
    lines++;
    const char *msg = json_string_value(json_object_get(o, "msg"));
    CHECK_STR(json_string_value(json_object_get(o, "worker")), "w-1");
    CHECK(json_string_value(json_object_get(o, "ts")) != NULL);
    if (msg && !strcmp(msg, "plain")) {
      CHECK_STR(json_string_value(json_object_get(o, "a")), "1"); /* strings, always */
      CHECK_STR(json_string_value(json_object_get(o, "b")), "two");
    } else if (msg && !strcmp(msg, "quoted")) {
      CHECK_STR(json_string_value(json_object_get(o, "err")), "say \"hi\" ");
      CHECK_STR(json_string_value(json_object_get(o, "next")), "3");
    } else if (msg && !strcmp(msg, "unescaped")) {
      CHECK_STR(json_string_value(json_object_get(o, "err")), "say \"hi\" there");
      CHECK_STR(json_string_value(json_object_get(o, "next")), "4");
    } else if (msg && !strcmp(msg, "reserved")) {
      CHECK_STR(json_string_value(json_object_get(o, "level")), "error");
      CHECK_STR(json_string_value(json_object_get(o, "field_msg")), "inner");
      CHECK_STR(json_string_value(json_object_get(o, "field_level")), "x");
    } else if (msg && !strncmp(msg, "ctl", 3)) {
      CHECK_STR(msg, "ctl\x01\ttab");
      CHECK_STR(json_string_value(json_object_get(o, "bytes")),
                "\xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9");
    } else if (msg && msg[0] == 'x') {
      CHECK_EQ_INT(strlen(msg), 511);
    }
    CHECK(!msg || strcmp(msg, "filtered") != 0);
    json_decref(o);
  }
  CHECK_EQ_INT(lines, 7);
  free(out);
}

static void test_logfmt(void) {
  sq_log_set_format(SQ_LOG_LOGFMT);
  char *out = capture(records);
  CHECK(strstr(out, "level=info comp=t worker=w-1 msg=\"plain\" a=1 b=two\n") != NULL);
  CHECK(strstr(out, "err=\"say \\\"hi\\\" \" next=3") != NULL);
  CHECK(strstr(out, "msg=\"ctl\x01 tab\"") != NULL); /* tabs and newlines become spaces */
  CHECK(strstr(out, "filtered") == NULL);
  free(out);
}

int main(void) {
  sq_log_set_level(SQ_LOG_INFO);
  CHECK_EQ_INT(sq_log_format_parse("json"), SQ_LOG_JSON);
  CHECK_EQ_INT(sq_log_format_parse("logfmt"), SQ_LOG_LOGFMT);
  CHECK_EQ_INT(sq_log_format_parse("JSON"), -1);
  test_json();
  test_logfmt();
  sq_log_set_context(NULL);
  CHECK_DONE();
}
