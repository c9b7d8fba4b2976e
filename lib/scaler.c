/*
 * scaler: owns the decision of when to scale up, when to restore, and what
 * quantity to ask Heroku for, as pure functions over scaler_state_t.
 * Reading and writing Redis, calling Heroku and keeping time belong to the
 * callers (store, heroku, agent).
 *
 * What the state means in the gem's keys (namespace N, formation F):
 *   N/depth                  depth
 *   N/last_alerted           last_alerted  ("0.0" when none)
 *   N/latency_event_started  event_started ("0.0" outside an event)
 *   amigo/autoscaler/heroku/F/active_event_initial_workers
 *                            initial_workers (key absent when -1)
 * As in the gem (Amigo::Autoscaler#_check and Handlers::Heroku):
 *   - a scale-up sets depth (1 and event_started = now on a new event),
 *     and last_alerted = now, whatever the handler returned: depth keeps
 *     growing past max_additional (maxscale) and with initial 0 (noscale);
 *   - a restore sets depth 0, event_started 0 (the gem writes "0.0", it does
 *     not delete the key), last_alerted = now (so the alert interval also
 *     spaces a restore and the next event), and deletes initial workers;
 *   - the reported duration is now - event_started, 0 at depth 1.
 * Where this differs from the gem, on purpose (DESIGN.md):
 *   - the gem restores as soon as nothing is above latency_threshold; here
 *     only once every watched latency is at or below restored_threshold;
 *   - the gem has already bumped depth in memory when the Heroku call
 *     raises, and deletes initial workers before its restore call; here a
 *     failure leaves the state as it was, so the same step is decided again;
 *   - initial workers left over from a failed first step while depth is 0
 *     (the gem would reuse them at its next event) are restored and dropped.
 */
#include "scaler.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_watched(const scaler_settings_t *settings, const char *name) {
  if (settings->nqueues == 0) return true;
  if (name == NULL) return false;
  for (size_t i = 0; i < settings->nqueues; i++)
    if (strcmp(settings->queues[i], name) == 0) return true;
  return false;
}

/* Keeps decision->high sorted by latency, highest first, at most
 * SCALER_REPORT_MAX long, while nhigh counts them all. */
static void report_high(scaler_decision_t *d, const scaler_queue_t *q) {
  size_t kept = d->nhigh < SCALER_REPORT_MAX ? d->nhigh : SCALER_REPORT_MAX;
  d->nhigh++;
  size_t pos = kept;
  while (pos > 0 && d->high[pos - 1]->latency < q->latency) pos--;
  if (pos >= SCALER_REPORT_MAX) return;
  size_t last = kept < SCALER_REPORT_MAX ? kept : SCALER_REPORT_MAX - 1;
  for (size_t i = last; i > pos; i--) d->high[i] = d->high[i - 1];
  d->high[pos] = q;
}

scaler_decision_t scaler_step(const scaler_settings_t *settings,
                              const scaler_state_t *state,
                              const scaler_input_t *input) {
  scaler_decision_t d = {.action = SCALER_NONE, .at = input->now};
  double now = input->now;

  if (now < state->last_alerted + settings->alert_interval) {
    d.reason = "alert_interval";
    return d;
  }
  if (now < state->retry_at) {
    d.reason = "backoff";
    return d;
  }

  for (size_t i = 0; i < input->nqueues; i++) {
    const scaler_queue_t *q = &input->queues[i];
    if (!is_watched(settings, q->name)) continue;
    /* An unknown (NaN) latency compares false everywhere: it is no
     * evidence of a backlog and does not hold a restore back either. */
    if (q->latency > d.max_latency) d.max_latency = q->latency;
    if (q->latency > settings->latency_threshold) report_high(&d, q);
  }
  /* NaN (unknown) compares false: never high. */
  d.pool_high = input->pool_usage > settings->usage_threshold;

  if (d.nhigh > 0 || d.pool_high) {
    d.action = SCALER_SCALE_UP;
    d.reason = d.nhigh == 0 ? "pool_usage"
               : d.pool_high ? "latency_and_pool_usage"
                             : "latency";
    if (state->depth > 0) {
      /* Saturates so a long event can never overflow depth. */
      d.depth = state->depth < SCALER_DEPTH_LIMIT ? state->depth + 1
                                                  : SCALER_DEPTH_LIMIT;
      d.event_started = state->event_started;
      d.duration = now - state->event_started;
    } else {
      d.depth = 1;
      d.event_started = now;
      d.duration = 0.0;
    }
    return d;
  }

  bool in_event = state->depth > 0;
  bool orphaned = !in_event && state->initial_workers >= 0;
  if (!in_event && !orphaned) {
    d.reason = "normal";
    return d;
  }
  if (d.max_latency > settings->restored_threshold) {
    d.reason = "between_thresholds";
    return d;
  }
  d.action = SCALER_RESTORE;
  d.reason = in_event ? "restored" : "orphaned_initial_workers";
  d.depth = state->depth;
  d.event_started = state->event_started;
  d.duration = in_event ? now - state->event_started : 0.0;
  return d;
}

