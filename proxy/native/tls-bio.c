/*
 * The transport under a socket's TLS record layer: OpenSSL reads and writes
 * the core's socket through this BIO instead of its own socket BIO, for two
 * reasons.
 *
 * - It remembers whether the last read got fewer bytes than asked. With read
 *   ahead on (tls-context.c), OpenSSL asks for a whole buffer, so a short
 *   read means the socket is drained: once OpenSSL holds nothing more, the
 *   stream clears `readable` (stream.c) instead of paying one more read that
 *   can only say EAGAIN, as the plain path does. A small request or response
 *   then costs one read, not three (record header, body, EAGAIN).
 * - It writes with MSG_NOSIGNAL, as the plain path does.
 */
#include <errno.h>
#include <openssl/bio.h>
#include <unistd.h>

#include "tls.h"

static BIO_METHOD *method;
static int method_type;

static int bio_read(BIO *b, char *buf, int len) {
  core_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = read(t->fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) BIO_set_retry_read(b);
  t->drained = n > 0 && n < len;
  if (n == 0) t->eof = 1; /* OpenSSL asks (BIO_eof) to tell a truncation from a blocked read */
  return (int)n;
}

static int bio_write(BIO *b, const char *buf, int len) {
  core_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) BIO_set_retry_write(b);
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  if (cmd == BIO_CTRL_FLUSH) return 1; /* nothing is buffered here */
  if (cmd == BIO_CTRL_EOF) return ((core_tls *)BIO_get_data(b))->eof;
  return 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

core_tls *core_tls_of(const SSL *ssl) {
  BIO *b = SSL_get_rbio(ssl);
  return b && method && BIO_method_type(b) == method_type ? BIO_get_data(b) : NULL;
}

BIO *core_tls_bio(core_tls *t) {
  if (!method) {
    int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = BIO_meth_new(type, "vsockmesh socket");
    if (!m || BIO_meth_set_read(m, bio_read) != 1 || BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_ctrl(m, bio_ctrl) != 1 ||
        BIO_meth_set_create(m, bio_create) != 1) {
      BIO_meth_free(m);
      return NULL;
    }
    method = m;
    method_type = type;
  }
  BIO *b = BIO_new(method);
  if (b) BIO_set_data(b, t);
  return b;
}
