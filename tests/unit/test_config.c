#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define TOKEN "hrku-0123456789abcdef-SECRET"
#define NOARGS 0, NULL

static char err[512];

static int load(config_t *cfg, char *const *envp, int argc, char *const *argv,
                int need_heroku) {
  int consumed = -1;
  memset(err, 0, sizeof(err));
  return config_load(cfg, envp, argc, argv, need_heroku, &consumed, err, sizeof(err));
}

static void load_ok(config_t *cfg, char *const *envp, int argc, char *const *argv) {
  int rc = load(cfg, envp, argc, argv, 0);
  cr_assert_eq(rc, 0, "config_load failed: %s", err);
  cr_assert_str_empty(err);
}

/* Asserts the load fails with one line that contains each of the
 * NULL-terminated fragments, and never the token. */
static void load_fails(char *const *envp, int argc, char *const *argv, int need_heroku,
                       ...) {
  config_t cfg;
  int rc = load(&cfg, envp, argc, argv, need_heroku);
  cr_assert_eq(rc, -1, "config_load accepted what it should refuse");
  cr_assert_str_not_empty(err);
  cr_assert_null(strchr(err, '\n'), "error is not one line: %s", err);
  cr_assert_null(strstr(err, "SECRET"), "error shows the token: %s", err);
  va_list ap;
  va_start(ap, need_heroku);
  for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
    cr_assert_not_null(strstr(err, frag), "error lacks \"%s\": %s", frag, err);
  va_end(ap);
  /* A failed load leaves nothing to free, and freeing is still harmless. */
  cr_assert_null(cfg.redis_url);
  config_free(&cfg);
}

/* One bad environment variable. */
static void env_fails(const char *assignment, const char *frag1, const char *frag2) {
  char *envp[] = {(char *)assignment, NULL};
  load_fails(envp, NOARGS, 0, frag1, frag2, NULL);
}

/* ---- defaults and sources ------------------------------------------ */

Test(config, defaults) {
  config_t cfg;
  char *envp[] = {NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.redis_url, "redis://127.0.0.1:6379/0");
  cr_assert_str_eq(cfg.redis_url_source, "default");
  cr_assert_str_eq(cfg.redis.host, "127.0.0.1");
  cr_assert_eq(cfg.redis.port, 6379);
  cr_assert_eq(cfg.redis_tls_verify, CONFIG_TLS_VERIFY_PEER);
  cr_assert_null(cfg.redis_tls_ca_file);
  cr_assert_null(cfg.redis_tls_cert_file);
  cr_assert_null(cfg.redis_tls_key_file);
  cr_assert_str_eq(cfg.sidekiq_namespace, "");
  cr_assert_float_eq(cfg.poll_interval, 5, 1e-9);
  cr_assert_float_eq(cfg.latency_threshold, 5, 1e-9);
  cr_assert_float_eq(cfg.latency_restored_threshold, 5, 1e-9);
  cr_assert_float_eq(cfg.usage_threshold, 1, 1e-9);
  cr_assert_float_eq(cfg.alert_interval, 120, 1e-9);
  cr_assert_eq(cfg.max_additional_workers, 2);
  cr_assert_eq(cfg.nqueues, 0);
  cr_assert_null(cfg.queues);
  cr_assert_str_eq(cfg.state_namespace, "amigo/autoscaler");
  cr_assert_float_eq(cfg.lock_ttl, 15, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 5, 1e-9);
  cr_assert_str_eq(cfg.formation, "worker");
  cr_assert_null(cfg.heroku_app);
  cr_assert_null(cfg.heroku_api_key);
  cr_assert_str_eq(cfg.heroku_api_url, "https://api.heroku.com");
  cr_assert_str_eq(cfg.socket_path, "/tmp/scalekiq.sock");
  cr_assert_eq(cfg.dry_run, 0);
  cr_assert_eq(cfg.log_level, LOG_INFO);
  cr_assert_float_eq(cfg.request_timeout, 5, 1e-9);
  char host[256] = "";
  gethostname(host, sizeof(host));
  host[sizeof(host) - 1] = '\0';
  cr_assert_str_eq(cfg.identity, host);
  config_free(&cfg);
  cr_assert_null(cfg.identity);
}

Test(config, null_envp_is_empty) {
  config_t cfg;
  load_ok(&cfg, NULL, NOARGS);
  cr_assert_str_eq(cfg.redis_url_source, "default");
  config_free(&cfg);
}

Test(config, every_variable) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_REDIS_URL=redis://:pw@cache.internal:6380/2",
                  "SCALEKIQ_REDIS_TLS_VERIFY=none",
                  "SCALEKIQ_SIDEKIQ_NAMESPACE=myapp",
                  "SCALEKIQ_POLL_INTERVAL=0.5",
                  "SCALEKIQ_LATENCY_THRESHOLD=12.5",
                  "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=2",
                  "SCALEKIQ_USAGE_THRESHOLD=0.9",
                  "SCALEKIQ_ALERT_INTERVAL=30",
                  "SCALEKIQ_MAX_ADDITIONAL_WORKERS=7",
                  "SCALEKIQ_QUEUES=default,mailers",
                  "SCALEKIQ_NAMESPACE=other/ns",
                  "SCALEKIQ_FORMATION=sidekiq_low",
                  "HEROKU_APP_NAME=my-app-42",
                  "HEROKU_API_KEY=" TOKEN,
                  "HEROKU_API_URL=http://127.0.0.1:8080",
                  "SCALEKIQ_LOCK_TTL=9",
                  "SCALEKIQ_LOCK_TICK=2",
                  "SCALEKIQ_SOCKET=/run/sk.sock",
                  "SCALEKIQ_DRY_RUN=yes",
                  "SCALEKIQ_LOG_LEVEL=debug",
                  "SCALEKIQ_REQUEST_TIMEOUT=1.5",
                  "DYNO=worker.3",
                  NULL};
  cr_assert_eq(load(&cfg, envp, NOARGS, 1), 0, "%s", err);
  cr_assert_str_eq(cfg.redis_url, "redis://:pw@cache.internal:6380/2");
  cr_assert_str_eq(cfg.redis_url_source, "SCALEKIQ_REDIS_URL");
  cr_assert_str_eq(cfg.redis.host, "cache.internal");
  cr_assert_eq(cfg.redis.port, 6380);
  cr_assert_eq(cfg.redis.db, 2);
  cr_assert_eq(cfg.redis_tls_verify, CONFIG_TLS_VERIFY_NONE);
  cr_assert_str_eq(cfg.sidekiq_namespace, "myapp");
  cr_assert_float_eq(cfg.poll_interval, 0.5, 1e-9);
  cr_assert_float_eq(cfg.latency_threshold, 12.5, 1e-9);
  cr_assert_float_eq(cfg.latency_restored_threshold, 2, 1e-9);
  cr_assert_float_eq(cfg.usage_threshold, 0.9, 1e-9);
  cr_assert_float_eq(cfg.alert_interval, 30, 1e-9);
  cr_assert_eq(cfg.max_additional_workers, 7);
  cr_assert_eq(cfg.nqueues, 2);
  cr_assert_str_eq(cfg.queues[0], "default");
  cr_assert_str_eq(cfg.queues[1], "mailers");
  cr_assert_str_eq(cfg.state_namespace, "other/ns");
  cr_assert_str_eq(cfg.formation, "sidekiq_low");
  cr_assert_str_eq(cfg.heroku_app, "my-app-42");
  cr_assert_str_eq(cfg.heroku_app_source, "HEROKU_APP_NAME");
  cr_assert_str_eq(cfg.heroku_api_key, TOKEN);
  cr_assert_str_eq(cfg.heroku_api_url, "http://127.0.0.1:8080");
  cr_assert_float_eq(cfg.lock_ttl, 9, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 2, 1e-9);
  cr_assert_str_eq(cfg.socket_path, "/run/sk.sock");
  cr_assert_eq(cfg.dry_run, 1);
  cr_assert_eq(cfg.log_level, LOG_DEBUG);
  cr_assert_float_eq(cfg.request_timeout, 1.5, 1e-9);
  cr_assert_str_eq(cfg.identity, "worker.3");
  config_free(&cfg);
}

