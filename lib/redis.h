/*
 * redis: an asynchronous Redis client on a libuv loop.
 *
 * scalekiq owns the transport (a libuv TCP or Unix stream, with TLS on
 * OpenSSL memory BIOs under it for rediss://, see tls.h) and uses hiredis
 * only for what it does well: formatting commands and parsing replies,
 * whatever its version. Every request has a deadline; on an error
 * or a timeout the connection is dropped, every pending callback gets an
 * error exactly once, and the client reconnects with capped exponential
 * backoff and jitter. Nothing here blocks the loop.
 */
#ifndef SCALEKIQ_REDIS_H
#define SCALEKIQ_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "log.h"

/* Error codes (0 is success). */
enum {
  REDIS_E_INVALID = -1,   /* bad argument or URL */
  REDIS_E_NOMEM = -2,
  REDIS_E_NOTCONN = -3,   /* no connection and none being made */
  REDIS_E_TIMEOUT = -4,   /* the request's deadline passed */
  REDIS_E_IO = -5,        /* connect, read or write failed; peer closed */
  REDIS_E_PROTOCOL = -6,  /* the server sent something that is not RESP */
  REDIS_E_CLOSED = -7,    /* redis_close() was called */
  REDIS_E_AUTH = -8,      /* AUTH or SELECT refused */
  REDIS_E_UNSUPPORTED = -9,
  REDIS_E_TLS = -10,      /* TLS handshake, certificate or record error */
};
const char *redis_strerror(int code);

/* ---- URLs ---------------------------------------------------------- */

enum redis_transport { REDIS_TRANSPORT_TCP, REDIS_TRANSPORT_UNIX };

typedef struct redis_url {
  enum redis_transport transport;
  int tls;               /* rediss:// */
  char host[256];        /* TCP: name or address, without IPv6 brackets */
  int port;
  char path[108];        /* Unix: socket path */
  char username[128];    /* percent-decoded; empty when none */
  char password[256];    /* percent-decoded; empty when none */
  int db;
} redis_url_t;

/* Parses redis://[[user]:password@]host[:port][/db], rediss://... and
 * unix:///path[?db=N]. Returns 0, or REDIS_E_INVALID with err naming the
 * problem (err never contains the password). */
int redis_url_parse(const char *url, redis_url_t *out, char *err, size_t errlen);

/* The URL with the password replaced by "***", safe to log or show. */
void redis_url_redacted(const redis_url_t *url, char *buf, size_t size);

/* ---- client -------------------------------------------------------- */

enum redis_state {
  REDIS_STATE_DISCONNECTED, /* idle, or waiting out a reconnect backoff */
  REDIS_STATE_CONNECTING,   /* resolving, connecting, AUTH/SELECT */
  REDIS_STATE_READY,
  REDIS_STATE_CLOSED,
};

typedef struct redis redis_t;

/* Called on every state change. status is 0, or the error that caused a
 * drop to DISCONNECTED (detail says what happened; never a password). */
typedef void (*redis_state_cb)(redis_t *r, enum redis_state state, int status,
                               const char *detail, void *data);

/* replies[0..n) are owned by the client and freed when the callback
 * returns. On error (status < 0) replies is NULL and n is 0. Error replies
 * from the server (-ERR ...) are replies of type REDIS_REPLY_ERROR. */
typedef void (*redis_reply_cb)(redis_t *r, int status, redisReply **replies,
                               size_t n, void *data);

typedef void (*redis_close_cb)(redis_t *r);

/* rediss:// only. Zeroed means: verify against the system's CA store, no
 * client certificate. The files are read by redis_init(). */
typedef struct redis_tls_options {
  int no_verify;         /* 1: accept any certificate (self-signed servers) */
  const char *ca_file;   /* PEM bundle to verify with; NULL: the system's */
  const char *cert_file; /* client certificate chain (PEM), with key_file */
  const char *key_file;
} redis_tls_options_t;

