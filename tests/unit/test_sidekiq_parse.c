#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sidekiq.h"

static const double NOW = 1700000000.0;

static enum sidekiq_job_status lat(const char *json, double *out) {
  char err[128] = "";
  return sidekiq_job_latency(json, strlen(json), NOW, out, err, sizeof(err));
}

Test(sidekiq_job, sidekiq7_float_seconds) {
  double l;
  cr_assert_eq(lat("{\"class\":\"W\",\"args\":[],\"enqueued_at\":1699999987.5,"
                   "\"created_at\":1699999900.0}", &l), SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, 12.5, 1e-6);
}

Test(sidekiq_job, sidekiq8_integer_milliseconds) {
  double l;
  cr_assert_eq(lat("{\"enqueued_at\":1699999996750,\"created_at\":1699999990000}", &l),
               SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, 3.25, 1e-6);
}

Test(sidekiq_job, created_at_stands_in) {
  double l;
  cr_assert_eq(lat("{\"class\":\"W\",\"created_at\":1699999990000}", &l),
               SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, 10.0, 1e-6);
  cr_assert_eq(lat("{\"enqueued_at\":null,\"created_at\":1699999999.0}", &l),
               SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, 1.0, 1e-6);
}

Test(sidekiq_job, neither_timestamp_is_zero_not_error) {
  double l = 99;
  cr_assert_eq(lat("{\"class\":\"W\",\"args\":[1]}", &l), SIDEKIQ_JOB_NO_TIME);
  cr_assert_eq(l, 0.0);
}

Test(sidekiq_job, future_timestamp_is_zero) {
  double l = 99;
  cr_assert_eq(lat("{\"enqueued_at\":1700000100.0}", &l), SIDEKIQ_JOB_OK);
  cr_assert_eq(l, 0.0);
}

Test(sidekiq_job, garbage_is_invalid_with_zero_latency) {
  const char *bad[] = {
      "not json",  "",  "[1,2,3]",  "42",  "\"string\"",  "{\"enqueued_at\":",
      "{\"enqueued_at\":\"1699999987.5\"}", "{\"enqueued_at\":-5}",
      "{\"enqueued_at\":0}", "{\"enqueued_at\":true}", "{\"enqueued_at\":{}}",
      "{\"created_at\":[1]}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    double l = 99;
    char err[128] = "";
    cr_assert_eq(sidekiq_job_latency(bad[i], strlen(bad[i]), NOW, &l, err,
                                     sizeof(err)),
                 SIDEKIQ_JOB_INVALID, "accepted: %s", bad[i]);
    cr_assert_eq(l, 0.0, "latency for %s", bad[i]);
    cr_assert_str_not_empty(err);
  }
}

Test(sidekiq_job, length_is_respected) {
  /* Only the first len bytes are the job: a NUL-less buffer is fine. */
  const char buf[] = "{\"enqueued_at\":1699999990.0}GARBAGE";
  double l;
  char err[64];
  cr_assert_eq(sidekiq_job_latency(buf, strlen(buf) - 7, NOW, &l, err, sizeof(err)),
               SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, 10.0, 1e-6);
}

Test(sidekiq_job, timestamp_units_by_magnitude) {
  cr_assert_float_eq(sidekiq_timestamp_seconds(1700000000.25), 1700000000.25, 1e-6);
  cr_assert_float_eq(sidekiq_timestamp_seconds(1700000000250.0), 1700000000.25, 1e-6);
}

Test(sidekiq_process, info_json_concurrency) {
  long long b, c;
  char err[128];
  cr_assert_eq(sidekiq_process_parse("3", "{\"hostname\":\"h\",\"concurrency\":10}",
                                     NULL, &b, &c, err, sizeof(err)), 0);
  cr_assert_eq(b, 3);
  cr_assert_eq(c, 10);
}

Test(sidekiq_process, concurrency_field_wins) {
  long long b, c;
  char err[128];
  cr_assert_eq(sidekiq_process_parse("2", "{\"hostname\":\"h\"}", "25", &b, &c,
                                     err, sizeof(err)), 0);
  cr_assert_eq(c, 25);
  cr_assert_eq(b, 2);
}

Test(sidekiq_process, gone_when_no_info) {
  long long b = -1, c = -1;
  char err[128];
  cr_assert_eq(sidekiq_process_parse(NULL, NULL, NULL, &b, &c, err, sizeof(err)), 1);
  cr_assert_eq(sidekiq_process_parse("1", NULL, "5", &b, &c, err, sizeof(err)), 1);
}

Test(sidekiq_process, busy_missing_counts_zero) {
  long long b = -1, c;
  char err[128];
  cr_assert_eq(sidekiq_process_parse(NULL, "{\"concurrency\":5}", NULL, &b, &c,
                                     err, sizeof(err)), 0);
  cr_assert_eq(b, 0);
}

Test(sidekiq_process, malformed) {
  long long b, c;
  char err[128];
  cr_assert_eq(sidekiq_process_parse("x", "{\"concurrency\":5}", NULL, &b, &c, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "busy"));
  cr_assert_eq(sidekiq_process_parse("-1", "{\"concurrency\":5}", NULL, &b, &c, err, sizeof(err)), -1);
  cr_assert_eq(sidekiq_process_parse("1", "not json", NULL, &b, &c, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "concurrency"));
  cr_assert_eq(sidekiq_process_parse("1", "{\"concurrency\":2.5}", NULL, &b, &c, err, sizeof(err)), -1);
  cr_assert_eq(sidekiq_process_parse("1", "{\"concurrency\":\"5\"}", NULL, &b, &c, err, sizeof(err)), -1);
  cr_assert_eq(sidekiq_process_parse("1", "{}", "abc", &b, &c, err, sizeof(err)), -1);
  cr_assert_eq(sidekiq_process_parse("99999999999999999999", "{\"concurrency\":5}", NULL, &b, &c, err, sizeof(err)), -1);
}
