// Outbound listener: a local app connects to 127.0.0.1:PORT (or [::1]); the
// connection goes to its cluster's destination. Static endpoints say how to
// reach their peer; a resolved cluster asks the VM manager (through the
// resolver's cache) where the destination lives, and the same-hypervisor
// decision picks vsock (directly or through the host relay), TCP to the peer's
// sidecar, or TCP straight to the app.

import type { EndpointConfig, OutboundListenerConfig, ResolveTarget, VmManagerSettings, VsockSettings } from '../config/types.js';
import { formatAddress } from '../runtime/log.js';
import type { ConnectionStats, TransportName } from '../metrics.js';
import { ipFamily, native, type SocketHost } from '../native/index.js';
import { getOriginalDst } from '../native/original-dst.js';
import { TLV, encodeProxyHeader, tcpAddresses, textTlv, type Tlv } from '../proxy-protocol.js';
import { encodeRelayHeader } from '../relay-header.js';
import { destinationKey, type Resolver } from '../resolve/resolver.js';
import { selectTransport, type Hop, type Selection } from '../resolve/select.js';
import type { Cluster } from '../upstream/cluster.js';
import { VsockBreakers, planHops } from '../upstream/transport.js';
import type { Destination, Resolution, VmRecord } from '../resolve/types.js';
import { Listener, ipBinds, type ListenerContext } from './listener.js';
import { ProxiedConnection, type UpstreamAttempt } from './proxied-connection.js';

export interface OutboundListenerOptions {
  accessLog: boolean;
  vsock: VsockSettings;
  /** Shared by the sidecar's listeners: an endpoint's vsock health is not per listener. */
  breakers: VsockBreakers;
  /** Present when the sidecar has a VM manager; needed by resolved clusters. */
  resolver?: { resolver: Resolver; settings: VmManagerSettings };
}

/** What a decision was made from, kept for the next connection with the same cached answer. */
interface DecisionMemo {
  resolution: Resolution;
  local: VmRecord | null;
  target: ConcreteTarget;
  vm: VmRecord | null;
  requested: { address: string; port: number } | null;
  breakerKey: string;
  /** By vsock health (the breaker can open and close between connections). */
  selections: Map<boolean, Selection>;
}

/** A resolve target with the original destination filled in. */
type ConcreteTarget = Exclude<ResolveTarget, { kind: 'original_dst' }>;

interface Peer {
  /** The destination named in the PROXY v2 header. */
  dst: { address: string; port: number };
  vmId?: string;
}

export class OutboundListener extends Listener {
  private readonly stats: Record<TransportName, ConnectionStats>;
  /** Open connections by destination VM, for draining vsock connections after a move. */
  private readonly byVm = new Map<string, Set<ProxiedConnection>>();
  private readonly drainTimers = new Set<NodeJS.Timeout>();
  /** The resolve target as a Destination and its cache key, when it does not depend on the connection. */
  private readonly fixedDestination: { destination: Destination; key: string } | undefined;
  private lastDecision: DecisionMemo | undefined;
  private readonly decisionCounters = new Map<string, { inc(): void }>();
  private readonly onMoved = (vm: VmRecord): void => this.drainVsockLater(this.byVm.get(vm.vmId));
  private readonly onLocalMoved = (): void => this.drainVsockLater(new Set([...this.byVm.values()].flatMap((s) => [...s])));

  constructor(
    readonly config: OutboundListenerConfig,
    private readonly cluster: Cluster,
    context: ListenerContext,
    private readonly options: OutboundListenerOptions,
  ) {
    super(config.name, ipBinds(config.addresses), config.port, context, config.maxConnections);
    const labels = { listener: config.name, direction: 'outbound', cluster: cluster.name } as const;
    this.stats = {
      tcp: context.metrics.connectionStats({ ...labels, transport: 'tcp' }),
      vsock: context.metrics.connectionStats({ ...labels, transport: 'vsock' }),
    };
    if (cluster.config.resolve && !options.resolver) throw new Error(`cluster "${cluster.name}" resolves its destination but the sidecar has no vm_manager`);
    const resolve = cluster.config.resolve;
    if (resolve && resolve.kind !== 'original_dst') {
      const destination = toDestination(resolve);
      this.fixedDestination = { destination, key: destinationKey(destination) };
    }
  }

  override async start(): Promise<void> {
    await super.start();
    if (this.cluster.config.resolve && this.options.resolver) {
      this.options.resolver.resolver.on('moved', this.onMoved);
      this.options.resolver.resolver.on('local-moved', this.onLocalMoved);
    }
  }

  override async stop(): Promise<void> {
    this.options.resolver?.resolver.off('moved', this.onMoved);
    this.options.resolver?.resolver.off('local-moved', this.onLocalMoved);
    for (const t of this.drainTimers) clearTimeout(t);
    this.drainTimers.clear();
    await super.stop();
  }

  protected onConnection(fd: number, peerHost: SocketHost, peerPort: number): void {
    const src = { address: String(peerHost), port: peerPort };
    const { resolve } = this.cluster.config;
    if (resolve) this.onResolvedConnection(fd, src, resolve);
    else this.onStaticConnection(fd, src);
  }

