/* bridge/origin: the --allowed-origins policy for WebSocket upgrades (docs/bridge.md "Origins"):
 * a browser page may only open a bridge WebSocket from an allowed Origin, so another site cannot
 * ride on a user's browser. Non-browser clients send no Origin and are let through: tokens, not
 * Origins, are the access control.
 * Threads: any (pure functions). */
#include <string.h>
#include <strings.h>

#include "bridge/bridge_internal.h"

/* Compares [a, a+alen) with [b, b+blen) ignoring ASCII case. */
static int same(const char *a, size_t alen, const char *b, size_t blen) {
  return alen == blen && strncasecmp(a, b, alen) == 0;
}

int sq_bridge_origins_check(const char *list, sq_error_t *err) {
  if (!list[0] || strcmp(list, "*") == 0) return 0;
  const char *p = list;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    int ok = (len > 7 && strncasecmp(p, "http://", 7) == 0) ||
             (len > 8 && strncasecmp(p, "https://", 8) == 0);
    for (size_t i = 0; ok && i < len; i++)
      if (p[i] == ' ' || p[i] == '*' || (i > 8 && p[i] == '/')) ok = 0;
    if (!ok)
      return sq_error_set(err, SQ_EINVAL,
                          "allowed-origins: \"%.*s\" is not an origin like https://host[:port] "
                          "(use * alone for any origin)",
                          (int)(len > 100 ? 100 : len), p);
    if (!end) return 0;
    p = end + 1;
  }
}

int sq_bridge_origin_allowed(const char *list, const char *origin, const char *host_header) {
  if (!origin || !origin[0]) return 1;
  if (strcmp(list, "*") == 0) return 1;
  size_t olen = strlen(origin);
  if (!list[0]) {
    /* Same origin: the Origin's authority must be the Host the browser connected to. */
    const char *sep = strstr(origin, "://");
    if (!sep || !host_header) return 0;
    const char *auth = sep + 3;
    return same(auth, strlen(auth), host_header, strlen(host_header));
  }
  const char *p = list;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (same(p, len, origin, olen)) return 1;
    if (!end) return 0;
    p = end + 1;
  }
}
