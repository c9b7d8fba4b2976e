/*
 * heroku_reply_parse: the pure classification of Platform API replies.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "heroku.h"

static const char FORMATION[] =
    "{\"app\":{\"id\":\"01234567-89ab-cdef-0123-456789abcdef\",\"name\":\"example\"},"
    "\"command\":\"bundle exec sidekiq\",\"created_at\":\"2012-01-01T12:00:00Z\","
    "\"dyno_size\":{\"id\":\"01234567-89ab-cdef-0123-456789abcdef\",\"name\":\"Standard-1X\"},"
    "\"id\":\"01234567-89ab-cdef-0123-456789abcdef\",\"quantity\":%s,"
    "\"size\":\"Standard-1X\",\"type\":\"worker\",\"updated_at\":\"2012-01-01T12:00:00Z\"}";

static heroku_result_t res;

static void reset(void) {
  memset(&res, 0x5a, sizeof(res)); /* garbage: parse must set what it owns */
  res.request_id[0] = '\0';
  res.ratelimit_remaining = 42;
  res.attempts = 7;
}

static int parse(long status, const char *body) {
  reset();
  int rc = heroku_reply_parse(status, body, body ? strlen(body) : 0, &res);
  cr_assert_eq(rc, res.status);
  cr_assert_eq(res.http_status, status);
  cr_assert(strlen(res.detail) > 0 && strlen(res.detail) < sizeof(res.detail));
  cr_assert(strchr(res.detail, '\n') == NULL, "detail is one line: %s", res.detail);
  /* Fields the parser does not own are left alone. */
  cr_assert_eq(res.ratelimit_remaining, 42);
  cr_assert_eq(res.attempts, 7);
  return rc;
}

static int parse_quantity(long status, const char *quantity_json) {
  char body[1024];
  snprintf(body, sizeof(body), FORMATION, quantity_json);
  return parse(status, body);
}

TestSuite(heroku_parse, .init = reset);

Test(heroku_parse, good_formation) {
  cr_assert_eq(parse_quantity(200, "3"), 0);
  cr_assert_eq(res.quantity, 3);
  cr_assert_str_empty(res.error_id);
  cr_assert_str_empty(res.message);
  cr_assert_eq(parse_quantity(200, "0"), 0, "zero is a real quantity");
  cr_assert_eq(res.quantity, 0);
  cr_assert_eq(parse_quantity(201, "12"), 0, "any 2xx");
  cr_assert_eq(res.quantity, 12);
  cr_assert_eq(parse_quantity(200, "5.0"), 0, "an integral float is an integer");
  cr_assert_eq(res.quantity, 5);
}

Test(heroku_parse, minimal_object_is_enough) {
  cr_assert_eq(parse(200, "{\"quantity\": 2}"), 0);
  cr_assert_eq(res.quantity, 2);
}

Test(heroku_parse, quantity_missing) {
  cr_assert_eq(parse(200, "{\"type\":\"worker\",\"size\":\"Standard-1X\"}"),
               HEROKU_E_BAD_REPLY);
  cr_assert_eq(res.quantity, -1);
  cr_assert(strstr(res.detail, "quantity") != NULL, "%s", res.detail);
}

Test(heroku_parse, quantity_not_a_number) {
  const char *bad[] = {"\"3\"", "null", "true", "[3]", "{\"n\":3}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    cr_assert_eq(parse_quantity(200, bad[i]), HEROKU_E_BAD_REPLY, "%s", bad[i]);
    cr_assert_eq(res.quantity, -1);
    cr_assert(strstr(res.detail, "not a number") != NULL, "%s", res.detail);
  }
}

Test(heroku_parse, quantity_negative_fractional_or_huge) {
  const char *bad[] = {"-1", "2.5", "1e12", "-0.5"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    cr_assert_eq(parse_quantity(200, bad[i]), HEROKU_E_BAD_REPLY, "%s", bad[i]);
    cr_assert_eq(res.quantity, -1);
    cr_assert(strstr(res.detail, "non-negative integer") != NULL, "%s", res.detail);
  }
}

