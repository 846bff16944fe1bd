/* Error codes: names and texts generated from the SQ_ERRORS list in common.h. */
#include <stdio.h>
#include <string.h>

#include "common.h"

const char *sq_error_name(int code) {
  switch (code) {
#define SQ_X_NAME(sym, num, name, text) \
  case sym:                             \
    return name;
    SQ_ERRORS(SQ_X_NAME)
#undef SQ_X_NAME
  }
  return "unknown_error";
}

const char *sq_error_text(int code) {
  switch (code) {
#define SQ_X_TEXT(sym, num, name, text) \
  case sym:                             \
    return text;
    SQ_ERRORS(SQ_X_TEXT)
#undef SQ_X_TEXT
  }
  return "unknown error";
}

int sq_error_transient(int code) {
#define SQ_X_TRANSIENT(sym) \
  if (code == sym) return 1;
  SQ_TRANSIENT_ERRORS(SQ_X_TRANSIENT)
#undef SQ_X_TRANSIENT
  return 0;
}

int sq_error_from_name(const char *name) {
#define SQ_X_FROM(sym, num, n, text) \
  if (strcmp(name, n) == 0) return sym;
  SQ_ERRORS(SQ_X_FROM)
#undef SQ_X_FROM
  return SQ_EINTERNAL;
}

int sq_error_set(sq_error_t *err, int code, const char *fmt, ...) {
  if (err) {
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

void sq_error_clear(sq_error_t *err) {
  if (err) {
    err->code = 0;
    err->msg[0] = '\0';
    err->retryable = 0;
  }
}
