/*
 * agent_report: owns the agent's side of the control socket: the status
 * JSON (every field the design names for `status --json`), the metrics in
 * Prometheus text, and the handler that answers each request, pause and
 * resume (the shared flag in Redis) and step-down included. The poll,
 * actions and lifecycle are agent.c's; what both use is in
 * agent_internal.h.
 */
#include "agent.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_internal.h"
#include "version.h"

static const char *role_of(agent_t *a) {
  if (a->redis.state != REDIS_STATE_READY) return "disconnected";
  return leader_is_leader(&a->leader) ? "leader" : "follower";
}

/* Every field the design names for `status --json`. Figures that only the
 * leader observes (queues, pool usage, event) are those of its last poll;
 * a follower shows the event as it last read it, if ever. */
static char *status_json(agent_t *a) {
  cJSON *o = cJSON_CreateObject();
  char url[512];
  redis_url_redacted(&a->redis.url, url, sizeof(url));
  cJSON_AddStringToObject(o, "version", SCALEKIQ_VERSION);
  cJSON_AddNumberToObject(o, "pid", (double)getpid());
  cJSON_AddStringToObject(o, "identity", a->cfg->identity);
  cJSON_AddStringToObject(o, "id", leader_id(&a->leader));
  cJSON_AddStringToObject(o, "role", role_of(a));
  cJSON_AddStringToObject(o, "leader", leader_current(&a->leader));
  cJSON_AddBoolToObject(o, "paused", a->paused);
  cJSON_AddBoolToObject(o, "dry_run", a->cfg->dry_run);
  cJSON_AddStringToObject(o, "formation", a->cfg->formation);
  if (a->workers >= 0) cJSON_AddNumberToObject(o, "workers", (double)a->workers);
  else cJSON_AddNullToObject(o, "workers");
  cJSON_AddNumberToObject(o, "latency_threshold", a->cfg->latency_threshold);
  cJSON *redis = cJSON_AddObjectToObject(o, "redis");
  cJSON_AddBoolToObject(redis, "connected", a->redis.state == REDIS_STATE_READY);
  cJSON_AddStringToObject(redis, "url", url);
  cJSON *ev = cJSON_AddObjectToObject(o, "event");
  cJSON_AddNumberToObject(ev, "depth", (double)a->state.depth);
  cJSON_AddNumberToObject(ev, "started_at", a->state.event_started);
  cJSON_AddNumberToObject(ev, "last_alerted_at", a->state.last_alerted);
  if (a->state.initial_workers >= 0)
    cJSON_AddNumberToObject(ev, "initial_workers", (double)a->state.initial_workers);
  else
    cJSON_AddNullToObject(ev, "initial_workers");
  cJSON *qs = cJSON_AddArrayToObject(o, "queues");
  const sidekiq_stats_t *st = a->last_stats;
  for (size_t i = 0; st && i < st->nqueues; i++) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "name", st->queues[i].name);
    cJSON_AddNumberToObject(q, "size", (double)st->queues[i].size);
    cJSON_AddNumberToObject(q, "latency", round(st->queues[i].latency * 1000) / 1000);
    cJSON_AddItemToArray(qs, q);
  }
  if (st) cJSON_AddNumberToObject(o, "pool_usage", st->pool_usage);
  else cJSON_AddNullToObject(o, "pool_usage");
  const agent_action_t *la = &a->last_action;
  if (la->valid) {
    cJSON *act = cJSON_AddObjectToObject(o, "last_action");
    cJSON_AddStringToObject(act, "action", scaler_action_name(la->action));
    cJSON_AddStringToObject(act, "result", scaler_result_name(la->result));
    cJSON_AddNumberToObject(act, "at", la->at);
    if (la->from >= 0) cJSON_AddNumberToObject(act, "from", (double)la->from);
    else cJSON_AddNullToObject(act, "from");
    if (la->to >= 0) cJSON_AddNumberToObject(act, "to", (double)la->to);
    else cJSON_AddNullToObject(act, "to");
    cJSON_AddStringToObject(act, "error", la->error);
  } else {
    cJSON_AddNullToObject(o, "last_action");
  }
  cJSON_AddNumberToObject(o, "polls", (double)a->polls);
  /* the clock the times above are on (Redis's), for computing ages */
  cJSON_AddNumberToObject(o, "now", agent_shared_now(a));
  char *out = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return out;
}

