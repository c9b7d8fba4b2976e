/*
 * The control server against clients that send what a protocol does not
 * expect: several lines in one write, half a line then a hang-up (one
 * side or both), NULs, binary, a line far over the limit. Each gets
 * exactly one reply (or none, when it has gone), the handler runs only for
 * a whole valid request, and the server answers the next client as usual.
 * The server runs on a loop in the test process; the clients are raw
 * non-blocking sockets driven between loop turns. Every wait has a
 * deadline.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "testutil.h"

static uv_loop_t loop;
static control_t ctl;
static int closed, handled;
static enum control_command last_command;
static char dir[64], path[128];

static int handler(control_t *c, const control_request_t *req, char **reply,
                   void *data) {
  (void)c;
  (void)data;
  handled++;
  last_command = req->command;
  *reply = strdup(control_command_name(req->command));
  return 0;
}

static void on_closed(control_t *c) {
  (void)c;
  closed++;
}

static bool pump_until(bool (*cond)(void *), void *arg, double seconds) {
  return test_loop_until_cond(&loop, cond, arg, seconds);
}

static bool no_clients(void *arg) {
  (void)arg;
  return ctl.nclients == 0;
}

static bool is_closed(void *arg) {
  (void)arg;
  return closed > 0;
}

static void start(void) {
  signal(SIGPIPE, SIG_IGN);
  strcpy(dir, "/tmp/skq-ctlin-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/s.sock", dir);
  uv_loop_init(&loop);
  closed = handled = 0;
  control_options_t o;
  control_options_default(&o);
  o.path = path;
  o.idle_timeout = 2;
  o.handler = handler;
  char err[256];
  cr_assert_eq(control_init(&loop, &ctl, &o, err, sizeof(err)), 0, "%s", err);
}

static void stop(void) {
  control_close(&ctl, on_closed);
  cr_assert(pump_until(is_closed, NULL, 5), "close callback never ran");
  cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
  rmdir(dir);
}

TestSuite(control_input, .init = start, .fini = stop);

/* ---- a raw client -------------------------------------------------- */

typedef struct raw {
  int fd;
  char buf[65536];
  size_t len;
  bool eof;
} raw_t;

static void raw_open(raw_t *r) {
  memset(r, 0, sizeof(*r));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, path);
  r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  cr_assert(r->fd >= 0);
  cr_assert_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s",
               strerror(errno));
}

/* Sends what the socket takes, turning the loop while it is full; stops
 * early once the server has stopped reading and closed. */
static void raw_send(raw_t *r, const void *data, size_t n) {
  const char *p = data;
  double end = test_now() + 5;
  while (n > 0 && test_now() < end) {
    ssize_t k = send(r->fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
    } else if (k < 0 && errno == EAGAIN) {
      uv_run(&loop, UV_RUN_NOWAIT);
    } else {
      return;
    }
  }
}

static bool raw_drain(void *arg) {
  raw_t *r = arg;
  while (!r->eof && r->len + 1 < sizeof(r->buf)) {
    ssize_t k = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len - 1, MSG_DONTWAIT);
    if (k > 0) r->len += (size_t)k;
    else if (k < 0 && errno == EAGAIN) break;
    else r->eof = true;
  }
  r->buf[r->len] = '\0';
  return r->eof;
}

static void raw_reply(raw_t *r) {
  cr_assert(pump_until(raw_drain, r, 5), "no end of reply (got \"%s\")", r->buf);
  close(r->fd);
}

static void exchange(const void *data, size_t n, const char *want) {
  raw_t r;
  raw_open(&r);
  raw_send(&r, data, n);
  raw_reply(&r);
  cr_assert_str_eq(r.buf, want);
}

#define VALID "valid commands: status [--json], metrics, history [--json], pause, " \
              "resume, step-down"

/* ---- tests --------------------------------------------------------- */

Test(control_input, several_lines_in_one_write_answer_only_the_first) {
  const char lines[] = "status\npause\nresume\nstep-down\n";
  exchange(lines, sizeof(lines) - 1, "status\n");
  cr_assert_eq(handled, 1);
  cr_assert_eq(last_command, CONTROL_STATUS);
  /* And a hundred of them. */
  char many[800] = "";
  for (int i = 0; i < 100; i++) strcat(many, "pause\n");
  exchange(many, strlen(many), "pause\n");
  cr_assert_eq(handled, 2);
}

Test(control_input, half_a_line_then_end_of_sending) {
  /* The request is what came before the end, as if it had its LF. */
  raw_t r;
  raw_open(&r);
  raw_send(&r, "status", 6);
  shutdown(r.fd, SHUT_WR);
  raw_reply(&r);
  cr_assert_str_eq(r.buf, "status\n");

  raw_open(&r);
  raw_send(&r, "sta", 3);
  shutdown(r.fd, SHUT_WR);
  raw_reply(&r);
  cr_assert_str_eq(r.buf, "error: unknown command \"sta\"; " VALID "\n");
  cr_assert_eq(handled, 1);
  cr_assert_eq(ctl.stats.bad, 1);
}

Test(control_input, half_a_line_then_gone) {
  /* Both sides closed: nothing to answer, nothing kept. */
  raw_t r;
  raw_open(&r);
  raw_send(&r, "sta", 3);
  close(r.fd);
  raw_open(&r);
  raw_send(&r, "metr", 4);
  close(r.fd);
  raw_open(&r); /* says nothing at all */
  close(r.fd);
  uv_run(&loop, UV_RUN_NOWAIT);
  cr_assert(pump_until(no_clients, NULL, 5), "%zu clients left", ctl.nclients);
  cr_assert_eq(handled, 0);
  cr_assert_eq(ctl.open, 1, "the listener alone");
  exchange("status\n", 7, "status\n");
}

Test(control_input, nul_bytes_and_binary) {
  exchange("\0\n", 2,
           "error: request has a control character (0x00) at byte 0; send one line "
           "of text, e.g. \"status\"\n");
  exchange("status\0\n", 8,
           "error: request has a control character (0x00) at byte 6; send one line "
           "of text, e.g. \"status\"\n");
  const char bin[] = "\x80\x81\xfe\xff\n";
  exchange(bin, sizeof(bin) - 1, "error: unknown command \"????\"; " VALID "\n");
  cr_assert_eq(handled, 0);
  cr_assert_eq(ctl.stats.bad, 3);
}

Test(control_input, a_line_far_over_the_limit) {
  /* 60 kB without a LF: refused once the line buffer is full, whatever
   * follows; the reply says what to send instead. */
  size_t n = 60000;
  char *junk = malloc(n);
  for (size_t i = 0; i < n; i++) junk[i] = (char)('a' + i % 26);
  exchange(junk, n,
           "error: request line longer than 4096 bytes; send one command, e.g. "
           "\"status\"\n");
  free(junk);
  cr_assert_eq(handled, 0);
  cr_assert(pump_until(no_clients, NULL, 5));
  exchange("status\n", 7, "status\n");
}
