// Seeding a store prefix from a file (the VM inventory, the mesh file) when
// replicas start at once on one etcd, in transactions etcd takes with its
// default limits:
//
//   <prefix>seed        {state: seeding|seeded, owner}
//   <prefix>seed-owner  {owner}: the replica writing the seed, on a lease it keeps alive
//
// The first replica claims the seed (both keys by compare-and-swap, with the
// caller's own checks that the store holds nothing yet), writes the records
// in chunks (seed-plan.ts), each checked against its owner key, and the last
// chunk sets `seeded`, deletes the owner key and carries the caller's final
// puts. Other replicas wait for `seeded` (the caller decides how it follows
// the store); when the owner key goes (its lease ended: the seeder died), a
// replica with the seed claims it again and writes what is not there yet.

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { planSeedChunks, SEED_TXN_BYTES, SEED_TXN_OPS, type SeedRecord } from './seed-plan.js';
import type { Store, StoreCheck, StoreRecord, StoreTxn, StoreTxnResult } from './store.js';

/** The seeder's lease: a seeder that died is taken over once it ends. */
export const SEED_LEASE_MS = 10_000;
/** How long a replica waits for another's seed with no change under the prefix before it gives up. */
export const SEED_STALL_MS = 60_000;
/** What a seed chunk holds beside its records and the final puts: the owner check, and in the last one the marker put and the owner delete. */
const SEED_CHUNK_OWN_OPS = 3;

export interface SeedMarker {
  state: 'seeding' | 'seeded';
  owner: string;
  modRevision: number;
}

/** This process, as a seed's owner. */
export function seedOwnerName(): string {
  return `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
}

export function seedKeys(prefix: string): { seed: string; owner: string } {
  return { seed: `${prefix}seed`, owner: `${prefix}seed-owner` };
}

/** The marker a seed record holds; one that does not read (written by hand) is a seed in progress: a store is not served as whole on a guess. */
export function readSeedMarker(record: StoreRecord | undefined): SeedMarker | undefined {
  if (record === undefined) return undefined;
  const value = parseJson(record.value) as { state?: unknown; owner?: unknown } | undefined;
  return { state: value?.state === 'seeded' ? 'seeded' : 'seeding', owner: typeof value?.owner === 'string' ? value.owner : '(unknown)', modRevision: record.modRevision };
}

/** The replica an owner record names. */
export function readSeedOwner(record: StoreRecord | undefined): string | undefined {
  if (record === undefined) return undefined;
  const owner = (parseJson(record.value) as { owner?: unknown } | undefined)?.owner;
  return typeof owner === 'string' ? owner : '(unknown)';
}

export interface SeedWrite {
  store: Store;
  prefix: string;
  /** This replica (seedOwnerName()). */
  self: string;
  /** The marker of a seeder that went away (a takeover), or undefined: a first seed. */
  previous: SeedMarker | undefined;
  /** What a first claim also checks: that the store holds nothing under the prefix yet. */
  firstChecks: readonly StoreCheck[];
  /** The records the seed holds; those the store holds as they are already are not written again. */
  wanted: readonly SeedRecord[];
  /** Written with the last chunk, beside the marker. */
  finalPuts?: ReadonlyArray<{ key: string; value: string }>;
  logger: Logger;
}

export type SeedWriteResult = { claimed: false; revision: number } | { claimed: true; revision: number; written: number; transactions: number };

/** Claims the seed and writes it; claimed false: another replica claimed it first (`revision`: the store's then). */
export async function writeSeed(w: SeedWrite): Promise<SeedWriteResult> {
  const { store, logger } = w;
  const keys = seedKeys(w.prefix);
  const marker = (state: SeedMarker['state']): { key: string; value: string } => ({ key: keys.seed, value: JSON.stringify({ state, owner: w.self }) });
  const lease = await store.grantLease(SEED_LEASE_MS);
  const claim = await commitOrRevoke(store, logger, [lease], {
    checks: [{ key: keys.seed, modRevision: w.previous?.modRevision ?? 0 }, { key: keys.owner, modRevision: 0 }, ...(w.previous === undefined ? w.firstChecks : [])],
    puts: [marker('seeding'), { key: keys.owner, value: JSON.stringify({ owner: w.self }), lease }],
  });
  if (!claim.ok) return { claimed: false, revision: claim.revision };
  try {
    const present = new Map((await store.list(w.prefix)).records.map((r) => [r.key, r.value]));
    const finalPuts = w.finalPuts ?? [];
    const chunks = planSeedChunks(w.wanted, present, { maxRecords: SEED_TXN_OPS - SEED_CHUNK_OWN_OPS - finalPuts.length, maxBytes: SEED_TXN_BYTES });
    let revision = claim.revision;
    for (const [i, chunk] of chunks.entries()) {
      const last = i === chunks.length - 1;
      if (!(await store.keepAlive(lease))) throw new VsockmeshError('ABORTED', "not seeded: this replica's seed lease ended (the store was out of reach too long); another replica takes the seed over");
      const granted: string[] = [];
      const puts: Array<{ key: string; value: string; lease?: string }> = [];
      for (const record of chunk) {
        const recordLease = record.leaseTtlMs > 0 ? await store.grantLease(record.leaseTtlMs) : '';
        if (recordLease !== '') granted.push(recordLease);
        puts.push({ key: record.key, value: record.value, ...(recordLease !== '' && { lease: recordLease }) });
      }
      const result = await commitOrRevoke(store, logger, granted, {
        checks: [{ key: keys.owner, modRevision: claim.revision }],
        puts: last ? [...puts, ...finalPuts, marker('seeded')] : puts,
        deletes: last ? [keys.owner] : [],
      });
      if (!result.ok) throw new VsockmeshError('ABORTED', 'not seeded: another replica took the seed over (this one was too slow to keep its lease)');
      revision = result.revision;
    }
    return { claimed: true, revision, written: chunks.reduce((n, c) => n + c.length, 0), transactions: chunks.length + 1 };
  } finally {
    await revokeLeases(store, logger, [lease]);
  }
}

/**
 * Resolves on the next change under `prefix` after `afterRevision` (what a
 * replica waiting for another's seed follows); UNAVAILABLE (`what`) after
 * SEED_STALL_MS without one, or the watch's error.
 */
export function nextSeedChange(store: Store, prefix: string, afterRevision: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error): void => {
      clearTimeout(timer);
      watch.cancel();
      if (err === undefined) resolve();
      else reject(err);
    };
    const timer = setTimeout(() => settle(new VsockmeshError('UNAVAILABLE', what)), SEED_STALL_MS);
    const watch = store.watch(prefix, afterRevision, { onEvents: () => settle(), onError: (err) => settle(err) });
  });
}

/** A commit; when it fails or is refused, `leases` (granted for it) are revoked. */
async function commitOrRevoke(store: Store, logger: Logger, leases: string[], txn: StoreTxn): Promise<StoreTxnResult> {
  let result: StoreTxnResult;
  try {
    result = await store.commit(txn);
  } catch (err) {
    await revokeLeases(store, logger, leases);
    throw err;
  }
  if (!result.ok) await revokeLeases(store, logger, leases);
  return result;
}

/** Ends leases nothing lives by (best effort: an unrenewed lease ends by itself). */
export async function revokeLeases(store: Store, logger: Logger, leases: readonly string[]): Promise<void> {
  for (const lease of leases) {
    try {
      await store.revokeLease(lease);
    } catch (err) {
      logger.warn({ err, reason: 'lease_revoke_failed' }, `cannot revoke store lease ${lease}: it ends with its TTL`);
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
