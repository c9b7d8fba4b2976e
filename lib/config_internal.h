/*
 * config_internal: the loader machinery config.c owns and the per-service
 * loaders (config_redis.c, config_heroku.c) use: the setting ids and
 * their table, where a value came from, and the helpers that find a value
 * and word an error. Not part of the API.
 */
#ifndef SCALEKIQ_CONFIG_INTERNAL_H
#define SCALEKIQ_CONFIG_INTERNAL_H

#include <stddef.h>

#include "config.h"

enum setting_id {
  S_REDIS_URL,
  S_REDIS_TLS_VERIFY,
  S_REDIS_TLS_CA_FILE,
  S_REDIS_TLS_CERT_FILE,
  S_REDIS_TLS_KEY_FILE,
  S_SIDEKIQ_NAMESPACE,
  S_POLL_INTERVAL,
  S_LATENCY_THRESHOLD,
  S_LATENCY_RESTORED_THRESHOLD,
  S_USAGE_THRESHOLD,
  S_ALERT_INTERVAL,
  S_MAX_ADDITIONAL_WORKERS,
  S_QUEUES,
  S_NAMESPACE,
  S_FORMATION,
  S_HEROKU_APP,
  S_HEROKU_API_URL,
  S_LOCK_TTL,
  S_LOCK_TICK,
  S_SOCKET,
  S_SOCKET_MODE,
  S_DRY_RUN,
  S_LOG_LEVEL,
  S_REQUEST_TIMEOUT,
  S_COUNT
};

struct setting {
  const char *env;
  const char *flag;
  int bare; /* a flag that takes no separate value argument */
};

/* Every setting's variable and flag, indexed by enum setting_id. */
extern const struct setting config_settings[S_COUNT];

/* A resolved value and the name the user knows it by, for messages. */
struct source {
  const char *value;
  const char *name;
};

struct loader {
  config_t *cfg;
  char *const *envp;
  const char *flags[S_COUNT]; /* value given on the command line, or NULL */
  char *err;
  size_t errlen;
};

/* Long enough for any sane value, short enough that a pasted blob does
 * not bury the rest of the message. */
#define SHOWN_VALUE_MAX 80

/* Room for config_quoted() of any value. */
#define QBUF (SHOWN_VALUE_MAX * 4 + 8)

/* Puts the message in ld->err; returns -1. */
int config_fail(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* value between double quotes, escaped and shortened: one printable line. */
const char *config_quoted(char *buf, size_t size, const char *value);
/* The variable's value, NULL when unset or empty. */
const char *config_env_nonempty(const struct loader *ld, const char *name);
/* Returns 1 when the setting was given (flag first, then variable). */
int config_lookup(const struct loader *ld, enum setting_id id, struct source *src);
/* *dst = a heap copy of value; -1 (with the error set) out of memory. */
int config_copy_string(struct loader *ld, char **dst, const char *value);
int config_has_space_or_control(const char *s);

/* The per-service loaders config_load() runs: 0, or -1 with the error set. */
int config_load_redis_url(struct loader *ld); /* config_redis.c */
int config_load_tls(struct loader *ld);       /* config_redis.c */
/* Needs cfg->dry_run loaded. */
int config_load_heroku(struct loader *ld, int need_heroku); /* config_heroku.c */

#endif
