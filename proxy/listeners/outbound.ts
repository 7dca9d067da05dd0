// Outbound listener: a local app connects to 127.0.0.1:PORT (or [::1]); the
// connection goes to its cluster's destination. A cluster's endpoint comes
// from the config file or the control plane, or is resolved per connection
// through the VM manager (from the resolver's cache); whichever it is, the one
// transport decision (upstream/select.ts) picks vsock (directly or through
// the host relay), TCP to the peer's sidecar, or TCP straight to the app.

import type { OutboundListenerConfig, ResolveTarget, SocketAddress, VmManagerSettings, VsockSettings } from '../config/types.js';
import { formatAddress } from '../runtime/log.js';
import type { ConnectionStats, TransportName } from '../metrics.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import { getOriginalDst } from '../native/original-dst.js';
import { destinationKey, type Resolver } from '../resolve/resolver.js';
import type { VsockBreakers } from '../upstream/breakers.js';
import { UpstreamConnector, type UpstreamPlan } from '../upstream/connector.js';
import type { Cluster } from '../upstream/cluster.js';
import { UpstreamEndpoint } from '../upstream/endpoint.js';
import { factsFromResolution, factsWithoutResolution, wantedOf } from '../upstream/endpoint-facts.js';
import type { PlacementSource } from '../upstream/placement.js';
import type { TransportPolicy } from '../upstream/select.js';
import type { Destination, Resolution, VmRecord } from '../resolve/types.js';
import { Listener, WARM_CORE_OPEN, WARM_ENABLED, ipBinds, type ListenerContext } from './listener.js';
import { ProxiedConnection, logAccess, upstreamConnectFailed, type AccessLogFields } from './proxied-connection.js';
import { AccessLines, membersAround, textMember } from './access-lines.js';
import { warmGeneration, warmInstallOutbound, warmLookupOutbound, type WarmOutboundEndpoint } from '../native/warm.js';
import { warmRecords, type WarmRecord } from './warm-records.js';
import type { UpstreamAttempt } from '../upstream/dial.js';
import type { PeerTls } from '../peer-tls/peer-tls.js';
import { inspectHttp, type InspectVerdict } from '../http/inspector.js';
import type { HttpOutboundListener } from '../http/listener.js';
import type { RouteTable } from '../http/route-table.js';
import { readPreamble } from './preamble.js';

export interface OutboundListenerOptions {
  accessLog: boolean;
  /** Includes the policy of static and xDS clusters. */
  vsock: VsockSettings;
  /** Shared by the sidecar's listeners: an endpoint's vsock health is not per listener. */
  breakers: VsockBreakers;
  /** Where this sidecar runs, for endpoints whose hypervisor is known (xDS, resolved). */
  placement: PlacementSource;
  /** Present when the sidecar has a VM manager; needed by resolved clusters. */
  resolver?: { resolver: Resolver; settings: VmManagerSettings };
  /** Present when the sidecar has a peer identity: TCP hops to peer sidecars go over TLS as peer-modes.ts originatesTls says. */
  peerTls?: PeerTls;
}

/** The endpoint made of a cached answer, kept for the next connection with the same answer (a cluster usually resolves one destination). */
interface ResolvedEndpoint {
  resolution: Resolution;
  target: ConcreteTarget;
  endpoint: UpstreamEndpoint;
}

/**
 * A connection another listener hands over once it has read what the client
 * asked for (a forward proxy's CONNECT): it is answered, not reset.
 */
export interface Tunnel {
  /** Written to the client once the upstream is up. */
  greeting: Buffer;
  /** Client bytes read after the request head; they belong to the tunnel. */
  early: Buffer | null;
  /** Ends the client's connection with an answer saying why (no way to reach the cluster, upstream down). */
  refuse(fd: number, reason: string, message: string): void;
  failed(fd: number, code: string): void;
}

/** How an accepted connection reaches the decision: through a tunnel, with bytes already read, or found to speak HTTP. */
interface Handover {
  tunnel?: Tunnel | undefined;
  /** Client bytes read before the decision (a tunnel's early bytes, or what the HTTP inspector read); they go first, untouched. */
  early: Buffer | null;
  /** The HTTP inspector found HTTP: the requests take the L7 path (captured.http), not the connection. */
  http?: boolean;
}

