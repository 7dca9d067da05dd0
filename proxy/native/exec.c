/*
 * exec(path, args): replaces this process's program with another (execv):
 * the same pid, so a service manager or container runtime keeps watching it,
 * and no second Node process held in memory as a spawning parent would be.
 * The CLI re-executes itself with other Node flags (a larger young
 * generation for an HTTP sidecar), which V8 reads only before its heap
 * exists. The fds the core and Node opened are close-on-exec; stdio stays
 * (Node marks it close-on-exec too: cleared here, set again if execv fails).
 * Returns only by throwing (the errno of execv).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "exports.h"

#define EXEC_USAGE "exec(path, args: string[])"

/* Sets or clears close-on-exec on fds 0, 1 and 2. */
static void stdio_cloexec(bool on) {
  for (int fd = 0; fd <= 2; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
  }
}

/* Frees args[0..n) and args. */
static void free_args(char **args, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) free(args[i]);
  free(args);
}

static napi_value js_exec(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!core_args(env, info, 2, argv)) return NULL;
  char path[4096];
  if (!core_arg_string(env, argv[0], EXEC_USAGE, path, sizeof path)) return NULL;
  bool is_array;
  JS_CHECK(env, napi_is_array(env, argv[1], &is_array));
  if (!is_array) return core_throw_usage(env, EXEC_USAGE);
  uint32_t n;
  JS_CHECK(env, napi_get_array_length(env, argv[1], &n));
  char **args = calloc((size_t)n + 1, sizeof *args);
  if (args == NULL) return core_throw_errno(env, ENOMEM, "exec");
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    size_t len;
    if (!JS_OK(env, napi_get_element(env, argv[1], i, &v)) || napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
      free_args(args, i);
      return core_throw_usage(env, EXEC_USAGE);
    }
    args[i] = malloc(len + 1);
    if (args[i] == NULL) {
      free_args(args, i);
      return core_throw_errno(env, ENOMEM, "exec");
    }
    NAPI_MUST(napi_get_value_string_utf8(env, v, args[i], len + 1, &len));
  }
  stdio_cloexec(false);
  execv(path, args);
  int err = errno;
  stdio_cloexec(true);
  free_args(args, n);
  return core_throw_errno(env, err, "execv");
}

bool core_exec_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("exec", js_exec)};
  return core_export_functions(env, exports, props, 1);
}
