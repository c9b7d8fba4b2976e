/*
 * heroku: owns the Platform API conversation: URL and header set-up, the
 * curl multi handle and its glue to libuv, retries with backoff, the rate
 * limit, and one log line per failure. What a reply or a failure means is
 * heroku_reply.c's (pure, shared through heroku_internal.h).
 *
 * libuv glue: libcurl tells us which sockets to watch (CURLMOPT_SOCKET-
 * FUNCTION) and when to wake it up (CURLMOPT_TIMERFUNCTION). Each watched
 * socket gets a malloc'd uv_poll_t, stopped and closed as soon as libcurl
 * says CURL_POLL_REMOVE (which it does before it closes the socket), so a
 * new socket that reuses the number can get a fresh uv_poll_t at once.
 * After every curl_multi_socket_action the finished transfers are drained
 * with curl_multi_info_read; they are first all collected, then handled,
 * because a caller's callback may start new calls or close the client.
 *
 * A call (heroku_req_t) owns one easy handle, reused for every attempt,
 * and one uv_timer_t that starts each attempt (the first one too, so a
 * callback never runs before the call returns). The call is freed in the
 * timer's close callback, after its callback ran.
 */
#include "heroku.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "heroku_internal.h"
#include "version.h"

#define USER_AGENT "scalekiq/" SCALEKIQ_VERSION
#define ACCEPT "application/vnd.heroku+json; version=3"
#define RATELIMIT_LOW 100 /* warn once the remaining requests fall below */

enum req_state {
  REQ_WAITING,  /* its timer will start the next attempt */
  REQ_ACTIVE,   /* the easy handle is in the multi handle */
  REQ_FINISHED, /* attempt over, taken out of the multi, not handled yet */
  REQ_DONE,     /* callback ran; the timer is closing */
};

struct heroku_req {
  heroku_t *h;
  heroku_req_t *prev, *next; /* h->reqs, until DONE */
  heroku_req_t *done_next;   /* check_multi_info's batch */
  enum req_state state;
  CURL *easy;
  uv_timer_t timer;
  int patch;
  long quantity;
  char body[48];
  heroku_cb cb;
  void *data;
  char *buf; /* reply body */
  size_t len, cap;
  int overflow;   /* the body went over HEROKU_MAX_BODY */
  int vetoed;     /* may_change said no before it was sent */
  CURLcode rc;    /* of the last attempt */
  heroku_result_t res;
  char errbuf[CURL_ERROR_SIZE];
};

struct heroku_sock {
  uv_poll_t poll;
  curl_socket_t fd;
  heroku_t *h;
  heroku_sock_t *prev, *next;
};

/* ---- small helpers ------------------------------------------------- */

static uint64_t next_random(heroku_t *h) {
  h->rng ^= h->rng >> 12;
  h->rng ^= h->rng << 25;
  h->rng ^= h->rng >> 27;
  return h->rng * 0x2545F4914F6CDD1DULL;
}

/* base * 2^(failures-1), capped, then a random point in its upper half. */
static uint64_t retry_delay_ms(heroku_t *h, int failures) {
  double d = h->backoff_min;
  for (int i = 1; i < failures && d < h->backoff_max; i++) d *= 2;
  if (d > h->backoff_max) d = h->backoff_max;
  uint64_t ms = (uint64_t)(d * 1000.0);
  if (ms < 2) return ms + 1;
  return ms / 2 + next_random(h) % (ms / 2 + 1);
}

/* Once the API says no requests remain: backoff_max to 1.5 x backoff_max. */
static uint64_t ratelimit_delay_ms(heroku_t *h) {
  uint64_t ms = (uint64_t)(h->backoff_max * 1000.0);
  return ms + next_random(h) % (ms / 2 + 1);
}

/* Appends src to dst percent-encoded (all but RFC 3986 unreserved). */
static void pct_encode(char *dst, const char *src) {
  static const char hex[] = "0123456789ABCDEF";
  dst += strlen(dst);
  for (; *src; src++) {
    unsigned char c = (unsigned char)*src;
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      *dst++ = (char)c;
    } else {
      *dst++ = '%';
      *dst++ = hex[c >> 4];
      *dst++ = hex[c & 15];
    }
  }
  *dst = '\0';
}

