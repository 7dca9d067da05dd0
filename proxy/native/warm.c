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
#include <string.h>

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

/*
 * The outbound hop's entries (README, "The outbound warm path"): keyed by the
 * listener alone (what a static or xDS cluster's plain-TCP decision reads is
 * the cluster, our placement and the policy: all behind the generation). An
 * entry holds the endpoints in the order JavaScript's round robin would pick
 * them next, each with its target and the PROXY v2 header the slow path
 * writes but for its source (a template per source family, or none: straight
 * to the app); the core goes round them.
 */
typedef struct warm_out_endpoint {
  int family;
  core_addr target;
  socklen_t target_len;
  uint8_t *inet;  /* header template for an IPv4 source (IPv4 destination), or NULL */
  size_t inet_len;
  uint8_t *inet6; /* for an IPv6 source, or an IPv4 one made ::ffff:a.b.c.d, or NULL */
  size_t inet6_len;
  bool preamble;  /* false: no header at all (straight to the app) */
} warm_out_endpoint;

typedef struct warm_out {
  uint32_t listener;
  uint32_t generation;
  uint32_t id;
  uint32_t connect_ms;
  uint32_t idle_ms;
  uint32_t next; /* the endpoint the next connection takes */
  uint32_t count;
  struct warm_out *next_entry;
  warm_out_endpoint endpoints[];
} warm_out;

static warm_out *outs;

static void out_free(warm_out *o) {
  for (uint32_t i = 0; i < o->count; i++) {
    free(o->endpoints[i].inet);
    free(o->endpoints[i].inet6);
  }
  free(o);
}

/* The listener's outbound entry if installed under the current generation (a dead one is freed), else NULL. */
static warm_out *out_lookup(uint32_t listener) {
  for (warm_out **at = &outs; *at; at = &(*at)->next_entry) {
    warm_out *o = *at;
    if (o->listener != listener) continue;
    if (o->generation == generation) return o;
    *at = o->next_entry;
    out_free(o);
    return NULL;
  }
  return NULL;
}

static void out_forget(uint32_t listener) {
  warm_out **at = &outs;
  while (*at) {
    warm_out *o = *at;
    if (o->listener == listener) {
      *at = o->next_entry;
      out_free(o);
    } else {
      at = &o->next_entry;
    }
  }
}

/*
 * The preamble of one connection from `peer`: the template of its family with
 * the source address and port filled in, exactly as ProxyHeaderTemplate.forSource
 * does (an IPv4 source with an IPv6 destination is ::ffff:a.b.c.d). Its
 * length, 0 for none, or -1 when no template fits (a miss).
 */
static ssize_t out_preamble(const warm_out_endpoint *ep, const core_addr *peer, uint8_t **out) {
  *out = NULL;
  if (!ep->preamble) return 0;
  const uint8_t *tmpl;
  size_t len;
  uint8_t addr[16];
  size_t addr_len, port_at;
  uint16_t port_be;
  if (peer->sa.sa_family == AF_INET && ep->inet) {
    tmpl = ep->inet;
    len = ep->inet_len;
    memcpy(addr, &peer->in4.sin_addr, 4);
    addr_len = 4;
    port_at = 24;
    port_be = peer->in4.sin_port;
  } else if (peer->sa.sa_family == AF_INET && ep->inet6) {
    tmpl = ep->inet6;
    len = ep->inet6_len;
    memset(addr, 0, 10);
    addr[10] = addr[11] = 0xff;
    memcpy(addr + 12, &peer->in4.sin_addr, 4);
    addr_len = 16;
    port_at = 48;
    port_be = peer->in4.sin_port;
  } else if (peer->sa.sa_family == AF_INET6 && ep->inet6) {
    tmpl = ep->inet6;
    len = ep->inet6_len;
    memcpy(addr, &peer->in6.sin6_addr, 16);
    addr_len = 16;
    port_at = 48;
    port_be = peer->in6.sin6_port;
  } else {
    return -1;
  }
  uint8_t *b = malloc(len);
  if (!b) return -1;
  memcpy(b, tmpl, len);
  memcpy(b + 16, addr, addr_len);
  memcpy(b + port_at, &port_be, 2);
  *out = b;
  return (ssize_t)len;
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
  if (core_args(env, info, 1, argv) && core_arg_uint32(env, argv[0], "warmForget(listener)", &listener)) {
    forget(listener);
    out_forget(listener);
  }
  return NULL;
}

#define OUT_INSTALL_USAGE \
  "warmInstallOutbound(listener, generation, connectTimeoutMs, idleTimeoutMs, endpoints: [family, host, port, inetHeader: Buffer|null, inet6Header: Buffer|null, ...])"

