/*
 * rediss:// against Debian's redis-server in TLS-only mode (--port 0
 * --tls-port P), with certificates the harness makes with openssl: a
 * test CA and certificates it signed, and a self-signed one like Heroku
 * Key-Value Store's. Through `scalekiq queues` for what users see, and
 * through the client on a loop for timeouts and reconnects.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis.h"
#include "testutil.h"

#define PASSWORD "tls-s3cret-pw"
#define VERIFY_HINT                                                            \
  "set SCALEKIQ_REDIS_TLS_VERIFY=none for Heroku Key-Value Store, or "         \
  "SCALEKIQ_REDIS_TLS_CA_FILE="

static test_certs_t C;
static test_redis_t R;

static uv_loop_t loop;
static redis_t client;
static bool client_open;
static int ready, drops, calls, last_status, pong, timeouts_in_handshake;
static char last_detail[256];

static void start(void) {
  test_certs_make(&C);
  uv_loop_init(&loop);
}

static void stop(void) {
  if (client_open) redis_close(&client, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left open");
  test_redis_stop(&R);
  test_certs_remove(&C);
}

TestSuite(tls, .init = start, .fini = stop);

/* ---- scalekiq queues ----------------------------------------------- */

static char env_buf[4][256];

/* `scalekiq queues --json` with url (NULL: none given) and up to three
 * more "K=V" settings. */
static int queues(const char *url, const char *e1, const char *e2, const char *e3,
                  char **out, char **err) {
  const char *env[6] = {NULL};
  int n = 0;
  if (url) {
    snprintf(env_buf[0], sizeof(env_buf[0]), "SCALEKIQ_REDIS_URL=%s", url);
    env[n++] = env_buf[0];
  }
  if (e1) env[n++] = e1;
  if (e2) env[n++] = e2;
  if (e3) env[n++] = e3;
  env[n] = NULL;
  const char *argv[] = {SCALEKIQ_BIN, "queues", "--json", NULL};
  return test_run(argv, env, 20, out, err);
}

static const char *ca_env(const char *path) {
  snprintf(env_buf[1], sizeof(env_buf[1]), "SCALEKIQ_REDIS_TLS_CA_FILE=%s", path);
  return env_buf[1];
}

static char *url_for(const char *userinfo, const char *host, int db) {
  static char url[160];
  snprintf(url, sizeof(url), "rediss://%s%s%s:%d/%d", userinfo ? userinfo : "",
           userinfo ? "@" : "", host, R.port, db);
  return url;
}

static void expect_default_queue(const char *out, double size) {
  cJSON *arr = cJSON_Parse(out);
  cr_assert(cJSON_IsArray(arr), "not a JSON array: %s", out);
  cr_assert_eq(cJSON_GetArraySize(arr), 1, "%s", out);
  const cJSON *q = cJSON_GetArrayItem(arr, 0);
  cr_assert_str_eq(cJSON_GetObjectItem(q, "name")->valuestring, "default");
  cr_assert_float_eq(cJSON_GetObjectItem(q, "size")->valuedouble, size, 1e-9);
  /* the oldest job was 30 s old when pushed; allow for slow runs (valgrind) */
  double latency = cJSON_GetObjectItem(q, "latency")->valuedouble;
  cr_assert(latency > 29 && latency < 150, "latency %.3f", latency);
  cJSON_Delete(arr);
}

static void push_default(int n) {
  char job[160];
  for (int i = 0; i < n; i++) {
    snprintf(job, sizeof(job), "{\"class\":\"W\",\"args\":[%d],\"enqueued_at\":%.6f}",
             i, test_now() - 30.0 + i);
    test_push_job(&R, NULL, "default", job);
  }
}

