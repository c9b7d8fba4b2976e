/*
 * The control socket server on a real loop in the test process, with
 * real Unix-socket clients: raw non-blocking sockets driven between loop
 * turns (so one thread can play a silent, a dribbling or a non-reading
 * client while another one is answered), control_request() on a thread
 * (it blocks, as in the CLI), and a forked child that drops to 'nobody'
 * for the peer checks. Every wait has a deadline.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <cjson/cJSON.h>
#include <grp.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "testutil.h"

static uv_loop_t loop;
static control_t ctl;
static int serving, closed;
static char dir[64], path[128];
static log_t lg;
static FILE *logfile;
static char *logbuf;
static size_t loglen;

/* What the handler does. */
static size_t big_reply;     /* metrics: bytes of text */
static uint64_t deferred_id; /* history: the id it deferred */
static int deferred;
static control_request_t last_req;
static int handled;

static int handler(control_t *c, const control_request_t *req, char **reply,
                   void *data) {
  (void)c;
  cr_assert_eq(data, &loop);
  last_req = *req;
  handled++;
  switch (req->command) {
  case CONTROL_STATUS:
    *reply = strdup(req->json ? "{\"role\":\"leader\",\"paused\":false}"
                              : "role: leader\npaused: no");
    return 0;
  case CONTROL_METRICS:
    *reply = malloc(big_reply + 1);
    for (size_t i = 0; i < big_reply; i++) (*reply)[i] = i % 64 == 63 ? '\n' : 'm';
    (*reply)[big_reply] = '\0';
    return 0;
  case CONTROL_PAUSE:
    return 0; /* no text: "ok" */
  case CONTROL_RESUME:
    *reply = strdup("not paused\nat all");
    return CONTROL_E_INVALID;
  case CONTROL_STEP_DOWN:
    return CONTROL_E_INVALID; /* no message: the code's */
  case CONTROL_HISTORY:
    deferred_id = req->id;
    deferred++;
    return CONTROL_DEFER;
  }
  return CONTROL_E_INVALID;
}

static control_options_t options(void) {
  control_options_t o;
  control_options_default(&o);
  o.path = path;
  o.idle_timeout = 0.3;
  o.handler_timeout = 0.3;
  o.log = &lg;
  o.handler = handler;
  o.data = &loop;
  return o;
}

static void serve(const control_options_t *o) {
  char err[256];
  cr_assert_eq(control_init(&loop, &ctl, o, err, sizeof(err)), 0, "%s", err);
  serving = 1;
}

static void on_closed(control_t *c) {
  cr_assert_eq(c, &ctl);
  closed++;
}

/* ---- waiting ------------------------------------------------------- */

static bool pump_until(bool (*cond)(void *), void *arg, double seconds) {
  return test_loop_until_cond(&loop, cond, arg, seconds);
}

static bool never(void *arg) {
  (void)arg;
  return false;
}
static void pump_for(double seconds) { pump_until(never, NULL, seconds); }

static bool no_clients(void *arg) {
  (void)arg;
  return ctl.nclients == 0;
}
static bool clients_reached(void *arg) { return ctl.nclients >= *(size_t *)arg; }
static bool handled_reached(void *arg) { return handled >= *(int *)arg; }
static bool is_closed(void *arg) {
  (void)arg;
  return closed > 0;
}

static void start(void) {
  signal(SIGPIPE, SIG_IGN); /* as the agent's main() must */
  strcpy(dir, "/tmp/skq-ctl-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/scalekiq.sock", dir);
  uv_loop_init(&loop);
  logfile = open_memstream(&logbuf, &loglen);
  log_init(&lg, logfile, LOG_DEBUG);
  serving = closed = handled = deferred = 0;
  big_reply = 0;
}

static void stop(void) {
  if (serving && !closed) {
    control_close(&ctl, on_closed);
    cr_assert(pump_until(is_closed, NULL, 5), "close callback never ran");
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
  fclose(logfile);
  free(logbuf);
  log_close(&lg);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  cr_assert_eq(system(cmd), 0);
}

TestSuite(control, .init = start, .fini = stop);

/* ---- raw clients --------------------------------------------------- */

typedef struct raw {
  int fd;
  char *buf;
  size_t len, cap;
  int eof;
} raw_t;

static int raw_connect_to(const char *p) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, p);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0);
  double end = test_now() + 5;
  while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    /* A full backlog: let the server accept some. */
    cr_assert_eq(errno, EAGAIN, "connect: %s", strerror(errno));
    cr_assert(test_now() < end, "backlog never drained");
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  return fd;
}