/* A header template JS hands over: copied; NULL for null. */
static bool template_arg(napi_env env, napi_value v, uint8_t family_byte, uint8_t **out, size_t *len) {
  char *data;
  *out = NULL;
  *len = 0;
  if (!core_arg_buffer(env, v, OUT_INSTALL_USAGE, true, &data, len)) return false;
  if (!data) return true;
  /* A PROXY v2 header of the family (TCP over IPv4 or IPv6): the source's bytes are written at 16 and its port after both addresses. */
  if (*len < (family_byte == 0x11 ? 16 + 12 : 16 + 36) || (uint8_t)data[12] != 0x21 || (uint8_t)data[13] != family_byte) {
    core_throw_usage(env, OUT_INSTALL_USAGE);
    return false;
  }
  *out = malloc(*len);
  if (!*out) {
    core_throw_errno(env, ENOMEM, "warmInstallOutbound");
    return false;
  }
  memcpy(*out, data, *len);
  return true;
}

/* warmInstallOutbound(...) -> the entry id, or 0 when dropped (its generation is not the current one). Replaces the listener's entry. */
static napi_value js_warm_install_outbound(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t listener, gen, connect_ms, idle_ms, length;
  bool is_array = false;
  if (!core_args(env, info, 5, argv) || !core_arg_uint32(env, argv[0], OUT_INSTALL_USAGE, &listener) || !core_arg_uint32(env, argv[1], OUT_INSTALL_USAGE, &gen) ||
      !core_arg_uint32(env, argv[2], OUT_INSTALL_USAGE, &connect_ms) || !core_arg_uint32(env, argv[3], OUT_INSTALL_USAGE, &idle_ms)) {
    return NULL;
  }
  JS_CHECK(env, napi_is_array(env, argv[4], &is_array));
  if (!is_array) return core_throw_usage(env, OUT_INSTALL_USAGE);
  JS_CHECK(env, napi_get_array_length(env, argv[4], &length));
  if (length == 0 || length % 5 != 0 || length / 5 > 4096) return core_throw_usage(env, OUT_INSTALL_USAGE);
  napi_value v;
  if (gen != generation) {
    JS_CHECK(env, napi_create_uint32(env, 0, &v));
    return v;
  }
  uint32_t count = length / 5;
  warm_out *o = calloc(1, sizeof *o + count * sizeof(warm_out_endpoint));
  if (!o) return core_throw_errno(env, ENOMEM, "warmInstallOutbound");
  o->count = count;
  for (uint32_t i = 0; i < count; i++) {
    napi_value el[5];
    for (uint32_t k = 0; k < 5; k++) {
      if (!JS_OK(env, napi_get_element(env, argv[4], i * 5 + k, &el[k]))) {
        out_free(o);
        return NULL;
      }
    }
    warm_out_endpoint *ep = &o->endpoints[i];
    if (!core_addr_args(env, el, OUT_INSTALL_USAGE, &ep->family, &ep->target, &ep->target_len) || !template_arg(env, el[3], 0x11, &ep->inet, &ep->inet_len) ||
        !template_arg(env, el[4], 0x21, &ep->inet6, &ep->inet6_len)) {
      out_free(o);
      return NULL;
    }
    ep->preamble = ep->inet || ep->inet6;
    if (ep->family == AF_VSOCK) {
      out_free(o);
      return core_throw_usage(env, OUT_INSTALL_USAGE);
    }
  }
  o->listener = listener;
  o->generation = gen;
  o->connect_ms = connect_ms;
  o->idle_ms = idle_ms;
  o->id = next_entry_id++;
  if (next_entry_id == 0) next_entry_id = 1;
  out_forget(listener);
  o->next_entry = outs;
  outs = o;
  JS_CHECK(env, napi_create_uint32(env, o->id, &v));
  return v;
}

/* warmLookupOutbound(listener) -> [entryId, next endpoint's index, endpoints] of the listener's live entry, or undefined. */
static napi_value js_warm_lookup_outbound(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t listener;
  if (!core_args(env, info, 1, argv) || !core_arg_uint32(env, argv[0], "warmLookupOutbound(listener)", &listener)) return NULL;
  const warm_out *o = out_lookup(listener);
  if (!o) return NULL;
  napi_value result, v;
  const uint32_t values[3] = {o->id, o->next, o->count};
  JS_CHECK(env, napi_create_array_with_length(env, 3, &result));
  for (uint32_t i = 0; i < 3; i++) {
    JS_CHECK(env, napi_create_uint32(env, values[i], &v));
    JS_CHECK(env, napi_set_element(env, result, i, v));
  }
  return result;
}


/*
 * The hit path. A listening socket JavaScript gave a warm listener
 * (warmListen) keeps accepting in the core: each connection's PROXY v2 header
 * is read (max_header_bytes, header_timeout) and parsed (proxy-header.c); on a
 * hit the connection counts against the listener's limit (the counters JS
 * shares), the entry's target is dialled, the app's PROXY header (if the
 * entry says so) and any early bytes go first, and the relay runs. A miss, an
 * invalid or incomplete header, a LOCAL one, EOF, an error or the deadline
 * hand the connection to JavaScript as a new connection with the bytes read
 * and the time spent (announce: JS decodes them again, exactly as today).
 * Each finished warm connection becomes one record in a reused batch
 * (warm_records) that JavaScript reads once per loop turn.
 */
