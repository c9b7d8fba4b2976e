/*
 * store: owns the persisted autoscaler state in Redis -- the key names
 * (one place builds them all), the gem-compatible value formats, and the
 * two round trips that read and write them. It decides nothing: parsing
 * and sanitizing belong to scaler_state_parse(), when to write and with
 * which leader id belong to the agent and the leader module.
 *
 * Why a Lua script for the write: the gem issues three loose SETs and a
 * DEL from another object; a crash or a leader change between them leaves
 * a depth without its initial workers. One EVAL writes all four keys or
 * none, and checks the fencing token in the same atomic step, so a leader
 * whose lease has lapsed cannot overwrite its successor's state.
 */
#include "store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KEYS: depth, last_alerted, latency_event_started, initial workers, leader.
 * ARGV: the four values (initial "" deletes the key), then the caller's
 * leader id when fencing is wanted. GET of an absent key is false in Lua,
 * which never equals a string: no leader means nobody may write. Returns 1
 * when written, 0 when fenced off. */
static const char SAVE_SCRIPT[] =
    "if ARGV[5] and redis.call('GET', KEYS[5]) ~= ARGV[5] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "redis.call('SET', KEYS[3], ARGV[3])\n"
    "if ARGV[4] == '' then redis.call('DEL', KEYS[4])\n"
    "else redis.call('SET', KEYS[4], ARGV[4]) end\n"
    "return 1\n";

const char *store_strerror(int code) {
  switch (code) {
  case STORE_E_NOT_LEADER: return "not the leader: state not written";
  case STORE_E_REPLY: return "Redis refused the command";
  default: return redis_strerror(code);
  }
}

/* ---- keys ---------------------------------------------------------- */

static char *key(const char *ns, const char *suffix) {
  size_t len = strlen(ns) + 1 + strlen(suffix) + 1;
  char *k = malloc(len);
  if (k != NULL) snprintf(k, len, "%s/%s", ns, suffix);
  return k;
}

int store_init(store_t *s, redis_t *r, const char *ns, const char *formation,
               log_t *log) {
  memset(s, 0, sizeof(*s));
  if (formation == NULL || formation[0] == '\0') return REDIS_E_INVALID;
  if (ns == NULL || ns[0] == '\0') ns = STORE_DEFAULT_NAMESPACE;
  s->redis = r;
  s->log = log;

  /* The gem's "amigo/autoscaler/heroku/F/..." is N/heroku/F/... for the
   * default N; see store.h. */
  const char *tail = "/active_event_initial_workers";
  size_t ilen = strlen("heroku/") + strlen(formation) + strlen(tail) + 1;
  char *initial = malloc(ilen);
  if (initial != NULL) {
    snprintf(initial, ilen, "heroku/%s%s", formation, tail);
    s->k_initial = key(ns, initial);
    free(initial);
  }
  s->k_depth = key(ns, "depth");
  s->k_last_alerted = key(ns, "last_alerted");
  s->k_event_started = key(ns, "latency_event_started");
  s->k_leader = key(ns, "leader");
  s->k_fence = key(ns, "fence");
  s->k_paused = key(ns, "paused");
  s->k_history = key(ns, "history");
  if (!s->k_initial || !s->k_depth || !s->k_last_alerted || !s->k_event_started ||
      !s->k_leader || !s->k_fence || !s->k_paused || !s->k_history) {
    store_close(s);
    return REDIS_E_NOMEM;
  }
  return 0;
}

void store_close(store_t *s) {
  char **keys[] = {&s->k_depth,  &s->k_last_alerted, &s->k_event_started,
                   &s->k_initial, &s->k_leader,      &s->k_fence,
                   &s->k_paused,  &s->k_history};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    free(*keys[i]);
    *keys[i] = NULL;
  }
}

/* ---- formats ------------------------------------------------------- */

/* What Ruby's Float#to_s writes and its String#to_f reads back: always a
 * decimal point ("0.0", "1700000000.5"). Microseconds are all Time#to_f
 * carries in practice. Beyond 1e15 "%.6f" would not fit (and such a time
 * is garbage anyway): exponent form, which to_f also reads. The C locale
 * is assumed for the decimal point: nothing in scalekiq calls setlocale. */
static void format_time(char *buf, size_t size, double v) {
  if (!isfinite(v) || v == 0) {
    snprintf(buf, size, "0.0");
    return;
  }
  if (fabs(v) >= 1e15) {
    snprintf(buf, size, "%.16e", v);
    return;
  }
  snprintf(buf, size, "%.6f", v);
  char *dot = strchr(buf, '.');
  if (dot == NULL) return;
  char *end = buf + strlen(buf) - 1;
  while (end > dot + 1 && *end == '0') *end-- = '\0';
}

void store_format_state(const scaler_state_t *st, char depth[STORE_INT_LEN],
                        char last_alerted[STORE_FLOAT_LEN],
                        char event_started[STORE_FLOAT_LEN],
                        char initial[STORE_INT_LEN]) {
  snprintf(depth, STORE_INT_LEN, "%ld", st->depth);
  format_time(last_alerted, STORE_FLOAT_LEN, st->last_alerted);
  /* The gem writes Time.at(0) outside an event, whatever was left over. */
  format_time(event_started, STORE_FLOAT_LEN,
              st->depth > 0 ? st->event_started : 0.0);
  if (st->initial_workers < 0) initial[0] = '\0';
  else snprintf(initial, STORE_INT_LEN, "%ld", st->initial_workers);
}

/* ---- load ---------------------------------------------------------- */

typedef struct load_ctx {
  const store_t *store;
  double now;
  store_load_cb cb;
  void *data;
} load_ctx_t;

/* A value is text to the parser; an embedded NUL would make "3\0junk"
 * read as 3. The reply is ours until the callback returns, so mark the
 * NULs in place: the value then reads as the nonsense it is. */
