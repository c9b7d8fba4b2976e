/*
 * `scalekiq run -- CMD`: the agent beside a real child process (sh
 * scripts standing in for Sidekiq). Its exit status is the child's; a
 * signal to the agent reaches the child; leadership is handed over before
 * the child has finished; the agent never leaves before its child; and
 * nothing the agent lacks (Redis, settings) keeps the child from running.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define LEADER_KEY "amigo/autoscaler/leader"

static test_redis_t R;
static char dir[64];
static char env_redis[128], env_sock[128], log_path[128];
static pid_t agent;

static void start(void) {
  test_redis_start(&R);
  snprintf(dir, sizeof(dir), "%s", R.dir);
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_sock, sizeof(env_sock), "SCALEKIQ_SOCKET=%s/agent.sock", dir);
  snprintf(log_path, sizeof(log_path), "%s/agent.log", dir);
}

static void stop(void) {
  if (agent > 0) test_stop(agent, SIGKILL, 5);
  test_redis_stop(&R);
}

TestSuite(supervise, .init = start, .fini = stop);

/* A file under the test's folder. */
static const char *path_of(const char *name) {
  static char p[4][160];
  static int next;
  char *out = p[next++ % 4];
  snprintf(out, sizeof(p[0]), "%s/%s", dir, name);
  return out;
}

static bool exists(void *path) { return access(path, F_OK) == 0; }
static bool gone(void *path) { return access(path, F_OK) != 0; }

static void touch(const char *path) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "cannot create %s", path);
  fclose(f);
}

/* Starts `scalekiq run -- sh -c SCRIPT` in the background (dry run: no
 * Platform API needed), with extra env (may be NULL). */
static void agent_up(const char *script, const char *extra) {
  const char *env[] = {env_redis,           env_sock,
                       "DYNO=worker.1",     "SCALEKIQ_DRY_RUN=1",
                       "SCALEKIQ_POLL_INTERVAL=0.1",
                       "SCALEKIQ_LOCK_TTL=1",
                       "SCALEKIQ_LOCK_TICK=0.1",
                       "SCALEKIQ_REQUEST_TIMEOUT=1",
                       extra,               NULL};
  const char *argv[] = {SCALEKIQ_BIN, "run", "--", "sh", "-c", script, NULL};
  agent = test_spawn(argv, env, log_path);
}

/* The one-shot form: runs to the end and returns the exit status. */
static int run_child(const char *script, const char *extra, char **out, char **err) {
  const char *env[] = {env_redis, env_sock, "DYNO=worker.1", "SCALEKIQ_DRY_RUN=1",
                       extra, NULL};
  const char *argv[] = {SCALEKIQ_BIN, "run", "--", "sh", "-c", script, NULL};
  return test_run(argv, env, 30, out, err);
}

static bool agent_leads(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, LEADER_KEY);
  bool ok = v != NULL && strncmp(v, "worker.1:", 9) == 0;
  free(v);
  return ok;
}

static bool lock_free(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, LEADER_KEY);
  free(v);
  return v == NULL;
}

static bool log_has(void *needle) {
  char *log = test_read_file(log_path);
  bool ok = strstr(log, needle) != NULL;
  free(log);
  return ok;
}

static pid_t read_pid(const char *path) {
  char *s = test_read_file(path);
  pid_t pid = (pid_t)atol(s);
  free(s);
  return pid;
}

Test(supervise, exit_status_is_the_childs) {
  char *out, *err;
  cr_assert_eq(run_child("exit 0", NULL, &out, &err), 0, "%s%s", out, err);
  free(out), free(err);
  cr_assert_eq(run_child("exit 3", NULL, &out, &err), 3, "%s%s", out, err);
  cr_assert(strstr(out, "event=child_exited") && strstr(out, "exit=3"), "%s", out);
  free(out), free(err);
  /* killed by a signal: 128 + the signal, as a shell says it */
  cr_assert_eq(run_child("kill -USR1 $$", NULL, &out, &err), 128 + SIGUSR1, "%s%s", out,
               err);
  free(out), free(err);
}

Test(supervise, child_output_and_input_are_its_own) {
  char *out, *err;
  /* stdout and stderr flow through as they are; the child's SIGPIPE is
   * back to the default although the agent ignores its own */
  int rc = run_child("echo to-stdout; echo to-stderr >&2; "
                     "mask=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status); "
                     "echo sigign=$mask",
                     NULL, &out, &err);
  cr_assert_eq(rc, 0, "%s%s", out, err);
  cr_assert(strstr(out, "to-stdout\n"), "%s", out);
  cr_assert(strstr(err, "to-stderr\n"), "%s", err);
  const char *m = strstr(out, "sigign=");
  cr_assert_not_null(m, "%s", out);
  unsigned long long ign = strtoull(m + 7, NULL, 16);
  cr_assert_eq(ign & (1ULL << (SIGPIPE - 1)), 0, "SIGPIPE ignored in the child: %s", m);
  free(out), free(err);
}

Test(supervise, sigterm_reaches_the_child_and_the_lock_goes_first) {
  /* The child notes TERM, then takes its time (as Sidekiq finishing its
   * jobs does) until the test lets it exit with 7. */
  char script[512];
  snprintf(script, sizeof(script),
           "echo $$ > %s; trap 'touch %s' TERM; "
           "while [ ! -e %s ]; do sleep 0.05; done; exit 7",
           path_of("child.pid"), path_of("got-term"), path_of("finish"));
  agent_up(script, NULL);
  cr_assert(test_wait_for(agent_leads, NULL, 10), "the agent never led");
  cr_assert(test_wait_for(exists, (void *)path_of("child.pid"), 10));
  pid_t child = read_pid(path_of("child.pid"));

  kill(agent, SIGTERM); /* the agent only: the child learns it from the agent */
  cr_assert(test_wait_for(exists, (void *)path_of("got-term"), 10),
            "the child never got the SIGTERM");
  cr_assert(test_wait_for(lock_free, NULL, 10), "the lock was not released");
  cr_assert(test_alive(agent), "the agent left before its child");
  cr_assert_eq(kill(child, 0), 0, "the child should still be running");

  touch(path_of("finish"));
  cr_assert_eq(test_stop(agent, 0, 10), 7);
  agent = 0;
  char *log = test_read_file(log_path);
  cr_assert(strstr(log, "event=signal_forwarded signal=Terminated"), "%s", log);
  cr_assert(strstr(log, "event=leader_released"), "%s", log);
  free(log);
}

