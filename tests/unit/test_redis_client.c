/*
 * The Redis client's reply handling, against a scripted server on a Unix
 * socket in the same loop: replies split at every byte, error replies in
 * a pipeline, silence (timeouts), garbage, a peer that hangs up, the
 * SELECT handshake, and close with requests pending (AUTH is exercised
 * against a real redis-server in the integration tests). Each callback
 * must run exactly once.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redis.h"

enum mode {
  M_NORMAL,     /* answers everything */
  M_BYTEWISE,   /* answers everything, one byte per write */
  M_SILENT,     /* reads, never answers */
  M_GARBAGE,    /* answers with bytes that are not RESP */
  M_HANGUP,     /* closes the connection on the first command */
  M_AUTH_FAIL,  /* refuses AUTH */
  M_EXTRA,      /* answers the first command twice */
};

typedef struct server {
  uv_pipe_t listener;
  uv_pipe_t *peer;
  redisReader *reader;
  enum mode mode;
  char path[64];
  char seen[16][64]; /* first word (and arg) of each command received */
  int nseen;
  int connections;
} server_t;

typedef struct fixture {
  uv_loop_t loop;
  server_t srv;
  redis_t r;
  int ready_count;
  int disconnects;
  int last_status;
  char last_detail[256];
  /* per request bookkeeping */
  int calls[8];
  int status[8];
  size_t nreplies[8];
  char first[8][64];
  int types[8][4];
} fixture_t;

static fixture_t F;

static void free_write(uv_write_t *w, int status) {
  (void)status;
  free(w->data);
  free(w);
}

static void srv_send(server_t *s, const char *bytes, size_t len) {
  if (s->peer == NULL) return;
  size_t step = s->mode == M_BYTEWISE ? 1 : len;
  for (size_t off = 0; off < len; off += step) {
    size_t n = len - off < step ? len - off : step;
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = malloc(n);
    memcpy(copy, bytes + off, n);
    w->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    cr_assert_eq(uv_write(w, (uv_stream_t *)s->peer, &b, 1, free_write), 0);
  }
}

static void peer_closed(uv_handle_t *h) { free(h); }

static void srv_hangup(server_t *s) {
  if (s->peer && !uv_is_closing((uv_handle_t *)s->peer))
    uv_close((uv_handle_t *)s->peer, peer_closed);
  s->peer = NULL;
}

static void srv_answer(server_t *s, redisReply *cmd) {
  const char *name = cmd->element[0]->str;
  if (s->nseen < 16) {
    snprintf(s->seen[s->nseen++], 64, "%s%s%s", name, cmd->elements > 1 ? " " : "",
             cmd->elements > 1 ? cmd->element[1]->str : "");
  }
  switch (s->mode) {
  case M_SILENT: return;
  case M_HANGUP: srv_hangup(s); return;
  case M_GARBAGE: srv_send(s, "?what\r\n", 7); return;
  default: break;
  }
  if (strcasecmp(name, "AUTH") == 0) {
    if (s->mode == M_AUTH_FAIL)
      srv_send(s, "-WRONGPASS invalid username-password pair\r\n", 43);
    else
      srv_send(s, "+OK\r\n", 5);
  } else if (strcasecmp(name, "SELECT") == 0) {
    srv_send(s, "+OK\r\n", 5);
  } else if (strcasecmp(name, "PING") == 0) {
    srv_send(s, "+PONG\r\n", 7);
  } else if (strcasecmp(name, "BOOM") == 0) {
    srv_send(s, "-ERR boom\r\n", 11);
  } else if (strcasecmp(name, "ECHO") == 0) {
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "$%zu\r\n%s\r\n", strlen(cmd->element[1]->str),
                     cmd->element[1]->str);
    srv_send(s, buf, (size_t)n);
  } else if (strcasecmp(name, "LIST") == 0) {
    srv_send(s, "*3\r\n:1\r\n$-1\r\n$3\r\nabc\r\n", 22);
  }
  if (s->mode == M_EXTRA) {
    s->mode = M_NORMAL;
    srv_send(s, "+EXTRA\r\n", 8);
  }
}

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  (void)hint;
  static char buf[4096];
  *b = uv_buf_init(buf, sizeof(buf));
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  server_t *s = st->data;
  if (n < 0) {
    if ((uv_pipe_t *)st == s->peer) srv_hangup(s);
    else uv_close((uv_handle_t *)st, peer_closed);
    return;
  }
  if ((uv_pipe_t *)st != s->peer) return;
  redisReaderFeed(s->reader, b->base, (size_t)n);
  void *reply;
  while (s->peer == (uv_pipe_t *)st && redisReaderGetReply(s->reader, &reply) == REDIS_OK &&
         reply != NULL) {
    srv_answer(s, reply);
    freeReplyObject(reply);
  }
}

