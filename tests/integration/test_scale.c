/*
 * End to end: the scalekiq binary (`scalekiq run`) against a real
 * redis-server and the fake Platform API, with sub-second intervals. The
 * assertions are on what the fake received (the exact formation changes)
 * and on the keys in Redis, read back as the Ruby gem would read them.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_heroku.h"
#include "testutil.h"

#define TOKEN "e2e-token-0123456789"
#define NS "amigo/autoscaler"
#define INITIAL_KEY "amigo/autoscaler/heroku/worker/active_event_initial_workers"

static test_redis_t R;
static fake_heroku_t H;
static char logpath[128];
static char env_redis[128], env_api[128];

static void start(void) {
  test_redis_start(&R);
  snprintf(logpath, sizeof(logpath), "%s/agent.log", R.dir);
}

static void stop(void) {
  fake_heroku_stop(&H);
  test_redis_stop(&R);
}

TestSuite(scale, .init = start, .fini = stop);

/* ---- helpers ------------------------------------------------------- */

static pid_t agent_start(const char *token, const char *const *extra) {
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_api, sizeof(env_api), "HEROKU_API_URL=%s", fake_heroku_url(&H));
  static char env_token[96], env_sock[128];
  snprintf(env_token, sizeof(env_token), "HEROKU_API_KEY=%s", token);
  snprintf(env_sock, sizeof(env_sock), "SCALEKIQ_SOCKET=%s/agent.sock", R.dir);
  const char *env[16] = {env_redis,
                         env_sock,
                         env_api,
                         env_token,
                         "HEROKU_APP_NAME=" FAKE_HEROKU_APP,
                         "SCALEKIQ_POLL_INTERVAL=0.1",
                         "SCALEKIQ_ALERT_INTERVAL=0.3",
                         "SCALEKIQ_LATENCY_THRESHOLD=5",
                         "SCALEKIQ_MAX_ADDITIONAL_WORKERS=2",
                         "SCALEKIQ_REQUEST_TIMEOUT=2",
                         NULL};
  int n = 10;
  for (int i = 0; extra && extra[i] && n < 15; i++) env[n++] = extra[i];
  env[n] = NULL;
  const char *argv[] = {SCALEKIQ_BIN, "run", NULL};
  return test_spawn(argv, env, logpath);
}

static void push_old_job(const char *queue, double age) {
  char job[256];
  snprintf(job, sizeof(job),
           "{\"class\":\"HardWorker\",\"args\":[1],\"queue\":\"%s\",\"jid\":"
           "\"0123456789abcdef01234567\",\"created_at\":%.6f,\"enqueued_at\":%.6f}",
           queue, test_now() - age, test_now() - age);
  test_push_job(&R, NULL, queue, job);
}

static int want_patches;
static bool enough_patches(void *arg) {
  (void)arg;
  return fake_heroku_count(&H, "PATCH") >= want_patches;
}
static void wait_patches(int n, double timeout) {
  want_patches = n;
  cr_assert(test_wait_for(enough_patches, NULL, timeout),
            "expected %d PATCH requests, got %d; agent log:\n%s", n,
            fake_heroku_count(&H, "PATCH"), test_read_file(logpath));
}

static long want_depth;
static bool depth_reached(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, NS "/depth");
  bool ok = v && atol(v) >= want_depth;
  free(v);
  return ok;
}
static bool depth_zero_after_event(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, NS "/depth");
  bool ok = v && strcmp(v, "0") == 0;
  free(v);
  return ok;
}
static void wait_depth(long d, double timeout) {
  want_depth = d;
  cr_assert(test_wait_for(depth_reached, NULL, timeout), "depth never reached %ld; log:\n%s",
            d, test_read_file(logpath));
}

static const char *log_needle;
static bool log_has(void *arg) {
  (void)arg;
  char *log = test_read_file(logpath);
  bool ok = strstr(log, log_needle) != NULL;
  free(log);
  return ok;
}
static void wait_log(const char *needle, double timeout) {
  log_needle = needle;
  cr_assert(test_wait_for(log_has, NULL, timeout), "log never said \"%s\":\n%s", needle,
            test_read_file(logpath));
}

