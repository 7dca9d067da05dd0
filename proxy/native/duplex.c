/*
 * Duplex mode: a socket of the core driven by a JavaScript Duplex stream
 * (VsockSocket in proxy/native/vsock.ts), because Node's net cannot adopt an
 * AF_VSOCK descriptor. Reads flow while JS wants data; one write is in flight
 * at a time (Node's Writable serializes them), and a write the socket could
 * not take at once completes from the event loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "core.h"
#include "exports.h"
#include "stream.h"

#define DUPLEX_OPEN_USAGE "duplexOpen(fd, onRead, onWritten)"
#define DUPLEX_READ_USAGE "duplexRead(fd, on)"
#define DUPLEX_WRITE_USAGE "duplexWrite(fd, buffer)"
#define DUPLEX_SHUTDOWN_USAGE "duplexShutdown(fd)"

/* Delivers a read (n > 0), EOF (n == 0) or an error (n < 0); false when that ended the readable side. */
static bool deliver_read(core_sock *s, ssize_t n, int err) {
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[2];
  core_read_args(core_scratch, &n, err, argv);
  if (n <= 0) s->eof = 1;
  core_call(s->callback, 2, argv);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
  return n > 0;
}

static void deliver_written(core_sock *s, int err) {
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[1];
  if (err) NAPI_MUST(core_errno_name(core_env, err, &argv[0]));
  else NAPI_MUST(napi_get_null(core_env, &argv[0]));
  core_call(s->write_callback, 1, argv);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
}

static bool alive(const core_sock *s, int fd, uint32_t gen) { return core_sock_alive(s, fd, gen) && s->mode == SOCK_DUPLEX; }

static void on_duplex_ready(core_sock *s) {
  int fd = s->fd;
  uint32_t gen = s->gen;
  /* Writes first: a finished write lets JS send the next one in the same turn. */
  if (s->out_len > 0 && s->writable) {
    while (s->out_len > 0) {
      ssize_t w = core_stream_write(s, s->out + s->out_off, s->out_len);
      if (w < 0) {
        if (errno == EAGAIN) break; /* the stream layer cleared what it waits for */
        int err = errno;
        free(s->out);
        s->out = NULL;
        s->out_len = 0;
        deliver_written(s, err);
        return;
      }
      s->out_off += (size_t)w;
      s->out_len -= (size_t)w;
    }
    if (s->out_len == 0) {
      free(s->out);
      s->out = NULL;
      s->out_off = 0;
      deliver_written(s, 0);
      if (!alive(s, fd, gen)) return;
    }
  }
  /* Through the stream layer: plain reads, or TLS records once a handshake attached TLS (peer TLS under HTTP). It keeps `readable`. */
  while (s->reading && s->readable && !s->eof) {
    ssize_t n = core_stream_read(s, core_scratch, CORE_SCRATCH_SIZE);
    if (n < 0 && errno == EAGAIN) return;
    int err = n < 0 ? errno : 0;
    if (!deliver_read(s, n, err) || !alive(s, fd, gen)) return;
  }
}

/* The duplex socket a JS fd names, or NULL; false with an exception thrown when fd is not a number. */
static bool duplex_arg(napi_env env, napi_value v, const char *usage, core_sock **out) {
  int32_t fd;
  if (!core_arg_int32(env, v, usage, &fd)) return false;
  core_sock *s = core_sock_get(fd);
  *out = s && s->mode == SOCK_DUPLEX ? s : NULL;
  return true;
}

/* duplexOpen(fd, onRead(errName|null, Buffer|null), onWritten(errName|null)); (null, null) is EOF. */
static napi_value js_duplex_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  if (!core_args(env, info, 3, argv) || !core_arg_int32(env, argv[0], DUPLEX_OPEN_USAGE, &fd)) return NULL;
  core_sock *s = core_sock_get(fd);
  if (!s || s->mode != SOCK_IDLE) {
    NAPI_MUST(napi_throw_error(env, "EBADF", "duplexOpen: not an idle socket of the core"));
    return NULL;
  }
  napi_ref on_read, on_written;
  if (!core_arg_callback(env, argv[1], DUPLEX_OPEN_USAGE, &on_read)) return NULL;
  if (!core_arg_callback(env, argv[2], DUPLEX_OPEN_USAGE, &on_written)) {
    core_delete_ref(&on_read);
    return NULL;
  }
  core_sock_set_job(s, SOCK_DUPLEX, on_duplex_ready);
  s->callback = on_read;
  s->write_callback = on_written;
  return NULL;
}

/* duplexRead(fd, on): start or stop delivering reads (Readable backpressure). */
static napi_value js_duplex_read(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool on;
  core_sock *s;
  if (!core_args(env, info, 2, argv) || !duplex_arg(env, argv[0], DUPLEX_READ_USAGE, &s) || !core_arg_bool(env, argv[1], DUPLEX_READ_USAGE, &on) || !s) {
    return NULL;
  }
  s->reading = on;
  if (on && s->readable && !s->eof) core_sock_kick(s);
  return NULL;
}

/* duplexWrite(fd, buffer) -> true when the socket took it all now; false: onWritten follows. */
static napi_value js_duplex_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  core_sock *s;
  char *data;
  size_t len;
  if (!core_args(env, info, 2, argv) || !duplex_arg(env, argv[0], DUPLEX_WRITE_USAGE, &s) ||
      !core_arg_buffer(env, argv[1], DUPLEX_WRITE_USAGE, false, &data, &len)) {
    return NULL;
  }
  if (!s) {
    NAPI_MUST(napi_throw_error(env, "EBADF", "duplexWrite: not a duplex socket of the core"));
    return NULL;
  }
  if (s->out_len > 0) {
    NAPI_MUST(napi_throw_error(env, "EBUSY", "duplexWrite: a write is already in flight"));
    return NULL;
  }
  size_t off = 0;
  while (off < len && s->writable) {
    ssize_t w = core_stream_write(s, data + off, len - off);
    if (w < 0) {
      if (errno == EAGAIN) break;
      return core_throw_errno(env, errno, "write");
    }
    off += (size_t)w;
  }
  napi_value result;
  if (off < len) {
    if (core_sock_hold_out(s, data + off, len - off) != 0) return core_throw_errno(env, ENOMEM, "write");
    if (s->writable) core_sock_kick(s);
  }
  JS_CHECK(env, napi_get_boolean(env, off == len, &result));
  return result;
}

/* duplexShutdown(fd): send FIN (no write may be in flight). */
static napi_value js_duplex_shutdown(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  core_sock *s;
  if (!core_args(env, info, 1, argv) || !duplex_arg(env, argv[0], DUPLEX_SHUTDOWN_USAGE, &s)) return NULL;
  if (!s) return NULL;
  int r = core_stream_shutdown(s);
  /* TLS whose close_notify cannot go now: the FIN goes anyway (the peer sees a truncation, as after a reset). */
  if (r == -EAGAIN && shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) r = -errno;
  if (r < 0 && r != -EAGAIN) return core_throw_errno(env, -r, "shutdown");
  return NULL;
}

bool core_duplex_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("duplexOpen", js_duplex_open),
      CORE_FUNCTION("duplexRead", js_duplex_read),
      CORE_FUNCTION("duplexWrite", js_duplex_write),
      CORE_FUNCTION("duplexShutdown", js_duplex_shutdown),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
