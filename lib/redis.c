/*
 * redis: owns the connection to Redis: name resolution, the libuv stream,
 * the handshake (AUTH, SELECT), the request queue with its deadlines, and
 * reconnecting. hiredis only formats and parses; the URL is redis_url.c's.
 *
 * Requests are kept in one FIFO in the order they were (or will be)
 * written, so replies are matched to them by counting. A connection is a
 * separate heap object because a libuv handle cannot be reused after
 * uv_close(): a dropped connection is marked dead and freed by its close
 * callback, while the client moves on to the next attempt.
 *
 * rediss:// adds one layer under the stream and nothing else: after the
 * TCP connect, a TLS handshake runs (ciphertext in and out through the
 * same stream, within the same connect deadline) before AUTH/SELECT;
 * afterwards reads are decrypted before they reach the hiredis reader and
 * writes encrypted before they reach uv_write. Every TLS failure is an
 * ordinary conn_drop, so errors, timeouts and reconnects are shared.
 */
#include "redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tls.h"

#define READ_CHUNK 65536
#define WRITE_ERROR_GRACE_MS 1000 /* see write_done */

struct redis_req {
  redis_req_t *next;
  char *buf; /* formatted commands; freed once written */
  size_t len;
  size_t ncmds;
  size_t ngot;
  redisReply **replies;
  redis_reply_cb cb;
  void *data;
  uint64_t deadline; /* uv_now() ms */
  int written;
  int handshake; /* AUTH/SELECT of the connection, not a caller's request */
};

struct redis_conn {
  redis_t *r; /* NULL once dropped: callbacks then only clean up */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t connect_req;
  uv_getaddrinfo_t resolve_req;
  int resolving; /* resolve_req in flight */
  int stream_open;
  redisReader *reader;
  tls_conn_t *tls; /* rediss://, once TCP is connected; NULL otherwise */
  int tls_ready;   /* handshake done: application data flows */
  char rbuf[READ_CHUNK];
};

typedef struct write_req {
  uv_write_t req;
  redis_conn_t *conn;
  char *buf;
} write_req_t;