/* Prometheus text exposition (version 0.0.4). */
typedef struct text {
  char *buf;
  size_t len, cap;
  int failed;
} text_t;

static void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text_t *t, const char *fmt, ...) {
  va_list ap;
  for (int pass = 0; pass < 2 && !t->failed; pass++) {
    va_start(ap, fmt);
    int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if (t->buf && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = t->cap ? t->cap : 4096;
    while (cap <= t->len + (size_t)n) cap *= 2;
    char *nb = realloc(t->buf, cap);
    if (nb == NULL) {
      t->failed = 1;
      return;
    }
    t->buf = nb;
    t->cap = cap;
  }
}

static void metric_head(text_t *t, const char *name, const char *type, const char *help) {
  text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(char *out, size_t size, const char *in) {
  size_t o = 0;
  for (; *in && o + 3 < size; in++) {
    if (*in == '\\' || *in == '"') out[o++] = '\\', out[o++] = *in;
    else if (*in == '\n') out[o++] = '\\', out[o++] = 'n';
    else out[o++] = *in;
  }
  out[o] = '\0';
}

static char *metrics_text(agent_t *a) {
  text_t t = {0};
  char v[512];
  const sidekiq_stats_t *st = a->last_stats;
  metric_head(&t, "scalekiq_queue_latency_seconds", "gauge",
              "Age of the oldest job of each queue at the leader's last poll.");
  for (size_t i = 0; st && i < st->nqueues; i++) {
    label_value(v, sizeof(v), st->queues[i].name);
    text_add(&t, "scalekiq_queue_latency_seconds{queue=\"%s\"} %.3f\n", v,
             st->queues[i].latency);
  }
  metric_head(&t, "scalekiq_queue_size", "gauge", "Jobs waiting in each queue.");
  for (size_t i = 0; st && i < st->nqueues; i++) {
    label_value(v, sizeof(v), st->queues[i].name);
    text_add(&t, "scalekiq_queue_size{queue=\"%s\"} %lld\n", v, st->queues[i].size);
  }
  metric_head(&t, "scalekiq_pool_usage", "gauge", "Busy threads over concurrency.");
  text_add(&t, "scalekiq_pool_usage %.4f\n", st ? st->pool_usage : 0.0);
  metric_head(&t, "scalekiq_event_depth", "gauge", "Alerts so far in the current event.");
  text_add(&t, "scalekiq_event_depth %ld\n", a->state.depth);
  metric_head(&t, "scalekiq_is_leader", "gauge", "1 while this agent holds the lock.");
  text_add(&t, "scalekiq_is_leader %d\n", leader_is_leader(&a->leader) ? 1 : 0);
  metric_head(&t, "scalekiq_paused", "gauge", "1 while formation changes are paused.");
  text_add(&t, "scalekiq_paused %d\n", a->paused ? 1 : 0);
  metric_head(&t, "scalekiq_scale_actions_total", "counter", "Scale actions by result.");
  for (int r = SCALER_SCALED; r <= SCALER_DRY_RUN; r++)
    text_add(&t, "scalekiq_scale_actions_total{result=\"%s\"} %llu\n",
             scaler_result_name((enum scaler_result)r), (unsigned long long)a->actions[r]);
  metric_head(&t, "scalekiq_redis_up", "gauge", "1 while connected to Redis.");
  text_add(&t, "scalekiq_redis_up %d\n", a->redis.state == REDIS_STATE_READY ? 1 : 0);
  metric_head(&t, "scalekiq_platform_api_errors_total", "counter",
              "Failed Platform API calls by HTTP status (0: no reply).");
  for (size_t i = 0; i < sizeof(a->api_errors) / sizeof(a->api_errors[0]); i++)
    if (a->api_errors[i].count)
      text_add(&t, "scalekiq_platform_api_errors_total{status=\"%ld\"} %llu\n",
               a->api_errors[i].status, (unsigned long long)a->api_errors[i].count);
  metric_head(&t, "scalekiq_poll_duration_seconds", "gauge", "Duration of the last poll.");
  text_add(&t, "scalekiq_poll_duration_seconds %.6f\n", a->poll_seconds);
  metric_head(&t, "scalekiq_polls_total", "counter", "Polls this agent has run.");
  text_add(&t, "scalekiq_polls_total %llu\n", (unsigned long long)a->polls);
  if (t.failed) {
    free(t.buf);
    return NULL;
  }
  if (t.len > 0 && t.buf[t.len - 1] == '\n') t.buf[--t.len] = '\0'; /* the server adds it */
  return t.buf;
}

typedef struct pause_req {
  agent_t *agent;
  uint64_t id;
  int pause;
} pause_req_t;

static void on_pause_written(redis_t *r, int status, redisReply **rep, size_t n,
                             void *data) {
  (void)r;
  pause_req_t *p = data;
  agent_t *a = p->agent;
  int ok = status == 0 && n == 1 && rep[0]->type != REDIS_REPLY_ERROR;
  if (ok) {
    a->paused = p->pause;
    log_event(a->log, LOG_INFO, p->pause ? "paused" : "resumed", "by=control_socket");
    agent_history_add(a, agent_history_entry(p->pause ? "pause" : "resume"));
  }
  if (!a->closing)
    control_respond(&a->control, p->id, ok ? 0 : CONTROL_E_IO,
                    strdup(ok ? (p->pause ? "paused: no formation change until resume"
                                          : "resumed")
                              : "could not write the pause flag to Redis"));
  free(p);
}

int agent_on_control(control_t *c, const control_request_t *req, char **reply,
                     void *data) {
  (void)c;
  agent_t *a = data;
  switch (req->command) {
  case CONTROL_STATUS:
    *reply = status_json(a);
    return *reply ? 0 : CONTROL_E_NOMEM;
  case CONTROL_PAUSE:
  case CONTROL_RESUME: {
    /* Shared through Redis, so it holds for whichever agent leads. */
    pause_req_t *p = malloc(sizeof(*p));
    if (p == NULL) return CONTROL_E_NOMEM;
    *p = (pause_req_t){.agent = a, .id = req->id, .pause = req->command == CONTROL_PAUSE};
    int rc = p->pause ? redis_command(&a->redis, on_pause_written, p, "SET %s 1", a->store.k_paused)
                      : redis_command(&a->redis, on_pause_written, p, "DEL %s", a->store.k_paused);
    if (rc < 0) {
      free(p);
      *reply = strdup("Redis is not connected; try again");
      return CONTROL_E_IO;
    }
    return CONTROL_DEFER;
  }
  case CONTROL_STEP_DOWN:
    if (!leader_is_leader(&a->leader)) {
      *reply = strdup("this agent does not lead; nothing to step down from");
      return CONTROL_E_REQUEST;
    }
    leader_step_down(&a->leader);
    *reply = strdup("stepped down: another agent takes over at its next lock tick");
    return 0;
  case CONTROL_METRICS:
    *reply = metrics_text(a);
    return *reply ? 0 : CONTROL_E_NOMEM;
  case CONTROL_HISTORY:
    *reply = strdup("the history is read from Redis: run `scalekiq history`");
    return CONTROL_E_REQUEST;
  }
  return CONTROL_E_REQUEST;
}