static void raw_open(raw_t *r) {
  memset(r, 0, sizeof(*r));
  r->fd = raw_connect_to(path);
}

static void raw_send(raw_t *r, const void *data, size_t n) {
  const char *p = data;
  double end = test_now() + 5;
  while (n > 0) {
    ssize_t k = send(r->fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
    } else if (k < 0 && errno == EAGAIN) {
      cr_assert(test_now() < end, "send stuck");
      uv_run(&loop, UV_RUN_NOWAIT);
    } else {
      return; /* the server closed: what it said is still readable */
    }
  }
}

/* Reads what is there; true once the server has closed. */
static bool raw_drain(void *arg) {
  raw_t *r = arg;
  while (!r->eof) {
    if (r->cap - r->len < 4096) {
      r->cap = r->cap ? r->cap * 2 : 8192;
      r->buf = realloc(r->buf, r->cap);
    }
    ssize_t k = recv(r->fd, r->buf + r->len, r->cap - r->len - 1, MSG_DONTWAIT);
    if (k > 0) r->len += (size_t)k;
    else if (k < 0 && errno == EAGAIN) break;
    else r->eof = 1; /* EOF, or ECONNRESET after it closed on unread bytes */
    r->buf[r->len] = '\0';
  }
  return r->eof;
}

static void raw_close(raw_t *r) {
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  free(r->buf);
  r->buf = NULL;
}

/* One exchange; returns everything the server sent (caller frees). */
static char *raw_exchange(const void *data, size_t n) {
  raw_t r;
  raw_open(&r);
  raw_send(&r, data, n);
  cr_assert(pump_until(raw_drain, &r, 5), "no reply to %.40s", (const char *)data);
  char *out = r.buf ? r.buf : strdup("");
  r.buf = NULL;
  raw_close(&r);
  return out;
}

static void expect_reply(const char *line, const char *want) {
  char *got = raw_exchange(line, strlen(line));
  cr_assert_str_eq(got, want, "request %s", line);
  free(got);
}

static void expect_prefix(const void *data, size_t n, const char *want) {
  char *got = raw_exchange(data, n);
  cr_assert(strncmp(got, want, strlen(want)) == 0, "got \"%s\", want \"%s...\"", got,
            want);
  cr_assert_eq(strchr(got, '\n'), got + strlen(got) - 1, "not one line: %s", got);
  free(got);
}

/* ---- control_request() on a thread --------------------------------- */

typedef struct creq {
  const char *line;
  int rc;
  char *reply;
  char err[512];
  atomic_int done;
  pthread_t th;
} creq_t;

static void *creq_main(void *arg) {
  creq_t *q = arg;
  q->rc = control_request(path, q->line, 5, &q->reply, q->err, sizeof(q->err));
  atomic_store(&q->done, 1);
  return NULL;
}

static bool creq_done(void *arg) { return atomic_load(&((creq_t *)arg)->done) != 0; }

static void ask(creq_t *q, const char *line) {
  memset(q, 0, sizeof(*q));
  q->line = line;
  cr_assert_eq(pthread_create(&q->th, NULL, creq_main, q), 0);
  cr_assert(pump_until(creq_done, q, 10), "control_request never returned");
  pthread_join(q->th, NULL);
}

/* ---- tests --------------------------------------------------------- */

