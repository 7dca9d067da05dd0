/*
 * The relay: bytes between a downstream and an upstream socket, moved in the
 * core's epoll callbacks, with no JavaScript per chunk.
 *
 * - Backpressure: a direction reads only while its destination has nothing
 *   pending; bytes a full socket did not take wait in a buffer of exactly
 *   their size, and the source stays unread (the kernel pushes back on it).
 * - Half-close: a FIN read from one side becomes shutdown(SHUT_WR) on the
 *   other once that side's pending bytes are written.
 * - Resets: an error on one side closes the other with RST (SO_LINGER 0).
 * - Idle timeout: one timer per relay, re-armed lazily from the last activity.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static void relay_finish(vm_relay *r, int outcome, int err, int reset_side);

/* Side k failed with err: reset the other side, report the error of side k. */
static void fail(vm_relay *r, int k, int err) {
  relay_finish(r, k == 0 ? OUTCOME_DOWNSTREAM_ERROR : OUTCOME_UPSTREAM_ERROR, err, 1 - k);
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

static void send_fin(vm_relay *r, int k) {
  if (r->shut[k]) return;
  r->shut[k] = 1;
  /* ENOTCONN after a peer reset is reported by the next read or write. */
  shutdown(r->s[k]->fd, SHUT_WR);
}

/* Writes what is pending for side k. Returns 1 if bytes moved. */
static int flush(vm_relay *r, int k) {
  vm_sock *s = r->s[k];
  int moved = 0;
  while (s->out_len > 0) {
    ssize_t w = send(s->fd, s->out + s->out_off, s->out_len, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) s->writable = 0;
      else fail(r, k, errno);
      return moved;
    }
    moved = 1;
    r->last_activity = uv_now(uv_default_loop());
    s->out_off += (size_t)w;
    s->out_len -= (size_t)w;
    if (s->out_len > 0) {
      s->writable = 0; /* partial: the socket buffer is full */
      return moved;
    }
  }
  free(s->out);
  s->out = NULL;
  s->out_off = 0;
  if (r->eof[1 - k]) send_fin(r, k);
  return moved;
}

static int set_pending(vm_sock *s, const char *data, size_t len) {
  s->out = malloc(len);
  if (!s->out) return -1;
  memcpy(s->out, data, len);
  s->out_off = 0;
  s->out_len = len;
  return 0;
}

/* Moves bytes from side k to side 1-k until the source is drained or the destination is full. Returns 1 if anything happened. */
static int pump(vm_relay *r, int k) {
  vm_sock *src = r->s[k];
  vm_sock *dst = r->s[1 - k];
  int moved = 0;
  while (!r->finished && src->readable && !r->eof[k] && dst->out_len == 0) {
    ssize_t n = read(src->fd, vm_scratch, VM_SCRATCH_SIZE);
    if (n == 0) {
      r->eof[k] = 1;
      send_fin(r, 1 - k);
      return 1;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) src->readable = 0;
      else fail(r, k, errno);
      return moved;
    }
    moved = 1;
    r->bytes[k] += (uint64_t)n;
    r->last_activity = uv_now(uv_default_loop());
    ssize_t w = dst->writable ? send(dst->fd, vm_scratch, (size_t)n, MSG_NOSIGNAL) : 0;
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        fail(r, 1 - k, errno);
        return moved;
      }
      w = 0;
    }
    if (w < n) {
      dst->writable = 0;
      if (set_pending(dst, vm_scratch + w, (size_t)(n - w)) != 0) fail(r, 1 - k, ENOMEM);
      return moved;
    }
    /* A short read drained the socket: the next edge says when there is more
       (unless a FIN is already announced: no edge will repeat it). */
    if (n < VM_SCRATCH_SIZE && !src->hup) src->readable = 0;
  }
  return moved;
}

void vm_relay_progress(vm_relay *r) {
  for (int k = 0; k < 2 && !r->finished; k++) {
    vm_sock *s = r->s[k];
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
      if (!r->finished) progress |= pump(r, k);
    }
  }
  if (!r->finished && r->eof[0] && r->eof[1] && r->shut[0] && r->shut[1]) relay_finish(r, OUTCOME_CLOSED, 0, -1);
}

static void on_idle_timer(uv_timer_t *t) {
  vm_relay *r = t->data;
  uint64_t idle = uv_now(uv_default_loop()) - r->last_activity;
  if (idle >= r->idle_ms) {
    relay_finish(r, OUTCOME_IDLE_TIMEOUT, 0, -1);
    return;
  }
  uv_timer_start(&r->idle_timer, on_idle_timer, r->idle_ms - idle, 0);
}

static void free_relay(uv_handle_t *h) { free(h->data); }

