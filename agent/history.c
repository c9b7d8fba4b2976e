/* scalekiq history [--json] [-n N]: the shared event history, newest
 * first, straight from Redis (any dyno; no running agent needed). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "oneshot.h"
#include "store.h"

#define HISTORY_DEFAULT 20
#define HISTORY_LIMIT 1000

typedef struct history_run {
  oneshot_t session;
  log_t log;
  store_t store;
  int json;
  long count;
} history_run_t;

static void print_entry(const cJSON *e) {
  const cJSON *at = cJSON_GetObjectItem(e, "at");
  char when[32] = "?";
  if (cJSON_IsNumber(at)) {
    time_t t = (time_t)at->valuedouble;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  printf("%s", when);
  const cJSON *f;
  cJSON_ArrayForEach(f, e) {
    if (strcmp(f->string, "at") == 0 || strcmp(f->string, "agent") == 0) continue;
    if (cJSON_IsString(f)) printf(" %s=%s", f->string, f->valuestring);
    else if (cJSON_IsNumber(f)) printf(" %s=%g", f->string, f->valuedouble);
  }
  printf("\n");
}

static void on_range(redis_t *r, int status, redisReply **rep, size_t n, void *data) {
  (void)r;
  history_run_t *run = data;
  if (status < 0 || n != 1 || rep[0]->type != REDIS_REPLY_ARRAY) {
    fprintf(stderr, "scalekiq: reading the history failed: %s\n",
            status < 0 ? redis_strerror(status)
                       : rep[0]->type == REDIS_REPLY_ERROR ? rep[0]->str : "not a list");
    oneshot_done(&run->session, EXIT_FAIL);
    return;
  }
  cJSON *all = cJSON_CreateArray();
  for (size_t i = 0; i < rep[0]->elements; i++) {
    redisReply *e = rep[0]->element[i];
    cJSON *j = e->type == REDIS_REPLY_STRING ? cJSON_ParseWithLength(e->str, e->len) : NULL;
    if (!cJSON_IsObject(j)) { /* someone else's entry: shown, not trusted */
      cJSON_Delete(j);
      j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "event", "unreadable_entry");
    }
    if (run->json) cJSON_AddItemToArray(all, j);
    else {
      print_entry(j);
      cJSON_Delete(j);
    }
  }
  if (run->json) {
    char *out = cJSON_PrintUnformatted(all);
    printf("%s\n", out ? out : "[]");
    free(out);
  } else if (rep[0]->elements == 0) {
    printf("(no history yet)\n");
  }
  cJSON_Delete(all);
  oneshot_done(&run->session, EXIT_OK);
}

static int start_range(oneshot_t *o) {
  history_run_t *run = o->data;
  return redis_command(&o->redis, on_range, run, "LRANGE %s 0 %ld", run->store.k_history,
                       run->count - 1);
}

/* Takes "-n N" or "-n=N" out of argv. Returns 0, or -1 with a message. */
static int take_count(int *argc, char **argv, long *count) {
  int o = 0;
  for (int i = 0; i < *argc; i++) {
    const char *v = NULL;
    if (strcmp(argv[i], "-n") == 0) {
      if (i + 1 >= *argc) {
        fprintf(stderr, "scalekiq: -n needs a number of entries\n");
        return -1;
      }
      v = argv[++i];
    } else if (strncmp(argv[i], "-n=", 3) == 0) {
      v = argv[i] + 3;
    } else {
      argv[o++] = argv[i];
      continue;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < 1 || n > HISTORY_LIMIT) {
      fprintf(stderr, "scalekiq: -n \"%s\" must be a whole number from 1 to %d\n", v,
              HISTORY_LIMIT);
      return -1;
    }
    *count = n;
  }
  *argc = o;
  return 0;
}

int cmd_history(int argc, char **argv) {
  history_run_t run = {.count = HISTORY_DEFAULT};
  run.json = cli_take_flag(&argc, argv, "--json");
  if (take_count(&argc, argv, &run.count) != 0) return EXIT_USAGE;
  config_t cfg;
  int consumed = 0;
  int rc = cli_load_config(&cfg, &run.log, argc, argv, 0, &consumed);
  if (rc != EXIT_OK) return rc;
  if (consumed != argc) {
    fprintf(stderr, "scalekiq: history takes no argument '%s'; see scalekiq --help\n",
            argv[consumed]);
    rc = EXIT_USAGE;
  } else if (store_init(&run.store, NULL, cfg.state_namespace, cfg.formation, &run.log) != 0) {
    fprintf(stderr, "scalekiq: out of memory\n");
    rc = EXIT_FAIL;
  } else {
    run.session = (oneshot_t){.log = &run.log, .cfg = &cfg, .on_ready = start_range,
                              .data = &run};
    rc = oneshot_run(&run.session);
    store_close(&run.store);
  }
  config_free(&cfg);
  log_close(&run.log);
  return rc;
}
