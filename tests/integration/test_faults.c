/*
 * The fault suite: several `scalekiq run` agents against a real
 * redis-server and the fake Platform API, with one fault injected in the
 * middle of a latency event -- Redis killed, unreachable or slow; the API
 * failing, rate-limiting, stalling, cutting replies short or answering
 * garbage; the leader killed at the two worst moments; a wall clock 30 s
 * off; the shared state overwritten with nonsense.
 *
 * Every case ends with the same check, check_event(): no formation change
 * is lost or applied twice (the changes the fake applied are exactly
 * W0+1 .. W0+MAX_ADD, then W0), none was sent by an agent that was not
 * the leader, and the event ends with the original count restored and the
 * shared state cleared. The agents run with sub-second settings, so an
 * outage "for a minute" is a few seconds here: each case says what it
 * stands for.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <glob.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_heroku.h"
#include "testutil.h"

#define TOKEN "faults-token-0123456789"
#define NS "amigo/autoscaler"
#define INITIAL_KEY NS "/heroku/worker/active_event_initial_workers"
#define W0 2      /* the formation's quantity before every event */
#define MAX_ADD 2 /* SCALEKIQ_MAX_ADDITIONAL_WORKERS */
#define TTL 1.2   /* SCALEKIQ_LOCK_TTL */
#define NAG 3

typedef struct agent {
  pid_t pid;
  char log[160]; /* stamped: every line starts with t=SECONDS */
  char env_dyno[32], env_sock[160];
} agent_t;

static test_redis_t R;
static fake_heroku_t H;
static agent_t A[NAG];
static char env_redis[128], env_api[128];

static char *diag(void);

static void start(void) {
  memset(A, 0, sizeof(A));
  R.aof = true; /* a killed redis-server comes back with its data */
  test_redis_start(&R);
  fake_heroku_start(&H, TOKEN, "worker=2");
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0);
}

static void stop(void) {
  for (int i = 0; i < NAG; i++)
    if (A[i].pid > 0) test_stop(A[i].pid, SIGKILL, 5);
  fake_heroku_stop(&H);
  test_redis_stop(&R);
}

TestSuite(faults, .init = start, .fini = stop);

/* ---- the agents ------------------------------------------------------ */

/* Agent i is DYNO=worker.(i+1): its lock id starts with that, and so does
 * the identity in its User-Agent ("scalekiq/V (worker.2)"). extra: more
 * variables, which win over the defaults. */
static void agent_up(int i, const char *const *extra) {
  agent_t *a = &A[i];
  snprintf(env_redis, sizeof(env_redis), "SCALEKIQ_REDIS_URL=%s", R.url);
  snprintf(env_api, sizeof(env_api), "HEROKU_API_URL=%s", fake_heroku_url(&H));
  snprintf(a->env_dyno, sizeof(a->env_dyno), "DYNO=worker.%d", i + 1);
  snprintf(a->env_sock, sizeof(a->env_sock), "SCALEKIQ_SOCKET=%s/agent%d.sock", R.dir, i + 1);
  snprintf(a->log, sizeof(a->log), "%s/agent%d.log", R.dir, i + 1);
  const char *env[32] = {env_redis,
                         env_api,
                         a->env_dyno,
                         a->env_sock,
                         "HEROKU_API_KEY=" TOKEN,
                         "HEROKU_APP_NAME=" FAKE_HEROKU_APP,
                         "SCALEKIQ_POLL_INTERVAL=0.1",
                         "SCALEKIQ_ALERT_INTERVAL=0.4",
                         "SCALEKIQ_LATENCY_THRESHOLD=5",
                         "SCALEKIQ_MAX_ADDITIONAL_WORKERS=2",
                         "SCALEKIQ_LOCK_TTL=1.2",
                         "SCALEKIQ_LOCK_TICK=0.2",
                         "SCALEKIQ_REQUEST_TIMEOUT=1",
                         NULL};
  int n = 13;
  for (int k = 0; extra && extra[k] && n < 31; k++) env[n++] = extra[k];
  env[n] = NULL;
  const char *argv[] = {SCALEKIQ_BIN, "run", NULL};
  a->pid = test_spawn_stamped(argv, env, a->log);
}

/* The index of the agent whose id is in N/leader, or -1. */
static int leader_index(void) {
  char *v = test_redis_get(&R, NS "/leader");
  int i = -1;
  if (v && strncmp(v, "worker.", 7) == 0) i = atoi(v + 7) - 1;
  free(v);
  return i;
}

static bool leader_is_not(void *arg) {
  int i = leader_index();
  return i >= 0 && i != *(int *)arg;
}

static int wait_leader_other_than(int old, double timeout) {
  cr_assert(test_wait_for(leader_is_not, &old, timeout),
            "no agent took the lead (worker.%d excluded)%s", old + 1, diag());
  return leader_index();
}

static void fleet_up(int n) {
  for (int i = 0; i < n; i++) agent_up(i, NULL);
  wait_leader_other_than(-1, 10);
}

typedef struct needle {
  int agent; /* -1: any agent's log */
  const char *text;
  int more_than; /* occurrences wanted beyond this many */
} needle_t;

