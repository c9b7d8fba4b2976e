/*
 * The Platform API client against the fake API (tests/fakes/fake_heroku.py):
 * real HTTP over curl multi on a libuv loop, with failures injected through
 * the fake's /__fake/ control API.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_heroku.h"
#include "heroku.h"
#include "testutil.h"
#include "version.h"

#define TOKEN "tok-0123456789abcdef"

static fake_heroku_t F;
static uv_loop_t loop;
static heroku_t H;
static int h_open;
static log_t LOG;
static FILE *log_fp;
static char *log_buf;
static size_t log_len;

static int calls;
static heroku_result_t last;

static void on_result(heroku_t *h, const heroku_result_t *r, void *data) {
  (void)h;
  calls++;
  last = *r;
  if (data) *(heroku_result_t *)data = *r;
}

static int run_until(int *counter, int target, double seconds) {
  return test_loop_until(&loop, counter, target, seconds);
}

static void wake(uv_timer_t *t) { (void)t; }

/* Runs until nothing is left on the loop (or the deadline). */
static int drain(double seconds) {
  uv_timer_t w;
  uv_timer_init(&loop, &w);
  uv_timer_start(&w, wake, 20, 20);
  uv_unref((uv_handle_t *)&w);
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  while (uv_loop_alive(&loop) && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&w, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return !uv_loop_alive(&loop);
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

/* What may_change answers, and how often it was asked. */
static int allow_change = 1, change_asked;
static int may_change(void *data) {
  cr_assert_eq(data, &allow_change);
  change_asked++;
  return allow_change;
}

static void client_with(const char *token, const char *app, const char *formation,
                        double timeout, int attempts, double bmin, double bmax) {
  heroku_options_t o;
  heroku_options_default(&o);
  o.may_change = may_change;
  o.may_change_data = &allow_change;
  o.api_url = fake_heroku_url(&F);
  o.app = app;
  o.token = token;
  o.formation = formation;
  o.timeout = timeout;
  o.max_attempts = attempts;
  o.backoff_min = bmin;
  o.backoff_max = bmax;
  o.log = &LOG;
  char err[256];
  int rc = heroku_init(&loop, &H, &o, err, sizeof(err));
  cr_assert_eq(rc, 0, "heroku_init: %s", err);
  h_open = 1;
}

static void client(void) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 5, 3, 0.05, 0.2);
}

static void setup(void) {
  fake_heroku_start(&F, TOKEN, "worker=1");
  cr_assert_eq(uv_loop_init(&loop), 0);
  log_fp = open_memstream(&log_buf, &log_len);
  cr_assert(log_fp != NULL);
  log_init(&LOG, log_fp, LOG_DEBUG);
  calls = 0;
  memset(&last, 0, sizeof(last));
  h_open = 0;
}

static int closed;
static void on_closed(heroku_t *h) {
  (void)h;
  closed++;
}

static void teardown(void) {
  if (h_open) {
    closed = 0;
    heroku_close(&H, on_closed);
    h_open = 0;
    cr_expect(drain(5), "handles left open after heroku_close");
    cr_expect_eq(closed, 1, "close callback once");
  }
  drain(5);
  cr_expect_eq(uv_loop_close(&loop), 0, "a handle was left open");
  fflush(log_fp);
  if (getenv("SCALEKIQ_TEST_SHOW_LOG") && log_buf) /* debugging aid */
    fputs(log_buf, stderr);
  fclose(log_fp);
  free(log_buf);
  log_close(&LOG);
  fake_heroku_stop(&F);
}

TestSuite(heroku, .init = setup, .fini = teardown);

