/*
 * agent: owns the loop's wiring and the order of one poll:
 *
 *   sidekiq_read (with the state read in its first round trip) -> scaler_step
 *     -> [heroku_get_formation -> store_save]   first action of an event:
 *                                               initial workers persisted
 *                                               before anything changes
 *     -> heroku_set_quantity (or dry run / skip)
 *     -> scaler_apply -> store_save
 *
 * State is re-read from Redis at every poll, because Redis is the shared
 * memory: another agent, or the Ruby gem, may have moved it. Every target
 * is absolute (initial + depth), so an action whose state write was lost
 * is simply sent again with the same quantity at the next poll.
 *
 * What the control socket asks for (status, metrics, pause, step-down) is
 * answered in agent_report.c.
 */
#include "agent.h"

#include <cjson/cJSON.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_internal.h"

#define RETRY_MAX 60.0 /* s: cap of the backoff after failed actions */

static void poll_end(agent_t *a);
static void plan_action(agent_t *a);
static void close_all(agent_t *a);
static int still_leading(agent_t *a);

/* Redis's clock as the last poll measured it (see sidekiq.c): every time
 * written to the shared state or history is on it, so agents whose own
 * clocks disagree still agree on when things happened. */
double agent_shared_now(const agent_t *a) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + a->clock_offset;
}

/* ---- logging helpers ----------------------------------------------- */

/* "default:12.3,critical:8.0" for the high queues of a decision. */
static void format_high(const scaler_decision_t *d, char *buf, size_t size) {
  size_t o = 0;
  buf[0] = '\0';
  size_t n = d->nhigh < SCALER_REPORT_MAX ? d->nhigh : SCALER_REPORT_MAX;
  for (size_t i = 0; i < n && o < size; i++) {
    int w = snprintf(buf + o, size - o, "%s%s:%.1f", i ? "," : "",
                     d->high[i]->name, d->high[i]->latency);
    if (w < 0) break;
    o += (size_t)w;
  }
  if (o >= size && size > 4) memcpy(buf + size - 4, "...", 4);
}

static void log_action(agent_t *a, enum scaler_result result, const char *error) {
  const scaler_decision_t *d = &a->decision;
  const char *event = d->action == SCALER_RESTORE ? "restore" : "scale_up";
  char queues[512], q1[600], q2[300], e[300];
  format_high(d, queues, sizeof(queues));
  long from = a->plan.kind == SCALER_PLAN_SEND ? a->plan.from : -1;
  long to = a->plan.kind == SCALER_PLAN_SEND ? a->plan.quantity : -1;
  enum log_level level = result == SCALER_FAILED ? LOG_ERROR : LOG_INFO;
  char fromto[64] = "";
  if (to >= 0) snprintf(fromto, sizeof(fromto), " from=%ld to=%ld", from, to);
  char extra[400] = "";
  if (result == SCALER_DRY_RUN)
    snprintf(extra, sizeof(extra), " msg=%s",
             log_quote(q2, sizeof(q2),
                       d->action == SCALER_RESTORE ? "would restore" : "would scale"));
  else if (error && *error)
    snprintf(extra, sizeof(extra), " error=%s retry_in=%.3g",
             log_quote(e, sizeof(e), error),
             a->state.retry_at > a->now ? a->state.retry_at - a->now : 0.0);
  log_event(a->log, level, event,
            "formation=%s%s depth=%ld result=%s reason=%s duration=%.1f queues=%s"
            " pool_usage=%.2f%s",
            a->cfg->formation, fromto, d->depth, scaler_result_name(result),
            d->reason, d->duration, log_quote(q1, sizeof(q1), queues),
            a->stats ? a->stats->pool_usage : 0.0, extra);
}

/* ---- the shared history --------------------------------------------- */

#define HISTORY_MAX 1000 /* entries kept in N/history */

static void on_history_written(redis_t *r, int status, redisReply **rep, size_t n,
                               void *data) {
  (void)r;
  agent_t *a = data;
  if (status < 0 || n < 1 || rep[0]->type == REDIS_REPLY_ERROR)
    log_event(a->log, LOG_WARN, "history_write_failed", "error=\"%s\"",
              status < 0 ? redis_strerror(status) : "Redis refused LPUSH");
}

/* Appends entry (consumed) to the history every agent shares: what
 * changed, when, and which dyno did it. Best effort: a lost entry is
 * logged, never retried, and never holds up scaling. */
