/*
 * Sockets owned by the core: the edge-triggered epoll set and its fd table,
 * listen/accept, non-blocking connect with a deadline, reads for the header
 * phase, close/reset.
 */
#define _GNU_SOURCE
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "vsock.h"

static vm_sock **table;
static size_t table_cap;
static size_t open_count;
static uint32_t next_gen = 1;

static int epfd = -1;
static uv_poll_t epoll_watch; /* libuv watches our epoll fd */
static uv_idle_t kick_idle;   /* runs queued work on the next loop turn */
static vm_sock *kick_head, *kick_tail;
static vm_sock *graveyard; /* closed sockets, freed when no C frame can hold them */

static void on_epoll(uv_poll_t *w, int status, int events);
static void on_kick(uv_idle_t *h);
static void dispatch(vm_sock *s);

int vm_core_init(void) {
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return -errno;
  uv_poll_init(uv_default_loop(), &epoll_watch, epfd);
  uv_poll_start(&epoll_watch, UV_READABLE, on_epoll);
  /* Only open sockets keep the process alive, as with Node's own sockets. */
  uv_unref((uv_handle_t *)&epoll_watch);
  uv_idle_init(uv_default_loop(), &kick_idle);
  return 0;
}

vm_sock *vm_sock_get(int fd) {
  if (fd < 0 || (size_t)fd >= table_cap) return NULL;
  return table[fd];
}

static size_t ref_count; /* open sockets that keep the loop alive */

static void count_ref(int delta) {
  size_t before = ref_count;
  ref_count += delta;
  if (before == 0 && ref_count > 0) uv_ref((uv_handle_t *)&epoll_watch);
  if (before > 0 && ref_count == 0) uv_unref((uv_handle_t *)&epoll_watch);
}

static void count_open(vm_sock *s, int delta) {
  open_count += delta;
  if (!s->unref) count_ref(delta);
}

void vm_unref_callback(napi_ref *ref) {
  if (*ref) {
    napi_delete_reference(vm_env, *ref);
    *ref = NULL;
  }
}

vm_sock *vm_sock_adopt(int fd, int family) {
  if ((size_t)fd >= table_cap) {
    size_t cap = table_cap ? table_cap : 1024;
    while (cap <= (size_t)fd) cap *= 2;
    vm_sock **grown = realloc(table, cap * sizeof *grown);
    if (!grown) return NULL;
    memset(grown + table_cap, 0, (cap - table_cap) * sizeof *grown);
    table = grown;
    table_cap = cap;
  }
  vm_sock *s = calloc(1, sizeof *s);
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
  count_open(s, 1);
  return s;
}

static void free_timer(uv_handle_t *h) { free(h); }

