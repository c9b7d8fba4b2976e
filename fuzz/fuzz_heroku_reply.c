/*
 * fuzz_heroku_reply: the Platform API reply classifier (lib/heroku_reply.c):
 * the first 2 input bytes pick an HTTP status in 100..599, the rest is
 * the body.
 */
#include "fuzz.h"

#include "heroku.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  long status = 100 + (long)(((unsigned)data[0] << 8 | data[1]) % 500);
  heroku_result_t res;
  memset(&res, 0, sizeof(res));
  int rc = heroku_reply_parse(status, (const char *)data + 2, size - 2, &res);

  FUZZ_CHECK(rc == res.status, "the return value is res->status");
  FUZZ_CHECK(res.http_status == status, "the HTTP status is kept");
  FUZZ_CHECK(res.detail[0] != '\0' && fuzz_is_one_line(res.detail),
             "every reply gets a one-line detail");
  FUZZ_CHECK(fuzz_is_one_line(res.message), "the API's message is kept on one line");
  for (const char *p = res.error_id; *p; p++)
    FUZZ_CHECK((unsigned char)*p > ' ' && *p != '"', "the API's error id is one word");
  if (rc == 0) {
    FUZZ_CHECK(status >= 200 && status <= 299, "only a 2xx succeeds");
    FUZZ_CHECK(res.quantity >= 0, "success means a quantity");
  } else {
    FUZZ_CHECK(res.quantity == -1, "a failure has no quantity");
    FUZZ_CHECK(rc == HEROKU_E_AUTH || rc == HEROKU_E_NOT_FOUND ||
                   rc == HEROKU_E_LIMIT || rc == HEROKU_E_REJECTED ||
                   rc == HEROKU_E_UNAVAILABLE || rc == HEROKU_E_BAD_REPLY,
               "a failure is one of the reply codes");
    FUZZ_CHECK(rc != HEROKU_E_UNAVAILABLE || heroku_http_retryable(status),
               "only retryable statuses are UNAVAILABLE");
    FUZZ_CHECK(heroku_strerror(rc) != NULL, "every code has a name");
  }
  return 0;
}