/**
 * A capture listener's L7 path: connections whose first bytes are HTTP
 * (http/inspector.ts) go to an unbound HTTP listener. A connection to a mesh
 * service (its original destination's VM serves one on that port) whose
 * routes the control plane pushed is routed by them, as on the service's
 * outbound listener; others by Host among the mesh's services, or else to
 * the original destination.
 */
export interface CapturedHttp {
  inspect: { maxBytes: number; timeoutMs: number };
  listener: HttpOutboundListener;
  /** The pushed route table of `service`, if any. */
  serviceRoutes(service: string): RouteTable | undefined;
}

/** Where a captured HTTP request goes when no virtual host matches its Host: the connection's original destination, as L4 would. */
export interface OriginalDestinationRoute {
  cluster: string;
  /** The routes of the mesh service the connection was headed for, when the control plane pushed them: every request follows them. */
  routes?: RouteTable | undefined;
  endpoint: UpstreamEndpoint;
  policy: TransportPolicy;
  connector: UpstreamConnector;
}

/** A resolve target with the original destination filled in. */
type ConcreteTarget = Exclude<ResolveTarget, { kind: 'original_dst' }>;

interface HowDecided {
  policy: TransportPolicy;
  /** The resolve target, when the cluster resolves its destination (its connections are tracked by VM for migration drains). */
  target?: ConcreteTarget;
  /** Why the VM manager's answer is missing, for a refusal's message. */
  unresolved?: string;
  /** The mesh service the VM manager says the destination serves. */
  service?: string | undefined;
  handover: Handover;
}

/** The header's destination when none is known (a hop is chosen only with one in practice: a VM always has an address). */
const NO_DESTINATION: SocketAddress = { address: '0.0.0.0', port: 0 };

/** Sources of each family whose PROXY v2 header the core fills in per connection (ProxyHeaderTemplate's bytes with zeros for the source). */
const ANY_INET = { address: '0.0.0.0', port: 0 };
const ANY_INET6 = { address: '::', port: 0 };
const NOTHING_READ = Buffer.alloc(0);

/** What the records of one endpoint's installed decision are logged and counted with: the access line's members around `src`, made once. */
interface WarmDecided {
  reason: string;
  /** The access line's fields but `src` (a failed connect's line and refusal are written from them). */
  fields: AccessLogFields;
  head: string;
  tail: string;
  /** Records of this decision in the batch being read, for the decisions counter at its end. */
  finished: number;
}

export class OutboundListener extends Listener {
  private readonly stats: Record<TransportName, ConnectionStats>;
  private readonly upstream: UpstreamConnector;
  /** Open connections by destination VM, for draining vsock connections after a move. */
  private readonly byVm = new Map<string, Set<ProxiedConnection>>();
  private readonly drainTimers = new Set<NodeJS.Timeout>();
  /** The resolve target as a Destination and its cache key, when it does not depend on the connection. */
  private readonly fixedDestination: { destination: Destination; key: string } | undefined;
  private lastResolved: ResolvedEndpoint | undefined;
  private readonly decisionCounters = new Map<string, { inc(value?: number): void }>();
  /** The warm records of the batch being read: their access lines, how many. */
  private readonly warmBatch = { lines: null as AccessLines | null, finished: 0 };
  private readonly onMoved = (vm: VmRecord): void => this.drainVsockLater(this.byVm.get(vm.vmId));
  private readonly onLocalMoved = (): void => this.drainVsockLater(new Set([...this.byVm.values()].flatMap((s) => [...s])));
  /**
   * The warm path (null: off, or done): its listener id, the endpoints of
   * each entry installed (by entry id, until no record can name it), and the
   * generation under which the cluster's decisions were found not replayable.
   */
  private warm: { id: number; stopRecords: () => void; entries: Map<number, WarmDecided[]>; current: number; notReplayable: number } | null = null;
  /** The warm path is on for this listener but not started yet: it starts at the first connection decide() could install (an idle sidecar holds none of it). */
  private warmLater = false;

