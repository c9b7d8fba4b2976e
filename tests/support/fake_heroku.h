/*
 * Test support: the fake Heroku Platform API (tests/fakes/fake_heroku.py)
 * as a child process of the test, and blocking calls to its /__fake/
 * control API (fine here: this is the test process, not the agent).
 *
 *   fake_heroku_t f = {0};
 *   fake_heroku_start(&f, "tok", "worker=1");
 *   ... point the client at fake_heroku_url(&f) ...
 *   fake_heroku_control(&f, "POST", "/__fake/fail", "{\"count\":2,\"status\":503}");
 *   cJSON *reqs = fake_heroku_requests(&f);  // every API request so far
 *   fake_heroku_stop(&f);
 *
 * Failures to start or to reach the fake are Criterion assertions.
 */
#ifndef SCALEKIQ_FAKE_HEROKU_H
#define SCALEKIQ_FAKE_HEROKU_H

#include <cjson/cJSON.h>
#include <sys/types.h>

#define FAKE_HEROKU_APP "scalekiq-fake" /* the fake's default app name */

typedef struct fake_heroku {
  pid_t pid;
  int port;
  char url[64];         /* http://127.0.0.1:PORT, the API base URL */
  char dir[64];         /* temporary folder of the two files below */
  char state_file[128]; /* request log, one JSON line per API request */
  char log_file[128];   /* the fake's stderr */
} fake_heroku_t;

/* Starts the fake with this token and initial formation ("worker=1",
 * "web=1,worker=2"; NULL means the fake's default worker=1) and waits for
 * its "listening" line. extra: more flags (NULL-terminated, may be NULL),
 * e.g. {"--max-quantity", "5", NULL}. */
void fake_heroku_start(fake_heroku_t *f, const char *token, const char *formation);
void fake_heroku_start_args(fake_heroku_t *f, const char *token,
                            const char *formation, const char *const *extra);
/* SIGTERM (SIGKILL if it lingers), reaped; removes the folder. Harmless
 * when not started. */
void fake_heroku_stop(fake_heroku_t *f);

const char *fake_heroku_url(const fake_heroku_t *f);

/* One blocking request to the fake (any path; json may be NULL). Returns
 * the HTTP status, or -1 when the fake could not be reached. *body, when
 * body is not NULL, gets the reply (NUL-terminated, caller frees). */
long fake_heroku_http(fake_heroku_t *f, const char *method, const char *path,
                      const char *json, char **body);

/* A control call, e.g. ("POST", "/__fake/fail", "{\"status\":503}");
 * asserts a 200 reply. */
void fake_heroku_control(fake_heroku_t *f, const char *method, const char *path,
                         const char *json);

/* GET of a control path; asserts 200 and JSON. Caller cJSON_Delete()s. */
cJSON *fake_heroku_get(fake_heroku_t *f, const char *path);

/* GET /__fake/requests: the array of API requests since start or reset. */
cJSON *fake_heroku_requests(fake_heroku_t *f);
int fake_heroku_request_count(fake_heroku_t *f);

/* How many API requests of this method the fake received. */
int fake_heroku_count(fake_heroku_t *f, const char *method);
/* The PATCHes received, in order: quantities asked for (-1 when the body
 * had none) and statuses returned, the first max of them (status may be
 * NULL). Returns how many there were in all. */
int fake_heroku_patches(fake_heroku_t *f, long *qty, long *status, int max);

/* The current quantity of a process type (-1 when it does not exist). */
long fake_heroku_quantity(fake_heroku_t *f, const char *type);

/* POST /__fake/reset (with {"formation": true} when formation is set). */
void fake_heroku_reset(fake_heroku_t *f, int formation);

/* GET /__fake/stalled: the requests a stall rule holds right now. Caller
 * cJSON_Delete()s. */
cJSON *fake_heroku_stalled(fake_heroku_t *f);

#endif
