/*
 * The scaler over scripted time. Scenario tests drive it through world_t,
 * which plays the agent: a fake Redis holding the four persisted keys as
 * strings (so a "new agent instance" re-reads exactly what was written) and
 * a fake Heroku formation that records every update it accepts.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scaler.h"

typedef struct world {
  scaler_settings_t settings;
  scaler_state_t state;
  /* fake Redis: what the store would have written */
  char depth[32], last_alerted[48], event_started[48], initial[32];
  bool has_initial;
  /* fake Heroku */
  long quantity;
  long platform_limit;  /* an update above it gets 422 (0: no limit) */
  int fail_reads;       /* the next that many formation reads fail */
  int fail_updates;     /* the next that many updates fail */
  bool dry_run;
  int reads;            /* formation reads attempted */
  int attempts;         /* updates attempted (dry run excluded) */
  long updates[64];     /* quantities Heroku accepted, in order */
  size_t nupdates;
  /* last poll */
  scaler_decision_t decision;
  scaler_plan_t plan;
  enum scaler_result result;
  bool acted;
} world_t;

static const scaler_settings_t default_settings = {
    .latency_threshold = 5,
    .restored_threshold = 5,
    .usage_threshold = 1,
    .alert_interval = 120,
    .retry_base = 5,
    .retry_max = 60,
    .max_additional = 2,
};

/* Formats as the gem does: integers, floats with a fraction, initial
 * workers absent outside an event. */
static void persist(world_t *w) {
  snprintf(w->depth, sizeof(w->depth), "%ld", w->state.depth);
  snprintf(w->last_alerted, sizeof(w->last_alerted), "%.6f",
           w->state.last_alerted);
  snprintf(w->event_started, sizeof(w->event_started), "%.6f",
           w->state.event_started);
  w->has_initial = w->state.initial_workers >= 0;
  if (w->has_initial)
    snprintf(w->initial, sizeof(w->initial), "%ld", w->state.initial_workers);
}

static void world_init(world_t *w, long quantity) {
  memset(w, 0, sizeof(*w));
  w->settings = default_settings;
  w->state = SCALER_STATE_INIT;
  w->quantity = quantity;
  persist(w);
}

/* A new agent instance: state only from what Redis holds. */
static void restart(world_t *w, double now) {
  char why[256];
  int reset = scaler_state_parse(&w->state, w->depth, w->last_alerted,
                                 w->event_started,
                                 w->has_initial ? w->initial : NULL, now, why,
                                 sizeof(why));
  cr_assert_eq(reset, 0, "clean state was reset: %s", why);
}

/* One poll, as the agent runs it. The action takes 0.5 s. */
static scaler_decision_t run_poll(world_t *w, double now, double pool_usage,
                              const scaler_queue_t *queues, size_t nqueues) {
  scaler_input_t in = {.queues = queues, .nqueues = nqueues,
                       .pool_usage = pool_usage, .now = now};
  scaler_decision_t d = scaler_step(&w->settings, &w->state, &in);
  w->decision = d;
  w->acted = d.action != SCALER_NONE;
  if (!w->acted) return d;

  enum scaler_result result;
  scaler_plan_t plan = scaler_plan_heroku(&w->settings, &w->state, &d);
  if (plan.kind == SCALER_PLAN_NEED_INITIAL) {
    w->reads++;
    if (w->fail_reads > 0) {
      w->fail_reads--;
      result = SCALER_FAILED;
      goto apply;
    }
    cr_assert_eq(scaler_set_initial_workers(&w->state, w->quantity), 0);
    persist(w); /* before anything else */
    plan = scaler_plan_heroku(&w->settings, &w->state, &d);
    cr_assert_neq(plan.kind, SCALER_PLAN_NEED_INITIAL);
  }
  if (plan.kind == SCALER_PLAN_SEND) {
    if (w->dry_run) {
      result = SCALER_DRY_RUN;
    } else {
      w->attempts++;
      if (w->fail_updates > 0) {
        w->fail_updates--;
        result = SCALER_FAILED;
      } else if (w->platform_limit > 0 && plan.quantity > w->platform_limit) {
        result = SCALER_MAXSCALE; /* 422 cannot_run_above_limit */
      } else {
        w->quantity = plan.quantity;
        w->updates[w->nupdates++] = plan.quantity;
        result = SCALER_SCALED;
      }
    }
  } else {
    result = plan.result;
  }
apply:
  w->plan = plan;
  w->result = result;
  scaler_apply(&w->settings, &w->state, &d, result, now + 0.5);
  persist(w);
  return d;
}

#define QUEUES(...)                                                        \
  (const scaler_queue_t[]){__VA_ARGS__},                                   \
      (sizeof((const scaler_queue_t[]){__VA_ARGS__}) / sizeof(scaler_queue_t))
#define HIGH QUEUES({"default", 12.0})
#define LOW QUEUES({"default", 0.0})
static const scaler_queue_t one_high[] = {{"default", 12.0}};
static const scaler_queue_t one_low[] = {{"default", 0.0}};