  // ---- static endpoints ------------------------------------------------------

  private onStaticConnection(fd: number, src: { address: string; port: number }): void {
    const endpoint = this.cluster.pick();
    if (endpoint === undefined) {
      this.refuse(fd, src, 'no_endpoint', 'refused: cluster has no endpoint');
      return;
    }
    const { vsock, breakers } = this.options;
    const breakerKey = endpoint.vsock ? VsockBreakers.key(endpoint.vsock.cid, endpoint.vsock.port) : '';
    const plan = planHops(endpoint, { vsockEnabled: vsock.enabled, vsockBreakerOpen: endpoint.vsock !== undefined && breakers.isOpen(breakerKey, Date.now()) });
    this.connect(fd, src, plan.hops, plan.reason, breakerKey, peerOf(endpoint));
  }

  // ---- resolved through the VM manager --------------------------------------

  private onResolvedConnection(fd: number, src: { address: string; port: number }, configured: ResolveTarget): void {
    const { resolver } = this.options.resolver!;
    let target: Exclude<ResolveTarget, { kind: 'original_dst' }>;
    if (configured.kind === 'original_dst') {
      // Transparent mode: the destination is where the app was connecting (iptables REDIRECT).
      let original: { address: string; port: number };
      try {
        original = getOriginalDst(fd, ipFamily(src.address) === 'inet6' && !src.address.startsWith('::ffff:') ? 'inet6' : 'inet');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'EINVAL';
        this.refuse(fd, src, 'no_original_destination', `refused: the connection was not redirected to this listener, so it names no destination (SO_ORIGINAL_DST: ${code})`);
        return;
      }
      if (this.isOwnAddress(original)) {
        this.refuse(fd, src, 'no_original_destination', `refused: the original destination ${formatAddress(original.address, original.port)} is this listener (a loop)`);
        return;
      }
      target = { kind: 'ip_port', ip: original.address, port: original.port };
    } else target = configured;
    const fixed = configured.kind === 'original_dst' ? undefined : this.fixedDestination;
    const destination = fixed?.destination ?? toDestination(target);
    const cached = fixed ? resolver.lookupKey(fixed.key) : resolver.lookup(destination);
    if (cached) {
      this.decide(fd, src, target, cached);
      return;
    }
    this.whilePending(fd, resolver.resolve(destination), (outcome) => {
      if (outcome.kind === 'resolved') this.decide(fd, src, target, outcome.resolution);
      else this.plainTcp(fd, src, target, outcome.code);
    });
  }

  /** The VM manager could not answer and nothing fresh is cached: plain TCP to the address the target names, if it names one. */
  private plainTcp(fd: number, src: { address: string; port: number }, target: ConcreteTarget, code: string): void {
    if (target.kind !== 'ip_port') {
      this.refuse(fd, src, 'unresolvable', `refused: the VM manager is unavailable (${code}) and ${describeTarget(target)} names no address to fall back to`);
      return;
    }
    this.options.resolver!.resolver.notePlainTcp();
    const hop: Hop = { kind: 'direct', address: target.ip, port: target.port };
    this.connect(fd, src, [hop], 'vm_manager_unavailable', '', { dst: { address: target.ip, port: target.port } });
  }

  private decide(fd: number, src: { address: string; port: number }, target: ConcreteTarget, resolution: Resolution): void {
    const { resolver, settings } = this.options.resolver!;
    const local = resolver.local();
    // The hot path: the same cached answer as last time (a cluster usually resolves one destination) reuses the decision's inputs.
    let memo = this.lastDecision;
    if (memo === undefined || memo.resolution !== resolution || memo.local !== local || memo.target !== target) {
      const vm = resolution.found ? (resolution.vm ?? null) : null;
      const port = target.kind === 'service' ? resolution.port : target.port;
      const address = target.kind === 'ip_port' ? target.ip : vm?.addresses[0];
      const requested = address !== undefined && port !== undefined ? { address, port } : null;
      const breakerKey = vm?.sidecar ? VsockBreakers.key(vm.vsockCid, vm.sidecar.vsockPort) : '';
      memo = { resolution, local, target, vm, requested, breakerKey, selections: new Map() };
      this.lastDecision = memo;
    }
    const { vm, requested, breakerKey } = memo;
    const vsockHealthy = this.options.vsock.enabled && !(breakerKey !== '' && this.options.breakers.isOpen(breakerKey, Date.now()));
    let selection = memo.selections.get(vsockHealthy);
    if (selection === undefined) {
      selection = selectTransport({ local, destination: vm, hypervisor: resolution.hypervisor ?? null, requested, vsockHealthy, policy: settings.policy });
      memo.selections.set(vsockHealthy, selection);
    }
    this.decisionCounter(selection.reason).inc();
    if (!selection.ok) {
      this.refuse(fd, src, selection.reason, `refused: no way to reach ${describeTarget(target)} (${selection.reason})`);
      return;
    }
    const dst = requested ?? { address: vm?.addresses[0] ?? '0.0.0.0', port: 0 };
    const connection = this.connect(fd, src, selection.hops, selection.reason, breakerKey, vm ? { dst, vmId: vm.vmId } : { dst });
    if (vm) this.remember(vm.vmId, connection);
  }