/* A float as the gem writes it (Float#to_s): digits, a point, digits. */
static void assert_float_string(const char *key) {
  char *v = test_redis_get(&R, key);
  cr_assert_not_null(v, "%s missing", key);
  size_t i = 0;
  while (v[i] >= '0' && v[i] <= '9') i++;
  cr_assert(i > 0 && v[i] == '.' && v[i + 1] >= '0' && v[i + 1] <= '9',
            "%s = \"%s\" is not a float string", key, v);
  i++;
  while (v[i] >= '0' && v[i] <= '9') i++;
  cr_assert_eq(v[i], '\0', "%s = \"%s\"", key, v);
  free(v);
}

static void assert_key(const char *key, const char *want) {
  char *v = test_redis_get(&R, key);
  if (want == NULL) cr_assert_null(v, "%s should be absent, is \"%s\"", key, v);
  else cr_assert(v && strcmp(v, want) == 0, "%s = \"%s\", want \"%s\"", key, v ? v : "(nil)", want);
  free(v);
}

/* ---- scenarios ----------------------------------------------------- */

/* extra: more settings for the agent (the TLS suite's CA file). */
static void full_event(const char *const *extra) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, extra);

  wait_patches(2, 10);
  assert_key(INITIAL_KEY, "1");
  assert_float_string(NS "/latency_event_started");
  /* maxscale: depth goes on, nothing is sent */
  wait_depth(4, 10);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 2, "a PATCH was sent beyond the maximum");
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 3);

  test_redis_cmd_free(&R, "DEL queue:default"); /* the backlog is gone */
  wait_patches(3, 10);
  cr_assert(test_wait_for(depth_zero_after_event, NULL, 5));

  long qty[8], st[8];
  int n = fake_heroku_patches(&H, qty, st, 8);
  cr_assert_eq(n, 3);
  cr_assert_eq(qty[0], 2);
  cr_assert_eq(qty[1], 3);
  cr_assert_eq(qty[2], 1);
  cr_assert_eq(fake_heroku_count(&H, "GET"), 1, "initial workers are read once per event");
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);

  /* the gem's format, read back as the gem reads it */
  assert_key(NS "/depth", "0");
  assert_key(NS "/latency_event_started", "0.0");
  assert_float_string(NS "/last_alerted");
  assert_key(INITIAL_KEY, NULL);

  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0, "agent did not exit cleanly");
  char *log = test_read_file(logpath);
  cr_assert_not_null(strstr(log, "event=scale_up formation=worker from=1 to=2 depth=1 result=scaled"), "%s", log);
  cr_assert_not_null(strstr(log, "result=maxscale"), "%s", log);
  cr_assert_not_null(strstr(log, "event=restore formation=worker from=3 to=1"), "%s", log);
  cr_assert_null(strstr(log, TOKEN), "the token was logged");
  free(log);
}

Test(scale, full_event_scales_1_2_3_stops_at_max_and_restores_1) { full_event(NULL); }

Test(scale, initial_zero_means_no_patch_at_all) {
  fake_heroku_start(&H, TOKEN, "worker=0");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_depth(3, 10);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 0);
  cr_assert_eq(fake_heroku_count(&H, "GET"), 1);
  wait_log("result=noscale", 5);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 0);
}

/* The PATCHes that failed asked for 2, the first success is 2, the next
 * step is 3: a failure never advances depth. */
static void failing_patches_keep_the_step(int failures, int expect_failed_poll) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  char rule[128];
  snprintf(rule, sizeof(rule),
           "{\"count\":%d,\"status\":503,\"id\":\"unavailable\",\"method\":\"PATCH\"}",
           failures);
  fake_heroku_control(&H, "POST", "/__fake/fail", rule);
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_patches(failures + 2, 20);
  long qty[16], st[16];
  int n = fake_heroku_patches(&H, qty, st, 16);
  cr_assert_geq(n, failures + 2);
  for (int i = 0; i < failures; i++) {
    cr_assert_eq(st[i], 503, "PATCH #%d should have failed", i);
    cr_assert_eq(qty[i], 2, "PATCH #%d after a failure asked for %ld, not 2", i, qty[i]);
  }
  cr_assert_eq(qty[failures], 2, "the first success is the same step");
  cr_assert_eq(st[failures], 200);
  cr_assert_eq(qty[failures + 1], 3, "depth skipped a step");
  if (expect_failed_poll) wait_log("result=failed", 1);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
}

Test(scale, api_503_twice_is_retried_with_the_same_target) {
  failing_patches_keep_the_step(2, 1);
}

