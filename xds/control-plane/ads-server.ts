// The Aggregated Discovery Service (Envoy's xDS over one gRPC stream), both
// state-of-the-world (StreamAggregatedResources) and incremental
// (DeltaAggregatedResources), serving what the SnapshotCache holds per node.
//
// Per stream and type URL the server keeps the client's subscription, the
// last response sent (version, nonce) and, for delta, the versions the client
// has. Responses are built when they are written, from the snapshot current
// at that moment: a stream whose write buffer is full (write() returned
// false) owes at most one response per type, sent on 'drain' with the latest
// state, so nothing queues without bound.
//
// Protocol decisions (see the xDS REST and gRPC protocol doc):
// - The first request must carry node.id (else INVALID_ARGUMENT); later ones
//   may omit node; a different node id later on is ignored.
// - type_url is required (ADS); types other than CDS/EDS/LDS/RDS are ignored.
// - SotW: a request with a response_nonce other than the last one sent for
//   its type is stale and ignored entirely. A request without a nonce (the
//   first one for a type, or a client's re-request) is always answered, even
//   when the client already has the version. A request with the latest nonce
//   is an ACK (version_info = the version sent) or a NACK (error_detail set);
//   either way it is answered only if it changes the subscription. Pushes on
//   snapshot changes go to every subscribed type whose version differs from
//   the one last sent, in the order CDS, EDS, LDS, RDS, and every CDS
//   response is followed by an EDS response when EDS is subscribed (even an
//   unchanged or NACKed EDS version: Envoy warms clusters on it).
// - LDS/CDS: an empty first resource_names, or "*", is a wildcard (the full
//   state is sent); EDS/RDS: the named resources that exist.
// - Delta: subscribe/unsubscribe always apply (they are deltas; dropping one
//   would lose it), ACK/NACK only with the latest nonce. initial_resource_versions
//   (first request of a type) seed what the client has: only resources of
//   another version are sent, names it has that no longer exist come back in
//   removed_resources. The first request of a type is always answered (maybe
//   empty); later changes only when something is added, changed or removed.
//   No EDS-after-CDS rule (delta clients keep their assignments).
// - Bounds (bounds.ts): a node id, a resource name or version longer than its
//   bound fails the stream with INVALID_ARGUMENT; a request naming, or a
//   stream subscribed to, more resource names than MAX_XDS_NAMES_PER_STREAM
//   fails it with RESOURCE_EXHAUSTED. The reason is logged.
// - Sync status (per node and type: sent, ACKed, NACKed with the error text
//   cut to MAX_NACK_TEXT_BYTES) is kept while a node has a stream open and
//   for the status retention after its last one closed (node-retention.ts).

import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Registry as MetricsRegistry } from 'prom-client';
import type { Logger } from '../../proxy/runtime/log.js';
import type { AggregatedDiscoveryServiceHandlers } from '../generated/envoy/envoy/service/discovery/v3/AggregatedDiscoveryService.js';
import {
  adsServiceDefinition,
  RESOURCE_TYPE_URLS,
  TYPE_SHORT_NAMES,
  TYPE_URLS,
  type DeltaDiscoveryRequest__Output,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest__Output,
  type DiscoveryResponse,
  type ResourceTypeUrl,
} from '../envoy/proto.js';
import {
  DEFAULT_STATUS_RETENTION_MS,
  MAX_DISCONNECTED_NODES,
  MAX_NACK_TEXT_BYTES,
  MAX_XDS_NAMES_PER_STREAM,
  MAX_XDS_NODE_ID_LENGTH,
  MAX_XDS_RESOURCE_NAME_LENGTH,
  truncateUtf8,
} from './bounds.js';
import { NodeRetention } from './node-retention.js';
import type { SnapshotCache } from './snapshot-cache.js';
import type { Snapshot, SyncStatus, VersionedResource } from './types.js';

export type AdsStreamKind = 'sotw' | 'delta';

