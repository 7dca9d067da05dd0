/*
 * What JS can do to any socket of the core, whatever its job: close it, reset
 * it, say whether it keeps the process alive; and the counts over all of them
 * (openCount for leak checks, pendingBytes for the memory the relays hold).
 */
#include "core.h"
#include "exports.h"

static napi_value close_impl(napi_env env, napi_callback_info info, const char *usage, bool reset) {
  napi_value argv[1];
  int32_t fd;
  if (!core_args(env, info, 1, argv) || !core_arg_int32(env, argv[0], usage, &fd)) return NULL;
  core_sock *s = core_sock_get(fd);
  if (!s) return NULL;
  if (s->mode == SOCK_RELAY) {
    NAPI_MUST(napi_throw_error(env, "EBUSY", "close: socket belongs to a relay; abort the relay"));
    return NULL;
  }
  core_sock_close(s, reset);
  return NULL;
}

/* close(fd); a socket the core does not hold is ignored (closing twice is harmless). */
static napi_value js_close(napi_env env, napi_callback_info info) { return close_impl(env, info, "close(fd)", false); }
/* reset(fd): close with RST (SO_LINGER 0) on TCP. */
static napi_value js_reset(napi_env env, napi_callback_info info) { return close_impl(env, info, "reset(fd)", true); }

/* ref(fd, on): whether the socket keeps the event loop alive (like net.Socket ref/unref). */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (!core_args(env, info, 2, argv) || !core_arg_int32(env, argv[0], "ref(fd, on)", &fd) || !core_arg_bool(env, argv[1], "ref(fd, on)", &on)) return NULL;
  core_sock *s = core_sock_get(fd);
  if (s) core_sock_ref(s, on);
  return NULL;
}

/* Sockets the core holds open (for leak checks in tests). */
static napi_value js_open_count(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, (uint32_t)core_open_count(), &v));
  return v;
}

/* Bytes read but not yet written by relays (each at most one read, 64 KiB, per direction). */
static napi_value js_pending_bytes(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  JS_CHECK(env, napi_create_double(env, core_pending_bytes(), &v));
  return v;
}

bool core_sockets_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("close", js_close),
      CORE_FUNCTION("reset", js_reset),
      CORE_FUNCTION("ref", js_ref),
      CORE_FUNCTION("openCount", js_open_count),
      CORE_FUNCTION("pendingBytes", js_pending_bytes),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