static const char *log_text(void) {
  fflush(log_fp);
  return log_buf ? log_buf : "";
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

static void get_and_wait(double seconds) {
  int before = calls;
  cr_assert_eq(heroku_get_formation(&H, on_result, NULL), 0);
  cr_assert_eq(calls, before, "the callback never runs inside the call");
  cr_assert(run_until(&calls, before + 1, seconds), "no result within %gs", seconds);
}

static void set_and_wait(long q, double seconds) {
  int before = calls;
  cr_assert_eq(heroku_set_quantity(&H, q, on_result, NULL), 0);
  cr_assert_eq(calls, before);
  cr_assert(run_until(&calls, before + 1, seconds), "no result within %gs", seconds);
}

static const char *str_at(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- the happy path ------------------------------------------------ */

Test(heroku, get_formation) {
  client();
  get_and_wait(5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.http_status, 200);
  cr_assert_eq(last.quantity, 1);
  cr_assert_eq(last.attempts, 1);
  cr_assert_eq(strlen(last.request_id), 36, "Request-Id read: '%s'", last.request_id);
  cr_assert_eq(last.ratelimit_remaining, 4499);

  cJSON *reqs = fake_heroku_requests(&F);
  cr_assert_eq(cJSON_GetArraySize(reqs), 1);
  cJSON *r = cJSON_GetArrayItem(reqs, 0);
  cr_assert_str_eq(str_at(r, "method"), "GET");
  cr_assert_str_eq(str_at(r, "path"), "/apps/" FAKE_HEROKU_APP "/formation/worker");
  cr_assert_str_eq(str_at(r, "request_id"), last.request_id);
  cJSON_Delete(reqs);
}

Test(heroku, set_quantity) {
  client();
  set_and_wait(3, 5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.quantity, 3);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 3);

  cJSON *reqs = fake_heroku_requests(&F);
  cr_assert_eq(cJSON_GetArraySize(reqs), 1);
  cJSON *r = cJSON_GetArrayItem(reqs, 0);
  cr_assert_str_eq(str_at(r, "method"), "PATCH");
  cr_assert_str_eq(str_at(r, "path"), "/apps/" FAKE_HEROKU_APP "/formation/worker");
  cJSON *body = cJSON_GetObjectItemCaseSensitive(r, "body");
  cr_assert(cJSON_IsObject(body));
  cr_assert_eq(cJSON_GetArraySize(body), 1, "only quantity is sent");
  cJSON *q = cJSON_GetObjectItemCaseSensitive(body, "quantity");
  cr_assert(cJSON_IsNumber(q) && q->valuedouble == 3);
  cJSON_Delete(reqs);

  /* Back down, and to zero. */
  set_and_wait(0, 5);
  cr_assert_eq(last.status, 0);
  cr_assert_eq(last.quantity, 0);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 0);
  cr_assert_eq(heroku_set_quantity(&H, -1, on_result, NULL), HEROKU_E_INVALID);
}

Test(heroku, request_headers_are_exactly_right) {
  client();
  get_and_wait(5);
  cr_assert_eq(last.status, 0);
  set_and_wait(2, 5);
  cr_assert_eq(last.status, 0);

  cJSON *reqs = fake_heroku_requests(&F);
  cr_assert_eq(cJSON_GetArraySize(reqs), 2);
  for (int i = 0; i < 2; i++) {
    cJSON *r = cJSON_GetArrayItem(reqs, i);
    cJSON *h = cJSON_GetObjectItemCaseSensitive(r, "headers");
    cr_assert_str_eq(str_at(h, "accept"), "application/vnd.heroku+json; version=3");
    cr_assert_str_eq(str_at(h, "authorization"), "Bearer " TOKEN);
    cr_assert_str_eq(str_at(h, "content-type"), "application/json");
    cr_assert_str_eq(str_at(h, "user-agent"), "scalekiq/" SCALEKIQ_VERSION);
    cr_assert_null(str_at(h, "transfer-encoding"));
    cr_assert_null(str_at(h, "connection"));
    int expected = 4;
    if (i == 1) { /* the PATCH also has its body's length */
      cr_assert_str_eq(str_at(h, "content-length"), "14"); /* {"quantity":2} */
      expected = 5;
    }
    cr_assert_eq(cJSON_GetArraySize(h), expected, "no other logged header");
  }
  cJSON_Delete(reqs);
}

Test(heroku, concurrent_calls_all_complete) {
  client();
  heroku_result_t got[6];
  for (int i = 0; i < 5; i++)
    cr_assert_eq(heroku_get_formation(&H, on_result, &got[i]), 0);
  cr_assert_eq(heroku_set_quantity(&H, 4, on_result, &got[5]), 0);
  cr_assert(run_until(&calls, 6, 10), "only %d of 6 completed", calls);
  for (int i = 0; i < 6; i++) cr_assert_eq(got[i].status, 0, "%d: %s", i, got[i].detail);
  cr_assert_eq(got[5].quantity, 4);
  cr_assert_eq(fake_heroku_request_count(&F), 6);
}

