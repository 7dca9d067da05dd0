// The Aggregated Discovery Service (Envoy's xDS over one gRPC stream), both
// state-of-the-world (StreamAggregatedResources) and incremental
// (DeltaAggregatedResources), serving what the SnapshotCache holds per node.
// This file does the I/O only: the protocol's rules are the pure transitions
// of ads-stream.ts; here each stream's requests go through them, what they
// observe becomes sync status, metrics and log lines, and the responses they
// owe are written while the stream's write buffer has room (a full buffer
// waits for 'drain', then gets the latest state: nothing queues without
// bound). SotW responses go out pre-encoded (xds/envoy/sotw-encoding.ts), and
// in batches over all streams (write-slots.ts): at most so many responses in
// flight at once.
//
// Sync status (per node and type: sent, ACKed, NACKed) is kept while a node
// has a stream open and for the status retention after its last one closed
// (node-retention.ts).

import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Registry as MetricsRegistry } from '../../proxy/runtime/prom-client.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { TYPE_SHORT_NAMES, type DeltaDiscoveryRequest__Output, type DeltaDiscoveryResponse, type DiscoveryRequest__Output } from '../envoy/proto.js';
import { preEncodedAdsService, SotwEncoder, type EncodedSotwResponse, type PreEncodedAdsHandlers } from '../envoy/sotw-encoding.js';
import { applyRequest, newStream, nextResponse, snapshotChanged, type AdsStreamKind, type DeltaResponse, type Failure, type SotwResponse, type StreamEvent, type StreamState } from './ads-stream.js';
import { DEFAULT_STATUS_RETENTION_MS, MAX_DISCONNECTED_NODES, MAX_XDS_NODE_ID_LENGTH, MAX_XDS_RESOURCE_NAME_LENGTH, WRITE_SLOT_HOLD_MS, XDS_WRITE_BYTES_IN_FLIGHT, XDS_WRITES_IN_FLIGHT } from './bounds.js';
import { NodeRetention } from './node-retention.js';
import type { SnapshotCache } from './snapshot-cache.js';
import type { Snapshot, VersionedResource } from './snapshot.js';
import { SyncStatuses } from './sync-status.js';
import type { SyncStatus } from './types.js';
import { WriteSlots, type WriteSlotsOptions } from './write-slots.js';

export interface AdsServerOptions {
  cache: SnapshotCache;
  logger: Logger;
  /** Where the metrics go; default: a registry of its own (see .metrics). */
  metrics?: MetricsRegistry;
  /** How long a node's sync status is kept after its last stream closed (default 10 minutes). */
  statusRetentionMs?: number;
  /** Disconnected nodes kept at most (default MAX_DISCONNECTED_NODES); the one gone longest is forgotten first. */
  maxDisconnectedNodes?: number;
  /** A stream named its node, before it reads the node's snapshot: the place to give the node a snapshot of its own. */
  onNodeSeen?: (nodeId: string) => void;
  /** A disconnected node was forgotten (its status is gone): drop anything else kept for it. */
  onNodeForgotten?: (nodeId: string) => void;
  /** Why there is nothing to serve yet (new streams are refused with UNAVAILABLE, clients try another replica), or undefined. */
  notServing?: () => string | undefined;
  /** Responses in flight over all streams at once (default XDS_WRITES_IN_FLIGHT, XDS_WRITE_BYTES_IN_FLIGHT, WRITE_SLOT_HOLD_MS). */
  writeSlots?: WriteSlotsOptions;
}

interface Metrics {
  responses: Counter<'kind' | 'type'>;
  acks: Counter<'kind' | 'type'>;
  nacks: Counter<'kind' | 'type'>;
  stale: Counter<'kind' | 'type'>;
  refused: Counter<'kind' | 'reason'>;
}

type Status = { code: grpc.status; details: string };

/** What a stream needs from its server. */
interface StreamContext {
  cache: SnapshotCache;
  logger: Logger;
  metrics: Metrics;
  statuses: SyncStatuses;
  encoder: SotwEncoder;
  slots: WriteSlots;
  /** The stream learnt its node id (its first request). */
  identified(stream: AdsCall): void;
  closed(stream: AdsCall): void;
}

type AnyRequest = DiscoveryRequest__Output | DeltaDiscoveryRequest__Output;
type AnyResponse = EncodedSotwResponse | DeltaDiscoveryResponse;

