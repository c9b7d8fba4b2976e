/*
 * store against a real redis-server: the exact strings the Ruby gem
 * writes and reads, atomic fenced saves (one EVAL), safe loads of
 * whatever is in Redis, and errors delivered exactly once.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "testutil.h"

static test_redis_t R;
static uv_loop_t loop;
static redis_t client;
static store_t store;
static log_t lg;
static FILE *log_file;
static int ready;

static int save_calls, save_status;
static int load_calls, load_status;
static scaler_state_t loaded;
static char warning[1024];
static int had_warning;

static void on_state(redis_t *r, enum redis_state st, int status,
                     const char *detail, void *data) {
  (void)r;
  (void)status;
  (void)detail;
  (void)data;
  if (st == REDIS_STATE_READY) ready++;
}

static void on_save(int status, void *data) {
  (void)data;
  save_calls++;
  save_status = status;
}

static void on_load(int status, const scaler_state_t *st, const char *warn,
                    void *data) {
  (void)data;
  load_calls++;
  load_status = status;
  if (status == 0) {
    cr_assert(st != NULL);
    loaded = *st;
  } else {
    cr_assert(st == NULL);
  }
  had_warning = warn != NULL;
  snprintf(warning, sizeof(warning), "%s", warn ? warn : "");
}

static int run_until(int *counter, int target, double seconds) {
  return test_loop_until(&loop, counter, target, seconds);
}

static void start(void) {
  test_redis_start(&R);
  uv_loop_init(&loop);
  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = 10; /* errors in these tests must come from the test */
  o.reconnect = 0;        /* once down, stay down: sends are refused */
  o.on_state = on_state;
  cr_assert_eq(redis_init(&loop, &client, R.url, &o), 0);
  redis_connect(&client);
  cr_assert(run_until(&ready, 1, 5), "never connected");
  log_file = tmpfile();
  cr_assert(log_file != NULL);
  log_init(&lg, log_file, LOG_DEBUG);
  cr_assert_eq(store_init(&store, &client, NULL, "worker", &lg), 0);
}

static void stop(void) {
  store_close(&store);
  redis_close(&client, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
  test_redis_stop(&R);
  log_close(&lg);
  fclose(log_file);
}

TestSuite(store, .init = start, .fini = stop);

/* ---- helpers ------------------------------------------------------- */

static int save(const scaler_state_t *st, const char *leader_id) {
  int before = save_calls;
  cr_assert_eq(store_save(&store, st, leader_id, on_save, NULL), 0);
  cr_assert(run_until(&save_calls, before + 1, 5), "save never answered");
  return save_status;
}

static void load(double now) {
  int before = load_calls;
  cr_assert_eq(store_load(&store, now, on_load, NULL), 0);
  cr_assert(run_until(&load_calls, before + 1, 5), "load never answered");
  cr_assert_eq(load_status, 0, "load: %s", store_strerror(load_status));
}

/* GET on the test's own blocking connection; NULL when absent. */
static char *get(const char *key) {
  redisReply *r = test_redis_cmd(&R, "GET %s", key);
  char *v = r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
  cr_assert(r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL);
  freeReplyObject(r);
  return v;
}

static void assert_value(const char *key, const char *expected) {
  char *v = get(key);
  if (expected == NULL) cr_assert_null(v, "%s should be absent, is \"%s\"", key, v);
  else {
    cr_assert_not_null(v, "%s is absent", key);
    cr_assert_str_eq(v, expected, "%s", key);
  }
  free(v);
}

static long exists(const char *key) {
  redisReply *r = test_redis_cmd(&R, "EXISTS %s", key);
  long n = (long)r->integer;
  freeReplyObject(r);
  return n;
}

/* One "cmdstat_NAME:calls=N,..." field of INFO commandstats; 0 if absent. */
static long cmd_calls(const char *name) {
  redisReply *r = test_redis_cmd(&R, "INFO commandstats");
  char needle[64];
  snprintf(needle, sizeof(needle), "cmdstat_%s:calls=", name);
  const char *p = strstr(r->str, needle);
  long n = p ? strtol(p + strlen(needle), NULL, 10) : 0;
  freeReplyObject(r);
  return n;
}

static char *log_text(void) {
  fflush(log_file);
  long size = ftell(log_file);
  char *buf = calloc(1, (size_t)size + 1);
  rewind(log_file);
  size_t got = fread(buf, 1, (size_t)size, log_file);
  buf[got] = '\0';
  fseek(log_file, 0, SEEK_END);
  return buf;
}

static scaler_state_t in_event(void) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 3;
  st.last_alerted = 1700000000.5;
  st.event_started = 1699999900.25;
  st.initial_workers = 1;
  return st;
}

