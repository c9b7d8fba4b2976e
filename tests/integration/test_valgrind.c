/*
 * scalekiq under valgrind memcheck: `queues` against a seeded Redis, plain
 * and over TLS, and the end-to-end scenario (`run -- CMD` through a whole
 * latency event against the fake Platform API, then SIGTERM). Any invalid
 * access, use of uninitialised memory or definite leak fails.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_heroku.h"
#include "testutil.h"

static test_redis_t R;
static void start(void) { test_redis_start(&R); }
static void stop(void) { test_redis_stop(&R); }
TestSuite(valgrind, .init = start, .fini = stop);

static void memcheck(const char *const *args, int want_status) {
  const char *argv[16] = {"/usr/bin/valgrind", "--quiet", "--error-exitcode=99",
                          "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                          "--show-leak-kinds=definite,indirect", SCALEKIQ_BIN};
  int n = 7;
  for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *out, *err;
  int rc = test_run(argv, NULL, 120, &out, &err);
  cr_assert_eq(rc, want_status, "exit %d (99 = memcheck errors)\n%s", rc, err);
  cr_assert_null(strstr(err, "=="), "valgrind reported:\n%s", err);
  free(out);
  free(err);
}

Test(valgrind, queues_against_seeded_redis) {
  char job[256], url[128];
  double now = test_now();
  for (int i = 0; i < 50; i++) {
    char q[32];
    snprintf(q, sizeof(q), "q%02d", i);
    snprintf(job, sizeof(job), "{\"class\":\"W\",\"args\":[%d],\"enqueued_at\":%.6f}", i,
             now - i);
    test_push_job(&R, NULL, q, job);
  }
  test_push_job(&R, NULL, "broken", "not json");
  test_redis_cmd_free(&R, "SADD processes p1 gone");
  test_redis_cmd_free(&R, "HSET p1 busy 1 info {\"concurrency\":5}");
  snprintf(url, sizeof(url), "--redis-url=%s", R.url);
  const char *json[] = {"queues", "--json", url, NULL};
  memcheck(json, 0);
  const char *table[] = {"queues", url, NULL};
  memcheck(table, 0);
}

Test(valgrind, queues_with_redis_unreachable) {
  char url[128];
  snprintf(url, sizeof(url), "--redis-url=redis://127.0.0.1:%d/0", test_free_port());
  const char *args[] = {"queues", url, NULL};
  memcheck(args, 1);
}

/* ---- over rediss:// ------------------------------------------------ */

static test_certs_t C;

static void start_tls(void) {
  test_certs_make(&C);
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
}

static void stop_tls(void) {
  test_redis_stop(&R);
  test_certs_remove(&C);
}

TestSuite(valgrind_tls, .init = start_tls, .fini = stop_tls);

Test(valgrind_tls, queues_over_tls_verified_refused_and_unverified) {
  char job[256], url[128], ca[160];
  double now = test_now();
  for (int i = 0; i < 50; i++) {
    char q[32];
    snprintf(q, sizeof(q), "q%02d", i);
    snprintf(job, sizeof(job), "{\"class\":\"W\",\"args\":[%d],\"enqueued_at\":%.6f}", i,
             now - i);
    test_push_job(&R, NULL, q, job);
  }
  snprintf(url, sizeof(url), "--redis-url=%s", R.url);
  snprintf(ca, sizeof(ca), "--redis-tls-ca-file=%s", C.ca);
  const char *verified[] = {"queues", "--json", url, ca, NULL};
  memcheck(verified, 0);
  /* the system's store does not know the test CA: verification fails */
  const char *refused[] = {"queues", url, NULL};
  memcheck(refused, 1);
  const char *unverified[] = {"queues", url, "--redis-tls-verify=none", NULL};
  memcheck(unverified, 0);
}

/* ---- the end-to-end scenario ----------------------------------------- */

static fake_heroku_t H;
static void start_e2e(void) {
  test_redis_start(&R);
  fake_heroku_start(&H, "valgrind-token-0123", "worker=1");
}
static void stop_e2e(void) {
  fake_heroku_stop(&H);
  test_redis_stop(&R);
}
TestSuite(valgrind_e2e, .init = start_e2e, .fini = stop_e2e);

static int want_patches;
static bool patches_reached(void *arg) {
  (void)arg;
  return fake_heroku_count(&H, "PATCH") >= want_patches;
}

Test(valgrind_e2e, a_whole_event_supervising_a_child_then_sigterm) {
  char job[256], env_redis[128], env_api[128], env_sock[128], log_path[128];
  double t = test_now() - 30;
  snprintf(job, sizeof(job), "{\"class\":\"W\",\"args\":[1],\"enqueued_at\":%.6f}", t);
  test_push_job(&R, NULL, "default", job);
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_api, sizeof(env_api), "HEROKU_API_URL=%s", fake_heroku_url(&H));
  snprintf(env_sock, sizeof(env_sock), "SCALEKIQ_SOCKET=%s/agent.sock", R.dir);
  snprintf(log_path, sizeof(log_path), "%s/agent.log", R.dir);
  const char *env[] = {env_redis, env_api, env_sock,
                       "HEROKU_API_KEY=valgrind-token-0123",
                       "HEROKU_APP_NAME=" FAKE_HEROKU_APP,
                       "DYNO=worker.1",
                       "SCALEKIQ_POLL_INTERVAL=0.2",
                       "SCALEKIQ_ALERT_INTERVAL=0.5",
                       "SCALEKIQ_LATENCY_THRESHOLD=5",
                       "SCALEKIQ_MAX_ADDITIONAL_WORKERS=2",
                       NULL};
  const char *argv[] = {"/usr/bin/valgrind", "--quiet", "--error-exitcode=99",
                        "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                        "--show-leak-kinds=definite,indirect", SCALEKIQ_BIN, "run", "--",
                        "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done", NULL};
  pid_t agent = test_spawn(argv, env, log_path);
  want_patches = 2; /* 2, then 3 (the maximum) */
  cr_assert(test_wait_for(patches_reached, NULL, 60), "%s", test_read_file(log_path));
  test_redis_cmd_free(&R, "DEL queue:default");
  want_patches = 3; /* the restore to 1 */
  cr_assert(test_wait_for(patches_reached, NULL, 60), "%s", test_read_file(log_path));
  /* status through the control socket, under memcheck too */
  const char *status_argv[] = {SCALEKIQ_BIN, "status", "--json", NULL};
  const char *status_env[] = {env_sock, NULL};
  char *out, *err;
  cr_assert_eq(test_run(status_argv, status_env, 30, &out, &err), 0, "%s", err);
  free(out), free(err);
  int rc = test_stop(agent, SIGTERM, 60);
  char *log = test_read_file(log_path);
  cr_assert_eq(rc, 0, "exit %d (99 = memcheck errors)\n%s", rc, log);
  cr_assert_null(strstr(log, "=="), "valgrind reported:\n%s", log);
  free(log);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);
}