/* The API applied the change but the reply was lost: the agent reads the
 * formation before trying again, records the step as done and goes on to
 * the next one, never sending 2 a second time. */
Test(scale, a_change_whose_reply_was_lost_is_not_sent_twice) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"count\":1,\"status\":200,\"close\":true,\"apply\":true,"
                      "\"method\":\"PATCH\"}");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_patches(2, 20);
  test_redis_cmd_free(&R, "DEL queue:default");
  wait_patches(3, 20);
  long qty[8];
  int n = fake_heroku_patches(&H, qty, NULL, 8);
  cr_assert_eq(n, 3, "PATCHes: %d", n);
  cr_assert(qty[0] == 2 && qty[1] == 3 && qty[2] == 1, "PATCHed %ld, %ld, %ld", qty[0],
            qty[1], qty[2]);
  wait_log("event=change_already_applied formation=worker quantity=2", 1);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
}

Test(scale, failed_step_is_retried_at_the_next_poll_and_depth_never_skips) {
  /* more failures than one call's attempts: the poll's step fails */
  failing_patches_keep_the_step(4, 1);
}

/* The API holds a change past the agent's timeout and carries it out
 * later. The event ends meanwhile: the restore must wait until that change
 * can no longer land, or the late change would leave the formation scaled
 * after the event (and the next event would take it as its initial count). */
Test(scale, a_change_applied_after_its_timeout_does_not_outlive_the_event) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  /* request timeout 2 s: held 3 s, then applied */
  fake_heroku_control(&H, "POST", "/__fake/stall",
                      "{\"count\":1,\"seconds\":3,\"method\":\"PATCH\"}");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_log("event=change_outcome_unknown", 10);
  test_redis_cmd_free(&R, "DEL queue:default"); /* the event is over */
  wait_patches(2, 20);
  long qty[8];
  int n = fake_heroku_patches(&H, qty, NULL, 8);
  cr_assert_eq(n, 2, "PATCHes: %d", n);
  cr_assert(qty[0] == 2 && qty[1] == 1, "PATCHed %ld, %ld", qty[0], qty[1]);
  cr_assert(test_wait_for(depth_zero_after_event, NULL, 5));
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1, "the late change outlived the event");
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
}

Test(scale, unauthorized_is_logged_plainly_and_the_agent_stays_up) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  pid_t agent = agent_start("wrong-token-abcdef", NULL);
  wait_log("level=error event=scale_up", 10);
  wait_log("401", 1);
  cr_assert(test_alive(agent), "the agent died on a 401");
  /* it keeps polling and does not change the formation */
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 0);
  assert_key(NS "/depth", NULL);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  char *log = test_read_file(logpath);
  cr_assert_null(strstr(log, "wrong-token-abcdef"), "the token was logged:\n%s", log);
  free(log);
}

Test(scale, restart_mid_event_continues_the_event) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_patches(1, 10);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  char *depth = test_redis_get(&R, NS "/depth");
  cr_assert_str_eq(depth, "1");
  free(depth);

  agent = agent_start(TOKEN, NULL);
  wait_patches(2, 10);
  test_redis_cmd_free(&R, "DEL queue:default");
  wait_patches(3, 10);
  long qty[8], st[8];
  cr_assert_eq(fake_heroku_patches(&H, qty, st, 8), 3);
  cr_assert_eq(qty[0], 2);
  cr_assert_eq(qty[1], 3);
  cr_assert_eq(qty[2], 1, "restore must go back to the original count");
  /* The new agent looks at the formation before its first change, but the
   * initial count is the one the first agent stored. */
  cr_assert_eq(fake_heroku_count(&H, "GET"), 2);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  char *log = test_read_file(logpath);
  const char *first = strstr(log, "event=initial_workers");
  cr_assert(first && !strstr(first + 1, "event=initial_workers"),
            "the new agent read initial workers again:\n%s", log);
  free(log);
}

Test(scale, dry_run_decides_the_same_and_sends_no_patch) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  const char *extra[] = {"SCALEKIQ_DRY_RUN=1", NULL};
  pid_t agent = agent_start(TOKEN, extra);
  wait_depth(3, 10);
  test_redis_cmd_free(&R, "DEL queue:default");
  cr_assert(test_wait_for(depth_zero_after_event, NULL, 10));
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 0);
  char *log = test_read_file(logpath);
  cr_assert_not_null(strstr(log, "from=1 to=2 depth=1 result=dry_run"), "%s", log);
  cr_assert_not_null(strstr(log, "from=2 to=3 depth=2 result=dry_run"), "%s", log);
  cr_assert_not_null(strstr(log, "result=maxscale"), "%s", log);
  cr_assert_not_null(strstr(log, "event=restore formation=worker from=3 to=1"), "%s", log);
  free(log);
}

