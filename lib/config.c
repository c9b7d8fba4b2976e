/*
 * config: owns turning the environment and the command-line flags into a
 * validated config_t: the settings table, the flags, numbers and
 * durations, the policy, queue, lock and agent settings, and the loader
 * machinery (finding a value, wording an error). The Redis and Heroku
 * settings are checked in config_redis.c and config_heroku.c, which use
 * that machinery through config_internal.h.
 *
 * Loading runs in two passes: the flags are collected first (so that a
 * flag wins over its variable whatever the order), then each setting is
 * resolved, validated and stored in turn. The first problem found stops
 * the load: one clear error beats a screenful. Every string kept is a heap
 * copy, so the config outlives the environment and argv it came from.
 */
#include "config.h"
#include "control.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "config_internal.h"

const struct setting config_settings[S_COUNT] = {
    [S_REDIS_URL] = {"SCALEKIQ_REDIS_URL", "--redis-url", 0},
    [S_REDIS_TLS_VERIFY] = {"SCALEKIQ_REDIS_TLS_VERIFY", "--redis-tls-verify", 0},
    [S_REDIS_TLS_CA_FILE] = {"SCALEKIQ_REDIS_TLS_CA_FILE", "--redis-tls-ca-file", 0},
    [S_REDIS_TLS_CERT_FILE] = {"SCALEKIQ_REDIS_TLS_CERT_FILE", "--redis-tls-cert-file",
                               0},
    [S_REDIS_TLS_KEY_FILE] = {"SCALEKIQ_REDIS_TLS_KEY_FILE", "--redis-tls-key-file", 0},
    [S_SIDEKIQ_NAMESPACE] = {"SCALEKIQ_SIDEKIQ_NAMESPACE", "--sidekiq-namespace", 0},
    [S_POLL_INTERVAL] = {"SCALEKIQ_POLL_INTERVAL", "--poll-interval", 0},
    [S_LATENCY_THRESHOLD] = {"SCALEKIQ_LATENCY_THRESHOLD", "--latency-threshold", 0},
    [S_LATENCY_RESTORED_THRESHOLD] = {"SCALEKIQ_LATENCY_RESTORED_THRESHOLD",
                                      "--latency-restored-threshold", 0},
    [S_USAGE_THRESHOLD] = {"SCALEKIQ_USAGE_THRESHOLD", "--usage-threshold", 0},
    [S_ALERT_INTERVAL] = {"SCALEKIQ_ALERT_INTERVAL", "--alert-interval", 0},
    [S_MAX_ADDITIONAL_WORKERS] = {"SCALEKIQ_MAX_ADDITIONAL_WORKERS",
                                  "--max-additional-workers", 0},
    [S_QUEUES] = {"SCALEKIQ_QUEUES", "--queues", 0},
    [S_NAMESPACE] = {"SCALEKIQ_NAMESPACE", "--namespace", 0},
    [S_FORMATION] = {"SCALEKIQ_FORMATION", "--formation", 0},
    /* HEROKU_APP_ID is the fallback variable, resolved in config_load_heroku() */
    [S_HEROKU_APP] = {"HEROKU_APP_NAME", "--heroku-app", 0},
    [S_HEROKU_API_URL] = {"HEROKU_API_URL", "--heroku-api-url", 0},
    [S_LOCK_TTL] = {"SCALEKIQ_LOCK_TTL", "--lock-ttl", 0},
    [S_LOCK_TICK] = {"SCALEKIQ_LOCK_TICK", "--lock-tick", 0},
    [S_SOCKET] = {"SCALEKIQ_SOCKET", "--socket", 0},
    [S_SOCKET_MODE] = {"SCALEKIQ_SOCKET_MODE", "--socket-mode", 0},
    [S_DRY_RUN] = {"SCALEKIQ_DRY_RUN", "--dry-run", 1},
    [S_LOG_LEVEL] = {"SCALEKIQ_LOG_LEVEL", "--log-level", 0},
    [S_REQUEST_TIMEOUT] = {"SCALEKIQ_REQUEST_TIMEOUT", "--request-timeout", 0},
};