static void relay_finish(vm_relay *r, int outcome, int err, int reset_side) {
  if (r->finished) return;
  r->finished = 1;
  uv_timer_stop(&r->idle_timer);
  for (int k = 0; k < 2; k++) {
    vm_sock *s = r->s[k];
    s->relay = NULL;
    s->mode = SOCK_IDLE;
    vm_sock_close(s, k == reset_side);
  }
  napi_handle_scope scope;
  napi_open_handle_scope(vm_env, &scope);
  napi_value argv[4];
  napi_create_int32(vm_env, outcome, &argv[0]);
  napi_create_double(vm_env, (double)r->bytes[0], &argv[1]);
  napi_create_double(vm_env, (double)r->bytes[1], &argv[2]);
  if (err) argv[3] = vm_errno_name(vm_env, err);
  else napi_get_null(vm_env, &argv[3]);
  napi_ref cb = r->on_done;
  r->on_done = NULL;
  vm_call(cb, 4, argv);
  napi_delete_reference(vm_env, cb);
  napi_close_handle_scope(vm_env, scope);
  uv_close((uv_handle_t *)&r->idle_timer, free_relay);
}

static vm_relay *relay_of(napi_env env, napi_value id) {
  int32_t fd;
  if (napi_get_value_int32(env, id, &fd) != napi_ok) return NULL;
  vm_sock *s = vm_sock_get(fd);
  return s && s->mode == SOCK_RELAY && s->side == 0 ? s->relay : NULL;
}

/* Optional Buffer argument (null/undefined = none). */
static int buffer_arg(napi_env env, napi_value v, char **data, size_t *len) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  *data = NULL;
  *len = 0;
  if (t == napi_null || t == napi_undefined) return 0;
  bool is_buffer;
  napi_is_buffer(env, v, &is_buffer);
  if (!is_buffer) return -1;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok ? 0 : -1;
}

/*
 * relay(downstreamFd, upstreamFd, toUpstream: Buffer|null, toDownstream: Buffer|null, idleMs,
 *       onDone(outcome, bytesToUpstream, bytesToDownstream, errName|null)) -> relay id (the downstream fd)
 * Both sockets must be idle sockets of the core. The buffers are written first.
 * Work starts on the next loop turn, so onDone never runs inside this call.
 */
napi_value vm_relay_start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fds[2];
  uint32_t idle_ms;
  char *pre[2];
  size_t pre_len[2];
  if (argc < 6 || napi_get_value_int32(env, argv[0], &fds[0]) != napi_ok || napi_get_value_int32(env, argv[1], &fds[1]) != napi_ok ||
      buffer_arg(env, argv[2], &pre[1], &pre_len[1]) != 0 || buffer_arg(env, argv[3], &pre[0], &pre_len[0]) != 0 ||
      napi_get_value_uint32(env, argv[4], &idle_ms) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "relay(downFd, upFd, toUpstream, toDownstream, idleMs, onDone): bad arguments");
    return NULL;
  }
  vm_sock *s[2] = {vm_sock_get(fds[0]), vm_sock_get(fds[1])};
  if (!s[0] || !s[1] || s[0] == s[1] || s[0]->mode != SOCK_IDLE || s[1]->mode != SOCK_IDLE) {
    napi_throw_error(env, "EBADF", "relay: both fds must be idle sockets of the core");
    return NULL;
  }
  vm_relay *r = calloc(1, sizeof *r);
  if (!r) return vm_throw_errno(env, ENOMEM, "relay");
  for (int k = 0; k < 2; k++) {
    if (pre_len[k] > 0 && set_pending(s[k], pre[k], pre_len[k]) != 0) {
      for (int j = 0; j < 2; j++) {
        free(s[j]->out);
        s[j]->out = NULL;
        s[j]->out_len = 0;
      }
      free(r);
      return vm_throw_errno(env, ENOMEM, "relay");
    }
  }
  for (int k = 0; k < 2; k++) {
    r->s[k] = s[k];
    s[k]->relay = r;
    s[k]->side = k;
    s[k]->mode = SOCK_RELAY;
  }
  r->idle_ms = idle_ms;
  r->last_activity = uv_now(uv_default_loop());
  napi_create_reference(env, argv[5], 1, &r->on_done);
  uv_timer_init(uv_default_loop(), &r->idle_timer);
  r->idle_timer.data = r;
  if (idle_ms > 0) uv_timer_start(&r->idle_timer, on_idle_timer, idle_ms, 0);
  vm_sock_kick(s[0]);
  return argv[0];
}

/* relayBytes(id) -> [bytesToUpstream, bytesToDownstream], or undefined when the relay is gone. */
napi_value vm_relay_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vm_relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  napi_value result, v;
  napi_create_array_with_length(env, 2, &result);
  napi_create_double(env, (double)r->bytes[0], &v);
  napi_set_element(env, result, 0, v);
  napi_create_double(env, (double)r->bytes[1], &v);
  napi_set_element(env, result, 1, v);
  return result;
}

/* relayAbort(id): closes both sides now (drain timeout, stop); onDone reports "aborted" before this returns. */
napi_value vm_relay_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vm_relay *r = relay_of(env, argv[0]);
  if (r) relay_finish(r, OUTCOME_ABORTED, 0, -1);
  return NULL;
}
