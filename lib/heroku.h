/*
 * heroku: a Heroku Platform API client for one process type's formation,
 * on libcurl's multi interface driven by the caller's libuv loop.
 *
 *   GET   {api_url}/apps/{app}/formation/{formation}
 *   PATCH {api_url}/apps/{app}/formation/{formation}   {"quantity": N}
 *
 * Every attempt has a timeout. 429, 5xx and network errors (timeouts
 * included) are retried up to max_attempts in all, with capped exponential
 * backoff and jitter; a PATCH only when it surely did not apply (429, no
 * connection), else its outcome is unknown and the caller decides; when the API says RateLimit-Remaining: 0 the client
 * waits at least backoff_max before its next request. 401/403/404/422 are
 * never retried. Every failure is logged with the API's error id, message
 * and Request-Id, and comes back with one line saying what to do. The token
 * is never logged. Plain http:// is refused unless the host is loopback,
 * and TLS verification is always on. Nothing here blocks the loop.
 */
#ifndef SCALEKIQ_HEROKU_H
#define SCALEKIQ_HEROKU_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <uv.h>

#include "log.h"

/* Error codes (0 is success). */
enum {
  HEROKU_E_INVALID = -1,     /* bad argument or option */
  HEROKU_E_NOMEM = -2,
  HEROKU_E_AUTH = -3,        /* 401/403: the token is wrong or not allowed */
  HEROKU_E_NOT_FOUND = -4,   /* 404: no such app or process type */
  HEROKU_E_LIMIT = -5,       /* 422 cannot_run_above_limit: platform maximum */
  HEROKU_E_REJECTED = -6,    /* any other 4xx (422 invalid_params, ...) */
  HEROKU_E_UNAVAILABLE = -7, /* 429, 5xx or a network error, after retries */
  HEROKU_E_TIMEOUT = -8,     /* the last attempt timed out */
  HEROKU_E_BAD_REPLY = -9,   /* 2xx that is not a formation, or too large */
  HEROKU_E_CLOSED = -10,     /* heroku_close() was called */
  HEROKU_E_VETOED = -11,     /* may_change said no: the change was not sent */
};
const char *heroku_strerror(int code);

#define HEROKU_MAX_BODY (1u << 20) /* a reply body above this is BAD_REPLY */

typedef struct heroku_result {
  int status;                /* 0 or a HEROKU_E_* code */
  long http_status;          /* of the last attempt; 0 when none came back */
  long quantity;             /* the formation's quantity; -1 unknown */
  char error_id[64];         /* the API's "id" ("unauthorized"...), or "" */
  char message[256];         /* the API's "message", or "" */
  char request_id[80];       /* the Request-Id header of the last reply */
  long ratelimit_remaining;  /* RateLimit-Remaining of the last reply; -1 */
  int attempts;              /* requests sent for this call */
  char detail[512];          /* one line: what happened and what to do */
} heroku_result_t;

typedef struct heroku heroku_t;

/* res is valid only during the call. */
typedef void (*heroku_cb)(heroku_t *h, const heroku_result_t *res, void *data);
typedef void (*heroku_close_cb)(heroku_t *h);

typedef struct heroku_options {
  const char *api_url;   /* https://api.heroku.com (no trailing '/') */
  const char *app;       /* name or id */
  const char *token;     /* secret */
  const char *formation; /* process type, default "worker" */
  double timeout;        /* s, per attempt; default 10 */
  int max_attempts;      /* tries in all for retryable errors; default 3 */
  double backoff_min;    /* s, first retry delay; default 0.5 */
  double backoff_max;    /* s, cap, and the least wait once rate-limited;
                            default 5 */
  const char *identity;  /* this agent (dyno name), put in User-Agent so
                            the API's audit trail tells agents apart; may
                            be NULL */
  /* Asked once a change's connection is up, right before the request is
   * written: 0 drops it unsent (HEROKU_E_VETOED). The agent checks its
   * lease here, the latest moment there is. May be NULL. */
  int (*may_change)(void *data);
  void *may_change_data;
  log_t *log;            /* may be NULL */
} heroku_options_t;

typedef struct heroku_req heroku_req_t;
typedef struct heroku_sock heroku_sock_t;

struct heroku {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t curl_timer;      /* libcurl's single timeout */
  struct curl_slist *headers; /* shared by every request: holds the token */
  char *url;                  /* {api_url}/apps/{app}/formation/{type} */
  char *app, *formation;      /* copies, for messages */
  double timeout;
  int max_attempts;
  double backoff_min, backoff_max;
  int (*may_change)(void *data);
  void *may_change_data;
  log_t *log;
  heroku_req_t *reqs;         /* calls not completed yet */
  heroku_sock_t *socks;       /* sockets libcurl asked us to watch */
  uint64_t not_before;        /* uv_now() ms: no request before (rate limit) */
  long ratelimit_remaining;   /* last seen, -1 unknown */
  uint64_t rng;
  int handles_open;
  int closing;
  heroku_close_cb close_cb;
  int curl_global;            /* curl_global_init() succeeded */
};

/* timeout 10, max_attempts 3, backoff 0.5..5, api_url the default,
 * formation "worker"; app and token NULL. */
void heroku_options_default(heroku_options_t *o);

/* Checks the options (http:// only to 127.0.0.1, [::1] or localhost),
 * copies what it needs and prepares the handles. Returns 0, or
 * HEROKU_E_INVALID / HEROKU_E_NOMEM with err holding one line (never the
 * token); on error nothing needs closing. */
int heroku_init(uv_loop_t *loop, heroku_t *h, const heroku_options_t *o,
                char *err, size_t errlen);

/* Fails every call in flight with HEROKU_E_CLOSED (their callbacks run
 * before this returns), then closes everything; cb (may be NULL) runs once
 * all is freed, after which h may be freed. */
void heroku_close(heroku_t *h, heroku_close_cb cb);

/* Each returns 0 and later calls cb exactly once, or returns a negative
 * code (HEROKU_E_CLOSED, HEROKU_E_INVALID, HEROKU_E_NOMEM) and never calls
 * cb. On success res->quantity is the formation's quantity (after the
 * change, for set). */
int heroku_get_formation(heroku_t *h, heroku_cb cb, void *data);
int heroku_set_quantity(heroku_t *h, long quantity, heroku_cb cb, void *data);

/* Pure: classifies one reply. Fills status, http_status, quantity,
 * error_id, message and detail of res (the other fields are left alone)
 * and returns res->status. 2xx must be a formation object with a
 * non-negative integer quantity; a body longer than HEROKU_MAX_BODY is
 * BAD_REPLY whatever the status. */
int heroku_reply_parse(long http_status, const char *body, size_t len,
                       heroku_result_t *res);

/* Whether a reply with this HTTP status is worth retrying (429, 5xx). */
int heroku_http_retryable(long http_status);

#endif
