/*
 * config_heroku: owns the Heroku settings: the app (HEROKU_APP_NAME or
 * HEROKU_APP_ID, a name or a UUID), the token (environment only, never
 * shown) and the Platform API base URL (https://, or http:// to this
 * machine only), each checked before anything is sent with the token.
 * The loader machinery is config.c's (config_internal.h).
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_internal.h"

static int is_uuid(const char *s) {
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  if (strlen(s) != sizeof(shape) - 1) return 0;
  for (size_t i = 0; shape[i]; i++)
    if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i])) return 0;
  return 1;
}

/* Heroku's own rule starts names with a letter; the length cap is looser
 * than Heroku's 30 so that only the URL-path safety is enforced here. */
static int is_app_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 100 || !islower((unsigned char)s[0])) return 0;
  for (; *s; s++)
    if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-'))
      return 0;
  return 1;
}

/* The token would otherwise travel in clear text over the network: plain
 * http is only for a fake API on this very machine. */
static int is_loopback_host(const char *host, size_t len) {
  static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]", "::1"};
  for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++)
    if (strlen(loopback[i]) == len && strncasecmp(host, loopback[i], len) == 0) return 1;
  return 0;
}

static int load_api_url(struct loader *ld) {
  config_t *cfg = ld->cfg;
  struct source src;
  if (!config_lookup(ld, S_HEROKU_API_URL, &src))
    return config_copy_string(ld, &cfg->heroku_api_url, CONFIG_DEFAULT_HEROKU_API_URL);
  char q[QBUF];
  const char *v = src.value;
  int https = strncmp(v, "https://", 8) == 0;
  int http = strncmp(v, "http://", 7) == 0;
  const char *auth = https ? v + 8 : http ? v + 7 : NULL;
  size_t authlen = auth ? strcspn(auth, "/?#") : 0;
  /* '@' would let "http://localhost@elsewhere" pass the loopback check. */
  if (auth == NULL || authlen == 0 || memchr(auth, '@', authlen) != NULL ||
      config_has_space_or_control(v) || strpbrk(auth + authlen, "?#") != NULL)
    return config_fail(
        ld, "%s=%s is not a usable API base URL: set it to https://HOST[:PORT] "
            "with an optional path, such as %s",
        src.name, config_quoted(q, sizeof(q), v), CONFIG_DEFAULT_HEROKU_API_URL);
  size_t hostlen = authlen;
  int bracketed = auth[0] == '[';
  if (bracketed) {
    const char *close = memchr(auth, ']', authlen);
    hostlen = close ? (size_t)(close - auth) + 1 : 0;
  } else {
    const char *colon = memchr(auth, ':', authlen);
    if (colon) hostlen = (size_t)(colon - auth);
  }
  /* What libcurl would do with anything else is its business, not ours
   * to find out with the token attached. */
  int host_ok = hostlen > (size_t)(bracketed ? 2 : 0);
  for (size_t i = bracketed; host_ok && i < hostlen - (size_t)bracketed; i++) {
    unsigned char c = (unsigned char)auth[i];
    host_ok = bracketed ? (isxdigit(c) || c == ':' || c == '.')
                        : (isalnum(c) || c == '.' || c == '-' || c == '_');
  }
  if (!host_ok)
    return config_fail(
        ld, "%s=%s has no host, or a malformed one: set it to https://HOST[:PORT] "
            "(a name, an IPv4 address or an [IPv6] one), such as %s",
        src.name, config_quoted(q, sizeof(q), v), CONFIG_DEFAULT_HEROKU_API_URL);
  if (hostlen < authlen) {
    const char *port = auth + hostlen;
    size_t plen = authlen - hostlen;
    int ok = port[0] == ':' && plen >= 2 && plen <= 6;
    for (size_t i = 1; i < plen && ok; i++) ok = isdigit((unsigned char)port[i]);
    if (ok) ok = atoi(port + 1) >= 1 && atoi(port + 1) <= 65535;
    if (!ok)
      return config_fail(
          ld, "%s=%s has a malformed port: set it to https://HOST[:PORT], such "
              "as %s",
          src.name, config_quoted(q, sizeof(q), v), CONFIG_DEFAULT_HEROKU_API_URL);
  }
  if (http && !is_loopback_host(auth, hostlen))
    return config_fail(ld,
                       "%s=%s uses http:// to a host that is not this machine: the API "
                       "token would cross the network unencrypted; use https://, or "
                       "http:// only with 127.0.0.1, [::1] or localhost",
                       src.name, config_quoted(q, sizeof(q), v));
  if (config_copy_string(ld, &cfg->heroku_api_url, v) != 0) return -1;
  /* Callers append "/apps/..." to it. */
  size_t n = strlen(cfg->heroku_api_url);
  while (n > (size_t)(auth - v) + authlen && cfg->heroku_api_url[n - 1] == '/')
    cfg->heroku_api_url[--n] = '\0';
  return 0;
}

int config_load_heroku(struct loader *ld, int need_heroku) {
  config_t *cfg = ld->cfg;
  struct source src;
  char q[QBUF];
  if (!config_lookup(ld, S_HEROKU_APP, &src)) {
    src.value = config_env_nonempty(ld, "HEROKU_APP_ID");
    src.name = "HEROKU_APP_ID";
  }
  if (src.value != NULL) {
    if (!is_app_name(src.value) && !is_uuid(src.value))
      return config_fail(ld,
                         "%s=%s is not a Heroku app name or id: set it to the app's name "
                         "(a letter, then a-z, 0-9 and -) or its UUID",
                         src.name, config_quoted(q, sizeof(q), src.value));
    if (config_copy_string(ld, &cfg->heroku_app, src.value) != 0 ||
        config_copy_string(ld, &cfg->heroku_app_source, src.name) != 0)
      return -1;
  }

  /* Environment only, and never echoed: see --heroku-api-key in parse_flags(). */
  const char *token = config_env_nonempty(ld, "HEROKU_API_KEY");
  if (token != NULL) {
    /* It goes into an HTTP header, where a stray newline would be a
     * header injection and a space a confusing 401. */
    if (config_has_space_or_control(token))
      return config_fail(
          ld, "HEROKU_API_KEY contains spaces, a newline or control characters "
              "(value not shown): set it to the token alone");
    if (config_copy_string(ld, &cfg->heroku_api_key, token) != 0) return -1;
  }

  if (need_heroku && !cfg->dry_run) {
    if (cfg->heroku_app == NULL)
      return config_fail(
          ld, "HEROKU_APP_NAME is not set: set HEROKU_APP_NAME (or HEROKU_APP_ID, "
              "or --heroku-app) to the app whose formation to scale, or set "
              "SCALEKIQ_DRY_RUN=1");
    if (cfg->heroku_api_key == NULL)
      return config_fail(
          ld, "HEROKU_API_KEY is not set: set it to a Platform API token allowed "
              "to scale the app (heroku authorizations:create), or set "
              "SCALEKIQ_DRY_RUN=1");
  }
  return load_api_url(ld);
}
