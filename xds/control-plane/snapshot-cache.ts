// What the ADS server serves: one Snapshot per node id (or a default for
// nodes without one), with change notifications, plus a debouncer for bursts
// of input changes (the caller rebuilds snapshots through it). No I/O.

import { createHash } from 'node:crypto';
import { RESOURCE_TYPE_URLS, type Any__Output, type ResourceTypeUrl } from '../envoy/proto.js';
import type { Snapshot, VersionedResource } from './types.js';

/** Told the snapshot now in effect for a node (its own, else the default; undefined once neither exists). */
export type SnapshotListener = (snapshot: Snapshot | undefined) => void;

export interface SnapshotCacheOptions {
  /**
   * Run on every snapshot before it is stored (e.g. a consistency check:
   * every route's cluster exists, every EDS cluster has an assignment);
   * throwing rejects the snapshot and leaves the cache unchanged.
   */
  check?: (snapshot: Snapshot) => void;
  /** Called when a listener throws (the other listeners are still told). */
  onListenerError?: (err: unknown, nodeId: string) => void;
}

export class SnapshotCache {
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly listeners = new Map<string, Set<SnapshotListener>>();
  private defaultSnapshot: Snapshot | undefined;

  constructor(private readonly options: SnapshotCacheOptions = {}) {}

  /** Serves `snapshot` to `nodeId` from now on; streams of that node are told at once. */
  setSnapshot(nodeId: string, snapshot: Snapshot): void {
    this.options.check?.(snapshot);
    if (this.snapshots.get(nodeId) === snapshot) return;
    this.snapshots.set(nodeId, snapshot);
    this.notify(nodeId, snapshot);
  }

  /** Forgets the node's own snapshot: it falls back to the default (if any). */
  clearSnapshot(nodeId: string): void {
    if (!this.snapshots.delete(nodeId)) return;
    this.notify(nodeId, this.defaultSnapshot);
  }

  /** Served to every node without its own snapshot; undefined: such nodes get nothing (their streams wait). */
  setDefault(snapshot: Snapshot | undefined): void {
    if (snapshot !== undefined) this.options.check?.(snapshot);
    if (this.defaultSnapshot === snapshot) return;
    this.defaultSnapshot = snapshot;
    for (const nodeId of [...this.listeners.keys()]) if (!this.snapshots.has(nodeId)) this.notify(nodeId, snapshot);
  }

  /** The snapshot in effect for `nodeId`: its own, else the default. */
  get(nodeId: string): Snapshot | undefined {
    return this.snapshots.get(nodeId) ?? this.defaultSnapshot;
  }

  /** Whether `nodeId` has a snapshot of its own (not the default). */
  has(nodeId: string): boolean {
    return this.snapshots.has(nodeId);
  }

  get default(): Snapshot | undefined {
    return this.defaultSnapshot;
  }

  /** Node ids with a snapshot of their own. */
  nodeIds(): string[] {
    return [...this.snapshots.keys()];
  }

  /** Calls `listener` (synchronously, inside setSnapshot/setDefault/clearSnapshot) whenever the node's snapshot changes. */
  watch(nodeId: string, listener: SnapshotListener): () => void {
    let set = this.listeners.get(nodeId);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(nodeId, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(nodeId);
      if (current === undefined) return;
      current.delete(listener);
      if (current.size === 0) this.listeners.delete(nodeId);
    };
  }

  private notify(nodeId: string, snapshot: Snapshot | undefined): void {
    const set = this.listeners.get(nodeId);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(snapshot);
      } catch (err) {
        this.options.onListenerError?.(err, nodeId);
      }
    }
  }
}

// ---- building snapshots --------------------------------------------------------

export interface NamedResource {
  name: string;
  resource: Any__Output;
}

/** The first 16 hex digits of the SHA-256 of `data`: resource and type versions. */
export function shortHash(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex').slice(0, 16);
}

/** A resource's version: a hash of its encoded bytes (same content, same version, across restarts). */
export function resourceVersion(resource: Any__Output): string {
  return shortHash(resource.value);
}

/** A type's version: the hash of its sorted `name:version` pairs (order-independent). */
export function typeVersion(resources: ReadonlyMap<string, VersionedResource>): string {
  const pairs = [...resources.values()].map((r) => `${r.name}:${r.version}`).sort();
  return shortHash(pairs.join('\n'));
}

