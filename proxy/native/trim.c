/*
 * Returning freed memory to the system once the core goes quiet.
 *
 * A TLS handshake allocates and frees tens of KiB (record buffers, messages,
 * key shares) between the few hundred bytes a connection keeps, and closed
 * connections leave their memory to malloc: glibc gives back only the top of
 * its heap, so after a burst of handshakes or closes the freed pages between
 * live ones stay resident (measured: 8-16 MiB per sidecar after 1,000 mTLS
 * connections closed, ~1 KiB per connection with 1,000 idle ones open).
 * malloc_trim releases them. It walks malloc's free lists on the loop thread
 * (measured on a sidecar holding 1,000 mTLS connections: 7-8 ms of CPU when
 * it has pages to give back, under 1 ms when not), so it runs only when the core is quiet: no socket
 * closed and no handshake finished for QUIET_MS, after some did, and at most
 * once per SPACING_MS; nothing runs on an idle core (the timer is stopped),
 * and never while connections come and go.
 */
#include "trim.h"

#include <stdbool.h>
#include <uv.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "exports.h"

#define QUIET_MS 500
/* Trims at most this often: a sidecar whose connections come and go just slower than QUIET_MS does not trim each time. */
#define SPACING_MS 5000

static uv_timer_t timer;
static bool timer_ready;
static bool armed;         /* the timer runs: activity since the last trim */
static uint64_t last_seen; /* uv_now of the last activity */
static uint64_t last_trim; /* uv_now of the last trim */
static uint32_t trims;     /* since load (tests: trimCount) */

static void on_timer(uv_timer_t *t) {
  uint64_t now = uv_now(uv_default_loop());
  uint64_t quiet = now - last_seen;
  uint64_t since = trims ? now - last_trim : SPACING_MS;
  if (quiet < QUIET_MS || since < SPACING_MS) {
    uint64_t wait = quiet < QUIET_MS ? QUIET_MS - quiet : 0;
    if (since < SPACING_MS && SPACING_MS - since > wait) wait = SPACING_MS - since;
    uv_timer_start(t, on_timer, wait, 0);
    return;
  }
  armed = false;
  trims++;
  last_trim = now;
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

void core_trim_note(void) {
  last_seen = uv_now(uv_default_loop());
  if (armed) return; /* the timer runs; it looks at last_seen when it fires */
  if (!timer_ready) {
    uv_timer_init(uv_default_loop(), &timer); /* cannot fail for the default loop */
    uv_unref((uv_handle_t *)&timer);          /* never keeps the process alive */
    timer_ready = true;
  }
  armed = true;
  uv_timer_start(&timer, on_timer, QUIET_MS, 0);
}

/* trimCount() -> how often the core has returned freed memory so far (tests). */
static napi_value js_trim_count(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, trims, &v));
  return v;
}

/*
 * A trim now, for a caller that knows the process is quiet (settle.cc, after
 * V8's memory-reducing GCs); counted with the core's own.
 */
void core_trim_now(void) {
  trims++;
  last_trim = uv_now(uv_default_loop());
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

bool core_trim_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("trimCount", js_trim_count)};
  return core_export_functions(env, exports, props, 1);
}
