// Wire messages (generated from proto/) to domain types and back. The only
// place outside the server and client that sees the wire shapes.

import type { AuthorizeRelayRequest, AuthorizeRelayRequest__Output } from '../generated/vsockmesh/vmmanager/v1/AuthorizeRelayRequest.js';
import type { Hypervisor, Hypervisor__Output } from '../generated/vsockmesh/vmmanager/v1/Hypervisor.js';
import type { ResolveRequest, ResolveRequest__Output } from '../generated/vsockmesh/vmmanager/v1/ResolveRequest.js';
import type { ResolveResponse, ResolveResponse__Output } from '../generated/vsockmesh/vmmanager/v1/ResolveResponse.js';
import type { Vm, Vm__Output } from '../generated/vsockmesh/vmmanager/v1/Vm.js';
import type { VmEvent as WireVmEvent, VmEvent__Output } from '../generated/vsockmesh/vmmanager/v1/VmEvent.js';
import type { VsockMode as WireVsockMode } from '../generated/vsockmesh/vmmanager/v1/VsockMode.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import type { Destination, HypervisorRecord, RelayRequest, Resolution, VmEvent, VmRecord, VsockMode } from '../../proxy/resolve/types.js';

/** A request that is malformed before any registry rule applies (missing message, unknown enum). */
export class WireError extends VsockmeshError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('INVALID_ARGUMENT', `${field}: ${message}`);
  }
}

const MODES: Record<VsockMode, WireVsockMode> = { 'host-relay': 'VSOCK_MODE_HOST_RELAY', direct: 'VSOCK_MODE_DIRECT', loopback: 'VSOCK_MODE_LOOPBACK' };

export function modeToWire(mode: VsockMode): WireVsockMode {
  return MODES[mode];
}

export function modeFromWire(mode: string | number, field: string): VsockMode {
  for (const [domain, wire] of Object.entries(MODES)) if (wire === mode) return domain as VsockMode;
  throw new WireError(field, `must be VSOCK_MODE_HOST_RELAY, VSOCK_MODE_DIRECT or VSOCK_MODE_LOOPBACK (got ${String(mode)})`);
}

export function hypervisorToWire(h: HypervisorRecord): Hypervisor {
  return { hypervisor_id: h.hypervisorId, vsock_mode: modeToWire(h.vsockMode), relay_port: h.relayPort };
}

export function hypervisorFromWire(h: Hypervisor__Output | null | undefined, field = 'hypervisor'): HypervisorRecord {
  if (!h) throw new WireError(field, 'is required');
  return { hypervisorId: h.hypervisor_id, vsockMode: modeFromWire(h.vsock_mode, `${field}.vsock_mode`), relayPort: h.relay_port };
}

export function vmToWire(vm: VmRecord): Vm {
  return {
    vm_id: vm.vmId,
    hypervisor_id: vm.hypervisorId,
    vsock_cid: vm.vsockCid,
    addresses: vm.addresses,
    sidecar: vm.sidecar && { tcp_port: vm.sidecar.tcpPort, vsock_port: vm.sidecar.vsockPort },
    services: vm.services,
    labels: vm.labels,
    generation: vm.generation,
    lease_expires_at_ms: vm.leaseExpiresAt ?? 0,
  };
}

export function vmFromWire(vm: Vm__Output): VmRecord {
  return {
    vmId: vm.vm_id,
    hypervisorId: vm.hypervisor_id,
    vsockCid: vm.vsock_cid,
    addresses: [...vm.addresses],
    sidecar: vm.sidecar ? { tcpPort: vm.sidecar.tcp_port, vsockPort: vm.sidecar.vsock_port } : null,
    services: vm.services.map((s) => ({ name: s.name, port: s.port })),
    labels: { ...vm.labels },
    generation: vm.generation,
    leaseExpiresAt: vm.lease_expires_at_ms > 0 ? vm.lease_expires_at_ms : null,
  };
}

/** The registrable part of a VM from a RegisterVm request. */
export function vmInputFromWire(vm: Vm__Output | null | undefined): Omit<VmRecord, 'generation' | 'leaseExpiresAt'> {
  if (!vm) throw new WireError('vm', 'is required');
  const record: Partial<VmRecord> = vmFromWire(vm);
  delete record.generation;
  delete record.leaseExpiresAt;
  return record as Omit<VmRecord, 'generation' | 'leaseExpiresAt'>;
}

