/*
 * Bad Sidekiq data in a real redis-server: job payloads of every bad kind
 * (one queue each), 10 MB payloads, heartbeats that lie, keys of the wrong
 * type. Read twice over: by `scalekiq queues --json` as a user would, and
 * by sidekiq_read() on a loop, whose stats say which queues were
 * unreadable. What is asserted is the result, never how long it took.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidekiq.h"
#include "testutil.h"

static test_redis_t R;

static void start(void) { test_redis_start(&R); }
static void stop(void) { test_redis_stop(&R); }

TestSuite(bad_jobs, .init = start, .fini = stop);

/* ---- helpers ------------------------------------------------------- */

static int run_queues(int json, double timeout, char **out, char **err) {
  char env_url[128];
  snprintf(env_url, sizeof(env_url), "SCALEKIQ_REDIS_URL=%s", R.url);
  const char *env[] = {env_url, NULL};
  const char *argv[] = {SCALEKIQ_BIN, "queues", json ? "--json" : NULL, NULL};
  return test_run(argv, env, timeout, out, err);
}

static const cJSON *find_queue(const cJSON *arr, const char *name) {
  const cJSON *q;
  cJSON_ArrayForEach(q, arr) {
    const cJSON *n = cJSON_GetObjectItem(q, "name");
    if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return q;
  }
  return NULL;
}

static double latency_of(const cJSON *arr, const char *name) {
  const cJSON *q = find_queue(arr, name);
  cr_assert_not_null(q, "queue %s missing", name);
  return cJSON_GetObjectItem(q, "latency")->valuedouble;
}

/* The warning lines the read logged about one queue. */
static int warnings_for(const char *log, const char *queue) {
  char needle[128];
  snprintf(needle, sizeof(needle), "level=warn event=sidekiq_bad_job queue=%s ", queue);
  int n = 0;
  for (const char *p = log; (p = strstr(p, needle)) != NULL; p++) n++;
  return n;
}

/* sidekiq_read() on its own loop. */
typedef struct reading {
  int done, status;
  sidekiq_stats_t *stats;
} reading_t;

static void on_read(int status, sidekiq_stats_t *stats, const char *detail,
                    void *data) {
  (void)detail;
  reading_t *rd = data;
  rd->status = status;
  rd->stats = stats;
  rd->done++;
}

static int ready;
static void on_state(redis_t *r, enum redis_state st, int status, const char *detail,
                     void *data) {
  (void)r;
  (void)status;
  (void)detail;
  (void)data;
  if (st == REDIS_STATE_READY) ready++;
}

static sidekiq_stats_t *read_stats(char **log_out) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  redis_t client;
  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = 30;
  o.on_state = on_state;
  ready = 0;
  cr_assert_eq(redis_init(&loop, &client, R.url, &o), 0);
  redis_connect(&client);
  cr_assert(test_loop_until(&loop, &ready, 1, 10), "never connected");
  size_t loglen = 0;
  FILE *f = open_memstream(log_out, &loglen);
  log_t lg;
  log_init(&lg, f, LOG_DEBUG);
  reading_t rd = {0};
  cr_assert_eq(sidekiq_read(&client, NULL, &lg, on_read, &rd), 0);
  cr_assert(test_loop_until(&loop, &rd.done, 1, 30), "read never answered");
  cr_assert_eq(rd.status, 0);
  redis_close(&client, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0);
  log_close(&lg);
  fclose(f);
  return rd.stats;
}

static const sidekiq_queue_t *stats_queue(const sidekiq_stats_t *s, const char *name) {
  for (size_t i = 0; i < s->nqueues; i++)
    if (strcmp(s->queues[i].name, name) == 0) return &s->queues[i];
  cr_assert_fail("queue %s missing", name);
  return NULL;
}

/* ---- one queue per kind of bad job --------------------------------- */

struct queued_job {
  const char *queue;
  const char *json; /* "%.6f" is replaced by now + offset */
  double offset;
  double latency;   /* expected; -1: about -offset */
  int unreadable;
};

static const struct queued_job QUEUED[] = {
    {"good7", "{\"class\":\"W\",\"args\":[],\"enqueued_at\":%.6f}", -30, -1, 0},
    {"good8", "{\"class\":\"W\",\"args\":[],\"enqueued_at\":%.0f000}", -20, -1, 0},
    {"skewed", "{\"class\":\"W\",\"enqueued_at\":%.6f}", 60, 0, 0},
    {"untimed", "{\"class\":\"W\",\"args\":[]}", 0, 0, 0},
    {"notjson", "this is not json", 0, 0, 1},
    {"binary", "\x01\x02\xff\xfe", 0, 0, 1},
    {"array", "[\"W\",[],1700000000]", 0, 0, 1},
    {"trailing", "{\"enqueued_at\":%.6f}junk", -30, 0, 1},
    {"stringts", "{\"enqueued_at\":\"2024-01-01 00:00:00 UTC\"}", 0, 0, 1},
    {"negative", "{\"enqueued_at\":-1700000000}", 0, 0, 1},
    {"nan", "{\"enqueued_at\":NaN}", 0, 0, 1},
    {"infinite", "{\"enqueued_at\":1e999}", 0, 0, 1},
    {"epoch", "{\"enqueued_at\":1.0}", 0, 0, 1},
    {"future", "{\"enqueued_at\":%.6f}", 30 * 86400, 0, 1},
};
#define NQUEUED (sizeof(QUEUED) / sizeof(QUEUED[0]))