static void conn_drop(redis_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void start_attempt(redis_t *r);
static void session_start(redis_t *r);
static void drop_soon(redis_t *r, int status, const char *why, uint64_t delay_ms);
static void arm_deadline(redis_t *r);
static void deadline_cb(uv_timer_t *t);

const char *redis_strerror(int code) {
  switch (code) {
  case 0: return "ok";
  case REDIS_E_INVALID: return "invalid argument";
  case REDIS_E_NOMEM: return "out of memory";
  case REDIS_E_NOTCONN: return "not connected to Redis";
  case REDIS_E_TIMEOUT: return "Redis request timed out";
  case REDIS_E_IO: return "Redis connection error";
  case REDIS_E_PROTOCOL: return "Redis protocol error";
  case REDIS_E_CLOSED: return "Redis client closed";
  case REDIS_E_AUTH: return "Redis refused AUTH or SELECT";
  case REDIS_E_UNSUPPORTED: return "not supported";
  case REDIS_E_TLS: return "Redis TLS error";
  default: return "unknown error";
  }
}

/* ---- request queue ------------------------------------------------- */

static void req_free(redis_req_t *req) {
  if (req->replies)
    for (size_t i = 0; i < req->ngot; i++) freeReplyObject(req->replies[i]);
  free(req->replies);
  free(req->buf);
  free(req);
}

static void queue_push(redis_t *r, redis_req_t *req, int front) {
  if (front) {
    req->next = r->head;
    r->head = req;
    if (r->tail == NULL) r->tail = req;
  } else {
    req->next = NULL;
    if (r->tail) r->tail->next = req;
    else r->head = req;
    r->tail = req;
  }
}

static redis_req_t *queue_pop(redis_t *r) {
  redis_req_t *req = r->head;
  if (req) {
    r->head = req->next;
    if (r->head == NULL) r->tail = NULL;
  }
  return req;
}

/* Fails a detached list of requests. */
static void fail_list(redis_t *r, redis_req_t *req, int status) {
  while (req) {
    redis_req_t *next = req->next;
    if (req->cb) req->cb(r, status, NULL, 0, req->data);
    req_free(req);
    req = next;
  }
}

/* Detaches the whole queue first: a callback that sends again must not
 * see, or be failed with, the requests of the connection that is gone. */
static redis_req_t *queue_take_all(redis_t *r) {
  redis_req_t *all = r->head;
  r->head = r->tail = NULL;
  return all;
}

/* ---- connection ---------------------------------------------------- */

static void set_state(redis_t *r, enum redis_state state, int status,
                      const char *detail) {
  r->state = state;
  if (r->opts.on_state) r->opts.on_state(r, state, status, detail, r->opts.data);
}

static void handle_closed(uv_handle_t *h) {
  redis_t *r = h->data;
  if (--r->handles_open == 0 && r->closing && r->close_cb) r->close_cb(r);
}

static void conn_free(redis_conn_t *c) {
  if (c->reader) redisReaderFree(c->reader);
  tls_conn_free(c->tls);
  free(c);
}

static void conn_stream_closed(uv_handle_t *h) {
  redis_conn_t *c = h->data;
  c->stream_open = 0;
  if (!c->resolving) conn_free(c);
}

/* Detaches c from its client and closes what it holds; freed once libuv
 * is done with it. */
static void conn_release(redis_conn_t *c) {
  c->r = NULL;
  if (c->stream_open) {
    if (!uv_is_closing(&c->h.handle)) uv_close(&c->h.handle, conn_stream_closed);
  } else if (c->resolving) {
    uv_cancel((uv_req_t *)&c->resolve_req);
  } else {
    conn_free(c);
  }
}

static uint64_t next_random(redis_t *r) {
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  return r->rng * 0x2545F4914F6CDD1DULL;
}

/* Full backoff: base * 2^attempts capped, then a random point in its
 * upper half, so agents that lost Redis together do not return together. */
static uint64_t backoff_ms(redis_t *r) {
  double d = r->opts.backoff_min;
  for (unsigned i = 1; i < r->attempts && d < r->opts.backoff_max; i++) d *= 2;
  if (d > r->opts.backoff_max) d = r->opts.backoff_max;
  uint64_t ms = (uint64_t)(d * 1000.0);
  if (ms < 2) return ms + 1;
  return ms / 2 + next_random(r) % (ms / 2 + 1);
}

static void retry_cb(uv_timer_t *t) {
  redis_t *r = t->data;
  start_attempt(r);
}

static void conn_drop(redis_t *r, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof(r->err), fmt, ap);
  va_end(ap);
  if (r->conn) {
    conn_release(r->conn);
    r->conn = NULL;
  }
  r->stats.drops++;
  r->attempts++;
  r->drop_status = 0;
  uv_timer_stop(&r->deadline_timer);
  redis_req_t *pending = queue_take_all(r);
  set_state(r, REDIS_STATE_DISCONNECTED, status, r->err);
  fail_list(r, pending, status);
  /* A callback may have reconnected or closed the client already. */
  if (r->closing || r->state != REDIS_STATE_DISCONNECTED || !r->opts.reconnect)
    return;
  uint64_t delay = backoff_ms(r);
  log_event(r->opts.log, LOG_DEBUG, "redis_reconnect", "in_ms=%llu attempt=%u",
            (unsigned long long)delay, r->attempts);
  uv_timer_start(&r->retry_timer, retry_cb, delay, 0);
}

static void write_done(uv_write_t *w, int status) {
  write_req_t *wr = (write_req_t *)w;
  redis_conn_t *c = wr->conn;
  free(wr->buf);
  free(wr);
  /* A failed write means the peer has gone, and what it sent before going
   * (a TLS alert such as "certificate required", an error reply) says why
   * far better than "connection reset". libuv reports the write before
   * the read, so let the read side drop the connection: on a dead socket
   * it gets that data, then EOF or the error, at the next poll. The timer
   * is only a fallback should it not. */
  if (status < 0 && c->r)
    drop_soon(c->r, REDIS_E_IO, uv_strerror(status), WRITE_ERROR_GRACE_MS);
}

