/*
 * The warm path's decision cache (warm.c): entries JavaScript
 * installed, looked up by (listener, destination port) under the current
 * generation.
 */
#ifndef VSOCKMESH_WARM_H
#define VSOCKMESH_WARM_H

#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "core.h"

/* The peer label a plain-TCP decision read: the port's peer mode's outcome. */
enum { WARM_LABEL_NONE = 0, WARM_LABEL_UNAUTHENTICATED = 1 };

typedef struct warm_entry {
  uint32_t listener;
  uint16_t port;
  uint8_t label;
  bool proxy_protocol; /* the app gets a PROXY v2 header made from the parsed addresses */
  uint32_t generation;
  uint32_t id;
  int family;
  core_addr target;
  socklen_t target_len;
  uint32_t connect_ms;
  uint32_t idle_ms;
  struct warm_entry *next;
} warm_entry;

uint32_t warm_generation(void);
/* The key's entry if installed under the current generation (a dead one is freed), else NULL. */
const warm_entry *warm_lookup(uint32_t listener, uint16_t port);

/* listen.c: true when the warm path took the accepted connection (the listening socket has a warm listener). */
bool core_warm_accept(core_sock *ls, core_sock *s, const core_addr *peer);
/* loop.c: a listening socket with a warm listener closes. */
void core_warm_listener_closed(core_sock *ls);

#endif