static void push_all(double now) {
  for (size_t i = 0; i < NQUEUED; i++) {
    char job[256];
    if (strchr(QUEUED[i].json, '%'))
      snprintf(job, sizeof(job), QUEUED[i].json, now + QUEUED[i].offset);
    else
      snprintf(job, sizeof(job), "%s", QUEUED[i].json);
    test_push_job(&R, NULL, QUEUED[i].queue, job);
  }
}

Test(bad_jobs, each_kind_through_the_cli) {
  double before = test_now();
  push_all(before);
  char *out, *err;
  int rc = run_queues(1, 30, &out, &err);
  double took = test_now() - before;
  cr_assert_eq(rc, 0, "exit %d, stderr: %s", rc, err);
  cJSON *arr = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(arr), "%s", out);
  cr_assert_eq(cJSON_GetArraySize(arr), (int)NQUEUED);
  for (size_t i = 0; i < NQUEUED; i++) {
    const struct queued_job *q = &QUEUED[i];
    double got = latency_of(arr, q->queue);
    if (q->latency < 0)
      /* good8 is whole seconds: up to half a second either way */
      cr_assert(got >= -q->offset - 0.5 && got <= -q->offset + took + 1,
                "%s: latency %.3f, want about %.0f", q->queue, got, -q->offset);
    else
      cr_assert_eq(got, q->latency, "%s: latency %.3f", q->queue, got);
    cr_assert_eq(warnings_for(err, q->queue), q->unreadable, "%s: warnings in %s",
                 q->queue, err);
  }
  cJSON_Delete(arr);
  free(out);
  free(err);
}

Test(bad_jobs, each_kind_counted_by_the_read) {
  push_all(test_now());
  char *log = NULL;
  sidekiq_stats_t *s = read_stats(&log);
  size_t unreadable = 0;
  for (size_t i = 0; i < NQUEUED; i++) {
    const sidekiq_queue_t *q = stats_queue(s, QUEUED[i].queue);
    cr_assert_eq(q->unreadable, QUEUED[i].unreadable, "%s", QUEUED[i].queue);
    cr_assert_eq(q->size, 1, "%s", QUEUED[i].queue);
    if (QUEUED[i].unreadable) cr_assert_eq(q->latency, 0, "%s", QUEUED[i].queue);
    unreadable += (size_t)QUEUED[i].unreadable;
  }
  cr_assert_eq(s->unreadable, unreadable);
  /* The warning names the queue and the reason, never the payload. */
  cr_assert_not_null(strstr(log, "queue=epoch error=\"job's enqueued_at 1 is before "
                                  "2001, not a Sidekiq time\" latency=0"),
                     "%s", log);
  cr_assert_null(strstr(log, "this is not json"), "payload in the log: %s", log);
  sidekiq_stats_free(s);
  free(log);
}

/* Only the oldest job counts: a good job behind a bad one does not make
 * the queue old, and a bad job behind a good one does not hide it. */
Test(bad_jobs, only_the_oldest_job_decides) {
  double now = test_now();
  char job[128];
  test_push_job(&R, NULL, "badfirst", "not json");
  snprintf(job, sizeof(job), "{\"enqueued_at\":%.6f}", now - 100);
  test_push_job(&R, NULL, "badfirst", job);
  snprintf(job, sizeof(job), "{\"enqueued_at\":%.6f}", now - 50);
  test_push_job(&R, NULL, "goodfirst", job);
  test_push_job(&R, NULL, "goodfirst", "not json");
  char *log = NULL;
  sidekiq_stats_t *s = read_stats(&log);
  const sidekiq_queue_t *bad = stats_queue(s, "badfirst");
  const sidekiq_queue_t *good = stats_queue(s, "goodfirst");
  cr_assert_eq(bad->latency, 0);
  cr_assert(bad->unreadable);
  cr_assert_eq(bad->size, 2);
  cr_assert(good->latency >= 50 && good->latency < 80, "%f", good->latency);
  cr_assert(!good->unreadable);
  cr_assert_eq(s->unreadable, 1);
  sidekiq_stats_free(s);
  free(log);
}

