/*
 * The relay: bytes between a downstream and an upstream socket, moved in the
 * core's epoll callbacks, with no JavaScript per chunk.
 *
 * - Backpressure: a direction reads only while its destination has nothing
 *   pending; bytes a full socket did not take wait in a buffer of exactly
 *   their size, and the source stays unread (the kernel pushes back on it).
 *   Bytes held for a socket before the relay wrote to it (a PROXY header,
 *   early bytes) are the exception: they go in one write with the first bytes
 *   read for it.
 * - Half-close: a FIN read from one side becomes shutdown(SHUT_WR) on the
 *   other once that side's pending bytes are written (TLS: close_notify, then
 *   FIN; a TLS side that ends without close_notify counts as a reset).
 *   The last FIN of a plain TCP relay goes with the close of both sides.
 * - Either side may be TLS (stream.h): the relay sees bytes either way.
 * - Resets: an error on one side closes the other with RST (SO_LINGER 0);
 *   relayReset cuts both sides so (a connection past its maximum age).
 * - Idle timeout: one timer per relay, re-armed lazily from the last activity.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "exports.h"
#include "stream.h"

#define RELAY_USAGE "relay(downFd, upFd, toUpstream, toDownstream, idleMs, onDone)"

struct core_relay {
  core_sock *s[2];   /* s[0] = downstream, s[1] = upstream */
  uint64_t bytes[2]; /* bytes[i]: read from s[i], bound for s[1-i] */
  int eof[2];        /* s[i] sent FIN */
  int shut[2];       /* we sent FIN to s[i] */
  int fin_wanted[2]; /* FIN (TLS close_notify) for s[i] waits for the socket to take it */
  int finished;
  uint64_t idle_ms;
  uint64_t last_activity;
  uv_timer_t idle_timer;
  napi_ref on_done;
  core_relay_done_fn c_done; /* instead of on_done: a relay the core started (warm.c) */
  void *c_ctx;
};

/* Relay outcomes, in the order of RELAY_OUTCOMES (JS reads the names from there). */
enum {
  OUTCOME_CLOSED = 0,
  OUTCOME_DOWNSTREAM_ERROR = 1,
  OUTCOME_UPSTREAM_ERROR = 2,
  OUTCOME_IDLE_TIMEOUT = 3,
  OUTCOME_ABORTED = 4,
};
static const char *const outcome_names[] = {"closed", "downstream_error", "upstream_error", "idle_timeout", "aborted"};
#define OUTCOMES (sizeof outcome_names / sizeof outcome_names[0])

/* reset_mask: bit k set closes side k with RST. */
static void relay_finish(core_relay *r, int outcome, int err, int reset_mask);

