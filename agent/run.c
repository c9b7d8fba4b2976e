/* scalekiq run [-- CMD ARGS...]: the agent, until SIGTERM or SIGINT; with a
 * command, the agent beside that command (the worker) as its child, until
 * the child exits. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "cli.h"
#include "supervise.h"
#include "version.h"

extern char **environ;

typedef struct run {
  agent_t agent;
  int agent_running;
  supervise_t child;
} run_t;

static void log_start(log_t *log, const config_t *cfg) {
  char desc[1024];
  config_describe(cfg, desc, sizeof(desc));
  log_event(log, LOG_INFO, "start", "version=%s %s", SCALEKIQ_VERSION, desc);
}

/* The agent alone: its exit status is its own. */
static int run_agent(config_t *cfg, log_t *log) {
  log_start(log, cfg);
  uv_loop_t loop;
  uv_loop_init(&loop);
  agent_t agent;
  char err[512];
  int rc = EXIT_OK;
  if (agent_init(&loop, &agent, cfg, log, err, sizeof(err)) != 0) {
    fprintf(stderr, "scalekiq: %s\n", err);
    rc = EXIT_USAGE;
  } else {
    agent_start(&agent, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    log_event(log, LOG_INFO, "stopped", NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* let anything closing finish */
  uv_loop_close(&loop);
  return rc;
}

/* The worker has exited: hand leadership over now, then leave with its
 * status once every handle is closed. */
static void on_child_exit(supervise_t *s) {
  run_t *r = s->data;
  if (r->agent_running) agent_stop(&r->agent, NULL);
  supervise_close(s, NULL);
}

/* The agent beside a child. The child comes first and is never held
 * hostage to the agent: whatever keeps the agent from running (a bad
 * setting, a busy socket path) is logged and the worker runs on without
 * autoscaling, because a worker that does not start is worse than one that
 * does not scale. */
static int run_supervised(char *const *child_argv, config_t *cfg, int cfg_ok,
                          const char *cfg_err, log_t *log) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  run_t r;
  memset(&r, 0, sizeof(r));
  char err[512];
  int rc = supervise_start(&loop, &r.child, child_argv, log, on_child_exit, &r, err,
                           sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "scalekiq: %s\n", err);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return supervise_spawn_failure_code(rc);
  }
  if (!cfg_ok) {
    snprintf(err, sizeof(err), "%s", cfg_err);
  } else {
    log_start(log, cfg);
    if (agent_init(&loop, &r.agent, cfg, log, err, sizeof(err)) == 0) {
      r.agent_running = 1;
      agent_start(&r.agent, NULL);
    }
  }
  if (!r.agent_running)
    log_event(log, LOG_ERROR, "autoscaling_off",
              "error=\"%s\" msg=\"the worker runs without autoscaling; fix this and "
              "restart the dyno\"",
              err);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (r.agent_running) log_event(log, LOG_INFO, "stopped", NULL);
  uv_loop_close(&loop);
  return supervise_exit_code(&r.child);
}

int cmd_run(int argc, char **argv) {
  int split = -1;
  for (int i = 0; i < argc && split < 0; i++)
    if (strcmp(argv[i], "--") == 0) split = i;
  char *const *child_argv = split >= 0 ? argv + split + 1 : NULL;
  if (child_argv != NULL && child_argv[0] == NULL) {
    fprintf(stderr, "scalekiq: nothing to run after '--': write scalekiq run -- "
                    "COMMAND [ARGS...], or leave out '--' to run the agent alone\n");
    return EXIT_USAGE;
  }
  int nflags = split >= 0 ? split : argc;

  config_t cfg;
  log_t log;
  int consumed = 0;
  char err[512];
  int cfg_ok = config_load(&cfg, environ, nflags, argv, 1, &consumed, err,
                           sizeof(err)) == 0;
  if (cfg_ok && consumed != nflags) {
    snprintf(err, sizeof(err),
             "run takes no argument '%s': to supervise a command, write scalekiq run "
             "-- %s ...",
             argv[consumed], argv[consumed]);
    config_free(&cfg);
    cfg_ok = 0;
  }
  /* Logs of the running agent go to stdout, where Heroku collects them. */
  log_init(&log, stdout, cfg_ok ? cfg.log_level : LOG_INFO);
  if (cfg_ok) {
    log_add_secret(&log, cfg.redis.password);
    log_add_secret(&log, cfg.heroku_api_key);
  }

  int rc;
  if (child_argv != NULL) {
    rc = run_supervised(child_argv, &cfg, cfg_ok, err, &log);
  } else if (!cfg_ok) {
    fprintf(stderr, "scalekiq: %s\n", err);
    rc = EXIT_USAGE;
  } else {
    rc = run_agent(&cfg, &log);
  }
  if (cfg_ok) config_free(&cfg);
  log_close(&log);
  return rc;
}