scaler_plan_t scaler_plan_heroku(const scaler_settings_t *settings,
                                 const scaler_state_t *state,
                                 const scaler_decision_t *decision) {
  scaler_plan_t plan = {.kind = SCALER_PLAN_SKIP, .result = SCALER_NOSCALE};
  long initial = state->initial_workers;

  if (decision->action == SCALER_SCALE_UP) {
    if (initial < 0) {
      plan.kind = SCALER_PLAN_NEED_INITIAL;
      return plan;
    }
    /* Someone scaled to zero on purpose: leave the whole event alone. */
    if (initial == 0) return plan;
    /* depth > max_additional is initial + depth > initial + max_additional
     * without the sum, which garbage could overflow. */
    if (state->ceiling_reached || decision->depth > settings->max_additional) {
      plan.result = SCALER_MAXSCALE;
      return plan;
    }
    plan.kind = SCALER_PLAN_SEND;
    plan.from = initial + decision->depth - 1;
    plan.quantity = initial + decision->depth;
    return plan;
  }

  if (decision->action == SCALER_RESTORE) {
    /* The gem: nothing was scaled, so there is nothing to put back. */
    if (initial <= 0) return plan;
    long steps = state->depth < settings->max_additional
                     ? state->depth
                     : (long)settings->max_additional;
    plan.kind = SCALER_PLAN_SEND;
    plan.from = initial + steps;
    plan.quantity = initial;
    return plan;
  }

  return plan;
}

int scaler_set_initial_workers(scaler_state_t *state, long quantity) {
  if (quantity < 0 || quantity > SCALER_WORKERS_LIMIT) return -1;
  state->initial_workers = quantity;
  return 0;
}

double scaler_backoff(const scaler_settings_t *settings, unsigned failures) {
  double delay = settings->retry_base > 0 ? settings->retry_base : 0.0;
  double cap = settings->retry_max > 0 ? settings->retry_max : 0.0;
  /* Stop doubling once past the cap: no overflow however many failures. */
  for (unsigned i = 1; i < failures && delay < cap; i++) delay *= 2;
  return delay < cap ? delay : cap;
}

static bool result_is_success(enum scaler_action action,
                              enum scaler_result result) {
  switch (result) {
  case SCALER_SCALED:
  case SCALER_NOSCALE:
  case SCALER_DRY_RUN:
    return true;
  case SCALER_MAXSCALE:
    /* Restoring to the initial quantity cannot be above a ceiling; if the
     * platform says so anyway, the formation is still scaled up. */
    return action == SCALER_SCALE_UP;
  case SCALER_FAILED:
    return false;
  }
  return false;
}

int scaler_apply(const scaler_settings_t *settings, scaler_state_t *state,
                 const scaler_decision_t *decision, enum scaler_result result,
                 double now) {
  if (decision->action == SCALER_NONE) return 0;

  if (!result_is_success(decision->action, result)) {
    /* Nothing else moves: the next poll decides the same step again. */
    if (state->failures < 0xFFFFu) state->failures++;
    state->retry_at = now + scaler_backoff(settings, state->failures);
    return -1;
  }

  state->failures = 0;
  state->retry_at = 0;
  state->last_alerted = decision->at;
  if (decision->action == SCALER_SCALE_UP) {
    state->depth = decision->depth;
    state->event_started = decision->event_started;
    if (result == SCALER_MAXSCALE) state->ceiling_reached = true;
  } else {
    state->depth = 0;
    state->event_started = 0;
    state->initial_workers = -1;
    state->ceiling_reached = false;
  }
  return 0;
}

