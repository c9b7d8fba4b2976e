/*
 * Many dynos, one actor: several `scalekiq run` processes against one
 * redis-server and one fake Platform API. Whoever leads, each formation
 * change reaches the API exactly once and in order, an event survives the
 * death of its leader, and an agent that was frozen past its lease neither
 * changes the formation nor writes state until it wins the lock again.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_heroku.h"
#include "testutil.h"

#define TOKEN "dynos-token-0123456789"
#define NS "amigo/autoscaler"
#define INITIAL_KEY "amigo/autoscaler/heroku/worker/active_event_initial_workers"
#define MAX_AGENTS 5

static test_redis_t R;
static fake_heroku_t H;
static pid_t agents[MAX_AGENTS];
static char logs[MAX_AGENTS][160];
static char env_redis[128], env_api[128], env_dyno[MAX_AGENTS][32];
static char env_sock[MAX_AGENTS][128];

static void start(void) {
  test_redis_start(&R);
  fake_heroku_start(&H, TOKEN, "worker=1");
}

static void stop(void) {
  for (int i = 0; i < MAX_AGENTS; i++)
    if (agents[i] > 0) test_stop(agents[i], SIGKILL, 5);
  fake_heroku_stop(&H);
  test_redis_stop(&R);
}

TestSuite(dynos, .init = start, .fini = stop);

static void agent_up(int i) {
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_api, sizeof(env_api), "HEROKU_API_URL=%s", fake_heroku_url(&H));
  snprintf(env_dyno[i], sizeof(env_dyno[i]), "DYNO=worker.%d", i + 1);
  snprintf(logs[i], sizeof(logs[i]), "%s/agent%d.log", R.dir, i + 1);
  snprintf(env_sock[i], sizeof(env_sock[i]), "SCALEKIQ_SOCKET=%s/agent%d.sock", R.dir, i + 1);
  const char *env[] = {env_redis,
                       env_sock[i],
                       env_api,
                       env_dyno[i],
                       "HEROKU_API_KEY=" TOKEN,
                       "HEROKU_APP_NAME=" FAKE_HEROKU_APP,
                       "SCALEKIQ_POLL_INTERVAL=0.1",
                       "SCALEKIQ_ALERT_INTERVAL=0.4",
                       "SCALEKIQ_LATENCY_THRESHOLD=5",
                       "SCALEKIQ_MAX_ADDITIONAL_WORKERS=2",
                       "SCALEKIQ_LOCK_TTL=0.9",
                       "SCALEKIQ_LOCK_TICK=0.15",
                       "SCALEKIQ_REQUEST_TIMEOUT=2",
                       NULL};
  const char *argv[] = {SCALEKIQ_BIN, "run", NULL};
  agents[i] = test_spawn(argv, env, logs[i]);
}

static void push_old_job(void) {
  char job[256];
  double t = test_now() - 30;
  snprintf(job, sizeof(job),
           "{\"class\":\"HardWorker\",\"args\":[1],\"queue\":\"default\",\"jid\":"
           "\"0123456789abcdef01234567\",\"created_at\":%.6f,\"enqueued_at\":%.6f}",
           t, t);
  test_push_job(&R, NULL, "default", job);
}

/* The index of the agent whose dyno holds the lock, or -1. */
static int leader_index(void) {
  char *v = test_redis_get(&R, NS "/leader");
  int idx = -1;
  if (v && strncmp(v, "worker.", 7) == 0) idx = atoi(v + 7) - 1;
  free(v);
  return idx;
}

static int not_this;
static bool someone_else_leads(void *arg) {
  (void)arg;
  int i = leader_index();
  return i >= 0 && i != not_this;
}
static bool anyone_leads(void *arg) {
  (void)arg;
  return leader_index() >= 0;
}

static int want;
static bool patches_at_least(void *arg) {
  (void)arg;
  return fake_heroku_count(&H, "PATCH") >= want;
}
static void wait_patches(int n, double timeout) {
  want = n;
  cr_assert(test_wait_for(patches_at_least, NULL, timeout), "expected %d PATCHes, got %d", n,
            fake_heroku_count(&H, "PATCH"));
}

