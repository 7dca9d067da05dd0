/*
 * AF_VSOCK specifics: the local CID (read on every call: a migrated VM may
 * get a new one), the kernel's connect timeout, and the well-known CIDs.
 */
#include "vsock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "exports.h"

void core_vsock_set_connect_timeout(int fd, uint32_t timeout_ms) {
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);
}

/* localCid() -> number; reads IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock every call. */
static napi_value js_local_cid(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return core_throw_errno(env, errno, "open /dev/vsock");
  unsigned int cid = 0;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  close(fd);
  if (r != 0) return core_throw_errno(env, err, "IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  napi_value v;
  JS_CHECK(env, napi_create_uint32(env, cid, &v));
  return v;
}

bool core_vsock_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("localCid", js_local_cid)};
  return core_export_functions(env, exports, props, 1) && core_export_uint32(env, exports, "VMADDR_CID_ANY", VMADDR_CID_ANY) &&
         core_export_uint32(env, exports, "VMADDR_CID_LOCAL", VMADDR_CID_LOCAL) && core_export_uint32(env, exports, "VMADDR_CID_HOST", VMADDR_CID_HOST);
}
