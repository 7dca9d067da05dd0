/*
 * Transparent mode: where a TCP connection that iptables REDIRECTed to the
 * sidecar was originally headed, asked of netfilter's connection tracking
 * (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST). It works on any TCP fd, the core's
 * or Node's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "exports.h"

#define ORIGINAL_DST_USAGE "originalDst(fd, family)"

/* originalDst(fd, "inet" | "inet6") -> [address, port] */
static napi_value js_original_dst(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  char family[8];
  if (!core_args(env, info, 2, argv) || !core_arg_int32(env, argv[0], ORIGINAL_DST_USAGE, &fd) ||
      !core_arg_string(env, argv[1], ORIGINAL_DST_USAGE, family, sizeof family)) {
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  if (strcmp(family, "inet6") == 0) {
    struct sockaddr_in6 a;
    socklen_t len = sizeof a;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &a, &len) != 0) return core_throw_errno(env, errno, "IP6T_SO_ORIGINAL_DST");
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
  } else {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &a, &len) != 0) return core_throw_errno(env, errno, "SO_ORIGINAL_DST");
    inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    port = ntohs(a.sin_port);
  }
  napi_value result, v;
  JS_CHECK(env, napi_create_array_with_length(env, 2, &result));
  JS_CHECK(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v));
  JS_CHECK(env, napi_set_element(env, result, 0, v));
  JS_CHECK(env, napi_create_uint32(env, port, &v));
  JS_CHECK(env, napi_set_element(env, result, 1, v));
  return result;
}

bool core_original_dst_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("originalDst", js_original_dst)};
  return core_export_functions(env, exports, props, 1);
}
