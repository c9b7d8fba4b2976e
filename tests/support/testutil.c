/* Test support: see testutil.h. Blocking calls are fine here: this is the
 * test process, not the agent's loop. */
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

bool test_wait_for(bool (*cond)(void *), void *arg, double timeout) {
  double end = mono_now() + timeout;
  for (;;) {
    if (cond(arg)) return true;
    if (mono_now() > end) return false;
    sleep_ms(5);
  }
}

int test_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

static bool redis_answers(void *arg) {
  test_redis_t *t = arg;
  struct timeval tv = {0, 200000};
  redisContext *c = t->tls ? redisConnectUnixWithTimeout(t->sock, tv)
                           : redisConnectWithTimeout("127.0.0.1", t->port, tv);
  if (c == NULL) return false;
  bool ok = false;
  if (!c->err) {
    redisReply *r = redisCommand(c, "PING");
    ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (r) freeReplyObject(r);
  }
  if (ok) {
    if (t->ctx) redisFree(t->ctx);
    t->ctx = c;
  } else {
    redisFree(c);
  }
  return ok;
}

static pid_t spawn_redis(test_redis_t *t) {
  char port[16], log[128];
  snprintf(port, sizeof(port), "%d", t->port);
  snprintf(log, sizeof(log), "%s/redis.log", t->dir);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    /* Dies with the test, even when the test crashes or times out, and
     * holds none of the test runner's output pipes open. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    if (t->tls) {
      /* TLS only on TCP ("-::1": IPv6 loopback when there is one, so that
       * a client resolving localhost to ::1 finds the server too). */
      execl(REDIS_SERVER_BIN, REDIS_SERVER_BIN, "--port", "0", "--tls-port", port,
            "--tls-cert-file", t->tls_cert, "--tls-key-file", t->tls_key,
            "--tls-ca-cert-file", t->tls_ca, "--tls-auth-clients",
            t->tls_auth_clients ? "yes" : "no", "--unixsocket", t->sock,
            "--unixsocketperm", "700", "--bind", "127.0.0.1", "-::1", "--save", "",
            "--appendonly", "no", "--dir", t->dir, "--logfile", log, "--daemonize",
            "no", "--enable-debug-command", "yes", (char *)NULL);
    } else {
      execl(REDIS_SERVER_BIN, REDIS_SERVER_BIN, "--port", port, "--bind",
            "127.0.0.1", "--save", "", "--appendonly", t->aof ? "yes" : "no",
            "--appendfsync", "always", "--dir", t->dir,
            "--logfile", log, "--daemonize", "no", "--enable-debug-command",
            "yes", (char *)NULL);
    }
    _exit(127);
  }
  return pid;
}

void test_redis_restart(test_redis_t *t) {
  t->pid = spawn_redis(t);
  if (!test_wait_for(redis_answers, t, 5.0)) {
    test_redis_kill(t);
    cr_assert_fail("redis-server did not answer on port %d (log in %s)", t->port,
             t->dir);
  }
}

void test_redis_start(test_redis_t *t) {
  if (t->dir[0] == '\0') {
    snprintf(t->dir, sizeof(t->dir), "/tmp/scalekiq-test-XXXXXX");
    cr_assert(mkdtemp(t->dir) != NULL);
  }
  bool fixed = t->port != 0;
  for (int attempt = 0; attempt < 5; attempt++) {
    if (!fixed) t->port = test_free_port();
    t->pid = spawn_redis(t);
    if (test_wait_for(redis_answers, t, 5.0)) {
      snprintf(t->url, sizeof(t->url), "%s://127.0.0.1:%d/0",
               t->tls ? "rediss" : "redis", t->port);
      return;
    }
    test_redis_kill(t); /* port taken in the meantime: try another */
    if (fixed) break;
  }
  cr_assert_fail("could not start redis-server (log in %s)", t->dir);
}