/* ---- keys ---------------------------------------------------------- */

Test(store, key_names_are_the_gems) {
  cr_assert_str_eq(store.k_depth, "amigo/autoscaler/depth");
  cr_assert_str_eq(store.k_last_alerted, "amigo/autoscaler/last_alerted");
  cr_assert_str_eq(store.k_event_started,
                   "amigo/autoscaler/latency_event_started");
  cr_assert_str_eq(store.k_initial,
                   "amigo/autoscaler/heroku/worker/active_event_initial_workers");
  cr_assert_str_eq(store.k_leader, "amigo/autoscaler/leader");
  cr_assert_str_eq(store.k_fence, "amigo/autoscaler/fence");
  cr_assert_str_eq(store.k_paused, "amigo/autoscaler/paused");
}

Test(store, init_refuses_an_empty_formation) {
  store_t s;
  cr_assert_eq(store_init(&s, &client, NULL, "", NULL), REDIS_E_INVALID);
  cr_assert_eq(store_init(&s, &client, "x", NULL, NULL), REDIS_E_INVALID);
  store_close(&s); /* harmless on a failed init */
  store_close(&s);
}

/* ---- save ---------------------------------------------------------- */

Test(store, save_writes_the_gems_strings) {
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, NULL), 0);
  assert_value("amigo/autoscaler/depth", "3");
  assert_value("amigo/autoscaler/last_alerted", "1700000000.5");
  assert_value("amigo/autoscaler/latency_event_started", "1699999900.25");
  assert_value("amigo/autoscaler/heroku/worker/active_event_initial_workers",
               "1");
}

Test(store, save_keeps_microseconds_with_a_decimal_point) {
  scaler_state_t st = in_event();
  st.last_alerted = 1700000000.123456;
  st.event_started = 1700000000.0;
  cr_assert_eq(save(&st, NULL), 0);
  char *v = get(store.k_last_alerted);
  cr_assert_str_eq(v, "1700000000.123456");
  cr_assert_float_eq(strtod(v, NULL), 1700000000.123456, 1e-6);
  free(v);
  assert_value(store.k_event_started, "1700000000.0");
}

Test(store, restore_deletes_initial_and_zeroes_event_started) {
  test_redis_cmd_free(&R, "SET %s 2", store.k_depth);
  test_redis_cmd_free(&R, "SET %s 1699999900.5", store.k_event_started);
  test_redis_cmd_free(&R, "SET %s 4", store.k_initial);
  scaler_state_t st = SCALER_STATE_INIT; /* what scaler_apply leaves */
  st.last_alerted = 1700000300.75;
  cr_assert_eq(save(&st, NULL), 0);
  assert_value(store.k_depth, "0");
  assert_value(store.k_last_alerted, "1700000300.75");
  assert_value(store.k_event_started, "0.0"); /* written, not deleted */
  cr_assert_eq(exists(store.k_event_started), 1);
  cr_assert_eq(exists(store.k_initial), 0, "initial workers must be deleted");
}

Test(store, initial_state_writes_zeroes) {
  scaler_state_t st = SCALER_STATE_INIT;
  cr_assert_eq(save(&st, NULL), 0);
  assert_value(store.k_depth, "0");
  assert_value(store.k_last_alerted, "0.0");
  assert_value(store.k_event_started, "0.0");
  assert_value(store.k_initial, NULL);
}

