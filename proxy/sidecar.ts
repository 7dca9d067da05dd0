// The sidecar: outbound listeners for local apps, inbound listeners (TCP and
// vsock) for peer sidecars, on the shared server lifecycle.

import type { SidecarConfig } from './config/types.js';
import type { Listener } from './listeners/listener.js';
import { XdsApplier } from './xds-applier.js';
import { settledWithin } from './runtime/within.js';
import type { ConfigSource, ConfigSourceFactory, ListenersOutcome, PushedConfig, StateRefusals, XdsListener } from './dynamic/types.js';
import { Resolver } from './resolve/resolver.js';
import type { VmManagerApi } from './resolve/types.js';
import { InboundListener } from './listeners/inbound.js';
import { OutboundListener } from './listeners/outbound.js';
import type { ForwardProxyListener, ForwardProxyTargets } from './listeners/forward-proxy.js';
import { forwardProxyRoutes } from './listeners/forward-proxy-routes.js';
import { RouteTable, type RouteConfig } from './http/route-table.js';
import type { HttpOutboundListener } from './http/listener.js';
import { outboundListenerConfig } from './config/listener-defaults.js';
import { ProxyServer, type ServerOptions } from './server.js';
import { Cluster } from './upstream/cluster.js';
import { VsockBreakers } from './upstream/breakers.js';
import { ourPlacement } from './upstream/placement.js';
import type { CertificateSource } from './identity/certificate-source.js';
import type { FileCertificateSource } from './identity/certificate-files.js';
import { PeerTls } from './peer-tls/peer-tls.js';
import { InboundAuthorization } from './policy/inbound-authorization.js';
import { DEFAULT_TRUST_DOMAIN, parseMeshIdentity } from './identity/spiffe.js';

export type { DrainResult, ServerState as SidecarState } from './server.js';

/** The HTTP listeners' classes (HTTP/1.1 and HTTP/2 with their pools, the forward proxy): ~30 modules an L4-only sidecar never runs. */
export interface HttpListenerClasses {
  HttpOutboundListener: typeof HttpOutboundListener;
  ForwardProxyListener: typeof ForwardProxyListener;
}

/** Whether a config's listeners need the HTTP stack: an HTTP outbound listener, a capture listener that inspects for HTTP, or a forward proxy. */
export function needsHttpListeners(config: SidecarConfig): boolean {
  return config.listeners.some((l) => l.kind === 'forward_proxy' || (l.kind === 'outbound' && (l.http !== undefined || l.httpInspector !== undefined)));
}

/** Loads the HTTP listeners' modules (once: the module cache keeps them); a sidecar loads them only when needsHttpListeners says so (its idle RSS is its budget). */
export async function loadHttpListeners(): Promise<HttpListenerClasses> {
  const [{ HttpOutboundListener }, { ForwardProxyListener }] = await Promise.all([import('./http/listener.js'), import('./listeners/forward-proxy.js')]);
  return { HttpOutboundListener, ForwardProxyListener };
}
/** A client the sidecar uses; `closeOnStop`: the sidecar owns it and closes it when it stops. */
export interface OwnedClient<T> {
  client: T;
  closeOnStop: boolean;
}

/**
 * The sidecar's clients come from outside (proxy/cmd builds them from xds/,
 * the demo and tests may pass their own): the data plane never imports the
 * control plane's code.
 */
export interface SidecarOptions extends ServerOptions {
  /** Required when the config has a vm_manager section. */
  vmManager?: OwnedClient<VmManagerApi>;
  /** Required when the config has an xds section: makes the stream to the control plane. */
  configSource?: ConfigSourceFactory;
  /** The peer hop's identity when peer_tls names files; default: those PEM files, watched. */
  certificateSource?: CertificateSource;
  /** The HTTP listeners' classes: required when needsHttpListeners(config) (createSidecar loads them; the constructor is synchronous). */
  http?: HttpListenerClasses;
  /** The CID relayed vsock connections come from (default 2, the host's): only a test guest under vsock_loopback, where the relay too is at CID 1, sets it. */
  relayCid?: number;
}

export class Sidecar extends ProxyServer {
  /** Listeners, clusters and routes from the control plane: present when the config has an xds section. */
  readonly xds: XdsApplier | undefined;
  private ads: ConfigSource | undefined;
  private readonly configSource: ConfigSourceFactory | undefined;
  /** The daemon agent: present when the config has a vm_manager section. */
  readonly resolver: Resolver | undefined;
  private readonly vmManager: OwnedClient<VmManagerApi> | undefined;
  /** TLS on the TCP peer hop: present when peer_tls names identity files. */
  readonly peerTls: PeerTls | undefined;
  private readonly certificateSource: CertificateSource | undefined;
  private fileSource: FileCertificateSource | undefined;
  /** The pushed authorization policies, enforced by every inbound listener (static ones too). */
  readonly authorization: InboundAuthorization;
  private readonly onConfigApplied: () => void;