Test(heroku_parse, non_json_body) {
  cr_assert_eq(parse(200, "<html><body>Welcome to nginx!</body></html>"),
               HEROKU_E_BAD_REPLY);
  cr_assert(strstr(res.detail, "not a JSON object") != NULL, "%s", res.detail);
  cr_assert(strstr(res.detail, "HEROKU_API_URL") != NULL, "says what to check");
  cr_assert(strstr(res.detail, "<html>") != NULL, "shows the start: %s", res.detail);
  cr_assert_eq(parse(200, "{\"quantity\": 3"), HEROKU_E_BAD_REPLY, "truncated JSON");
  cr_assert_eq(parse(200, "[{\"quantity\": 3}]"), HEROKU_E_BAD_REPLY,
               "a list is not a formation");
  cr_assert_eq(parse(200, "3"), HEROKU_E_BAD_REPLY);
}

Test(heroku_parse, control_characters_do_not_reach_the_detail) {
  cr_assert_eq(parse(200, "\x01\x02garbage\r\nSet-Cookie: x"), HEROKU_E_BAD_REPLY);
  for (const char *p = res.detail; *p; p++)
    cr_assert((unsigned char)*p >= ' ', "control character in %s", res.detail);
}

Test(heroku_parse, empty_body) {
  cr_assert_eq(parse(200, ""), HEROKU_E_BAD_REPLY);
  cr_assert(strstr(res.detail, "empty") != NULL, "%s", res.detail);
  cr_assert_eq(parse(200, NULL), HEROKU_E_BAD_REPLY);
  /* An error status with no body is still classified by its status. */
  cr_assert_eq(parse(503, ""), HEROKU_E_UNAVAILABLE);
  cr_assert(strstr(res.detail, "empty body") != NULL, "%s", res.detail);
  cr_assert_eq(parse(401, NULL), HEROKU_E_AUTH);
}

Test(heroku_parse, huge_body_is_capped) {
  size_t len = HEROKU_MAX_BODY + 1;
  char *body = malloc(len);
  cr_assert(body != NULL);
  memset(body, ' ', len);
  memcpy(body, "{\"quantity\":1}", 14); /* valid JSON then blanks */
  reset();
  cr_assert_eq(heroku_reply_parse(200, body, len, &res), HEROKU_E_BAD_REPLY);
  cr_assert(strstr(res.detail, "limit") != NULL, "%s", res.detail);
  reset();
  cr_assert_eq(heroku_reply_parse(503, body, len, &res), HEROKU_E_BAD_REPLY,
               "whatever the status");
  /* Exactly at the cap is fine. */
  reset();
  cr_assert_eq(heroku_reply_parse(200, body, HEROKU_MAX_BODY, &res), 0);
  cr_assert_eq(res.quantity, 1);
  free(body);
}

Test(heroku_parse, unauthorized_401) {
  cr_assert_eq(parse(401, "{\"id\":\"unauthorized\",\"message\":\"Invalid credentials provided.\"}"),
               HEROKU_E_AUTH);
  cr_assert_str_eq(res.error_id, "unauthorized");
  cr_assert_str_eq(res.message, "Invalid credentials provided.");
  cr_assert_eq(res.quantity, -1);
  cr_assert(strstr(res.detail, "HEROKU_API_KEY") != NULL, "%s", res.detail);
  cr_assert(strstr(res.detail, "401") != NULL);
  cr_assert(strstr(res.detail, "Invalid credentials provided.") != NULL);
  cr_assert_not(heroku_http_retryable(401));
}

Test(heroku_parse, forbidden_403) {
  cr_assert_eq(parse(403, "{\"id\":\"forbidden\",\"message\":\"You do not have access to the app example.\"}"),
               HEROKU_E_AUTH);
  cr_assert_str_eq(res.error_id, "forbidden");
  cr_assert(strstr(res.detail, "permission") != NULL, "%s", res.detail);
  cr_assert_not(heroku_http_retryable(403));
}

Test(heroku_parse, not_found_404) {
  cr_assert_eq(parse(404, "{\"id\":\"not_found\",\"message\":\"Couldn't find that app.\"}"),
               HEROKU_E_NOT_FOUND);
  cr_assert_str_eq(res.error_id, "not_found");
  cr_assert(strstr(res.detail, "HEROKU_APP_NAME") != NULL, "%s", res.detail);
  cr_assert(strstr(res.detail, "SCALEKIQ_FORMATION") != NULL, "%s", res.detail);
  cr_assert_not(heroku_http_retryable(404));
}