void agent_history_add(agent_t *a, cJSON *entry) {
  if (entry == NULL) return;
  cJSON_AddNumberToObject(entry, "at", agent_shared_now(a));
  cJSON_AddStringToObject(entry, "dyno", a->cfg->identity);
  cJSON_AddStringToObject(entry, "agent", leader_id(&a->leader));
  char *text = cJSON_PrintUnformatted(entry);
  cJSON_Delete(entry);
  if (text == NULL) return;
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  redis_pipeline_appendf(&p, "LPUSH %s %s", a->store.k_history, text);
  redis_pipeline_appendf(&p, "LTRIM %s 0 %d", a->store.k_history, HISTORY_MAX - 1);
  free(text);
  if (redis_pipeline_send(&a->redis, &p, on_history_written, a) < 0)
    log_event(a->log, LOG_WARN, "history_write_failed", "error=\"not connected\"");
}

cJSON *agent_history_entry(const char *event) {
  cJSON *e = cJSON_CreateObject();
  if (e) cJSON_AddStringToObject(e, "event", event);
  return e;
}

/* ---- the poll ------------------------------------------------------ */

static void poll_end(agent_t *a) {
  a->poll_seconds = (double)(uv_hrtime() - a->poll_started) / 1e9;
  if (a->stats) { /* kept for status until the next poll's */
    sidekiq_stats_free(a->last_stats);
    a->last_stats = a->stats;
    a->stats = NULL;
  }
  free(a->inputs);
  a->inputs = NULL;
  a->polling = 0;
  if (a->stopping) close_all(a);
}

static void on_saved(int status, void *data) {
  agent_t *a = data;
  if (status == STORE_E_NOT_LEADER)
    log_event(a->log, LOG_WARN, "state_write_fenced",
              "msg=\"another agent leads now; it takes over from the shared state\"");
  else if (status < 0)
    log_event(a->log, LOG_ERROR, "state_save_failed", "error=%s",
              store_strerror(status));
  poll_end(a);
}

static void finish_action(agent_t *a, enum scaler_result result, const char *error) {
  double done = agent_shared_now(a);
  int ok = scaler_apply(&a->settings, &a->state, &a->decision, result, done) == 0;
  if (!ok && result != SCALER_FAILED) result = SCALER_FAILED;
  log_action(a, result, error);
  a->actions[result]++;
  agent_action_t *la = &a->last_action;
  la->valid = 1;
  la->action = a->decision.action;
  la->result = result;
  la->at = done;
  la->from = a->plan.kind == SCALER_PLAN_SEND ? a->plan.from : -1;
  la->to = a->plan.kind == SCALER_PLAN_SEND ? a->plan.quantity : -1;
  snprintf(la->error, sizeof(la->error), "%s", error ? error : "");
  if (ok && a->decision.action == SCALER_SCALE_UP && a->decision.depth == 1)
    agent_history_add(a, agent_history_entry("event_start"));
  cJSON *h = agent_history_entry(a->decision.action == SCALER_RESTORE ? "restore" : "scale_up");
  if (h) {
    cJSON_AddStringToObject(h, "formation", a->cfg->formation);
    cJSON_AddNumberToObject(h, "depth", (double)a->decision.depth);
    cJSON_AddStringToObject(h, "result", scaler_result_name(result));
    if (la->from >= 0) cJSON_AddNumberToObject(h, "from", (double)la->from);
    if (la->to >= 0) cJSON_AddNumberToObject(h, "to", (double)la->to);
    if (error && *error) cJSON_AddStringToObject(h, "error", error);
  }
  agent_history_add(a, h);
  if (!ok) { /* nothing persisted changed: the step is tried again */
    poll_end(a);
    return;
  }
  int rc = store_save(&a->store, &a->state, leader_id(&a->leader), on_saved, a);
  if (rc < 0) on_saved(rc, a);
}

/* Once a change was sent, its result is recorded even while stopping:
 * the state write is what keeps the next leader from repeating it. */
static void count_api_error(agent_t *a, const heroku_result_t *res) {
  if (res->status == 0 || res->status == HEROKU_E_CLOSED) return;
  size_t n = sizeof(a->api_errors) / sizeof(a->api_errors[0]);
  for (size_t i = 0; i < n; i++) {
    if (a->api_errors[i].count == 0 || a->api_errors[i].status == res->http_status) {
      a->api_errors[i].status = res->http_status;
      a->api_errors[i].count++;
      return;
    }
  }
}