/* ---- libuv glue ---------------------------------------------------- */

static void check_multi_info(heroku_t *h);

static void maybe_finish_close(heroku_t *h) {
  if (!h->closing || h->handles_open > 0) return;
  if (h->headers) {
    /* The Authorization line holds the token: do not leave it in freed
     * memory. */
    for (struct curl_slist *s = h->headers; s; s = s->next)
      memset(s->data, 0, strlen(s->data));
    curl_slist_free_all(h->headers);
    h->headers = NULL;
  }
  free(h->url);
  free(h->app);
  free(h->formation);
  h->url = h->app = h->formation = NULL;
  if (h->curl_global) {
    curl_global_cleanup();
    h->curl_global = 0;
  }
  heroku_close_cb cb = h->close_cb;
  if (cb) cb(h);
}

static void handle_closed(uv_handle_t *hd) {
  heroku_t *h = hd->data;
  h->handles_open--;
  maybe_finish_close(h);
}

static void sock_closed(uv_handle_t *hd) {
  heroku_sock_t *sk = hd->data;
  heroku_t *h = sk->h;
  free(sk);
  h->handles_open--;
  maybe_finish_close(h);
}

/* uv_close stops the poll at once (the fd leaves epoll now); only the
 * memory waits for the close callback. */
static void sock_close(heroku_t *h, heroku_sock_t *sk) {
  if (sk->prev) sk->prev->next = sk->next;
  else h->socks = sk->next;
  if (sk->next) sk->next->prev = sk->prev;
  sk->prev = sk->next = NULL;
  uv_close((uv_handle_t *)&sk->poll, sock_closed);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  heroku_sock_t *sk = p->data;
  heroku_t *h = sk->h;
  if (h->closing || h->multi == NULL) return;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  curl_multi_socket_action(h->multi, sk->fd, flags, &running);
  check_multi_info(h); /* sk may be closing by now: not used again */
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                     void *socketp) {
  (void)easy;
  heroku_t *h = userp;
  heroku_sock_t *sk = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (sk) {
      sock_close(h, sk);
      if (h->multi) curl_multi_assign(h->multi, s, NULL);
    }
    return 0;
  }
  if (sk == NULL) {
    if (h->closing) return -1;
    sk = calloc(1, sizeof(*sk));
    if (sk == NULL) return -1;
    if (uv_poll_init_socket(h->loop, &sk->poll, s) != 0) {
      free(sk);
      return -1;
    }
    sk->fd = s;
    sk->h = h;
    sk->poll.data = sk;
    sk->next = h->socks;
    if (h->socks) h->socks->prev = sk;
    h->socks = sk;
    h->handles_open++;
    curl_multi_assign(h->multi, s, sk);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  if (ev == 0) {
    uv_poll_stop(&sk->poll);
    return 0;
  }
  return uv_poll_start(&sk->poll, ev, on_poll) == 0 ? 0 : -1;
}

static void on_curl_timeout(uv_timer_t *t) {
  heroku_t *h = t->data;
  if (h->closing || h->multi == NULL) return;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(h);
}