export interface AdsServerOptions {
  cache: SnapshotCache;
  logger: Logger;
  /** Where the metrics go; default: a registry of its own (see .metrics). */
  metrics?: MetricsRegistry;
  /** How long a node's sync status is kept after its last stream closed (default 10 minutes). */
  statusRetentionMs?: number;
  /** Disconnected nodes kept at most (default MAX_DISCONNECTED_NODES); the one gone longest is forgotten first. */
  maxDisconnectedNodes?: number;
  /** A disconnected node was forgotten (its status is gone): drop anything else kept for it. */
  onNodeForgotten?: (nodeId: string) => void;
}

export { TYPE_SHORT_NAMES };

/** Types with a wildcard subscription (an empty first request asks for all). */
const WILDCARD_TYPES: ReadonlySet<string> = new Set([TYPE_URLS.Listener, TYPE_URLS.Cluster]);

function isResourceType(typeUrl: string): typeUrl is ResourceTypeUrl {
  return (RESOURCE_TYPE_URLS as readonly string[]).includes(typeUrl);
}

type Status = { code: grpc.status; details: string };

/** A request beyond a bound: the status that fails its stream, and the logged reason. */
export interface Refusal extends Status {
  reason: 'node_id_too_long' | 'resource_name_too_long' | 'too_many_resource_names';
}

/** The fields of a request (either kind) that carry client-chosen names. */
interface NamedRequest {
  resource_names?: string[];
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
}

function tooMany(field: string, count: number): Refusal {
  return { code: grpc.status.RESOURCE_EXHAUSTED, reason: 'too_many_resource_names', details: `${field}: ${count} names, more than ${MAX_XDS_NAMES_PER_STREAM}` };
}

function longestOver(field: string, names: Iterable<string>): Refusal | null {
  let i = 0;
  for (const name of names) {
    if (name.length > MAX_XDS_RESOURCE_NAME_LENGTH) {
      return { code: grpc.status.INVALID_ARGUMENT, reason: 'resource_name_too_long', details: `${field}[${i}]: ${name.length} characters, more than ${MAX_XDS_RESOURCE_NAME_LENGTH}` };
    }
    i++;
  }
  return null;
}

/** The first bound a request goes beyond (node id on the stream's first request, names and their length), or null. */
export function requestRefusal(req: NamedRequest & { node: { id: string } | null }, first: boolean): Refusal | null {
  const id = req.node?.id ?? '';
  if (first && id.length > MAX_XDS_NODE_ID_LENGTH) {
    return { code: grpc.status.INVALID_ARGUMENT, reason: 'node_id_too_long', details: `node.id: ${id.length} characters, more than ${MAX_XDS_NODE_ID_LENGTH}` };
  }
  const initial = req.initial_resource_versions ?? {};
  const lists: Array<[string, string[]]> = [
    ['resource_names', req.resource_names ?? []],
    ['resource_names_subscribe', req.resource_names_subscribe ?? []],
    ['resource_names_unsubscribe', req.resource_names_unsubscribe ?? []],
    ['initial_resource_versions', Object.keys(initial)],
  ];
  for (const [field, names] of lists) {
    if (names.length > MAX_XDS_NAMES_PER_STREAM) return tooMany(field, names.length);
    const over = longestOver(field, names);
    if (over) return over;
  }
  return longestOver('initial_resource_versions (versions)', Object.values(initial));
}

interface Metrics {
  responses: Counter<'kind' | 'type'>;
  acks: Counter<'kind' | 'type'>;
  nacks: Counter<'kind' | 'type'>;
  stale: Counter<'kind' | 'type'>;
  refused: Counter<'kind' | 'reason'>;
}

/** What a stream needs from its server. */
interface StreamContext {
  cache: SnapshotCache;
  logger: Logger;
  metrics: Metrics;
  status(nodeId: string, typeUrl: ResourceTypeUrl): SyncStatus;
  /** The stream learnt its node id (its first request). */
  identified(stream: OpenStream): void;
  closed(stream: OpenStream): void;
}

interface TypeState {
  /** The client asked for this type on this stream. */
  requested: boolean;
  /** Last nonce sent for the type ('' before the first response). */
  nonce: string;
  /** Version of the last response sent. */
  sentVersion: string | null;
  /** A response is owed (built at write time). */
  dirty: boolean;
  wildcard: boolean;
  /** Explicitly subscribed names (besides the wildcard). */
  names: Set<string>;
}

