/*
 * fuzz_config: config_load() with an environment and flags built from the
 * input, then config_describe() and config_free(). The input is lines:
 *
 *   "-..."   an argv entry as it is ("--poll-interval=1", "--dry-run")
 *   " ..."   an argv entry without that first space (a flag's value)
 *   other    an environment entry ("SCALEKIQ_QUEUES=default,mailers")
 *
 * The token and the Redis password must never reach the error or the
 * description: loading again with another token must give the same text.
 */
#include "fuzz.h"

#include "config.h"
#include "control.h"

typedef struct input {
  char *text;  /* the input, NUL-terminated, lines cut at their LF */
  char **env;  /* NULL-terminated */
  char **argv; /* argc entries and a NULL */
  int argc;
} input_t;

static void input_free(input_t *in) {
  free(in->text);
  free(in->env);
  free(in->argv);
}

static int input_split(input_t *in, const uint8_t *data, size_t size) {
  memset(in, 0, sizeof(*in));
  size_t lines = 1;
  for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
  in->text = fuzz_strndup(data, size);
  in->env = calloc(lines + 1, sizeof(char *));
  in->argv = calloc(lines + 1, sizeof(char *));
  if (in->text == NULL || in->env == NULL || in->argv == NULL) return -1;
  size_t nenv = 0;
  char *line = in->text;
  for (;;) {
    char *lf = strchr(line, '\n');
    if (lf) *lf = '\0';
    if (line[0] == '-') in->argv[in->argc++] = line;
    else if (line[0] == ' ') in->argv[in->argc++] = line + 1;
    else in->env[nenv++] = line;
    if (lf == NULL) break;
    line = lf + 1;
  }
  return 0;
}

/* The first entry for name, as config_load looks it up. */
static char **env_entry(char **env, const char *name) {
  size_t len = strlen(name);
  for (; *env; env++)
    if (strncmp(*env, name, len) == 0 && (*env)[len] == '=') return env;
  return NULL;
}

typedef struct outcome {
  int rc, consumed;
  char err[1024];
  char described[8192];
} outcome_t;

static void check_loaded(const config_t *cfg, const outcome_t *o) {
  FUZZ_CHECK(cfg->poll_interval > 0 && cfg->latency_threshold > 0 &&
                 cfg->latency_restored_threshold >= 0 &&
                 cfg->latency_restored_threshold <= cfg->latency_threshold,
             "loaded thresholds are consistent");
  FUZZ_CHECK(cfg->lock_tick > 0 && cfg->lock_tick < cfg->lock_ttl,
             "the lock tick is below the lock TTL");
  FUZZ_CHECK(cfg->max_additional_workers >= 0 &&
                 cfg->max_additional_workers <= CONFIG_MAX_ADDITIONAL_WORKERS,
             "max additional workers is in range");
  FUZZ_CHECK(cfg->redis_url && cfg->redis_url_source && cfg->state_namespace &&
                 cfg->sidekiq_namespace && cfg->formation && cfg->heroku_api_url &&
                 cfg->socket_path && cfg->identity,
             "a loaded config has every string");
  FUZZ_CHECK(strlen(cfg->socket_path) < CONTROL_PATH_MAX, "the socket path fits");
  FUZZ_CHECK(fuzz_is_one_line(o->described), "the description is one line");

  /* Another password must describe the same. */
  config_t other = *cfg;
  if (cfg->redis.password[0] != '\0')
    snprintf(other.redis.password, sizeof(other.redis.password), "%s",
             strcmp(cfg->redis.password, "x") != 0 ? "x" : "y");
  char described[sizeof(o->described)];
  config_describe(&other, described, sizeof(described));
  FUZZ_CHECK(strcmp(described, o->described) == 0,
             "the description does not depend on the Redis password");
}

static void load(const input_t *in, outcome_t *o, int check) {
  config_t cfg;
  o->err[0] = o->described[0] = '\0';
  o->consumed = -1;
  o->rc = config_load(&cfg, in->env, in->argc, in->argv, 1, &o->consumed, o->err,
                      sizeof(o->err));
  if (o->rc == 0) {
    FUZZ_CHECK(o->consumed >= 0 && o->consumed <= in->argc, "consumed counts argv");
    config_describe(&cfg, o->described, sizeof(o->described));
    if (check) check_loaded(&cfg, o);
    config_free(&cfg);
  } else {
    FUZZ_CHECK(o->rc == -1, "a failed load returns -1");
    FUZZ_CHECK(o->err[0] != '\0' && fuzz_is_one_line(o->err),
               "a failed load says why on one line");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input_t in = {0};
  outcome_t *first = calloc(2, sizeof(outcome_t));
  if (first == NULL || input_split(&in, data, size) != 0) {
    free(first);
    input_free(&in);
    return 0;
  }
  load(&in, first, 1);

  /* Load again with another token of the same kind (with or without a
   * blank, which is all the loader judges it by): the error or the
   * description must not change. Unless REDIS_PROVIDER points at the
   * token's variable: then it is also the Redis URL, on purpose. */
  char **token = env_entry(in.env, "HEROKU_API_KEY");
  char **provider = env_entry(in.env, "REDIS_PROVIDER");
  const char *value = token ? *token + strlen("HEROKU_API_KEY=") : "";
  if (value[0] != '\0' &&
      !(provider && strcmp(*provider + strlen("REDIS_PROVIDER="), "HEROKU_API_KEY") == 0)) {
    int blank = 0;
    for (const char *p = value; *p; p++)
      if ((unsigned char)*p <= ' ' || *p == 0x7f) blank = 1;
    char with_blank[] = "HEROKU_API_KEY=not a token";
    char without[] = "HEROKU_API_KEY=not-the-token";
    char *saved = *token;
    *token = blank ? with_blank : without;
    outcome_t *again = first + 1;
    load(&in, again, 0);
    *token = saved;
    FUZZ_CHECK(again->rc == first->rc && again->consumed == first->consumed &&
                   strcmp(again->err, first->err) == 0 &&
                   strcmp(again->described, first->described) == 0,
               "the Heroku token never shows in an error or the description");
  }
  free(first);
  input_free(&in);
  return 0;
}
