/* queue/redis_url: every case of tests/data/redis_urls.tsv (shared with the Python client's
 * test, so both parsers accept and refuse the same URLs), plus masking, in-place scrubbing and
 * the password file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "queue/queue.h"

static void describe(const sq_redis_url_t *u, char *out, size_t cap) {
  size_t k = (size_t)snprintf(out, cap, "sentinel=%d nodes=", u->sentinel);
  for (size_t i = 0; i < u->nnodes && k < cap; i++)
    k += (size_t)snprintf(out + k, cap - k, "%s%s:%d", i ? "," : "", u->nodes[i].host,
                          u->nodes[i].port);
  if (k < cap)
    snprintf(out + k, cap - k, " master=%s user=%s password=%s db=%u", u->master ? u->master : "-",
             u->user ? u->user : "-", u->password ? u->password : "-", (unsigned)u->db);
}

static void run_table(void) {
  const char *dir = getenv("SEGQ_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/data/redis_urls.tsv", dir ? dir : ".");
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  if (!f) return;
  char line[1024];
  int cases = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    line[strcspn(line, "\n")] = '\0';
    char *tab1 = strchr(line, '\t');
    char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
    CHECK(tab1 && tab2);
    if (!tab1 || !tab2) continue;
    *tab1 = *tab2 = '\0';
    const char *url = line, *want = tab1 + 1;
    sq_redis_url_t u;
    sq_error_t err = {0};
    int rc = sq_redis_url_parse(&u, url, &err);
    char got[600];
    if (rc == 0)
      describe(&u, got, sizeof got);
    else
      snprintf(got, sizeof got, "error: %s", err.msg);
    int ok = strncmp(want, "error: ", 7) == 0 ? rc != 0 && strstr(err.msg, want + 7) != NULL
                                              : rc == 0 && strcmp(got, want) == 0;
    if (rc != 0 && strstr(err.msg, ":pw@")) ok = 0; /* the password never shows */
    if (!ok) fprintf(stderr, "url \"%s\": want \"%s\", got \"%s\"\n", url, want, got);
    CHECK(ok);
    sq_redis_url_free(&u);
    cases++;
  }
  fclose(f);
  CHECK(cases >= 20);
}

static void test_mask_and_scrub(void) {
  char out[256];
  sq_redis_url_mask("redis://alice:s3cret@h:1/2", out, sizeof out);
  CHECK_STR(out, "redis://alice:***@h:1/2");
  sq_redis_url_mask("redis://:s3@cret@h", out, sizeof out);
  CHECK_STR(out, "redis://:***@h");
  sq_redis_url_mask("redis://alice@h", out, sizeof out);
  CHECK_STR(out, "redis://alice@h");
  sq_redis_url_mask("redis://h:1", out, sizeof out);
  CHECK_STR(out, "redis://h:1");
  char argv_url[] = "redis+sentinel://u:topsecret@a,b/m";
  CHECK_EQ_INT(sq_redis_url_scrub(argv_url), 1);
  CHECK_STR(argv_url, "redis+sentinel://u:*********@a,b/m");
  char plain[] = "redis://h:1";
  CHECK_EQ_INT(sq_redis_url_scrub(plain), 0);
  sq_redis_url_t u;
  sq_error_t err;
  CHECK_EQ_INT(sq_redis_url_parse(&u, "redis://alice:pw@h:1/4", &err), 0);
  sq_redis_url_describe(&u, out, sizeof out);
  CHECK_STR(out, "redis://alice@h:1/4");
  CHECK_EQ_INT(sq_redis_url_set_password(&u, "other", &err), 0);
  CHECK_STR(u.password, "other");
  sq_redis_url_free(&u);
}

static void test_password_file(void) {
  char path[] = "/tmp/segq-pw-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK(write(fd, "hunter2\r\n", 9) == 9);
  close(fd);
  char *pw = NULL;
  sq_error_t err = {0};
  CHECK_EQ_INT(sq_redis_password_file_read(path, &pw, &err), 0);
  CHECK_STR(pw, "hunter2");
  free(pw);
  FILE *f = fopen(path, "w");
  fputs("two\nlines\n", f);
  fclose(f);
  CHECK(sq_redis_password_file_read(path, &pw, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, "one line") && !strstr(err.msg, "two"));
  f = fopen(path, "w");
  fclose(f);
  CHECK(sq_redis_password_file_read(path, &pw, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, "empty") != NULL);
  unlink(path);
  CHECK(sq_redis_password_file_read(path, &pw, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, path) != NULL);
}

/* The worker's and the bridge's one rule: file, else environment, else the URL's own. */
static void test_apply_password(void) {
  char path[] = "/tmp/segq-pw-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK(write(fd, "fromfile\n", 9) == 9);
  close(fd);
  sq_error_t err = {0};
  sq_redis_url_t u;
  const char *src = NULL;
  CHECK_EQ_INT(sq_redis_url_parse(&u, "redis://:inurl@h:1", &err), 0);
  CHECK_EQ_INT(sq_redis_url_apply_password(&u, "", NULL, &src, &err), 0);
  CHECK_STR(u.password, "inurl");
  CHECK_STR(src, "url");
  CHECK_EQ_INT(sq_redis_url_apply_password(&u, "", "fromenv", &src, &err), 0);
  CHECK_STR(u.password, "fromenv");
  CHECK_STR(src, "env");
  CHECK_EQ_INT(sq_redis_url_apply_password(&u, path, "fromenv", &src, &err), 0);
  CHECK_STR(u.password, "fromfile");
  CHECK_STR(src, "file");
  sq_redis_url_free(&u);
  CHECK_EQ_INT(sq_redis_url_parse(&u, "redis://h:1", &err), 0);
  CHECK_EQ_INT(sq_redis_url_apply_password(&u, NULL, "", &src, &err), 0);
  CHECK(u.password == NULL);
  CHECK_STR(src, "none");
  unlink(path);
  CHECK(sq_redis_url_apply_password(&u, path, "fromenv", &src, &err) == SQ_EINVAL);
  CHECK(u.password == NULL);
  sq_redis_url_free(&u);
}

int main(void) {
  run_table();
  test_mask_and_scrub();
  test_password_file();
  test_apply_password();
  CHECK_DONE();
}
