/* bridge/redis_seam: the Redis URL forms the bridge accepts, parsed by the worker's parser so the
 * two programs agree. A seam: when the Redis session (URL parser, Sentinel, ACL users) moves into
 * queue/, this file becomes a call into it.
 * Threads: main thread, at start-up. */
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_internal.h"
#include "worker/config.h"

int sq_bridge_redis_url_parse(const char *url, char **host, int *port, char **password,
                              uint32_t *db, sq_error_t *err) {
  sq_worker_config_t w;
  memset(&w, 0, sizeof w);
  int rc = sq_worker_config_parse_redis_url(&w, url, err);
  if (rc == 0) {
    free(*host);
    free(*password);
    *host = w.redis_host;
    *password = w.redis_password;
    *port = w.redis_port;
    *db = w.redis_db;
    w.redis_host = w.redis_password = NULL;
  }
  free(w.redis_host);
  free(w.redis_password);
  return rc;
}