/* libcurl must not be called back from here: the uv timer does it, even
 * for a 0 ms timeout (next loop iteration). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  heroku_t *h = userp;
  if (h->closing) return 0;
  if (timeout_ms < 0) uv_timer_stop(&h->curl_timer);
  else uv_timer_start(&h->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- calls --------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t n, void *userdata) {
  heroku_req_t *req = userdata;
  size_t got = size * n;
  if (got > HEROKU_MAX_BODY - req->len) {
    req->overflow = 1;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if (req->len + got + 1 > req->cap) {
    size_t cap = req->cap ? req->cap : 1024;
    while (cap < req->len + got + 1) cap *= 2;
    char *nb = realloc(req->buf, cap);
    if (nb == NULL) return 0;
    req->buf = nb;
    req->cap = cap;
  }
  memcpy(req->buf + req->len, ptr, got);
  req->len += got;
  req->buf[req->len] = '\0';
  return got;
}

/* "Name: value" header lines; a status line starts the next reply (1xx). */
static size_t on_header(char *ptr, size_t size, size_t n, void *userdata) {
  heroku_req_t *req = userdata;
  size_t len = size * n;
  if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
    req->res.request_id[0] = '\0';
    req->res.ratelimit_remaining = -1;
    return len;
  }
  const char *colon = memchr(ptr, ':', len);
  if (colon == NULL) return len;
  size_t nlen = (size_t)(colon - ptr);
  const char *v = colon + 1, *end = ptr + len;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' ||
                     end[-1] == '\t'))
    end--;
  size_t vlen = (size_t)(end - v);
  if (nlen == 10 && strncasecmp(ptr, "Request-Id", 10) == 0) {
    size_t o = 0;
    for (size_t i = 0; i < vlen && o + 1 < sizeof(req->res.request_id); i++) {
      unsigned char c = (unsigned char)v[i];
      req->res.request_id[o++] = (c > ' ' && c < 0x7f && c != '"') ? (char)c : '?';
    }
    req->res.request_id[o] = '\0';
  } else if (nlen == 19 && strncasecmp(ptr, "RateLimit-Remaining", 19) == 0) {
    long val = 0;
    size_t i = 0;
    for (; i < vlen && i < 12 && isdigit((unsigned char)v[i]); i++)
      val = val * 10 + (v[i] - '0');
    if (i > 0 && i == vlen) req->res.ratelimit_remaining = val;
  }
  return len;
}

static void req_closed(uv_handle_t *hd) {
  heroku_req_t *req = hd->data;
  heroku_t *h = req->h;
  if (req->easy) curl_easy_cleanup(req->easy);
  free(req->buf);
  free(req);
  h->handles_open--;
  maybe_finish_close(h);
}

static void req_unlink(heroku_req_t *req) {
  heroku_t *h = req->h;
  if (req->prev) req->prev->next = req->next;
  else h->reqs = req->next;
  if (req->next) req->next->prev = req->prev;
  req->prev = req->next = NULL;
}

/* Runs the callback once and lets the call go. */
static void finish(heroku_req_t *req) {
  heroku_t *h = req->h;
  req->state = REQ_DONE;
  req_unlink(req);
  uv_timer_stop(&req->timer);
  if (req->cb) req->cb(h, &req->res, req->data);
  uv_close((uv_handle_t *)&req->timer, req_closed);
}

static const char *method_of(const heroku_req_t *req) {
  return req->patch ? "PATCH" : "GET";
}

/* Puts "what this call was doing" in front of res->detail. */
static void prefix_detail(heroku_req_t *req) {
  heroku_t *h = req->h;
  char out[1024], after[32] = "";
  if (req->res.attempts > 1)
    snprintf(after, sizeof(after), " (after %d attempts)", req->res.attempts);
  if (req->patch)
    snprintf(out, sizeof(out), "scaling %s of app %s to %ld%s: %s",
             h->formation, h->app, req->quantity, after, req->res.detail);
  else
    snprintf(out, sizeof(out), "reading the %s formation of app %s%s: %s",
             h->formation, h->app, after, req->res.detail);
  heroku_copy_str(req->res.detail, sizeof(req->res.detail), out);
}

static void log_failure(heroku_req_t *req, enum log_level level,
                        const char *event, long in_ms) {
  heroku_t *h = req->h;
  if (h->log == NULL) return;
  const heroku_result_t *r = &req->res;
  char q_app[160], q_form[160], q_id[96], q_msg[300], q_rid[100], q_det[560];
  char retry[40] = "";
  if (in_ms >= 0) snprintf(retry, sizeof(retry), " retry_in_ms=%ld", in_ms);
  log_event(h->log, level, event,
            "method=%s app=%s formation=%s http_status=%ld id=%s message=%s "
            "request_id=%s ratelimit_remaining=%ld attempt=%d%s error=%s "
            "detail=%s",
            method_of(req), log_quote(q_app, sizeof(q_app), h->app),
            log_quote(q_form, sizeof(q_form), h->formation), r->http_status,
            log_quote(q_id, sizeof(q_id), r->error_id),
            log_quote(q_msg, sizeof(q_msg), r->message),
            log_quote(q_rid, sizeof(q_rid), r->request_id),
            r->ratelimit_remaining, r->attempts, retry, heroku_code_name(r->status),
            log_quote(q_det, sizeof(q_det), r->detail));
}

