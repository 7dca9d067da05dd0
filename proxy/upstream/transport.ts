// Transport selection for a statically configured endpoint: which hops to try,
// in order. Pure: the caller supplies whether vsock is enabled and whether the
// endpoint's vsock breaker is open. (Endpoints the VM manager resolves go
// through resolve/select.ts instead.)

import type { EndpointConfig } from '../config/types.js';
import type { Hop } from '../resolve/select.js';

export type { Hop };

export interface HopPlan {
  /** Tried in order; a later hop is the fallback of an earlier one. */
  hops: Hop[];
  /** Why the first hop was chosen (for logs and `ctl resolve` later). */
  reason: 'vsock' | 'vsock_breaker_open' | 'vsock_disabled' | 'tcp_peer' | 'direct';
}

export interface TransportState {
  vsockEnabled: boolean;
  /** The endpoint's vsock failed recently: skip it while a TCP path exists. */
  vsockBreakerOpen: boolean;
}

export function planHops(endpoint: EndpointConfig, state: TransportState): HopPlan {
  const tcpPeer: Hop | undefined = endpoint.peer && { kind: 'tcp', address: endpoint.peer.address, port: endpoint.peer.port };
  const vsock = endpoint.vsock;
  if (vsock && state.vsockEnabled) {
    const hop: Hop = vsock.mode === 'host-relay' ? { kind: 'vsock', cid: vsock.cid, port: vsock.port, relay: vsock.relay } : { kind: 'vsock', cid: vsock.cid, port: vsock.port };
    if (!tcpPeer) return { hops: [hop], reason: 'vsock' };
    if (state.vsockBreakerOpen) return { hops: [tcpPeer], reason: 'vsock_breaker_open' };
    return { hops: [hop, tcpPeer], reason: 'vsock' };
  }
  if (tcpPeer) return { hops: [tcpPeer], reason: vsock ? 'vsock_disabled' : 'tcp_peer' };
  return { hops: [{ kind: 'direct', address: endpoint.address, port: endpoint.port }], reason: 'direct' };
}

/** Per-endpoint vsock breakers: open for a window after a failed connect. Time is injected. */
export class VsockBreakers {
  private readonly openUntil = new Map<string, number>();

  constructor(private readonly windowMs: number) {}

  static key(cid: number, port: number): string {
    return `${cid}:${port}`;
  }

  isOpen(key: string, now: number): boolean {
    const until = this.openUntil.get(key);
    if (until === undefined) return false;
    if (now < until) return true;
    this.openUntil.delete(key);
    return false;
  }

  open(key: string, now: number): void {
    this.openUntil.set(key, now + this.windowMs);
  }
}
