/*
 * config_redis: owns the Redis settings: where the URL comes from
 * (SCALEKIQ_REDIS_URL, the variable REDIS_PROVIDER names, REDIS_URL,
 * REDIS_TLS_URL, the default), how a bad one is shown without what may be
 * its password, and the TLS settings (verification mode, CA, client
 * certificate and key files). The loader machinery is config.c's
 * (config_internal.h).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config_internal.h"

/* A Redis URL may carry a password, so it is only shown with anything
 * that could be one masked; a value that is not even URL-shaped might be
 * a password pasted into the wrong variable, and is not shown at all. */
static const char *shown_url(char *buf, size_t size, const char *url) {
  const char *scheme = strstr(url, "://");
  if (scheme == NULL || scheme == url) {
    snprintf(buf, size, "(value hidden: it may hold a password)");
    return buf;
  }
  const char *at = strrchr(url, '@');
  if (at == NULL || at < scheme) {
    /* No '@': still hide it unless it reads as host[:port], since a
     * forgotten "@host" leaves ":password" where a port would be. */
    const char *host = scheme + 3, *end = host + strcspn(host, "/?#");
    if (*host == '[') {
      const char *close = memchr(host, ']', (size_t)(end - host));
      host = close ? close + 1 : end;
    }
    const char *colon = memchr(host, ':', (size_t)(end - host));
    int port_ok = colon == NULL || colon + 1 < end;
    for (const char *p = colon ? colon + 1 : end; p < end; p++)
      if (!isdigit((unsigned char)*p)) port_ok = 0;
    if (port_ok) return config_quoted(buf, size, url);
    snprintf(buf, size, "(value hidden: it may hold a password)");
    return buf;
  }
  char masked[QBUF];
  int n = snprintf(masked, sizeof(masked), "%.*s://***%s", (int)(scheme - url), url, at);
  if (n < 0) masked[0] = '\0';
  return config_quoted(buf, size, masked);
}

static int is_env_name(const char *s) {
  if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return 0;
  return 1;
}

int config_load_redis_url(struct loader *ld) {
  config_t *cfg = ld->cfg;
  struct source src;
  char q[QBUF];
  if (!config_lookup(ld, S_REDIS_URL, &src)) {
    /* Heroku add-ons put their URL in a variable of their own choosing;
     * REDIS_PROVIDER is the convention (used by Sidekiq) for naming it. */
    const char *provider = config_env_nonempty(ld, "REDIS_PROVIDER");
    if (provider != NULL) {
      if (!is_env_name(provider))
        return config_fail(ld,
                           "REDIS_PROVIDER=%s is not a variable name: set it to the name "
                           "of the variable holding the Redis URL, such as REDIS_URL",
                           config_quoted(q, sizeof(q), provider));
      src.value = config_env_nonempty(ld, provider);
      src.name = provider;
      if (src.value == NULL)
        return config_fail(ld,
                           "REDIS_PROVIDER=%s names a variable that is not set: set %s "
                           "to the Redis URL, or point REDIS_PROVIDER at the variable "
                           "that holds it",
                           config_quoted(q, sizeof(q), provider), provider);
    } else if ((src.value = config_env_nonempty(ld, "REDIS_URL")) != NULL) {
      src.name = "REDIS_URL";
    } else if ((src.value = config_env_nonempty(ld, "REDIS_TLS_URL")) != NULL) {
      src.name = "REDIS_TLS_URL";
    } else {
      src.value = CONFIG_DEFAULT_REDIS_URL;
      src.name = "default";
    }
  }
  char why[256];
  if (redis_url_parse(src.value, &cfg->redis, why, sizeof(why)) != 0)
    return config_fail(ld,
                       "%s=%s is not a valid Redis URL (%s): set it to "
                       "redis://[:password@]host[:port][/db], rediss://... for TLS, "
                       "or unix:///path",
                       src.name, shown_url(q, sizeof(q), src.value), why);
  if (config_copy_string(ld, &cfg->redis_url, src.value) != 0) return -1;
  return config_copy_string(ld, &cfg->redis_url_source, src.name);
}

static int load_readable_file(struct loader *ld, enum setting_id id, char **out) {
  struct source src;
  if (!config_lookup(ld, id, &src)) return 0;
  if (access(src.value, R_OK) != 0) {
    char q[QBUF];
    return config_fail(
        ld, "%s=%s cannot be read (%s): set it to the path of a readable PEM file",
        src.name, config_quoted(q, sizeof(q), src.value), strerror(errno));
  }
  return config_copy_string(ld, out, src.value);
}

int config_load_tls(struct loader *ld) {
  config_t *cfg = ld->cfg;
  struct source src;
  char q[QBUF];
  cfg->redis_tls_verify = CONFIG_TLS_VERIFY_PEER;
  if (config_lookup(ld, S_REDIS_TLS_VERIFY, &src)) {
    if (strcmp(src.value, "peer") == 0) {
      cfg->redis_tls_verify = CONFIG_TLS_VERIFY_PEER;
    } else if (strcmp(src.value, "none") == 0) {
      cfg->redis_tls_verify = CONFIG_TLS_VERIFY_NONE;
    } else {
      return config_fail(ld,
                         "%s=%s is not a verification mode: set it to peer (check the "
                         "server's certificate) or none (Heroku Key-Value Store's "
                         "self-signed certificates)",
                         src.name, config_quoted(q, sizeof(q), src.value));
    }
  }
  if (load_readable_file(ld, S_REDIS_TLS_CA_FILE, &cfg->redis_tls_ca_file) != 0 ||
      load_readable_file(ld, S_REDIS_TLS_CERT_FILE, &cfg->redis_tls_cert_file) != 0 ||
      load_readable_file(ld, S_REDIS_TLS_KEY_FILE, &cfg->redis_tls_key_file) != 0)
    return -1;
  /* A client certificate is useless without its key and vice versa. */
  if ((cfg->redis_tls_cert_file == NULL) != (cfg->redis_tls_key_file == NULL)) {
    enum setting_id given =
        cfg->redis_tls_cert_file ? S_REDIS_TLS_CERT_FILE : S_REDIS_TLS_KEY_FILE;
    enum setting_id missing =
        cfg->redis_tls_cert_file ? S_REDIS_TLS_KEY_FILE : S_REDIS_TLS_CERT_FILE;
    config_lookup(ld, given, &src);
    return config_fail(ld,
                       "%s=%s is set but %s is not: set both (client certificate and its "
                       "key) or neither",
                       src.name, config_quoted(q, sizeof(q), src.value),
                       config_settings[missing].env);
  }
  return 0;
}
