/* worker/conn: one hiredis async connection on the libuv loop that reconnects by itself
 * (exponential backoff 100 ms -> 5 s or backoff_max_ms), authenticates/selects the database, and guards its
 * replies with a watchdog: a command not answered in time drops the connection.
 * Threads: loop thread only. */
#ifndef SQ_WORKER_CONN_H
#define SQ_WORKER_CONN_H

#include <stdint.h>
#include <uv.h>

struct redisAsyncContext;

typedef struct sq_conn sq_conn_t;
typedef void (*sq_conn_event_cb)(sq_conn_t *c, void *data);

struct sq_conn {
  uv_loop_t *loop;
  const char *name; /* "command" / "blocking", for logs */
  const char *host;
  int port;
  const char *password; /* NULL = no AUTH */
  uint32_t db;
  struct redisAsyncContext *ac; /* non-NULL while connecting or connected */
  int ready;                    /* connected: commands may be sent */
  int closing;                  /* sq_conn_close called: never reconnect */
  int dropping;                 /* freed by us, disconnect callback not seen yet */
  uint64_t backoff_ms;
  uint64_t backoff_max_ms; /* 0 = 5000; set before sq_conn_init */
  uint32_t attempts;
  uv_timer_t retry_timer;
  uv_timer_t watchdog_timer;
  /* Watchdog: replies outstanding, when the oldest of them (or the last reply) happened, and
   * how long a reply may take (per connection; the blocking one raises it per BRPOP). */
  uint32_t pending;
  uint64_t progress_us;
  uint64_t reply_limit_us;
  sq_conn_event_cb on_ready; /* connection usable (again) */
  sq_conn_event_cb on_down;  /* connection lost; pending callbacks have already failed */
  void *data;
  int handles_open; /* timers not yet closed */
  void (*on_closed)(sq_conn_t *c);
};

/* Initializes the timers and starts connecting. Strings are borrowed for c's lifetime. */
int sq_conn_init(sq_conn_t *c, uv_loop_t *loop, const char *name, const char *host, int port,
                 const char *password, uint32_t db, uint64_t reply_limit_us);
/* Call right before/after sending a command whose reply the watchdog guards. */
void sq_conn_sent(sq_conn_t *c);
void sq_conn_replied(sq_conn_t *c);
/* Drops the connection now (watchdog, protocol error); reconnects after the backoff. */
void sq_conn_drop(sq_conn_t *c, const char *why);
/* Frees the connection (pending callbacks fail with reply NULL) and closes the timers;
 * on_closed runs once everything is closed. */
void sq_conn_close(sq_conn_t *c, void (*on_closed)(sq_conn_t *c));

#endif
