/*
 * heroku_internal: what the transport (heroku.c) and the pure reply side
 * (heroku_reply.c) share. Not part of the API: only those two include it.
 */
#ifndef SCALEKIQ_HEROKU_INTERNAL_H
#define SCALEKIQ_HEROKU_INTERNAL_H

#include <stddef.h>
#include <curl/curl.h>

#include "heroku.h"

/* For functions with int rc, char *err, size_t errlen and a fail: label
 * that cleans up. */
#define INIT_FAIL(code, ...)                                                   \
  do {                                                                         \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                     \
    rc = (code);                                                               \
    goto fail;                                                                 \
  } while (0)

/* Bounded copy that truncates. */
void heroku_copy_str(char *dst, size_t size, const char *src);
/* The first bytes of body as printable ASCII, for a message. */
void heroku_snippet(char *out, size_t size, const char *body, size_t len);
/* Sets res->status and res->detail; returns status. */
int heroku_fail(heroku_result_t *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The HEROKU_E_* code as a log value ("auth", "timeout", ...). */
const char *heroku_code_name(int status);
/* Network errors worth another attempt. */
int heroku_curl_retryable(CURLcode rc);
/* Failures that happen before a request leaves this machine. */
int heroku_not_sent(CURLcode rc);

/* No byte at or below ' ' and none above '~'. */
int heroku_printable_no_space(const char *s);
/* 0, or HEROKU_E_INVALID / HEROKU_E_NOMEM with err saying what to set. */
int heroku_check_api_url(const char *url, char *err, size_t errlen);

#endif
