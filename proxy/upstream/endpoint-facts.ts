// What is known of one endpoint, whichever source told it: a static config
// endpoint, the VM facts on an xDS endpoint, or a VM manager resolution. The
// three adapters below are the only code that reads those sources for the
// transport decision; select.ts decides from facts alone.

import type { EndpointConfig, SocketAddress, VsockAddress } from '../config/types.js';
import type { XdsEndpoint } from '../dynamic/types.js';
import type { Resolution } from '../resolve/types.js';
import type { PeerTlsMode } from '../peer-tls/peer-policy.js';

/** The hypervisor's own CID, where a guest reaches the host relay. */
export const HOST_CID = 2;

/** How a guest reaches a vsock address on its hypervisor: straight to the CID, or through the host relay. */
export type VsockReach = { mode: 'direct' } | { mode: 'host-relay'; relay: VsockAddress };

/** Where this sidecar's own VM runs, as the VM manager or the control plane said. */
export interface LocalPlacement {
  vmId: string;
  hypervisorId: string;
}

/**
 * A static config endpoint that lists a vsock address declares it reachable
 * from here: its placement is not tracked, so no hypervisor is compared.
 */
export const DECLARED = Symbol('declared by the static config');

export interface VmFacts {
  /** Sent in the destination-VM TLV; null when a static endpoint names none. */
  vmId: string | null;
  /** Where the VM runs; DECLARED for static endpoints. */
  hypervisorId: string | typeof DECLARED;
  /** The VM's sidecar inbounds; null: it runs no sidecar. */
  sidecar: { tcp: SocketAddress | null; vsock: VsockAddress | null } | null;
  /** How to reach a vsock address on the VM's hypervisor; null when its hypervisor is not known. */
  vsockReach: VsockReach | null;
  /** The peer mode of the VM's inbound port for this endpoint, when the control plane sent it. */
  peerMode?: PeerTlsMode;
}

export interface EndpointFacts {
  /** The destination app: named in the PROXY v2 header; where a direct connection goes. null: no address is known. */
  app: SocketAddress | null;
  /** null: no VM is known at this destination. */
  vm: VmFacts | null;
  /** Why no VM is known: nobody has one there, or the VM manager could not be asked. */
  unknown?: 'unknown_destination' | 'vm_manager_unavailable';
}

// ---- adapters -------------------------------------------------------------------

/** A static config endpoint (config file). */
export function factsFromConfig(e: EndpointConfig): EndpointFacts {
  const app = { address: e.address, port: e.port };
  const hasSidecar = e.peer !== undefined || e.vsock !== undefined;
  return {
    app,
    vm: {
      vmId: e.vmId ?? null,
      hypervisorId: DECLARED,
      sidecar: hasSidecar ? { tcp: e.peer ?? null, vsock: e.vsock ? { cid: e.vsock.cid, port: e.vsock.port } : null } : null,
      vsockReach: e.vsock === undefined ? null : e.vsock.mode === 'host-relay' ? { mode: 'host-relay', relay: e.vsock.relay } : { mode: 'direct' },
    },
  };
}

/** An endpoint pushed over xDS, with the VM facts of its metadata when the control plane knows the VM. */
export function factsFromXds(e: XdsEndpoint): EndpointFacts {
  const app = { address: e.address, port: e.port };
  const vm = e.vm;
  if (vm === undefined) return { app, vm: null, unknown: 'unknown_destination' };
  const tcp = vm.tcpPort > 0 ? { address: e.address, port: vm.tcpPort } : null;
  const vsock = vm.vsockPort > 0 ? { cid: vm.vsockCid, port: vm.vsockPort } : null;
  return {
    app,
    vm: {
      vmId: vm.vmId,
      hypervisorId: vm.hypervisorId,
      sidecar: tcp === null && vsock === null ? null : { tcp, vsock },
      vsockReach: vm.vsockMode === 'host-relay' ? { mode: 'host-relay', relay: { cid: HOST_CID, port: vm.relayPort } } : { mode: 'direct' },
      ...(vm.peerMode !== undefined && { peerMode: vm.peerMode }),
    },
  };
}

/** What the caller asked for: an address and port, or leave them to the resolution (the VM's first address, the service's port). */
export interface Wanted {
  address?: string;
  port?: number;
}

/** What a resolve target or a question to the VM manager names (a vm target of a cluster names a port too). */
export type Asked = { kind: 'ip'; ip: string } | { kind: 'ip_port'; ip: string; port: number } | { kind: 'vm'; port?: number } | { kind: 'service' };

export function wantedOf(asked: Asked): Wanted {
  switch (asked.kind) {
    case 'ip':
      return { address: asked.ip };
    case 'ip_port':
      return { address: asked.ip, port: asked.port };
    case 'vm':
      return asked.port === undefined ? {} : { port: asked.port };
    case 'service':
      return {};
  }
}

function wantedApp(wanted: Wanted, resolution: Resolution | null): SocketAddress | null {
  const address = wanted.address ?? resolution?.vm?.addresses[0];
  const port = wanted.port ?? resolution?.port;
  return address !== undefined && port !== undefined ? { address, port } : null;
}

/** A VM manager resolution (Resolve, or a cached answer kept current by Watch). */
export function factsFromResolution(resolution: Resolution, wanted: Wanted): EndpointFacts {
  const app = wantedApp(wanted, resolution);
  const vm = resolution.found ? resolution.vm : undefined;
  if (vm === undefined) return { app, vm: null, unknown: 'unknown_destination' };
  const address = vm.addresses[0];
  const sidecar = vm.sidecar && {
    tcp: vm.sidecar.tcpPort > 0 && address !== undefined ? { address, port: vm.sidecar.tcpPort } : null,
    vsock: vm.sidecar.vsockPort > 0 ? { cid: vm.vsockCid, port: vm.sidecar.vsockPort } : null,
  };
  const hypervisor = resolution.hypervisor;
  return {
    app,
    vm: {
      vmId: vm.vmId,
      hypervisorId: vm.hypervisorId,
      sidecar,
      vsockReach:
        hypervisor === undefined || hypervisor.hypervisorId !== vm.hypervisorId
          ? null
          : hypervisor.vsockMode === 'host-relay'
            ? { mode: 'host-relay', relay: { cid: HOST_CID, port: hypervisor.relayPort } }
            : { mode: 'direct' },
    },
  };
}

/** The VM manager could not be asked: only the address the caller named is known. */
export function factsWithoutResolution(wanted: Wanted): EndpointFacts {
  return { app: wantedApp(wanted, null), vm: null, unknown: 'vm_manager_unavailable' };
}
