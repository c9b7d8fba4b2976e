/*
 * control: the agent's local control socket and its protocol.
 *
 * A Unix stream socket (SCALEKIQ_SOCKET, default /tmp/scalekiq.sock,
 * mode 0600) on the agent's loop. One request line in, one reply out, then
 * the connection is closed:
 *
 *   request  = command [" --json"] "\n"        (CR before LF, surrounding
 *                                               blanks: ignored)
 *   command  = status | metrics | history | pause | resume | step-down
 *   reply    = TEXT "\n"                       the handler's text + one LF
 *            | "error: " MESSAGE "\n"          one line
 *
 * "--json" is accepted by status and history only; the handler sees it as
 * req->json and answers with one JSON object (status) or array (history),
 * otherwise with text for people. So the CLI passes its own arguments
 * through and prints the reply as is.
 *
 * A client costs a bounded amount whatever it does: the request line is
 * capped (max_line), it must arrive within idle_timeout of the connection,
 * the reply must be taken within idle_timeout of being sent, and at most
 * max_clients connections are served at once (others get an error and are
 * closed at once). Peers must run as the agent's uid, or root (SO_PEERCRED).
 *
 * The process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN) in main):
 * libuv writes with write(2), so a client that hangs up before its reply
 * would otherwise kill the agent. control_init() logs a warning if not.
 */
#ifndef SCALEKIQ_CONTROL_H
#define SCALEKIQ_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "log.h"

/* Error codes (0 is success). */
enum {
  CONTROL_E_INVALID = -1, /* bad argument or option */
  CONTROL_E_NOMEM = -2,
  CONTROL_E_IO = -3,      /* a socket call failed */
  CONTROL_E_INUSE = -4,   /* a live agent (or another program) owns the path */
  CONTROL_E_TIMEOUT = -5, /* client: no complete reply within the timeout */
  CONTROL_E_NOAGENT = -6, /* client: nothing answers on the path */
  CONTROL_E_REQUEST = -7, /* a malformed or unknown request line */
  CONTROL_E_AGENT = -8,   /* client: the agent replied "error: ..." */
  CONTROL_E_GONE = -9,    /* control_respond(): the client went away */
  CONTROL_E_CLOSED = -10, /* control_close() was called */
};
const char *control_strerror(int code);

/* A handler's return value meaning "I will answer later with
 * control_respond()". */
#define CONTROL_DEFER 1

#define CONTROL_DEFAULT_PATH "/tmp/scalekiq.sock"
#define CONTROL_LINE_MAX 4096 /* bytes of a request line, without its LF */
/* Longest usable socket path: sun_path (108) minus the NUL and the
 * ".NNNNNNNNNN" suffix of the temporary name the socket is bound to
 * before it is renamed into place. */
#define CONTROL_PATH_MAX 96
/* control_request() gives up on replies larger than this. */
#define CONTROL_REPLY_MAX (16u << 20)

/* ---- protocol (pure) ----------------------------------------------- */

enum control_command {
  CONTROL_STATUS,
  CONTROL_METRICS,  /* Prometheus text exposition */
  CONTROL_HISTORY,
  CONTROL_PAUSE,
  CONTROL_RESUME,
  CONTROL_STEP_DOWN,
};

typedef struct control_request {
  enum control_command command;
  int json;     /* "--json" was given (status, history) */
  /* Set by the server (0 from control_parse_request): */
  uint64_t id;  /* pass to control_respond() after returning CONTROL_DEFER */
  uid_t uid;    /* the peer, from SO_PEERCRED: for the handler's logs */
  pid_t pid;
} control_request_t;

/* Parses one request line line[0..len): at most one trailing LF (and a CR
 * before it) and blanks around words are ignored. Returns 0, or
 * CONTROL_E_REQUEST with err saying why: an empty line, a line longer than
 * CONTROL_LINE_MAX, a control character, an unknown command (named, with
 * the list of valid ones) or an argument the command does not take.
 * err may be NULL. */
int control_parse_request(const char *line, size_t len, control_request_t *out,
                          char *err, size_t errlen);

/* "status", "metrics", ..., "step-down". */
const char *control_command_name(enum control_command cmd);

/* ---- server -------------------------------------------------------- */

typedef struct control control_t;
typedef struct control_client control_client_t;