static int count_in_logs(int agent, const char *text) {
  int n = 0;
  for (int i = 0; i < NAG; i++) {
    if ((agent >= 0 && i != agent) || A[i].log[0] == '\0') continue;
    char *log = test_read_file(A[i].log);
    for (char *p = log; (p = strstr(p, text)) != NULL; p++) n++;
    free(log);
  }
  return n;
}

static bool log_has(void *arg) {
  const needle_t *nd = arg;
  return count_in_logs(nd->agent, nd->text) > nd->more_than;
}

static void add(char *out, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *out, size_t cap, size_t *len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out + *len, cap - *len, fmt, ap);
  va_end(ap);
  if (n > 0) *len = *len + (size_t)n < cap ? *len + (size_t)n : cap - 1;
}

/* The API requests and the end of every agent's log, for failure
 * messages (one buffer, overwritten by each call). */
static char *diag(void) {
  static char out[64 * 1024];
  size_t len = 0;
  out[0] = '\0';
  cJSON *reqs = fake_heroku_requests(&H);
  const cJSON *r;
  add(out, sizeof(out), &len, "\nAPI requests:\n");
  cJSON_ArrayForEach(r, reqs) {
    const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "body"), "quantity");
    const cJSON *ua = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "headers"), "user-agent");
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(r, "method"));
    add(out, sizeof(out), &len, "  #%d t=%.3f %s qty=%ld status=%d applied=%d injected=%d %s\n",
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "seq")),
        cJSON_GetNumberValue(cJSON_GetObjectItem(r, "time")), m ? m : "?",
        cJSON_IsNumber(q) ? (long)q->valuedouble : -1L,
        (int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "status")),
        cJSON_IsTrue(cJSON_GetObjectItem(r, "applied")),
        cJSON_IsTrue(cJSON_GetObjectItem(r, "injected")),
        cJSON_IsString(ua) ? ua->valuestring : "?");
  }
  cJSON_Delete(reqs);
  for (int i = 0; i < NAG; i++) {
    if (A[i].log[0] == '\0') continue;
    char *log = test_read_file(A[i].log);
    size_t l = strlen(log), tail = 6000;
    add(out, sizeof(out), &len, "agent %d (worker.%d):\n%s\n", i + 1, i + 1,
        l > tail ? log + l - tail : log);
    free(log);
  }
  return out;
}

/* Waits for text in an agent's log (-1: any), beyond `before` times. */
static void wait_log_more(int agent, const char *text, int before, double timeout) {
  needle_t nd = {agent, text, before};
  char who[32] = "any agent";
  if (agent >= 0) snprintf(who, sizeof(who), "worker.%d", agent + 1);
  cr_assert(test_wait_for(log_has, &nd, timeout), "no (new) \"%s\" in the log of %s%s", text,
            who, diag());
}

static void wait_log(int agent, const char *text, double timeout) {
  wait_log_more(agent, text, 0, timeout);
}

/* ---- the event ------------------------------------------------------- */

static void push_old_job(double age) {
  char job[256];
  double t = test_now() - age;
  snprintf(job, sizeof(job),
           "{\"class\":\"HardWorker\",\"args\":[1],\"queue\":\"default\",\"jid\":"
           "\"0123456789abcdef01234567\",\"created_at\":%.6f,\"enqueued_at\":%.6f}",
           t, t);
  test_push_job(&R, NULL, "default", job);
}

static long depth_now(void) {
  char *v = test_redis_get(&R, NS "/depth");
  char *end = NULL;
  long d = v ? strtol(v, &end, 10) : -1;
  if (v && (end == v || *end != '\0')) d = -1;
  free(v);
  return d;
}

static bool depth_at_least(void *arg) { return depth_now() >= *(long *)arg; }

static void wait_depth(long d, double timeout) {
  cr_assert(test_wait_for(depth_at_least, &d, timeout), "depth never reached %ld%s", d,
            diag());
}

/* Step 1 is done and recorded: formation W0+1, depth 1 in Redis. */
static void wait_first_step(void) {
  wait_depth(1, 15);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0 + 1, "%s", diag());
}

static bool restored(void *arg) {
  (void)arg;
  char *initial = test_redis_get(&R, INITIAL_KEY);
  bool ok = initial == NULL && depth_now() == 0 && fake_heroku_quantity(&H, "worker") == W0;
  free(initial);
  return ok;
}

/* ---- the invariants -------------------------------------------------- */

typedef struct election {
  double t; /* when its leader_elected line was read (>= when it happened) */
  long long token;
  int agent;
} election_t;

#define MAX_ELECTIONS 256

static int read_elections(election_t *out) {
  int n = 0;
  for (int i = 0; i < NAG; i++) {
    if (A[i].log[0] == '\0') continue;
    char *text = test_read_file(A[i].log);
    for (char *line = text; line && *line;) {
      char *nl = strchr(line, '\n');
      if (nl) *nl = '\0';
      const char *tok = strstr(line, " token=");
      double t;
      if (strstr(line, " event=leader_elected ") && tok && n < MAX_ELECTIONS &&
          sscanf(line, "t=%lf", &t) == 1)
        out[n++] = (election_t){t, atoll(tok + 7), i};
      line = nl ? nl + 1 : NULL;
    }
    free(text);
  }
  return n;
}