function newTypeState(): TypeState {
  return { requested: false, nonce: '', sentVersion: null, dirty: false, wildcard: false, names: new Set() };
}

/** The snapshot's resources of a type (empty when it has none). */
function resourcesOf(snapshot: Snapshot, typeUrl: ResourceTypeUrl): ReadonlyMap<string, VersionedResource> {
  return snapshot.resources[typeUrl] ?? EMPTY;
}
const EMPTY: ReadonlyMap<string, VersionedResource> = new Map();

function versionOf(snapshot: Snapshot, typeUrl: ResourceTypeUrl): string {
  return snapshot.versions[typeUrl] ?? '';
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** A stream as the server sees it. */
interface OpenStream {
  readonly kind: AdsStreamKind;
  readonly nodeId: string | null;
  end(): void;
  fail(status: Status): void;
}

/** One ADS stream: node, per-type state, writing with coalescing under backpressure. */
abstract class AdsStream<Req extends { node: { id: string } | null; type_url: string }, Res> implements OpenStream {
  abstract readonly kind: AdsStreamKind;
  nodeId: string | null = null;
  protected readonly types = new Map<ResourceTypeUrl, TypeState>();
  private nonceCounter = 0;
  private blocked = false;
  private ended = false;
  private cleaned = false;
  private unwatch: (() => void) | undefined;

  constructor(
    protected readonly ctx: StreamContext,
    readonly call: grpc.ServerDuplexStream<Req, Res>,
  ) {
    call.on('data', (req: Req) => this.onRequest(req));
    call.on('end', () => this.end());
    call.on('cancelled', () => this.cleanup());
    call.on('close', () => this.cleanup());
    call.on('error', () => this.cleanup());
  }

  /** Ends the stream with OK (clients reconnect). */
  end(): void {
    if (!this.ended) {
      this.ended = true;
      this.call.end();
    }
    this.cleanup();
  }

  /** Ends the stream with an error status. */
  fail(status: Status): void {
    if (!this.ended) {
      this.ended = true;
      this.call.emit('error', status);
    }
    this.cleanup();
  }

  private cleanup(): void {
    this.ended = true;
    if (this.cleaned) return;
    this.cleaned = true;
    this.unwatch?.();
    this.unwatch = undefined;
    this.ctx.closed(this);
  }

  protected state(typeUrl: ResourceTypeUrl): TypeState {
    let st = this.types.get(typeUrl);
    if (st === undefined) {
      st = this.newState();
      this.types.set(typeUrl, st);
    }
    return st;
  }

  protected newState(): TypeState {
    return newTypeState();
  }

  protected snapshot(): Snapshot | undefined {
    return this.nodeId === null ? undefined : this.ctx.cache.get(this.nodeId);
  }

  private onRequest(req: Req): void {
    if (this.ended) return;
    try {
      const refusal = requestRefusal(req, this.nodeId === null);
      if (refusal !== null) {
        this.refuse(refusal, req.type_url, this.nodeId ?? (req.node?.id ?? '').slice(0, MAX_XDS_NODE_ID_LENGTH));
        return;
      }
      if (this.nodeId === null) {
        const id = req.node?.id ?? '';
        if (id === '') {
          this.fail({ code: grpc.status.INVALID_ARGUMENT, details: 'node.id is required on the first request of an ADS stream' });
          return;
        }
        this.nodeId = id;
        this.ctx.identified(this);
        this.unwatch = this.ctx.cache.watch(id, () => this.onSnapshot());
        this.ctx.logger.debug({ node_id: id, kind: this.kind }, 'xDS stream opened');
      }
      if (req.type_url === '') {
        this.fail({ code: grpc.status.INVALID_ARGUMENT, details: 'type_url is required on an ADS stream' });
        return;
      }
      if (!isResourceType(req.type_url)) {
        this.ctx.logger.debug({ node_id: this.nodeId, type_url: req.type_url, kind: this.kind }, 'xDS request for an unserved type ignored');
        return;
      }
      this.ctx.status(this.nodeId, req.type_url); // listed in syncStatus from the first request on
      this.handle(req, req.type_url, this.state(req.type_url));
      let held = 0;
      for (const st of this.types.values()) held += st.names.size;
      if (held > MAX_XDS_NAMES_PER_STREAM) {
        this.refuse(tooMany('the stream\'s subscriptions', held), req.type_url, this.nodeId);
        return;
      }
      this.flush();
    } catch (err) {
      this.ctx.logger.error({ err, node_id: this.nodeId, kind: this.kind }, 'xDS stream failed');
      this.fail({ code: grpc.status.INTERNAL, details: `internal error: ${(err as Error).message}` });
    }
  }

  private refuse(refusal: Refusal, typeUrl: string, nodeId: string): void {
    this.ctx.metrics.refused.inc({ kind: this.kind, reason: refusal.reason });
    this.ctx.logger.warn(
      { node_id: nodeId, type_url: typeUrl.slice(0, MAX_XDS_RESOURCE_NAME_LENGTH), kind: this.kind, reason: refusal.reason, error: refusal.details },
      `xDS stream refused: ${refusal.details}`,
    );
    this.fail({ code: refusal.code, details: refusal.details });
  }

  private onSnapshot(): void {
    if (this.ended) return;
    const snapshot = this.snapshot();
    if (snapshot === undefined) return; // keep what the client has
    try {
      this.snapshotChanged(snapshot);
      this.flush();
    } catch (err) {
      this.ctx.logger.error({ err, node_id: this.nodeId, kind: this.kind }, 'xDS stream failed');
      this.fail({ code: grpc.status.INTERNAL, details: `internal error: ${(err as Error).message}` });
    }
  }

  /** Writes owed responses in push order until none is owed or the stream's buffer is full. */
  protected flush(): void {
    while (!this.blocked && !this.ended) {
      const snapshot = this.snapshot();
      if (snapshot === undefined) return;
      const typeUrl = RESOURCE_TYPE_URLS.find((t) => this.types.get(t)?.dirty === true);
      if (typeUrl === undefined) return;
      const st = this.types.get(typeUrl)!;
      st.dirty = false;
      const nonce = String(this.nonceCounter + 1);
      const response = this.build(typeUrl, st, snapshot, nonce);
      if (response === null) continue;
      this.nonceCounter++;
      const version = versionOf(snapshot, typeUrl);
      st.nonce = nonce;
      st.sentVersion = version;
      const status = this.ctx.status(this.nodeId!, typeUrl);
      status.lastSentVersion = version;
      status.lastSentAt = Date.now();
      this.ctx.metrics.responses.inc({ kind: this.kind, type: TYPE_SHORT_NAMES[typeUrl] });
      this.sent(typeUrl);
      if (!this.call.write(response)) {
        this.blocked = true;
        this.call.once('drain', () => {
          this.blocked = false;
          this.flush();
        });
      }
    }
  }

  protected recordAck(typeUrl: ResourceTypeUrl, st: TypeState): void {
    const status = this.ctx.status(this.nodeId!, typeUrl);
    status.lastAckVersion = st.sentVersion;
    status.lastAckAt = Date.now();
    this.ctx.metrics.acks.inc({ kind: this.kind, type: TYPE_SHORT_NAMES[typeUrl] });
  }

  protected recordNack(typeUrl: ResourceTypeUrl, st: TypeState, detail: string): void {
    const error = truncateUtf8(detail, MAX_NACK_TEXT_BYTES);
    const version = st.sentVersion ?? '';
    const status = this.ctx.status(this.nodeId!, typeUrl);
    status.lastNack = { version, error, at: Date.now() };
    this.ctx.metrics.nacks.inc({ kind: this.kind, type: TYPE_SHORT_NAMES[typeUrl] });
    this.ctx.logger.warn(
      { node_id: this.nodeId, type_url: typeUrl, version, error, kind: this.kind, reason: 'nack' },
      `node ${this.nodeId} rejected ${TYPE_SHORT_NAMES[typeUrl].toUpperCase()} version ${version}: ${error}`,
    );
  }

  protected recordStale(typeUrl: ResourceTypeUrl, nonce: string, latest: string): void {
    this.ctx.metrics.stale.inc({ kind: this.kind, type: TYPE_SHORT_NAMES[typeUrl] });
    this.ctx.logger.debug({ node_id: this.nodeId, type_url: typeUrl, nonce, latest_nonce: latest, kind: this.kind }, 'stale xDS nonce ignored');
  }

  /** Applies a request (subscription, ACK/NACK) and marks owed responses dirty. */
  protected abstract handle(req: Req, typeUrl: ResourceTypeUrl, st: TypeState): void;
  /** The snapshot changed: mark owed responses dirty. */
  protected abstract snapshotChanged(snapshot: Snapshot): void;
  /** The response owed for a type, or null when there is nothing to say. */
  protected abstract build(typeUrl: ResourceTypeUrl, st: TypeState, snapshot: Snapshot, nonce: string): Res | null;
  /** After a response for `typeUrl` was written. */
  protected sent(_typeUrl: ResourceTypeUrl): void {}
}

// ---- state of the world ---------------------------------------------------------

/** protobuf: a length-delimited field (wire type 2). */
function lengthDelimited(field: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(payload.length), payload]);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** The encoded `resources` fields (DiscoveryResponse field 2, each a google.protobuf.Any) by resource map and names sent. */
const encodedResources = new WeakMap<ReadonlyMap<string, VersionedResource>, Map<string, Buffer>>();