Test(control, status_round_trip_through_the_cli_client) {
  control_options_t o = options();
  serve(&o);
  creq_t q;

  ask(&q, "status");
  cr_assert_eq(q.rc, 0, "%s", q.err);
  cr_assert_str_eq(q.reply, "role: leader\npaused: no"); /* the handler's text, exactly */
  cr_assert_eq(last_req.command, CONTROL_STATUS);
  cr_assert_eq(last_req.uid, geteuid());
  cr_assert_eq(last_req.pid, getpid());
  cr_assert_neq(last_req.id, 0);
  free(q.reply);

  ask(&q, "status --json\n");
  cr_assert_eq(q.rc, 0, "%s", q.err);
  cJSON *j = cJSON_Parse(q.reply);
  cr_assert_not_null(j, "not JSON: %s", q.reply);
  cr_assert_str_eq(cJSON_GetObjectItem(j, "role")->valuestring, "leader");
  cJSON_Delete(j);
  free(q.reply);

  ask(&q, "pause");
  cr_assert_eq(q.rc, 0, "%s", q.err);
  cr_assert_str_eq(q.reply, "ok");
  free(q.reply);

  /* Handler errors: its message on one line, or the code's. */
  ask(&q, "resume");
  cr_assert_eq(q.rc, CONTROL_E_AGENT);
  cr_assert_str_eq(q.err, "not paused at all");
  cr_assert_null(q.reply);
  ask(&q, "step-down");
  cr_assert_eq(q.rc, CONTROL_E_AGENT);
  cr_assert_str_eq(q.err, "invalid argument");

  ask(&q, "frobnicate");
  cr_assert_eq(q.rc, CONTROL_E_AGENT);
  cr_assert(strstr(q.err, "unknown command \"frobnicate\"; valid commands: status"),
            "%s", q.err);

  cr_assert_eq(ctl.stats.answered, 6);
  cr_assert(pump_until(no_clients, NULL, 2));
}

Test(control, reply_framing_on_the_wire) {
  control_options_t o = options();
  serve(&o);
  expect_reply("status\n", "role: leader\npaused: no\n");
  expect_reply("  status\t--json \r\n", "{\"role\":\"leader\",\"paused\":false}\n");
  expect_reply("pause\n", "ok\n");
  expect_reply("resume\n", "error: not paused at all\n");
  expect_reply("step-down\n", "error: invalid argument\n");

  /* A line without LF, then a half-close, as `printf status | nc -U`. */
  raw_t r;
  raw_open(&r);
  raw_send(&r, "pause", 5);
  shutdown(r.fd, SHUT_WR);
  cr_assert(pump_until(raw_drain, &r, 2));
  cr_assert_str_eq(r.buf, "ok\n");
  raw_close(&r);

  /* Bytes after the line are never read as a second request. */
  expect_reply("pause\nstatus\n", "ok\n");
}

Test(control, socket_mode_and_options) {
  control_options_t o = options();
  serve(&o);
  struct stat st;
  cr_assert_eq(lstat(path, &st), 0);
  cr_assert(S_ISSOCK(st.st_mode));
  cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
  cr_assert_eq(st.st_uid, geteuid());
  /* No temporary name left beside it. */
  char tmp[160];
  snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
  cr_assert_neq(access(tmp, F_OK), 0);

  /* Group mode on another path. */
  char p2[160];
  snprintf(p2, sizeof(p2), "%s/group.sock", dir);
  control_t c2;
  control_options_t o2 = options();
  o2.path = p2;
  o2.mode = 0660;
  char err[256];
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(lstat(p2, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0660);
  control_close(&c2, NULL);
  pump_for(0.05);
  cr_assert_neq(access(p2, F_OK), 0, "path not unlinked on close");

  /* Modes that would open the socket to others, or lock out the owner. */
  int badmodes[] = {0666, 0604, 0400, 0200, 01600};
  for (size_t i = 0; i < sizeof(badmodes) / sizeof(badmodes[0]); i++) {
    o2.mode = badmodes[i];
    cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_INVALID,
                 "mode %o", badmodes[i]);
    cr_assert(strstr(err, "mode"), "%s", err);
  }
  o2.mode = 0600;
  o2.max_line = CONTROL_LINE_MAX + 1;
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_INVALID);
  o2.max_line = 0;
  o2.idle_timeout = -1;
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_INVALID);
  o2.idle_timeout = 0;
  o2.handler = NULL;
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_INVALID);
  char longp[200];
  memset(longp, 'p', sizeof(longp) - 1);
  longp[0] = '/';
  longp[sizeof(longp) - 1] = '\0';
  o2 = options();
  o2.path = longp;
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_INVALID);
  cr_assert(strstr(err, "longer than 95 bytes"), "%s", err);
  o2.path = "/nonexistent-dir/scalekiq.sock";
  cr_assert_eq(control_init(&loop, &c2, &o2, err, sizeof(err)), CONTROL_E_IO);
  cr_assert(strstr(err, "cannot bind control socket /nonexistent-dir/scalekiq.sock"),
            "%s", err);
  cr_assert_neq(access(p2, F_OK), 0);
}

