/*
 * Test support: a real redis-server on a free loopback port per test,
 * a blocking hiredis connection to seed and inspect it, running the
 * scalekiq binary and capturing its output, and waiting on a condition
 * with a deadline instead of sleeping.
 */
#ifndef SCALEKIQ_TESTUTIL_H
#define SCALEKIQ_TESTUTIL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct test_redis {
  pid_t pid;
  int port;
  char url[64];
  char dir[64];      /* temporary folder: logs, dump */
  redisContext *ctx; /* blocking client for the test's own commands */
} test_redis_t;

/* A free TCP port on 127.0.0.1 (bound and released). */
int test_free_port(void);

/* Starts redis-server on a free port (or on t->port when it is set) and
 * waits for PING. Asserts on failure. */
void test_redis_start(test_redis_t *t);
/* Same server, same port, again (after test_redis_kill). */
void test_redis_restart(test_redis_t *t);
/* SIGKILL, reaped; t stays usable for test_redis_restart. */
void test_redis_kill(test_redis_t *t);
void test_redis_stop(test_redis_t *t);

/* Runs one command on the test's blocking connection; asserts it is not
 * an error reply. The caller frees the reply. */
redisReply *test_redis_cmd(test_redis_t *t, const char *fmt, ...);
void test_redis_cmd_free(test_redis_t *t, const char *fmt, ...);

/* Pushes a job the way Sidekiq's client does (SADD queues, LPUSH queue:Q)
 * with the given JSON payload. ns may be NULL. */
void test_push_job(test_redis_t *t, const char *ns, const char *queue,
                   const char *json);

double test_now(void); /* wall clock, float seconds */

/* Runs argv (argv[0] a path) with env additions ("K=V", NULL-terminated,
 * may be NULL), captures stdout and stderr (each NUL-terminated, caller
 * frees), waits at most timeout seconds. Returns the exit status, or
 * 128 + signal, or -1 when it had to be killed at the deadline. */
int test_run(const char *const *argv, const char *const *env, double timeout,
             char **out, char **err);

/* Starts argv in the background with env additions, stdout and stderr
 * appended to out_path. The child dies with the test. */
pid_t test_spawn(const char *const *argv, const char *const *env,
                 const char *out_path);
/* Sends sig (0: none) and waits at most timeout seconds for the exit;
 * returns the exit status, 128 + signal, or -1 after having to SIGKILL. */
int test_stop(pid_t pid, int sig, double timeout);
/* Whether pid is still running (not exited, not a zombie we reaped). */
bool test_alive(pid_t pid);
/* The whole file, NUL-terminated ("" when missing); caller frees. */
char *test_read_file(const char *path);

/* Runs loop until *counter reaches target or seconds pass (a timer wakes
 * the loop to notice the deadline, so it never blocks for good). Returns
 * whether the target was reached. */
bool test_loop_until(uv_loop_t *loop, const int *counter, int target,
                     double seconds);

/* Polls cond every few milliseconds until it is true or timeout passes. */
bool test_wait_for(bool (*cond)(void *), void *arg, double timeout);

#endif