export function destinationToWire(d: Destination): Omit<ResolveRequest, 'caller_vm_id'> {
  switch (d.kind) {
    case 'ip':
      return { ip: d.ip };
    case 'ip_port':
      return { ip_port: { ip: d.ip, port: d.port } };
    case 'vm':
      return { vm_id: d.vmId };
    case 'service':
      return { service: d.name };
  }
}

export function relayRequestToWire(r: RelayRequest): AuthorizeRelayRequest {
  return { hypervisor_id: r.hypervisorId, source_cid: r.sourceCid, destination_cid: r.destination.cid, destination_port: r.destination.port };
}

export function relayRequestFromWire(r: AuthorizeRelayRequest__Output): RelayRequest {
  return { hypervisorId: r.hypervisor_id, sourceCid: r.source_cid, destination: { cid: r.destination_cid, port: r.destination_port } };
}

export function destinationFromWire(r: ResolveRequest__Output): Destination {
  switch (r.destination) {
    case 'ip':
      return { kind: 'ip', ip: r.ip ?? '' };
    case 'ip_port':
      return { kind: 'ip_port', ip: r.ip_port?.ip ?? '', port: r.ip_port?.port ?? 0 };
    case 'vm_id':
      return { kind: 'vm', vmId: r.vm_id ?? '' };
    case 'service':
      return { kind: 'service', name: r.service ?? '' };
    default:
      throw new WireError('destination', 'is required: one of ip, ip_port, vm_id, service');
  }
}

export function resolutionToWire(r: Resolution): ResolveResponse {
  return {
    found: r.found,
    vm: r.vm ? vmToWire(r.vm) : null,
    hypervisor: r.hypervisor ? hypervisorToWire(r.hypervisor) : null,
    caller: r.caller ? vmToWire(r.caller) : null,
    same_hypervisor: r.sameHypervisor,
    port: r.port ?? 0,
    ttl_ms: r.ttlMs,
    revision: r.revision,
  };
}

export function resolutionFromWire(r: ResolveResponse__Output): Resolution {
  return {
    found: r.found,
    ...(r.vm && { vm: vmFromWire(r.vm) }),
    ...(r.hypervisor && { hypervisor: hypervisorFromWire(r.hypervisor) }),
    ...(r.caller && { caller: vmFromWire(r.caller) }),
    sameHypervisor: r.same_hypervisor,
    ...(r.port > 0 && { port: r.port }),
    ttlMs: r.ttl_ms,
    revision: r.revision,
  };
}

export function eventToWire(e: VmEvent): WireVmEvent {
  switch (e.type) {
    case 'hypervisor':
      return { type: 'HYPERVISOR', revision: e.revision, hypervisor: hypervisorToWire(e.hypervisor) };
    case 'hypervisor-removed':
      // HYPERVISOR with a flag, not a Type of its own: clients that predate it read the record again (proto/: VmEvent).
      return { type: 'HYPERVISOR', revision: e.revision, hypervisor: hypervisorToWire(e.hypervisor), hypervisor_removed: true };
    case 'moved':
      return { type: 'MOVED', revision: e.revision, vm: vmToWire(e.vm), previous: vmToWire(e.previous) };
    default:
      return { type: e.type === 'added' ? 'ADDED' : e.type === 'updated' ? 'UPDATED' : 'REMOVED', revision: e.revision, vm: vmToWire(e.vm) };
  }
}

export function eventFromWire(e: VmEvent__Output): VmEvent {
  switch (e.type) {
    case 'HYPERVISOR':
      return { type: e.hypervisor_removed ? 'hypervisor-removed' : 'hypervisor', revision: e.revision, hypervisor: hypervisorFromWire(e.hypervisor, 'hypervisor') };
    case 'MOVED':
      if (!e.vm || !e.previous) throw new WireError('vm', 'MOVED event without vm and previous');
      return { type: 'moved', revision: e.revision, vm: vmFromWire(e.vm), previous: vmFromWire(e.previous) };
    case 'ADDED':
    case 'UPDATED':
    case 'REMOVED':
      if (!e.vm) throw new WireError('vm', `${e.type} event without vm`);
      return { type: e.type === 'ADDED' ? 'added' : e.type === 'UPDATED' ? 'updated' : 'removed', revision: e.revision, vm: vmFromWire(e.vm) };
    default:
      throw new WireError('type', `unknown event type ${String(e.type)}`);
  }
}
