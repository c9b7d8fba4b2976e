/*
 * `scalekiq queues` against a real redis-server seeded the way Sidekiq
 * seeds it, and against Debian's real Sidekiq client and API.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static test_redis_t R;

static void start(void) { test_redis_start(&R); }
static void stop(void) { test_redis_stop(&R); }

TestSuite(queues, .init = start, .fini = stop);

static char env_url[128];

static int run_queues(const char *extra_env, int json, char **out, char **err) {
  snprintf(env_url, sizeof(env_url), "SCALEKIQ_REDIS_URL=%s", R.url);
  const char *env[] = {env_url, extra_env, NULL};
  const char *argv[] = {SCALEKIQ_BIN, "queues", json ? "--json" : NULL, NULL};
  return test_run(argv, env, 20, out, err);
}

static const cJSON *find_queue(const cJSON *arr, const char *name) {
  const cJSON *q;
  cJSON_ArrayForEach(q, arr) {
    const cJSON *n = cJSON_GetObjectItem(q, "name");
    if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return q;
  }
  return NULL;
}

static void expect(const cJSON *arr, const char *name, double size, double latency,
                   double tol) {
  const cJSON *q = find_queue(arr, name);
  cr_assert_not_null(q, "queue %s missing", name);
  cr_assert_float_eq(cJSON_GetObjectItem(q, "size")->valuedouble, size, 1e-9,
                     "size of %s", name);
  double got = cJSON_GetObjectItem(q, "latency")->valuedouble;
  cr_assert(fabs(got - latency) <= tol, "latency of %s: got %.3f want %.3f", name,
            got, latency);
}

static void push_ages(const char *ns) {
  double now = test_now();
  char job[512];
  /* Sidekiq 7: float seconds; two jobs, the oldest decides */
  snprintf(job, sizeof(job),
           "{\"class\":\"HardWorker\",\"args\":[1],\"retry\":true,\"queue\":\"default\","
           "\"jid\":\"b4a577edbccf1d805744efa9\",\"created_at\":%.6f,\"enqueued_at\":%.6f}",
           now - 31.0, now - 30.0);
  test_push_job(&R, ns, "default", job);
  snprintf(job, sizeof(job), "{\"class\":\"HardWorker\",\"args\":[2],\"enqueued_at\":%.6f}",
           now - 2.0);
  test_push_job(&R, ns, "default", job);
  /* Sidekiq 8: integer milliseconds */
  snprintf(job, sizeof(job),
           "{\"class\":\"HardWorker\",\"args\":[],\"queue\":\"critical\","
           "\"created_at\":%.0f,\"enqueued_at\":%.0f}",
           (now - 8.0) * 1000, (now - 7.5) * 1000);
  test_push_job(&R, ns, "critical", job);
  /* Sidekiq 8.1: created_at only */
  snprintf(job, sizeof(job), "{\"class\":\"W\",\"args\":[],\"created_at\":%.0f}",
           (now - 4.0) * 1000);
  test_push_job(&R, ns, "mailers", job);
  /* no timestamp at all */
  test_push_job(&R, ns, "untimed", "{\"class\":\"W\",\"args\":[]}");
}

Test(queues, json_agrees_with_the_ages_pushed) {
  push_ages(NULL);
  test_redis_cmd_free(&R, "SADD queues empty"); /* known queue, no jobs */
  char *out, *err;
  double before = test_now();
  int rc = run_queues(NULL, 1, &out, &err);
  double took = test_now() - before;
  cr_assert_eq(rc, 0, "exit %d, stderr: %s", rc, err);
  cJSON *arr = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(arr), "not a JSON array: %s", out);
  cr_assert_eq(cJSON_GetArraySize(arr), 5);
  double tol = 0.05 + took;
  expect(arr, "critical", 1, 7.5, tol);
  expect(arr, "default", 2, 30.0, tol);
  expect(arr, "empty", 0, 0, 0);
  expect(arr, "mailers", 1, 4.0, tol);
  expect(arr, "untimed", 1, 0, 0);
  /* sorted by name */
  const char *order[] = {"critical", "default", "empty", "mailers", "untimed"};
  for (int i = 0; i < 5; i++)
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "name")->valuestring,
                     order[i]);
  cJSON_Delete(arr);
  free(out);
  free(err);
}

/* An agent whose clock is 30 s off in either direction still measures
 * the ages the jobs really have: "now" is Redis's clock. faketime moves
 * this process's wall clock only (the Redis server keeps the real one). */