/* Failures after which the change may have been, or may yet be, applied:
 * no reply that says it was refused. */
static int outcome_unknown(int status) {
  return status == HEROKU_E_TIMEOUT || status == HEROKU_E_UNAVAILABLE ||
         status == HEROKU_E_BAD_REPLY;
}

static void on_quantity_set(heroku_t *h, const heroku_result_t *res, void *data) {
  (void)h;
  agent_t *a = data;
  if (res->status == HEROKU_E_VETOED) { /* the lease ran out just before */
    log_event(a->log, LOG_WARN, "action_dropped", "reason=not_leader at=send");
    poll_end(a);
    return;
  }
  count_api_error(a, res);
  /* A failure may still have changed the formation (a lost reply, a
   * timeout after the API applied it): the next try looks first. */
  a->workers = res->status == 0 ? res->quantity : -1;
  if (outcome_unknown(res->status)) {
    /* The API may carry it out late, after the agent gave up on it: any
     * read or change before then could be overtaken by it. */
    double wait = 2 * a->cfg->request_timeout;
    a->settle_until = uv_now(a->loop) + (uint64_t)(wait * 1000);
    log_event(a->log, LOG_WARN, "change_outcome_unknown",
              "formation=%s quantity=%ld msg=\"it may still be carried out; the "
              "formation is read again in %.1f s\"",
              a->cfg->formation, a->plan.quantity, wait);
  }
  if (res->status == 0) finish_action(a, SCALER_SCALED, NULL);
  else if (res->status == HEROKU_E_LIMIT) finish_action(a, SCALER_MAXSCALE, res->detail);
  else finish_action(a, SCALER_FAILED, res->detail);
}

static void on_initial_saved(int status, void *data) {
  agent_t *a = data;
  if (a->stopping) {
    poll_end(a);
    return;
  }
  if (status < 0) {
    /* Without the initial count safely stored, changing the formation
     * could make the original count unrecoverable. */
    a->state.initial_workers = -1;
    finish_action(a, SCALER_FAILED, store_strerror(status));
    return;
  }
  plan_action(a);
}

static void store_initial(agent_t *a, long quantity) {
  if (scaler_set_initial_workers(&a->state, quantity) != 0) {
    char why[128];
    snprintf(why, sizeof(why), "the formation's quantity %ld is out of range", quantity);
    finish_action(a, SCALER_FAILED, why);
    return;
  }
  log_event(a->log, LOG_INFO, "initial_workers", "formation=%s quantity=%ld",
            a->cfg->formation, quantity);
  int rc = store_save(&a->store, &a->state, leader_id(&a->leader), on_initial_saved, a);
  if (rc < 0) on_initial_saved(rc, a);
}

static void send_change(agent_t *a);

/* The event's initial workers from the formation as it is now. Mid-event
 * (the stored count was lost or reset as nonsense) the formation already
 * holds this event's steps: taking it whole would let the event climb
 * past its maximum and restore to a scaled count, so the steps come off. */
static long initial_from(agent_t *a, long quantity) {
  long depth = a->state.depth;
  if (depth <= 0 || quantity <= 0) return quantity;
  long steps = depth < (long)a->settings.max_additional ? depth
                                                        : (long)a->settings.max_additional;
  long initial = quantity - steps > 1 ? quantity - steps : 1;
  log_event(a->log, LOG_WARN, "initial_workers_estimated",
            "formation=%s quantity=%ld depth=%ld initial=%ld msg=\"the stored initial "
            "count was lost mid-event; the event's steps are taken off the formation\"",
            a->cfg->formation, quantity, depth, initial);
  return initial;
}

/* The formation as it is now: read for the event's initial workers, and
 * before a change whenever this agent does not know it first hand (a new
 * leader, or the last change failed). */
static void on_formation(heroku_t *h, const heroku_result_t *res, void *data) {
  (void)h;
  agent_t *a = data;
  if (a->stopping) {
    poll_end(a);
    return;
  }
  count_api_error(a, res);
  if (res->status == 0) a->workers = res->quantity;
  if (!still_leading(a)) return;
  if (res->status != 0) {
    finish_action(a, SCALER_FAILED, res->detail);
    return;
  }
  if (a->plan.kind == SCALER_PLAN_NEED_INITIAL) store_initial(a, initial_from(a, res->quantity));
  else send_change(a);
}