/** Resource maps encoded once already: a map is cached from its second use on (a node's own map is used by one stream only). */
const encodedOnce = new WeakSet<ReadonlyMap<string, VersionedResource>>();

function encodedResourcesOf(all: ReadonlyMap<string, VersionedResource>, names: string[] | null): Buffer {
  const key = names === null ? '*' : names.join('\0');
  let encoded = encodedResources.get(all)?.get(key);
  if (encoded === undefined) {
    const parts: Buffer[] = [];
    for (const r of names === null ? all.values() : names.map((n) => all.get(n))) {
      if (r === undefined) continue;
      const any = Buffer.concat([lengthDelimited(1, Buffer.from(r.resource.type_url)), lengthDelimited(2, Buffer.from(r.resource.value))]);
      parts.push(lengthDelimited(2, any));
    }
    encoded = Buffer.concat(parts);
    if (encodedOnce.has(all)) {
      let byNames = encodedResources.get(all);
      if (!byNames) encodedResources.set(all, (byNames = new Map()));
      byNames.set(key, encoded);
    } else encodedOnce.add(all);
  }
  return encoded;
}

/** A DiscoveryResponse, encoded: version_info (1), resources (2), type_url (4), nonce (5). */
export function encodeSotwResponse(all: ReadonlyMap<string, VersionedResource>, names: string[] | null, version: string, typeUrl: string, nonce: string): Buffer {
  return Buffer.concat([lengthDelimited(1, Buffer.from(version)), encodedResourcesOf(all, names), lengthDelimited(4, Buffer.from(typeUrl)), lengthDelimited(5, Buffer.from(nonce))]);
}