static void assert_updates(const world_t *w, const long *expected, size_t n) {
  cr_assert_eq(w->nupdates, n, "updates: got %zu, want %zu", w->nupdates, n);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(w->updates[i], expected[i], "update %zu: got %ld, want %ld",
                 i, w->updates[i], expected[i]);
}

/* ---- the gem's scenarios ------------------------------------------- */

Test(scaler_gem, no_alert_at_or_below_threshold) {
  world_t w;
  world_init(&w, 1);
  scaler_decision_t d =
      run_poll(&w, 1000, 0.5, QUEUES({"default", 5.0}, {"mail", 2.0}));
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_str_eq(d.reason, "normal");
  cr_assert_eq(d.nhigh, 0);
  cr_assert_float_eq(d.max_latency, 5.0, 1e-9);
  cr_assert_eq(w.state.depth, 0);
  cr_assert_float_eq(w.state.last_alerted, 0, 1e-9);
  cr_assert_eq(w.reads, 0);
  cr_assert_eq(w.nupdates, 0);
}

Test(scaler_gem, depth_1_then_2_keeps_event_start) {
  world_t w;
  world_init(&w, 1);
  scaler_decision_t d = run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(d.action, SCALER_SCALE_UP);
  cr_assert_str_eq(d.reason, "latency");
  cr_assert_eq(d.depth, 1);
  cr_assert_float_eq(d.duration, 0, 1e-9);
  cr_assert_eq(d.nhigh, 1);
  cr_assert_str_eq(d.high[0]->name, "default");
  cr_assert_eq(w.plan.from, 1);
  cr_assert_eq(w.plan.quantity, 2);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert_eq(w.state.depth, 1);
  cr_assert_float_eq(w.state.event_started, 1000, 1e-9);
  cr_assert_float_eq(w.state.last_alerted, 1000, 1e-9);
  cr_assert_str_eq(w.depth, "1");
  cr_assert_str_eq(w.initial, "1");

  d = run_poll(&w, 1130, 0, HIGH);
  cr_assert_eq(d.depth, 2);
  cr_assert_float_eq(d.duration, 130, 1e-9);
  cr_assert_float_eq(w.state.event_started, 1000, 1e-9);
  cr_assert_float_eq(w.state.last_alerted, 1130, 1e-9);
  cr_assert_str_eq(w.depth, "2");
  cr_assert_str_eq(w.event_started, "1000.000000");
  cr_assert_eq(w.reads, 1, "initial workers are read once per event");
  long want[] = {2, 3};
  assert_updates(&w, want, 2);
}

Test(scaler_gem, alert_interval_gates_the_whole_check) {
  world_t w;
  world_init(&w, 1);
  run_poll(&w, 1000, 0, HIGH);
  scaler_decision_t d = run_poll(&w, 1119.9, 0, HIGH);
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_str_eq(d.reason, "alert_interval");
  d = run_poll(&w, 1119.9, 0, LOW); /* no restore either */
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_str_eq(d.reason, "alert_interval");
  cr_assert_eq(w.state.depth, 1);
  d = run_poll(&w, 1120, 0, LOW);
  cr_assert_eq(d.action, SCALER_RESTORE);
}

Test(scaler_gem, restore_writes_what_the_gem_writes) {
  world_t w;
  world_init(&w, 1);
  run_poll(&w, 1000, 0, HIGH);
  run_poll(&w, 1120, 0, HIGH);
  scaler_decision_t d = run_poll(&w, 1300, 0, LOW);
  cr_assert_eq(d.action, SCALER_RESTORE);
  cr_assert_str_eq(d.reason, "restored");
  cr_assert_eq(d.depth, 2, "restore reports the depth the event reached");
  cr_assert_float_eq(d.duration, 300, 1e-9);
  cr_assert_eq(w.plan.from, 3);
  cr_assert_eq(w.plan.quantity, 1);
  cr_assert_eq(w.state.depth, 0);
  cr_assert_float_eq(w.state.event_started, 0, 1e-9);
  cr_assert_float_eq(w.state.last_alerted, 1300, 1e-9);
  cr_assert_eq(w.state.initial_workers, -1);
  cr_assert_str_eq(w.depth, "0");
  cr_assert_str_eq(w.event_started, "0.000000");
  cr_assert_str_eq(w.last_alerted, "1300.000000");
  cr_assert(!w.has_initial, "initial workers key is deleted");
  long want[] = {2, 3, 1};
  assert_updates(&w, want, 3);
  /* The restore's last_alerted spaces the next event too. */
  cr_assert_str_eq(run_poll(&w, 1400, 0, HIGH).reason, "alert_interval");
  cr_assert_eq(run_poll(&w, 1420, 0, HIGH).depth, 1);
}