/* The agent in "scalekiq/V (worker.N)", or -1. */
static int sender_of(const cJSON *req) {
  const cJSON *ua = cJSON_GetObjectItem(cJSON_GetObjectItem(req, "headers"), "user-agent");
  const char *p = cJSON_IsString(ua) ? strstr(ua->valuestring, "(worker.") : NULL;
  int i = p ? atoi(p + 8) - 1 : -1;
  return i >= 0 && i < NAG ? i : -1;
}

static bool is_patch(const cJSON *r) {
  const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(r, "method"));
  return m && strcmp(m, "PATCH") == 0;
}

static long quantity_of(const cJSON *r) {
  const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "body"), "quantity");
  return cJSON_IsNumber(q) ? (long)q->valuedouble : -1;
}

/*
 * "None sent by a non-leader". Fence tokens order the elections exactly
 * (each win increments N/fence; every case keeps Redis's data), and each
 * agent's stamped log says when each of its elections had happened at the
 * latest. A PATCH that reached the fake at time t must come from the
 * newest leader known to have been elected by t -- or from an agent
 * whose own, newer election was not stamped yet (its line is read a
 * moment after it is written: STAMP_LAG allows for that, generously). An
 * agent still sending after a newer leader was elected -- a frozen leader
 * waking up, a leader whose lease ran out while Redis was away -- fails
 * this, whether or not the new leader has sent anything yet. Only a send
 * within STAMP_LAG of a new election could slip through.
 * Returns NULL, or what is wrong.
 */
#define STAMP_LAG 0.5 /* s */
static const char *non_leader_patch(const cJSON *reqs, const election_t *el, int n) {
  static char why[256];
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    if (!is_patch(r)) continue;
    int s = sender_of(r);
    double t = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "time"));
    int seq = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "seq"));
    if (s < 0) {
      snprintf(why, sizeof(why), "PATCH #%d carries no agent identity", seq);
      return why;
    }
    const election_t *newest = NULL;
    for (int k = 0; k < n; k++)
      if (el[k].t <= t && (newest == NULL || el[k].token > newest->token)) newest = &el[k];
    bool own_newer = false;
    for (int k = 0; k < n; k++)
      if (el[k].agent == s && el[k].t <= t + STAMP_LAG &&
          (newest == NULL || el[k].token > newest->token))
        own_newer = true;
    if ((newest && newest->agent == s) || own_newer) continue;
    snprintf(why, sizeof(why),
             "PATCH #%d (quantity %ld, t=%.3f) came from worker.%d, but the newest leader "
             "then was worker.%d (token %lld, elected by t=%.3f)",
             seq, quantity_of(r), t, s + 1, newest ? newest->agent + 1 : 0,
             newest ? newest->token : -1, newest ? newest->t : 0.0);
    return why;
  }
  return NULL;
}

/* "None lost, none twice": the changes that took effect at the fake (a
 * 200, or an injected failure that applied the change first) are exactly
 * W0+1, W0+2, ..., W0+MAX_ADD, then W0 -- never the same target twice in
 * a row, never a step skipped, never above the maximum. Returns NULL, or
 * what is wrong; partial: so far (an event still going on may be short of
 * changes, not wrong). */
static const char *bad_sequence(const cJSON *reqs, bool partial) {
  static char why[128];
  long applied[64];
  int n = 0;
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    if (!is_patch(r) || !cJSON_IsTrue(cJSON_GetObjectItem(r, "applied"))) continue;
    long q = quantity_of(r);
    if (q > W0 + MAX_ADD) {
      snprintf(why, sizeof(why), "runaway: the formation was set to %ld (max %d)", q,
               W0 + MAX_ADD);
      return why;
    }
    if (n > 0 && q == applied[n - 1]) {
      snprintf(why, sizeof(why), "the change to %ld was applied twice in a row", q);
      return why;
    }
    if (n == MAX_ADD + 1) {
      snprintf(why, sizeof(why), "a change to %ld after the event's restore", q);
      return why;
    }
    long want = n < MAX_ADD ? W0 + 1 + n : W0;
    if (q != want) {
      snprintf(why, sizeof(why), "change %d set %ld, want %ld", n + 1, q, want);
      return why;
    }
    applied[n++] = q;
  }
  if (n != MAX_ADD + 1 && !partial) {
    snprintf(why, sizeof(why), "%d changes applied, want %d", n, MAX_ADD + 1);
    return why;
  }
  return NULL;
}

static bool restored_or_gone_wrong(void *arg) {
  (void)arg;
  cJSON *reqs = fake_heroku_requests(&H);
  bool wrong = bad_sequence(reqs, true) != NULL;
  cJSON_Delete(reqs);
  return wrong || restored(NULL);
}

/* Past the maximum (depth MAX_ADD + 1: maxscale, nothing more is sent),
 * then the backlog is drained and the event must end -- unless the
 * changes applied so far are already wrong, which is said at once. */
static void finish_event(void) {
  wait_depth(MAX_ADD + 1, 20);
  test_redis_cmd_free(&R, "DEL queue:default");
  bool done = test_wait_for(restored_or_gone_wrong, NULL, 20);
  cJSON *reqs = fake_heroku_requests(&H);
  const char *why = bad_sequence(reqs, true);
  cJSON_Delete(reqs);
  cr_assert_null(why, "%s%s", why, diag());
  cr_assert(done, "the event did not end restored to %d%s", W0, diag());
}

