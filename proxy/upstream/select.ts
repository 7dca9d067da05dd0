// The transport decision, the heart of the method: from what is known of an
// endpoint (endpoint-facts.ts, whichever source told it), where we run, the
// health of vsock and the policy, which hops to try in order and why. The one
// place this is decided. Pure: no I/O, no clock.

import type { TransportPolicy, VsockAddress } from '../config/types.js';
import { formatAddress } from '../runtime/log.js';
import { DECLARED, type EndpointFacts, type LocalPlacement } from './endpoint-facts.js';

export type { TransportPolicy };

/** vsock as this sidecar sees it for the endpoint: usable, its breaker open after a failed connect, or turned off. */
export type VsockHealth = 'available' | 'breaker_open' | 'disabled';

export interface SelectionInput {
  /** Our own placement; null while nobody has told us. Not needed for static endpoints. */
  local: LocalPlacement | null;
  endpoint: EndpointFacts;
  vsock: VsockHealth;
  policy: TransportPolicy;
}

export type Hop =
  | { kind: 'vsock'; cid: number; port: number; relay?: VsockAddress }
  | { kind: 'tcp'; address: string; port: number }
  | { kind: 'direct'; address: string; port: number };

/** Why the first hop was chosen: the access log's `transport_reason` and the decisions metric's `reason`, for every source alike. */
export type SelectionReason =
  | 'same_hypervisor'
  | 'other_hypervisor'
  | 'local_unknown'
  | 'same_vm'
  | 'unknown_destination'
  | 'vm_manager_unavailable'
  | 'no_sidecar'
  | 'no_vsock_inbound'
  | 'vsock_disabled'
  | 'vsock_unhealthy'
  | 'tcp_only_policy';

/** Why no hop is possible (the refusal's `reason`): vsock-only and vsock is not possible, or nothing to connect to. */
export type RefusalReason = 'vsock_only_unavailable' | 'no_address';

export type Selection = { ok: true; hops: Hop[]; reason: SelectionReason } | { ok: false; reason: RefusalReason };

export function selectTransport(input: SelectionInput): Selection {
  const { local, endpoint, vsock, policy } = input;
  const { app, vm } = endpoint;
  const direct = (reason: SelectionReason): Selection => {
    if (policy === 'vsock-only') return { ok: false, reason: 'vsock_only_unavailable' };
    return app ? { ok: true, hops: [{ kind: 'direct', ...app }], reason } : { ok: false, reason: 'no_address' };
  };
  if (vm === null) return direct(endpoint.unknown ?? 'unknown_destination');
  if (vm.sidecar === null) return direct('no_sidecar');

  const tcp: Hop | undefined = vm.sidecar.tcp ? { kind: 'tcp', ...vm.sidecar.tcp } : undefined;
  const viaTcp = (reason: SelectionReason): Selection => {
    if (policy === 'vsock-only') return { ok: false, reason: 'vsock_only_unavailable' };
    return tcp ? { ok: true, hops: [tcp], reason } : direct(reason);
  };

  if (policy === 'tcp-only') return viaTcp('tcp_only_policy');
  if (vm.hypervisorId !== DECLARED) {
    if (local === null) return viaTcp('local_unknown');
    if (vm.hypervisorId !== local.hypervisorId || vm.vsockReach === null) return viaTcp('other_hypervisor');
    if (vm.vmId === local.vmId) return viaTcp('same_vm');
  }
  const target = vm.sidecar.vsock;
  if (target === null || vm.vsockReach === null) return viaTcp('no_vsock_inbound');
  if (vsock === 'disabled') return viaTcp('vsock_disabled');
  // The breaker moves connections to a TCP path that exists; without one, vsock is tried anyway (it may have recovered).
  if (vsock === 'breaker_open' && tcp && policy !== 'vsock-only') return { ok: true, hops: [tcp], reason: 'vsock_unhealthy' };

  const hop: Hop = vm.vsockReach.mode === 'host-relay' ? { kind: 'vsock', ...target, relay: vm.vsockReach.relay } : { kind: 'vsock', ...target };
  if (policy === 'vsock-only' || !tcp) return { ok: true, hops: [hop], reason: 'same_hypervisor' };
  return { ok: true, hops: [hop, tcp], reason: 'same_hypervisor' };
}

/** One line a person can read: what was chosen and why (logs, `ctl resolve`, the demo). */
export function describeSelection(selection: Selection): string {
  if (!selection.ok) return `refused (${selection.reason})`;
  const [first, ...rest] = selection.hops;
  return `${describeHop(first!)} (${selection.reason})${rest.length > 0 ? `, fallback ${rest.map(describeHop).join(', ')}` : ''}`;
}

export function describeHop(h: Hop): string {
  return h.kind === 'vsock' ? (h.relay ? `vsock ${h.cid}:${h.port} via host relay ${h.relay.cid}:${h.relay.port}` : `vsock ${h.cid}:${h.port}`) : `${h.kind} ${formatAddress(h.address, h.port)}`;
}

