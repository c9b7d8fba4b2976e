/*
 * config: environment + command-line flags -> validated settings.
 *
 * Every setting has an environment variable and, except the Heroku token,
 * a --flag named after it that overrides it (SCALEKIQ_POLL_INTERVAL ->
 * --poll-interval). An empty environment variable counts as unset.
 * Loading either yields a complete, consistent config_t or one line of
 * error text naming the setting, its bad value (never a secret's) and
 * what to do about it. Nothing here logs, exits or touches globals.
 */
#ifndef SCALEKIQ_CONFIG_H
#define SCALEKIQ_CONFIG_H

#include <stddef.h>

#include "log.h"
#include "redis.h"

#define CONFIG_DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"
#define CONFIG_DEFAULT_NAMESPACE "amigo/autoscaler"
#define CONFIG_DEFAULT_FORMATION "worker"
#define CONFIG_DEFAULT_HEROKU_API_URL "https://api.heroku.com"
#define CONFIG_DEFAULT_SOCKET "/tmp/scalekiq.sock"

#define CONFIG_MAX_POLL_INTERVAL 3600.0 /* s */
#define CONFIG_MAX_DURATION 604800.0    /* s (one week), every other duration */
#define CONFIG_MIN_DURATION 0.001       /* s: timers count milliseconds */
#define CONFIG_MAX_ADDITIONAL_WORKERS 1000

enum config_tls_verify { CONFIG_TLS_VERIFY_PEER, CONFIG_TLS_VERIFY_NONE };

typedef struct config {
  /* Redis */
  char *redis_url;        /* as configured: may hold a password, never log it */
  char *redis_url_source; /* where it came from: "SCALEKIQ_REDIS_URL",
                             "--redis-url", the variable REDIS_PROVIDER names,
                             "REDIS_URL", "REDIS_TLS_URL" or "default" */
  redis_url_t redis;      /* redis_url parsed */
  enum config_tls_verify redis_tls_verify;
  char *redis_tls_ca_file;   /* NULL when unset */
  char *redis_tls_cert_file; /* NULL when unset; set together with key_file */
  char *redis_tls_key_file;
  char *sidekiq_namespace; /* "" when none */

  /* scaling policy (durations in seconds) */
  double poll_interval;
  double latency_threshold;
  double latency_restored_threshold;
  double usage_threshold;
  double alert_interval;
  int max_additional_workers;
  char **queues;  /* watched queues, distinct, in the order given */
  size_t nqueues; /* 0: every queue */

  /* shared state and leadership */
  char *state_namespace; /* SCALEKIQ_NAMESPACE */
  double lock_ttl;
  double lock_tick;

  /* Heroku */
  char *formation;
  char *heroku_app;        /* name or UUID; NULL when unset */
  char *heroku_app_source; /* "HEROKU_APP_NAME", "HEROKU_APP_ID" or "--heroku-app" */
  char *heroku_api_key;    /* secret; NULL when unset */
  char *heroku_api_url;    /* without a trailing '/' */

  /* this agent */
  char *socket_path;
  int socket_mode;            /* SCALEKIQ_SOCKET_MODE: 0600 (default), 0640 or 0660 */
  int dry_run;
  enum log_level log_level;
  double request_timeout; /* each Redis and Platform API request */
  char *identity;         /* DYNO, else the host name; the pid is not included */
} config_t;

/* envp: NULL-terminated "KEY=VALUE" array (NULL means empty).
 * argc/argv: the flags after the subcommand; "--name value" and
 * "--name=value" both work, --dry-run is a bare flag (or --dry-run=BOOL).
 * The first argument that is not a flag, or a literal "--", ends parsing;
 * *consumed (may be NULL) is set to the number of argv entries used,
 * the "--" included, so argv[*consumed..argc) belongs to the caller.
 * need_heroku: when nonzero and not a dry run, the Heroku app and token
 * are required.
 * Returns 0, or -1 with err holding one line and cfg left empty (so
 * config_free() is harmless either way). */
int config_load(config_t *cfg, char *const *envp, int argc, char *const *argv,
                int need_heroku, int *consumed, char *err, size_t errlen);

void config_free(config_t *cfg);

/* The Redis client's TLS options from cfg (used for rediss:// only). The
 * strings stay cfg's. */
void config_redis_tls(const config_t *cfg, redis_tls_options_t *out);

/* One logfmt line ("key=value ...") of the effective settings, safe to
 * log: the Redis password is masked and the token is only "set"/"unset".
 * Truncated to fit size. */
void config_describe(const config_t *cfg, char *buf, size_t size);

#endif