Test(scaler_gem, new_agent_instance_continues_the_event) {
  world_t w;
  world_init(&w, 2);
  run_poll(&w, 1000, 0, HIGH);
  run_poll(&w, 1120, 0, HIGH);
  restart(&w, 1200);
  cr_assert_eq(w.state.depth, 2);
  cr_assert_eq(w.state.initial_workers, 2);
  scaler_decision_t d = run_poll(&w, 1200, 0, HIGH);
  cr_assert_str_eq(d.reason, "alert_interval");
  d = run_poll(&w, 1240, 0, HIGH);
  cr_assert_eq(d.depth, 3);
  cr_assert_float_eq(d.duration, 240, 1e-9);
  cr_assert_eq(w.result, SCALER_MAXSCALE);
  restart(&w, 1400);
  run_poll(&w, 1400, 0, LOW);
  cr_assert_eq(w.reads, 1);
  long want[] = {3, 4, 2};
  assert_updates(&w, want, 3);
}

Test(scaler_gem, takes_over_state_written_by_the_gem) {
  world_t w;
  world_init(&w, 5);
  strcpy(w.depth, "1");
  strcpy(w.last_alerted, "1713500000.123456");
  strcpy(w.event_started, "1713500000.123456");
  strcpy(w.initial, "4");
  w.has_initial = true;
  restart(&w, 1713500060);
  scaler_decision_t d = run_poll(&w, 1713500120.1, 0, HIGH);
  cr_assert_str_eq(d.reason, "alert_interval");
  d = run_poll(&w, 1713500121, 0, HIGH);
  cr_assert_eq(d.depth, 2);
  cr_assert_float_eq(d.duration, 120.876544, 1e-5);
  cr_assert_eq(w.reads, 0, "initial workers come from the gem's key");
  long want[] = {6};
  assert_updates(&w, want, 1);
}

Test(scaler_gem, maxscale_sends_nothing_but_depth_keeps_growing) {
  world_t w;
  world_init(&w, 1);
  enum scaler_result want_results[] = {SCALER_SCALED, SCALER_SCALED,
                                       SCALER_MAXSCALE, SCALER_MAXSCALE,
                                       SCALER_MAXSCALE};
  for (int i = 0; i < 5; i++) {
    scaler_decision_t d = run_poll(&w, 1000 + 120 * i, 0, HIGH);
    cr_assert_eq(d.depth, i + 1);
    cr_assert_eq(w.result, want_results[i], "depth %d: %s", i + 1,
                 scaler_result_name(w.result));
    cr_assert_float_eq(w.state.last_alerted, 1000 + 120 * i, 1e-9);
  }
  cr_assert_eq(w.state.depth, 5);
  cr_assert_eq(w.attempts, 2);
  run_poll(&w, 1600, 0, LOW);
  cr_assert_eq(w.plan.from, 3);
  long want[] = {2, 3, 1};
  assert_updates(&w, want, 3);
}

Test(scaler_gem, initial_zero_is_noscale_for_the_whole_event) {
  world_t w;
  world_init(&w, 0);
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.result, SCALER_NOSCALE);
  cr_assert_str_eq(w.initial, "0");
  cr_assert_eq(w.state.depth, 1);
  run_poll(&w, 1120, 0, HIGH);
  cr_assert_eq(w.result, SCALER_NOSCALE);
  cr_assert_eq(w.state.depth, 2);
  cr_assert_eq(w.reads, 1, "0 is remembered, not read again");
  w.quantity = 3; /* someone scales by hand meanwhile: still hands off */
  run_poll(&w, 1240, 0, HIGH);
  cr_assert_eq(w.result, SCALER_NOSCALE);
  run_poll(&w, 1360, 0, LOW);
  cr_assert_eq(w.decision.action, SCALER_RESTORE);
  cr_assert_eq(w.result, SCALER_NOSCALE);
  cr_assert_eq(w.attempts, 0);
  cr_assert_eq(w.state.depth, 0);
  cr_assert(!w.has_initial);
}

Test(scaler_gem, restore_forgets_initial_workers) {
  world_t w;
  world_init(&w, 1);
  run_poll(&w, 1000, 0, HIGH);
  run_poll(&w, 1120, 0, LOW);
  cr_assert_eq(w.state.initial_workers, -1);
  w.quantity = 3;
  run_poll(&w, 1240, 0, HIGH);
  cr_assert_eq(w.reads, 2);
  cr_assert_eq(w.state.initial_workers, 3);
  long want[] = {2, 1, 4};
  assert_updates(&w, want, 3);
}

/* ---- beyond the gem -------------------------------------------------- */

Test(scaler_fix, restore_only_once_every_latency_is_restored) {
  world_t w;
  world_init(&w, 1);
  w.settings.restored_threshold = 2;
  run_poll(&w, 1000, 0, QUEUES({"a", 10.0}, {"b", 0.0}));
  scaler_decision_t d = run_poll(&w, 1120, 0, QUEUES({"a", 4.0}, {"b", 1.0}));
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_str_eq(d.reason, "between_thresholds");
  d = run_poll(&w, 1130, 0, QUEUES({"a", 2.0}, {"b", 3.0}));
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_str_eq(d.reason, "between_thresholds");
  cr_assert_eq(w.state.depth, 1);
  cr_assert_float_eq(w.state.last_alerted, 1000, 1e-9);
  d = run_poll(&w, 1140, 0, QUEUES({"a", 2.0}, {"b", 2.0}));
  cr_assert_eq(d.action, SCALER_RESTORE);
  long want[] = {2, 1};
  assert_updates(&w, want, 2);
}

