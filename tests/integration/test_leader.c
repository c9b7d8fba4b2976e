/*
 * Leader election against a real redis-server: several leader_t, each
 * with its own connection, on one loop. A monitor timer checks all along
 * that no two of them ever believe they lead at the same time.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leader.h"
#include "testutil.h"

#define KEY_LEADER "t/leader"
#define KEY_FENCE "t/fence"
#define TTL 0.9
#define TICK 0.3
#define MARGIN 0.15 /* leader_default_margin(0.9, 0.3) */
#define SLACK 0.15  /* scheduling and round trips on a loaded machine */
#define NAG 3

typedef struct ag {
  redis_t redis;
  leader_t leader;
  int ready, open;
  int elected, lost, closed;
  char why[32];
  uint64_t elected_at, lost_at; /* uv_hrtime() of the last on_change */
  long long server_pttl_at_loss; /* PTTL of N/leader when this one let go */
  int releases, release_status;
  long long client_id;
} ag_t;

static test_redis_t R;
static uv_loop_t loop;
static ag_t A[NAG];
static log_t lg;
static FILE *log_file;
static uv_timer_t monitor;
static int overlaps;      /* instants when two agents believed they led */
static int false_reports; /* on_change disagreeing with leader_is_leader */
static int check_pttl;

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static ag_t *of(leader_t *l) { return (ag_t *)((char *)l - offsetof(ag_t, leader)); }

static int believers(void) {
  int n = 0;
  for (int i = 0; i < NAG; i++)
    if (A[i].open && leader_is_leader(&A[i].leader)) n++;
  return n;
}

static void monitor_cb(uv_timer_t *t) {
  (void)t;
  if (believers() > 1) overlaps++;
}

static void on_change(leader_t *l, int is_leader, const char *why, void *data) {
  (void)data;
  ag_t *a = of(l);
  snprintf(a->why, sizeof(a->why), "%s", why);
  if (leader_is_leader(l) != is_leader) false_reports++;
  if (believers() > 1) overlaps++;
  if (is_leader) {
    a->elected++;
    a->elected_at = uv_hrtime();
  } else {
    a->lost++;
    a->lost_at = uv_hrtime();
    if (check_pttl) {
      redisReply *rep = test_redis_cmd(&R, "PTTL %s", KEY_LEADER);
      a->server_pttl_at_loss = rep->integer;
      freeReplyObject(rep);
    }
  }
}

static void on_state(redis_t *r, enum redis_state st, int status,
                     const char *detail, void *data) {
  (void)r;
  (void)status;
  (void)detail;
  ag_t *a = data;
  if (st == REDIS_STATE_READY) a->ready++;
}

static void on_released(leader_t *l, int status, void *data) {
  (void)data;
  ag_t *a = of(l);
  a->releases++;
  a->release_status = status;
}

static void wake(uv_timer_t *t) { (void)t; }

/* Runs the loop until cond() holds or the deadline passes; a timer
 * guarantees the loop wakes up to notice the deadline. */
