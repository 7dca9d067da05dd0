/*
 * TLS 1.3 with client certificates on the core's sockets (tls.c: the
 * handshake job and a socket's TLS state; tls-context.c: identities and the
 * client's session cache). OpenSSL is the one Node exports to addons.
 */
#ifndef VSOCKMESH_TLS_H
#define VSOCKMESH_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "core.h"

/* A socket's TLS state (core_sock.tls), freed with the socket. */
struct core_tls {
  SSL *ssl;
  int fd;              /* the socket's, read and written by the BIO (tls-bio.c) */
  uint32_t context_id; /* the identity it was made with */
  unsigned handshaken : 1;
  unsigned keyed : 1;      /* client: session_key names the peer its resumption tickets are kept under */
  unsigned peek_plain : 1; /* server: first see whether the peer speaks TLS at all */
  unsigned drained : 1;    /* the BIO's last read got fewer bytes than asked: the socket was empty */
  unsigned eof : 1;        /* the BIO read the peer's FIN */
  int read_error;          /* an error met after bytes were returned: reported by the next read */
  char session_key[];      /* in the same allocation: one fewer per connection */
};

/* Frees a socket's TLS state (loop.c, on close). */
void core_tls_free(core_tls *t);

/* tls-bio.c: a BIO over the socket t->fd for t's SSL (NULL without memory). */
BIO *core_tls_bio(core_tls *t);
/* tls-bio.c: the socket TLS state an SSL of the core reads and writes through (its BIO's), NULL for another SSL.
   Not SSL_set_app_data: that allocates an ex_data block per connection. */
core_tls *core_tls_of(const SSL *ssl);
/* tls-context.c: the SSL_CTX a JS context id names (NULL: none). */
SSL_CTX *core_tls_context(uint32_t id);
/* Client side: a copy of the session kept for this peer under this context, the caller's to free (NULL: none). */
SSL_SESSION *core_tls_session_get(uint32_t context_id, const char *key);

#endif
