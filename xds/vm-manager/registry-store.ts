// The VM registry kept in a store (xds/store/store.ts: memory, file or etcd),
// so that VM manager replicas on one etcd serve one registry.
//
//   <prefix>hypervisors/<id>   a hypervisor record (JSON); deleted, it leaves
//                              every replica's registry, with the VMs on it
//                              (their records stay in the store: they come
//                              back when the hypervisor is registered again)
//   <prefix>vms/<id>           a VM record (JSON, with its lease TTL), put
//                              with a store lease when it has one: the store
//                              deletes it once the lease is not renewed
//
// Each replica holds the registry in memory (registry.ts), fed only by the
// store's watch: its revision is the store's, its epoch the store's, and a
// change is visible (Resolve, Watch, ...) once the store committed it and the
// watch brought it back. A mutation is planned on a copy of that registry
// and committed as one transaction that holds only if nothing under the
// prefix was put since the revision it was planned at and every key it
// touches is as it was (two replicas racing: one commits, the other plans
// again on what the first wrote, up to MAX_ATTEMPTS times, then ABORTED).
// A lease renewal with nothing else changed is a keep-alive, not a write.
//
//   <prefix>seed               the inventory's seed: {state: seeding|seeded, owner}
//   <prefix>seed-owner         the replica writing it ({owner}), on a lease it keeps alive
//
// An inventory is written in chunks etcd takes with its default limits
// (xds/store/seed.ts, which the mesh's seed shares): the first replica claims
// the seed (both keys, compare-and-swap on an empty registry), writes the
// chunks, each checked against its owner key, and the last one sets `seeded`
// and deletes the owner key. Other replicas wait for `seeded` (following the
// registry's watch) before they serve; when the owner key goes (its lease
// ended: the seeder died), one with an inventory claims the seed and writes
// what is not there yet.

import { VsockmeshError } from '../../proxy/runtime/errors.js';
import type { Logger } from '../../proxy/runtime/log.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import type { Store, StoreCheck, StoreEvent, StoreRecord } from '../store/store.js';
import { PrefixFollower } from '../store/prefix-follower.js';
import { Registry, ValidationError, type RegistryChange } from './registry.js';
import type { SeedRecord } from '../store/seed-plan.js';
import { readSeedMarker, readSeedOwner, revokeLeases, SEED_STALL_MS, seedKeys, seedOwnerName, writeSeed, type SeedMarker } from '../store/seed.js';

export const REGISTRY_PREFIX = '/vsockmesh/vm-registry/';

/** Plans of one mutation before it gives up with ABORTED (each retry follows a change by another replica). */
const MAX_ATTEMPTS = 10;
/** How long a committed change may take to come back through the watch before the caller is told UNAVAILABLE. */
const SEEN_TIMEOUT_MS = 10_000;

export type SeedOutcome = 'seeded' | 'present' | 'empty';

export interface RegistryStoreOptions {
  store: Store;
  logger: Logger;
  resolveTtlMs?: number;
  prefix?: string;
  /** Registry capacity (tests). */
  capacity?: { vms?: number; hypervisors?: number };
}

/** A VM record as stored: the record without its expiry, with the lease's TTL (0: none). */
type StoredVm = Omit<VmRecord, 'leaseExpiresAt'> & { leaseTtlMs: number };

function storedVm(vm: VmRecord, leaseTtlMs: number): StoredVm {
  return { vmId: vm.vmId, hypervisorId: vm.hypervisorId, vsockCid: vm.vsockCid, addresses: vm.addresses, sidecar: vm.sidecar, services: vm.services, labels: vm.labels, generation: vm.generation, leaseTtlMs };
}

