// The sidecar's ADS client (state of the world): one gRPC stream to the
// control plane; wildcard CDS and LDS, EDS for the EDS clusters it was given,
// RDS for the route configurations its listeners name. Each resource of a
// response is validated and applied on its own (gRFC A46, and Envoy's
// LDS/CDS): the valid ones are applied, the invalid ones and those the
// sidecar could not apply are refused and keep their last good version. All
// applied → ACK with the response's version; anything refused → NACK naming
// each refused resource, with version_info still the last version accepted in
// full (as the xDS protocol asks of a NACK). Each type's resources reach the
// sidecar typed, through its entry in resource-types.ts. The stream
// reconnects with exponential backoff and jitter (proxy/runtime/backoff.ts),
// each time to the next control-plane replica of the list (the one it lost
// may be gone for good); the sidecar keeps serving meanwhile. A new stream
// sends, per type, the names and the version last accepted in full; replicas
// compute the same content-hash versions, so the first response of a type
// that carries that version again is what the sidecar has: ACKed, not
// applied again.

import * as grpc from '@grpc/grpc-js';
import { TYPE_SHORT_NAMES, createAdsClient, type AggregatedDiscoveryServiceClient, type ResourceTypeUrl } from '../envoy/proto.js';
import type { DiscoveryRequest, DiscoveryResponse__Output } from '../envoy/proto.js';
import type { ConfigSource, ConfigSourceInit } from '../../proxy/dynamic/types.js';
import { Backoff } from '../../proxy/runtime/backoff.js';
import { nackDetail, type RefusalDetail } from './nack-detail.js';
import { RESOURCE_TYPES, type Delivered } from './resource-types.js';
import { channelCredentials, channelOptions, type ControlTransport } from '../security/transport.js';

export interface AdsClientOptions extends ConfigSourceInit {
  /** Mutual TLS with the sidecar's identity, or plain text when asked for by name. */
  transport: ControlTransport;
  /** Reconnects start at this delay and double up to maxBackoffMs, with ±20 % jitter. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface TypeState {
  /** Names subscribed (null: wildcard). */
  names: string[] | null;
  /** Last version applied in full and ACKed (what a NACK and a new stream send as version_info). */
  acceptedVersion: string | null;
  /** The names subscribed when acceptedVersion was accepted (a version is per type: other names, other resources). */
  acceptedNames: string[] | null;
  acceptedAt: number | null;
  /** Last version whose valid resources were applied, in full or in part. */
  appliedVersion: string | null;
  /** The resources the latest response carried that were not applied, each with why; their last good version stays. */
  refused: Array<RefusalDetail & { version: string }>;
  lastNonce: string;
  lastNack: { version: string; error: string; at: number } | null;
}


/**
 * The HTTP/2 flow-control window of a sidecar's ADS connection. grpc-js's
 * 64 KiB lets a 2 MiB EDS response (10,000 endpoints) through only after ~30
 * window updates, and each control plane holds only so many bytes in flight
 * (XDS_WRITE_BYTES_IN_FLIGHT): 10,000 sidecars over 4 replicas synced in 160 s
 * with a 16 MiB window, and under half of them in 4 minutes with 64 KiB.
 * A window is permission to send, not memory held: the client reads at once.
 */
const ADS_FLOW_CONTROL_WINDOW = 16 * 1024 * 1024;
export class AdsClient implements ConfigSource {
  /** One client per replica (a channel connects when first used). */
  private readonly clients: AggregatedDiscoveryServiceClient[];
  /** The replica the stream goes to (index in options.addresses). */
  private current = 0;
  private stream: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse__Output> | undefined;
  private readonly types = new Map<ResourceTypeUrl, TypeState>();
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Responses are applied one at a time, in order (applying listeners is asynchronous). */
  private queue: Promise<void> = Promise.resolve();
  /** Counters for /stats. */
  readonly counters = { acks: 0, nacks: 0, reconnects: 0, connected: 0, controlPlane: null as string | null, refused: { cds: 0, eds: 0, lds: 0, rds: 0 } };

