/* Test support: see fake_heroku.h. */
#include "fake_heroku.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAKE_SCRIPT SOURCE_DIR "/tests/fakes/fake_heroku.py"

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void log_tail(const fake_heroku_t *f, char *buf, size_t size) {
  buf[0] = '\0';
  FILE *fp = fopen(f->log_file, "r");
  if (fp == NULL) return;
  size_t n = fread(buf, 1, size - 1, fp);
  buf[n] = '\0';
  fclose(fp);
}

void fake_heroku_start(fake_heroku_t *f, const char *token, const char *formation) {
  fake_heroku_start_args(f, token, formation, NULL);
}

void fake_heroku_start_args(fake_heroku_t *f, const char *token,
                            const char *formation, const char *const *extra) {
  memset(f, 0, sizeof(*f));
  cr_assert(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
  snprintf(f->dir, sizeof(f->dir), "/tmp/scalekiq-fake-XXXXXX");
  cr_assert(mkdtemp(f->dir) != NULL, "mkdtemp: %s", strerror(errno));
  snprintf(f->state_file, sizeof(f->state_file), "%s/requests.jsonl", f->dir);
  snprintf(f->log_file, sizeof(f->log_file), "%s/fake.log", f->dir);

  const char *argv[64];
  int argc = 0;
  argv[argc++] = PYTHON3_BIN;
  argv[argc++] = FAKE_SCRIPT;
  argv[argc++] = "--port";
  argv[argc++] = "0";
  argv[argc++] = "--token";
  argv[argc++] = token;
  argv[argc++] = "--state-file";
  argv[argc++] = f->state_file;
  if (formation) {
    argv[argc++] = "--formation";
    argv[argc++] = formation;
  }
  for (size_t i = 0; extra && extra[i] && argc < 62; i++) argv[argc++] = extra[i];
  argv[argc] = NULL;

  int out[2];
  cr_assert(pipe(out) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    /* Dies with the test, and holds none of the runner's pipes open. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDONLY);
    int logfd = open(f->log_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out[1], 1);
    if (logfd >= 0) dup2(logfd, 2);
    close(out[0]);
    close(out[1]);
    execv(PYTHON3_BIN, (char *const *)argv);
    _exit(127);
  }
  close(out[1]);
  f->pid = pid;

  /* "listening 127.0.0.1:PORT\n" */
  char line[128];
  size_t len = 0;
  double end = mono() + 15.0;
  while (len < sizeof(line) - 1 && memchr(line, '\n', len) == NULL) {
    double left = end - mono();
    if (left <= 0) break;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) continue;
    ssize_t got = read(out[0], line + len, sizeof(line) - 1 - len);
    if (got <= 0) break;
    len += (size_t)got;
  }
  close(out[0]);
  line[len] = '\0';
  int port = 0;
  if (sscanf(line, "listening 127.0.0.1:%d", &port) != 1 || port <= 0) {
    char log[2048];
    log_tail(f, log, sizeof(log));
    fake_heroku_stop(f);
    cr_assert_fail("fake_heroku.py did not start (stdout \"%s\"):\n%s", line, log);
  }
  f->port = port;
  snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", port);
}

void fake_heroku_stop(fake_heroku_t *f) {
  if (f->pid > 0) {
    kill(f->pid, SIGTERM);
    double end = mono() + 5.0;
    int reaped = 0;
    while (mono() < end) {
      pid_t r = waitpid(f->pid, NULL, WNOHANG);
      if (r == f->pid || (r < 0 && errno != EINTR)) {
        reaped = 1;
        break;
      }
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
    if (!reaped) {
      kill(f->pid, SIGKILL);
      waitpid(f->pid, NULL, 0);
    }
    f->pid = 0;
    curl_global_cleanup();
  }
  if (f->dir[0]) {
    unlink(f->state_file);
    unlink(f->log_file);
    rmdir(f->dir);
    f->dir[0] = '\0';
  }
}

const char *fake_heroku_url(const fake_heroku_t *f) { return f->url; }

struct buf {
  char *p;
  size_t len;
};

static size_t collect(char *ptr, size_t size, size_t n, void *userdata) {
  struct buf *b = userdata;
  size_t got = size * n;
  char *np = realloc(b->p, b->len + got + 1);
  if (np == NULL) return 0;
  b->p = np;
  memcpy(b->p + b->len, ptr, got);
  b->len += got;
  b->p[b->len] = '\0';
  return got;
}

long fake_heroku_http(fake_heroku_t *f, const char *method, const char *path,
                      const char *json, char **body) {
  CURL *e = curl_easy_init();
  cr_assert(e != NULL);
  char url[512];
  snprintf(url, sizeof(url), "%s%s", f->url, path);
  struct buf b = {NULL, 0};
  struct curl_slist *hdrs = NULL;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
  if (json) {
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(json));
  }
  long code = -1;
  if (curl_easy_perform(e) == CURLE_OK)
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(e);
  curl_slist_free_all(hdrs);
  if (b.p == NULL) b.p = calloc(1, 1);
  if (body) *body = b.p;
  else free(b.p);
  return code;
}

void fake_heroku_control(fake_heroku_t *f, const char *method, const char *path,
                         const char *json) {
  char *body = NULL;
  long code = fake_heroku_http(f, method, path, json, &body);
  if (code != 200) {
    char copy[512];
    snprintf(copy, sizeof(copy), "%s", body ? body : "");
    free(body);
    cr_assert_fail("fake control %s %s -> %ld: %s", method, path, code, copy);
  }
  free(body);
}

cJSON *fake_heroku_get(fake_heroku_t *f, const char *path) {
  char *body = NULL;
  long code = fake_heroku_http(f, "GET", path, NULL, &body);
  cJSON *doc = code == 200 ? cJSON_Parse(body) : NULL;
  free(body);
  cr_assert(doc != NULL, "fake GET %s -> %ld, or not JSON", path, code);
  return doc;
}

cJSON *fake_heroku_requests(fake_heroku_t *f) {
  cJSON *doc = fake_heroku_get(f, "/__fake/requests");
  cr_assert(cJSON_IsArray(doc));
  return doc;
}

int fake_heroku_request_count(fake_heroku_t *f) {
  cJSON *doc = fake_heroku_requests(f);
  int n = cJSON_GetArraySize(doc);
  cJSON_Delete(doc);
  return n;
}

static int is_method(const cJSON *req, const char *method) {
  const cJSON *m = cJSON_GetObjectItem(req, "method");
  return cJSON_IsString(m) && strcmp(m->valuestring, method) == 0;
}

int fake_heroku_count(fake_heroku_t *f, const char *method) {
  cJSON *reqs = fake_heroku_requests(f);
  int n = 0;
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) n += is_method(r, method);
  cJSON_Delete(reqs);
  return n;
}