interface Waiter {
  revision: number;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class RegistryStore {
  /** What every reader sees: the store's records as of the last event the watch delivered. */
  readonly registry: Registry;
  private readonly store: Store;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly modRevisions = new Map<string, number>();
  /** The store lease each VM lives by (parked ones too). */
  private readonly leases = new Map<string, { lease: string; ttlMs: number }>();
  /**
   * VMs in the store whose hypervisor is not (deleted, or not written yet):
   * left out of the registry, as a registry read afresh leaves them out,
   * and taken in when their hypervisor is put.
   */
  private readonly parked = new Map<string, VmRecord>();
  /** Store transactions by result (`conflict`: another replica wrote first; planned again). */
  readonly commits = { ok: 0, conflict: 0, failed: 0 };
  private waiters: Waiter[] = [];
  /** The watch on the prefix, what follows a watch that ends, and whether the store answers (readiness follows it). */
  private readonly follower: PrefixFollower;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly readinessListeners = new Set<() => void>();
  /** The clock mutations are planned with, frozen while one is planned (a lease's TTL is its expiry minus it). */
  private frozenNow: number | undefined;
  /** The seed marker and the seeder holding it, as the watch brought them (undefined: absent). */
  private seedMarker: SeedMarker | undefined;
  private seedOwner: string | undefined;
  /** Run after every change under the prefix (what a replica waiting for a seed follows). */
  private readonly changeListeners = new Set<() => void>();
  /** This process, as a seed's owner. */
  private readonly self = seedOwnerName();

  private constructor(
    private readonly options: RegistryStoreOptions,
    epoch: string,
    listed: { records: StoreRecord[]; revision: number },
  ) {
    this.store = options.store;
    this.logger = options.logger;
    this.prefix = options.prefix ?? REGISTRY_PREFIX;
    this.registry = this.restored(epoch, listed, true);
    this.follower = new PrefixFollower(this.store, this.prefix, {
      revision: () => this.registry.revision,
      onEvents: (events) => this.applyEvents(events),
      onListed: (records, revision) => this.resynced(records, revision),
      onReadinessChange: (unavailable) => {
        if (unavailable === null) this.logger.info({ revision: this.registry.revision }, 'registry store reachable again: ready');
        else this.logger.warn({ reason: 'registry_store_unavailable', error: unavailable, revision: this.registry.revision }, `registry store out of reach (${unavailable}): serving the registry as of revision ${this.registry.revision}, writes fail, reconnecting`);
        for (const listener of this.readinessListeners) listener();
      },
      onWatchEnded: (err, compacted) =>
        this.logger.warn({ err, reason: compacted ? 'registry_watch_compacted' : 'registry_watch_failed' }, `the registry's store watch ended (${err.message}): reading the registry again`),
      onListFailed: (err) => this.logger.warn({ err, reason: 'registry_store_unavailable' }, `cannot read the registry from the store: ${err.message}; serving the last one read`),
    });
  }

  /** A registry holding `listed` (`follow`: this replica's, whose leases and mod revisions are tracked). */
  private restored(epoch: string, listed: { records: StoreRecord[]; revision: number }, follow: boolean): Registry {
    const options = this.options;
    const registry = Registry.restore(
      { epoch, revision: listed.revision },
      { now: () => this.frozenNow ?? Date.now(), ...(options.resolveTtlMs !== undefined && { resolveTtlMs: options.resolveTtlMs }), ...(options.capacity !== undefined && { capacity: options.capacity }) },
    );
    // Hypervisors sort before VMs (the keys say so): a VM's hypervisor is there first.
    for (const record of listed.records) this.stored(record, registry, undefined, follow);
    return registry;
  }

  /**
   * The registry as it was at `revision` (read from the store: etcd keeps
   * past states until it compacts; OUT_OF_RANGE when it no longer has it).
   * A Watch from a revision older than this replica's events gets the
   * difference to now (Registry.eventsFrom).
   */
  async pastRegistry(revision: number): Promise<Registry> {
    return this.restored(this.registry.epoch, await this.store.list(this.prefix, revision), false);
  }

  /**
   * A revision another replica gave (a Watch resuming here), ahead of this
   * replica's: replicas on one store do not stand at one revision while
   * nothing changes under the prefix (each starts at the store's revision
   * when it opens, which other prefixes' writes move on, and follows only
   * this prefix's changes). True once this replica is at `revision`: at once
   * when the store held under the prefix at `revision` what this replica
   * holds (nothing changed in between: this registry is the one at
   * `revision` too), else after its watch brought the changes in between
   * (they exist: it will). False when they did not come within
   * SEEN_TIMEOUT_MS. OUT_OF_RANGE: a revision the store has not reached.
   */
  async reach(revision: number): Promise<boolean> {
    for (;;) {
      if (this.registry.revision >= revision) return true;
      const at = this.registry.revision;
      const { records } = await this.store.list(this.prefix, revision);
      if (this.registry.revision !== at) continue;
      // What the store holds at `revision` is what this replica holds at `at` when nothing was put after `at` and no key went.
      if (records.every((r) => r.modRevision <= at) && records.length === this.heldKeys()) {
        this.registry.advanceTo(revision);
        return true;
      }
      try {
        await this.seen(at + 1, `a Watch from revision ${revision} (ahead of this replica's ${at}): the changes in between were not seen from the store`);
      } catch {
        return false;
      }
    }
  }

  /** The keys under the prefix this replica holds (the store's at the registry's revision). */
  private heldKeys(): number {
    return this.modRevisions.size + (this.seedMarker === undefined ? 0 : 1) + (this.seedOwner === undefined ? 0 : 1);
  }

  /** The registry the store holds, followed from then on. */
  static async open(options: RegistryStoreOptions): Promise<RegistryStore> {
    const prefix = options.prefix ?? REGISTRY_PREFIX;
    const epoch = await options.store.epoch();
    const registry = new RegistryStore(options, epoch, await options.store.list(prefix));
    registry.follower.follow();
    return registry;
  }

  /** Why this replica is not ready (the store out of reach: it serves the registry it has, writes fail), or undefined. */
  notReady(): string | undefined {
    const unavailable = this.follower.unavailable;
    if (unavailable === null) return undefined;
    return `registry store unavailable, serving the registry as of revision ${this.registry.revision} (reconnecting): ${unavailable}`;
  }

  /** `listener` runs whenever notReady() changes; returns the unsubscribe. */
  onReadinessChange(listener: () => void): () => void {
    this.readinessListeners.add(listener);
    return () => this.readinessListeners.delete(listener);
  }

  /** Whether a Watch from `revision` can be answered: the store still has its history (not compacted). */
  hasHistoryAfter(revision: number): Promise<boolean> {
    return this.store.hasHistoryAfter(revision);
  }

  /**
   * Runs a mutation (one at a time in this process): planned on the registry
   * as seen, committed to the store, answered once the watch brought it back.
   */
  mutate<T>(fn: (registry: Registry) => T): Promise<T> {
    const run = this.queue.then(() => this.attempt(fn, 1));
    this.queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const listener of [...this.changeListeners]) listener();
    this.follower.close();
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new VsockmeshError('UNAVAILABLE', 'the VM manager is stopping'));
    }
    await this.queue;
  }

  // ---- writes --------------------------------------------------------------------

  private async attempt<T>(fn: (registry: Registry) => T, attempt: number): Promise<T> {
    if (this.closed) throw new VsockmeshError('UNAVAILABLE', 'not applied: the VM manager is stopping');
    const planning = this.registry.clone();
    const at = planning.revision;
    const now = Date.now();
    this.frozenNow = now;
    let planned: { result: T; changes: RegistryChange[] };
    try {
      planned = planning.recordChanges(() => fn(planning));
    } finally {
      this.frozenNow = undefined;
    }
    // Called without an await in between: what the transaction reads of the keys is what the plan was made on.
    const txn = await this.transaction(planned.changes, now);
    if (txn === undefined) return planned.result;
    if (txn === 'lost') return this.planAgain(fn, at, attempt);
    let result: { ok: boolean; revision: number };
    try {
      result = await this.store.commit({ checks: [{ prefix: this.prefix, notModifiedAfter: at }, ...txn.checks], puts: txn.puts, deletes: txn.deletes });
    } catch (err) {
      await this.revoke(txn.granted);
      // A lease the write was planned with ended before it reached the store (its records are gone with it): a lost race.
      if ((err as VsockmeshError).code === 'NOT_FOUND') return this.planAgain(fn, at, attempt);
      this.commits.failed++;
      throw err;
    }
    if (!result.ok) {
      await this.revoke(txn.granted);
      return this.planAgain(fn, at, attempt);
    }
    this.commits.ok++;
    await this.revoke(txn.released);
    await this.seen(result.revision, `committed to the store at revision ${result.revision}, but not seen back from it`);
    return planned.result;
  }

  /** The write planned at revision `at` lost a race (another replica, a lease that ended): planned again once the change that won is seen, or ABORTED. */
  private async planAgain<T>(fn: (registry: Registry) => T, at: number, attempt: number): Promise<T> {
    this.commits.conflict++;
    if (attempt >= MAX_ATTEMPTS) throw new VsockmeshError('ABORTED', `not applied: the registry changed under this request ${attempt} times (other replicas writing, leases ending); try again`);
    await this.seen(at + 1, 'not applied: the registry changed in the store under this request, and that change was not seen back from it');
    return this.attempt(fn, attempt + 1);
  }

  /**
   * The store transaction for planned changes: the last change of each key,
   * leases granted, renewed (a renewal alone is a keep-alive, applied here)
   * or released. undefined: nothing to commit. What it checks and reuses
   * (each key's mod revision, the VM's lease and record) is read before its
   * first await, as the plan saw it: a store event applied while a lease is
   * granted or kept alive (a lease that ended, another replica's delete) must
   * make the write fail its compare-and-swap, not be taken in (a check read
   * after a delete says "absent", and the write would bring the VM back).
   * 'lost': a renewal's record changed in the store meanwhile (plan again).
   */
  private async transaction(changes: RegistryChange[], now: number): Promise<{ checks: StoreCheck[]; puts: Array<{ key: string; value: string; lease?: string }>; deletes: string[]; granted: string[]; released: string[] } | 'lost' | undefined> {
    const last = new Map<string, { change: RegistryChange; modRevision: number; held: { lease: string; ttlMs: number } | undefined; existing: VmRecord | undefined }>();
    for (const change of changes) {
      const key = this.keyOf(change);
      const vmId = 'hypervisor' in change ? undefined : 'vm' in change ? change.vm.vmId : change.removed;
      last.set(key, { change, modRevision: this.modRevisions.get(key) ?? 0, held: vmId === undefined ? undefined : this.leases.get(vmId), existing: vmId === undefined ? undefined : this.registry.getVm(vmId) });
    }
    const checks: StoreCheck[] = [];
    const puts: Array<{ key: string; value: string; lease?: string }> = [];
    const deletes: string[] = [];
    const granted: string[] = [];
    const released: string[] = [];
    try {
      for (const [key, { change, modRevision, held, existing }] of last) {
        checks.push({ key, modRevision });
        if ('hypervisor' in change) {
          puts.push({ key, value: JSON.stringify(change.hypervisor) });
          continue;
        }
        if ('removed' in change) {
          deletes.push(key);
          if (held) released.push(held.lease);
          continue;
        }
        const vm = change.vm;
        const ttlMs = vm.leaseExpiresAt === null ? 0 : vm.leaseExpiresAt - now;
        let lease = '';
        if (vm.leaseExpiresAt !== null && held && existing?.leaseExpiresAt === vm.leaseExpiresAt) {
          lease = held.lease; // moved: the same lease goes on
        } else if (vm.leaseExpiresAt !== null && held && existing?.generation === vm.generation && held.ttlMs === ttlMs && (await this.store.keepAlive(held.lease))) {
          // Registered again unchanged: the lease is renewed, nothing is written; unless the record went or changed meanwhile.
          if (this.modRevisions.get(key) !== modRevision) {
            await this.revoke(granted);
            return 'lost';
          }
          this.registry.applyStored({ vm }, this.registry.revision);
          checks.pop();
          continue;
        } else if (vm.leaseExpiresAt !== null) {
          lease = await this.store.grantLease(ttlMs);
          granted.push(lease);
        }
        if (held && held.lease !== lease) released.push(held.lease);
        puts.push({ key, value: JSON.stringify(storedVm(vm, ttlMs)), ...(lease !== '' && { lease }) });
      }
    } catch (err) {
      await this.revoke(granted);
      throw err;
    }
    return puts.length === 0 && deletes.length === 0 ? undefined : { checks, puts, deletes, granted, released };
  }

  // ---- seeding -------------------------------------------------------------------

  /**
   * Makes the registry whole before this replica serves: an empty store
   * without a seed gets `load`'s registry (the inventory) written to it; a
   * seed another replica is writing is waited for (taken over, with `load`,
   * when that replica went away); a registry there already is kept.
   */
  async seed(load: ((registry: Registry) => void) | undefined): Promise<SeedOutcome> {
    let waiting = '';
    for (;;) {
      if (this.closed) throw new VsockmeshError('UNAVAILABLE', 'not seeded: the VM manager is stopping');
      const marker = this.seedMarker;
      if (marker?.state === 'seeded') return 'present';
      if (marker === undefined) {
        if (this.registry.size > 0 || this.registry.list().hypervisors.length > 0) return 'present';
        if (load === undefined) return 'empty';
        if (await this.seedAsOwner(load, undefined)) return 'seeded';
        continue;
      }
      if (this.seedOwner === undefined && load !== undefined) {
        this.logger.warn({ reason: 'seed_taken_over', owner: marker.owner }, `replica ${marker.owner} went away while seeding the registry: this replica writes what is not there yet`);
        if (await this.seedAsOwner(load, marker)) return 'seeded';
        continue;
      }
      const why = this.seedOwner === undefined ? `replica ${marker.owner} went away while seeding it, and only a replica with --inventory takes it over` : `replica ${this.seedOwner} is seeding it`;
      if (why !== waiting) {
        waiting = why;
        this.logger.info({ owner: this.seedOwner ?? marker.owner, revision: this.registry.revision }, `the registry in the store is not whole yet (${why}): waiting before serving (at most ${SEED_STALL_MS / 1000} s without a change)`);
      }
      await this.nextChange(`the registry in the store is not whole (${why}), and nothing changed in ${SEED_STALL_MS / 1000} s: not serving a part of it`);
    }
  }

  /** Claims the seed (`previous`: the marker of a seeder that went away) and writes it; false: another replica claimed it first. */
  private async seedAsOwner(load: (registry: Registry) => void, previous: SeedMarker | undefined): Promise<boolean> {
    const now = Date.now();
    const planned = new Registry({ now: () => now, ...(this.options.capacity !== undefined && { capacity: this.options.capacity }) });
    load(planned);
    const { hypervisors, vms } = planned.list();
    const wanted: SeedRecord[] = [
      ...hypervisors.map((h) => ({ key: `${this.prefix}hypervisors/${h.hypervisorId}`, value: JSON.stringify(h), leaseTtlMs: 0 })),
      ...vms.map((vm) => {
        const ttlMs = vm.leaseExpiresAt === null ? 0 : vm.leaseExpiresAt - now;
        return { key: `${this.prefix}vms/${vm.vmId}`, value: JSON.stringify(storedVm(vm, ttlMs)), leaseTtlMs: ttlMs };
      }),
    ];
    const result = await writeSeed({
      store: this.store,
      prefix: this.prefix,
      self: this.self,
      previous,
      // A first seed only into an empty registry (a delete leaves no record: what was seen empty still is).
      firstChecks: [{ prefix: this.prefix, notModifiedAfter: this.registry.revision }],
      wanted,
      logger: this.logger,
    });
    if (!result.claimed) {
      // The failed claim's revision is the whole store's (the mesh's writes on the same etcd count in it): wait for the last
      // change under this prefix instead, which a watch on the prefix delivers.
      const { records } = await this.store.list(this.prefix);
      const last = records.reduce((max, r) => Math.max(max, r.modRevision), 0);
      await this.seen(last, 'not seeded: another replica claimed the seed, and its claim was not seen back from the store');
      return false;
    }
    this.logger.info({ records: wanted.length, written: result.written, transactions: result.transactions }, `registry seeded in ${result.transactions} store transactions`);
    await this.seen(result.revision, `seeded at store revision ${result.revision}, but not seen back from it`);
    return true;
  }

  private get seedKey(): string {
    return seedKeys(this.prefix).seed;
  }

  private get ownerKey(): string {
    return seedKeys(this.prefix).owner;
  }

  /** Resolves on the next change under the prefix (or once closing); UNAVAILABLE (`what`) after SEED_STALL_MS without one. */
  private nextChange(what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.changeListeners.delete(listener);
        reject(new VsockmeshError('UNAVAILABLE', what));
      }, SEED_STALL_MS);
      const listener = (): void => {
        clearTimeout(timer);
        this.changeListeners.delete(listener);
        resolve();
      };
      this.changeListeners.add(listener);
    });
  }

  /** A seed key's record taken in (true), or false: not a seed key. */
  private seedRecord(key: string, record: StoreRecord | undefined): boolean {
    if (key === this.ownerKey) {
      this.seedOwner = readSeedOwner(record);
      return true;
    }
    if (key !== this.seedKey) return false;
    this.seedMarker = readSeedMarker(record);
    return true;
  }

  private keyOf(change: RegistryChange): string {
    if ('hypervisor' in change) return `${this.prefix}hypervisors/${change.hypervisor.hypervisorId}`;
    return `${this.prefix}vms/${'vm' in change ? change.vm.vmId : change.removed}`;
  }

  /** Ends leases nothing lives by any more (their records were rewritten, deleted, or never written). */
  private revoke(leases: string[]): Promise<void> {
    return revokeLeases(this.store, this.logger, leases);
  }

  /** Resolves once the registry is at `revision` or later; else UNAVAILABLE (`what`) after SEEN_TIMEOUT_MS. */
  private seen(revision: number, what: string): Promise<void> {
    if (this.registry.revision >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        revision,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new VsockmeshError('UNAVAILABLE', `${what} within ${SEEN_TIMEOUT_MS} ms (the store's watch is behind)`));
        }, SEEN_TIMEOUT_MS),
      };
      this.waiters.push(waiter);
    });
  }

  // ---- following the store -----------------------------------------------------------

  /** One store transaction's events (one revision). */
  private applyEvents(events: StoreEvent[]): void {
    const revision = events[0]!.revision;
    for (const event of events) {
      try {
        if (event.type === 'put') {
          this.stored(event.record, this.registry, revision);
          continue;
        }
        this.modRevisions.delete(event.key);
        if (this.seedRecord(event.key, undefined)) continue;
        const hypervisorId = this.idOf(event.key, 'hypervisors/');
        if (hypervisorId !== undefined) {
          this.hypervisorGone(hypervisorId, revision);
          continue;
        }
        const vmId = this.idOf(event.key, 'vms/');
        if (vmId === undefined) continue;
        this.parked.delete(vmId);
        if (this.registry.getVm(vmId) === undefined) continue;
        this.leases.delete(vmId);
        this.registry.applyStored({ removed: vmId }, revision);
      } catch (err) {
        // A subscriber that throws (the change itself is applied): the others still heard of it.
        this.logger.error({ err, reason: 'apply_failed' }, `applying a store change: ${(err as Error).message}`);
      }
    }
    this.registry.advanceTo(revision);
    this.follower.answered();
    this.release();
    for (const listener of [...this.changeListeners]) listener();
  }

  private release(): void {
    const due = this.waiters.filter((w) => w.revision <= this.registry.revision);
    if (due.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.revision > this.registry.revision);
    for (const w of due) {
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  /** After a watch that ended (compacted, cancelled): the whole registry as read again, the differences applied as events (then followed from there). */
  private resynced(records: StoreRecord[], revision: number): void {
    const listed = { records, revision };
    const present = new Set(listed.records.map((r) => this.idOf(r.key, 'vms/')).filter((id) => id !== undefined));
    for (const key of [this.seedKey, this.ownerKey]) if (!listed.records.some((r) => r.key === key)) this.seedRecord(key, undefined);
    // Every key that vanished, whatever it held (a VM, a hypervisor, a record left out as invalid), as a
    // delete event would: a write to it must check that it is absent, not compare with a revision that is gone.
    const keys = new Set(listed.records.map((r) => r.key));
    for (const key of [...this.modRevisions.keys()]) if (!keys.has(key)) this.modRevisions.delete(key);
    for (const vm of this.registry.list().vms) {
      if (present.has(vm.vmId)) continue;
      this.leases.delete(vm.vmId);
      this.registry.applyStored({ removed: vm.vmId }, listed.revision);
    }
    for (const vmId of [...this.parked.keys()]) {
      if (present.has(vmId)) continue;
      this.parked.delete(vmId);
      this.leases.delete(vmId);
    }
    for (const h of this.registry.list().hypervisors) if (!keys.has(`${this.prefix}hypervisors/${h.hypervisorId}`)) this.hypervisorGone(h.hypervisorId, listed.revision);
    for (const record of listed.records) {
      if (this.modRevisions.get(record.key) === record.modRevision) continue;
      this.stored(record, this.registry, listed.revision);
    }
    // The events in between were not seen one by one: a Watch from before this revision must start over.
    this.registry.advanceTo(listed.revision, true);
    this.follower.setAvailability(null);
    this.release();
    for (const listener of [...this.changeListeners]) listener();
  }

  /**
   * A stored record taken into `into`: restored (revision undefined: a
   * registry being read) or applied at the store's `revision`. A record that
   * does not read or breaks a rule is logged and left out; a VM whose
   * hypervisor is not there is parked (`follow`: this replica's registry).
   */
  private stored(record: StoreRecord, into: Registry, revision: number | undefined, follow = true): void {
    if (record.key === this.seedKey || record.key === this.ownerKey) {
      if (follow) this.seedRecord(record.key, record);
      return;
    }
    // Kept even for a record left out: a write to its key must compare against what the store holds.
    if (follow) this.modRevisions.set(record.key, record.modRevision);
    try {
      const value = JSON.parse(record.value) as unknown;
      const hypervisorId = this.idOf(record.key, 'hypervisors/');
      const vmId = this.idOf(record.key, 'vms/');
      if (hypervisorId !== undefined) {
        if ((value as HypervisorRecord | null)?.hypervisorId !== hypervisorId) throw new ValidationError('hypervisor_id', `is not the key's ${JSON.stringify(hypervisorId)}`);
        if (revision === undefined) into.restoreHypervisor(value as HypervisorRecord);
        else into.applyStored({ hypervisor: value }, revision);
        if (follow && revision !== undefined) this.unpark(hypervisorId, revision);
      } else if (vmId !== undefined) {
        const { leaseTtlMs, ...vm } = value as StoredVm;
        if (vm.vmId !== vmId) throw new ValidationError('vm_id', `is not the key's ${JSON.stringify(vmId)}`);
        if (!Number.isSafeInteger(leaseTtlMs) || leaseTtlMs < 0) throw new ValidationError('lease_ttl_ms', 'must be an integer >= 0');
        const hasLease = leaseTtlMs > 0 && record.lease !== '';
        const stored: VmRecord = { ...vm, leaseExpiresAt: hasLease ? Date.now() + leaseTtlMs : null };
        if (follow) this.parked.delete(vmId);
        if (follow && typeof vm.hypervisorId === 'string' && !into.hasHypervisor(vm.hypervisorId)) {
          this.park(stored, into, revision);
        } else if (revision === undefined) into.restoreVm(stored);
        else into.applyStored({ vm: stored }, revision);
        if (!follow) return;
        if (hasLease) this.leases.set(vmId, { lease: record.lease, ttlMs: leaseTtlMs });
        else this.leases.delete(vmId);
      } else {
        throw new ValidationError('key', 'is neither hypervisors/<id> nor vms/<id>');
      }
    } catch (err) {
      if (!(err instanceof VsockmeshError) && !(err instanceof SyntaxError)) throw err;
      if (follow) this.logger.warn({ key: record.key, mod_revision: record.modRevision, reason: 'invalid_registry_record_in_store' }, `store record ${record.key} left out: ${err.message}`);
    }
  }

  /** A VM record whose hypervisor is not in `into`: out of the registry (if it was in) until its hypervisor is put. */
  private park(vm: VmRecord, into: Registry, revision: number | undefined): void {
    this.parked.set(vm.vmId, vm);
    if (revision !== undefined && into.getVm(vm.vmId) !== undefined) into.applyStored({ removed: vm.vmId }, revision);
    this.logger.warn(
      { vm_id: vm.vmId, hypervisor_id: vm.hypervisorId, reason: 'vm_without_hypervisor' },
      `VM ${vm.vmId} left out of the registry: its hypervisor ${vm.hypervisorId} is not in the store (taken in when it is registered again)`,
    );
  }

  /** The parked VMs on `hypervisorId`, just put: into the registry. */
  private unpark(hypervisorId: string, revision: number): void {
    for (const [vmId, vm] of this.parked) {
      if (vm.hypervisorId !== hypervisorId) continue;
      this.parked.delete(vmId);
      try {
        this.registry.applyStored({ vm }, revision);
      } catch (err) {
        if (!(err instanceof VsockmeshError)) throw err;
        this.logger.warn({ vm_id: vmId, reason: 'invalid_registry_record_in_store' }, `VM ${vmId} left out with its hypervisor back: ${err.message}`);
      }
    }
  }

  /** A hypervisor deleted in the store: out of the registry, its VMs parked (their records are still in the store). */
  private hypervisorGone(hypervisorId: string, revision: number): void {
    if (!this.registry.hasHypervisor(hypervisorId)) return;
    const vms = this.registry.removeStoredHypervisor(hypervisorId, revision);
    for (const vm of vms) this.parked.set(vm.vmId, vm);
    this.logger.warn(
      { hypervisor_id: hypervisorId, vms: vms.length, reason: 'hypervisor_deleted' },
      `hypervisor ${hypervisorId} deleted in the store: out of the registry${vms.length === 0 ? '' : `, with the ${vms.length} VMs on it (${vms.map((v) => v.vmId).join(', ')}) until it is registered again`}`,
    );
  }

  private idOf(key: string, kind: 'hypervisors/' | 'vms/'): string | undefined {
    const head = `${this.prefix}${kind}`;
    return key.startsWith(head) && key.length > head.length ? key.slice(head.length) : undefined;
  }
}
