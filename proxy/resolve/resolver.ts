// The daemon agent of the method: asks the VM manager where a destination
// lives, caches the answer, and keeps it current from the VM manager's Watch
// stream (followed by watch-follower.ts: resume, start over, back off). A VM
// manager that is down never stops traffic: cached answers serve until they
// expire, then callers go plain TCP (logged once, counted).

import { EventEmitter } from 'node:events';
import type { Destination, HypervisorRecord, Resolution, VmEvent, VmManagerApi, VmRecord } from './types.js';
import { errorCode } from '../runtime/errors.js';
import type { Logger } from '../runtime/log.js';
import { TtlCache } from '../runtime/ttl-cache.js';
import { WatchFollower } from './watch-follower.js';
import { warmInvalidate } from '../native/warm.js';

export interface ResolverOptions {
  api: VmManagerApi;
  /** This VM's id (node.id): the caller of every query. */
  localVmId: string;
  /** A query that takes longer fails (and the connection goes plain TCP). */
  queryTimeoutMs: number;
  /** How long "unknown destination" is remembered. */
  negativeTtlMs: number;
  logger: Logger;
  now?: () => number;
}

export type ResolveOutcome = { kind: 'resolved'; resolution: Resolution } | { kind: 'unavailable'; code: string };

export interface ResolverCounters {
  cacheHits: number;
  queries: { found: number; not_found: number; unavailable: number };
  /** Connections that went plain TCP because the VM manager could not answer. */
  plainTcp: number;
  /** 0 after a query failed for want of the VM manager, 1 again after one succeeds. */
  vmManagerUp: number;
}

export function destinationKey(d: Destination): string {
  switch (d.kind) {
    case 'ip':
      return `ip:${d.ip}`;
    case 'ip_port':
      return `ipp:${d.ip}:${d.port}`;
    case 'vm':
      return `vm:${d.vmId}`;
    case 'service':
      return `svc:${d.name}`;
  }
}

/**
 * Emits 'moved' (vm: VmRecord, previous: VmRecord) when a VM changes
 * hypervisor or CID, and 'local-moved' when this VM does.
 */
export class Resolver extends EventEmitter {
  readonly counters: ResolverCounters = { cacheHits: 0, queries: { found: 0, not_found: 0, unavailable: 0 }, plainTcp: 0, vmManagerUp: 1 };
  /** Answers by destination key; expired ones are dropped when read or swept (runtime/ttl-cache.ts). */
  private readonly cache: TtlCache<Resolution>;
  /** Cache keys by the VM their answer names, and the keys of "unknown" answers (kept in step by onEvict). */
  private readonly byVm = new Map<string, Set<string>>();
  private readonly negative = new Set<string>();
  private hypervisors = new Map<string, HypervisorRecord>();
  /**
   * Starting over (a new history from revision 0): the hypervisors its snapshot sent so far. They replace the
   * known ones at its first event that is no hypervisor's (the snapshot sends every hypervisor before the VMs),
   * so one removed while the stream could not resume goes, and the last known serve until then.
   */
  private replacing: Map<string, HypervisorRecord> | null = null;
  private readonly follower: WatchFollower;
  private localRecord: VmRecord | null = null;
  private down = false;

  constructor(private readonly options: ResolverOptions) {
    super();
    this.cache = new TtlCache<Resolution>({ ...(options.now && { now: options.now }), onEvict: (key, resolution) => this.unindex(key, resolution) });
    this.follower = new WatchFollower({
      api: options.api,
      name: 'resolver',
      logger: options.logger,
      onEvent: (event) => this.apply(event),
      // Cached answers stay until their TTL: the whole registry follows as `added` events, which
      // refresh every answer naming a VM that still exists and drop the "unknown" ones; its
      // hypervisors replace the known ones (apply).
      onReset: () => {
        this.replacing = new Map();
      },
    });
    // One 'moved' and one 'local-moved' listener per outbound listener of a resolved cluster.
    this.setMaxListeners(0);
  }

  /** Subscribes to the VM manager's changes; queries work without it. */
  start(): void {
    this.follower.start();
  }

  stop(): void {
    this.follower.stop();
  }

  /** Our own record (hypervisor, CID), or null while the VM manager has not told us. */
  local(): VmRecord | null {
    return this.localRecord;
  }

  /** A hypervisor's record, as the VM manager last told it. */
  hypervisor(hypervisorId: string): HypervisorRecord | undefined {
    return this.hypervisors.get(hypervisorId);
  }

  get vmManagerDown(): boolean {
    return this.down;
  }

  /** A fresh cached answer, synchronously (the hot path), or undefined. */
  lookup(destination: Destination): Resolution | undefined {
    return this.lookupKey(destinationKey(destination));
  }

  /** lookup() by a key made once with destinationKey(). */
  lookupKey(key: string): Resolution | undefined {
    const resolution = this.cache.get(key);
    if (resolution !== undefined) this.counters.cacheHits++;
    return resolution;
  }

  /** Asks the VM manager; simultaneous calls for one destination share one query. */
  resolve(destination: Destination): Promise<ResolveOutcome> {
    const key = destinationKey(destination);
    return this.cache.once(key, () => this.query(key, destination));
  }