/* Hands buf (owned from now on) to the stream as it is. Returns 0, or an
 * error code with why set. */
static int stream_write(redis_conn_t *c, char *buf, size_t len, char *why,
                        size_t whylen) {
  write_req_t *wr = malloc(sizeof(*wr));
  if (wr == NULL) {
    free(buf);
    snprintf(why, whylen, "out of memory");
    return REDIS_E_NOMEM;
  }
  wr->conn = c;
  wr->buf = buf;
  uv_buf_t b = uv_buf_init(buf, (unsigned)len);
  int rc = uv_write(&wr->req, &c->h.stream, &b, 1, write_done);
  if (rc < 0) {
    free(buf);
    free(wr);
    snprintf(why, whylen, "%s", uv_strerror(rc));
    return REDIS_E_IO;
  }
  return 0;
}

/* Sends what TLS has produced (handshake messages, alerts, records). */
static int tls_flush(redis_conn_t *c, char *why, size_t whylen) {
  char *buf;
  size_t len;
  if (tls_take_output(c->tls, &buf, &len) != 0) {
    snprintf(why, whylen, "out of memory");
    return REDIS_E_NOMEM;
  }
  return len ? stream_write(c, buf, len, why, whylen) : 0;
}

/* Writes plaintext buf (owned from now on): as it is on a plain
 * connection, as TLS records on a TLS one. */
static int conn_write(redis_conn_t *c, char *buf, size_t len, char *why,
                      size_t whylen) {
  if (c->tls == NULL) return stream_write(c, buf, len, why, whylen);
  int rc = tls_write(c->tls, buf, len, why, whylen);
  free(buf);
  if (rc != 0) return REDIS_E_TLS;
  return tls_flush(c, why, whylen);
}

/* flush_queue runs inside redis_pipeline_send, whose callers are promised
 * their callback later, never before send returns: a failure there (or a
 * failed write, see write_done) drops the connection from the deadline
 * timer at the next loop iteration, unless a read drops it first. */
static void drop_soon(redis_t *r, int status, const char *why, uint64_t delay_ms) {
  if (r->drop_status != 0) return; /* already on its way out */
  r->drop_status = status;
  snprintf(r->err, sizeof(r->err), "write to Redis failed: %s", why);
  uv_timer_start(&r->deadline_timer, deadline_cb, delay_ms, 0);
}

/* Writes every queued request that is not written yet, as one write. */
static void flush_queue(redis_t *r, int handshake_only) {
  redis_conn_t *c = r->conn;
  size_t total = 0, ncmds = 0;
  for (redis_req_t *q = r->head; q; q = q->next)
    if (!q->written && (!handshake_only || q->handshake)) total += q->len;
  if (total == 0) return;
  char *buf = malloc(total);
  if (buf == NULL) {
    drop_soon(r, REDIS_E_NOMEM, "out of memory", 0);
    return;
  }
  size_t off = 0;
  for (redis_req_t *q = r->head; q; q = q->next) {
    if (q->written || (handshake_only && !q->handshake)) continue;
    memcpy(buf + off, q->buf, q->len);
    off += q->len;
    ncmds += q->ncmds;
    free(q->buf);
    q->buf = NULL;
    q->written = 1;
  }
  char why[200];
  int rc = conn_write(c, buf, total, why, sizeof(why));
  if (rc < 0) {
    drop_soon(r, rc, why, 0);
    return;
  }
  r->stats.writes++;
  r->stats.commands += ncmds;
}

static void became_ready(redis_t *r) {
  r->attempts = 0;
  r->stats.connects++;
  set_state(r, REDIS_STATE_READY, 0, NULL);
  if (r->state == REDIS_STATE_READY) flush_queue(r, 0);
  arm_deadline(r);
}