Test(store, save_is_one_eval_in_one_round_trip) {
  test_redis_cmd_free(&R, "CONFIG RESETSTAT");
  redis_stats_t before = client.stats;
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, "me"), STORE_E_NOT_LEADER);
  test_redis_cmd_free(&R, "SET %s me", store.k_leader);
  cr_assert_eq(save(&st, "me"), 0);
  st = SCALER_STATE_INIT;
  cr_assert_eq(save(&st, "me"), 0); /* a restore: 3 SETs and a DEL */
  /* The client wrote one command per save, one write each... */
  cr_assert_eq(client.stats.commands - before.commands, 3);
  cr_assert_eq(client.stats.writes - before.writes, 3);
  /* ...and the server ran them as EVALs. Redis 7 counts the commands a
   * script runs in commandstats too, so SET/DEL show up, but only as many
   * as the scripts made (plus the test's own SET of the leader). */
  cr_assert_eq(cmd_calls("eval"), 3);
  cr_assert_eq(cmd_calls("evalsha"), 0);
  cr_assert_eq(cmd_calls("multi"), 0);
  cr_assert_eq(cmd_calls("get"), 3, "the fencing GET inside each script");
  cr_assert_eq(cmd_calls("set"), 1 + 4 + 3);
  cr_assert_eq(cmd_calls("del"), 1);
}

/* ---- fencing ------------------------------------------------------- */

Test(store, fenced_save_without_a_leader_writes_nothing) {
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, "agent-1"), STORE_E_NOT_LEADER);
  cr_assert_eq(exists(store.k_depth), 0);
  cr_assert_eq(exists(store.k_last_alerted), 0);
  cr_assert_eq(exists(store.k_event_started), 0);
  cr_assert_eq(exists(store.k_initial), 0);
  cr_assert_eq(save_calls, 1);
}

Test(store, fenced_save_under_another_leader_writes_nothing) {
  test_redis_cmd_free(&R, "SET %s agent-2", store.k_leader);
  test_redis_cmd_free(&R, "SET %s 2", store.k_depth);
  test_redis_cmd_free(&R, "SET %s 1700000000.25", store.k_last_alerted);
  test_redis_cmd_free(&R, "SET %s 1699999900.5", store.k_event_started);
  test_redis_cmd_free(&R, "SET %s 5", store.k_initial);
  scaler_state_t st = SCALER_STATE_INIT; /* would delete initial workers */
  cr_assert_eq(save(&st, "agent-1"), STORE_E_NOT_LEADER);
  cr_assert_str_eq(store_strerror(STORE_E_NOT_LEADER),
                   "not the leader: state not written");
  assert_value(store.k_depth, "2");
  assert_value(store.k_last_alerted, "1700000000.25");
  assert_value(store.k_event_started, "1699999900.5");
  assert_value(store.k_initial, "5");
  assert_value(store.k_leader, "agent-2");
  /* A prefix of the id is not the id. */
  cr_assert_eq(save(&st, "agent-"), STORE_E_NOT_LEADER);
}

Test(store, fenced_save_by_the_leader_writes) {
  test_redis_cmd_free(&R, "SET %s agent-1 PX 10000", store.k_leader);
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, "agent-1"), 0);
  assert_value(store.k_depth, "3");
  assert_value(store.k_initial, "1");
  assert_value(store.k_leader, "agent-1"); /* untouched */
  redisReply *ttl = test_redis_cmd(&R, "PTTL %s", store.k_leader);
  cr_assert_gt(ttl->integer, 0, "the lease keeps its TTL");
  freeReplyObject(ttl);
}

/* ---- load ---------------------------------------------------------- */

Test(store, load_what_the_gem_wrote) {
  test_redis_cmd_free(&R, "SET %s 2", store.k_depth);
  test_redis_cmd_free(&R, "SET %s 1700000000.25", store.k_last_alerted);
  test_redis_cmd_free(&R, "SET %s 1699999900.5", store.k_event_started);
  test_redis_cmd_free(&R, "SET %s 1", store.k_initial);
  load(1700000010.0);
  cr_assert(!had_warning, "unexpected warning: %s", warning);
  cr_assert_eq(loaded.depth, 2);
  cr_assert_eq(loaded.last_alerted, 1700000000.25);
  cr_assert_eq(loaded.event_started, 1699999900.5);
  cr_assert_eq(loaded.initial_workers, 1);
  cr_assert_eq(loaded.failures, 0);
  cr_assert_eq(loaded.retry_at, 0);
  cr_assert(!loaded.ceiling_reached);
}

