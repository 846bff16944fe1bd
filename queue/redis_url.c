/* queue/redis_url: the one parser of Redis URLs for every segq program (worker, bridge, tools):
 * redis://, redis+sentinel://, and a clear refusal of rediss:// (hiredis 0.14 has no TLS). Also
 * the password helpers (password file, masking): a password never appears in an error or a log.
 * Threads: any; pure functions on caller-owned memory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

#define DEFAULT_PORT 6379
#define DEFAULT_SENTINEL_PORT 26379
#define PASSWORD_FILE_MAX 4096

void sq_redis_url_free(sq_redis_url_t *u) {
  if (!u) return;
  for (size_t i = 0; i < u->nnodes; i++) free(u->nodes[i].host);
  free(u->master);
  free(u->user);
  free(u->password);
  memset(u, 0, sizeof(*u));
}

int sq_redis_url_copy(sq_redis_url_t *dst, const sq_redis_url_t *src) {
  memset(dst, 0, sizeof(*dst));
  dst->sentinel = src->sentinel;
  dst->db = src->db;
  int ok = 1;
  for (size_t i = 0; i < src->nnodes; i++) {
    dst->nodes[i].host = sq_strdup(src->nodes[i].host);
    dst->nodes[i].port = src->nodes[i].port;
    dst->nnodes = i + 1;
    ok &= dst->nodes[i].host != NULL;
  }
  if (src->master) ok &= (dst->master = sq_strdup(src->master)) != NULL;
  if (src->user) ok &= (dst->user = sq_strdup(src->user)) != NULL;
  if (src->password) ok &= (dst->password = sq_strdup(src->password)) != NULL;
  if (!ok) {
    sq_redis_url_free(dst);
    return SQ_ENOMEM;
  }
  return 0;
}

/* The URL as it may be shown: the password (between the first ':' of the userinfo and the last
 * '@', the same split the parser makes) replaced by "***". */
void sq_redis_url_mask(const char *url, char *out, size_t cap) {
  if (!cap) return;
  const char *scheme_end = url ? strstr(url, "://") : NULL;
  const char *at = url ? strrchr(url, '@') : NULL;
  if (!scheme_end || !at || at < scheme_end) {
    snprintf(out, cap, "%s", url ? url : "");
    return;
  }
  const char *userinfo = scheme_end + 3;
  const char *colon = memchr(userinfo, ':', (size_t)(at - userinfo));
  if (!colon) {
    snprintf(out, cap, "%s", url); /* a user name only: nothing secret */
    return;
  }
  snprintf(out, cap, "%.*s***%s", (int)(colon + 1 - url), url, at);
}

int sq_redis_url_scrub(char *url) {
  char *scheme_end = url ? strstr(url, "://") : NULL;
  char *at = url ? strrchr(url, '@') : NULL;
  if (!scheme_end || !at || at < scheme_end) return 0;
  char *colon = memchr(scheme_end + 3, ':', (size_t)(at - scheme_end - 3));
  if (!colon || colon + 1 == at) return 0;
  memset(colon + 1, '*', (size_t)(at - colon - 1));
  return 1;
}

/* %XX decoding of the userinfo (a password may need to encode '@', ':' or '/'). */
static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static char *decode_part(const char *s, size_t n) {
  char *out = malloc(n + 1);
  if (!out) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out[k++] = s[i];
    }
  }
  out[k] = '\0';
  return out;
}

