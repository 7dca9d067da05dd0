// Prometheus metrics of one sidecar (its own registry, so several sidecars can
// live in one process, as in tests and the demo).

import { Counter, Gauge, Registry, collectDefaultMetrics } from './runtime/prom-client.js';
import type { XdsCounters } from './dynamic/types.js';
import type { RenewalCounters } from './identity/renewing-source.js';
import { logLinesDropped } from './runtime/log.js';
import type { ResolverCounters } from './resolve/resolver.js';
import { OVERLOAD_RESOURCES, type OverloadState } from './overload/overload.js';

export type Direction = 'inbound' | 'outbound' | 'relay';
export type TransportName = 'tcp' | 'vsock';

export interface ConnectionLabels {
  listener: string;
  direction: Direction;
  cluster: string;
  transport: TransportName;
}

/** Bytes relayed so far by the connections of one label set that are still open. */
export interface LiveBytes {
  bytesToUpstream: number;
  bytesToDownstream: number;
}

/**
 * Counters of one (listener, cluster, transport). The hot path touches plain
 * numbers; prom-client values are filled in at scrape time.
 */
export class ConnectionStats {
  total = 0;
  active = 0;
  closedBytesToUpstream = 0;
  closedBytesToDownstream = 0;
  readonly live = new Set<LiveBytes>();
  constructor(readonly labels: ConnectionLabels) {}

  opened(live: LiveBytes): void {
    this.total++;
    this.active++;
    this.live.add(live);
  }

  /** `final`: the connection's byte counts at close (the live object may no longer know them). */
  closed(live: LiveBytes, final: LiveBytes): void {
    this.active--;
    this.live.delete(live);
    this.closedBytesToUpstream += final.bytesToUpstream;
    this.closedBytesToDownstream += final.bytesToDownstream;
  }

  /** A connection opened and closed at once as far as these counts go (a warm record: its bytes are known only at close). */
  finished(bytesToUpstream: number, bytesToDownstream: number): void {
    this.total++;
    this.closedBytesToUpstream += bytesToUpstream;
    this.closedBytesToDownstream += bytesToDownstream;
  }

  bytes(): LiveBytes {
    let up = this.closedBytesToUpstream;
    let down = this.closedBytesToDownstream;
    for (const l of this.live) {
      up += l.bytesToUpstream;
      down += l.bytesToDownstream;
    }
    return { bytesToUpstream: up, bytesToDownstream: down };
  }
}

/**
 * Cells by label values, made on first use: a walk of maps keyed by the
 * values themselves (strings whose hash V8 keeps), where prom-client hashes
 * and checks a label object on every inc() or observe(), a few microseconds
 * a request for a listener's per-request metrics. `names`: the label names,
 * in the order the values are given.
 */
class LabelCells<T extends string, C> {
  private readonly root = new Map<string, unknown>();
  /** Every cell, in the order made. */
  readonly all: C[] = [];

  constructor(
    readonly names: readonly T[],
    private readonly make: (labels: Record<T, string>) => C,
  ) {}

  /** The cell of the label set with these values (one per name, in order). */
  get(values: readonly string[]): C {
    let level = this.root;
    const last = this.names.length - 1;
    for (let i = 0; i < last; i++) {
      let next = level.get(values[i]!) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        level.set(values[i]!, next);
      }
      level = next;
    }
    let cell = level.get(values[last]!) as C | undefined;
    if (cell === undefined) {
      const labels = {} as Record<T, string>;
      this.names.forEach((name, i) => (labels[name] = values[i]!));
      cell = this.make(labels);
      level.set(values[last]!, cell);
      this.all.push(cell);
    }
    return cell;
  }
}

/** Counts by label values in plain numbers, added to a prom-client counter when it is collected (a scrape, or get()). */
export class CounterTally<T extends string> {
  private readonly cells: LabelCells<T, { labels: Record<T, string>; n: number }>;

  constructor(names: readonly T[]) {
    this.cells = new LabelCells(names, (labels) => ({ labels, n: 0 }));
  }

