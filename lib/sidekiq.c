/*
 * sidekiq: owns the meaning of Sidekiq's keys and payloads: which keys a
 * read touches, how a job's timestamp becomes a latency, how a process
 * heartbeat becomes busy/concurrency. Sidekiq's Ruby API spends one round
 * trip per queue; here round trip 1 fetches both sets and round trip 2
 * pipelines LLEN + LINDEX -1 for every queue and HMGET for every process.
 */
#include "sidekiq.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void sidekiq_stats_free(sidekiq_stats_t *s) {
  if (s == NULL) return;
  for (size_t i = 0; i < s->nqueues; i++) free(s->queues[i].name);
  free(s->queues);
  free(s);
}

/* ---- pure parsing -------------------------------------------------- */

double sidekiq_timestamp_seconds(double raw) {
  return raw > SIDEKIQ_MS_THRESHOLD ? raw / 1000.0 : raw;
}

/* cJSON stops at the end of the first value; JSON (and Sidekiq's own
 * JSON.parse) allows only blanks after it. */
static cJSON *parse_whole(const char *json, size_t len) {
  const char *end = NULL;
  cJSON *doc = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (doc == NULL) return NULL;
  for (const char *p = end; p < json + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
      cJSON_Delete(doc);
      return NULL;
    }
  return doc;
}

enum sidekiq_job_status sidekiq_job_latency(const char *json, size_t len,
                                            double now, double *latency,
                                            char *err, size_t errlen) {
  *latency = 0;
  cJSON *job = json != NULL ? parse_whole(json, len) : NULL;
  if (job == NULL || !cJSON_IsObject(job)) {
    snprintf(err, errlen, "%s", job ? "job is JSON but not an object"
                                    : "job is not valid JSON");
    cJSON_Delete(job);
    return SIDEKIQ_JOB_INVALID;
  }
  const char *field = "enqueued_at";
  cJSON *ts = cJSON_GetObjectItemCaseSensitive(job, field);
  if (ts == NULL || cJSON_IsNull(ts)) {
    field = "created_at"; /* Sidekiq 8.1 leaves enqueued_at out */
    ts = cJSON_GetObjectItemCaseSensitive(job, field);
  }
  enum sidekiq_job_status st = SIDEKIQ_JOB_OK;
  double at = 0;
  if (ts == NULL || cJSON_IsNull(ts)) {
    st = SIDEKIQ_JOB_NO_TIME;
  } else if (!cJSON_IsNumber(ts) || !isfinite(ts->valuedouble) ||
             ts->valuedouble <= 0) {
    snprintf(err, errlen, "job's %s is not a positive number", field);
    st = SIDEKIQ_JOB_INVALID;
  } else if ((at = sidekiq_timestamp_seconds(ts->valuedouble)) <
             SIDEKIQ_MIN_TIMESTAMP) {
    snprintf(err, errlen, "job's %s %.15g is before 2001, not a Sidekiq time",
             field, ts->valuedouble);
    st = SIDEKIQ_JOB_INVALID;
  } else if (at > now + SIDEKIQ_FUTURE_TOLERANCE) {
    snprintf(err, errlen, "job's %s %.15g is %g s in the future", field,
             ts->valuedouble, at - now);
    st = SIDEKIQ_JOB_INVALID;
  } else {
    double age = now - at;
    *latency = age > 0 ? age : 0; /* clock skew: a job is never early */
  }
  cJSON_Delete(job);
  return st;
}

/* A non-negative integer that fits, and nothing else. */
static int parse_count(const char *s, long long *out) {
  if (s == NULL || *s == '\0') return -1;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v > 1000000000LL) return -1;
  *out = v;
  return 0;
}

int sidekiq_process_parse(const char *busy, const char *info,
                          const char *concurrency, long long *busy_out,
                          long long *concurrency_out, char *err,
                          size_t errlen) {
  if (info == NULL) return 1; /* heartbeat expired: the process is gone */
  long long b = 0, c = -1;
  if (busy != NULL && parse_count(busy, &b) != 0) {
    snprintf(err, errlen, "process field busy is not a count");
    return -1;
  }
  if (concurrency != NULL) { /* Sidekiq >= 8.1.2 */
    if (parse_count(concurrency, &c) != 0) {
      snprintf(err, errlen, "process field concurrency is not a count");
      return -1;
    }
  } else {
    cJSON *j = cJSON_Parse(info);
    cJSON *cj = cJSON_IsObject(j)
                    ? cJSON_GetObjectItemCaseSensitive(j, "concurrency")
                    : NULL;
    if (cJSON_IsNumber(cj) && cj->valuedouble >= 0 &&
        cj->valuedouble <= 1e9 && cj->valuedouble == floor(cj->valuedouble))
      c = (long long)cj->valuedouble;
    cJSON_Delete(j);
    if (c < 0) {
      snprintf(err, errlen, "process info has no valid concurrency");
      return -1;
    }
  }
  *concurrency_out = c;
  if (b > c) {
    /* A process cannot be busier than its threads: trusting the excess
     * would push pool usage above 1 and trigger scaling on garbage. */
    snprintf(err, errlen, "process busy %lld is above its concurrency %lld, "
             "counted as %lld", b, c, c);
    *busy_out = c;
    return 2;
  }
  *busy_out = b;
  return 0;
}