/* "The original count restored": on the platform and in the gem's keys. */
static void check_restored(void) {
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0, "%s", diag());
  char *depth = test_redis_get(&R, NS "/depth");
  char *started = test_redis_get(&R, NS "/latency_event_started");
  char *initial = test_redis_get(&R, INITIAL_KEY);
  cr_assert(depth && strcmp(depth, "0") == 0, "depth %s%s", depth ? depth : "(nil)", diag());
  cr_assert(started && strcmp(started, "0.0") == 0, "latency_event_started %s",
            started ? started : "(nil)");
  cr_assert_null(initial, "initial workers left behind: %s", initial);
  free(depth);
  free(started);
}

static void check_event(void) {
  static election_t el[MAX_ELECTIONS];
  int n = read_elections(el);
  cJSON *reqs = fake_heroku_requests(&H);
  const char *why = non_leader_patch(reqs, el, n);
  cr_assert_null(why, "%s%s", why, diag());
  why = bad_sequence(reqs, false);
  cr_assert_null(why, "%s%s", why, diag());
  check_restored();
  cJSON_Delete(reqs);
}

/* ---- the checks check ------------------------------------------------ */

#define PATCH_FROM(seq, t, who, qty, applied)                                             \
  "{\"seq\":" #seq ",\"time\":" #t ",\"method\":\"PATCH\",\"headers\":{\"user-agent\":" \
  "\"scalekiq/0.1.0 (worker." #who ")\"},\"body\":{\"quantity\":" #qty "},\"applied\":" \
  #applied "}"

static const char *non_leader_in(const char *json, const election_t *el, int n) {
  cJSON *reqs = cJSON_Parse(json);
  cr_assert(cJSON_IsArray(reqs), "%s", json);
  const char *why = non_leader_patch(reqs, el, n);
  cJSON_Delete(reqs);
  return why;
}

static const char *sequence_in(const char *json) {
  cJSON *reqs = cJSON_Parse(json);
  cr_assert(cJSON_IsArray(reqs), "%s", json);
  const char *why = bad_sequence(reqs, false);
  cJSON_Delete(reqs);
  return why;
}

static void expect_why(const char *why, const char *part) {
  cr_assert(why && strstr(why, part), "wanted \"%s\", got \"%s\"", part, why ? why : "(ok)");
}

/* Made-up request logs and elections: each check passes what it must and
 * catches what it is for. */
Test(faults, the_checks_catch_what_they_are_for) {
  /* worker.1 elected (token 1), then worker.2 (2), then worker.1 again
   * (3), whose line was read half a second late */
  const election_t el[] = {{100.0, 1, 0}, {200.0, 2, 1}, {300.5, 3, 0}};
  cr_assert_null(non_leader_in("[" PATCH_FROM(1, 150, 1, 3, true) "," PATCH_FROM(
                                   2, 250, 2, 4, true) "," PATCH_FROM(3, 300.2, 1, 2, true) "]",
                               el, 3));
  /* worker.1 after worker.2 was elected, though worker.2 has sent nothing */
  expect_why(non_leader_in("[" PATCH_FROM(1, 150, 1, 3, true) "," PATCH_FROM(
                               2, 250, 1, 4, true) "]",
                           el, 3),
             "PATCH #2 (quantity 4, t=250.000) came from worker.1, but the newest leader then "
             "was worker.2");
  expect_why(non_leader_in("[" PATCH_FROM(1, 50, 2, 3, true) "]", el, 1),
             "came from worker.2");
  expect_why(non_leader_in("[{\"seq\":1,\"time\":150,\"method\":\"PATCH\",\"headers\":{}}]", el,
                           3),
             "no agent identity");

  cr_assert_null(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(
      2, 2, 1, 4, false) "," PATCH_FROM(3, 3, 1, 4, true) "," PATCH_FROM(4, 4, 1, 2, true) "]"));
  expect_why(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(2, 2, 2, 3, true) "]"),
             "the change to 3 was applied twice in a row");
  expect_why(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(2, 2, 1, 2, true) "]"),
             "change 2 set 2, want 4");
  expect_why(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(2, 2, 1, 5, true) "]"),
             "runaway");
  expect_why(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(2, 2, 1, 4, true) "]"),
             "2 changes applied, want 3");
  expect_why(sequence_in("[" PATCH_FROM(1, 1, 1, 3, true) "," PATCH_FROM(
                 2, 2, 1, 4, true) "," PATCH_FROM(3, 3, 1, 2, true) "," PATCH_FROM(4, 4, 1, 3,
                                                                                     true) "]"),
             "after the event's restore");
}

/* How many logged API requests match: method (NULL: any), injected (-1:
 * either) and status (-1: any). */
static int count_requests(const char *method, int injected, int status) {
  cJSON *reqs = fake_heroku_requests(&H);
  int n = 0;
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(r, "method"));
    if (method && (!m || strcmp(m, method) != 0)) continue;
    if (injected >= 0 && cJSON_IsTrue(cJSON_GetObjectItem(r, "injected")) != injected) continue;
    if (status >= 0 && (int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "status")) != status)
      continue;
    n++;
  }
  cJSON_Delete(reqs);
  return n;
}