  /** One more for the label set with these values (one per name, in order). */
  add(values: readonly string[]): void {
    this.cells.get(values).n++;
  }

  /** Adds the counts gathered since the last call to `counter`. */
  flushInto(counter: Counter<T>): void {
    for (const cell of this.cells.all) {
      if (cell.n === 0) continue;
      counter.inc(cell.labels, cell.n);
      cell.n = 0;
    }
  }
}

/** One label set of a HistogramTally: observations per bucket (the last: above every bound), their sum and count. */
interface HistogramCell<T extends string> {
  labels: Record<T, string>;
  counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram observed into plain numbers per label set (LabelCells), in a
 * registry as a metric of its own: scraped as prom-client's Histogram writes
 * one (the same lines, in the same order: each label set's cumulative
 * buckets, +Inf, _sum, _count). `observe` takes the label values in
 * `labelNames` order.
 */
export class HistogramTally<T extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  private readonly buckets: readonly number[];
  private cells: LabelCells<T, HistogramCell<T>>;

  constructor(config: { name: string; help: string; labelNames: readonly T[]; buckets: readonly number[]; registers: Registry[] }) {
    this.name = config.name;
    this.help = config.help;
    this.buckets = [...config.buckets].sort((a, b) => a - b);
    this.cells = this.emptyCells(config.labelNames);
    // The registry takes any metric that can report itself (get / getForPromString) and be reset.
    for (const registry of config.registers) registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  private emptyCells(names: readonly T[]): LabelCells<T, HistogramCell<T>> {
    return new LabelCells(names, (labels) => ({ labels, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 }));
  }

  observe(values: readonly string[], value: number): void {
    const cell = this.cells.get(values);
    const buckets = this.buckets;
    let i = 0;
    while (i < buckets.length && value > buckets[i]!) i++;
    cell.counts[i]!++;
    cell.sum += value;
    cell.count++;
  }

  /** Every label set forgotten (prom-client's reset()). */
  reset(): void {
    this.cells = this.emptyCells(this.cells.names);
  }

  /** The values as prom-client's Histogram gives them for the text exposition (each line's label set shared, `le` its own). */
  getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: HistogramValue[] }> {
    const values: HistogramValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, counts, sum, count } of this.cells.all) {
      let below = 0;
      this.buckets.forEach((le, i) => {
        below += counts[i]!;
        values.push({ labels: { le }, sharedLabels: labels, value: below, metricName: bucket, exemplar: null });
      });
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: labels, value: count, metricName: bucket, exemplar: null },
        { labels: {}, sharedLabels: labels, value: sum, metricName: `${this.name}_sum`, exemplar: undefined },
        { labels: {}, sharedLabels: labels, value: count, metricName: `${this.name}_count`, exemplar: undefined },
      );
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  /** The values as prom-client's Histogram.get() gives them (each line's labels whole). */
  async get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string; exemplar: null | undefined }> }> {
    const data = await this.getForPromString();
    return { ...data, values: data.values.map(({ labels, sharedLabels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } })) };
  }
}

/** One line of a histogram's exposition, as prom-client's Histogram reports it. */
interface HistogramValue {
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
  metricName: string;
  exemplar: null | undefined;
}

export class ProxyMetrics {
  readonly registry = new Registry();
  private readonly stats = new Map<string, ConnectionStats>();

