/* Unit test: every Lua file in queue/scripts/ is embedded (as the schema constants, then
 * lib/prelude.lua, then the file), the scripts name their KEYS/ARGV, and the SHA-1 used for
 * EVALSHA matches known vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "queue/queue.h"
#include "queue/queue_internal.h"

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

static void check_sha(const char *in, size_t len, const char *want) {
  char got[41];
  sq_queue_sha1_hex(in, len, got);
  CHECK_STR(got, want);
}

int main(void) {
  /* FIPS 180-1 / RFC 3174 vectors, plus lengths around the 55/56/64-byte padding edges. */
  check_sha("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  check_sha("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
  check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  check_sha("The quick brown fox jumps over the lazy dog", 43,
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
  char *million = malloc(1000000);
  memset(million, 'a', 1000000);
  check_sha(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  free(million);
  char a64[64];
  memset(a64, 'a', sizeof a64);
  check_sha(a64, 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a");
  check_sha(a64, 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d");

  static const char *names[] = {"enqueue",  "claim",   "ack",    "heartbeat", "sweep", "unregister",
                                "progress", "release", "cancel", "recover",   "dead"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *src = sq_queue_script_source(names[i]);
    CHECK(src != NULL);
    if (!src) continue;
    CHECK(strncmp(src, "-- ", 3) == 0);
    CHECK(strstr(src, "KEYS") != NULL && strstr(src, "ARGV[1] prefix") != NULL);
  }
  CHECK(sq_queue_script_source("nope") == NULL);

  /* The embedded text is the effective source, byte for byte: the constants generated from
   * queue/scripts/schema.def, queue/scripts/lib/prelude.lua (the shared helpers), the script's
   * file. (tests/integration/test_queue_scripts.py checks the Python side builds the same.) */
  const char *dir = getenv("SEGQ_SOURCE_DIR");
  char *prelude = NULL;
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/queue/scripts/lib/prelude.lua", dir);
    prelude = read_file(path);
    CHECK(prelude != NULL);
  }
  int count = 0;
  for (const struct sq_script_entry *e = sq_queue_scripts; e->name; e++, count++) {
    if (!prelude) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/queue/scripts/%s.lua", dir, e->name);
    char *text = read_file(path);
    CHECK(text != NULL);
    if (text) {
      /* Each script's own file still opens with its header ("-- <name>: ..." then KEYS/ARGV). */
      char head[128];
      snprintf(head, sizeof head, "-- %s: ", e->name);
      CHECK(strncmp(text, head, strlen(head)) == 0);
      CHECK(strstr(text, "ARGV[1] prefix") != NULL);
      CHECK(strncmp(e->source, "-- schema: generated from queue/scripts/schema.def", 50) == 0);
      CHECK(strstr(e->source, "local KEY = strict({\n  JOB = 'job',\n") != NULL);
      CHECK(strstr(e->source, "    canceled = true,\n") != NULL); /* ERR's codes, made lazily */
      const char *p = strstr(e->source, prelude);
      CHECK(p != NULL);
      if (p) CHECK(strcmp(p + strlen(prelude), text) == 0);
    }
    free(text);
  }
  free(prelude);
  CHECK(count >= 6);
  CHECK_DONE();
}