Test(heroku, keeps_working_over_many_sequential_calls) {
  client();
  for (int i = 0; i < 20; i++) {
    set_and_wait(i % 3, 5);
    cr_assert_eq(last.status, 0, "%d: %s", i, last.detail);
    cr_assert_eq(last.quantity, i % 3);
  }
  cr_assert_eq(fake_heroku_request_count(&F), 20);
}

/* ---- errors that are not retried ----------------------------------- */

Test(heroku, unauthorized_is_not_retried_and_says_what_to_fix) {
  client_with("wrong-token-9876", FAKE_HEROKU_APP, "worker", 5, 3, 0.05, 0.2);
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_AUTH, "%s", last.detail);
  cr_assert_eq(last.http_status, 401);
  cr_assert_eq(last.attempts, 1);
  cr_assert_str_eq(last.error_id, "unauthorized");
  cr_assert_str_eq(last.message, "Invalid credentials provided.");
  cr_assert(strstr(last.detail, "HEROKU_API_KEY") != NULL, "%s", last.detail);
  cr_assert(strstr(last.detail, "scalekiq-fake") != NULL, "names the app: %s", last.detail);
  cr_assert(strstr(last.detail, "wrong-token-9876") == NULL);
  cr_assert_eq(fake_heroku_request_count(&F), 1);

  /* The log line has the id, the message and the Request-Id, and never the
   * token (no secret is registered with the log here). */
  const char *log = log_text();
  cr_assert(strstr(log, "level=error event=heroku_error") != NULL, "%s", log);
  cr_assert(strstr(log, "id=unauthorized") != NULL, "%s", log);
  cr_assert(strstr(log, "message=\"Invalid credentials provided.\"") != NULL, "%s", log);
  char rid[128];
  snprintf(rid, sizeof(rid), "request_id=%s", last.request_id);
  cr_assert(strstr(log, rid) != NULL, "%s", log);
  cr_assert(strstr(log, "wrong-token-9876") == NULL, "token logged: %s", log);
  cr_assert(strstr(log, "heroku_retry") == NULL);
}

Test(heroku, forbidden_is_auth_and_not_retried) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"status\": 403, \"id\": \"forbidden\", "
                      "\"message\": \"You do not have access to the app.\"}");
  set_and_wait(2, 5);
  cr_assert_eq(last.status, HEROKU_E_AUTH);
  cr_assert_eq(last.http_status, 403);
  cr_assert_eq(last.attempts, 1);
  cr_assert_eq(fake_heroku_request_count(&F), 1);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 1);
}

Test(heroku, not_found_app_or_type) {
  client_with(TOKEN, "no-such-app", "worker", 5, 3, 0.05, 0.2);
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_NOT_FOUND, "%s", last.detail);
  cr_assert_eq(last.http_status, 404);
  cr_assert_eq(last.attempts, 1);
  cr_assert_str_eq(last.error_id, "not_found");
  cr_assert(strstr(last.detail, "HEROKU_APP_NAME") != NULL, "%s", last.detail);
  cr_assert_eq(fake_heroku_request_count(&F), 1);

  heroku_close(&H, NULL);
  drain(5);
  client_with(TOKEN, FAKE_HEROKU_APP, "clock", 5, 3, 0.05, 0.2);
  set_and_wait(1, 5);
  cr_assert_eq(last.status, HEROKU_E_NOT_FOUND, "%s", last.detail);
  cr_assert(strstr(last.message, "clock") != NULL, "%s", last.message);
  cr_assert_eq(fake_heroku_request_count(&F), 2);
}