static void handshake_done(redis_t *r, int status, redisReply **replies,
                           size_t n, void *data) {
  (void)data;
  if (status < 0) return; /* the drop already reported why */
  for (size_t i = 0; i < n; i++) {
    if (replies[i]->type == REDIS_REPLY_ERROR) {
      /* The server's text (e.g. WRONGPASS) never holds the password. */
      conn_drop(r, REDIS_E_AUTH, "Redis refused the connection setup: %s",
                replies[i]->str);
      return;
    }
  }
  became_ready(r);
}

static int reply_is_complete(redis_req_t *req) { return req->ngot == req->ncmds; }

static void dispatch_reply(redis_t *r, redisReply *reply) {
  redis_req_t *req = r->head;
  if (req == NULL || !req->written) {
    freeReplyObject(reply);
    conn_drop(r, REDIS_E_PROTOCOL, "Redis sent a reply nobody asked for");
    return;
  }
  req->replies[req->ngot++] = reply;
  r->stats.replies++;
  if (!reply_is_complete(req)) return;
  queue_pop(r);
  if (req->cb) req->cb(r, 0, req->replies, req->ngot, req->data);
  req_free(req);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  redis_conn_t *c = h->data;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

/* Plaintext from Redis: parsed, and every complete reply handed out.
 * Returns whether c is still the client's connection. */
static int feed_replies(redis_t *r, redis_conn_t *c, const char *data,
                        size_t len) {
  if (redisReaderFeed(c->reader, data, len) != REDIS_OK) {
    conn_drop(r, REDIS_E_PROTOCOL, "Redis protocol error: %s", c->reader->errstr);
    return 0;
  }
  /* A callback may close the client or drop the connection: stop as soon
   * as this connection is no longer the current one. */
  while (r->conn == c) {
    void *reply = NULL;
    if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
      conn_drop(r, REDIS_E_PROTOCOL, "Redis protocol error: %s",
                c->reader->errstr);
      return 0;
    }
    if (reply == NULL) break;
    dispatch_reply(r, reply);
  }
  if (r->conn != c) return 0;
  arm_deadline(r);
  return 1;
}

/* Ciphertext from Redis: it drives the handshake until that is done, then
 * is decrypted for the reader. It arrives in c->rbuf, which is reused for
 * the plaintext once tls_feed has copied it. */
static void tls_input(redis_t *r, redis_conn_t *c, const char *data, size_t len) {
  char why[256];
  int rc;
  if (tls_feed(c->tls, data, len) != 0) {
    conn_drop(r, REDIS_E_NOMEM, "out of memory reading from Redis");
    return;
  }
  if (!c->tls_ready) {
    int hs = tls_handshake(c->tls, why, sizeof(why));
    if (hs == TLS_ERROR) {
      char ignored[64];
      tls_flush(c, ignored, sizeof(ignored)); /* best effort: our alert */
      conn_drop(r, REDIS_E_TLS, "%s", why);
      return;
    }
    if ((rc = tls_flush(c, why, sizeof(why))) < 0) {
      conn_drop(r, rc, "write to Redis failed: %s", why);
      return;
    }
    if (hs == TLS_AGAIN) return;
    c->tls_ready = 1;
    log_event(r->opts.log, LOG_DEBUG, "redis_tls", "protocol=%s cipher=%s verify=%s",
              tls_protocol(c->tls), tls_cipher(c->tls),
              r->opts.tls.no_verify ? "none" : "peer");
    session_start(r);
    if (r->conn != c) return;
  }
  for (;;) {
    ssize_t n = tls_read(c->tls, c->rbuf, sizeof(c->rbuf), why, sizeof(why));
    if (n == 0) break;
    if (n == TLS_CLOSED) {
      conn_drop(r, REDIS_E_IO, "Redis connection lost: closed by the server");
      return;
    }
    if (n < 0) {
      conn_drop(r, REDIS_E_TLS, "%s", why);
      return;
    }
    if (!feed_replies(r, c, c->rbuf, (size_t)n)) return;
  }
  /* Reading may have produced records to send back (a TLS 1.3 key
   * update's answer). */
  if ((rc = tls_flush(c, why, sizeof(why))) < 0)
    conn_drop(r, rc, "write to Redis failed: %s", why);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  redis_conn_t *c = s->data;
  redis_t *r = c->r;
  if (r == NULL || nread == 0) return;
  if (nread < 0) {
    conn_drop(r, REDIS_E_IO, "Redis connection lost: %s%s",
              nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread),
              c->tls && !c->tls_ready ? " during the TLS handshake" : "");
    return;
  }
  if (c->tls) tls_input(r, c, buf->base, (size_t)nread);
  else feed_replies(r, c, buf->base, (size_t)nread);
}