Test(supervise, a_child_that_ignores_sigterm_is_still_waited_for) {
  char script[512];
  snprintf(script, sizeof(script),
           "trap '' TERM; echo $$ > %s; while :; do sleep 0.05; done",
           path_of("child.pid"));
  agent_up(script, NULL);
  cr_assert(test_wait_for(agent_leads, NULL, 10), "the agent never led");
  cr_assert(test_wait_for(exists, (void *)path_of("child.pid"), 10));
  pid_t child = read_pid(path_of("child.pid"));

  kill(agent, SIGTERM);
  cr_assert(test_wait_for(lock_free, NULL, 10), "the lock was not released");
  /* Once the agent has closed everything of its own (its socket is gone),
   * it still waits for the child. */
  cr_assert(test_wait_for(gone, (void *)path_of("agent.sock"), 10),
            "the agent never closed its control socket");
  cr_assert(test_alive(agent), "the agent left before its child");
  cr_assert_eq(kill(child, 0), 0, "the child should still be running");
  /* The platform's SIGKILL, 30 s later, ends the child; the agent goes
   * with the child's status. */
  kill(child, SIGKILL);
  cr_assert_eq(test_stop(agent, 0, 10), 128 + SIGKILL);
  agent = 0;
  char *log = test_read_file(log_path);
  cr_assert(strstr(log, "event=leader_released"), "%s", log);
  free(log);
}

Test(supervise, child_exiting_releases_the_lock_then_the_agent_follows) {
  char script[512];
  snprintf(script, sizeof(script), "while [ ! -e %s ]; do sleep 0.05; done; exit 5",
           path_of("finish"));
  agent_up(script, NULL);
  cr_assert(test_wait_for(agent_leads, NULL, 10), "the agent never led");
  touch(path_of("finish"));
  cr_assert_eq(test_stop(agent, 0, 10), 5);
  agent = 0;
  cr_assert(lock_free(NULL), "the lock outlived the agent");
  char *log = test_read_file(log_path);
  cr_assert(strstr(log, "event=leader_released"), "%s", log);
  free(log);
}

Test(supervise, redis_down_the_child_runs_normally) {
  char url[96];
  snprintf(url, sizeof(url), "SCALEKIQ_REDIS_URL=redis://127.0.0.1:%d/0",
           test_free_port());
  char script[512];
  snprintf(script, sizeof(script),
           "echo started > %s; while [ ! -e %s ]; do sleep 0.05; done; echo done; exit 0",
           path_of("started"), path_of("finish"));
  const char *env[] = {url, env_sock, "DYNO=worker.1", "SCALEKIQ_DRY_RUN=1",
                       "SCALEKIQ_REQUEST_TIMEOUT=0.5", NULL};
  const char *argv[] = {SCALEKIQ_BIN, "run", "--", "sh", "-c", script, NULL};
  agent = test_spawn(argv, env, log_path);
  cr_assert(test_wait_for(exists, (void *)path_of("started"), 10), "the child never ran");
  cr_assert(test_wait_for(log_has, "event=redis_unavailable", 10),
            "the agent never said Redis is unavailable");
  cr_assert(test_alive(agent));
  touch(path_of("finish"));
  cr_assert_eq(test_stop(agent, 0, 10), 0);
  agent = 0;
  char *log = test_read_file(log_path);
  cr_assert(strstr(log, "\ndone\n"), "%s", log);
  free(log);
}

Test(supervise, bad_settings_turn_autoscaling_off_not_the_worker) {
  char *out, *err;
  int rc = run_child("echo worker-ran; exit 4", "SCALEKIQ_POLL_INTERVAL=abc", &out, &err);
  cr_assert_eq(rc, 4, "%s%s", out, err);
  cr_assert(strstr(out, "worker-ran"), "%s", out);
  cr_assert(strstr(out, "event=autoscaling_off") && strstr(out, "SCALEKIQ_POLL_INTERVAL"),
            "%s", out);
  free(out), free(err);
}

Test(supervise, a_command_that_cannot_start) {
  char *out, *err;
  const char *env[] = {env_redis, env_sock, "SCALEKIQ_DRY_RUN=1", NULL};
  const char *missing[] = {SCALEKIQ_BIN, "run", "--", "/nonexistent/sidekiq", NULL};
  cr_assert_eq(test_run(missing, env, 10, &out, &err), 127);
  cr_assert(strstr(err, "cannot start '/nonexistent/sidekiq'"), "%s", err);
  free(out), free(err);

  const char *nothing[] = {SCALEKIQ_BIN, "run", "--", NULL};
  cr_assert_eq(test_run(nothing, env, 10, &out, &err), 2);
  cr_assert(strstr(err, "nothing to run after '--'"), "%s", err);
  free(out), free(err);

  const char *stray[] = {SCALEKIQ_BIN, "run", "sidekiq", NULL};
  cr_assert_eq(test_run(stray, env, 10, &out, &err), 2);
  cr_assert(strstr(err, "scalekiq run -- sidekiq"), "%s", err);
  free(out), free(err);
}