static int valid_name(const char *s, size_t n) {
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* One host[:port] (or [v6]:port) of [p, end). */
static int parse_node(sq_redis_node_t *node, const char *p, const char *end, int default_port,
                      const char *shown, sq_error_t *err) {
  const char *hs = p, *he, *colon = NULL;
  if (p < end && *p == '[') {
    const char *rb = memchr(p, ']', (size_t)(end - p));
    if (!rb) return sq_error_set(err, SQ_EINVAL, "redis-url: unclosed '[' in \"%s\"", shown);
    hs = p + 1;
    he = rb;
    if (rb + 1 < end) {
      if (rb[1] != ':')
        return sq_error_set(err, SQ_EINVAL, "redis-url: junk after ']' in \"%s\"", shown);
      colon = rb + 1;
    }
  } else {
    colon = memchr(p, ':', (size_t)(end - p));
    he = colon ? colon : end;
  }
  if (he == hs) return sq_error_set(err, SQ_EINVAL, "redis-url: \"%s\" has no host", shown);
  for (const char *c = hs; c < he; c++)
    if (*c == '@' || *c == '/' || *c == ' ' || *c == '?' || *c == '#')
      return sq_error_set(err, SQ_EINVAL, "redis-url: bad host in \"%s\"", shown);
  node->port = default_port;
  if (colon) {
    char buf[8];
    size_t n = (size_t)(end - colon - 1);
    if (n == 0 || n >= sizeof buf)
      return sq_error_set(err, SQ_EINVAL, "redis-url: bad port in \"%s\"", shown);
    memcpy(buf, colon + 1, n);
    buf[n] = '\0';
    char *e;
    errno = 0;
    long port = strtol(buf, &e, 10);
    if (errno || *e || buf[0] == '-' || buf[0] == '+' || port < 1 || port > 65535)
      return sq_error_set(err, SQ_EINVAL, "redis-url: bad port in \"%s\"", shown);
    node->port = (int)port;
  }
  node->host = sq_strndup(hs, (size_t)(he - hs));
  return node->host ? 0 : sq_error_set(err, SQ_ENOMEM, "out of memory");
}

static int parse_db(const char *s, uint32_t *db, const char *shown, sq_error_t *err) {
  char *e;
  errno = 0;
  long v = strtol(s, &e, 10);
  if (errno || *e || s[0] < '0' || s[0] > '9' || v < 0 || v > 65535)
    return sq_error_set(err, SQ_EINVAL, "redis-url: bad database number in \"%s\"", shown);
  *db = (uint32_t)v;
  return 0;
}

int sq_redis_url_parse(sq_redis_url_t *u, const char *url, sq_error_t *err) {
  memset(u, 0, sizeof(*u));
  char shown[512];
  sq_redis_url_mask(url ? url : "", shown, sizeof shown);
  if (!url || !*url) return sq_error_set(err, SQ_EINVAL, "redis-url: empty");
  const char *p;
  if (strncmp(url, "redis://", 8) == 0) {
    p = url + 8;
  } else if (strncmp(url, "redis+sentinel://", 17) == 0) {
    u->sentinel = 1;
    p = url + 17;
  } else if (strncmp(url, "rediss://", 9) == 0 || strncmp(url, "rediss+sentinel://", 18) == 0) {
    return sq_error_set(err, SQ_EUNSUPPORTED,
                        "redis-url: TLS (rediss://) is not supported by this build's hiredis "
                        "(0.14): run a local stunnel client in front of the TLS Redis and use "
                        "redis://127.0.0.1:<stunnel port> (docs/operations.md, \"TLS\")");
  } else {
    return sq_error_set(err, SQ_EINVAL,
                        "redis-url: \"%s\" must start with redis:// or redis+sentinel://", shown);
  }
  if (strchr(p, '?') || strchr(p, '#'))
    return sq_error_set(err, SQ_EINVAL,
                        "redis-url: \"%s\": query parameters are not supported (the database "
                        "is the path: redis://host/DB, redis+sentinel://host/MASTER/DB)",
                        shown);
  int rc = 0;
  const char *at = strrchr(p, '@');
  if (at) {
    /* [user][:password]@ (RFC 3986 userinfo; the user is a Redis 6 ACL user name). */
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *uend = colon ? colon : at;
    if (uend > p && !(u->user = decode_part(p, (size_t)(uend - p)))) goto oom;
    if (colon && at > colon + 1 &&
        !(u->password = decode_part(colon + 1, (size_t)(at - colon - 1))))
      goto oom;
    p = at + 1;
  }
  const char *slash = strchr(p, '/');
  const char *hosts_end = slash ? slash : p + strlen(p);
  if (u->sentinel) {
    const char *s = p;
    for (;;) {
      const char *comma = memchr(s, ',', (size_t)(hosts_end - s));
      const char *e = comma ? comma : hosts_end;
      if (u->nnodes == SQ_REDIS_MAX_NODES)
        return sq_error_set(err, SQ_EINVAL, "redis-url: more than %d sentinels in \"%s\"",
                            SQ_REDIS_MAX_NODES, shown);
      if ((rc = parse_node(&u->nodes[u->nnodes], s, e, DEFAULT_SENTINEL_PORT, shown, err)) != 0)
        goto fail;
      u->nnodes++;
      if (!comma) break;
      s = comma + 1;
    }
    /* /master-name[/db] */
    const char *m = slash ? slash + 1 : NULL;
    const char *mend = m ? strchr(m, '/') : NULL;
    size_t mlen = m ? (mend ? (size_t)(mend - m) : strlen(m)) : 0;
    if (!valid_name(m, mlen)) {
      rc = sq_error_set(err, SQ_EINVAL,
                        "redis-url: \"%s\" needs a master name: "
                        "redis+sentinel://host:port[,host:port...]/MASTER[/DB]",
                        shown);
      goto fail;
    }
    if (!(u->master = sq_strndup(m, mlen))) goto oom;
    if (mend && mend[1] && (rc = parse_db(mend + 1, &u->db, shown, err)) != 0) goto fail;
  } else {
    if ((rc = parse_node(&u->nodes[0], p, hosts_end, DEFAULT_PORT, shown, err)) != 0) goto fail;
    u->nnodes = 1;
    if (slash && slash[1] && (rc = parse_db(slash + 1, &u->db, shown, err)) != 0) goto fail;
  }
  return 0;
oom:
  rc = sq_error_set(err, SQ_ENOMEM, "out of memory");
fail:
  sq_redis_url_free(u);
  return rc;
}

int sq_redis_url_set_password(sq_redis_url_t *u, const char *password, sq_error_t *err) {
  char *copy = password ? sq_strdup(password) : NULL;
  if (password && !copy) return sq_error_set(err, SQ_ENOMEM, "out of memory");
  free(u->password);
  u->password = copy;
  return 0;
}

int sq_redis_password_file_read(const char *path, char **out, sq_error_t *err) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return sq_error_set(err, SQ_EINVAL, "redis-password-file: cannot open \"%s\": %s", path,
                        strerror(errno));
  char *buf = malloc(PASSWORD_FILE_MAX + 1);
  if (!buf) {
    fclose(f);
    return sq_error_set(err, SQ_ENOMEM, "out of memory");
  }
  size_t n = fread(buf, 1, PASSWORD_FILE_MAX + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n > PASSWORD_FILE_MAX) {
    free(buf);
    return sq_error_set(err, SQ_EINVAL, "redis-password-file: \"%s\" is %s", path,
                        bad ? "unreadable" : "larger than 4 KiB");
  }
  /* One trailing newline (what `echo` and editors leave) is not part of the password. */
  if (n && buf[n - 1] == '\n') n--;
  if (n && buf[n - 1] == '\r') n--;
  buf[n] = '\0';
  if (n == 0 || memchr(buf, '\0', n) || memchr(buf, '\n', n)) {
    free(buf);
    return sq_error_set(err, SQ_EINVAL, "redis-password-file: \"%s\" %s", path,
                        n == 0 ? "is empty" : "must hold one line");
  }
  *out = buf;
  return 0;
}

