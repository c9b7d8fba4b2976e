/* The command-line front: each subcommand parses its own flags, loads the
 * configuration and runs. Exit statuses: 0 ok, 1 failure at run time
 * (e.g. Redis unreachable), 2 bad usage or configuration. */
#ifndef SCALEKIQ_CLI_H
#define SCALEKIQ_CLI_H

#include "config.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Removes the boolean flag `name` from argv (in place); returns whether it
 * was there. */
int cli_take_flag(int *argc, char **argv, const char *name);

/* Loads the configuration from the environment and argv, sets up log on
 * stderr with the config's level and its secrets; prints the error and
 * returns EXIT_USAGE on failure. */
int cli_load_config(config_t *cfg, log_t *log, int argc, char **argv,
                    int need_heroku, int *consumed);

int cmd_queues(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_control(const char *command, int argc, char **argv);
int cmd_history(int argc, char **argv);

#endif