Test(config, empty_variables_count_as_unset) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=",
                  "SCALEKIQ_NAMESPACE=",
                  "SCALEKIQ_FORMATION=",
                  "REDIS_URL=",
                  "REDIS_TLS_URL=rediss://tls.example:6380",
                  "DYNO=",
                  NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.poll_interval, 5, 1e-9);
  cr_assert_str_eq(cfg.state_namespace, "amigo/autoscaler");
  cr_assert_str_eq(cfg.formation, "worker");
  cr_assert_str_eq(cfg.redis_url_source, "REDIS_TLS_URL");
  cr_assert_eq(cfg.redis.tls, 1);
  cr_assert_str_neq(cfg.identity, "");
  config_free(&cfg);
}

/* ---- flags --------------------------------------------------------- */

Test(config, flags_override_variables) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=5", "SCALEKIQ_REDIS_URL=redis://env:1/0",
                  "HEROKU_APP_NAME=env-app",  "HEROKU_API_URL=https://env.example",
                  "SCALEKIQ_DRY_RUN=0",       "SCALEKIQ_QUEUES=a",
                  "SCALEKIQ_LOCK_TTL=30",     NULL};
  char *argv[] = {"--poll-interval",
                  "0.25",
                  "--redis-url=redis://flag:2/1",
                  "--heroku-app",
                  "flag-app",
                  "--heroku-api-url=https://flag.example/",
                  "--dry-run",
                  "--queues",
                  "b,c",
                  "--lock-ttl=6",
                  "--lock-tick",
                  "1",
                  "--formation=web",
                  "--namespace",
                  "ns2",
                  "--sidekiq-namespace=sk",
                  "--latency-threshold",
                  "8",
                  "--latency-restored-threshold=3",
                  "--usage-threshold",
                  "0.5",
                  "--alert-interval=0",
                  "--max-additional-workers",
                  "4",
                  "--socket=/tmp/x.sock",
                  "--log-level",
                  "warn",
                  "--request-timeout=2",
                  "--redis-tls-verify=none"};
  int argc = (int)(sizeof(argv) / sizeof(argv[0]));
  int consumed = -1;
  int rc = config_load(&cfg, envp, argc, argv, 0, &consumed, err, sizeof(err));
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(consumed, argc);
  cr_assert_float_eq(cfg.poll_interval, 0.25, 1e-9);
  cr_assert_str_eq(cfg.redis_url, "redis://flag:2/1");
  cr_assert_str_eq(cfg.redis_url_source, "--redis-url");
  cr_assert_str_eq(cfg.heroku_app, "flag-app");
  cr_assert_str_eq(cfg.heroku_app_source, "--heroku-app");
  cr_assert_str_eq(cfg.heroku_api_url, "https://flag.example");
  cr_assert_eq(cfg.dry_run, 1);
  cr_assert_eq(cfg.nqueues, 2);
  cr_assert_str_eq(cfg.queues[0], "b");
  cr_assert_str_eq(cfg.queues[1], "c");
  cr_assert_float_eq(cfg.lock_ttl, 6, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 1, 1e-9);
  cr_assert_str_eq(cfg.formation, "web");
  cr_assert_str_eq(cfg.state_namespace, "ns2");
  cr_assert_str_eq(cfg.sidekiq_namespace, "sk");
  cr_assert_float_eq(cfg.latency_threshold, 8, 1e-9);
  cr_assert_float_eq(cfg.latency_restored_threshold, 3, 1e-9);
  cr_assert_float_eq(cfg.usage_threshold, 0.5, 1e-9);
  cr_assert_float_eq(cfg.alert_interval, 0, 1e-9);
  cr_assert_eq(cfg.max_additional_workers, 4);
  cr_assert_str_eq(cfg.socket_path, "/tmp/x.sock");
  cr_assert_eq(cfg.log_level, LOG_WARN);
  cr_assert_float_eq(cfg.request_timeout, 2, 1e-9);
  cr_assert_eq(cfg.redis_tls_verify, CONFIG_TLS_VERIFY_NONE);
  config_free(&cfg);
}

Test(config, flag_order_does_not_matter_and_last_wins) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=9", NULL};
  char *argv[] = {"--poll-interval=1", "--poll-interval", "2"};
  load_ok(&cfg, envp, 3, argv);
  cr_assert_float_eq(cfg.poll_interval, 2, 1e-9);
  config_free(&cfg);
}

