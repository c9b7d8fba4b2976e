/* scalekiq: dispatch to a subcommand. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "version.h"

extern char **environ;

static const char usage[] =
    "usage: scalekiq COMMAND [--setting value ...]\n"
    "\n"
    "Autoscales a Sidekiq app's Heroku formation on queue latency.\n"
    "\n"
    "commands:\n"
    "  run [-- CMD ARGS...]\n"
    "                     the agent: polls Sidekiq's latency and scales the\n"
    "                     Heroku formation (SIGTERM or SIGINT to stop); with\n"
    "                     a command (the worker, e.g. bundle exec sidekiq), runs\n"
    "                     it as a child, passes signals on and exits with its\n"
    "                     status\n"
    "  queues [--json]    every Sidekiq queue with its size and latency, and\n"
    "                     the pool usage (one-shot; needs no running agent)\n"
    "  status [--json]    what the local agent sees and does (its socket:\n"
    "                     SCALEKIQ_SOCKET, default /tmp/scalekiq.sock)\n"
    "  metrics            the local agent's figures, Prometheus text format\n"
    "  pause | resume     stop / restart formation changes, for every agent\n"
    "  history [--json] [-n N]\n"
    "                     the event history all agents share, newest first\n"
    "  step-down          the local agent hands leadership over now\n"
    "  --version          print the version\n"
    "  --help             this text\n"
    "\n"
    "Settings come from the environment (SCALEKIQ_REDIS_URL, REDIS_URL,\n"
    "SCALEKIQ_POLL_INTERVAL, ...); a flag named after one overrides it:\n"
    "SCALEKIQ_REDIS_URL -> --redis-url. See the README for every setting.\n";

int cli_take_flag(int *argc, char **argv, const char *name) {
  int found = 0, o = 0;
  for (int i = 0; i < *argc; i++) {
    if (strcmp(argv[i], "--") == 0) { /* the rest is not ours */
      while (i < *argc) argv[o++] = argv[i++];
      break;
    }
    if (strcmp(argv[i], name) == 0) found = 1;
    else argv[o++] = argv[i];
  }
  *argc = o;
  return found;
}

int cli_load_config(config_t *cfg, log_t *log, int argc, char **argv,
                    int need_heroku, int *consumed) {
  char err[512];
  if (config_load(cfg, environ, argc, argv, need_heroku, consumed, err,
                  sizeof(err)) != 0) {
    fprintf(stderr, "scalekiq: %s\n", err);
    return EXIT_USAGE;
  }
  log_init(log, stderr, cfg->log_level);
  log_add_secret(log, cfg->redis.password);
  log_add_secret(log, cfg->heroku_api_key);
  return EXIT_OK;
}

int main(int argc, char **argv) {
  /* A peer that hangs up mid-write (Redis, a control client) must be an
   * EPIPE for the writer to handle, not the death of the agent. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    fputs(usage, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("scalekiq %s\n", SCALEKIQ_VERSION);
    return EXIT_OK;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
      strcmp(cmd, "help") == 0) {
    fputs(usage, stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "queues") == 0) return cmd_queues(argc - 2, argv + 2);
  if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
  if (strcmp(cmd, "history") == 0) return cmd_history(argc - 2, argv + 2);
  if (strcmp(cmd, "status") == 0 || strcmp(cmd, "metrics") == 0 || strcmp(cmd, "pause") == 0 ||
      strcmp(cmd, "resume") == 0 || strcmp(cmd, "step-down") == 0)
    return cmd_control(cmd, argc - 2, argv + 2);
  fprintf(stderr, "scalekiq: unknown command '%s'; see scalekiq --help\n", cmd);
  return EXIT_USAGE;
}
