/*
 * agent: the running autoscaler. Wires one libuv loop: the poll timer,
 * the Redis connection, the leader lock, the Platform API client and the
 * signals. Only the leader polls, one poll at a time, through
 * sidekiq -> store -> scaler -> heroku -> store.
 */
#ifndef SCALEKIQ_AGENT_H
#define SCALEKIQ_AGENT_H

#include <uv.h>

#include "config.h"
#include "control.h"
#include "heroku.h"
#include "leader.h"
#include "log.h"
#include "redis.h"
#include "scaler.h"
#include "sidekiq.h"
#include "store.h"

typedef struct agent agent_t;
typedef void (*agent_stop_cb)(agent_t *a);

/* What the last action did, for logs and status. */
typedef struct agent_action {
  int valid;
  enum scaler_action action;
  enum scaler_result result;
  double at;
  long from, to;
  char error[256];
} agent_action_t;

struct agent {
  uv_loop_t *loop;
  const config_t *cfg;
  log_t *log;
  redis_t redis;
  store_t store;
  leader_t leader;
  heroku_t heroku;
  control_t control;
  int have_heroku; /* app and token configured */
  uv_timer_t poll_timer;
  uv_signal_t sigterm, sigint;
  scaler_settings_t settings;
  scaler_state_t state; /* as last loaded, plus the runtime fields */

  /* the poll in flight */
  int polling;
  unsigned poll_skips; /* ticks skipped while this poll runs */
  double now;          /* Redis's clock at this poll's read */
  double clock_offset; /* Redis's clock minus this host's, as last read */
  sidekiq_stats_t *stats;
  sidekiq_stats_t *last_stats; /* of the last poll that read them */
  scaler_state_t loaded; /* the persisted state as this poll read it */
  int paused;            /* N/paused as the last poll read it */
  int loaded_status;     /* 0, or why it could not be read */
  scaler_queue_t *inputs;
  scaler_decision_t decision;
  scaler_plan_t plan;

  agent_action_t last_action;
  long workers; /* the formation's quantity as the API last told it; -1 */
  uint64_t settle_until; /* uv_now() ms: a change whose outcome is unknown
                            may still land until then, so nothing reads or
                            changes the formation before */
  uint64_t actions[SCALER_DRY_RUN + 1]; /* by result */
  struct { long status; uint64_t count; } api_errors[16]; /* by HTTP status, 0: network */
  uint64_t poll_started;                /* uv_hrtime() */
  double poll_seconds;                  /* duration of the last poll */
  uint64_t polls, poll_errors;
  uint64_t poll_writes; /* redis round trips before this poll began */
  int redis_down_logged;

  int stopping; /* no new poll or action; the one in flight may finish */
  int closing;  /* handles are being closed */
  int handles_open;
  agent_stop_cb stop_cb;
  char err[256];
};

/* Prepares everything from cfg (which must outlive the agent). Returns 0,
 * or -1 with err holding one line. */
int agent_init(uv_loop_t *loop, agent_t *a, const config_t *cfg, log_t *log,
               char *err, size_t errlen);

/* Connects and starts polling; SIGTERM/SIGINT stop the agent, and
 * on_stopped (may be NULL) runs once everything is closed. */
int agent_start(agent_t *a, agent_stop_cb on_stopped);

/* Stops polling, closes every handle; cb (may be NULL) once all are
 * closed. Anything in flight is abandoned: it never half-applies, since
 * state is only written after an action's result is known. */
void agent_stop(agent_t *a, agent_stop_cb cb);

#endif