  constructor(private readonly options: AdsClientOptions) {
    if (options.addresses.length === 0) throw new RangeError('ADS client: no control-plane address');
    const credentials = channelCredentials(options.transport);
    this.clients = options.addresses.map((address) =>
      createAdsClient(address, credentials, {
        ...channelOptions(options.transport),
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 5_000,
        'grpc.keepalive_time_ms': 30_000,
        'grpc-node.flow_control_window': ADS_FLOW_CONTROL_WINDOW,
      }),
    );
    this.backoff = new Backoff({ initialMs: options.initialBackoffMs ?? 500, maxMs: options.maxBackoffMs ?? 10_000 });
    for (const t of RESOURCE_TYPES.values()) if (t.wildcard) this.types.set(t.typeUrl, emptyState(null));
  }

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stream?.cancel();
    this.stream = undefined;
    for (const client of this.clients) client.close();
  }

  /** Per type: what is subscribed, accepted and refused (config_dump, status). */
  state(): Record<string, TypeState> {
    return Object.fromEntries([...this.types].map(([t, s]) => [t, { ...s, names: s.names && [...s.names], acceptedNames: s.acceptedNames && [...s.acceptedNames], refused: s.refused.map((r) => ({ ...r })) }]));
  }

  get connected(): boolean {
    return this.counters.connected === 1;
  }

  private open(): void {
    if (this.stopped) return;
    const address = this.options.addresses[this.current]!;
    const stream = this.clients[this.current]!.StreamAggregatedResources();
    this.stream = stream;
    // Types subscribed when the stream opens that got no response on it yet (a resumed version is recognised on the first).
    const awaitingFirst = new Set(this.types.keys());
    let seen = false;
    stream.on('metadata', () => {
      this.counters.connected = 1;
      this.counters.controlPlane = address;
      this.backoff.reset();
    });
    stream.on('data', (response: DiscoveryResponse__Output) => {
      if (!seen) {
        seen = true;
        this.options.logger.info({ control_plane: address, reconnects: this.counters.reconnects }, `xDS stream open to ${address}`);
      }
      const first = awaitingFirst.delete(response.type_url as ResourceTypeUrl);
      this.queue = this.queue.then(() => this.onResponse(response, first)).catch((err: Error) => this.options.logger.error({ err }, 'xDS response handling failed'));
    });
    const ended = (why: string): void => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.counters.connected = 0;
      this.counters.controlPlane = null;
      if (this.stopped) return;
      const delay = this.backoff.next();
      this.counters.reconnects++;
      // The replica that ended the stream may be gone (killed, drained): the next one is tried first.
      this.current = (this.current + 1) % this.clients.length;
      const next = this.options.addresses[this.current]!;
      this.options.logger.warn(
        { reason: 'xds_stream_ended', error: why, retry_ms: delay, control_plane: address, next_control_plane: next },
        `xDS stream to ${address} ended (${why}); keeping the last configuration, connecting to ${next} in ${delay} ms`,
      );
      this.retryTimer = setTimeout(() => this.open(), delay);
      this.retryTimer.unref();
    };
    stream.on('error', (err: grpc.ServiceError) => ended(`${grpc.status[err.code] ?? err.code}: ${err.details}`));
    stream.on('end', () => ended('closed by the control plane'));
    // A new stream starts every subscription again; versions tell the server what we have.
    for (const [typeUrl, state] of this.types) {
      if (state.names === null || state.names.length > 0 || RESOURCE_TYPES.get(typeUrl)?.wildcard !== true) this.send(typeUrl, state, '');
    }
  }

  private send(typeUrl: ResourceTypeUrl, state: TypeState, nonce: string, error?: string): void {
    const request: DiscoveryRequest = {
      node: { id: this.options.node.id, cluster: this.options.node.cluster, locality: {}, user_agent_name: 'vsockmesh' },
      type_url: typeUrl,
      resource_names: state.names ?? [],
      version_info: state.acceptedVersion ?? '',
      response_nonce: nonce,
      ...(error !== undefined && { error_detail: { code: grpc.status.INVALID_ARGUMENT, message: error } }),
    };
    this.stream?.write(request);
  }

  /** `first`: the first response of its type on its stream. */
  private async onResponse(response: DiscoveryResponse__Output, first: boolean): Promise<void> {
    const typeUrl = response.type_url as ResourceTypeUrl;
    const state = this.types.get(typeUrl);
    const type = RESOURCE_TYPES.get(typeUrl);
    if (!state || !type) {
      this.options.logger.warn({ reason: 'xds_unrequested_type', type_url: response.type_url }, 'xDS response for a type we did not ask for: ignored');
      return;
    }
    state.lastNonce = response.nonce;
    const version = response.version_info;
    if (first && version === state.acceptedVersion && state.refused.length === 0 && sameNames(state.acceptedNames, state.names)) {
      // A new stream (maybe another replica) sends what the sidecar already has in full: nothing to apply.
      this.counters.acks++;
      this.options.logger.info({ type_url: typeUrl, version, control_plane: this.counters.controlPlane }, `xDS ${shortType(typeUrl)} version ${version} resumed (already applied)`);
      this.send(typeUrl, state, response.nonce);
      return;
    }
    const validated = type.validate(response.resources);
    const refused: RefusalDetail[] = validated.refused.map((r) => ({ name: r.name, error: r.errors.join('; ') }));
    let problem: string | undefined;
    let next: Delivered['subscribe'];
    let applied = false;
    try {
      const outcome = await validated.deliver(
        this.options.config,
        { names: new Set(validated.refused.flatMap((r) => (r.name === null ? [] : [r.name]))), unnamed: validated.refused.some((r) => r.name === null) },
        version,
      );
      refused.push(...(outcome.refused ?? []));
      problem = outcome.problem;
      next = outcome.subscribe;
      state.appliedVersion = version;
      applied = true;
    } catch (err) {
      problem = (err as Error).message;
    }
    const short = shortType(typeUrl);
    state.refused = refused.map((r) => ({ ...r, version }));
    this.counters.refused[TYPE_SHORT_NAMES[typeUrl]] += refused.length;
    if (refused.length > 0 || problem !== undefined) {
      const error = nackDetail(refused, problem);
      state.lastNack = { version, error, at: Date.now() };
      this.counters.nacks++;
      const what = applied ? `not accepted in full (${refused.length} resource(s) refused, each keeps its last good version)` : 'rejected';
      this.options.logger.warn(
        { reason: 'xds_nack', type_url: typeUrl, version, kept_version: state.acceptedVersion, refused: refused.map((r) => r.name), error },
        `xDS ${short} version ${version} ${what}; last version accepted in full: ${state.acceptedVersion ?? 'none'}: ${error}`,
      );
      this.send(typeUrl, state, response.nonce, error);
    } else {
      state.acceptedVersion = version;
      state.acceptedNames = state.names && [...state.names];
      state.acceptedAt = Date.now();
      this.counters.acks++;
      this.options.logger.info({ type_url: typeUrl, version, resources: response.resources.length }, `xDS ${short} version ${version} applied`);
      this.send(typeUrl, state, response.nonce);
    }
    if (next) this.subscribe(next.typeUrl, next.names);
  }

  /** Changes the names of an explicitly subscribed type (EDS, RDS); no request when nothing changed. */
  private subscribe(typeUrl: ResourceTypeUrl, names: string[]): void {
    const sorted = [...new Set(names)].sort();
    let state = this.types.get(typeUrl);
    if (state && state.names !== null && sameList(state.names, sorted)) return;
    if (!state) {
      state = emptyState(sorted);
      this.types.set(typeUrl, state);
    } else state.names = sorted;
    this.send(typeUrl, state, state.lastNonce);
  }
}

function emptyState(names: string[] | null): TypeState {
  return { names, acceptedVersion: null, acceptedNames: null, acceptedAt: null, appliedVersion: null, refused: [], lastNonce: '', lastNack: null };
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Both wildcard, or the same names. */
function sameNames(a: string[] | null, b: string[] | null): boolean {
  return a === null || b === null ? a === b : sameList(a, b);
}

export function shortType(typeUrl: string): string {
  return TYPE_SHORT_NAMES[typeUrl as ResourceTypeUrl]?.toUpperCase() ?? typeUrl;
}
