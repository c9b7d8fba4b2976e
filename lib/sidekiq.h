/*
 * sidekiq: Sidekiq's data model in Redis, read the way Sidekiq's own API
 * reads it, but in two round trips however many queues there are.
 *
 *   queues             set of queue names
 *   queue:NAME         list of job JSON; LPUSH in, the oldest is at -1
 *   processes          set of process identities
 *   IDENTITY           hash: busy, info (JSON with concurrency up to
 *                      8.1.1), concurrency (8.1.2+)
 *
 * All keys take an optional redis-namespace prefix ("ns:").
 */
#ifndef SCALEKIQ_SIDEKIQ_H
#define SCALEKIQ_SIDEKIQ_H

#include <stddef.h>

#include "log.h"
#include "redis.h"

/* Above this an enqueued_at is Sidekiq 8's integer milliseconds (1e11 s
 * is the year 5138; 1e11 ms is 1973). */
#define SIDEKIQ_MS_THRESHOLD 1e11

/* A job timestamp before this (2001-09-09; Sidekiq dates from 2012) or
 * more than SIDEKIQ_FUTURE_TOLERANCE seconds ahead of the clock is not a
 * time anyone wrote on purpose: the job is unreadable, not decades old,
 * so garbage can never look like a backlog. Less than that ahead is clock
 * skew between hosts: latency 0. */
#define SIDEKIQ_MIN_TIMESTAMP 1e9
#define SIDEKIQ_FUTURE_TOLERANCE 86400.0

typedef struct sidekiq_queue {
  char *name;
  long long size;
  double latency; /* seconds, >= 0 */
  int unreadable; /* the oldest job could not be read: latency counted 0 */
} sidekiq_queue_t;

typedef struct sidekiq_stats {
  sidekiq_queue_t *queues; /* sorted by name */
  size_t nqueues;
  long long busy;        /* Σ busy over live processes */
  long long concurrency; /* Σ concurrency over live processes */
  size_t processes;      /* live processes counted */
  double pool_usage;     /* busy / concurrency; 0 without processes */
  size_t unreadable;     /* queues whose oldest job was unreadable */
  size_t bad_processes;  /* heartbeats skipped as malformed */
  double read_at;        /* Redis's clock when the replies arrived */
  double clock_offset;   /* Redis's clock minus this host's, s (0 when
                            TIME could not be read) */
} sidekiq_stats_t;

void sidekiq_stats_free(sidekiq_stats_t *s);

/* ---- pure parsing -------------------------------------------------- */

enum sidekiq_job_status {
  SIDEKIQ_JOB_OK = 0,       /* latency from enqueued_at or created_at */
  SIDEKIQ_JOB_NO_TIME = 1,  /* neither timestamp: latency 0, not an error */
  SIDEKIQ_JOB_INVALID = -1, /* not JSON, not an object, bad timestamp
                               (not a number, not finite, before
                               SIDEKIQ_MIN_TIMESTAMP, far in the future) */
};

/* Seconds since the epoch from a Sidekiq timestamp (float seconds, or
 * integer milliseconds from Sidekiq 8). */
double sidekiq_timestamp_seconds(double raw);

/* Latency of a job payload at wall time now. Always sets *latency (0 when
 * it cannot be known; never negative: a job from the future is 0). On
 * SIDEKIQ_JOB_INVALID, err says why without quoting the payload. */
enum sidekiq_job_status sidekiq_job_latency(const char *json, size_t len,
                                            double now, double *latency,
                                            char *err, size_t errlen);

/* Busy and concurrency of one process from its HMGET busy info concurrency
 * replies (each may be NULL when the field is absent). Returns 0, 1 when
 * the process is gone (no info: skip it, as Sidekiq does), 2 when busy was
 * above concurrency and has been capped to it (err says so), -1 when a
 * field is malformed (err says which). */
int sidekiq_process_parse(const char *busy, const char *info,
                          const char *concurrency, long long *busy_out,
                          long long *concurrency_out, char *err,
                          size_t errlen);

/* ---- reading from Redis -------------------------------------------- */

/* status 0: stats is the caller's to free with sidekiq_stats_free().
 * status < 0: a redis error code, detail says what happened, stats NULL. */
typedef void (*sidekiq_read_cb)(int status, sidekiq_stats_t *stats,
                                const char *detail, void *data);

/* Reads every queue's size and latency and the pool usage in two
 * pipelined round trips. ns may be NULL or empty. Malformed jobs and
 * processes are logged as warnings on log and count as latency 0 / are
 * skipped (and counted in stats->unreadable / bad_processes). Returns 0
 * and calls cb exactly once later, or a negative redis code without
 * calling it. */
int sidekiq_read(redis_t *r, const char *ns, log_t *log, sidekiq_read_cb cb,
                 void *data);

/* The same read, with the caller's commands riding along in its first
 * round trip: p holds them (it is consumed), and their replies go to
 * extra_cb, before cb and only when that round trip was answered. This is
 * how a poll reads the shared state without a third round trip. */
typedef void (*sidekiq_extra_cb)(redisReply **replies, size_t n, void *data);
int sidekiq_read_with(redis_t *r, const char *ns, log_t *log,
                      redis_pipeline_t *p, sidekiq_extra_cb extra_cb,
                      sidekiq_read_cb cb, void *data);

#endif