/* Closes the fd now (its number may be reused at once); the struct is freed later. */
void vm_sock_close(vm_sock *s, int reset) {
  if (s->closed) return;
  s->closed = 1;
  if (table[s->fd] == s) table[s->fd] = NULL;
  if (s->timer) {
    uv_close((uv_handle_t *)s->timer, free_timer);
    s->timer = NULL;
  }
  vm_unref_callback(&s->callback);
  vm_unref_callback(&s->write_callback);
  if (reset && s->family != AF_VSOCK) {
    /* SO_LINGER {on, 0}: close() sends RST instead of FIN. */
    struct linger lg = {1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
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
  count_open(s, -1);
}

static void bury(void) {
  while (graveyard) {
    vm_sock *s = graveyard;
    graveyard = s->next;
    free(s);
  }
}

/* ------------------------------------------------------------ event loop */

static void on_epoll(uv_poll_t *w, int status, int events) {
  struct epoll_event evs[128];
  int n;
  bury();
  do {
    n = epoll_wait(epfd, evs, 128, 0);
    for (int i = 0; i < n; i++) {
      int fd = (int)(evs[i].data.u64 & 0xffffffffu);
      uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
      vm_sock *s = vm_sock_get(fd);
      if (!s || s->gen != gen) continue; /* closed (and maybe reused) earlier in this batch */
      uint32_t e = evs[i].events;
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->readable = 1;
      if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->writable = 1;
      if (e & EPOLLERR) s->error = 1;
      if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->hup = 1;
      dispatch(s);
    }
  } while (n == 128);
}

/* The queue holds a socket once; a closed one is skipped. */
void vm_sock_kick(vm_sock *s) {
  if (s->queued || s->closed) return;
  s->queued = 1;
  s->next = NULL;
  if (kick_tail) kick_tail->next = s;
  else kick_head = s;
  kick_tail = s;
  uv_idle_start(&kick_idle, on_kick);
}

static void on_kick(uv_idle_t *h) {
  vm_sock *list = kick_head;
  kick_head = kick_tail = NULL;
  while (list) {
    vm_sock *s = list;
    list = s->next;
    s->queued = 0;
    if (s->closed) {
      s->next = graveyard;
      graveyard = s;
      continue;
    }
    dispatch(s);
  }
  if (!kick_head) uv_idle_stop(&kick_idle);
  bury();
}

/* ------------------------------------------------------------ addresses */

typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  struct sockaddr_vm vm;
  struct sockaddr_storage ss;
} vm_addr;

static int family_of(napi_env env, napi_value v, int *family) {
  char name[8];
  size_t len;
  if (napi_get_value_string_utf8(env, v, name, sizeof name, &len) != napi_ok) return -1;
  if (strcmp(name, "inet") == 0) *family = AF_INET;
  else if (strcmp(name, "inet6") == 0) *family = AF_INET6;
  else if (strcmp(name, "vsock") == 0) *family = AF_VSOCK;
  else return -1;
  return 0;
}

/* host: an IP string for inet/inet6, a CID number for vsock. */
static int make_addr(napi_env env, int family, napi_value host, uint32_t port, vm_addr *a, socklen_t *len) {
  memset(a, 0, sizeof *a);
  if (family == AF_VSOCK) {
    uint32_t cid;
    if (napi_get_value_uint32(env, host, &cid) != napi_ok) return -1;
    a->vm.svm_family = AF_VSOCK;
    a->vm.svm_cid = cid;
    a->vm.svm_port = port == 0 ? VMADDR_PORT_ANY : port; /* 0: any free port, as with TCP */
    *len = sizeof a->vm;
    return 0;
  }
  if (port > 65535) return -1;
  char text[INET6_ADDRSTRLEN + 1];
  size_t n;
  if (napi_get_value_string_utf8(env, host, text, sizeof text, &n) != napi_ok) return -1;
  if (family == AF_INET) {
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, text, &a->in4.sin_addr) != 1) return -1;
    *len = sizeof a->in4;
  } else {
    a->in6.sin6_family = AF_INET6;
    a->in6.sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, text, &a->in6.sin6_addr) != 1) return -1;
    *len = sizeof a->in6;
  }
  return 0;
}

/* The arguments listen() and connect() share: (family, host|cid, port, number, callback). */
typedef struct {
  int family;
  vm_addr addr;
  socklen_t len;
  uint32_t extra; /* backlog or timeout */
} vm_target;

static int target_args(napi_env env, napi_callback_info info, napi_value argv[5], vm_target *t) {
  size_t argc = 5;
  uint32_t port;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5 || family_of(env, argv[0], &t->family) != 0 || napi_get_value_uint32(env, argv[2], &port) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &t->extra) != napi_ok) {
    return -1;
  }
  return make_addr(env, t->family, argv[1], port, &t->addr, &t->len);
}

/* Address value for JS: the IP string, or the CID as a number. */
static napi_value addr_host(napi_env env, const vm_addr *a) {
  napi_value v;
  char text[INET6_ADDRSTRLEN];
  if (a->sa.sa_family == AF_VSOCK) {
    napi_create_uint32(env, a->vm.svm_cid, &v);
  } else if (a->sa.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a->in4.sin_addr, text, sizeof text);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  } else if (a->sa.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &a->in6.sin6_addr, text, sizeof text);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  } else {
    napi_get_undefined(env, &v);
  }
  return v;
}

static uint32_t addr_port(const vm_addr *a) {
  switch (a->sa.sa_family) {
    case AF_VSOCK: return a->vm.svm_port;
    case AF_INET: return ntohs(a->in4.sin_port);
    case AF_INET6: return ntohs(a->in6.sin6_port);
    default: return 0;
  }
}