Test(scaler_fix, between_thresholds_nothing_fires) {
  world_t w;
  world_init(&w, 1);
  w.settings.restored_threshold = 0;
  /* Outside an event a latency between the two is simply normal. */
  cr_assert_str_eq(run_poll(&w, 1000, 0, QUEUES({"a", 3.0})).reason, "normal");
  run_poll(&w, 1100, 0, QUEUES({"a", 6.0}));
  cr_assert_eq(w.state.depth, 1);
  for (int i = 1; i <= 10; i++) {
    scaler_decision_t d = run_poll(&w, 1100 + 120 * i, 0, QUEUES({"a", 5.0}));
    cr_assert_eq(d.action, SCALER_NONE);
    cr_assert_str_eq(d.reason, "between_thresholds");
  }
  cr_assert_eq(w.state.depth, 1);
  cr_assert_float_eq(w.state.last_alerted, 1100, 1e-9);
  cr_assert_eq(run_poll(&w, 2500, 0, QUEUES({"a", 0.0})).action, SCALER_RESTORE);
}

Test(scaler_fix, failed_update_keeps_depth_and_retries_with_backoff) {
  world_t w;
  world_init(&w, 1);
  w.fail_updates = 3;
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.result, SCALER_FAILED);
  cr_assert_eq(w.state.depth, 0);
  cr_assert_float_eq(w.state.last_alerted, 0, 1e-9);
  cr_assert_eq(w.state.initial_workers, 1, "the read is kept");
  cr_assert_str_eq(w.initial, "1");
  cr_assert_eq(w.state.failures, 1);
  cr_assert_float_eq(w.state.retry_at, 1005.5, 1e-9);

  cr_assert_str_eq(run_poll(&w, 1005, 0, HIGH).reason, "backoff");
  scaler_decision_t d = run_poll(&w, 1006, 0, HIGH);
  cr_assert_eq(d.depth, 1, "the same step again");
  cr_assert_eq(w.state.failures, 2);
  cr_assert_float_eq(w.state.retry_at, 1016.5, 1e-9);
  cr_assert_str_eq(run_poll(&w, 1016, 0, HIGH).reason, "backoff");
  run_poll(&w, 1017, 0, HIGH);
  cr_assert_float_eq(w.state.retry_at, 1037.5, 1e-9);
  cr_assert_eq(w.state.depth, 0);

  d = run_poll(&w, 1038, 0, HIGH);
  cr_assert_eq(d.depth, 1);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert_eq(w.state.depth, 1);
  cr_assert_float_eq(w.state.event_started, 1038, 1e-9);
  cr_assert_float_eq(w.state.last_alerted, 1038, 1e-9);
  cr_assert_eq(w.state.failures, 0);
  cr_assert_float_eq(w.state.retry_at, 0, 1e-9);
  cr_assert_eq(w.reads, 1);
  cr_assert_eq(w.attempts, 4);
  cr_assert_eq(run_poll(&w, 1158, 0, HIGH).depth, 2);
  long want[] = {2, 3};
  assert_updates(&w, want, 2);
}

Test(scaler_fix, failed_update_mid_event_retries_same_depth) {
  world_t w;
  world_init(&w, 1);
  run_poll(&w, 1000, 0, HIGH);
  w.fail_updates = 1;
  run_poll(&w, 1120, 0, HIGH);
  cr_assert_eq(w.result, SCALER_FAILED);
  cr_assert_eq(w.state.depth, 1);
  cr_assert_float_eq(w.state.last_alerted, 1000, 1e-9);
  cr_assert_float_eq(w.state.event_started, 1000, 1e-9);
  scaler_decision_t d = run_poll(&w, 1126, 0, HIGH);
  cr_assert_eq(d.depth, 2);
  cr_assert_float_eq(d.duration, 126, 1e-9);
  cr_assert_eq(w.result, SCALER_SCALED);
  long want[] = {2, 3};
  assert_updates(&w, want, 2);
}

Test(scaler_fix, failed_read_changes_nothing) {
  world_t w;
  world_init(&w, 1);
  w.fail_reads = 1;
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.result, SCALER_FAILED);
  cr_assert_eq(w.state.initial_workers, -1);
  cr_assert(!w.has_initial);
  cr_assert_eq(w.state.depth, 0);
  cr_assert_str_eq(w.depth, "0");
  run_poll(&w, 1006, 0, HIGH);
  cr_assert_eq(w.reads, 2);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert_eq(w.state.depth, 1);
}

Test(scaler_fix, failed_restore_keeps_the_event) {
  world_t w;
  world_init(&w, 1);
  run_poll(&w, 1000, 0, HIGH);
  w.fail_updates = 1;
  run_poll(&w, 1120, 0, LOW);
  cr_assert_eq(w.decision.action, SCALER_RESTORE);
  cr_assert_eq(w.result, SCALER_FAILED);
  cr_assert_eq(w.state.depth, 1);
  cr_assert_eq(w.state.initial_workers, 1);
  cr_assert_str_eq(w.initial, "1", "not deleted before the restore succeeds");
  cr_assert_float_eq(w.state.last_alerted, 1000, 1e-9);
  cr_assert_str_eq(run_poll(&w, 1125, 0, LOW).reason, "backoff");
  run_poll(&w, 1126, 0, LOW);
  cr_assert_eq(w.decision.action, SCALER_RESTORE);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert_eq(w.state.depth, 0);
  cr_assert(!w.has_initial);
  long want[] = {2, 1};
  assert_updates(&w, want, 2);
}

