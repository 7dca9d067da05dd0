/*
 * The server roles' (control plane, VM manager) settle, as its own tiny addon
 * (vsockmesh_trim.node): these roles never load the data plane's core
 * (vsockmesh_native.node), but the frame buffers grpc-js allocates per
 * response during a sync leave holes in glibc's main heap that only
 * malloc_trim gives back (glibc returns only the top of its heap on its own;
 * README, "Where a replica's memory goes"). Loaded by proxy/runtime/trim-addon.ts;
 * called from the roles' quiet settle (proxy/runtime/quiet-trim.ts), which runs
 * only when the loop is quiet. C++ only for V8's API (reduceMemory).
 */
#include <node_api.h>
#include "v8-api.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

/* trim() -> whether glibc gave memory back to the system (false where malloc is not glibc's). */
static napi_value js_trim(napi_env env, napi_callback_info info) {
  (void)info;
  bool released = false;
#ifdef __GLIBC__
  released = malloc_trim(0) != 0;
#endif
  napi_value v;
  if (napi_get_boolean(env, released, &v) != napi_ok) return nullptr;
  return v;
}

/* reduceMemory(): V8's memory-reducing full GCs (compacts, shrinks the young generation to its minimum). */
static napi_value js_reduce_memory(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  v8::Isolate *isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->LowMemoryNotification();
  return nullptr;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"trim", nullptr, js_trim, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reduceMemory", nullptr, js_reduce_memory, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  if (napi_define_properties(env, exports, 2, props) != napi_ok) return nullptr;
  return exports;
}

/* NAPI_MODULE defines a function of Node's without a previous declaration. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-declarations"
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
#pragma GCC diagnostic pop