Test(queues, latency_is_measured_on_redis_clock_not_a_skewed_one) {
  double pushed = test_now();
  push_ages(NULL);
  const char *skews[] = {"+30s", "-30s"};
  /* Under ASan, libfaketime preloaded ahead of its runtime is harmless. */
  static char asan[512];
  const char *prev = getenv("ASAN_OPTIONS");
  snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0", prev ? prev : "",
           prev && *prev ? ":" : "");
  for (int i = 0; i < 2; i++) {
    snprintf(env_url, sizeof(env_url), "SCALEKIQ_REDIS_URL=%s", R.url);
    const char *env[] = {env_url, asan, NULL};
    const char *argv[] = {"/usr/bin/faketime", "-f", skews[i], SCALEKIQ_BIN,
                          "queues", "--json", NULL};
    char *out, *err;
    int rc = test_run(argv, env, 20, &out, &err);
    /* the jobs have aged since they were pushed, by at most this */
    double aged = test_now() - pushed;
    cr_assert_eq(rc, 0, "exit %d, stderr: %s", rc, err);
    cJSON *arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr), "not a JSON array: %s", out);
    expect(arr, "default", 2, 30.0, 0.05 + aged);
    expect(arr, "critical", 1, 7.5, 0.05 + aged);
    cJSON_Delete(arr);
    free(out), free(err);
  }
  /* and faketime does move the clock: a program that reads it sees the skew */
  const char *date_argv[] = {"/usr/bin/faketime", "-f", "+30s", "/bin/date", "+%s", NULL};
  char *out, *err;
  cr_assert_eq(test_run(date_argv, NULL, 10, &out, &err), 0);
  cr_assert(fabs(atof(out) - test_now() - 30) < 3, "faketime did not skew: %s", out);
  free(out), free(err);
}

