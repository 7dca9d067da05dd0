/*
 * The event loop under every socket of the core: one edge-triggered epoll set
 * that libuv watches as a single fd, the fd table, and the kick queue.
 *
 * - Generations: each epoll event carries the socket's fd and generation, so
 *   an event for a socket closed earlier in the same batch, whose fd number a
 *   new socket already took, is told apart and skipped.
 * - Deferred frees: a closed socket's fd is closed at once, but its struct
 *   waits in a graveyard until no C frame can still hold a pointer to it (the
 *   start of the next epoll batch or the end of a kick run), because a JS
 *   callback may close the very socket whose handler is running.
 * - Liveness: only open sockets that are ref'ed keep the process alive, as
 *   with Node's own sockets.
 */
#include "core.h"
#include "warm.h"
#include "tls.h"
#include "trim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

char core_scratch[CORE_SCRATCH_SIZE];

static core_sock **table;
static size_t table_cap;
static size_t open_count;
static size_t ref_count; /* open sockets that keep the loop alive */
static uint32_t next_gen = 1;

static int epfd = -1;
static uv_poll_t epoll_watch; /* libuv watches our epoll fd */
static uv_idle_t kick_idle;   /* runs queued work on the next loop turn */
static core_sock *kick_head, *kick_tail;
static core_sock *graveyard; /* closed sockets, freed when no C frame can hold them */

#define EPOLL_BATCH 128

static void dispatch(core_sock *s) {
  if (s->on_ready) s->on_ready(s); /* idle: readiness stays recorded for whoever takes the socket */
}

static void bury(void) {
  while (graveyard) {
    core_sock *s = graveyard;
    graveyard = s->next;
    free(s);
  }
}

static void on_epoll(uv_poll_t *w, int status, int events) {
  (void)w;
  (void)status; /* an error on the epoll fd itself shows in epoll_wait below */
  (void)events;
  struct epoll_event evs[EPOLL_BATCH];
  int n;
  bury();
  do {
    n = epoll_wait(epfd, evs, EPOLL_BATCH, 0);
    for (int i = 0; i < n; i++) {
      int fd = (int)(evs[i].data.u64 & 0xffffffffu);
      uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
      core_sock *s = core_sock_get(fd);
      if (!s || s->gen != gen) continue; /* closed (and maybe reused) earlier in this batch */
      uint32_t e = evs[i].events;
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->readable = 1;
      if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->writable = 1;
      if (e & EPOLLERR) s->error = 1;
      if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->hup = 1;
      dispatch(s);
    }
  } while (n == EPOLL_BATCH);
}

static void on_kick(uv_idle_t *h) {
  core_sock *list = kick_head;
  kick_head = kick_tail = NULL;
  while (list) {
    core_sock *s = list;
    list = s->next;
    s->queued = 0;
    if (s->closed) {
      s->next = graveyard;
      graveyard = s;
      continue;
    }
    dispatch(s);
  }
  if (!kick_head) uv_idle_stop(h);
  bury();
}

int core_loop_init(void) {
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return -errno;
  int err = uv_poll_init(uv_default_loop(), &epoll_watch, epfd);
  if (!err) err = uv_poll_start(&epoll_watch, UV_READABLE, on_epoll);
  if (!err) err = uv_idle_init(uv_default_loop(), &kick_idle);
  if (err) {
    close(epfd);
    epfd = -1;
    return err; /* libuv errors are negative errnos */
  }
  /* Only open sockets keep the process alive, as with Node's own sockets. */
  uv_unref((uv_handle_t *)&epoll_watch);
  return 0;
}

core_sock *core_sock_get(int fd) {
  if (fd < 0 || (size_t)fd >= table_cap) return NULL;
  return table[fd];
}

static void count_ref(bool more) {
  if (more && ref_count++ == 0) uv_ref((uv_handle_t *)&epoll_watch);
  if (!more && --ref_count == 0) uv_unref((uv_handle_t *)&epoll_watch);
}

core_sock *core_sock_adopt(int fd, int family) {
  if ((size_t)fd >= table_cap) {
    size_t cap = table_cap ? table_cap : 1024;
    while (cap <= (size_t)fd) cap *= 2;
    core_sock **grown = realloc(table, cap * sizeof *grown);
    if (!grown) return NULL;
    memset(grown + table_cap, 0, (cap - table_cap) * sizeof *grown);
    table = grown;
    table_cap = cap;
  }
  core_sock *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->fd = fd;
  s->gen = next_gen++;
  s->family = family;
  /* Optimistic: a send on a full socket just says EAGAIN (connecting sockets clear this). */
  s->writable = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = ((uint64_t)s->gen << 32) | (uint32_t)fd};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    free(s);
    return NULL;
  }
  table[fd] = s;
  open_count++;
  count_ref(true);
  return s;
}

void core_sock_close(core_sock *s, bool reset) {
  if (s->closed) return;
  s->closed = 1;
  if (s->mode == SOCK_LISTEN) core_warm_listener_closed(s);
  if (table[s->fd] == s) table[s->fd] = NULL;
  core_sock_timer_stop(s);
  core_delete_ref(&s->callback);
  core_delete_ref(&s->write_callback);
  if (reset && s->family != AF_VSOCK) {
    /* SO_LINGER {on, 0}: close() sends RST instead of FIN. */
    struct linger lg = {1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  core_tls_free(s->tls);
  s->tls = NULL;
  close(s->fd); /* also leaves the epoll set: no other fd refers to this socket */
  s->fd = -1;
  free(s->out);
  s->out = NULL;
  s->out_len = 0;
  /* A queued socket is linked through `next` already: on_kick buries it. */
  if (!s->queued) {
    s->next = graveyard;
    graveyard = s;
  }
  open_count--;
  if (!s->unref) count_ref(false);
  core_trim_note();
}

/* The queue holds a socket once; a closed one is skipped. */
void core_sock_kick(core_sock *s) {
  if (s->queued || s->closed) return;
  s->queued = 1;
  s->next = NULL;
  if (kick_tail) kick_tail->next = s;
  else kick_head = s;
  kick_tail = s;
  uv_idle_start(&kick_idle, on_kick);
}

int core_sock_hold_out(core_sock *s, const char *data, size_t len) {
  s->out = malloc(len);
  if (!s->out) return -1;
  memcpy(s->out, data, len);
  s->out_off = 0;
  s->out_len = len;
  return 0;
}

void core_sock_ref(core_sock *s, bool on) {
  if (s->unref != on) return; /* already so */
  s->unref = !on;
  count_ref(on);
}

static void free_timer(uv_handle_t *h) { free(h); }

int core_sock_timer_start(core_sock *s, uv_timer_cb cb, uint64_t ms) {
  if (!s->timer) {
    s->timer = malloc(sizeof *s->timer);
    if (!s->timer) return -ENOMEM;
    uv_timer_init(uv_default_loop(), s->timer); /* cannot fail for the default loop */
    s->timer->data = s;
  }
  return uv_timer_start(s->timer, cb, ms, 0);
}

void core_sock_timer_stop(core_sock *s) {
  if (s->timer) {
    uv_close((uv_handle_t *)s->timer, free_timer);
    s->timer = NULL;
  }
}

size_t core_open_count(void) { return open_count; }

double core_pending_bytes(void) {
  double total = 0;
  for (size_t i = 0; i < table_cap; i++) {
    if (table[i]) total += (double)table[i]->out_len;
  }
  return total;
}