Test(config, equals_and_separate_value_forms) {
  config_t a, b;
  char *argv1[] = {"--poll-interval=0.5"};
  char *argv2[] = {"--poll-interval", "0.5"};
  load_ok(&a, NULL, 1, argv1);
  load_ok(&b, NULL, 2, argv2);
  cr_assert_float_eq(a.poll_interval, 0.5, 1e-9);
  cr_assert_float_eq(b.poll_interval, 0.5, 1e-9);
  config_free(&a);
  config_free(&b);
  /* the value may itself contain '=' */
  char *argv3[] = {"--redis-url=redis://:a=b@h:1/0"};
  load_ok(&a, NULL, 1, argv3);
  cr_assert_str_eq(a.redis.password, "a=b");
  config_free(&a);
}

Test(config, double_dash_stops_parsing) {
  config_t cfg;
  char *argv[] = {"--dry-run", "--", "bundle", "exec", "sidekiq", "--poll-interval=x"};
  int consumed = -1;
  cr_assert_eq(config_load(&cfg, NULL, 6, argv, 0, &consumed, err, sizeof(err)), 0, "%s",
               err);
  cr_assert_eq(consumed, 2);
  cr_assert_str_eq(argv[consumed], "bundle");
  cr_assert_eq(cfg.dry_run, 1);
  cr_assert_float_eq(cfg.poll_interval, 5, 1e-9);
  config_free(&cfg);

  char *argv2[] = {"--", "--poll-interval=x"};
  cr_assert_eq(config_load(&cfg, NULL, 2, argv2, 0, &consumed, err, sizeof(err)), 0);
  cr_assert_eq(consumed, 1);
  config_free(&cfg);
}

Test(config, first_non_flag_stops_parsing) {
  config_t cfg;
  char *argv[] = {"--poll-interval", "2", "sidekiq", "--dry-run"};
  int consumed = -1;
  cr_assert_eq(config_load(&cfg, NULL, 4, argv, 0, &consumed, err, sizeof(err)), 0, "%s",
               err);
  cr_assert_eq(consumed, 2);
  cr_assert_eq(cfg.dry_run, 0, "a flag after the command belongs to the command");
  cr_assert_float_eq(cfg.poll_interval, 2, 1e-9);
  config_free(&cfg);

  cr_assert_eq(config_load(&cfg, NULL, 0, NULL, 0, &consumed, err, sizeof(err)), 0);
  cr_assert_eq(consumed, 0);
  config_free(&cfg);
  /* a lone "-" is an argument (stdin, by convention), not a flag */
  char *argv2[] = {"-"};
  cr_assert_eq(config_load(&cfg, NULL, 1, argv2, 0, &consumed, err, sizeof(err)), 0);
  cr_assert_eq(consumed, 0);
  config_free(&cfg);
}

Test(config, consumed_may_be_null) {
  config_t cfg;
  char *argv[] = {"--dry-run"};
  cr_assert_eq(config_load(&cfg, NULL, 1, argv, 0, NULL, err, sizeof(err)), 0);
  cr_assert_eq(cfg.dry_run, 1);
  config_free(&cfg);
}

Test(config, unknown_flag) {
  char *argv[] = {"--pol-interval=5"};
  load_fails(NULL, 1, argv, 0, "\"--pol-interval\"", "scalekiq --help", NULL);
  char *argv2[] = {"-x"};
  load_fails(NULL, 1, argv2, 0, "\"-x\"", "scalekiq --help", NULL);
}

Test(config, token_flag_is_refused_without_echoing_it) {
  char *argv[] = {"--heroku-api-key=" TOKEN};
  load_fails(NULL, 1, argv, 0, "--heroku-api-key", "HEROKU_API_KEY", "ps", NULL);
  char *argv2[] = {"--heroku-api-key", TOKEN};
  load_fails(NULL, 2, argv2, 0, "--heroku-api-key", NULL);
}

Test(config, flag_missing_its_value) {
  char *argv[] = {"--poll-interval"};
  load_fails(NULL, 1, argv, 0, "--poll-interval", "needs a value", NULL);
  char *argv2[] = {"--redis-url", "--dry-run"};
  load_fails(NULL, 2, argv2, 0, "--redis-url", "needs a value", NULL);
}

Test(config, flag_errors_name_the_flag) {
  char *argv[] = {"--poll-interval=abc"};
  load_fails(NULL, 1, argv, 0, "--poll-interval=\"abc\"", "not a number", NULL);
  char *argv2[] = {"--max-additional-workers", "2.5"};
  load_fails(NULL, 2, argv2, 0, "--max-additional-workers=\"2.5\"", NULL);
  /* an empty flag value is a value, not "unset" */
  char *argv3[] = {"--latency-threshold="};
  load_fails(NULL, 1, argv3, 0, "--latency-threshold=\"\"", "not a number", NULL);
}

/* ---- booleans ------------------------------------------------------ */

Test(config, booleans) {
  const char *yes[] = {"1", "true", "yes", "on", "TRUE", "On"};
  const char *no[] = {"0", "false", "no", "off", "", "NO"};
  char buf[64];
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
    config_t cfg;
    snprintf(buf, sizeof(buf), "SCALEKIQ_DRY_RUN=%s", yes[i]);
    char *envp[] = {buf, NULL};
    load_ok(&cfg, envp, NOARGS);
    cr_assert_eq(cfg.dry_run, 1, "%s", buf);
    config_free(&cfg);
  }
  for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
    config_t cfg;
    snprintf(buf, sizeof(buf), "SCALEKIQ_DRY_RUN=%s", no[i]);
    char *envp[] = {buf, "HEROKU_APP_NAME=a", "HEROKU_API_KEY=" TOKEN, NULL};
    cr_assert_eq(load(&cfg, envp, NOARGS, 1), 0, "%s", err);
    cr_assert_eq(cfg.dry_run, 0, "%s", buf);
    config_free(&cfg);
  }
  config_t cfg;
  char *envp[] = {"SCALEKIQ_DRY_RUN=1", NULL};
  char *argv[] = {"--dry-run=off"};
  load_ok(&cfg, envp, 1, argv);
  cr_assert_eq(cfg.dry_run, 0);
  config_free(&cfg);
  env_fails("SCALEKIQ_DRY_RUN=maybe", "SCALEKIQ_DRY_RUN=\"maybe\"", "not a boolean");
  char *argv2[] = {"--dry-run=2"};
  load_fails(NULL, 1, argv2, 0, "--dry-run=\"2\"", "not a boolean", NULL);
}

/* ---- numbers ------------------------------------------------------- */