Test(control, warns_when_sigpipe_is_not_ignored) {
  signal(SIGPIPE, SIG_DFL);
  control_options_t o = options();
  serve(&o);
  signal(SIGPIPE, SIG_IGN);
  fflush(logfile);
  cr_assert(strstr(logbuf, "event=control_sigpipe_not_ignored"), "%s", logbuf);
}

static void make_stale(const char *p) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, p);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  cr_assert_eq(listen(fd, 1), 0);
  close(fd); /* the file stays: what a killed agent leaves */
}

Test(control, stale_socket_is_replaced) {
  make_stale(path);
  struct stat before, after;
  cr_assert_eq(lstat(path, &before), 0);
  control_options_t o = options();
  serve(&o);
  cr_assert_eq(lstat(path, &after), 0);
  cr_assert_neq(before.st_ino, after.st_ino);
  cr_assert_eq(after.st_mode & 0777, 0600);
  fflush(logfile);
  cr_assert(strstr(logbuf, "event=control_stale_socket"), "%s", logbuf);
  expect_reply("status\n", "role: leader\npaused: no\n");
}

Test(control, live_agent_is_detected_not_stolen) {
  control_options_t o = options();
  serve(&o);
  struct stat before, after;
  cr_assert_eq(lstat(path, &before), 0);

  control_t c2;
  char err[256], want[256];
  cr_assert_eq(control_init(&loop, &c2, &o, err, sizeof(err)), CONTROL_E_INUSE);
  snprintf(want, sizeof(want), "another scalekiq agent is listening on %s (pid %ld)",
           path, (long)getpid());
  cr_assert_str_eq(err, want);

  /* The first agent keeps its socket, drops the probe and still answers. */
  cr_assert_eq(lstat(path, &after), 0);
  cr_assert_eq(before.st_ino, after.st_ino);
  pump_for(0.05);
  cr_assert(pump_until(no_clients, NULL, 2), "probe connection not dropped");
  cr_assert_eq(ctl.stats.accepted, 1);
  expect_reply("status\n", "role: leader\npaused: no\n");
}

Test(control, a_file_that_is_not_a_socket_is_kept) {
  FILE *f = fopen(path, "w");
  fputs("precious", f);
  fclose(f);
  control_options_t o = options();
  char err[256];
  cr_assert_eq(control_init(&loop, &ctl, &o, err, sizeof(err)), CONTROL_E_INUSE);
  cr_assert(strstr(err, "exists and is not a socket; not replacing it"), "%s", err);
  char *s = test_read_file(path);
  cr_assert_str_eq(s, "precious");
  free(s);
}

Test(control, thousand_connections_dropped_then_still_answers) {
  control_options_t o = options();
  serve(&o);
  for (int i = 0; i < 1000; i++) {
    int fd = raw_connect_to(path);
    switch (i % 4) {
    case 0: break;                                        /* nothing at all */
    case 1: send(fd, "sta", 3, MSG_NOSIGNAL); break;      /* half a line */
    case 2: send(fd, "status\n", 7, MSG_NOSIGNAL); break; /* hangs up on its reply */
    case 3: send(fd, "nonsense\n", 9, MSG_NOSIGNAL); break;
    }
    close(fd);
    if (i % 25 == 0) uv_run(&loop, UV_RUN_NOWAIT);
  }
  pump_for(0.05); /* the last ones may not be accepted yet */
  cr_assert(pump_until(no_clients, NULL, 5), "%zu clients left", ctl.nclients);
  cr_assert_eq(ctl.stats.accepted + ctl.stats.rejected, 1000);
  cr_assert_eq(ctl.open, 1); /* the listener alone */
  expect_reply("status\n", "role: leader\npaused: no\n");
}

