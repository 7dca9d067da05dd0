/*
 * Outgoing connections: a non-blocking connect that finishes from the event
 * loop (no thread pool, so a thousand at once do not queue), with a deadline
 * on the socket's timer. The callback runs exactly once, unless JS closes the
 * socket first.
 */
#include <errno.h>

#include "address.h"
#include "core.h"
#include "exports.h"
#include "vsock.h"

#define CONNECT_USAGE "connect(family, host, port, timeoutMs, callback)"

/* The socket JS will own (err 0), or closed (err set); then the callback runs. */
static void connect_finish(core_sock *s, int err) {
  napi_ref cb = s->callback;
  s->callback = NULL;
  core_sock_timer_stop(s);
  int fd = s->fd;
  if (err) core_sock_close(s, false);
  else core_sock_set_job(s, SOCK_IDLE, NULL);
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[2];
  if (err) NAPI_MUST(core_errno_name(core_env, err, &argv[0]));
  else NAPI_MUST(napi_get_null(core_env, &argv[0]));
  NAPI_MUST(napi_create_int32(core_env, fd, &argv[1]));
  core_call(cb, 2, argv);
  core_delete_ref(&cb);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
}

static void on_connect_ready(core_sock *s) {
  if (!s->writable && !s->error) return;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  s->error = 0;
  connect_finish(s, err);
}

static void on_connect_timeout(uv_timer_t *t) { connect_finish(t->data, ETIMEDOUT); }

/*
 * connect(family, host|cid, port, timeoutMs, callback(errName|null, fd)) -> fd
 * Throws on errors known at once (bad address, no such family); otherwise the
 * callback runs exactly once, from the event loop, unless close(fd) comes first.
 */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  core_target t;
  if (!core_target_args(env, info, CONNECT_USAGE, &t)) return NULL;
  uint32_t timeout_ms = t.number;
  int fd = socket(t.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return core_target_fail(env, &t, -1, errno, "socket");
  core_family_tune(fd, t.family);
  if (t.family == AF_VSOCK) core_vsock_set_connect_timeout(fd, timeout_ms);
  if (connect(fd, &t.addr.sa, t.len) != 0 && errno != EINPROGRESS) {
    return core_target_fail(env, &t, fd, errno, "connect");
  }
  /* Registered only now: an unconnected socket polls as writable. */
  core_sock *s = core_sock_adopt(fd, t.family);
  if (!s) return core_target_fail(env, &t, fd, ENOMEM, "connect");
  core_sock_set_job(s, SOCK_CONNECTING, on_connect_ready);
  s->writable = 0;
  s->callback = t.callback;
  napi_value v;
  int err = core_sock_timer_start(s, on_connect_timeout, timeout_ms);
  if (err) {
    core_sock_close(s, false);
    return core_throw_errno(env, -err, "connect");
  }
  if (!JS_OK(env, napi_create_int32(env, fd, &v))) {
    core_sock_close(s, false); /* JS never got the fd */
    return NULL;
  }
  return v;
}

bool core_connect_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("connect", js_connect)};
  return core_export_functions(env, exports, props, 1);
}