Test(config, numbers_reject_junk) {
  const char *names[] = {"SCALEKIQ_POLL_INTERVAL",
                         "SCALEKIQ_LATENCY_THRESHOLD",
                         "SCALEKIQ_LATENCY_RESTORED_THRESHOLD",
                         "SCALEKIQ_USAGE_THRESHOLD",
                         "SCALEKIQ_ALERT_INTERVAL",
                         "SCALEKIQ_LOCK_TTL",
                         "SCALEKIQ_LOCK_TICK",
                         "SCALEKIQ_REQUEST_TIMEOUT",
                         "SCALEKIQ_MAX_ADDITIONAL_WORKERS"};
  const char *bad[] = {"abc", "5s",    "nan", "inf",  "-inf", "0x10", " 5",
                       "5 ",  "1e999", "-1",  "1..2", "+",    "."};
  char assignment[128], shown[64];
  for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++)
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
      snprintf(assignment, sizeof(assignment), "%s=%s", names[n], bad[b]);
      snprintf(shown, sizeof(shown), "=\"%s\"", bad[b]);
      char *envp[] = {assignment, NULL};
      load_fails(envp, NOARGS, 0, names[n], shown, "set it to", NULL);
    }
}

Test(config, error_message_form) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=abc", NULL};
  cr_assert_eq(load(&cfg, envp, NOARGS, 0), -1);
  cr_assert_str_eq(err, "SCALEKIQ_POLL_INTERVAL=\"abc\" is not a number of seconds: set "
                        "it to a number of seconds above 0 and at most 3600, such as 5");
}

Test(config, durations_reject_zero) {
  const char *names[] = {"SCALEKIQ_POLL_INTERVAL", "SCALEKIQ_LATENCY_THRESHOLD",
                         "SCALEKIQ_LOCK_TTL", "SCALEKIQ_LOCK_TICK",
                         "SCALEKIQ_REQUEST_TIMEOUT"};
  char assignment[128];
  for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
    snprintf(assignment, sizeof(assignment), "%s=0", names[n]);
    env_fails(assignment, names[n], "=\"0\" is out of range");
    snprintf(assignment, sizeof(assignment), "%s=0.0001", names[n]);
    env_fails(assignment, names[n], "too short");
  }
}

Test(config, poll_interval_bounds) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=3600", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.poll_interval, 3600, 1e-9);
  config_free(&cfg);
  env_fails("SCALEKIQ_POLL_INTERVAL=3600.5", "SCALEKIQ_POLL_INTERVAL=\"3600.5\"",
            "at most 3600");
  char *envp2[] = {"SCALEKIQ_POLL_INTERVAL=1e-2", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_float_eq(cfg.poll_interval, 0.01, 1e-12);
  config_free(&cfg);
}

Test(config, durations_have_an_upper_bound) {
  env_fails("SCALEKIQ_LATENCY_THRESHOLD=1e300", "SCALEKIQ_LATENCY_THRESHOLD=\"1e300\"",
            "out of range");
  env_fails("SCALEKIQ_ALERT_INTERVAL=604801", "SCALEKIQ_ALERT_INTERVAL", "604800");
  env_fails("SCALEKIQ_REQUEST_TIMEOUT=1e7", "SCALEKIQ_REQUEST_TIMEOUT", "out of range");
}

Test(config, alert_interval_may_be_zero) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_ALERT_INTERVAL=0", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.alert_interval, 0, 1e-9);
  config_free(&cfg);
  env_fails("SCALEKIQ_ALERT_INTERVAL=-0.5", "SCALEKIQ_ALERT_INTERVAL=\"-0.5\"",
            "out of range");
}

Test(config, usage_threshold) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_USAGE_THRESHOLD=0.75", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.usage_threshold, 0.75, 1e-9);
  config_free(&cfg);
  env_fails("SCALEKIQ_USAGE_THRESHOLD=0", "SCALEKIQ_USAGE_THRESHOLD=\"0\"", "above 0");
}

Test(config, max_additional_workers) {
  const char *good[] = {"0", "1", "1000", "007"};
  const int want[] = {0, 1, 1000, 7};
  char buf[64];
  for (size_t i = 0; i < 4; i++) {
    config_t cfg;
    snprintf(buf, sizeof(buf), "SCALEKIQ_MAX_ADDITIONAL_WORKERS=%s", good[i]);
    char *envp[] = {buf, NULL};
    load_ok(&cfg, envp, NOARGS);
    cr_assert_eq(cfg.max_additional_workers, want[i]);
    config_free(&cfg);
  }
  env_fails("SCALEKIQ_MAX_ADDITIONAL_WORKERS=2.5",
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"2.5\"", "not a whole number");
  env_fails("SCALEKIQ_MAX_ADDITIONAL_WORKERS=1001",
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"1001\"", "out of range");
  env_fails("SCALEKIQ_MAX_ADDITIONAL_WORKERS=99999999999999999999999",
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"99999999999999999999999\"",
            "out of range");
  env_fails("SCALEKIQ_MAX_ADDITIONAL_WORKERS=-1",
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"-1\"", "from 0 to 1000");
  env_fails("SCALEKIQ_MAX_ADDITIONAL_WORKERS=1e2",
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"1e2\"", "not a whole number");
}

/* ---- thresholds ---------------------------------------------------- */

Test(config, restored_threshold_defaults_to_threshold) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_LATENCY_THRESHOLD=42", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.latency_restored_threshold, 42, 1e-9);
  config_free(&cfg);
  char *argv[] = {"--latency-threshold", "7"};
  load_ok(&cfg, envp, 2, argv);
  cr_assert_float_eq(cfg.latency_restored_threshold, 7, 1e-9);
  config_free(&cfg);
}

Test(config, restored_threshold_range) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_LATENCY_THRESHOLD=10",
                  "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=0", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.latency_restored_threshold, 0, 1e-9);
  config_free(&cfg);
  char *envp2[] = {"SCALEKIQ_LATENCY_THRESHOLD=10",
                   "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=10", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_float_eq(cfg.latency_restored_threshold, 10, 1e-9);
  config_free(&cfg);
  char *envp3[] = {"SCALEKIQ_LATENCY_THRESHOLD=10",
                   "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=10.5", NULL};
  load_fails(envp3, NOARGS, 0, "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=\"10.5\"",
             "above the latency threshold (10 s)", NULL);
  env_fails("SCALEKIQ_LATENCY_RESTORED_THRESHOLD=6",
            "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=\"6\"", "from 0 to 5");
  env_fails("SCALEKIQ_LATENCY_RESTORED_THRESHOLD=-1",
            "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=\"-1\"", "out of range");
}