int sq_redis_url_apply_password(sq_redis_url_t *u, const char *file, const char *env,
                                const char **source, sq_error_t *err) {
  const char *src = u->password ? "url" : "none";
  int rc = 0;
  if (file && file[0]) {
    char *pw = NULL;
    if ((rc = sq_redis_password_file_read(file, &pw, err)) != 0) return rc;
    rc = sq_redis_url_set_password(u, pw, err);
    memset(pw, 0, strlen(pw)); /* not left in freed memory */
    free(pw);
    src = "file";
  } else if (env && env[0]) {
    rc = sq_redis_url_set_password(u, env, err);
    src = "env";
  }
  if (rc == 0 && source) *source = src;
  return rc;
}

void sq_redis_url_describe(const sq_redis_url_t *u, char *out, size_t cap) {
  size_t k = 0;
  int n = snprintf(out, cap, "%s%s%s", u->sentinel ? "redis+sentinel://" : "redis://",
                   u->user ? u->user : "", u->user ? "@" : "");
  k = n > 0 && (size_t)n < cap ? (size_t)n : cap ? cap - 1 : 0;
  for (size_t i = 0; i < u->nnodes && k + 1 < cap; i++) {
    int v6 = strchr(u->nodes[i].host, ':') != NULL;
    n = snprintf(out + k, cap - k, "%s%s%s%s:%d", i ? "," : "", v6 ? "[" : "", u->nodes[i].host,
                 v6 ? "]" : "", u->nodes[i].port);
    if (n > 0) k = (size_t)n < cap - k ? k + (size_t)n : cap - 1;
  }
  if (k + 1 < cap) {
    if (u->sentinel)
      snprintf(out + k, cap - k, "/%s/%u", u->master ? u->master : "", (unsigned)u->db);
    else
      snprintf(out + k, cap - k, "/%u", (unsigned)u->db);
  }
}
