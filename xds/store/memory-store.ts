// The store in this process's memory (store.ts has the contract): the
// embedded default without a state file, and the base of the file store,
// which makes each change durable before it is applied (the `persist` step).
//
// Changes run one at a time (a queue): each transaction's checks see every
// earlier change, and a change whose persist step fails is not applied. The
// last MAX_HISTORY revisions are kept for watches (as the VM manager's
// registry keeps its last events); older ones count as compacted.

import { randomBytes, randomUUID } from 'node:crypto';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { StoreCompactedError, type Store, type StoreCheck, type StoreEvent, type StoreRecord, type StoreTxn, type StoreTxnResult, type StoreWatch, type StoreWatchHandlers } from './store.js';

/** Revisions of history kept for watches. */
export const MAX_HISTORY = 10_000;

/** Lease expiry whose deletion could not be persisted is tried again after this. */
const EXPIRY_RETRY_MS = 1_000;

/** What the file store writes: everything but the watch history. */
export interface StoreState {
  epoch: string;
  revision: number;
  records: StoreRecord[];
  leases: Array<{ id: string; ttlMs: number }>;
}

interface Watcher {
  prefix: string;
  /** The last revision delivered (or asked to start after). */
  last: number;
  live: boolean;
  handlers: StoreWatchHandlers;
}

interface Lease {
  ttlMs: number;
  timer: NodeJS.Timeout | undefined;
}

export class MemoryStore implements Store {
  readonly kind: 'memory' | 'file' = 'memory';
  protected records = new Map<string, StoreRecord>();
  protected revision: number;
  private readonly epochId: string;
  /** Events of the kept revisions, oldest first. */
  private history: Array<{ revision: number; events: StoreEvent[] }> = [];
  /** The first revision whose events are kept (a watch must start at it or later). */
  private historyStart: number;
  private readonly watchers = new Set<Watcher>();
  private readonly leases = new Map<string, Lease>();
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(state?: StoreState) {
    this.epochId = state?.epoch ?? randomUUID();
    this.revision = state?.revision ?? 0;
    this.historyStart = this.revision + 1;
    for (const record of state?.records ?? []) this.records.set(record.key, record);
    // As etcd after a restart: a lease's TTL starts again in full.
    for (const lease of state?.leases ?? []) this.leases.set(lease.id, this.armLease(lease.id, lease.ttlMs));
  }

  /** Makes `next` durable before it is applied; the memory store keeps nothing. */
  protected async persist(_next: StoreState): Promise<void> {}

  epoch(): Promise<string> {
    return Promise.resolve(this.epochId);
  }

