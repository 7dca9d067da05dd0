/*
 * AF_VSOCK helpers and the transparent-mode lookup: the local CID, the vsock
 * connect timeout, and SO_ORIGINAL_DST for TCP sockets redirected by iptables.
 */
#include "vsock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

#include "core.h"

void vm_vsock_set_connect_timeout(int fd, uint32_t timeout_ms) {
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);
}

/* localCid() -> number; reads IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock every call (a migrated VM may get a new CID). */
static napi_value js_local_cid(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vm_throw_errno(env, errno, "open /dev/vsock");
  unsigned int cid = 0;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  close(fd);
  if (r != 0) return vm_throw_errno(env, err, "IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  napi_value v;
  napi_create_uint32(env, cid, &v);
  return v;
}

/* originalDst(fd, family) -> [address, port]: where an iptables REDIRECT'ed connection was headed. */
static napi_value js_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  char fam[8] = {0};
  size_t n;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], fam, sizeof fam, &n) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "originalDst(fd, family): bad arguments");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  if (strcmp(fam, "inet6") == 0) {
    struct sockaddr_in6 a;
    socklen_t len = sizeof a;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &a, &len) != 0) return vm_throw_errno(env, errno, "IP6T_SO_ORIGINAL_DST");
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
  } else {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &a, &len) != 0) return vm_throw_errno(env, errno, "SO_ORIGINAL_DST");
    inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    port = ntohs(a.sin_port);
  }
  napi_value result, v;
  napi_create_array_with_length(env, 2, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_element(env, result, 0, v);
  napi_create_uint32(env, port, &v);
  napi_set_element(env, result, 1, v);
  return result;
}

void vm_vsock_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"localCid", NULL, js_local_cid, NULL, NULL, NULL, napi_default, NULL},
      {"originalDst", NULL, js_original_dst, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value v;
  napi_create_uint32(env, VMADDR_CID_ANY, &v);
  napi_set_named_property(env, exports, "VMADDR_CID_ANY", v);
  napi_create_uint32(env, VMADDR_CID_LOCAL, &v);
  napi_set_named_property(env, exports, "VMADDR_CID_LOCAL", v);
  napi_create_uint32(env, VMADDR_CID_HOST, &v);
  napi_set_named_property(env, exports, "VMADDR_CID_HOST", v);
}
