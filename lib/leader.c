/*
 * leader: owns this agent's lease on N/leader and its token from N/fence.
 *
 * It owns three timers (the tick, the lease end, a deferral for callbacks
 * that must not run inside a leader_* call), at most one acquire/renew
 * command and one release command in flight, and the belief "I lead".
 * It does not own the redis_t, the keys' values (store.c fences its
 * writes with N/leader == our id), or what the agent does while leading.
 *
 * Safety rests on one inequality: the lease is counted from uv_hrtime()
 * taken BEFORE the command is sent, and ends a margin before ttl; the
 * server counts the same ttl from when it runs the command, which is
 * later. So this agent stops believing before the key can expire for
 * anyone else, whatever the reply's delay, and even with no reply at all.
 */
#include "leader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Takes the key when free, or when it already holds our id (a reply we
 * never got may have won it, or we stopped believing by our clock while
 * the server still counts our TTL: re-adopting it avoids leaving the
 * formation leaderless for a whole TTL). Every win increments N/fence, so
 * each leadership this agent announces has a new, larger token. Returns
 * {1, token} or {0, holder}: the follower learns the holder for status
 * with the same single command. Works on Redis 6 (no SET ... GET). */
static const char ACQUIRE_SCRIPT[] =
    "local cur = redis.call('get', KEYS[1])\n"
    "if cur == false or cur == ARGV[1] then\n"
    "  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return {1, redis.call('incr', KEYS[2])}\n"
    "end\n"
    "return {0, cur}\n";

/* Compare-and-expire: {1} renewed, or {0, holder} (holder nil: gone). */
static const char RENEW_SCRIPT[] =
    "local cur = redis.call('get', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('pexpire', KEYS[1], ARGV[2])\n"
    "  return {1}\n"
    "end\n"
    "return {0, cur}\n";