static void srv_connection(uv_stream_t *l, int status) {
  server_t *s = l->data;
  cr_assert_eq(status, 0);
  uv_pipe_t *p = malloc(sizeof(*p));
  uv_pipe_init(l->loop, p, 0);
  p->data = s;
  cr_assert_eq(uv_accept(l, (uv_stream_t *)p), 0);
  srv_hangup(s); /* one client at a time */
  s->peer = p;
  s->connections++;
  if (s->reader) redisReaderFree(s->reader);
  s->reader = redisReaderCreate();
  uv_read_start((uv_stream_t *)p, srv_alloc, srv_read);
}

static void on_state(redis_t *r, enum redis_state st, int status,
                     const char *detail, void *data) {
  (void)r;
  (void)data;
  if (st == REDIS_STATE_READY) F.ready_count++;
  if (st == REDIS_STATE_DISCONNECTED) {
    F.disconnects++;
    F.last_status = status;
    snprintf(F.last_detail, sizeof(F.last_detail), "%s", detail ? detail : "");
  }
}

static void on_reply(redis_t *r, int status, redisReply **rep, size_t n,
                     void *data) {
  (void)r;
  int i = (int)(intptr_t)data;
  F.calls[i]++;
  F.status[i] = status;
  F.nreplies[i] = n;
  for (size_t k = 0; k < n && k < 4; k++) F.types[i][k] = rep[k]->type;
  if (n > 0 && rep[0]->str)
    snprintf(F.first[i], sizeof(F.first[i]), "%s", rep[0]->str);
}

static void setup_with(enum mode mode, const char *userinfo_db, double timeout,
                       int reconnect) {
  memset(&F, 0, sizeof(F));
  uv_loop_init(&F.loop);
  F.srv.mode = mode;
  snprintf(F.srv.path, sizeof(F.srv.path), "/tmp/scalekiq-fake-%d.sock", getpid());
  unlink(F.srv.path);
  uv_pipe_init(&F.loop, &F.srv.listener, 0);
  F.srv.listener.data = &F.srv;
  cr_assert_eq(uv_pipe_bind(&F.srv.listener, F.srv.path), 0);
  cr_assert_eq(uv_listen((uv_stream_t *)&F.srv.listener, 8, srv_connection), 0);

  redis_options_t o;
  redis_options_default(&o);
  o.request_timeout = timeout;
  o.connect_timeout = timeout;
  o.backoff_min = 0.01;
  o.backoff_max = 0.02;
  o.reconnect = reconnect;
  o.on_state = on_state;
  char url[160];
  snprintf(url, sizeof(url), "unix://%s%s", F.srv.path, userinfo_db ? userinfo_db : "");
  cr_assert_eq(redis_init(&F.loop, &F.r, url, &o), 0, "%s", redis_last_error(&F.r));
}

/* Runs the loop until cond holds (bounded by a wall-clock deadline so a
 * broken client fails the test instead of hanging it). */
static void wake(uv_timer_t *t) { (void)t; }

