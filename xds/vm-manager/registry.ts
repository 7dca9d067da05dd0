// The VM manager's registry: hypervisors and VMs, the rules that keep their
// placement consistent, and the answers sidecars and host relays ask for.
// Pure logic: no I/O and no timers (the clock is injected), so every rule is
// tested without a server; the gRPC server and the state file sit around it.

import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { formatIPv4, formatIPv6, parseIPv6 } from '../../proxy/ip-address.js';
import type { Destination, HypervisorRecord, RelayAuthorization, Resolution, ServicePort, SidecarPorts, VmEvent, VmRecord, VsockMode } from './types.js';

/** A request or file breaks a registry rule; `field` is the snake_case wire name (`vsock_cid`, `addresses[1]`). */
export class ValidationError extends Error {
  /** The message without the field, for callers that re-prefix the field (`vms[2].vsock_cid`). */
  readonly detail: string;
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'ValidationError';
    this.detail = message;
  }
}

export class NotFoundError extends Error {
  /** What was looked for, e.g. `VM "web-1"`. */
  constructor(readonly what: string) {
    super(`${what} not found`);
    this.name = 'NotFoundError';
  }
}

export type VmInput = Omit<VmRecord, 'generation' | 'leaseExpiresAt'>;

export interface RegistryOptions {
  now?: () => number;
  /** How long a Resolution may be cached (default 30 s). */
  resolveTtlMs?: number;
  /** How many events eventsSince can reach back (default 10,000). */
  eventLogSize?: number;
}

export interface PersistedState {
  version: 1;
  /** Which history `revision` counts in; absent in older files (a new one is made). */
  epoch?: string;
  revision: number;
  hypervisors: HypervisorRecord[];
  vms: VmRecord[];
}

const MAX_U32_PORT = 0xfffffffe; // 0xFFFFFFFF is VMADDR_PORT_ANY / VMADDR_CID_ANY
const ID_PATTERN = /^[A-Za-z0-9._-]{1,253}$/;
const ID_RULE = 'must be 1-253 characters of letters, digits, ".", "_" or "-"';
const MODES: readonly VsockMode[] = ['host-relay', 'direct', 'loopback'];
const MAX_LABELS = 64;
const MIN_LEASE_TTL_MS = 1000;
/** Loopback hypervisors: every VM is at VMADDR_CID_LOCAL. */
const LOOPBACK_CID = 1;

// ---- small helpers -------------------------------------------------------------

const isInt = (v: unknown, min: number, max: number): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/**
 * One spelling per address, for uniqueness and lookups: IPv6 in RFC 5952 form
 * (so `2001:DB8::0:1` and `2001:db8::1` are the same), IPv4-mapped IPv6 as the
 * plain IPv4 address. undefined: not an IP literal.
 */
export function canonicalIp(text: string): string | undefined {
  const family = isIP(text);
  if (family === 4) return text; // node accepts only plain dotted decimal (no leading zeros), already canonical
  if (family !== 6) return undefined;
  const bytes = parseIPv6(text)!;
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? formatIPv4(bytes.subarray(12)) : formatIPv6(bytes);
}

function copyVm(vm: VmRecord): VmRecord {
  return {
    vmId: vm.vmId,
    hypervisorId: vm.hypervisorId,
    vsockCid: vm.vsockCid,
    addresses: [...vm.addresses],
    sidecar: vm.sidecar && { tcpPort: vm.sidecar.tcpPort, vsockPort: vm.sidecar.vsockPort },
    services: vm.services.map((s) => ({ name: s.name, port: s.port })),
    labels: { ...vm.labels },
    generation: vm.generation,
    leaseExpiresAt: vm.leaseExpiresAt,
  };
}

const copyHypervisor = (h: HypervisorRecord): HypervisorRecord => ({ hypervisorId: h.hypervisorId, vsockMode: h.vsockMode, relayPort: h.relayPort });

function copyEvent(e: VmEvent): VmEvent {
  switch (e.type) {
    case 'hypervisor':
      return { type: e.type, hypervisor: copyHypervisor(e.hypervisor), revision: e.revision };
    case 'moved':
      return { type: e.type, vm: copyVm(e.vm), previous: copyVm(e.previous), revision: e.revision };
    default:
      return { type: e.type, vm: copyVm(e.vm), revision: e.revision };
  }
}