Test(store, load_what_the_gem_wrote_after_a_restore) {
  /* Integer-looking floats from Ruby are "0.0", never "0". */
  test_redis_cmd_free(&R, "SET %s 0", store.k_depth);
  test_redis_cmd_free(&R, "SET %s 1700000000.0", store.k_last_alerted);
  test_redis_cmd_free(&R, "SET %s 0.0", store.k_event_started);
  load(1700000010.0);
  cr_assert(!had_warning, "unexpected warning: %s", warning);
  cr_assert_eq(loaded.depth, 0);
  cr_assert_eq(loaded.last_alerted, 1700000000.0);
  cr_assert_eq(loaded.event_started, 0);
  cr_assert_eq(loaded.initial_workers, -1);
}

Test(store, load_missing_keys_is_the_initial_state) {
  load(1700000010.0);
  cr_assert(!had_warning, "unexpected warning: %s", warning);
  cr_assert_eq(loaded.depth, 0);
  cr_assert_eq(loaded.last_alerted, 0);
  cr_assert_eq(loaded.event_started, 0);
  cr_assert_eq(loaded.initial_workers, -1);
}

Test(store, load_reads_back_what_save_wrote) {
  scaler_state_t st = in_event();
  st.last_alerted = 1700000000.123456;
  cr_assert_eq(save(&st, NULL), 0);
  load(1700000010.0);
  cr_assert(!had_warning, "unexpected warning: %s", warning);
  cr_assert_eq(loaded.depth, 3);
  cr_assert_float_eq(loaded.last_alerted, 1700000000.123456, 1e-6);
  cr_assert_eq(loaded.event_started, 1699999900.25);
  cr_assert_eq(loaded.initial_workers, 1);
}

Test(store, load_nonsense_warns_and_resets_safely) {
  test_redis_cmd_free(&R, "SET %s abc", store.k_depth);
  test_redis_cmd_free(&R, "SET %s yesterday", store.k_last_alerted);
  test_redis_cmd_free(&R, "SET %s 1699999900.5", store.k_event_started);
  test_redis_cmd_free(&R, "SET %s -3", store.k_initial);
  load(1700000010.0);
  cr_assert(had_warning, "nonsense must be reported");
  cr_assert_neq(strstr(warning, "depth"), NULL, "%s", warning);
  cr_assert_neq(strstr(warning, "initial_workers"), NULL, "%s", warning);
  cr_assert_eq(loaded.depth, 0);
  cr_assert_eq(loaded.last_alerted, 0);
  cr_assert_eq(loaded.event_started, 0);
  cr_assert_eq(loaded.initial_workers, -1);
  char *log = log_text();
  cr_assert_neq(strstr(log, "level=warn event=store_state_reset"), NULL, "%s",
                log);
  free(log);
}

Test(store, load_value_with_a_nul_byte_is_nonsense_not_a_prefix) {
  test_redis_cmd_free(&R, "SET %s %b", store.k_depth, "3\0junk", (size_t)7);
  test_redis_cmd_free(&R, "SET %s %b", store.k_initial, "2\0", (size_t)2);
  load(1700000010.0);
  cr_assert(had_warning);
  cr_assert_eq(loaded.depth, 0);
  cr_assert_eq(loaded.initial_workers, -1);
}

Test(store, load_a_key_of_another_type_reads_as_absent) {
  /* MGET answers nil for a non-string key; the next save overwrites it. */
  test_redis_cmd_free(&R, "HSET %s a b", store.k_depth);
  load(1700000010.0);
  cr_assert_eq(loaded.depth, 0);
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, NULL), 0);
  assert_value(store.k_depth, "3");
}

Test(store, load_is_one_mget) {
  test_redis_cmd_free(&R, "CONFIG RESETSTAT");
  redis_stats_t before = client.stats;
  load(1700000010.0);
  cr_assert_eq(client.stats.commands - before.commands, 1);
  cr_assert_eq(cmd_calls("mget"), 1);
  cr_assert_eq(cmd_calls("get"), 0);
}

/* ---- namespaces ---------------------------------------------------- */

