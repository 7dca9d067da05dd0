// The VM manager's registry: hypervisors and VMs, the rules that keep their
// placement consistent, and the answers sidecars and host relays ask for.
// Pure logic: no I/O and no timers (the clock is injected), so every rule is
// tested without a server; the gRPC server and the state files sit around it.
//
// Every change of state is one RegistryChange (a hypervisor record, a VM
// record, or a VM removed) applied by one function: the server plans a
// request on a registry that holds what is durable plus what is being
// written, writes the changes it made to the state log, and only then applies
// them to the registry everyone reads; start-up replays the same changes.
// Stored records are frozen: the two registries share them.

import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { NotFoundError, VsockmeshError } from '../../proxy/runtime/errors.js';
import { formatIPv4, formatIPv6, parseIPv6 } from '../../proxy/runtime/ip-address.js';
import {
  MAX_ADDRESSES_PER_VM,
  MAX_EPOCH_CHARS,
  MAX_HYPERVISORS,
  MAX_ID_CHARS,
  MAX_IP_CHARS,
  MAX_LABEL_BYTES_PER_VM,
  MAX_LABEL_KEY_BYTES,
  MAX_LABEL_VALUE_BYTES,
  MAX_LABELS_PER_VM,
  MAX_LEASE_TTL_MS,
  MAX_SERVICE_NAME_CHARS,
  MAX_SERVICES_PER_VM,
  MAX_VMS,
  MIN_LEASE_TTL_MS,
  show,
  utf8Bytes,
} from './bounds.js';
import type { Destination, HypervisorRecord, RelayAuthorization, RelayRequest, Resolution, ServicePort, SidecarPorts, VmEvent, VmRecord, VsockMode } from '../../proxy/resolve/types.js';

/** A request or file breaks a registry rule; `field` is the snake_case wire name (`vsock_cid`, `addresses[1]`). */
export class ValidationError extends VsockmeshError {
  /** The message without the field, for callers that re-prefix the field (`vms[2].vsock_cid`). */
  readonly detail: string;
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('INVALID_ARGUMENT', `${field}: ${message}`);
    this.detail = message;
  }
}

/** The registry is at its capacity. */
export class CapacityError extends VsockmeshError {
  constructor(message: string) {
    super('RESOURCE_EXHAUSTED', message);
  }
}

export type VmInput = Omit<VmRecord, 'generation' | 'leaseExpiresAt'>;

/**
 * One change of the registry, with the revision the registry is at after it
 * (a lease renewal changes a record without a revision). The state log holds
 * these, one JSON line each.
 */
export type RegistryChange = { revision: number } & ({ hypervisor: HypervisorRecord } | { vm: VmRecord } | { removed: string });

type ChangeBody = { hypervisor: HypervisorRecord } | { vm: VmRecord } | { removed: string };

export interface RegistryOptions {
  now?: () => number;
  /** How long a Resolution may be cached (default 30 s). */
  resolveTtlMs?: number;
  /** How many events eventsSince can reach back (default 10,000). */
  eventLogSize?: number;
  /** How many VMs and hypervisors it takes (default MAX_VMS, MAX_HYPERVISORS). */
  capacity?: { vms?: number; hypervisors?: number };
}

/** The single-JSON state file of earlier versions (read to migrate it). */
export interface PersistedState {
  version: 1;
  /** Which history `revision` counts in; absent in older files (a new one is made). */
  epoch?: string;
  revision: number;
  hypervisors: HypervisorRecord[];
  vms: VmRecord[];
}

/** A position in ListVms' order: every hypervisor by id, then every VM by id. */
export type ListPosition = { kind: 'hypervisor' | 'vm'; id: string };
export type ListItem = { kind: 'hypervisor'; hypervisor: HypervisorRecord } | { kind: 'vm'; vm: VmRecord };

const MAX_U32_PORT = 0xfffffffe; // 0xFFFFFFFF is VMADDR_PORT_ANY / VMADDR_CID_ANY
const ID_PATTERN = /^[A-Za-z0-9._-]+$/;
const ID_RULE = `must be 1-${MAX_ID_CHARS} characters of letters, digits, ".", "_" or "-"`;
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_LABEL_RULE = `must be a DNS label: 1-${MAX_SERVICE_NAME_CHARS} lowercase letters, digits or "-", starting and ending with a letter or digit`;
const MODES: readonly VsockMode[] = ['host-relay', 'direct', 'loopback'];
/** Loopback hypervisors: every VM is at VMADDR_CID_LOCAL. */
const LOOPBACK_CID = 1;

// ---- small helpers -------------------------------------------------------------

const isInt = (v: unknown, min: number, max: number): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** An id (vm_id, hypervisor_id): the length first, so a 4 MB id is refused by its size. */
function checkId(field: string, value: unknown): string {
  if (typeof value === 'string' && value.length > MAX_ID_CHARS) throw new ValidationError(field, `is ${value.length} characters, at most ${MAX_ID_CHARS}`);
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) throw new ValidationError(field, `${ID_RULE} (got ${show(value)})`);
  return value;
}

/** A string argument of a lookup (Resolve, GetVm, ...): any content, bounded length. */
function checkLength(field: string, value: string, max: number): void {
  if (value.length > max) throw new ValidationError(field, `is ${value.length} characters, at most ${max}`);
}

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