typedef struct req_count {
  const char *method;
  int injected, status, want;
} req_count_t;

static bool requests_at_least(void *arg) {
  const req_count_t *c = arg;
  return count_requests(c->method, c->injected, c->status) >= c->want;
}

static void wait_requests(const char *method, int injected, int status, int want,
                          double timeout) {
  req_count_t c = {method, injected, status, want};
  cr_assert(test_wait_for(requests_at_least, &c, timeout),
            "expected %d %s requests (injected %d, status %d)%s", want, method ? method : "API",
            injected, status, diag());
}

/* A fault whose length is the scenario itself (an outage of so long), not
 * a wait for something to happen. */
static void keep_fault_for(double seconds) {
  double end = test_mono() + seconds;
  while (test_mono() < end) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* ---- Redis ----------------------------------------------------------- */

Test(faults, redis_killed_and_restarted_mid_event) {
  fleet_up(3);
  push_old_job(30);
  wait_first_step();
  test_redis_kill(&R);
  for (int i = 0; i < 3; i++) wait_log(i, "event=redis_unavailable", 10);
  test_redis_restart(&R);
  cr_assert_geq(depth_now(), 1, "the restart lost the event's state");
  finish_event();
  check_event();
}

/* SIGSTOP: the server's port still accepts connections, and nothing
 * answers -- a network partition rather than a refused connection. */
Test(faults, redis_unreachable_longer_than_the_lock_ttl) {
  fleet_up(3);
  push_old_job(30);
  wait_first_step();
  int l = leader_index();
  cr_assert_geq(l, 0);
  int lost = count_in_logs(l, "event=leader_lost");
  double t_stop = test_now();
  cr_assert_eq(kill(R.pid, SIGSTOP), 0);
  /* The leader stops by its own clock, with no word from Redis. */
  wait_log_more(l, "event=leader_lost", lost, 4 * TTL);
  keep_fault_for(2 * TTL - (test_now() - t_stop));
  double t_cont = test_now();
  cr_assert_eq(kill(R.pid, SIGCONT), 0);
  finish_event();
  check_event();
  /* Nobody held a lease from TTL after the freeze until Redis came back
   * (a PATCH sent just inside the lease may land a moment later). */
  cJSON *reqs = fake_heroku_requests(&H);
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    double t = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "time"));
    cr_assert(!is_patch(r) || t < t_stop + TTL + 0.1 || t > t_cont,
              "a PATCH at t=%.3f, while Redis was unreachable (%.3f .. %.3f)%s", t, t_stop,
              t_cont, diag());
  }
  cJSON_Delete(reqs);
}

/* DEBUG SLEEP blocks the whole server for twice the request timeout, at
 * three points of the event: every request in flight then times out. */
Test(faults, redis_slow_beyond_the_request_timeout) {
  const char *slow[] = {"SCALEKIQ_REQUEST_TIMEOUT=0.5", NULL};
  for (int i = 0; i < 3; i++) agent_up(i, slow);
  wait_leader_other_than(-1, 10);
  push_old_job(30);
  for (long d = 1; d <= 3; d++) {
    wait_depth(d, 20);
    test_redis_cmd_free(&R, "DEBUG SLEEP 1.0");
  }
  wait_log(-1, "timed out", 10);
  finish_event();
  check_event();
}

/* ---- the leader killed at the worst moments -------------------------- */

static int stalled_sender(const char *method, const char *phase) {
  cJSON *held = fake_heroku_stalled(&H);
  int s = -1;
  const cJSON *h;
  cJSON_ArrayForEach(h, held) {
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(h, "method"));
    const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(h, "phase"));
    const char *ua = cJSON_GetStringValue(cJSON_GetObjectItem(h, "user-agent"));
    const char *w = ua ? strstr(ua, "(worker.") : NULL;
    if (m && p && w && strcmp(m, method) == 0 && strcmp(p, phase) == 0) s = atoi(w + 8) - 1;
  }
  cJSON_Delete(held);
  return s;
}

typedef struct held {
  const char *method, *phase;
} held_t;

static bool is_held(void *arg) {
  const held_t *h = arg;
  return stalled_sender(h->method, h->phase) >= 0;
}

/* The leader has read the formation and stored it as the event's initial
 * workers, and its PATCH is on the way but not applied (the fake holds it,
 * then drops it): it dies there. */
