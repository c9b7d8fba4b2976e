/*
 * supervise: owns the worker process that `scalekiq run -- CMD` starts
 * (Sidekiq, as a rule) and the signals meant for it. The child inherits
 * stdin/stdout/stderr and the environment; signals the agent receives are
 * passed on to it; its exit status becomes the agent's.
 */
#ifndef SCALEKIQ_SUPERVISE_H
#define SCALEKIQ_SUPERVISE_H

#include <uv.h>

#include "log.h"

typedef struct supervise supervise_t;
typedef void (*supervise_exit_cb)(supervise_t *s);
typedef void (*supervise_close_cb)(supervise_t *s);

/* Every signal passed on to the child: TERM and INT (which also stop the
 * agent, on its own handlers), and those Sidekiq acts on. */
#define SUPERVISE_NSIGNALS 8

struct supervise {
  uv_loop_t *loop;
  log_t *log;
  uv_process_t proc;
  uv_signal_t signals[SUPERVISE_NSIGNALS];
  int running;          /* the child has not exited yet */
  int64_t exit_status;  /* once exited */
  int term_signal;      /* once exited: the signal that ended it, or 0 */
  supervise_exit_cb on_exit;
  void *data;
  int handles_open;
  supervise_close_cb close_cb;
};

/* Starts argv[0] (looked up in PATH) with argv, and begins passing
 * signals on. on_exit runs once, when the child has exited. Returns 0, or
 * a negative libuv error with err holding one line (then nothing is left
 * to close). */
int supervise_start(uv_loop_t *loop, supervise_t *s, char *const *argv, log_t *log,
                    supervise_exit_cb on_exit, void *data, char *err, size_t errlen);

/* The exit status to pass on: the child's own, or 128 + the signal that
 * killed it (as a shell reports it). */
int supervise_exit_code(const supervise_t *s);

/* What a shell would exit with when the command cannot be started:
 * 127 when it is not found, else 126. */
int supervise_spawn_failure_code(int uv_error);

/* Closes the handles (the child must have exited; a running child is
 * left alone, not killed); cb (may be NULL) once they are closed. */
void supervise_close(supervise_t *s, supervise_close_cb cb);

#endif