/* Compare-and-delete: never deletes another agent's lease. */
static const char RELEASE_SCRIPT[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('del', KEYS[1])\n"
    "end\n"
    "return 0\n";

/* ---- pure lease arithmetic ------------------------------------------ */

static uint64_t seconds_ns(double s) { return s <= 0 ? 0 : (uint64_t)(s * 1e9); }

double leader_default_margin(double ttl, double tick) {
  double m = tick / 2 > ttl / 10 ? tick / 2 : ttl / 10;
  double cap = (ttl - tick) / 2;
  return m < cap ? m : cap;
}

int leader_check_timing(double ttl, double tick, double margin, char *err,
                        size_t errlen) {
  /* NaN fails every comparison below, so each test is written to fail. */
  if (!(ttl >= 0.001)) {
    snprintf(err, errlen, "lock ttl %g s is too short: set it to 0.001 s or more", ttl);
    return -1;
  }
  if (!(tick > 0) || !(tick < ttl)) {
    snprintf(err, errlen,
             "lock tick %g s must be above 0 and shorter than the lock ttl (%g s), "
             "such as %g: the lease would lapse between renewals",
             tick, ttl, ttl / 3);
    return -1;
  }
  if (!(margin >= 0) || !(margin < ttl - tick)) {
    snprintf(err, errlen,
             "lock margin %g s must be at least 0 and below ttl - tick (%g s): "
             "the leader would stop believing before each renewal",
             margin, ttl - tick);
    return -1;
  }
  return 0;
}

uint64_t leader_lease_end(uint64_t sent, double ttl, double margin) {
  uint64_t t = seconds_ns(ttl), m = seconds_ns(margin);
  return sent + (t > m ? t - m : 0);
}

int leader_lease_valid(uint64_t now, uint64_t sent, double ttl, double margin) {
  return now < leader_lease_end(sent, ttl, margin);
}

uint64_t leader_ms_until(uint64_t now, uint64_t end) {
  if (end <= now) return 0;
  return (end - now + 999999) / 1000000;
}

size_t leader_format_id(char *buf, size_t size, const char *identity,
                        long pid, const unsigned char rnd[8]) {
  if (size == 0) return 0;
  char tail[64];
  int n = snprintf(tail, sizeof(tail), ":%ld:%02x%02x%02x%02x%02x%02x%02x%02x", pid,
                   rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
  size_t tl = n > 0 ? (size_t)n : 0;
  if (identity == NULL || identity[0] == '\0') identity = "unknown";
  /* The random tail is what makes the id unique: truncate the identity,
   * never the tail. */
  size_t room = size - 1 > tl ? size - 1 - tl : 0;
  size_t il = strlen(identity);
  if (il > room) il = room;
  memcpy(buf, identity, il);
  size_t tcopy = size - 1 - il < tl ? size - 1 - il : tl;
  memcpy(buf + il, tail, tcopy);
  buf[il + tcopy] = '\0';
  return il + tcopy;
}

/* ---- state changes --------------------------------------------------- */

static void defer_cb(uv_timer_t *t);

static void defer(leader_t *l) {
  if (!l->closing) uv_timer_start(&l->defer_timer, defer_cb, 0, 0);
}

static void notify(leader_t *l, int is_leader, const char *why) {
  if (!l->closing && l->on_change) l->on_change(l, is_leader, why, l->data);
}

/* Ends the belief now. The event is logged here, so every loss is. */
static void lose(leader_t *l, const char *why, const char *detail) {
  if (!l->leading) return;
  l->leading = 0;
  l->epoch++;
  l->stats.lost++;
  uv_timer_stop(&l->lease_timer);
  char q[LEADER_ID_MAX + 8];
  log_event(l->log, LOG_WARN, "leader_lost", "id=%s token=%lld reason=%s%s%s",
            log_quote(q, sizeof(q), l->id), l->token, why, detail ? " " : "",
            detail ? detail : "");
  notify(l, 0, why);
}

static void lease_cb(uv_timer_t *t);

/* Arms the lease timer for the end of the belief, or ends it if past. */
static void check_lease(leader_t *l) {
  if (!l->leading) return;
  uint64_t now = uv_hrtime();
  if (now >= l->lease_end) {
    lose(l, "lease_expired", NULL);
    return;
  }
  /* uv_now() may lag real time, so this can fire early: lease_cb checks
   * again and re-arms. */
  uv_timer_start(&l->lease_timer, lease_cb, leader_ms_until(now, l->lease_end), 0);
}

static void lease_cb(uv_timer_t *t) { check_lease(t->data); }

static void set_current(leader_t *l, const char *holder, size_t len) {
  if (len >= sizeof(l->current)) len = sizeof(l->current) - 1;
  if (len == strlen(l->current) && memcmp(l->current, holder, len) == 0) return;
  memcpy(l->current, holder, len);
  l->current[len] = '\0';
  char q[LEADER_ID_MAX + 8];
  log_event(l->log, LOG_DEBUG, "leader_seen", "holder=%s",
            log_quote(q, sizeof(q), l->current[0] ? l->current : "none"));
}

/* ---- closing --------------------------------------------------------- */

static void maybe_closed(leader_t *l) {
  if (!l->closing || l->handles_open > 0 || l->tick_pending || l->release_pending)
    return;
  if (l->release_deferred) {
    /* its timer was closed before it fired: done is still owed */
    l->release_deferred = 0;
    if (l->release_done) l->release_done(l, l->release_status, l->release_data);
  }
  free(l->key_leader);
  free(l->key_fence);
  l->key_leader = l->key_fence = NULL;
  if (l->close_cb) l->close_cb(l);
}

static void handle_closed(uv_handle_t *h) {
  leader_t *l = h->data;
  l->handles_open--;
  maybe_closed(l);
}

/* ---- the tick -------------------------------------------------------- */

/* A reply of the shape {int, ...}: *flag, and element 1 (may be NULL). */
static int parse_pair(redisReply *r, long long *flag, redisReply **second) {
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER)
    return -1;
  *flag = r->element[0]->integer;
  *second = r->elements > 1 ? r->element[1] : NULL;
  return 0;
}

static void tick_failed(leader_t *l, int renew, const char *error) {
  char q[300];
  if (renew) {
    /* Nothing else to do: the lease runs out by the clock if no later
     * renewal gets through. */
    log_event(l->log, LOG_WARN, "leader_renew_failed",
              "token=%lld lease_left=%.3f error=%s", l->token,
              leader_lease_remaining(l), log_quote(q, sizeof(q), error));
  } else {
    log_event(l->log, LOG_DEBUG, "leader_attempt_failed", "error=%s",
              log_quote(q, sizeof(q), error));
  }
}

static void on_tick_reply(redis_t *r, int status, redisReply **rep, size_t n,
                          void *data) {
  (void)r;
  leader_t *l = data;
  l->tick_pending = 0;
  if (l->closing) {
    maybe_closed(l);
    return;
  }
  /* Leadership ended (lost, released) since this was sent: its answer
   * belongs to a lease we no longer claim. A released key is deleted by
   * the release, which follows it on the same connection. */
  if (l->tick_epoch != l->epoch || !l->running) return;
  int renew = l->tick_renew;
  if (status < 0) {
    tick_failed(l, renew, redis_strerror(status));
    return;
  }
  long long flag;
  redisReply *second = NULL;
  if (n != 1 || parse_pair(rep[0], &flag, &second) != 0) {
    tick_failed(l, renew, n == 1 && rep[0]->type == REDIS_REPLY_ERROR
                              ? rep[0]->str
                              : "unexpected reply to the lock script");
    return;
  }
  char q[LEADER_ID_MAX + 8];
  uint64_t end = leader_lease_end(l->tick_sent, l->ttl, l->margin);
  if (renew) {
    if (flag == 1) {
      l->lease_end = end; /* counted from the send: never longer than real */
      check_lease(l);
      return;
    }
    const char *holder = second && second->type == REDIS_REPLY_STRING ? second->str : "";
    set_current(l, holder, second && second->type == REDIS_REPLY_STRING ? second->len : 0);
    char detail[LEADER_ID_MAX + 16];
    snprintf(detail, sizeof(detail), "holder=%s",
             log_quote(q, sizeof(q), holder[0] ? holder : "none"));
    lose(l, "key_taken", detail);
    return;
  }
  if (flag != 1) {
    if (second && second->type == REDIS_REPLY_STRING) set_current(l, second->str, second->len);
    else set_current(l, "", 0);
    return;
  }
  long long token = second && second->type == REDIS_REPLY_INTEGER ? second->integer : 0;
  set_current(l, l->id, strlen(l->id));
  l->token = token;
  if (uv_hrtime() >= end) {
    /* The answer took longer than the lease it granted: too late to act
     * on it. The key is ours, so the next tick re-adopts it. */
    log_event(l->log, LOG_WARN, "leader_won_late", "token=%lld", token);
    return;
  }
  l->leading = 1;
  l->lease_end = end;
  l->stats.elected++;
  log_event(l->log, LOG_INFO, "leader_elected", "id=%s token=%lld ttl=%.3f margin=%.3f",
            log_quote(q, sizeof(q), l->id), token, l->ttl, l->margin);
  check_lease(l);
  notify(l, 1, "elected");
}

static void tick_cb(uv_timer_t *t) {
  leader_t *l = t->data;
  if (l->closing || !l->running) return;
  if (l->tick_pending) {
    /* Redis is slow: queueing more would only delay the answers. */
    l->stats.skipped++;
    return;
  }
  uint64_t now = uv_hrtime();
  if (l->leading && now >= l->lease_end) lose(l, "lease_expired", NULL);
  int renew = l->leading;
  const char *script = renew ? RENEW_SCRIPT : ACQUIRE_SCRIPT;
  int rc = renew ? redis_command(l->redis, on_tick_reply, l, "EVAL %s 1 %s %s %s", script,
                                 l->key_leader, l->id, l->ttl_ms)
                 : redis_command(l->redis, on_tick_reply, l, "EVAL %s 2 %s %s %s %s", script,
                                 l->key_leader, l->key_fence, l->id, l->ttl_ms);
  if (rc < 0) {
    tick_failed(l, renew, redis_strerror(rc));
    return;
  }
  l->stats.commands++;
  l->tick_pending = 1;
  l->tick_renew = renew;
  l->tick_sent = now;
  l->tick_epoch = l->epoch;
}

/* ---- release --------------------------------------------------------- */

static void deliver_deferred(leader_t *l) {
  if (l->notify_why) {
    const char *why = l->notify_why;
    l->notify_why = NULL;
    notify(l, 0, why);
  }
  if (l->release_deferred) {
    l->release_deferred = 0;
    if (l->release_done) l->release_done(l, l->release_status, l->release_data);
  }
}

static void defer_cb(uv_timer_t *t) { deliver_deferred(t->data); }

static void on_release_reply(redis_t *r, int status, redisReply **rep, size_t n,
                             void *data) {
  (void)r;
  leader_t *l = data;
  if (!l->closing) deliver_deferred(l); /* on_change(0) comes before done */
  l->release_pending = 0;
  char q[300];
  if (status == 0 && n == 1 && rep[0]->type == REDIS_REPLY_ERROR) status = REDIS_E_PROTOCOL;
  if (status < 0) {
    log_event(l->log, LOG_WARN, "leader_release_failed", "error=%s",
              log_quote(q, sizeof(q), n == 1 && rep && rep[0]->type == REDIS_REPLY_ERROR
                                          ? rep[0]->str
                                          : redis_strerror(status)));
  } else {
    long long deleted = n == 1 && rep[0]->type == REDIS_REPLY_INTEGER ? rep[0]->integer : 0;
    log_event(l->log, LOG_INFO, "leader_released", "id=%s deleted=%lld",
              log_quote(q, sizeof(q), l->id), deleted);
  }
  if (l->release_done) l->release_done(l, status, l->release_data);
  maybe_closed(l);
}

static int release(leader_t *l, const char *why, leader_release_cb done, void *data) {
  if (l->closing) return REDIS_E_CLOSED;
  if (l->release_pending || l->release_deferred) return LEADER_E_BUSY;
  l->running = 0;
  uv_timer_stop(&l->tick_timer);
  if (l->leading) {
    /* Belief ends before the command is even sent: from here on this
     * agent must not act, whatever Redis answers. */
    l->leading = 0;
    l->epoch++;
    l->stats.lost++;
    uv_timer_stop(&l->lease_timer);
    l->notify_why = why;
    char q[LEADER_ID_MAX + 8];
    log_event(l->log, LOG_INFO, "leader_releasing", "id=%s token=%lld reason=%s",
              log_quote(q, sizeof(q), l->id), l->token, why);
  } else {
    l->epoch++; /* a pending acquire's win is void: the release deletes it */
  }
  l->current[0] = '\0'; /* unknown until the next tick's answer */
  l->release_done = done;
  l->release_data = data;
  /* Sent even when not leading: the key may still hold our id (a renewal
   * that timed out), and deleting it lets a follower win at once. */
  int rc = redis_command(l->redis, on_release_reply, l, "EVAL %s 1 %s %s", RELEASE_SCRIPT,
                         l->key_leader, l->id);
  if (rc < 0) {
    char q[64];
    log_event(l->log, LOG_WARN, "leader_release_failed", "error=%s",
              log_quote(q, sizeof(q), redis_strerror(rc)));
    l->release_deferred = 1;
    l->release_status = rc;
  } else {
    l->release_pending = 1;
    l->stats.commands++;
  }
  if (l->notify_why || l->release_deferred) defer(l);
  return 0;
}

int leader_release(leader_t *l, leader_release_cb done, void *data) {
  return release(l, "released", done, data);
}

int leader_step_down(leader_t *l) {
  int rc = release(l, "stepped_down", NULL, NULL);
  if (rc < 0) return rc;
  /* One whole ttl without attempts: every other agent gets at least two
   * ticks to win before this one competes again. */
  uint64_t ttl = (uint64_t)(l->ttl * 1000.0), tick = (uint64_t)(l->tick * 1000.0);
  l->running = 1;
  uv_timer_start(&l->tick_timer, tick_cb, ttl ? ttl : 1, tick ? tick : 1);
  return 0;
}

/* ---- lifecycle ------------------------------------------------------- */

int leader_init(uv_loop_t *loop, leader_t *l, redis_t *r,
                const leader_options_t *opts, char *err, size_t errlen) {
  memset(l, 0, sizeof(*l));
  if (opts == NULL || r == NULL || opts->key_leader == NULL || opts->key_fence == NULL ||
      !opts->key_leader[0] || !opts->key_fence[0]) {
    snprintf(err, errlen, "leader: the leader and fence key names are required");
    return -1;
  }
  double tick = opts->tick > 0 ? opts->tick : opts->ttl / 3;
  double margin = opts->margin > 0 ? opts->margin : leader_default_margin(opts->ttl, tick);
  if (leader_check_timing(opts->ttl, tick, margin, err, errlen) != 0) return -1;
  l->key_leader = strdup(opts->key_leader);
  l->key_fence = strdup(opts->key_fence);
  if (l->key_leader == NULL || l->key_fence == NULL) {
    free(l->key_leader);
    free(l->key_fence);
    snprintf(err, errlen, "leader: out of memory");
    return -1;
  }
  l->loop = loop;
  l->redis = r;
  l->ttl = opts->ttl;
  l->tick = tick;
  l->margin = margin;
  l->log = opts->log;
  l->on_change = opts->on_change;
  l->data = opts->data;
  uint64_t ttl_ms = (uint64_t)(opts->ttl * 1000.0);
  snprintf(l->ttl_ms, sizeof(l->ttl_ms), "%llu",
           (unsigned long long)(ttl_ms ? ttl_ms : 1));

  /* The random part keeps two processes with the same identity and pid
   * (a restarted dyno) from taking each other's lease for their own. */
  unsigned char rnd[8];
  if (uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL) != 0) {
    uint64_t x = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)l;
    for (size_t i = 0; i < sizeof(rnd); i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      rnd[i] = (unsigned char)x;
    }
  }
  char host[256];
  const char *identity = opts->identity;
  if (identity == NULL || identity[0] == '\0') {
    if (gethostname(host, sizeof(host)) == 0) {
      host[sizeof(host) - 1] = '\0';
      identity = host;
    }
  }
  leader_format_id(l->id, sizeof(l->id), identity, (long)getpid(), rnd);

  uv_timer_init(loop, &l->tick_timer);
  uv_timer_init(loop, &l->lease_timer);
  uv_timer_init(loop, &l->defer_timer);
  l->tick_timer.data = l->lease_timer.data = l->defer_timer.data = l;
  return 0;
}

