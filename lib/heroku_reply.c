/*
 * heroku_reply: owns what the Platform API's answers mean, with no I/O:
 * an HTTP status and body classified into one result and one line of
 * advice (heroku_reply_parse), which replies and transport failures are
 * worth retrying, the names of the error codes, and whether a base URL is
 * acceptable (checked with libcurl's URL parser, which sends nothing).
 * heroku.c, the transport, calls into it through heroku_internal.h.
 */
#include "heroku.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "heroku_internal.h"

const char *heroku_strerror(int code) {
  switch (code) {
  case 0: return "ok";
  case HEROKU_E_INVALID: return "invalid argument";
  case HEROKU_E_NOMEM: return "out of memory";
  case HEROKU_E_AUTH: return "Heroku refused the API token";
  case HEROKU_E_NOT_FOUND: return "no such Heroku app or process type";
  case HEROKU_E_LIMIT: return "above Heroku's dyno limit";
  case HEROKU_E_REJECTED: return "Heroku rejected the request";
  case HEROKU_E_UNAVAILABLE: return "Heroku API unavailable";
  case HEROKU_E_TIMEOUT: return "Heroku API request timed out";
  case HEROKU_E_BAD_REPLY: return "unexpected reply from the Heroku API";
  case HEROKU_E_CLOSED: return "Heroku client closed";
  case HEROKU_E_VETOED: return "change not sent: no longer allowed";
  default: return "unknown error";
  }
}

const char *heroku_code_name(int status) {
  switch (status) {
  case HEROKU_E_INVALID: return "invalid";
  case HEROKU_E_NOMEM: return "nomem";
  case HEROKU_E_AUTH: return "auth";
  case HEROKU_E_NOT_FOUND: return "not_found";
  case HEROKU_E_LIMIT: return "limit";
  case HEROKU_E_REJECTED: return "rejected";
  case HEROKU_E_UNAVAILABLE: return "unavailable";
  case HEROKU_E_TIMEOUT: return "timeout";
  case HEROKU_E_BAD_REPLY: return "bad_reply";
  case HEROKU_E_CLOSED: return "closed";
  case HEROKU_E_VETOED: return "vetoed";
  default: return "ok";
  }
}

/* ---- replies ------------------------------------------------------- */

int heroku_http_retryable(long http_status) {
  return http_status == 429 || (http_status >= 500 && http_status <= 599);
}

/* Bounded copy that truncates (and, unlike snprintf, draws no truncation
 * warnings at -O2). */
void heroku_copy_str(char *dst, size_t size, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= size) n = size - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

/* The first bytes of body as printable ASCII, for a message. */
void heroku_snippet(char *out, size_t size, const char *body, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 4 < size && i < 40; i++) {
    unsigned char c = (unsigned char)body[i];
    out[o++] = (c >= ' ' && c < 0x7f && c != '"') ? (char)c : '?';
  }
  if (len > 40 && o + 4 < size) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}

int heroku_fail(heroku_result_t *res, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
  va_end(ap);
  res->status = status;
  return status;
}

static int parse_success(const cJSON *doc, const char *body, size_t len,
                         heroku_result_t *res) {
  long code = res->http_status;
  if (len == 0)
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld with an empty body where a formation was expected: "
                       "is HEROKU_API_URL the Platform API?", code);
  if (!cJSON_IsObject(doc)) {
    char s[64];
    heroku_snippet(s, sizeof(s), body, len);
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld with a body that is not a JSON object (\"%s\"): is "
                       "HEROKU_API_URL the Platform API?", code, s);
  }
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(doc, "quantity");
  if (q == NULL)
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld reply has no quantity: not a formation object", code);
  if (!cJSON_IsNumber(q))
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld reply has a quantity that is not a number: is "
                       "HEROKU_API_URL the Platform API?", code);
  double d = q->valuedouble;
  if (!(d >= 0) || d > 1e9 || d != floor(d))
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld reply has quantity %g, not a non-negative integer: is "
                       "HEROKU_API_URL the Platform API?", code, d);
  res->quantity = (long)d;
  res->status = 0;
  snprintf(res->detail, sizeof(res->detail), "quantity %ld", res->quantity);
  return 0;
}