  readonly connectErrors: Counter<'listener' | 'cluster' | 'transport' | 'code'>;
  readonly headerErrors: Counter<'listener' | 'reason'>;
  readonly refused: Counter<'listener' | 'reason'>;
  readonly drains: Counter<string>;
  readonly fallbacks: Counter<'listener' | 'cluster' | 'from' | 'to' | 'code'>;
  readonly migrationDrained: Counter<'listener' | 'cluster'>;
  readonly decisions: Counter<'listener' | 'cluster' | 'reason'>;
  readonly peerTlsHandshakes: Counter<'listener' | 'direction' | 'resumed'>;
  readonly peerTlsFailures: Counter<'listener' | 'direction' | 'reason'>;
  readonly unauthenticated: Counter<'listener'>;
  readonly rbacAllowed: Counter<'listener'>;
  readonly rbacDenied: Counter<'listener' | 'policy'>;
  readonly rbacShadowDenied: Counter<'listener' | 'policy'>;
  readonly rbacRevoked: Counter<'listener' | 'policy'>;
  readonly httpRequests: Counter<'listener' | 'route' | 'cluster' | 'status_class' | 'transport'>;
  private readonly httpRequestTally = new CounterTally(['listener', 'route', 'cluster', 'status_class', 'transport'] as const);
  private readonly decisionTally = new CounterTally(['listener', 'cluster', 'reason'] as const);
  readonly httpDuration: HistogramTally<'listener' | 'route' | 'cluster'>;
  readonly httpRetries: Counter<'listener' | 'route' | 'cluster' | 'reason'>;
  readonly connectionsCut: Counter<'listener' | 'direction' | 'reason'>;
  readonly forwardProxyRequests: Counter<'listener' | 'outcome'>;

  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const stats = this.stats;
    const connectionLabels = ['listener', 'direction', 'cluster', 'transport'] as const;
    new Counter({
      name: 'vsockmesh_connections_total',
      help: 'Connections accepted by a listener, by the cluster and transport they were sent to',
      labelNames: connectionLabels,
      registers,
      collect() {
        this.reset();
        for (const s of stats.values()) this.labels(s.labels).inc(s.total);
      },
    });
    new Gauge({
      name: 'vsockmesh_connections_active',
      help: 'Connections open now',
      labelNames: connectionLabels,
      registers,
      collect() {
        for (const s of stats.values()) this.labels(s.labels).set(s.active);
      },
    });
    new Counter({
      name: 'vsockmesh_bytes_total',
      help: 'Bytes relayed; flow="to_upstream" is what the downstream sent, flow="to_downstream" what came back',
      labelNames: [...connectionLabels, 'flow'],
      registers,
      collect() {
        this.reset();
        for (const s of stats.values()) {
          const b = s.bytes();
          this.labels({ ...s.labels, flow: 'to_upstream' }).inc(b.bytesToUpstream);
          this.labels({ ...s.labels, flow: 'to_downstream' }).inc(b.bytesToDownstream);
        }
      },
    });
    this.connectErrors = new Counter({
      name: 'vsockmesh_upstream_connect_errors_total',
      help: 'Failed upstream connects (refused, timed out, reset before the relay started)',
      labelNames: ['listener', 'cluster', 'transport', 'code'],
      registers,
    });
    this.headerErrors = new Counter({
      name: 'vsockmesh_header_errors_total',
      help: 'Inbound connections refused because their PROXY v2 header was missing, malformed, too large or too slow',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.refused = new Counter({
      name: 'vsockmesh_connections_refused_total',
      help: 'Connections refused by policy (undeclared destination port, no endpoint, draining) or by a limit (listener_max_connections, max_connections, overload)',
      labelNames: ['listener', 'reason'],
      registers,
    });
    const httpRequestTally = this.httpRequestTally;
    this.httpRequests = new Counter({
      name: 'vsockmesh_http_requests_total',
      help: 'Requests an HTTP listener answered, by route (<virtual host>/<index>, "" when none matched), cluster, status class (2xx..5xx) and the transport of the upstream connection ("none": not sent upstream)',
      labelNames: ['listener', 'route', 'cluster', 'status_class', 'transport'],
      registers,
      collect() {
        httpRequestTally.flushInto(this);
      },
    });
    this.httpRetries = new Counter({
      name: 'vsockmesh_http_retries_total',
      help: 'Requests an HTTP listener sent again to the next endpoint, by route, cluster and the failure retried (connect_failure, refused_stream, reset, per_try_timeout or the status code)',
      labelNames: ['listener', 'route', 'cluster', 'reason'],
      registers,
    });
    this.httpDuration = new HistogramTally({
      name: 'vsockmesh_http_request_duration_seconds',
      help: 'From the request headers to the end of the response, per route and cluster',
      labelNames: ['listener', 'route', 'cluster'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.drains = new Counter({ name: 'vsockmesh_drains_total', help: 'Drains started (SIGTERM or POST /drain)', registers });
    this.fallbacks = new Counter({
      name: 'vsockmesh_transport_fallbacks_total',
      help: 'Connections that fell back to another transport after a failed connect (from="vsock", to="tcp"), by error code',
      labelNames: ['listener', 'cluster', 'from', 'to', 'code'],
      registers,
    });
    this.migrationDrained = new Counter({
      name: 'vsockmesh_migration_drained_connections_total',
      help: 'vsock connections closed after their destination VM (or this VM) moved and the migration grace ran out',
      labelNames: ['listener', 'cluster'],
      registers,
    });
    this.forwardProxyRequests = new Counter({
      name: 'vsockmesh_forward_proxy_requests_total',
      help: 'Request heads a forward-proxy listener answered, by outcome (cluster, http, pass_through, unknown_destination, bad_request, not_loopback)',
      labelNames: ['listener', 'outcome'],
      registers,
    });
    const decisionTally = this.decisionTally;
    this.decisions = new Counter({
      name: 'vsockmesh_transport_decisions_total',
      help: 'Transport decisions of outbound connections (static, xDS and resolved clusters), by reason (same_hypervisor, other_hypervisor, unknown_destination, ...)',
      labelNames: ['listener', 'cluster', 'reason'],
      registers,
      collect() {
        decisionTally.flushInto(this);
      },
    });
    this.peerTlsHandshakes = new Counter({
      name: 'vsockmesh_peer_tls_handshakes_total',
      help: 'TLS handshakes on the TCP peer hop that verified the peer, by direction and whether the session was resumed',
      labelNames: ['listener', 'direction', 'resumed'],
      registers,
    });
    this.peerTlsFailures = new Counter({
      name: 'vsockmesh_peer_tls_failures_total',
      help: 'Peer-hop connections refused by TLS: handshake failures (unknown_ca, expired, no_certificate, ...) and identity checks (wrong_identity, peer_not_allowed, plain_text)',
      labelNames: ['listener', 'direction', 'reason'],
      registers,
    });
    this.unauthenticated = new Counter({
      name: 'vsockmesh_peer_unauthenticated_total',
      help: 'Plain-text peers let in under peer_tls mode permissive (labelled unauthenticated)',
      labelNames: ['listener'],
      registers,
    });
    // `policy`: a mesh policy name (bounded by the mesh's policy count) or default_deny.
    this.rbacAllowed = new Counter({
      name: 'vsockmesh_rbac_allowed_total',
      help: 'Inbound connections to a port with authorization policies that the policies let in',
      labelNames: ['listener'],
      registers,
    });
    this.rbacDenied = new Counter({
      name: 'vsockmesh_rbac_denied_total',
      help: 'Inbound connections refused by an authorization policy (policy_denied), by the DENY policy that matched, or default_deny when no ALLOW policy did',
      labelNames: ['listener', 'policy'],
      registers,
    });
    this.rbacShadowDenied = new Counter({
      name: 'vsockmesh_rbac_shadow_denied_total',
      help: 'Inbound connections a shadow (dry-run) policy would have refused; they were let through',
      labelNames: ['listener', 'policy'],
      registers,
    });
    this.rbacRevoked = new Counter({
      name: 'vsockmesh_rbac_revoked_total',
      help: 'Open inbound connections closed because a new policy no longer allows them (policy_revoked)',
      labelNames: ['listener', 'policy'],
      registers,
    });
    this.connectionsCut = new Counter({
      name: 'vsockmesh_connections_closed_total',
      help: 'Open connections the sidecar cut on its own with a reset on both sides, by reason (max_connection_age: a peer-hop TLS connection past peer_tls.max_connection_age)',
      labelNames: ['listener', 'direction', 'reason'],
      registers,
    });
    addLogDropped(this.registry);
    // 100ms event-loop sampling: the default 10ms wakes an idle sidecar 100 times a second.
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'vsockmesh_process_', eventLoopMonitoringPrecision: 100 });
  }

  /** Reports the overload state and failed accepts at scrape time. */
  addOverload(source: { state: OverloadState; acceptFailures(): Readonly<Record<string, number>> }): void {
    const registers = [this.registry];
    new Gauge({
      name: 'vsockmesh_overloaded',
      help: '1 while the resource is short (fds: free descriptors below min_free_fds or accepts failing; memory: resident set at max_memory): new connections are shed',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const resource of OVERLOAD_RESOURCES) this.labels({ resource }).set(source.state.some((c) => c.resource === resource) ? 1 : 0);
      },
    });
    new Counter({
      name: 'vsockmesh_accept_failures_total',
      help: 'Accepts that failed for lack of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), process-wide; the connection waits in the backlog',
      labelNames: ['code'],
      registers,
      collect() {
        this.reset();
        for (const [code, n] of Object.entries(source.acceptFailures())) this.labels({ code }).inc(n);
      },
    });
  }

