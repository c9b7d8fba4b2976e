/*
 * supervise: owns the child process of `scalekiq run -- CMD` and the
 * passing on of signals to it.
 *
 * Heroku sends SIGTERM to every process of the dyno at once, so the child
 * usually gets each signal twice (once from the platform, once from us);
 * Sidekiq treats a repeated TERM, TSTP or TTIN like a single one. Passing
 * them on still matters for `kill <agent pid>` and for platforms that
 * signal only the main process.
 */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static const int forwarded[SUPERVISE_NSIGNALS] = {
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN};

static void on_signal(uv_signal_t *h, int signum) {
  supervise_t *s = h->data;
  if (!s->running) return;
  log_event(s->log, LOG_INFO, "signal_forwarded", "signal=%s pid=%d",
            strsignal(signum), s->proc.pid);
  /* ESRCH: it has just exited and its exit callback is on its way. */
  uv_process_kill(&s->proc, signum);
}

static void on_child_exit(uv_process_t *p, int64_t exit_status, int term_signal) {
  supervise_t *s = p->data;
  s->running = 0;
  s->exit_status = exit_status;
  s->term_signal = term_signal;
  if (term_signal)
    log_event(s->log, LOG_INFO, "child_exited", "pid=%d signal=%s exit=%d", p->pid,
              strsignal(term_signal), supervise_exit_code(s));
  else
    log_event(s->log, LOG_INFO, "child_exited", "pid=%d exit=%d", p->pid,
              supervise_exit_code(s));
  if (s->on_exit) s->on_exit(s);
}

int supervise_start(uv_loop_t *loop, supervise_t *s, char *const *argv, log_t *log,
                    supervise_exit_cb on_exit, void *data, char *err, size_t errlen) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->log = log;
  s->on_exit = on_exit;
  s->data = data;
  if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0') {
    snprintf(err, errlen, "no command given after '--'");
    return UV_EINVAL;
  }

  uv_stdio_container_t stdio[3];
  for (int fd = 0; fd < 3; fd++) {
    stdio[fd].flags = UV_INHERIT_FD;
    stdio[fd].data.fd = fd;
  }
  uv_process_options_t opts = {
      .exit_cb = on_child_exit,
      .file = argv[0],
      .args = (char **)argv,
      .env = NULL, /* ours, as it is */
      .stdio_count = 3,
      .stdio = stdio,
  };
  s->proc.data = s;
  int rc = uv_spawn(loop, &s->proc, &opts);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start '%s': %s", argv[0], uv_strerror(rc));
    /* libuv wants even a failed process handle closed; nothing waits on it */
    uv_close((uv_handle_t *)&s->proc, NULL);
    return rc;
  }
  s->running = 1;
  s->handles_open = 1;
  for (int i = 0; i < SUPERVISE_NSIGNALS; i++) {
    uv_signal_init(loop, &s->signals[i]);
    s->signals[i].data = s;
    uv_signal_start(&s->signals[i], on_signal, forwarded[i]);
    s->handles_open++;
  }
  log_event(log, LOG_INFO, "child_started", "pid=%d command=%s", s->proc.pid, argv[0]);
  return 0;
}

int supervise_exit_code(const supervise_t *s) {
  if (s->term_signal) return 128 + s->term_signal;
  return (int)(s->exit_status & 0xff);
}

int supervise_spawn_failure_code(int uv_error) {
  return uv_error == UV_ENOENT ? 127 : 126;
}

static void on_closed(uv_handle_t *h) {
  supervise_t *s = h->data;
  if (--s->handles_open == 0 && s->close_cb) s->close_cb(s);
}

void supervise_close(supervise_t *s, supervise_close_cb cb) {
  s->close_cb = cb;
  if (s->handles_open == 0) {
    if (cb) cb(s);
    return;
  }
  for (int i = 0; i < SUPERVISE_NSIGNALS; i++)
    uv_close((uv_handle_t *)&s->signals[i], on_closed);
  uv_close((uv_handle_t *)&s->proc, on_closed);
}
