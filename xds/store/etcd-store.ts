// The store on etcd (store.ts has the contract), spoken to over etcd's v3
// gRPC API with @grpc/grpc-js and the vendored subset of its protos
// (proto/etcd/): no client library between us and etcd (README, "Store").
//
// Revisions, transactions, watches, leases and compaction are etcd's own: a
// record is a key, commit() one Txn (compare mod_revision, or version 0 for
// "absent"), a watch one Watch stream from start_revision = after + 1 (its
// compact_revision answer is our OUT_OF_RANGE), the epoch the cluster id.
// A watch whose stream breaks (etcd restarted, the member went away) is
// opened again from the last revision it delivered, on the next endpoint,
// after 250 ms doubling to 5 s: no event is lost or delivered twice.

import * as grpc from '@grpc/grpc-js';
import { Backoff } from '../../proxy/runtime/backoff.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import type { KVClient } from '../generated/etcd/etcdserverpb/KV.js';
import type { LeaseClient } from '../generated/etcd/etcdserverpb/Lease.js';
import type { MaintenanceClient } from '../generated/etcd/etcdserverpb/Maintenance.js';
import type { RequestOp } from '../generated/etcd/etcdserverpb/RequestOp.js';
import type { WatchClient } from '../generated/etcd/etcdserverpb/Watch.js';
import type { LeaseGrantResponse__Output } from '../generated/etcd/etcdserverpb/LeaseGrantResponse.js';
import type { RangeResponse__Output } from '../generated/etcd/etcdserverpb/RangeResponse.js';
import type { StatusResponse__Output } from '../generated/etcd/etcdserverpb/StatusResponse.js';
import type { TxnResponse__Output } from '../generated/etcd/etcdserverpb/TxnResponse.js';
import type { WatchRequest } from '../generated/etcd/etcdserverpb/WatchRequest.js';
import type { WatchResponse__Output } from '../generated/etcd/etcdserverpb/WatchResponse.js';
import type { KeyValue__Output } from '../generated/etcd/mvccpb/KeyValue.js';
import { etcdProto } from './etcd-proto.js';
import { StoreCompactedError, StoreUnavailableError, type Store, type StoreEvent, type StoreRecord, type StoreTxn, type StoreTxnResult, type StoreWatch, type StoreWatchHandlers } from './store.js';

/** How the store reaches etcd: TLS with a client certificate (PEM), or plain text only when asked for by name. */
export type EtcdTransport = { readonly insecure: true } | { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer };

export interface EtcdStoreOptions {
  /** host:port of each member; calls go to one, and to the next when it does not answer. */
  endpoints: string[];
  transport: EtcdTransport;
  /** Deadline of each call (default 5 s). */
  timeoutMs?: number;
}

/** Records per Range call when listing (a list is still one revision: later pages read at the first's). */
const LIST_PAGE = 1_000;
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

interface Clients {
  endpoint: string;
  kv: KVClient;
  watch: WatchClient;
  lease: LeaseClient;
  maintenance: MaintenanceClient;
}

export class EtcdStore implements Store {
  readonly kind = 'etcd' as const;
  private readonly members: Clients[];
  private current = 0;
  private readonly timeoutMs: number;
  private readonly watches = new Set<() => void>();
  private clusterId: string | undefined;

  constructor(options: EtcdStoreOptions) {
    if (options.endpoints.length === 0) throw new VsockmeshError('INVALID_ARGUMENT', 'store: no etcd endpoint');
    this.timeoutMs = options.timeoutMs ?? 5_000;
    const proto = etcdProto().etcdserverpb;
    const credentials = 'insecure' in options.transport ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(options.transport.ca, options.transport.key, options.transport.cert);
    this.members = options.endpoints.map((endpoint) => {
      const kv = new proto.KV(endpoint, credentials, { 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES });
      const shared = { channelOverride: kv.getChannel() };
      return { endpoint, kv, watch: new proto.Watch(endpoint, credentials, shared), lease: new proto.Lease(endpoint, credentials, shared), maintenance: new proto.Maintenance(endpoint, credentials, shared) };
    });
  }

  async epoch(): Promise<string> {
    this.clusterId ??= (await this.unary<StatusResponse__Output>((m, o, cb) => m.maintenance.Status({}, o, cb))).header?.cluster_id ?? '';
    return `etcd-${this.clusterId}`;
  }

