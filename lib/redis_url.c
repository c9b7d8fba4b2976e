/*
 * redis_url: owns the Redis URL: parsing redis://, rediss:// and unix://
 * into a redis_url_t (percent-decoding the credentials) and printing one
 * back with its password redacted. Pure: no I/O, no allocation. The
 * declarations are in redis.h, beside the client that uses them.
 */
#include "redis.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Percent-decodes src[0..len) into dst; fails on a bad escape, a NUL or
 * overflow. */
static int pct_decode(char *dst, size_t size, const char *src, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)src[i];
    if (c == '%') {
      int hi, lo;
      if (i + 2 >= len) return -1;
      hi = hexval((unsigned char)src[i + 1]);
      lo = hexval((unsigned char)src[i + 2]);
      if (hi < 0 || lo < 0) return -1;
      c = hi * 16 + lo;
      if (c == 0) return -1;
      i += 2;
    }
    if (o + 1 >= size) return -1;
    dst[o++] = (char)c;
  }
  dst[o] = '\0';
  return 0;
}

static int parse_int(const char *s, size_t len, long min, long max, int *out) {
  if (len == 0 || len > 10) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v < min || v > max) return -1;
  *out = (int)v;
  return 0;
}

#define URL_FAIL(...)                                                          \
  do {                                                                         \
    if (err) snprintf(err, errlen, __VA_ARGS__);                               \
    return REDIS_E_INVALID;                                                    \
  } while (0)

static int parse_unix(const char *rest, redis_url_t *u, char *err,
                      size_t errlen) {
  const char *q = strchr(rest, '?');
  size_t plen = q ? (size_t)(q - rest) : strlen(rest);
  if (plen == 0 || rest[0] != '/')
    URL_FAIL("unix URL needs an absolute socket path, as unix:///run/redis.sock");
  if (plen >= sizeof(u->path))
    URL_FAIL("unix socket path is longer than %zu bytes", sizeof(u->path) - 1);
  for (size_t i = 0; i < plen; i++)
    if ((unsigned char)rest[i] < 0x20 || rest[i] == 0x7f)
      URL_FAIL("unix socket path has a control character in it");
  memcpy(u->path, rest, plen);
  u->path[plen] = '\0';
  if (q) {
    if (strncmp(q, "?db=", 4) != 0 ||
        parse_int(q + 4, strlen(q + 4), 0, 1000000, &u->db) != 0)
      URL_FAIL("unix URL accepts only ?db=N with N a database number");
  }
  return 0;
}

int redis_url_parse(const char *url, redis_url_t *u, char *err, size_t errlen) {
  memset(u, 0, sizeof(*u));
  u->port = 6379;
  if (url == NULL || url[0] == '\0') URL_FAIL("Redis URL is empty");
  const char *rest;
  if (strncmp(url, "redis://", 8) == 0) {
    rest = url + 8;
  } else if (strncmp(url, "rediss://", 9) == 0) {
    rest = url + 9;
    u->tls = 1;
  } else if (strncmp(url, "unix://", 7) == 0) {
    u->transport = REDIS_TRANSPORT_UNIX;
    return parse_unix(url + 7, u, err, errlen);
  } else {
    URL_FAIL("Redis URL must start with redis://, rediss:// or unix://");
  }

  /* userinfo: the last '@' before the path, since a password may hold '@'
   * only percent-encoded but some providers do not encode it. */
  const char *path = strchr(rest, '/');
  const char *end = path ? path : rest + strlen(rest);
  const char *at = NULL;
  for (const char *p = rest; p < end; p++)
    if (*p == '@') at = p;
  const char *hostpart = rest;
  if (at) {
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    size_t ulen = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
    if (pct_decode(u->username, sizeof(u->username), rest, ulen) != 0)
      URL_FAIL("Redis URL has a malformed or too long user name");
    if (colon) {
      if (pct_decode(u->password, sizeof(u->password), colon + 1,
                     (size_t)(at - colon - 1)) != 0)
        URL_FAIL("Redis URL has a malformed or too long password");
    } else {
      /* redis://secret@host: a lone userinfo is the password, as in
       * redis-cli and most clients. */
      memcpy(u->password, u->username, sizeof(u->password) < sizeof(u->username)
                                           ? sizeof(u->password)
                                           : sizeof(u->username));
      u->username[0] = '\0';
    }
    hostpart = at + 1;
  }
  /* Options some clients take after '?' (ssl_cert_reqs=none, ...) would
   * otherwise be reported as a bad host or database. */
  if (strpbrk(hostpart, "?#") != NULL)
    URL_FAIL("Redis URL options after '?' or '#' are not supported: remove them "
             "(for TLS without certificate checks set SCALEKIQ_REDIS_TLS_VERIFY=none)");

  const char *portp = NULL;
  size_t hlen;
  if (hostpart[0] == '[') {
    const char *close = memchr(hostpart, ']', (size_t)(end - hostpart));
    if (close == NULL) URL_FAIL("Redis URL has an unclosed '[' in its host");
    hlen = (size_t)(close - hostpart - 1);
    if (hlen == 0 || hlen >= sizeof(u->host))
      URL_FAIL("Redis URL has a bad IPv6 host");
    memcpy(u->host, hostpart + 1, hlen);
    if (close + 1 < end) {
      if (close[1] != ':') URL_FAIL("Redis URL has junk after ']'");
      portp = close + 2;
    }
  } else {
    const char *colon = memchr(hostpart, ':', (size_t)(end - hostpart));
    hlen = colon ? (size_t)(colon - hostpart) : (size_t)(end - hostpart);
    if (hlen >= sizeof(u->host)) URL_FAIL("Redis URL host name is too long");
    memcpy(u->host, hostpart, hlen);
    if (colon) portp = colon + 1;
  }
  u->host[hlen] = '\0';
  if (u->host[0] == '\0') URL_FAIL("Redis URL has no host");
  for (const char *p = u->host; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' ||
          *p == ':'))
      URL_FAIL("Redis URL host has an invalid character");
  if (portp && parse_int(portp, (size_t)(end - portp), 1, 65535, &u->port) != 0)
    URL_FAIL("Redis URL port must be a number from 1 to 65535");
  if (path && path[1] != '\0' &&
      parse_int(path + 1, strlen(path + 1), 0, 1000000, &u->db) != 0)
    URL_FAIL("Redis URL path must be a database number, as /0");
  return 0;
}

void redis_url_redacted(const redis_url_t *u, char *buf, size_t size) {
  if (u->transport == REDIS_TRANSPORT_UNIX) {
    if (u->db)
      snprintf(buf, size, "unix://%s?db=%d", u->path, u->db);
    else
      snprintf(buf, size, "unix://%s", u->path);
    return;
  }
  int v6 = strchr(u->host, ':') != NULL;
  int userinfo = u->username[0] || u->password[0];
  /* "user@" alone would read back as a password: keep the ':' of "user:@". */
  snprintf(buf, size, "%s://%s%s%s%s%s%s:%d/%d", u->tls ? "rediss" : "redis",
           u->username, u->password[0] ? ":***" : u->username[0] ? ":" : "",
           userinfo ? "@" : "",
           v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db);
}