Test(tls, queues_over_rediss_with_a_ca_file_auth_and_a_database) {
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  test_redis_cmd_free(&R, "CONFIG SET requirepass %s", PASSWORD);
  test_redis_cmd_free(&R, "AUTH %s", PASSWORD);
  test_redis_cmd_free(&R, "SELECT 2");
  push_default(3);

  char *out, *err;
  int rc = queues(url_for(":" PASSWORD, "127.0.0.1", 2), ca_env(C.ca), NULL, NULL,
                  &out, &err);
  cr_assert_eq(rc, 0, "exit %d, stderr: %s", rc, err);
  expect_default_queue(out, 3);
  cr_assert_null(strstr(err, PASSWORD), "password leaked: %s", err);
  free(out);
  free(err);

  /* a wrong password is refused after the handshake, as over plain TCP */
  rc = queues(url_for(":wrong-pw-123", "127.0.0.1", 2), ca_env(C.ca), NULL, NULL,
              &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "WRONGPASS"), "%s", err);
  cr_assert_null(strstr(err, "wrong-pw-123"), "password leaked: %s", err);
  free(out);
  free(err);
}

Test(tls, a_host_name_is_sent_by_sni_and_checked) {
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  push_default(1);
  char *out, *err;
  int rc = queues(url_for(NULL, "localhost", 0), ca_env(C.ca), NULL, NULL, &out, &err);
  cr_assert_eq(rc, 0, "exit %d, stderr: %s", rc, err);
  expect_default_queue(out, 1);
  free(out);
  free(err);
}

Test(tls, a_wrong_host_name_fails_verification) {
  /* signed by the trusted CA, but for redis.example.com only */
  test_redis_start_tls(&R, C.other_crt, C.other_key, C.ca, false);
  push_default(1);
  char *out, *err;
  int rc = queues(url_for(NULL, "localhost", 0), ca_env(C.ca), NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "TLS certificate verification failed (hostname mismatch)"),
                     "%s", err);
  cr_assert_not_null(strstr(err, "SCALEKIQ_REDIS_TLS_VERIFY=none"), "%s", err);
  cr_assert_str_empty(out);
  free(out);
  free(err);

  rc = queues(url_for(NULL, "127.0.0.1", 0), ca_env(C.ca), NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "TLS certificate verification failed (IP address mismatch)"),
                     "%s", err);
  free(out);
  free(err);

  /* only the name was wrong */
  rc = queues(url_for(NULL, "127.0.0.1", 0), "SCALEKIQ_REDIS_TLS_VERIFY=none", NULL,
              NULL, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  free(out);
  free(err);
}