Test(control, garbage_and_oversized_lines_get_errors) {
  control_options_t o = options();
  serve(&o);
  expect_prefix("\x01\x02garbage\n", 10, "error: request has a control character (0x01)");
  expect_prefix("frobnicate\n", 11, "error: unknown command \"frobnicate\"");
  expect_prefix("\n", 1, "error: empty request");
  const char bin[] = {'\0', (char)0xff, 'x', '\n'};
  expect_prefix(bin, sizeof(bin), "error: request has a control character (0x00)");

  /* Far over the limit, no LF: refused after max_line + 1 bytes. */
  size_t n = 10000;
  char *big = malloc(n);
  memset(big, 'A', n);
  expect_prefix(big, n, "error: request line longer than 4096 bytes");
  /* Exactly at the limit: read whole, refused for what it says. */
  big[CONTROL_LINE_MAX] = '\n';
  expect_prefix(big, CONTROL_LINE_MAX + 1, "error: unknown command \"AAAA");
  free(big);

  cr_assert_eq(ctl.stats.bad, 6);
  cr_assert_eq(handled, 0);
  expect_reply("status\n", "role: leader\npaused: no\n");
  cr_assert(pump_until(no_clients, NULL, 2));
}

Test(control, smaller_max_line) {
  control_options_t o = options();
  o.max_line = 16;
  serve(&o);
  expect_reply("status          \n", "role: leader\npaused: no\n"); /* 16 + LF */
  expect_prefix("status           \n", 18, "error: request line longer than 16 bytes");
}

Test(control, silent_and_dribbling_clients_time_out_while_others_are_answered) {
  control_options_t o = options();
  o.idle_timeout = 0.5;
  serve(&o);
  double t0 = test_now();
  raw_t silent, slow;
  raw_open(&silent);
  raw_open(&slow);

  /* Another client is answered at once meanwhile. */
  expect_reply("status\n", "role: leader\npaused: no\n");
  cr_assert_lt(test_now() - t0, 0.45);
  cr_assert(!raw_drain(&silent), "silent client closed too early");
  cr_assert_eq(ctl.nclients, 2);

  /* The dribbler sends a byte every 150 ms: the deadline is for the whole
   * line, not per byte, so it cannot hold a slot for long. */
  const char *line = "status\n";
  for (size_t i = 0; i < strlen(line) && !raw_drain(&slow); i++) {
    raw_send(&slow, line + i, 1);
    pump_for(0.15);
  }
  cr_assert(pump_until(raw_drain, &silent, 2));
  cr_assert(pump_until(raw_drain, &slow, 2));
  double dt = test_now() - t0;
  cr_assert(dt >= 0.49 && dt < 2, "closed after %.3f s", dt);
  cr_assert_str_eq(silent.buf, "error: no request line within 0.5 s\n");
  cr_assert_str_eq(slow.buf, "error: no request line within 0.5 s\n");
  cr_assert_eq(ctl.stats.timeouts, 2);
  raw_close(&silent);
  raw_close(&slow);
  cr_assert(pump_until(no_clients, NULL, 1));
}

