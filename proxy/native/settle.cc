/*
 * Giving back what a process's start-up (or a config change) left behind, once
 * (the caller decides when: proxy/runtime/settle-memory.ts).
 *
 * A sidecar's start-up (modules, config parsing and validation, the first xDS
 * state decoded) leaves garbage in V8's heap and freed blocks in malloc's, and
 * neither shrinks on its own while the process is idle: an idle process runs
 * no GC, V8's ordinary full GC (gc()) neither compacts for size nor shrinks
 * the young generation, and glibc gives back only the top of its heap.
 * Isolate::LowMemoryNotification runs V8's memory-reducing full GCs (compacts,
 * shrinks the young generation to its minimum, releases its pooled pages);
 * malloc_trim then returns malloc's free pages (measured: -2.5 MiB RSS on an
 * idle sidecar with a static config, -6.8 MiB with an xDS state applied).
 * It blocks the loop for those GCs (tens of ms), so it is for quiet moments.
 * C++ only for V8's API; the rest of the core is C.
 */
#include <node_api.h>
#include "v8-api.h"

extern "C" {
#include "exports.h"
#include "trim.h"
}

static uint32_t settles; /* since load (tests: settleCount) */

/* settleMemory(): V8's memory-reducing GCs, then malloc_trim; returns nothing. */
static napi_value js_settle_memory(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  v8::Isolate *isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->LowMemoryNotification();
  core_trim_now();
  settles++;
  return nullptr;
}

/* settleCount() -> how often settleMemory ran (tests). */
static napi_value js_settle_count(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, settles, &v));
  return v;
}

extern "C" bool core_settle_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("settleMemory", js_settle_memory), CORE_FUNCTION("settleCount", js_settle_count)};
  return core_export_functions(env, exports, props, 2);
}