/* ---- reading from Redis -------------------------------------------- */

typedef struct read_ctx {
  char *prefix; /* "ns:" or "" */
  log_t *log;
  sidekiq_read_cb cb;
  sidekiq_extra_cb extra_cb;
  size_t nextra; /* the caller's commands ahead of ours in round trip 1 */
  void *data;
  sidekiq_stats_t *stats;
  char **procs; /* process identities, round trip 2 */
  size_t nprocs;
} read_ctx_t;

static void ctx_free(read_ctx_t *ctx) {
  for (size_t i = 0; i < ctx->nprocs; i++) free(ctx->procs[i]);
  free(ctx->procs);
  sidekiq_stats_free(ctx->stats);
  free(ctx->prefix);
  free(ctx);
}

static void finish(read_ctx_t *ctx, int status, const char *detail) {
  sidekiq_stats_t *stats = status == 0 ? ctx->stats : NULL;
  if (status == 0) ctx->stats = NULL;
  ctx->cb(status, stats, detail, ctx->data);
  ctx_free(ctx);
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const sidekiq_queue_t *)a)->name,
                ((const sidekiq_queue_t *)b)->name);
}

static const char *reply_str(const redisReply *r) {
  return r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

static void read_step2(redis_t *r, int status, redisReply **rep, size_t n,
                       void *data) {
  (void)r;
  read_ctx_t *ctx = data;
  sidekiq_stats_t *s = ctx->stats;
  if (status < 0) {
    finish(ctx, status, redis_strerror(status));
    return;
  }
  s->read_at = wall_now() + s->clock_offset;
  char err[128], q[256], e[160];
  size_t i = 0;
  for (size_t k = 0; k < s->nqueues; k++, i += 2) {
    sidekiq_queue_t *qu = &s->queues[k];
    redisReply *len = rep[i], *oldest = rep[i + 1];
    if (len->type == REDIS_REPLY_INTEGER) qu->size = len->integer;
    else
      log_event(ctx->log, LOG_WARN, "sidekiq_bad_queue", "queue=%s error=%s",
                log_quote(q, sizeof(q), qu->name),
                log_quote(e, sizeof(e), len->type == REDIS_REPLY_ERROR
                                            ? len->str
                                            : "LLEN gave no integer"));
    if (oldest->type != REDIS_REPLY_STRING) continue; /* empty queue: 0 */
    if (sidekiq_job_latency(oldest->str, oldest->len, s->read_at, &qu->latency,
                            err, sizeof(err)) == SIDEKIQ_JOB_INVALID) {
      /* Only the oldest job is read, so the queue's real age is unknown
       * until that job is taken: 0 keeps garbage from scaling anything. */
      qu->unreadable = 1;
      s->unreadable++;
      log_event(ctx->log, LOG_WARN, "sidekiq_bad_job",
                "queue=%s error=%s latency=0", log_quote(q, sizeof(q), qu->name),
                log_quote(e, sizeof(e), err));
    }
  }
  for (size_t k = 0; k < ctx->nprocs; k++, i++) {
    redisReply *h = rep[i];
    if (h->type != REDIS_REPLY_ARRAY || h->elements != 3) continue;
    long long busy, conc;
    int rc = sidekiq_process_parse(reply_str(h->element[0]),
                                   reply_str(h->element[1]),
                                   reply_str(h->element[2]), &busy, &conc, err,
                                   sizeof(err));
    if (rc < 0 || rc == 2)
      log_event(ctx->log, LOG_WARN, "sidekiq_bad_process", "process=%s error=%s",
                log_quote(q, sizeof(q), ctx->procs[k]),
                log_quote(e, sizeof(e), err));
    if (rc < 0) {
      s->bad_processes++;
    } else if (rc != 1) {
      s->busy += busy;
      s->concurrency += conc;
      s->processes++;
    }
  }
  (void)n;
  if (s->concurrency > 0) s->pool_usage = (double)s->busy / (double)s->concurrency;
  finish(ctx, 0, NULL);
}

/* Copies the members of a SMEMBERS reply; a non-array (a key of the wrong
 * type) is reported as an error instead of read as empty. */
static int copy_members(const redisReply *rep, char ***out, size_t *n,
                        const char *what, char *detail, size_t dlen) {
  *out = NULL;
  *n = 0;
  if (rep->type != REDIS_REPLY_ARRAY) {
    snprintf(detail, dlen, "Sidekiq's %s set could not be read: %s", what,
             rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    return -1;
  }
  if (rep->elements == 0) return 0;
  char **v = calloc(rep->elements, sizeof(*v));
  if (v == NULL) return REDIS_E_NOMEM;
  for (size_t i = 0; i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    v[(*n)++] = e->type == REDIS_REPLY_STRING ? strndup(e->str, e->len) : strdup("");
    if (v[*n - 1] == NULL) {
      *out = v;
      return REDIS_E_NOMEM;
    }
  }
  *out = v;
  return 0;
}

/* "Now" is Redis's clock, not this host's: jobs are stamped by many
 * hosts, and an agent whose clock is off must neither see latency that is
 * not there nor write event times that other agents misread. The offset
 * is taken once per read; time then runs on the local clock. */
static void clock_from_redis(read_ctx_t *ctx, const redisReply *t) {
  long long sec = -1, usec = -1;
  char *end;
  if (t->type == REDIS_REPLY_ARRAY && t->elements == 2 &&
      t->element[0]->type == REDIS_REPLY_STRING &&
      t->element[1]->type == REDIS_REPLY_STRING) {
    sec = strtoll(t->element[0]->str, &end, 10);
    if (*end != '\0') sec = -1;
    usec = strtoll(t->element[1]->str, &end, 10);
    if (*end != '\0' || usec > 999999) usec = -1;
  }
  if (sec < 0 || usec < 0) {
    log_event(ctx->log, LOG_DEBUG, "redis_time_unreadable",
              "msg=\"latency measured on this host's clock\"");
    return;
  }
  ctx->stats->clock_offset = (double)sec + (double)usec / 1e6 - wall_now();
}

static void read_step1(redis_t *r, int status, redisReply **rep, size_t n,
                       void *data) {
  (void)n;
  read_ctx_t *ctx = data;
  if (status < 0) {
    finish(ctx, status, redis_strerror(status));
    return;
  }
  if (ctx->extra_cb) ctx->extra_cb(rep, ctx->nextra, ctx->data);
  rep += ctx->nextra;
  char detail[256];
  char **names = NULL;
  size_t nnames = 0;
  int rc = copy_members(rep[0], &names, &nnames, "queues", detail, sizeof(detail));
  if (rc == 0)
    rc = copy_members(rep[1], &ctx->procs, &ctx->nprocs, "processes", detail,
                      sizeof(detail));
  sidekiq_stats_t *s = ctx->stats;
  clock_from_redis(ctx, rep[2]);
  if (rc == 0 && nnames > 0) {
    s->queues = calloc(nnames, sizeof(*s->queues));
    if (s->queues == NULL) rc = REDIS_E_NOMEM;
  }
  if (rc == 0) {
    for (size_t i = 0; i < nnames; i++) s->queues[i].name = names[i];
    s->nqueues = nnames;
    free(names);
    names = NULL;
    if (s->nqueues > 1) qsort(s->queues, s->nqueues, sizeof(*s->queues), by_name);
  }
  if (rc != 0) {
    for (size_t i = 0; i < nnames; i++) free(names[i]);
    free(names);
    finish(ctx, rc < -1 ? rc : REDIS_E_PROTOCOL,
           rc < -1 ? redis_strerror(rc) : detail);
    return;
  }
  if (s->nqueues == 0 && ctx->nprocs == 0) {
    s->read_at = wall_now() + s->clock_offset;
    finish(ctx, 0, NULL);
    return;
  }
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  for (size_t i = 0; i < s->nqueues; i++) {
    redis_pipeline_appendf(&p, "LLEN %squeue:%s", ctx->prefix, s->queues[i].name);
    redis_pipeline_appendf(&p, "LINDEX %squeue:%s -1", ctx->prefix,
                           s->queues[i].name);
  }
  for (size_t i = 0; i < ctx->nprocs; i++)
    redis_pipeline_appendf(&p, "HMGET %s%s busy info concurrency", ctx->prefix,
                           ctx->procs[i]);
  rc = redis_pipeline_send(r, &p, read_step2, ctx);
  if (rc < 0) finish(ctx, rc, redis_strerror(rc));
}

int sidekiq_read_with(redis_t *r, const char *ns, log_t *log,
                      redis_pipeline_t *p, sidekiq_extra_cb extra_cb,
                      sidekiq_read_cb cb, void *data) {
  read_ctx_t *ctx = calloc(1, sizeof(*ctx));
  size_t nslen = ns ? strlen(ns) : 0;
  if (ctx == NULL || (ctx->prefix = malloc(nslen + 2)) == NULL ||
      (ctx->stats = calloc(1, sizeof(*ctx->stats))) == NULL) {
    if (ctx) ctx_free(ctx);
    redis_pipeline_reset(p);
    return REDIS_E_NOMEM;
  }
  if (nslen) snprintf(ctx->prefix, nslen + 2, "%s:", ns);
  else ctx->prefix[0] = '\0';
  ctx->log = log;
  ctx->cb = cb;
  ctx->extra_cb = extra_cb;
  ctx->nextra = p->ncmds;
  ctx->data = data;
  redis_pipeline_appendf(p, "SMEMBERS %squeues", ctx->prefix);
  redis_pipeline_appendf(p, "SMEMBERS %sprocesses", ctx->prefix);
  redis_pipeline_appendf(p, "TIME");
  int rc = redis_pipeline_send(r, p, read_step1, ctx);
  if (rc < 0) ctx_free(ctx);
  return rc;
}

int sidekiq_read(redis_t *r, const char *ns, log_t *log, sidekiq_read_cb cb,
                 void *data) {
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  return sidekiq_read_with(r, ns, log, &p, NULL, cb, data);
}
