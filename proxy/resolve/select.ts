// The same-hypervisor decision (the heart of the method): given what the VM
// manager says about the destination and about us, how to carry a connection.
// Pure: no I/O, no clock.

import type { HypervisorRecord, VmRecord } from './types.js';

export type TransportPolicy = 'prefer-vsock' | 'tcp-only' | 'vsock-only';

/** The hypervisor's own CID, where a guest reaches the host relay. */
export const HOST_CID = 2;

export interface SelectionInput {
  /** Our VM's record; null while the VM manager does not know us. */
  local: VmRecord | null;
  /** The destination's record; null: unknown to the VM manager. */
  destination: VmRecord | null;
  /** The destination's hypervisor record. */
  hypervisor: HypervisorRecord | null;
  /** What the app asked for (the PROXY header's destination; direct connections go here). */
  requested: { address: string; port: number } | null;
  /** vsock is enabled here and the destination's breaker is closed. */
  vsockHealthy: boolean;
  policy: TransportPolicy;
}

export type Hop =
  | { kind: 'vsock'; cid: number; port: number; relay?: { cid: number; port: number } }
  | { kind: 'tcp'; address: string; port: number }
  | { kind: 'direct'; address: string; port: number };

export type SelectionReason =
  | 'same_hypervisor'
  | 'other_hypervisor'
  | 'local_unknown'
  | 'unknown_destination'
  | 'no_sidecar'
  | 'no_vsock_inbound'
  | 'vsock_unhealthy'
  | 'tcp_only_policy';

export type Selection =
  | { ok: true; hops: Hop[]; reason: SelectionReason }
  /** vsock-only policy and vsock is not possible, or nothing to connect to. */
  | { ok: false; reason: SelectionReason | 'vsock_only_unavailable' | 'no_address' };

export function selectTransport(input: SelectionInput): Selection {
  const { local, destination, hypervisor, requested, vsockHealthy, policy } = input;
  const direct = (reason: SelectionReason): Selection => {
    if (policy === 'vsock-only') return { ok: false, reason: 'vsock_only_unavailable' };
    return requested ? { ok: true, hops: [{ kind: 'direct', ...requested }], reason } : { ok: false, reason: 'no_address' };
  };
  if (destination === null) return direct('unknown_destination');
  if (destination.sidecar === null) return direct('no_sidecar');

  const address = destination.addresses[0];
  const tcp: Hop | undefined = destination.sidecar.tcpPort > 0 && address !== undefined ? { kind: 'tcp', address, port: destination.sidecar.tcpPort } : undefined;
  const viaTcp = (reason: SelectionReason): Selection => {
    if (policy === 'vsock-only') return { ok: false, reason: 'vsock_only_unavailable' };
    return tcp ? { ok: true, hops: [tcp], reason } : direct(reason);
  };

  if (policy === 'tcp-only') return viaTcp('tcp_only_policy');
  if (local === null) return viaTcp('local_unknown');
  if (hypervisor === null || local.hypervisorId !== destination.hypervisorId) return viaTcp('other_hypervisor');
  if (destination.sidecar.vsockPort === 0) return viaTcp('no_vsock_inbound');
  if (!vsockHealthy) return viaTcp('vsock_unhealthy');

  const port = destination.sidecar.vsockPort;
  const vsock: Hop =
    hypervisor.vsockMode === 'host-relay'
      ? { kind: 'vsock', cid: destination.vsockCid, port, relay: { cid: HOST_CID, port: hypervisor.relayPort } }
      : { kind: 'vsock', cid: destination.vsockCid, port };
  if (policy === 'vsock-only' || !tcp) return { ok: true, hops: [vsock], reason: 'same_hypervisor' };
  return { ok: true, hops: [vsock, tcp], reason: 'same_hypervisor' };
}

/** One line a person can read: what was chosen and why (logs, `ctl resolve`, the demo). */
export function describeSelection(selection: Selection): string {
  if (!selection.ok) return `refused (${selection.reason})`;
  const [first, ...rest] = selection.hops;
  const hop = (h: Hop): string =>
    h.kind === 'vsock' ? (h.relay ? `vsock ${h.cid}:${h.port} via host relay ${h.relay.cid}:${h.relay.port}` : `vsock ${h.cid}:${h.port}`) : `${h.kind} ${h.address}:${h.port}`;
  return `${hop(first!)} (${selection.reason})${rest.length > 0 ? `, fallback ${rest.map(hop).join(', ')}` : ''}`;
}
