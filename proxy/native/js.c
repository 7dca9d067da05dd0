/*
 * The boundary with JavaScript (see js.h for which status check runs where
 * and why). Failures are described with N-API's own last-error text, copied
 * before any other napi_* call can overwrite it.
 */
#include "js.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

napi_env core_env;
napi_async_context core_async;

/* N-API's text for the call that just failed; must run before any other napi_* call. */
static void last_error(napi_env env, char *buf, size_t size) {
  const napi_extended_error_info *info = NULL;
  if (env && napi_get_last_error_info(env, &info) == napi_ok && info && info->error_message) {
    snprintf(buf, size, "%s (status %d)", info->error_message, (int)info->error_code);
  } else {
    snprintf(buf, size, "unknown N-API failure");
  }
}

static bool exception_pending(napi_env env) {
  bool pending = false;
  NAPI_MUST(napi_is_exception_pending(env, &pending));
  return pending;
}

bool core_js_ok(napi_env env, napi_status status, const char *call) {
  if (status == napi_ok) return true;
  char reason[200], message[400];
  last_error(env, reason, sizeof reason);
  if (exception_pending(env)) return false; /* the exception JS will see says more than we could */
  snprintf(message, sizeof message, "vsockmesh native core: %s failed: %s", call, reason);
  NAPI_MUST(napi_throw_error(env, "ERR_VSOCKMESH_NAPI", message));
  return false;
}

bool core_loop_ok(napi_status status, const char *call, const char *file, int line) {
  if (status == napi_ok) return true;
  char reason[200];
  last_error(core_env, reason, sizeof reason);
  fprintf(stderr, "vsockmesh native core: %s failed at %s:%d: %s; event dropped\n", call, file, line, reason);
  if (exception_pending(core_env)) {
    napi_value exception;
    NAPI_MUST(napi_get_and_clear_last_exception(core_env, &exception));
  }
  return false;
}

void core_napi_failed(napi_status status, const char *call, const char *file, int line) {
  char location[200], reason[200], message[600];
  last_error(core_env, reason, sizeof reason);
  snprintf(location, sizeof location, "vsockmesh native core %s:%d", file, line);
  snprintf(message, sizeof message, "%s failed with status %d: %s", call, (int)status, reason);
  napi_fatal_error(location, NAPI_AUTO_LENGTH, message, NAPI_AUTO_LENGTH);
}

napi_status core_errno_name(napi_env env, int err, napi_value *out) {
  return napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, out);
}

napi_value core_throw_errno(napi_env env, int err, const char *what) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_value code, message, syscall, error, number;
  if (JS_OK(env, core_errno_name(env, err, &code)) && JS_OK(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message)) &&
      JS_OK(env, napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &syscall)) && JS_OK(env, napi_create_error(env, code, message, &error)) &&
      JS_OK(env, napi_create_int32(env, -err, &number)) && JS_OK(env, napi_set_named_property(env, error, "errno", number)) &&
      JS_OK(env, napi_set_named_property(env, error, "syscall", syscall))) {
    JS_OK(env, napi_throw(env, error));
  }
  return NULL;
}

napi_value core_throw_usage(napi_env env, const char *usage) {
  if (exception_pending(env)) return NULL;
  char message[300];
  snprintf(message, sizeof message, "%s: bad arguments", usage);
  NAPI_MUST(napi_throw_type_error(env, "EINVAL", message));
  return NULL;
}

/* A value of the wrong type is the caller's mistake (a usage error); anything else is N-API's. */
static bool arg_ok(napi_env env, napi_status status, const char *usage, const char *call) {
  switch (status) {
    case napi_ok: return true;
    case napi_invalid_arg:
    case napi_object_expected:
    case napi_string_expected:
    case napi_name_expected:
    case napi_function_expected:
    case napi_number_expected:
    case napi_boolean_expected:
    case napi_array_expected:
    case napi_bigint_expected: core_throw_usage(env, usage); return false;
    default: return core_js_ok(env, status, call);
  }
}

bool core_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv) {
  size_t argc = count; /* arguments JS left out read as undefined */
  return JS_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
}