static int run_until(int (*cond)(void), double seconds) {
  uv_timer_t deadline;
  uv_timer_init(&F.loop, &deadline);
  uv_timer_start(&deadline, wake, (uint64_t)(seconds * 1000), 0);
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  while (!cond() && uv_hrtime() < end) uv_run(&F.loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(&F.loop, UV_RUN_NOWAIT);
  return cond();
}

static int is_ready(void) { return F.r.state == REDIS_STATE_READY; }
static int calls0(void) { return F.calls[0] > 0; }
static int calls01(void) { return F.calls[0] > 0 && F.calls[1] > 0; }
static int disconnected(void) { return F.disconnects > 0; }
static int three_disconnects(void) { return F.disconnects >= 3; }

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void teardown_all(void) {
  if (!F.r.closing) redis_close(&F.r, NULL);
  srv_hangup(&F.srv);
  uv_close((uv_handle_t *)&F.srv.listener, NULL);
  uv_run(&F.loop, UV_RUN_DEFAULT);
  uv_walk(&F.loop, close_walk, NULL);
  uv_run(&F.loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&F.loop), 0, "handles left open");
  if (F.srv.reader) redisReaderFree(F.srv.reader);
  unlink(F.srv.path);
}

static void send_pipeline(int idx, const char *const *cmds, size_t n) {
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  for (size_t i = 0; i < n; i++) cr_assert_eq(redis_pipeline_appendf(&p, cmds[i]), 0);
  cr_assert_eq(redis_pipeline_send(&F.r, &p, on_reply, (void *)(intptr_t)idx), 0);
  cr_assert_eq(p.ncmds, 0, "send must take the pipeline's commands");
}

Test(redis_client, pipelines_in_order_even_bytewise) {
  setup_with(M_BYTEWISE, NULL, 2.0, 0);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING", "ECHO hello", "BOOM", "LIST"};
  const char *b[] = {"ECHO second"};
  send_pipeline(0, a, 4);
  send_pipeline(1, b, 1);
  cr_assert(run_until(calls01, 3));
  cr_assert_eq(F.calls[0], 1);
  cr_assert_eq(F.status[0], 0);
  cr_assert_eq(F.nreplies[0], 4);
  cr_assert_str_eq(F.first[0], "PONG");
  cr_assert_eq(F.types[0][0], REDIS_REPLY_STATUS);
  cr_assert_eq(F.types[0][1], REDIS_REPLY_STRING);
  cr_assert_eq(F.types[0][2], REDIS_REPLY_ERROR, "an error reply is a reply");
  cr_assert_eq(F.types[0][3], REDIS_REPLY_ARRAY);
  cr_assert_eq(F.calls[1], 1);
  cr_assert_str_eq(F.first[1], "second");
  cr_assert_eq(F.r.stats.commands, 5);
  cr_assert_eq(F.r.stats.writes, 2);
  teardown_all();
}

Test(redis_client, requests_queued_while_connecting_are_sent_after_handshake) {
  setup_with(M_NORMAL, "?db=2", 2.0, 0);
  redis_connect(&F.r);
  const char *a[] = {"ECHO early"};
  send_pipeline(0, a, 1); /* while CONNECTING */
  cr_assert(run_until(calls0, 3));
  cr_assert_eq(F.status[0], 0);
  cr_assert_str_eq(F.first[0], "early");
  cr_assert_str_eq(F.srv.seen[0], "SELECT 2", "handshake first, got %s", F.srv.seen[0]);
  cr_assert_str_eq(F.srv.seen[1], "ECHO early");
  teardown_all();
}

Test(redis_client, silence_times_out_each_request_once_and_reconnects) {
  setup_with(M_SILENT, NULL, 0.2, 1);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING"};
  send_pipeline(0, a, 1);
  send_pipeline(1, a, 1);
  cr_assert(run_until(calls01, 3));
  cr_assert_eq(F.status[0], REDIS_E_TIMEOUT);
  cr_assert_eq(F.status[1], REDIS_E_TIMEOUT);
  cr_assert_str_eq(F.last_detail, "Redis request timed out after 0.2s");
  F.srv.mode = M_NORMAL;
  int ready_before = F.ready_count;
  cr_assert(run_until(is_ready, 3), "no reconnect");
  cr_assert_gt(F.ready_count, ready_before);
  cr_assert_eq(F.srv.connections, 2);
  /* nothing more arrives for the failed requests */
  uv_run(&F.loop, UV_RUN_NOWAIT);
  cr_assert_eq(F.calls[0], 1);
  cr_assert_eq(F.calls[1], 1);
  teardown_all();
}