Test(faults, leader_killed_between_reading_initial_workers_and_its_first_patch) {
  /* long enough that the leader is surely still waiting when it dies */
  const char *patient[] = {"SCALEKIQ_REQUEST_TIMEOUT=5", NULL};
  for (int i = 0; i < 3; i++) agent_up(i, patient);
  wait_leader_other_than(-1, 10);
  fake_heroku_control(&H, "POST", "/__fake/stall",
                      "{\"method\":\"PATCH\",\"seconds\":60,\"drop\":true}");
  push_old_job(30);
  held_t h = {"PATCH", "before"};
  cr_assert(test_wait_for(is_held, &h, 10), "no PATCH reached the fake%s", diag());
  int s = stalled_sender("PATCH", "before");
  cr_assert_eq(s, leader_index(), "the PATCH did not come from the leader%s", diag());
  char *initial = test_redis_get(&R, INITIAL_KEY);
  cr_assert(initial && atol(initial) == W0, "initial workers not stored before the PATCH");
  free(initial);
  cr_assert_eq(test_stop(A[s].pid, SIGKILL, 5), 128 + SIGKILL);
  A[s].pid = 0;
  wait_requests("PATCH", 1, 0, 1, 10); /* its PATCH, dropped: never applied */
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0);
  wait_leader_other_than(s, 10);
  finish_event();
  check_event();
}

/* The leader's PATCH took effect, and it dies waiting for the reply: the
 * state write that records the step never happens. */
Test(faults, leader_killed_between_its_patch_and_the_state_write) {
  /* long enough that the leader is surely still waiting when it dies */
  const char *patient[] = {"SCALEKIQ_REQUEST_TIMEOUT=5", NULL};
  for (int i = 0; i < 3; i++) agent_up(i, patient);
  wait_leader_other_than(-1, 10);
  fake_heroku_control(&H, "POST", "/__fake/stall",
                      "{\"method\":\"PATCH\",\"seconds\":60,\"phase\":\"reply\"}");
  push_old_job(30);
  held_t h = {"PATCH", "reply"};
  cr_assert(test_wait_for(is_held, &h, 10), "no PATCH reached the fake%s", diag());
  int s = stalled_sender("PATCH", "reply");
  cr_assert_eq(s, leader_index(), "the PATCH did not come from the leader%s", diag());
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0 + 1);
  cr_assert_eq(test_stop(A[s].pid, SIGKILL, 5), 128 + SIGKILL);
  A[s].pid = 0;
  cr_assert_leq(depth_now(), 0, "the step was recorded: the fault was not injected");
  wait_leader_other_than(s, 10);
  finish_event();
  check_event();
}

/* ---- the Platform API ------------------------------------------------ */

/* Stands for a minute of 5xx: every request fails for 3 s (7 alert
 * intervals, 3 request timeouts), after two 500s. */
Test(faults, api_500_and_503_for_a_minute) {
  fleet_up(2);
  push_old_job(30);
  wait_first_step();
  fake_heroku_control(&H, "POST", "/__fake/fail", "{\"status\":500,\"count\":2}");
  fake_heroku_control(&H, "POST", "/__fake/fail", "{\"status\":503,\"duration\":3}");
  wait_requests(NULL, 1, 503, 1, 15);
  finish_event();
  check_event();
  cr_assert_eq(count_requests(NULL, 1, 500), 2, "%s", diag());
  wait_log(-1, "result=failed", 1);
}

/* A 429 with RateLimit-Remaining: 0 on the second step's PATCH. */
Test(faults, api_429_with_ratelimit_remaining_0) {
  fleet_up(2);
  push_old_job(30);
  wait_first_step();
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"status\":429,\"count\":1,\"method\":\"PATCH\"}");
  wait_requests("PATCH", 1, 429, 1, 15);
  finish_event();
  check_event();
  /* the client waited for the limit to refill, beyond its ordinary
   * backoff (0.5 s at most for a first retry) */
  cJSON *reqs = fake_heroku_requests(&H);
  double t429 = -1, next = -1;
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    double t = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "time"));
    if ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "status")) == 429) t429 = t;
    else if (t429 > 0 && next < 0) next = t;
  }
  cJSON_Delete(reqs);
  cr_assert_gt(next, t429, "%s", diag());
  cr_assert_geq(next - t429, 2.0, "the next request came %.3f s after the 429%s", next - t429,
                diag());
}

/* The first GET (initial workers) and the first PATCH hang past the
 * request timeout and are never carried out (the fake drops them once the
 * client gives up): a hung API, not a slow one. */
Test(faults, api_stalls_past_the_request_timeout) {
  fleet_up(2);
  fake_heroku_control(&H, "POST", "/__fake/stall",
                      "{\"method\":\"GET\",\"seconds\":30,\"drop\":true}");
  fake_heroku_control(&H, "POST", "/__fake/stall",
                      "{\"method\":\"PATCH\",\"seconds\":30,\"drop\":true}");
  push_old_job(30);
  finish_event();
  check_event();
  cr_assert_eq(count_requests("GET", 1, 0), 1, "%s", diag());
  cr_assert_eq(count_requests("PATCH", 1, 0), 1, "%s", diag());
  wait_log(-1, "timed out", 1);
}

/* The second step's PATCH takes effect, and its reply is cut off halfway;
 * the GET after it loses its connection before any reply. */
Test(faults, api_closes_connections_mid_reply) {
  fleet_up(2);
  push_old_job(30);
  wait_first_step();
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"PATCH\",\"status\":200,\"close\":true,\"apply\":true}");
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"GET\",\"status\":200,\"close\":\"immediate\"}");
  wait_requests("PATCH", 1, 200, 1, 15);
  finish_event();
  check_event();
}

/* An HTML page where JSON belongs: a 200 to the initial workers' GET (a
 * proxy's page), and a 502 to the first PATCH, which was not applied. */
