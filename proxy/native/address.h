/*
 * Socket addresses between JavaScript and the kernel: a family name ("inet",
 * "inet6", "vsock") and a host (an IP string, or a vsock CID number) in, and
 * the same shapes out for peers and bound ports; and the options every stream
 * socket of a family gets.
 */
#ifndef VSOCKMESH_ADDRESS_H
#define VSOCKMESH_ADDRESS_H

#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "js.h"

typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  struct sockaddr_vm vsock;
  struct sockaddr_storage ss;
} core_addr;

/* The arguments listen() and connect() share: (family, host|cid, port, number, callback). */
typedef struct {
  int family;
  core_addr addr;
  socklen_t len;
  uint32_t number; /* backlog or timeout */
  napi_ref callback; /* the caller owns it: stores it in the socket, or deletes it on failure */
} core_target;

/* Reads (family, host|cid, port) from argv; false with a TypeError "<usage>: bad arguments" thrown. */
bool core_addr_args(napi_env env, const napi_value argv[3], const char *usage, int *family, core_addr *a, socklen_t *len);
/* Reads (family, host|cid, port, number, callback); false with a TypeError "<usage>: bad arguments" thrown. */
bool core_target_args(napi_env env, napi_callback_info info, const char *usage, core_target *t);
/* Gives up on a target after an error: closes fd (when >= 0), deletes the callback, throws err; returns NULL. */
napi_value core_target_fail(napi_env env, core_target *t, int fd, int err, const char *what);
/* The address's host for JS: the IP string, or the CID as a number. */
napi_status core_addr_host(napi_env env, const core_addr *a, napi_value *out);
uint32_t core_addr_port(const core_addr *a);

/* TCP_NODELAY on TCP (the relay writes whole reads; Nagle would only delay them); nothing on vsock. */
void core_family_tune(int fd, int family);

#endif