static size_t heap_in_use(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

Test(control, client_that_never_reads_a_large_reply_does_not_block_others) {
  control_options_t o = options();
  o.idle_timeout = 1;
  serve(&o);
  lg.min_level = LOG_WARN; /* the log's buffer is heap too */
  expect_reply("status\n", "role: leader\npaused: no\n");
  size_t base = heap_in_use();
  big_reply = 8u << 20; /* far more than a socket buffer */

  raw_t hog;
  raw_open(&hog);
  raw_send(&hog, "metrics\n", 8);
  int two = 2;
  cr_assert(pump_until(handled_reached, &two, 2));
  cr_assert_eq(ctl.nclients, 1, "the hog is being written to");

  /* Others are answered while the hog's reply is still pending. */
  expect_reply("status\n", "role: leader\npaused: no\n");
  expect_reply("pause\n", "ok\n");
  cr_assert_eq(ctl.nclients, 1, "the hog should still be waiting");
  cr_assert_eq(ctl.stats.timeouts, 0);

  /* Its write deadline passes: closed, and the reply's memory is back. */
  cr_assert(pump_until(no_clients, NULL, 2), "hog never closed");
  cr_assert_eq(ctl.stats.timeouts, 1);
  cr_assert_lt(heap_in_use(), base + (64u << 10), "reply memory not freed");
  /* It got part of the reply at most, then the end of the stream. */
  cr_assert(pump_until(raw_drain, &hog, 2));
  cr_assert_lt(hog.len, big_reply);
  raw_close(&hog);
  expect_reply("status\n", "role: leader\npaused: no\n");
}

Test(control, too_many_clients_are_told_and_closed_at_once) {
  control_options_t o = options();
  o.max_clients = 4;
  o.idle_timeout = 1;
  serve(&o);
  raw_t s[4];
  for (int i = 0; i < 4; i++) raw_open(&s[i]);
  size_t four = 4;
  cr_assert(pump_until(clients_reached, &four, 2));

  double t0 = test_now();
  expect_reply("status\n", "error: too many connections to the agent; try again\n");
  cr_assert_lt(test_now() - t0, 0.5);
  cr_assert_eq(ctl.stats.rejected, 1);

  for (int i = 0; i < 4; i++) raw_close(&s[i]);
  cr_assert(pump_until(no_clients, NULL, 1), "hung-up clients not closed");
  expect_reply("status\n", "role: leader\npaused: no\n");
}

static bool was_deferred(void *arg) { return deferred >= *(int *)arg; }

Test(control, deferred_answers) {
  control_options_t o = options();
  serve(&o);

  /* Answered later, from the loop. */
  raw_t r;
  raw_open(&r);
  raw_send(&r, "history\n", 8);
  int want = 1;
  cr_assert(pump_until(was_deferred, &want, 2));
  pump_for(0.05);
  cr_assert(!raw_drain(&r), "answered before the handler did");
  cr_assert_eq(control_respond(&ctl, deferred_id, 0, strdup("h1\nh2")), 0);
  cr_assert(pump_until(raw_drain, &r, 2));
  cr_assert_str_eq(r.buf, "h1\nh2\n");
  raw_close(&r);

  /* Never answered: the client hears so after handler_timeout, and a
   * late answer finds nobody. */
  double t0 = test_now();
  expect_reply("history --json\n", "error: the agent did not answer within 0.3 s\n");
  cr_assert_geq(test_now() - t0, 0.29);
  cr_assert_eq(control_respond(&ctl, deferred_id, 0, strdup("late")), CONTROL_E_GONE);
  cr_assert_eq(control_respond(&ctl, 987654, 0, NULL), CONTROL_E_GONE);

  /* An error answer. */
  raw_open(&r);
  raw_send(&r, "history\n", 8);
  want = 3;
  cr_assert(pump_until(was_deferred, &want, 2));
  cr_assert_eq(control_respond(&ctl, deferred_id, CONTROL_E_INVALID,
                               strdup("no history yet")),
               0);
  cr_assert(pump_until(raw_drain, &r, 2));
  cr_assert_str_eq(r.buf, "error: no history yet\n");
  raw_close(&r);
}

Test(control, close_with_clients_in_every_state) {
  control_options_t o = options();
  o.idle_timeout = 5;
  o.handler_timeout = 5;
  serve(&o);
  big_reply = 4u << 20;
  raw_t silent, hog, waiting;
  raw_open(&silent);
  raw_open(&hog);
  raw_send(&hog, "metrics\n", 8);
  raw_open(&waiting);
  raw_send(&waiting, "history\n", 8);
  int two = 2;
  cr_assert(pump_until(handled_reached, &two, 2));
  cr_assert_eq(ctl.nclients, 3);

  control_close(&ctl, on_closed);
  cr_assert_neq(access(path, F_OK), 0, "path not unlinked");
  cr_assert_eq(control_respond(&ctl, deferred_id, 0, strdup("x")), CONTROL_E_CLOSED);
  cr_assert(pump_until(is_closed, NULL, 2));
  cr_assert_eq(closed, 1);
  cr_assert_eq(ctl.nclients, 0);
  cr_assert_eq(ctl.open, 0);
  raw_close(&silent);
  raw_close(&hog);
  raw_close(&waiting);
}

static int close_from_handler(control_t *c, const control_request_t *req, char **reply,
                              void *data) {
  (void)req;
  (void)data;
  control_close(c, on_closed);
  *reply = strdup("bye");
  return 0;
}

Test(control, close_from_inside_the_handler) {
  control_options_t o = options();
  o.handler = close_from_handler;
  serve(&o);
  raw_t r;
  raw_open(&r);
  raw_send(&r, "status\n", 7);
  cr_assert(pump_until(is_closed, NULL, 2));
  cr_assert(pump_until(raw_drain, &r, 2));
  cr_assert_eq(r.len, 0); /* closed without an answer, nothing leaked */
  raw_close(&r);
}

Test(control, close_leaves_someone_elses_file_alone) {
  control_options_t o = options();
  serve(&o);
  /* Someone removed our socket and put something else there. */
  cr_assert_eq(unlink(path), 0);
  FILE *f = fopen(path, "w");
  fputs("not ours", f);
  fclose(f);
  control_close(&ctl, on_closed);
  cr_assert(pump_until(is_closed, NULL, 2));
  cr_assert_eq(access(path, F_OK), 0, "removed a file that was not ours");
}

Test(control, memory_does_not_grow_over_many_connections) {
  control_options_t o = options();
  serve(&o);
  lg.min_level = LOG_WARN; /* the log's buffer is heap too */
  for (int i = 0; i < 50; i++) expect_reply("status\n", "role: leader\npaused: no\n");
  cr_assert(pump_until(no_clients, NULL, 2));
  size_t before = heap_in_use();
  for (int i = 0; i < 600; i++) {
    switch (i % 3) {
    case 0: expect_reply("status\n", "role: leader\npaused: no\n"); break;
    case 1: expect_prefix("bogus\n", 6, "error: unknown command"); break;
    case 2: {
      int fd = raw_connect_to(path); /* hangs up at once */
      close(fd);
      break;
    }
    }
  }
  pump_for(0.05); /* the last one may not be accepted yet */
  cr_assert(pump_until(no_clients, NULL, 2));
  size_t after = heap_in_use();
  cr_assert_lt(after, before + (16u << 10), "heap grew from %zu to %zu", before, after);
  cr_assert_eq(ctl.open, 1, "open %d nclients %zu", ctl.open, ctl.nclients);
  cr_assert_eq(ctl.stats.accepted, 650);
}

/* A server that takes one request and answers "abc" with no LF. */
static void *answer_without_lf(void *arg) {
  int lfd = *(int *)arg;
  int fd = accept(lfd, NULL, NULL);
  char buf[64];
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof(buf));
    (void)n;
    n = write(fd, "abc", 3);
    close(fd);
  }
  return NULL;
}

