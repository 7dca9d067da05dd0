/*
 * vsockmesh native core: non-blocking sockets (TCP and AF_VSOCK) on Node's
 * event loop, and an fd-to-fd relay. The core keeps its own edge-triggered
 * epoll set, which libuv watches as one pollable fd: every socket is
 * registered once (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET) and never re-armed;
 * readiness is kept in flags. No thread per socket, no polling loop.
 *
 * JavaScript refers to a socket by its file descriptor. The core never calls
 * back into JavaScript from inside a call that JavaScript made: work that
 * becomes ready during such a call is queued and runs on the next loop turn.
 */
#ifndef VSOCKMESH_CORE_H
#define VSOCKMESH_CORE_H

#include <node_api.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

typedef struct vm_relay vm_relay;

typedef enum {
  SOCK_IDLE = 0,   /* owned, no I/O in progress (readiness still recorded) */
  SOCK_LISTEN,     /* listening: accept on readable */
  SOCK_CONNECTING, /* non-blocking connect in flight */
  SOCK_READING,    /* reads delivered to JS (header phase) */
  SOCK_RELAY,      /* one side of a relay */
  SOCK_DUPLEX,     /* a JS Duplex stream (vsock sockets for applications) */
} vm_sock_mode;

typedef struct vm_sock {
  int fd;
  uint32_t gen; /* told apart from a later socket with the same fd number */
  int family;
  vm_sock_mode mode;
  /* Edge-triggered readiness: set by epoll, cleared when a syscall says EAGAIN. */
  unsigned readable : 1;
  unsigned writable : 1;
  unsigned error : 1;
  unsigned hup : 1; /* the peer's FIN (or an error) is pending: read to the end, even after a short read */
  unsigned queued : 1; /* on the kick queue */
  unsigned closed : 1;
  unsigned unref : 1;   /* does not keep the event loop alive */
  unsigned reading : 1; /* duplex: JS wants data */
  unsigned eof : 1;     /* duplex: EOF delivered */
  napi_ref callback; /* onConnection / connect callback / read callback */
  napi_ref write_callback; /* duplex: a pending write finished */
  uv_timer_t *timer; /* connect deadline */
  size_t read_max;   /* largest read delivered to JS in SOCK_READING */
  /* relay */
  vm_relay *relay;
  int side;
  char *out; /* bytes waiting to be written to this socket */
  size_t out_len;
  size_t out_off;
  struct vm_sock *next; /* kick queue / graveyard link */
} vm_sock;

struct vm_relay {
  vm_sock *s[2];     /* s[0] = downstream, s[1] = upstream */
  uint64_t bytes[2]; /* bytes[i]: read from s[i], bound for s[1-i] */
  int eof[2];        /* s[i] sent FIN */
  int shut[2];       /* we sent FIN to s[i] */
  int finished;
  uint64_t idle_ms;
  uint64_t last_activity;
  uv_timer_t idle_timer;
  napi_ref on_done;
};

/* Relay outcomes, in the order JS lists them. */
enum {
  OUTCOME_CLOSED = 0,
  OUTCOME_DOWNSTREAM_ERROR = 1,
  OUTCOME_UPSTREAM_ERROR = 2,
  OUTCOME_IDLE_TIMEOUT = 3,
  OUTCOME_ABORTED = 4,
};

extern napi_env vm_env;
extern napi_async_context vm_async;

int vm_core_init(void);
vm_sock *vm_sock_get(int fd);
vm_sock *vm_sock_adopt(int fd, int family);
void vm_sock_close(vm_sock *s, int reset);
/* Runs the socket's handler on the next loop turn (work found ready during a JS call). */
void vm_sock_kick(vm_sock *s);

void vm_relay_progress(vm_relay *r);
void vm_duplex_progress(vm_sock *s);
void vm_duplex_register(napi_env env, napi_value exports);
/* Deletes a JS reference (NULL-safe) and clears it. */
void vm_unref_callback(napi_ref *ref);
napi_value vm_relay_start(napi_env env, napi_callback_info info);
napi_value vm_relay_bytes(napi_env env, napi_callback_info info);
napi_value vm_relay_abort(napi_env env, napi_callback_info info);

/* Calls a JS function held by `ref` with argv (microtasks run after); returns its result or NULL. */
napi_value vm_call(napi_ref ref, size_t argc, napi_value *argv);
napi_value vm_throw_errno(napi_env env, int err, const char *what);
napi_value vm_errno_name(napi_env env, int err);

extern char vm_scratch[];
#define VM_SCRATCH_SIZE (64 * 1024)

#endif