int heroku_reply_parse(long http_status, const char *body, size_t len,
                       heroku_result_t *res) {
  res->status = 0;
  res->http_status = http_status;
  res->quantity = -1;
  res->error_id[0] = res->message[0] = res->detail[0] = '\0';
  if (body == NULL) len = 0;
  if (len > HEROKU_MAX_BODY)
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "HTTP %ld with a %zu-byte body, over the %u-byte limit: is "
                       "HEROKU_API_URL the Platform API?", http_status, len,
                       HEROKU_MAX_BODY);

  /* A value followed by anything but blanks is not JSON (cJSON alone
   * would stop after the value and call it a success). */
  const char *end = NULL;
  cJSON *doc = len ? cJSON_ParseWithLengthOpts(body, len, &end, 0) : NULL;
  for (const char *p = end; doc != NULL && p < body + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
      cJSON_Delete(doc);
      doc = NULL;
    }
  if (http_status >= 200 && http_status <= 299) {
    int rc = parse_success(doc, body, len, res);
    cJSON_Delete(doc);
    return rc;
  }
  if (cJSON_IsObject(doc)) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(doc, "message");
    if (cJSON_IsString(id))
      heroku_copy_str(res->error_id, sizeof(res->error_id), id->valuestring);
    if (cJSON_IsString(msg))
      heroku_copy_str(res->message, sizeof(res->message), msg->valuestring);
    /* One line: messages are the API's prose, keep them printable. */
    for (char *p = res->message; *p; p++)
      if ((unsigned char)*p < ' ' || *p == 0x7f) *p = ' ';
    for (char *p = res->error_id; *p; p++)
      if ((unsigned char)*p <= ' ' || *p == '"' || *p == 0x7f) *p = '?';
  }
  cJSON_Delete(doc);

  /* "HTTP 404 not_found (Couldn't find that app.)" */
  char what[384];
  if (res->error_id[0] || res->message[0])
    snprintf(what, sizeof(what), "HTTP %ld %s%s(%s)", http_status,
             res->error_id[0] ? res->error_id : "", res->error_id[0] ? " " : "",
             res->message[0] ? res->message : "no message");
  else if (len == 0)
    snprintf(what, sizeof(what), "HTTP %ld with an empty body", http_status);
  else
    snprintf(what, sizeof(what), "HTTP %ld (body not JSON)", http_status);

  switch (http_status) {
  case 401:
    return heroku_fail(res, HEROKU_E_AUTH,
                       "%s: Heroku does not accept the API token; set HEROKU_API_KEY "
                       "to a valid token (heroku authorizations:create)", what);
  case 403:
    return heroku_fail(res, HEROKU_E_AUTH,
                       "%s: the token's user may not scale this app; use a token of "
                       "an app member with the deploy and operate permissions", what);
  case 404:
    return heroku_fail(res, HEROKU_E_NOT_FOUND,
                       "%s: no such app or process type; check HEROKU_APP_NAME (or "
                       "HEROKU_APP_ID) and SCALEKIQ_FORMATION", what);
  case 422:
    if (strcmp(res->error_id, "cannot_run_above_limit") == 0)
      return heroku_fail(res, HEROKU_E_LIMIT,
                         "%s: that is the most dynos Heroku runs for this app and "
                         "size; treated as maxscale (ask Heroku to raise the limit, or "
                         "lower SCALEKIQ_MAX_ADDITIONAL_WORKERS)", what);
    return heroku_fail(res, HEROKU_E_REJECTED, "%s: Heroku rejected the request", what);
  case 429:
    return heroku_fail(res, HEROKU_E_UNAVAILABLE,
                       "%s: the token's API rate limit is used up; it refills within "
                       "minutes (is another tool using the same token?)", what);
  default:
    break;
  }
  if (http_status >= 500 && http_status <= 599)
    return heroku_fail(res, HEROKU_E_UNAVAILABLE,
                       "%s: the Platform API is failing; see https://status.heroku.com",
                       what);
  if (http_status >= 400 && http_status <= 499)
    return heroku_fail(res, HEROKU_E_REJECTED, "%s: Heroku rejected the request", what);
  if (http_status >= 300 && http_status <= 399)
    return heroku_fail(res, HEROKU_E_BAD_REPLY,
                       "%s: redirects are not followed; set HEROKU_API_URL to the "
                       "API's own address", what);
  return heroku_fail(res, HEROKU_E_BAD_REPLY, "unexpected %s", what);
}

/* ---- transport failures -------------------------------------------- */

/* Network errors worth another attempt. */
int heroku_curl_retryable(CURLcode rc) {
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_AGAIN:
    return 1;
  default:
    return 0;
  }
}

/* Failures that happen before a request leaves this machine. */
int heroku_not_sent(CURLcode rc) {
  return rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_COULDNT_RESOLVE_HOST ||
         rc == CURLE_COULDNT_CONNECT;
}

/* ---- the base URL --------------------------------------------------- */

static int is_loopback(const char *host) {
  static const char *const names[] = {"127.0.0.1", "localhost", "[::1]", "::1"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcasecmp(host, names[i]) == 0) return 1;
  return 0;
}

int heroku_printable_no_space(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f) return 0;
  return 1;
}

/* Checks the base URL the way config does, with libcurl's own parser (the
 * one that will be used): http(s) only, no user info, no query, and plain
 * http only to this machine. */
int heroku_check_api_url(const char *url, char *err, size_t errlen) {
  int rc = 0;
  char *scheme = NULL, *host = NULL, *user = NULL, *query = NULL, *frag = NULL;
  CURLU *u = curl_url();
  if (u == NULL) INIT_FAIL(HEROKU_E_NOMEM, "out of memory");
  if (!heroku_printable_no_space(url) ||
      curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
    INIT_FAIL(HEROKU_E_INVALID,
              "HEROKU_API_URL is not a usable URL: set it to https://HOST[:PORT], "
              "such as https://api.heroku.com");
  curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  curl_url_get(u, CURLUPART_HOST, &host, 0);
  curl_url_get(u, CURLUPART_USER, &user, 0);
  curl_url_get(u, CURLUPART_QUERY, &query, 0);
  curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
  if (scheme == NULL || host == NULL || host[0] == '\0' ||
      (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0))
    INIT_FAIL(HEROKU_E_INVALID,
              "HEROKU_API_URL must be https://HOST[:PORT], such as "
              "https://api.heroku.com");
  if (user || query || frag)
    INIT_FAIL(HEROKU_E_INVALID,
              "HEROKU_API_URL must not hold a user name, a query or a fragment: "
              "set it to https://HOST[:PORT][/PATH]");
  if (strcmp(scheme, "http") == 0 && !is_loopback(host))
    INIT_FAIL(HEROKU_E_INVALID,
              "HEROKU_API_URL uses http:// to %s, not this machine: the API "
              "token would cross the network unencrypted; use https://, or "
              "http:// only with 127.0.0.1, [::1] or localhost", host);
fail:
  curl_free(scheme);
  curl_free(host);
  curl_free(user);
  curl_free(query);
  curl_free(frag);
  if (u) curl_url_cleanup(u);
  return rc;
}