static bool five_polls(void *arg) {
  (void)arg;
  char *log = test_read_file(logpath);
  int n = 0;
  for (char *p = log; (p = strstr(p, "event=poll ")) != NULL; p++) n++;
  free(log);
  return n >= 5;
}

Test(scale, a_poll_costs_two_round_trips_whatever_the_queues) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  for (int i = 0; i < 200; i++) {
    char q[32];
    snprintf(q, sizeof(q), "queue%03d", i);
    push_old_job(q, 1); /* young: nothing to do, just to read */
  }
  const char *extra[] = {"SCALEKIQ_LOG_LEVEL=debug", NULL};
  pid_t agent = agent_start(TOKEN, extra);
  cr_assert(test_wait_for(five_polls, NULL, 10), "%s", test_read_file(logpath));
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  char *log = test_read_file(logpath);
  int polls = 0;
  for (char *p = log; (p = strstr(p, "event=poll ")) != NULL; p++) {
    char *end = strchr(p, '\n');
    char *rt = strstr(p, "round_trips=");
    cr_assert(rt != NULL && (end == NULL || rt < end), "no round_trips in a poll line");
    cr_assert_eq(atoi(rt + strlen("round_trips=")), 2, "a poll took %d round trips",
                 atoi(rt + strlen("round_trips=")));
    cr_assert_not_null(strstr(p, "queues=200 "), "not every queue was read");
    polls++;
  }
  cr_assert_geq(polls, 5);
  free(log);
}

/* ---- the same over rediss:// --------------------------------------- */

static test_certs_t C;
static char env_ca[160];
static const char *tls_extra[] = {env_ca, NULL};

static void start_tls(void) {
  test_certs_make(&C);
  snprintf(env_ca, sizeof(env_ca), "SCALEKIQ_REDIS_TLS_CA_FILE=%s", C.ca);
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  snprintf(logpath, sizeof(logpath), "%s/agent.log", R.dir);
}

static void stop_tls(void) {
  stop();
  test_certs_remove(&C);
}

TestSuite(scale_tls, .init = start_tls, .fini = stop_tls);

Test(scale_tls, full_event_over_rediss_with_a_ca_file) { full_event(tls_extra); }

static int count_in_log(const char *needle) {
  char *log = test_read_file(logpath);
  int n = 0;
  for (char *p = log; (p = strstr(p, needle)) != NULL; p++) n++;
  free(log);
  return n;
}

static bool reconnected(void *arg) {
  (void)arg;
  return count_in_log("event=redis_connected") >= 2;
}

Test(scale_tls, tls_server_restarted_mid_run_the_agent_reconnects_and_scales) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, tls_extra);
  wait_patches(1, 10);

  /* An outage: one error line, then back on the same port with an empty
   * database (no persistence), where a new backlog starts a new event
   * from the formation's current quantity. */
  test_redis_kill(&R);
  wait_log("level=error event=redis_unavailable url=rediss://127.0.0.1", 10);
  test_redis_restart(&R);
  cr_assert(test_wait_for(reconnected, NULL, 15), "no reconnect; log:\n%s",
            test_read_file(logpath));
  push_old_job("default", 30);
  int before = fake_heroku_count(&H, "PATCH");
  wait_patches(before + 1, 15);
  cr_assert(test_alive(agent));
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  cr_assert_eq(count_in_log("level=error event=redis_unavailable"), 1,
               "one error line per outage:\n%s", test_read_file(logpath));
}

static bool three_retries(void *arg) {
  (void)arg;
  return count_in_log("event=redis_reconnect") >= 3;
}

