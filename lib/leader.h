/*
 * leader: one lease in Redis decides which agent may act (DESIGN.md,
 * "Leader election").
 *
 * Every lock tick a follower sends one EVAL that takes N/leader when it
 * is free (or already ours) with a TTL and, only then, increments
 * N/fence, whose new value is the leadership's token. The leader renews
 * with a compare-and-expire EVAL at each tick. It believes it leads only
 * while its lease is valid by its own monotonic clock, counted from the
 * moment the winning or renewing command was SENT, minus a margin; the
 * server's TTL runs from when it executed the command, later, so the
 * leader stops believing before any other agent can win. Losing the key,
 * or failing to renew in time, ends leadership at once (a timer, not a
 * Redis reply) and calls on_change.
 *
 * The leader does not own the redis_t: it only sends commands on it.
 */
#ifndef SCALEKIQ_LEADER_H
#define SCALEKIQ_LEADER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "log.h"
#include "redis.h"

/* Error codes besides the redis ones (redis.h, -1..-99). */
enum {
  LEADER_E_BUSY = -120, /* a release is already in flight */
};

/* identity ":" pid ":" 16 hex digits, NUL included. */
#define LEADER_ID_MAX 160

typedef struct leader leader_t;

/* Called on every change of leader_is_leader()'s answer, except through
 * leader_close; always from the loop, never from inside a leader_* call.
 * why: "elected", "key_taken" (another id holds the key), "lease_expired"
 * (no successful renewal in time), "released" or "stepped_down". */
typedef void (*leader_change_cb)(leader_t *l, int is_leader, const char *why,
                                 void *data);
/* status: 0 (the key was deleted if it was still ours), or a redis code
 * (REDIS_E_PROTOCOL for an error reply): the key then expires by its TTL. */
typedef void (*leader_release_cb)(leader_t *l, int status, void *data);
typedef void (*leader_close_cb)(leader_t *l);

typedef struct leader_options {
  const char *key_leader;   /* N/leader (store_t's k_leader); copied */
  const char *key_fence;    /* N/fence (store_t's k_fence); copied */
  const char *identity;     /* DYNO or host name; NULL: gethostname() */
  double ttl;               /* s, the lease; > 0.001 */
  double tick;              /* s, between attempts/renewals; <= 0: ttl / 3 */
  double margin;            /* s, <= 0: leader_default_margin(ttl, tick) */
  log_t *log;               /* may be NULL */
  leader_change_cb on_change; /* may be NULL */
  void *data;
} leader_options_t;

typedef struct leader_stats {
  uint64_t commands;  /* tick commands sent (acquire, renew, release) */
  uint64_t skipped;   /* ticks skipped: the previous command still pending */
  uint64_t elected;   /* times this agent became leader */
  uint64_t lost;      /* times it stopped being leader, for any reason */
} leader_stats_t;

struct leader {
  uv_loop_t *loop;
  redis_t *redis;
  char *key_leader, *key_fence;
  char ttl_ms[24];            /* ttl as the PX argument */
  double ttl, tick, margin;
  log_t *log;
  leader_change_cb on_change;
  void *data;
  char id[LEADER_ID_MAX];
  char current[LEADER_ID_MAX]; /* holder as last seen; "" none/unknown */

  uv_timer_t tick_timer, lease_timer, defer_timer;
  int leading;         /* believes it leads; is_leader also checks the clock */
  uint64_t lease_end;  /* uv_hrtime() ns after which it no longer leads */
  long long token;     /* N/fence of the current or last leadership; 0 none */
  unsigned epoch;      /* bumped when leadership ends: stale replies ignored */

  int tick_pending;    /* one acquire/renew at a time */
  int tick_renew;      /* it is a renewal (else an acquire) */
  uint64_t tick_sent;  /* uv_hrtime() just before it was sent */
  unsigned tick_epoch;

  int release_pending; /* the release EVAL is in flight */
  int release_deferred; /* its send failed: done runs from defer_timer */
  int release_status;
  leader_release_cb release_done;
  void *release_data;
  const char *notify_why; /* on_change(0, why) still to deliver */

  int running;         /* tick timer armed by leader_start */
  int closing, handles_open;
  leader_close_cb close_cb;
  leader_stats_t stats;
};

/* ---- pure lease arithmetic (times in uv_hrtime() nanoseconds) ------- */

/* min(max(tick / 2, ttl / 10), (ttl - tick) / 2): half a tick leaves the
 * leader's last action time to land before the key can expire for
 * others, and the cap keeps the belief (ttl - margin) longer than a tick
 * plus half the slack, so a renewal answered in time always extends it. */
double leader_default_margin(double ttl, double tick);
/* 0, or -1 with err saying which setting to change: ttl >= 0.001,
 * 0 < tick < ttl, 0 <= margin < ttl - tick. */
int leader_check_timing(double ttl, double tick, double margin, char *err,
                        size_t errlen);
/* sent + ttl - margin: the end of a lease granted by a command sent at
 * sent (the server's TTL starts later, when it runs the command). */
uint64_t leader_lease_end(uint64_t sent, double ttl, double margin);
/* now < leader_lease_end(sent, ttl, margin) */
int leader_lease_valid(uint64_t now, uint64_t sent, double ttl, double margin);
/* Whole milliseconds from now to end, rounded up; 0 once end has passed. */
uint64_t leader_ms_until(uint64_t now, uint64_t end);
/* identity ":" pid ":" hex(rnd[0..8)); identity truncated to fit.
 * Returns the length. */
size_t leader_format_id(char *buf, size_t size, const char *identity,
                        long pid, const unsigned char rnd[8]);

/* ---- the lease ------------------------------------------------------ */

/* Validates the timing, copies the keys, builds the id; does not send.
 * Returns 0, or -1 with err holding one line. */
int leader_init(uv_loop_t *loop, leader_t *l, redis_t *r,
                const leader_options_t *opts, char *err, size_t errlen);

/* Starts ticking, the first attempt at once (also after a release).
 * Returns 0 or REDIS_E_CLOSED while closing. */
int leader_start(leader_t *l);

/* True only while the lease is valid by uv_hrtime(). */
int leader_is_leader(const leader_t *l);
/* Seconds of lease left (0 when not leader): start an action only when it
 * can finish within this. */
double leader_lease_remaining(const leader_t *l);
const char *leader_id(const leader_t *l);
/* N/fence of the current leadership (or the last one; 0 never led). */
long long leader_token(const leader_t *l);
/* The holder as last seen by this agent's own commands ("" when none or
 * unknown): our id while leading. May be up to one tick stale. */
const char *leader_current(const leader_t *l);

/* Stops ticking and ends leadership now (is_leader is false before this
 * returns; on_change(0, "released") follows from the loop if it led),
 * then deletes N/leader if it still holds this id. Returns 0 and calls
 * done (may be NULL) exactly once later, also when Redis is down; or
 * LEADER_E_BUSY / REDIS_E_CLOSED without calling it. */
int leader_release(leader_t *l, leader_release_cb done, void *data);

/* Releases (as above, why "stepped_down") and makes no attempt for one
 * ttl, then ticks again. Returns 0 or as leader_release. */
int leader_step_down(leader_t *l);

/* Stops everything without releasing (the key expires by its TTL) and no
 * longer calls on_change. cb (may be NULL) runs once the timers are
 * closed and no command is pending (a pending release's done runs
 * first); l may then be freed. The redis_t must still be open, or be
 * closed meanwhile (which fails pending commands at once). */
void leader_close(leader_t *l, leader_close_cb cb);

#endif