/* The lease is checked again right before anything leaves the agent: a
 * leader frozen mid-poll (SIGSTOP, a long GC pause of the host) wakes up
 * with an expired lease and must not act on what it read before. */
static int still_leading(agent_t *a) {
  if (leader_is_leader(&a->leader)) return 1;
  log_event(a->log, LOG_WARN, "action_dropped", "reason=not_leader");
  poll_end(a);
  return 0;
}

/* A change is sent only when the formation is not already there. The
 * formation can be ahead of the shared state when a leader died between
 * its PATCH and its state write, or a reply was lost after the API applied
 * the change: the step is then recorded as done instead of sent twice. */
static void send_change(agent_t *a) {
  /* A step up never takes the formation down: when it is already above
   * the target (the stored depth was lost, or someone scaled up by hand)
   * the step counts as done and the depth catches up step by step. */
  int up = a->decision.action == SCALER_SCALE_UP;
  if (up ? a->workers >= a->plan.quantity : a->workers == a->plan.quantity) {
    log_event(a->log, LOG_INFO, "change_already_applied",
              "formation=%s quantity=%ld target=%ld msg=\"the formation is already %s the "
              "target; recorded, not sent again\"",
              a->cfg->formation, a->workers, a->plan.quantity,
              up ? "at or above" : "at");
    finish_action(a, SCALER_SCALED, NULL);
    return;
  }
  if (heroku_set_quantity(&a->heroku, a->plan.quantity, on_quantity_set, a) != 0)
    finish_action(a, SCALER_FAILED, "cannot start the formation update");
}

static void plan_action(agent_t *a) {
  if (!still_leading(a)) return;
  a->plan = scaler_plan_heroku(&a->settings, &a->state, &a->decision);
  if (a->plan.kind != SCALER_PLAN_SKIP && !a->cfg->dry_run &&
      uv_now(a->loop) < a->settle_until) {
    log_event(a->log, LOG_DEBUG, "action_deferred", "reason=change_outcome_unknown");
    poll_end(a);
    return;
  }
  switch (a->plan.kind) {
  case SCALER_PLAN_SKIP:
    finish_action(a, a->plan.result, NULL);
    return;
  case SCALER_PLAN_NEED_INITIAL:
    if (!a->have_heroku) {
      /* dry run without credentials: nothing to read the formation with */
      log_event(a->log, LOG_WARN, "initial_workers_assumed",
                "formation=%s quantity=1 msg=\"dry run without Heroku credentials\"",
                a->cfg->formation);
      store_initial(a, 1);
      return;
    }
    if (heroku_get_formation(&a->heroku, on_formation, a) != 0)
      finish_action(a, SCALER_FAILED, "cannot start the formation request");
    return;
  case SCALER_PLAN_SEND:
    if (a->cfg->dry_run) {
      finish_action(a, SCALER_DRY_RUN, NULL);
      return;
    }
    if (a->workers >= 0) {
      send_change(a);
      return;
    }
    if (heroku_get_formation(&a->heroku, on_formation, a) != 0)
      finish_action(a, SCALER_FAILED, "cannot start the formation request");
    return;
  }
}

/* Round trip 1 carries the state read: its reply arrives here first. */
static void on_state_reply(redisReply **rep, size_t n, void *data) {
  agent_t *a = data;
  char warning[1024];
  a->loaded_status = n == 2 ? store_load_parse(&a->store, rep[0], agent_shared_now(a),
                                               &a->loaded, warning, sizeof(warning))
                            : REDIS_E_PROTOCOL;
  if (n == 2) a->paused = rep[1]->type == REDIS_REPLY_STRING;
}

