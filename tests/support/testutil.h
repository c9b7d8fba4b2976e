/*
 * Test support: a real redis-server on a free loopback port per test
 * (plain, or TLS-only with certificates made by openssl), a blocking
 * hiredis connection to seed and inspect it, running the
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
  /* Set by test_redis_start_tls: the TCP port speaks TLS only, so the
   * test's own connection goes through a Unix socket instead. */
  bool tls;
  bool tls_auth_clients;
  char tls_cert[128], tls_key[128], tls_ca[128];
  char sock[96];
  /* Set before test_redis_start: an append-only file synced at every
   * write, so a SIGKILL and test_redis_restart lose nothing. */
  bool aof;
} test_redis_t;

/* Certificates made with the openssl command into a temporary folder. */
typedef struct test_certs {
  char dir[64];
  char ca[96];                          /* the test CA's certificate */
  char server_crt[96], server_key[96];  /* CA-signed; SAN 127.0.0.1, ::1, localhost */
  char other_crt[96], other_key[96];    /* CA-signed; SAN redis.example.com only */
  char self_crt[96], self_key[96];      /* self-signed; SAN 127.0.0.1, localhost */
  char client_crt[96], client_key[96];  /* CA-signed, for client authentication */
} test_certs_t;

void test_certs_make(test_certs_t *c);
void test_certs_remove(test_certs_t *c);

/* A free TCP port on 127.0.0.1 (bound and released). */
int test_free_port(void);

/* Starts redis-server on a free port (or on t->port when it is set) and
 * waits for PING. Asserts on failure. */
void test_redis_start(test_redis_t *t);
/* redis-server with TLS only (--port 0 --tls-port P) on a free port (or
 * t->port), serving cert/key, trusting ca for client certificates, which
 * it requires when auth_clients; t->url is rediss://127.0.0.1:P/0. The
 * test's own connection uses a Unix socket in t->dir. Asserts on
 * failure. */
void test_redis_start_tls(test_redis_t *t, const char *cert, const char *key,
                          const char *ca, bool auth_clients);
/* Same server, same port, again (after test_redis_kill). */
void test_redis_restart(test_redis_t *t);
/* SIGKILL, reaped; t stays usable for test_redis_restart. */
void test_redis_kill(test_redis_t *t);
void test_redis_stop(test_redis_t *t);

/* Runs one command on the test's blocking connection; asserts it is not
 * an error reply. The caller frees the reply. */
redisReply *test_redis_cmd(test_redis_t *t, const char *fmt, ...);
void test_redis_cmd_free(test_redis_t *t, const char *fmt, ...);

/* GET key on the test's connection: a copy of the string, or NULL when
 * the key is absent. The caller frees it. */
char *test_redis_get(test_redis_t *t, const char *key);

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
/* The same for any condition: runs loop until cond(arg) or seconds pass. */
bool test_loop_until_cond(uv_loop_t *loop, bool (*cond)(void *), void *arg,
                          double seconds);

/* Polls cond every few milliseconds until it is true or timeout passes. */
bool test_wait_for(bool (*cond)(void *), void *arg, double timeout);

/* Like test_spawn, but each line the child writes (stdout and stderr) is
 * appended to out_path prefixed with "t=SECONDS " (test_now() when the
 * line was read), so the lines of several processes share one time line
 * with, say, the fake Platform API's request log. A thread of the test
 * process stamps them; it ends when the child's output closes. */
pid_t test_spawn_stamped(const char *const *argv, const char *const *env,
                         const char *out_path);

/* The monotonic clock, in seconds. */
double test_mono(void);

#endif
