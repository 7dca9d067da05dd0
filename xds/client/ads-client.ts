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
// reconnects with exponential backoff and jitter (proxy/runtime/backoff.ts);
// the sidecar keeps serving meanwhile.

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
  acceptedAt: number | null;
  /** Last version whose valid resources were applied, in full or in part. */
  appliedVersion: string | null;
  /** The resources the latest response carried that were not applied, each with why; their last good version stays. */
  refused: Array<RefusalDetail & { version: string }>;
  lastNonce: string;
  lastNack: { version: string; error: string; at: number } | null;
}

export class AdsClient implements ConfigSource {
  private readonly client: AggregatedDiscoveryServiceClient;
  private stream: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse__Output> | undefined;
  private readonly types = new Map<ResourceTypeUrl, TypeState>();
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Responses are applied one at a time, in order (applying listeners is asynchronous). */
  private queue: Promise<void> = Promise.resolve();
  /** Counters for /stats. */
  readonly counters = { acks: 0, nacks: 0, reconnects: 0, connected: 0, refused: { cds: 0, eds: 0, lds: 0, rds: 0 } };

  constructor(private readonly options: AdsClientOptions) {
    this.client = createAdsClient(options.address, channelCredentials(options.transport), {
      ...channelOptions(options.transport),
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5_000,
      'grpc.keepalive_time_ms': 30_000,
    });
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
    this.client.close();
  }

  /** Per type: what is subscribed, accepted and refused (config_dump, status). */
  state(): Record<string, TypeState> {
    return Object.fromEntries([...this.types].map(([t, s]) => [t, { ...s, names: s.names && [...s.names], refused: s.refused.map((r) => ({ ...r })) }]));
  }

  get connected(): boolean {
    return this.counters.connected === 1;
  }

  private open(): void {
    if (this.stopped) return;
    const stream = this.client.StreamAggregatedResources();
    this.stream = stream;
    let seen = false;
    stream.on('metadata', () => {
      this.counters.connected = 1;
      this.backoff.reset();
    });
    stream.on('data', (response: DiscoveryResponse__Output) => {
      if (!seen) {
        seen = true;
        this.options.logger.info({ control_plane: this.options.address }, 'xDS stream open');
      }
      this.queue = this.queue.then(() => this.onResponse(response)).catch((err: Error) => this.options.logger.error({ err }, 'xDS response handling failed'));
    });
    const ended = (why: string): void => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.counters.connected = 0;
      if (this.stopped) return;
      const delay = this.backoff.next();
      this.counters.reconnects++;
      this.options.logger.warn({ reason: 'xds_stream_ended', error: why, retry_ms: delay, control_plane: this.options.address }, `xDS stream ended (${why}); keeping the last configuration, reconnecting in ${delay} ms`);
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

  private async onResponse(response: DiscoveryResponse__Output): Promise<void> {
    const typeUrl = response.type_url as ResourceTypeUrl;
    const state = this.types.get(typeUrl);
    const type = RESOURCE_TYPES.get(typeUrl);
    if (!state || !type) {
      this.options.logger.warn({ reason: 'xds_unrequested_type', type_url: response.type_url }, 'xDS response for a type we did not ask for: ignored');
      return;
    }
    state.lastNonce = response.nonce;
    const version = response.version_info;
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
  return { names, acceptedVersion: null, acceptedAt: null, appliedVersion: null, refused: [], lastNonce: '', lastNack: null };
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function shortType(typeUrl: string): string {
  return TYPE_SHORT_NAMES[typeUrl as ResourceTypeUrl]?.toUpperCase() ?? typeUrl;
}