/* ---- lock timing --------------------------------------------------- */

Test(config, lock_ttl_and_tick_derive_from_poll_interval) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_POLL_INTERVAL=2", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.lock_ttl, 6, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 2, 1e-9);
  config_free(&cfg);
  /* at least one second */
  char *envp2[] = {"SCALEKIQ_POLL_INTERVAL=0.1", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_float_eq(cfg.lock_ttl, 1, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 1.0 / 3, 1e-9);
  config_free(&cfg);
}

Test(config, lock_tick_derives_from_explicit_ttl) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_LOCK_TTL=0.3", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.lock_ttl, 0.3, 1e-9);
  cr_assert_float_eq(cfg.lock_tick, 0.1, 1e-9);
  config_free(&cfg);
  /* the TTL need not exceed the poll interval: only tick < TTL matters */
  char *envp2[] = {"SCALEKIQ_POLL_INTERVAL=60", "SCALEKIQ_LOCK_TTL=10",
                   "SCALEKIQ_LOCK_TICK=9.5", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_float_eq(cfg.lock_tick, 9.5, 1e-9);
  config_free(&cfg);
}

Test(config, lock_tick_must_be_shorter_than_ttl) {
  char *envp[] = {"SCALEKIQ_LOCK_TTL=3", "SCALEKIQ_LOCK_TICK=3", NULL};
  load_fails(envp, NOARGS, 0, "SCALEKIQ_LOCK_TICK=\"3\"",
             "lock TTL (3 s, from SCALEKIQ_LOCK_TTL)", NULL);
  char *envp2[] = {"SCALEKIQ_LOCK_TICK=20", NULL};
  load_fails(envp2, NOARGS, 0, "SCALEKIQ_LOCK_TICK=\"20\"", "15 s", "default", NULL);
  char *argv[] = {"--lock-ttl=2", "--lock-tick", "5"};
  load_fails(NULL, 3, argv, 0, "--lock-tick=\"5\"", "from --lock-ttl", NULL);
}

/* ---- Redis --------------------------------------------------------- */

Test(config, redis_url_order) {
  config_t cfg;
  char *envp[] = {"REDIS_URL=redis://plain:1/0", "REDIS_TLS_URL=rediss://tls:2/0", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.redis_url_source, "REDIS_URL");
  cr_assert_str_eq(cfg.redis.host, "plain");
  config_free(&cfg);

  char *envp2[] = {"REDIS_TLS_URL=rediss://tls:2/0", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_str_eq(cfg.redis_url_source, "REDIS_TLS_URL");
  cr_assert_eq(cfg.redis.tls, 1);
  config_free(&cfg);

  char *envp3[] = {"REDIS_URL=redis://plain:1/0", "REDIS_PROVIDER=MY_REDIS",
                   "MY_REDIS=redis://provided:3/4", NULL};
  load_ok(&cfg, envp3, NOARGS);
  cr_assert_str_eq(cfg.redis_url_source, "MY_REDIS");
  cr_assert_str_eq(cfg.redis.host, "provided");
  cr_assert_eq(cfg.redis.db, 4);
  config_free(&cfg);

  char *envp4[] = {"SCALEKIQ_REDIS_URL=redis://mine:5/0", "REDIS_PROVIDER=MY_REDIS",
                   "MY_REDIS=redis://provided:3/4", NULL};
  load_ok(&cfg, envp4, NOARGS);
  cr_assert_str_eq(cfg.redis_url_source, "SCALEKIQ_REDIS_URL");
  cr_assert_str_eq(cfg.redis.host, "mine");
  config_free(&cfg);

  char *argv[] = {"--redis-url", "unix:///tmp/r.sock"};
  load_ok(&cfg, envp4, 2, argv);
  cr_assert_str_eq(cfg.redis_url_source, "--redis-url");
  cr_assert_eq(cfg.redis.transport, REDIS_TRANSPORT_UNIX);
  config_free(&cfg);
}

Test(config, redis_provider_errors) {
  char *envp[] = {"REDIS_PROVIDER=MISSING_URL", "REDIS_URL=redis://x:1/0", NULL};
  load_fails(envp, NOARGS, 0, "REDIS_PROVIDER=\"MISSING_URL\"", "set MISSING_URL", NULL);
  char *envp2[] = {"REDIS_PROVIDER=EMPTY_URL", "EMPTY_URL=", NULL};
  load_fails(envp2, NOARGS, 0, "REDIS_PROVIDER=\"EMPTY_URL\"", "not set", NULL);
  char *envp3[] = {"REDIS_PROVIDER=redis://oops:1/0", NULL};
  load_fails(envp3, NOARGS, 0, "REDIS_PROVIDER=\"redis://oops:1/0\"",
             "not a variable name", NULL);
  char *envp4[] = {"REDIS_PROVIDER=MY_REDIS", "MY_REDIS=http://x", NULL};
  load_fails(envp4, NOARGS, 0, "MY_REDIS=\"http://x\"", "not a valid Redis URL", NULL);
}

Test(config, bad_redis_url_never_shows_the_password) {
  char *envp[] = {"REDIS_URL=redis://user:hunter2@host:notaport/0", NULL};
  load_fails(envp, NOARGS, 0, "REDIS_URL=\"redis://***@host:notaport/0\"",
             "not a valid Redis URL", NULL);
  config_t cfg;
  cr_assert_eq(load(&cfg, envp, NOARGS, 0), -1);
  cr_assert_null(strstr(err, "hunter2"), "%s", err);
  /* not URL-shaped: maybe a password in the wrong place, so not shown */
  char *envp2[] = {"SCALEKIQ_REDIS_URL=hunter2", NULL};
  load_fails(envp2, NOARGS, 0, "SCALEKIQ_REDIS_URL=(value hidden", NULL);
  cr_assert_eq(load(&cfg, envp2, NOARGS, 0), -1);
  cr_assert_null(strstr(err, "hunter2"), "%s", err);
  /* "@host" forgotten: the password sits where a port would */
  char *envp3[] = {"SCALEKIQ_REDIS_URL=redis://:hunter2", NULL};
  load_fails(envp3, NOARGS, 0, "SCALEKIQ_REDIS_URL=(value hidden", NULL);
  cr_assert_eq(load(&cfg, envp3, NOARGS, 0), -1);
  cr_assert_null(strstr(err, "hunter2"), "%s", err);
  /* a real host and port stay visible */
  char *envp4[] = {"SCALEKIQ_REDIS_URL=redis://host:99999/0", NULL};
  load_fails(envp4, NOARGS, 0, "\"redis://host:99999/0\"", NULL);
}

Test(config, tls_verify) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_REDIS_TLS_VERIFY=peer", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_eq(cfg.redis_tls_verify, CONFIG_TLS_VERIFY_PEER);
  config_free(&cfg);
  env_fails("SCALEKIQ_REDIS_TLS_VERIFY=off", "SCALEKIQ_REDIS_TLS_VERIFY=\"off\"", "peer");
}