static int listen_raw(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, path);
  int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
  cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  cr_assert_eq(listen(lfd, 4), 0);
  return lfd;
}

Test(control, client_errors_name_the_problem) {
  char *reply = (char *)1, err[512], want[512];
  int rc = control_request(path, "status", 1, &reply, err, sizeof(err));
  cr_assert_eq(rc, CONTROL_E_NOAGENT);
  cr_assert_null(reply);
  snprintf(want, sizeof(want),
           "no scalekiq agent answers on %s: no such socket (is `scalekiq run` "
           "running on this dyno?)",
           path);
  cr_assert_str_eq(err, want);

  make_stale(path);
  rc = control_request(path, "status", 1, &reply, err, sizeof(err));
  cr_assert_eq(rc, CONTROL_E_NOAGENT);
  snprintf(want, sizeof(want),
           "no scalekiq agent answers on %s: connection refused (is `scalekiq run` "
           "running on this dyno?)",
           path);
  cr_assert_str_eq(err, want);
  unlink(path);

  /* Something listens and never answers: the timeout holds. */
  int lfd = listen_raw();
  double t0 = test_now();
  rc = control_request(path, "status", 0.3, &reply, err, sizeof(err));
  double dt = test_now() - t0;
  cr_assert_eq(rc, CONTROL_E_TIMEOUT, "%d %s", rc, err);
  cr_assert(dt >= 0.29 && dt < 1, "%.3f s", dt);
  cr_assert(strstr(err, "no reply from the scalekiq agent on"), "%s", err);
  close(lfd);
  unlink(path);

  /* An answer without the framing LF is cut short, not taken whole. */
  lfd = listen_raw();
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, answer_without_lf, &lfd), 0);
  rc = control_request(path, "status", 2, &reply, err, sizeof(err));
  pthread_join(th, NULL);
  cr_assert_eq(rc, CONTROL_E_IO, "%d %s", rc, err);
  cr_assert(strstr(err, "was cut short"), "%s", err);
  close(lfd);
  unlink(path);

  cr_assert_eq(control_request(path, "status\npause", 1, &reply, err, sizeof(err)),
               CONTROL_E_INVALID);
  cr_assert_eq(control_request(path, "status", 0, &reply, err, sizeof(err)),
               CONTROL_E_INVALID);
}

