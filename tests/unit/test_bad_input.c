/*
 * Bad input at every door it comes in by, one table per family: job
 * payloads and process heartbeats (sidekiq), numeric settings (config),
 * Redis and Platform API URLs, control request lines, Platform API
 * replies, and the persisted state (store). Each row names the input and
 * the exact outcome: accepted as which value, or refused with which words.
 * Integration counterparts: test_bad_jobs.c (a real redis-server),
 * test_bad_settings.c (the command line), test_control_input.c (the
 * control socket), test_bad_api_replies.c (a real HTTP server).
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "heroku.h"
#include "redis.h"
#include "scaler.h"
#include "sidekiq.h"
#include "store.h"

static const double NOW = 1700000000.0;

/* ---- job payloads ------------------------------------------------- */

struct job_case {
  const char *what;
  const char *json;
  enum sidekiq_job_status status;
  double latency;
  const char *err; /* a fragment of the error, for INVALID */
};

static const struct job_case JOBS[] = {
    /* what Sidekiq writes */
    {"sidekiq 6/7 float seconds", "{\"class\":\"W\",\"enqueued_at\":1699999970.5}",
     SIDEKIQ_JOB_OK, 29.5, NULL},
    {"sidekiq 8 integer ms", "{\"enqueued_at\":1699999970500}", SIDEKIQ_JOB_OK, 29.5,
     NULL},
    {"sidekiq 8.1 created_at only", "{\"created_at\":1699999990000}", SIDEKIQ_JOB_OK,
     10, NULL},
    {"enqueued_at null, created_at stands in",
     "{\"enqueued_at\":null,\"created_at\":1699999990.0}", SIDEKIQ_JOB_OK, 10, NULL},
    {"blanks after the object", "{\"enqueued_at\":1699999970.5} \r\n\t",
     SIDEKIQ_JOB_OK, 29.5, NULL},
    {"no timestamp at all", "{\"class\":\"W\",\"args\":[]}", SIDEKIQ_JOB_NO_TIME, 0,
     NULL},
    /* clock skew: a job is never early */
    {"100 s in the future", "{\"enqueued_at\":1700000100.0}", SIDEKIQ_JOB_OK, 0, NULL},
    {"100 s in the future, ms", "{\"enqueued_at\":1700000100000}", SIDEKIQ_JOB_OK, 0,
     NULL},
    /* not JSON */
    {"not JSON", "this is not json", SIDEKIQ_JOB_INVALID, 0, "not valid JSON"},
    {"empty", "", SIDEKIQ_JOB_INVALID, 0, "not valid JSON"},
    {"truncated", "{\"enqueued_at\":", SIDEKIQ_JOB_INVALID, 0, "not valid JSON"},
    {"junk after the object", "{\"enqueued_at\":1699999970.5}junk",
     SIDEKIQ_JOB_INVALID, 0, "not valid JSON"},
    {"two objects", "{\"enqueued_at\":1}{\"enqueued_at\":2}", SIDEKIQ_JOB_INVALID, 0,
     "not valid JSON"},
    {"NaN literal", "{\"enqueued_at\":NaN}", SIDEKIQ_JOB_INVALID, 0, "not valid JSON"},
    {"Infinity literal", "{\"enqueued_at\":Infinity}", SIDEKIQ_JOB_INVALID, 0,
     "not valid JSON"},
    /* JSON of the wrong shape */
    {"array", "[{\"enqueued_at\":1699999970.5}]", SIDEKIQ_JOB_INVALID, 0,
     "not an object"},
    {"number", "1699999970.5", SIDEKIQ_JOB_INVALID, 0, "not an object"},
    {"string", "\"job\"", SIDEKIQ_JOB_INVALID, 0, "not an object"},
    {"null", "null", SIDEKIQ_JOB_INVALID, 0, "not an object"},
    /* timestamps that are not times */
    {"string timestamp", "{\"enqueued_at\":\"1699999970.5\"}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"ISO string timestamp", "{\"created_at\":\"2023-11-14T22:13:20Z\"}",
     SIDEKIQ_JOB_INVALID, 0, "created_at is not a positive number"},
    {"boolean timestamp", "{\"enqueued_at\":true}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"object timestamp", "{\"enqueued_at\":{}}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"array timestamp", "{\"created_at\":[1699999970]}", SIDEKIQ_JOB_INVALID, 0,
     "created_at is not a positive number"},
    {"negative", "{\"enqueued_at\":-5}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"zero", "{\"enqueued_at\":0}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"overflow 1e400 (infinite)", "{\"enqueued_at\":1e400}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"underflow 1e-400 (zero)", "{\"enqueued_at\":1e-400}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    {"garbage enqueued_at hides a good created_at",
     "{\"enqueued_at\":\"x\",\"created_at\":1699999990.0}", SIDEKIQ_JOB_INVALID, 0,
     "enqueued_at is not a positive number"},
    /* numbers, but not times anyone wrote: never decades of latency */
    {"1970 (1.0)", "{\"enqueued_at\":1.0}", SIDEKIQ_JOB_INVALID, 0, "before 2001"},
    {"tiny 1e-300", "{\"enqueued_at\":1e-300}", SIDEKIQ_JOB_INVALID, 0, "before 2001"},
    {"just before 2001-09-09", "{\"enqueued_at\":999999999.9}", SIDEKIQ_JOB_INVALID, 0,
     "before 2001"},
    {"ms from 1985", "{\"enqueued_at\":500000000000}", SIDEKIQ_JOB_INVALID, 0,
     "before 2001"},
    {"two days ahead", "{\"enqueued_at\":1700172800.0}", SIDEKIQ_JOB_INVALID, 0,
     "in the future"},
    {"year 5000 in seconds", "{\"enqueued_at\":95000000000}", SIDEKIQ_JOB_INVALID, 0,
     "in the future"},
    {"1e300 (ms of nothing)", "{\"created_at\":1e300}", SIDEKIQ_JOB_INVALID, 0,
     "in the future"},
};

Test(bad_jobs, each_payload_gets_its_latency_or_a_reason) {
  for (size_t i = 0; i < sizeof(JOBS) / sizeof(JOBS[0]); i++) {
    const struct job_case *c = &JOBS[i];
    double l = -1;
    char err[160] = "";
    enum sidekiq_job_status st =
        sidekiq_job_latency(c->json, strlen(c->json), NOW, &l, err, sizeof(err));
    cr_assert_eq(st, c->status, "%s: status %d, want %d (%s)", c->what, st, c->status,
                 err);
    cr_assert_float_eq(l, c->latency, 1e-6, "%s: latency %g, want %g", c->what, l,
                       c->latency);
    if (c->err != NULL)
      cr_assert_not_null(strstr(err, c->err), "%s: error \"%s\" lacks \"%s\"", c->what,
                         err, c->err);
  }
}

Test(bad_jobs, the_boundaries_of_a_plausible_time) {
  double l;
  char err[160];
  /* 2001-09-09 itself is a time; a day ahead is still skew. */
  cr_assert_eq(sidekiq_job_latency("{\"enqueued_at\":1000000000}", 26, NOW, &l, err,
                                   sizeof(err)),
               SIDEKIQ_JOB_OK);
  cr_assert_float_eq(l, NOW - 1e9, 1e-3);
  char json[64];
  int n = snprintf(json, sizeof(json), "{\"enqueued_at\":%.1f}",
                   NOW + SIDEKIQ_FUTURE_TOLERANCE);
  cr_assert_eq(sidekiq_job_latency(json, (size_t)n, NOW, &l, err, sizeof(err)),
               SIDEKIQ_JOB_OK);
  cr_assert_eq(l, 0);
  n = snprintf(json, sizeof(json), "{\"enqueued_at\":%.1f}",
               NOW + SIDEKIQ_FUTURE_TOLERANCE + 1);
  cr_assert_eq(sidekiq_job_latency(json, (size_t)n, NOW, &l, err, sizeof(err)),
               SIDEKIQ_JOB_INVALID);
}

Test(bad_jobs, nul_bytes_and_null_pointers) {
  double l = -1;
  char err[160] = "";
  /* A Redis value may hold NULs: one after the object is not a blank. */
  const char with_nul[] = "{\"enqueued_at\":1699999970.5}\0";
  cr_assert_eq(sidekiq_job_latency(with_nul, sizeof(with_nul) - 1, NOW, &l, err,
                                   sizeof(err)),
               SIDEKIQ_JOB_INVALID);
  cr_assert_eq(l, 0);
  const char inside[] = "{\"enqueued_at\":16999\0" "99970.5}";
  cr_assert_eq(sidekiq_job_latency(inside, sizeof(inside) - 1, NOW, &l, err,
                                   sizeof(err)),
               SIDEKIQ_JOB_INVALID);
  cr_assert_eq(sidekiq_job_latency(NULL, 0, NOW, &l, err, sizeof(err)),
               SIDEKIQ_JOB_INVALID);
  cr_assert_str_eq(err, "job is not valid JSON");
}

Test(bad_jobs, ten_megabytes) {
  size_t pad = 10u << 20;
  char *json = malloc(pad + 128);
  cr_assert_not_null(json);
  /* The timestamp after 10 MB of argument: the whole payload is read. */
  size_t o = (size_t)sprintf(json, "{\"class\":\"W\",\"args\":[\"");
  memset(json + o, 'x', pad);
  o += pad;
  o += (size_t)sprintf(json + o, "\"],\"enqueued_at\":1699999958.0}");
  double l = -1;
  char err[160] = "";
  cr_assert_eq(sidekiq_job_latency(json, o, NOW, &l, err, sizeof(err)), SIDEKIQ_JOB_OK,
               "%s", err);
  cr_assert_float_eq(l, 42.0, 1e-6);

  /* 10 MB of opening brackets: refused, the stack intact. */
  memset(json, '[', pad);
  cr_assert_eq(sidekiq_job_latency(json, pad, NOW, &l, err, sizeof(err)),
               SIDEKIQ_JOB_INVALID);
  cr_assert_str_eq(err, "job is not valid JSON");
  cr_assert_eq(l, 0);
  free(json);
}

/* What the scaler makes of each payload's latency, as a poll would: only
 * a real age above the threshold starts an event. */
Test(bad_jobs, garbage_never_scales_up) {
  scaler_settings_t set = {.latency_threshold = 5,
                           .restored_threshold = 5,
                           .usage_threshold = 1,
                           .alert_interval = 120,
                           .retry_base = 5,
                           .retry_max = 60,
                           .max_additional = 2};
  scaler_state_t state = SCALER_STATE_INIT;
  for (size_t i = 0; i < sizeof(JOBS) / sizeof(JOBS[0]); i++) {
    const struct job_case *c = &JOBS[i];
    double l;
    char err[160];
    enum sidekiq_job_status st =
        sidekiq_job_latency(c->json, strlen(c->json), NOW, &l, err, sizeof(err));
    scaler_queue_t q = {.name = "default", .latency = l};
    scaler_input_t in = {.queues = &q, .nqueues = 1, .pool_usage = 0, .now = NOW};
    scaler_decision_t d = scaler_step(&set, &state, &in);
    enum scaler_action want =
        st == SIDEKIQ_JOB_OK && c->latency > 5 ? SCALER_SCALE_UP : SCALER_NONE;
    cr_assert_eq(d.action, want, "%s: action %s", c->what,
                 scaler_action_name(d.action));
  }
}

/* ---- process heartbeats ------------------------------------------- */

struct proc_case {
  const char *what;
  const char *busy, *info, *concurrency;
  int rc;
  long long busy_out, conc_out;
  const char *err;
};

static const struct proc_case PROCS[] = {
    {"sidekiq 7 info", "3", "{\"concurrency\":10}", NULL, 0, 3, 10, NULL},
    {"sidekiq 8.1.2 field", "2", "{}", "25", 0, 2, 25, NULL},
    {"no busy field", NULL, "{\"concurrency\":5}", NULL, 0, 0, 5, NULL},
    {"heartbeat expired", "1", NULL, "5", 1, -7, -7, NULL},
    {"busier than its threads", "12", "{\"concurrency\":10}", NULL, 2, 10, 10,
     "busy 12 is above its concurrency 10"},
    {"busy with no threads", "4", "{}", "0", 2, 0, 0, "above its concurrency 0"},
    {"busy junk", "x", "{\"concurrency\":5}", NULL, -1, -7, -7, "busy is not a count"},
    {"busy empty", "", "{\"concurrency\":5}", NULL, -1, -7, -7, "busy"},
    {"busy negative", "-1", "{\"concurrency\":5}", NULL, -1, -7, -7, "busy"},
    {"busy float", "1.5", "{\"concurrency\":5}", NULL, -1, -7, -7, "busy"},
    {"busy overflow", "99999999999999999999", "{\"concurrency\":5}", NULL, -1, -7, -7,
     "busy"},
    {"info not JSON", "1", "not json", NULL, -1, -7, -7, "no valid concurrency"},
    {"info without concurrency", "1", "{\"hostname\":\"h\"}", NULL, -1, -7, -7,
     "no valid concurrency"},
    {"concurrency a string", "1", "{\"concurrency\":\"5\"}", NULL, -1, -7, -7,
     "no valid concurrency"},
    {"concurrency negative", "1", "{\"concurrency\":-5}", NULL, -1, -7, -7,
     "no valid concurrency"},
    {"concurrency fractional", "1", "{\"concurrency\":2.5}", NULL, -1, -7, -7,
     "no valid concurrency"},
    {"concurrency infinite", "1", "{\"concurrency\":1e400}", NULL, -1, -7, -7,
     "no valid concurrency"},
    {"concurrency field junk", "1", "{}", "abc", -1, -7, -7,
     "concurrency is not a count"},
    {"concurrency field negative", "1", "{}", "-3", -1, -7, -7,
     "concurrency is not a count"},
};

Test(bad_heartbeats, each_heartbeat) {
  for (size_t i = 0; i < sizeof(PROCS) / sizeof(PROCS[0]); i++) {
    const struct proc_case *c = &PROCS[i];
    long long b = -7, conc = -7;
    char err[160] = "";
    int rc = sidekiq_process_parse(c->busy, c->info, c->concurrency, &b, &conc, err,
                                   sizeof(err));
    cr_assert_eq(rc, c->rc, "%s: rc %d, want %d (%s)", c->what, rc, c->rc, err);
    cr_assert_eq(b, c->busy_out, "%s: busy %lld", c->what, b);
    cr_assert_eq(conc, c->conc_out, "%s: concurrency %lld", c->what, conc);
    if (c->err != NULL)
      cr_assert_not_null(strstr(err, c->err), "%s: error \"%s\" lacks \"%s\"", c->what,
                         err, c->err);
  }
}

/* ---- numeric settings --------------------------------------------- */

enum verdict {
  V_DEFAULT,   /* accepted as unset: the default */
  V_ACCEPT,    /* accepted as the value given */
  V_NAN,       /* "is not a number" */
  V_RANGE,     /* "is out of range" */
  V_WHOLE,     /* "is not a whole number" */
  V_MODE,      /* "is not an allowed mode" */
};

enum kind { JUNK, JUNK_SUFFIX, BLANK, EMPTY, ZERO, NEGATIVE, OVERFLOW_EXP,
            OVERFLOW_DIGITS, NAN_LOWER, NAN_UPPER, INF, MINUS_INF, HEX, UNDERFLOW,
            GOOD, NKINDS };

static const char *const VALUES[NKINDS] = {
    [JUNK] = "abc",       [JUNK_SUFFIX] = "1x", [BLANK] = " ",
    [EMPTY] = "",         [ZERO] = "0",         [NEGATIVE] = "-1",
    [OVERFLOW_EXP] = "1e400", [OVERFLOW_DIGITS] = "99999999999999999999",
    [NAN_LOWER] = "nan",  [NAN_UPPER] = "NaN",  [INF] = "inf",
    [MINUS_INF] = "-inf", [HEX] = "0x10",       [UNDERFLOW] = "1e-400",
    [GOOD] = "2",
};

struct numeric_setting {
  const char *env, *flag;
  enum verdict v[NKINDS];
  double dflt; /* what an unset value reads as */
};

#define DURATION(zero)                                                            \
  {[JUNK] = V_NAN, [JUNK_SUFFIX] = V_NAN, [BLANK] = V_NAN, [EMPTY] = V_DEFAULT,   \
   [ZERO] = (zero), [NEGATIVE] = V_RANGE, [OVERFLOW_EXP] = V_RANGE,               \
   [OVERFLOW_DIGITS] = V_RANGE, [NAN_LOWER] = V_NAN, [NAN_UPPER] = V_NAN,         \
   [INF] = V_NAN, [MINUS_INF] = V_NAN, [HEX] = V_NAN, [UNDERFLOW] = V_RANGE,      \
   [GOOD] = V_ACCEPT}

static const struct numeric_setting SETTINGS[] = {
    {"SCALEKIQ_POLL_INTERVAL", "--poll-interval", DURATION(V_RANGE), 5},
    {"SCALEKIQ_LATENCY_THRESHOLD", "--latency-threshold", DURATION(V_RANGE), 5},
    {"SCALEKIQ_LATENCY_RESTORED_THRESHOLD", "--latency-restored-threshold",
     DURATION(V_ACCEPT), 5},
    {"SCALEKIQ_USAGE_THRESHOLD", "--usage-threshold", DURATION(V_RANGE), 1},
    {"SCALEKIQ_ALERT_INTERVAL", "--alert-interval", DURATION(V_ACCEPT), 120},
    {"SCALEKIQ_LOCK_TTL", "--lock-ttl", DURATION(V_RANGE), 15},
    {"SCALEKIQ_LOCK_TICK", "--lock-tick", DURATION(V_RANGE), 5},
    {"SCALEKIQ_REQUEST_TIMEOUT", "--request-timeout", DURATION(V_RANGE), 5},
    {"SCALEKIQ_MAX_ADDITIONAL_WORKERS",
     "--max-additional-workers",
     {[JUNK] = V_WHOLE, [JUNK_SUFFIX] = V_WHOLE, [BLANK] = V_WHOLE,
      [EMPTY] = V_DEFAULT, [ZERO] = V_ACCEPT, [NEGATIVE] = V_RANGE,
      [OVERFLOW_EXP] = V_WHOLE, [OVERFLOW_DIGITS] = V_RANGE, [NAN_LOWER] = V_WHOLE,
      [NAN_UPPER] = V_WHOLE, [INF] = V_WHOLE, [MINUS_INF] = V_WHOLE, [HEX] = V_WHOLE,
      [UNDERFLOW] = V_WHOLE, [GOOD] = V_ACCEPT},
     2},
    {"SCALEKIQ_SOCKET_MODE",
     "--socket-mode",
     {[JUNK] = V_MODE, [JUNK_SUFFIX] = V_MODE, [BLANK] = V_MODE, [EMPTY] = V_DEFAULT,
      [ZERO] = V_MODE, [NEGATIVE] = V_MODE, [OVERFLOW_EXP] = V_MODE,
      [OVERFLOW_DIGITS] = V_MODE, [NAN_LOWER] = V_MODE, [NAN_UPPER] = V_MODE,
      [INF] = V_MODE, [MINUS_INF] = V_MODE, [HEX] = V_MODE, [UNDERFLOW] = V_MODE,
      [GOOD] = V_MODE},
     0600},
};

static double setting_value(const config_t *cfg, const char *env) {
  if (strcmp(env, "SCALEKIQ_POLL_INTERVAL") == 0) return cfg->poll_interval;
  if (strcmp(env, "SCALEKIQ_LATENCY_THRESHOLD") == 0) return cfg->latency_threshold;
  if (strcmp(env, "SCALEKIQ_LATENCY_RESTORED_THRESHOLD") == 0)
    return cfg->latency_restored_threshold;
  if (strcmp(env, "SCALEKIQ_USAGE_THRESHOLD") == 0) return cfg->usage_threshold;
  if (strcmp(env, "SCALEKIQ_ALERT_INTERVAL") == 0) return cfg->alert_interval;
  if (strcmp(env, "SCALEKIQ_LOCK_TTL") == 0) return cfg->lock_ttl;
  if (strcmp(env, "SCALEKIQ_LOCK_TICK") == 0) return cfg->lock_tick;
  if (strcmp(env, "SCALEKIQ_REQUEST_TIMEOUT") == 0) return cfg->request_timeout;
  if (strcmp(env, "SCALEKIQ_MAX_ADDITIONAL_WORKERS") == 0)
    return cfg->max_additional_workers;
  if (strcmp(env, "SCALEKIQ_SOCKET_MODE") == 0) return cfg->socket_mode;
  cr_assert_fail("no getter for %s", env);
  return NAN;
}

static const char *verdict_words(enum verdict v) {
  switch (v) {
  case V_NAN: return "is not a number";
  case V_RANGE: return "is out of range";
  case V_WHOLE: return "is not a whole number";
  case V_MODE: return "is not an allowed mode";
  default: return NULL;
  }
}

/* One setting given one value, as a variable (as_flag 0) or a flag. */
static void check_setting(const struct numeric_setting *s, enum kind k, int as_flag) {
  const char *value = VALUES[k];
  enum verdict want = s->v[k];
  /* An empty variable is unset; an empty flag value is a value. */
  if (as_flag && want == V_DEFAULT)
    want = strcmp(s->env, "SCALEKIQ_MAX_ADDITIONAL_WORKERS") == 0 ? V_WHOLE
           : strcmp(s->env, "SCALEKIQ_SOCKET_MODE") == 0          ? V_MODE
                                                                  : V_NAN;
  char assignment[160];
  const char *name = as_flag ? s->flag : s->env;
  snprintf(assignment, sizeof(assignment), "%s=%s", name, value);
  char *envp[] = {assignment, NULL};
  char *argv[] = {assignment};
  config_t cfg;
  char err[512] = "";
  int rc = as_flag ? config_load(&cfg, NULL, 1, argv, 0, NULL, err, sizeof(err))
                   : config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err));
  if (want == V_DEFAULT || want == V_ACCEPT) {
    cr_assert_eq(rc, 0, "%s refused: %s", assignment, err);
    double got = setting_value(&cfg, s->env);
    double expect = want == V_DEFAULT ? s->dflt : strtod(value, NULL);
    cr_assert_float_eq(got, expect, 1e-9, "%s: read as %g, want %g", assignment, got,
                       expect);
    config_free(&cfg);
    return;
  }
  cr_assert_eq(rc, -1, "%s accepted", assignment);
  /* Names the setting and the value as given, says what is wrong and
   * what to do, on one line. */
  char shown[160];
  snprintf(shown, sizeof(shown), "%s=\"%s\" %s", name, value, verdict_words(want));
  cr_assert(strncmp(err, shown, strlen(shown)) == 0, "%s: error \"%s\", want \"%s...\"",
            assignment, err, shown);
  const char *todo = want == V_MODE ? "use 0600" : "set it to";
  cr_assert_not_null(strstr(err, todo), "%s: \"%s\" does not say what to do",
                     assignment, err);
  cr_assert_null(strchr(err, '\n'), "%s: not one line", assignment);
  cr_assert_null(cfg.redis_url, "a refused load leaves nothing behind");
}

Test(bad_settings, every_numeric_setting_times_every_kind_of_junk) {
  for (size_t i = 0; i < sizeof(SETTINGS) / sizeof(SETTINGS[0]); i++)
    for (int k = 0; k < NKINDS; k++) {
      check_setting(&SETTINGS[i], (enum kind)k, 0);
      check_setting(&SETTINGS[i], (enum kind)k, 1);
    }
}

Test(bad_settings, socket_modes_that_are_allowed) {
  const char *good[] = {"0600", "600", "0640", "0660", "00660"};
  const int want[] = {0600, 0600, 0640, 0660, 0660};
  const char *bad[] = {"0666", "0700", " 0600", "+0600", "0600 ", "06000000000", "8"};
  char buf[64];
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    snprintf(buf, sizeof(buf), "SCALEKIQ_SOCKET_MODE=%s", good[i]);
    char *envp[] = {buf, NULL};
    config_t cfg;
    char err[512];
    cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err)), 0,
                 "%s: %s", buf, err);
    cr_assert_eq(cfg.socket_mode, want[i], "%s", buf);
    config_free(&cfg);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(buf, sizeof(buf), "SCALEKIQ_SOCKET_MODE=%s", bad[i]);
    char *envp[] = {buf, NULL};
    config_t cfg;
    char err[512];
    cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err)), -1,
                 "%s accepted", buf);
    cr_assert_not_null(strstr(err, "use 0600 (the default), 0640 or 0660"), "%s", err);
  }
}

