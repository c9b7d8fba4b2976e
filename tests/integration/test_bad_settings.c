/*
 * A bad setting at the command line: `scalekiq queues` (which reads every
 * setting, as `run` does) exits 2 with exactly one line on stderr naming
 * the setting, the value and what to do, prints nothing on stdout, and
 * never shows a secret. The full matrix of values lives in
 * tests/unit/test_bad_input.c; here each kind of value is run once per
 * numeric setting through the real binary.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *const NUMERIC[] = {
    "SCALEKIQ_POLL_INTERVAL",          "SCALEKIQ_LATENCY_THRESHOLD",
    "SCALEKIQ_LATENCY_RESTORED_THRESHOLD", "SCALEKIQ_USAGE_THRESHOLD",
    "SCALEKIQ_ALERT_INTERVAL",         "SCALEKIQ_MAX_ADDITIONAL_WORKERS",
    "SCALEKIQ_LOCK_TTL",               "SCALEKIQ_LOCK_TICK",
    "SCALEKIQ_REQUEST_TIMEOUT",        "SCALEKIQ_SOCKET_MODE",
};

/* Refused by every numeric setting (zero is refused by some only: see
 * the unit matrix). */
#define TODO(name) \
  (strcmp((name), "SCALEKIQ_SOCKET_MODE") == 0 ? "use 0600 (the default), 0640 or 0660" \
                                                : ": set it to a ")

static const char *const BAD[] = {"abc", "1x", " ", "-1", "1e400",
                                  "99999999999999999999", "nan", "inf", "0x10"};

/* Runs `scalekiq queues` with env additions and flags; asserts exit 2,
 * nothing on stdout, one line on stderr starting with want and holding
 * todo (what to do about it). */
static void refused(const char *const *env, const char *flag, const char *want,
                    const char *todo) {
  char url[96];
  snprintf(url, sizeof(url), "SCALEKIQ_REDIS_URL=redis://127.0.0.1:%d/0",
           test_free_port()); /* never reached: the setting stops it first */
  const char *envs[8] = {url};
  size_t n = 1;
  for (size_t i = 0; env && env[i] && n < 7; i++) envs[n++] = env[i];
  envs[n] = NULL;
  const char *argv[] = {SCALEKIQ_BIN, "queues", flag, NULL};
  char *out, *err;
  int rc = test_run(argv, envs, 20, &out, &err);
  cr_assert_eq(rc, 2, "%s%s: exit %d, stderr: %s", env ? env[0] : "", flag ? flag : "",
               rc, err);
  cr_assert_str_empty(out, "stdout: %s", out);
  cr_assert(strncmp(err, want, strlen(want)) == 0, "stderr \"%s\", want \"%s...\"", err,
            want);
  size_t len = strlen(err);
  cr_assert(len > 0 && err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1,
            "not one line: \"%s\"", err);
  cr_assert_not_null(strstr(err, todo), "\"%s\" lacks \"%s\"", err, todo);
  cr_assert_null(strstr(err, "hunter2"), "secret shown: %s", err);
  free(out);
  free(err);
}

Test(bad_settings_cli, every_numeric_variable) {
  char assignment[128], want[160];
  for (size_t s = 0; s < sizeof(NUMERIC) / sizeof(NUMERIC[0]); s++)
    for (size_t b = 0; b < sizeof(BAD) / sizeof(BAD[0]); b++) {
      snprintf(assignment, sizeof(assignment), "%s=%s", NUMERIC[s], BAD[b]);
      snprintf(want, sizeof(want), "scalekiq: %s=\"%s\" is ", NUMERIC[s], BAD[b]);
      const char *env[] = {assignment, NULL};
      refused(env, NULL, want, TODO(NUMERIC[s]));
    }
}