typedef struct redis_options {
  double connect_timeout;  /* s, resolve + connect + TLS + AUTH/SELECT; default 5 */
  double request_timeout;  /* s, from queueing to the last reply; default 5 */
  double backoff_min;      /* s, first reconnect delay; default 0.1 */
  double backoff_max;      /* s, cap; default 10 */
  int reconnect;           /* 0: stay DISCONNECTED after a failure */
  log_t *log;              /* may be NULL */
  redis_state_cb on_state; /* may be NULL */
  void *data;
  redis_tls_options_t tls;
} redis_options_t;

/* Counters for benchmarks and status. */
typedef struct redis_stats {
  uint64_t commands;    /* commands written (handshake included) */
  uint64_t writes;      /* pipeline writes: one per round trip */
  uint64_t replies;
  uint64_t connects;    /* connections that reached READY */
  uint64_t drops;       /* connections dropped on error or timeout */
} redis_stats_t;

typedef struct redis_req redis_req_t;
typedef struct redis_conn redis_conn_t;
struct tls_ctx;

struct redis {
  uv_loop_t *loop;
  redis_url_t url;
  redis_options_t opts;
  enum redis_state state;
  redis_conn_t *conn;        /* current connection attempt or NULL */
  struct tls_ctx *tls;       /* rediss://: shared by every connection */
  redis_req_t *head, *tail;  /* requests in order: written ones first */
  uv_timer_t deadline_timer; /* the earliest request or connect deadline */
  uv_timer_t retry_timer;    /* reconnect backoff */
  uint64_t connect_deadline; /* uv_now() ms, while CONNECTING */
  unsigned attempts;         /* consecutive failed connection attempts */
  uint64_t rng;              /* jitter state (xorshift64*) */
  int handles_open;          /* our uv handles and requests not yet closed */
  int closing;
  int drop_status;           /* a write failed: drop at the next iteration */
  redis_close_cb close_cb;
  redis_stats_t stats;
  char err[256];             /* detail of the last error */
};

/* Fills opts with the defaults above. */
void redis_options_default(redis_options_t *opts);

/* Parses url into r and prepares the handles (and, for rediss://, the
 * TLS settings: CA and client certificate files are read here); does not
 * connect. Returns 0 or REDIS_E_INVALID (see redis_last_error()). */
int redis_init(uv_loop_t *loop, redis_t *r, const char *url,
               const redis_options_t *opts);

/* Starts connecting now (also cancels a pending backoff). */
int redis_connect(redis_t *r);

/* Fails every pending request with REDIS_E_CLOSED, closes the connection
 * and the handles; cb (may be NULL) runs once everything is closed, after
 * which r may be freed. */
void redis_close(redis_t *r, redis_close_cb cb);

const char *redis_last_error(const redis_t *r);

/* ---- pipelines ----------------------------------------------------- */

/* Commands formatted into one buffer, sent with one write. */
typedef struct redis_pipeline {
  char *buf;
  size_t len, cap;
  size_t ncmds;
  int failed; /* an append ran out of memory: send will refuse */
} redis_pipeline_t;

void redis_pipeline_init(redis_pipeline_t *p);
void redis_pipeline_reset(redis_pipeline_t *p);
/* hiredis format: %s for a C string, %b for (pointer, size_t length). */
int redis_pipeline_appendf(redis_pipeline_t *p, const char *fmt, ...);
int redis_pipeline_append_argv(redis_pipeline_t *p, int argc,
                               const char **argv, const size_t *argvlen);

/* Queues the pipeline's commands as one request and empties p. Returns 0
 * and later calls cb exactly once with one reply per command in order, or
 * returns an error (REDIS_E_NOTCONN while disconnected, REDIS_E_CLOSED,
 * REDIS_E_NOMEM, REDIS_E_INVALID for an empty pipeline) and never calls cb.
 * While CONNECTING the request waits for the connection; its deadline
 * runs from now. */
int redis_pipeline_send(redis_t *r, redis_pipeline_t *p, redis_reply_cb cb,
                        void *data);

/* One command: a pipeline of one. */
int redis_command(redis_t *r, redis_reply_cb cb, void *data, const char *fmt,
                  ...);

#endif
