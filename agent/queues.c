/* scalekiq queues [--json]: one read of Sidekiq's data, printed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sidekiq.h"

typedef struct queues_run {
  redis_t redis;
  log_t log;
  int json;
  int status;
  const config_t *cfg;
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
  if (status < 0) {
    fprintf(stderr, "scalekiq: reading Sidekiq's queues failed: %s\n", detail);
    run->status = EXIT_FAIL;
  } else {
    run->status = run->json ? print_json(stats) : (print_table(stats), EXIT_OK);
    sidekiq_stats_free(stats);
  }
  log_event(&run->log, LOG_DEBUG, "redis_stats", "commands=%llu round_trips=%llu",
            (unsigned long long)run->redis.stats.commands,
            (unsigned long long)run->redis.stats.writes);
  redis_close(&run->redis, NULL);
}

static void on_state(redis_t *r, enum redis_state state, int status,
                     const char *detail, void *data) {
  queues_run_t *run = data;
  if (state == REDIS_STATE_READY) {
    int rc = sidekiq_read(r, run->cfg->sidekiq_namespace, &run->log, on_read, run);
    if (rc < 0) {
      fprintf(stderr, "scalekiq: %s\n", redis_strerror(rc));
      run->status = EXIT_FAIL;
      redis_close(r, NULL);
    }
  } else if (state == REDIS_STATE_DISCONNECTED && status < 0) {
    char url[512];
    redis_url_redacted(&r->url, url, sizeof(url));
    fprintf(stderr, "scalekiq: cannot reach Redis at %s (from %s): %s\n", url,
            run->cfg->redis_url_source, detail);
    /* A TLS failure's detail already says which setting to change. */
    if (status != REDIS_E_TLS)
      fprintf(stderr, "scalekiq: check that Redis is up and the URL is right\n");
    run->status = EXIT_FAIL;
    redis_close(r, NULL);
  }
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
    config_free(&cfg);
    log_close(&run.log);
    return EXIT_USAGE;
  }
  run.cfg = &cfg;
  run.status = EXIT_FAIL;

  uv_loop_t loop;
  uv_loop_init(&loop);
  redis_options_t opts;
  redis_options_default(&opts);
  opts.reconnect = 0; /* one-shot: report, do not retry */
  opts.connect_timeout = cfg.request_timeout;
  opts.request_timeout = cfg.request_timeout;
  opts.log = &run.log;
  opts.on_state = on_state;
  opts.data = &run;
  config_redis_tls(&cfg, &opts.tls);
  if (redis_init(&loop, &run.redis, cfg.redis_url, &opts) != 0) {
    fprintf(stderr, "scalekiq: %s\n", redis_last_error(&run.redis));
    run.status = EXIT_USAGE;
  } else {
    redis_connect(&run.redis);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  config_free(&cfg);
  log_close(&run.log);
  return run.status;
}