  constructor(
    readonly config: SidecarConfig,
    options: SidecarOptions = {},
  ) {
    super({ nodeId: config.node.id, admin: config.admin, logLevel: config.log.level, drainTimeoutMs: config.drainTimeoutMs, overload: config.overload }, options);
    const settings = config.vmManager;
    if (settings) {
      if (options.vmManager === undefined) throw new Error('the config has a vm_manager section but the sidecar was given no VM manager client');
      this.vmManager = options.vmManager;
      this.resolver = new Resolver({
        api: this.vmManager.client,
        localVmId: config.node.id,
        queryTimeoutMs: settings.queryTimeoutMs,
        negativeTtlMs: settings.negativeTtlMs,
        logger: this.logger,
      });
      this.metrics.addResolver(this.resolver.counters);
      this.metrics.addVmManagerReplica(this.vmManager.client);
    }
    if ('files' in config.peerTls) this.peerTls = new PeerTls(config.peerTls, this.metrics, this.logger);
    this.certificateSource = options.certificateSource;
    this.onConfigApplied = options.onConfigApplied ?? (() => {});
    const peerTls = this.peerTls && { peerTls: this.peerTls };
    const resolver = this.resolver && settings ? { resolver: this.resolver, settings } : undefined;
    const clusters = new Map(config.clusters.map((c) => [c.name, Cluster.fromConfig(c)]));
    this.authorization = new InboundAuthorization(this.context);
    const trustDomain = config.peerTls.mode !== 'disable' ? config.peerTls.trustDomain : (config.identity?.trustDomain ?? DEFAULT_TRUST_DOMAIN);
    const listenerOptions = {
      accessLog: config.log.accessLog,
      ...(this.resolver && { resolver: this.resolver }),
      ...peerTls,
      relayTrust: () => this.relayTrust(),
      authorization: this.authorization,
      trustDomain,
      ...(options.relayCid !== undefined && { relayCid: options.relayCid }),
    };
    const placement = ourPlacement(
      () => this.resolver?.local() ?? null,
      () => this.xds?.placement ?? null,
    );
    const outboundOptions = { accessLog: config.log.accessLog, vsock: config.vsock, breakers: new VsockBreakers(config.vsock.breakerWindowMs), placement, ...(resolver && { resolver }), ...peerTls };
    if (config.xds) {
      if (options.configSource === undefined) throw new Error('the config has an xds section but the sidecar was given no config source');
      this.configSource = options.configSource;
      this.xds = new XdsApplier({
        addListener: async (listener) => {
          await listener.start();
          this.listeners.push(listener);
          this.logger.info({ listener: listener.name, addresses: listener.addresses(), source: 'xds' }, 'listener started');
        },
        retireListener: (listener) => void this.retire(listener),
        applyPolicies: (policies) => this.authorization.replace(policies),
        outboundOptions,
        inboundOptions: listenerOptions,
        listenerContext: this.context,
      });
    }
    const http = options.http;
    if (http === undefined && needsHttpListeners(config)) throw new Error('the config has HTTP listeners but the sidecar was given no HTTP listener classes (loadHttpListeners)');
    // Inbound first: a sidecar should accept from peers before it sends to them.
    for (const l of config.listeners) if (l.kind === 'inbound') this.listeners.push(new InboundListener(l, this.context, listenerOptions));
    for (const l of config.listeners) {
      if (l.kind !== 'outbound') continue;
      if (l.http) {
        this.listeners.push(new http!.HttpOutboundListener(l, l.http.routes, clusters, this.context, outboundOptions));
        continue;
      }
      const cluster = clusters.get(l.cluster);
      if (cluster === undefined) throw new Error(`listener "${l.name}": unknown cluster "${l.cluster}"`);
      // The capture listener's L7 path: an HTTP listener bound to nothing, under the capture listener's name.
      const inspector = l.httpInspector;
      // Its requests may follow a service's pushed routes: the file's clusters, then the control plane's.
      const reachable = { get: (name: string) => this.reachableCluster(clusters, name) };
      const captured = inspector && {
        inspect: inspector,
        listener: new http!.HttpOutboundListener(outboundListenerConfig({ name: l.name, addresses: [], port: 0, cluster: l.cluster, idleTimeoutMs: l.idleTimeoutMs, forwarded: l.forwarded }), inspector.routes, reachable, this.context, outboundOptions),
        serviceRoutes: this.serviceRouteTables(),
      };
      this.listeners.push(new OutboundListener(l, cluster, this.context, outboundOptions, captured));
    }
    for (const l of config.listeners) if (l.kind === 'forward_proxy') this.listeners.push(new http!.ForwardProxyListener(l, this.forwardProxyTargets(l.name, clusters), this.context, outboundOptions));
  }

