/* AF_VSOCK specifics the jobs need (Linux <linux/vm_sockets.h>). */
#ifndef VSOCKMESH_VSOCK_H
#define VSOCKMESH_VSOCK_H

#include <stdint.h>

/* The kernel's own vsock connect deadline, set to the caller's (its default is 2 s). */
void core_vsock_set_connect_timeout(int fd, uint32_t timeout_ms);

#endif