static int queue_handshake(redis_t *r) {
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  if (r->url.password[0]) {
    if (r->url.username[0])
      redis_pipeline_appendf(&p, "AUTH %s %s", r->url.username, r->url.password);
    else
      redis_pipeline_appendf(&p, "AUTH %s", r->url.password);
  }
  if (r->url.db != 0) redis_pipeline_appendf(&p, "SELECT %d", r->url.db);
  if (p.ncmds == 0) return 0;
  if (p.failed) {
    redis_pipeline_reset(&p);
    return REDIS_E_NOMEM;
  }
  redis_req_t *req = calloc(1, sizeof(*req));
  redisReply **replies = calloc(p.ncmds, sizeof(*replies));
  if (req == NULL || replies == NULL) {
    free(req);
    free(replies);
    redis_pipeline_reset(&p);
    return REDIS_E_NOMEM;
  }
  req->buf = p.buf;
  req->len = p.len;
  req->ncmds = p.ncmds;
  req->replies = replies;
  req->cb = handshake_done;
  req->handshake = 1;
  req->deadline = r->connect_deadline;
  queue_push(r, req, 1);
  return 1;
}

/* The connection carries Redis' protocol now (after TLS, if any):
 * AUTH/SELECT, or ready at once when there is nothing to set up. */
static void session_start(redis_t *r) {
  int rc = queue_handshake(r);
  if (rc < 0) {
    conn_drop(r, rc, "out of memory preparing the Redis handshake");
  } else if (rc > 0) {
    flush_queue(r, 1);
  } else {
    became_ready(r);
  }
}

static void on_connect(uv_connect_t *creq, int status) {
  redis_conn_t *c = creq->data;
  redis_t *r = c->r;
  if (r == NULL) return;
  if (status < 0) {
    conn_drop(r, REDIS_E_IO, "cannot connect to Redis: %s", uv_strerror(status));
    return;
  }
  int rc = uv_read_start(&c->h.stream, on_alloc, on_read);
  if (rc < 0) {
    conn_drop(r, REDIS_E_IO, "cannot read from Redis: %s", uv_strerror(rc));
    return;
  }
  if (r->tls == NULL) {
    session_start(r);
    return;
  }
  /* rediss://: send the ClientHello; tls_input takes it from here. */
  char why[256];
  c->tls = tls_conn_new(r->tls, r->url.host, why, sizeof(why));
  if (c->tls == NULL) {
    conn_drop(r, REDIS_E_TLS, "%s", why);
    return;
  }
  if (tls_handshake(c->tls, why, sizeof(why)) == TLS_ERROR) {
    conn_drop(r, REDIS_E_TLS, "%s", why);
    return;
  }
  if ((rc = tls_flush(c, why, sizeof(why))) < 0)
    conn_drop(r, rc, "write to Redis failed: %s", why);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai) {
  redis_conn_t *c = req->data;
  c->resolving = 0;
  redis_t *r = c->r;
  if (r == NULL) { /* dropped while resolving */
    if (ai) uv_freeaddrinfo(ai);
    if (!c->stream_open) conn_free(c);
    return;
  }
  if (status < 0) {
    conn_drop(r, REDIS_E_IO, "cannot resolve Redis host %s: %s", r->url.host,
              uv_strerror(status));
    return;
  }
  int rc = uv_tcp_init(r->loop, &c->h.tcp);
  if (rc == 0) {
    c->stream_open = 1;
    c->h.handle.data = c;
    uv_tcp_nodelay(&c->h.tcp, 1);
    rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, ai->ai_addr, on_connect);
  }
  uv_freeaddrinfo(ai);
  if (rc < 0)
    conn_drop(r, REDIS_E_IO, "cannot connect to Redis: %s", uv_strerror(rc));
}

