/*
 * store: the autoscaler's persisted state in Redis, in the Ruby gem
 * sidekiq-amigo's keys and value formats, so the gem and the agent can
 * take over from each other even in the middle of a latency event.
 *
 * Keys (namespace N, default "amigo/autoscaler"; formation F):
 *   N/depth                  "3"                 integer
 *   N/last_alerted           "1700000000.5"      float seconds; "0.0": none
 *   N/latency_event_started  "1699999900.25"     float seconds; "0.0" outside
 *                                                an event (written, not deleted)
 *   N/heroku/F/active_event_initial_workers
 *                            "1"                 integer; ABSENT outside an event
 *   N/leader, N/fence, N/paused, N/history       the agent's own keys (named
 *                                                here, used by leader/agent)
 * The gem hard-codes "amigo/autoscaler/heroku/F/..." for the initial
 * workers; with the default N that is exactly N/heroku/F/..., so one rule
 * covers both, and a non-default N keeps all its keys under N.
 */
#ifndef SCALEKIQ_STORE_H
#define SCALEKIQ_STORE_H

#include "log.h"
#include "redis.h"
#include "scaler.h"

#define STORE_DEFAULT_NAMESPACE "amigo/autoscaler"

/* Error codes besides the redis ones (redis.h, -1..-99). */
enum {
  STORE_E_NOT_LEADER = -100, /* fencing: N/leader is not the caller's id;
                                nothing was written */
  STORE_E_REPLY = -101,      /* Redis answered with an error (logged on
                                the store's log with the server's text) */
};
/* Names store and redis codes alike. */
const char *store_strerror(int code);

typedef struct store {
  redis_t *redis;
  char *k_depth, *k_last_alerted, *k_event_started, *k_initial;
  char *k_leader, *k_fence, *k_paused;
  char *k_history; /* capped list of JSON entries, newest first */
  log_t *log; /* may be NULL */
} store_t;

/* Builds the key names. ns NULL or "" means STORE_DEFAULT_NAMESPACE;
 * formation must be non-empty. Returns 0, REDIS_E_INVALID or
 * REDIS_E_NOMEM (s is then left with no allocations). */
int store_init(store_t *s, redis_t *r, const char *ns, const char *formation,
               log_t *log);
/* Frees the key strings. Safe on a zeroed or already closed store. */
void store_close(store_t *s);

/* The values exactly as store_save writes them, like the gem's
 * Float#to_s / Integer#to_s: depth "3"; times with a decimal point,
 * microseconds at most, trailing zeros trimmed ("1700000000.5", "0.0";
 * not a number -> "0.0"); event_started "0.0" whenever depth <= 0;
 * initial "" when initial_workers < 0, meaning the key is deleted. */
#define STORE_INT_LEN 32
#define STORE_FLOAT_LEN 48
void store_format_state(const scaler_state_t *state, char depth[STORE_INT_LEN],
                        char last_alerted[STORE_FLOAT_LEN],
                        char event_started[STORE_FLOAT_LEN],
                        char initial[STORE_INT_LEN]);

/* status 0: state is the persisted state, sanitized (scaler_state_parse),
 * runtime fields zero. warning is NULL, or why something was reset (the
 * store has already logged it as a warning; pass it on to status if
 * useful). status < 0: a redis code or STORE_E_REPLY, state NULL. */
typedef void (*store_load_cb)(int status, const scaler_state_t *state,
                              const char *warning, void *data);

/* Reads the four keys in one round trip (one MGET). now is the wall clock
 * used to judge times in the future. Returns 0 and calls cb exactly once
 * later, or returns a negative code without calling cb. */
int store_load(store_t *s, double now, store_load_cb cb, void *data);

/* The same read as two halves, so a caller can put it in a pipeline of its
 * own (the agent sends it with Sidekiq's first round trip): append the one
 * command, then parse its reply. store_load_parse returns 0 with *out set
 * (warning "" or why something was reset, already logged), or
 * STORE_E_REPLY / REDIS_E_PROTOCOL. */
int store_load_append(const store_t *s, redis_pipeline_t *p);
int store_load_parse(const store_t *s, redisReply *reply, double now,
                     scaler_state_t *out, char *warning, size_t wlen);

/* status: 0 written; STORE_E_NOT_LEADER nothing written; else a redis
 * code or STORE_E_REPLY. Redis does not roll back a script that fails
 * midway, but the only step here that can fail on its own (the fencing
 * GET of a non-string N/leader) runs before any write. */
typedef void (*store_save_cb)(int status, void *data);

/* Writes all four keys atomically in one round trip (one EVAL). With
 * leader_id, the script first checks GET N/leader == leader_id and writes
 * nothing otherwise (the fencing of DESIGN.md's leader election); NULL
 * skips the check. initial_workers < 0 deletes its key. Returns 0 and
 * calls cb exactly once later, or returns a negative code without calling
 * cb. */
int store_save(store_t *s, const scaler_state_t *state, const char *leader_id,
               store_save_cb cb, void *data);

#endif
