/*
 * scaler: the autoscaling decision as a pure state machine.
 *
 * No I/O, no clock, no allocation, no globals: every function is a function
 * of its arguments. One poll of the leader goes:
 *
 *   d = scaler_step(&settings, &state, &input);         what to do, if anything
 *   if (d.action != SCALER_NONE) {
 *     p = scaler_plan_heroku(&settings, &state, &d);    the Platform API call
 *     if (p.kind == SCALER_PLAN_NEED_INITIAL) {         first action of an event:
 *       read the formation quantity q (failure: result = SCALER_FAILED);
 *       scaler_set_initial_workers(&state, q); persist; p = scaler_plan_heroku(...);
 *     }
 *     SEND: PATCH p.quantity -> SCALED, DRY_RUN (not sent), FAILED, or
 *           MAXSCALE (422 cannot_run_above_limit);  SKIP: result = p.result
 *     scaler_apply(&settings, &state, &d, result, now); persist;
 *   }
 *
 * Semantics follow Amigo::Autoscaler and Amigo::Autoscaler::Handlers::Heroku
 * (sidekiq-amigo), plus what DESIGN.md promises beyond the gem: the restored
 * threshold works, a failed action changes nothing but the failure count
 * (so the same step is decided again at the next poll, after a backoff), and
 * a platform limit stops scale-ups for the rest of the event.
 */
#ifndef SCALEKIQ_SCALER_H
#define SCALEKIQ_SCALER_H

#include <stdbool.h>
#include <stddef.h>

/* Sanitized depths never exceed this (at a 1 s alert interval it is 11
 * days of one event), so depth + 1 and initial + depth cannot overflow. */
#define SCALER_DEPTH_LIMIT 1000000L
/* A persisted initial worker count above this is taken as garbage: Heroku
 * allows far fewer dynos per process type, and restoring to it would be a
 * runaway scale. */
#define SCALER_WORKERS_LIMIT 10000L
/* A persisted time this far past now is a corrupt value, not clock skew. */
#define SCALER_FUTURE_TOLERANCE 300.0
/* How many of the high queues a decision names (the highest latencies). */
#define SCALER_REPORT_MAX 8

typedef struct scaler_settings {
  double latency_threshold;  /* > 0: a watched latency above it is high */
  double restored_threshold; /* 0..latency_threshold: restore once every
                                watched latency is at or below it */
  double usage_threshold;    /* pool usage above it is high */
  double alert_interval;     /* >= 0: no check before last_alerted + this */
  double retry_base;         /* >= 0: backoff after the first failure */
  double retry_max;          /* >= retry_base: backoff cap */
  int max_additional;        /* >= 0: workers above the event's initial */
  const char *const *queues; /* watched queue names; nqueues 0: all */
  size_t nqueues;
} scaler_settings_t;

typedef struct scaler_state {
  /* persisted, Amigo-compatible (see scaler.c for the exact keys) */
  long depth;            /* 0: no event; else alerts so far in this event */
  double last_alerted;   /* time of the last action that took effect; 0: none */
  double event_started;  /* start of the current event; 0 when depth is 0 */
  long initial_workers;  /* formation quantity at the event's start; -1: none */
  /* runtime only: a new leader starts them afresh */
  bool ceiling_reached;  /* a scale-up ended in maxscale: send no more in
                            this event (max_additional or platform limit) */
  unsigned failures;     /* consecutive failed actions */
  double retry_at;       /* no action before this (0: none) */
} scaler_state_t;

/* The state outside any event, as when no key exists. */
#define SCALER_STATE_INIT \
  ((scaler_state_t){.depth = 0, .last_alerted = 0, .event_started = 0, \
                    .initial_workers = -1})

typedef struct scaler_queue {
  const char *name;
  double latency; /* seconds; NaN (unknown) counts as 0 */
} scaler_queue_t;

typedef struct scaler_input {
  const scaler_queue_t *queues; /* every queue seen; the filter is applied here */
  size_t nqueues;
  double pool_usage; /* busy / concurrency; NaN when unknown (never high) */
  double now;        /* wall clock, seconds since the epoch */
} scaler_input_t;

enum scaler_action { SCALER_NONE, SCALER_SCALE_UP, SCALER_RESTORE };