static bool run_until(bool (*cond)(void), double seconds) {
  uv_timer_t deadline;
  uv_timer_init(&loop, &deadline);
  uv_timer_start(&deadline, wake, (uint64_t)(seconds * 1000), 0);
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  while (!(cond && cond()) && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return cond && cond();
}
static void run_for(double seconds) { run_until(NULL, seconds); }

static bool one_leader(void) { return believers() == 1; }
static bool no_leader(void) { return believers() == 0; }
static bool all_ready(void) {
  for (int i = 0; i < NAG; i++)
    if (A[i].ready < 1) return false;
  return true;
}

static int leader_index(void) {
  for (int i = 0; i < NAG; i++)
    if (leader_is_leader(&A[i].leader)) return i;
  return -1;
}

static int elected_total(void) {
  int n = 0;
  for (int i = 0; i < NAG; i++) n += A[i].elected;
  return n;
}

static long long fence_value(void) {
  redisReply *rep = test_redis_cmd(&R, "GET %s", KEY_FENCE);
  long long v = rep->type == REDIS_REPLY_STRING ? atoll(rep->str) : 0;
  freeReplyObject(rep);
  return v;
}

static void ag_open(ag_t *a, double request_timeout) {
  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = request_timeout;
  o.connect_timeout = 2;
  o.backoff_min = 0.05;
  o.backoff_max = 0.2;
  o.on_state = on_state;
  o.data = a;
  o.log = &lg;
  cr_assert_eq(redis_init(&loop, &a->redis, R.url, &o), 0);
  leader_options_t lo = {.key_leader = KEY_LEADER,
                         .key_fence = KEY_FENCE,
                         .identity = "worker.test",
                         .ttl = TTL,
                         .tick = TICK,
                         .log = &lg,
                         .on_change = on_change};
  char err[256];
  cr_assert_eq(leader_init(&loop, &a->leader, &a->redis, &lo, err, sizeof(err)), 0, "%s",
               err);
  cr_assert_float_eq(a->leader.margin, MARGIN, 1e-9);
  a->open = 1;
  redis_connect(&a->redis);
}

static void start_all(void) {
  cr_assert(run_until(all_ready, 5), "not every client connected");
  for (int i = 0; i < NAG; i++) cr_assert_eq(leader_start(&A[i].leader), 0);
}

static void leader_closed(leader_t *l) { of(l)->closed++; }

static void setup(void) {
  test_redis_start(&R);
  uv_loop_init(&loop);
  log_file = tmpfile();
  cr_assert(log_file != NULL);
  log_init(&lg, log_file, LOG_DEBUG);
  memset(A, 0, sizeof(A));
  overlaps = false_reports = check_pttl = 0;
  uv_timer_init(&loop, &monitor);
  uv_timer_start(&monitor, monitor_cb, 5, 5);
  for (int i = 0; i < NAG; i++) ag_open(&A[i], 10);
}

static void teardown(void) {
  if (R.pid > 0) kill(R.pid, SIGCONT); /* in case a test left it stopped */
  for (int i = 0; i < NAG; i++) {
    leader_close(&A[i].leader, leader_closed);
    redis_close(&A[i].redis, NULL);
  }
  uv_close((uv_handle_t *)&monitor, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < NAG; i++) cr_expect_eq(A[i].closed, 1, "close callback exactly once");
  cr_expect_eq(uv_loop_close(&loop), 0, "a handle was left open");
  test_redis_stop(&R);
  log_close(&lg);
  fclose(log_file);
}

/* Safety, checked at the end of every test. */
static void assert_never_two(void) {
  cr_assert_eq(overlaps, 0, "two agents believed they led at the same time");
  cr_assert_eq(false_reports, 0, "on_change disagreed with leader_is_leader");
}

static char *log_text(void) {
  fflush(log_file);
  long len = ftell(log_file);
  char *buf = calloc(1, (size_t)len + 1);
  rewind(log_file);
  size_t got = fread(buf, 1, (size_t)len, log_file);
  buf[got] = '\0';
  fseek(log_file, 0, SEEK_END);
  return buf;
}

TestSuite(leader, .init = setup, .fini = teardown);

Test(leader, exactly_one_of_three_wins_and_followers_see_it) {
  start_all();
  cr_assert(run_until(one_leader, 2), "nobody became leader");
  int w = leader_index();
  run_for(3 * TICK + SLACK); /* everybody has tried several times since */
  cr_assert_eq(believers(), 1);
  cr_assert_eq(leader_index(), w, "the first leader kept it");
  cr_assert_eq(elected_total(), 1, "exactly one election");
  cr_assert_eq(fence_value(), 1, "N/fence incremented once");
  cr_assert_eq(leader_token(&A[w].leader), 1);
  for (int i = 0; i < NAG; i++)
    cr_assert_str_eq(leader_current(&A[i].leader), leader_id(&A[w].leader),
                     "agent %d sees the holder", i);
  redisReply *rep = test_redis_cmd(&R, "GET %s", KEY_LEADER);
  cr_assert_str_eq(rep->str, leader_id(&A[w].leader));
  freeReplyObject(rep);
  /* identity:pid:16 hex */
  const char *id = leader_id(&A[w].leader);
  cr_assert_eq(strncmp(id, "worker.test:", 12), 0, "%s", id);
  cr_assert_eq(strlen(strrchr(id, ':') + 1), 16, "%s", id);
  cr_assert_str_neq(leader_id(&A[0].leader), leader_id(&A[1].leader));
  assert_never_two();
}

Test(leader, renews_over_several_ttls_and_followers_send_one_command_a_tick) {
  start_all();
  cr_assert(run_until(one_leader, 2));
  int w = leader_index();
  uint64_t before[NAG], lbefore[NAG];
  for (int i = 0; i < NAG; i++) {
    before[i] = A[i].redis.stats.commands;
    lbefore[i] = A[i].leader.stats.commands;
  }
  double span = 4 * TTL;
  run_for(span);
  cr_assert_eq(leader_index(), w, "still the leader after %g ttls", span / TTL);
  cr_assert_eq(A[w].lost, 0);
  cr_assert_eq(elected_total(), 1);
  cr_assert_gt(leader_lease_remaining(&A[w].leader), TICK, "a fresh lease");
  redisReply *rep = test_redis_cmd(&R, "PTTL %s", KEY_LEADER);
  cr_assert_gt(rep->integer, (long long)((TTL - TICK - SLACK) * 1000), "renewed on the server");
  freeReplyObject(rep);
  int ticks = (int)(span / TICK);
  for (int i = 0; i < NAG; i++) {
    uint64_t sent = A[i].redis.stats.commands - before[i];
    cr_assert_eq(sent, A[i].leader.stats.commands - lbefore[i],
                 "agent %d sent nothing but its lock commands", i);
    cr_assert(sent >= (uint64_t)ticks - 1 && sent <= (uint64_t)ticks + 1,
              "agent %d: %llu commands in %d ticks", i, (unsigned long long)sent, ticks);
    cr_assert_eq(A[i].leader.stats.skipped, 0);
  }
  assert_never_two();
}

static ag_t *waiting_for;
static bool released_done(void) { return waiting_for->releases > 0; }

Test(leader, release_hands_over_within_a_tick_and_tokens_increase) {
  start_all();
  long long last_token = 0;
  for (int round = 0; round < NAG; round++) {
    cr_assert(run_until(one_leader, 2 * TICK + SLACK), "round %d: no leader", round);
    int w = leader_index();
    long long token = leader_token(&A[w].leader);
    cr_assert_gt(token, last_token, "tokens strictly increase");
    last_token = token;
    cr_assert_eq(fence_value(), token);

    waiting_for = &A[w];
    cr_assert_eq(leader_release(&A[w].leader, on_released, NULL), 0);
    cr_assert_not(leader_is_leader(&A[w].leader), "not leader from the call on");
    cr_assert_eq(A[w].releases, 0, "done is not called inside the call");
    cr_assert_eq(leader_release(&A[w].leader, on_released, NULL), LEADER_E_BUSY);
    cr_assert(run_until(released_done, 2));
    uint64_t released_at = uv_hrtime();
    cr_assert_eq(A[w].releases, 1);
    cr_assert_eq(A[w].release_status, 0);
    cr_assert_str_eq(A[w].why, "released");
    cr_assert_eq(A[w].lost, 1, "on_change(0) before done");
    if (round < NAG - 1) {
      cr_assert(run_until(one_leader, TICK + SLACK), "round %d: no one took over", round);
      int next = leader_index();
      cr_assert_neq(next, w);
      cr_assert_leq(secs(A[next].elected_at - released_at), TICK + SLACK);
    }
  }
  /* all three released: nobody left to try */
  run_for(2 * TICK);
  cr_assert_eq(believers(), 0);
  redisReply *rep = test_redis_cmd(&R, "EXISTS %s", KEY_LEADER);
  cr_assert_eq(rep->integer, 0, "the last release deleted the key");
  freeReplyObject(rep);
  cr_assert_eq(fence_value(), elected_total(), "one increment per leadership");
  cr_assert_eq(fence_value(), NAG);
  assert_never_two();
}

static void on_client_id(redis_t *r, int status, redisReply **rep, size_t n, void *data) {
  (void)r;
  (void)n;
  ag_t *a = data;
  cr_assert_eq(status, 0);
  a->client_id = rep[0]->integer;
}
static bool have_client_id(void) { return waiting_for->client_id > 0; }
static bool someone_else_leads(void) {
  int i = leader_index();
  return i >= 0 && &A[i] != waiting_for;
}

Test(leader, cut_off_leader_lets_go_by_its_clock_before_the_key_expires) {
  /* The leader's connection is killed and does not come back; sends fail
   * at once. Its belief ends by its own clock, while the server still
   * holds its key, and before anyone else wins. */
  A[0].redis.opts.reconnect = 0;
  cr_assert(run_until(all_ready, 5));
  cr_assert_eq(leader_start(&A[0].leader), 0);
  cr_assert(run_until(one_leader, 2));
  cr_assert(leader_is_leader(&A[0].leader));
  for (int i = 1; i < NAG; i++) cr_assert_eq(leader_start(&A[i].leader), 0);
  run_for(TICK);

  waiting_for = &A[0];
  cr_assert_eq(redis_command(&A[0].redis, on_client_id, &A[0], "CLIENT ID"), 0);
  cr_assert(run_until(have_client_id, 2));
  check_pttl = 1;
  test_redis_cmd_free(&R, "CLIENT KILL ID %lld", A[0].client_id);
  cr_assert(run_until(someone_else_leads, TTL + 2 * TICK + SLACK), "nobody took over");
  int next = leader_index();

  cr_assert_eq(A[0].lost, 1);
  cr_assert_str_eq(A[0].why, "lease_expired");
  cr_assert_gt(A[0].server_pttl_at_loss, 0,
               "the key was still alive on the server when the leader let go");
  cr_assert_lt(A[0].lost_at, A[next].elected_at, "let go before another won");
  cr_assert_geq(secs(A[next].elected_at - A[0].lost_at), MARGIN - 0.05,
                "by about the margin");
  cr_assert_eq(A[next].leader.token, 2);
  char *text = log_text();
  cr_assert(strstr(text, "event=leader_renew_failed") != NULL);
  cr_assert(strstr(text, "event=leader_lost") != NULL && strstr(text, "reason=lease_expired"));
  free(text);
  assert_never_two();
}

Test(leader, stopped_server_leader_lets_go_without_any_reply) {
  /* SIGSTOP: the connection stays up, replies never come (the request
   * timeout is 10 s). Only the leader's clock can end its belief. */
  start_all();
  cr_assert(run_until(one_leader, 2));
  int w = leader_index();
  run_for(TICK / 2); /* between two renewals */
  uint64_t stopped_at = uv_hrtime();
  double left = leader_lease_remaining(&A[w].leader);
  cr_assert_gt(left, 0);
  kill(R.pid, SIGSTOP);
  cr_assert(run_until(no_leader, TTL), "the leader kept believing");
  cr_assert_str_eq(A[w].why, "lease_expired");
  double after = secs(A[w].lost_at - stopped_at);
  cr_assert_leq(after, left + 0.05, "let go when its lease ran out (%.3f s, lease %.3f)",
                after, left);
  cr_assert_leq(after, TTL - MARGIN + 0.05);
  kill(R.pid, SIGCONT);
  /* the late answers are ignored; someone leads again with a new token */
  cr_assert(run_until(one_leader, TTL + 2 * TICK + SLACK));
  run_for(2 * TICK);
  cr_assert_eq(believers(), 1);
  int nw = leader_index();
  /* >= 2: a win answered after its own lease had run out (the server was
   * frozen with the command in it) is not announced, and costs a token */
  cr_assert_geq(leader_token(&A[nw].leader), 2);
  cr_assert_eq(fence_value(), leader_token(&A[nw].leader));
  assert_never_two();
}

Test(leader, overwritten_key_is_noticed_at_the_next_renewal) {
  start_all();
  cr_assert(run_until(one_leader, 2));
  int w = leader_index();
  uint64_t at = uv_hrtime();
  test_redis_cmd_free(&R, "SET %s other PX 60000", KEY_LEADER);
  cr_assert(run_until(no_leader, TICK + SLACK), "the leader did not notice");
  cr_assert_str_eq(A[w].why, "key_taken");
  cr_assert_leq(secs(A[w].lost_at - at), TICK + SLACK);
  run_for(2 * TICK);
  cr_assert_eq(believers(), 0, "nobody takes a key another holds");
  for (int i = 0; i < NAG; i++) cr_assert_str_eq(leader_current(&A[i].leader), "other");
  char *text = log_text();
  cr_assert(strstr(text, "event=leader_lost") != NULL);
  cr_assert(strstr(text, "reason=key_taken holder=other") != NULL, "%s", text);
  free(text);
  /* once it is gone, an election with a new token */
  test_redis_cmd_free(&R, "DEL %s", KEY_LEADER);
  cr_assert(run_until(one_leader, TICK + SLACK));
  cr_assert_eq(leader_token(&A[leader_index()].leader), 2);
  assert_never_two();
}

static bool a0_leads(void) { return leader_is_leader(&A[0].leader); }

Test(leader, step_down_sits_out_one_ttl) {
  /* Alone, so nothing but the cooldown keeps it from winning again. */
  cr_assert(run_until(all_ready, 5));
  cr_assert_eq(leader_start(&A[0].leader), 0);
  cr_assert(run_until(a0_leads, 2));
  uint64_t before = A[0].leader.stats.commands;
  uint64_t at = uv_hrtime();
  cr_assert_eq(leader_step_down(&A[0].leader), 0);
  cr_assert_not(leader_is_leader(&A[0].leader));
  run_for(TTL - SLACK);
  cr_assert_eq(A[0].lost, 1);
  cr_assert_str_eq(A[0].why, "stepped_down");
  cr_assert_eq(A[0].leader.stats.commands - before, 1, "only the release while sitting out");
  redisReply *rep = test_redis_cmd(&R, "EXISTS %s", KEY_LEADER);
  cr_assert_eq(rep->integer, 0, "the key was released");
  freeReplyObject(rep);
  cr_assert(run_until(a0_leads, 2 * SLACK + TICK));
  double back = secs(A[0].elected_at - at);
  /* libuv timers count whole milliseconds from the loop's cached time,
   * which may be up to a millisecond behind uv_hrtime(): hence the 5 ms. */
  cr_assert_geq(back, TTL - 0.005, "back after %.3f s", back);
  cr_assert_leq(back, TTL + SLACK);
  cr_assert_eq(leader_token(&A[0].leader), 2);
  assert_never_two();
}

Test(leader, step_down_lets_another_win) {
  start_all();
  cr_assert(run_until(one_leader, 2));
  int w = leader_index();
  cr_assert_eq(leader_step_down(&A[w].leader), 0);
  uint64_t at = uv_hrtime();
  waiting_for = &A[w];
  cr_assert(run_until(someone_else_leads, TICK + SLACK));
  cr_assert_leq(secs(A[leader_index()].elected_at - at), TICK + SLACK);
  assert_never_two();
}

Test(leader, release_with_redis_down_still_calls_back_once_later) {
  start_all();
  cr_assert(run_until(one_leader, 2));
  int w = leader_index();
  A[w].redis.opts.reconnect = 0;
  test_redis_kill(&R);
  /* let the client notice the connection is gone */
  for (int i = 0; i < 50 && A[w].redis.state == REDIS_STATE_READY; i++) run_for(0.02);
  cr_assert_neq(A[w].redis.state, REDIS_STATE_READY);
  waiting_for = &A[w];
  int was = leader_is_leader(&A[w].leader);
  cr_assert_eq(leader_release(&A[w].leader, on_released, NULL), 0);
  cr_assert_not(leader_is_leader(&A[w].leader));
  cr_assert_eq(A[w].releases, 0, "not inside the call");
  cr_assert(run_until(released_done, 1));
  run_for(0.05);
  cr_assert_eq(A[w].releases, 1, "exactly once");
  cr_assert_lt(A[w].release_status, 0);
  cr_assert_eq(A[w].lost, 1, "it led until the release or lost it by the clock");
  cr_assert_str_eq(A[w].why, was ? "released" : "lease_expired");
}

Test(leader, release_when_not_leader_and_close_with_commands_pending) {
  start_all();
  cr_assert(run_until(one_leader, 2));
  int f = (leader_index() + 1) % NAG;
  waiting_for = &A[f];
  cr_assert_eq(leader_release(&A[f].leader, on_released, NULL), 0);
  cr_assert(run_until(released_done, 2));
  cr_assert_eq(A[f].release_status, 0);
  cr_assert_eq(A[f].lost, 0, "no on_change for a follower");
  cr_assert_eq(believers(), 1, "a follower's release leaves the leader alone");
  /* Freeze the server so every agent's next command stays pending, then
   * close: the close callbacks wait for the failures redis_close delivers. */
  kill(R.pid, SIGSTOP);
  run_for(TICK + 0.05);
  int pending = 0;
  for (int i = 0; i < NAG; i++) pending += A[i].leader.tick_pending;
  cr_assert_gt(pending, 0);
  for (int i = 0; i < NAG; i++) leader_close(&A[i].leader, leader_closed);
  run_for(0.05);
  for (int i = 0; i < NAG; i++)
    cr_assert_eq(A[i].closed, A[i].leader.tick_pending ? 0 : 1,
                 "agent %d: closed only once nothing is pending", i);
  for (int i = 0; i < NAG; i++) redis_close(&A[i].redis, NULL);
  run_for(0.05);
  for (int i = 0; i < NAG; i++) cr_assert_eq(A[i].closed, 1);
  assert_never_two();
}

static bool w_pending(void) { return waiting_for->leader.tick_pending == 1; }
static bool w_idle(void) { return waiting_for->leader.tick_pending == 0; }

Test(leader, a_slow_renewal_counts_from_when_it_was_sent) {
  /* The server is frozen before the renewal goes out and thawed 0.3 s
   * later: the lease it grants runs from the send, so 0.3 s of it is
   * already gone when the answer arrives. */
  start_all();
  cr_assert(run_until(one_leader, 2));
  waiting_for = &A[leader_index()];
  cr_assert(run_until(w_pending, 2 * TICK));
  cr_assert(run_until(w_idle, 1)); /* a renewal just completed */
  kill(R.pid, SIGSTOP);
  cr_assert(run_until(w_pending, 2 * TICK), "no renewal sent");
  uint64_t sent = waiting_for->leader.tick_sent;
  run_for(0.3);
  kill(R.pid, SIGCONT);
  cr_assert(run_until(w_idle, 1), "no answer after the thaw");
  uint64_t now = uv_hrtime();
  cr_assert(leader_is_leader(&waiting_for->leader), "renewed in time");
  double left = leader_lease_remaining(&waiting_for->leader);
  double expect = TTL - MARGIN - secs(now - sent);
  cr_assert_leq(left, expect + 0.001, "%.3f s left, at most %.3f from the send", left, expect);
  cr_assert_lt(left, TTL - MARGIN - 0.25);
  assert_never_two();
}