#include <arpa/inet.h>
#include <string.h>
#include <unistd.h>

#include "proxy-header.h"

/* The counters JS shares with the core, per listener (an Int32Array). */
enum { C_JS_OPEN, C_WARM_OPEN, C_MAX, C_ENABLED, C_COUNT };
/* The counters the server's admission shares (an Int32Array, one per server): overload.max_connections and shedding. */
enum { A_JS_OPEN, A_WARM_OPEN, A_MAX, A_SHED_AT, A_COUNT };

typedef struct warm_listen {
  uint32_t id;
  uint32_t max_header;
  uint32_t header_ms;
  int32_t *counters;
  napi_ref counters_ref;
  int32_t *admission;
  napi_ref admission_ref;
  napi_ref on_connection; /* the listener's onConnection(fd, host, port, preread, elapsedMs[, entryId, endpoint, connectError]) */
  bool outbound;          /* an outbound listener's: no header to read; the entry is the listener's */
  int refs;               /* listening sockets + open warm connections */
  struct warm_conn *open; /* its warm connections, header phase to record */
  struct warm_listen *next_listen; /* all warm listeners (one per JS listener: its listening sockets share it) */
} warm_listen;

static warm_listen *all_listens;

static warm_listen *listeners_find(uint32_t id) {
  for (warm_listen *wl = all_listens; wl; wl = wl->next_listen) {
    if (wl->id == id) return wl;
  }
  return NULL;
}

/*
 * A warm connection's header buffer starts this large and grows to max_header only for a longer header: a
 * sidecar's PROXY v2 header is ~30-200 bytes, and the buffer lives as long as the connection (the record and
 * warmList read the header), so max_header bytes (4 KiB by default) each were most of the core's memory per
 * idle connection.
 */
#define WARM_FIRST_READ 256

typedef struct warm_conn {
  warm_listen *wl;
  struct warm_conn *prev, *next; /* wl->open */
  bool relaying;
  core_sock *down;
  uint32_t down_gen;
  core_sock *up;
  uint32_t up_gen;
  core_addr peer;
  uint64_t accepted_at;
  uint32_t entry_id;
  uint32_t idle_ms;
  uint8_t label;
  uint32_t endpoint;  /* outbound: the entry's endpoint dialled */
  size_t len;         /* header bytes read */
  size_t header_len;  /* the header's length, once parsed */
  size_t cap;         /* buf's size: WARM_FIRST_READ, then max_header */
  uint8_t *buf;
} warm_conn;

static void warm_listen_release(warm_listen *wl) {
  if (--wl->refs > 0) return;
  warm_listen **at = &all_listens;
  while (*at != wl) at = &(*at)->next_listen;
  *at = wl->next_listen;
  core_delete_ref(&wl->counters_ref);
  core_delete_ref(&wl->admission_ref);
  core_delete_ref(&wl->on_connection);
  free(wl);
}

/* Record fields (Float64Array, RECORD_FIELDS a record); the header bytes go to the byte area. */
/* The byte area holds, per record, the header then the peer host as text (inet_ntop). */
enum { R_LISTENER, R_ENTRY, R_LABEL, R_UP, R_DOWN, R_DURATION, R_OUTCOME, R_ERRNO, R_PEER_PORT, R_BYTES_OFF, R_HEADER_LEN, R_HOST_LEN, RECORD_FIELDS };
#define RECORDS_MAX 256
#define RECORD_BYTES (RECORDS_MAX * 512)
/* Outcomes past the relay's: the upstream could not be reached; a stop (or a drain's deadline) closed it while its upstream was connecting. */
#define OUTCOME_CONNECT_FAILED 100
#define OUTCOME_CONNECT_ABORTED 101

static double *records;
static uint8_t *record_bytes;
static size_t record_count, record_bytes_used;
static napi_ref on_records;
static uv_check_t flush_check;
static bool flush_armed;

static void flush_records(void) {
  if (record_count == 0 || !on_records) return;
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[1];
  NAPI_MUST(napi_create_uint32(core_env, (uint32_t)record_count, &argv[0]));
  record_count = 0;
  record_bytes_used = 0;
  core_call(on_records, 1, argv);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
}

static void on_flush_check(uv_check_t *h) {
  (void)h;
  uv_check_stop(&flush_check);
  flush_armed = false;
  flush_records();
}