Test(bad_settings, a_lock_ttl_too_short_for_its_own_tick) {
  char *envp[] = {"SCALEKIQ_LOCK_TTL=0.002", NULL};
  config_t cfg;
  char err[512];
  cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err)), -1);
  cr_assert_str_eq(err, "SCALEKIQ_LOCK_TTL=\"0.002\" is too short: the lock tick "
                        "(TTL / 3) would be under 0.001 s; set it to at least 0.003 "
                        "seconds, or set SCALEKIQ_LOCK_TICK too");
  /* With a tick of its own it is a (strange but) usable lease. */
  char *envp2[] = {"SCALEKIQ_LOCK_TTL=0.002", "SCALEKIQ_LOCK_TICK=0.001", NULL};
  cr_assert_eq(config_load(&cfg, envp2, 0, NULL, 0, NULL, err, sizeof(err)), 0, "%s",
               err);
  cr_assert_float_eq(cfg.lock_tick, 0.001, 1e-12);
  config_free(&cfg);
}

Test(bad_settings, exact_messages) {
  const char *cases[][2] = {
      {"SCALEKIQ_POLL_INTERVAL=1e400",
       "SCALEKIQ_POLL_INTERVAL=\"1e400\" is out of range: set it to a number of "
       "seconds above 0 and at most 3600, such as 5"},
      {"SCALEKIQ_MAX_ADDITIONAL_WORKERS=-1",
       "SCALEKIQ_MAX_ADDITIONAL_WORKERS=\"-1\" is out of range: set it to a whole "
       "number from 0 to 1000, such as 2"},
      {"SCALEKIQ_USAGE_THRESHOLD=nan",
       "SCALEKIQ_USAGE_THRESHOLD=\"nan\" is not a number: set it to a number above 0 "
       "and at most 100, such as 0.9"},
      {"SCALEKIQ_ALERT_INTERVAL=-0.5",
       "SCALEKIQ_ALERT_INTERVAL=\"-0.5\" is out of range: set it to a number of "
       "seconds from 0 to 604800, such as 120"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *envp[] = {(char *)cases[i][0], NULL};
    config_t cfg;
    char err[512];
    cr_assert_eq(config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err)), -1);
    cr_assert_str_eq(err, cases[i][1]);
  }
}

