/*
 * Socket addresses between JavaScript and the kernel (see address.h). A bad
 * family, host or port is the caller's error, thrown before any socket exists.
 */
#include "address.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

static bool family_of(const char *name, int *family) {
  if (strcmp(name, "inet") == 0) *family = AF_INET;
  else if (strcmp(name, "inet6") == 0) *family = AF_INET6;
  else if (strcmp(name, "vsock") == 0) *family = AF_VSOCK;
  else return false;
  return true;
}

/* host: an IP string for inet/inet6, a CID number for vsock. */
static bool make_addr(napi_env env, const char *usage, int family, napi_value host, uint32_t port, core_addr *a, socklen_t *len) {
  memset(a, 0, sizeof *a);
  if (family == AF_VSOCK) {
    uint32_t cid;
    if (!core_arg_uint32(env, host, usage, &cid)) return false;
    a->vsock.svm_family = AF_VSOCK;
    a->vsock.svm_cid = cid;
    a->vsock.svm_port = port == 0 ? VMADDR_PORT_ANY : port; /* 0: any free port, as with TCP */
    *len = sizeof a->vsock;
    return true;
  }
  char text[INET6_ADDRSTRLEN];
  if (port > 65535 || !core_arg_string(env, host, usage, text, sizeof text)) {
    core_throw_usage(env, usage);
    return false;
  }
  int parsed;
  if (family == AF_INET) {
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons((uint16_t)port);
    parsed = inet_pton(AF_INET, text, &a->in4.sin_addr);
    *len = sizeof a->in4;
  } else {
    a->in6.sin6_family = AF_INET6;
    a->in6.sin6_port = htons((uint16_t)port);
    parsed = inet_pton(AF_INET6, text, &a->in6.sin6_addr);
    *len = sizeof a->in6;
  }
  if (parsed != 1) core_throw_usage(env, usage);
  return parsed == 1;
}

bool core_addr_args(napi_env env, const napi_value argv[3], const char *usage, int *family, core_addr *a, socklen_t *len) {
  char name[8];
  uint32_t port;
  if (!core_arg_string(env, argv[0], usage, name, sizeof name) || !core_arg_uint32(env, argv[2], usage, &port)) return false;
  if (!family_of(name, family)) {
    core_throw_usage(env, usage);
    return false;
  }
  return make_addr(env, usage, *family, argv[1], port, a, len);
}

bool core_target_args(napi_env env, napi_callback_info info, const char *usage, core_target *t) {
  napi_value argv[5];
  if (!core_args(env, info, 5, argv) || !core_arg_uint32(env, argv[3], usage, &t->number)) return false;
  return core_addr_args(env, argv, usage, &t->family, &t->addr, &t->len) && core_arg_callback(env, argv[4], usage, &t->callback);
}

napi_value core_target_fail(napi_env env, core_target *t, int fd, int err, const char *what) {
  if (fd >= 0) close(fd);
  core_delete_ref(&t->callback);
  return core_throw_errno(env, err, what);
}

napi_status core_addr_host(napi_env env, const core_addr *a, napi_value *out) {
  char text[INET6_ADDRSTRLEN];
  switch (a->sa.sa_family) {
    case AF_VSOCK: return napi_create_uint32(env, a->vsock.svm_cid, out);
    case AF_INET: inet_ntop(AF_INET, &a->in4.sin_addr, text, sizeof text); return napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, out);
    case AF_INET6: inet_ntop(AF_INET6, &a->in6.sin6_addr, text, sizeof text); return napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, out);
    default: return napi_get_undefined(env, out);
  }
}

uint32_t core_addr_port(const core_addr *a) {
  switch (a->sa.sa_family) {
    case AF_VSOCK: return a->vsock.svm_port;
    case AF_INET: return ntohs(a->in4.sin_port);
    case AF_INET6: return ntohs(a->in6.sin6_port);
    default: return 0;
  }
}

void core_family_tune(int fd, int family) {
  if (family == AF_INET || family == AF_INET6) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}