static void record(warm_conn *c, int outcome, uint64_t up, uint64_t down, int err) {
  if (!records) return;
  size_t hl = c->header_len;
  char host[INET6_ADDRSTRLEN] = "";
  inet_ntop(c->peer.sa.sa_family, c->peer.sa.sa_family == AF_INET6 ? (const void *)&c->peer.in6.sin6_addr : (const void *)&c->peer.in4.sin_addr, host, sizeof host);
  size_t host_len = strlen(host);
  if (record_count == RECORDS_MAX || record_bytes_used + hl + host_len > RECORD_BYTES) flush_records();
  double *r = records + record_count * RECORD_FIELDS;
  r[R_LISTENER] = c->wl->id;
  r[R_ENTRY] = c->entry_id;
  r[R_LABEL] = c->wl->outbound ? c->endpoint : c->label;
  /* The early bytes (after an inbound header) count as relayed only once the upstream is connected, as ProxiedConnection's. */
  r[R_UP] = (double)(up + (outcome == OUTCOME_CONNECT_FAILED || outcome == OUTCOME_CONNECT_ABORTED ? 0 : c->len - c->header_len));
  r[R_DOWN] = (double)down;
  r[R_DURATION] = (double)(uv_now(uv_default_loop()) - c->accepted_at);
  r[R_OUTCOME] = outcome;
  r[R_ERRNO] = err;
  r[R_PEER_PORT] = core_addr_port(&c->peer);
  r[R_BYTES_OFF] = (double)record_bytes_used;
  r[R_HEADER_LEN] = (double)hl;
  r[R_HOST_LEN] = (double)host_len;
  if (hl) memcpy(record_bytes + record_bytes_used, c->buf, hl);
  memcpy(record_bytes + record_bytes_used + hl, host, host_len);
  record_bytes_used += hl + host_len;
  record_count++;
  if (!flush_armed) {
    flush_armed = true;
    uv_check_start(&flush_check, on_flush_check);
  }
}

static void conn_end(warm_conn *c) {
  if (c->prev) c->prev->next = c->next;
  else c->wl->open = c->next;
  if (c->next) c->next->prev = c->prev;
  c->wl->counters[C_WARM_OPEN]--;
  c->wl->admission[A_WARM_OPEN]--;
  warm_listen_release(c->wl);
  free(c->buf);
  free(c);
}

/*
 * Hands the connection to JavaScript as a new one, with what was read and the
 * time spent; `err` (0: none) is a connect to the entry's endpoint that
 * failed, handed over with the entry, the endpoint and the error's name so
 * the slow path ends it as if it had made that attempt (no second dial, no
 * second wait for a timeout).
 */
static void hand_over(warm_conn *c, int err) {
  core_sock *s = c->down;
  core_sock_timer_stop(s);
  core_sock_set_job(s, SOCK_IDLE, NULL);
  s->warm = NULL;
  warm_listen *wl = c->wl;
  wl->refs++;
  uint32_t elapsed = (uint32_t)(uv_now(uv_default_loop()) - c->accepted_at);
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[8];
  size_t argc = err ? 8 : 5;
  void *data;
  bool ok = LOOP_OK(napi_create_int32(core_env, s->fd, &argv[0])) && LOOP_OK(core_addr_host(core_env, &c->peer, &argv[1])) &&
            LOOP_OK(napi_create_uint32(core_env, core_addr_port(&c->peer), &argv[2])) && LOOP_OK(napi_create_buffer_copy(core_env, c->len, c->buf, &data, &argv[3])) &&
            LOOP_OK(napi_create_uint32(core_env, elapsed, &argv[4]));
  if (ok && err) {
    ok = LOOP_OK(napi_create_uint32(core_env, c->entry_id, &argv[5])) && LOOP_OK(napi_create_uint32(core_env, c->endpoint, &argv[6])) &&
         LOOP_OK(core_errno_name(core_env, err, &argv[7]));
  }
  conn_end(c);
  if (ok && wl->on_connection) core_call(wl->on_connection, argc, argv);
  else core_sock_close(s, true);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
  warm_listen_release(wl);
}

static void on_relay_done(void *ctx, int outcome, uint64_t up, uint64_t down, int err) {
  warm_conn *c = ctx;
  record(c, outcome, up, down, err);
  conn_end(c);
}

static void connect_failed(warm_conn *c, int err) {
  core_sock_close(c->up, false);
  if (c->wl->outbound) {
    /* The slow path ends it with its failure line, counters and reset, as if it had dialled itself: the client is not lost. */
    hand_over(c, err);
    return;
  }
  core_sock_close(c->down, true); /* as ProxiedConnection: the downstream learns by a reset */
  record(c, OUTCOME_CONNECT_FAILED, 0, 0, err);
  conn_end(c);
}

static void on_up_timeout(uv_timer_t *t) { connect_failed(((core_sock *)t->data)->warm, ETIMEDOUT); }