static void start_attempt(uv_timer_t *t);

static void schedule(heroku_req_t *req, uint64_t delay_ms) {
  heroku_t *h = req->h;
  uint64_t now = uv_now(h->loop);
  if (now + delay_ms < h->not_before) delay_ms = h->not_before - now;
  req->state = REQ_WAITING;
  uv_timer_start(&req->timer, start_attempt, delay_ms, 0);
}

static void start_attempt(uv_timer_t *t) {
  heroku_req_t *req = t->data;
  heroku_t *h = req->h;
  if (req->state != REQ_WAITING || h->closing) return;
  req->len = 0;
  req->overflow = 0;
  req->errbuf[0] = '\0';
  req->res.request_id[0] = '\0';
  req->res.ratelimit_remaining = -1;
  req->res.attempts++;
  CURLMcode mc = curl_multi_add_handle(h->multi, req->easy);
  if (mc != CURLM_OK) {
    req->res.status = mc == CURLM_OUT_OF_MEMORY ? HEROKU_E_NOMEM : HEROKU_E_INVALID;
    snprintf(req->res.detail, sizeof(req->res.detail),
             "cannot start the request: %s", curl_multi_strerror(mc));
    prefix_detail(req);
    log_failure(req, LOG_ERROR, "heroku_error", -1);
    finish(req);
    return;
  }
  req->state = REQ_ACTIVE;
}

/* libcurl's last call before it writes the request. */
static int before_request(void *data, char *conn_primary_ip, char *conn_local_ip,
                          int conn_primary_port, int conn_local_port) {
  (void)conn_primary_ip, (void)conn_local_ip;
  (void)conn_primary_port, (void)conn_local_port;
  heroku_req_t *req = data;
  heroku_t *h = req->h;
  if (h->may_change == NULL || h->may_change(h->may_change_data)) return CURL_PREREQFUNC_OK;
  req->vetoed = 1;
  return CURL_PREREQFUNC_ABORT;
}

/* Fills res from a transfer that did not complete; returns retryable. */
static int classify_curl_error(heroku_req_t *req, long code) {
  heroku_t *h = req->h;
  heroku_result_t *r = &req->res;
  r->http_status = code;
  r->quantity = -1;
  r->error_id[0] = r->message[0] = '\0';
  const char *why = req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->rc);
  char q[CURL_ERROR_SIZE];
  heroku_snippet(q, sizeof(q), why, strlen(why) > 200 ? 200 : strlen(why));
  if (req->vetoed) {
    heroku_fail(r, HEROKU_E_VETOED, "not sent: this agent may no longer change the "
                                     "formation (it does not hold the lock)");
    return 0;
  }
  if (req->overflow) {
    heroku_fail(r, HEROKU_E_BAD_REPLY,
                "HTTP %ld with a body over the %u-byte limit: is HEROKU_API_URL the "
                "Platform API?", code, HEROKU_MAX_BODY);
    return 0;
  }
  switch (req->rc) {
  case CURLE_OPERATION_TIMEDOUT:
    heroku_fail(r, HEROKU_E_TIMEOUT,
                "no complete reply within %.3gs (%s); the Platform API or the network "
                "is slow, see https://status.heroku.com", h->timeout, q);
    return 1;
  case CURLE_OUT_OF_MEMORY:
    heroku_fail(r, HEROKU_E_NOMEM, "out of memory (%s)", q);
    return 0;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    heroku_fail(r, HEROKU_E_UNAVAILABLE,
                "TLS verification failed (%s): check HEROKU_API_URL and the system's "
                "CA certificates (verification cannot be turned off)", q);
    return 0;
  default:
    break;
  }
  if (heroku_curl_retryable(req->rc)) {
    heroku_fail(r, HEROKU_E_UNAVAILABLE,
                "network error (%s); check the network and HEROKU_API_URL", q);
    return 1;
  }
  heroku_fail(r, HEROKU_E_UNAVAILABLE,
              "request failed (%s); check HEROKU_API_URL", q);
  return 0;
}