/* Side k failed with err: reset the other side, report the error of side k. */
static void fail(core_relay *r, int k, int err) {
  relay_finish(r, k == 0 ? OUTCOME_DOWNSTREAM_ERROR : OUTCOME_UPSTREAM_ERROR, err, 1 << (1 - k));
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

static void send_fin(core_relay *r, int k) {
  if (r->shut[k]) return;
  if (r->eof[k] && r->eof[1 - k] && r->shut[1 - k] && !r->s[k]->tls && r->s[k]->family != AF_VSOCK) {
    /*
     * The relay's last FIN: both sides ended and the other one has its FIN, so
     * relay_progress closes both now, and close() sends this FIN (the side was
     * read to its end: no unread byte turns it into a RST). One shutdown per
     * connection instead of two, as HAProxy. TLS still sends close_notify;
     * vsock keeps its explicit shutdown.
     */
    r->shut[k] = 1;
    return;
  }
  /* An error (a peer reset) is reported by the next read or write. */
  r->fin_wanted[k] = core_stream_shutdown(r->s[k]) == -EAGAIN;
  r->shut[k] = !r->fin_wanted[k];
}

/* Writes what is pending for side k. Returns 1 if bytes moved. */
static int flush(core_relay *r, int k) {
  core_sock *s = r->s[k];
  int moved = 0;
  while (s->out_len > 0) {
    ssize_t w = core_stream_write(s, s->out + s->out_off, s->out_len);
    if (w < 0) {
      if (errno != EAGAIN) fail(r, k, errno);
      return moved;
    }
    moved = 1;
    r->last_activity = uv_now(uv_default_loop());
    s->out_off += (size_t)w;
    s->out_len -= (size_t)w;
    if (s->out_len > 0) return moved; /* partial: the socket is full */
  }
  free(s->out);
  s->out = NULL;
  s->out_off = 0;
  if (r->eof[1 - k]) send_fin(r, k);
  return moved;
}

/*
 * Bytes held for a destination that nothing of was written yet (a relay's
 * first bytes: a PROXY header, early bytes), up to this many, go out in one
 * write with the first bytes read from the source: one segment, not two
 * (the next hop reads the header and the data at once).
 */
#define COALESCE_MAX 4096

static bool coalescible(const core_sock *dst) { return dst->out_len > 0 && dst->out_off == 0 && dst->out_len <= COALESCE_MAX && dst->writable; }

/* Moves bytes from side k to side 1-k until the source is drained or the destination is full. Returns 1 if anything happened. */
static int pump(core_relay *r, int k) {
  core_sock *src = r->s[k];
  core_sock *dst = r->s[1 - k];
  int moved = 0;
  while (!r->finished && src->readable && !r->eof[k] && (dst->out_len == 0 || coalescible(dst))) {
    size_t held = dst->out_len; /* coalescible: these go first, in the same write */
    ssize_t n = core_stream_read(src, core_scratch + held, CORE_SCRATCH_SIZE - held);
    if (n == 0) {
      r->eof[k] = 1;
      if (held == 0) send_fin(r, 1 - k); /* else flush sends it once the held bytes are written */
      return 1;
    }
    if (n < 0) {
      if (errno != EAGAIN) fail(r, k, errno);
      else if (held > 0) moved |= flush(r, 1 - k);
      return moved;
    }
    moved = 1;
    r->bytes[k] += (uint64_t)n;
    r->last_activity = uv_now(uv_default_loop());
    if (held > 0) {
      memcpy(core_scratch, dst->out, held);
      free(dst->out);
      dst->out = NULL;
      dst->out_len = 0;
      n += (ssize_t)held;
    }
    ssize_t w = dst->writable ? core_stream_write(dst, core_scratch, (size_t)n) : 0;
    if (w < 0) {
      if (errno != EAGAIN) {
        fail(r, 1 - k, errno);
        return moved;
      }
      w = 0;
    }
    if (w < n) {
      /* The stream cleared the readiness that will wake the destination. */
      if (core_sock_hold_out(dst, core_scratch + w, (size_t)(n - w)) != 0) fail(r, 1 - k, ENOMEM);
      return moved;
    }
  }
  return moved;
}

static void relay_progress(core_relay *r) {
  for (int k = 0; k < 2 && !r->finished; k++) {
    core_sock *s = r->s[k];
    if (s->error) {
      s->error = 0;
      int err = socket_error(s->fd);
      if (err) fail(r, k, err);
    }
  }
  int progress = 1;
  while (progress && !r->finished) {
    progress = 0;
    for (int k = 0; k < 2 && !r->finished; k++) {
      if (r->s[k]->out_len > 0 && r->s[k]->writable) progress |= flush(r, k);
      if (!r->finished && r->fin_wanted[k] && r->s[k]->out_len == 0 && r->s[k]->writable) {
        send_fin(r, k);
        progress |= r->shut[k];
      }
      if (!r->finished) progress |= pump(r, k);
    }
  }
  if (!r->finished && r->eof[0] && r->eof[1] && r->shut[0] && r->shut[1]) relay_finish(r, OUTCOME_CLOSED, 0, 0);
}

static void on_idle_timer(uv_timer_t *t) {
  core_relay *r = t->data;
  uint64_t idle = uv_now(uv_default_loop()) - r->last_activity;
  if (idle >= r->idle_ms) {
    relay_finish(r, OUTCOME_IDLE_TIMEOUT, 0, 0);
    return;
  }
  uv_timer_start(&r->idle_timer, on_idle_timer, r->idle_ms - idle, 0);
}

static void free_relay(uv_handle_t *h) { free(h->data); }

static void relay_finish(core_relay *r, int outcome, int err, int reset_mask) {
  if (r->finished) return;
  r->finished = 1;
  uv_timer_stop(&r->idle_timer);
  for (int k = 0; k < 2; k++) {
    core_sock *s = r->s[k];
    s->relay = NULL;
    core_sock_set_job(s, SOCK_IDLE, NULL);
    core_sock_close(s, (reset_mask >> k) & 1);
  }
  if (r->c_done) {
    r->c_done(r->c_ctx, outcome, r->bytes[0], r->bytes[1], err);
    uv_close((uv_handle_t *)&r->idle_timer, free_relay);
    return;
  }
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[4];
  NAPI_MUST(napi_create_int32(core_env, outcome, &argv[0]));
  NAPI_MUST(napi_create_double(core_env, (double)r->bytes[0], &argv[1]));
  NAPI_MUST(napi_create_double(core_env, (double)r->bytes[1], &argv[2]));
  if (err) NAPI_MUST(core_errno_name(core_env, err, &argv[3]));
  else NAPI_MUST(napi_get_null(core_env, &argv[3]));
  napi_ref cb = r->on_done;
  r->on_done = NULL;
  core_call(cb, 4, argv);
  core_delete_ref(&cb);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
  uv_close((uv_handle_t *)&r->idle_timer, free_relay);
}

static void on_relay_ready(core_sock *s) { relay_progress(s->relay); }

/* The relay a JS id (its downstream fd) names, or NULL when it is gone; false with an exception thrown on a bad id. */
static bool relay_arg(napi_env env, napi_callback_info info, const char *usage, core_relay **out) {
  napi_value argv[1];
  int32_t fd;
  if (!core_args(env, info, 1, argv) || !core_arg_int32(env, argv[0], usage, &fd)) return false;
  core_sock *s = core_sock_get(fd);
  *out = s && s->mode == SOCK_RELAY && s->side == 0 ? s->relay : NULL;
  return true;
}

static void relay_begin(core_relay *r, core_sock *s[2], uint32_t idle_ms);

static void drop_pending(core_sock *s) {
  free(s->out);
  s->out = NULL;
  s->out_len = 0;
}

/*
 * relay(downstreamFd, upstreamFd, toUpstream: Buffer|null, toDownstream: Buffer|null, idleMs,
 *       onDone(outcome, bytesToUpstream, bytesToDownstream, errName|null)) -> relay id (the downstream fd)
 * Both sockets must be idle sockets of the core. The buffers are written first.
 * Work starts on the next loop turn, so onDone never runs inside this call.
 */
static napi_value js_relay(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int32_t fds[2];
  uint32_t idle_ms;
  char *pre[2];
  size_t pre_len[2];
  if (!core_args(env, info, 6, argv) || !core_arg_int32(env, argv[0], RELAY_USAGE, &fds[0]) || !core_arg_int32(env, argv[1], RELAY_USAGE, &fds[1]) ||
      !core_arg_buffer(env, argv[2], RELAY_USAGE, true, &pre[1], &pre_len[1]) || !core_arg_buffer(env, argv[3], RELAY_USAGE, true, &pre[0], &pre_len[0]) ||
      !core_arg_uint32(env, argv[4], RELAY_USAGE, &idle_ms)) {
    return NULL;
  }
  core_sock *s[2] = {core_sock_get(fds[0]), core_sock_get(fds[1])};
  if (!s[0] || !s[1] || s[0] == s[1] || s[0]->mode != SOCK_IDLE || s[1]->mode != SOCK_IDLE) {
    NAPI_MUST(napi_throw_error(env, "EBADF", "relay: both fds must be idle sockets of the core"));
    return NULL;
  }
  napi_ref on_done;
  if (!core_arg_callback(env, argv[5], RELAY_USAGE, &on_done)) return NULL;
  core_relay *r = calloc(1, sizeof *r);
  if (!r) {
    core_delete_ref(&on_done);
    return core_throw_errno(env, ENOMEM, "relay");
  }
  for (int k = 0; k < 2; k++) {
    if (pre_len[k] > 0 && core_sock_hold_out(s[k], pre[k], pre_len[k]) != 0) {
      drop_pending(s[0]);
      drop_pending(s[1]);
      free(r);
      core_delete_ref(&on_done);
      return core_throw_errno(env, ENOMEM, "relay");
    }
  }
  r->on_done = on_done;
  relay_begin(r, s, idle_ms);
  return argv[0];
}

static void relay_begin(core_relay *r, core_sock *s[2], uint32_t idle_ms) {
  for (int k = 0; k < 2; k++) {
    r->s[k] = s[k];
    s[k]->relay = r;
    s[k]->side = k;
    core_sock_set_job(s[k], SOCK_RELAY, on_relay_ready);
  }
  r->idle_ms = idle_ms;
  r->last_activity = uv_now(uv_default_loop());
  uv_timer_init(uv_default_loop(), &r->idle_timer); /* cannot fail for the default loop */
  r->idle_timer.data = r;
  if (idle_ms > 0) uv_timer_start(&r->idle_timer, on_idle_timer, idle_ms, 0);
  core_sock_kick(s[0]);
}

int core_relay_start(core_sock *s[2], uint32_t idle_ms, core_relay_done_fn done, void *ctx) {
  core_relay *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->c_done = done;
  r->c_ctx = ctx;
  relay_begin(r, s, idle_ms);
  return 0;
}

uint64_t core_relay_moved(const core_relay *r) { return r->bytes[0] + r->bytes[1]; }

/* relayBytes(id) -> [bytesToUpstream, bytesToDownstream], or undefined when the relay is gone. */
static napi_value js_relay_bytes(napi_env env, napi_callback_info info) {
  core_relay *r;
  if (!relay_arg(env, info, "relayBytes(id)", &r) || !r) return NULL;
  napi_value result, v;
  JS_CHECK(env, napi_create_array_with_length(env, 2, &result));
  JS_CHECK(env, napi_create_double(env, (double)r->bytes[0], &v));
  JS_CHECK(env, napi_set_element(env, result, 0, v));
  JS_CHECK(env, napi_create_double(env, (double)r->bytes[1], &v));
  JS_CHECK(env, napi_set_element(env, result, 1, v));
  return result;
}

/* relayAbort(id): closes both sides now (drain timeout, stop); onDone reports "aborted" before this returns. */
static napi_value js_relay_abort(napi_env env, napi_callback_info info) {
  core_relay *r;
  if (relay_arg(env, info, "relayAbort(id)", &r) && r) relay_finish(r, OUTCOME_ABORTED, 0, 0);
  return NULL;
}

/*
 * relayReset(id): cuts both sides now with RST; onDone reports "aborted" before this returns.
 * Each peer learns that the stream was cut, not ended: a FIN would pass for a complete transfer.
 */
static napi_value js_relay_reset(napi_env env, napi_callback_info info) {
  core_relay *r;
  if (relay_arg(env, info, "relayReset(id)", &r) && r) relay_finish(r, OUTCOME_ABORTED, 0, 3);
  return NULL;
}

bool core_relay_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("relay", js_relay),
      CORE_FUNCTION("relayBytes", js_relay_bytes),
      CORE_FUNCTION("relayAbort", js_relay_abort),
      CORE_FUNCTION("relayReset", js_relay_reset),
  };
  napi_value names, v;
  if (!core_export_functions(env, exports, props, sizeof props / sizeof props[0]) || !JS_OK(env, napi_create_array_with_length(env, OUTCOMES, &names))) {
    return false;
  }
  for (uint32_t i = 0; i < OUTCOMES; i++) {
    if (!JS_OK(env, napi_create_string_utf8(env, outcome_names[i], NAPI_AUTO_LENGTH, &v)) || !JS_OK(env, napi_set_element(env, names, i, v))) return false;
  }
  return JS_OK(env, napi_set_named_property(env, exports, "RELAY_OUTCOMES", names));
}