static void on_up_ready(core_sock *up) {
  if (!up->writable && !up->error) return;
  warm_conn *c = up->warm;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  up->error = 0;
  if (err) {
    connect_failed(c, err);
    return;
  }
  core_sock_timer_stop(up);
  up->warm = NULL;
  c->down->warm = NULL;
  core_sock_set_job(up, SOCK_IDLE, NULL);
  core_sock *s[2] = {c->down, up};
  c->relaying = true;
  if (core_relay_start(s, c->idle_ms, on_relay_done, c) != 0) {
    c->relaying = false;
    up->warm = c;
    connect_failed(c, ENOMEM);
  }
}

/* Dials the target; false (nothing dialled, c->up NULL) with errno's value in *err. */
static bool dial(warm_conn *c, int family, const core_addr *target, socklen_t target_len, int *err) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  *err = fd < 0 ? errno : 0;
  if (!*err) {
    core_family_tune(fd, family);
    if (connect(fd, &target->sa, target_len) != 0 && errno != EINPROGRESS) *err = errno;
  }
  core_sock *up = *err ? NULL : core_sock_adopt(fd, family);
  if (!*err && !up) *err = ENOMEM;
  if (*err) {
    if (fd >= 0) close(fd);
    return false;
  }
  c->up = up;
  up->warm = c;
  up->writable = 0;
  core_sock_set_job(c->down, SOCK_IDLE, NULL);
  core_sock_set_job(up, SOCK_CONNECTING, on_up_ready);
  return true;
}

/* A hit: dial the entry's target; the app's PROXY header and the early bytes wait in the upstream's out buffer. */
static void hit(warm_conn *c, const warm_entry *e, const struct ph_result *r) {
  core_sock *s = c->down;
  c->entry_id = e->id;
  c->idle_ms = e->idle_ms;
  c->label = e->label;
  int err;
  if (!dial(c, e->family, &e->target, e->target_len, &err)) {
    core_sock_close(s, true);
    record(c, OUTCOME_CONNECT_FAILED, 0, 0, err);
    conn_end(c);
    return;
  }
  core_sock *up = c->up;
  /* The app's header: the parsed one's command, family and addresses, no TLVs (encodeProxyHeader's bytes). */
  size_t addr_len = r->family == PH_INET ? 12 : 36;
  size_t early = c->len - c->header_len;
  size_t out_len = (e->proxy_protocol ? 16 + addr_len : 0) + early;
  if (out_len > 0) {
    uint8_t *out = malloc(out_len);
    size_t at = 0;
    if (out && e->proxy_protocol) {
      memcpy(out, c->buf, 13);
      out[13] = c->buf[13];
      out[14] = 0;
      out[15] = (uint8_t)addr_len;
      memcpy(out + 16, c->buf + 16, addr_len);
      at = 16 + addr_len;
    }
    if (out) memcpy(out + at, c->buf + c->header_len, early);
    int held = out ? core_sock_hold_out(up, (const char *)out, out_len) : -1;
    free(out);
    if (held != 0) {
      connect_failed(c, ENOMEM);
      return;
    }
  }
  if (core_sock_timer_start(up, on_up_timeout, e->connect_ms) != 0) connect_failed(c, ENOMEM);
}

static void on_header_timeout(uv_timer_t *t) { hand_over(((core_sock *)t->data)->warm, 0); }

static void on_header(core_sock *s) {
  warm_conn *c = s->warm;
  while (s->readable || s->hup || s->error) {
    if (c->len == c->cap && c->cap < c->wl->max_header) {
      uint8_t *grown = realloc(c->buf, c->wl->max_header);
      if (!grown) {
        hand_over(c, 0); /* JS reads the rest of the header itself */
        return;
      }
      c->buf = grown;
      c->cap = c->wl->max_header;
    }
    size_t room = c->cap - c->len;
    ssize_t n = room == 0 ? 0 : read(s->fd, c->buf + c->len, room);
    if (n < 0 && errno == EAGAIN) {
      s->readable = 0;
      return;
    }
    if (n <= 0) {
      hand_over(c, 0); /* EOF, an error, or max_header bytes that are no header: JS reads and judges as today */
      return;
    }
    c->len += (size_t)n;
    struct ph_result r;
    enum ph_kind kind = ph_parse(c->buf, c->len, c->wl->max_header, true, &r);
    if (kind == PH_INCOMPLETE) continue;
    if (kind == PH_INVALID || !r.proxy || (r.family != PH_INET && r.family != PH_INET6)) {
      hand_over(c, 0);
      return;
    }
    size_t port_at = 16 + (r.family == PH_INET ? 10 : 34);
    uint16_t port = (uint16_t)((c->buf[port_at] << 8) | c->buf[port_at + 1]);
    const warm_entry *e = warm_lookup(c->wl->id, port);
    if (!e) {
      hand_over(c, 0);
      return;
    }
    c->header_len = r.length;
    core_sock_timer_stop(s);
    hit(c, e, &r);
    return;
  }
}

/*
 * An outbound listener's accepted connection: with a live entry, the next
 * endpoint is dialled with its preamble waiting in the upstream's out buffer;
 * without one (or with a source no template fits) JavaScript takes it as any.
 */