static long want_depth;
static bool depth_at_least(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, NS "/depth");
  bool ok = v && atol(v) >= want_depth;
  free(v);
  return ok;
}
static bool depth_zero(void *arg) {
  (void)arg;
  char *v = test_redis_get(&R, NS "/depth");
  bool ok = v && strcmp(v, "0") == 0;
  free(v);
  return ok;
}

/* 2, 3, then the restore to 1: each exactly once, in order. */
static void assert_one_clean_event(void) {
  long qty[16];
  int n = fake_heroku_patches(&H, qty, NULL, 16);
  cr_assert_eq(n, 3, "PATCHes: %d (a change was sent twice, or lost)", n);
  cr_assert_eq(qty[0], 2);
  cr_assert_eq(qty[1], 3);
  cr_assert_eq(qty[2], 1);
  int initial_reads = 0;
  for (int i = 0; i < MAX_AGENTS; i++) {
    if (logs[i][0] == '\0') continue;
    char *log = test_read_file(logs[i]);
    for (const char *p = log; (p = strstr(p, "event=initial_workers")) != NULL; p++)
      initial_reads++;
    free(log);
  }
  cr_assert_eq(initial_reads, 1, "initial workers read %d times", initial_reads);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), 1);
}

/* The first step is done and recorded: PATCH 2 sent, depth 1 stored. (A
 * leader killed between its PATCH and its state write is the fault
 * suite's business.) */
static void wait_first_step(void) {
  wait_patches(1, 10);
  want_depth = 1;
  cr_assert(test_wait_for(depth_at_least, NULL, 10), "depth 1 never recorded");
}

static void finish_event(void) {
  want_depth = 4; /* past the maximum: nothing more is sent */
  cr_assert(test_wait_for(depth_at_least, NULL, 15));
  test_redis_cmd_free(&R, "DEL queue:default");
  wait_patches(3, 15);
  cr_assert(test_wait_for(depth_zero, NULL, 10));
}

Test(dynos, three_agents_one_event_each_change_once) {
  for (int i = 0; i < 3; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  push_old_job();
  finish_event();
  assert_one_clean_event();
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(test_stop(agents[i], SIGTERM, 10), 0, "agent %d exit", i + 1);
    agents[i] = 0;
  }
  cr_assert_null(test_redis_get(&R, NS "/leader"), "the lock outlived the agents");
}

