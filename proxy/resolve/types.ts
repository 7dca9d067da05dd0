// Domain types of the VM manager: what the registry holds and what the API
// answers. The wire types (generated from proto/vsockmesh/vmmanager/v1/*.proto)
// stay inside xds/; everything else uses these.

/**
 * How guests on a hypervisor reach each other over vsock:
 * - host-relay: through `vsockmesh host-relay` on the hypervisor (KVM/QEMU: a guest reaches only CID 2);
 * - direct: straight to the peer's CID (VMCI VM-to-VM, vhost-device-vsock sibling groups);
 * - loopback: one host with vsock_loopback where every sidecar is at CID 1, told apart by port
 *   (tests and the demo; its VMs carry CID 1 and share it).
 */
/** Where `vsockmesh vm-manager` listens by default, and where ctl looks. */
export const DEFAULT_VM_MANAGER_ADDRESS = '127.0.0.1:15200';

export type VsockMode = 'host-relay' | 'direct' | 'loopback';

export interface HypervisorRecord {
  hypervisorId: string;
  vsockMode: VsockMode;
  /** host-relay: the relay's vsock port on CID 2. */
  relayPort: number;
}

export interface ServicePort {
  name: string;
  port: number;
}

export interface SidecarPorts {
  /** The sidecar's TCP inbound listener port (0: none). */
  tcpPort: number;
  /** The sidecar's vsock inbound listener port (0: none). */
  vsockPort: number;
}

export interface VmRecord {
  vmId: string;
  hypervisorId: string;
  /** 3..0xFFFFFFFE, unique per hypervisor; 1 on a loopback hypervisor. */
  vsockCid: number;
  /** IP addresses of the VM, unique across the registry. */
  addresses: string[];
  /** null: the VM runs no sidecar (connections to it go directly, plain TCP). */
  sidecar: SidecarPorts | null;
  /** Services the VM serves, for Resolve by service name. */
  services: ServicePort[];
  labels: Record<string, string>;
  /** Bumped on every change of the record (move, re-register). */
  generation: number;
  /** Epoch ms at which an unrenewed lease expires; null: no lease. */
  leaseExpiresAt: number | null;
}

/** What a sidecar asks about: a listener target, a CONNECT authority, an original destination. */
export type Destination =
  | { kind: 'ip'; ip: string }
  | { kind: 'ip_port'; ip: string; port: number }
  | { kind: 'vm'; vmId: string }
  | { kind: 'service'; name: string };

export interface Resolution {
  found: boolean;
  vm?: VmRecord;
  hypervisor?: HypervisorRecord;
  /** The caller's own record, when the caller is registered. */
  caller?: VmRecord;
  /** Destination and caller share a hypervisor (false when either is unknown). */
  sameHypervisor: boolean;
  /** The destination port when the query named one (ip_port) or a service. */
  port?: number;
  /** How long the answer may be cached. */
  ttlMs: number;
  /** Registry revision the answer reflects. */
  revision: number;
}

export type VmEvent =
  | { type: 'added' | 'updated' | 'removed'; vm: VmRecord; revision: number }
  /** New hypervisor and/or CID: vsock connections to the old placement are dead. */
  | { type: 'moved'; vm: VmRecord; previous: VmRecord; revision: number }
  /** Registered or changed. */
  | { type: 'hypervisor'; hypervisor: HypervisorRecord; revision: number }
  /** Its record (the last one) left the registry, after the `removed` events of the VMs on it, at the same revision. */
  | { type: 'hypervisor-removed'; hypervisor: HypervisorRecord; revision: number };

/** A host relay's question: may the guest at `sourceCid` (kernel-given) on `hypervisorId` reach `destination`? */
export interface RelayRequest {
  hypervisorId: string;
  sourceCid: number;
  destination: { cid: number; port: number };
}

export type RelayAuthorization = { allowed: true; source: VmRecord; destination: VmRecord } | { allowed: false; reason: string };

export interface WatchHandlers {
  onEvent(event: VmEvent): void;
  /** The stream ended or failed (code OUT_OF_RANGE: watch again from 0). */
  onError(err: Error): void;
  /** The VM manager accepted the stream (before any event); `epoch` names its revision history. */
  onOpen?(epoch: string): void;
}

/** The VM manager as its clients see it (the gRPC client implements this). */
export interface VmManagerApi {
  registerVm(vm: Omit<VmRecord, 'generation' | 'leaseExpiresAt'>, leaseTtlMs?: number): Promise<VmRecord>;
  deregisterVm(vmId: string): Promise<void>;
  getVm(vmId: string): Promise<VmRecord | undefined>;
  /** The whole registry (every page of ListVms); `revision` is the first page's. */
  listVms(): Promise<{ vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number }>;
  registerHypervisor(hypervisor: HypervisorRecord): Promise<HypervisorRecord>;
  moveVm(vmId: string, hypervisorId: string, vsockCid?: number): Promise<VmRecord>;
  resolve(callerVmId: string, destination: Destination, options?: { timeoutMs?: number }): Promise<Resolution>;
  /** Which guest (by kernel CID on a hypervisor) may reach which destination CID and port through the relay. */
  authorizeRelay(request: RelayRequest, options?: { timeoutMs?: number }): Promise<RelayAuthorization>;
  /** Events after `fromRevision` (0: the whole registry as `added`, then changes). */
  watch(fromRevision: number, handlers: WatchHandlers, epoch?: string): { cancel(): void };
  close(): void;
  /** The address of the replica calls go to now (a gRPC client; absent in process). */
  readonly replica?: string;
}