/** The bytes or message a response is written as. */
function wire(response: SotwResponse | DeltaResponse, snapshot: Snapshot, encoder: SotwEncoder): AnyResponse {
  if ('names' in response) return encoder.encode(snapshot.resources[response.typeUrl], response.names, response.version, response.typeUrl, response.nonce);
  return {
    system_version_info: response.version,
    type_url: response.typeUrl,
    nonce: response.nonce,
    resources: response.resources.map((r) => ({ name: r.name, version: r.version, resource: r.resource })),
    removed_resources: response.removed,
  };
}

/** About the bytes a response is written as (its resources' Any; the few header fields left out): what it weighs against the write budget. */
function wireBytes(response: SotwResponse | DeltaResponse, snapshot: Snapshot): number {
  let bytes = 0;
  const add = (r: VersionedResource | undefined): void => {
    if (r !== undefined) bytes += r.resource.value.length + r.resource.type_url.length + r.name.length + r.version.length;
  };
  if (!('names' in response)) response.resources.forEach(add);
  else if (response.names === null) for (const r of snapshot.resources[response.typeUrl].values()) add(r);
  else for (const name of response.names) add(snapshot.resources[response.typeUrl].get(name));
  return bytes;
}

/** One ADS stream: its requests through the rules, its responses written with coalescing under backpressure. */
class AdsCall {
  private state: StreamState;
  private blocked = false;
  private ended = false;
  private cleaned = false;
  private unwatch: (() => void) | undefined;
  /** Runs when a write slot is free for this stream. */
  private readonly wake = (): void => this.flush();

  constructor(
    private readonly ctx: StreamContext,
    readonly kind: AdsStreamKind,
    private readonly call: grpc.ServerDuplexStream<AnyRequest, AnyResponse>,
  ) {
    this.state = newStream(kind);
    call.on('data', (req: AnyRequest) => this.onRequest(req));
    call.on('end', () => this.end());
    call.on('cancelled', () => this.cleanup());
    call.on('close', () => this.cleanup());
    call.on('error', () => this.cleanup());
  }

  get nodeId(): string | null {
    return this.state.nodeId;
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
    this.ctx.slots.forget(this.wake);
    this.ctx.closed(this);
  }

  private onRequest(req: AnyRequest): void {
    if (this.ended) return;
    try {
      const outcome = applyRequest(this.state, req);
      this.state = outcome.state;
      for (const event of outcome.events) this.observe(event);
      if (outcome.failure !== null) {
        this.refuse(outcome.failure, req.type_url, this.state.nodeId ?? (req.node?.id ?? '').slice(0, MAX_XDS_NODE_ID_LENGTH));
        return;
      }
      this.flush();
    } catch (err) {
      this.internalError(err);
    }
  }

  private observe(event: StreamEvent): void {
    const { ctx, kind } = this;
    const nodeId = this.state.nodeId!;
    switch (event.type) {
      case 'identified':
        ctx.identified(this);
        this.unwatch = ctx.cache.watch(event.nodeId, (snapshot) => this.onSnapshot(snapshot));
        ctx.logger.debug({ node_id: event.nodeId, kind }, 'xDS stream opened');
        return;
      case 'unserved':
        ctx.logger.debug({ node_id: nodeId, type_url: event.typeUrl, kind }, 'xDS request for an unserved type ignored');
        return;
      case 'requested':
        ctx.statuses.of(nodeId, event.typeUrl);
        return;
      case 'ack': {
        const status = ctx.statuses.of(nodeId, event.typeUrl);
        status.lastAckVersion = event.version;
        status.lastAckAt = Date.now();
        ctx.metrics.acks.inc({ kind, type: TYPE_SHORT_NAMES[event.typeUrl] });
        return;
      }
      case 'nack': {
        const { typeUrl, version, error } = event;
        ctx.statuses.of(nodeId, typeUrl).lastNack = { version, error, at: Date.now() };
        ctx.metrics.nacks.inc({ kind, type: TYPE_SHORT_NAMES[typeUrl] });
        ctx.logger.warn(
          { node_id: nodeId, type_url: typeUrl, version, error, kind, reason: 'nack' },
          `node ${nodeId} rejected ${TYPE_SHORT_NAMES[typeUrl].toUpperCase()} version ${version}: ${error}`,
        );
        return;
      }
      case 'stale':
        ctx.metrics.stale.inc({ kind, type: TYPE_SHORT_NAMES[event.typeUrl] });
        ctx.logger.debug({ node_id: nodeId, type_url: event.typeUrl, nonce: event.nonce, latest_nonce: event.latest, kind }, 'stale xDS nonce ignored');
        return;
    }
  }