  /** The route tables of the services' pushed route configurations, compiled once per pushed state. */
  private serviceRouteTables(): (service: string) => RouteTable | undefined {
    let made: { generation: number; tables: Map<string, RouteTable | undefined> } | undefined;
    return (service) => {
      const generation = this.xds?.generation ?? 0;
      if (made?.generation !== generation) made = { generation, tables: new Map() };
      if (!made.tables.has(service)) {
        const config = this.xds?.serviceRoutes(service);
        made.tables.set(service, config && new RouteTable(config));
      }
      return made.tables.get(service);
    };
  }

  /** A cluster by name: the file's, then the control plane's. */
  private reachableCluster(clusters: ReadonlyMap<string, Cluster>, name: string): Cluster | undefined {
    return clusters.get(name) ?? this.xds?.clusters.get(name);
  }

  /** What a forward proxy reaches: the file's clusters, then the control plane's; plain requests by each service's routes, made again when a pushed state changes them. */
  private forwardProxyTargets(name: string, clusters: ReadonlyMap<string, Cluster>): ForwardProxyTargets {
    let made: { generation: number; config: RouteConfig } | undefined;
    return {
      get: (cluster) => this.reachableCluster(clusters, cluster),
      routes: () => {
        const generation = this.xds?.generation ?? 0;
        if (made?.generation !== generation) {
          const names = new Set([...clusters.keys(), ...(this.xds?.clusters.keys() ?? [])]);
          const reachable = [...names].filter((n) => this.reachableCluster(clusters, n)?.settings.resolve?.kind !== 'original_dst');
          made = { generation, config: forwardProxyRoutes(name, reachable, (service) => this.xds?.serviceRoutes(service)) };
        }
        return made.config;
      },
    };
  }

  protected override startClients(): void {
    this.resolver?.start();
  }

  override async start(): Promise<void> {
    await this.startPeerTls();
    await super.start();
    if (this.config.xds && this.xds && this.configSource) {
      const ads = this.configSource({ addresses: this.config.xds.addresses, node: { id: this.config.node.id, cluster: this.config.xds.cluster }, logger: this.logger, config: this.pushedConfig(this.xds) });
      this.ads = ads;
      this.metrics.addXds(ads.counters, () => this.xds!.nodeKnown);
      ads.start();
    }
  }

  /** The peer hop's identity before any listener accepts: a sidecar that cannot prove who it is does not start. */
  private async startPeerTls(): Promise<void> {
    const settings = this.config.peerTls;
    if (!this.peerTls || !('files' in settings)) return;
    let source = this.certificateSource;
    if (source === undefined) {
      // Loaded only here: certificate parsing (asn1js) costs a sidecar without peer TLS nothing.
      const { FileCertificateSource } = await import('./identity/certificate-files.js');
      const { key, chain, bundle } = settings.files;
      this.fileSource = await FileCertificateSource.open(
        { keyPath: key, certPath: chain, caPath: bundle },
        {
          logger: this.logger,
          trustDomain: settings.trustDomain,
          pollMs: settings.reloadIntervalMs,
          onReloadFailed: (problem, message) => this.logger.warn({ reason: 'peer_identity_reload_failed', problem }, `peer TLS keeps its identity: ${message}`),
        },
      ).catch((err: unknown) => {
        throw new Error(`peer_tls: ${(err as Error).message}`, { cause: err });
      });
      source = this.fileSource;
    }
    this.peerTls.start(source);
  }

  /** What a host relay's source assertion is checked against: the roots of our peer identity, else of our control-plane identity. */
  private relayTrust(): { trustDomain: string; bundlePem: string } | null {
    const material = (this.fileSource ?? this.certificateSource ?? this.identity)?.current();
    const id = material && parseMeshIdentity(material.spiffeId);
    return id?.ok ? { trustDomain: id.value.trustDomain, bundlePem: material!.bundlePem } : null;
  }