/* ---- 10 MB payloads ------------------------------------------------ */

static char *big_job(size_t pad, double enqueued_at) {
  char *json = malloc(pad + 128);
  cr_assert_not_null(json);
  size_t o = (size_t)sprintf(json, "{\"class\":\"W\",\"args\":[\"");
  memset(json + o, 'x', pad);
  o += pad;
  sprintf(json + o, "\"],\"enqueued_at\":%.6f}", enqueued_at);
  return json;
}

Test(bad_jobs, ten_megabyte_payloads) {
  size_t mb10 = 10u << 20;
  double now = test_now();
  /* Valid, its timestamp after the 10 MB: the whole job is read. */
  char *json = big_job(mb10, now - 42);
  test_push_job(&R, NULL, "huge", json);
  /* Not JSON: 10 MB of opening brackets (a parser that recursed would
   * need a deep stack), then 10 MB of bytes of every value. */
  memset(json, '[', mb10);
  json[mb10] = '\0';
  test_push_job(&R, NULL, "deep", json);
  for (size_t i = 0; i < mb10; i++) json[i] = (char)(1 + i % 255);
  test_push_job(&R, NULL, "noise", json);
  free(json);
  test_push_job(&R, NULL, "small", "{\"enqueued_at\":1.0}");

  char *out, *err;
  int rc = run_queues(1, 120, &out, &err);
  double took = test_now() - now;
  cr_assert_eq(rc, 0, "exit %d, stderr: %.400s", rc, err);
  cJSON *arr = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(arr), "%.400s", out);
  double l = latency_of(arr, "huge");
  cr_assert(l >= 42 - 0.01 && l <= 42 + took + 1, "huge: latency %.3f", l);
  cr_assert_eq(latency_of(arr, "deep"), 0);
  cr_assert_eq(latency_of(arr, "noise"), 0);
  cr_assert_eq(latency_of(arr, "small"), 0);
  cr_assert_eq(warnings_for(err, "huge"), 0, "%.400s", err);
  cr_assert_eq(warnings_for(err, "deep"), 1, "%.400s", err);
  cr_assert_eq(warnings_for(err, "noise"), 1, "%.400s", err);
  /* The payloads are not echoed: stderr stays small. */
  cr_assert_lt(strlen(err), 4096, "stderr is %zu bytes", strlen(err));
  cJSON_Delete(arr);
  free(out);
  free(err);
}

/* ---- heartbeats and key types -------------------------------------- */

Test(bad_jobs, heartbeats_that_lie) {
  test_redis_cmd_free(&R, "SADD processes honest:1 boaster:2 garbled:3 gone:4");
  test_redis_cmd_free(&R, "HSET honest:1 busy 2 info %s", "{\"concurrency\":10}");
  /* 50 busy of 10 threads would be 260% pool usage: capped to 10. */
  test_redis_cmd_free(&R, "HSET boaster:2 busy 50 info %s", "{\"concurrency\":10}");
  test_redis_cmd_free(&R, "HSET garbled:3 busy lots info %s", "{\"concurrency\":10}");
  char *log = NULL;
  sidekiq_stats_t *s = read_stats(&log);
  cr_assert_eq(s->processes, 2);
  cr_assert_eq(s->busy, 12);
  cr_assert_eq(s->concurrency, 20);
  cr_assert_float_eq(s->pool_usage, 0.6, 1e-9);
  cr_assert_eq(s->bad_processes, 1);
  cr_assert_not_null(strstr(log, "event=sidekiq_bad_process process=boaster:2 "
                                 "error=\"process busy 50 is above its concurrency "
                                 "10, counted as 10\""),
                     "%s", log);
  cr_assert_not_null(strstr(log, "process=garbled:3 error=\"process field busy is "
                                 "not a count\""),
                     "%s", log);
  sidekiq_stats_free(s);
  free(log);

  char *out, *err;
  cr_assert_eq(run_queues(0, 30, &out, &err), 0, "%s", err);
  cr_assert_not_null(strstr(out, "pool usage: 12 of 20 threads busy (60%) in 2 "
                                 "processes"),
                     "%s", out);
  free(out);
  free(err);
}

Test(bad_jobs, a_queue_key_of_the_wrong_type) {
  test_redis_cmd_free(&R, "SADD queues hashed");
  test_redis_cmd_free(&R, "HSET queue:hashed a b");
  char *out, *err;
  cr_assert_eq(run_queues(1, 30, &out, &err), 0, "%s", err);
  cJSON *arr = cJSON_Parse(out);
  cr_assert_eq(latency_of(arr, "hashed"), 0);
  cr_assert_not_null(strstr(err, "level=warn event=sidekiq_bad_queue queue=hashed "
                                 "error=\"WRONGTYPE"),
                     "%s", err);
  cJSON_Delete(arr);
  free(out);
  free(err);
}