static void temp_file(char *path, size_t size) {
  snprintf(path, size, "/tmp/test_config_XXXXXX");
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
}

Test(config, tls_files) {
  char ca[64], cert[64], key[64];
  temp_file(ca, sizeof(ca));
  temp_file(cert, sizeof(cert));
  temp_file(key, sizeof(key));
  char e1[128], e2[128], e3[128];
  snprintf(e1, sizeof(e1), "SCALEKIQ_REDIS_TLS_CA_FILE=%s", ca);
  snprintf(e2, sizeof(e2), "SCALEKIQ_REDIS_TLS_CERT_FILE=%s", cert);
  snprintf(e3, sizeof(e3), "SCALEKIQ_REDIS_TLS_KEY_FILE=%s", key);
  config_t cfg;
  char *envp[] = {e1, e2, e3, NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.redis_tls_ca_file, ca);
  cr_assert_str_eq(cfg.redis_tls_cert_file, cert);
  cr_assert_str_eq(cfg.redis_tls_key_file, key);
  config_free(&cfg);

  char *only_cert[] = {e2, NULL};
  load_fails(only_cert, NOARGS, 0, "SCALEKIQ_REDIS_TLS_CERT_FILE=\"", cert,
             "SCALEKIQ_REDIS_TLS_KEY_FILE is not", NULL);
  char *only_key[] = {e3, NULL};
  load_fails(only_key, NOARGS, 0, "SCALEKIQ_REDIS_TLS_KEY_FILE=\"",
             "SCALEKIQ_REDIS_TLS_CERT_FILE is not", NULL);

  unlink(ca);
  unlink(cert);
  unlink(key);
  load_fails(envp, NOARGS, 0, "SCALEKIQ_REDIS_TLS_CA_FILE=\"", ca, "cannot be read",
             "No such file", NULL);
  char *argv[] = {"--redis-tls-key-file", "/nonexistent/key.pem"};
  load_fails(NULL, 2, argv, 0, "--redis-tls-key-file=\"/nonexistent/key.pem\"",
             "cannot be read", NULL);
}

/* ---- strings ------------------------------------------------------- */

Test(config, namespaces) {
  env_fails("SCALEKIQ_NAMESPACE=a b", "SCALEKIQ_NAMESPACE=\"a b\"", "without spaces");
  char *argv[] = {"--namespace="};
  load_fails(NULL, 1, argv, 0, "--namespace=\"\"", "non-empty", NULL);
  env_fails("SCALEKIQ_SIDEKIQ_NAMESPACE=my app", "SCALEKIQ_SIDEKIQ_NAMESPACE=\"my app\"",
            "spaces");
  /* a control character is shown escaped, keeping the error on one line */
  env_fails("SCALEKIQ_SIDEKIQ_NAMESPACE=a\nb", "SCALEKIQ_SIDEKIQ_NAMESPACE=\"a\\x0ab\"",
            "control");
  config_t cfg;
  char *argv2[] = {"--sidekiq-namespace="};
  char *envp[] = {"SCALEKIQ_SIDEKIQ_NAMESPACE=env", NULL};
  load_ok(&cfg, envp, 1, argv2);
  cr_assert_str_eq(cfg.sidekiq_namespace, "", "an empty flag clears the prefix");
  config_free(&cfg);
}

Test(config, formation) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_FORMATION=worker-2_low", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.formation, "worker-2_low");
  config_free(&cfg);
  env_fails("SCALEKIQ_FORMATION=Worker", "SCALEKIQ_FORMATION=\"Worker\"",
            "not a process type");
  env_fails("SCALEKIQ_FORMATION=../apps", "SCALEKIQ_FORMATION=\"../apps\"",
            "not a process type");
  env_fails("SCALEKIQ_FORMATION=web?x=1", "SCALEKIQ_FORMATION=\"web?x=1\"", "a-z");
}

Test(config, queues) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_QUEUES= critical , default,mailers,default ,critical", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_eq(cfg.nqueues, 3);
  cr_assert_str_eq(cfg.queues[0], "critical");
  cr_assert_str_eq(cfg.queues[1], "default");
  cr_assert_str_eq(cfg.queues[2], "mailers");
  config_free(&cfg);

  char *envp2[] = {"SCALEKIQ_QUEUES=single", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_eq(cfg.nqueues, 1);
  cr_assert_str_eq(cfg.queues[0], "single");
  config_free(&cfg);

  char *envp3[] = {"SCALEKIQ_QUEUES=   ", NULL};
  load_ok(&cfg, envp3, NOARGS);
  cr_assert_eq(cfg.nqueues, 0, "blank means every queue");
  config_free(&cfg);

  env_fails("SCALEKIQ_QUEUES=a,,b", "SCALEKIQ_QUEUES=\"a,,b\"", "empty queue name");
  env_fails("SCALEKIQ_QUEUES=a,", "SCALEKIQ_QUEUES=\"a,\"", "empty queue name");
  env_fails("SCALEKIQ_QUEUES=, a", "SCALEKIQ_QUEUES=\", a\"", "empty queue name");
  env_fails("SCALEKIQ_QUEUES=a b", "SCALEKIQ_QUEUES=\"a b\"", "space");
}

/* ---- Heroku -------------------------------------------------------- */

Test(config, heroku_app_sources) {
  config_t cfg;
  char *envp[] = {"HEROKU_APP_ID=01234567-89ab-cdef-0123-456789ABCDEF", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.heroku_app, "01234567-89ab-cdef-0123-456789ABCDEF");
  cr_assert_str_eq(cfg.heroku_app_source, "HEROKU_APP_ID");
  config_free(&cfg);
  char *envp2[] = {"HEROKU_APP_ID=01234567-89ab-cdef-0123-456789abcdef",
                   "HEROKU_APP_NAME=by-name", NULL};
  load_ok(&cfg, envp2, NOARGS);
  cr_assert_str_eq(cfg.heroku_app, "by-name");
  config_free(&cfg);
  char *argv[] = {"--heroku-app", "by-flag"};
  load_ok(&cfg, envp2, 2, argv);
  cr_assert_str_eq(cfg.heroku_app, "by-flag");
  config_free(&cfg);
}