Test(store, a_namespace_uses_its_own_keys) {
  store_t ns;
  cr_assert_eq(store_init(&ns, &client, "myapp/scaler", "sidekiq", &lg), 0);
  cr_assert_str_eq(ns.k_depth, "myapp/scaler/depth");
  cr_assert_str_eq(ns.k_initial,
                   "myapp/scaler/heroku/sidekiq/active_event_initial_workers");
  cr_assert_str_eq(ns.k_leader, "myapp/scaler/leader");

  test_redis_cmd_free(&R, "SET %s me", ns.k_leader);
  scaler_state_t st = in_event();
  int before = save_calls;
  cr_assert_eq(store_save(&ns, &st, "me", on_save, NULL), 0);
  cr_assert(run_until(&save_calls, before + 1, 5));
  cr_assert_eq(save_status, 0);
  assert_value("myapp/scaler/depth", "3");
  assert_value("myapp/scaler/last_alerted", "1700000000.5");
  assert_value("myapp/scaler/latency_event_started", "1699999900.25");
  assert_value("myapp/scaler/heroku/sidekiq/active_event_initial_workers", "1");
  /* The default namespace is untouched... */
  redisReply *keys = test_redis_cmd(&R, "KEYS amigo/*");
  cr_assert_eq(keys->elements, 0);
  freeReplyObject(keys);
  /* ...and reads as the initial state, while the namespace reads its own. */
  load(1700000010.0);
  cr_assert_eq(loaded.depth, 0);
  before = load_calls;
  cr_assert_eq(store_load(&ns, 1700000010.0, on_load, NULL), 0);
  cr_assert(run_until(&load_calls, before + 1, 5));
  cr_assert_eq(loaded.depth, 3);
  cr_assert_eq(loaded.initial_workers, 1);
  store_close(&ns);
}

Test(store, default_namespace_with_another_formation) {
  store_t s;
  cr_assert_eq(store_init(&s, &client, "amigo/autoscaler", "urgent", NULL), 0);
  cr_assert_str_eq(s.k_initial,
                   "amigo/autoscaler/heroku/urgent/active_event_initial_workers");
  cr_assert_str_eq(s.k_depth, "amigo/autoscaler/depth");
  store_close(&s);
}

/* ---- errors -------------------------------------------------------- */

static int sleeps;
static void on_sleep(redis_t *r, int status, redisReply **rep, size_t n,
                     void *data) {
  (void)r;
  (void)status;
  (void)rep;
  (void)n;
  (void)data;
  sleeps++;
}

Test(store, redis_down_errors_reach_each_callback_exactly_once) {
  /* Keep the server busy, queue a save and a load behind it, kill it. */
  cr_assert_eq(redis_command(&client, on_sleep, NULL, "DEBUG SLEEP 5"), 0);
  scaler_state_t st = in_event();
  cr_assert_eq(store_save(&store, &st, NULL, on_save, NULL), 0);
  cr_assert_eq(store_load(&store, 1700000010.0, on_load, NULL), 0);
  uv_run(&loop, UV_RUN_NOWAIT); /* written */
  test_redis_kill(&R);
  cr_assert(run_until(&load_calls, 1, 5), "load was never failed");
  cr_assert(run_until(&save_calls, 1, 1), "save was never failed");
  cr_assert_lt(save_status, 0);
  cr_assert_lt(load_status, 0);
  cr_assert_eq(save_status, REDIS_E_IO, "%s", store_strerror(save_status));

  /* Down and not reconnecting: refused at once, no callback ever. */
  cr_assert_eq(store_save(&store, &st, "me", on_save, NULL), REDIS_E_NOTCONN);
  cr_assert_eq(store_load(&store, 0, on_load, NULL), REDIS_E_NOTCONN);
  int never = 0;
  run_until(&never, 1, 0.3);
  cr_assert_eq(save_calls, 1, "exactly once");
  cr_assert_eq(load_calls, 1, "exactly once");
  cr_assert_eq(sleeps, 1);
}

Test(store, a_server_error_is_reported_and_logged) {
  /* WRONGTYPE from the fencing GET inside the script. */
  test_redis_cmd_free(&R, "HSET %s a b", store.k_leader);
  scaler_state_t st = in_event();
  cr_assert_eq(save(&st, "me"), STORE_E_REPLY);
  cr_assert_eq(exists(store.k_depth), 0, "nothing written");
  char *log = log_text();
  cr_assert_neq(strstr(log, "event=store_save_failed"), NULL, "%s", log);
  cr_assert_neq(strstr(log, "WRONGTYPE"), NULL, "%s", log);
  free(log);
}