Test(heroku, cannot_run_above_limit_is_distinguished) {
  client();
  set_and_wait(101, 5); /* the fake's --max-quantity is 100 */
  cr_assert_eq(last.status, HEROKU_E_LIMIT, "%s", last.detail);
  cr_assert_eq(last.http_status, 422);
  cr_assert_str_eq(last.error_id, "cannot_run_above_limit");
  cr_assert_eq(last.attempts, 1);
  cr_assert(strstr(last.detail, "maxscale") != NULL, "%s", last.detail);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 1);

  /* Another 422 is a plain rejection. */
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"status\": 422, \"id\": \"invalid_params\", "
                      "\"message\": \"Invalid quantity.\"}");
  set_and_wait(2, 5);
  cr_assert_eq(last.status, HEROKU_E_REJECTED, "%s", last.detail);
  cr_assert_str_eq(last.error_id, "invalid_params");
  cr_assert_eq(last.attempts, 1);
  cr_assert_eq(fake_heroku_request_count(&F), 2);
}

Test(heroku, non_json_reply_is_a_clear_error) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"status\": 200, \"body\": \"<html>maintenance</html>\", "
                      "\"headers\": {\"Content-Type\": \"text/html\"}}");
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_BAD_REPLY, "%s", last.detail);
  cr_assert_eq(last.http_status, 200);
  cr_assert_eq(last.attempts, 1);
  cr_assert(strstr(last.detail, "not a JSON object") != NULL, "%s", last.detail);
  cr_assert(strstr(last.detail, "HEROKU_API_URL") != NULL, "%s", last.detail);
  cr_assert_eq(fake_heroku_request_count(&F), 1);
}

/* ---- retried errors ------------------------------------------------ */

Test(heroku, unavailable_twice_then_success) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail", "{\"count\": 2, \"status\": 503}");
  get_and_wait(10);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.quantity, 1);
  cr_assert_eq(last.attempts, 3);
  cr_assert_eq(fake_heroku_request_count(&F), 3);
  const char *log = log_text();
  cr_assert_eq(count_of(log, "event=heroku_retry"), 2, "%s", log);
  cr_assert(strstr(log, "id=service_unavailable") != NULL, "%s", log);
  cr_assert(strstr(log, "event=heroku_error") == NULL, "%s", log);
}

Test(heroku, unavailable_every_time_gives_up_after_max_attempts) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"count\": 5, \"status\": 503, \"body\": \"<h1>Application Error</h1>\"}");
  get_and_wait(10);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(last.http_status, 503);
  cr_assert_eq(last.attempts, 3);
  cr_assert(strstr(last.detail, "after 3 attempts") != NULL, "%s", last.detail);
  cr_assert_eq(fake_heroku_request_count(&F), 3);
}

Test(heroku, rate_limited_429_waits_then_retries) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 5, 3, 0.02, 0.4);
  fake_heroku_control(&F, "POST", "/__fake/fail", "{\"count\": 1, \"status\": 429}");
  double t0 = now_s();
  get_and_wait(10);
  double took = now_s() - t0;
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.attempts, 2);
  cr_assert_geq(took, 0.4, "retried after %.3fs, before backoff_max", took);
  cr_assert_lt(took, 3.0);

  cJSON *reqs = fake_heroku_requests(&F);
  cr_assert_eq(cJSON_GetArraySize(reqs), 2);
  cJSON *a = cJSON_GetArrayItem(reqs, 0), *b = cJSON_GetArrayItem(reqs, 1);
  cr_assert_str_eq(str_at(a, "rate_limit_remaining"), "0");
  double gap = cJSON_GetObjectItem(b, "time")->valuedouble -
               cJSON_GetObjectItem(a, "time")->valuedouble;
  cr_assert_geq(gap, 0.39, "the fake saw the retry %.3fs later", gap);
  cJSON_Delete(reqs);
  cr_assert(strstr(log_text(), "event=heroku_ratelimit_low remaining=0") != NULL,
            "%s", log_text());
}

Test(heroku, remaining_zero_on_success_delays_the_next_call) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 5, 3, 0.02, 0.4);
  fake_heroku_control(&F, "POST", "/__fake/ratelimit", "{\"remaining\": 1}");
  get_and_wait(5);
  cr_assert_eq(last.status, 0);
  cr_assert_eq(last.ratelimit_remaining, 0);
  /* The quota refills meanwhile; the client still waits before asking. */
  fake_heroku_control(&F, "POST", "/__fake/ratelimit", "{\"remaining\": 100}");
  double t0 = now_s();
  get_and_wait(5);
  double took = now_s() - t0;
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.attempts, 1);
  cr_assert_geq(took, 0.35, "next call after %.3fs", took);
}