/** Same registrable content (generation and lease aside): a re-register that changes nothing is a lease renewal. */
function sameContent(a: VmInput, b: VmInput): boolean {
  const labels = (l: Record<string, string>): string => JSON.stringify(Object.entries(l).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return (
    a.hypervisorId === b.hypervisorId &&
    a.vsockCid === b.vsockCid &&
    a.addresses.length === b.addresses.length &&
    a.addresses.every((addr, i) => addr === b.addresses[i]) &&
    (a.sidecar === null ? b.sidecar === null : b.sidecar !== null && a.sidecar.tcpPort === b.sidecar.tcpPort && a.sidecar.vsockPort === b.sidecar.vsockPort) &&
    a.services.length === b.services.length &&
    a.services.every((s, i) => s.name === b.services[i]!.name && s.port === b.services[i]!.port) &&
    labels(a.labels) === labels(b.labels)
  );
}

const byId = <T>(key: (x: T) => string) => (a: T, b: T): number => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
const vmOrder = byId<VmRecord>((v) => v.vmId);
const hypervisorOrder = byId<HypervisorRecord>((h) => h.hypervisorId);

/** Lease TTL in ms, or null for no lease (undefined or 0). */
function leaseTtl(ttl: number | undefined): number | null {
  if (ttl === undefined || ttl === 0) return null;
  if (!Number.isInteger(ttl) || ttl < MIN_LEASE_TTL_MS) {
    throw new ValidationError('lease_ttl', `must be 0 (no lease) or an integer number of milliseconds >= ${MIN_LEASE_TTL_MS} (got ${show(ttl)})`);
  }
  return ttl;
}

// ---- the registry --------------------------------------------------------------

export class Registry {
  private readonly now: () => number;
  private readonly resolveTtlMs: number;
  private readonly hypervisors = new Map<string, HypervisorRecord>();
  private readonly vms = new Map<string, VmRecord>();
  // Indexes kept in step with `vms` by store()/unstore(): Resolve and
  // AuthorizeRelay run per connection and must not scan the whole registry.
  private readonly byAddress = new Map<string, string>();
  private readonly byHypervisor = new Map<string, Set<string>>();
  private readonly byService = new Map<string, Set<string>>();
  // Event log: a ring of the newest events. Every event is exactly one
  // revision, so the kept events are revisions (current - logCount, current].
  private readonly log: VmEvent[];
  private logNext = 0;
  private logCount = 0;
  private readonly listeners = new Set<(e: VmEvent) => void>();
  private currentRevision = 0;

  /**
   * Names this registry's history. A registry started without its state file
   * counts revisions from the start again; watchers that resume with a
   * revision of the old epoch must start over instead of missing events.
   */
  epoch: string = randomUUID();

  constructor(options: RegistryOptions = {}) {
    this.now = options.now ?? Date.now;
    this.resolveTtlMs = options.resolveTtlMs ?? 30_000;
    const size = options.eventLogSize ?? 10_000;
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`eventLogSize must be a positive integer (got ${size})`);
    this.log = new Array<VmEvent>(size);
  }

  /** How many VMs are registered. */
  get size(): number {
    return this.vms.size;
  }

  get revision(): number {
    return this.currentRevision;
  }

  // ---- hypervisors ---------------------------------------------------------------

  registerHypervisor(h: HypervisorRecord): HypervisorRecord {
    const record = this.validateHypervisor(h);
    const existing = this.hypervisors.get(record.hypervisorId);
    if (existing && existing.vsockMode === record.vsockMode && existing.relayPort === record.relayPort) return copyHypervisor(existing);
    if (existing && existing.vsockMode !== record.vsockMode) {
      // The VMs already placed there must satisfy the new mode's CID rules too.
      for (const vm of this.vmsOn(record.hypervisorId)) {
        try {
          this.validateVm(vm, record);
        } catch (err) {
          if (!(err instanceof ValidationError)) throw err;
          throw new ValidationError('vsock_mode', `hypervisor "${record.hypervisorId}" cannot change to ${record.vsockMode} while VM "${vm.vmId}" is on it (${err.message})`);
        }
      }
    }
    this.hypervisors.set(record.hypervisorId, record);
    this.emit({ type: 'hypervisor', hypervisor: copyHypervisor(record), revision: 0 });
    return copyHypervisor(record);
  }

  private validateHypervisor(h: HypervisorRecord): HypervisorRecord {
    if (!isPlainObject(h)) throw new ValidationError('hypervisor', 'is required');
    if (typeof h.hypervisorId !== 'string' || !ID_PATTERN.test(h.hypervisorId)) throw new ValidationError('hypervisor_id', `${ID_RULE} (got ${show(h.hypervisorId)})`);
    if (!MODES.includes(h.vsockMode)) throw new ValidationError('vsock_mode', `must be host-relay, direct or loopback (got ${show(h.vsockMode)})`);
    let relayPort = 0; // only a host-relay hypervisor has a relay; anything sent for the others is ignored
    if (h.vsockMode === 'host-relay') {
      if (!isInt(h.relayPort, 1, MAX_U32_PORT)) throw new ValidationError('relay_port', `must be a vsock port 1..${MAX_U32_PORT} on a host-relay hypervisor (got ${show(h.relayPort)})`);
      relayPort = h.relayPort;
    }
    return { hypervisorId: h.hypervisorId, vsockMode: h.vsockMode, relayPort };
  }

  // ---- VMs -------------------------------------------------------------------------

  registerVm(input: VmInput, leaseTtlMs?: number): VmRecord {
    const ttl = leaseTtl(leaseTtlMs);
    const vm = this.validateVm(input);
    const leaseExpiresAt = ttl === null ? null : this.now() + ttl;
    const existing = this.vms.get(vm.vmId);
    if (!existing) {
      const record: VmRecord = { ...vm, generation: 1, leaseExpiresAt };
      this.store(record);
      this.emit({ type: 'added', vm: copyVm(record), revision: 0 });
      return copyVm(record);
    }
    if (sameContent(existing, vm)) {
      // A renewal: the lease moves, nobody watching needs to hear about it.
      existing.leaseExpiresAt = leaseExpiresAt;
      return copyVm(existing);
    }
    return this.replace(existing, { ...vm, generation: existing.generation + 1, leaseExpiresAt });
  }

  deregisterVm(vmId: string): VmRecord {
    const vm = this.vms.get(vmId);
    if (!vm) throw new NotFoundError(`VM ${show(vmId)}`);
    this.unstore(vm);
    this.emit({ type: 'removed', vm: copyVm(vm), revision: 0 });
    return copyVm(vm);
  }

  getVm(vmId: string): VmRecord | undefined {
    const vm = this.vms.get(vmId);
    return vm && copyVm(vm);
  }

  list(): { vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number } {
    return {
      vms: [...this.vms.values()].sort(vmOrder).map(copyVm),
      hypervisors: [...this.hypervisors.values()].sort(hypervisorOrder).map(copyHypervisor),
      revision: this.currentRevision,
    };
  }

  /** Live migration: the VM keeps everything but its placement (and its CID unless a new one is given). */
  moveVm(vmId: string, hypervisorId: string, vsockCid?: number): VmRecord {
    const existing = this.vms.get(vmId);
    if (!existing) throw new NotFoundError(`VM ${show(vmId)}`);
    const vm = this.validateVm({ ...existing, hypervisorId, vsockCid: vsockCid ?? existing.vsockCid });
    // Moving to where it already is changes nothing: no event, same generation.
    if (vm.hypervisorId === existing.hypervisorId && vm.vsockCid === existing.vsockCid) return copyVm(existing);
    return this.replace(existing, { ...vm, generation: existing.generation + 1, leaseExpiresAt: existing.leaseExpiresAt });
  }

  /** Swaps a changed record in: `moved` when the placement changed (vsock connections to it are dead), else `updated`. */
  private replace(previous: VmRecord, record: VmRecord): VmRecord {
    this.unstore(previous);
    this.store(record);
    if (previous.hypervisorId !== record.hypervisorId || previous.vsockCid !== record.vsockCid) {
      this.emit({ type: 'moved', vm: copyVm(record), previous: copyVm(previous), revision: 0 });
    } else {
      this.emit({ type: 'updated', vm: copyVm(record), revision: 0 });
    }
    return copyVm(record);
  }

  /**
   * Checks a VM against every rule, as if it were (re)placed now; `hypervisor`
   * stands in for its registered hypervisor record (a mode change being
   * checked). The VM's own current record never conflicts with it. Returns a
   * fresh, normalized copy holding only the known fields.
   */
  private validateVm(input: VmInput, hypervisor?: HypervisorRecord): VmInput {
    if (!isPlainObject(input)) throw new ValidationError('vm', 'is required');
    const { vmId, hypervisorId, vsockCid, addresses, sidecar, services, labels } = input;
    if (typeof vmId !== 'string' || !ID_PATTERN.test(vmId)) throw new ValidationError('vm_id', `${ID_RULE} (got ${show(vmId)})`);
    if (typeof hypervisorId !== 'string' || hypervisorId === '') throw new ValidationError('hypervisor_id', 'is required');
    const hv = hypervisor ?? this.hypervisors.get(hypervisorId);
    if (!hv) throw new ValidationError('hypervisor_id', `unknown hypervisor ${show(hypervisorId)}; register it first`);
    const others = [...this.vmsOn(hypervisorId)].filter((vm) => vm.vmId !== vmId);

    // CIDs. A loopback hypervisor is the single-host vsock_loopback topology
    // of tests and the demo: every sidecar listens at CID 1 and VMs are told
    // apart by their sidecar's vsock port, so the port is what must be unique.
    if (hv.vsockMode === 'loopback') {
      if (vsockCid !== LOOPBACK_CID) throw new ValidationError('vsock_cid', `must be 1 on loopback hypervisor "${hv.hypervisorId}" (its VMs share CID 1) (got ${show(vsockCid)})`);
    } else {
      if (!isInt(vsockCid, 3, MAX_U32_PORT)) throw new ValidationError('vsock_cid', `must be a guest context ID 3..${MAX_U32_PORT} (got ${show(vsockCid)})`);
      const clash = others.find((vm) => vm.vsockCid === vsockCid);
      if (clash) throw new ValidationError('vsock_cid', `${vsockCid} is already used by VM "${clash.vmId}" on hypervisor "${hv.hypervisorId}"`);
    }

    if (!Array.isArray(addresses) || addresses.length === 0) throw new ValidationError('addresses', 'must list at least one IP address');
    const seen = new Map<string, number>();
    addresses.forEach((address: unknown, i) => {
      const field = `addresses[${i}]`;
      if (typeof address !== 'string') throw new ValidationError(field, `must be an IP address string (got ${show(address)})`);
      const key = canonicalIp(address);
      if (key === undefined) throw new ValidationError(field, `${show(address)} is not an IPv4 or IPv6 address`);
      if (address.includes('%')) throw new ValidationError(field, `${show(address)} carries a zone; registry addresses must be global`);
      const first = seen.get(key);
      if (first !== undefined) throw new ValidationError(field, `${address} is a duplicate of addresses[${first}]`);
      seen.set(key, i);
      const owner = this.byAddress.get(key);
      if (owner !== undefined && owner !== vmId) throw new ValidationError(field, `${address} is already used by VM "${owner}"`);
    });

    let sidecarPorts: SidecarPorts | null = null;
    if (sidecar !== null && sidecar !== undefined) {
      if (!isPlainObject(sidecar)) throw new ValidationError('sidecar', 'must be null or an object with tcp_port and vsock_port');
      if (!isInt(sidecar.tcpPort, 0, 65535)) throw new ValidationError('sidecar.tcp_port', `must be an integer 0..65535 (0: none) (got ${show(sidecar.tcpPort)})`);
      if (!isInt(sidecar.vsockPort, 0, MAX_U32_PORT)) throw new ValidationError('sidecar.vsock_port', `must be an integer 0..${MAX_U32_PORT} (0: none) (got ${show(sidecar.vsockPort)})`);
      sidecarPorts = { tcpPort: sidecar.tcpPort, vsockPort: sidecar.vsockPort };
    }
    const vsockPort = sidecarPorts?.vsockPort ?? 0;
    if (hv.vsockMode === 'loopback' && vsockPort > 0) {
      const clash = others.find((vm) => vm.sidecar?.vsockPort === vsockPort);
      if (clash) throw new ValidationError('sidecar.vsock_port', `${vsockPort} is already used by VM "${clash.vmId}" on loopback hypervisor "${hv.hypervisorId}" (loopback VMs are told apart by port)`);
    }

    if (!Array.isArray(services)) throw new ValidationError('services', 'must be a list');
    const serviceNames = new Map<string, number>();
    const servicePorts: ServicePort[] = services.map((s: unknown, i) => {
      if (!isPlainObject(s)) throw new ValidationError(`services[${i}]`, 'must be an object with name and port');
      if (typeof s.name !== 'string' || s.name === '') throw new ValidationError(`services[${i}].name`, `must be a non-empty string (got ${show(s.name)})`);
      if (!isInt(s.port, 1, 65535)) throw new ValidationError(`services[${i}].port`, `must be an integer 1..65535 (got ${show(s.port)})`);
      const first = serviceNames.get(s.name);
      if (first !== undefined) throw new ValidationError(`services[${i}].name`, `"${s.name}" is a duplicate of services[${first}]`);
      serviceNames.set(s.name, i);
      return { name: s.name, port: s.port };
    });

    if (!isPlainObject(labels)) throw new ValidationError('labels', 'must be a map of strings');
    const entries = Object.entries(labels);
    if (entries.length > MAX_LABELS) throw new ValidationError('labels', `at most ${MAX_LABELS} labels (got ${entries.length})`);
    for (const [key, value] of entries) {
      if (key === '') throw new ValidationError('labels', 'label keys must not be empty');
      if (typeof value !== 'string') throw new ValidationError(`labels.${key}`, `must be a string (got ${show(value)})`);
    }

    return {
      vmId,
      hypervisorId,
      vsockCid,
      addresses: [...addresses],
      sidecar: sidecarPorts,
      services: servicePorts,
      labels: Object.fromEntries(entries) as Record<string, string>,
    };
  }

  private *vmsOn(hypervisorId: string): Iterable<VmRecord> {
    for (const id of this.byHypervisor.get(hypervisorId) ?? []) yield this.vms.get(id)!;
  }

  private store(vm: VmRecord): void {
    this.vms.set(vm.vmId, vm);
    for (const address of vm.addresses) this.byAddress.set(canonicalIp(address)!, vm.vmId);
    addTo(this.byHypervisor, vm.hypervisorId, vm.vmId);
    for (const s of vm.services) addTo(this.byService, s.name, vm.vmId);
  }

  private unstore(vm: VmRecord): void {
    this.vms.delete(vm.vmId);
    for (const address of vm.addresses) this.byAddress.delete(canonicalIp(address)!);
    removeFrom(this.byHypervisor, vm.hypervisorId, vm.vmId);
    for (const s of vm.services) removeFrom(this.byService, s.name, vm.vmId);
  }

  // ---- questions ---------------------------------------------------------------------

  resolve(callerVmId: string, destination: Destination): Resolution {
    const caller = this.vms.get(callerVmId);
    let vm: VmRecord | undefined;
    let port: number | undefined;
    switch (destination.kind) {
      case 'vm':
        vm = this.vms.get(destination.vmId);
        break;
      case 'ip':
        vm = this.vmAt(destination.ip);
        break;
      case 'ip_port':
        vm = this.vmAt(destination.ip);
        port = destination.port; // echoed even when unknown: the caller goes plain TCP to it
        break;
      case 'service': {
        vm = this.serviceProvider(destination.name, caller?.hypervisorId);
        port = vm?.services.find((s) => s.name === destination.name)!.port;
        break;
      }
    }
    const answer: Resolution = { found: vm !== undefined, sameHypervisor: false, ttlMs: this.resolveTtlMs, revision: this.currentRevision };
    if (vm) {
      answer.vm = copyVm(vm);
      answer.hypervisor = copyHypervisor(this.hypervisors.get(vm.hypervisorId)!);
      answer.sameHypervisor = caller !== undefined && caller.hypervisorId === vm.hypervisorId;
    }
    if (caller) answer.caller = copyVm(caller);
    if (port !== undefined) answer.port = port;
    return answer;
  }

  private vmAt(ip: string): VmRecord | undefined {
    const key = canonicalIp(ip);
    const id = key === undefined ? undefined : this.byAddress.get(key);
    return id === undefined ? undefined : this.vms.get(id);
  }

  /** Of the VMs serving `name`: one on the caller's hypervisor (vsock beats TCP), then the lowest vmId, so every caller gets the same answer. */
  private serviceProvider(name: string, callerHypervisorId: string | undefined): VmRecord | undefined {
    let best: VmRecord | undefined;
    for (const id of this.byService.get(name) ?? []) {
      const vm = this.vms.get(id)!;
      if (!best) {
        best = vm;
        continue;
      }
      const local = vm.hypervisorId === callerHypervisorId;
      const bestLocal = best.hypervisorId === callerHypervisorId;
      if ((local && !bestLocal) || (local === bestLocal && vm.vmId < best.vmId)) best = vm;
    }
    return best;
  }

  /** The host relay on `hypervisorId` asks whether the guest at `sourceCid` may reach `destinationCid:destinationPort`. */
  authorizeRelay(hypervisorId: string, sourceCid: number, destinationCid: number, destinationPort: number): RelayAuthorization {
    const deny = (reason: string): RelayAuthorization => ({ allowed: false, reason });
    const hv = this.hypervisors.get(hypervisorId);
    if (!hv) return deny(`unknown hypervisor ${show(hypervisorId)}`);
    if (hv.vsockMode === 'direct') return deny(`hypervisor ${hypervisorId} uses direct vsock; it has no relay`);
    const onHv = [...this.vmsOn(hypervisorId)].sort(vmOrder);
    let source: VmRecord | undefined;
    let destination: VmRecord | undefined;
    if (hv.vsockMode === 'loopback') {
      // Every guest is CID 1 on loopback, so the kernel-given CID cannot say
      // which VM is asking: any VM there will do as the source.
      if (sourceCid !== LOOPBACK_CID) return deny(`source CID ${sourceCid} is not 1; every VM on loopback hypervisor ${hypervisorId} is CID 1`);
      source = onHv[0];
      if (!source) return deny(`no VM is registered on loopback hypervisor ${hypervisorId}`);
      if (destinationCid !== LOOPBACK_CID) return deny(`destination CID ${destinationCid} is not 1; every VM on loopback hypervisor ${hypervisorId} is CID 1`);
      destination = destinationPort > 0 ? onHv.find((vm) => vm.sidecar?.vsockPort === destinationPort) : undefined;
      if (!destination) return deny(`no VM on loopback hypervisor ${hypervisorId} has sidecar vsock port ${destinationPort}`);
    } else {
      source = onHv.find((vm) => vm.vsockCid === sourceCid);
      if (!source) return deny(`no VM with source CID ${sourceCid} on hypervisor ${hypervisorId}`);
      destination = onHv.find((vm) => vm.vsockCid === destinationCid);
      if (!destination) return deny(`no VM with destination CID ${destinationCid} on hypervisor ${hypervisorId}`);
      if (source === destination) return deny(`source and destination are the same VM ${source.vmId} (CID ${sourceCid})`);
    }
    const sidecarPort = destination.sidecar?.vsockPort ?? 0;
    if (sidecarPort === 0) return deny(`VM ${destination.vmId} has no sidecar vsock listener`);
    if (destinationPort !== sidecarPort) return deny(`port ${destinationPort} is not VM ${destination.vmId}'s sidecar vsock port ${sidecarPort}`);
    return { allowed: true, source: copyVm(source), destination: copyVm(destination) };
  }

  // ---- leases ------------------------------------------------------------------------

  /** Removes every VM whose lease ran out (`removed` events, in vmId order) and returns them. */
  expireLeases(): VmRecord[] {
    const now = this.now();
    const expired = [...this.vms.values()].filter((vm) => vm.leaseExpiresAt !== null && vm.leaseExpiresAt <= now).sort(vmOrder);
    for (const vm of expired) {
      this.unstore(vm);
      this.emit({ type: 'removed', vm: copyVm(vm), revision: 0 });
    }
    return expired.map(copyVm);
  }

  /** When the next lease runs out (epoch ms), or null if no VM holds one. */
  nextLeaseExpiry(): number | null {
    let next: number | null = null;
    for (const vm of this.vms.values()) {
      if (vm.leaseExpiresAt !== null && (next === null || vm.leaseExpiresAt < next)) next = vm.leaseExpiresAt;
    }
    return next;
  }

  // ---- events ------------------------------------------------------------------------

  /** Stamps the next revision on `event`, logs it, tells subscribers. */
  private emit(event: VmEvent): void {
    this.currentRevision++;
    event.revision = this.currentRevision;
    this.log[this.logNext] = event;
    this.logNext = (this.logNext + 1) % this.log.length;
    this.logCount = Math.min(this.logCount + 1, this.log.length);
    // The change is already committed: one listener that throws must not keep
    // the others from hearing of it; its error then surfaces from the call.
    let failure: { err: unknown } | undefined;
    for (const listener of [...this.listeners]) {
      try {
        listener(copyEvent(event));
      } catch (err) {
        failure ??= { err };
      }
    }
    if (failure) throw failure.err;
  }

  /**
   * Events after `revision`, oldest first; [] when it is current; null when
   * the log no longer reaches back that far or `revision` is in the future
   * (the watcher must start over from a snapshot).
   */
  eventsSince(revision: number): VmEvent[] | null {
    if (!Number.isInteger(revision) || revision < 0 || revision > this.currentRevision) return null;
    const wanted = this.currentRevision - revision;
    if (wanted > this.logCount) return null;
    const size = this.log.length;
    const out: VmEvent[] = [];
    for (let i = wanted; i > 0; i--) out.push(copyEvent(this.log[(this.logNext - i + size) % size]!));
    return out;
  }

  /** The whole registry as events at the current revision: every hypervisor, then every VM as `added`. */
  snapshotEvents(): VmEvent[] {
    const { vms, hypervisors, revision } = this.list();
    return [...hypervisors.map((hypervisor): VmEvent => ({ type: 'hypervisor', hypervisor, revision })), ...vms.map((vm): VmEvent => ({ type: 'added', vm, revision }))];
  }

  /** `listener` is called synchronously for each new event; returns the unsubscribe function. */
  subscribe(listener: (e: VmEvent) => void): () => void {
    // A wrapper per subscription, so the same function subscribed twice is two subscriptions.
    const entry = (e: VmEvent): void => listener(e);
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  // ---- persistence -------------------------------------------------------------------

  toJSON(): PersistedState {
    const { vms, hypervisors, revision } = this.list();
    return { version: 1, epoch: this.epoch, revision, hypervisors, vms };
  }

  /**
   * A registry from a state file, every record validated again (the file may
   * have been edited or truncated by hand); errors name the record, e.g.
   * `vms[2].vsock_cid`. The revision carries on; the event log starts empty,
   * so watchers from before the restart get a snapshot.
   */
  static fromState(state: PersistedState, options?: RegistryOptions): Registry {
    if (!isPlainObject(state)) throw new ValidationError('state', 'must be an object');
    if (state.version !== 1) throw new ValidationError('version', `must be 1 (got ${show(state.version)})`);
    if (!Number.isSafeInteger(state.revision) || state.revision < 0) throw new ValidationError('revision', `must be an integer >= 0 (got ${show(state.revision)})`);
    if (!Array.isArray(state.hypervisors)) throw new ValidationError('hypervisors', 'must be a list');
    if (!Array.isArray(state.vms)) throw new ValidationError('vms', 'must be a list');
    const registry = new Registry(options);
    const within = <T>(prefix: string, fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        if (err instanceof ValidationError) throw new ValidationError(`${prefix}.${err.field}`, err.detail);
        throw err;
      }
    };
    state.hypervisors.forEach((h, i) =>
      within(`hypervisors[${i}]`, () => {
        const record = registry.validateHypervisor(h);
        if (registry.hypervisors.has(record.hypervisorId)) throw new ValidationError('hypervisor_id', `duplicate hypervisor "${record.hypervisorId}"`);
        registry.hypervisors.set(record.hypervisorId, record);
      }),
    );
    state.vms.forEach((vm, i) =>
      within(`vms[${i}]`, () => {
        const input = registry.validateVm(vm);
        if (registry.vms.has(input.vmId)) throw new ValidationError('vm_id', `duplicate VM "${input.vmId}"`);
        if (!Number.isSafeInteger(vm.generation) || vm.generation < 1) throw new ValidationError('generation', `must be an integer >= 1 (got ${show(vm.generation)})`);
        if (vm.leaseExpiresAt !== null && !Number.isSafeInteger(vm.leaseExpiresAt)) throw new ValidationError('lease_expires_at', `must be null or epoch milliseconds (got ${show(vm.leaseExpiresAt)})`);
        registry.store({ ...input, generation: vm.generation, leaseExpiresAt: vm.leaseExpiresAt });
      }),
    );
    registry.currentRevision = state.revision;
    if (typeof state.epoch === 'string' && state.epoch !== '') registry.epoch = state.epoch;
    return registry;
  }
}

function addTo(index: Map<string, Set<string>>, key: string, id: string): void {
  let ids = index.get(key);
  if (!ids) index.set(key, (ids = new Set()));
  ids.add(id);
}

function removeFrom(index: Map<string, Set<string>>, key: string, id: string): void {
  const ids = index.get(key);
  ids?.delete(id);
  if (ids?.size === 0) index.delete(key);
}