Test(scaler_fix, failure_count_survives_only_in_memory) {
  world_t w;
  world_init(&w, 1);
  w.fail_updates = 2;
  run_poll(&w, 1000, 0, HIGH);
  run_poll(&w, 1006, 0, HIGH);
  cr_assert_eq(w.state.failures, 2);
  restart(&w, 1007); /* a new leader starts its backoff afresh */
  cr_assert_eq(w.state.failures, 0);
  cr_assert_float_eq(w.state.retry_at, 0, 1e-9);
  cr_assert_eq(w.state.initial_workers, 1);
  run_poll(&w, 1007, 0, HIGH);
  cr_assert_eq(w.result, SCALER_SCALED);
}

Test(scaler_fix, orphaned_initial_workers_are_restored) {
  world_t w;
  world_init(&w, 1);
  w.fail_updates = 1;
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.state.initial_workers, 1);
  /* Maybe the failed update did reach Heroku: put the initial back. */
  w.quantity = 2;
  scaler_decision_t d = run_poll(&w, 1010, 0, LOW);
  cr_assert_eq(d.action, SCALER_RESTORE);
  cr_assert_str_eq(d.reason, "orphaned_initial_workers");
  cr_assert_eq(d.depth, 0);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert_eq(w.quantity, 1);
  cr_assert_eq(w.state.initial_workers, -1);
  cr_assert(!w.has_initial);
  cr_assert_float_eq(w.state.last_alerted, 1010, 1e-9);
  cr_assert_str_eq(run_poll(&w, 1200, 0, LOW).reason, "normal");
}

Test(scaler_fix, platform_limit_is_maxscale_for_the_rest_of_the_event) {
  world_t w;
  world_init(&w, 3);
  w.settings.max_additional = 5;
  w.platform_limit = 4;
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.result, SCALER_SCALED);
  run_poll(&w, 1120, 0, HIGH);
  cr_assert_eq(w.plan.quantity, 5);
  cr_assert_eq(w.result, SCALER_MAXSCALE);
  cr_assert_eq(w.state.depth, 2);
  cr_assert(w.state.ceiling_reached);
  run_poll(&w, 1240, 0, HIGH);
  cr_assert_eq(w.plan.kind, SCALER_PLAN_SKIP);
  cr_assert_eq(w.result, SCALER_MAXSCALE);
  cr_assert_eq(w.state.depth, 3);
  cr_assert_eq(w.attempts, 2, "nothing sent after the 422");
  run_poll(&w, 1360, 0, LOW);
  cr_assert_eq(w.result, SCALER_SCALED);
  cr_assert(!w.state.ceiling_reached);
  run_poll(&w, 1480, 0, HIGH);
  cr_assert_eq(w.result, SCALER_SCALED, "a new event scales again");
  long want[] = {4, 3, 4};
  assert_updates(&w, want, 3);
}

Test(scaler_fix, dry_run_advances_like_success) {
  world_t w;
  world_init(&w, 1);
  w.dry_run = true;
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(w.result, SCALER_DRY_RUN);
  cr_assert_eq(w.plan.quantity, 2);
  run_poll(&w, 1120, 0, HIGH);
  cr_assert_eq(w.plan.quantity, 3);
  run_poll(&w, 1240, 0, HIGH);
  cr_assert_eq(w.result, SCALER_MAXSCALE, "the plan says so before sending");
  cr_assert_eq(w.state.depth, 3);
  run_poll(&w, 1360, 0, LOW);
  cr_assert_eq(w.result, SCALER_DRY_RUN);
  cr_assert_eq(w.plan.quantity, 1);
  cr_assert_eq(w.state.depth, 0);
  cr_assert_eq(w.state.initial_workers, -1);
  cr_assert_eq(w.nupdates, 0);
  cr_assert_eq(w.quantity, 1);
}

Test(scaler_fix, dry_run_without_reading_the_formation) {
  /* An agent with no token cannot read the formation: it applies DRY_RUN
   * to the NEED_INITIAL plan and the event still advances. */
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  scaler_input_t in = {.queues = one_high, .nqueues = 1, .pool_usage = 0, .now = 1000};
  scaler_decision_t d = scaler_step(&s, &st, &in);
  cr_assert_eq(scaler_plan_heroku(&s, &st, &d).kind, SCALER_PLAN_NEED_INITIAL);
  cr_assert_eq(scaler_apply(&s, &st, &d, SCALER_DRY_RUN, 1000), 0);
  cr_assert_eq(st.depth, 1);
  cr_assert_eq(st.initial_workers, -1);
}