Test(queues, namespace_prefix) {
  push_ages("myapp");
  test_push_job(&R, NULL, "unprefixed", "{\"enqueued_at\":1.5}");
  char *out, *err;
  int rc = run_queues("SCALEKIQ_SIDEKIQ_NAMESPACE=myapp", 1, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  cJSON *arr = cJSON_Parse(out);
  cr_assert_eq(cJSON_GetArraySize(arr), 4, "%s", out);
  cr_assert_null(find_queue(arr, "unprefixed"));
  expect(arr, "default", 2, 30.0, 1.0);
  cJSON_Delete(arr);
  free(out);
  free(err);
}

Test(queues, garbage_job_is_latency_zero_with_a_warning) {
  test_push_job(&R, NULL, "broken", "this is not json");
  test_push_job(&R, NULL, "stringy", "{\"enqueued_at\":\"yesterday\"}");
  char *out, *err;
  int rc = run_queues(NULL, 1, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  cJSON *arr = cJSON_Parse(out);
  expect(arr, "broken", 1, 0, 0);
  expect(arr, "stringy", 1, 0, 0);
  cr_assert_not_null(strstr(err, "level=warn event=sidekiq_bad_job queue=broken"), "%s", err);
  cr_assert_not_null(strstr(err, "queue=stringy"), "%s", err);
  cJSON_Delete(arr);
  free(out);
  free(err);
}

Test(queues, human_table_and_pool_usage) {
  push_ages(NULL);
  /* Sidekiq <= 8.1.1: concurrency in info; >= 8.1.2: its own field; a
   * process whose heartbeat hash expired is skipped as Sidekiq does. */
  test_redis_cmd_free(&R, "SADD processes host1:1:abc host2:2:def gone:3:xyz");
  test_redis_cmd_free(&R, "HSET host1:1:abc busy 3 beat 1700000000.0 info %s",
                      "{\"hostname\":\"host1\",\"concurrency\":10,\"queues\":[\"default\"]}");
  test_redis_cmd_free(&R, "HSET host2:2:def busy 2 concurrency 10 info %s",
                      "{\"hostname\":\"host2\"}");
  char *out, *err;
  int rc = run_queues(NULL, 0, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  cr_assert_not_null(strstr(out, "QUEUE"), "%s", out);
  cr_assert_not_null(strstr(out, "default"), "%s", out);
  cr_assert_not_null(strstr(out, "pool usage: 5 of 20 threads busy (25%) in 2 processes"),
                     "%s", out);
  free(out);
  free(err);
}

Test(queues, auth_and_database) {
  test_redis_cmd_free(&R, "CONFIG SET requirepass %s", "s3cret-pass");
  /* the test's own connection must authenticate now too */
  test_redis_cmd_free(&R, "AUTH %s", "s3cret-pass");
  test_redis_cmd_free(&R, "SELECT 3");
  test_push_job(&R, NULL, "indb3", "{\"enqueued_at\":1.0}");
  char url[160], *out, *err;
  snprintf(url, sizeof(url), "--redis-url=redis://:s3cret-pass@127.0.0.1:%d/3", R.port);
  const char *argv[] = {SCALEKIQ_BIN, "queues", "--json", url, NULL};
  int rc = test_run(argv, NULL, 20, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  cr_assert_not_null(strstr(out, "\"indb3\""), "%s", out);
  free(out);
  free(err);

  snprintf(url, sizeof(url), "--redis-url=redis://:wr0ng-pass@127.0.0.1:%d/3", R.port);
  const char *argv2[] = {SCALEKIQ_BIN, "queues", url, NULL};
  rc = test_run(argv2, NULL, 20, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert_not_null(strstr(err, "WRONGPASS"), "%s", err);
  cr_assert_null(strstr(err, "wr0ng-pass"), "password leaked: %s", err);
  cr_assert_null(strstr(out, "wr0ng-pass"));
  free(out);
  free(err);
}

Test(queues, unreachable_redis_exits_1_with_a_clear_message) {
  int port = test_free_port(); /* nothing listens there */
  char url[96], *out, *err;
  snprintf(url, sizeof(url), "--redis-url=redis://:hidden-pw@127.0.0.1:%d/0", port);
  const char *argv[] = {SCALEKIQ_BIN, "queues", "--json", url, NULL};
  int rc = test_run(argv, NULL, 20, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "cannot reach Redis at redis://:***@127.0.0.1"), "%s", err);
  cr_assert_not_null(strstr(err, "connection refused"), "%s", err);
  cr_assert_null(strstr(err, "hidden-pw"));
  cr_assert_str_empty(out);
  free(out);
  free(err);
}

Test(queues, wrong_key_type_is_an_error_not_empty) {
  test_redis_cmd_free(&R, "SET queues notaset");
  char *out, *err;
  int rc = run_queues(NULL, 1, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert_not_null(strstr(err, "queues set could not be read"), "%s", err);
  free(out);
  free(err);
}

Test(queues, bad_usage_exits_2) {
  char *out, *err;
  const char *argv[] = {SCALEKIQ_BIN, "queues", "--no-such-flag", NULL};
  cr_assert_eq(test_run(argv, NULL, 10, &out, &err), 2);
  cr_assert_not_null(strstr(err, "--no-such-flag"), "%s", err);
  free(out);
  free(err);
  const char *argv2[] = {SCALEKIQ_BIN, "queues", "extra", NULL};
  cr_assert_eq(test_run(argv2, NULL, 10, &out, &err), 2);
  free(out);
  free(err);
}

/* ---- Debian's real Sidekiq ---------------------------------------- */

static cJSON *sidekiq_measure(void) {
  const char *argv[] = {"/usr/bin/ruby", SOURCE_DIR "/tests/integration/sidekiq_client.rb",
                        R.url, "measure", NULL};
  char *out, *err;
  int rc = test_run(argv, NULL, 60, &out, &err);
  cr_assert_eq(rc, 0, "sidekiq measure failed: %s", err);
  cJSON *j = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(j), "%s", out);
  free(out);
  free(err);
  return j;
}

static void sidekiq_push(const char *queue, const char *count) {
  const char *argv[] = {"/usr/bin/ruby", SOURCE_DIR "/tests/integration/sidekiq_client.rb",
                        R.url, "push", queue, count, NULL};
  char *out, *err;
  int rc = test_run(argv, NULL, 60, &out, &err);
  cr_assert_eq(rc, 0, "sidekiq push failed: %s", err);
  free(out);
  free(err);
}

Test(queues, agrees_with_real_sidekiq_api) {
  sidekiq_push("default", "3");
  sidekiq_push("critical", "1");
  sidekiq_push("low", "5");
  test_redis_cmd_free(&R, "SADD queues nothing_here");

  cJSON *before = sidekiq_measure();
  char *out, *err;
  int rc = run_queues(NULL, 1, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  cJSON *ours = cJSON_Parse(out);
  cJSON *after = sidekiq_measure();

  cr_assert_eq(cJSON_GetArraySize(ours), cJSON_GetArraySize(before), "%s", out);
  cr_assert_eq(cJSON_GetArraySize(ours), 4);
  for (int i = 0; i < cJSON_GetArraySize(ours); i++) {
    cJSON *o = cJSON_GetArrayItem(ours, i), *b = cJSON_GetArrayItem(before, i),
          *a = cJSON_GetArrayItem(after, i);
    const char *name = cJSON_GetObjectItem(o, "name")->valuestring;
    cr_assert_str_eq(name, cJSON_GetObjectItem(b, "name")->valuestring);
    cr_assert_float_eq(cJSON_GetObjectItem(o, "size")->valuedouble,
                       cJSON_GetObjectItem(b, "size")->valuedouble, 1e-9, "size of %s", name);
    /* ours was taken between Sidekiq's two readings */
    double lo = cJSON_GetObjectItem(b, "latency")->valuedouble;
    double hi = cJSON_GetObjectItem(a, "latency")->valuedouble;
    double got = cJSON_GetObjectItem(o, "latency")->valuedouble;
    cr_assert(got >= lo - 0.05 && got <= hi + 0.05,
              "latency of %s: sidekiq %.3f..%.3f, scalekiq %.3f", name, lo, hi, got);
  }
  cJSON_Delete(before);
  cJSON_Delete(ours);
  cJSON_Delete(after);
  free(out);
  free(err);
}
