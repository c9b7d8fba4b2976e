/* scalekiq queues [--json]: one read of Sidekiq's data, printed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "oneshot.h"
#include "sidekiq.h"

typedef struct queues_run {
  oneshot_t session;
  log_t log;
  int json;
} queues_run_t;

static double round_ms(double s) { return round(s * 1000.0) / 1000.0; }

static int print_json(const sidekiq_stats_t *s) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; arr && i < s->nqueues; i++) {
    cJSON *q = cJSON_CreateObject();
    if (q == NULL) break;
    cJSON_AddItemToArray(arr, q);
    cJSON_AddStringToObject(q, "name", s->queues[i].name);
    cJSON_AddNumberToObject(q, "size", (double)s->queues[i].size);
    cJSON_AddNumberToObject(q, "latency", round_ms(s->queues[i].latency));
  }
  char *out = arr ? cJSON_PrintUnformatted(arr) : NULL;
  cJSON_Delete(arr);
  if (out == NULL) {
    fprintf(stderr, "scalekiq: out of memory printing queues\n");
    return EXIT_FAIL;
  }
  printf("%s\n", out);
  free(out);
  return EXIT_OK;
}

static void print_table(const sidekiq_stats_t *s) {
  int w = (int)strlen("QUEUE");
  for (size_t i = 0; i < s->nqueues; i++) {
    int len = (int)strlen(s->queues[i].name);
    if (len > w) w = len;
  }
  printf("%-*s %10s %12s\n", w, "QUEUE", "SIZE", "LATENCY");
  for (size_t i = 0; i < s->nqueues; i++)
    printf("%-*s %10lld %11.3fs\n", w, s->queues[i].name, s->queues[i].size,
           s->queues[i].latency);
  if (s->nqueues == 0) printf("(no queues)\n");
  printf("\npool usage: %lld of %lld threads busy (%.0f%%) in %zu process%s\n",
         s->busy, s->concurrency, s->pool_usage * 100.0, s->processes,
         s->processes == 1 ? "" : "es");
}

static void on_read(int status, sidekiq_stats_t *stats, const char *detail,
                    void *data) {
  queues_run_t *run = data;
  int rc = EXIT_FAIL;
  if (status < 0) {
    fprintf(stderr, "scalekiq: reading Sidekiq's queues failed: %s\n", detail);
  } else {
    rc = run->json ? print_json(stats) : (print_table(stats), EXIT_OK);
    sidekiq_stats_free(stats);
  }
  oneshot_done(&run->session, rc);
}

static int start_read(oneshot_t *o) {
  queues_run_t *run = o->data;
  return sidekiq_read(&o->redis, o->cfg->sidekiq_namespace, o->log, on_read, run);
}

int cmd_queues(int argc, char **argv) {
  queues_run_t run = {0};
  run.json = cli_take_flag(&argc, argv, "--json");
  config_t cfg;
  int consumed = 0;
  int rc = cli_load_config(&cfg, &run.log, argc, argv, 0, &consumed);
  if (rc != EXIT_OK) return rc;
  if (consumed != argc) {
    fprintf(stderr, "scalekiq: queues takes no argument '%s'; see scalekiq --help\n",
            argv[consumed]);
    rc = EXIT_USAGE;
  } else {
    run.session = (oneshot_t){.log = &run.log, .cfg = &cfg, .on_ready = start_read,
                              .data = &run};
    rc = oneshot_run(&run.session);
  }
  config_free(&cfg);
  log_close(&run.log);
  return rc;
}