Test(scaler_fix, queues_filter) {
  world_t w;
  world_init(&w, 1);
  const char *const watched[] = {"default", "mail"};
  w.settings.queues = watched;
  w.settings.nqueues = 2;
  scaler_decision_t d =
      run_poll(&w, 1000, 0, QUEUES({"bulk", 100.0}, {"default", 1.0}));
  cr_assert_eq(d.action, SCALER_NONE);
  cr_assert_float_eq(d.max_latency, 1.0, 1e-9);
  d = run_poll(&w, 1010, 0,
           QUEUES({"bulk", 100.0}, {"mail", 10.0}, {"default", 1.0}));
  cr_assert_eq(d.action, SCALER_SCALE_UP);
  cr_assert_eq(d.nhigh, 1);
  cr_assert_str_eq(d.high[0]->name, "mail");
  /* An unwatched backlog does not hold the restore back either. */
  d = run_poll(&w, 1130, 0, QUEUES({"bulk", 100.0}, {"mail", 0.0}));
  cr_assert_eq(d.action, SCALER_RESTORE);
}

Test(scaler_fix, pool_usage) {
  world_t w;
  world_init(&w, 1);
  w.settings.usage_threshold = 0.8;
  cr_assert_eq(run_poll(&w, 1000, 0.8, LOW).action, SCALER_NONE);
  cr_assert_eq(run_poll(&w, 1000, NAN, LOW).action, SCALER_NONE);
  scaler_decision_t d = run_poll(&w, 1000, 0.9, LOW);
  cr_assert_eq(d.action, SCALER_SCALE_UP);
  cr_assert_str_eq(d.reason, "pool_usage");
  cr_assert(d.pool_high);
  cr_assert_eq(d.nhigh, 0);
  /* Latency low but the pool still busy: the event goes on. */
  d = run_poll(&w, 1120, 0.95, LOW);
  cr_assert_eq(d.action, SCALER_SCALE_UP);
  cr_assert_eq(d.depth, 2);
  d = run_poll(&w, 1240, 0.95, HIGH);
  cr_assert_str_eq(d.reason, "latency_and_pool_usage");
  d = run_poll(&w, 1360, 0.8, LOW);
  cr_assert_eq(d.action, SCALER_RESTORE);
}

Test(scaler_fix, unknown_latency_counts_as_zero) {
  world_t w;
  world_init(&w, 1);
  cr_assert_eq(run_poll(&w, 1000, 0, QUEUES({"a", NAN})).action, SCALER_NONE);
  run_poll(&w, 1000, 0, HIGH);
  cr_assert_eq(run_poll(&w, 1120, 0, QUEUES({"a", NAN})).action, SCALER_RESTORE);
}

Test(scaler_fix, high_queues_reported_highest_first) {
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  scaler_queue_t qs[] = {
      {"q9", 9},   {"q6", 6},  {"low", 1}, {"q15", 15}, {"q7", 7},
      {"q12", 12}, {"q8", 8},  {"q14", 14}, {"q10", 10}, {"q13", 13},
      {"q11", 11}, {"q11b", 11},
  };
  scaler_input_t in = {.queues = qs, .nqueues = 12, .now = 1000};
  scaler_decision_t d = scaler_step(&s, &st, &in);
  cr_assert_eq(d.nhigh, 11);
  const char *want[SCALER_REPORT_MAX] = {"q15", "q14", "q13", "q12",
                                         "q11", "q11b", "q10", "q9"};
  for (int i = 0; i < SCALER_REPORT_MAX; i++)
    cr_assert_str_eq(d.high[i]->name, want[i], "high[%d]", i);
  cr_assert_float_eq(d.max_latency, 15, 1e-9);
}

Test(scaler_fix, depth_saturates_and_stays_maxscale) {
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = SCALER_DEPTH_LIMIT;
  st.event_started = 500;
  st.initial_workers = 3;
  scaler_input_t in = {.queues = one_high, .nqueues = 1, .now = 1000};
  scaler_decision_t d = scaler_step(&s, &st, &in);
  cr_assert_eq(d.depth, SCALER_DEPTH_LIMIT);
  scaler_plan_t p = scaler_plan_heroku(&s, &st, &d);
  cr_assert_eq(p.kind, SCALER_PLAN_SKIP);
  cr_assert_eq(p.result, SCALER_MAXSCALE);
}

/* ---- the pure pieces ------------------------------------------------- */

Test(scaler_unit, backoff_is_capped_exponential) {
  scaler_settings_t s = default_settings;
  double want[] = {5, 10, 20, 40, 60, 60};
  for (unsigned i = 0; i < 6; i++)
    cr_assert_float_eq(scaler_backoff(&s, i + 1), want[i], 1e-9,
                       "failure %u", i + 1);
  cr_assert_float_eq(scaler_backoff(&s, UINT_MAX), 60, 1e-9);
  s.retry_base = 0;
  cr_assert_float_eq(scaler_backoff(&s, 3), 0, 1e-9);
  s.retry_base = 0.25;
  s.retry_max = 1;
  cr_assert_float_eq(scaler_backoff(&s, 2), 0.5, 1e-9);
  cr_assert_float_eq(scaler_backoff(&s, 4), 1, 1e-9);
}