Test(config, heroku_app_is_validated) {
  env_fails("HEROKU_APP_NAME=My_App", "HEROKU_APP_NAME=\"My_App\"", "not a Heroku app");
  env_fails("HEROKU_APP_NAME=app/../../account", "HEROKU_APP_NAME=\"app/../../account\"",
            "not a Heroku app");
  env_fails("HEROKU_APP_ID=01234567-89ab-cdef-0123-456789abcdeg",
            "HEROKU_APP_ID=\"01234567-89ab-cdef-0123-456789abcdeg\"", "UUID");
  env_fails("HEROKU_APP_NAME=2fast", "HEROKU_APP_NAME=\"2fast\"", "a letter");
  char *argv[] = {"--heroku-app=a b"};
  load_fails(NULL, 1, argv, 0, "--heroku-app=\"a b\"", NULL);
}

Test(config, heroku_required_unless_dry_run) {
  char *none[] = {NULL};
  load_fails(none, NOARGS, 1, "HEROKU_APP_NAME is not set", "SCALEKIQ_DRY_RUN", NULL);
  char *no_token[] = {"HEROKU_APP_NAME=app", NULL};
  load_fails(no_token, NOARGS, 1, "HEROKU_API_KEY is not set", NULL);
  char *no_app[] = {"HEROKU_API_KEY=" TOKEN, NULL};
  load_fails(no_app, NOARGS, 1, "HEROKU_APP_NAME is not set", NULL);

  config_t cfg;
  char *dry[] = {"SCALEKIQ_DRY_RUN=1", NULL};
  cr_assert_eq(load(&cfg, dry, NOARGS, 1), 0, "%s", err);
  config_free(&cfg);
  char *argv[] = {"--dry-run"};
  cr_assert_eq(load(&cfg, none, 1, argv, 1), 0, "%s", err);
  config_free(&cfg);
  cr_assert_eq(load(&cfg, none, NOARGS, 0), 0, "%s", err);
  config_free(&cfg);
  char *full[] = {"HEROKU_APP_NAME=app", "HEROKU_API_KEY=" TOKEN, NULL};
  cr_assert_eq(load(&cfg, full, NOARGS, 1), 0, "%s", err);
  cr_assert_str_eq(cfg.heroku_api_key, TOKEN);
  config_free(&cfg);
}

Test(config, malformed_token_is_refused_without_showing_it) {
  char *envp[] = {"HEROKU_API_KEY=" TOKEN "\r\nX-Evil: 1", NULL};
  load_fails(envp, NOARGS, 0, "HEROKU_API_KEY", "value not shown", NULL);
  char *envp2[] = {"HEROKU_API_KEY= " TOKEN, NULL};
  load_fails(envp2, NOARGS, 0, "HEROKU_API_KEY", NULL);
}

Test(config, token_never_in_any_error) {
  /* every kind of failure, each with a token in the environment */
  const char *bad[] = {
      "SCALEKIQ_POLL_INTERVAL=x",
      "SCALEKIQ_MAX_ADDITIONAL_WORKERS=x",
      "SCALEKIQ_DRY_RUN=x",
      "SCALEKIQ_QUEUES=,",
      "SCALEKIQ_FORMATION=X",
      "HEROKU_APP_NAME=X",
      "HEROKU_API_URL=http://x",
      "SCALEKIQ_REDIS_URL=x",
      "SCALEKIQ_LOCK_TICK=99",
      "SCALEKIQ_LOG_LEVEL=x",
      "SCALEKIQ_LATENCY_RESTORED_THRESHOLD=99",
      "SCALEKIQ_REDIS_TLS_CA_FILE=/nonexistent",
      "REDIS_PROVIDER=NOPE",
      "SCALEKIQ_NAMESPACE=a b",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    config_t cfg;
    /* the bad value comes first so that it wins over the good app name */
    char *envp[] = {(char *)bad[i], "HEROKU_APP_NAME=app", "HEROKU_API_KEY=" TOKEN, NULL};
    cr_assert_eq(load(&cfg, envp, NOARGS, 1), -1, "%s was accepted", bad[i]);
    cr_assert_null(strstr(err, "SECRET"), "%s -> %s", bad[i], err);
    size_t namelen = (size_t)(strchr(bad[i], '=') - bad[i]);
    cr_assert_eq(strncmp(err, bad[i], namelen + 1), 0, "%s -> %s", bad[i], err);
  }
}

Test(config, api_url) {
  const char *good[][2] = {
      {"https://api.heroku.com", "https://api.heroku.com"},
      {"https://api.example.com:8443/v3/", "https://api.example.com:8443/v3"},
      {"https://api.example.com/", "https://api.example.com"},
      {"http://127.0.0.1:5000", "http://127.0.0.1:5000"},
      {"http://localhost/", "http://localhost"},
      {"http://[::1]:8080", "http://[::1]:8080"},
  };
  char buf[128];
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    config_t cfg;
    snprintf(buf, sizeof(buf), "HEROKU_API_URL=%s", good[i][0]);
    char *envp[] = {buf, NULL};
    load_ok(&cfg, envp, NOARGS);
    cr_assert_str_eq(cfg.heroku_api_url, good[i][1]);
    config_free(&cfg);
  }
  env_fails("HEROKU_API_URL=http://api.heroku.com",
            "HEROKU_API_URL=\"http://api.heroku.com\"", "unencrypted");
  env_fails("HEROKU_API_URL=http://localhost@evil.example",
            "HEROKU_API_URL=\"http://localhost@evil.example\"", "not a usable");
  env_fails("HEROKU_API_URL=http://localhost.evil.example", "localhost.evil",
            "unencrypted");
  env_fails("HEROKU_API_URL=http://10.0.0.1:80", "\"http://10.0.0.1:80\"", "127.0.0.1");
  env_fails("HEROKU_API_URL=ftp://api.heroku.com", "HEROKU_API_URL=\"ftp://", "https://");
  env_fails("HEROKU_API_URL=https://", "HEROKU_API_URL=\"https://\"", "not a usable");
  env_fails("HEROKU_API_URL=https://:443", "HEROKU_API_URL=\"https://:443\"", "no host");
  env_fails("HEROKU_API_URL=https://h:99999", "HEROKU_API_URL=\"https://h:99999\"",
            "port");
  env_fails("HEROKU_API_URL=https://h:x", "HEROKU_API_URL=\"https://h:x\"", "port");
  env_fails("HEROKU_API_URL=https://h/a b", "HEROKU_API_URL=\"https://h/a b\"",
            "not a usable");
  char *argv[] = {"--heroku-api-url", "http://example.org"};
  load_fails(NULL, 2, argv, 0, "--heroku-api-url=\"http://example.org\"", "unencrypted",
             NULL);
}

