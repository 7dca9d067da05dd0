/* AF_VSOCK specifics (Linux <linux/vm_sockets.h>). */
#ifndef VSOCKMESH_VSOCK_H
#define VSOCKMESH_VSOCK_H

#include <stdint.h>
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <node_api.h>

void vm_vsock_set_connect_timeout(int fd, uint32_t timeout_ms);
void vm_vsock_register(napi_env env, napi_value exports);

#endif