static void start_attempt(redis_t *r) {
  if (r->closing) return;
  /* The loop's clock may be stale: redis_init may just have spent a while
   * reading CA certificates, and that must not eat into the timeout. */
  uv_update_time(r->loop);
  r->connect_deadline =
      uv_now(r->loop) + (uint64_t)(r->opts.connect_timeout * 1000.0);
  set_state(r, REDIS_STATE_CONNECTING, 0, NULL);
  if (r->closing) return; /* the state callback closed us */
  redis_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL || (c->reader = redisReaderCreate()) == NULL) {
    free(c);
    conn_drop(r, REDIS_E_NOMEM, "out of memory connecting to Redis");
    return;
  }
  c->r = r;
  c->connect_req.data = c;
  c->resolve_req.data = c;
  r->conn = c;
  arm_deadline(r);

  int rc;
  if (r->url.transport == REDIS_TRANSPORT_UNIX) {
    rc = uv_pipe_init(r->loop, &c->h.pipe, 0);
    if (rc == 0) {
      c->stream_open = 1;
      c->h.handle.data = c;
      uv_pipe_connect(&c->connect_req, &c->h.pipe, r->url.path, on_connect);
    }
  } else {
    char port[8];
    snprintf(port, sizeof(port), "%d", r->url.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    rc = uv_getaddrinfo(r->loop, &c->resolve_req, on_resolved, r->url.host,
                        port, &hints);
    if (rc == 0) c->resolving = 1;
  }
  if (rc < 0)
    conn_drop(r, REDIS_E_IO, "cannot connect to Redis: %s", uv_strerror(rc));
}

/* ---- deadlines ----------------------------------------------------- */

/* Requests only exist while CONNECTING or READY (a drop fails them all),
 * so any expired one means the connection is not answering: drop it. */
static void deadline_cb(uv_timer_t *t) {
  redis_t *r = t->data;
  if (r->drop_status != 0) {
    int status = r->drop_status;
    char why[sizeof(r->err)]; /* conn_drop writes r->err: no overlap */
    snprintf(why, sizeof(why), "%s", r->err);
    r->drop_status = 0;
    conn_drop(r, status, "%s", why);
    return;
  }
  uint64_t now = uv_now(r->loop);
  if (r->state == REDIS_STATE_CONNECTING && now >= r->connect_deadline) {
    redis_conn_t *c = r->conn;
    conn_drop(r, REDIS_E_TIMEOUT, "connecting to Redis timed out after %.3gs%s",
              r->opts.connect_timeout,
              c && c->tls && !c->tls_ready ? " in the TLS handshake" : "");
    return;
  }
  for (redis_req_t *q = r->head; q; q = q->next) {
    if (now >= q->deadline) {
      conn_drop(r, REDIS_E_TIMEOUT, "Redis request timed out after %.3gs",
                r->opts.request_timeout);
      return;
    }
  }
  arm_deadline(r);
}

static void arm_deadline(redis_t *r) {
  if (r->closing || r->drop_status != 0) return;
  uint64_t next = UINT64_MAX;
  if (r->state == REDIS_STATE_CONNECTING) next = r->connect_deadline;
  for (redis_req_t *q = r->head; q; q = q->next)
    if (q->deadline < next) next = q->deadline;
  if (next == UINT64_MAX) {
    uv_timer_stop(&r->deadline_timer);
    return;
  }
  uint64_t now = uv_now(r->loop);
  uv_timer_start(&r->deadline_timer, deadline_cb, next > now ? next - now : 0, 0);
}

/* ---- public -------------------------------------------------------- */