/* ---- validation ---------------------------------------------------- */

static void append(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends "; "-separated notes to why, truncating to fit. */
static void append(char *why, size_t whylen, const char *fmt, ...) {
  if (why == NULL || whylen == 0) return;
  size_t used = strnlen(why, whylen);
  if (used + 1 >= whylen) return;
  if (used > 0) {
    snprintf(why + used, whylen - used, "; ");
    used = strnlen(why, whylen);
    if (used + 1 >= whylen) return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why + used, whylen - used, fmt, ap);
  va_end(ap);
}

int scaler_settings_check(const scaler_settings_t *s, char *why,
                          size_t whylen) {
  if (why != NULL && whylen > 0) why[0] = '\0';
  if (!(s->latency_threshold > 0) || !isfinite(s->latency_threshold))
    append(why, whylen, "latency threshold must be > 0");
  else if (!(s->restored_threshold >= 0) ||
           s->restored_threshold > s->latency_threshold)
    append(why, whylen, "restored threshold must be between 0 and the "
                        "latency threshold");
  if (isnan(s->usage_threshold))
    append(why, whylen, "usage threshold must be a number");
  if (!(s->alert_interval >= 0) || !isfinite(s->alert_interval))
    append(why, whylen, "alert interval must be >= 0");
  if (!(s->retry_base >= 0) || !(s->retry_max >= s->retry_base) ||
      !isfinite(s->retry_max))
    append(why, whylen, "retry backoff must be 0 <= base <= max");
  if (s->max_additional < 0 || s->max_additional >= SCALER_DEPTH_LIMIT)
    append(why, whylen, "max additional workers must be 0..%ld",
           SCALER_DEPTH_LIMIT - 1);
  if (s->nqueues > 0 && s->queues == NULL)
    append(why, whylen, "queue list missing");
  for (size_t i = 0; s->queues != NULL && i < s->nqueues; i++)
    if (s->queues[i] == NULL || s->queues[i][0] == '\0') {
      append(why, whylen, "queue names must not be empty");
      break;
    }
  return why != NULL && whylen > 0 && why[0] != '\0' ? -1 : 0;
}

/*
 * Each rule picks the reset that can only make the scaler do less:
 * - depth < 0 -> 0: no event; initial workers (if any) are then restored
 *   as orphaned once latency is normal, or reused by the next scale-up.
 * - depth above SCALER_DEPTH_LIMIT -> the limit: still past any
 *   max_additional, so it stays at maxscale; never wraps around.
 * - last_alerted not a time (NaN, infinite, negative) -> 0 (none), as the
 *   gem reads a missing key; far in the future -> now, which holds off for
 *   one alert interval instead of forever (a future value would otherwise
 *   block every check, restores included).
 * - event_started at depth 0 -> 0 silently (the gem ignores it there);
 *   at depth > 0, not a time or in the future -> last_alerted if set, else
 *   now: only the reported duration is shorter.
 * - initial workers negative or above SCALER_WORKERS_LIMIT -> forgotten
 *   (-1): a restore then sends nothing, as the gem does without the key,
 *   rather than sending a nonsense quantity.
 */
int scaler_state_sanitize(scaler_state_t *st, double now, char *why,
                          size_t whylen) {
  int reset = 0;
  if (why != NULL && whylen > 0) why[0] = '\0';

  if (st->depth < 0) {
    append(why, whylen, "depth=%ld reset to 0", st->depth);
    st->depth = 0;
    reset = 1;
  } else if (st->depth > SCALER_DEPTH_LIMIT) {
    append(why, whylen, "depth=%ld capped to %ld", st->depth,
           SCALER_DEPTH_LIMIT);
    st->depth = SCALER_DEPTH_LIMIT;
    reset = 1;
  }

  if (!isfinite(st->last_alerted) || st->last_alerted < 0) {
    append(why, whylen, "last_alerted=%g reset to 0", st->last_alerted);
    st->last_alerted = 0;
    reset = 1;
  } else if (st->last_alerted > now + SCALER_FUTURE_TOLERANCE) {
    append(why, whylen, "last_alerted=%.3f in the future, set to now",
           st->last_alerted);
    st->last_alerted = now;
    reset = 1;
  }

  if (st->depth == 0) {
    st->event_started = 0;
  } else if (!isfinite(st->event_started) || st->event_started <= 0 ||
             st->event_started > now + SCALER_FUTURE_TOLERANCE) {
    double fallback = st->last_alerted > 0 ? st->last_alerted : now;
    append(why, whylen, "latency_event_started=%.3f invalid at depth %ld, "
           "set to %.3f", st->event_started, st->depth, fallback);
    st->event_started = fallback;
    reset = 1;
  }

  if (st->initial_workers < -1 || st->initial_workers > SCALER_WORKERS_LIMIT) {
    append(why, whylen, "initial_workers=%ld forgotten", st->initial_workers);
    st->initial_workers = -1;
    reset = 1;
  }

  if (!isfinite(st->retry_at) || st->retry_at < 0) st->retry_at = 0;
  return reset;
}

/* Strict: the whole text is one number. The gem's to_i/to_f would read
 * "abc" as 0 silently; here it is reported. */
static bool parse_long(const char *text, long *out) {
  if (text == NULL || *text == '\0') return false;
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

static bool parse_double(const char *text, double *out) {
  if (text == NULL || *text == '\0') return false;
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

/* Redis values can hold anything: quote a short, printable excerpt. */
static const char *excerpt(char *buf, size_t size, const char *text) {
  size_t n = 0;
  for (; text[n] != '\0' && n + 1 < size && n < 24; n++)
    buf[n] = (text[n] >= 0x20 && text[n] < 0x7f && text[n] != '"') ? text[n]
                                                                  : '?';
  buf[n] = '\0';
  return buf;
}

int scaler_state_parse(scaler_state_t *st, const char *depth,
                       const char *last_alerted, const char *event_started,
                       const char *initial_workers, double now, char *why,
                       size_t whylen) {
  char unparsed[256] = "";
  char buf[32];
  *st = SCALER_STATE_INIT;

  if (depth != NULL && !parse_long(depth, &st->depth)) {
    append(unparsed, sizeof(unparsed), "depth=\"%s\" unparsable, reset to 0",
           excerpt(buf, sizeof(buf), depth));
    st->depth = 0;
  }
  if (last_alerted != NULL && !parse_double(last_alerted, &st->last_alerted)) {
    append(unparsed, sizeof(unparsed),
           "last_alerted=\"%s\" unparsable, reset to 0",
           excerpt(buf, sizeof(buf), last_alerted));
    st->last_alerted = 0;
  }
  /* Left at 0 when unparsable; sanitize then repairs it if in an event. */
  if (event_started != NULL &&
      !parse_double(event_started, &st->event_started)) {
    append(unparsed, sizeof(unparsed),
           "latency_event_started=\"%s\" unparsable",
           excerpt(buf, sizeof(buf), event_started));
    st->event_started = 0;
  }
  if (initial_workers != NULL &&
      !parse_long(initial_workers, &st->initial_workers)) {
    append(unparsed, sizeof(unparsed),
           "initial_workers=\"%s\" unparsable, forgotten",
           excerpt(buf, sizeof(buf), initial_workers));
    st->initial_workers = -1;
  }

  /* Parse notes first: they explain what sanitize then saw. */
  char sanitized[512];
  int reset = scaler_state_sanitize(st, now, sanitized, sizeof(sanitized));
  if (why != NULL && whylen > 0) {
    why[0] = '\0';
    if (unparsed[0] != '\0') append(why, whylen, "%s", unparsed);
    if (sanitized[0] != '\0') append(why, whylen, "%s", sanitized);
  }
  return reset || unparsed[0] != '\0';
}

const char *scaler_action_name(enum scaler_action action) {
  switch (action) {
  case SCALER_NONE: return "none";
  case SCALER_SCALE_UP: return "scale_up";
  case SCALER_RESTORE: return "restore";
  }
  return "unknown";
}

const char *scaler_result_name(enum scaler_result result) {
  switch (result) {
  case SCALER_SCALED: return "scaled";
  case SCALER_NOSCALE: return "noscale";
  case SCALER_MAXSCALE: return "maxscale";
  case SCALER_FAILED: return "failed";
  case SCALER_DRY_RUN: return "dry_run";
  }
  return "unknown";
}
