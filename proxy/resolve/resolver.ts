// The daemon agent of the method: asks the VM manager where a destination
// lives, caches the answer, and keeps it current from the VM manager's Watch
// stream. A VM manager that is down never stops traffic: cached answers serve
// until they expire, then callers go plain TCP (logged once, counted).

import { EventEmitter } from 'node:events';
import type { Destination, HypervisorRecord, Resolution, VmEvent, VmManagerApi, VmRecord, WatchHandlers } from './types.js';
import { errorCode } from '../runtime/errors.js';
import type { Logger } from '../runtime/log.js';

export interface ResolverOptions {
  api: VmManagerApi;
  /** This VM's id (node.id): the caller of every query. */
  localVmId: string;
  /** A query that takes longer fails (and the connection goes plain TCP). */
  queryTimeoutMs: number;
  /** How long "unknown destination" is remembered. */
  negativeTtlMs: number;
  logger: Logger;
  /** Watch reconnects start at this delay (with jitter) and double up to 5 s. */
  watchRetryMs?: number;
  now?: () => number;
}

/** A sidecar notices a restarted VM manager within this long (plus jitter). */
const MAX_WATCH_RETRY_MS = 5_000;
/** Expired answers are dropped when the cache reaches this size. */
const SWEEP_AT = 10_000;

export type ResolveOutcome = { kind: 'resolved'; resolution: Resolution } | { kind: 'unavailable'; code: string };

export interface ResolverCounters {
  cacheHits: number;
  queries: { found: number; not_found: number; unavailable: number };
  /** Connections that went plain TCP because the VM manager could not answer. */
  plainTcp: number;
  /** 0 after a query failed for want of the VM manager, 1 again after one succeeds. */
  vmManagerUp: number;
}

interface Entry {
  resolution: Resolution;
  expiresAt: number;
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
  private readonly cache = new Map<string, Entry>();
  /** Cache keys by the VM their answer names, and the keys of "unknown" answers. */
  private readonly byVm = new Map<string, Set<string>>();
  private readonly negative = new Set<string>();
  private readonly inflight = new Map<string, Promise<ResolveOutcome>>();
  private readonly hypervisors = new Map<string, HypervisorRecord>();
  private localRecord: VmRecord | null = null;
  private revision = 0;
  /** The registry history `revision` counts in ('' until the first Watch opens). */
  private epoch = '';
  private watch: { cancel(): void } | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private down = false;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly options: ResolverOptions) {
    super();
    this.now = options.now ?? Date.now;
    this.retryMs = options.watchRetryMs ?? 250;
    // One 'moved' and one 'local-moved' listener per outbound listener of a resolved cluster.
    this.setMaxListeners(0);
  }

  /** Subscribes to the VM manager's changes; queries work without it. */
  start(): void {
    this.stopped = false;
    this.openWatch();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.watch?.cancel();
    this.watch = undefined;
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
    const entry = this.cache.get(key);
    if (entry === undefined || entry.expiresAt <= this.now()) return undefined;
    this.counters.cacheHits++;
    return entry.resolution;
  }

  /** Asks the VM manager; simultaneous calls for one destination share one query. */
  resolve(destination: Destination): Promise<ResolveOutcome> {
    const key = destinationKey(destination);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const query = this.query(key, destination).finally(() => this.inflight.delete(key));
    this.inflight.set(key, query);
    return query;
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
    if (resolution.hypervisor) this.hypervisors.set(resolution.hypervisor.hypervisorId, resolution.hypervisor);
    if (resolution.found) this.counters.queries.found++;
    else this.counters.queries.not_found++;
    const ttl = resolution.found ? resolution.ttlMs : this.options.negativeTtlMs;
    this.store(key, { resolution, expiresAt: this.now() + ttl });
    return { kind: 'resolved', resolution };
  }

  private openWatch(): void {
    if (this.stopped) return;
    const handlers: WatchHandlers = {
      onOpen: (epoch) => {
        this.retryMs = this.options.watchRetryMs ?? 250;
        this.epoch = epoch;
      },
      onEvent: (event) => this.apply(event),
      onError: (err) => {
        if (this.stopped) return;
        this.watch = undefined;
        // The VM manager no longer has the events after our revision (restarted without its state,
        // or we fell too far behind): start over from its whole registry, at once.
        const outOfRange = errorCode(err) === 'OUT_OF_RANGE';
        if (outOfRange) this.revision = 0;
        const delay = outOfRange ? 0 : Math.round(this.retryMs * (0.8 + 0.4 * Math.random()));
        this.options.logger.debug({ reason: 'watch_error', error: err.message, retry_ms: delay }, 'VM manager watch ended; reconnecting');
        this.retryTimer = setTimeout(() => this.openWatch(), delay);
        this.retryTimer.unref();
        if (!outOfRange) this.retryMs = Math.min(this.retryMs * 2, MAX_WATCH_RETRY_MS);
      },
    };
    this.watch = this.options.api.watch(this.revision, handlers, this.epoch);
  }

  /** Caches an answer, indexed by the VM it names (or as a negative answer); sweeps expired entries now and then. */
  private store(key: string, entry: Entry): void {
    if (this.cache.size >= SWEEP_AT && !this.cache.has(key)) this.sweep();
    this.cache.set(key, entry);
    const vmId = entry.resolution.vm?.vmId;
    if (vmId === undefined) {
      this.negative.add(key);
      return;
    }
    this.negative.delete(key);
    let keys = this.byVm.get(vmId);
    if (!keys) this.byVm.set(vmId, (keys = new Set()));
    keys.add(key);
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.cache) if (entry.expiresAt <= now) this.forget(key, entry);
  }

  private forget(key: string, entry: Entry): void {
    this.cache.delete(key);
    this.negative.delete(key);
    const vmId = entry.resolution.vm?.vmId;
    if (vmId !== undefined) this.byVm.get(vmId)?.delete(key);
  }

  /** Keeps cached answers current: a moved, updated or removed VM changes every entry that names it. */
  private apply(event: VmEvent): void {
    this.revision = Math.max(this.revision, event.revision);
    if (event.type === 'hypervisor') {
      this.hypervisors.set(event.hypervisor.hypervisorId, event.hypervisor);
      for (const entry of this.cache.values()) {
        if (entry.resolution.hypervisor?.hypervisorId === event.hypervisor.hypervisorId) {
          entry.resolution = { ...entry.resolution, hypervisor: event.hypervisor };
        }
      }
      return;
    }
    const { vm } = event;
    if (vm.vmId === this.options.localVmId) {
      const previous = this.localRecord;
      this.localRecord = event.type === 'removed' ? null : vm;
      if (event.type === 'moved' && previous) this.emit('local-moved', vm, previous);
      // Every same-hypervisor answer is relative to us: recompute them.
      for (const entry of this.cache.values()) entry.resolution = this.relative(entry.resolution);
    }
    // A VM that appears or changes may be what an "unknown" answer was about: ask again next time.
    if (event.type !== 'removed') for (const key of this.negative) this.forget(key, this.cache.get(key)!);
    for (const key of this.byVm.get(vm.vmId) ?? []) {
      const entry = this.cache.get(key);
      if (entry === undefined || entry.resolution.vm?.vmId !== vm.vmId) continue;
      if (event.type === 'removed') this.forget(key, entry);
      else entry.resolution = this.relative({ ...entry.resolution, vm, ...this.hypervisorOf(vm) });
    }
    if (event.type === 'moved') this.emit('moved', vm, event.previous);
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