/* ---- URLs --------------------------------------------------------- */

struct url_case {
  const char *url;
  const char *err; /* NULL: accepted */
};

static const struct url_case REDIS_URLS[] = {
    {"redis://host?ssl_cert_reqs=none", "options after '?' or '#' are not supported"},
    {"rediss://:pw-secret@host:6380/0?ssl_cert_reqs=none",
     "SCALEKIQ_REDIS_TLS_VERIFY=none"},
    {"redis://host#fragment", "options after '?' or '#'"},
    {"unix:///tmp/r\n.sock", "control character"},
    {"unix:///tmp/r.sock?db=x", "db=N"},
    {"redis://host:99999999999", "port must be a number from 1 to 65535"},
    {"redis://host:-1", "port"},
    {"redis://host: 1", "port"},
    {"redis://host/99999999999", "database number"},
    {"redis://host/1000001", "database number"},
    {"redis://host/0/1", "database number"},
    {"REDIS://host", "must start with redis://"},
    {" redis://host", "must start with"},
    {"redis:/host", "must start with"},
    {"redis://host ", "invalid character"},
    {"redis://ho\x01st", "invalid character"},
    {"redis://h%6fst", "invalid character"},
    {"rediss://[::1", "unclosed"},
    {"redis://:pw-secret%zz@host", "malformed or too long password"},
    {"", "empty"},
    /* '?' and '#' are fine inside the password */
    {"redis://:pa?ss#w@host:1/2", NULL},
    {"redis://:p%3Fw@host", NULL},
};