static void decide(agent_t *a) {
  /* Runtime fields belong to the event this agent has been watching; a
   * different event (or none) in Redis starts them afresh. */
  scaler_state_t next = a->loaded;
  if (next.depth > 0 && next.depth == a->state.depth &&
      next.event_started == a->state.event_started)
    next.ceiling_reached = a->state.ceiling_reached;
  next.failures = a->state.failures;
  next.retry_at = a->state.retry_at;
  a->state = next;

  sidekiq_stats_t *s = a->stats;
  a->inputs = calloc(s->nqueues ? s->nqueues : 1, sizeof(*a->inputs));
  if (a->inputs == NULL) {
    poll_end(a);
    return;
  }
  for (size_t i = 0; i < s->nqueues; i++) {
    a->inputs[i].name = s->queues[i].name;
    a->inputs[i].latency = s->queues[i].latency;
  }
  scaler_input_t in = {.queues = a->inputs,
                       .nqueues = s->nqueues,
                       .pool_usage = s->pool_usage,
                       .now = a->now};
  a->decision = scaler_step(&a->settings, &a->state, &in);
  log_event(a->log, LOG_DEBUG, "poll",
            "queues=%zu high=%zu max_latency=%.3f pool_usage=%.3f depth=%ld "
            "action=%s reason=%s round_trips=%llu",
            s->nqueues, a->decision.nhigh, a->decision.max_latency, s->pool_usage,
            a->state.depth, scaler_action_name(a->decision.action),
            a->decision.reason ? a->decision.reason : "",
            (unsigned long long)(a->redis.stats.writes - a->poll_writes));
  if (a->decision.action == SCALER_NONE) {
    poll_end(a);
    return;
  }
  if (a->paused) { /* decided, logged, not acted on: state stays as it is */
    log_event(a->log, LOG_INFO, "action_paused", "action=%s depth=%ld",
              scaler_action_name(a->decision.action), a->decision.depth);
    poll_end(a);
    return;
  }
  plan_action(a);
}

static void on_stats(int status, sidekiq_stats_t *stats, const char *detail,
                     void *data) {
  agent_t *a = data;
  a->stats = stats;
  if (a->stopping) {
    poll_end(a);
    return;
  }
  const char *step = "sidekiq";
  if (status == 0 && a->loaded_status < 0) {
    status = a->loaded_status;
    detail = store_strerror(status);
    step = "state";
  }
  if (status < 0) {
    a->poll_errors++;
    char q[300];
    log_event(a->log, LOG_WARN, "poll_failed", "step=%s error=%s", step,
              log_quote(q, sizeof(q), detail ? detail : redis_strerror(status)));
    poll_end(a);
    return;
  }
  a->now = stats->read_at;
  a->clock_offset = stats->clock_offset;
  decide(a);
}

static void poll_cb(uv_timer_t *t) {
  agent_t *a = t->data;
  if (a->stopping) return;
  if (a->polling) { /* a slow API call: one warning per poll, not per tick */
    log_event(a->log, a->poll_skips++ ? LOG_DEBUG : LOG_WARN, "poll_skipped",
              "reason=previous_poll_running");
    return;
  }
  if (!leader_is_leader(&a->leader)) return; /* followers do not poll */
  if (a->redis.state != REDIS_STATE_READY) {
    log_event(a->log, LOG_DEBUG, "poll_skipped", "reason=redis_not_connected");
    return;
  }
  a->polling = 1;
  a->poll_skips = 0;
  a->polls++;
  a->poll_started = uv_hrtime();
  a->poll_writes = a->redis.stats.writes;
  a->loaded_status = REDIS_E_PROTOCOL; /* until its reply says otherwise */
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  store_load_append(&a->store, &p);
  redis_pipeline_appendf(&p, "GET %s", a->store.k_paused);
  int rc = sidekiq_read_with(&a->redis, a->cfg->sidekiq_namespace, a->log, &p,
                             on_state_reply, on_stats, a);
  if (rc < 0) on_stats(rc, NULL, redis_strerror(rc), a);
}

/* ---- connection and signals ---------------------------------------- */

static void on_redis_state(redis_t *r, enum redis_state st, int status,
                           const char *detail, void *data) {
  agent_t *a = data;
  char url[512];
  if (a->stopping) return;
  if (st == REDIS_STATE_READY) {
    redis_url_redacted(&r->url, url, sizeof(url));
    log_event(a->log, LOG_INFO, "redis_connected", "url=%s", url);
    a->redis_down_logged = 0;
    /* poll at once rather than a whole interval after (re)connecting */
    uv_timer_again(&a->poll_timer);
    poll_cb(&a->poll_timer);
  } else if (st == REDIS_STATE_DISCONNECTED && status < 0) {
    /* One error line per outage; the retries are debug noise. */
    enum log_level level = a->redis_down_logged ? LOG_DEBUG : LOG_ERROR;
    char q[300];
    redis_url_redacted(&r->url, url, sizeof(url));
    log_event(a->log, level, "redis_unavailable", "url=%s error=%s", url,
              log_quote(q, sizeof(q), detail ? detail : redis_strerror(status)));
    a->redis_down_logged = 1;
  }
}

