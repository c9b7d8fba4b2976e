/*
 * control: owns the control socket file (creating it with its mode,
 * replacing a dead agent's, refusing to take a live one's, unlinking it on
 * close), the listener and every client connection on it. The request
 * line protocol is control_proto.c's; the blocking client the CLI uses is
 * control_client.c's.
 *
 * It owns no agent state: a parsed request goes to the owner's handler,
 * whose text goes back to the client. Every client is a heap object with
 * two handles (its pipe and one timer) and is freed when both have
 * closed; the timer is the client's only deadline at any moment (request
 * line, deferred answer, then reply write), which is what bounds what a
 * silent, slow or non-reading client can hold.
 */
#define _GNU_SOURCE /* struct ucred for SO_PEERCRED */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control_internal.h"

#define LISTEN_BACKLOG 128
#define ERR_MAX 512 /* longest error line we send */

enum client_state {
  CL_READING, /* waiting for the request line */
  CL_WAITING, /* the handler has it (deferred answers wait here) */
  CL_WRITING, /* the reply is being written */
  CL_CLOSING,
};

struct control_client {
  control_t *c;
  control_client_t *prev, *next;
  uv_pipe_t pipe;
  uv_timer_t timer;
  uv_write_t write_req;
  enum client_state state;
  int handles; /* pipe and timer, not yet closed */
  uint64_t id;
  uid_t uid;
  pid_t pid;
  char *out; /* the reply being written */
  size_t out_len;
  char lf; /* the framing "\n", written from here */
  size_t len, cap;
  char buf[]; /* cap = max_line + 1: the line and its LF */
};

/* A connection over max_clients: accepted only to be told and closed. */
typedef struct reject {
  control_t *c;
  uv_pipe_t pipe;
} reject_t;