Test(bad_urls, redis_urls) {
  for (size_t i = 0; i < sizeof(REDIS_URLS) / sizeof(REDIS_URLS[0]); i++) {
    const struct url_case *c = &REDIS_URLS[i];
    redis_url_t u;
    char err[256] = "";
    int rc = redis_url_parse(c->url, &u, err, sizeof(err));
    if (c->err == NULL) {
      cr_assert_eq(rc, 0, "%s refused: %s", c->url, err);
      continue;
    }
    cr_assert_eq(rc, REDIS_E_INVALID, "%s accepted", c->url);
    cr_assert_not_null(strstr(err, c->err), "%s: \"%s\" lacks \"%s\"", c->url, err,
                       c->err);
    cr_assert_null(strstr(err, "pw-secret"), "%s: password in \"%s\"", c->url, err);
  }
  redis_url_t u;
  char err[256];
  cr_assert_eq(redis_url_parse("redis://:pa?ss#w@host:1/2", &u, err, sizeof(err)), 0);
  cr_assert_str_eq(u.password, "pa?ss#w");
  cr_assert_str_eq(u.host, "host");
  cr_assert_eq(u.db, 2);
}

static const struct url_case API_URLS[] = {
    {"https://[::1", "has no host, or a malformed one"},
    {"https://[]", "has no host, or a malformed one"},
    {"https://[zz::1]", "has no host, or a malformed one"},
    {"https://ex%41mple.com", "has no host, or a malformed one"},
    {"https://api.heroku.com\\", "has no host, or a malformed one"},
    {"https://:443", "has no host"},
    {"https://api heroku.com", "is not a usable API base URL"},
    {"https://user@api.heroku.com", "is not a usable API base URL"},
    {"https://api.heroku.com?x=1", "is not a usable API base URL"},
    {"https://api.heroku.com#x", "is not a usable API base URL"},
    {"HTTPS://api.heroku.com", "is not a usable API base URL"},
    {"https://api.heroku.com:0", "malformed port"},
    {"https://api.heroku.com:65536", "malformed port"},
    {"https://api.heroku.com:-1", "malformed port"},
    {"http://api.heroku.com", "unencrypted"},
    {"https://[::1]:8443", NULL},
    {"https://api.heroku.com/", NULL},
    {"https://api-eu.example_host.com:8443/v3", NULL},
};