  constructor(
    readonly config: OutboundListenerConfig,
    private readonly cluster: Cluster,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
    private readonly captured?: CapturedHttp,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context, config.maxConnections);
    if (captured && cluster.settings.resolve?.kind !== 'original_dst') throw new Error(`listener "${config.name}": the HTTP inspector needs a cluster that resolves the original destination`);
    const labels = { listener: config.name, direction: 'outbound', cluster: cluster.name } as const;
    this.stats = {
      tcp: context.metrics.connectionStats({ ...labels, transport: 'tcp' }),
      vsock: context.metrics.connectionStats({ ...labels, transport: 'vsock' }),
    };
    this.upstream = new UpstreamConnector(config.name, cluster, context, options);
    if (cluster.settings.resolve && !options.resolver) throw new Error(`cluster "${cluster.name}" resolves its destination but the sidecar has no vm_manager`);
    const resolve = cluster.settings.resolve;
    if (resolve && resolve.kind !== 'original_dst') {
      const destination = toDestination(resolve);
      this.fixedDestination = { destination, key: destinationKey(destination) };
    }
  }

  override async start(): Promise<void> {
    await super.start();
    await this.captured?.listener.start();
    if (this.cluster.settings.resolve && this.options.resolver) {
      this.options.resolver.resolver.on('moved', this.onMoved);
      this.options.resolver.resolver.on('local-moved', this.onLocalMoved);
    }
    this.warmLater = this.config.warmPath && this.cluster.settings.resolve === undefined && this.captured === undefined;
  }

  /**
   * The warm path (README, "The outbound warm path"): the core takes this
   * listener's accepts while an entry decide() installed lives, and hands
   * back what it does not take (no entry: announced as usual; a failed
   * connect: the connection with the attempt, for the slow path to end as its own).
   * Started at the first connection decide() may install an entry for: until
   * then the core would hand every accept back anyway, and an idle sidecar
   * keeps none of it (the record batch, the core's listener).
   */
  private startWarm(): NonNullable<OutboundListener['warm']> {
    this.warmLater = false;
    const records = warmRecords({ record: (record) => this.warmFinished(record), end: () => this.warmBatchEnd() });
    this.warm = { id: records.id, stopRecords: records.stop, entries: new Map(), current: 0, notReplayable: 0 };
    const handOver = (fd: number, host: SocketHost, port: number, _read: Buffer, elapsedMs: number, entryId?: number, endpoint?: number, connectError?: string): void => {
      if (connectError === undefined) this.handedOver(fd, host, port, NOTHING_READ, 0);
      else this.warmConnectFailed(fd, host, port, elapsedMs, this.warm?.entries.get(entryId!)?.[endpoint!], connectError);
    };
    for (const fd of this.listening()) native.warmListenOutbound(fd, records.id, this.counters, this.context.admission.counters, handOver);
    this.counters[WARM_ENABLED] = 1;
    return this.warm;
  }

  protected override warmId(): number | null {
    return this.warm?.id ?? null;
  }

  /** Once drained or stopped and the core holds none of its connections: no more records, no entry. */
  private warmDone(): void {
    if (this.warm === null || !this.draining || this.counters[WARM_CORE_OPEN] !== 0) return;
    this.warm.stopRecords();
    native.warmForget(this.warm.id);
    this.warm = null;
  }

  override async stop(): Promise<void> {
    this.options.resolver?.resolver.off('moved', this.onMoved);
    this.options.resolver?.resolver.off('local-moved', this.onLocalMoved);
    for (const t of this.drainTimers) clearTimeout(t);
    this.drainTimers.clear();
    this.warmLater = false;
    this.counters[WARM_ENABLED] = 0;
    await super.stop();
    this.warmDone();
    await this.captured?.listener.stop();
  }

  override get activeConnections(): number {
    return super.activeConnections + (this.captured?.listener.activeConnections ?? 0);
  }

  override async drain(): Promise<void> {
    this.warmLater = false;
    this.counters[WARM_ENABLED] = 0;
    const drained = Promise.all([super.drain(), this.captured?.listener.drain()]);
    this.warmDone();
    await drained;
  }

  override abortConnections(): void {
    super.abortConnections();
    this.captured?.listener.abortConnections();
    this.abortWarm();
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    this.adopt(fd, { address: String(peerHost), port: peerPort });
  }

  /** A connection to this listener's cluster, accepted here or handed over with a tunnel to answer through; owns `fd` from here on. */
  adopt(fd: number, src: { address: string; port: number }, tunnel?: Tunnel): void {
    const { resolve } = this.cluster.settings;
    const handover = { tunnel, early: tunnel?.early ?? null };
    if (resolve && this.captured && !tunnel) this.inspect(fd, src, resolve, this.captured);
    else if (resolve) this.onResolvedConnection(fd, src, resolve, handover);
    else this.onStaticConnection(fd, src, handover);
  }

  /**
   * Reads the first bytes (bounded in bytes and time) for the HTTP verdict:
   * HTTP takes the L7 path; anything else, a timeout (a server-first
   * protocol) or an early close takes the L4 path with what was read.
   */
  private inspect(fd: number, src: { address: string; port: number }, resolve: ResolveTarget, captured: CapturedHttp): void {
    const { maxBytes, timeoutMs } = captured.inspect;
    readPreamble<InspectVerdict>(
      fd,
      {
        maxBytes,
        timeoutMs,
        what: 'HTTP request line',
        decode: (bytes) => {
          const verdict = inspectHttp(bytes, maxBytes);
          return verdict.kind === 'incomplete' ? { kind: 'incomplete', needed: verdict.needed } : { kind: 'done', value: verdict, length: 0 };
        },
        track: (c) => this.track(c),
        untrack: (c) => this.untrack(c),
      },
      (result) => {
        if (result.ok) this.onResolvedConnection(fd, src, resolve, { early: result.early, http: result.value.kind !== 'other' });
        else if (result.code === 'timeout' || result.code === 'truncated') this.onResolvedConnection(fd, src, resolve, { early: result.received.length > 0 ? result.received : null });
        else native.close(fd);
      },
    );
  }

  // ---- endpoints of the config file or the control plane ----------------------

  private onStaticConnection(fd: number, src: { address: string; port: number }, handover: Handover): void {
    const endpoint = this.cluster.pick();
    if (endpoint === undefined) {
      this.refuse(fd, src, 'no_endpoint', 'refused: cluster has no endpoint', handover.tunnel);
      return;
    }
    this.decide(fd, src, endpoint, { policy: this.options.vsock.policy, handover });
  }

  // ---- resolved through the VM manager --------------------------------------

  private onResolvedConnection(fd: number, src: { address: string; port: number }, configured: ResolveTarget, handover: Handover): void {
    const { resolver } = this.options.resolver!;
    const { tunnel } = handover;
    let target: ConcreteTarget;
    if (configured.kind === 'original_dst') {
      // Transparent mode: the destination is where the app was connecting (iptables REDIRECT).
      let original: { address: string; port: number };
      try {
        original = getOriginalDst(fd, ipFamily(src.address) === 'inet6' && !src.address.startsWith('::ffff:') ? 'inet6' : 'inet');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'EINVAL';
        this.refuse(fd, src, 'no_original_destination', `refused: the connection was not redirected to this listener, so it names no destination (SO_ORIGINAL_DST: ${code})`, tunnel);
        return;
      }
      if (this.isOwnAddress(original)) {
        this.refuse(fd, src, 'no_original_destination', `refused: the original destination ${formatAddress(original.address, original.port)} is this listener (a loop)`, tunnel);
        return;
      }
      target = { kind: 'ip_port', ip: original.address, port: original.port };
    } else target = configured;
    const fixed = configured.kind === 'original_dst' ? undefined : this.fixedDestination;
    const destination = fixed?.destination ?? toDestination(target);
    const cached = fixed ? resolver.lookupKey(fixed.key) : resolver.lookup(destination);
    if (cached) {
      this.decideResolved(fd, src, target, cached, handover);
      return;
    }
    this.whilePending(fd, resolver.resolve(destination), (outcome) => {
      if (outcome.kind === 'resolved') this.decideResolved(fd, src, target, outcome.resolution, handover);
      else this.decideUnresolved(fd, src, target, outcome.code, handover);
    });
  }

  private decideResolved(fd: number, src: { address: string; port: number }, target: ConcreteTarget, resolution: Resolution, handover: Handover): void {
    // The hot path: the same cached answer as last time reuses its endpoint and the decisions kept on it.
    let last = this.lastResolved;
    if (last === undefined || last.resolution !== resolution || last.target !== target) {
      last = { resolution, target, endpoint: new UpstreamEndpoint(factsFromResolution(resolution, wantedOf(target))) };
      this.lastResolved = last;
    }
    // Only captured HTTP routes by the destination's service: L4 connections skip the lookup.
    const port = handover.http && this.captured && target.kind === 'ip_port' ? target.port : undefined;
    const service = port === undefined ? undefined : resolution.vm?.services.find((s) => s.port === port)?.name;
    this.decide(fd, src, last.endpoint, { policy: this.options.resolver!.settings.policy, target, service, handover });
  }

  /** The VM manager could not answer and nothing fresh is cached: only the address the target names, if it names one, is known. */
  private decideUnresolved(fd: number, src: { address: string; port: number }, target: ConcreteTarget, code: string, handover: Handover): void {
    const endpoint = new UpstreamEndpoint(factsWithoutResolution(wantedOf(target)));
    const connection = this.decide(fd, src, endpoint, { policy: this.options.resolver!.settings.policy, target, unresolved: `the VM manager is unavailable (${code})`, handover });
    if (connection) this.options.resolver!.resolver.notePlainTcp();
  }

  /** The transport decision for one connection, counted by reason, then the connection or its refusal. */
  private decide(fd: number, src: { address: string; port: number }, endpoint: UpstreamEndpoint, how: HowDecided): ProxiedConnection | undefined {
    const { policy, target, unresolved, service, handover } = how;
    const { tunnel } = handover;
    if (handover.http && this.captured) {
      // Each request decides its own transport (to this endpoint or a routed cluster's).
      const routes = service === undefined ? undefined : this.captured.serviceRoutes(service);
      this.captured.listener.adopt(fd, src, handover.early, { cluster: this.cluster.name, endpoint, policy, connector: this.upstream, routes });
      return undefined;
    }
    const selection = endpoint.decide(this.options.placement.current(), this.upstream.vsockHealth(endpoint.breaker), policy);
    this.decisionCounter(selection.reason).inc();
    const { app, vm } = endpoint.facts;
    if (!selection.ok) {
      const what = target ? describeTarget(target) : app ? formatAddress(app.address, app.port) : 'the endpoint';
      this.refuse(fd, src, selection.reason, `refused: no way to reach ${what}${unresolved ? `: ${unresolved}` : ''} (${selection.reason})`, tunnel);
      return undefined;
    }
    const vmId = vm?.vmId ?? null;
    const connection = this.connect(fd, src, { hops: selection.hops, reason: selection.reason, breaker: endpoint.breaker, dst: app ?? NO_DESTINATION, vmId, peerMode: vm?.peerMode }, handover);
    if (target && vmId !== null) this.remember(vmId, connection);
    if ((this.warm !== null || this.warmLater) && target === undefined && handover.tunnel === undefined && handover.early === null) this.warmInstall(this.warm ?? this.startWarm());
    return connection;
  }

  /** The plan of one endpoint's connections under the current placement, policy and vsock health. */
  private planOf(endpoint: UpstreamEndpoint, policy: TransportPolicy): UpstreamPlan | undefined {
    const selection = endpoint.decide(this.options.placement.current(), this.upstream.vsockHealth(endpoint.breaker), policy);
    if (!selection.ok) return undefined;
    const { app, vm } = endpoint.facts;
    return { hops: selection.hops, reason: selection.reason, breaker: endpoint.breaker, dst: app ?? NO_DESTINATION, vmId: vm?.vmId ?? null, peerMode: vm?.peerMode };
  }

  /**
   * After a static or xDS cluster's connection was decided: installs the
   * listener's entry if none lives, when every endpoint's decision is one
   * the core can replay. What such a decision reads (the cluster's endpoints
   * and settings, our placement, the policy, peer TLS) is behind the
   * generation; the vsock breakers are not, so a decision that read one
   * (vsock chosen, or TCP because a breaker is open) is not replayable, nor is
   * TLS origination or a second hop.
   */
  private warmInstall(warm: NonNullable<OutboundListener['warm']>): void {
    const generation = warmGeneration();
    if (warm.notReplayable === generation || warmLookupOutbound(warm.id) !== undefined) return;
    const endpoints: WarmOutboundEndpoint[] = [];
    const decided: WarmDecided[] = [];
    const policy = this.options.vsock.policy;
    for (const endpoint of this.cluster.upcoming()) {
      const plan = this.planOf(endpoint, policy);
      const hop = plan?.hops.length === 1 ? plan.hops[0]! : undefined;
      const [inet] = plan === undefined ? [] : this.upstream.attempts(plan, ANY_INET);
      if (plan === undefined || hop === undefined || hop.kind === 'vsock' || plan.reason === 'vsock_unhealthy' || inet === undefined || inet.secure !== undefined) {
        warm.notReplayable = generation;
        return;
      }
      const [inet6] = this.upstream.attempts(plan, ANY_INET6);
      const { target } = inet;
      endpoints.push({
        target: { family: target.family as 'inet' | 'inet6', host: String(target.host), port: target.port },
        header: inet.preamble === null ? null : { inet: inet.preamble[13] === 0x11 ? inet.preamble : null, inet6: inet6!.preamble! },
      });
      const fields = this.accessFields('', plan, inet);
      const [head, tail] = membersAround(fields, 'src');
      decided.push({ reason: plan.reason, fields, head, tail, finished: 0 });
    }
    const connectTimeoutMs = this.cluster.settings.connectTimeoutMs;
    const id = warmInstallOutbound(warm.id, generation, { endpoints, connectTimeoutMs, idleTimeoutMs: this.config.idleTimeoutMs });
    if (id === 0) return;
    warm.entries.set(id, decided);
    warm.current = id;
  }

  /**
   * A connection the warm path finished: counted and logged exactly as
   * decide() and ProxiedConnection would have (its decision was decide()'s,
   * installed then; the decisions counter is bumped at the batch's end here,
   * at the decision there). The line is added to the batch's.
   */
  private warmFinished(record: WarmRecord): void {
    const decided = this.warm!.entries.get(record.entryId)?.[record.label];
    if (decided === undefined || record.outcome === 'connect_failed') throw new Error('unreachable: a warm record of no installed endpoint, or a failed connect (those are handed over)');
    decided.finished++;
    this.warmBatch.finished++;
    // Aborted while connecting: as ProxiedConnection.abort, no connection of the transport's counts (it never relayed).
    const aborted = record.outcome === 'connect_aborted';
    if (!aborted) this.stats.tcp.finished(record.bytesToUpstream, record.bytesToDownstream);
    if (!this.options.accessLog) return;
    this.warmBatch.lines ??= new AccessLines(this.context.accessLogger);
    const members = `${decided.head}${textMember('src', formatAddress(record.peerHost(), record.peerPort))}${decided.tail}`;
    this.warmBatch.lines.add(members, record.bytesToUpstream, record.bytesToDownstream, record.durationMs, aborted ? 'aborted' : record.outcome, record.errorCode());
  }

  /**
   * The core's connect to an installed endpoint failed (refused, timed out)
   * and it handed the client over: ended as the slow path ends its own
   * failed attempt (a replayable plan is one TCP hop, tried once): the
   * decision counted, the connect error counted and logged, the client
   * reset, the access line timed from accept. No second dial, so no second
   * wait for a timeout. Without the endpoint's decision (not expected: the
   * entry is kept while the core holds a connection of it), decided anew.
   */
  private warmConnectFailed(fd: number, host: SocketHost, port: number, elapsedMs: number, decided: WarmDecided | undefined, code: string): void {
    if (decided === undefined) {
      this.handedOver(fd, host, port, NOTHING_READ, 0);
      return;
    }
    this.decisionCounter(decided.reason).inc();
    const fields = { ...decided.fields, src: formatAddress(String(host), port) };
    upstreamConnectFailed(this.context.metrics, this.context.refusals, fields, fields.transport, fields.upstream, code);
    native.reset(fd);
    if (this.options.accessLog) logAccess(this.context.accessLogger, fields, { outcome: 'upstream_error', bytesToUpstream: 0, bytesToDownstream: 0, errorCode: code }, elapsedMs);
    this.warmClosed();
  }

  /** The batch's records were all given: its lines written with one write, the decisions counted once per decision. */
  private warmBatchEnd(): void {
    const warm = this.warm!;
    const batch = this.warmBatch;
    batch.lines?.end();
    for (const decided of warm.entries.values()) {
      for (const d of decided) {
        if (d.finished === 0) continue;
        this.decisionCounter(d.reason).inc(d.finished);
        d.finished = 0;
      }
    }
    this.warmFinishedCount += batch.finished;
    batch.finished = 0;
    // No core connection is open: no later record can name an entry but the current one.
    if (this.counters[WARM_CORE_OPEN] === 0 && warm.entries.size > 1) for (const id of warm.entries.keys()) if (id !== warm.current) warm.entries.delete(id);
    this.warmClosed();
    this.warmDone();
  }

  /** The decisions counter for one reason, labels bound once. */
  private decisionCounter(reason: string): { inc(value?: number): void } {
    let counter = this.decisionCounters.get(reason);
    if (counter === undefined) {
      counter = this.context.metrics.decisions.labels({ listener: this.name, cluster: this.cluster.name, reason });
      this.decisionCounters.set(reason, counter);
    }
    return counter;
  }

  // ---- shared ----------------------------------------------------------------

  private connect(fd: number, src: { address: string; port: number }, upstream: UpstreamPlan, { tunnel, early }: Handover): ProxiedConnection {
    const attempts = this.upstream.attempts(upstream, src);
    const { vmId } = upstream;
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      statsFor: (transport) => this.stats[transport],
      metrics: this.context.metrics,
      refusals: this.context.refusals,
      accessLogger: this.options.accessLog ? this.context.accessLogger : null,
      idleTimeoutMs: this.config.idleTimeoutMs,
      ageLimit: this.options.peerTls?.ageLimit ?? null,
      ...(tunnel && { greeting: tunnel.greeting, failDownstream: (downstreamFd: number, code: string) => tunnel.failed(downstreamFd, code) }),
      fields: this.accessFields(formatAddress(src.address, src.port), upstream, attempts[0]!),
      onClosed: (c) => {
        this.untrack(c);
        if (vmId !== null) this.forget(vmId, c);
      },
    });
    this.track(connection);
    connection.connect(attempts, early);
    return connection;
  }

  /** A connection's access-line fields (ProxiedConnection's, and the warm path's records'). */
  private accessFields(src: string, { dst, reason, vmId }: UpstreamPlan, first: UpstreamAttempt): AccessLogFields {
    return {
      listener: this.name,
      direction: 'outbound',
      src,
      dst: formatAddress(dst.address, dst.port),
      cluster: this.cluster.name,
      transport: first.transport,
      upstream: first.label,
      transport_reason: reason,
      ...(vmId !== null && { dst_vm: vmId }),
    };
  }

  private isOwnAddress(dst: { address: string; port: number }): boolean {
    return this.addresses().some((b) => b.port === dst.port && (b.address === dst.address || b.address === '0.0.0.0' || b.address === '::'));
  }

  private refuse(fd: number, src: { address: string; port: number }, reason: string, message: string, tunnel?: Tunnel): void {
    this.context.metrics.refused.inc({ listener: this.name, reason });
    this.context.refusals.warn({ listener: this.name, src: formatAddress(src.address, src.port), cluster: this.cluster.name, reason }, message);
    if (tunnel) tunnel.refuse(fd, reason, message);
    else native.close(fd);
  }

  private remember(vmId: string, connection: ProxiedConnection): void {
    let set = this.byVm.get(vmId);
    if (!set) {
      set = new Set();
      this.byVm.set(vmId, set);
    }
    set.add(connection);
  }

  private forget(vmId: string, connection: ProxiedConnection): void {
    const set = this.byVm.get(vmId);
    if (!set) return;
    set.delete(connection);
    if (set.size === 0) this.byVm.delete(vmId);
  }

  /** vsock connections to a moved VM are dead once the move completes: let them finish for the grace, then close them. */
  private drainVsockLater(connections: Set<ProxiedConnection> | undefined): void {
    const vsock = [...(connections ?? [])].filter((c) => c.transport === 'vsock');
    if (vsock.length === 0) return;
    const graceMs = this.options.resolver!.settings.migrationGraceMs;
    this.context.logger.info({ listener: this.name, cluster: this.cluster.name, connections: vsock.length, grace_ms: graceMs, reason: 'migration' }, 'destination moved: draining its vsock connections');
    const timer = setTimeout(() => {
      this.drainTimers.delete(timer);
      let closed = 0;
      for (const c of vsock) {
        if (!c.closed) {
          c.abort();
          closed++;
        }
      }
      if (closed > 0) this.context.metrics.migrationDrained.inc({ listener: this.name, cluster: this.cluster.name }, closed);
    }, graceMs);
    timer.unref();
    this.drainTimers.add(timer);
  }
}

function toDestination(target: ConcreteTarget): Destination {
  switch (target.kind) {
    case 'ip_port':
      return { kind: 'ip_port', ip: target.ip, port: target.port };
    case 'vm':
      return { kind: 'vm', vmId: target.vmId };
    case 'service':
      return { kind: 'service', name: target.name };
  }
}

function describeTarget(target: ConcreteTarget): string {
  return target.kind === 'ip_port' ? `${target.ip}:${target.port}` : target.kind === 'vm' ? `VM ${target.vmId}` : `service ${target.name}`;
}
