/*
 * control_client: owns the blocking side of the control socket, the one
 * the CLI process uses (never on a loop): connect to the agent's socket,
 * send one request line, read the reply until the agent closes, all
 * within one deadline, and turn every failure into a line saying why.
 */
#include "control.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control_internal.h"

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for events on fd until deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, double deadline) {
  for (;;) {
    double left = deadline - mono_now();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    /* Capped per call: a huge timeout must not overflow an int. */
    int ms = left > 60 ? 60000 : (int)(left * 1000.0) + 1;
    int n = poll(&p, 1, ms);
    if (n > 0) return 1;
    if (n < 0 && errno != EINTR) return -1;
  }
}

#define REQ_FAIL(code, ...)                                                    \
  do {                                                                         \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                     \
    rc = (code);                                                               \
    goto out;                                                                  \
  } while (0)

#define NOAGENT_HINT "(is `scalekiq run` running on this dyno?)"

int control_request(const char *path, const char *line, double timeout,
                    char **reply, char *err, size_t errlen) {
  int rc = 0, fd = -1;
  char *buf = NULL;
  char *req = NULL;
  if (reply) *reply = NULL;
  if (err && errlen) err[0] = '\0';
  struct sockaddr_un sa;
  if (reply == NULL || line == NULL || !(timeout > 0))
    REQ_FAIL(CONTROL_E_INVALID, "control_request: bad arguments");
  if (path == NULL || path[0] == '\0') path = CONTROL_DEFAULT_PATH;
  if (control_unix_addr(&sa, path) != 0)
    REQ_FAIL(CONTROL_E_INVALID, "control socket path %s is too long", path);
  size_t llen = strlen(line);
  if (llen > 0 && line[llen - 1] == '\n') llen--;
  if (memchr(line, '\n', llen) || llen > CONTROL_LINE_MAX)
    REQ_FAIL(CONTROL_E_INVALID, "a control request is one line of at most %d bytes",
             CONTROL_LINE_MAX);
  req = malloc(llen + 1);
  if (req == NULL) REQ_FAIL(CONTROL_E_NOMEM, "out of memory");
  memcpy(req, line, llen);
  req[llen] = '\n';
  double deadline = mono_now() + timeout;

  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) REQ_FAIL(CONTROL_E_IO, "cannot create a socket: %s", strerror(errno));
  for (;;) {
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) break;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      /* The agent's backlog is full: a burst of clients; retry briefly. */
      if (mono_now() >= deadline)
        REQ_FAIL(CONTROL_E_TIMEOUT,
                 "the scalekiq agent on %s accepted no connection within %g s",
                 path, timeout);
      poll(NULL, 0, 10);
      continue;
    }
    if (e == EINPROGRESS) {
      int w = wait_fd(fd, POLLOUT, deadline);
      socklen_t sl = sizeof(e);
      if (w == 0)
        REQ_FAIL(CONTROL_E_TIMEOUT, "connecting to %s timed out after %g s", path,
                 timeout);
      if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0) e = errno;
      if (e == 0) break;
    }
    if (e == ENOENT)
      REQ_FAIL(CONTROL_E_NOAGENT,
               "no scalekiq agent answers on %s: no such socket " NOAGENT_HINT, path);
    if (e == ECONNREFUSED || e == ENOTSOCK)
      REQ_FAIL(CONTROL_E_NOAGENT, "no scalekiq agent answers on %s: %s " NOAGENT_HINT,
               path, e == ECONNREFUSED ? "connection refused" : "not a socket");
    if (e == EACCES || e == EPERM)
      REQ_FAIL(CONTROL_E_IO,
               "cannot connect to the scalekiq agent on %s: permission denied "
               "(run this as the agent's user or root)",
               path);
    REQ_FAIL(CONTROL_E_IO, "cannot connect to %s: %s", path, strerror(e));
  }

  /* MSG_NOSIGNAL: an agent closing early must not kill the CLI. */
  size_t sent = 0;
  while (sent < llen + 1) {
    ssize_t n = send(fd, req + sent, llen + 1 - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w == 0)
        REQ_FAIL(CONTROL_E_TIMEOUT, "the scalekiq agent on %s took no request within %g s",
                 path, timeout);
      if (w < 0) REQ_FAIL(CONTROL_E_IO, "poll: %s", strerror(errno));
      continue;
    }
    /* EPIPE/ECONNRESET: the agent has already closed, perhaps after
     * saying why (too many connections): read what it said. */
    break;
  }

  size_t len = 0, cap = 4096;
  buf = malloc(cap);
  if (buf == NULL) REQ_FAIL(CONTROL_E_NOMEM, "out of memory");
  for (;;) {
    if (len + 1 >= cap) {
      if (cap >= CONTROL_REPLY_MAX)
        REQ_FAIL(CONTROL_E_IO, "the reply from %s is larger than %u bytes", path,
                 CONTROL_REPLY_MAX);
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) REQ_FAIL(CONTROL_E_NOMEM, "out of memory");
      buf = nb;
      cap *= 2;
    }
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n > 0) {
      len += (size_t)n;
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int w = wait_fd(fd, POLLIN, deadline);
      if (w == 0)
        REQ_FAIL(CONTROL_E_TIMEOUT, "no reply from the scalekiq agent on %s within %g s",
                 path, timeout);
      if (w < 0) REQ_FAIL(CONTROL_E_IO, "poll: %s", strerror(errno));
      continue;
    }
    /* The agent closed with bytes of ours unread (we sent more than it
     * takes): its reply came first and is complete. */
    if (errno == ECONNRESET && len > 0) break;
    REQ_FAIL(CONTROL_E_IO, "reading from %s: %s", path, strerror(errno));
  }
  buf[len] = '\0';
  if (len == 0)
    REQ_FAIL(CONTROL_E_IO, "the scalekiq agent on %s closed the connection without a reply",
             path);
  if (buf[len - 1] != '\n')
    REQ_FAIL(CONTROL_E_IO, "the reply from %s was cut short", path);
  buf[--len] = '\0';
  if (strncmp(buf, "error: ", 7) == 0) {
    char *nl = strchr(buf, '\n');
    if (nl) *nl = '\0';
    REQ_FAIL(CONTROL_E_AGENT, "%s", buf + 7);
  }
  *reply = buf;
  buf = NULL;

out:
  if (fd >= 0) close(fd);
  free(buf);
  free(req);
  return rc;
}