int config_fail(struct loader *ld, const char *fmt, ...) {
  if (ld->err != NULL && ld->errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err, ld->errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* The value between double quotes, escaped so the message stays one
 * printable line whatever the user pasted. */
const char *config_quoted(char *buf, size_t size, const char *value) {
  size_t o = 0, shown = 0;
  buf[o++] = '"';
  for (const char *p = value; *p != '\0'; p++, shown++) {
    unsigned char c = (unsigned char)*p;
    if (shown == SHOWN_VALUE_MAX || o + 8 >= size) {
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < ' ' || c == 0x7f) {
      o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}

static const char *env_get(char *const *envp, const char *name) {
  if (envp == NULL) return NULL;
  size_t len = strlen(name);
  for (char *const *e = envp; *e != NULL; e++)
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
  return NULL;
}

/* Empty variables count as unset: platforms and shells make them easily,
 * and "unset" is what people mean by them. */
const char *config_env_nonempty(const struct loader *ld, const char *name) {
  const char *v = env_get(ld->envp, name);
  return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Returns 1 when the setting was given (flag first, then variable). */
int config_lookup(const struct loader *ld, enum setting_id id, struct source *src) {
  if (ld->flags[id] != NULL) {
    src->value = ld->flags[id];
    src->name = config_settings[id].flag;
    return 1;
  }
  src->value = config_env_nonempty(ld, config_settings[id].env);
  src->name = config_settings[id].env;
  return src->value != NULL;
}

int config_copy_string(struct loader *ld, char **dst, const char *value) {
  *dst = strdup(value);
  if (*dst == NULL)
    return config_fail(ld, "out of memory while loading the configuration");
  return 0;
}

/* ---- command line ------------------------------------------------- */

static int parse_flags(struct loader *ld, int argc, char *const *argv, int *consumed) {
  int i = 0;
  for (; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0') break; /* the caller's command */
    const char *eq = strchr(arg, '=');
    size_t namelen = eq ? (size_t)(eq - arg) : strlen(arg);
    int id = -1;
    for (int s = 0; s < S_COUNT; s++)
      if (strlen(config_settings[s].flag) == namelen &&
          strncmp(config_settings[s].flag, arg, namelen) == 0)
        id = s;
    /* Only the name is ever echoed: whatever follows '=' may be a secret. */
    if (id < 0 && namelen == strlen("--heroku-api-key") &&
        strncmp(arg, "--heroku-api-key", namelen) == 0)
      return config_fail(ld, "--heroku-api-key is not an option: a token on the command "
                             "line is visible to every user through ps; set "
                             "HEROKU_API_KEY in the environment instead");
    if (id < 0) {
      char q[QBUF];
      char name[SHOWN_VALUE_MAX + 1];
      size_t n = namelen < SHOWN_VALUE_MAX ? namelen : SHOWN_VALUE_MAX;
      memcpy(name, arg, n);
      name[n] = '\0';
      return config_fail(ld, "unknown option %s: see scalekiq --help for the options",
                         config_quoted(q, sizeof(q), name));
    }
    if (eq != NULL) {
      ld->flags[id] = eq + 1;
    } else if (config_settings[id].bare) {
      ld->flags[id] = "1";
    } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
      ld->flags[id] = argv[++i];
    } else {
      return config_fail(ld, "%s needs a value: write %s VALUE or %s=VALUE",
                         config_settings[id].flag, config_settings[id].flag,
                         config_settings[id].flag);
    }
  }
  if (consumed != NULL) *consumed = i;
  return 0;
}

/* ---- numbers ------------------------------------------------------ */

struct range {
  double min, max;
  int min_excluded;
  const char *unit; /* "seconds", or "" for a plain number */
  const char *example;
};

/* strtod alone would take hex, "inf", "nan" and leading blanks; a
 * configuration value is plain decimal or it is a mistake. Returns 0, -1
 * when it is not a number, -2 when it is one too large or too small for
 * a double (1e400, 1e-400): that is a range problem, and said so. */
static int parse_decimal(const char *s, double *out) {
  if (s[0] == '\0') return -1;
  for (const char *p = s; *p; p++)
    if (!isdigit((unsigned char)*p) && strchr(".eE+-", *p) == NULL) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end != '\0' || end == s) return -1;
  if (errno == ERANGE || !isfinite(v)) return -2;
  *out = v;
  return 0;
}

static int range_hint(char *buf, size_t size, const struct range *r) {
  if (r->min_excluded)
    return snprintf(buf, size,
                    "set it to a number%s%s above %g and at most %g, such as %s",
                    r->unit[0] ? " of " : "", r->unit, r->min, r->max, r->example);
  return snprintf(buf, size, "set it to a number%s%s from %g to %g, such as %s",
                  r->unit[0] ? " of " : "", r->unit, r->min, r->max, r->example);
}

static int check_number(struct loader *ld, const struct source *src,
                        const struct range *r, double *out) {
  char q[QBUF], hint[160];
  range_hint(hint, sizeof(hint), r);
  double v = 0;
  int parsed = parse_decimal(src->value, &v);
  if (parsed == -1)
    return config_fail(ld, "%s=%s is not a number%s%s: %s", src->name,
                       config_quoted(q, sizeof(q), src->value), r->unit[0] ? " of " : "",
                       r->unit, hint);
  if (parsed != 0 || v < r->min || (r->min_excluded && v == r->min) || v > r->max)
    return config_fail(ld, "%s=%s is out of range: %s", src->name,
                       config_quoted(q, sizeof(q), src->value), hint);
  if (r->min_excluded && v < CONFIG_MIN_DURATION && strcmp(r->unit, "seconds") == 0)
    return config_fail(
        ld,
        "%s=%s is too short: set it to at least %g seconds (timers count milliseconds)",
        src->name, config_quoted(q, sizeof(q), src->value), CONFIG_MIN_DURATION);
  *out = v;
  return 0;
}

/* Loads one optional number; *out keeps its default when unset. Returns
 * 1 when set, 0 when not, -1 on error. */
static int load_number(struct loader *ld, enum setting_id id, const struct range *r,
                       double *out) {
  struct source src;
  if (!config_lookup(ld, id, &src)) return 0;
  return check_number(ld, &src, r, out) == 0 ? 1 : -1;
}

static const struct range duration = {0, CONFIG_MAX_DURATION, 1, "seconds", "5"};

static int load_max_workers(struct loader *ld) {
  struct source src;
  if (!config_lookup(ld, S_MAX_ADDITIONAL_WORKERS, &src)) return 0;
  char q[QBUF];
  const char *s = src.value;
  int digits = s[0] != '\0';
  for (const char *p = s; *p; p++)
    if (!isdigit((unsigned char)*p)) digits = 0;
  /* "-1" is a whole number, just not an allowed one. */
  int negative = s[0] == '-' && s[1] != '\0';
  for (const char *p = s + 1; negative && *p; p++)
    if (!isdigit((unsigned char)*p)) negative = 0;
  if (!digits && !negative)
    return config_fail(
        ld,
        "%s=%s is not a whole number: set it to a whole number from 0 to %d, "
        "such as 2",
        src.name, config_quoted(q, sizeof(q), s), CONFIG_MAX_ADDITIONAL_WORKERS);
  errno = 0;
  long v = strtol(s, NULL, 10);
  if (negative || errno == ERANGE || v > CONFIG_MAX_ADDITIONAL_WORKERS)
    return config_fail(ld,
                       "%s=%s is out of range: set it to a whole number from 0 to %d, "
                       "such as 2",
                       src.name, config_quoted(q, sizeof(q), s),
                       CONFIG_MAX_ADDITIONAL_WORKERS);
  ld->cfg->max_additional_workers = (int)v;
  return 0;
}

/* ---- strings ------------------------------------------------------ */

int config_has_space_or_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || *s == 0x7f) return 1;
  return 0;
}

static int load_bool(struct loader *ld, enum setting_id id, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off", ""};
  /* Unlike other settings an empty value is meaningful here ("off"), so
   * read the variable directly rather than through config_lookup(). */
  struct source src = {ld->flags[id], config_settings[id].flag};
  if (src.value == NULL) {
    src.value = env_get(ld->envp, config_settings[id].env);
    src.name = config_settings[id].env;
  }
  if (src.value == NULL) return 0;
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
    if (strcasecmp(src.value, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
  for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
    if (strcasecmp(src.value, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  char q[QBUF];
  return config_fail(ld,
                     "%s=%s is not a boolean: set it to 1, true, yes or on to enable, "
                     "0, false, no or off to disable",
                     src.name, config_quoted(q, sizeof(q), src.value));
}

static int load_namespaces(struct loader *ld) {
  config_t *cfg = ld->cfg;
  struct source src;
  char q[QBUF];
  const char *ns = CONFIG_DEFAULT_NAMESPACE;
  if (config_lookup(ld, S_NAMESPACE, &src)) {
    if (src.value[0] == '\0' || config_has_space_or_control(src.value))
      return config_fail(ld,
                         "%s=%s is not a usable key prefix: set it to a non-empty prefix "
                         "without spaces, such as %s",
                         src.name, config_quoted(q, sizeof(q), src.value),
                         CONFIG_DEFAULT_NAMESPACE);
    ns = src.value;
  }
  if (config_copy_string(ld, &cfg->state_namespace, ns) != 0) return -1;

  const char *sk = "";
  if (config_lookup(ld, S_SIDEKIQ_NAMESPACE, &src)) {
    if (config_has_space_or_control(src.value))
      return config_fail(ld,
                         "%s=%s contains spaces or control characters: set it to the "
                         "redis-namespace your Sidekiq uses, such as myapp, or unset it",
                         src.name, config_quoted(q, sizeof(q), src.value));
    sk = src.value;
  }
  return config_copy_string(ld, &cfg->sidekiq_namespace, sk);
}

/* The formation type goes into a Platform API URL path. */
static int load_formation(struct loader *ld) {
  struct source src;
  const char *v = CONFIG_DEFAULT_FORMATION;
  if (config_lookup(ld, S_FORMATION, &src)) {
    int ok = src.value[0] != '\0' && strlen(src.value) <= 64;
    for (const char *p = src.value; *p && ok; p++)
      ok = islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' ||
           *p == '-';
    if (!ok) {
      char q[QBUF];
      return config_fail(
          ld,
          "%s=%s is not a process type: set it to the Procfile name of the "
          "dynos to scale (a-z, 0-9, _ and -), such as worker",
          src.name, config_quoted(q, sizeof(q), src.value));
    }
    v = src.value;
  }
  return config_copy_string(ld, &ld->cfg->formation, v);
}

static int add_queue(struct loader *ld, const char *name, size_t len) {
  config_t *cfg = ld->cfg;
  for (size_t i = 0; i < cfg->nqueues; i++)
    if (strlen(cfg->queues[i]) == len && memcmp(cfg->queues[i], name, len) == 0) return 0;
  char **grown = realloc(cfg->queues, (cfg->nqueues + 1) * sizeof(*grown));
  if (grown == NULL)
    return config_fail(ld, "out of memory while loading the configuration");
  cfg->queues = grown;
  char *copy = strndup(name, len);
  if (copy == NULL)
    return config_fail(ld, "out of memory while loading the configuration");
  cfg->queues[cfg->nqueues++] = copy;
  return 0;
}

static int load_queues(struct loader *ld) {
  struct source src;
  if (!config_lookup(ld, S_QUEUES, &src)) return 0;
  const char *s = src.value;
  while (*s == ' ' || *s == '\t') s++;
  if (*s == '\0') return 0; /* blank: every queue, like unset */
  char q[QBUF];
  for (const char *item = src.value;;) {
    const char *comma = strchr(item, ',');
    const char *end = comma ? comma : item + strlen(item);
    const char *b = item, *e = end;
    while (b < e && (*b == ' ' || *b == '\t')) b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (b == e)
      return config_fail(ld,
                         "%s=%s has an empty queue name: list queue names separated by "
                         "commas, such as default,mailers",
                         src.name, config_quoted(q, sizeof(q), src.value));
    for (const char *p = b; p < e; p++)
      if ((unsigned char)*p <= ' ' || *p == 0x7f)
        return config_fail(ld,
                           "%s=%s has a queue name with a space or control character in "
                           "it: list queue names separated by commas, such as "
                           "default,mailers",
                           src.name, config_quoted(q, sizeof(q), src.value));
    if (add_queue(ld, b, (size_t)(e - b)) != 0) return -1;
    if (comma == NULL) break;
    item = comma + 1;
  }
  return 0;
}

/* ---- this agent --------------------------------------------------- */

static int load_socket(struct loader *ld) {
  struct source src;
  const char *v = CONFIG_DEFAULT_SOCKET;
  if (config_lookup(ld, S_SOCKET, &src)) {
    char q[QBUF];
    if (src.value[0] == '\0')
      return config_fail(ld, "%s=\"\" is empty: set it to a socket path such as %s",
                         src.name, CONFIG_DEFAULT_SOCKET);
    size_t max = CONTROL_PATH_MAX - 1; /* the server binds PATH.<pid> first */
    if (strlen(src.value) > max)
      return config_fail(ld,
                         "%s=%s is %zu bytes long: a Unix socket path holds at most %zu, "
                         "set it to a shorter path such as %s",
                         src.name, config_quoted(q, sizeof(q), src.value),
                         strlen(src.value), max, CONFIG_DEFAULT_SOCKET);
    v = src.value;
  }
  if (config_copy_string(ld, &ld->cfg->socket_path, v) != 0) return -1;
  /* Owner read/write, and optionally the group's (0660 lets a group of
   * operators in); never anyone else. */
  ld->cfg->socket_mode = 0600;
  if (config_lookup(ld, S_SOCKET_MODE, &src)) {
    char q[QBUF], *end;
    /* Octal digits only: strtol would also take blanks and a sign. */
    int digits = src.value[0] != '\0' && strlen(src.value) <= 8;
    for (const char *p = src.value; *p && digits; p++) digits = *p >= '0' && *p <= '7';
    errno = 0;
    long mode = digits ? strtol(src.value, &end, 8) : -1;
    if (mode != 0600 && mode != 0660 && mode != 0640)
      return config_fail(ld,
                         "%s=%s is not an allowed mode: use 0600 (the default), 0640 or "
                         "0660 to let the agent's group in",
                         src.name, config_quoted(q, sizeof(q), src.value));
    ld->cfg->socket_mode = (int)mode;
  }
  return 0;
}

static int load_log_level(struct loader *ld) {
  struct source src;
  ld->cfg->log_level = LOG_INFO;
  if (!config_lookup(ld, S_LOG_LEVEL, &src)) return 0;
  if (log_level_parse(src.value, &ld->cfg->log_level) != 0) {
    char q[QBUF];
    return config_fail(ld,
                       "%s=%s is not a log level: set it to debug, info, warn or error",
                       src.name, config_quoted(q, sizeof(q), src.value));
  }
  return 0;
}

static int load_identity(struct loader *ld) {
  const char *dyno = config_env_nonempty(ld, "DYNO");
  if (dyno != NULL) return config_copy_string(ld, &ld->cfg->identity, dyno);
  char host[256];
  if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
    snprintf(host, sizeof(host), "unknown-host");
  host[sizeof(host) - 1] = '\0';
  return config_copy_string(ld, &ld->cfg->identity, host);
}

/* ---- policy and timing -------------------------------------------- */

static int load_policy(struct loader *ld) {
  config_t *cfg = ld->cfg;
  static const struct range poll = {0, CONFIG_MAX_POLL_INTERVAL, 1, "seconds", "5"};
  static const struct range restored = {0, CONFIG_MAX_DURATION, 0, "seconds", "2"};
  static const struct range usage = {0, 100, 1, "", "0.9"};
  static const struct range alert = {0, CONFIG_MAX_DURATION, 0, "seconds", "120"};

  cfg->poll_interval = 5;
  cfg->latency_threshold = 5;
  cfg->usage_threshold = 1;
  cfg->alert_interval = 120;
  cfg->max_additional_workers = 2;
  if (load_number(ld, S_POLL_INTERVAL, &poll, &cfg->poll_interval) < 0 ||
      load_number(ld, S_LATENCY_THRESHOLD, &duration, &cfg->latency_threshold) < 0 ||
      load_number(ld, S_USAGE_THRESHOLD, &usage, &cfg->usage_threshold) < 0 ||
      load_number(ld, S_ALERT_INTERVAL, &alert, &cfg->alert_interval) < 0 ||
      load_max_workers(ld) < 0)
    return -1;

  /* Defaulting to the threshold gives the gem's behaviour: the event ends
   * as soon as nothing is high. */
  cfg->latency_restored_threshold = cfg->latency_threshold;
  int set = load_number(ld, S_LATENCY_RESTORED_THRESHOLD, &restored,
                        &cfg->latency_restored_threshold);
  if (set < 0) return -1;
  if (set && cfg->latency_restored_threshold > cfg->latency_threshold) {
    struct source src;
    char q[QBUF];
    config_lookup(ld, S_LATENCY_RESTORED_THRESHOLD, &src);
    return config_fail(
        ld,
        "%s=%s is above the latency threshold (%g s): set it from 0 to %g, "
        "the latency at which an event counts as over",
        src.name, config_quoted(q, sizeof(q), src.value), cfg->latency_threshold,
        cfg->latency_threshold);
  }
  return 0;
}

static int load_timing(struct loader *ld) {
  config_t *cfg = ld->cfg;
  /* A lease of three polls survives one slow poll; under a second it
   * would be renewed faster than a Redis round trip can be trusted. */
  cfg->lock_ttl = 3 * cfg->poll_interval;
  if (cfg->lock_ttl < 1) cfg->lock_ttl = 1;
  int ttl_set = load_number(ld, S_LOCK_TTL, &duration, &cfg->lock_ttl);
  if (ttl_set < 0) return -1;
  cfg->lock_tick = cfg->lock_ttl / 3;
  int tick_set = load_number(ld, S_LOCK_TICK, &duration, &cfg->lock_tick);
  if (tick_set < 0) return -1;
  if (!tick_set && cfg->lock_tick < CONFIG_MIN_DURATION) {
    /* The derived tick would be under a timer's millisecond. */
    struct source src;
    char q[QBUF];
    config_lookup(ld, S_LOCK_TTL, &src);
    return config_fail(ld,
                       "%s=%s is too short: the lock tick (TTL / 3) would be under %g s; "
                       "set it to at least %g seconds, or set %s too",
                       src.name, config_quoted(q, sizeof(q), src.value),
                       CONFIG_MIN_DURATION, 3 * CONFIG_MIN_DURATION,
                       config_settings[S_LOCK_TICK].env);
  }
  if (cfg->lock_tick >= cfg->lock_ttl) {
    struct source src;
    char q[QBUF];
    config_lookup(ld, S_LOCK_TICK, &src);
    const char *ttl_from = ttl_set
                               ? (ld->flags[S_LOCK_TTL] ? config_settings[S_LOCK_TTL].flag
                                                        : config_settings[S_LOCK_TTL].env)
                               : "the default, 3 x poll interval";
    return config_fail(
        ld,
        "%s=%s is not shorter than the lock TTL (%g s, from %s): the lease "
        "would lapse between renewals; set it below %g, such as %g",
        src.name, config_quoted(q, sizeof(q), src.value), cfg->lock_ttl, ttl_from,
        cfg->lock_ttl, cfg->lock_ttl / 3);
  }
  cfg->request_timeout = 5;
  return load_number(ld, S_REQUEST_TIMEOUT, &duration, &cfg->request_timeout) < 0 ? -1
                                                                                  : 0;
}

/* ---- public ------------------------------------------------------- */

int config_load(config_t *cfg, char *const *envp, int argc, char *const *argv,
                int need_heroku, int *consumed, char *err, size_t errlen) {
  struct loader ld = {.cfg = cfg, .envp = envp, .err = err, .errlen = errlen};
  memset(cfg, 0, sizeof(*cfg));
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (consumed != NULL) *consumed = 0;
  if (argc < 0 || (argc > 0 && argv == NULL)) {
    config_fail(&ld, "invalid arguments to config_load");
    return -1;
  }
  if (parse_flags(&ld, argc, argv, consumed) != 0 ||
      load_bool(&ld, S_DRY_RUN, &cfg->dry_run) != 0 || load_log_level(&ld) != 0 ||
      config_load_redis_url(&ld) != 0 || config_load_tls(&ld) != 0 ||
      load_namespaces(&ld) != 0 || load_policy(&ld) != 0 || load_queues(&ld) != 0 ||
      load_timing(&ld) != 0 || load_formation(&ld) != 0 ||
      config_load_heroku(&ld, need_heroku) != 0 || load_socket(&ld) != 0 ||
      load_identity(&ld) != 0) {
    config_free(cfg);
    return -1;
  }
  return 0;
}

void config_free(config_t *cfg) {
  char **strings[] = {&cfg->redis_url,          &cfg->redis_url_source,
                      &cfg->redis_tls_ca_file,  &cfg->redis_tls_cert_file,
                      &cfg->redis_tls_key_file, &cfg->sidekiq_namespace,
                      &cfg->state_namespace,    &cfg->formation,
                      &cfg->heroku_app,         &cfg->heroku_app_source,
                      &cfg->heroku_api_key,     &cfg->heroku_api_url,
                      &cfg->socket_path,        &cfg->identity};
  for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) free(*strings[i]);
  for (size_t i = 0; i < cfg->nqueues; i++) free(cfg->queues[i]);
  free(cfg->queues);
  /* The parsed URL holds the Redis password: do not leave it behind. */
  memset(cfg, 0, sizeof(*cfg));
}

/* Appends " key=value" (value logfmt-quoted when needed) at *len. */
static void describe_str(char *buf, size_t size, size_t *len, const char *key,
                         const char *value) {
  char q[1024];
  if (*len >= size) return;
  int n = snprintf(buf + *len, size - *len, "%s%s=%s", *len ? " " : "", key,
                   log_quote(q, sizeof(q), value ? value : ""));
  if (n > 0) *len += (size_t)n;
  if (*len >= size) *len = size - 1;
}

static void describe_num(char *buf, size_t size, size_t *len, const char *key,
                         double value) {
  char num[64];
  snprintf(num, sizeof(num), "%g", value);
  describe_str(buf, size, len, key, num);
}

void config_describe(const config_t *cfg, char *buf, size_t size) {
  if (buf == NULL || size == 0) return;
  buf[0] = '\0';
  size_t len = 0;
  char url[1024], queues[1024] = "";
  redis_url_redacted(&cfg->redis, url, sizeof(url));
  size_t ql = 0;
  for (size_t i = 0; i < cfg->nqueues && ql < sizeof(queues); i++) {
    int n =
        snprintf(queues + ql, sizeof(queues) - ql, "%s%s", i ? "," : "", cfg->queues[i]);
    if (n > 0) ql += (size_t)n;
  }
  static const char *const levels[] = {"debug", "info", "warn", "error"};

  describe_str(buf, size, &len, "redis", url);
  describe_str(buf, size, &len, "redis_from", cfg->redis_url_source);
  describe_str(buf, size, &len, "redis_tls_verify",
               cfg->redis_tls_verify == CONFIG_TLS_VERIFY_NONE ? "none" : "peer");
  if (cfg->redis_tls_ca_file)
    describe_str(buf, size, &len, "redis_tls_ca_file", cfg->redis_tls_ca_file);
  if (cfg->redis_tls_cert_file)
    describe_str(buf, size, &len, "redis_tls_cert_file", cfg->redis_tls_cert_file);
  describe_str(buf, size, &len, "sidekiq_namespace", cfg->sidekiq_namespace);
  describe_str(buf, size, &len, "queues", cfg->nqueues ? queues : "all");
  describe_num(buf, size, &len, "poll_interval", cfg->poll_interval);
  describe_num(buf, size, &len, "latency_threshold", cfg->latency_threshold);
  describe_num(buf, size, &len, "latency_restored_threshold",
               cfg->latency_restored_threshold);
  describe_num(buf, size, &len, "usage_threshold", cfg->usage_threshold);
  describe_num(buf, size, &len, "alert_interval", cfg->alert_interval);
  describe_num(buf, size, &len, "max_additional_workers", cfg->max_additional_workers);
  describe_str(buf, size, &len, "namespace", cfg->state_namespace);
  describe_num(buf, size, &len, "lock_ttl", cfg->lock_ttl);
  describe_num(buf, size, &len, "lock_tick", cfg->lock_tick);
  describe_str(buf, size, &len, "formation", cfg->formation);
  describe_str(buf, size, &len, "heroku_app",
               cfg->heroku_app ? cfg->heroku_app : "unset");
  describe_str(buf, size, &len, "heroku_api_url", cfg->heroku_api_url);
  describe_str(buf, size, &len, "heroku_token", cfg->heroku_api_key ? "set" : "unset");
  describe_str(buf, size, &len, "dry_run", cfg->dry_run ? "true" : "false");
  describe_str(buf, size, &len, "socket", cfg->socket_path);
  describe_str(buf, size, &len, "log_level",
               (unsigned)cfg->log_level < 4 ? levels[cfg->log_level] : "info");
  describe_num(buf, size, &len, "request_timeout", cfg->request_timeout);
  describe_str(buf, size, &len, "identity", cfg->identity);
}

void config_redis_tls(const config_t *cfg, redis_tls_options_t *out) {
  out->no_verify = cfg->redis_tls_verify == CONFIG_TLS_VERIFY_NONE;
  out->ca_file = cfg->redis_tls_ca_file;
  out->cert_file = cfg->redis_tls_cert_file;
  out->key_file = cfg->redis_tls_key_file;
}