static void tune(int fd, int family) {
  if (family == AF_INET || family == AF_INET6) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

/* ------------------------------------------------------------ dispatch */

static void do_accept(vm_sock *s);
static void on_connected(vm_sock *s);
static void on_readable(vm_sock *s);

static void dispatch(vm_sock *s) {
  switch (s->mode) {
    case SOCK_LISTEN:
      if (s->readable) do_accept(s);
      break;
    case SOCK_CONNECTING:
      if (s->writable || s->error) on_connected(s);
      break;
    case SOCK_READING:
      if (s->readable) on_readable(s);
      break;
    case SOCK_RELAY:
      vm_relay_progress(s->relay);
      break;
    case SOCK_DUPLEX:
      vm_duplex_progress(s);
      break;
    default:
      break; /* idle: readiness stays recorded for whoever takes the socket */
  }
}

/* ------------------------------------------------------------ listen */

/* listen(family, host|cid, port, backlog, onConnection(fd, peerHost, peerPort)) -> [fd, boundPort] */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  vm_target t;
  if (target_args(env, info, argv, &t) != 0) {
    napi_throw_type_error(env, "EINVAL", "listen(family, host, port, backlog, onConnection): bad arguments");
    return NULL;
  }
  int family = t.family;
  uint32_t backlog = t.extra;
  vm_addr a = t.addr;
  socklen_t len = t.len;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return vm_throw_errno(env, errno, "socket");
  int one = 1;
  if (family != AF_VSOCK) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (family != AF_VSOCK) tune(fd, family); /* accepted sockets inherit TCP_NODELAY */
  if (bind(fd, &a.sa, len) != 0 || listen(fd, (int)backlog) != 0) {
    int err = errno;
    close(fd);
    return vm_throw_errno(env, err, "listen");
  }
  vm_addr bound;
  socklen_t blen = sizeof bound;
  getsockname(fd, &bound.sa, &blen);
  vm_sock *s = vm_sock_adopt(fd, family);
  if (!s) {
    close(fd);
    return vm_throw_errno(env, ENOMEM, "listen");
  }
  s->mode = SOCK_LISTEN;
  napi_create_reference(env, argv[4], 1, &s->callback);
  napi_value result, v;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, fd, &v);
  napi_set_element(env, result, 0, v);
  napi_create_uint32(env, addr_port(&bound), &v);
  napi_set_element(env, result, 1, v);
  return result;
}

static void retry_accept(uv_timer_t *t) {
  vm_sock *s = t->data;
  uv_close((uv_handle_t *)t, free_timer);
  s->timer = NULL;
  dispatch(s);
}

/* Accepts that failed for lack of a resource, by errno: JS reads them to tell it is overloaded. */
static const int accept_errnos[] = {EMFILE, ENFILE, ENOBUFS, ENOMEM};
#define ACCEPT_ERRNOS (sizeof accept_errnos / sizeof accept_errnos[0])
static double accept_failures[ACCEPT_ERRNOS];

static int count_accept_failure(int err) {
  for (size_t i = 0; i < ACCEPT_ERRNOS; i++) {
    if (accept_errnos[i] == err) {
      accept_failures[i]++;
      return 1;
    }
  }
  return 0;
}

static void do_accept(vm_sock *ls) {
  uint32_t gen = ls->gen;
  int lfd = ls->fd;
  /* Edge-triggered: accept until EAGAIN. JS may close the listener from its callback. */
  while (vm_sock_get(lfd) == ls && ls->gen == gen) {
    vm_addr peer;
    socklen_t plen = sizeof peer;
    int fd = accept4(lfd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (count_accept_failure(errno) && !ls->timer) {
        /* Out of descriptors: connections wait in the backlog; try again shortly. */
        ls->timer = malloc(sizeof *ls->timer);
        uv_timer_init(uv_default_loop(), ls->timer);
        ls->timer->data = ls;
        uv_timer_start(ls->timer, retry_accept, 100, 0);
        return;
      }
      ls->readable = 0;
      return;
    }
    vm_sock *s = vm_sock_adopt(fd, ls->family);
    if (!s) {
      close(fd);
      continue;
    }
    napi_handle_scope scope;
    napi_open_handle_scope(vm_env, &scope);
    napi_value argv[3];
    napi_create_int32(vm_env, fd, &argv[0]);
    argv[1] = addr_host(vm_env, &peer);
    napi_create_uint32(vm_env, addr_port(&peer), &argv[2]);
    vm_call(ls->callback, 3, argv);
    napi_close_handle_scope(vm_env, scope);
  }
}

