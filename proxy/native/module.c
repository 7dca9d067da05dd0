/*
 * The N-API module: loads once per process, on the main thread, and asks each
 * file above the event loop to add its functions to the exports (exports.h).
 * Nothing calls into this file.
 */
#include "core.h"
#include "exports.h"

static bool (*const registers[])(napi_env, napi_value) = {
    core_sockets_register, core_listen_register, core_connect_register, core_read_register,
    core_relay_register,   core_duplex_register, core_vsock_register,   core_original_dst_register,
    core_tls_context_register, core_tls_register, core_exec_register, core_trim_register,
    core_settle_register, core_proxy_header_register, core_warm_register,
};

static napi_value init(napi_env env, napi_value exports) {
  /* One env per process: the fd table and callbacks live on the main thread's loop. */
  if (core_env != NULL && core_env != env) {
    NAPI_MUST(napi_throw_error(env, "ERR_VSOCKMESH_WORKER", "the vsockmesh native core runs only on the main thread, not in worker threads"));
    return NULL;
  }
  core_env = env;
  int err = core_loop_init();
  if (err) return core_throw_errno(env, -err, "epoll_create1");
  napi_value resource, name;
  JS_CHECK(env, napi_create_object(env, &resource));
  JS_CHECK(env, napi_create_string_utf8(env, "vsockmesh", NAPI_AUTO_LENGTH, &name));
  JS_CHECK(env, napi_async_init(env, resource, name, &core_async));
  for (size_t i = 0; i < sizeof registers / sizeof registers[0]; i++) {
    if (!registers[i](env, exports)) return NULL;
  }
  return exports;
}

/* NAPI_MODULE defines a function of Node's without a prototype. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
#pragma GCC diagnostic pop