static void attempt_done(heroku_req_t *req) {
  heroku_t *h = req->h;
  heroku_result_t *r = &req->res;
  long code = 0;
  curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &code);
  int retry;
  if (req->rc == CURLE_OK) {
    heroku_reply_parse(code, req->buf, req->len, r);
    retry = heroku_http_retryable(code);
  } else {
    retry = classify_curl_error(req, code);
  }

  /* The rate limit: 429 means none left, whatever the headers say. */
  uint64_t now = uv_now(h->loop);
  long remaining = code == 429 ? 0 : r->ratelimit_remaining;
  if (remaining >= 0) {
    if (remaining < RATELIMIT_LOW &&
        (h->ratelimit_remaining < 0 || h->ratelimit_remaining >= RATELIMIT_LOW))
      log_event(h->log, LOG_WARN, "heroku_ratelimit_low",
                "remaining=%ld backoff_s=%.3g", remaining, h->backoff_max);
    h->ratelimit_remaining = remaining;
    if (remaining == 0) {
      uint64_t until = now + ratelimit_delay_ms(h);
      if (until > h->not_before) h->not_before = until;
    }
  }

  if (r->status == 0) {
    char q_rid[100];
    log_event(h->log, LOG_DEBUG, "heroku_request",
              "method=%s formation=%s quantity=%ld http_status=%ld "
              "request_id=%s ratelimit_remaining=%ld attempts=%d",
              method_of(req), h->formation, r->quantity, r->http_status,
              log_quote(q_rid, sizeof(q_rid), r->request_id),
              r->ratelimit_remaining, r->attempts);
    finish(req);
    return;
  }
  /* A change is tried again here only when it surely did not apply. Else
   * (a 5xx, a timeout, a reply cut short) the caller reads the formation
   * before it sends the change again, so nothing is ever sent twice. */
  if (retry && req->patch && code != 429 && !heroku_not_sent(req->rc)) retry = 0;
  if (retry && r->attempts < h->max_attempts) {
    uint64_t delay = retry_delay_ms(h, r->attempts);
    if (now + delay < h->not_before) delay = h->not_before - now;
    log_failure(req, LOG_WARN, "heroku_retry", (long)delay);
    schedule(req, delay);
    return;
  }
  prefix_detail(req);
  log_failure(req, LOG_ERROR, "heroku_error", -1);
  finish(req);
}

/* Drains every finished transfer first, then handles them: a callback may
 * start calls, or close the client (then the rest were failed with
 * HEROKU_E_CLOSED already and are skipped). */
static void check_multi_info(heroku_t *h) {
  heroku_req_t *done = NULL, **tail = &done;
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *easy = m->easy_handle;
    CURLcode rc = m->data.result; /* m dies with the removal below */
    heroku_req_t *req = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
    curl_multi_remove_handle(h->multi, easy);
    if (req == NULL) continue;
    req->rc = rc;
    req->state = REQ_FINISHED;
    req->done_next = NULL;
    *tail = req;
    tail = &req->done_next;
  }
  while (done) {
    heroku_req_t *req = done;
    done = req->done_next;
    if (req->state == REQ_FINISHED) attempt_done(req);
  }
}

static int new_call(heroku_t *h, int patch, long quantity, heroku_cb cb,
                    void *data) {
  if (h == NULL || cb == NULL) return HEROKU_E_INVALID;
  if (h->closing || h->multi == NULL) return HEROKU_E_CLOSED;
  heroku_req_t *req = calloc(1, sizeof(*req));
  if (req == NULL) return HEROKU_E_NOMEM;
  req->h = h;
  req->patch = patch;
  req->quantity = quantity;
  req->cb = cb;
  req->data = data;
  req->res.quantity = -1;
  req->res.ratelimit_remaining = -1;
  req->easy = curl_easy_init();
  if (req->easy == NULL) {
    free(req);
    return HEROKU_E_NOMEM;
  }
  CURL *e = req->easy;
  long timeout_ms = (long)ceil(h->timeout * 1000.0);
  if (timeout_ms < 1) timeout_ms = 1;
  int bad = 0;
  bad |= curl_easy_setopt(e, CURLOPT_URL, h->url) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)req) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, req) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, req) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https") != CURLE_OK;