class SotwStream extends AdsStream<DiscoveryRequest__Output, DiscoveryResponse> {
  readonly kind = 'sotw';

  private subscribed(st: TypeState): boolean {
    return st.requested && (st.wildcard || st.names.size > 0);
  }

  protected handle(req: DiscoveryRequest__Output, typeUrl: ResourceTypeUrl, st: TypeState): void {
    if (req.response_nonce !== '') {
      if (req.response_nonce !== st.nonce) {
        this.recordStale(typeUrl, req.response_nonce, st.nonce);
        return;
      }
      if (req.error_detail !== null) this.recordNack(typeUrl, st, req.error_detail.message || `gRPC status ${req.error_detail.code}`);
      else if (req.version_info === st.sentVersion) this.recordAck(typeUrl, st);
    }
    const first = !st.requested;
    const names = new Set(req.resource_names);
    const star = names.delete('*');
    let wildcard: boolean;
    if (!WILDCARD_TYPES.has(typeUrl)) wildcard = false;
    else if (star) wildcard = true;
    else if (names.size === 0) wildcard = first || st.wildcard; // legacy wildcard: an empty list, first or kept
    else wildcard = false;
    const changed = wildcard !== st.wildcard || !sameSet(names, st.names);
    st.requested = true;
    st.wildcard = wildcard;
    st.names = names;
    // No nonce: an initial request (or a re-request): always answered.
    if (req.response_nonce === '' || changed) st.dirty = true;
  }