Test(faults, api_returns_non_json) {
  fleet_up(2);
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"GET\",\"status\":200,\"body\":\"<html><body>Application "
                      "Error</body></html>\",\"headers\":{\"Content-Type\":\"text/html\"}}");
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"PATCH\",\"status\":502,\"body\":\"<html>Bad "
                      "Gateway</html>\",\"headers\":{\"Content-Type\":\"text/html\"}}");
  push_old_job(30);
  finish_event();
  check_event();
  cr_assert_eq(count_requests(NULL, 1, -1), 2, "%s", diag());
}

#define NO_QUANTITY                                                                    \
  "{\\\"id\\\":\\\"01234567-89ab-cdef-0123-456789abcdef\\\",\\\"type\\\":\\\"worker\\\"," \
  "\\\"size\\\":\\\"Standard-1X\\\"}"

/* A formation object without quantity: to the initial workers' GET, and
 * to the second step's PATCH, which the API did carry out. */
Test(faults, api_returns_a_formation_without_quantity) {
  fleet_up(2);
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"GET\",\"status\":200,\"body\":\"" NO_QUANTITY "\"}");
  push_old_job(30);
  wait_first_step();
  fake_heroku_control(&H, "POST", "/__fake/fail",
                      "{\"method\":\"PATCH\",\"status\":200,\"apply\":true,\"body\":\"" NO_QUANTITY
                      "\"}");
  wait_requests("PATCH", 1, 200, 1, 15);
  finish_event();
  check_event();
  wait_log(-1, "no quantity", 1);
}

/* ---- clocks ---------------------------------------------------------- */

static bool leader_is_not_any(void *arg) { return leader_index() != *(int *)arg; }

/* N/leader holds agent i's id all along, for that long. */
static void expect_leader_stays(int i, double seconds) {
  cr_assert_eq(leader_index(), i, "%s", diag());
  cr_assert_not(test_wait_for(leader_is_not_any, &i, seconds),
                "the lease of worker.%d changed hands while it was healthy (now %d)%s", i + 1,
                leader_index() + 1, diag());
}

/* Freezes the leader; returns who took over, and checks that it did not
 * happen before the frozen leader's lease could have run out (its last
 * renewal was at most one tick before the freeze). */
static int takeover_from(int old) {
  double t0 = test_mono();
  cr_assert_eq(kill(A[old].pid, SIGSTOP), 0);
  int n = wait_leader_other_than(old, 10);
  double took = test_mono() - t0;
  cr_assert_geq(took, 0.75 * TTL,
                "worker.%d took the lease %.3f s after worker.%d froze: before it could "
                "have run out (TTL %.1f s)%s",
                n + 1, took, old + 1, TTL, diag());
  return n;
}

/* Where Debian's libfaketime is, or NULL. */
static char *libfaketime(void) {
  glob_t g;
  char *path = NULL;
  if (glob("/usr/lib/*/faketime/libfaketimeMT.so.1", 0, NULL, &g) == 0 && g.gl_pathc > 0)
    path = strdup(g.gl_pathv[0]);
  globfree(&g);
  return path;
}

/* The agent's own wall clock minus the test's when it was elected: its
 * leader_elected history entry carries the agent's time, its stamped log
 * line the test's. */
static double clock_offset_of(int agent) {
  static election_t el[MAX_ELECTIONS];
  int n = read_elections(el);
  double stamp = -1;
  for (int k = 0; k < n; k++)
    if (el[k].agent == agent) stamp = el[k].t;
  cr_assert_gt(stamp, 0, "worker.%d was never elected", agent + 1);
  redisReply *r = test_redis_cmd(&R, "LRANGE %s 0 -1", NS "/history");
  char dyno[32];
  snprintf(dyno, sizeof(dyno), "worker.%d", agent + 1);
  double at = -1;
  for (size_t i = 0; i < r->elements && at < 0; i++) { /* newest first */
    cJSON *e = cJSON_Parse(r->element[i]->str);
    const char *ev = cJSON_GetStringValue(cJSON_GetObjectItem(e, "event"));
    const char *d = cJSON_GetStringValue(cJSON_GetObjectItem(e, "dyno"));
    if (ev && d && strcmp(ev, "leader_elected") == 0 && strcmp(d, dyno) == 0)
      at = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "at"));
    cJSON_Delete(e);
  }
  freeReplyObject(r);
  cr_assert_gt(at, 0, "no leader_elected entry from %s in the history", dyno);
  return at - stamp;
}

/* One agent on time, one 30 s ahead and one 30 s behind (libfaketime; the
 * monotonic clock is left alone, as a host's wrong wall clock would). */
