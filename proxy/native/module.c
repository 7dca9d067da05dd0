/* N-API module entry: shared helpers and the exported functions. */
#include <errno.h>
#include <string.h>

#include "core.h"
#include "vsock.h"

napi_env vm_env;
napi_async_context vm_async;
char vm_scratch[VM_SCRATCH_SIZE];

void vm_sock_register(napi_env env, napi_value exports);

napi_value vm_errno_name(napi_env env, int err) {
  napi_value v;
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &v);
  return v;
}

/* Throws an Error with .code = errno name (ECONNREFUSED, ...) and .errno. */
napi_value vm_throw_errno(napi_env env, int err, const char *what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value code, msg, error, num;
  code = vm_errno_name(env, err);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_set_named_property(env, error, "syscall", msg);
  napi_throw(env, error);
  return NULL;
}

napi_value vm_call(napi_ref ref, size_t argc, napi_value *argv) {
  napi_value fn, recv, result = NULL;
  if (!ref || napi_get_reference_value(vm_env, ref, &fn) != napi_ok || !fn) return NULL;
  napi_get_global(vm_env, &recv); /* make_callback wants an object receiver */
  /* make_callback runs queued microtasks and nextTicks afterwards, like Node's own handles. */
  if (napi_make_callback(vm_env, vm_async, recv, fn, argc, argv, &result) == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(vm_env, &exception);
    napi_fatal_exception(vm_env, exception);
    return NULL;
  }
  return result;
}

static napi_value js_relay_outcomes(napi_env env) {
  static const char *names[] = {"closed", "downstream_error", "upstream_error", "idle_timeout", "aborted"};
  napi_value arr, v;
  napi_create_array_with_length(env, 5, &arr);
  for (uint32_t i = 0; i < 5; i++) {
    napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  /* One env per process: the fd table and callbacks live on the main thread's loop. */
  if (vm_env != NULL && vm_env != env) {
    napi_throw_error(env, "ERR_VSOCKMESH_WORKER", "the vsockmesh native core runs only on the main thread, not in worker threads");
    return NULL;
  }
  vm_env = env;
  int err = vm_core_init();
  if (err) return vm_throw_errno(env, -err, "epoll_create1");
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "vsockmesh", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &vm_async);
  vm_sock_register(env, exports);
  vm_vsock_register(env, exports);
  vm_duplex_register(env, exports);
  napi_property_descriptor props[] = {
      {"relay", NULL, vm_relay_start, NULL, NULL, NULL, napi_default, NULL},
      {"relayBytes", NULL, vm_relay_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"relayAbort", NULL, vm_relay_abort, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_set_named_property(env, exports, "RELAY_OUTCOMES", js_relay_outcomes(env));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