  protected snapshotChanged(snapshot: Snapshot): void {
    for (const typeUrl of RESOURCE_TYPE_URLS) {
      const st = this.types.get(typeUrl);
      if (st !== undefined && this.subscribed(st) && versionOf(snapshot, typeUrl) !== st.sentVersion) st.dirty = true;
    }
  }

  protected override sent(typeUrl: ResourceTypeUrl): void {
    if (typeUrl !== TYPE_URLS.Cluster) return;
    const eds = this.types.get(TYPE_URLS.ClusterLoadAssignment);
    if (eds !== undefined && this.subscribed(eds)) eds.dirty = true;
  }

  protected build(typeUrl: ResourceTypeUrl, st: TypeState, snapshot: Snapshot, nonce: string): DiscoveryResponse {
    const all = resourcesOf(snapshot, typeUrl);
    // Sent pre-encoded (see addTo): the resources part is shared by every stream that gets the same set.
    return encodeSotwResponse(all, st.wildcard ? null : [...st.names], versionOf(snapshot, typeUrl), typeUrl, nonce) as unknown as DiscoveryResponse;
  }
}

// ---- delta ------------------------------------------------------------------------

interface DeltaTypeState extends TypeState {
  /** Versions of the resources the client has (as far as we know), by name. */
  known: Map<string, string>;
  /** The next response goes out even if empty (first request of the type). */
  mustRespond: boolean;
}

class DeltaStream extends AdsStream<DeltaDiscoveryRequest__Output, DeltaDiscoveryResponse> {
  readonly kind = 'delta';

  protected override newState(): DeltaTypeState {
    return { ...newTypeState(), known: new Map(), mustRespond: false };
  }

  protected handle(req: DeltaDiscoveryRequest__Output, typeUrl: ResourceTypeUrl, state: TypeState): void {
    const st = state as DeltaTypeState;
    if (req.response_nonce !== '') {
      if (req.response_nonce !== st.nonce) this.recordStale(typeUrl, req.response_nonce, st.nonce);
      else if (req.error_detail !== null) this.recordNack(typeUrl, st, req.error_detail.message || `gRPC status ${req.error_detail.code}`);
      else this.recordAck(typeUrl, st);
    }
    const first = !st.requested;
    st.requested = true;
    if (first) {
      st.wildcard = (WILDCARD_TYPES.has(typeUrl) && req.resource_names_subscribe.length === 0) || req.resource_names_subscribe.includes('*');
      for (const [name, version] of Object.entries(req.initial_resource_versions)) st.known.set(name, version);
      st.mustRespond = true;
      st.dirty = true;
    }
    for (const name of req.resource_names_subscribe) {
      if (name === '*') st.wildcard = true;
      else st.names.add(name);
    }
    for (const name of req.resource_names_unsubscribe) {
      if (name === '*') st.wildcard = false;
      else st.names.delete(name);
    }
    // The client drops what it unsubscribed from: forget it (it is sent again if subscribed again).
    for (const name of st.known.keys()) if (!this.inScope(st, name)) st.known.delete(name);
    if (req.resource_names_subscribe.length > 0 || req.resource_names_unsubscribe.length > 0) st.dirty = true;
  }

  private inScope(st: TypeState, name: string): boolean {
    return st.wildcard || st.names.has(name);
  }

  protected snapshotChanged(): void {
    for (const typeUrl of RESOURCE_TYPE_URLS) {
      const st = this.types.get(typeUrl);
      if (st !== undefined && st.requested) st.dirty = true; // build() decides whether anything changed for this client
    }
  }

