/*
 * The client against a real redis-server that dies in the middle of a
 * request: the pending callback gets an error exactly once, nothing
 * crashes, and the client reconnects by itself once the server is back.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "redis.h"
#include "testutil.h"

static test_redis_t R;
static uv_loop_t loop;
static redis_t client;
static int ready, drops, calls, last_status, pong;

static void on_state(redis_t *r, enum redis_state st, int status,
                     const char *detail, void *data) {
  (void)r;
  (void)detail;
  (void)data;
  if (st == REDIS_STATE_READY) ready++;
  if (st == REDIS_STATE_DISCONNECTED && status < 0) drops++;
}

static void on_reply(redis_t *r, int status, redisReply **rep, size_t n,
                     void *data) {
  (void)r;
  (void)data;
  calls++;
  last_status = status;
  if (status == 0 && n == 1 && rep[0]->type == REDIS_REPLY_STATUS &&
      strcmp(rep[0]->str, "PONG") == 0)
    pong++;
}

static int run_until(int *counter, int target, double seconds) {
  return test_loop_until(&loop, counter, target, seconds);
}

/* PINGs until one is answered: the server may still be busy with what
 * the test gave it before. */
static int ping_until_pong(double seconds) {
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  while (pong == 0 && uv_hrtime() < end) {
    int before = calls;
    if (redis_command(&client, on_reply, NULL, "PING") == 0) run_until(&calls, before + 1, 1);
    else run_until(&ready, ready + 1, 1);
  }
  return pong > 0;
}

static void start(void) {
  test_redis_start(&R);
  uv_loop_init(&loop);
  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = 10; /* longer than the test: errors must come from the kill */
  o.backoff_min = 0.05;
  o.backoff_max = 0.2;
  o.on_state = on_state;
  cr_assert_eq(redis_init(&loop, &client, R.url, &o), 0);
}

static void stop(void) {
  test_redis_stop(&R);
  redis_close(&client, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
}

TestSuite(reconnect, .init = start, .fini = stop);

Test(reconnect, kill_mid_request_then_come_back) {
  redis_connect(&client);
  cr_assert(run_until(&ready, 1, 5), "never connected");

  /* The server is busy with this for 5 s: kill it meanwhile. */
  cr_assert_eq(redis_command(&client, on_reply, NULL, "DEBUG SLEEP 5"), 0);
  cr_assert_eq(redis_command(&client, on_reply, NULL, "PING"), 0);
  uv_run(&loop, UV_RUN_NOWAIT); /* written */
  test_redis_kill(&R);
  cr_assert(run_until(&calls, 2, 5), "pending requests were not failed");
  cr_assert_eq(calls, 2, "each pending callback exactly once");
  cr_assert_eq(last_status, REDIS_E_IO);
  cr_assert_geq(drops, 1);
  cr_assert_eq(client.state == REDIS_STATE_READY, 0);

  /* While it is down, sends are refused at once or fail: never hang. */
  int rc = redis_command(&client, on_reply, NULL, "PING");
  if (rc == 0) cr_assert(run_until(&calls, 3, 5));
  else cr_assert_eq(rc, REDIS_E_NOTCONN);

  /* Back on the same port: the client reconnects by itself. */
  test_redis_restart(&R);
  cr_assert(run_until(&ready, 2, 10), "did not reconnect");
  cr_assert(ping_until_pong(5), "no PONG after reconnect");
  cr_assert_geq(client.stats.connects, 2);
}

Test(reconnect, server_timeout_is_reported_and_recovers) {
  /* A request that outlives its deadline drops the connection. */
  redis_close(&client, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = 0.2;
  o.backoff_min = 0.05;
  o.backoff_max = 0.1;
  o.on_state = on_state;
  cr_assert_eq(redis_init(&loop, &client, R.url, &o), 0);
  redis_connect(&client);
  cr_assert(run_until(&ready, 1, 5));
  cr_assert_eq(redis_command(&client, on_reply, NULL, "DEBUG SLEEP 0.6"), 0);
  cr_assert(run_until(&calls, 1, 5));
  cr_assert_eq(last_status, REDIS_E_TIMEOUT);
  cr_assert(run_until(&ready, 2, 5), "did not reconnect after the timeout");
  cr_assert(ping_until_pong(5), "no PONG after reconnect");
}
