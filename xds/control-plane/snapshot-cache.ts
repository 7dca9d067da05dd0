// What the ADS server serves: one Snapshot per node id (or a default for
// nodes without one), with change notifications (go-control-plane's
// SnapshotCache: SetSnapshot, ClearSnapshot). Only the cache: snapshots are
// made elsewhere (snapshot.ts, translate.ts); a check given to the cache can
// refuse one. No I/O.

import type { Snapshot } from './snapshot.js';

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