  protected build(typeUrl: ResourceTypeUrl, state: TypeState, snapshot: Snapshot, nonce: string): DeltaDiscoveryResponse | null {
    const st = state as DeltaTypeState;
    const all = resourcesOf(snapshot, typeUrl);
    const resources: NonNullable<DeltaDiscoveryResponse['resources']> = [];
    const removed: string[] = [];
    const names = st.wildcard ? all.keys() : st.names;
    for (const name of names) {
      const r = all.get(name);
      if (r !== undefined && st.known.get(name) !== r.version) resources.push({ name, version: r.version, resource: r.resource });
    }
    for (const name of st.known.keys()) if (!all.has(name)) removed.push(name);
    if (resources.length === 0 && removed.length === 0 && !st.mustRespond) return null;
    st.mustRespond = false;
    for (const r of resources) st.known.set(r.name!, r.version!);
    for (const name of removed) st.known.delete(name);
    return { system_version_info: versionOf(snapshot, typeUrl), type_url: typeUrl, nonce, resources, removed_resources: removed };
  }
}

// ---- the server ---------------------------------------------------------------------

export class AdsServer {
  readonly metrics: MetricsRegistry;
  private readonly streams = new Set<OpenStream>();
  private readonly statuses = new Map<string, Map<ResourceTypeUrl, SyncStatus>>();
  /** Which nodes are remembered: connected ones, and disconnected ones for the status retention. */
  readonly nodes: NodeRetention;
  private readonly ctx: StreamContext;
  private draining = false;

  constructor(private readonly options: AdsServerOptions) {
    this.metrics = options.metrics ?? new MetricsRegistry();
    this.nodes = new NodeRetention({
      retentionMs: options.statusRetentionMs ?? DEFAULT_STATUS_RETENTION_MS,
      maxDisconnected: options.maxDisconnectedNodes ?? MAX_DISCONNECTED_NODES,
      onForget: (nodeId) => {
        this.statuses.delete(nodeId);
        options.onNodeForgotten?.(nodeId);
      },
    });
    const registers = [this.metrics];
    const streams = this.streams;
    const nodes = this.nodes;
    new Gauge({
      name: 'vsockmesh_xds_nodes',
      help: 'Nodes whose sync status is kept: connected (a stream open) and disconnected (within the status retention)',
      labelNames: ['state'],
      registers,
      collect() {
        this.set({ state: 'connected' }, nodes.connected);
        this.set({ state: 'disconnected' }, nodes.disconnected);
      },
    });
    new Counter({
      name: 'vsockmesh_xds_nodes_forgotten_total',
      help: 'Disconnected nodes whose sync status was dropped (status retention passed, or too many disconnected nodes)',
      registers,
      collect() {
        this.reset();
        this.inc(nodes.forgotten);
      },
    });
    new Gauge({
      name: 'vsockmesh_xds_streams',
      help: 'Open ADS streams by kind (sotw, delta)',
      labelNames: ['kind'],
      registers,
      collect() {
        const counts = { sotw: 0, delta: 0 };
        for (const s of streams) counts[s.kind]++;
        this.set({ kind: 'sotw' }, counts.sotw);
        this.set({ kind: 'delta' }, counts.delta);
      },
    });
    const metrics: Metrics = {
      responses: new Counter({ name: 'vsockmesh_xds_responses_total', help: 'xDS responses sent by stream kind and type', labelNames: ['kind', 'type'], registers }),
      acks: new Counter({ name: 'vsockmesh_xds_acks_total', help: 'xDS ACKs received by stream kind and type', labelNames: ['kind', 'type'], registers }),
      nacks: new Counter({ name: 'vsockmesh_xds_nacks_total', help: 'xDS NACKs received by stream kind and type', labelNames: ['kind', 'type'], registers }),
      stale: new Counter({ name: 'vsockmesh_xds_stale_requests_total', help: 'xDS requests ignored for a stale nonce, by stream kind and type', labelNames: ['kind', 'type'], registers }),
      refused: new Counter({ name: 'vsockmesh_xds_requests_refused_total', help: 'xDS streams failed for a request beyond a bound, by stream kind and reason', labelNames: ['kind', 'reason'], registers }),
    };
    this.ctx = {
      cache: options.cache,
      logger: options.logger,
      metrics,
      status: (nodeId, typeUrl) => this.status(nodeId, typeUrl),
      identified: (stream) => this.nodes.opened(stream.nodeId!),
      closed: (stream) => {
        if (stream.nodeId !== null) this.nodes.closed(stream.nodeId);
        if (this.streams.delete(stream)) {
          this.options.logger.debug({ node_id: stream.nodeId, kind: stream.kind }, 'xDS stream closed');
        }
      },
    };
  }