  /** The decisions counter for one reason, labels bound once. */
  private decisionCounter(reason: string): { inc(): void } {
    let counter = this.decisionCounters.get(reason);
    if (counter === undefined) {
      counter = this.context.metrics.decisions.labels({ listener: this.name, cluster: this.cluster.name, reason });
      this.decisionCounters.set(reason, counter);
    }
    return counter;
  }

  // ---- shared ----------------------------------------------------------------

  private connect(fd: number, src: { address: string; port: number }, hops: Hop[], route: string, breakerKey: string, peer: Peer): ProxiedConnection {
    const header = hops.some((h) => h.kind !== 'direct') ? this.peerHeader(src, peer) : null;
    const attempts = hops.map((hop) => this.attempt(hop, header, breakerKey));
    const connection = new ProxiedConnection({
      downstreamFd: fd,
      statsFor: (transport) => this.stats[transport],
      metrics: this.context.metrics,
      refusals: this.context.refusals,
      accessLogger: this.options.accessLog ? this.context.accessLogger : null,
      idleTimeoutMs: this.config.idleTimeoutMs,
      fields: {
        listener: this.name,
        direction: 'outbound',
        src: formatAddress(src.address, src.port),
        dst: formatAddress(peer.dst.address, peer.dst.port),
        cluster: this.cluster.name,
        transport: attempts[0]!.transport,
        upstream: attempts[0]!.label,
        route,
        ...(peer.vmId !== undefined && { dst_vm: peer.vmId }),
      },
      onClosed: (c) => {
        this.untrack(c);
        if (peer.vmId !== undefined) this.forget(peer.vmId, c);
      },
    });
    this.track(connection);
    connection.connect(attempts);
    return connection;
  }

  private isOwnAddress(dst: { address: string; port: number }): boolean {
    return this.addresses().some((b) => b.port === dst.port && (b.address === dst.address || b.address === '0.0.0.0' || b.address === '::'));
  }

  private refuse(fd: number, src: { address: string; port: number }, reason: string, message: string): void {
    this.context.metrics.refused.inc({ listener: this.name, reason });
    this.context.refusals.warn({ listener: this.name, src: formatAddress(src.address, src.port), cluster: this.cluster.name, reason }, message);
    native.close(fd);
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

  private attempt(hop: Hop, proxyHeader: Buffer | null, breakerKey: string): UpstreamAttempt {
    if (hop.kind !== 'vsock') {
      const target = { family: ipFamily(hop.address), host: hop.address, port: hop.port, connectTimeoutMs: this.cluster.config.connectTimeoutMs };
      return { transport: 'tcp', target, label: formatAddress(hop.address, hop.port), preamble: hop.kind === 'tcp' ? proxyHeader : null };
    }
    const { connectTimeoutMs } = this.options.vsock;
    const onFallback = (code: string, next: UpstreamAttempt): void => {
      if (breakerKey !== '') this.options.breakers.open(breakerKey, Date.now());
      this.context.metrics.fallbacks.inc({ listener: this.name, cluster: this.cluster.name, from: 'vsock', to: next.transport, code });
      this.context.logger.warn(
        { listener: this.name, cluster: this.cluster.name, reason: 'vsock_fallback', code, vsock: breakerKey, fallback: next.label, breaker_ms: this.options.vsock.breakerWindowMs },
        `vsock connect to ${breakerKey} failed (${code}); falling back to ${next.transport} ${next.label}, vsock skipped for ${this.options.vsock.breakerWindowMs}ms`,
      );
    };
    const relayHeader = hop.relay ? encodeRelayHeader({ cid: hop.cid, port: hop.port }) : null;
    const preamble = relayHeader && proxyHeader ? Buffer.concat([relayHeader, proxyHeader]) : (relayHeader ?? proxyHeader);
    const to = hop.relay ?? hop;
    return {
      transport: 'vsock',
      target: { family: 'vsock', host: to.cid, port: to.port, connectTimeoutMs },
      label: hop.relay ? `vsock:${hop.relay.cid}:${hop.relay.port}>${hop.cid}:${hop.port}` : `vsock:${hop.cid}:${hop.port}`,
      preamble,
      onFallback,
    };
  }

  private peerHeader(src: { address: string; port: number }, peer: Peer): Buffer {
    const tlvs: Tlv[] = [];
    if (this.cluster.config.authority !== undefined) tlvs.push(textTlv(TLV.AUTHORITY, this.cluster.config.authority));
    tlvs.push(textTlv(TLV.VSOCKMESH_SOURCE_VM, this.context.nodeId));
    if (peer.vmId !== undefined) tlvs.push(textTlv(TLV.VSOCKMESH_DESTINATION_VM, peer.vmId));
    return encodeProxyHeader({ command: 'proxy', addresses: tcpAddresses(src, peer.dst), tlvs });
  }
}

function peerOf(endpoint: EndpointConfig): Peer {
  return { dst: { address: endpoint.address, port: endpoint.port }, ...(endpoint.vmId !== undefined && { vmId: endpoint.vmId }) };
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