  async list(prefix: string, atRevision?: number): Promise<{ records: StoreRecord[]; revision: number }> {
    const records: StoreRecord[] = [];
    const end = prefixEnd(prefix);
    let from = Buffer.from(prefix);
    let revision = atRevision ?? 0;
    for (;;) {
      const page = await this.unary<RangeResponse__Output>((m, o, cb) => m.kv.Range({ key: from, range_end: end, limit: LIST_PAGE, revision, sort_order: 'ASCEND', sort_target: 'KEY' }, o, cb));
      revision ||= Number(page.header?.revision ?? 0);
      records.push(...page.kvs.map(toRecord));
      if (!page.more || page.kvs.length === 0) return { records, revision };
      from = Buffer.concat([page.kvs.at(-1)!.key, Buffer.from([0])]);
    }
  }

  async get(key: string): Promise<StoreRecord | undefined> {
    const res = await this.unary<RangeResponse__Output>((m, o, cb) => m.kv.Range({ key: Buffer.from(key) }, o, cb));
    return res.kvs[0] === undefined ? undefined : toRecord(res.kvs[0]);
  }

  async commit(txn: StoreTxn): Promise<StoreTxnResult> {
    const compare = (txn.checks ?? []).map((c) =>
      'prefix' in c
        ? { key: Buffer.from(c.prefix), range_end: prefixEnd(c.prefix), result: 'LESS' as const, target: 'MOD' as const, mod_revision: c.notModifiedAfter + 1 }
        : c.modRevision === 0
          ? { key: Buffer.from(c.key), result: 'EQUAL' as const, target: 'VERSION' as const, version: 0 }
          : { key: Buffer.from(c.key), result: 'EQUAL' as const, target: 'MOD' as const, mod_revision: c.modRevision },
    );
    const success: RequestOp[] = [
      ...(txn.deletes ?? []).map((key) => ({ request_delete_range: { key: Buffer.from(key) } })),
      ...(txn.puts ?? []).map((p) => ({ request_put: { key: Buffer.from(p.key), value: Buffer.from(p.value), ...(p.lease !== undefined && p.lease !== '' && { lease: p.lease }) } })),
    ];
    const res = await this.unary<TxnResponse__Output>((m, o, cb) => m.kv.Txn({ compare, success }, o, cb));
    return { ok: res.succeeded, revision: Number(res.header?.revision ?? 0) };
  }

  async hasHistoryAfter(afterRevision: number): Promise<boolean> {
    try {
      // Reading as of the first revision a watch would deliver: etcd refuses it once that is compacted.
      await this.unary<RangeResponse__Output>((m, o, cb) => m.kv.Range({ key: Buffer.from([0]), revision: afterRevision + 1, count_only: true }, o, cb));
      return true;
    } catch (err) {
      if ((err as VsockmeshError).code !== 'OUT_OF_RANGE') throw err;
      // A revision not reached yet is not compacted: the watch waits for it.
      return /future revision/.test((err as Error).message);
    }
  }

  watch(prefix: string, afterRevision: number, handlers: StoreWatchHandlers): StoreWatch {
    let last = afterRevision;
    let call: grpc.ClientDuplexStream<WatchRequest, WatchResponse__Output> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const backoff = new Backoff({ initialMs: 250, maxMs: 5_000 });
    const end = (): void => {
      ended = true;
      this.watches.delete(end);
      clearTimeout(timer);
      call?.cancel();
    };
    const open = (): void => {
      const member = this.members[this.current]!;
      const stream = member.watch.Watch();
      call = stream;
      stream.on('data', (res: WatchResponse__Output) => {
        if (ended) return;
        if (res.canceled || Number(res.compact_revision) > 0) {
          end();
          handlers.onError(Number(res.compact_revision) > 0 ? new StoreCompactedError(last, Number(res.compact_revision)) : new StoreUnavailableError(`etcd cancelled the watch: ${res.cancel_reason}`));
          return;
        }
        if (res.created) {
          backoff.reset();
          handlers.onAvailability?.(null);
        }
        deliverByRevision(res, (revision, events) => {
          last = revision;
          handlers.onEvents(events);
        });
      });
      // The stream's end is reported by 'error' or 'end' (a cancel of ours is 'error' CANCELLED): reopen unless we ended it.
      const broken = (err?: grpc.ServiceError): void => {
        if (ended || call !== stream) return;
        call = undefined;
        handlers.onAvailability?.(`etcd at ${member.endpoint}: ${err === undefined ? 'the watch stream ended' : `${grpc.status[err.code] ?? err.code}: ${err.details}`}`);
        this.current = (this.current + 1) % this.members.length;
        timer = setTimeout(open, backoff.next());
        timer.unref();
      };
      stream.on('error', broken);
      stream.on('end', () => broken());
      stream.write({ create_request: { key: Buffer.from(prefix), range_end: prefixEnd(prefix), start_revision: last + 1 } });
    };
    this.watches.add(end);
    open();
    return { cancel: end };
  }

