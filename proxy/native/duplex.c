/*
 * Duplex mode: a socket of the core driven by a JavaScript Duplex stream
 * (proxy/native/vsock-socket.ts). Reads flow while JS wants data; one write
 * is in flight at a time (Node's Writable serializes them), and a write the
 * socket could not take at once completes from the event loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static void deliver_read(vm_sock *s, ssize_t n, int err) {
  napi_handle_scope scope;
  napi_open_handle_scope(vm_env, &scope);
  napi_value argv[2];
  if (n > 0) {
    napi_get_null(vm_env, &argv[0]);
    napi_create_buffer_copy(vm_env, (size_t)n, vm_scratch, NULL, &argv[1]);
  } else {
    if (err) argv[0] = vm_errno_name(vm_env, err);
    else napi_get_null(vm_env, &argv[0]);
    napi_get_null(vm_env, &argv[1]);
  }
  vm_call(s->callback, 2, argv);
  napi_close_handle_scope(vm_env, scope);
}

static void deliver_written(vm_sock *s, int err) {
  napi_handle_scope scope;
  napi_open_handle_scope(vm_env, &scope);
  napi_value argv[1];
  if (err) argv[0] = vm_errno_name(vm_env, err);
  else napi_get_null(vm_env, &argv[0]);
  vm_call(s->write_callback, 1, argv);
  napi_close_handle_scope(vm_env, scope);
}

static int alive(vm_sock *s, int fd, uint32_t gen) { return vm_sock_get(fd) == s && s->gen == gen && s->mode == SOCK_DUPLEX; }

void vm_duplex_progress(vm_sock *s) {
  int fd = s->fd;
  uint32_t gen = s->gen;
  /* Writes first: a finished write lets JS send the next one in the same turn. */
  if (s->out_len > 0 && s->writable) {
    while (s->out_len > 0) {
      ssize_t w = send(fd, s->out + s->out_off, s->out_len, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          s->writable = 0;
          break;
        }
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
  while (s->reading && s->readable && !s->eof) {
    ssize_t n = read(fd, vm_scratch, VM_SCRATCH_SIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      s->readable = 0;
      return;
    }
    int err = n < 0 ? errno : 0;
    if (n <= 0) s->eof = 1; /* EOF or an error ends the readable side */
    deliver_read(s, n, err);
    if (!alive(s, fd, gen) || n <= 0) return;
    if (n < VM_SCRATCH_SIZE && !s->hup) s->readable = 0;
  }
}

static vm_sock *duplex_arg(napi_env env, napi_value v) {
  int32_t fd;
  if (napi_get_value_int32(env, v, &fd) != napi_ok) return NULL;
  vm_sock *s = vm_sock_get(fd);
  return s && s->mode == SOCK_DUPLEX ? s : NULL;
}

/* duplexOpen(fd, onRead(errName|null, Buffer|null), onWritten(errName|null)); (null, null) is EOF. */
static napi_value js_duplex_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  napi_get_value_int32(env, argv[0], &fd);
  vm_sock *s = vm_sock_get(fd);
  if (!s || s->mode != SOCK_IDLE) {
    napi_throw_error(env, "EBADF", "duplexOpen: not an idle socket of the core");
    return NULL;
  }
  s->mode = SOCK_DUPLEX;
  napi_create_reference(env, argv[1], 1, &s->callback);
  napi_create_reference(env, argv[2], 1, &s->write_callback);
  return NULL;
}

/* duplexRead(fd, on): start or stop delivering reads (Readable backpressure). */
static napi_value js_duplex_read(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool on;
  napi_get_value_bool(env, argv[1], &on);
  vm_sock *s = duplex_arg(env, argv[0]);
  if (!s) return NULL;
  s->reading = on;
  if (on && s->readable && !s->eof) vm_sock_kick(s);
  return NULL;
}

/* duplexWrite(fd, buffer) -> true when the socket took it all now; false: onWritten follows. */
static napi_value js_duplex_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vm_sock *s = duplex_arg(env, argv[0]);
  char *data;
  size_t len;
  if (!s || napi_get_buffer_info(env, argv[1], (void **)&data, &len) != napi_ok) {
    napi_throw_error(env, "EBADF", "duplexWrite: not a duplex socket of the core, or not a Buffer");
    return NULL;
  }
  if (s->out_len > 0) {
    napi_throw_error(env, "EBUSY", "duplexWrite: a write is already in flight");
    return NULL;
  }
  size_t off = 0;
  while (off < len && s->writable) {
    ssize_t w = send(s->fd, data + off, len - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        s->writable = 0;
        break;
      }
      return vm_throw_errno(env, errno, "write");
    }
    off += (size_t)w;
  }
  napi_value result;
  if (off == len) {
    napi_get_boolean(env, true, &result);
    return result;
  }
  s->out = malloc(len - off);
  if (!s->out) return vm_throw_errno(env, ENOMEM, "write");
  memcpy(s->out, data + off, len - off);
  s->out_off = 0;
  s->out_len = len - off;
  if (s->writable) vm_sock_kick(s);
  napi_get_boolean(env, false, &result);
  return result;
}

/* duplexShutdown(fd): send FIN (no write may be in flight). */
static napi_value js_duplex_shutdown(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vm_sock *s = duplex_arg(env, argv[0]);
  if (s && shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) return vm_throw_errno(env, errno, "shutdown");
  return NULL;
}

void vm_duplex_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"duplexOpen", NULL, js_duplex_open, NULL, NULL, NULL, napi_default, NULL},
      {"duplexRead", NULL, js_duplex_read, NULL, NULL, NULL, napi_default, NULL},
      {"duplexWrite", NULL, js_duplex_write, NULL, NULL, NULL, napi_default, NULL},
      {"duplexShutdown", NULL, js_duplex_shutdown, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
