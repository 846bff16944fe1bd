/* queue/keys: the names of the keys and channels an event reader needs (segq-bridge), built here
 * so no key name is spelled outside queue/ (docs/protocol.md "Redis key layout").
 * Threads: any (pure function). */
#include <stdio.h>

#include "queue/queue.h"

int sq_queue_key_name(char *out, size_t len, const char *prefix, sq_queue_name_t which,
                      const char *id) {
  static const char *const parts[] = {
      [SQ_QUEUE_JOB_CHANNEL] = "ev",      [SQ_QUEUE_GROUP_CHANNEL] = "gev",
      [SQ_QUEUE_JOB_HISTORY] = "events",  [SQ_QUEUE_GROUP_HISTORY] = "gevents",
      [SQ_QUEUE_JOB_SNAPSHOT] = "status", [SQ_QUEUE_GROUP_SNAPSHOT] = "group",
      [SQ_QUEUE_RESULT] = "result",
  };
  if ((unsigned)which >= sizeof parts / sizeof parts[0] || !parts[which] || !id) return SQ_EINVAL;
  int n = snprintf(out, len, "%s:%s:%s", prefix ? prefix : "segq", parts[which], id);
  return n < 0 || (size_t)n >= len ? SQ_EINVAL : 0;
}