static const char *value_text(redisReply *v) {
  if (v->type != REDIS_REPLY_STRING) return NULL;
  for (size_t i = 0; i < v->len; i++)
    if (v->str[i] == '\0') v->str[i] = '?';
  return v->str;
}

int store_load_parse(const store_t *s, redisReply *a, double now,
                     scaler_state_t *out, char *warning, size_t wlen) {
  char q[600];
  warning[0] = '\0';
  if (a != NULL && a->type == REDIS_REPLY_ERROR) {
    log_event(s->log, LOG_ERROR, "store_load_failed", "error=%s",
              log_quote(q, sizeof(q), a->str));
    return STORE_E_REPLY;
  }
  if (a == NULL || a->type != REDIS_REPLY_ARRAY || a->elements != 4)
    return REDIS_E_PROTOCOL;
  for (size_t i = 0; i < 4; i++) {
    int t = a->element[i]->type;
    if (t != REDIS_REPLY_STRING && t != REDIS_REPLY_NIL) return REDIS_E_PROTOCOL;
  }
  /* The elements come in the order store_load_append asked for them. */
  int reset = scaler_state_parse(
      out, value_text(a->element[0]), value_text(a->element[1]),
      value_text(a->element[2]), value_text(a->element[3]), now, warning, wlen);
  if (reset) {
    if (warning[0] == '\0') snprintf(warning, wlen, "persisted state reset");
    char wq[1100];
    log_event(s->log, LOG_WARN, "store_state_reset", "detail=%s",
              log_quote(wq, sizeof(wq), warning));
  }
  return 0;
}

int store_load_append(const store_t *s, redis_pipeline_t *p) {
  if (s->k_depth == NULL) return REDIS_E_INVALID;
  return redis_pipeline_appendf(p, "MGET %s %s %s %s", s->k_depth, s->k_last_alerted,
                                s->k_event_started, s->k_initial);
}

static void on_load(redis_t *r, int status, redisReply **rep, size_t n,
                    void *data) {
  (void)r;
  load_ctx_t ctx = *(load_ctx_t *)data;
  free(data);
  if (status < 0) {
    ctx.cb(status, NULL, NULL, ctx.data);
    return;
  }
  scaler_state_t st;
  char why[1024];
  status = store_load_parse(ctx.store, n == 1 ? rep[0] : NULL, ctx.now, &st, why,
                            sizeof(why));
  if (status < 0) ctx.cb(status, NULL, NULL, ctx.data);
  else ctx.cb(0, &st, why[0] ? why : NULL, ctx.data);
}

int store_load(store_t *s, double now, store_load_cb cb, void *data) {
  if (s->k_depth == NULL || cb == NULL) return REDIS_E_INVALID;
  load_ctx_t *ctx = malloc(sizeof(*ctx));
  if (ctx == NULL) return REDIS_E_NOMEM;
  *ctx = (load_ctx_t){.store = s, .now = now, .cb = cb, .data = data};
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  store_load_append(s, &p);
  int rc = redis_pipeline_send(s->redis, &p, on_load, ctx);
  if (rc < 0) free(ctx);
  return rc;
}

/* ---- save ---------------------------------------------------------- */

typedef struct save_ctx {
  log_t *log;
  store_save_cb cb;
  void *data;
} save_ctx_t;

static void on_save(redis_t *r, int status, redisReply **rep, size_t n,
                    void *data) {
  (void)r;
  save_ctx_t ctx = *(save_ctx_t *)data;
  free(data);
  if (status < 0) {
    ctx.cb(status, ctx.data);
    return;
  }
  redisReply *v = n == 1 ? rep[0] : NULL;
  if (v != NULL && v->type == REDIS_REPLY_INTEGER) {
    ctx.cb(v->integer == 1 ? 0 : STORE_E_NOT_LEADER, ctx.data);
    return;
  }
  if (v != NULL && v->type == REDIS_REPLY_ERROR) {
    /* The callback carries no text: this is where the server's reason
     * (a READONLY replica, OOM, WRONGTYPE on N/leader) gets recorded. */
    char q[600];
    log_event(ctx.log, LOG_ERROR, "store_save_failed", "error=%s",
              log_quote(q, sizeof(q), v->str));
    ctx.cb(STORE_E_REPLY, ctx.data);
    return;
  }
  ctx.cb(REDIS_E_PROTOCOL, ctx.data);
}

int store_save(store_t *s, const scaler_state_t *state, const char *leader_id,
               store_save_cb cb, void *data) {
  if (s->k_depth == NULL || state == NULL || cb == NULL) return REDIS_E_INVALID;
  char depth[STORE_INT_LEN], last[STORE_FLOAT_LEN], started[STORE_FLOAT_LEN],
      initial[STORE_INT_LEN];
  store_format_state(state, depth, last, started, initial);

  const char *argv[] = {"EVAL",         SAVE_SCRIPT,       "5",
                        s->k_depth,     s->k_last_alerted, s->k_event_started,
                        s->k_initial,   s->k_leader,       depth,
                        last,           started,           initial,
                        leader_id};
  size_t lens[sizeof(argv) / sizeof(argv[0])];
  int argc = leader_id != NULL ? 13 : 12;
  for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);

  save_ctx_t *ctx = malloc(sizeof(*ctx));
  if (ctx == NULL) return REDIS_E_NOMEM;
  *ctx = (save_ctx_t){.log = s->log, .cb = cb, .data = data};
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  redis_pipeline_append_argv(&p, argc, argv, lens);
  /* send refuses (and frees p) if the append ran out of memory. */
  int rc = redis_pipeline_send(s->redis, &p, on_save, ctx);
  if (rc < 0) free(ctx);
  return rc;
}
