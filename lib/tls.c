/*
 * tls: OpenSSL on memory BIOs; see tls.h. The settings' names in the
 * messages are scalekiq's (SCALEKIQ_REDIS_TLS_*), because these messages
 * end up in front of whoever has to fix the configuration.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_ctx {
  SSL_CTX *ctx;
  int verify;
};

struct tls_conn {
  SSL *ssl; /* owns both BIOs */
  BIO *rbio; /* ciphertext from the peer, waiting for OpenSSL */
  BIO *wbio; /* ciphertext from OpenSSL, waiting for the stream */
  int verify;
};

/* The reason of OpenSSL's most recent error ("wrong version number"),
 * then an empty queue, so that no stale error is blamed later. */
static void last_reason(char *buf, size_t size) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  if (reason) snprintf(buf, size, "%s", reason);
  else if (e) ERR_error_string_n(e, buf, size);
  else snprintf(buf, size, "no detail from OpenSSL");
  ERR_clear_error();
}

/* A key file with a passphrase would make OpenSSL prompt on the terminal,
 * which would block the agent: refuse it instead, and say so. */
static int no_passphrase(char *buf, int size, int rwflag, void *data) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)data;
  return -1;
}

tls_ctx_t *tls_ctx_new(int verify, const char *ca_file, const char *cert_file,
                       const char *key_file, char *err, size_t errlen) {
  char why[200];
  ERR_clear_error();
  tls_ctx_t *t = calloc(1, sizeof(*t));
  if (t == NULL || (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
    snprintf(err, errlen, "cannot set up TLS: out of memory");
    free(t);
    return NULL;
  }
  t->verify = verify;
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  /* A TLS 1.2 renegotiation would make a write wait for a read; Redis
   * never asks for one, so refuse it rather than handle it. */
  SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_default_passwd_cb(t->ctx, no_passphrase);
  SSL_CTX_set_verify(t->ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  if (verify && ca_file) {
    if (SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1) {
      last_reason(why, sizeof(why));
      snprintf(err, errlen,
               "SCALEKIQ_REDIS_TLS_CA_FILE=%s holds no usable CA certificate (%s): "
               "set it to a PEM bundle",
               ca_file, why);
      goto fail;
    }
  } else if (verify) {
    /* The system's bundle file is read now; the hashed directory beside
     * it is only consulted for an issuer the bundle lacks, a local file
     * lookup. SSL_CERT_FILE and SSL_CERT_DIR are honoured. */
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
      last_reason(why, sizeof(why));
      snprintf(err, errlen,
               "cannot load the system's CA certificates (%s): set "
               "SCALEKIQ_REDIS_TLS_CA_FILE to a PEM bundle",
               why);
      goto fail;
    }
  }
  if (cert_file && key_file) {
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
      last_reason(why, sizeof(why));
      snprintf(err, errlen,
               "SCALEKIQ_REDIS_TLS_CERT_FILE=%s is not a usable PEM certificate (%s)",
               cert_file, why);
      goto fail;
    }
    /* This also checks that the key is the certificate's. */
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
      last_reason(why, sizeof(why));
      snprintf(err, errlen,
               "SCALEKIQ_REDIS_TLS_KEY_FILE=%s cannot be used (%s): it must be the "
               "PEM private key of SCALEKIQ_REDIS_TLS_CERT_FILE, without a passphrase",
               key_file, why);
      goto fail;
    }
  }
  return t;
fail:
  tls_ctx_free(t);
  return NULL;
}

void tls_ctx_free(tls_ctx_t *t) {
  if (t == NULL) return;
  SSL_CTX_free(t->ctx); /* sessions still open hold their own reference */
  free(t);
}

tls_conn_t *tls_conn_new(tls_ctx_t *ctx, const char *host, char *err,
                         size_t errlen) {
  ERR_clear_error();
  tls_conn_t *t = calloc(1, sizeof(*t));
  if (t == NULL) goto nomem;
  t->verify = ctx->verify;
  t->ssl = SSL_new(ctx->ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    goto nomem;
  }
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_connect_state(t->ssl);

  unsigned char addr[16];
  int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
  int ok = 1;
  /* SNI carries names only (RFC 6066): an address is checked, not sent. */
  if (!is_ip) ok = SSL_set_tlsext_host_name(t->ssl, host) == 1;
  if (ok && t->verify) {
    if (is_ip) {
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1;
    } else {
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set1_host(t->ssl, host) == 1;
    }
  }
  if (!ok) {
    char why[160];
    last_reason(why, sizeof(why));
    snprintf(err, errlen, "cannot set up TLS for host %s: %s", host, why);
    tls_conn_free(t);
    return NULL;
  }
  return t;
nomem:
  ERR_clear_error();
  snprintf(err, errlen, "cannot set up TLS: out of memory");
  return NULL;
}

