// Per-endpoint vsock breakers: after a failed vsock connect the endpoint's
// breaker opens for a window, and the transport decision (select.ts) moves
// its connections to TCP meanwhile. Time is injected.

import type { VsockAddress } from '../config/types.js';

/** Names one peer's vsock inbound (CID and port: on a loopback hypervisor every VM is CID 1, told apart by port). */
export type VsockBreakerKey = string & { readonly __brand: 'VsockBreakerKey' };

export function vsockBreakerKey(target: VsockAddress): VsockBreakerKey {
  return `${target.cid}:${target.port}` as VsockBreakerKey;
}

export class VsockBreakers {
  private readonly openUntil = new Map<VsockBreakerKey, number>();

  constructor(private readonly windowMs: number) {}

  isOpen(key: VsockBreakerKey, now: number): boolean {
    const until = this.openUntil.get(key);
    if (until === undefined) return false;
    if (now < until) return true;
    this.openUntil.delete(key);
    return false;
  }

  open(key: VsockBreakerKey, now: number): void {
    this.openUntil.set(key, now + this.windowMs);
  }
}