Test(bad_urls, heroku_api_urls) {
  for (size_t i = 0; i < sizeof(API_URLS) / sizeof(API_URLS[0]); i++) {
    const struct url_case *c = &API_URLS[i];
    char assignment[256];
    snprintf(assignment, sizeof(assignment), "HEROKU_API_URL=%s", c->url);
    char *envp[] = {assignment, NULL};
    config_t cfg;
    char err[512] = "";
    int rc = config_load(&cfg, envp, 0, NULL, 0, NULL, err, sizeof(err));
    if (c->err == NULL) {
      cr_assert_eq(rc, 0, "%s refused: %s", c->url, err);
      config_free(&cfg);
      continue;
    }
    cr_assert_eq(rc, -1, "%s accepted", c->url);
    cr_assert(strncmp(err, "HEROKU_API_URL=\"", 16) == 0, "%s: %s", c->url, err);
    cr_assert_not_null(strstr(err, c->err), "%s: \"%s\" lacks \"%s\"", c->url, err,
                       c->err);
    cr_assert(strstr(err, "set it to https://") || strstr(err, "use https://"),
              "%s: \"%s\" does not say what to do", c->url, err);
  }
}

/* ---- control requests --------------------------------------------- */

struct request_case {
  const char *what;
  const char *line;
  size_t len; /* 0: strlen(line) */
  int rc;
  const char *reply; /* the error (exactly), or the command's name */
};