void tls_conn_free(tls_conn_t *t) {
  if (t == NULL) return;
  SSL_free(t->ssl);
  free(t);
}

int tls_feed(tls_conn_t *t, const char *buf, size_t len) {
  size_t done = 0;
  if (len == 0) return 0;
  if (BIO_write_ex(t->rbio, buf, len, &done) != 1 || done != len) {
    ERR_clear_error();
    return TLS_ERROR;
  }
  return 0;
}

/* What to do about a failure, when the reason points at a likely cause. */
static const char *hint_for(const char *reason) {
  if (strstr(reason, "wrong version number") || strstr(reason, "packet length too long"))
    return ": is that port speaking TLS? A plain Redis takes redis://";
  if (strstr(reason, "certificate required"))
    return ": the server wants a client certificate; set "
           "SCALEKIQ_REDIS_TLS_CERT_FILE and SCALEKIQ_REDIS_TLS_KEY_FILE";
  return "";
}

/* One line for a failed operation: a certificate that did not verify says
 * which setting to change; anything else gives OpenSSL's reason. */
static void describe_failure(tls_conn_t *t, const char *what, char *err,
                             size_t errlen) {
  long vr = SSL_get_verify_result(t->ssl);
  if (t->verify && vr != X509_V_OK) {
    ERR_clear_error();
    const char *reason = X509_verify_cert_error_string(vr);
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
      snprintf(err, errlen,
               "TLS certificate verification failed (%s): the certificate does not "
               "name this host; connect with a name it holds, or set "
               "SCALEKIQ_REDIS_TLS_VERIFY=none for Heroku Key-Value Store",
               reason);
    else
      snprintf(err, errlen,
               "TLS certificate verification failed (%s): set "
               "SCALEKIQ_REDIS_TLS_VERIFY=none for Heroku Key-Value Store, or "
               "SCALEKIQ_REDIS_TLS_CA_FILE=/path/to/ca.pem to trust its CA",
               reason);
    return;
  }
  char why[160];
  last_reason(why, sizeof(why));
  snprintf(err, errlen, "%s: %s%s", what, why, hint_for(why));
}

int tls_handshake(tls_conn_t *t, char *err, size_t errlen) {
  ERR_clear_error();
  int rc = SSL_do_handshake(t->ssl);
  if (rc == 1) return TLS_DONE;
  int e = SSL_get_error(t->ssl, rc);
  /* With memory BIOs, "want" only means the peer has not answered yet
   * (writes never block: the output BIO grows). */
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TLS_AGAIN;
  describe_failure(t, "TLS handshake with Redis failed", err, errlen);
  return TLS_ERROR;
}

const char *tls_protocol(const tls_conn_t *t) { return SSL_get_version(t->ssl); }

const char *tls_cipher(const tls_conn_t *t) {
  const char *name = SSL_get_cipher_name(t->ssl);
  return name ? name : "unknown";
}

ssize_t tls_read(tls_conn_t *t, char *buf, size_t cap, char *err, size_t errlen) {
  size_t got = 0;
  ERR_clear_error();
  if (SSL_read_ex(t->ssl, buf, cap, &got) == 1) return (ssize_t)got;
  int e = SSL_get_error(t->ssl, 0);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) return TLS_CLOSED;
  describe_failure(t, "TLS error on the Redis connection", err, errlen);
  return TLS_ERROR;
}

int tls_write(tls_conn_t *t, const char *buf, size_t len, char *err,
              size_t errlen) {
  size_t done = 0;
  if (len == 0) return 0;
  ERR_clear_error();
  /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, success means all of it. */
  if (SSL_write_ex(t->ssl, buf, len, &done) == 1) return 0;
  describe_failure(t, "TLS error writing to Redis", err, errlen);
  return TLS_ERROR;
}

int tls_take_output(tls_conn_t *t, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  size_t n = BIO_ctrl_pending(t->wbio);
  if (n == 0) return 0;
  char *b = malloc(n);
  size_t got = 0;
  if (b == NULL || BIO_read_ex(t->wbio, b, n, &got) != 1 || got != n) {
    free(b);
    ERR_clear_error();
    return TLS_ERROR;
  }
  *buf = b;
  *len = n;
  return 0;
}