int fake_heroku_patches(fake_heroku_t *f, long *qty, long *status, int max) {
  cJSON *reqs = fake_heroku_requests(f);
  int n = 0;
  const cJSON *r;
  cJSON_ArrayForEach(r, reqs) {
    if (!is_method(r, "PATCH")) continue;
    if (n < max) {
      const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "body"), "quantity");
      qty[n] = cJSON_IsNumber(q) ? (long)q->valuedouble : -1;
      if (status) status[n] = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(r, "status"));
    }
    n++;
  }
  cJSON_Delete(reqs);
  return n;
}

long fake_heroku_quantity(fake_heroku_t *f, const char *type) {
  char path[256];
  snprintf(path, sizeof(path), "/__fake/formation/%s", type);
  char *body = NULL;
  long code = fake_heroku_http(f, "GET", path, NULL, &body);
  long q = -1;
  if (code == 200) {
    cJSON *doc = cJSON_Parse(body);
    const cJSON *qj = cJSON_GetObjectItemCaseSensitive(doc, "quantity");
    if (cJSON_IsNumber(qj)) q = (long)qj->valuedouble;
    cJSON_Delete(doc);
  } else {
    cr_assert(code == 404, "fake GET %s -> %ld", path, code);
  }
  free(body);
  return q;
}

void fake_heroku_reset(fake_heroku_t *f, int formation) {
  fake_heroku_control(f, "POST", "/__fake/reset",
                      formation ? "{\"formation\": true}" : "{}");
}

cJSON *fake_heroku_stalled(fake_heroku_t *f) {
  cJSON *doc = fake_heroku_get(f, "/__fake/stalled");
  cr_assert(cJSON_IsArray(doc));
  return doc;
}