static void on_connection(uv_stream_t *server, int status);
static void client_close(control_client_t *cl);
static void reply_error(control_client_t *cl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static uint64_t to_ms(double s) {
  double ms = s * 1000.0 + 0.5;
  return ms < 1 ? 1 : (uint64_t)ms;
}

/* ---- clients ------------------------------------------------------- */

static void finish_close(control_t *c) {
  if (!c->closing || c->open > 0) return;
  control_close_cb cb = c->close_cb;
  c->close_cb = NULL;
  if (cb) cb(c);
}

static void client_handle_closed(uv_handle_t *h) {
  control_client_t *cl = h->data;
  if (--cl->handles > 0) return;
  control_t *c = cl->c;
  free(cl->out);
  free(cl);
  c->nclients--;
  c->open--;
  /* A connection left waiting for memory (see on_connection) is taken
   * now that some was given back; libuv resumes the listener on accept. */
  if (c->accept_pending && !c->closing && c->listener) {
    c->accept_pending = 0;
    on_connection((uv_stream_t *)c->listener, 0);
  }
  finish_close(c);
}

static void client_close(control_client_t *cl) {
  if (cl->state == CL_CLOSING) return;
  cl->state = CL_CLOSING;
  control_t *c = cl->c;
  /* Off the list at once so control_respond() cannot find it. */
  if (cl->prev) cl->prev->next = cl->next;
  else c->clients = cl->next;
  if (cl->next) cl->next->prev = cl->prev;
  cl->prev = cl->next = NULL;
  uv_close((uv_handle_t *)&cl->timer, client_handle_closed);
  /* Cancels a pending write: its callback runs (UV_ECANCELED) before the
   * close callbacks, and finds the client already closing. */
  uv_close((uv_handle_t *)&cl->pipe, client_handle_closed);
}

static void on_written(uv_write_t *req, int status) {
  control_client_t *cl = req->data;
  if (status == 0) cl->c->stats.answered++;
  /* Closing is enough to end the exchange: on a Unix socket the reply is
   * already in the peer's receive queue, and it reads EOF after it. */
  client_close(cl);
}

static void on_timer(uv_timer_t *t);

/* Sends out[0..len) and "\n", taking ownership of out; the client then has
 * idle_timeout to take it. */
static void start_write(control_client_t *cl, char *out, size_t len) {
  control_t *c = cl->c;
  cl->out = out;
  cl->out_len = len;
  cl->lf = '\n';
  cl->state = CL_WRITING;
  uv_timer_start(&cl->timer, on_timer, to_ms(c->opts.idle_timeout), 0);
  uv_buf_t bufs[2] = {uv_buf_init(out, (unsigned)len), uv_buf_init(&cl->lf, 1)};
  cl->write_req.data = cl;
  if (uv_write(&cl->write_req, (uv_stream_t *)&cl->pipe, bufs, 2, on_written) != 0)
    client_close(cl);
}

/* One "error: ..." line, whatever the message holds. */
static char *error_line(const char *msg, size_t *len) {
  char *out = malloc(ERR_MAX);
  if (out == NULL) return NULL;
  int n = snprintf(out, ERR_MAX, "error: %s", msg);
  size_t l = n < 0 ? 0 : ((size_t)n >= ERR_MAX ? ERR_MAX - 1 : (size_t)n);
  for (size_t i = 0; i < l; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) out[i] = ' ';
  *len = l;
  return out;
}

static void reply_error(control_client_t *cl, const char *fmt, ...) {
  char msg[ERR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  size_t len;
  char *out = error_line(msg, &len);
  if (out == NULL) {
    client_close(cl);
    return;
  }
  start_write(cl, out, len);
}

/* The handler's (or control_respond()'s) answer: text is owned. */
static void answer(control_client_t *cl, int status, char *text) {
  if (status == 0) {
    if (text == NULL) text = strdup("ok");
    if (text == NULL) {
      client_close(cl);
      return;
    }
    start_write(cl, text, strlen(text));
    return;
  }
  reply_error(cl, "%s", text ? text : control_strerror(status));
  free(text);
}

static void got_line(control_client_t *cl, size_t len) {
  control_t *c = cl->c;
  uv_read_stop((uv_stream_t *)&cl->pipe);
  control_request_t req;
  char err[ERR_MAX];
  if (control_parse_request(cl->buf, len, &req, err, sizeof(err)) != 0) {
    c->stats.bad++;
    char q[128];
    log_event(c->opts.log, LOG_DEBUG, "control_bad_request", "pid=%ld error=%s",
              (long)cl->pid, log_quote(q, sizeof(q), err));
    reply_error(cl, "%s", err);
    return;
  }
  req.id = cl->id = ++c->next_id;
  req.uid = cl->uid;
  req.pid = cl->pid;
  log_event(c->opts.log, LOG_DEBUG, "control_request", "command=%s json=%d pid=%ld",
            control_command_name(req.command), req.json, (long)cl->pid);
  cl->state = CL_WAITING;
  char *reply = NULL;
  int rc = c->opts.handler(c, &req, &reply, c->opts.data);
  if (rc == CONTROL_DEFER) {
    free(reply);
    /* Unless the handler already answered through control_respond(). */
    if (cl->state == CL_WAITING)
      uv_timer_start(&cl->timer, on_timer, to_ms(c->opts.handler_timeout), 0);
    return;
  }
  if (cl->state != CL_WAITING) {
    /* control_close() from inside the handler, or an answer given both
     * ways: the client is already closing or answered. */
    free(reply);
    return;
  }
  answer(cl, rc, reply);
}

static void on_timer(uv_timer_t *t) {
  control_client_t *cl = t->data;
  control_t *c = cl->c;
  switch (cl->state) {
  case CL_READING: {
    c->stats.timeouts++;
    log_event(c->opts.log, LOG_DEBUG, "control_timeout", "phase=request pid=%ld",
              (long)cl->pid);
    /* Best effort and never waiting: nothing is queued yet, so a
     * try-write either lands in the socket buffer or is dropped. */
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "error: no request line within %g s\n",
                     c->opts.idle_timeout);
    uv_buf_t b = uv_buf_init(msg, (unsigned)n);
    uv_try_write((uv_stream_t *)&cl->pipe, &b, 1);
    client_close(cl);
    break;
  }
  case CL_WAITING:
    log_event(c->opts.log, LOG_WARN, "control_timeout", "phase=handler id=%llu",
              (unsigned long long)cl->id);
    reply_error(cl, "the agent did not answer within %g s", c->opts.handler_timeout);
    break;
  case CL_WRITING:
    c->stats.timeouts++;
    log_event(c->opts.log, LOG_DEBUG, "control_timeout", "phase=reply pid=%ld bytes=%zu",
              (long)cl->pid, cl->out_len);
    client_close(cl);
    break;
  case CL_CLOSING: break;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  control_client_t *cl = h->data;
  /* Reads land straight in the line buffer and never beyond it: a client
   * cannot make us hold more than max_line + 1 bytes. */
  *buf = uv_buf_init(cl->buf + cl->len, (unsigned)(cl->cap - cl->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  control_client_t *cl = s->data;
  control_t *c = cl->c;
  if (cl->state != CL_READING) return;
  if (nread > 0) {
    size_t start = cl->len;
    cl->len += (size_t)nread;
    char *nl = memchr(cl->buf + start, '\n', (size_t)nread);
    if (nl) {
      got_line(cl, (size_t)(nl - cl->buf) + 1);
    } else if (cl->len >= cl->cap) {
      uv_read_stop(s);
      c->stats.bad++;
      reply_error(cl, "request line longer than %zu bytes; send one command, e.g. "
                  "\"status\"", c->opts.max_line);
    }
    return;
  }
  if (nread == 0) return;
  /* A client that sends a line without LF and shuts down its side (as
   * printf status | nc -U does) still gets its answer. */
  if (nread == UV_EOF && cl->len > 0) {
    got_line(cl, cl->len);
    return;
  }
  client_close(cl); /* gone before saying anything, or a read error */
}

static int peer_allowed(const control_t *c, const struct ucred *cr) {
  if (cr->uid == 0 || cr->uid == geteuid()) return 1;
  /* A group-accessible socket (mode 0660) is meant for the group. Only
   * the peer's effective gid is known here, not its supplementary ones. */
  return (c->opts.mode & 0060) && cr->gid == getegid();
}

static void reject_closed(uv_handle_t *h) {
  reject_t *r = h->data;
  control_t *c = r->c;
  free(r);
  c->open--;
  finish_close(c);
}

/* Over max_clients (or out of memory): the connection must still be
 * accepted, since libuv pauses the listener while one waits; it is told
 * why when its buffer has room and closed at once. */
static void reject(control_t *c, uv_stream_t *server) {
  reject_t *r = malloc(sizeof(*r));
  if (r == NULL) {
    c->accept_pending = 1;
    log_event(c->opts.log, LOG_ERROR, "control_accept_failed", "error=nomem");
    return;
  }
  r->c = c;
  uv_pipe_init(c->loop, &r->pipe, 0);
  r->pipe.data = r;
  c->open++;
  if (uv_accept(server, (uv_stream_t *)&r->pipe) == 0) {
    char msg[] = "error: too many connections to the agent; try again\n";
    uv_buf_t b = uv_buf_init(msg, sizeof(msg) - 1);
    uv_try_write((uv_stream_t *)&r->pipe, &b, 1);
    c->stats.rejected++;
    log_event(c->opts.log, LOG_DEBUG, "control_rejected", "clients=%zu",
              c->nclients);
  }
  uv_close((uv_handle_t *)&r->pipe, reject_closed);
}

static void on_connection(uv_stream_t *server, int status) {
  control_t *c = server->data;
  if (status < 0) {
    log_event(c->opts.log, LOG_WARN, "control_accept_failed", "error=%s",
              uv_strerror(status));
    return;
  }
  if (c->closing) return;
  if (c->nclients >= c->opts.max_clients) {
    reject(c, server);
    return;
  }
  size_t cap = c->opts.max_line + 1;
  control_client_t *cl = calloc(1, sizeof(*cl) + cap);
  if (cl == NULL) {
    reject(c, server);
    return;
  }
  cl->c = c;
  cl->cap = cap;
  cl->state = CL_READING;
  uv_pipe_init(c->loop, &cl->pipe, 0);
  uv_timer_init(c->loop, &cl->timer);
  cl->pipe.data = cl;
  cl->timer.data = cl;
  cl->handles = 2;
  c->open++;
  c->nclients++;
  cl->next = c->clients;
  if (c->clients) c->clients->prev = cl;
  c->clients = cl;

  if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0) {
    client_close(cl);
    return;
  }
  c->stats.accepted++;

  uv_os_fd_t fd;
  struct ucred cr;
  socklen_t crlen = sizeof(cr);
  memset(&cr, 0, sizeof(cr));
  int have_cred = uv_fileno((uv_handle_t *)&cl->pipe, &fd) == 0 &&
                  getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0;
  cl->uid = cr.uid;
  cl->pid = cr.pid;
  /* Fails closed: a peer we cannot identify is not let in. */
  if (!have_cred || !peer_allowed(c, &cr)) {
    c->stats.denied++;
    log_event(c->opts.log, LOG_WARN, "control_denied", "uid=%ld gid=%ld pid=%ld",
              have_cred ? (long)cr.uid : -1L, have_cred ? (long)cr.gid : -1L,
              have_cred ? (long)cr.pid : -1L);
    reply_error(cl, "permission denied");
    return;
  }

  uv_timer_start(&cl->timer, on_timer, to_ms(c->opts.idle_timeout), 0);
  if (uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) != 0)
    client_close(cl);
}

int control_respond(control_t *c, uint64_t id, int status, char *text) {
  if (c->closing) {
    free(text);
    return CONTROL_E_CLOSED;
  }
  if (status == CONTROL_DEFER) status = CONTROL_E_INVALID;
  for (control_client_t *cl = c->clients; cl; cl = cl->next) {
    if (cl->id != id || cl->state != CL_WAITING) continue;
    answer(cl, status, text);
    return 0;
  }
  free(text);
  return CONTROL_E_GONE;
}

/* ---- the socket file and the listener ------------------------------ */

#define INIT_FAIL(code, ...)                                                   \
  do {                                                                         \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                     \
    return (code);                                                             \
  } while (0)

void control_options_default(control_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->path = CONTROL_DEFAULT_PATH;
  o->mode = 0600;
  o->idle_timeout = 2;
  o->handler_timeout = 5;
  o->max_line = CONTROL_LINE_MAX;
  o->max_clients = 64;
}

int control_unix_addr(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(sa->sun_path)) return -1;
  memcpy(sa->sun_path, path, strlen(path) + 1);
  return 0;
}

/* Whether path may be (re)placed by our socket. A socket file that refuses
 * connections belongs to a dead process; one that accepts is live and is
 * never taken over, nor is anything that is not a socket. */
static int check_path(control_t *c, char *err, size_t errlen) {
  struct stat st;
  if (lstat(c->path, &st) != 0) {
    if (errno == ENOENT) return 0;
    INIT_FAIL(CONTROL_E_IO, "cannot inspect control socket path %s: %s", c->path,
              strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    INIT_FAIL(CONTROL_E_INUSE,
              "%s exists and is not a socket; not replacing it (set "
              "SCALEKIQ_SOCKET to another path)",
              c->path);

  struct sockaddr_un sa;
  control_unix_addr(&sa, c->path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    INIT_FAIL(CONTROL_E_IO, "cannot create a socket: %s", strerror(errno));
  /* Non-blocking: a live agent with a full backlog answers EAGAIN instead
   * of stalling us. */
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  int e = errno;
  if (rc == 0) {
    struct ucred cr;
    socklen_t len = sizeof(cr);
    /* On a connected Unix socket this is the listener's pid. */
    long pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 ? cr.pid : 0;
    close(fd);
    if (pid > 0)
      INIT_FAIL(CONTROL_E_INUSE,
                "another scalekiq agent is listening on %s (pid %ld)", c->path, pid);
    INIT_FAIL(CONTROL_E_INUSE, "another scalekiq agent is listening on %s",
              c->path);
  }
  close(fd);
  switch (e) {
  case ECONNREFUSED:
    log_event(c->opts.log, LOG_INFO, "control_stale_socket", "path=%s action=replace",
              c->path);
    return 0;
  case ENOENT: return 0; /* gone meanwhile */
  case EAGAIN:
    INIT_FAIL(CONTROL_E_INUSE,
              "another scalekiq agent is listening on %s (its backlog is full)",
              c->path);
  case EACCES:
  case EPERM:
    INIT_FAIL(CONTROL_E_INUSE,
              "%s is a socket this user may not connect to (owner uid %ld); not "
              "replacing it",
              c->path, (long)st.st_uid);
  default:
    INIT_FAIL(CONTROL_E_IO, "cannot probe %s: %s", c->path, strerror(e));
  }
}

/* Binds under a temporary name, sets the mode, listens, then renames the
 * socket onto the path: the path never points at a socket with the
 * umask's mode, and a stale file is replaced in one step. */
static int make_socket(control_t *c, int *fdp, char *err, size_t errlen) {
  char tmp[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int n = snprintf(tmp, sizeof(tmp), "%s.%ld", c->path, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof(tmp))
    INIT_FAIL(CONTROL_E_INVALID, "control socket path %s is too long", c->path);
  struct sockaddr_un sa;
  control_unix_addr(&sa, tmp);
  /* A leftover of an earlier process with our pid. */
  unlink(tmp);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    INIT_FAIL(CONTROL_E_IO, "cannot create a socket: %s", strerror(errno));
  const char *what;
  struct stat st;
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    what = "bind";
    goto fail_nounlink;
  }
  if (chmod(tmp, (mode_t)c->opts.mode) != 0) {
    what = "chmod";
    goto fail;
  }
  if (listen(fd, LISTEN_BACKLOG) != 0) {
    what = "listen on";
    goto fail;
  }
  if (stat(tmp, &st) != 0) {
    what = "stat";
    goto fail;
  }
  if (rename(tmp, c->path) != 0) {
    what = "rename into place";
    goto fail;
  }
  c->dev = st.st_dev;
  c->ino = st.st_ino;
  *fdp = fd;
  return 0;

fail: {
  int e = errno;
  unlink(tmp);
  errno = e;
}
fail_nounlink: {
  int e = errno;
  close(fd);
  INIT_FAIL(CONTROL_E_IO, "cannot %s control socket %s (as %s): %s", what, c->path,
            tmp, strerror(e));
}
}

static void unlink_if_ours(control_t *c) {
  struct stat st;
  /* Another agent may have taken the path since (after someone removed
   * our file): only the file we made is ours to remove. */
  if (lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c->dev &&
      st.st_ino == c->ino)
    unlink(c->path);
}

static void listener_closed(uv_handle_t *h) {
  control_t *c = h->data;
  free(h);
  if (c == NULL) return; /* control_init() failed after creating it */
  c->listener = NULL;
  c->open--;
  finish_close(c);
}

int control_init(uv_loop_t *loop, control_t *c, const control_options_t *opts,
                 char *err, size_t errlen) {
  memset(c, 0, sizeof(*c));
  if (loop == NULL || opts == NULL || opts->handler == NULL)
    INIT_FAIL(CONTROL_E_INVALID, "control socket needs a loop and a handler");
  c->loop = loop;
  c->opts = *opts;
  control_options_t *o = &c->opts;
  if (o->path == NULL || o->path[0] == '\0') o->path = CONTROL_DEFAULT_PATH;
  if (strlen(o->path) >= sizeof(c->path))
    INIT_FAIL(CONTROL_E_INVALID,
              "control socket path is longer than %zu bytes (SCALEKIQ_SOCKET)",
              sizeof(c->path) - 1);
  memcpy(c->path, o->path, strlen(o->path) + 1);
  o->path = c->path;
  if (o->mode == 0) o->mode = 0600;
  if ((o->mode & ~0777) || (o->mode & 0600) != 0600 || (o->mode & 0007))
    INIT_FAIL(CONTROL_E_INVALID,
              "control socket mode %04o: the owner needs rw and others no "
              "access (0600, or 0660 for the group)",
              (unsigned)o->mode);
  if (o->idle_timeout == 0) o->idle_timeout = 2;
  if (o->handler_timeout == 0) o->handler_timeout = 5;
  if (!(o->idle_timeout > 0 && o->idle_timeout <= 3600) ||
      !(o->handler_timeout > 0 && o->handler_timeout <= 3600))
    INIT_FAIL(CONTROL_E_INVALID,
              "control socket timeouts must be positive and at most an hour");
  if (o->max_line == 0) o->max_line = CONTROL_LINE_MAX;
  if (o->max_line > CONTROL_LINE_MAX)
    INIT_FAIL(CONTROL_E_INVALID, "control max_line is at most %d",
              CONTROL_LINE_MAX);
  if (o->max_clients == 0) o->max_clients = 64;

  int rc = check_path(c, err, errlen);
  if (rc != 0) return rc;
  int fd;
  rc = make_socket(c, &fd, err, errlen);
  if (rc != 0) return rc;

  /* Heap, so that a failure below can close it and return at once: the
   * caller's c may be gone before the close callback runs. */
  uv_pipe_t *l = malloc(sizeof(*l));
  if (l == NULL) {
    close(fd);
    unlink_if_ours(c);
    INIT_FAIL(CONTROL_E_NOMEM, "out of memory");
  }
  uv_pipe_init(loop, l, 0);
  l->data = NULL;
  int uerr = uv_pipe_open(l, fd);
  if (uerr != 0) close(fd);
  if (uerr == 0) uerr = uv_listen((uv_stream_t *)l, LISTEN_BACKLOG, on_connection);
  if (uerr != 0) {
    uv_close((uv_handle_t *)l, listener_closed);
    unlink_if_ours(c);
    INIT_FAIL(CONTROL_E_IO, "cannot listen on %s: %s", c->path, uv_strerror(uerr));
  }
  l->data = c;
  c->listener = l;
  c->open = 1;
  log_event(o->log, LOG_INFO, "control_listening", "path=%s mode=%04o", c->path,
            (unsigned)o->mode);

  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    log_event(o->log, LOG_WARN, "control_sigpipe_not_ignored",
              "detail=\"a client hanging up before its reply would kill the "
              "process\"");
  return 0;
}

void control_close(control_t *c, control_close_cb cb) {
  if (c->closing) return;
  c->closing = 1;
  c->close_cb = cb;
  unlink_if_ours(c);
  if (c->listener) uv_close((uv_handle_t *)c->listener, listener_closed);
  while (c->clients) client_close(c->clients);
  finish_close(c);
}