Test(tls, self_signed_needs_verify_none_and_the_default_says_so) {
  test_redis_start_tls(&R, C.self_crt, C.self_key, C.ca, false);
  push_default(2);
  char *out, *err;

  /* default: verify against the system's store */
  int rc = queues(url_for(NULL, "127.0.0.1", 0), NULL, NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "TLS certificate verification failed (self-signed "
                                 "certificate): " VERIFY_HINT),
                     "%s", err);
  cr_assert_null(strstr(err, "check that Redis is up"), "a hint beside the point: %s", err);
  cr_assert_str_empty(out);
  free(out);
  free(err);

  /* a CA file that did not sign it does not help either */
  rc = queues(url_for(NULL, "127.0.0.1", 0), ca_env(C.ca), NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  cr_assert_not_null(strstr(err, VERIFY_HINT), "%s", err);
  free(out);
  free(err);

  rc = queues(url_for(NULL, "127.0.0.1", 0), "SCALEKIQ_REDIS_TLS_VERIFY=none", NULL,
              NULL, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  expect_default_queue(out, 2);
  free(out);
  free(err);

  /* Heroku's REDIS_TLS_URL, when it is the only URL set */
  char tls_url[200];
  snprintf(tls_url, sizeof(tls_url), "REDIS_TLS_URL=%s", url_for(NULL, "127.0.0.1", 0));
  rc = queues(NULL, tls_url, "SCALEKIQ_REDIS_TLS_VERIFY=none", NULL, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  expect_default_queue(out, 2);
  free(out);
  free(err);
}

Test(tls, client_certificate_when_the_server_requires_one) {
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, true);
  push_default(1);
  char *out, *err;
  int rc = queues(url_for(NULL, "127.0.0.1", 0), ca_env(C.ca), NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "a server that requires a client certificate let us in: %s", err);
  cr_assert_not_null(strstr(err, "certificate required: the server wants a client "
                                 "certificate; set SCALEKIQ_REDIS_TLS_CERT_FILE"),
                     "%s", err);
  free(out);
  free(err);

  char cert[160], key[160];
  snprintf(cert, sizeof(cert), "SCALEKIQ_REDIS_TLS_CERT_FILE=%s", C.client_crt);
  snprintf(key, sizeof(key), "SCALEKIQ_REDIS_TLS_KEY_FILE=%s", C.client_key);
  rc = queues(url_for(NULL, "127.0.0.1", 0), ca_env(C.ca), cert, key, &out, &err);
  cr_assert_eq(rc, 0, "stderr: %s", err);
  expect_default_queue(out, 1);
  free(out);
  free(err);
}

Test(tls, unusable_tls_files_are_refused_before_connecting) {
  char notpem[128], *out, *err;
  snprintf(notpem, sizeof(notpem), "%s/server.ext", C.dir); /* readable, not PEM */
  char ca[200], cert[200], key[200];
  snprintf(ca, sizeof(ca), "SCALEKIQ_REDIS_TLS_CA_FILE=%s", notpem);
  int rc = queues("rediss://127.0.0.1:1/0", ca, NULL, NULL, &out, &err);
  cr_assert_eq(rc, 2, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "SCALEKIQ_REDIS_TLS_CA_FILE="), "%s", err);
  free(out);
  free(err);

  /* a client certificate with somebody else's key */
  snprintf(cert, sizeof(cert), "SCALEKIQ_REDIS_TLS_CERT_FILE=%s", C.client_crt);
  snprintf(key, sizeof(key), "SCALEKIQ_REDIS_TLS_KEY_FILE=%s", C.server_key);
  rc = queues("rediss://127.0.0.1:1/0", cert, key, NULL, &out, &err);
  cr_assert_eq(rc, 2, "stderr: %s", err);
  cr_assert_not_null(strstr(err, "SCALEKIQ_REDIS_TLS_KEY_FILE="), "%s", err);
  cr_assert_not_null(strstr(err, "key values mismatch"), "%s", err);
  free(out);
  free(err);
}

Test(tls, a_plain_redis_behind_a_rediss_url_fails_cleanly) {
  test_redis_start(&R); /* plain */
  char url[96], *out, *err;
  snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", R.port);
  int rc = queues(url, "SCALEKIQ_REQUEST_TIMEOUT=2", NULL, NULL, &out, &err);
  cr_assert_eq(rc, 1, "stderr: %s", err);
  /* Redis reads the ClientHello as an unfinished inline command */
  cr_assert_not_null(strstr(err, "TLS"), "%s", err);
  free(out);
  free(err);
}

/* ---- the client on a loop ------------------------------------------ */

static void on_state(redis_t *r, enum redis_state st, int status,
                     const char *detail, void *data) {
  (void)r;
  (void)data;
  if (st == REDIS_STATE_READY) ready++;
  if (st == REDIS_STATE_DISCONNECTED && status < 0) {
    drops++;
    last_status = status;
    snprintf(last_detail, sizeof(last_detail), "%s", detail ? detail : "");
    if (status == REDIS_E_TIMEOUT && detail && strstr(detail, "in the TLS handshake"))
      timeouts_in_handshake++;
  }
}

static void on_reply(redis_t *r, int status, redisReply **rep, size_t n,
                     void *data) {
  (void)r;
  (void)data;
  calls++;
  last_status = status;
  if (status == 0 && n == 1 && rep[0]->type == REDIS_REPLY_STATUS &&
      strcmp(rep[0]->str, "PONG") == 0)
    pong++;
}

static void client_init(const char *url, double connect_timeout) {
  redis_options_t o;
  redis_options_default(&o);
  o.connect_timeout = connect_timeout;
  o.request_timeout = 10; /* longer than the tests: errors come from what they do */
  o.backoff_min = 0.05;
  o.backoff_max = 0.2;
  o.on_state = on_state;
  o.tls.ca_file = C.ca;
  cr_assert_eq(redis_init(&loop, &client, url, &o), 0, "%s", redis_last_error(&client));
  client_open = true;
}

