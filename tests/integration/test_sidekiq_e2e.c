/*
 * End to end with the real thing: `scalekiq run -- sidekiq` with Debian's
 * Sidekiq as the child, working through real jobs pushed by Sidekiq's own
 * client, while the agent scales the fake formation up through the event
 * and back once the backlog is gone; then a SIGTERM ends both, Sidekiq
 * first, with Sidekiq's exit status.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_heroku.h"
#include "testutil.h"

#define TOKEN "e2e-token-0123456789"
#define JOBS 30

static test_redis_t R;
static fake_heroku_t H;
static pid_t agent;
static char log_path[128];

static void start(void) {
  test_redis_start(&R);
  fake_heroku_start(&H, TOKEN, "worker=1");
}

static void stop(void) {
  if (agent > 0) test_stop(agent, SIGKILL, 5);
  fake_heroku_stop(&H);
  test_redis_stop(&R);
}

TestSuite(sidekiq_e2e, .init = start, .fini = stop);

static long done_jobs(void) {
  char *v = test_redis_get(&R, "e2e:done");
  long n = v ? atol(v) : 0;
  free(v);
  return n;
}

static bool all_done(void *arg) {
  (void)arg;
  return done_jobs() == JOBS;
}

static bool restored(void *arg) {
  (void)arg;
  long qty[8];
  int n = fake_heroku_patches(&H, qty, NULL, 8);
  return n >= 3 && qty[n - 1] == 1;
}

static bool log_has(void *needle) {
  char *log = test_read_file(log_path);
  bool ok = strstr(log, needle) != NULL;
  free(log);
  return ok;
}

Test(sidekiq_e2e, real_sidekiq_as_the_child_while_the_formation_scales) {
  /* The backlog: JOBS jobs of 0.3 s for one Sidekiq thread, about 9 s of
   * work, so the oldest job's latency passes the 1 s threshold at once
   * and stays over it until the queue is empty. */
  const char *push[] = {"/usr/bin/ruby", SOURCE_DIR "/tests/integration/sidekiq_client.rb",
                        R.url, "push-slow", "default", "30", "0.3", NULL};
  char *out, *err;
  cr_assert_eq(test_run(push, NULL, 60, &out, &err), 0, "%s%s", out, err);
  free(out), free(err);

  char env_redis[128], env_sidekiq_redis[128], env_api[128], env_sock[128];
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_sidekiq_redis, sizeof(env_sidekiq_redis), "REDIS_URL=%s", R.url);
  snprintf(env_api, sizeof(env_api), "HEROKU_API_URL=%s", fake_heroku_url(&H));
  snprintf(env_sock, sizeof(env_sock), "SCALEKIQ_SOCKET=%s/agent.sock", R.dir);
  snprintf(log_path, sizeof(log_path), "%s/agent.log", R.dir);
  const char *env[] = {env_redis, env_sidekiq_redis, env_api, env_sock,
                       "HEROKU_API_KEY=" TOKEN,
                       "HEROKU_APP_NAME=" FAKE_HEROKU_APP,
                       "DYNO=worker.1",
                       "SCALEKIQ_POLL_INTERVAL=0.2",
                       "SCALEKIQ_ALERT_INTERVAL=0.5",
                       "SCALEKIQ_LATENCY_THRESHOLD=1",
                       "SCALEKIQ_MAX_ADDITIONAL_WORKERS=2",
                       "SCALEKIQ_REQUEST_TIMEOUT=2",
                       NULL};
  const char *argv[] = {SCALEKIQ_BIN, "run", "--", "/usr/bin/sidekiq", "-r",
                        SOURCE_DIR "/tests/integration/sidekiq_worker.rb",
                        "-c", "1", "-q", "default", "-t", "2", NULL};
  agent = test_spawn(argv, env, log_path);

  cr_assert(test_wait_for(all_done, NULL, 60), "Sidekiq did %ld of %d jobs", done_jobs(),
            JOBS);
  cr_assert(test_wait_for(restored, NULL, 30), "the formation was not restored");
  long qty[8], status[8];
  int n = fake_heroku_patches(&H, qty, status, 8);
  cr_assert_eq(n, 3, "PATCHes: %d (a step sent twice, skipped or lost)", n);
  cr_assert(qty[0] == 2 && qty[1] == 3 && qty[2] == 1, "PATCHed %ld, %ld, %ld", qty[0],
            qty[1], qty[2]);
  for (int i = 0; i < n; i++) cr_assert_eq(status[i], 200);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);
  /* Sidekiq's own log lines flow through the agent's output. */
  cr_assert(log_has("Booting Sidekiq"), "Sidekiq's log did not come through");

  cr_assert_eq(test_stop(agent, SIGTERM, 30), 0, "Sidekiq's exit status on TERM is 0");
  agent = 0;
  char *log = test_read_file(log_path);
  cr_assert(strstr(log, "Bye!"), "Sidekiq did not shut down cleanly:\n%s", log);
  const char *bye = strstr(log, "Bye!"), *exited = strstr(log, "event=child_exited");
  cr_assert(exited && exited > bye, "the agent saw the child exit before Sidekiq finished");
  free(log);
  cr_assert_eq(done_jobs(), JOBS, "a job ran twice");
}