typedef struct scaler_decision {
  enum scaler_action action;
  /* why, as a fixed word for logs: "alert_interval", "backoff", "latency",
   * "pool_usage", "latency_and_pool_usage", "restored",
   * "between_thresholds", "normal", "orphaned_initial_workers" */
  const char *reason;
  double at;            /* input now */
  long depth;           /* SCALE_UP: the depth once done; RESTORE: the depth
                           the event reached (0 for orphaned initial workers) */
  double event_started; /* SCALE_UP: the event's start once done */
  double duration;      /* seconds since the event started (0 at depth 1) */
  /* What was observed (filled whenever the check was not skipped): */
  size_t nhigh;         /* watched queues above latency_threshold */
  const scaler_queue_t *high[SCALER_REPORT_MAX]; /* into input, highest first */
  double max_latency;   /* highest watched latency, 0 without queues */
  bool pool_high;
} scaler_decision_t;

/* Decides this poll's action from state and observations. state must have
 * come from scaler_state_sanitize()/scaler_state_parse() or scaler_apply(). */
scaler_decision_t scaler_step(const scaler_settings_t *settings,
                              const scaler_state_t *state,
                              const scaler_input_t *input);

enum scaler_result {
  SCALER_SCALED,   /* the formation was updated */
  SCALER_NOSCALE,  /* nothing to do: initial workers 0 (or unknown at restore) */
  SCALER_MAXSCALE, /* at the ceiling: max_additional, or Heroku's 422
                      cannot_run_above_limit */
  SCALER_FAILED,   /* the formation read or update failed */
  SCALER_DRY_RUN   /* would have sent; counts as success */
};

enum scaler_plan_kind {
  SCALER_PLAN_SKIP,         /* send nothing; the result is plan.result */
  SCALER_PLAN_NEED_INITIAL, /* read the formation, scaler_set_initial_workers(), plan again */
  SCALER_PLAN_SEND          /* set the formation quantity to plan.quantity */
};

typedef struct scaler_plan {
  enum scaler_plan_kind kind;
  enum scaler_result result; /* SKIP only */
  long from;     /* SEND: the quantity the earlier steps should have left
                    (initial + steps taken, capped); for logs only */
  long quantity; /* SEND: the target */
} scaler_plan_t;

/* The Heroku handler's pure part for a SCALE_UP or RESTORE decision. */
scaler_plan_t scaler_plan_heroku(const scaler_settings_t *settings,
                                 const scaler_state_t *state,
                                 const scaler_decision_t *decision);

/* Records the formation quantity read for NEED_INITIAL. Returns 0, or -1
 * when quantity is out of range (state untouched: treat as SCALER_FAILED). */
int scaler_set_initial_workers(scaler_state_t *state, long quantity);

/* Commits a decision's outcome into state. A success (SCALED, NOSCALE,
 * MAXSCALE, DRY_RUN) advances the event; FAILED changes nothing but
 * failures and retry_at (now + capped exponential backoff). On RESTORE,
 * MAXSCALE makes no sense and counts as FAILED. now is when the action
 * finished (only the backoff uses it; times in state are the decision's).
 * Returns 0, or -1 when the result counted as FAILED. */
int scaler_apply(const scaler_settings_t *settings, scaler_state_t *state,
                 const scaler_decision_t *decision, enum scaler_result result,
                 double now);

/* Delay before retry number failures (>= 1): retry_base doubled per
 * earlier failure, capped at retry_max. */
double scaler_backoff(const scaler_settings_t *settings, unsigned failures);

/* Checks the settings the scaler relies on. Returns 0, or -1 with why. */
int scaler_settings_check(const scaler_settings_t *settings, char *why,
                          size_t whylen);

/* Makes persisted state safe to act on (see scaler.c for each rule).
 * Returns 0 when nothing had to change, 1 when something was reset, with
 * why naming each field and what it became (the agent logs a warning). */
int scaler_state_sanitize(scaler_state_t *state, double now, char *why,
                          size_t whylen);

/* The four persisted values as Redis returns them (NULL: key absent) ->
 * sanitized state, runtime fields zero. Unparsable text is reset like any
 * other nonsense. Returns as scaler_state_sanitize(). */
int scaler_state_parse(scaler_state_t *state, const char *depth,
                       const char *last_alerted, const char *event_started,
                       const char *initial_workers, double now, char *why,
                       size_t whylen);

const char *scaler_action_name(enum scaler_action action);
const char *scaler_result_name(enum scaler_result result);

#endif