void test_redis_start_tls(test_redis_t *t, const char *cert, const char *key,
                          const char *ca, bool auth_clients) {
  if (t->dir[0] == '\0') {
    snprintf(t->dir, sizeof(t->dir), "/tmp/scalekiq-test-XXXXXX");
    cr_assert(mkdtemp(t->dir) != NULL);
  }
  t->tls = true;
  t->tls_auth_clients = auth_clients;
  snprintf(t->tls_cert, sizeof(t->tls_cert), "%s", cert);
  snprintf(t->tls_key, sizeof(t->tls_key), "%s", key);
  snprintf(t->tls_ca, sizeof(t->tls_ca), "%s", ca);
  snprintf(t->sock, sizeof(t->sock), "%s/redis.sock", t->dir);
  test_redis_start(t);
}

/* ---- certificates -------------------------------------------------- */

static void run_openssl(const char *const *args) {
  const char *argv[32] = {OPENSSL_BIN};
  int n = 1;
  for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *out, *err;
  int rc = test_run(argv, NULL, 30, &out, &err);
  cr_assert_eq(rc, 0, "openssl %s failed (%d): %s", args[0], rc, err);
  free(out);
  free(err);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert(f != NULL, "%s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
}

/* A key pair and a certificate for it, signed by the test CA. */
static void ca_signed(const test_certs_t *c, const char *name, const char *crt,
                      const char *key, const char *serial, const char *ext) {
  char csr[128], extfile[128], subj[96], cakey[128];
  snprintf(cakey, sizeof(cakey), "%s/ca.key", c->dir);
  snprintf(csr, sizeof(csr), "%s/%s.csr", c->dir, name);
  snprintf(extfile, sizeof(extfile), "%s/%s.ext", c->dir, name);
  snprintf(subj, sizeof(subj), "/CN=scalekiq-test-%s", name);
  write_text(extfile, ext);
  const char *req[] = {"req", "-new", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                       "-out", csr, "-subj", subj, NULL};
  run_openssl(req);
  const char *sign[] = {"x509", "-req", "-in", csr, "-CA", c->ca, "-CAkey", cakey,
                        "-set_serial", serial, "-days", "2", "-out", crt,
                        "-extfile", extfile, NULL};
  run_openssl(sign);
}

void test_certs_make(test_certs_t *c) {
  memset(c, 0, sizeof(*c));
  snprintf(c->dir, sizeof(c->dir), "/tmp/scalekiq-certs-XXXXXX");
  cr_assert(mkdtemp(c->dir) != NULL);
#define CERT_PATH(field, file) snprintf(c->field, sizeof(c->field), "%s/" file, c->dir)
  CERT_PATH(ca, "ca.crt");
  CERT_PATH(server_crt, "server.crt");
  CERT_PATH(server_key, "server.key");
  CERT_PATH(other_crt, "other.crt");
  CERT_PATH(other_key, "other.key");
  CERT_PATH(self_crt, "self.crt");
  CERT_PATH(self_key, "self.key");
  CERT_PATH(client_crt, "client.crt");
  CERT_PATH(client_key, "client.key");
#undef CERT_PATH
  char cakey[128];
  snprintf(cakey, sizeof(cakey), "%s/ca.key", c->dir);
  /* P-256 keys: instant to make, unlike RSA. */
  const char *ca[] = {"req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", cakey,
                      "-out", c->ca, "-days", "2", "-subj", "/CN=scalekiq-test-ca",
                      NULL};
  run_openssl(ca);
  ca_signed(c, "server", c->server_crt, c->server_key, "2",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\n");
  ca_signed(c, "other", c->other_crt, c->other_key, "3",
            "subjectAltName=DNS:redis.example.com\nextendedKeyUsage=serverAuth\n");
  ca_signed(c, "client", c->client_crt, c->client_key, "4",
            "extendedKeyUsage=clientAuth\n");
  /* What Heroku's Key-Value Store presents: a self-signed certificate,
   * here with the right names so that only the chain is wrong. */
  const char *self[] = {"req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                        c->self_key, "-out", c->self_crt, "-days", "2", "-subj",
                        "/CN=scalekiq-test-self", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost", NULL};
  run_openssl(self);
}

void test_certs_remove(test_certs_t *c) {
  if (c->dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
    if (system(cmd) != 0) { /* leftover temp files only */
    }
    c->dir[0] = '\0';
  }
}

void test_redis_kill(test_redis_t *t) {
  if (t->ctx) {
    redisFree(t->ctx);
    t->ctx = NULL;
  }
  if (t->pid > 0) {
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    t->pid = 0;
  }
}

void test_redis_stop(test_redis_t *t) {
  test_redis_kill(t);
  if (t->dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0) { /* leftover temp files only */
    }
    t->dir[0] = '\0';
  }
  t->tls = false; /* a later test_redis_start is plain again */
  t->aof = false;
}

static redisReply *vcmd(test_redis_t *t, const char *fmt, va_list ap) {
  cr_assert(t->ctx != NULL, "no test connection to redis");
  redisReply *r = redisvCommand(t->ctx, fmt, ap);
  cr_assert(r != NULL, "redis command failed: %s", t->ctx->errstr);
  cr_assert(r->type != REDIS_REPLY_ERROR, "redis error: %s", r->str);
  return r;
}

redisReply *test_redis_cmd(test_redis_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = vcmd(t, fmt, ap);
  va_end(ap);
  return r;
}

void test_redis_cmd_free(test_redis_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  freeReplyObject(vcmd(t, fmt, ap));
  va_end(ap);
}

char *test_redis_get(test_redis_t *t, const char *key) {
  redisReply *r = test_redis_cmd(t, "GET %s", key);
  char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
  freeReplyObject(r);
  return v;
}

void test_push_job(test_redis_t *t, const char *ns, const char *queue,
                   const char *json) {
  char qset[256], qkey[256];
  snprintf(qset, sizeof(qset), "%s%squeues", ns ? ns : "", ns ? ":" : "");
  snprintf(qkey, sizeof(qkey), "%s%squeue:%s", ns ? ns : "", ns ? ":" : "",
           queue);
  test_redis_cmd_free(t, "SADD %s %s", qset, queue);
  test_redis_cmd_free(t, "LPUSH %s %s", qkey, json);
}

/* Reads both pipes until the child exits and the pipes close. */
static void collect(int ofd, int efd, pid_t pid, double timeout, char **out,
                    char **err, int *killed) {
  char *bufs[2] = {NULL, NULL};
  size_t lens[2] = {0, 0}, caps[2] = {0, 0};
  int fds[2] = {ofd, efd};
  double end = mono_now() + timeout;
  *killed = 0;
  while (fds[0] >= 0 || fds[1] >= 0) {
    struct pollfd p[2];
    int n = 0;
    for (int i = 0; i < 2; i++)
      if (fds[i] >= 0) p[n++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    double left = end - mono_now();
    if (left <= 0 && !*killed) {
      kill(pid, SIGKILL);
      *killed = 1;
    }
    poll(p, (nfds_t)n, left > 0 ? (int)(left * 1000) + 1 : 100);
    for (int j = 0; j < n; j++) {
      if (!(p[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int i = p[j].fd == fds[0] ? 0 : 1;
      if (caps[i] - lens[i] < 4096) {
        caps[i] = caps[i] ? caps[i] * 2 : 8192;
        bufs[i] = realloc(bufs[i], caps[i]);
        cr_assert(bufs[i] != NULL);
      }
      ssize_t got = read(fds[i], bufs[i] + lens[i], caps[i] - lens[i] - 1);
      if (got <= 0) {
        close(fds[i]);
        fds[i] = -1;
      } else {
        lens[i] += (size_t)got;
      }
    }
  }
  for (int i = 0; i < 2; i++) {
    if (bufs[i] == NULL) bufs[i] = malloc(1);
    bufs[i][lens[i]] = '\0';
  }
  if (out) *out = bufs[0]; else free(bufs[0]);
  if (err) *err = bufs[1]; else free(bufs[1]);
}

int test_run(const char *const *argv, const char *const *env, double timeout,
             char **out, char **err) {
  int op[2], ep[2];
  cr_assert(pipe(op) == 0 && pipe(ep) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    dup2(op[1], 1);
    dup2(ep[1], 2);
    close(op[0]);
    close(ep[0]);
    close(op[1]);
    close(ep[1]);
    for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(op[1]);
  close(ep[1]);
  int killed;
  collect(op[0], ep[0], pid, timeout, out, err, &killed);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (killed) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

pid_t test_spawn(const char *const *argv, const char *const *env,
                 const char *out_path) {
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int devnull = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (devnull >= 0) dup2(devnull, 0);
    for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

int test_stop(pid_t pid, int sig, double timeout) {
  if (sig) kill(pid, sig);
  double end = mono_now() + timeout;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;
    if (mono_now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    sleep_ms(5);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

bool test_alive(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

char *test_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  cr_assert(buf != NULL);
  if (f) {
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
      len += got;
      if (cap - len < 2) {
        cap *= 2;
        buf = realloc(buf, cap);
        cr_assert(buf != NULL);
      }
    }
    fclose(f);
  }
  buf[len] = '\0';
  return buf;
}

static void wake(uv_timer_t *t) { (void)t; }

bool test_loop_until_cond(uv_loop_t *loop, bool (*cond)(void *), void *arg,
                          double seconds) {
  uv_timer_t w;
  uv_timer_init(loop, &w);
  uv_timer_start(&w, wake, 2, 2);
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  bool ok;
  while (!(ok = cond(arg)) && uv_hrtime() < end) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&w, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

typedef struct counter_goal {
  const int *counter;
  int target;
} counter_goal_t;

static bool counter_reached(void *arg) {
  const counter_goal_t *g = arg;
  return *g->counter >= g->target;
}

bool test_loop_until(uv_loop_t *loop, const int *counter, int target,
                     double seconds) {
  counter_goal_t g = {counter, target};
  return test_loop_until_cond(loop, counter_reached, &g, seconds);
}

double test_mono(void) { return mono_now(); }

/* ---- stamped output ------------------------------------------------ */

typedef struct stamper {
  int fd;
  FILE *out;
} stamper_t;

static void *stamp_lines(void *arg) {
  stamper_t *s = arg;
  char buf[4096], line[8192];
  size_t len = 0;
  for (;;) {
    ssize_t got = read(s->fd, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    double t = test_now(); /* after the read: never before the write */
    for (ssize_t i = 0; i < got; i++) {
      if (len < sizeof(line) - 1) line[len++] = buf[i];
      if (buf[i] != '\n') continue;
      line[len] = '\0';
      fprintf(s->out, "t=%.6f %s%s", t, line, line[len - 1] == '\n' ? "" : "\n");
      len = 0;
    }
    fflush(s->out);
  }
  if (len > 0) {
    line[len] = '\0';
    fprintf(s->out, "t=%.6f %s\n", test_now(), line);
  }
  fclose(s->out);
  close(s->fd);
  free(s);
  return NULL;
}

pid_t test_spawn_stamped(const char *const *argv, const char *const *env,
                         const char *out_path) {
  int p[2];
  /* close-on-exec: no other child may hold the write end open, or the
   * stamper would never see the end of this one's output */
  cr_assert(pipe(p) == 0, "pipe: %s", strerror(errno));
  fcntl(p[0], F_SETFD, FD_CLOEXEC);
  fcntl(p[1], F_SETFD, FD_CLOEXEC);
  stamper_t *s = malloc(sizeof(*s));
  cr_assert(s != NULL);
  s->fd = p[0];
  s->out = fopen(out_path, "a");
  cr_assert(s->out != NULL, "%s: %s", out_path, strerror(errno));
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(p[1], 1);
    dup2(p[1], 2);
    if (devnull >= 0) dup2(devnull, 0);
    for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  pthread_t th;
  cr_assert(pthread_create(&th, NULL, stamp_lines, s) == 0);
  pthread_detach(th);
  return pid;
}
