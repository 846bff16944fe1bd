/* queue/scripts/permcheck.lua probes every command the queue scripts call: for each embedded
 * script, every `redis.call('X'` / `redis.pcall('X'` (and the prelude's deferred writes
 * `w(c, 'X'` / `w_list(c, 'X'`) has a `probe('X'` in permcheck, so the start-up permission check
 * cannot fall behind a script that starts using a new command. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "queue/queue.h"
#include "queue/queue_internal.h"

static int probed(const char *permcheck, const char *cmd, size_t len) {
  char needle[64];
  snprintf(needle, sizeof needle, "probe('%.*s'", (int)len, cmd);
  return strstr(permcheck, needle) != NULL;
}

static void check_script(const char *name, const char *src, const char *permcheck) {
  /* Direct calls, and the prelude's deferred writes (w / w_list queue a command for commit). */
  static const char *const calls[] = {"redis.call('", "redis.pcall('", "w(c, '", "w_list(c, '"};
  for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++)
    for (const char *p = strstr(src, calls[k]); p; p = strstr(p + 1, calls[k])) {
      const char *cmd = p + strlen(calls[k]);
      size_t len = strcspn(cmd, "'");
      if (len == 0 || len > 32) continue;
      if (!probed(permcheck, cmd, len)) {
        fprintf(stderr, "script %s calls %.*s, which permcheck.lua does not probe\n", name,
                (int)len, cmd);
        CHECK(0);
      } else {
        CHECK(1);
      }
    }
}

int main(void) {
  const char *permcheck = sq_queue_script_source("permcheck");
  CHECK(permcheck != NULL);
  if (!permcheck) CHECK_DONE();
  int scripts = 0;
  for (const struct sq_script_entry *e = sq_queue_scripts; e->name; e++) {
    if (strcmp(e->name, "permcheck") == 0) continue;
    check_script(e->name, e->source, permcheck);
    scripts++;
  }
  CHECK(scripts >= 6);
  /* The checker itself must see a command that is missing. */
  CHECK(!probed(permcheck, "FLUSHALL", 8));
  CHECK(probed(permcheck, "PUBLISH", 7));
  CHECK_DONE();
}