Test(bad_settings_cli, every_numeric_flag) {
  char flag[128], want[160];
  for (size_t s = 0; s < sizeof(NUMERIC) / sizeof(NUMERIC[0]); s++) {
    /* SCALEKIQ_POLL_INTERVAL -> --poll-interval */
    char name[64] = "--";
    for (const char *p = NUMERIC[s] + strlen("SCALEKIQ_"); *p; p++) {
      size_t n = strlen(name);
      name[n] = *p == '_' ? '-' : (char)(*p - 'A' + 'a');
      name[n + 1] = '\0';
    }
    for (size_t b = 0; b < sizeof(BAD) / sizeof(BAD[0]); b++) {
      snprintf(flag, sizeof(flag), "%s=%s", name, BAD[b]);
      snprintf(want, sizeof(want), "scalekiq: %s=\"%s\" is ", name, BAD[b]);
      refused(NULL, flag, want, TODO(NUMERIC[s]));
    }
    /* An empty flag value is a value, unlike an empty variable. */
    snprintf(flag, sizeof(flag), "%s=", name);
    snprintf(want, sizeof(want), "scalekiq: %s=\"\" is ", name);
    refused(NULL, flag, want, TODO(NUMERIC[s]));
  }
}

Test(bad_settings_cli, an_empty_variable_is_unset) {
  /* The default then applies and the command goes on to Redis, which is
   * not there: exit 1, not 2. */
  char url[96];
  snprintf(url, sizeof(url), "SCALEKIQ_REDIS_URL=redis://127.0.0.1:%d/0",
           test_free_port());
  const char *env[] = {url, "SCALEKIQ_POLL_INTERVAL=", "SCALEKIQ_SOCKET_MODE=", NULL};
  const char *argv[] = {SCALEKIQ_BIN, "queues", NULL};
  char *out, *err;
  int rc = test_run(argv, env, 20, &out, &err);
  cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
  cr_assert_not_null(strstr(err, "cannot reach Redis"), "%s", err);
  free(out);
  free(err);
}

Test(bad_settings_cli, other_settings_and_urls) {
  const char *cases[][3] = {
      {"SCALEKIQ_DRY_RUN=maybe", "scalekiq: SCALEKIQ_DRY_RUN=\"maybe\" is not a boolean",
       "set it to 1, true, yes or on"},
      {"SCALEKIQ_LOG_LEVEL=loud", "scalekiq: SCALEKIQ_LOG_LEVEL=\"loud\" is not a log level",
       "set it to debug, info, warn or error"},
      {"SCALEKIQ_FORMATION=Worker Dyno",
       "scalekiq: SCALEKIQ_FORMATION=\"Worker Dyno\" is not a process type",
       "set it to the Procfile name"},
      {"SCALEKIQ_QUEUES=default,,mailers",
       "scalekiq: SCALEKIQ_QUEUES=\"default,,mailers\" has an empty queue name",
       "list queue names separated by commas"},
      {"HEROKU_API_URL=https://[::1", "scalekiq: HEROKU_API_URL=\"https://[::1\" has no host",
       "set it to https://HOST[:PORT]"},
      {"HEROKU_API_URL=http://api.heroku.com",
       "scalekiq: HEROKU_API_URL=\"http://api.heroku.com\" uses http://", "use https://"},
      {"SCALEKIQ_LATENCY_RESTORED_THRESHOLD=9",
       "scalekiq: SCALEKIQ_LATENCY_RESTORED_THRESHOLD=\"9\" is above the latency threshold",
       "set it from 0 to 5"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *env[] = {cases[i][0], NULL};
    refused(env, NULL, cases[i][1], cases[i][2]);
  }
}

Test(bad_settings_cli, a_bad_redis_url_never_shows_its_password) {
  /* These go in place of the free-port URL refused() sets: a later
   * assignment of the same variable wins in test_run's environment. */
  const char *env1[] = {"SCALEKIQ_REDIS_URL=redis://:hunter2@host:6379/0?ssl=1", NULL};
  refused(env1, NULL, "scalekiq: SCALEKIQ_REDIS_URL=\"redis://***@host:6379/0?ssl=1\" "
                      "is not a valid Redis URL (Redis URL options after '?'",
          "SCALEKIQ_REDIS_TLS_VERIFY=none");
  const char *env2[] = {"SCALEKIQ_REDIS_URL=hunter2", NULL};
  refused(env2, NULL, "scalekiq: SCALEKIQ_REDIS_URL=(value hidden: it may hold a "
                      "password) is not a valid Redis URL",
          "set it to redis://");
}
