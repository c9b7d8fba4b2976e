/* scalekiq status | pause | resume | step-down: ask the local agent
 * through its control socket. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "control.h"

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static void print_status(const char *json) {
  cJSON *o = cJSON_Parse(json);
  if (o == NULL) {
    printf("%s\n", json);
    return;
  }
  /* Ages are taken on the agent's clock, the one its times are on. */
  double now = num(o, "now");
  const cJSON *redis = cJSON_GetObjectItem(o, "redis");
  const cJSON *ev = cJSON_GetObjectItem(o, "event");
  printf("agent     %s (pid %.0f, scalekiq %s)%s%s\n", str(o, "identity"), num(o, "pid"),
         str(o, "version"), cJSON_IsTrue(cJSON_GetObjectItem(o, "dry_run")) ? ", dry run" : "",
         cJSON_IsTrue(cJSON_GetObjectItem(o, "paused")) ? ", PAUSED" : "");
  printf("role      %s; leader %s\n", str(o, "role"),
         *str(o, "leader") ? str(o, "leader") : "unknown");
  printf("redis     %s (%s)\n", str(redis, "url"),
         cJSON_IsTrue(cJSON_GetObjectItem(redis, "connected")) ? "connected" : "NOT CONNECTED");
  double depth = num(ev, "depth"), workers = num(o, "workers");
  if (depth > 0)
    printf("event     depth %.0f, for %.0f s, initial workers %.0f\n", depth,
           now - num(ev, "started_at"), num(ev, "initial_workers"));
  else
    printf("event     none\n");
  if (workers >= 0) printf("workers   %.0f %s (as the Platform API last said)\n", workers,
                           str(o, "formation"));
  /* Only the queues over the threshold: the rest is `scalekiq queues`. */
  double threshold = num(o, "latency_threshold");
  int high = 0;
  const cJSON *q;
  cJSON_ArrayForEach(q, cJSON_GetObjectItem(o, "queues")) {
    if (num(q, "latency") <= threshold) continue;
    printf("high      %-20s size %8.0f  latency %8.3f s\n", str(q, "name"), num(q, "size"),
           num(q, "latency"));
    high++;
  }
  if (high == 0 && strcmp(str(o, "role"), "leader") == 0)
    printf("high      no queue above %.3g s\n", threshold);
  const cJSON *la = cJSON_GetObjectItem(o, "last_action");
  if (cJSON_IsObject(la))
    printf("last      %s %s, %.1f s ago%s%s\n", str(la, "action"), str(la, "result"),
           now - num(la, "at"), *str(la, "error") ? ": " : "", str(la, "error"));
  cJSON_Delete(o);
}

int cmd_control(const char *command, int argc, char **argv) {
  int json = strcmp(command, "status") == 0 && cli_take_flag(&argc, argv, "--json");
  config_t cfg;
  log_t log;
  int consumed = 0;
  int rc = cli_load_config(&cfg, &log, argc, argv, 0, &consumed);
  if (rc != EXIT_OK) return rc;
  if (consumed != argc) {
    fprintf(stderr, "scalekiq: %s takes no argument '%s'; see scalekiq --help\n", command,
            argv[consumed]);
    rc = EXIT_USAGE;
  } else {
    char line[64], *reply = NULL, err[512];
    snprintf(line, sizeof(line), "%s%s", command, json ? " --json" : "");
    if (control_request(cfg.socket_path, line, 10.0, &reply, err, sizeof(err)) != 0) {
      fprintf(stderr, "scalekiq: %s\n", err);
      rc = EXIT_FAIL;
    } else if (strcmp(command, "status") == 0 && !json) {
      print_status(reply);
    } else {
      printf("%s\n", reply);
    }
    free(reply);
  }
  config_free(&cfg);
  log_close(&log);
  return rc;
}