#define VALID "valid commands: status [--json], metrics, history [--json], pause, " \
              "resume, step-down"

static const struct request_case REQUESTS[] = {
    {"junk word", "hello\n", 0, CONTROL_E_REQUEST,
     "unknown command \"hello\"; " VALID},
    {"shell injection", "status; rm -rf /\n", 0, CONTROL_E_REQUEST,
     "unknown command \"status;\"; " VALID},
    {"binary bytes", "\xff\xfe\xfd\n", 0, CONTROL_E_REQUEST,
     "unknown command \"???\"; " VALID},
    {"a BOM before the command", "\xef\xbb\xbfstatus\n", 0, CONTROL_E_REQUEST,
     "unknown command \"???status\"; " VALID},
    {"NUL in the middle", "sta\0tus\n", 8, CONTROL_E_REQUEST,
     "request has a control character (0x00) at byte 3; send one line of text, "
     "e.g. \"status\""},
    {"two lines at once", "status\npause\n", 0, CONTROL_E_REQUEST,
     "request has a control character (0x0a) at byte 6; send one line of text, "
     "e.g. \"status\""},
    {"escape sequence", "\x1b[2Jstatus\n", 0, CONTROL_E_REQUEST,
     "request has a control character (0x1b) at byte 0; send one line of text, "
     "e.g. \"status\""},
    {"empty line", "\n", 0, CONTROL_E_REQUEST, "empty request; " VALID},
    {"half a line (EOF before LF)", "sta", 0, CONTROL_E_REQUEST,
     "unknown command \"sta\"; " VALID},
    {"an option it does not take", "pause --json\n", 0, CONTROL_E_REQUEST,
     "pause takes no arguments (got \"--json\")"},
    {"an unknown option", "status --all\n", 0, CONTROL_E_REQUEST,
     "status accepts only --json (got \"--all\")"},
    {"a whole line without its LF", "status", 0, 0, "status"},
    {"CRLF and blanks", "\t history  --json \r\n", 0, 0, "history"},
};

Test(bad_requests, each_line) {
  for (size_t i = 0; i < sizeof(REQUESTS) / sizeof(REQUESTS[0]); i++) {
    const struct request_case *c = &REQUESTS[i];
    control_request_t r;
    char err[512] = "";
    size_t len = c->len ? c->len : strlen(c->line);
    int rc = control_parse_request(c->line, len, &r, err, sizeof(err));
    cr_assert_eq(rc, c->rc, "%s: rc %d (%s)", c->what, rc, err);
    if (rc == 0)
      cr_assert_str_eq(control_command_name(r.command), c->reply, "%s", c->what);
    else
      cr_assert_str_eq(err, c->reply, "%s", c->what);
  }
}

