/* One Redis session for a one-shot command (queues, history): connect
 * without retrying, run the command's first request once ready, report an
 * unreachable Redis plainly, exit status in ->status. */
#ifndef SCALEKIQ_ONESHOT_H
#define SCALEKIQ_ONESHOT_H

#include "config.h"
#include "redis.h"

typedef struct oneshot oneshot_t;
struct oneshot {
  redis_t redis;
  log_t *log;
  const config_t *cfg;
  int status;                      /* EXIT_*: set by the command */
  int (*on_ready)(oneshot_t *o);   /* start the work; < 0: a redis code */
  void *data;
};

/* Runs the session to its end; the command calls oneshot_done() when it
 * has its answer. Returns o->status. */
int oneshot_run(oneshot_t *o);
void oneshot_done(oneshot_t *o, int status);

#endif
