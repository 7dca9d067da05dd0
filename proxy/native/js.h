/*
 * The boundary with JavaScript, below everything else in the core: the one
 * napi_env, a check on every napi_* status, errors that carry an errno code,
 * argument readers, and calls into JS callbacks. It knows nothing of sockets.
 *
 * Every napi_* call in the core goes through one of four checks, chosen by
 * where the call runs and what its failure can mean:
 *
 *   JS_CHECK(env, call)  In a call JavaScript made (a js_* function, module
 *   JS_OK(env, call)     init). A failure throws (unless an exception is
 *                        pending already) and the function returns NULL to JS.
 *                        JS_OK is the expression form, for paths that must
 *                        undo work first (close a socket, delete a reference).
 *
 *   LOOP_OK(call)        In a callback from the event loop (epoll, a timer, the
 *                        kick queue): there is no JS caller to throw to. Used
 *                        where a failure can happen at run time (a Buffer copy
 *                        when memory is short) or where the event can be
 *                        dropped without breaking the contract (a connection
 *                        JS has not heard of yet is closed). The failure is
 *                        logged to stderr with its place, a pending exception
 *                        is cleared, and the caller drops the event as its
 *                        comment says.
 *
 *   NAPI_MUST(call)      A call that fails only through a bug in the core (a
 *                        number, null, a handle scope, a reference the core
 *                        made), in either context, where the event cannot be
 *                        dropped: JS owns the socket and waits for the
 *                        callback, and a silently closed fd number is soon
 *                        reused, so a later close(fd) from JS would hit another
 *                        connection. The process aborts naming the call and
 *                        place (napi_fatal_error), as Node's own CHECK does.
 */
#ifndef VSOCKMESH_JS_H
#define VSOCKMESH_JS_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The one env: the core runs on the main thread only (module.c refuses workers). */
extern napi_env core_env;
/* The async context JS callbacks run in (async_hooks see one "vsockmesh" resource). */
extern napi_async_context core_async;

bool core_js_ok(napi_env env, napi_status status, const char *call);
bool core_loop_ok(napi_status status, const char *call, const char *file, int line);
__attribute__((noreturn)) void core_napi_failed(napi_status status, const char *call, const char *file, int line);

#define JS_OK(env, call) core_js_ok((env), (call), #call)
#define JS_CHECK(env, call)              \
  do {                                   \
    if (!JS_OK((env), (call))) return NULL; \
  } while (0)
#define LOOP_OK(call) core_loop_ok((call), #call, __FILE__, __LINE__)
#define NAPI_MUST(call)                                                      \
  do {                                                                       \
    napi_status must_status_ = (call);                                       \
    if (must_status_ != napi_ok) core_napi_failed(must_status_, #call, __FILE__, __LINE__); \
  } while (0)

/* The errno's name ("ECONNREFUSED"), as JS callbacks and error codes carry it. */
napi_status core_errno_name(napi_env env, int err, napi_value *out);
/* Throws an Error with .code = errno name, .errno and .syscall; returns NULL for the js_* function to return. */
napi_value core_throw_errno(napi_env env, int err, const char *what);
/* Throws a TypeError (code EINVAL) "<usage>: bad arguments" unless an exception is pending; returns NULL. */
napi_value core_throw_usage(napi_env env, const char *usage);

/*
 * Argument readers for calls from JavaScript. Each returns false with an
 * exception thrown: a value of the wrong type is "<usage>: bad arguments".
 */
bool core_args(napi_env env, napi_callback_info info, size_t count, napi_value *argv);
bool core_arg_int32(napi_env env, napi_value v, const char *usage, int32_t *out);
bool core_arg_uint32(napi_env env, napi_value v, const char *usage, uint32_t *out);
bool core_arg_bool(napi_env env, napi_value v, const char *usage, bool *out);
/* A string that fits in size bytes with its terminator (a longer one is refused, never cut). */
bool core_arg_string(napi_env env, napi_value v, const char *usage, char *buf, size_t size);
/* A Buffer; with nullable, null and undefined give (NULL, 0). */
bool core_arg_buffer(napi_env env, napi_value v, const char *usage, bool nullable, char **data, size_t *len);
/* A function, held by a new strong reference the caller deletes (core_delete_ref). */
bool core_arg_callback(napi_env env, napi_value v, const char *usage, napi_ref *out);

/* Deletes a reference the core holds (NULL-safe) and clears it. */
void core_delete_ref(napi_ref *ref);

/*
 * Calls the JS function held by ref, outside any call from JS (or from
 * relayAbort, which reports before it returns). Queued microtasks and
 * nextTicks run afterwards, as after Node's own callbacks; an exception goes
 * to process 'uncaughtException' like one thrown by a net.Socket callback.
 * Returns the function's result, or NULL (no callback, it threw, or the env is
 * shutting down and can no longer run JS).
 */
napi_value core_call(napi_ref ref, size_t argc, napi_value *argv);

/*
 * The arguments of a read callback, (errName|null, Buffer|null), from the
 * event loop: a chunk of data (*n > 0), EOF (*n == 0) or an error (*n < 0,
 * err). A Buffer that cannot be made (memory is short) is reported as ENOMEM
 * and *n turns -1, so the reading side ends and no byte goes missing unsaid.
 */
void core_read_args(const char *data, ssize_t *n, int err, napi_value argv[2]);

/* Adds functions and numbers to the module's exports. */
bool core_export_functions(napi_env env, napi_value exports, const napi_property_descriptor *props, size_t count);
bool core_export_uint32(napi_env env, napi_value exports, const char *name, uint32_t value);
#define CORE_FUNCTION(name, fn) {(name), NULL, (fn), NULL, NULL, NULL, napi_default, NULL}

#endif
