/* queue/keys: the names of the keys and channels a reader of events needs (segq-bridge), from
 * queue/scripts/schema.def like every other name, so no key name is spelled outside queue/.
 * Threads: any (pure function). */
#include <stdio.h>

#include "queue/queue.h"

#define SQ_SCHEMA_KEY(sym, part) __attribute__((unused)) static const char key_##sym[] = part;
#define SQ_SCHEMA_TEXT(sym, value) __attribute__((unused)) static const char text_##sym[] = value;
#define SQ_SCHEMA_DEFAULT(sym, value)
#define SQ_SCHEMA_CODE(sym, value)
#include "queue/scripts/schema.def"
#undef SQ_SCHEMA_KEY
#undef SQ_SCHEMA_TEXT
#undef SQ_SCHEMA_DEFAULT
#undef SQ_SCHEMA_CODE

#define SQ_SCHEMA_KEY(sym, part)
#define SQ_SCHEMA_TEXT(sym, value) const char sq_queue_text_##sym[] = value;
#define SQ_SCHEMA_DEFAULT(sym, value)
#define SQ_SCHEMA_CODE(sym, value)
#include "queue/scripts/schema.def"
#undef SQ_SCHEMA_KEY
#undef SQ_SCHEMA_TEXT
#undef SQ_SCHEMA_DEFAULT
#undef SQ_SCHEMA_CODE

int sq_queue_key_name(char *out, size_t len, const char *prefix, sq_queue_name_t which,
                      const char *id) {
  static const char *const parts[] = {
      [SQ_QUEUE_JOB_CHANNEL] = key_JOB_CHANNEL,
      [SQ_QUEUE_GROUP_CHANNEL] = key_GROUP_CHANNEL,
      [SQ_QUEUE_GROUP_HISTORY] = key_GROUP_HISTORY,
      [SQ_QUEUE_JOB_RECORD] = key_JOB,
  };
  if ((unsigned)which >= sizeof parts / sizeof parts[0] || !parts[which] || !id) return SQ_EINVAL;
  int n = snprintf(out, len, "%s:%s:%s", prefix ? prefix : text_PREFIX, parts[which], id);
  return n < 0 || (size_t)n >= len ? SQ_EINVAL : 0;
}
