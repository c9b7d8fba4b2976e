#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static char *capture(log_t *log, FILE **f, char **buf, size_t *len) {
  *f = open_memstream(buf, len);
  log_init(log, *f, LOG_DEBUG);
  return *buf;
}

Test(log, line_is_logfmt) {
  log_t log;
  FILE *f;
  char *buf = NULL;
  size_t len = 0;
  capture(&log, &f, &buf, &len);
  char q[64];
  log_event(&log, LOG_INFO, "scale_up", "formation=%s from=%d to=%d msg=%s",
            "worker", 1, 2, log_quote(q, sizeof(q), "two words"));
  fclose(f);
  cr_assert_str_eq(buf, "level=info event=scale_up formation=worker from=1 "
                        "to=2 msg=\"two words\"\n");
  free(buf);
  log_close(&log);
}

Test(log, below_min_level_is_dropped) {
  log_t log;
  FILE *f;
  char *buf = NULL;
  size_t len = 0;
  capture(&log, &f, &buf, &len);
  log.min_level = LOG_WARN;
  log_event(&log, LOG_INFO, "x", NULL);
  log_event(&log, LOG_ERROR, "y", NULL);
  fclose(f);
  cr_assert_str_eq(buf, "level=error event=y\n");
  free(buf);
  log_close(&log);
}

Test(log, secrets_are_redacted_wherever_they_appear) {
  log_t log;
  FILE *f;
  char *buf = NULL;
  size_t len = 0;
  capture(&log, &f, &buf, &len);
  cr_assert_eq(log_add_secret(&log, "s3cr3t-token"), 0);
  cr_assert_eq(log_add_secret(&log, "pw"), 0); /* too short: ignored */
  log_event(&log, LOG_ERROR, "oops", "url=redis://:s3cr3t-token@h:1 again=s3cr3t-token pw=1");
  fclose(f);
  cr_assert_null(strstr(buf, "s3cr3t"));
  cr_assert_str_eq(buf, "level=error event=oops url=redis://:[REDACTED]@h:1 "
                        "again=[REDACTED] pw=1\n");
  free(buf);
  log_close(&log);
}

Test(log, quote_escapes) {
  char q[64];
  cr_assert_str_eq(log_quote(q, sizeof(q), "plain"), "plain");
  cr_assert_str_eq(log_quote(q, sizeof(q), ""), "\"\"");
  cr_assert_str_eq(log_quote(q, sizeof(q), "a\"b\\c\nd=e"), "\"a\\\"b\\\\c\\nd=e\"");
  /* truncated, but still one well-formed quoted value */
  cr_assert_str_eq(log_quote(q, 6, "long value"), "\"lo\"");
}