  /** Counts a connection that went plain TCP for want of an answer. */
  notePlainTcp(): void {
    this.counters.plainTcp++;
  }

  private async query(key: string, destination: Destination): Promise<ResolveOutcome> {
    let resolution: Resolution;
    try {
      resolution = await this.options.api.resolve(this.options.localVmId, destination, { timeoutMs: this.options.queryTimeoutMs });
    } catch (err) {
      const code = errorCode(err) ?? 'UNAVAILABLE';
      this.counters.queries.unavailable++;
      if (!this.down) {
        this.down = true;
        this.counters.vmManagerUp = 0;
        this.options.logger.warn({ reason: 'vm_manager_unavailable', code, error: (err as Error).message }, 'VM manager unavailable: cached answers until they expire, then plain TCP');
      }
      return { kind: 'unavailable', code };
    }
    if (this.down) {
      this.down = false;
      this.counters.vmManagerUp = 1;
      this.options.logger.info('VM manager reachable again');
    }
    if (resolution.caller) this.localRecord = resolution.caller;
    if (resolution.hypervisor) this.learnHypervisor(resolution.hypervisor);
    if (resolution.found) this.counters.queries.found++;
    else this.counters.queries.not_found++;
    this.cache.set(key, resolution, resolution.found ? resolution.ttlMs : this.options.negativeTtlMs);
    this.index(key, resolution);
    return { kind: 'resolved', resolution };
  }

  /** Indexes a cached answer by the VM it names, or as an "unknown" answer. */
  private index(key: string, resolution: Resolution): void {
    const vmId = resolution.vm?.vmId;
    if (vmId === undefined) {
      this.negative.add(key);
      return;
    }
    let keys = this.byVm.get(vmId);
    if (!keys) this.byVm.set(vmId, (keys = new Set()));
    keys.add(key);
  }

  /** An answer left the cache (expired, swept, replaced, forgotten): so does its index entry. */
  private unindex(key: string, resolution: Resolution): void {
    const vmId = resolution.vm?.vmId;
    if (vmId === undefined) {
      this.negative.delete(key);
      return;
    }
    const keys = this.byVm.get(vmId);
    keys?.delete(key);
    if (keys?.size === 0) this.byVm.delete(vmId);
  }

  /** Keeps cached answers current: a moved, updated or removed VM changes every entry that names it. */
  private apply(event: VmEvent): void {
    warmInvalidate();
    if (this.replacing !== null && event.type !== 'hypervisor') {
      this.hypervisors = this.replacing;
      this.replacing = null;
    }
    if (event.type === 'hypervisor') {
      this.learnHypervisor(event.hypervisor);
      for (const [key, resolution] of this.cache.held()) {
        if (resolution.hypervisor?.hypervisorId === event.hypervisor.hypervisorId) this.cache.replace(key, { ...resolution, hypervisor: event.hypervisor });
      }
      return;
    }
    // Its VMs' `removed` events came first (their answers are gone): only its record is left to drop.
    if (event.type === 'hypervisor-removed') {
      this.hypervisors.delete(event.hypervisor.hypervisorId);
      return;
    }
    const { vm } = event;
    if (vm.vmId === this.options.localVmId) {
      const previous = this.localRecord;
      this.localRecord = event.type === 'removed' ? null : vm;
      if (event.type === 'moved' && previous) this.emit('local-moved', vm, previous);
      // Every same-hypervisor answer is relative to us: recompute them.
      for (const [key, resolution] of this.cache.held()) this.cache.replace(key, this.relative(resolution));
    }
    // A VM that appears or changes may be what an "unknown" answer was about: ask again next time.
    if (event.type !== 'removed') for (const key of this.negative) this.cache.delete(key);
    for (const key of this.byVm.get(vm.vmId) ?? []) {
      if (event.type === 'removed') {
        this.cache.delete(key);
        continue;
      }
      // get() drops an answer that has expired meanwhile.
      const resolution = this.cache.get(key);
      if (resolution !== undefined) this.cache.replace(key, this.relative({ ...resolution, vm, ...this.hypervisorOf(vm) }));
    }
    if (event.type === 'moved') this.emit('moved', vm, event.previous);
  }

  /** A hypervisor's record as told now (and, starting over, one the new history has). */
  private learnHypervisor(hypervisor: HypervisorRecord): void {
    this.hypervisors.set(hypervisor.hypervisorId, hypervisor);
    this.replacing?.set(hypervisor.hypervisorId, hypervisor);
  }

  private hypervisorOf(vm: VmRecord): { hypervisor?: HypervisorRecord } {
    const hypervisor = this.hypervisors.get(vm.hypervisorId);
    return hypervisor ? { hypervisor } : {};
  }

  private relative(resolution: Resolution): Resolution {
    const sameHypervisor = resolution.vm !== undefined && this.localRecord !== null && resolution.vm.hypervisorId === this.localRecord.hypervisorId;
    return { ...resolution, sameHypervisor, ...(this.localRecord ? { caller: this.localRecord } : {}) };
  }
}