Test(dynos, kill_9_of_the_leader_mid_event) {
  for (int i = 0; i < 3; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  push_old_job();
  wait_first_step();
  int l = leader_index();
  cr_assert_geq(l, 0);
  char *initial = test_redis_get(&R, INITIAL_KEY);
  cr_assert_str_eq(initial, "1");
  free(initial);
  cr_assert_eq(test_stop(agents[l], SIGKILL, 5), 128 + SIGKILL);
  agents[l] = 0;
  not_this = l;
  cr_assert(test_wait_for(someone_else_leads, NULL, 10), "no new leader");
  finish_event();
  assert_one_clean_event();
}

Test(dynos, sigterm_hands_leadership_over) {
  for (int i = 0; i < 3; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  int l = leader_index();
  cr_assert_eq(test_stop(agents[l], SIGTERM, 10), 0);
  agents[l] = 0;
  not_this = l;
  cr_assert(test_wait_for(someone_else_leads, NULL, 5), "no follower took over");
  char *log = test_read_file(logs[l]);
  cr_assert_not_null(strstr(log, "event=leader_released"), "%s", log);
  free(log);
}

Test(dynos, frozen_leader_past_its_lease_does_nothing_when_it_wakes) {
  for (int i = 0; i < 3; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  push_old_job();
  wait_first_step();
  int l = leader_index();
  kill(agents[l], SIGSTOP);
  not_this = l;
  cr_assert(test_wait_for(someone_else_leads, NULL, 10), "no takeover");
  want_depth = 3;
  cr_assert(test_wait_for(depth_at_least, NULL, 15));
  kill(agents[l], SIGCONT);
  finish_event();
  assert_one_clean_event();
  char *log = test_read_file(logs[l]);
  cr_assert_not_null(strstr(log, "event=leader_lost"), "the frozen agent never noticed:\n%s",
                     log);
  free(log);
}

Test(dynos, redis_restart_mid_event) {
  for (int i = 0; i < 3; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  push_old_job();
  wait_first_step();
  /* an empty Redis after the restart would end the event: keep the data */
  test_redis_cmd_free(&R, "SAVE");
  test_redis_kill(&R);
  test_redis_restart(&R);
  char *depth = test_redis_get(&R, NS "/depth");
  cr_assert_str_eq(depth, "1", "the restart lost the event's state");
  free(depth);
  cr_assert(test_wait_for(anyone_leads, NULL, 10), "nobody leads after the restart");
  finish_event();
  assert_one_clean_event();
}

/* ---- the control socket ------------------------------------------- */

static int cli(int i, const char *command, const char *flag, char **out) {
  char sock[160];
  snprintf(sock, sizeof(sock), "%s", env_sock[i]);
  const char *env[] = {sock, NULL};
  const char *argv[] = {SCALEKIQ_BIN, command, flag, NULL};
  char *err;
  int rc = test_run(argv, env, 20, out, &err);
  free(err);
  return rc;
}

static cJSON *status_of(int i) {
  char *out;
  cr_assert_eq(cli(i, "status", "--json", &out), 0, "status of agent %d failed", i + 1);
  cJSON *j = cJSON_Parse(out);
  cr_assert(cJSON_IsObject(j), "not JSON: %s", out);
  free(out);
  return j;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  cr_assert(cJSON_IsString(v), "field %s missing or not a string", k);
  return v->valuestring;
}

static const char *needle_log;
static int needle_agent;
static bool agent_log_has(void *arg) {
  (void)arg;
  char *log = test_read_file(logs[needle_agent]);
  bool ok = strstr(log, needle_log) != NULL;
  free(log);
  return ok;
}

/* Checks text against the Prometheus exposition format: HELP and TYPE
 * lines, then samples `name{label="value",...} number`, each sample's
 * family declared before it. Returns the value of `sample` (exact text
 * before the value), or NAN when absent. */
static double prometheus_check(const char *text, const char *sample) {
  char typed[64][64];
  int ntyped = 0;
  double found = NAN;
  char *copy = strdup(text), *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "# HELP ", 7) == 0) continue;
    if (strncmp(line, "# TYPE ", 7) == 0) {
      char name[64], type[32];
      cr_assert_eq(sscanf(line + 7, "%63s %31s", name, type), 2, "bad TYPE: %s", line);
      cr_assert(strcmp(type, "gauge") == 0 || strcmp(type, "counter") == 0, "%s", line);
      cr_assert_lt(ntyped, 64);
      snprintf(typed[ntyped++], 64, "%s", name);
      continue;
    }
    cr_assert_neq(line[0], '#', "unknown comment: %s", line);
    size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
    cr_assert_gt(n, 0, "no metric name: %s", line);
    int declared = 0;
    for (int i = 0; i < ntyped; i++)
      declared |= strlen(typed[i]) == n && strncmp(typed[i], line, n) == 0;
    cr_assert(declared, "sample before its TYPE: %s", line);
    char *p = line + n;
    if (*p == '{') {
      p++;
      while (*p != '}') {
        size_t ln = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
        cr_assert(ln > 0 && p[ln] == '=' && p[ln + 1] == '"', "bad label: %s", line);
        p += ln + 2;
        while (*p && *p != '"') p += (*p == '\\') ? 2 : 1;
        cr_assert_eq(*p, '"', "unterminated label value: %s", line);
        p++;
        if (*p == ',') p++;
        else cr_assert_eq(*p, '}', "bad label list: %s", line);
      }
      p++;
    }
    cr_assert_eq(*p, ' ', "no space before the value: %s", line);
    char *end;
    double v = strtod(p + 1, &end);
    cr_assert(end != p + 1 && *end == '\0', "bad value: %s", line);
    if (strncmp(line, sample, strlen(sample)) == 0 && line[strlen(sample)] == ' ') found = v;
  }
  free(copy);
  return found;
}

Test(dynos, status_pause_resume_and_step_down_through_the_socket) {
  for (int i = 0; i < 2; i++) agent_up(i);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  int l = leader_index(), f = 1 - l;

  cJSON *s = status_of(l);
  cr_assert_str_eq(jstr(s, "role"), "leader");
  cr_assert_eq((pid_t)cJSON_GetObjectItem(s, "pid")->valuedouble, agents[l]);
  char dyno[32];
  snprintf(dyno, sizeof(dyno), "worker.%d", l + 1);
  cr_assert_str_eq(jstr(s, "identity"), dyno);
  cr_assert_str_not_empty(jstr(s, "version"));
  cr_assert_str_eq(jstr(s, "leader"), jstr(s, "id"));
  cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(s, "paused")));
  cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(s, "dry_run")));
  const cJSON *redis = cJSON_GetObjectItem(s, "redis");
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(redis, "connected")));
  cr_assert_str_eq(jstr(redis, "url"), R.url);
  const cJSON *ev = cJSON_GetObjectItem(s, "event");
  cr_assert(cJSON_IsObject(ev));
  cr_assert_not_null(cJSON_GetObjectItem(ev, "depth"));
  cr_assert_not_null(cJSON_GetObjectItem(ev, "started_at"));
  cr_assert_not_null(cJSON_GetObjectItem(ev, "last_alerted_at"));
  cr_assert_not_null(cJSON_GetObjectItem(ev, "initial_workers"));
  cr_assert(cJSON_IsArray(cJSON_GetObjectItem(s, "queues")));
  cr_assert_not_null(cJSON_GetObjectItem(s, "pool_usage"));
  cr_assert_not_null(cJSON_GetObjectItem(s, "last_action"));
  char leader_id[200];
  snprintf(leader_id, sizeof(leader_id), "%s", jstr(s, "id"));
  cJSON_Delete(s);

  s = status_of(f);
  cr_assert_str_eq(jstr(s, "role"), "follower");
  cr_assert_str_eq(jstr(s, "leader"), leader_id, "the follower does not know who leads");
  cJSON_Delete(s);

  /* paused through the follower: it holds for the leader, via Redis */
  char *out;
  cr_assert_eq(cli(f, "pause", NULL, &out), 0, "%s", out);
  free(out);
  push_old_job();
  needle_agent = l;
  needle_log = "event=action_paused";
  cr_assert(test_wait_for(agent_log_has, NULL, 10), "the leader never held back");
  s = status_of(l);
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(s, "paused")));
  cJSON_Delete(s);

  /* a step-down moves leadership, and the pause holds for the new leader */
  cr_assert_eq(cli(l, "step-down", NULL, &out), 0, "%s", out);
  free(out);
  not_this = l;
  cr_assert(test_wait_for(someone_else_leads, NULL, 10), "leadership did not move");
  s = status_of(f);
  cr_assert_str_eq(jstr(s, "role"), "leader");
  cJSON_Delete(s);
  needle_agent = f;
  cr_assert(test_wait_for(agent_log_has, NULL, 10), "the new leader did not hold back");
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), 0, "a formation change while paused");

  cr_assert_eq(cli(l, "resume", NULL, &out), 0, "%s", out);
  free(out);
  wait_patches(1, 10);
  want_depth = 1;
  cr_assert(test_wait_for(depth_at_least, NULL, 10));

  /* status agrees with what the Platform API saw */
  s = status_of(f);
  const cJSON *act = cJSON_GetObjectItem(s, "last_action");
  cr_assert(cJSON_IsObject(act), "no last_action after a scale-up");
  cr_assert_str_eq(jstr(act, "result"), "scaled");
  cr_assert_eq(cJSON_GetObjectItem(act, "from")->valuedouble, 1);
  cr_assert_eq(cJSON_GetObjectItem(act, "to")->valuedouble, fake_heroku_quantity(&H, "worker"));
  ev = cJSON_GetObjectItem(s, "event");
  cr_assert_eq(cJSON_GetObjectItem(ev, "depth")->valuedouble, 1);
  cr_assert_eq(cJSON_GetObjectItem(ev, "initial_workers")->valuedouble, 1);
  cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(s, "paused")));
  cr_assert_eq(cJSON_GetObjectItem(s, "workers")->valuedouble,
               fake_heroku_quantity(&H, "worker"));
  cJSON_Delete(s);
  cr_assert_eq(cli(f, "status", NULL, &out), 0);
  cr_assert_not_null(strstr(out, "high      default"), "the high queue is not shown: %s", out);
  cr_assert_not_null(strstr(out, "workers   2 worker"), "%s", out);
  free(out);

  cr_assert_eq(cli(f, "metrics", NULL, &out), 0, "%s", out);
  cr_assert_eq(prometheus_check(out, "scalekiq_is_leader"), 1, "%s", out);
  cr_assert_eq(prometheus_check(out, "scalekiq_redis_up"), 1);
  cr_assert_eq(prometheus_check(out, "scalekiq_scale_actions_total{result=\"scaled\"}"), 1);
  cr_assert_geq(prometheus_check(out, "scalekiq_queue_latency_seconds{queue=\"default\"}"), 5);
  cr_assert_eq(prometheus_check(out, "scalekiq_queue_size{queue=\"default\"}"), 1);
  cr_assert_geq(prometheus_check(out, "scalekiq_event_depth"), 1);
  cr_assert(!isnan(prometheus_check(out, "scalekiq_pool_usage")));
  cr_assert(!isnan(prometheus_check(out, "scalekiq_poll_duration_seconds")));
  free(out);
  cr_assert_eq(cli(l, "metrics", NULL, &out), 0, "%s", out);
  cr_assert_eq(prometheus_check(out, "scalekiq_is_leader"), 0, "%s", out);
  free(out);

  /* the human summary, and no agent at all */
  cr_assert_eq(cli(f, "status", NULL, &out), 0);
  cr_assert_not_null(strstr(out, "role      leader"), "%s", out);
  free(out);
  test_stop(agents[f], SIGTERM, 10);
  agents[f] = 0;
  char *err;
  const char *env[] = {env_sock[f], NULL};
  const char *argv[] = {SCALEKIQ_BIN, "status", NULL};
  cr_assert_eq(test_run(argv, env, 20, &out, &err), 1);
  cr_assert_not_null(strstr(err, "agent"), "%s", err);
  free(out);
  free(err);
}

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  long kib = -1;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
  fclose(f);
  return kib;
}