  /** What the control plane's stream applies: each resource type to the applier. */
  private pushedConfig(applier: XdsApplier): PushedConfig {
    // Each applied state is noted (after it is applied: a refused one leaves garbage too).
    const noted = <T>(result: T): T => {
      this.onConfigApplied();
      return result;
    };
    return {
      clusters: (clusters, refused) => noted({ assignmentNames: applier.applyClusters(clusters, refused) }),
      assignments: (assignments) => noted(applier.applyAssignments(assignments)),
      listeners: async (listeners, refused, version) => noted(await this.applyListeners(applier, listeners, refused, version)),
      routes: async (routes) => {
        // A listener that warmed but could not open (its port taken): it stays out, as one refused by LDS would.
        for (const r of await applier.applyRoutes(routes)) this.logger.warn({ reason: 'listener_open_failed', listener: r.name, source: 'xds' }, `listener ${r.name} could not be opened: ${r.error}`);
        this.onConfigApplied();
      },
    };
  }

  private async applyListeners(applier: XdsApplier, listeners: XdsListener[], refused: StateRefusals, version: string): Promise<ListenersOutcome> {
    const applied = await applier.applyListeners(listeners, refused);
    if (!applied.nodeUnknown && this.unknownSince !== undefined) {
      this.unknownSince = undefined;
      this.logger.info({ version, source: 'xds' }, `the control plane knows node ${this.config.node.id} again`);
    }
    return { refused: applied.refused, routeNames: applier.routeNames(), ...(applied.nodeUnknown && { problem: this.nodeUnknown(applied.nodeUnknown.kept, version) }) };
  }

  /** The version of the last listener state that did not know this node, once it was logged. */
  private unknownSince: string | undefined;

  /**
   * The control plane sent a listener state without this node's listeners:
   * they keep serving (it is the control plane that lost track of the node,
   * not the node that stopped existing). Logged once per version; the
   * returned reason goes back to the control plane in the NACK.
   */
  private nodeUnknown(kept: string[], version: string): string {
    const reason = `node_unknown: the listener state names none of the listeners of node ${JSON.stringify(this.config.node.id)} and carries no placement for it (is it registered with the control plane?); its ${kept.length} listener(s) keep serving${kept.length > 0 ? ` (${kept.join(', ')})` : ''} until a state names them again or the sidecar drains`;
    if (this.unknownSince !== version) {
      this.unknownSince = version;
      this.logger.warn({ reason: 'node_unknown', version, kept, control_plane: this.ads?.counters.controlPlane ?? null }, `the control plane does not know node ${this.config.node.id}: keeping its last listeners`);
    }
    return reason;
  }

  /** A draining sidecar takes no more configuration: the ADS stream ends first. */
  override drain(timeoutMs?: number): ReturnType<ProxyServer['drain']> {
    this.ads?.stop();
    return super.drain(timeoutMs);
  }

  /** A listener the control plane removed or changed: it stops accepting now, its connections get the drain timeout. */
  private async retire(listener: Listener): Promise<void> {
    const timedOut = !(await settledWithin(listener.drain(), this.config.drainTimeoutMs));
    if (timedOut) listener.abortConnections();
    await listener.stop();
    const i = this.listeners.indexOf(listener);
    if (i !== -1) this.listeners.splice(i, 1);
    this.logger.info({ listener: listener.name, source: 'xds', timed_out: timedOut }, 'listener removed');
  }

  override async stop(): Promise<void> {
    this.ads?.stop();
    await super.stop();
    this.fileSource?.close();
    this.peerTls?.stop();
    this.resolver?.stop();
    if (this.vmManager?.closeOnStop) this.vmManager.client.close();
  }

  configDump(): unknown {
    const bound = new Map(this.boundListeners().map((l) => [l.name, l.bound]));
    return {
      state: this.state,
      node: this.config.node,
      identity: this.identityDump(),
      vsock: this.config.vsock,
      vmManager: this.config.vmManager && { ...this.config.vmManager, reachable: this.resolver ? !this.resolver.vmManagerDown : null, replica: this.vmManager?.client.replica ?? null, local: this.resolver?.local() ?? null },
      listeners: this.config.listeners.map((l) => ({ ...l, bound: bound.get(l.name) ?? [] })),
      clusters: this.config.clusters,
      xds: this.config.xds && { ...this.config.xds, connected: this.ads?.connected ?? false, control_plane: this.ads?.counters.controlPlane ?? null, reconnects: this.ads?.counters.reconnects ?? 0, types: this.ads?.state() ?? {}, applied: this.xds?.dump() ?? null },
      admin: this.adminAddress() ?? null,
      log: this.config.log,
      drainTimeoutMs: this.config.drainTimeoutMs,
      overload: { ...this.config.overload, state: this.overload.state },
      peerTls: this.config.peerTls,
    };
  }
}