static void on_leader_change(leader_t *l, int is_leader, const char *why,
                             void *data) {
  (void)l;
  agent_t *a = data;
  /* Whatever this agent knew of the formation may be stale now: another
   * leader may have changed it in between. */
  a->workers = -1;
  cJSON *h = agent_history_entry(is_leader ? "leader_elected" : "leader_lost");
  if (h) cJSON_AddStringToObject(h, "why", why);
  if (!a->closing) agent_history_add(a, h);
  else cJSON_Delete(h);
  if (is_leader && !a->stopping) {
    /* act now, not a whole poll interval after winning */
    uv_timer_again(&a->poll_timer);
    poll_cb(&a->poll_timer);
  }
}

/* A poll still running at shutdown gets this long to record what it did. */
static void drain_timeout(uv_timer_t *t) {
  agent_t *a = t->data;
  log_event(a->log, LOG_WARN, "shutdown_forced", "reason=poll_still_running");
  close_all(a);
}

static void on_signal(uv_signal_t *s, int signum) {
  agent_t *a = s->data;
  log_event(a->log, LOG_INFO, "shutdown", "signal=%s",
            signum == SIGTERM ? "TERM" : "INT");
  agent_stop(a, a->stop_cb);
}

/* ---- lifecycle ----------------------------------------------------- */

static void maybe_stopped(agent_t *a) {
  if (--a->handles_open == 0) {
    store_close(&a->store);
    sidekiq_stats_free(a->stats);
    a->stats = NULL;
    sidekiq_stats_free(a->last_stats);
    a->last_stats = NULL;
    free(a->inputs);
    a->inputs = NULL;
    if (a->stop_cb) a->stop_cb(a);
  }
}

static void handle_closed(uv_handle_t *h) { maybe_stopped(h->data); }
static void redis_closed(redis_t *r) { maybe_stopped(r->opts.data); }
static void heroku_closed(heroku_t *h) {
  agent_t *a = (agent_t *)((char *)h - offsetof(agent_t, heroku));
  maybe_stopped(a);
}

/* The lease once more, as a change is about to be written to the network:
 * the gap between the check and the send is then microseconds, not the
 * loop turns and the connect in between. */
static int lease_still_held(void *data) {
  agent_t *a = data;
  return leader_is_leader(&a->leader);
}

int agent_init(uv_loop_t *loop, agent_t *a, const config_t *cfg, log_t *log,
               char *err, size_t errlen) {
  memset(a, 0, sizeof(*a));
  a->loop = loop;
  a->cfg = cfg;
  a->log = log;
  a->state = SCALER_STATE_INIT;
  a->workers = -1;
  a->settings = (scaler_settings_t){
      .latency_threshold = cfg->latency_threshold,
      .restored_threshold = cfg->latency_restored_threshold,
      .usage_threshold = cfg->usage_threshold,
      .alert_interval = cfg->alert_interval,
      .retry_base = cfg->poll_interval,
      .retry_max = cfg->poll_interval > RETRY_MAX ? cfg->poll_interval : RETRY_MAX,
      .max_additional = cfg->max_additional_workers,
      .queues = (const char *const *)cfg->queues,
      .nqueues = cfg->nqueues,
  };
  if (scaler_settings_check(&a->settings, err, errlen) != 0) return -1;

  redis_options_t ro;
  redis_options_default(&ro);
  ro.connect_timeout = cfg->request_timeout;
  ro.request_timeout = cfg->request_timeout;
  ro.log = log;
  ro.on_state = on_redis_state;
  ro.data = a;
  config_redis_tls(cfg, &ro.tls);
  if (redis_init(loop, &a->redis, cfg->redis_url, &ro) != 0) {
    snprintf(err, errlen, "%s", redis_last_error(&a->redis));
    return -1;
  }
  if (store_init(&a->store, &a->redis, cfg->state_namespace, cfg->formation, log) != 0) {
    snprintf(err, errlen, "cannot set up the state keys");
    redis_close(&a->redis, NULL);
    return -1;
  }
  leader_options_t lo = {.key_leader = a->store.k_leader,
                         .key_fence = a->store.k_fence,
                         .identity = cfg->identity,
                         .ttl = cfg->lock_ttl,
                         .tick = cfg->lock_tick,
                         .log = log,
                         .on_change = on_leader_change,
                         .data = a};
  if (leader_init(loop, &a->leader, &a->redis, &lo, err, errlen) != 0) {
    store_close(&a->store);
    redis_close(&a->redis, NULL);
    return -1;
  }
  a->have_heroku = cfg->heroku_app != NULL && cfg->heroku_api_key != NULL;
  if (a->have_heroku) {
    heroku_options_t ho;
    heroku_options_default(&ho);
    ho.api_url = cfg->heroku_api_url;
    ho.app = cfg->heroku_app;
    ho.token = cfg->heroku_api_key;
    ho.formation = cfg->formation;
    ho.timeout = cfg->request_timeout;
    ho.identity = cfg->identity;
    ho.may_change = lease_still_held;
    ho.may_change_data = a;
    ho.log = log;
    if (heroku_init(loop, &a->heroku, &ho, err, errlen) != 0) {
      leader_close(&a->leader, NULL);
      store_close(&a->store);
      redis_close(&a->redis, NULL);
      return -1;
    }
  }
  control_options_t co;
  control_options_default(&co);
  co.path = cfg->socket_path;
  co.mode = cfg->socket_mode;
  co.log = log;
  co.handler = agent_on_control;
  co.data = a;
  if (control_init(loop, &a->control, &co, err, errlen) != 0) {
    if (a->have_heroku) heroku_close(&a->heroku, NULL);
    leader_close(&a->leader, NULL);
    store_close(&a->store);
    redis_close(&a->redis, NULL);
    return -1;
  }
  uv_timer_init(loop, &a->poll_timer);
  uv_signal_init(loop, &a->sigterm);
  uv_signal_init(loop, &a->sigint);
  a->poll_timer.data = a->sigterm.data = a->sigint.data = a;
  return 0;
}

