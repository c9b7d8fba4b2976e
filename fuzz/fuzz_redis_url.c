/*
 * fuzz_redis_url: redis_url_parse() on arbitrary text, then
 * redis_url_redacted() on what parsed: the password must never show, and
 * a redacted URL must parse back to the same place.
 */
#include "fuzz.h"

#include <ctype.h>

#include "redis.h"

/* A user name that needs no percent-encoding reads back as itself. */
static int plain_user(const char *s) {
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && strchr("-._~", *s) == NULL) return 0;
  return 1;
}

static void check_redacted(const redis_url_t *u) {
  char shown[1024];
  redis_url_redacted(u, shown, sizeof(shown));
  FUZZ_CHECK(strlen(shown) + 1 < sizeof(shown), "a redacted URL fits 1 KiB");

  /* The same URL with another password must read the same: then no byte
   * of the password reaches the text. A substring test alone would fire
   * whenever the password also spells the user, the host or the port. */
  redis_url_t other = *u;
  if (u->password[0] != '\0')
    snprintf(other.password, sizeof(other.password), "%s",
             strcmp(u->password, "x") != 0 ? "x" : "y");
  char other_shown[1024];
  redis_url_redacted(&other, other_shown, sizeof(other_shown));
  FUZZ_CHECK(strcmp(shown, other_shown) == 0,
             "the redacted URL does not depend on the password");
  if (strlen(u->password) >= 3 && strstr(shown, u->password) != NULL)
    FUZZ_CHECK(strstr(other_shown, u->password) != NULL,
               "the redacted URL never contains the password");

  if (!plain_user(u->username)) return;
  redis_url_t back;
  char err[256] = "";
  FUZZ_CHECK(redis_url_parse(shown, &back, err, sizeof(err)) == 0,
             "a redacted URL parses");
  FUZZ_CHECK(back.transport == u->transport && back.tls == u->tls &&
                 strcmp(back.host, u->host) == 0 && back.port == u->port &&
                 strcmp(back.path, u->path) == 0 && back.db == u->db &&
                 strcmp(back.username, u->username) == 0,
             "a redacted URL points where the URL did");
  FUZZ_CHECK(strcmp(back.password, u->password[0] ? "***" : "") == 0,
             "a redacted URL's password is *** exactly when it had one");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *url = fuzz_strndup(data, size);
  if (url == NULL) return 0;
  redis_url_t u;
  char err[256] = "";
  int rc = redis_url_parse(url, &u, err, sizeof(err));
  if (rc == 0) {
    check_redacted(&u);
  } else {
    FUZZ_CHECK(rc == REDIS_E_INVALID && err[0] != '\0' && fuzz_is_one_line(err),
               "a bad URL is REDIS_E_INVALID with one line saying why");
    FUZZ_CHECK(redis_url_parse(url, &u, NULL, 0) == rc, "err may be NULL");
  }
  free(url);
  return 0;
}