Test(heroku_parse, invalid_params_422_is_rejected) {
  cr_assert_eq(parse(422, "{\"id\":\"invalid_params\",\"message\":\"Invalid quantity.\"}"),
               HEROKU_E_REJECTED);
  cr_assert_str_eq(res.error_id, "invalid_params");
  cr_assert_not(heroku_http_retryable(422));
}

Test(heroku_parse, cannot_run_above_limit_422_is_limit) {
  cr_assert_eq(parse(422, "{\"id\":\"cannot_run_above_limit\",\"message\":"
                          "\"Cannot run more than 10 Standard-1X dynos.\"}"),
               HEROKU_E_LIMIT);
  cr_assert_str_eq(res.error_id, "cannot_run_above_limit");
  cr_assert(strstr(res.detail, "maxscale") != NULL, "%s", res.detail);
}

Test(heroku_parse, rate_limit_429_is_retryable) {
  cr_assert_eq(parse(429, "{\"id\":\"rate_limit\",\"message\":\"Your account reached the API rate limit\"}"),
               HEROKU_E_UNAVAILABLE);
  cr_assert_str_eq(res.error_id, "rate_limit");
  cr_assert(strstr(res.detail, "rate limit") != NULL, "%s", res.detail);
  cr_assert(heroku_http_retryable(429));
}

Test(heroku_parse, unavailable_503_json_or_html) {
  cr_assert_eq(parse(503, "{\"id\":\"service_unavailable\",\"message\":\"Service Unavailable\"}"),
               HEROKU_E_UNAVAILABLE);
  cr_assert_str_eq(res.error_id, "service_unavailable");
  cr_assert(strstr(res.detail, "status.heroku.com") != NULL, "%s", res.detail);
  cr_assert_eq(parse(503, "<html>Application Error</html>"), HEROKU_E_UNAVAILABLE);
  cr_assert_str_empty(res.error_id);
  cr_assert(strstr(res.detail, "not JSON") != NULL, "%s", res.detail);
  cr_assert(heroku_http_retryable(503));
  cr_assert(heroku_http_retryable(500));
  cr_assert(heroku_http_retryable(504));
  cr_assert_not(heroku_http_retryable(200));
  cr_assert_not(heroku_http_retryable(400));
}

Test(heroku_parse, other_statuses) {
  cr_assert_eq(parse(406, "{\"id\":\"not_acceptable\",\"message\":\"Set Accept.\"}"),
               HEROKU_E_REJECTED);
  cr_assert_eq(parse(400, "{\"id\":\"bad_request\",\"message\":\"x\"}"), HEROKU_E_REJECTED);
  cr_assert_eq(parse(301, ""), HEROKU_E_BAD_REPLY);
  cr_assert(strstr(res.detail, "redirect") != NULL, "%s", res.detail);
  cr_assert_eq(parse(0, ""), HEROKU_E_BAD_REPLY);
}

Test(heroku_parse, error_body_fields_are_sanitized_and_bounded) {
  char body[2048];
  char longmsg[1200];
  memset(longmsg, 'm', sizeof(longmsg) - 1);
  longmsg[sizeof(longmsg) - 1] = '\0';
  snprintf(body, sizeof(body), "{\"id\":\"weird id\\n\",\"message\":\"a\\nb %s\"}",
           longmsg);
  cr_assert_eq(parse(500, body), HEROKU_E_UNAVAILABLE);
  cr_assert(strchr(res.message, '\n') == NULL);
  cr_assert(strchr(res.error_id, ' ') == NULL && strchr(res.error_id, '\n') == NULL);
  cr_assert_eq(strlen(res.message), sizeof(res.message) - 1, "truncated to fit");
  /* Fields of the wrong type are ignored. */
  cr_assert_eq(parse(404, "{\"id\":7,\"message\":[\"x\"]}"), HEROKU_E_NOT_FOUND);
  cr_assert_str_empty(res.error_id);
  cr_assert_str_empty(res.message);
}

Test(heroku_parse, strerror_names_every_code) {
  for (int c = HEROKU_E_CLOSED; c <= 0; c++)
    cr_assert_str_neq(heroku_strerror(c), "unknown error", "code %d", c);
}