#else
  bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS,
                          (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS) !=
         CURLE_OK;
#endif
  bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
  /* A proxy from the environment is fine for https (a CONNECT tunnel), but
   * the token must not leave this machine over plain http. */
  if (strncmp(h->url, "http://", 7) == 0)
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK;
  if (patch) {
    snprintf(req->body, sizeof(req->body), "{\"quantity\":%ld}", quantity);
    bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PATCH") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(req->body)) !=
           CURLE_OK;
    /* On a reused connection that dies before any reply, libcurl sends the
     * request again by itself: a change the API may have applied. A fresh
     * connection is never retried that way. */
    bad |= curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, before_request) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PREREQDATA, req) != CURLE_OK;
  }
  if (bad) {
    curl_easy_cleanup(e);
    free(req);
    return HEROKU_E_INVALID;
  }
  uv_timer_init(h->loop, &req->timer);
  req->timer.data = req;
  h->handles_open++;
  req->next = h->reqs;
  if (h->reqs) h->reqs->prev = req;
  h->reqs = req;
  schedule(req, 0); /* the callback never runs before we return */
  return 0;
}

int heroku_get_formation(heroku_t *h, heroku_cb cb, void *data) {
  return new_call(h, 0, 0, cb, data);
}

int heroku_set_quantity(heroku_t *h, long quantity, heroku_cb cb, void *data) {
  if (quantity < 0 || quantity > 1000000) return HEROKU_E_INVALID;
  return new_call(h, 1, quantity, cb, data);
}

/* ---- life cycle ---------------------------------------------------- */

void heroku_options_default(heroku_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->api_url = "https://api.heroku.com";
  o->formation = "worker";
  o->timeout = 10.0;
  o->max_attempts = 3;
  o->backoff_min = 0.5;
  o->backoff_max = 5.0;
}

static int add_header(struct curl_slist **list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_header(struct curl_slist **list, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(line)) return -1;
  struct curl_slist *nl = curl_slist_append(*list, line);
  memset(line, 0, sizeof(line));
  if (nl == NULL) return -1;
  *list = nl;
  return 0;
}

/* "scalekiq/V (identity)": the identity comes from the environment, so
 * anything that could break the header line is replaced. */
static int add_user_agent(struct curl_slist **list, const char *identity) {
  if (identity == NULL || identity[0] == '\0')
    return add_header(list, "User-Agent: %s", USER_AGENT);
  char id[129];
  size_t n = 0;
  for (; identity[n] != '\0' && n < sizeof(id) - 1; n++) {
    unsigned char ch = (unsigned char)identity[n];
    id[n] = ch > ' ' && ch < 0x7f && ch != '(' && ch != ')' ? (char)ch : '_';
  }
  id[n] = '\0';
  return add_header(list, "User-Agent: %s (%s)", USER_AGENT, id);
}

