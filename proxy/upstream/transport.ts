// Transport selection for one endpoint: which hops to try, in order. Pure: the
// caller supplies whether vsock is enabled and whether the endpoint's vsock
// breaker is open.

import type { EndpointConfig, VsockAddress } from '../config/types.js';

export type Hop =
  /** To the peer sidecar's vsock inbound; `relay` set: through the hypervisor's host relay. */
  | { transport: 'vsock'; cid: number; port: number; relay?: VsockAddress }
  /** To the peer sidecar's TCP inbound (PROXY v2 header first). */
  | { transport: 'tcp'; address: string; port: number; peer: true }
  /** Straight to the app: the destination has no sidecar. */
  | { transport: 'tcp'; address: string; port: number; peer: false };

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
  const tcpPeer: Hop | undefined = endpoint.peer && { transport: 'tcp', address: endpoint.peer.address, port: endpoint.peer.port, peer: true };
  const vsock = endpoint.vsock;
  if (vsock && state.vsockEnabled) {
    const hop: Hop =
      vsock.mode === 'host-relay' ? { transport: 'vsock', cid: vsock.cid, port: vsock.port, relay: vsock.relay } : { transport: 'vsock', cid: vsock.cid, port: vsock.port };
    if (!tcpPeer) return { hops: [hop], reason: 'vsock' };
    if (state.vsockBreakerOpen) return { hops: [tcpPeer], reason: 'vsock_breaker_open' };
    return { hops: [hop, tcpPeer], reason: 'vsock' };
  }
  if (tcpPeer) return { hops: [tcpPeer], reason: vsock ? 'vsock_disabled' : 'tcp_peer' };
  return { hops: [{ transport: 'tcp', address: endpoint.address, port: endpoint.port, peer: false }], reason: 'direct' };
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
