/*
 * Freed memory back to the system when the core goes quiet (trim.c): the
 * loop notes each socket closed, the TLS job each handshake finished.
 */
#ifndef VSOCKMESH_TRIM_H
#define VSOCKMESH_TRIM_H

/* Activity that frees memory: a trim follows once the core has been quiet for a while. */
void core_trim_note(void);

/* A trim now (the caller knows the process is quiet: settle.cc); counted with the core's own. */
void core_trim_now(void);

#endif