static bool out_accept(warm_listen *wl, core_sock *s, const core_addr *peer) {
  warm_out *o = out_lookup(wl->id);
  if (!o) return false;
  uint32_t at = o->next;
  const warm_out_endpoint *ep = &o->endpoints[at];
  uint8_t *pre;
  ssize_t pre_len = out_preamble(ep, peer, &pre);
  if (pre_len < 0) return false;
  warm_conn *c = calloc(1, sizeof *c);
  if (!c) {
    free(pre);
    return false;
  }
  o->next = (at + 1) % o->count;
  c->wl = wl;
  wl->refs++;
  wl->counters[C_WARM_OPEN]++;
  wl->admission[A_WARM_OPEN]++;
  c->next = wl->open;
  if (wl->open) wl->open->prev = c;
  wl->open = c;
  c->down = s;
  c->peer = *peer;
  c->accepted_at = uv_now(uv_default_loop());
  c->entry_id = o->id;
  c->idle_ms = o->idle_ms;
  c->endpoint = at;
  s->warm = c;
  int err;
  if (!dial(c, ep->family, &ep->target, ep->target_len, &err)) {
    free(pre);
    hand_over(c, err);
    return true;
  }
  int held = pre_len > 0 ? core_sock_hold_out(c->up, (const char *)pre, (size_t)pre_len) : 0;
  free(pre);
  if (held != 0 || core_sock_timer_start(c->up, on_up_timeout, o->connect_ms) != 0) connect_failed(c, ENOMEM);
  return true;
}

/* From listen.c's accept loop: true when the warm path took the connection. */
bool core_warm_accept(core_sock *ls, core_sock *s, const core_addr *peer) {
  warm_listen *wl = ls->warm;
  if (!wl) return false;
  int32_t *k = wl->counters, *a = wl->admission;
  /* The limits and shedding in JavaScript's order (Admission.refusal): what one may refuse goes to JavaScript, which decides. */
  if (!k[C_ENABLED] || (k[C_MAX] >= 0 && k[C_JS_OPEN] + k[C_WARM_OPEN] >= k[C_MAX])) return false;
  if (a[A_MAX] >= 0 && a[A_JS_OPEN] + a[A_WARM_OPEN] >= a[A_MAX]) return false;
  if (core_open_count() >= (size_t)(a[A_SHED_AT] < 0 ? 0 : a[A_SHED_AT])) return false;
  if (wl->outbound) return out_accept(wl, s, peer);
  warm_conn *c = calloc(1, sizeof *c);
  size_t cap = wl->max_header < WARM_FIRST_READ ? wl->max_header : WARM_FIRST_READ;
  uint8_t *buf = c ? malloc(cap) : NULL;
  if (!buf) {
    free(c);
    return false;
  }
  c->buf = buf;
  c->cap = cap;
  c->wl = wl;
  wl->refs++;
  k[C_WARM_OPEN]++;
  a[A_WARM_OPEN]++;
  c->next = wl->open;
  if (wl->open) wl->open->prev = c;
  wl->open = c;
  c->down = s;
  c->peer = *peer;
  c->accepted_at = uv_now(uv_default_loop());
  s->warm = c;
  core_sock_set_job(s, SOCK_READING, on_header);
  if (core_sock_timer_start(s, on_header_timeout, wl->header_ms) != 0) {
    s->warm = NULL;
    core_sock_set_job(s, SOCK_IDLE, NULL);
    conn_end(c);
    return false;
  }
  return true;
}

#define LISTEN_USAGE "warmListen(listenerFd, listener, maxHeaderBytes, headerTimeoutMs, counters: Int32Array(4), admission: Int32Array(4), onConnection)"

static bool int32_array(napi_env env, napi_value v, size_t min_length, void **data) {
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length;
  if (!JS_OK(env, napi_is_typedarray(env, v, &is_typed))) return false;
  if (!is_typed) return false;
  if (!JS_OK(env, napi_get_typedarray_info(env, v, &type, &length, data, NULL, NULL))) return false;
  return type == napi_int32_array && length >= min_length;
}