Test(scaler_unit, restore_rejected_as_maxscale_counts_as_failed) {
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 2;
  st.event_started = 900;
  st.last_alerted = 900;
  st.initial_workers = 1;
  scaler_input_t in = {.queues = one_low, .nqueues = 1, .now = 1100};
  scaler_decision_t d = scaler_step(&s, &st, &in);
  cr_assert_eq(d.action, SCALER_RESTORE);
  cr_assert_eq(scaler_apply(&s, &st, &d, SCALER_MAXSCALE, 1101), -1);
  cr_assert_eq(st.depth, 2);
  cr_assert_eq(st.initial_workers, 1);
  cr_assert_eq(st.failures, 1);
  cr_assert_float_eq(st.retry_at, 1106, 1e-9);
}

Test(scaler_unit, apply_none_changes_nothing) {
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  scaler_state_t before = st;
  scaler_decision_t d = {.action = SCALER_NONE, .at = 1000};
  cr_assert_eq(scaler_apply(&s, &st, &d, SCALER_FAILED, 1000), 0);
  cr_assert_eq(memcmp(&st, &before, sizeof(st)), 0);
}

Test(scaler_unit, set_initial_workers_rejects_nonsense) {
  scaler_state_t st = SCALER_STATE_INIT;
  cr_assert_eq(scaler_set_initial_workers(&st, -1), -1);
  cr_assert_eq(scaler_set_initial_workers(&st, SCALER_WORKERS_LIMIT + 1), -1);
  cr_assert_eq(st.initial_workers, -1);
  cr_assert_eq(scaler_set_initial_workers(&st, 0), 0);
  cr_assert_eq(st.initial_workers, 0);
}

Test(scaler_unit, plan_for_none_sends_nothing) {
  scaler_settings_t s = default_settings;
  scaler_state_t st = SCALER_STATE_INIT;
  st.initial_workers = 2;
  scaler_decision_t d = {.action = SCALER_NONE};
  cr_assert_eq(scaler_plan_heroku(&s, &st, &d).kind, SCALER_PLAN_SKIP);
}

Test(scaler_unit, settings_check) {
  char why[256];
  scaler_settings_t s = default_settings;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), 0, "%s", why);
  cr_assert_str_eq(why, "");
  s.restored_threshold = 6;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), -1);
  cr_assert(strstr(why, "restored") != NULL, "%s", why);
  s = default_settings;
  s.latency_threshold = 0;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), -1);
  s = default_settings;
  s.max_additional = -1;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), -1);
  s = default_settings;
  s.retry_max = 1;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), -1);
  s = default_settings;
  const char *const bad[] = {"default", ""};
  s.queues = bad;
  s.nqueues = 2;
  cr_assert_eq(scaler_settings_check(&s, why, sizeof(why)), -1);
}

Test(scaler_unit, names) {
  cr_assert_str_eq(scaler_result_name(SCALER_SCALED), "scaled");
  cr_assert_str_eq(scaler_result_name(SCALER_NOSCALE), "noscale");
  cr_assert_str_eq(scaler_result_name(SCALER_MAXSCALE), "maxscale");
  cr_assert_str_eq(scaler_result_name(SCALER_FAILED), "failed");
  cr_assert_str_eq(scaler_result_name(SCALER_DRY_RUN), "dry_run");
  cr_assert_str_eq(scaler_action_name(SCALER_NONE), "none");
  cr_assert_str_eq(scaler_action_name(SCALER_SCALE_UP), "scale_up");
  cr_assert_str_eq(scaler_action_name(SCALER_RESTORE), "restore");
}

/* ---- persisted state that may be nonsense ----------------------------- */

static scaler_state_t event_state(void) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 2;
  st.last_alerted = 1900;
  st.event_started = 1800;
  st.initial_workers = 3;
  return st;
}

Test(scaler_sanitize, sane_state_is_kept) {
  char why[256];
  scaler_state_t st = event_state();
  scaler_state_t before = st;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 0);
  cr_assert_str_eq(why, "");
  cr_assert_eq(memcmp(&st, &before, sizeof(st)), 0);
  st.last_alerted = 2010; /* a little clock skew is not corruption */
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 0);
  cr_assert_float_eq(st.last_alerted, 2010, 1e-9);
}

Test(scaler_sanitize, negative_depth_is_no_event) {
  char why[256];
  scaler_state_t st = event_state();
  st.depth = -3;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_eq(st.depth, 0);
  cr_assert_float_eq(st.event_started, 0, 1e-9);
  cr_assert_eq(st.initial_workers, 3, "kept, so it is restored as orphaned");
  cr_assert(strstr(why, "depth=-3") != NULL, "%s", why);
}

Test(scaler_sanitize, huge_depth_is_capped) {
  char why[256];
  scaler_state_t st = event_state();
  st.depth = LONG_MAX;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_eq(st.depth, SCALER_DEPTH_LIMIT);
}

