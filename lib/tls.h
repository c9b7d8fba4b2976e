/*
 * tls: TLS for the Redis connection (rediss://), as a pure transform.
 *
 * OpenSSL never touches a socket here: it runs on two memory BIOs, and
 * the caller moves bytes between them and its own libuv stream. Received
 * ciphertext goes in with tls_feed(); tls_handshake() and tls_read() turn
 * it into progress or plaintext; tls_write() encrypts; tls_take_output()
 * hands back what must be sent. Nothing blocks, so the handshake, reads
 * and writes follow the loop, and their errors, timeouts and reconnects
 * are the caller's ordinary ones.
 *
 * This is also why the same code serves any hiredis: hiredis (0.14 or
 * 1.x) only formats commands and parses replies above this layer; its own
 * hiredis_ssl is never used.
 */
#ifndef SCALEKIQ_TLS_H
#define SCALEKIQ_TLS_H

#include <stddef.h>
#include <sys/types.h>

/* Settings shared by every connection of one client. */
typedef struct tls_ctx tls_ctx_t;
/* One TLS session, for one TCP connection. */
typedef struct tls_conn tls_conn_t;

enum {
  TLS_DONE = 0,    /* tls_handshake: finished */
  TLS_AGAIN = 1,   /* needs more bytes from the peer */
  TLS_ERROR = -1,  /* err says why; the session is unusable */
  TLS_CLOSED = -2, /* tls_read: the peer closed the session (close_notify) */
};

/* TLS 1.2 or later. verify: check the server's chain against ca_file, or
 * the system's CA store when ca_file is NULL, and its name against the
 * host (tls_conn_new); 0 accepts any certificate. cert_file and key_file
 * (both or neither) are the client's certificate chain and key, in PEM.
 * The files are read now, not during handshakes. Returns NULL with err
 * naming the file and the problem. */
tls_ctx_t *tls_ctx_new(int verify, const char *ca_file, const char *cert_file,
                       const char *key_file, char *err, size_t errlen);
void tls_ctx_free(tls_ctx_t *ctx);

/* A client session for host (a name, or an IPv4/IPv6 literal): SNI for a
 * name, and with verify the certificate must hold that name or address. */
tls_conn_t *tls_conn_new(tls_ctx_t *ctx, const char *host, char *err,
                         size_t errlen);
void tls_conn_free(tls_conn_t *t); /* NULL is fine */

/* Ciphertext received from the peer. Returns 0, or TLS_ERROR (no memory). */
int tls_feed(tls_conn_t *t, const char *buf, size_t len);

/* Advances the handshake with what was fed: TLS_DONE, TLS_AGAIN or
 * TLS_ERROR. A certificate that fails verification gives an err that says
 * which setting to use. Either way, send tls_take_output() next. */
int tls_handshake(tls_conn_t *t, char *err, size_t errlen);

/* After the handshake: the protocol and cipher agreed ("TLSv1.3"). */
const char *tls_protocol(const tls_conn_t *t);
const char *tls_cipher(const tls_conn_t *t);

/* Decrypts into buf: the number of bytes (> 0), 0 when nothing complete
 * is buffered, TLS_CLOSED or TLS_ERROR. */
ssize_t tls_read(tls_conn_t *t, char *buf, size_t cap, char *err, size_t errlen);

/* Encrypts len bytes (after the handshake); the records wait for
 * tls_take_output(). Returns 0 or TLS_ERROR. */
int tls_write(tls_conn_t *t, const char *buf, size_t len, char *err,
              size_t errlen);

/* The ciphertext waiting to be sent, as one malloc'd buffer the caller
 * frees (*buf NULL and *len 0 when there is none). Returns 0, or
 * TLS_ERROR when out of memory. */
int tls_take_output(tls_conn_t *t, char **buf, size_t *len);

#endif