  /**
   * Adds envoy.service.discovery.v3.AggregatedDiscoveryService to `server`.
   * State-of-the-world responses arrive already encoded (a Buffer): with many
   * nodes most of them carry the same resources, encoded once.
   */
  addTo(server: grpc.Server): void {
    const definition = adsServiceDefinition();
    const sotw = definition.StreamAggregatedResources;
    const serialize = sotw.responseSerialize;
    server.addService(
      { ...definition, StreamAggregatedResources: { ...sotw, responseSerialize: (value: DiscoveryResponse) => (Buffer.isBuffer(value) ? value : serialize(value)) } },
      this.handlers(),
    );
  }

  /** The service's handlers (addTo uses them). */
  handlers(): AggregatedDiscoveryServiceHandlers {
    return {
      StreamAggregatedResources: (call) => this.open(new SotwStream(this.ctx, call)),
      DeltaAggregatedResources: (call) => this.open(new DeltaStream(this.ctx, call)),
    };
  }

  /** Open streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Per node and type the node asked for: last version sent, last ACK, last NACK (kept for the status retention after its streams end). */
  syncStatus(): SyncStatus[] {
    return this.syncStatusPage({ limit: Infinity }).statuses;
  }

  /**
   * One page of the sync status: the nodes after `after` in node id order
   * (or just `nodeId`), at most `limit` of them; `next` is the last node of
   * the page when more may follow.
   */
  syncStatusPage(page: { limit: number; after?: string; nodeId?: string }): { statuses: SyncStatus[]; nodeIds: string[]; next: string | undefined } {
    let ids: string[];
    if (page.nodeId !== undefined) ids = this.statuses.has(page.nodeId) ? [page.nodeId] : [];
    else {
      const after = page.after;
      ids = [...this.statuses.keys()].filter((id) => after === undefined || id > after).sort();
    }
    const nodeIds = ids.slice(0, page.limit);
    const statuses: SyncStatus[] = [];
    for (const nodeId of nodeIds) {
      const byType = this.statuses.get(nodeId)!;
      for (const typeUrl of RESOURCE_TYPE_URLS) {
        const s = byType.get(typeUrl);
        if (s !== undefined) statuses.push({ ...s, lastNack: s.lastNack && { ...s.lastNack } });
      }
    }
    return { statuses, nodeIds, next: ids.length > nodeIds.length ? nodeIds[nodeIds.length - 1] : undefined };
  }

  /** Drain: ends every open stream with OK (clients reconnect elsewhere) and refuses new ones with UNAVAILABLE. */
  closeStreams(): void {
    this.draining = true;
    for (const stream of [...this.streams]) stream.end();
    this.streams.clear();
  }

  /** Closes every stream and stops forgetting nodes (its timer). */
  stop(): void {
    this.closeStreams();
    this.nodes.stop();
  }

  private open(stream: OpenStream): void {
    if (this.draining) {
      stream.fail({ code: grpc.status.UNAVAILABLE, details: 'the control plane is draining' });
      return;
    }
    this.streams.add(stream);
  }

  private status(nodeId: string, typeUrl: ResourceTypeUrl): SyncStatus {
    let byType = this.statuses.get(nodeId);
    if (byType === undefined) {
      byType = new Map();
      this.statuses.set(nodeId, byType);
    }
    let s = byType.get(typeUrl);
    if (s === undefined) {
      s = { nodeId, typeUrl, lastSentVersion: null, lastSentAt: null, lastAckVersion: null, lastAckAt: null, lastNack: null };
      byType.set(typeUrl, s);
    }
    return s;
  }
}