Test(heroku, stall_beyond_timeout_is_a_timeout_not_a_hang) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 0.3, 2, 0.02, 0.05);
  fake_heroku_control(&F, "POST", "/__fake/stall", "{\"count\": 2, \"seconds\": 3}");
  double t0 = now_s();
  get_and_wait(5);
  double took = now_s() - t0;
  cr_assert_eq(last.status, HEROKU_E_TIMEOUT, "%s", last.detail);
  cr_assert_eq(last.attempts, 2);
  cr_assert_eq(last.http_status, 0);
  cr_assert(strstr(last.detail, "0.3s") != NULL, "%s", last.detail);
  cr_assert_geq(took, 0.6);
  cr_assert_lt(took, 2.0, "took %.3fs", took);
}

Test(heroku, single_stall_is_retried) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 0.3, 3, 0.02, 0.05);
  fake_heroku_control(&F, "POST", "/__fake/stall", "{\"count\": 1, \"seconds\": 2}");
  get_and_wait(5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.attempts, 2);
  cr_assert_eq(last.quantity, 1);
}

/* A change whose outcome is unknown is handed back, not sent again: the
 * caller reads the formation first (see the agent), so a change that did
 * apply is never applied twice. */
Test(heroku, patch_that_may_have_applied_is_not_retried) {
  client();
  /* The PATCH takes effect, then the reply is cut in half. */
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"count\": 1, \"status\": 200, \"close\": true, \"apply\": true}");
  set_and_wait(3, 5);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(last.attempts, 1);
  cr_assert_eq(fake_heroku_request_count(&F), 1);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 3);

  fake_heroku_control(&F, "POST", "/__fake/fail", "{\"count\": 1, \"status\": 503}");
  set_and_wait(4, 5);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(last.attempts, 1);
  cr_assert(strstr(log_text(), "event=heroku_retry") == NULL, "%s", log_text());
}

/* A kept-alive connection that dies after the PATCH applied, before any
 * reply: libcurl would quietly send it again on a new connection. */
Test(heroku, patch_on_a_connection_that_dies_is_not_resent_by_libcurl) {
  client();
  get_and_wait(5); /* leaves a connection to reuse */
  cr_assert_eq(last.status, 0, "%s", last.detail);
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"count\": 1, \"status\": 200, \"close\": \"immediate\", "
                      "\"apply\": true, \"method\": \"PATCH\"}");
  set_and_wait(2, 5);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(fake_heroku_count(&F, "PATCH"), 1, "the change was sent %d times",
               fake_heroku_count(&F, "PATCH"));
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 2);
}

/* The lease is asked once more at the last moment: a leader that lost it
 * between its check and the send sends nothing. Reads are not asked. */
Test(heroku, a_change_vetoed_at_the_last_moment_is_not_sent) {
  client();
  allow_change = 0;
  get_and_wait(5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(change_asked, 0, "a read asked may_change");
  set_and_wait(2, 5);
  cr_assert_eq(last.status, HEROKU_E_VETOED, "%s", last.detail);
  cr_assert_eq(last.attempts, 1);
  cr_assert_eq(change_asked, 1);
  cr_assert_eq(fake_heroku_count(&F, "PATCH"), 0, "the vetoed change reached the API");
  cr_assert(strstr(last.detail, "does not hold the lock"), "%s", last.detail);
  allow_change = 1;
  set_and_wait(3, 5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 3);
}

Test(heroku, patch_that_timed_out_is_not_retried) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 0.3, 3, 0.02, 0.05);
  fake_heroku_control(&F, "POST", "/__fake/stall", "{\"count\": 1, \"seconds\": 2}");
  set_and_wait(5, 5);
  cr_assert_eq(last.status, HEROKU_E_TIMEOUT, "%s", last.detail);
  cr_assert_eq(last.attempts, 1);
  cr_assert(strstr(log_text(), "event=heroku_retry") == NULL, "%s", log_text());
}