Test(redis_client, garbage_is_a_protocol_error) {
  setup_with(M_GARBAGE, NULL, 2.0, 0);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING"};
  send_pipeline(0, a, 1);
  cr_assert(run_until(calls0, 3));
  cr_assert_eq(F.status[0], REDIS_E_PROTOCOL);
  cr_assert_eq(F.r.state, REDIS_STATE_DISCONNECTED);
  teardown_all();
}

Test(redis_client, unsolicited_reply_drops_the_connection) {
  setup_with(M_EXTRA, NULL, 2.0, 0);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING"};
  send_pipeline(0, a, 1);
  cr_assert(run_until(disconnected, 3));
  cr_assert_eq(F.calls[0], 1);
  cr_assert_eq(F.status[0], 0);
  cr_assert_eq(F.last_status, REDIS_E_PROTOCOL);
  teardown_all();
}

Test(redis_client, hangup_fails_every_pending_request_once) {
  setup_with(M_HANGUP, NULL, 2.0, 0);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING", "PING"};
  send_pipeline(0, a, 2);
  send_pipeline(1, a, 1);
  cr_assert(run_until(calls01, 3));
  cr_assert_eq(F.status[0], REDIS_E_IO);
  cr_assert_eq(F.status[1], REDIS_E_IO);
  cr_assert_eq(F.calls[0], 1);
  cr_assert_eq(F.calls[1], 1);
  /* reconnect off: a send now is refused at once, with no callback */
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  redis_pipeline_appendf(&p, "PING");
  cr_assert_eq(redis_pipeline_send(&F.r, &p, on_reply, (void *)(intptr_t)2),
               REDIS_E_NOTCONN);
  uv_run(&F.loop, UV_RUN_NOWAIT);
  cr_assert_eq(F.calls[2], 0);
  teardown_all();
}

Test(redis_client, close_fails_pending_with_closed) {
  setup_with(M_SILENT, NULL, 5.0, 1);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  const char *a[] = {"PING"};
  send_pipeline(0, a, 1);
  uv_run(&F.loop, UV_RUN_NOWAIT);
  redis_close(&F.r, NULL);
  cr_assert_eq(F.calls[0], 1);
  cr_assert_eq(F.status[0], REDIS_E_CLOSED);
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  redis_pipeline_appendf(&p, "PING");
  cr_assert_eq(redis_pipeline_send(&F.r, &p, on_reply, NULL), REDIS_E_CLOSED);
  teardown_all();
}

Test(redis_client, connect_refused_reports_once_and_backs_off) {
  setup_with(M_NORMAL, NULL, 1.0, 1);
  uv_close((uv_handle_t *)&F.srv.listener, NULL);
  uv_run(&F.loop, UV_RUN_NOWAIT);
  unlink(F.srv.path);
  redis_connect(&F.r);
  cr_assert(run_until(disconnected, 3));
  cr_assert_eq(F.last_status, REDIS_E_IO);
  cr_assert_not_null(strstr(F.last_detail, "cannot connect"), "%s", F.last_detail);
  /* it keeps trying with backoff: more attempts follow by themselves */
  cr_assert(run_until(three_disconnects, 2));
  cr_assert_eq(F.ready_count, 0);
  redis_close(&F.r, NULL);
  uv_run(&F.loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&F.loop), 0);
}

Test(redis_client, empty_pipeline_is_refused) {
  setup_with(M_NORMAL, NULL, 1.0, 0);
  redis_connect(&F.r);
  cr_assert(run_until(is_ready, 3));
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  cr_assert_eq(redis_pipeline_send(&F.r, &p, on_reply, NULL), REDIS_E_INVALID);
  teardown_all();
}