  /** Fails the stream; a request beyond a bound is counted and logged with its reason. */
  private refuse(failure: Failure, typeUrl: string, nodeId: string): void {
    if (failure.reason !== undefined) {
      this.ctx.metrics.refused.inc({ kind: this.kind, reason: failure.reason });
      this.ctx.logger.warn(
        { node_id: nodeId, type_url: typeUrl.slice(0, MAX_XDS_RESOURCE_NAME_LENGTH), kind: this.kind, reason: failure.reason, error: failure.details },
        `xDS stream refused: ${failure.details}`,
      );
    }
    this.fail({ code: failure.code, details: failure.details });
  }

  private onSnapshot(snapshot: Snapshot | undefined): void {
    if (this.ended || snapshot === undefined) return; // no snapshot: keep what the client has
    try {
      this.state = snapshotChanged(this.state, snapshot);
      this.flush();
    } catch (err) {
      this.internalError(err);
    }
  }

  private internalError(err: unknown): void {
    this.ctx.logger.error({ err, node_id: this.nodeId, kind: this.kind }, 'xDS stream failed');
    this.fail({ code: grpc.status.INTERNAL, details: `internal error: ${(err as Error).message}` });
  }

  /** Writes owed responses in push order until none is owed, the stream's buffer is full or no write slot is free (then it waits for one). */
  private flush(): void {
    while (!this.blocked && !this.ended && this.nodeId !== null) {
      const snapshot = this.ctx.cache.get(this.nodeId);
      if (snapshot === undefined) return;
      const next = nextResponse(this.state, snapshot);
      if (next === null) return;
      const release = this.ctx.slots.take(this.wake, wireBytes(next.response, snapshot));
      if (release === null) return;
      this.state = next.state;
      const { typeUrl, version } = next.response;
      const status = this.ctx.statuses.of(this.nodeId, typeUrl);
      status.lastSentVersion = version;
      status.lastSentAt = Date.now();
      this.ctx.metrics.responses.inc({ kind: this.kind, type: TYPE_SHORT_NAMES[typeUrl] });
      if (!this.call.write(wire(next.response, snapshot, this.ctx.encoder), release)) {
        this.blocked = true;
        this.call.once('drain', () => {
          this.blocked = false;
          this.flush();
        });
      }
    }
  }
}

export class AdsServer {
  readonly metrics: MetricsRegistry;
  private readonly streams = new Set<AdsCall>();
  private readonly statuses = new SyncStatuses();
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
        this.statuses.forget(nodeId);
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
      statuses: this.statuses,
      encoder: new SotwEncoder(),
      slots: new WriteSlots(options.writeSlots ?? { limit: XDS_WRITES_IN_FLIGHT, bytes: XDS_WRITE_BYTES_IN_FLIGHT, holdMs: WRITE_SLOT_HOLD_MS }),
      identified: (stream) => {
        this.nodes.opened(stream.nodeId!);
        options.onNodeSeen?.(stream.nodeId!);
      },
      closed: (stream) => {
        if (stream.nodeId !== null) this.nodes.closed(stream.nodeId);
        if (this.streams.delete(stream)) {
          this.options.logger.debug({ node_id: stream.nodeId, kind: stream.kind }, 'xDS stream closed');
        }
      },
    };
  }

  /** Adds envoy.service.discovery.v3.AggregatedDiscoveryService to `server`. */
  addTo(server: grpc.Server): void {
    const handlers: PreEncodedAdsHandlers = {
      StreamAggregatedResources: (call) => this.open(new AdsCall(this.ctx, 'sotw', call)),
      DeltaAggregatedResources: (call) => this.open(new AdsCall(this.ctx, 'delta', call)),
    };
    server.addService(preEncodedAdsService(), handlers);
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
    return this.statuses.page(page);
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

  private open(stream: AdsCall): void {
    if (this.draining) {
      stream.fail({ code: grpc.status.UNAVAILABLE, details: 'the control plane is draining' });
      return;
    }
    const why = this.options.notServing?.();
    if (why !== undefined) {
      stream.fail({ code: grpc.status.UNAVAILABLE, details: `the control plane is not ready: ${why}` });
      return;
    }
    this.streams.add(stream);
  }
}
