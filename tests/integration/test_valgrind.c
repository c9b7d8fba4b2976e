/*
 * scalekiq queues under valgrind memcheck against a seeded Redis, plain
 * and over TLS: any invalid access, use of uninitialised memory or
 * definite leak fails.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
