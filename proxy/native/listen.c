/*
 * Listening sockets: listen() binds and listens, and each readable edge
 * accepts until EAGAIN, handing every connection to JS's onConnection.
 *
 * An accept that fails for lack of a resource (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM) is counted, for the overload monitor (acceptFailures()), and retried
 * on a timer: the connections wait in the kernel's backlog meanwhile, and no
 * new edge may ever come for them.
 */
#include <errno.h>
#include <unistd.h>

#include "address.h"
#include "core.h"
#include "exports.h"
#include "warm.h"

#define ACCEPT_RETRY_MS 100
#define LISTEN_USAGE "listen(family, host, port, backlog, onConnection)"

static const int accept_errnos[] = {EMFILE, ENFILE, ENOBUFS, ENOMEM};
#define ACCEPT_ERRNOS (sizeof accept_errnos / sizeof accept_errnos[0])
static double accept_failures[ACCEPT_ERRNOS];

static bool count_accept_failure(int err) {
  for (size_t i = 0; i < ACCEPT_ERRNOS; i++) {
    if (accept_errnos[i] == err) {
      accept_failures[i]++;
      return true;
    }
  }
  return false;
}

/* Tells JS of a new connection. If that cannot be done, the connection is closed: JS never knew its fd. */
static void announce(core_sock *ls, core_sock *s, const core_addr *peer) {
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[3];
  if (LOOP_OK(napi_create_int32(core_env, s->fd, &argv[0])) && LOOP_OK(core_addr_host(core_env, peer, &argv[1])) &&
      LOOP_OK(napi_create_uint32(core_env, core_addr_port(peer), &argv[2]))) {
    core_call(ls->callback, 3, argv);
  } else {
    core_sock_close(s, true);
  }
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
}

static void retry_accept(uv_timer_t *t);

static void accept_all(core_sock *ls) {
  uint32_t gen = ls->gen;
  int lfd = ls->fd;
  /* Edge-triggered: accept until EAGAIN. JS may close the listener from its callback. */
  while (core_sock_alive(ls, lfd, gen)) {
    core_addr peer;
    socklen_t plen = sizeof peer;
    int fd = accept4(lfd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      /* Out of a resource: try again on the timer (one runs already, or starts now). */
      if (count_accept_failure(err) && (ls->timer || core_sock_timer_start(ls, retry_accept, ACCEPT_RETRY_MS) == 0)) return;
      ls->readable = 0;
      return;
    }
    core_sock *s = core_sock_adopt(fd, ls->family);
    if (!s) {
      close(fd);
      continue;
    }
    if (!core_warm_accept(ls, s, &peer)) announce(ls, s, &peer);
  }
}

static void retry_accept(uv_timer_t *t) {
  core_sock *ls = t->data;
  core_sock_timer_stop(ls);
  accept_all(ls); /* whatever the readable flag says: the backlog was not drained */
}

static void on_listener_ready(core_sock *ls) {
  if (ls->readable) accept_all(ls);
}

/* listen(family, host|cid, port, backlog, onConnection(fd, peerHost, peerPort)) -> [fd, boundPort] */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  core_target t;
  if (!core_target_args(env, info, LISTEN_USAGE, &t)) return NULL;
  int fd = socket(t.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return core_target_fail(env, &t, -1, errno, "socket");
  int one = 1;
  if (t.family != AF_VSOCK) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (t.family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  core_family_tune(fd, t.family); /* accepted sockets inherit TCP_NODELAY */
  if (bind(fd, &t.addr.sa, t.len) != 0 || listen(fd, (int)t.number) != 0) {
    return core_target_fail(env, &t, fd, errno, "listen");
  }
  core_addr bound;
  socklen_t blen = sizeof bound;
  getsockname(fd, &bound.sa, &blen);
  core_sock *s = core_sock_adopt(fd, t.family);
  if (!s) return core_target_fail(env, &t, fd, ENOMEM, "listen");
  core_sock_set_job(s, SOCK_LISTEN, on_listener_ready);
  s->callback = t.callback;
  napi_value result, v;
  if (JS_OK(env, napi_create_array_with_length(env, 2, &result)) && JS_OK(env, napi_create_int32(env, fd, &v)) &&
      JS_OK(env, napi_set_element(env, result, 0, v)) && JS_OK(env, napi_create_uint32(env, core_addr_port(&bound), &v)) &&
      JS_OK(env, napi_set_element(env, result, 1, v))) {
    return result;
  }
  core_sock_close(s, false); /* JS never got the fd */
  return NULL;
}

/* acceptFailures() -> {EMFILE: n, ENFILE: n, ENOBUFS: n, ENOMEM: n}, counted since the start. */
static napi_value js_accept_failures(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, name, v;
  JS_CHECK(env, napi_create_object(env, &result));
  for (size_t i = 0; i < ACCEPT_ERRNOS; i++) {
    JS_CHECK(env, napi_create_double(env, accept_failures[i], &v));
    JS_CHECK(env, core_errno_name(env, accept_errnos[i], &name));
    JS_CHECK(env, napi_set_property(env, result, name, v));
  }
  return result;
}

bool core_listen_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("listen", js_listen),
      CORE_FUNCTION("acceptFailures", js_accept_failures),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