int leader_start(leader_t *l) {
  if (l->closing) return REDIS_E_CLOSED;
  uint64_t tick = (uint64_t)(l->tick * 1000.0);
  l->running = 1;
  uv_timer_start(&l->tick_timer, tick_cb, 0, tick ? tick : 1);
  return 0;
}

int leader_is_leader(const leader_t *l) {
  return l->leading && uv_hrtime() < l->lease_end;
}

double leader_lease_remaining(const leader_t *l) {
  uint64_t now = uv_hrtime();
  if (!l->leading || now >= l->lease_end) return 0;
  return (double)(l->lease_end - now) / 1e9;
}

const char *leader_id(const leader_t *l) { return l->id; }
long long leader_token(const leader_t *l) { return l->token; }
const char *leader_current(const leader_t *l) { return l->current; }

void leader_close(leader_t *l, leader_close_cb cb) {
  if (l->closing) return;
  if (l->leading) {
    char q[LEADER_ID_MAX + 8];
    /* the key stays until its TTL: no follower wins before then */
    log_event(l->log, LOG_WARN, "leader_abandoned", "id=%s token=%lld",
              log_quote(q, sizeof(q), l->id), l->token);
  }
  l->closing = 1;
  l->leading = 0;
  l->running = 0;
  l->notify_why = NULL;
  l->close_cb = cb;
  l->handles_open = 3;
  uv_close((uv_handle_t *)&l->tick_timer, handle_closed);
  uv_close((uv_handle_t *)&l->lease_timer, handle_closed);
  uv_close((uv_handle_t *)&l->defer_timer, handle_closed);
}