Test(heroku, patch_refused_by_the_rate_limit_is_retried) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail", "{\"count\": 1, \"status\": 429}");
  set_and_wait(2, 10);
  cr_assert_eq(last.status, 0, "%s", last.detail);
  cr_assert_eq(last.attempts, 2);
  cr_assert_eq(fake_heroku_quantity(&F, "worker"), 2);
}

Test(heroku, connection_dropped_every_time_is_an_error) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/fail",
                      "{\"count\": 3, \"close\": \"immediate\"}");
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(last.attempts, 3);
  cr_assert(strstr(last.detail, "network error") != NULL, "%s", last.detail);
  cr_assert_eq(fake_heroku_request_count(&F), 3);
  /* And the next call works again. */
  get_and_wait(5);
  cr_assert_eq(last.status, 0, "%s", last.detail);
}

Test(heroku, connection_refused_is_unavailable) {
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", test_free_port());
  heroku_options_t o;
  heroku_options_default(&o);
  o.api_url = url;
  o.app = FAKE_HEROKU_APP;
  o.token = TOKEN;
  o.timeout = 2;
  o.backoff_min = 0.02;
  o.backoff_max = 0.05;
  o.log = &LOG;
  cr_assert_eq(heroku_init(&loop, &H, &o, NULL, 0), 0);
  h_open = 1;
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_UNAVAILABLE, "%s", last.detail);
  cr_assert_eq(last.attempts, 3);
  cr_assert_eq(last.http_status, 0);
}

/* ---- life cycle ---------------------------------------------------- */

Test(heroku, close_fails_calls_in_flight_once) {
  client();
  fake_heroku_control(&F, "POST", "/__fake/stall", "{\"count\": 2, \"seconds\": 5}");
  heroku_result_t a, b;
  cr_assert_eq(heroku_get_formation(&H, on_result, &a), 0);
  cr_assert_eq(heroku_set_quantity(&H, 2, on_result, &b), 0);
  run_until(&calls, 1, 0.3); /* both are on the wire by now */
  cr_assert_eq(calls, 0);
  closed = 0;
  heroku_close(&H, on_closed);
  h_open = 0;
  cr_assert_eq(calls, 2, "every call failed during heroku_close");
  cr_assert_eq(a.status, HEROKU_E_CLOSED);
  cr_assert_eq(b.status, HEROKU_E_CLOSED);
  cr_assert_eq(heroku_get_formation(&H, on_result, NULL), HEROKU_E_CLOSED);
  cr_assert_eq(closed, 0, "the close callback comes later");
  cr_assert(drain(5));
  cr_assert_eq(closed, 1);
  cr_assert_eq(calls, 2);
}

static void close_from_callback(heroku_t *h, const heroku_result_t *r, void *data) {
  on_result(h, r, data);
  heroku_close(h, on_closed);
}

static int saw_retry;
static void check_retry(uv_timer_t *t) {
  (void)t;
  saw_retry = strstr(log_text(), "event=heroku_retry") != NULL;
}

Test(heroku, close_from_a_callback_and_while_waiting_to_retry) {
  client_with(TOKEN, FAKE_HEROKU_APP, "worker", 5, 3, 2.0, 4.0);
  fake_heroku_control(&F, "POST", "/__fake/fail", "{\"count\": 1, \"status\": 503}");
  heroku_result_t a, b;
  /* b fails once and waits out a backoff of at least a second... */
  cr_assert_eq(heroku_get_formation(&H, on_result, &b), 0);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, check_retry, 5, 5);
  saw_retry = 0;
  cr_assert(run_until(&saw_retry, 1, 5), "no retry scheduled");
  uv_close((uv_handle_t *)&t, NULL);
  /* ... while a succeeds and closes the client from its callback. */
  cr_assert_eq(heroku_get_formation(&H, close_from_callback, &a), 0);
  closed = 0;
  cr_assert(run_until(&calls, 2, 1.5), "b was not failed by the close");
  h_open = 0;
  cr_assert(drain(5));
  cr_assert_eq(closed, 1);
  cr_assert_eq(calls, 2);
  cr_assert_eq(a.status, 0, "%s", a.detail);
  cr_assert_eq(b.status, HEROKU_E_CLOSED, "%s", b.detail);
  cr_assert_eq(b.attempts, 1);
  cr_assert_eq(fake_heroku_request_count(&F), 2);
}