/* ---- other users ----------------------------------------------------- */

typedef struct child {
  pid_t pid;
  int status;
  int done;
} child_t;

static bool child_exited(void *arg) {
  child_t *ch = arg;
  if (!ch->done && waitpid(ch->pid, &ch->status, WNOHANG) == ch->pid) ch->done = 1;
  return ch->done;
}

/* Runs control_request("status") in a child as uid 65534 with the given
 * gid, while the loop here keeps serving; returns its rc, err and reply. */
static int as_nobody(gid_t gid, char *err, size_t errlen, char **reply) {
  int p[2];
  cr_assert_eq(pipe(p), 0);
  child_t ch = {0};
  ch.pid = fork();
  cr_assert(ch.pid >= 0);
  if (ch.pid == 0) {
    close(p[0]);
    char e[512] = "", *r = NULL;
    int rc = -100;
    if (setgroups(0, NULL) == 0 && setgid(gid) == 0 && setuid(65534) == 0)
      rc = control_request(path, "status", 2, &r, e, sizeof(e));
    else
      snprintf(e, sizeof(e), "cannot drop privileges: %s", strerror(errno));
    dprintf(p[1], "%d\n%s\n%s", rc, e, r ? r : "");
    _exit(0);
  }
  close(p[1]);
  cr_assert(pump_until(child_exited, &ch, 10), "child stuck");
  char buf[2048];
  ssize_t n = read(p[0], buf, sizeof(buf) - 1);
  close(p[0]);
  cr_assert(n > 0);
  buf[n] = '\0';
  int rc = atoi(buf);
  char *e = strchr(buf, '\n') + 1;
  char *r = strchr(e, '\n');
  *r++ = '\0';
  snprintf(err, errlen, "%s", e);
  *reply = strdup(r);
  return rc;
}

static void allow_traverse(void) { cr_assert_eq(chmod(dir, 0711), 0); }

Test(control, peer_of_another_uid_is_denied) {
  if (geteuid() != 0) cr_skip_test("needs root to act as another user");
  control_options_t o = options();
  serve(&o);
  allow_traverse();
  /* As if the mode were lax: the uid check alone must keep them out. */
  cr_assert_eq(chmod(path, 0666), 0);
  char err[512], *reply;
  int rc = as_nobody(65534, err, sizeof(err), &reply);
  cr_assert_eq(rc, CONTROL_E_AGENT, "rc %d: %s", rc, err);
  cr_assert_str_eq(err, "permission denied");
  free(reply);
  cr_assert_eq(ctl.stats.denied, 1);
  cr_assert_eq(handled, 0, "the handler saw a denied peer's request");
  fflush(logfile);
  cr_assert(strstr(logbuf, "event=control_denied uid=65534"), "%s", logbuf);
}

Test(control, socket_mode_keeps_other_users_out) {
  if (geteuid() != 0) cr_skip_test("needs root to act as another user");
  control_options_t o = options();
  serve(&o);
  allow_traverse();
  char err[512], *reply;
  int rc = as_nobody(65534, err, sizeof(err), &reply);
  cr_assert_eq(rc, CONTROL_E_IO, "rc %d: %s", rc, err);
  cr_assert(strstr(err, "permission denied (run this as the agent's user or root)"), "%s",
            err);
  free(reply);
  cr_assert_eq(ctl.stats.accepted, 0); /* the kernel refused it */
}

Test(control, group_mode_admits_the_group) {
  if (geteuid() != 0) cr_skip_test("needs root to act as another user");
  control_options_t o = options();
  o.mode = 0660;
  serve(&o);
  allow_traverse();
  char err[512], *reply;
  /* uid nobody, gid the agent's: admitted by the group bits. */
  int rc = as_nobody(getegid(), err, sizeof(err), &reply);
  cr_assert_eq(rc, 0, "rc %d: %s", rc, err);
  cr_assert_str_eq(reply, "role: leader\npaused: no");
  free(reply);
  cr_assert_eq(last_req.uid, 65534);
  /* Another gid: the file mode refuses it. */
  rc = as_nobody(65534, err, sizeof(err), &reply);
  cr_assert_eq(rc, CONTROL_E_IO, "rc %d: %s", rc, err);
  free(reply);
}