Test(scale_tls, a_self_signed_server_is_one_clear_error_line_then_verify_none_works) {
  test_redis_stop(&R);
  test_redis_start_tls(&R, C.self_crt, C.self_key, C.ca, false);
  snprintf(logpath, sizeof(logpath), "%s/agent.log", R.dir);
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);

  const char *verify[] = {"SCALEKIQ_LOG_LEVEL=debug", NULL}; /* default: verify */
  pid_t agent = agent_start(TOKEN, verify);
  wait_log("level=error event=redis_unavailable", 10);
  /* it keeps retrying, without repeating the error line */
  cr_assert(test_wait_for(three_retries, NULL, 10), "%s", test_read_file(logpath));
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
  char *log = test_read_file(logpath);
  cr_assert_not_null(strstr(log, "TLS certificate verification failed (self-signed "
                                 "certificate): set SCALEKIQ_REDIS_TLS_VERIFY=none for "
                                 "Heroku Key-Value Store, or SCALEKIQ_REDIS_TLS_CA_FILE="),
                     "%s", log);
  free(log);
  cr_assert_eq(count_in_log("level=error event=redis_unavailable"), 1);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 0);

  const char *none[] = {"SCALEKIQ_REDIS_TLS_VERIFY=none", NULL};
  agent = agent_start(TOKEN, none);
  wait_patches(1, 10);
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);
}

static double jnum(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *jstr_or(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

Test(scale, history_lists_a_full_event_in_order) {
  fake_heroku_start(&H, TOKEN, "worker=1");
  push_old_job("default", 30);
  pid_t agent = agent_start(TOKEN, NULL);
  wait_patches(2, 10);
  wait_depth(3, 10);
  test_redis_cmd_free(&R, "DEL queue:default");
  wait_patches(3, 10);
  cr_assert(test_wait_for(depth_zero_after_event, NULL, 5));
  cr_assert_eq(test_stop(agent, SIGTERM, 10), 0);

  char url[128], *out, *err;
  snprintf(url, sizeof(url), "--redis-url=%s", R.url);
  const char *argv[] = {SCALEKIQ_BIN, "history", "--json", "-n", "100", url, NULL};
  cr_assert_eq(test_run(argv, NULL, 20, &out, &err), 0, "%s", err);
  cJSON *h = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(h), "%s", out);
  /* newest first: walk it backwards for the event in the order it ran */
  const char *seq[32];
  const cJSON *ent[32];
  int n = 0;
  for (int i = cJSON_GetArraySize(h) - 1; i >= 0 && n < 32; i--) {
    const cJSON *e = cJSON_GetArrayItem(h, i);
    cr_assert_str_eq(jstr_or(e, "dyno"), jstr_or(cJSON_GetArrayItem(h, 0), "dyno"));
    cr_assert_gt(jnum(e, "at"), 0);
    const char *ev = jstr_or(e, "event");
    if (strcmp(ev, "event_start") && strcmp(ev, "scale_up") && strcmp(ev, "restore")) continue;
    ent[n] = e;
    seq[n++] = ev;
  }
  cr_assert_geq(n, 5, "%s", out);
  cr_assert_str_eq(seq[0], "event_start");
  cr_assert_str_eq(seq[1], "scale_up");
  cr_assert_eq(jnum(ent[1], "to"), 2);
  cr_assert_str_eq(jstr_or(ent[1], "result"), "scaled");
  cr_assert_str_eq(seq[2], "scale_up");
  cr_assert_eq(jnum(ent[2], "to"), 3);
  for (int i = 3; i < n - 1; i++) {
    cr_assert_str_eq(seq[i], "scale_up");
    cr_assert_str_eq(jstr_or(ent[i], "result"), "maxscale");
  }
  cr_assert_str_eq(seq[n - 1], "restore");
  cr_assert_eq(jnum(ent[n - 1], "to"), 1);
  cr_assert_str_eq(jstr_or(ent[n - 1], "result"), "scaled");
  cJSON_Delete(h);
  free(out);
  free(err);

  const char *human[] = {SCALEKIQ_BIN, "history", "-n", "3", url, NULL};
  cr_assert_eq(test_run(human, NULL, 20, &out, &err), 0, "%s", err);
  int lines = 0;
  for (char *p = out; *p; p++) lines += *p == '\n';
  cr_assert_eq(lines, 3, "%s", out);
  cr_assert_not_null(strstr(out, "event=restore"), "newest first: %s", out);
  free(out);
  free(err);
  const char *bad[] = {SCALEKIQ_BIN, "history", "-n", "0", NULL};
  cr_assert_eq(test_run(bad, NULL, 20, &out, &err), 2);
  free(out);
  free(err);
}