Test(heroku, start_and_close_without_a_call) {
  client();
  closed = 0;
  heroku_close(&H, on_closed);
  heroku_close(&H, on_closed); /* twice is harmless */
  h_open = 0;
  cr_assert(drain(5));
  cr_assert_eq(closed, 1);
}

static void expect_refused(const char *url, const char *token, const char *want) {
  heroku_options_t o;
  heroku_options_default(&o);
  o.api_url = url;
  o.app = FAKE_HEROKU_APP;
  o.token = token;
  char err[512] = "";
  heroku_t h;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID,
               "accepted %s", url ? url : "(null)");
  cr_assert(strstr(err, want) != NULL, "%s: %s", url ? url : "(null)", err);
  if (token && strlen(token) > 3) cr_assert(strstr(err, token) == NULL, "%s", err);
  cr_assert(strstr(err, "s3cret") == NULL, "%s", err);
}

static void expect_accepted(const char *url) {
  heroku_options_t o;
  heroku_options_default(&o);
  o.api_url = url;
  o.app = FAKE_HEROKU_APP;
  o.token = TOKEN;
  char err[512] = "";
  heroku_t h;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), 0, "%s: %s", url, err);
  heroku_close(&h, NULL);
  cr_assert(drain(5));
}

Test(heroku, init_enforces_https_except_loopback) {
  expect_refused("http://api.heroku.com", TOKEN, "unencrypted");
  expect_refused("http://10.0.0.1:8080", TOKEN, "unencrypted");
  expect_refused("http://127.0.0.1.example.com", TOKEN, "unencrypted");
  expect_refused("http://localhost@example.com", TOKEN, "user name");
  expect_refused("https://user:s3cret@api.heroku.com", TOKEN, "user name");
  expect_refused("ftp://127.0.0.1", TOKEN, "https://");
  expect_refused("api.heroku.com", TOKEN, "HEROKU_API_URL");
  expect_refused("https://api.heroku.com?x=1", TOKEN, "query");
  expect_refused("", TOKEN, "HEROKU_API_URL");
  expect_refused("https://api.heroku.com", "", "HEROKU_API_KEY");
  expect_refused("https://api.heroku.com", NULL, "HEROKU_API_KEY");
  expect_refused("https://api.heroku.com", "tok\r\nX-Evil: 1", "HEROKU_API_KEY");
  expect_refused("https://api.heroku.com", "tok with space", "HEROKU_API_KEY");

  expect_accepted("https://api.heroku.com");
  expect_accepted("https://api.heroku.com/");
  expect_accepted("http://127.0.0.1:5000");
  expect_accepted("http://localhost:5000/base");
  expect_accepted("http://[::1]:5000");
  cr_assert_eq(uv_loop_alive(&loop), 0);
}

Test(heroku, init_checks_options) {
  heroku_options_t o;
  heroku_options_default(&o);
  o.token = TOKEN;
  char err[256];
  heroku_t h;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID);
  cr_assert(strstr(err, "HEROKU_APP_NAME") != NULL, "%s", err);
  o.app = FAKE_HEROKU_APP;
  o.timeout = 0;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID);
  o.timeout = 1;
  o.max_attempts = 0;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID);
  o.max_attempts = 1;
  o.backoff_min = 2;
  o.backoff_max = 1;
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID);
  o.backoff_max = 2;
  o.formation = "";
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), HEROKU_E_INVALID);
  cr_assert(strstr(err, "SCALEKIQ_FORMATION") != NULL, "%s", err);
}

Test(heroku, app_and_type_are_escaped_in_the_path) {
  client_with(TOKEN, "odd app/../x", "worker", 5, 1, 0.05, 0.2);
  get_and_wait(5);
  cr_assert_eq(last.status, HEROKU_E_NOT_FOUND, "%s", last.detail);
  cJSON *reqs = fake_heroku_requests(&F);
  cr_assert_str_eq(str_at(cJSON_GetArrayItem(reqs, 0), "path"),
                   "/apps/odd%20app%2F..%2Fx/formation/worker");
  cJSON_Delete(reqs);
}
