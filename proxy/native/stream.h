/*
 * A socket's byte stream, plain or inside TLS: what the jobs that move bytes
 * (read.c, relay.c) call instead of read/send/shutdown, so a relay carries a
 * TLS side and a plain side with the same half-close, reset and backpressure
 * semantics.
 *
 * The stream keeps the socket's edge-triggered readiness true: a call that
 * finds the socket drained or full clears the flag whose edge will wake the
 * socket again (for TLS that may be the other direction's: a read can need a
 * write, a write a read), and leaves `readable` set while more bytes can come
 * without a new edge (the rest of a TLS record, a pending EOF).
 */
#ifndef VSOCKMESH_STREAM_H
#define VSOCKMESH_STREAM_H

#include <sys/types.h>

#include "core.h"

/* Up to len bytes: > 0 bytes read, 0 EOF, -1 with errno (EAGAIN: wait for the next edge). */
ssize_t core_stream_read(core_sock *s, char *buf, size_t len);
/* Up to len bytes: > 0 bytes taken (fewer: the rest waits for an edge), -1 with errno (EAGAIN: nothing taken). */
ssize_t core_stream_write(core_sock *s, const char *buf, size_t len);
/* Ends the writing side (TLS: close_notify, then FIN). 0 done, -EAGAIN: call again when writable, else a negative errno. */
int core_stream_shutdown(core_sock *s);

#endif