/* ---- this agent ---------------------------------------------------- */

Test(config, socket_path_fits_the_control_server) {
  char path[200], assignment[256];
  memset(path, 'a', sizeof(path));
  path[0] = '/';
  path[95] = '\0'; /* 95 bytes: the longest the control server takes */
  snprintf(assignment, sizeof(assignment), "SCALEKIQ_SOCKET=%s", path);
  config_t cfg;
  char *envp[] = {assignment, NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_eq(strlen(cfg.socket_path), 95);
  cr_assert_eq(cfg.socket_mode, 0600);
  config_free(&cfg);
  path[95] = 'a';
  path[96] = '\0';
  snprintf(assignment, sizeof(assignment), "SCALEKIQ_SOCKET=%s", path);
  load_fails(envp, NOARGS, 0, "SCALEKIQ_SOCKET=\"/aaa", "96 bytes", "at most 95", NULL);
  char *argv[] = {"--socket="};
  load_fails(NULL, 1, argv, 0, "--socket=\"\"", "empty", NULL);
}

Test(config, socket_mode) {
  config_t cfg;
  char *group[] = {"SCALEKIQ_SOCKET_MODE=0660", NULL};
  load_ok(&cfg, group, NOARGS);
  cr_assert_eq(cfg.socket_mode, 0660);
  config_free(&cfg);
  char *open_to_all[] = {"SCALEKIQ_SOCKET_MODE=0666", NULL};
  load_fails(open_to_all, NOARGS, 0, "SCALEKIQ_SOCKET_MODE=\"0666\"", "0660", NULL);
  char *junk[] = {"SCALEKIQ_SOCKET_MODE=rw", NULL};
  load_fails(junk, NOARGS, 0, "SCALEKIQ_SOCKET_MODE", "not an allowed mode", NULL);
}

Test(config, log_level) {
  const char *names[] = {"debug", "info", "warn", "error"};
  const enum log_level levels[] = {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR};
  char buf[64];
  for (size_t i = 0; i < 4; i++) {
    config_t cfg;
    snprintf(buf, sizeof(buf), "SCALEKIQ_LOG_LEVEL=%s", names[i]);
    char *envp[] = {buf, NULL};
    load_ok(&cfg, envp, NOARGS);
    cr_assert_eq(cfg.log_level, levels[i]);
    config_free(&cfg);
  }
  env_fails("SCALEKIQ_LOG_LEVEL=verbose", "SCALEKIQ_LOG_LEVEL=\"verbose\"",
            "debug, info, warn or error");
}

Test(config, request_timeout) {
  config_t cfg;
  char *envp[] = {"SCALEKIQ_REQUEST_TIMEOUT=0.25", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_float_eq(cfg.request_timeout, 0.25, 1e-9);
  config_free(&cfg);
  env_fails("SCALEKIQ_REQUEST_TIMEOUT=soon", "SCALEKIQ_REQUEST_TIMEOUT=\"soon\"",
            "number of seconds");
}

Test(config, identity_prefers_dyno) {
  config_t cfg;
  char *envp[] = {"DYNO=worker.12", NULL};
  load_ok(&cfg, envp, NOARGS);
  cr_assert_str_eq(cfg.identity, "worker.12");
  config_free(&cfg);
}

/* ---- errors and description ---------------------------------------- */

Test(config, long_values_are_cut_and_small_buffers_respected) {
  char assignment[600] = "SCALEKIQ_FORMATION=";
  memset(assignment + strlen(assignment), 'X', 500);
  assignment[sizeof(assignment) - 1] = '\0';
  char *envp[] = {assignment, NULL};
  config_t cfg;
  cr_assert_eq(load(&cfg, envp, NOARGS, 0), -1);
  cr_assert(strstr(err, "...\"") != NULL, "%s", err);
  cr_assert(strlen(err) < 300, "%zu bytes: %s", strlen(err), err);

  char small[16];
  memset(small, '#', sizeof(small));
  cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, small, 10), -1);
  cr_assert_eq(strlen(small), 9);
  cr_assert_eq(small[10], '#', "wrote past errlen");
  cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, NULL, 0), -1);
}

Test(config, describe_has_settings_and_no_secrets) {
  config_t cfg;
  char *envp[] = {"REDIS_URL=rediss://default:redispw99@kv.example:6380/1",
                  "HEROKU_API_KEY=" TOKEN,
                  "HEROKU_APP_NAME=shop",
                  "SCALEKIQ_QUEUES=default,mailers",
                  "SCALEKIQ_POLL_INTERVAL=0.5",
                  "DYNO=worker.1",
                  NULL};
  cr_assert_eq(load(&cfg, envp, NOARGS, 1), 0, "%s", err);
  char line[2048];
  config_describe(&cfg, line, sizeof(line));
  cr_assert_null(strstr(line, "SECRET"), "%s", line);
  cr_assert_null(strstr(line, "redispw99"), "%s", line);
  cr_assert_null(strchr(line, '\n'));
  const char *want[] = {"redis=rediss://default:***@kv.example:6380/1 ",
                        "redis_from=REDIS_URL ",
                        "queues=default,mailers ",
                        "poll_interval=0.5 ",
                        "lock_ttl=1.5 ",
                        "lock_tick=0.5 ",
                        "heroku_app=shop ",
                        "heroku_token=set ",
                        "dry_run=false ",
                        "sidekiq_namespace=\"\" ",
                        "namespace=amigo/autoscaler ",
                        "formation=worker ",
                        "log_level=info ",
                        "identity=worker.1"};
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
    cr_assert_not_null(strstr(line, want[i]), "missing %s in: %s", want[i], line);
  cr_assert_eq(strncmp(line, "redis=", 6), 0, "%s", line);

  char tiny[20];
  config_describe(&cfg, tiny, sizeof(tiny));
  cr_assert_eq(strlen(tiny), sizeof(tiny) - 1);
  config_free(&cfg);
}
