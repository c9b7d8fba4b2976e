/* One Redis session for a one-shot command: see oneshot.h. */
#include "oneshot.h"

#include <stdio.h>

#include "cli.h"

void oneshot_done(oneshot_t *o, int status) {
  o->status = status;
  log_event(o->log, LOG_DEBUG, "redis_stats", "commands=%llu round_trips=%llu",
            (unsigned long long)o->redis.stats.commands,
            (unsigned long long)o->redis.stats.writes);
  redis_close(&o->redis, NULL);
}

static void on_state(redis_t *r, enum redis_state state, int status,
                     const char *detail, void *data) {
  oneshot_t *o = data;
  if (state == REDIS_STATE_READY) {
    int rc = o->on_ready(o);
    if (rc < 0) {
      fprintf(stderr, "scalekiq: %s\n", redis_strerror(rc));
      oneshot_done(o, EXIT_FAIL);
    }
  } else if (state == REDIS_STATE_DISCONNECTED && status < 0) {
    char url[512];
    redis_url_redacted(&r->url, url, sizeof(url));
    fprintf(stderr, "scalekiq: cannot reach Redis at %s (from %s): %s\n", url,
            o->cfg->redis_url_source, detail);
    /* A TLS failure's detail already says which setting to change. */
    if (status != REDIS_E_TLS)
      fprintf(stderr, "scalekiq: check that Redis is up and the URL is right\n");
    oneshot_done(o, EXIT_FAIL);
  }
}

int oneshot_run(oneshot_t *o) {
  o->status = EXIT_FAIL;
  uv_loop_t loop;
  uv_loop_init(&loop);
  redis_options_t opts;
  redis_options_default(&opts);
  opts.reconnect = 0; /* one-shot: report, do not retry */
  opts.connect_timeout = o->cfg->request_timeout;
  opts.request_timeout = o->cfg->request_timeout;
  opts.log = o->log;
  opts.on_state = on_state;
  opts.data = o;
  config_redis_tls(o->cfg, &opts.tls);
  if (redis_init(&loop, &o->redis, o->cfg->redis_url, &opts) != 0) {
    fprintf(stderr, "scalekiq: %s\n", redis_last_error(&o->redis));
    o->status = EXIT_USAGE;
  } else {
    redis_connect(&o->redis);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return o->status;
}