static int sock_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  cr_assert_lt(strlen(path), sizeof(a.sun_path));
  memcpy(a.sun_path, path, strlen(path) + 1);
  cr_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect %s: %s", path,
            strerror(errno));
  return fd;
}

Test(dynos, socket_abuse_costs_the_agent_nothing) {
  agent_up(0);
  cr_assert(test_wait_for(anyone_leads, NULL, 10));
  const char *path = env_sock[0] + strlen("SCALEKIQ_SOCKET=");
  cJSON *s = status_of(0);
  double polls0 = cJSON_GetObjectItem(s, "polls")->valuedouble;
  cJSON_Delete(s);
  long rss0 = rss_kib(agents[0]);
  double t0 = test_now();

  int silent[4];
  for (int i = 0; i < 4; i++) silent[i] = sock_connect(path); /* say nothing */
  for (int i = 0; i < 1000; i++) close(sock_connect(path));
  char big[10000];
  memset(big, 'x', sizeof(big));
  for (int i = 0; i < 20; i++) {
    int fd = sock_connect(path);
    if (i % 2) (void)!write(fd, big, sizeof(big));
    else (void)!write(fd, "\x01\x02 garbage \xff\n", 13);
    close(fd);
  }
  for (int i = 0; i < 4; i++) { /* ask, never read */
    int fd = sock_connect(path);
    (void)!write(fd, "metrics\n", 8);
    silent[i] = silent[i] >= 0 ? (close(silent[i]), fd) : fd;
  }

  /* the silent ones stay connected a while: the agent must poll on */
  struct timespec hold = {1, 0};
  nanosleep(&hold, NULL);

  /* every later status answers, and the agent went on polling */
  s = status_of(0);
  double polls1 = cJSON_GetObjectItem(s, "polls")->valuedouble;
  cJSON_Delete(s);
  double elapsed = test_now() - t0;
  for (int i = 0; i < 4; i++) close(silent[i]);
  cr_assert(test_alive(agents[0]));
  /* lenient on purpose (the machine may be busy): polls did not stall */
  cr_assert_geq(polls1 - polls0, elapsed / 0.1 * 0.3, "%.0f polls in %.2f s", polls1 - polls0,
                elapsed);
#ifndef __SANITIZE_ADDRESS__ /* ASan's quarantine holds freed memory back */
  long rss1 = rss_kib(agents[0]);
  cr_assert_lt(rss1 - rss0, 2048, "RSS grew from %ld to %ld KiB", rss0, rss1);
#else
  (void)rss0;
#endif
}