Test(faults, wall_clock_30s_off_neither_steals_nor_loses_a_lease_early) {
  char *lib = libfaketime();
  cr_assert_not_null(lib, "libfaketime is missing: apt-get install libfaketime");
  static char preload[256];
  snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", lib);
  free(lib);
  /* AddressSanitizer wants its runtime first in the library list, and
   * libfaketime preloaded comes before it: harmless, so allowed. */
  static char asan[512];
  const char *prev = getenv("ASAN_OPTIONS");
  snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0", prev ? prev : "",
           prev && *prev ? ":" : "");
  const char *ahead[] = {preload, "FAKETIME=+30s", "FAKETIME_DONT_FAKE_MONOTONIC=1", asan, NULL};
  const char *behind[] = {preload, "FAKETIME=-30s", "FAKETIME_DONT_FAKE_MONOTONIC=1", asan,
                          NULL};
  agent_up(0, NULL);
  cr_assert_eq(wait_leader_other_than(-1, 10), 0);
  agent_up(1, ahead);
  agent_up(2, behind);
  wait_log(1, "event=redis_connected", 10);
  wait_log(2, "event=redis_connected", 10);

  /* Followers whose clocks run ahead or behind do not steal the lease. */
  expect_leader_stays(0, 3 * TTL);
  push_old_job(100); /* a backlog on every clock: 70 s old on the one behind */
  wait_first_step();

  /* The one ahead takes over (the one behind is kept out of that race),
   * no earlier than the lease allows, and keeps the lease while healthy;
   * the one behind, awake again, does not steal it. Then the one behind
   * takes over the same way. Ahead, then behind: an event that ran on
   * each agent's own wall clock would stall here for a minute. */
  cr_assert_eq(kill(A[2].pid, SIGSTOP), 0);
  cr_assert_eq(takeover_from(0), 1, "%s", diag());
  cr_assert_eq(kill(A[2].pid, SIGCONT), 0);
  expect_leader_stays(1, 3 * TTL);
  cr_assert_eq(takeover_from(1), 2, "%s", diag());
  expect_leader_stays(2, 2 * TTL);

  /* The frozen ones wake up as followers. */
  int lost0 = count_in_logs(0, "event=leader_lost"), lost1 = count_in_logs(1, "event=leader_lost");
  cr_assert_eq(kill(A[0].pid, SIGCONT), 0);
  cr_assert_eq(kill(A[1].pid, SIGCONT), 0);
  wait_log_more(0, "event=leader_lost", lost0, 10);
  wait_log_more(1, "event=leader_lost", lost1, 10);
  expect_leader_stays(2, TTL);

  /* libfaketime did move their wall clocks */
  double off1 = clock_offset_of(1), off2 = clock_offset_of(2);
  cr_assert(fabs(off1 - 30) < 5, "worker.2's clock is %+.1f s off, not +30", off1);
  cr_assert(fabs(off2 + 30) < 5, "worker.3's clock is %+.1f s off, not -30", off2);

  finish_event();
  check_event();
}

/* ---- the shared state overwritten by hand ---------------------------- */

/* Holds the leader back (N/paused, as `scalekiq pause` does) once step 1
 * is recorded, so the next poll is the first to read what the test
 * writes. */
static void pause_after_first_step(void) {
  wait_first_step();
  test_redis_cmd_free(&R, "SET %s 1", NS "/paused");
  wait_log(-1, "event=action_paused", 10);
  cr_assert_eq(depth_now(), 1, "the event moved on before the pause%s", diag());
}

static void resume(void) { test_redis_cmd_free(&R, "DEL %s", NS "/paused"); }

static void assert_all_alive(int n) {
  for (int i = 0; i < n; i++) cr_assert(test_alive(A[i].pid), "worker.%d died%s", i + 1, diag());
}

Test(faults, state_depth_abc_is_reset_with_a_warning) {
  fleet_up(2);
  push_old_job(30);
  pause_after_first_step();
  test_redis_cmd_free(&R, "SET %s abc", NS "/depth");
  resume();
  wait_log(-1, "level=warn event=store_state_reset detail=\"depth=\\\"abc\\\" unparsable", 10);
  finish_event();
  check_event();
  assert_all_alive(2);
}

/* At the maximum, depth reset to 0 would make the next step up a step
 * down (W0+1 < W0+2): it must count as done instead, and the event goes
 * on to its restore with no change sent in between. */
Test(faults, state_depth_abc_at_the_maximum_never_scales_down_mid_event) {
  fleet_up(2);
  push_old_job(30);
  wait_depth(2, 15);
  test_redis_cmd_free(&R, "SET %s 1", NS "/paused");
  wait_log(-1, "event=action_paused", 10);
  cr_assert_eq(fake_heroku_quantity(&H, "worker"), W0 + 2, "%s", diag());
  int patches = fake_heroku_count(&H, "PATCH");
  test_redis_cmd_free(&R, "SET %s abc", NS "/depth");
  resume();
  wait_log(-1, "level=warn event=store_state_reset detail=\"depth=\\\"abc\\\" unparsable", 10);
  wait_log(-1, "event=change_already_applied", 10);
  cr_assert_eq(fake_heroku_count(&H, "PATCH"), patches, "a change was sent mid-event%s", diag());
  finish_event();
  check_event();
  assert_all_alive(2);
}

Test(faults, state_negative_initial_workers_is_reset_with_a_warning) {
  fleet_up(2);
  push_old_job(30);
  pause_after_first_step();
  test_redis_cmd_free(&R, "SET %s -3", INITIAL_KEY);
  resume();
  wait_log(-1, "level=warn event=store_state_reset", 10);
  wait_log(-1, "initial_workers=-3", 1);
  finish_event();
  check_event();
  assert_all_alive(2);
}