void redis_options_default(redis_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->connect_timeout = 5.0;
  o->request_timeout = 5.0;
  o->backoff_min = 0.1;
  o->backoff_max = 10.0;
  o->reconnect = 1;
}

int redis_init(uv_loop_t *loop, redis_t *r, const char *url,
               const redis_options_t *opts) {
  memset(r, 0, sizeof(*r));
  r->loop = loop;
  if (opts) r->opts = *opts;
  else redis_options_default(&r->opts);
  if (redis_url_parse(url, &r->url, r->err, sizeof(r->err)) != 0)
    return REDIS_E_INVALID;
  if (!(r->opts.connect_timeout > 0) || !(r->opts.request_timeout > 0) ||
      !(r->opts.backoff_min > 0) || r->opts.backoff_max < r->opts.backoff_min) {
    snprintf(r->err, sizeof(r->err), "Redis timeouts and backoff must be > 0");
    return REDIS_E_INVALID;
  }
  if (r->url.tls) {
    /* Built once, so that every (re)connection reuses the files read. */
    const redis_tls_options_t *t = &r->opts.tls;
    r->tls = tls_ctx_new(!t->no_verify, t->ca_file, t->cert_file, t->key_file,
                         r->err, sizeof(r->err));
    if (r->tls == NULL) return REDIS_E_INVALID;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  r->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ (uintptr_t)r;
  if (r->rng == 0) r->rng = 0x9E3779B97F4A7C15ULL;
  uv_timer_init(loop, &r->deadline_timer);
  uv_timer_init(loop, &r->retry_timer);
  r->deadline_timer.data = r;
  r->retry_timer.data = r;
  r->handles_open = 2;
  r->state = REDIS_STATE_DISCONNECTED;
  return 0;
}

int redis_connect(redis_t *r) {
  if (r->closing) return REDIS_E_CLOSED;
  if (r->state != REDIS_STATE_DISCONNECTED) return 0;
  uv_timer_stop(&r->retry_timer);
  start_attempt(r);
  return 0;
}

void redis_close(redis_t *r, redis_close_cb cb) {
  if (r->closing) return;
  r->closing = 1;
  r->close_cb = cb;
  if (r->conn) {
    conn_release(r->conn);
    r->conn = NULL;
  }
  r->state = REDIS_STATE_CLOSED;
  tls_ctx_free(r->tls); /* a connection still closing keeps its own ref */
  r->tls = NULL;
  fail_list(r, queue_take_all(r), REDIS_E_CLOSED);
  uv_close((uv_handle_t *)&r->deadline_timer, handle_closed);
  uv_close((uv_handle_t *)&r->retry_timer, handle_closed);
}

const char *redis_last_error(const redis_t *r) { return r->err; }

int redis_pipeline_send(redis_t *r, redis_pipeline_t *p, redis_reply_cb cb,
                        void *data) {
  int rc = 0;
  if (r->closing) rc = REDIS_E_CLOSED;
  else if (r->state == REDIS_STATE_DISCONNECTED) rc = REDIS_E_NOTCONN;
  else if (p->failed) rc = REDIS_E_NOMEM;
  else if (p->ncmds == 0) rc = REDIS_E_INVALID;
  if (rc < 0) {
    redis_pipeline_reset(p);
    return rc;
  }
  redis_req_t *req = calloc(1, sizeof(*req));
  redisReply **replies = calloc(p->ncmds, sizeof(*replies));
  if (req == NULL || replies == NULL) {
    free(req);
    free(replies);
    redis_pipeline_reset(p);
    return REDIS_E_NOMEM;
  }
  req->buf = p->buf;
  req->len = p->len;
  req->ncmds = p->ncmds;
  req->replies = replies;
  req->cb = cb;
  req->data = data;
  req->deadline = uv_now(r->loop) + (uint64_t)(r->opts.request_timeout * 1000.0);
  redis_pipeline_init(p); /* the buffer now belongs to the request */
  queue_push(r, req, 0);
  if (r->state == REDIS_STATE_READY) flush_queue(r, 0);
  arm_deadline(r);
  return 0;
}
