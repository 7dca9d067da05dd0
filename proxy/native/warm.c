/*
 * The inbound warm path's decision cache (README, "The inbound warm path:
 * design"). JavaScript decides; the core only replays a decision JavaScript
 * made, keyed by exactly what that decision read: (listener, destination
 * port, peer label). An entry holds what the decision produced (target,
 * whether the app gets a PROXY header, timeouts, label).
 *
 * One generation per process: JavaScript bumps it (warmBump) on any config,
 * policy, peer-mode, registry or certificate change, before the change takes
 * effect. An entry installed under another generation is dead (no walk: a
 * lookup frees it), and an install carrying an old generation is dropped, so
 * a decision made before a change and installed after it never lands.
 */
#include <errno.h>
#include <stdlib.h>

#include "address.h"
#include "exports.h"
#include "warm.h"

#define WARM_BUCKETS 256

static uint32_t generation = 1;
static uint32_t next_entry_id = 1;
static warm_entry *buckets[WARM_BUCKETS];

static size_t bucket_of(uint32_t listener, uint16_t port) { return ((size_t)listener * 2654435761u + port) % WARM_BUCKETS; }

uint32_t warm_generation(void) { return generation; }

const warm_entry *warm_lookup(uint32_t listener, uint16_t port) {
  warm_entry **at = &buckets[bucket_of(listener, port)];
  while (*at) {
    warm_entry *e = *at;
    if (e->listener == listener && e->port == port) {
      if (e->generation == generation) return e;
      *at = e->next; /* dead since the last bump */
      free(e);
      return NULL;
    }
    at = &e->next;
  }
  return NULL;
}

/* Frees every entry of a listener (it stopped). */
static void forget(uint32_t listener) {
  for (size_t b = 0; b < WARM_BUCKETS; b++) {
    warm_entry **at = &buckets[b];
    while (*at) {
      warm_entry *e = *at;
      if (e->listener == listener) {
        *at = e->next;
        free(e);
      } else {
        at = &e->next;
      }
    }
  }
}

/* warmGeneration() -> the current generation. */
static napi_value js_warm_generation(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, generation, &v));
  return v;
}

/* warmBump() -> the new generation: every entry installed before is dead, every install still carrying the old one is dropped. */
static napi_value js_warm_bump(napi_env env, napi_callback_info info) {
  (void)info;
  generation = generation == UINT32_MAX ? 1 : generation + 1;
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, generation, &v));
  return v;
}

#define INSTALL_USAGE "warmInstall(listener, destPort, label, generation, family, host, port, proxyProtocol, connectTimeoutMs, idleTimeoutMs)"

/* warmInstall(...) -> the entry id, or 0 when dropped (its generation is not the current one). Replaces the key's entry. */
static napi_value js_warm_install(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  uint32_t listener, port, label, gen, connect_ms, idle_ms;
  bool proxy_protocol;
  warm_entry entry = {0};
  if (!core_args(env, info, 10, argv) || !core_arg_uint32(env, argv[0], INSTALL_USAGE, &listener) || !core_arg_uint32(env, argv[1], INSTALL_USAGE, &port) ||
      !core_arg_uint32(env, argv[2], INSTALL_USAGE, &label) || !core_arg_uint32(env, argv[3], INSTALL_USAGE, &gen) ||
      !core_addr_args(env, &argv[4], INSTALL_USAGE, &entry.family, &entry.target, &entry.target_len) || !core_arg_bool(env, argv[7], INSTALL_USAGE, &proxy_protocol) ||
      !core_arg_uint32(env, argv[8], INSTALL_USAGE, &connect_ms) || !core_arg_uint32(env, argv[9], INSTALL_USAGE, &idle_ms)) {
    return NULL;
  }
  if (port > 65535 || label > WARM_LABEL_UNAUTHENTICATED || entry.family == AF_VSOCK) return core_throw_usage(env, INSTALL_USAGE);
  napi_value v;
  if (gen != generation) {
    JS_CHECK(env, napi_create_uint32(env, 0, &v));
    return v;
  }
  warm_entry *e = malloc(sizeof *e);
  if (!e) return core_throw_errno(env, ENOMEM, "warmInstall");
  *e = entry;
  e->listener = listener;
  e->port = (uint16_t)port;
  e->label = (uint8_t)label;
  e->generation = gen;
  e->proxy_protocol = proxy_protocol;
  e->connect_ms = connect_ms;
  e->idle_ms = idle_ms;
  e->id = next_entry_id++;
  if (next_entry_id == 0) next_entry_id = 1;
  (void)warm_lookup(listener, (uint16_t)port); /* frees a dead entry of the key */
  warm_entry **at = &buckets[bucket_of(listener, e->port)];
  while (*at && !((*at)->listener == listener && (*at)->port == e->port)) at = &(*at)->next;
  if (*at) {
    warm_entry *old = *at;
    e->next = old->next;
    free(old);
  } else {
    e->next = NULL;
  }
  *at = e;
  JS_CHECK(env, napi_create_uint32(env, e->id, &v));
  return v;
}

/* warmLookup(listener, destPort) -> [entryId, label] of the key's live entry, or undefined. */
static napi_value js_warm_lookup(napi_env env, napi_callback_info info) {
  static const char usage[] = "warmLookup(listener, destPort)";
  napi_value argv[2];
  uint32_t listener, port;
  if (!core_args(env, info, 2, argv) || !core_arg_uint32(env, argv[0], usage, &listener) || !core_arg_uint32(env, argv[1], usage, &port)) return NULL;
  const warm_entry *e = port <= 65535 ? warm_lookup(listener, (uint16_t)port) : NULL;
  if (!e) return NULL;
  napi_value result, v;
  JS_CHECK(env, napi_create_array_with_length(env, 2, &result));
  JS_CHECK(env, napi_create_uint32(env, e->id, &v));
  JS_CHECK(env, napi_set_element(env, result, 0, v));
  JS_CHECK(env, napi_create_uint32(env, e->label, &v));
  JS_CHECK(env, napi_set_element(env, result, 1, v));
  return result;
}

/* warmForget(listener): the listener stopped; its entries go. */
static napi_value js_warm_forget(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t listener;
  if (core_args(env, info, 1, argv) && core_arg_uint32(env, argv[0], "warmForget(listener)", &listener)) forget(listener);
  return NULL;
}

bool core_warm_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("warmGeneration", js_warm_generation),
      CORE_FUNCTION("warmBump", js_warm_bump),
      CORE_FUNCTION("warmInstall", js_warm_install),
      CORE_FUNCTION("warmLookup", js_warm_lookup),
      CORE_FUNCTION("warmForget", js_warm_forget),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
