/*
 * A socket's byte stream (stream.h): plain syscalls, or OpenSSL's record
 * layer over them once a TLS handshake made the socket's core_tls. Every
 * OpenSSL call starts and ends with an empty error queue: the queue is the
 * thread's, shared with Node's own crypto.
 */
#include "stream.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <unistd.h>

#include "tls.h"

static int clamp_int(size_t len) { return len > INT_MAX ? INT_MAX : (int)len; }

/* What a failed SSL call means as an errno. An EOF without close_notify is a truncation: carried as a reset. */
static int tls_errno(int ssl_error) {
  if (ssl_error == SSL_ERROR_SYSCALL && errno != 0) return errno;
  if (ssl_error == SSL_ERROR_SYSCALL) return ECONNRESET;
  unsigned long e = ERR_peek_error();
  if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) return ECONNRESET;
  return EPROTO;
}

/* After SSL_ERROR_WANT_*: clears the readiness the record layer waits for. */
static bool tls_blocked(core_sock *s, int ssl_error) {
  if (ssl_error == SSL_ERROR_WANT_READ) s->readable = 0;
  else if (ssl_error == SSL_ERROR_WANT_WRITE) s->writable = 0;
  else return false;
  return true;
}

/* Fills buf across records (a record is at most 16 KiB) until the socket is drained, the buffer full or the stream ends. */
static ssize_t tls_read(core_sock *s, char *buf, size_t len) {
  core_tls *t = s->tls;
  if (t->read_error) {
    int end = t->read_error;
    t->read_error = 0;
    if (end < 0) return 0;
    errno = end;
    return -1;
  }
  size_t got = 0;
  /* Only a read of the socket in this call says it is drained: data that came after an earlier one may have had its edge already. */
  t->drained = 0;
  while (got < len) {
    ERR_clear_error();
    int r = SSL_read(t->ssl, buf + got, clamp_int(len - got));
    if (r > 0) {
      got += (size_t)r;
      /* The last read of the socket was short and OpenSSL holds nothing more: drained, as on the plain path (a FIN stays pending). */
      if (t->drained && !s->hup && !SSL_has_pending(t->ssl)) {
        s->readable = 0;
        break;
      }
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    int end = 0; /* 0: blocked; -1: EOF (close_notify); > 0: an errno */
    if (!tls_blocked(s, e)) end = e == SSL_ERROR_ZERO_RETURN ? -1 : tls_errno(e);
    ERR_clear_error();
    if (got > 0) {
      t->read_error = end; /* the bytes first; the end with the next read (readable stays set for it) */
      break;
    }
    if (end == 0) errno = EAGAIN;
    else if (end > 0) errno = end;
    return end < 0 ? 0 : -1;
  }
  return (ssize_t)got;
}

static ssize_t tls_write(core_sock *s, const char *buf, size_t len) {
  SSL *ssl = s->tls->ssl;
  size_t put = 0;
  /* Partial writes: OpenSSL returns after each record; go on until the socket is full. */
  while (put < len) {
    ERR_clear_error();
    int r = SSL_write(ssl, buf + put, clamp_int(len - put));
    if (r > 0) {
      put += (size_t)r;
      continue;
    }
    int e = SSL_get_error(ssl, r);
    int err = tls_blocked(s, e) ? EAGAIN : tls_errno(e);
    ERR_clear_error();
    if (put > 0) break; /* an error shows again on the next write */
    errno = err;
    return -1;
  }
  return (ssize_t)put;
}

ssize_t core_stream_read(core_sock *s, char *buf, size_t len) {
  if (s->tls) return tls_read(s, buf, len);
  ssize_t n;
  do n = read(s->fd, buf, len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) s->readable = 0;
  /* A short read drained the socket: the next edge says when there is more
     (unless a FIN is already announced: no edge will repeat it). */
  else if (n > 0 && (size_t)n < len && !s->hup) s->readable = 0;
  return n;
}

ssize_t core_stream_write(core_sock *s, const char *buf, size_t len) {
  if (s->tls) return tls_write(s, buf, len);
  ssize_t w;
  do w = send(s->fd, buf, len, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if ((w < 0 && errno == EAGAIN) || (w >= 0 && (size_t)w < len)) s->writable = 0; /* the socket buffer is full */
  return w;
}

int core_stream_shutdown(core_sock *s) {
  if (s->tls) {
    ERR_clear_error();
    int r = SSL_shutdown(s->tls->ssl);
    int e = r < 0 ? SSL_get_error(s->tls->ssl, r) : SSL_ERROR_NONE;
    ERR_clear_error();
    if (r < 0 && tls_blocked(s, e)) return -EAGAIN;
    /* Another failure: the stream is broken, and the next read or write says so; FIN still goes. */
  }
  if (shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) return -errno;
  return 0;
}
