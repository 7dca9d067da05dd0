/*
 * Reads delivered to JS, for the header phase: a connection's first bytes (a
 * PROXY v2 header, a host-relay header) go to a decoder in JS before anything
 * is relayed. Each read is at most what JS asked for, so bytes after the
 * header stay in the kernel for the relay, and the callback may return how
 * much the next read may take (the rest of a header).
 */
#include <errno.h>

#include "core.h"
#include "exports.h"
#include "stream.h"

#define READ_START_USAGE "readStart(fd, maxBytes, callback)"
#define READ_STOP_USAGE "readStop(fd)"

static size_t clamp_read(uint32_t max) { return max == 0 || max > CORE_SCRATCH_SIZE ? CORE_SCRATCH_SIZE : max; }

/* The callback's answer: the largest next read it wants, or 0 for no change. */
static uint32_t next_max(napi_value next) {
  uint32_t max = 0;
  napi_valuetype type = napi_undefined;
  if (next) NAPI_MUST(napi_typeof(core_env, next, &type));
  if (type == napi_number) NAPI_MUST(napi_get_value_uint32(core_env, next, &max));
  return max;
}

static void on_readable(core_sock *s) {
  uint32_t gen = s->gen;
  int fd = s->fd;
  while (core_sock_alive(s, fd, gen) && s->mode == SOCK_READING && s->readable) {
    size_t want = s->read_max;
    ssize_t n = core_stream_read(s, core_scratch, want);
    int err = n < 0 ? errno : 0;
    if (n < 0 && err == EAGAIN) return;
    napi_ref cb = s->callback;
    napi_handle_scope scope;
    NAPI_MUST(napi_open_handle_scope(core_env, &scope));
    napi_value argv[2];
    core_read_args(core_scratch, &n, err, argv);
    if (n <= 0) {
      /* EOF or an error ends the read phase. */
      core_sock_set_job(s, SOCK_IDLE, NULL);
      s->callback = NULL;
    }
    uint32_t max = next_max(core_call(cb, 2, argv));
    NAPI_MUST(napi_close_handle_scope(core_env, scope));
    if (n <= 0) {
      core_delete_ref(&cb);
      return;
    }
    if (!core_sock_alive(s, fd, gen)) return;
    if (s->mode == SOCK_READING && max > 0) s->read_max = clamp_read(max);
  }
}

/* readStart(fd, maxBytes, callback(errName|null, Buffer|null) -> nextMaxBytes?); null,null = EOF */
static napi_value js_read_start(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  uint32_t max;
  if (!core_args(env, info, 3, argv) || !core_arg_int32(env, argv[0], READ_START_USAGE, &fd) || !core_arg_uint32(env, argv[1], READ_START_USAGE, &max)) {
    return NULL;
  }
  core_sock *s = core_sock_get(fd);
  if (!s || s->mode != SOCK_IDLE) {
    NAPI_MUST(napi_throw_error(env, "EBADF", "readStart: not an idle socket of the core"));
    return NULL;
  }
  if (!core_arg_callback(env, argv[2], READ_START_USAGE, &s->callback)) return NULL;
  core_sock_set_job(s, SOCK_READING, on_readable);
  s->read_max = clamp_read(max);
  if (s->readable) core_sock_kick(s);
  return NULL;
}

static napi_value js_read_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!core_args(env, info, 1, argv) || !core_arg_int32(env, argv[0], READ_STOP_USAGE, &fd)) return NULL;
  core_sock *s = core_sock_get(fd);
  if (s && s->mode == SOCK_READING) {
    core_sock_set_job(s, SOCK_IDLE, NULL);
    core_delete_ref(&s->callback);
  }
  return NULL;
}

bool core_read_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("readStart", js_read_start),
      CORE_FUNCTION("readStop", js_read_stop),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
