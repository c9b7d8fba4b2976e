/* scalekiq run: the agent, until SIGTERM or SIGINT. */
#include <stdio.h>

#include "agent.h"
#include "cli.h"
#include "version.h"

int cmd_run(int argc, char **argv) {
  config_t cfg;
  log_t log;
  int consumed = 0;
  int rc = cli_load_config(&cfg, &log, argc, argv, 1, &consumed);
  if (rc != EXIT_OK) return rc;
  /* Logs of the running agent go to stdout, where Heroku collects them. */
  log.out = stdout;
  if (consumed != argc) {
    fprintf(stderr,
            "scalekiq: run takes no argument '%s' (supervising a command after "
            "'--' is not built yet); see scalekiq --help\n",
            argv[consumed]);
    config_free(&cfg);
    log_close(&log);
    return EXIT_USAGE;
  }
  char desc[1024];
  config_describe(&cfg, desc, sizeof(desc));
  log_event(&log, LOG_INFO, "start", "version=%s %s", SCALEKIQ_VERSION, desc);

  uv_loop_t loop;
  uv_loop_init(&loop);
  agent_t agent;
  char err[512];
  rc = EXIT_OK;
  if (agent_init(&loop, &agent, &cfg, &log, err, sizeof(err)) != 0) {
    fprintf(stderr, "scalekiq: %s\n", err);
    rc = EXIT_USAGE;
  } else {
    agent_start(&agent, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    log_event(&log, LOG_INFO, "stopped", NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* let anything closing finish */
  uv_loop_close(&loop);
  config_free(&cfg);
  log_close(&log);
  return rc;
}