/* The listening socket fd's connections go through the warm listener `id` from now on (made on first use); argv: counters, admission, onConnection. */
static napi_value listen_warm(napi_env env, const char *usage, int32_t fd, uint32_t id, uint32_t max_header, uint32_t header_ms, bool outbound, napi_value argv[3]) {
  void *data, *admission;
  bool arrays = int32_array(env, argv[0], C_COUNT, &data) && int32_array(env, argv[1], A_COUNT, &admission);
  core_sock *ls = core_sock_get(fd);
  if (!arrays || !ls || ls->mode != SOCK_LISTEN || ls->warm) return core_throw_usage(env, usage);
  warm_listen *wl = listeners_find(id);
  if (wl) {
    if (wl->outbound != outbound) return core_throw_usage(env, usage);
    wl->refs++;
    ls->warm = wl;
    return NULL;
  }
  wl = calloc(1, sizeof *wl);
  if (!wl) return core_throw_errno(env, ENOMEM, "warmListen");
  if (!core_arg_callback(env, argv[2], usage, &wl->on_connection) || !JS_OK(env, napi_create_reference(env, argv[0], 1, &wl->counters_ref)) ||
      !JS_OK(env, napi_create_reference(env, argv[1], 1, &wl->admission_ref))) {
    core_delete_ref(&wl->on_connection);
    core_delete_ref(&wl->counters_ref);
    free(wl);
    return NULL;
  }
  wl->id = id;
  wl->outbound = outbound;
  wl->max_header = max_header;
  wl->header_ms = header_ms;
  wl->counters = data;
  wl->admission = admission;
  wl->refs = 1;
  wl->next_listen = all_listens;
  all_listens = wl;
  ls->warm = wl;
  return NULL;
}

/* warmListen(...): the listening socket's connections go through the warm path from now on (an inbound listener's: the header first). */
static napi_value js_warm_listen(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t fd;
  uint32_t id, max_header, header_ms;
  if (!core_args(env, info, 7, argv) || !core_arg_int32(env, argv[0], LISTEN_USAGE, &fd) || !core_arg_uint32(env, argv[1], LISTEN_USAGE, &id) ||
      !core_arg_uint32(env, argv[2], LISTEN_USAGE, &max_header) || !core_arg_uint32(env, argv[3], LISTEN_USAGE, &header_ms)) {
    return NULL;
  }
  if (max_header < PH_FIXED_LENGTH) return core_throw_usage(env, LISTEN_USAGE);
  return listen_warm(env, LISTEN_USAGE, fd, id, max_header, header_ms, false, &argv[4]);
}

#define LISTEN_OUT_USAGE "warmListenOutbound(listenerFd, listener, counters: Int32Array(4), admission: Int32Array(4), onConnection)"

/* warmListenOutbound(...): an outbound listener's accepts go through the warm path (its entry, warmInstallOutbound) from now on. */
static napi_value js_warm_listen_outbound(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd;
  uint32_t id;
  if (!core_args(env, info, 5, argv) || !core_arg_int32(env, argv[0], LISTEN_OUT_USAGE, &fd) || !core_arg_uint32(env, argv[1], LISTEN_OUT_USAGE, &id)) return NULL;
  return listen_warm(env, LISTEN_OUT_USAGE, fd, id, 0, 0, true, &argv[2]);
}

/*
 * warmClose(listener): closes its warm connections that are not relaying yet
 * (a stop, a drain's deadline). One still reading its header goes without a
 * record (as JavaScript's header read does); one still connecting (outbound,
 * or inbound to its app) is recorded as ProxiedConnection.abort logs it
 * ("aborted": no bytes, not a connection of the transport's counts).
 * Relaying ones are warmList's, closed by relayAbort. The records pending
 * (these and any before) are given before it returns: a stop forgets the
 * listener's sink right after.
 */
static napi_value js_warm_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t id;
  if (!core_args(env, info, 1, argv) || !core_arg_uint32(env, argv[0], "warmClose(listener)", &id)) return NULL;
  warm_listen *wl = listeners_find(id);
  if (!wl) return NULL;
  wl->refs++; /* conn_end may release the last connection's reference */
  warm_conn *c = wl->open;
  while (c) {
    warm_conn *next = c->next;
    if (!c->relaying) {
      bool connecting = c->up != NULL;
      if (c->up) core_sock_close(c->up, false);
      core_sock_close(c->down, false);
      if (connecting) record(c, OUTCOME_CONNECT_ABORTED, 0, 0, 0);
      conn_end(c);
    }
    c = next;
  }
  warm_listen_release(wl);
  flush_records();
  return NULL;
}

/* Called by the loop when a listening socket closes. */
void core_warm_listener_closed(core_sock *ls) {
  if (!ls->warm) return;
  warm_listen *wl = ls->warm;
  ls->warm = NULL;
  warm_listen_release(wl);
}

/*
 * warmList(listener) -> [relayId, destPort, label, header, peerHost, peerPort, ...] of its
 * relaying warm connections (six values each); relayAbort(relayId) closes one,
 * its record says "aborted". For re-deciding them when policies change.
 */