static bool run_until(int *counter, int target, double seconds) {
  return test_loop_until(&loop, counter, target, seconds);
}

static bool ping_until_pong(double seconds) {
  uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
  while (pong == 0 && uv_hrtime() < end) {
    int before = calls;
    if (redis_command(&client, on_reply, NULL, "PING") == 0) run_until(&calls, before + 1, 1);
    else run_until(&ready, ready + 1, 1);
  }
  return pong > 0;
}

/* Listens and never answers: the kernel completes TCP connects into the
 * backlog, so the ClientHello goes out and nothing ever comes back. */
static int silent_listener(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(fd >= 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
  cr_assert(listen(fd, 16) == 0);
  return fd;
}

Test(tls, a_server_stalling_mid_handshake_times_out_and_the_client_reconnects) {
  int port = test_free_port();
  int fd = silent_listener(port);
  char url[64];
  snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", port);
  client_init(url, 0.3);
  redis_connect(&client);
  cr_assert(run_until(&timeouts_in_handshake, 2, 5),
            "no second handshake timeout; last drop: %d %s", last_status, last_detail);
  cr_assert_eq(ready, 0);
  cr_assert_str_eq(last_detail, "connecting to Redis timed out after 0.3s in the TLS handshake");

  /* The staller goes away and a real TLS server takes its port: the
   * client's next attempt gets through. */
  close(fd);
  R.port = port;
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  cr_assert(run_until(&ready, 1, 10), "did not reconnect; last drop: %s", last_detail);
  cr_assert(ping_until_pong(5), "no PONG over TLS");
}

Test(tls, server_restarted_mid_request_then_the_client_reconnects) {
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  client_init(R.url, 5);
  redis_connect(&client);
  cr_assert(run_until(&ready, 1, 5), "never connected: %s", last_detail);

  cr_assert_eq(redis_command(&client, on_reply, NULL, "DEBUG SLEEP 5"), 0);
  cr_assert_eq(redis_command(&client, on_reply, NULL, "PING"), 0);
  uv_run(&loop, UV_RUN_NOWAIT); /* written */
  test_redis_kill(&R);
  cr_assert(run_until(&calls, 2, 5), "pending requests were not failed");
  cr_assert_eq(calls, 2, "each pending callback exactly once");
  cr_assert_eq(last_status, REDIS_E_IO, "status %d", last_status);
  cr_assert_geq(drops, 1);

  test_redis_restart(&R);
  cr_assert(run_until(&ready, 2, 10), "did not reconnect: %s", last_detail);
  cr_assert(ping_until_pong(5), "no PONG after reconnect");
  cr_assert_geq(client.stats.connects, 2);
}

static size_t got_len;
static int got_match;
static void on_big(redis_t *r, int status, redisReply **rep, size_t n, void *data) {
  (void)r;
  const char *want = data;
  calls++;
  cr_assert_eq(status, 0);
  cr_assert_eq(n, 2);
  cr_assert_eq(rep[1]->type, REDIS_REPLY_STRING);
  got_len = rep[1]->len;
  got_match = got_len == strlen(want) && memcmp(rep[1]->str, want, got_len) == 0;
}

Test(tls, a_megabyte_each_way_crosses_many_records_and_reads) {
  test_redis_start_tls(&R, C.server_crt, C.server_key, C.ca, false);
  client_init(R.url, 5);
  redis_connect(&client);
  cr_assert(run_until(&ready, 1, 5), "never connected: %s", last_detail);
  size_t len = 1 << 20;
  char *big = malloc(len + 1);
  for (size_t i = 0; i < len; i++) big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
  big[len] = '\0';
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  redis_pipeline_appendf(&p, "SET big %b", big, len);
  redis_pipeline_appendf(&p, "GET big");
  cr_assert_eq(redis_pipeline_send(&client, &p, on_big, big), 0);
  cr_assert(run_until(&calls, 1, 10), "no reply");
  cr_assert_eq(got_len, len);
  cr_assert(got_match, "the value came back different");
  free(big);
}
