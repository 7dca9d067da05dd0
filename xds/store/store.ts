// The one store interface the VM manager and the control plane keep their
// state in, with etcd's model (revisions, transactions, watches, leases) so
// that the memory, file and etcd implementations answer alike (one contract
// suite, test/integration/store-contract.test.ts, holds all three to it):
//
// - Records are keys (strings, a role's prefix first) with a string value.
// - Every committed change gets the next store revision; all the puts and
//   deletes of one transaction share it. A record carries the revision that
//   created it and the one that last changed it (modRevision).
// - commit() is a transaction: its checks (a key's modRevision, 0 = absent;
//   or no record under a prefix changed after a revision) all hold and every put and delete applies, or nothing does ({ ok: false }).
//   A commit that resolves ok is durable (file: fsync'ed; etcd: committed by
//   a quorum) and visible to list/get/watch.
// - watch(prefix, afterRevision) delivers every change after that revision in
//   order, then follows; a revision older than the store's history
//   (compacted) fails with OUT_OF_RANGE: start over from a list().
//   hasHistoryAfter() asks the same question without opening a watch.
// - Leases: a record put with a lease is deleted (a watched delete) when the
//   lease is not kept alive within its TTL.
// - epoch(): names the history the revisions belong to (etcd: the cluster id;
//   file: an id kept in the file; memory: new per process): a revision from
//   another epoch means nothing here.

import { VsockmeshError } from '../../proxy/runtime/errors.js';

export interface StoreRecord {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  /** The lease the record lives by, '' for none. */
  lease: string;
}

export type StoreEvent = { type: 'put'; revision: number; record: StoreRecord } | { type: 'delete'; revision: number; key: string };

export type StoreCheck =
  | {
      key: string;
      /** The key's modRevision must be this; 0: the key must not exist. */
      modRevision: number;
    }
  | {
      /** No record under this prefix was put after `revision` (a delete leaves no record, so it does not count: etcd's range compare). */
      prefix: string;
      notModifiedAfter: number;
    };

export interface StoreTxn {
  checks?: readonly StoreCheck[];
  puts?: ReadonlyArray<{ key: string; value: string; lease?: string }>;
  deletes?: readonly string[];
}

/** ok: applied at `revision`; not ok: a check failed and nothing changed (`revision`: the store's then). */
export interface StoreTxnResult {
  ok: boolean;
  revision: number;
}

export interface StoreWatchHandlers {
  /** Changes in revision order; the events of one transaction come in one call. */
  onEvents(events: StoreEvent[]): void;
  /** The watch ended: OUT_OF_RANGE (compacted), or UNAVAILABLE (the store is gone). Nothing follows. */
  onError(err: VsockmeshError): void;
  /**
   * The store went out of reach (why) or is back (null) while the watch goes on reconnecting by
   * itself (etcd only; memory and file stores are always there): what readiness follows.
   */
  onAvailability?(unavailable: string | null): void;
}

export interface StoreWatch {
  cancel(): void;
}

export interface Store {
  readonly kind: 'memory' | 'file' | 'etcd';
  epoch(): Promise<string>;
  /**
   * The records under `prefix` (by key) and the revision they are as of;
   * `atRevision`: as they were then (etcd keeps past states until it
   * compacts; memory and file only the current one): OUT_OF_RANGE when the
   * store no longer has that state.
   */
  list(prefix: string, atRevision?: number): Promise<{ records: StoreRecord[]; revision: number }>;
  get(key: string): Promise<StoreRecord | undefined>;
  commit(txn: StoreTxn): Promise<StoreTxnResult>;
  watch(prefix: string, afterRevision: number, handlers: StoreWatchHandlers): StoreWatch;
  /** Whether a watch from `afterRevision` would be answered (false: compacted, it would get OUT_OF_RANGE). */
  hasHistoryAfter(afterRevision: number): Promise<boolean>;
  /** A lease of at least `ttlMs` (etcd counts whole seconds: rounded up). */
  grantLease(ttlMs: number): Promise<string>;
  /** Restarts the lease's TTL; false if it is gone (expired or revoked: its records are deleted). */
  keepAlive(lease: string): Promise<boolean>;
  /** Ends the lease now, deleting its records. */
  revokeLease(lease: string): Promise<void>;
  /** Forgets the history before `revision`: a watch from an earlier revision gets OUT_OF_RANGE. */
  compact(revision: number): Promise<void>;
  close(): Promise<void>;
}

/** A watch asked for history the store no longer has. */
export class StoreCompactedError extends VsockmeshError {
  constructor(
    readonly afterRevision: number,
    readonly compactRevision: number,
  ) {
    super('OUT_OF_RANGE', `revision ${afterRevision} is compacted (history starts at ${compactRevision}): watch from the start`);
  }
}

/** The store cannot be reached or written; the message says whether a change may have been applied. */
export class StoreUnavailableError extends VsockmeshError {
  constructor(message: string, options?: ErrorOptions) {
    super('UNAVAILABLE', message, options);
  }
}