/**
 * A Snapshot from resources per type. Resource versions are content hashes;
 * a type's version is a hash of its resources' versions unless given in
 * `versions`. Throws on a duplicate name within a type or a resource whose
 * Any is of another type.
 */
export function makeSnapshot(
  resources: Partial<Record<ResourceTypeUrl, NamedResource[]>>,
  versions: Partial<Record<ResourceTypeUrl, string>> = {},
): Snapshot {
  const out = {} as Snapshot['resources'];
  const outVersions = {} as Snapshot['versions'];
  for (const typeUrl of RESOURCE_TYPE_URLS) {
    const map = new Map<string, VersionedResource>();
    for (const r of resources[typeUrl] ?? []) {
      if (map.has(r.name)) throw new Error(`snapshot: ${typeUrl} "${r.name}" appears twice`);
      if (r.resource.type_url !== typeUrl) throw new Error(`snapshot: ${typeUrl} "${r.name}" holds a ${r.resource.type_url}`);
      map.set(r.name, { name: r.name, version: resourceVersion(r.resource), resource: r.resource });
    }
    out[typeUrl] = map;
    outVersions[typeUrl] = versions[typeUrl] ?? typeVersion(map);
  }
  return { resources: out, versions: outVersions };
}

// ---- debouncing ------------------------------------------------------------------

/** The clock and timers a Debouncer uses (injectable for tests). */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface DebouncerOptions {
  /** Run once no trigger came for this long (default 100 ms). */
  quietMs?: number;
  /** ... but no later than this after the first trigger of a burst (default 1000 ms). */
  maxMs?: number;
  timers?: Timers;
  /** Where errors of `fn` go; default: rethrown asynchronously (an uncaught exception). */
  onError?: (err: unknown) => void;
}

/**
 * Coalesces bursts of triggers into one call of `fn`: `fn` runs `quietMs`
 * after the last trigger, or `maxMs` after the first one of the burst,
 * whichever comes first. Runs never overlap: triggers during an (async) run
 * start a new burst, run after it ends.
 */
export class Debouncer {
  private readonly quietMs: number;
  private readonly maxMs: number;
  private readonly timers: Timers;
  private timer: unknown = undefined;
  private burstStart: number | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  /** Runs of `fn` so far. */
  runs = 0;

  constructor(
    private readonly fn: () => void | Promise<void>,
    options: DebouncerOptions = {},
  ) {
    this.quietMs = options.quietMs ?? 100;
    this.maxMs = Math.max(options.maxMs ?? 1000, this.quietMs);
    this.timers = options.timers ?? realTimers;
    this.onError =
      options.onError ??
      ((err) => {
        queueMicrotask(() => {
          throw err;
        });
      });
  }

  private readonly onError: (err: unknown) => void;

  /** A change happened: `fn` will run (once) after the burst settles. */
  trigger(): void {
    if (this.closed) return;
    const now = this.timers.now();
    this.burstStart ??= now;
    if (this.running) return; // re-armed when the run ends
    this.arm(now);
  }

  /** Whether a run is due (a burst is under way). */
  get pending(): boolean {
    return this.burstStart !== null;
  }

  /** Runs `fn` now if a burst is pending (and waits for it); resolves when no run is in progress. */
  async flush(): Promise<void> {
    if (this.running) await this.running;
    if (this.burstStart !== null && !this.closed) await this.run();
  }

  /** Drops any pending run; later triggers are ignored. */
  close(): void {
    this.closed = true;
    this.burstStart = null;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(now: number): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    const at = Math.min(now + this.quietMs, this.burstStart! + this.maxMs);
    this.timer = this.timers.setTimeout(
      () => {
        this.timer = undefined;
        void this.run();
      },
      Math.max(0, at - now),
    );
  }

  private run(): Promise<void> {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.burstStart = null;
    this.runs++;
    const p = (async () => {
      try {
        await this.fn();
      } catch (err) {
        this.onError(err);
      }
    })().finally(() => {
      this.running = null;
      if (this.burstStart !== null && !this.closed) this.arm(this.timers.now());
    });
    this.running = p;
    return p;
  }
}