Test(bad_requests, over_long_line) {
  size_t n = CONTROL_LINE_MAX + 1;
  char *line = malloc(n + 1);
  memset(line, 's', n);
  line[n] = '\n';
  char err[512];
  control_request_t r;
  cr_assert_eq(control_parse_request(line, n + 1, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  cr_assert_str_eq(err, "request line longer than 4096 bytes; send one command, e.g. "
                        "\"status\"");
  free(line);
}

/* ---- Platform API replies ----------------------------------------- */

struct reply_case {
  const char *what;
  long http;
  const char *body;
  int rc;
  long quantity;
  const char *detail; /* a fragment */
};

static const struct reply_case REPLIES[] = {
    {"formation", 200, "{\"type\":\"worker\",\"quantity\":3}", 0, 3, "quantity 3"},
    {"formation then a newline", 200, "{\"quantity\":3}\n", 0, 3, "quantity 3"},
    {"quantity 0 is real", 200, "{\"quantity\":0}", 0, 0, "quantity 0"},
    {"200 with an HTML page", 200, "<html><body>Sign in to the Wi-Fi</body></html>",
     HEROKU_E_BAD_REPLY, -1, "not a JSON object (\"<html><body>Sign in to the"},
    {"200 with an empty body", 200, "", HEROKU_E_BAD_REPLY, -1,
     "empty body where a formation was expected: is HEROKU_API_URL the Platform API?"},
    {"200 with null", 200, "null", HEROKU_E_BAD_REPLY, -1, "not a JSON object"},
    {"200 with a list", 200, "[{\"quantity\":3}]", HEROKU_E_BAD_REPLY, -1,
     "not a JSON object"},
    {"200 with junk after the object", 200, "{\"quantity\":3}<!-- cached -->",
     HEROKU_E_BAD_REPLY, -1, "not a JSON object"},
    {"200, truncated", 200, "{\"quantity\":3", HEROKU_E_BAD_REPLY, -1,
     "not a JSON object"},
    {"quantity missing", 200, "{\"type\":\"worker\"}", HEROKU_E_BAD_REPLY, -1,
     "has no quantity: not a formation object"},
    {"quantity a string", 200, "{\"quantity\":\"3\"}", HEROKU_E_BAD_REPLY, -1,
     "quantity that is not a number: is HEROKU_API_URL the Platform API?"},
    {"quantity a boolean", 200, "{\"quantity\":true}", HEROKU_E_BAD_REPLY, -1,
     "quantity that is not a number"},
    {"quantity null", 200, "{\"quantity\":null}", HEROKU_E_BAD_REPLY, -1,
     "quantity that is not a number"},
    {"quantity negative", 200, "{\"quantity\":-1}", HEROKU_E_BAD_REPLY, -1,
     "quantity -1, not a non-negative integer"},
    {"quantity fractional", 200, "{\"quantity\":1.5}", HEROKU_E_BAD_REPLY, -1,
     "quantity 1.5, not a non-negative integer"},
    {"quantity huge", 200, "{\"quantity\":1000000001}", HEROKU_E_BAD_REPLY, -1,
     "not a non-negative integer"},
    {"quantity infinite", 200, "{\"quantity\":1e400}", HEROKU_E_BAD_REPLY, -1,
     "quantity inf, not a non-negative integer"},
    {"500 with an HTML page", 500, "<html>oops</html>", HEROKU_E_UNAVAILABLE, -1,
     "HTTP 500 (body not JSON): the Platform API is failing"},
    {"404, the API's error", 404, "{\"id\":\"not_found\",\"message\":\"Couldn't find "
     "that app.\"}", HEROKU_E_NOT_FOUND, -1, "check HEROKU_APP_NAME"},
    {"error fields with control bytes", 422, "{\"id\":\"bad\\u007fid\",\"message\":"
     "\"line\\nbreak\\u007f\"}", HEROKU_E_REJECTED, -1, "HTTP 422 bad?id (line break )"},
    {"a redirect", 302, "", HEROKU_E_BAD_REPLY, -1, "redirects are not followed"},
    {"no HTTP status at all", 0, "", HEROKU_E_BAD_REPLY, -1, "unexpected HTTP 0"},
};

Test(bad_replies, each_reply) {
  for (size_t i = 0; i < sizeof(REPLIES) / sizeof(REPLIES[0]); i++) {
    const struct reply_case *c = &REPLIES[i];
    heroku_result_t res;
    memset(&res, 0x5a, sizeof(res));
    int rc = heroku_reply_parse(c->http, c->body, strlen(c->body), &res);
    cr_assert_eq(rc, c->rc, "%s: rc %d (%s)", c->what, rc, res.detail);
    cr_assert_eq(res.quantity, c->quantity, "%s: quantity %ld", c->what, res.quantity);
    cr_assert_not_null(strstr(res.detail, c->detail), "%s: \"%s\" lacks \"%s\"",
                       c->what, res.detail, c->detail);
    for (const char *p = res.detail; *p; p++)
      cr_assert((unsigned char)*p >= ' ' && *p != 0x7f, "%s: control byte in \"%s\"",
                c->what, res.detail);
  }
}

Test(bad_replies, a_body_over_the_limit) {
  size_t len = HEROKU_MAX_BODY + 1;
  char *body = malloc(len);
  memset(body, 'x', len);
  heroku_result_t res;
  cr_assert_eq(heroku_reply_parse(200, body, len, &res), HEROKU_E_BAD_REPLY);
  cr_assert_not_null(strstr(res.detail, "over the 1048576-byte limit"), "%s",
                     res.detail);
  free(body);
}

/* ---- persisted state ---------------------------------------------- */

/* An MGET reply as the agent's reader would build it from the wire. */
static redisReply *mget_reply(const char *const v[4], const size_t len[4]) {
  char wire[4096];
  size_t o = (size_t)snprintf(wire, sizeof(wire), "*4\r\n");
  for (int i = 0; i < 4; i++) {
    if (v[i] == NULL) {
      o += (size_t)snprintf(wire + o, sizeof(wire) - o, "$-1\r\n");
      continue;
    }
    size_t n = len[i] ? len[i] : strlen(v[i]);
    o += (size_t)snprintf(wire + o, sizeof(wire) - o, "$%zu\r\n", n);
    memcpy(wire + o, v[i], n);
    o += n;
    memcpy(wire + o, "\r\n", 2);
    o += 2;
  }
  redisReader *rd = redisReaderCreate();
  cr_assert_eq(redisReaderFeed(rd, wire, o), REDIS_OK);
  void *reply = NULL;
  cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
  cr_assert_not_null(reply);
  redisReaderFree(rd);
  return reply;
}

struct state_case {
  const char *what;
  const char *depth, *last, *started, *initial; /* NULL: key absent */
  size_t depth_len;                              /* 0: strlen */
  long want_depth;
  double want_last, want_started;
  long want_initial;
  const char *warning; /* NULL: no warning; else a fragment */
};

#define T0 1700000000.0

static const struct state_case STATES[] = {
    {"the gem's own values", "2", "1699999990.5", "1699999900.25", "1", 0, 2,
     1699999990.5, 1699999900.25, 1, NULL},
    {"nothing stored", NULL, NULL, NULL, NULL, 0, 0, 0, 0, -1, NULL},
    {"depth abc", "abc", "0.0", "0.0", NULL, 0, 0, 0, 0, -1,
     "depth=\"abc\" unparsable, reset to 0"},
    {"depth negative", "-3", "0.0", "0.0", NULL, 0, 0, 0, 0, -1,
     "depth=-3 reset to 0"},
    {"depth fractional", "2.5", "0.0", "0.0", NULL, 0, 0, 0, 0, -1,
     "depth=\"2.5\" unparsable"},
    {"depth overflow", "99999999999999999999", "0.0", "0.0", NULL, 0, 0, 0, 0, -1,
     "unparsable"},
    {"depth huge", "5000000", "1699999990.5", "1699999900.25", "1", 0,
     SCALER_DEPTH_LIMIT, 1699999990.5, 1699999900.25, 1, "capped to 1000000"},
    {"depth with a NUL", "3\0junk", "0.0", "0.0", NULL, 6, 0, 0, 0, -1,
     "unparsable"},
    {"last_alerted NaN", "0", "nan", "0.0", NULL, 0, 0, 0, 0, -1,
     "last_alerted=nan reset to 0"},
    {"last_alerted infinite", "0", "inf", "0.0", NULL, 0, 0, 0, 0, -1,
     "last_alerted=inf reset to 0"},
    {"last_alerted overflow", "0", "1e400", "0.0", NULL, 0, 0, 0, 0, -1,
     "unparsable"},
    {"last_alerted a word", "0", "yesterday", "0.0", NULL, 0, 0, 0, 0, -1,
     "last_alerted=\"yesterday\" unparsable"},
    {"last_alerted negative", "0", "-5.0", "0.0", NULL, 0, 0, 0, 0, -1,
     "reset to 0"},
    {"last_alerted in the future", "0", "1800000000.0", "0.0", NULL, 0, 0, T0, 0, -1,
     "in the future, set to now"},
    {"event started in the future", "2", "1699999990.5", "1800000000.0", "1", 0, 2,
     1699999990.5, 1699999990.5, 1, "latency_event_started"},
    {"event started unparsable, nothing to fall back on", "2", "0.0", "x", "1", 0, 2,
     0, T0, 1, "latency_event_started=\"x\" unparsable"},
    {"initial negative", "2", "1699999990.5", "1699999900.25", "-3", 0, 2,
     1699999990.5, 1699999900.25, -1, "initial_workers=-3 forgotten"},
    {"initial huge", "2", "1699999990.5", "1699999900.25", "99999", 0, 2, 1699999990.5,
     1699999900.25, -1, "initial_workers=99999 forgotten"},
    {"initial fractional", "2", "1699999990.5", "1699999900.25", "1.5", 0, 2,
     1699999990.5, 1699999900.25, -1, "initial_workers=\"1.5\" unparsable"},
    {"initial zero is on purpose", "1", "1699999990.5", "1699999900.25", "0", 0, 1,
     1699999990.5, 1699999900.25, 0, NULL},
};

Test(bad_state, each_stored_value) {
  char *logbuf = NULL;
  size_t loglen = 0;
  FILE *f = open_memstream(&logbuf, &loglen);
  log_t lg;
  log_init(&lg, f, LOG_DEBUG);
  store_t s;
  cr_assert_eq(store_init(&s, NULL, NULL, "worker", &lg), 0);
  for (size_t i = 0; i < sizeof(STATES) / sizeof(STATES[0]); i++) {
    const struct state_case *c = &STATES[i];
    const char *v[4] = {c->depth, c->last, c->started, c->initial};
    size_t len[4] = {c->depth_len, 0, 0, 0};
    redisReply *reply = mget_reply(v, len);
    fflush(f);
    size_t log_before = loglen;
    scaler_state_t st;
    char warning[1024];
    cr_assert_eq(store_load_parse(&s, reply, T0, &st, warning, sizeof(warning)), 0,
                 "%s", c->what);
    freeReplyObject(reply);
    cr_assert_eq(st.depth, c->want_depth, "%s: depth %ld", c->what, st.depth);
    cr_assert_float_eq(st.last_alerted, c->want_last, 1e-6, "%s: last_alerted %f",
                       c->what, st.last_alerted);
    cr_assert_float_eq(st.event_started, c->want_started, 1e-6,
                       "%s: event_started %f", c->what, st.event_started);
    cr_assert_eq(st.initial_workers, c->want_initial, "%s: initial %ld", c->what,
                 st.initial_workers);
    fflush(f);
    const char *logged = logbuf + log_before;
    if (c->warning == NULL) {
      cr_assert_str_empty(warning, "%s: %s", c->what, warning);
      cr_assert_eq(loglen, log_before, "%s: logged %s", c->what, logged);
    } else {
      cr_assert_not_null(strstr(warning, c->warning), "%s: \"%s\" lacks \"%s\"",
                         c->what, warning, c->warning);
      cr_assert(strncmp(logged, "level=warn event=store_state_reset", 34) == 0,
                "%s: logged \"%s\"", c->what, logged);
    }
  }
  store_close(&s);
  log_close(&lg);
  fclose(f);
  free(logbuf);
}

Test(bad_state, replies_of_the_wrong_shape) {
  store_t s;
  cr_assert_eq(store_init(&s, NULL, NULL, "worker", NULL), 0);
  scaler_state_t st;
  char warning[256];
  redisReader *rd = redisReaderCreate();
  const char *wires[] = {"*3\r\n$1\r\n1\r\n$1\r\n1\r\n$1\r\n1\r\n", ":4\r\n",
                         "*4\r\n:1\r\n$-1\r\n$-1\r\n$-1\r\n"};
  for (size_t i = 0; i < sizeof(wires) / sizeof(wires[0]); i++) {
    redisReaderFeed(rd, wires[i], strlen(wires[i]));
    void *reply = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
    cr_assert_eq(store_load_parse(&s, reply, T0, &st, warning, sizeof(warning)),
                 REDIS_E_PROTOCOL, "wire %zu", i);
    freeReplyObject(reply);
  }
  redisReaderFeed(rd, "-ERR nope\r\n", 11);
  void *reply = NULL;
  cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
  cr_assert_eq(store_load_parse(&s, reply, T0, &st, warning, sizeof(warning)),
               STORE_E_REPLY);
  freeReplyObject(reply);
  redisReaderFree(rd);
  store_close(&s);
}