  /** Reports the ADS client's counters at scrape time. */
  addXds(counters: XdsCounters, nodeKnown: () => boolean): void {
    const registers = [this.registry];
    new Counter({
      name: 'vsockmesh_xds_responses_total',
      help: 'xDS responses from the control plane by outcome: ack (applied) or nack (rejected, last good config kept)',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        this.labels({ outcome: 'ack' }).inc(counters.acks);
        this.labels({ outcome: 'nack' }).inc(counters.nacks);
      },
    });
    new Counter({
      name: 'vsockmesh_xds_resources_refused_total',
      help: 'xDS resources refused (invalid, or could not be applied: their last good version stays), counted per response, by type',
      labelNames: ['type'],
      registers,
      collect() {
        this.reset();
        for (const [type, n] of Object.entries(counters.refused)) this.labels({ type }).inc(n);
      },
    });
    new Gauge({
      name: 'vsockmesh_xds_node_known',
      help: '1 while the control plane\'s latest listener state names this node; 0 when it does not (its last listeners keep serving)',
      registers,
      collect() {
        this.set(nodeKnown() ? 1 : 0);
      },
    });
    new Counter({
      name: 'vsockmesh_xds_reconnects_total',
      help: 'Times the ADS stream ended and was opened again',
      registers,
      collect() {
        this.reset();
        this.inc(counters.reconnects);
      },
    });
    new Gauge({
      name: 'vsockmesh_xds_connected',
      help: '1 while the ADS stream to the control plane is open',
      registers,
      collect() {
        this.set(counters.connected);
      },
    });
    new Gauge({
      name: 'vsockmesh_xds_control_plane',
      help: 'The control-plane replica the ADS stream is open to (1, labelled with its address as configured); none while disconnected',
      labelNames: ['address'],
      registers,
      collect() {
        this.reset();
        if (counters.controlPlane !== null) this.labels({ address: counters.controlPlane }).set(1);
      },
    });
  }

  /** Reports the VM manager replica the client calls now, at scrape time. */
  addVmManagerReplica(api: { readonly replica?: string }): void {
    new Gauge({
      name: 'vsockmesh_vm_manager_replica',
      help: 'The VM manager replica queries and watches go to (1, labelled with its address as configured)',
      labelNames: ['address'],
      registers: [this.registry],
      collect() {
        this.reset();
        if (api.replica !== undefined) this.labels({ address: api.replica }).set(1);
      },
    });
  }

  /** Reports the resolver's counters at scrape time. */
  addResolver(counters: ResolverCounters): void {
    const registers = [this.registry];
    new Counter({
      name: 'vsockmesh_resolver_queries_total',
      help: 'Queries to the VM manager by outcome: found, not_found (the destination goes direct), unavailable (the VM manager did not answer)',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        for (const [outcome, n] of Object.entries(counters.queries)) this.labels({ outcome }).inc(n);
      },
    });
    new Counter({
      name: 'vsockmesh_resolver_cache_hits_total',
      help: 'Connections decided from the resolver cache, without a query',
      registers,
      collect() {
        this.reset();
        this.inc(counters.cacheHits);
      },
    });
    new Gauge({
      name: 'vsockmesh_resolver_vm_manager_up',
      help: '1 while the VM manager answers queries, 0 from a failed query until one succeeds',
      registers,
      collect() {
        this.set(counters.vmManagerUp);
      },
    });
    new Counter({
      name: 'vsockmesh_resolver_plain_tcp_total',
      help: 'Connections sent plain TCP because the VM manager could not answer and nothing fresh was cached',
      registers,
      collect() {
        this.reset();
        this.inc(counters.plainTcp);
      },
    });
  }

  /** One request an HTTP listener answered (vsockmesh_http_requests_total), counted without hashing its labels. */
  countHttpRequest(listener: string, route: string, cluster: string, statusClass: string, transport: string): void {
    this.httpRequestTally.add([listener, route, cluster, statusClass, transport]);
  }

  /** One transport decision (vsockmesh_transport_decisions_total) of a request, counted without hashing its labels. */
  countDecision(listener: string, cluster: string, reason: string): void {
    this.decisionTally.add([listener, cluster, reason]);
  }

  /** The host relay's authorizer: its questions to the VM manager and the decisions it holds. */
  addIdentity(identity: RenewalCounters): void {
    const registers = [this.registry];
    new Gauge({
      name: 'vsockmesh_cert_expiry_timestamp_seconds',
      help: 'When the current certificate expires (seconds since the epoch; 0 before the first)',
      registers,
      collect() {
        this.set(identity.expiry);
      },
    });
    new Counter({
      name: 'vsockmesh_cert_renewals_total',
      help: 'Certify calls made to renew the certificate (and to get the first), by result',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'success' }, identity.succeeded);
        this.inc({ result: 'failure' }, identity.failed);
      },
    });
  }

  addRelayAuthorizer(authorizer: { readonly queries: number; readonly size: number }): void {
    const registers = [this.registry];
    new Counter({
      name: 'vsockmesh_relay_authorizer_queries_total',
      help: 'AuthorizeRelay queries to the VM manager (a cached decision makes none)',
      registers,
      collect() {
        this.reset();
        this.inc(authorizer.queries);
      },
    });
    new Gauge({
      name: 'vsockmesh_relay_authorizer_cached_decisions',
      help: 'Relay decisions held for reuse (expired ones are dropped when read or swept)',
      registers,
      collect() {
        this.set(authorizer.size);
      },
    });
  }

  /**
   * The relayed connections (those with stats: L4, tunnels, relayed vsock):
   * how many are open, and one number that grows whenever one opens or
   * closes or bytes move (runtime/settle-memory.ts's look at the data path).
   */
  relayActivity(): { open: number; activity: number } {
    let open = 0;
    let activity = 0;
    for (const s of this.stats.values()) {
      const { bytesToUpstream, bytesToDownstream } = s.bytes();
      open += s.active;
      activity += s.total + (s.total - s.active) + bytesToUpstream + bytesToDownstream;
    }
    return { open, activity };
  }

  /** The stats object for a label set; callers keep it, so the hot path does no lookup. */
  connectionStats(labels: ConnectionLabels): ConnectionStats {
    const key = `${labels.listener}\0${labels.direction}\0${labels.cluster}\0${labels.transport}`;
    let s = this.stats.get(key);
    if (s === undefined) {
      s = new ConnectionStats(labels);
      this.stats.set(key, s);
    }
    return s;
  }

  async render(): Promise<string> {
    return this.registry.metrics();
  }
}

/** vsockmesh_log_dropped_total{log}: the process's stdout log sink, counted at scrape time (every role's /stats). */
export function addLogDropped(registry: Registry): void {
  new Counter({
    name: 'vsockmesh_log_dropped_total',
    help: 'Log lines dropped because stdout did not keep up (log="access" goes first) or failed',
    labelNames: ['log'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [log, n] of Object.entries(logLinesDropped())) this.labels({ log }).inc(n);
    },
  });
}
