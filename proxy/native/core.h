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
 *
 * This header is the event loop's contract (loop.c), which every job builds
 * on. The layers, each using only those below it:
 *
 *   module.c                       registration, the main-thread guard
 *   listen.c connect.c read.c      the jobs a socket can have, and the
 *   relay.c duplex.c sockets.c     calls JS makes on sockets in general
 *   vsock.c original-dst.c         (exports.h lists what each adds)
 *   tls.c tls-context.c            TLS 1.3 handshakes, identities, sessions
 *   stream.c                       a socket's bytes, plain or through TLS
 *   address.c                      JS values <-> socket addresses
 *   loop.c (this header)           epoll set, fd table, kick queue
 *   trim.c                         freed memory back to the system when quiet
 *   settle.cc                      V8's memory-reducing GCs + malloc_trim, on request (C++ for V8's API)
 *   js.c                           the N-API boundary, status checks
 *
 * The loop knows no job: a job sets the socket's on_ready handler, and the
 * loop calls it whenever the socket's readiness changes or it is kicked.
 */
#ifndef VSOCKMESH_CORE_H
#define VSOCKMESH_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "js.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

typedef struct core_sock core_sock;
typedef struct core_relay core_relay; /* defined in relay.c */
typedef struct core_tls core_tls;     /* defined in tls.h */
typedef void (*core_ready_fn)(core_sock *s);

typedef enum {
  SOCK_IDLE = 0,   /* owned, no I/O in progress (readiness still recorded) */
  SOCK_LISTEN,     /* listening: accept on readable */
  SOCK_CONNECTING, /* non-blocking connect in flight */
  SOCK_READING,    /* reads delivered to JS (header phase) */
  SOCK_RELAY,      /* one side of a relay */
  SOCK_DUPLEX,     /* a JS Duplex stream (vsock sockets for applications) */
  SOCK_HANDSHAKE,  /* a TLS handshake in flight */
} core_sock_mode;

struct core_sock {
  int fd;
  uint32_t gen; /* told apart from a later socket with the same fd number */
  int family;
  core_sock_mode mode;
  core_ready_fn on_ready; /* the job's handler; NULL while idle */
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
  uv_timer_t *timer; /* connect deadline, accept retry */
  size_t read_max;   /* largest read delivered to JS in SOCK_READING */
  /* relay */
  core_relay *relay;
  int side;
  void *warm;     /* warm.c: a listening socket's warm listener, an accepted one's warm connection */
  core_tls *tls; /* set by a TLS handshake: reads and writes go through it (stream.h); freed by close */
  char *out; /* bytes waiting to be written to this socket (relay, duplex); freed by close */
  size_t out_len;
  size_t out_off;
  core_sock *next; /* kick queue / graveyard link */
};

/* Creates the epoll set and hands it to libuv; a negative errno on failure. */
int core_loop_init(void);

/* The open socket with this fd, or NULL. */
core_sock *core_sock_get(int fd);
/* Takes a non-blocking fd into the epoll set as an idle socket; NULL (fd still open) on failure. */
core_sock *core_sock_adopt(int fd, int family);
/* Closes the fd now (its number may be reused at once); the struct is freed when no C frame can hold it. */
void core_sock_close(core_sock *s, bool reset);
/* Runs the socket's handler on the next loop turn (work found ready during a JS call). */
void core_sock_kick(core_sock *s);
/* Keeps a copy of bytes the socket did not take yet (out must be empty); its job writes them. -1 without memory. */
int core_sock_hold_out(core_sock *s, const char *data, size_t len);
/* Whether the socket keeps the event loop alive (like net.Socket ref/unref). */
void core_sock_ref(core_sock *s, bool on);
/* The socket's one timer: (re)started for ms; stopped and freed by stop or close. 0, or a negative errno. */
int core_sock_timer_start(core_sock *s, uv_timer_cb cb, uint64_t ms);
void core_sock_timer_stop(core_sock *s);

/* Whether s is still the socket that had this fd and generation (a JS callback may have closed it, and the fd been reused). */
static inline bool core_sock_alive(const core_sock *s, int fd, uint32_t gen) { return core_sock_get(fd) == s && s->gen == gen; }

/* Gives the socket a job (SOCK_IDLE with NULL: none). */
static inline void core_sock_set_job(core_sock *s, core_sock_mode mode, core_ready_fn on_ready) {
  s->mode = mode;
  s->on_ready = on_ready;
}

/* Sockets the core holds open. */
size_t core_open_count(void);
/* Bytes waiting in sockets' out buffers. */
double core_pending_bytes(void);

/*
 * A relay the core starts itself (relay.c; the warm path): both sockets idle,
 * bytes they hold out written first; done runs once, both sockets closed, with
 * the outcome (RELAY_OUTCOMES' index), bytes each way and an errno (0: none).
 * The relay's id for relayAbort/relayReset is the downstream fd, as for JS's.
 */
typedef void (*core_relay_done_fn)(void *ctx, int outcome, uint64_t to_upstream, uint64_t to_downstream, int err);
int core_relay_start(core_sock *s[2], uint32_t idle_ms, core_relay_done_fn done, void *ctx);
/* The bytes a relay moved so far, both ways. */
uint64_t core_relay_moved(const core_relay *r);

/* One read buffer for every socket: reads are copied out before the next one. */
extern char core_scratch[];
#define CORE_SCRATCH_SIZE (64 * 1024)

#endif