Test(scaler_sanitize, bad_times) {
  char why[256];
  scaler_state_t st = event_state();
  st.last_alerted = NAN;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_float_eq(st.last_alerted, 0, 1e-9);
  st.last_alerted = -5;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_float_eq(st.last_alerted, 0, 1e-9);
  st.last_alerted = 1e12; /* would block every check, restores included */
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_float_eq(st.last_alerted, 2000, 1e-9);
  cr_assert(strstr(why, "future") != NULL, "%s", why);

  st = event_state();
  st.event_started = 0;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_float_eq(st.event_started, 1900, 1e-9, "falls back to last_alerted");
  st.event_started = INFINITY;
  st.last_alerted = 0;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_float_eq(st.event_started, 2000, 1e-9, "else now");

  st = SCALER_STATE_INIT;
  st.event_started = 1234; /* unused outside an event: no warning */
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 0);
  cr_assert_float_eq(st.event_started, 0, 1e-9);
}

Test(scaler_sanitize, bad_initial_workers_are_forgotten) {
  char why[256];
  scaler_state_t st = event_state();
  st.initial_workers = -7;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_eq(st.initial_workers, -1);
  st.initial_workers = 1000000000L;
  cr_assert_eq(scaler_state_sanitize(&st, 2000, why, sizeof(why)), 1);
  cr_assert_eq(st.initial_workers, -1);
  cr_assert(strstr(why, "initial_workers=1000000000") != NULL, "%s", why);
  /* Nothing is sent at restore rather than a nonsense quantity. */
  scaler_settings_t s = default_settings;
  scaler_decision_t d = {.action = SCALER_RESTORE, .depth = 2};
  scaler_plan_t p = scaler_plan_heroku(&s, &st, &d);
  cr_assert_eq(p.kind, SCALER_PLAN_SKIP);
  cr_assert_eq(p.result, SCALER_NOSCALE);
}

Test(scaler_parse, absent_keys_are_no_event) {
  char why[256];
  scaler_state_t st;
  cr_assert_eq(scaler_state_parse(&st, NULL, NULL, NULL, NULL, 2000, why,
                                  sizeof(why)), 0);
  cr_assert_eq(st.depth, 0);
  cr_assert_float_eq(st.last_alerted, 0, 1e-9);
  cr_assert_eq(st.initial_workers, -1);
  cr_assert_eq(st.failures, 0);
  cr_assert(!st.ceiling_reached);
}

Test(scaler_parse, gem_values) {
  char why[256];
  scaler_state_t st;
  cr_assert_eq(scaler_state_parse(&st, "2", "1713500000.5", "1713499880.25",
                                  "1", 1713500010, why, sizeof(why)), 0, "%s",
               why);
  cr_assert_eq(st.depth, 2);
  cr_assert_float_eq(st.last_alerted, 1713500000.5, 1e-6);
  cr_assert_float_eq(st.event_started, 1713499880.25, 1e-6);
  cr_assert_eq(st.initial_workers, 1);
  cr_assert_eq(scaler_state_parse(&st, "0", "0.0", "0.0", NULL, 2000, why,
                                  sizeof(why)), 0);
}

Test(scaler_parse, garbage_is_reset_and_reported) {
  char why[512];
  scaler_state_t st;
  cr_assert_eq(scaler_state_parse(&st, "abc", "1900.0", "1800.0", "3", 2000,
                                  why, sizeof(why)), 1);
  cr_assert_eq(st.depth, 0);
  cr_assert_eq(st.initial_workers, 3);
  cr_assert(strstr(why, "depth=\"abc\"") != NULL, "%s", why);

  cr_assert_eq(scaler_state_parse(&st, "2", "yesterday", "x\"\n", "many",
                                  2000, why, sizeof(why)), 1);
  cr_assert_eq(st.depth, 2);
  cr_assert_float_eq(st.last_alerted, 0, 1e-9);
  cr_assert_float_eq(st.event_started, 2000, 1e-9);
  cr_assert_eq(st.initial_workers, -1);
  cr_assert(strstr(why, "x??") != NULL, "unprintables masked: %s", why);
  cr_assert(strchr(why, '\n') == NULL);

  cr_assert_eq(scaler_state_parse(&st, "3.0", "nan", "1800", "-2", 2000, why,
                                  sizeof(why)), 1);
  cr_assert_eq(st.depth, 0);
  cr_assert_float_eq(st.last_alerted, 0, 1e-9);
  cr_assert_eq(st.initial_workers, -1);

  cr_assert_eq(scaler_state_parse(&st, "99999999999999999999", NULL, NULL,
                                  NULL, 2000, why, sizeof(why)), 1);
  cr_assert_eq(st.depth, 0, "out of range is unparsable");
}

Test(scaler_parse, tiny_why_buffer_is_safe) {
  char why[8];
  scaler_state_t st;
  cr_assert_eq(scaler_state_parse(&st, "abc", "nan", "x", "y", 2000, why,
                                  sizeof(why)), 1);
  cr_assert_lt(strlen(why), sizeof(why));
  cr_assert_eq(scaler_state_parse(&st, "abc", NULL, NULL, NULL, 2000, NULL, 0),
               1);
}
