#include <criterion/criterion.h>
#include <string.h>

#include "redis.h"

static redis_url_t parse_ok(const char *s) {
  redis_url_t u;
  char err[256] = "";
  cr_assert_eq(redis_url_parse(s, &u, err, sizeof(err)), 0, "%s: %s", s, err);
  return u;
}

static void parse_bad(const char *s, const char *expect_in_err) {
  redis_url_t u;
  char err[256] = "";
  cr_assert_eq(redis_url_parse(s, &u, err, sizeof(err)), REDIS_E_INVALID,
               "accepted %s", s ? s : "(null)");
  cr_assert_not_null(strstr(err, expect_in_err), "error for %s was: %s", s, err);
}

Test(redis_url, defaults) {
  redis_url_t u = parse_ok("redis://localhost");
  cr_assert_eq(u.transport, REDIS_TRANSPORT_TCP);
  cr_assert_str_eq(u.host, "localhost");
  cr_assert_eq(u.port, 6379);
  cr_assert_eq(u.db, 0);
  cr_assert_eq(u.tls, 0);
  cr_assert_str_empty(u.password);
  cr_assert_str_empty(u.username);
}

Test(redis_url, heroku_style_password_only) {
  redis_url_t u = parse_ok("redis://:p4ss%40w0rd@ec2-1-2-3-4.compute-1.amazonaws.com:12345");
  cr_assert_str_eq(u.host, "ec2-1-2-3-4.compute-1.amazonaws.com");
  cr_assert_eq(u.port, 12345);
  cr_assert_str_eq(u.password, "p4ss@w0rd");
  cr_assert_str_empty(u.username);
}

Test(redis_url, user_password_db_tls) {
  redis_url_t u = parse_ok("rediss://default:secret@10.0.0.1:6380/3");
  cr_assert_eq(u.tls, 1);
  cr_assert_str_eq(u.username, "default");
  cr_assert_str_eq(u.password, "secret");
  cr_assert_eq(u.db, 3);
  cr_assert_eq(u.port, 6380);
}

Test(redis_url, lone_userinfo_is_password) {
  redis_url_t u = parse_ok("redis://secret@host/1");
  cr_assert_str_eq(u.password, "secret");
  cr_assert_str_empty(u.username);
  cr_assert_eq(u.db, 1);
}

Test(redis_url, unencoded_at_in_password_uses_last_at) {
  redis_url_t u = parse_ok("redis://:pa@ss@host:1");
  cr_assert_str_eq(u.password, "pa@ss");
  cr_assert_str_eq(u.host, "host");
}

Test(redis_url, ipv6) {
  redis_url_t u = parse_ok("redis://[::1]:7000/2");
  cr_assert_str_eq(u.host, "::1");
  cr_assert_eq(u.port, 7000);
  cr_assert_eq(u.db, 2);
  u = parse_ok("redis://[fe80::1]");
  cr_assert_eq(u.port, 6379);
}

Test(redis_url, unix_socket) {
  redis_url_t u = parse_ok("unix:///var/run/redis.sock");
  cr_assert_eq(u.transport, REDIS_TRANSPORT_UNIX);
  cr_assert_str_eq(u.path, "/var/run/redis.sock");
  u = parse_ok("unix:///tmp/r.sock?db=4");
  cr_assert_eq(u.db, 4);
}

Test(redis_url, trailing_slash_is_db0) {
  redis_url_t u = parse_ok("redis://h:1/");
  cr_assert_eq(u.db, 0);
}

Test(redis_url, bad) {
  parse_bad(NULL, "empty");
  parse_bad("", "empty");
  parse_bad("http://host", "must start with");
  parse_bad("redis://", "no host");
  parse_bad("redis://:pw@", "no host");
  parse_bad("redis://host:0", "port");
  parse_bad("redis://host:65536", "port");
  parse_bad("redis://host:12ab", "port");
  parse_bad("redis://host:", "port");
  parse_bad("redis://host/abc", "database");
  parse_bad("redis://host/-1", "database");
  parse_bad("redis://[::1", "unclosed");
  parse_bad("redis://[::1]x", "junk");
  parse_bad("redis://ho st", "invalid character");
  parse_bad("redis://:bad%zzescape@host", "password");
  parse_bad("redis://:nul%00@host", "password");
  parse_bad("unix://relative.sock", "absolute");
  parse_bad("unix:///tmp/r.sock?foo=1", "db=N");
}

Test(redis_url, errors_never_contain_the_password) {
  redis_url_t u;
  char err[256];
  cr_assert_neq(redis_url_parse("redis://:hunter2secret@host:99999", &u, err,
                                sizeof(err)), 0);
  cr_assert_null(strstr(err, "hunter2secret"));
}

Test(redis_url, redacted_hides_password) {
  redis_url_t u = parse_ok("redis://user:hunter2secret@host:1/2");
  char buf[256];
  redis_url_redacted(&u, buf, sizeof(buf));
  cr_assert_str_eq(buf, "redis://user:***@host:1/2");
  u = parse_ok("redis://[::1]:5");
  redis_url_redacted(&u, buf, sizeof(buf));
  cr_assert_str_eq(buf, "redis://[::1]:5/0");
  u = parse_ok("unix:///tmp/x.sock?db=3");
  redis_url_redacted(&u, buf, sizeof(buf));
  cr_assert_str_eq(buf, "unix:///tmp/x.sock?db=3");
}