/** A stored record: a fresh copy, frozen all the way down. */
function frozenVm(vm: VmRecord): VmRecord {
  const record = copyVm(vm);
  Object.freeze(record.addresses);
  if (record.sidecar) Object.freeze(record.sidecar);
  for (const s of record.services) Object.freeze(s);
  Object.freeze(record.services);
  Object.freeze(record.labels);
  return Object.freeze(record);
}

function copyEvent(e: VmEvent): VmEvent {
  switch (e.type) {
    case 'hypervisor':
    case 'hypervisor-removed':
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

/** Index of the first id in sorted `ids` greater than `after`. */
function firstAfter(ids: readonly string[], after: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Lease TTL in ms, or null for no lease (undefined or 0). */
function leaseTtl(ttl: number | undefined): number | null {
  if (ttl === undefined || ttl === 0) return null;
  if (!Number.isInteger(ttl) || ttl < MIN_LEASE_TTL_MS || ttl > MAX_LEASE_TTL_MS) {
    throw new ValidationError('lease_ttl', `must be 0 (no lease) or an integer number of milliseconds ${MIN_LEASE_TTL_MS}..${MAX_LEASE_TTL_MS} (got ${show(ttl)})`);
  }
  return ttl;
}

/** Checks a Resolve destination's arguments against their bounds. */
function checkDestination(d: Destination): void {
  switch (d.kind) {
    case 'ip':
      checkLength('ip', d.ip, MAX_IP_CHARS);
      break;
    case 'ip_port':
      checkLength('ip_port.ip', d.ip, MAX_IP_CHARS);
      if (!isInt(d.port, 1, 65535)) throw new ValidationError('ip_port.port', `must be an integer 1..65535 (got ${show(d.port)})`);
      break;
    case 'vm':
      checkLength('vm_id', d.vmId, MAX_ID_CHARS);
      break;
    case 'service':
      checkLength('service', d.name, MAX_SERVICE_NAME_CHARS);
      break;
  }
}

/** Watch's epoch argument. */
export function checkEpoch(epoch: string): void {
  checkLength('epoch', epoch, MAX_EPOCH_CHARS);
}

// ---- the registry --------------------------------------------------------------

export class Registry {
  private readonly now: () => number;
  private readonly resolveTtlMs: number;
  private readonly eventLogSize: number;
  private readonly capacity: { vms: number; hypervisors: number };
  private readonly hypervisors = new Map<string, HypervisorRecord>();
  private readonly vms = new Map<string, VmRecord>();
  // Indexes kept in step with `vms` by store()/unstore(): Resolve and
  // AuthorizeRelay run per connection, and a registration's checks must not
  // scan the registry either (its cost must not grow with it).
  private readonly byAddress = new Map<string, string>();
  private readonly byHypervisor = new Map<string, Set<string>>();
  private readonly byService = new Map<string, Set<string>>();
  /** `hypervisor\0cid` -> VM, on host-relay and direct hypervisors (where the CID is unique). */
  private readonly byCid = new Map<string, string>();
  /** `hypervisor\0vsock port` -> VM, on loopback hypervisors (where the port tells VMs apart). */
  private readonly byLoopbackPort = new Map<string, string>();
  /** Ids in order, for ListVms; remade when an id comes or goes. */
  private sortedVmIds: string[] | undefined;
  private sortedHypervisorIds: string[] | undefined;
  // Event log: a ring of the newest events, in revision order. On its own a
  // registry makes one revision per event; fed by a store (applyStored) the
  // revisions are the store's, with gaps. The log holds every event after
  // `logStart`.
  private readonly log: VmEvent[];
  private logNext = 0;
  private logCount = 0;
  private logStart = 0;
  /** The store revision the change being applied carries (applyStored). */
  private storedRevision: number | undefined;
  private readonly listeners = new Set<(e: VmEvent) => void>();
  private currentRevision = 0;
  private recorder: ((change: RegistryChange) => void) | undefined;
  private applied = 0;

  /**
   * Names this registry's history. A registry started without its state file
   * counts revisions from the start again; watchers that resume with a
   * revision of the old epoch must start over instead of missing events.
   */
  epoch: string = randomUUID();

  constructor(options: RegistryOptions = {}) {
    this.now = options.now ?? Date.now;
    this.resolveTtlMs = options.resolveTtlMs ?? 30_000;
    this.eventLogSize = options.eventLogSize ?? 10_000;
    if (!Number.isInteger(this.eventLogSize) || this.eventLogSize < 1) throw new RangeError(`eventLogSize must be a positive integer (got ${this.eventLogSize})`);
    this.log = new Array<VmEvent>(this.eventLogSize);
    this.capacity = { vms: options.capacity?.vms ?? MAX_VMS, hypervisors: options.capacity?.hypervisors ?? MAX_HYPERVISORS };
  }

  /** How many VMs are registered. */
  get size(): number {
    return this.vms.size;
  }

  get revision(): number {
    return this.currentRevision;
  }

  /** Changes applied so far, renewals included (the server notices by it that a registry was changed behind its back). */
  get changeCount(): number {
    return this.applied;
  }

  /**
   * A registry holding the same records, revision and epoch (records are
   * frozen and shared), with no event log history and no subscribers: the
   * server plans changes on it before they are durable.
   */
  clone(): Registry {
    const copy = new Registry({ now: this.now, resolveTtlMs: this.resolveTtlMs, eventLogSize: 1, capacity: this.capacity });
    copy.epoch = this.epoch;
    copy.currentRevision = this.currentRevision;
    for (const h of this.hypervisors.values()) copy.hypervisors.set(h.hypervisorId, h);
    for (const vm of this.vms.values()) copy.store(vm);
    return copy;
  }

  // ---- changes -------------------------------------------------------------------

  /** Runs `fn` and returns what it changed, in order (nothing when it throws: every mutation checks before it changes). */
  recordChanges<T>(fn: () => T): { result: T; changes: RegistryChange[] } {
    if (this.recorder) throw new Error('recordChanges does not nest');
    const changes: RegistryChange[] = [];
    this.recorder = (c) => changes.push(c);
    try {
      return { result: fn(), changes };
    } finally {
      this.recorder = undefined;
    }
  }

  /**
   * Applies a change planned on a registry that held the same state (the
   * server's planning registry): emits its event, trusts its content.
   */
  apply(change: RegistryChange): void {
    this.applyBody(change);
    if (this.currentRevision !== change.revision) throw new Error(`registry out of step: at revision ${this.currentRevision} after a change planned for ${change.revision}`);
  }

  /**
   * Applies a record read from a store (registry-store.ts), checked like a
   * replayed change, at the store's revision (revisions then have gaps, and
   * may be shared by the changes of one transaction). A change that breaks a
   * rule applies nothing; the revision still moves on (advanceTo).
   */
  applyStored(input: unknown, revision: number): void {
    this.storedRevision = revision;
    try {
      const body = this.checkedChange(input);
      this.applyBody(body);
    } finally {
      this.storedRevision = undefined;
      this.advanceTo(revision);
    }
  }

  /**
   * The registry is now at store revision `revision` (events under other
   * prefixes, or none of ours). `forget`: what came before is not in the
   * event log (the store's history was read again as a whole).
   */
  advanceTo(revision: number, forget = false): void {
    if (revision > this.currentRevision) this.currentRevision = revision;
    if (forget) this.logStart = this.currentRevision;
  }

  /**
   * Applies a change read from the state log, checked against every rule
   * first (the file may have been edited or damaged); errors name the field.
   */
  replay(input: unknown): void {
    if (!isPlainObject(input)) throw new ValidationError('change', 'must be an object');
    const { revision } = input;
    if (!Number.isSafeInteger(revision)) throw new ValidationError('revision', `must be an integer (got ${show(revision)})`);
    const body = this.checkedChange(input);
    const before = this.currentRevision;
    this.applyBody(body);
    if (this.currentRevision !== revision) {
      throw new ValidationError('revision', `is ${revision}, but the change brings the registry from ${before} to ${this.currentRevision}`);
    }
  }

  /** A stored change (state log line, store record) checked against every rule; errors name the field. */
  private checkedChange(input: unknown): ChangeBody {
    if (!isPlainObject(input)) throw new ValidationError('change', 'must be an object');
    let body: ChangeBody;
    if ('hypervisor' in input) {
      const record = within('hypervisor', () => this.validateHypervisor(input.hypervisor as HypervisorRecord));
      within('hypervisor', () => this.checkModeChange(record));
      body = { hypervisor: record };
    } else if ('vm' in input) {
      body = { vm: within('vm', () => this.validateStoredVm(input.vm as VmRecord)) };
    } else if ('removed' in input) {
      if (typeof input.removed !== 'string' || !this.vms.has(input.removed)) throw new ValidationError('removed', `no VM ${show(input.removed)} to remove`);
      body = { removed: input.removed };
    } else {
      throw new ValidationError('change', 'must hold one of hypervisor, vm, removed');
    }
    return body;
  }

  /** The one place state changes: stores the record, emits its event, tells the recorder. */
  private applyBody(change: ChangeBody): void {
    this.applied++;
    if ('hypervisor' in change) {
      const record = Object.freeze(copyHypervisor(change.hypervisor));
      if (!this.hypervisors.has(record.hypervisorId)) this.sortedHypervisorIds = undefined;
      this.hypervisors.set(record.hypervisorId, record);
      this.emit({ type: 'hypervisor', hypervisor: record, revision: 0 });
    } else if ('vm' in change) {
      const record = Object.isFrozen(change.vm) ? change.vm : frozenVm(change.vm);
      const previous = this.vms.get(record.vmId);
      if (!previous) {
        this.store(record);
        this.emit({ type: 'added', vm: record, revision: 0 });
      } else if (sameContent(previous, record)) {
        // A renewal: the lease moves, nobody watching needs to hear about it.
        this.vms.set(record.vmId, record);
      } else {
        const order = this.sortedVmIds; // the id stays: so does the order
        this.unstore(previous);
        this.store(record);
        this.sortedVmIds = order;
        const moved = previous.hypervisorId !== record.hypervisorId || previous.vsockCid !== record.vsockCid;
        // `moved`: the placement changed (vsock connections to it are dead); else `updated`.
        this.emit(moved ? { type: 'moved', vm: record, previous, revision: 0 } : { type: 'updated', vm: record, revision: 0 });
      }
    } else {
      const vm = this.vms.get(change.removed);
      if (!vm) throw new NotFoundError(`VM ${show(change.removed)}`);
      this.unstore(vm);
      this.emit({ type: 'removed', vm, revision: 0 });
    }
    this.recorder?.({ ...change, revision: this.currentRevision });
  }

  // ---- hypervisors ---------------------------------------------------------------

  registerHypervisor(h: HypervisorRecord): HypervisorRecord {
    const record = this.validateHypervisor(h);
    const existing = this.hypervisors.get(record.hypervisorId);
    if (existing && existing.vsockMode === record.vsockMode && existing.relayPort === record.relayPort) return copyHypervisor(existing);
    if (!existing && this.hypervisors.size >= this.capacity.hypervisors) {
      throw new CapacityError(`hypervisor_id: the registry holds ${this.hypervisors.size} hypervisors, at most ${this.capacity.hypervisors}`);
    }
    this.checkModeChange(record);
    this.applyBody({ hypervisor: record });
    return copyHypervisor(record);
  }

  hasHypervisor(hypervisorId: string): boolean {
    return this.hypervisors.has(hypervisorId);
  }

  /**
   * A hypervisor record deleted in the store (registry-store.ts), at the
   * store's revision: the hypervisor goes, and the VMs on it with it
   * (`removed` events, in vmId order): without their hypervisor they break
   * its rules (a registry read afresh from the store leaves them out too),
   * and no answer may place them on it (same hypervisor, its vsock mode and
   * relay). Then the hypervisor's own `hypervisor-removed` event, at the same
   * revision: mirrors following over Watch drop it too. Returns those VMs;
   * nothing when it is not here.
   */
  removeStoredHypervisor(hypervisorId: string, revision: number): VmRecord[] {
    const removed = [...this.vmsOn(hypervisorId)].sort(vmOrder);
    this.storedRevision = revision;
    try {
      // Before the hypervisor: a VM's placement index depends on its hypervisor's mode.
      for (const vm of removed) this.applyBody({ removed: vm.vmId });
      const hypervisor = this.hypervisors.get(hypervisorId);
      if (hypervisor !== undefined) {
        this.hypervisors.delete(hypervisorId);
        this.sortedHypervisorIds = undefined;
        this.applied++;
        this.emit({ type: 'hypervisor-removed', hypervisor, revision: 0 });
      }
    } finally {
      this.storedRevision = undefined;
      this.advanceTo(revision);
    }
    return removed.map(copyVm);
  }

  /** The VMs already placed on a hypervisor must satisfy its new mode's CID rules too. */
  private checkModeChange(record: HypervisorRecord): void {
    const existing = this.hypervisors.get(record.hypervisorId);
    if (!existing || existing.vsockMode === record.vsockMode) return;
    for (const vm of this.vmsOn(record.hypervisorId)) {
      try {
        this.validateVm(vm, record);
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        throw new ValidationError('vsock_mode', `hypervisor "${record.hypervisorId}" cannot change to ${record.vsockMode} while VM "${vm.vmId}" is on it (${err.message})`);
      }
    }
  }

  private validateHypervisor(h: HypervisorRecord): HypervisorRecord {
    if (!isPlainObject(h)) throw new ValidationError('hypervisor', 'is required');
    const hypervisorId = checkId('hypervisor_id', h.hypervisorId);
    if (!MODES.includes(h.vsockMode)) throw new ValidationError('vsock_mode', `must be host-relay, direct or loopback (got ${show(h.vsockMode)})`);
    let relayPort = 0; // only a host-relay hypervisor has a relay; anything sent for the others is ignored
    if (h.vsockMode === 'host-relay') {
      if (!isInt(h.relayPort, 1, MAX_U32_PORT)) throw new ValidationError('relay_port', `must be a vsock port 1..${MAX_U32_PORT} on a host-relay hypervisor (got ${show(h.relayPort)})`);
      relayPort = h.relayPort;
    }
    return { hypervisorId, vsockMode: h.vsockMode, relayPort };
  }

  // ---- VMs -------------------------------------------------------------------------

  registerVm(input: VmInput, leaseTtlMs?: number): VmRecord {
    const ttl = leaseTtl(leaseTtlMs);
    const vm = this.validateVm(input);
    const leaseExpiresAt = ttl === null ? null : this.now() + ttl;
    const existing = this.vms.get(vm.vmId);
    if (!existing && this.vms.size >= this.capacity.vms) throw new CapacityError(`vm_id: the registry holds ${this.vms.size} VMs, at most ${this.capacity.vms}`);
    const same = existing !== undefined && sameContent(existing, vm);
    // The same record again (no lease, or the same expiry): nothing to store, nothing to write.
    if (same && existing.leaseExpiresAt === leaseExpiresAt) return copyVm(existing);
    // A renewal keeps the generation; a change bumps it.
    const generation = !existing ? 1 : same ? existing.generation : existing.generation + 1;
    const record = frozenVm({ ...vm, generation, leaseExpiresAt });
    this.applyBody({ vm: record });
    return copyVm(record);
  }

  deregisterVm(vmId: string): VmRecord {
    checkLength('vm_id', vmId, MAX_ID_CHARS);
    const vm = this.vms.get(vmId);
    if (!vm) throw new NotFoundError(`VM ${show(vmId)}`);
    this.applyBody({ removed: vmId });
    return copyVm(vm);
  }

  getVm(vmId: string): VmRecord | undefined {
    checkLength('vm_id', vmId, MAX_ID_CHARS);
    const vm = this.vms.get(vmId);
    return vm && copyVm(vm);
  }

  list(): { vms: VmRecord[]; hypervisors: HypervisorRecord[]; revision: number } {
    return {
      vms: this.vmIdsInOrder().map((id) => copyVm(this.vms.get(id)!)),
      hypervisors: this.hypervisorIdsInOrder().map((id) => copyHypervisor(this.hypervisors.get(id)!)),
      revision: this.currentRevision,
    };
  }

  /** ListVms' order from just after `after` (null: the start): every hypervisor by id, then every VM by id; copies. */
  *listAfter(after: ListPosition | null): Generator<ListItem> {
    const hypervisorIds = this.hypervisorIdsInOrder();
    if (after === null || after.kind === 'hypervisor') {
      for (let i = after === null ? 0 : firstAfter(hypervisorIds, after.id); i < hypervisorIds.length; i++) {
        yield { kind: 'hypervisor', hypervisor: copyHypervisor(this.hypervisors.get(hypervisorIds[i]!)!) };
      }
    }
    const vmIds = this.vmIdsInOrder();
    for (let i = after?.kind === 'vm' ? firstAfter(vmIds, after.id) : 0; i < vmIds.length; i++) {
      const vm = this.vms.get(vmIds[i]!);
      // The generator may be resumed after a change; a VM removed meanwhile is skipped.
      if (vm) yield { kind: 'vm', vm: copyVm(vm) };
    }
  }

  private vmIdsInOrder(): string[] {
    this.sortedVmIds ??= [...this.vms.keys()].sort();
    return this.sortedVmIds;
  }

  private hypervisorIdsInOrder(): string[] {
    this.sortedHypervisorIds ??= [...this.hypervisors.keys()].sort();
    return this.sortedHypervisorIds;
  }

  /**
   * Every record as stored (frozen, shared: not copies), with the revision
   * and epoch: what a snapshot of the state is written from.
   */
  records(): { epoch: string; revision: number; hypervisors: HypervisorRecord[]; vms: VmRecord[] } {
    return { epoch: this.epoch, revision: this.currentRevision, hypervisors: [...this.hypervisors.values()], vms: [...this.vms.values()] };
  }

  /** Live migration: the VM keeps everything but its placement (and its CID unless a new one is given). */
  moveVm(vmId: string, hypervisorId: string, vsockCid?: number): VmRecord {
    checkLength('vm_id', vmId, MAX_ID_CHARS);
    const existing = this.vms.get(vmId);
    if (!existing) throw new NotFoundError(`VM ${show(vmId)}`);
    const vm = this.validateVm({ ...existing, hypervisorId, vsockCid: vsockCid ?? existing.vsockCid });
    // Moving to where it already is changes nothing: no event, same generation.
    if (vm.hypervisorId === existing.hypervisorId && vm.vsockCid === existing.vsockCid) return copyVm(existing);
    const record = frozenVm({ ...vm, generation: existing.generation + 1, leaseExpiresAt: existing.leaseExpiresAt });
    this.applyBody({ vm: record });
    return copyVm(record);
  }

  /**
   * Checks a VM against every rule and bound, as if it were (re)placed now;
   * `hypervisor` stands in for its registered hypervisor record (a mode
   * change being checked). The VM's own current record never conflicts with
   * it. Returns a fresh, normalized copy holding only the known fields.
   */
  private validateVm(input: VmInput, hypervisor?: HypervisorRecord): VmInput {
    if (!isPlainObject(input)) throw new ValidationError('vm', 'is required');
    const { vsockCid, addresses, sidecar, services, labels } = input;
    const vmId = checkId('vm_id', input.vmId);
    const { hypervisorId } = input;
    if (typeof hypervisorId !== 'string' || hypervisorId === '') throw new ValidationError('hypervisor_id', 'is required');
    checkLength('hypervisor_id', hypervisorId, MAX_ID_CHARS);
    const hv = hypervisor ?? this.hypervisors.get(hypervisorId);
    if (!hv) throw new ValidationError('hypervisor_id', `unknown hypervisor ${show(hypervisorId)}; register it first`);
    const ownedByOther = (owner: string | undefined): owner is string => owner !== undefined && owner !== vmId;

    // CIDs. A loopback hypervisor is the single-host vsock_loopback topology
    // of tests and the demo: every sidecar listens at CID 1 and VMs are told
    // apart by their sidecar's vsock port, so the port is what must be unique.
    if (hv.vsockMode === 'loopback') {
      if (vsockCid !== LOOPBACK_CID) throw new ValidationError('vsock_cid', `must be 1 on loopback hypervisor "${hv.hypervisorId}" (its VMs share CID 1) (got ${show(vsockCid)})`);
    } else {
      if (!isInt(vsockCid, 3, MAX_U32_PORT)) throw new ValidationError('vsock_cid', `must be a guest context ID 3..${MAX_U32_PORT} (got ${show(vsockCid)})`);
      const owner = this.byCid.get(`${hypervisorId}\0${vsockCid}`);
      if (ownedByOther(owner)) throw new ValidationError('vsock_cid', `${vsockCid} is already used by VM "${owner}" on hypervisor "${hv.hypervisorId}"`);
    }

    if (!Array.isArray(addresses) || addresses.length === 0) throw new ValidationError('addresses', 'must list at least one IP address');
    if (addresses.length > MAX_ADDRESSES_PER_VM) throw new ValidationError('addresses', `${addresses.length} addresses, at most ${MAX_ADDRESSES_PER_VM}`);
    const seen = new Map<string, number>();
    addresses.forEach((address: unknown, i) => {
      const field = `addresses[${i}]`;
      if (typeof address !== 'string') throw new ValidationError(field, `must be an IP address string (got ${show(address)})`);
      checkLength(field, address, MAX_IP_CHARS);
      const key = canonicalIp(address);
      if (key === undefined) throw new ValidationError(field, `${show(address)} is not an IPv4 or IPv6 address`);
      if (address.includes('%')) throw new ValidationError(field, `${show(address)} carries a zone; registry addresses must be global`);
      const first = seen.get(key);
      if (first !== undefined) throw new ValidationError(field, `${address} is a duplicate of addresses[${first}]`);
      seen.set(key, i);
      const owner = this.byAddress.get(key);
      if (ownedByOther(owner)) throw new ValidationError(field, `${address} is already used by VM "${owner}"`);
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
      const owner = this.byLoopbackPort.get(`${hypervisorId}\0${vsockPort}`);
      if (ownedByOther(owner)) throw new ValidationError('sidecar.vsock_port', `${vsockPort} is already used by VM "${owner}" on loopback hypervisor "${hv.hypervisorId}" (loopback VMs are told apart by port)`);
    }

    if (!Array.isArray(services)) throw new ValidationError('services', 'must be a list');
    if (services.length > MAX_SERVICES_PER_VM) throw new ValidationError('services', `${services.length} services, at most ${MAX_SERVICES_PER_VM}`);
    const serviceNames = new Map<string, number>();
    const servicePorts: ServicePort[] = services.map((s: unknown, i) => {
      if (!isPlainObject(s)) throw new ValidationError(`services[${i}]`, 'must be an object with name and port');
      if (typeof s.name !== 'string' || s.name === '') throw new ValidationError(`services[${i}].name`, `must be a non-empty string (got ${show(s.name)})`);
      checkLength(`services[${i}].name`, s.name, MAX_SERVICE_NAME_CHARS);
      if (!DNS_LABEL.test(s.name)) throw new ValidationError(`services[${i}].name`, `${DNS_LABEL_RULE} (got ${show(s.name)})`);
      if (!isInt(s.port, 1, 65535)) throw new ValidationError(`services[${i}].port`, `must be an integer 1..65535 (got ${show(s.port)})`);
      const first = serviceNames.get(s.name);
      if (first !== undefined) throw new ValidationError(`services[${i}].name`, `"${s.name}" is a duplicate of services[${first}]`);
      serviceNames.set(s.name, i);
      return { name: s.name, port: s.port };
    });

    return { vmId, hypervisorId, vsockCid, addresses: [...addresses], sidecar: sidecarPorts, services: servicePorts, labels: checkLabels(labels) };
  }

  /** A whole stored record (from a state file): the rules, then its generation and lease. */
  private validateStoredVm(vm: VmRecord): VmRecord {
    const input = this.validateVm(vm);
    if (!Number.isSafeInteger(vm.generation) || vm.generation < 1) throw new ValidationError('generation', `must be an integer >= 1 (got ${show(vm.generation)})`);
    if (vm.leaseExpiresAt !== null && !Number.isSafeInteger(vm.leaseExpiresAt)) throw new ValidationError('lease_expires_at', `must be null or epoch milliseconds (got ${show(vm.leaseExpiresAt)})`);
    return frozenVm({ ...input, generation: vm.generation, leaseExpiresAt: vm.leaseExpiresAt });
  }

  private *vmsOn(hypervisorId: string): Iterable<VmRecord> {
    for (const id of this.byHypervisor.get(hypervisorId) ?? []) yield this.vms.get(id)!;
  }

  private store(vm: VmRecord): void {
    if (!this.vms.has(vm.vmId)) this.sortedVmIds = undefined;
    this.vms.set(vm.vmId, vm);
    for (const address of vm.addresses) this.byAddress.set(canonicalIp(address)!, vm.vmId);
    addTo(this.byHypervisor, vm.hypervisorId, vm.vmId);
    for (const s of vm.services) addTo(this.byService, s.name, vm.vmId);
    const placement = this.placementKey(vm);
    if (placement) placement.index.set(placement.key, vm.vmId);
  }

  private unstore(vm: VmRecord): void {
    this.vms.delete(vm.vmId);
    this.sortedVmIds = undefined;
    for (const address of vm.addresses) this.byAddress.delete(canonicalIp(address)!);
    removeFrom(this.byHypervisor, vm.hypervisorId, vm.vmId);
    for (const s of vm.services) removeFrom(this.byService, s.name, vm.vmId);
    const placement = this.placementKey(vm);
    if (placement && placement.index.get(placement.key) === vm.vmId) placement.index.delete(placement.key);
  }

  /**
   * Where a VM's unique placement is indexed: its CID, or on a loopback
   * hypervisor its sidecar vsock port (none without one). A hypervisor's mode
   * cannot change between loopback and the others while VMs are on it (their
   * CIDs would break the rules), so the choice stays valid for the VM's life.
   */
  private placementKey(vm: VmRecord): { index: Map<string, string>; key: string } | undefined {
    if (this.hypervisors.get(vm.hypervisorId)?.vsockMode !== 'loopback') return { index: this.byCid, key: `${vm.hypervisorId}\0${vm.vsockCid}` };
    const port = vm.sidecar?.vsockPort ?? 0;
    return port > 0 ? { index: this.byLoopbackPort, key: `${vm.hypervisorId}\0${port}` } : undefined;
  }

  // ---- questions ---------------------------------------------------------------------

  resolve(callerVmId: string, destination: Destination): Resolution {
    checkLength('caller_vm_id', callerVmId, MAX_ID_CHARS);
    checkDestination(destination);
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

  /** The host relay on `hypervisorId` asks whether the guest at `sourceCid` may reach `destination`. */
  authorizeRelay(request: RelayRequest): RelayAuthorization {
    const { hypervisorId, sourceCid } = request;
    const { cid: destinationCid, port: destinationPort } = request.destination;
    checkLength('hypervisor_id', hypervisorId, MAX_ID_CHARS);
    const deny = (reason: string): RelayAuthorization => ({ allowed: false, reason });
    const hv = this.hypervisors.get(hypervisorId);
    if (!hv) return deny(`unknown hypervisor ${show(hypervisorId)}`);
    if (hv.vsockMode === 'direct') return deny(`hypervisor ${hypervisorId} uses direct vsock; it has no relay`);
    const at = (index: Map<string, string>, key: number): VmRecord | undefined => {
      const id = index.get(`${hypervisorId}\0${key}`);
      return id === undefined ? undefined : this.vms.get(id);
    };
    let source: VmRecord | undefined;
    let destination: VmRecord | undefined;
    if (hv.vsockMode === 'loopback') {
      // Every guest is CID 1 on loopback, so the kernel-given CID cannot say
      // which VM is asking: any VM there will do as the source.
      if (sourceCid !== LOOPBACK_CID) return deny(`source CID ${sourceCid} is not 1; every VM on loopback hypervisor ${hypervisorId} is CID 1`);
      source = [...this.vmsOn(hypervisorId)].sort(vmOrder)[0];
      if (!source) return deny(`no VM is registered on loopback hypervisor ${hypervisorId}`);
      if (destinationCid !== LOOPBACK_CID) return deny(`destination CID ${destinationCid} is not 1; every VM on loopback hypervisor ${hypervisorId} is CID 1`);
      destination = destinationPort > 0 ? at(this.byLoopbackPort, destinationPort) : undefined;
      if (!destination) return deny(`no VM on loopback hypervisor ${hypervisorId} has sidecar vsock port ${destinationPort}`);
    } else {
      source = at(this.byCid, sourceCid);
      if (!source) return deny(`no VM with source CID ${sourceCid} on hypervisor ${hypervisorId}`);
      destination = at(this.byCid, destinationCid);
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
    for (const vm of expired) this.applyBody({ removed: vm.vmId });
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
  /**
   * Logs `event` and tells the listeners. Its records are the stored ones,
   * frozen, shared by reference (a VM's record is not held again per event:
   * the log of 10,000 events held a copy of every seeded VM); listeners and
   * eventsSince get copies of their own.
   */
  private emit(event: VmEvent): void {
    this.currentRevision = this.storedRevision ?? this.currentRevision + 1;
    event.revision = this.currentRevision;
    // The event it overwrites leaves the log: resuming after its revision is no longer possible.
    if (this.logCount === this.log.length) this.logStart = this.log[this.logNext]!.revision;
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
    if (!this.hasEventsSince(revision)) return null;
    const size = this.log.length;
    let wanted = 0;
    while (wanted < this.logCount && this.log[(this.logNext - wanted - 1 + size) % size]!.revision > revision) wanted++;
    const out: VmEvent[] = [];
    for (let i = wanted; i > 0; i--) out.push(copyEvent(this.log[(this.logNext - i + size) % size]!));
    return out;
  }

  /**
   * The events that take `past` (this registry's state at an earlier
   * revision) to this one, all at the current revision: changed or new
   * hypervisors, VMs added, moved, updated (in vmId order), then removed,
   * then the hypervisors gone (`hypervisor-removed`, after their VMs).
   * What a Watch from a revision whose events were not seen one by one gets.
   */
  eventsFrom(past: Registry): VmEvent[] {
    const revision = this.currentRevision;
    const events: VmEvent[] = [];
    for (const id of this.hypervisorIdsInOrder()) {
      const now = this.hypervisors.get(id)!;
      const then = past.hypervisors.get(id);
      if (!then || then.vsockMode !== now.vsockMode || then.relayPort !== now.relayPort) events.push({ type: 'hypervisor', hypervisor: copyHypervisor(now), revision });
    }
    for (const id of this.vmIdsInOrder()) {
      const now = this.vms.get(id)!;
      const then = past.vms.get(id);
      if (!then) events.push({ type: 'added', vm: copyVm(now), revision });
      else if (then.hypervisorId !== now.hypervisorId || then.vsockCid !== now.vsockCid) events.push({ type: 'moved', vm: copyVm(now), previous: copyVm(then), revision });
      else if (!sameContent(then, now)) events.push({ type: 'updated', vm: copyVm(now), revision });
    }
    for (const id of past.vmIdsInOrder()) if (!this.vms.has(id)) events.push({ type: 'removed', vm: copyVm(past.vms.get(id)!), revision });
    for (const id of past.hypervisorIdsInOrder()) if (!this.hypervisors.has(id)) events.push({ type: 'hypervisor-removed', hypervisor: copyHypervisor(past.hypervisors.get(id)!), revision });
    return events;
  }

  /** Whether eventsSince(revision) answers (the log reaches back to it, and it is not in the future). */
  hasEventsSince(revision: number): boolean {
    return Number.isInteger(revision) && revision >= this.logStart && revision <= this.currentRevision;
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

  // ---- loading -----------------------------------------------------------------------

  /** An empty registry that continues a stored history: its epoch and revision. */
  static restore(header: { epoch?: unknown; revision: unknown }, options?: RegistryOptions): Registry {
    if (!Number.isSafeInteger(header.revision) || (header.revision as number) < 0) throw new ValidationError('revision', `must be an integer >= 0 (got ${show(header.revision)})`);
    const registry = new Registry(options);
    registry.currentRevision = header.revision as number;
    registry.logStart = registry.currentRevision;
    if (typeof header.epoch === 'string' && header.epoch !== '') {
      checkLength('epoch', header.epoch, MAX_EPOCH_CHARS);
      registry.epoch = header.epoch;
    }
    return registry;
  }

  /** Adds a stored hypervisor (no event), checked like a registration. */
  restoreHypervisor(h: HypervisorRecord): void {
    const record = this.validateHypervisor(h);
    if (this.hypervisors.has(record.hypervisorId)) throw new ValidationError('hypervisor_id', `duplicate hypervisor "${record.hypervisorId}"`);
    this.hypervisors.set(record.hypervisorId, Object.freeze(record));
    this.sortedHypervisorIds = undefined;
  }

  /** Adds a stored VM (no event), checked like a registration, its hypervisor restored first. */
  restoreVm(vm: VmRecord): void {
    const record = this.validateStoredVm(vm);
    if (this.vms.has(record.vmId)) throw new ValidationError('vm_id', `duplicate VM "${record.vmId}"`);
    this.store(record);
  }

  /**
   * A registry from the single-JSON state file of earlier versions, every
   * record validated again; errors name the record, e.g. `vms[2].vsock_cid`.
   * The revision carries on; the event log starts empty, so watchers from
   * before the restart get a snapshot.
   */
  static fromState(state: PersistedState, options?: RegistryOptions): Registry {
    if (!isPlainObject(state)) throw new ValidationError('state', 'must be an object');
    if (state.version !== 1) throw new ValidationError('version', `must be 1 (got ${show(state.version)})`);
    if (!Array.isArray(state.hypervisors)) throw new ValidationError('hypervisors', 'must be a list');
    if (!Array.isArray(state.vms)) throw new ValidationError('vms', 'must be a list');
    const registry = Registry.restore(state, options);
    state.hypervisors.forEach((h, i) => within(`hypervisors[${i}]`, () => registry.restoreHypervisor(h)));
    state.vms.forEach((vm, i) => within(`vms[${i}]`, () => registry.restoreVm(vm)));
    return registry;
  }
}

/** Runs `fn`, re-prefixing a ValidationError's field with where the record sits (`vms[2]`, `line 7: vm`). */
export function within<T>(prefix: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(`${prefix}.${err.field}`, err.detail);
    throw err;
  }
}

/** A VM's labels against their bounds: count, key and value sizes, and the bytes of all of them. */
function checkLabels(labels: unknown): Record<string, string> {
  if (!isPlainObject(labels)) throw new ValidationError('labels', 'must be a map of strings');
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS_PER_VM) throw new ValidationError('labels', `at most ${MAX_LABELS_PER_VM} labels (got ${entries.length})`);
  let total = 0;
  for (const [key, value] of entries) {
    if (key === '') throw new ValidationError('labels', 'label keys must not be empty');
    const keyBytes = utf8Bytes(key);
    if (keyBytes > MAX_LABEL_KEY_BYTES) throw new ValidationError('labels', `key ${show(key)} is ${keyBytes} bytes, at most ${MAX_LABEL_KEY_BYTES}`);
    const field = `labels[${JSON.stringify(key)}]`;
    if (typeof value !== 'string') throw new ValidationError(field, `must be a string (got ${show(value)})`);
    const valueBytes = utf8Bytes(value);
    if (valueBytes > MAX_LABEL_VALUE_BYTES) throw new ValidationError(field, `value is ${valueBytes} bytes, at most ${MAX_LABEL_VALUE_BYTES}`);
    total += keyBytes + valueBytes;
  }
  if (total > MAX_LABEL_BYTES_PER_VM) throw new ValidationError('labels', `keys and values are ${total} bytes together, at most ${MAX_LABEL_BYTES_PER_VM}`);
  return Object.fromEntries(entries) as Record<string, string>;
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