bool core_arg_int32(napi_env env, napi_value v, const char *usage, int32_t *out) {
  return arg_ok(env, napi_get_value_int32(env, v, out), usage, "napi_get_value_int32");
}

bool core_arg_uint32(napi_env env, napi_value v, const char *usage, uint32_t *out) {
  return arg_ok(env, napi_get_value_uint32(env, v, out), usage, "napi_get_value_uint32");
}

bool core_arg_bool(napi_env env, napi_value v, const char *usage, bool *out) {
  return arg_ok(env, napi_get_value_bool(env, v, out), usage, "napi_get_value_bool");
}

bool core_arg_string(napi_env env, napi_value v, const char *usage, char *buf, size_t size) {
  size_t len;
  if (!arg_ok(env, napi_get_value_string_utf8(env, v, NULL, 0, &len), usage, "napi_get_value_string_utf8")) return false;
  if (len >= size) {
    core_throw_usage(env, usage);
    return false;
  }
  return arg_ok(env, napi_get_value_string_utf8(env, v, buf, size, &len), usage, "napi_get_value_string_utf8");
}

bool core_arg_buffer(napi_env env, napi_value v, const char *usage, bool nullable, char **data, size_t *len) {
  *data = NULL;
  *len = 0;
  napi_valuetype type;
  bool is_buffer;
  if (!JS_OK(env, napi_typeof(env, v, &type))) return false;
  if (nullable && (type == napi_null || type == napi_undefined)) return true;
  if (!JS_OK(env, napi_is_buffer(env, v, &is_buffer))) return false;
  if (!is_buffer) {
    core_throw_usage(env, usage);
    return false;
  }
  return JS_OK(env, napi_get_buffer_info(env, v, (void **)data, len));
}

bool core_arg_callback(napi_env env, napi_value v, const char *usage, napi_ref *out) {
  napi_valuetype type;
  if (!JS_OK(env, napi_typeof(env, v, &type))) return false;
  if (type != napi_function) {
    core_throw_usage(env, usage);
    return false;
  }
  return JS_OK(env, napi_create_reference(env, v, 1, out));
}

void core_delete_ref(napi_ref *ref) {
  if (*ref) {
    NAPI_MUST(napi_delete_reference(core_env, *ref));
    *ref = NULL;
  }
}

napi_value core_call(napi_ref ref, size_t argc, napi_value *argv) {
  if (!ref) return NULL;
  napi_value fn, recv, result = NULL;
  NAPI_MUST(napi_get_reference_value(core_env, ref, &fn));
  NAPI_MUST(napi_get_global(core_env, &recv)); /* make_callback wants an object receiver */
  napi_status status = napi_make_callback(core_env, core_async, recv, fn, argc, argv, &result);
  if (status == napi_ok) return result;
  if (status == napi_pending_exception) {
    if (!exception_pending(core_env)) return NULL; /* none: the env is shutting down and can no longer run JS */
    napi_value exception;
    NAPI_MUST(napi_get_and_clear_last_exception(core_env, &exception));
    NAPI_MUST(napi_fatal_exception(core_env, exception));
    return NULL;
  }
  core_loop_ok(status, "napi_make_callback", __FILE__, __LINE__);
  return NULL;
}

void core_read_args(const char *data, ssize_t *n, int err, napi_value argv[2]) {
  NAPI_MUST(napi_get_null(core_env, &argv[0]));
  NAPI_MUST(napi_get_null(core_env, &argv[1]));
  if (*n > 0 && !LOOP_OK(napi_create_buffer_copy(core_env, (size_t)*n, data, NULL, &argv[1]))) {
    *n = -1;
    err = ENOMEM;
  }
  if (*n < 0) NAPI_MUST(core_errno_name(core_env, err, &argv[0]));
}

bool core_export_functions(napi_env env, napi_value exports, const napi_property_descriptor *props, size_t count) {
  return JS_OK(env, napi_define_properties(env, exports, count, props));
}

bool core_export_uint32(napi_env env, napi_value exports, const char *name, uint32_t value) {
  napi_value v;
  return JS_OK(env, napi_create_uint32(env, value, &v)) && JS_OK(env, napi_set_named_property(env, exports, name, v));
}