int heroku_init(uv_loop_t *loop, heroku_t *h, const heroku_options_t *o,
                char *err, size_t errlen) {
  int rc = 0;
  memset(h, 0, sizeof(*h));
  h->loop = loop;
  h->ratelimit_remaining = -1;
  if (err && errlen) err[0] = '\0';
  if (loop == NULL || o == NULL) INIT_FAIL(HEROKU_E_INVALID, "no loop or options");
  if (o->app == NULL || o->app[0] == '\0' || strlen(o->app) > 100)
    INIT_FAIL(HEROKU_E_INVALID,
              "no Heroku app: set HEROKU_APP_NAME (or HEROKU_APP_ID)");
  if (o->formation == NULL || o->formation[0] == '\0' || strlen(o->formation) > 128)
    INIT_FAIL(HEROKU_E_INVALID,
              "no process type: set SCALEKIQ_FORMATION (such as worker)");
  if (o->token == NULL || o->token[0] == '\0')
    INIT_FAIL(HEROKU_E_INVALID, "no Heroku API token: set HEROKU_API_KEY");
  if (!heroku_printable_no_space(o->token) || strlen(o->token) > 512)
    INIT_FAIL(HEROKU_E_INVALID,
              "HEROKU_API_KEY holds spaces or control characters (or is over "
              "512 bytes): set it to the token alone");
  if (!(o->timeout > 0) || o->timeout > 3600)
    INIT_FAIL(HEROKU_E_INVALID, "Heroku request timeout must be in (0, 3600] s");
  if (o->max_attempts < 1 || o->max_attempts > 100)
    INIT_FAIL(HEROKU_E_INVALID, "Heroku max_attempts must be 1 to 100");
  if (!(o->backoff_min > 0) || !(o->backoff_max >= o->backoff_min) ||
      o->backoff_max > 3600)
    INIT_FAIL(HEROKU_E_INVALID,
              "Heroku backoff must satisfy 0 < backoff_min <= backoff_max <= 3600");
  if (o->api_url == NULL)
    INIT_FAIL(HEROKU_E_INVALID, "no HEROKU_API_URL");

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    INIT_FAIL(HEROKU_E_NOMEM, "libcurl failed to initialise");
  h->curl_global = 1;
  rc = heroku_check_api_url(o->api_url, err, errlen);
  if (rc < 0) goto fail;

  size_t base = strlen(o->api_url);
  while (base > 0 && o->api_url[base - 1] == '/') base--;
  h->url = malloc(base + sizeof("/apps/") + 3 * strlen(o->app) +
                  sizeof("/formation/") + 3 * strlen(o->formation) + 1);
  h->app = strdup(o->app);
  h->formation = strdup(o->formation);
  if (h->url == NULL || h->app == NULL || h->formation == NULL)
    INIT_FAIL(HEROKU_E_NOMEM, "out of memory");
  memcpy(h->url, o->api_url, base);
  strcpy(h->url + base, "/apps/");
  pct_encode(h->url, o->app);
  strcat(h->url, "/formation/");
  pct_encode(h->url, o->formation);

  if (add_header(&h->headers, "Accept: %s", ACCEPT) != 0 ||
      add_header(&h->headers, "Authorization: Bearer %s", o->token) != 0 ||
      add_header(&h->headers, "Content-Type: application/json") != 0 ||
      add_user_agent(&h->headers, o->identity) != 0)
    INIT_FAIL(HEROKU_E_NOMEM, "out of memory");

  h->multi = curl_multi_init();
  if (h->multi == NULL) INIT_FAIL(HEROKU_E_NOMEM, "out of memory");
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);

  h->timeout = o->timeout;
  h->max_attempts = o->max_attempts;
  h->backoff_min = o->backoff_min;
  h->backoff_max = o->backoff_max;
  h->may_change = o->may_change;
  h->may_change_data = o->may_change_data;
  h->log = o->log;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  h->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ (uintptr_t)h;
  if (h->rng == 0) h->rng = 0x9E3779B97F4A7C15ULL;

  uv_timer_init(loop, &h->curl_timer);
  h->curl_timer.data = h;
  h->handles_open = 1;
  return 0;

fail:
  if (h->multi) curl_multi_cleanup(h->multi);
  h->multi = NULL;
  h->closing = 1;
  h->close_cb = NULL;
  maybe_finish_close(h); /* frees the copies; handles_open is 0 */
  return rc;
}

void heroku_close(heroku_t *h, heroku_close_cb cb) {
  if (h->closing) return;
  h->closing = 1;
  h->close_cb = cb;
  while (h->reqs) {
    heroku_req_t *req = h->reqs;
    if (req->state == REQ_ACTIVE) curl_multi_remove_handle(h->multi, req->easy);
    req->res.status = HEROKU_E_CLOSED;
    req->res.quantity = -1;
    snprintf(req->res.detail, sizeof(req->res.detail),
             "the Heroku client was closed before the request completed");
    finish(req);
  }
  /* May call on_socket(REMOVE) for cached connections; whatever it leaves
   * is closed below. */
  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  while (h->socks) sock_close(h, h->socks);
  uv_close((uv_handle_t *)&h->curl_timer, handle_closed);
}