/* ------------------------------------------------------------ connect */

static void connect_finish(vm_sock *s, int err) {
  napi_ref cb = s->callback;
  s->callback = NULL;
  if (s->timer) {
    uv_close((uv_handle_t *)s->timer, free_timer);
    s->timer = NULL;
  }
  int fd = s->fd;
  if (err) vm_sock_close(s, 0);
  else s->mode = SOCK_IDLE;
  napi_handle_scope scope;
  napi_open_handle_scope(vm_env, &scope);
  napi_value argv[2];
  if (err) argv[0] = vm_errno_name(vm_env, err);
  else napi_get_null(vm_env, &argv[0]);
  napi_create_int32(vm_env, fd, &argv[1]);
  vm_call(cb, 2, argv);
  napi_delete_reference(vm_env, cb);
  napi_close_handle_scope(vm_env, scope);
}

static void on_connected(vm_sock *s) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  s->error = 0;
  connect_finish(s, err);
}

static void on_connect_timeout(uv_timer_t *t) { connect_finish(t->data, ETIMEDOUT); }

/*
 * connect(family, host|cid, port, timeoutMs, callback(errName|null, fd)) -> fd
 * Throws on errors known at once (bad address, no such family); otherwise the
 * callback runs exactly once, from the event loop, unless close(fd) comes first.
 */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  vm_target t;
  if (target_args(env, info, argv, &t) != 0) {
    napi_throw_type_error(env, "EINVAL", "connect(family, host, port, timeoutMs, callback): bad arguments");
    return NULL;
  }
  int family = t.family;
  uint32_t timeout_ms = t.extra;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return vm_throw_errno(env, errno, "socket");
  tune(fd, family);
  if (family == AF_VSOCK) vm_vsock_set_connect_timeout(fd, timeout_ms);
  if (connect(fd, &t.addr.sa, t.len) != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return vm_throw_errno(env, err, "connect");
  }
  /* Registered only now: an unconnected socket polls as writable. */
  vm_sock *s = vm_sock_adopt(fd, family);
  if (!s) {
    close(fd);
    return vm_throw_errno(env, ENOMEM, "connect");
  }
  s->mode = SOCK_CONNECTING;
  s->writable = 0;
  napi_create_reference(env, argv[4], 1, &s->callback);
  s->timer = malloc(sizeof *s->timer);
  uv_timer_init(uv_default_loop(), s->timer);
  s->timer->data = s;
  uv_timer_start(s->timer, on_connect_timeout, timeout_ms, 0);
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

/* ------------------------------------------------------------ reads (header phase) */

static void on_readable(vm_sock *s) {
  uint32_t gen = s->gen;
  int fd = s->fd;
  while (vm_sock_get(fd) == s && s->gen == gen && s->mode == SOCK_READING) {
    size_t want = s->read_max;
    ssize_t n = read(fd, vm_scratch, want);
    int err = n < 0 ? errno : 0;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && err == EAGAIN) {
      s->readable = 0;
      return;
    }
    napi_ref cb = s->callback;
    napi_handle_scope scope;
    napi_open_handle_scope(vm_env, &scope);
    napi_value argv[2];
    if (n > 0) {
      napi_get_null(vm_env, &argv[0]);
      napi_create_buffer_copy(vm_env, (size_t)n, vm_scratch, NULL, &argv[1]);
    } else {
      if (n == 0) napi_get_null(vm_env, &argv[0]);
      else argv[0] = vm_errno_name(vm_env, err);
      napi_get_null(vm_env, &argv[1]);
      /* EOF or an error ends the read phase. */
      s->mode = SOCK_IDLE;
      s->callback = NULL;
    }
    napi_value next = vm_call(cb, 2, argv);
    uint32_t max;
    /* The callback may return the largest next read it wants (e.g. the rest of a header). */
    if (vm_sock_get(fd) == s && s->mode == SOCK_READING && next && napi_get_value_uint32(vm_env, next, &max) == napi_ok && max > 0) {
      s->read_max = max > VM_SCRATCH_SIZE ? VM_SCRATCH_SIZE : max;
    }
    napi_close_handle_scope(vm_env, scope);
    if (n <= 0) {
      napi_delete_reference(vm_env, cb);
      return;
    }
    if ((size_t)n < want && !s->hup) {
      /* A short read drained the socket: the next edge says when there is more. */
      if (vm_sock_get(fd) == s) s->readable = 0;
      return;
    }
  }
}