int agent_start(agent_t *a, agent_stop_cb on_stopped) {
  a->stop_cb = on_stopped;
  uint64_t every = (uint64_t)(a->cfg->poll_interval * 1000.0);
  if (every == 0) every = 1;
  uv_timer_start(&a->poll_timer, poll_cb, every, every);
  uv_signal_start(&a->sigterm, on_signal, SIGTERM);
  uv_signal_start(&a->sigint, on_signal, SIGINT);
  int rc = redis_connect(&a->redis);
  if (rc == 0) rc = leader_start(&a->leader);
  return rc;
}

static void leader_closed(leader_t *l) {
  maybe_stopped((agent_t *)((char *)l - offsetof(agent_t, leader)));
}

static void control_closed(control_t *c) {
  maybe_stopped((agent_t *)((char *)c - offsetof(agent_t, control)));
}

static void close_handles(agent_t *a) {
  a->handles_open = 7 - (a->have_heroku ? 0 : 1);
  control_close(&a->control, control_closed);
  uv_close((uv_handle_t *)&a->poll_timer, handle_closed);
  uv_close((uv_handle_t *)&a->sigterm, handle_closed);
  uv_close((uv_handle_t *)&a->sigint, handle_closed);
  if (a->have_heroku) heroku_close(&a->heroku, heroku_closed);
  leader_close(&a->leader, leader_closed);
  redis_close(&a->redis, redis_closed);
}

static void on_released(leader_t *l, int status, void *data) {
  (void)l;
  (void)status; /* logged by the leader module; the lease runs out anyway */
  close_handles(data);
}

/* Shutdown, once no poll is in flight: hand the lock over first, so a
 * follower wins at its next tick instead of after a whole TTL. */
static void close_all(agent_t *a) {
  if (a->closing) return;
  a->closing = 1;
  uv_timer_stop(&a->poll_timer);
  if (leader_release(&a->leader, on_released, a) != 0) close_handles(a);
}

void agent_stop(agent_t *a, agent_stop_cb cb) {
  if (a->stopping) return;
  a->stopping = 1;
  if (cb) a->stop_cb = cb;
  uv_signal_stop(&a->sigterm);
  uv_signal_stop(&a->sigint);
  if (!a->polling) {
    close_all(a);
    return;
  }
  /* Let the poll in flight finish (it starts no new action now), bounded
   * by what its requests may take. */
  double grace = 2 * a->cfg->request_timeout + 1;
  uv_timer_start(&a->poll_timer, drain_timeout, (uint64_t)(grace * 1000), 0);
}