  list(prefix: string, atRevision?: number): Promise<{ records: StoreRecord[]; revision: number }> {
    if (atRevision !== undefined && atRevision !== this.revision) return Promise.reject(new VsockmeshError('OUT_OF_RANGE', `revision ${atRevision}: this store keeps only its current state (revision ${this.revision})`));
    const records = [...this.records.values()].filter((r) => r.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return Promise.resolve({ records: records.map((r) => ({ ...r })), revision: this.revision });
  }

  get(key: string): Promise<StoreRecord | undefined> {
    const record = this.records.get(key);
    return Promise.resolve(record === undefined ? undefined : { ...record });
  }

  commit(txn: StoreTxn): Promise<StoreTxnResult> {
    return this.serial(async () => {
      for (const check of txn.checks ?? []) if (!this.holds(check)) return { ok: false, revision: this.revision };
      for (const put of txn.puts ?? []) {
        if (put.lease !== undefined && put.lease !== '' && !this.leases.has(put.lease)) throw new VsockmeshError('NOT_FOUND', `lease ${put.lease} not found (expired or revoked)`);
      }
      const revision = this.revision + 1;
      const events: StoreEvent[] = [];
      for (const key of txn.deletes ?? []) if (this.records.has(key)) events.push({ type: 'delete', revision, key });
      for (const put of txn.puts ?? []) {
        const createRevision = this.records.get(put.key)?.createRevision ?? revision;
        events.push({ type: 'put', revision, record: { key: put.key, value: put.value, createRevision, modRevision: revision, lease: put.lease ?? '' } });
      }
      // As etcd: a transaction that changes nothing makes no revision.
      if (events.length === 0) return { ok: true, revision: this.revision };
      await this.apply(revision, events);
      return { ok: true, revision };
    });
  }

  hasHistoryAfter(afterRevision: number): Promise<boolean> {
    return Promise.resolve(!this.compactedAfter(afterRevision));
  }

  watch(prefix: string, afterRevision: number, handlers: StoreWatchHandlers): StoreWatch {
    const watcher: Watcher = { prefix, last: afterRevision, live: false, handlers };
    this.watchers.add(watcher);
    // Never from inside the caller: the history is replayed on the next turn, then changes follow as they are applied.
    setImmediate(() => {
      if (!this.watchers.has(watcher)) return;
      if (this.compactedAfter(afterRevision)) {
        this.watchers.delete(watcher);
        handlers.onError(new StoreCompactedError(afterRevision, this.historyStart));
        return;
      }
      for (const entry of this.history) if (entry.revision > watcher.last) this.deliver(watcher, entry.revision, entry.events);
      watcher.live = true;
    });
    return { cancel: () => this.watchers.delete(watcher) };
  }

  grantLease(ttlMs: number): Promise<string> {
    return this.serial(async () => {
      const id = (randomBytes(8).readBigUInt64BE() >> 1n).toString();
      await this.persist(this.state({ leases: [...this.leaseList(), { id, ttlMs }] }));
      this.leases.set(id, this.armLease(id, ttlMs));
      return id;
    });
  }

  keepAlive(lease: string): Promise<boolean> {
    const held = this.leases.get(lease);
    if (held === undefined) return Promise.resolve(false);
    clearTimeout(held.timer);
    this.leases.set(lease, this.armLease(lease, held.ttlMs));
    return Promise.resolve(true);
  }

  revokeLease(lease: string): Promise<void> {
    return this.endLease(lease);
  }

  compact(revision: number): Promise<void> {
    return this.serial(async () => {
      if (revision > this.revision) throw new VsockmeshError('OUT_OF_RANGE', `cannot compact to revision ${revision}: the store is at ${this.revision}`);
      if (revision <= this.historyStart) return;
      this.history = this.history.filter((e) => e.revision >= revision);
      this.historyStart = revision;
    });
  }

  close(): Promise<void> {
    this.closed = true;
    for (const lease of this.leases.values()) clearTimeout(lease.timer);
    this.watchers.clear();
    return this.queue.then(() => undefined);
  }

  /** Runs `fn` after every earlier change. */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new VsockmeshError('UNAVAILABLE', 'not applied: the store is closed');
      return fn();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private holds(check: StoreCheck): boolean {
    if ('key' in check) return (this.records.get(check.key)?.modRevision ?? 0) === check.modRevision;
    for (const record of this.records.values()) if (record.key.startsWith(check.prefix) && record.modRevision > check.notModifiedAfter) return false;
    return true;
  }

  private compactedAfter(afterRevision: number): boolean {
    return afterRevision + 1 < this.historyStart && afterRevision < this.revision;
  }

  private leaseList(): Array<{ id: string; ttlMs: number }> {
    return [...this.leases].map(([id, l]) => ({ id, ttlMs: l.ttlMs }));
  }

  /** The state as it would be with `change` (records and revision after events, or other leases). */
  private state(change: { revision?: number; events?: StoreEvent[]; leases?: Array<{ id: string; ttlMs: number }> }): StoreState {
    const records = new Map(this.records);
    for (const event of change.events ?? []) {
      if (event.type === 'put') records.set(event.record.key, event.record);
      else records.delete(event.key);
    }
    return { epoch: this.epochId, revision: change.revision ?? this.revision, records: [...records.values()], leases: change.leases ?? this.leaseList() };
  }

  /** Persists, then applies and tells the watchers (in the queue). */
  private async apply(revision: number, events: StoreEvent[], leases?: Array<{ id: string; ttlMs: number }>): Promise<void> {
    await this.persist(this.state({ revision, events, ...(leases !== undefined && { leases }) }));
    for (const event of events) {
      if (event.type === 'put') this.records.set(event.record.key, event.record);
      else this.records.delete(event.key);
    }
    this.revision = revision;
    this.history.push({ revision, events });
    if (this.history.length > MAX_HISTORY) {
      this.history.shift();
      this.historyStart = this.history[0]!.revision;
    }
    for (const watcher of this.watchers) if (watcher.live) this.deliver(watcher, revision, events);
  }

  private deliver(watcher: Watcher, revision: number, events: StoreEvent[]): void {
    watcher.last = revision;
    const mine = events.filter((e) => (e.type === 'put' ? e.record.key : e.key).startsWith(watcher.prefix));
    if (mine.length > 0) watcher.handlers.onEvents(mine.map((e) => (e.type === 'put' ? { ...e, record: { ...e.record } } : { ...e })));
  }

  private armLease(id: string, ttlMs: number): Lease {
    const timer = setTimeout(() => {
      this.endLease(id).catch(() => {
        // The deletion could not be persisted: the records stay until it can be.
        const lease = this.leases.get(id);
        if (lease !== undefined) lease.timer = setTimeout(() => void this.endLease(id).catch(() => undefined), EXPIRY_RETRY_MS).unref();
      });
    }, ttlMs);
    timer.unref();
    return { ttlMs, timer };
  }

  /** Deletes the lease's records and the lease, in one persisted change. */
  private endLease(id: string): Promise<void> {
    return this.serial(async () => {
      const lease = this.leases.get(id);
      if (lease === undefined) return;
      const revision = this.revision + 1;
      const events: StoreEvent[] = [...this.records.values()].filter((r) => r.lease === id).map((r) => ({ type: 'delete', revision, key: r.key }));
      const leases = this.leaseList().filter((l) => l.id !== id);
      if (events.length === 0) await this.persist(this.state({ leases }));
      else await this.apply(revision, events, leases);
      clearTimeout(lease.timer);
      this.leases.delete(id);
    });
  }
}