/* readStart(fd, maxBytes, callback(errName|null, Buffer|null) -> nextMaxBytes?); null,null = EOF */
static napi_value js_read_start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t max;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_uint32(env, argv[1], &max);
  vm_sock *s = vm_sock_get(fd);
  if (!s || s->mode != SOCK_IDLE) {
    napi_throw_error(env, "EBADF", "readStart: not an idle socket of the core");
    return NULL;
  }
  s->mode = SOCK_READING;
  s->read_max = max == 0 || max > VM_SCRATCH_SIZE ? VM_SCRATCH_SIZE : max;
  napi_create_reference(env, argv[2], 1, &s->callback);
  if (s->readable) vm_sock_kick(s);
  return NULL;
}

static napi_value js_read_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  napi_get_value_int32(env, argv[0], &fd);
  vm_sock *s = vm_sock_get(fd);
  if (s && s->mode == SOCK_READING) {
    s->mode = SOCK_IDLE;
    napi_delete_reference(env, s->callback);
    s->callback = NULL;
  }
  return NULL;
}

/* ------------------------------------------------------------ close */

static napi_value close_impl(napi_env env, napi_callback_info info, int reset) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  napi_get_value_int32(env, argv[0], &fd);
  vm_sock *s = vm_sock_get(fd);
  if (!s) return NULL;
  if (s->mode == SOCK_RELAY) {
    napi_throw_error(env, "EBUSY", "close: socket belongs to a relay; abort the relay");
    return NULL;
  }
  vm_sock_close(s, reset);
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) { return close_impl(env, info, 0); }
static napi_value js_reset(napi_env env, napi_callback_info info) { return close_impl(env, info, 1); }

/* ref(fd, on): whether the socket keeps the event loop alive (like net.Socket ref/unref). */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  bool on;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_bool(env, argv[1], &on);
  vm_sock *s = vm_sock_get(fd);
  if (s && s->unref == on) {
    s->unref = !on;
    count_ref(on ? 1 : -1);
  }
  return NULL;
}

/* Sockets the core holds open (for leak checks in tests). */
static napi_value js_open_count(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_uint32(env, (uint32_t)open_count, &v);
  return v;
}

/* acceptFailures() -> {EMFILE: n, ENFILE: n, ENOBUFS: n, ENOMEM: n}, counted since the start. */
static napi_value js_accept_failures(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, v;
  napi_create_object(env, &result);
  for (size_t i = 0; i < ACCEPT_ERRNOS; i++) {
    napi_create_double(env, accept_failures[i], &v);
    napi_set_property(env, result, vm_errno_name(env, accept_errnos[i]), v);
  }
  return result;
}

/* Bytes read but not yet written by relays (each at most one read, 64 KiB, per direction). */
static napi_value js_pending_bytes(napi_env env, napi_callback_info info) {
  (void)info;
  double total = 0;
  for (size_t i = 0; i < table_cap; i++) {
    if (table[i]) total += (double)table[i]->out_len;
  }
  napi_value v;
  napi_create_double(env, total, &v);
  return v;
}

void vm_sock_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
      {"readStart", NULL, js_read_start, NULL, NULL, NULL, napi_default, NULL},
      {"readStop", NULL, js_read_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"reset", NULL, js_reset, NULL, NULL, NULL, napi_default, NULL},
      {"openCount", NULL, js_open_count, NULL, NULL, NULL, napi_default, NULL},
      {"acceptFailures", NULL, js_accept_failures, NULL, NULL, NULL, napi_default, NULL},
      {"pendingBytes", NULL, js_pending_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