/* Answers a parsed request; called on the loop, must not block.
 * - return 0 and set *reply to a malloc'd string (the server frees it):
 *   the client gets that text and "\n". NULL *reply means "ok".
 *   A successful text must not begin with "error: ".
 * - return a negative code, *reply optionally a malloc'd message: the
 *   client gets "error: MESSAGE\n" (control_strerror(code) when NULL);
 *   newlines in the message are replaced by spaces.
 * - return CONTROL_DEFER (leave *reply NULL) and later call
 *   control_respond(c, req->id, ...) on the loop; if no answer comes
 *   within handler_timeout the client gets an error. */
typedef int (*control_handler)(control_t *c, const control_request_t *req,
                               char **reply, void *data);

typedef void (*control_close_cb)(control_t *c);

typedef struct control_options {
  const char *path;       /* default CONTROL_DEFAULT_PATH; copied */
  int mode;               /* default 0600; owner rw required, no bits for
                             others; group bits (e.g. 0660) also admit peers
                             whose effective gid is the agent's */
  double idle_timeout;    /* s; default 2: to send the request line, and
                             again to read the reply */
  double handler_timeout; /* s; default 5: for a CONTROL_DEFER answer */
  size_t max_line;        /* default and cap CONTROL_LINE_MAX */
  size_t max_clients;     /* default 64 */
  log_t *log;             /* may be NULL */
  control_handler handler; /* required */
  void *data;             /* passed to the handler */
} control_options_t;

typedef struct control_stats {
  uint64_t accepted;  /* connections taken as clients */
  uint64_t rejected;  /* closed at once: over max_clients */
  uint64_t denied;    /* peer uid (or gid) not allowed */
  uint64_t answered;  /* replies fully written (errors included) */
  uint64_t bad;       /* malformed, unknown or over-long requests */
  uint64_t timeouts;  /* silent clients and clients that did not read */
} control_stats_t;

struct control {
  uv_loop_t *loop;
  control_options_t opts;
  char path[CONTROL_PATH_MAX];
  uv_pipe_t *listener;       /* heap: see control_init() */
  control_client_t *clients; /* live clients, newest first */
  size_t nclients;           /* allocated clients, closing ones included */
  int open;                  /* listener + clients + rejected connections
                                not yet closed */
  int closing;
  int accept_pending;        /* a connection waits for memory to accept it */
  uint64_t next_id;
  dev_t dev;                 /* the socket file we created: unlinked by */
  ino_t ino;                 /* control_close() only if still ours */
  control_close_cb close_cb;
  control_stats_t stats;
};

/* Fills opts with the defaults above (handler NULL). */
void control_options_default(control_options_t *opts);

/* Binds and listens on opts->path with opts->mode. A socket file nobody
 * listens on (a dead agent's) is replaced; when something answers on it,
 * fails with CONTROL_E_INUSE: "another scalekiq agent is listening on PATH
 * (pid N)". A path that exists and is not a socket is never replaced.
 * The socket is bound under a temporary name, given its mode, then renamed
 * into place, so it is never reachable with a looser mode.
 * Returns 0, or a negative code with err (may be NULL) saying why; on
 * failure nothing is left open and c needs no control_close(). */
int control_init(uv_loop_t *loop, control_t *c, const control_options_t *opts,
                 char *err, size_t errlen);

/* Answers a deferred request, taking ownership of text (malloc'd, may be
 * NULL); status and text mean what the handler's would. Returns 0, or
 * CONTROL_E_GONE when that client is gone (timed out, hung up, closed):
 * text is freed either way. */
int control_respond(control_t *c, uint64_t id, int status, char *text);

/* Closes the listener and every client (pending replies are dropped);
 * unlinks the path if it is still the socket control_init() made. cb (may
 * be NULL) runs once every handle is closed; c may then be freed. */
void control_close(control_t *c, control_close_cb cb);

/* ---- client (blocking: for the CLI process, never on a loop) -------- */

/* Sends line (a LF is added when missing) to the agent on path and reads
 * the reply until the agent closes, within timeout seconds in all.
 * Returns 0 with *reply the handler's text (malloc'd, without the framing
 * LF), or a negative code with err saying why and *reply NULL:
 *   CONTROL_E_NOAGENT "no scalekiq agent answers on PATH: connection
 *                     refused (is `scalekiq run` running on this dyno?)"
 *   CONTROL_E_AGENT   the agent's message, without "error: "
 *   CONTROL_E_TIMEOUT, CONTROL_E_IO, CONTROL_E_INVALID, CONTROL_E_NOMEM */
int control_request(const char *path, const char *line, double timeout,
                    char **reply, char *err, size_t errlen);

#endif