static napi_value js_warm_list(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t id;
  if (!core_args(env, info, 1, argv) || !core_arg_uint32(env, argv[0], "warmList(listener)", &id)) return NULL;
  napi_value result, v;
  JS_CHECK(env, napi_create_array(env, &result));
  warm_listen *wl = listeners_find(id);
  uint32_t i = 0;
  for (warm_conn *c = wl ? wl->open : NULL; c; c = c->next) {
    if (!c->relaying) continue;
    void *data;
    JS_CHECK(env, napi_create_int32(env, c->down->fd, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    /* An outbound connection read no header: port 0, its endpoint's index for the label. */
    size_t port_at = wl->outbound ? 0 : 16 + (c->buf[13] >> 4 == 1 ? 10 : 34);
    JS_CHECK(env, napi_create_uint32(env, wl->outbound ? 0 : (uint32_t)((c->buf[port_at] << 8) | c->buf[port_at + 1]), &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    JS_CHECK(env, napi_create_uint32(env, wl->outbound ? c->endpoint : c->label, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    JS_CHECK(env, napi_create_buffer_copy(env, c->header_len, c->buf, &data, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    JS_CHECK(env, core_addr_host(env, &c->peer, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    JS_CHECK(env, napi_create_uint32(env, core_addr_port(&c->peer), &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
  }
  return result;
}

/*
 * warmMoved(listener) -> [relaying, moved]: how many of its warm connections
 * are relaying, and the bytes they moved so far, both ways. What the settle's
 * look (Listener.warmActivity, every 2 s) needs, without warmList's copy of
 * every connection's header and host.
 */
static napi_value js_warm_moved(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t id;
  if (!core_args(env, info, 1, argv) || !core_arg_uint32(env, argv[0], "warmMoved(listener)", &id)) return NULL;
  warm_listen *wl = listeners_find(id);
  uint32_t relaying = 0;
  uint64_t moved = 0;
  for (warm_conn *c = wl ? wl->open : NULL; c; c = c->next) {
    if (!c->relaying) continue;
    relaying++;
    moved += core_relay_moved(c->down->relay);
  }
  napi_value result, v;
  JS_CHECK(env, napi_create_array_with_length(env, 2, &result));
  JS_CHECK(env, napi_create_uint32(env, relaying, &v));
  JS_CHECK(env, napi_set_element(env, result, 0, v));
  JS_CHECK(env, napi_create_double(env, (double)moved, &v));
  JS_CHECK(env, napi_set_element(env, result, 1, v));
  return result;
}

#define RECORDS_USAGE "warmRecords(fields: Float64Array, bytes: Uint8Array, onRecords(count))"

/* warmRecords(fields, bytes, onRecords): where finished warm connections are reported, once per loop turn. */
static napi_value js_warm_records(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!core_args(env, info, 3, argv)) return NULL;
  napi_typedarray_type t1, t2;
  size_t l1, l2;
  void *d1, *d2;
  bool a = false, b = false;
  JS_CHECK(env, napi_is_typedarray(env, argv[0], &a));
  JS_CHECK(env, napi_is_typedarray(env, argv[1], &b));
  if (!a || !b) return core_throw_usage(env, RECORDS_USAGE);
  JS_CHECK(env, napi_get_typedarray_info(env, argv[0], &t1, &l1, &d1, NULL, NULL));
  JS_CHECK(env, napi_get_typedarray_info(env, argv[1], &t2, &l2, &d2, NULL, NULL));
  if (t1 != napi_float64_array || l1 < RECORDS_MAX * RECORD_FIELDS || t2 != napi_uint8_array || l2 < RECORD_BYTES || on_records) return core_throw_usage(env, RECORDS_USAGE);
  static napi_ref keep[2];
  if (!core_arg_callback(env, argv[2], RECORDS_USAGE, &on_records) || !JS_OK(env, napi_create_reference(env, argv[0], 1, &keep[0])) ||
      !JS_OK(env, napi_create_reference(env, argv[1], 1, &keep[1]))) {
    return NULL;
  }
  records = d1;
  record_bytes = d2;
  uv_check_init(uv_default_loop(), &flush_check);
  uv_unref((uv_handle_t *)&flush_check);
  return NULL;
}

bool core_warm_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("warmGeneration", js_warm_generation),
      CORE_FUNCTION("warmBump", js_warm_bump),
      CORE_FUNCTION("warmInstall", js_warm_install),
      CORE_FUNCTION("warmLookup", js_warm_lookup),
      CORE_FUNCTION("warmForget", js_warm_forget),
      CORE_FUNCTION("warmListen", js_warm_listen),
      CORE_FUNCTION("warmRecords", js_warm_records),
      CORE_FUNCTION("warmList", js_warm_list),
      CORE_FUNCTION("warmMoved", js_warm_moved),
      CORE_FUNCTION("warmClose", js_warm_close),
      CORE_FUNCTION("warmInstallOutbound", js_warm_install_outbound),
      CORE_FUNCTION("warmLookupOutbound", js_warm_lookup_outbound),
      CORE_FUNCTION("warmListenOutbound", js_warm_listen_outbound),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]) && core_export_uint32(env, exports, "WARM_RECORD_FIELDS", RECORD_FIELDS) &&
         core_export_uint32(env, exports, "WARM_RECORDS_MAX", RECORDS_MAX) && core_export_uint32(env, exports, "WARM_RECORD_BYTES", RECORD_BYTES);
}