  async grantLease(ttlMs: number): Promise<string> {
    const res = await this.unary<LeaseGrantResponse__Output>((m, o, cb) => m.lease.LeaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)) }, o, cb));
    if (res.error !== '') throw new StoreUnavailableError(`not applied: etcd refused a lease: ${res.error}`);
    return res.ID;
  }

  keepAlive(lease: string): Promise<boolean> {
    const member = this.members[this.current]!;
    return new Promise((resolve, reject) => {
      const stream = member.lease.LeaseKeepAlive({ deadline: this.deadline() });
      stream.once('data', (res: { TTL: string }) => {
        resolve(Number(res.TTL) > 0);
        stream.cancel();
      });
      stream.once('error', (err: grpc.ServiceError) => {
        if (err.code !== grpc.status.CANCELLED) reject(this.failed(member, err));
      });
      stream.write({ ID: lease });
    });
  }

  async revokeLease(lease: string): Promise<void> {
    try {
      await this.unary((m, o, cb) => m.lease.LeaseRevoke({ ID: lease }, o, cb));
    } catch (err) {
      if ((err as VsockmeshError).code !== 'NOT_FOUND') throw err;
    }
  }

  async compact(revision: number): Promise<void> {
    try {
      await this.unary((m, o, cb) => m.kv.Compact({ revision, physical: true }, o, cb));
    } catch (err) {
      // Already compacted that far: what was asked holds.
      if (!/has been compacted/.test((err as Error).message)) throw err;
    }
  }

  close(): Promise<void> {
    for (const end of [...this.watches]) end();
    for (const m of this.members) {
      m.watch.close();
      m.lease.close();
      m.maintenance.close();
      m.kv.close();
    }
    return Promise.resolve();
  }

  private deadline(): Date {
    return new Date(Date.now() + this.timeoutMs);
  }

  /** One unary call to the current member; one that does not answer makes the next member current. */
  private unary<Res>(start: (m: Clients, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    const member = this.members[this.current]!;
    return new Promise((resolve, reject) => {
      start(member, { deadline: this.deadline() }, (err, res) => {
        if (err) reject(this.failed(member, err));
        else resolve(res as Res);
      });
    });
  }

  private failed(member: Clients, err: grpc.ServiceError): VsockmeshError {
    if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED) {
      if (this.members[this.current] === member) this.current = (this.current + 1) % this.members.length;
      // The request may have reached etcd before the connection or the deadline went: a change may have been applied.
      return new StoreUnavailableError(`etcd at ${member.endpoint} did not answer (${err.details}): a change may or may not have been applied`, { cause: err });
    }
    if (err.code === grpc.status.NOT_FOUND) return new VsockmeshError('NOT_FOUND', `etcd: ${err.details}`);
    if (err.code === grpc.status.OUT_OF_RANGE) return new VsockmeshError('OUT_OF_RANGE', `etcd: ${err.details}`);
    return new VsockmeshError('INTERNAL', `etcd at ${member.endpoint}: ${grpc.status[err.code]}: ${err.details}`, { cause: err });
  }
}

/** etcd's range end for a prefix: every key that starts with it is below it. */
export function prefixEnd(prefix: string): Buffer {
  const bytes = Buffer.from(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i] = bytes[i]! + 1;
      return end;
    }
  }
  // Only 0xff bytes (or none): to the end of the keyspace.
  return Buffer.from([0]);
}

function toRecord(kv: KeyValue__Output): StoreRecord {
  return { key: kv.key.toString(), value: kv.value.toString(), createRevision: Number(kv.create_revision), modRevision: Number(kv.mod_revision), lease: kv.lease === '0' ? '' : kv.lease };
}

/** A response's events, one call per revision (one etcd transaction). */
function deliverByRevision(res: WatchResponse__Output, deliver: (revision: number, events: StoreEvent[]) => void): void {
  let batch: StoreEvent[] = [];
  let revision = 0;
  for (const e of res.events) {
    const kv = e.kv!;
    const at = Number(kv.mod_revision);
    if (batch.length > 0 && at !== revision) deliver(revision, batch);
    if (at !== revision) batch = [];
    revision = at;
    batch.push(e.type === 'DELETE' ? { type: 'delete', revision: at, key: kv.key.toString() } : { type: 'put', revision: at, record: toRecord(kv) });
  }
  if (batch.length > 0) deliver(revision, batch);
}
