// What the sidecar does with a validated xDS response: clusters, endpoints and
// listeners become the same objects a static config makes. Listeners are
// opened before anything is replaced (a port that cannot be bound NACKs the
// whole response and keeps the old listeners); removed or changed listeners
// drain in the background. Endpoints carry the VM facts; whether one goes over
// vsock follows from our own placement, which the control plane sends with
// our outbound listeners.

import { parseSidecarConfig } from './config/load.js';
import type { EndpointConfig, InboundListenerConfig, OutboundListenerConfig } from './config/types.js';
import { InboundListener, type InboundListenerOptions } from './listeners/inbound.js';
import type { Listener } from './listeners/listener.js';
import { OutboundListener, type OutboundListenerOptions } from './listeners/outbound.js';
import { HOST_CID } from './resolve/select.js';
import { Cluster } from './upstream/cluster.js';
import type { XdsCluster, XdsClusterLoadAssignment, XdsEndpoint, XdsListener, XdsRouteConfig } from '../xds/control-plane/types.js';

export interface Placement {
  vmId: string;
  hypervisorId: string;
}

/**
 * How a sidecar reaches an endpoint: over vsock when the endpoint's VM shares
 * our hypervisor and has a vsock inbound, else TCP to its sidecar (also the
 * vsock fallback), else straight to the app. Pure.
 */
export function endpointConfig(e: XdsEndpoint, local: Placement | null): EndpointConfig {
  const vm = e.vm;
  const base: EndpointConfig = { address: e.address, port: e.port, ...(vm && { vmId: vm.vmId }) };
  if (!vm) return base;
  const peer = vm.tcpPort > 0 ? { address: e.address, port: vm.tcpPort } : undefined;
  const sameHypervisor = local !== null && local.hypervisorId === vm.hypervisorId && local.vmId !== vm.vmId;
  let vsock: EndpointConfig['vsock'];
  if (sameHypervisor && vm.vsockPort > 0) {
    vsock =
      vm.vsockMode === 'host-relay'
        ? { mode: 'host-relay', cid: vm.vsockCid, port: vm.vsockPort, relay: { cid: HOST_CID, port: vm.relayPort } }
        : { mode: 'direct', cid: vm.vsockCid, port: vm.vsockPort };
  }
  return { ...base, ...(peer && { peer }), ...(vsock && { vsock }) };
}

/** Listener configs with the same defaults as a config file's, by running them through the config schema. */
function listenerConfig(nodeId: string, l: Exclude<XdsListener, { kind: 'api' }>): OutboundListenerConfig | InboundListenerConfig {
  // xDS names (`outbound|web`) are wider than config-file names: validate with stand-ins, then put the real names back.
  const raw =
    l.kind === 'outbound'
      ? { kind: 'outbound', name: 'xds', addresses: [l.address], port: l.port, cluster: 'xds' }
      : { kind: 'inbound', name: 'xds', addresses: [l.address], port: l.port, ports: l.ports };
  const clusters = l.kind === 'outbound' ? [{ name: 'xds', endpoints: [{ address: '127.0.0.1', port: 1 }] }] : [];
  const parsed = parseSidecarConfig({ node: { id: nodeId }, listeners: [raw], clusters }, `xDS listener "${l.name}"`).listeners[0]!;
  return parsed.kind === 'outbound' && l.kind === 'outbound' ? { ...parsed, name: l.name, cluster: l.cluster } : { ...parsed, name: l.name };
}

export interface XdsApplierHost {
  nodeId: string;
  /** Starts `listener` and adds it to the server's listeners; throws if it cannot bind. */
  addListener(listener: Listener): Promise<void>;
  /** Drains `listener` (bounded by the drain timeout), stops it and forgets it. */
  retireListener(listener: Listener): void;
  outboundOptions: OutboundListenerOptions;
  inboundOptions: InboundListenerOptions;
  listenerContext: ConstructorParameters<typeof OutboundListener>[2];
}

export class XdsApplier {
  readonly clusters = new Map<string, Cluster>();
  private readonly clusterSpecs = new Map<string, XdsCluster>();
  private readonly assignments = new Map<string, XdsEndpoint[]>();
  private readonly listeners = new Map<string, { spec: XdsListener; listener: Listener }>();
  readonly routes = new Map<string, XdsRouteConfig>();
  private local: Placement | null = null;

  constructor(private readonly host: XdsApplierHost) {}

  /** CDS: the whole set of clusters. Returns the EDS names to subscribe to. */
  applyClusters(clusters: XdsCluster[]): string[] {
    const names = new Set(clusters.map((c) => c.name));
    for (const c of clusters) {
      this.clusterSpecs.set(c.name, c);
      this.cluster(c.name).update(this.clusterConfig(c));
    }
    for (const name of [...this.clusterSpecs.keys()]) {
      if (names.has(name)) continue;
      this.clusterSpecs.delete(name);
      // A listener may still name it: it refuses connections (no endpoint) until a cluster comes back.
      this.clusters.get(name)?.update({ name, connectTimeoutMs: 5_000, endpoints: [] });
    }
    return clusters.flatMap((c) => (c.kind === 'eds' ? [c.edsServiceName] : []));
  }

  /** EDS: the assignments of the subscribed clusters. */
  applyAssignments(assignments: XdsClusterLoadAssignment[]): void {
    for (const a of assignments) this.assignments.set(a.clusterName, a.endpoints);
    this.refreshEndpoints();
  }

  /** LDS: the whole set of listeners. Opens new ones first; throws (→ NACK) if one cannot be opened, leaving everything as it was. */
  async applyListeners(listeners: XdsListener[]): Promise<void> {
    const local = listeners.find((l): l is Extract<XdsListener, { kind: 'outbound' }> => l.kind === 'outbound' && l.local !== undefined)?.local ?? null;
    if (local?.vmId !== this.local?.vmId || local?.hypervisorId !== this.local?.hypervisorId) {
      this.local = local;
      this.refreshEndpoints();
    }
    const wanted = listeners.filter((l): l is Exclude<XdsListener, { kind: 'api' }> => l.kind !== 'api');
    const changed = wanted.filter((l) => !sameListener(this.listeners.get(l.name)?.spec, l));
    const removed = [...this.listeners.keys()].filter((name) => !wanted.some((l) => l.name === name));
    // Listeners being replaced give up their ports first: their listen sockets close now, their connections drain.
    const retiring = [...changed.map((l) => this.listeners.get(l.name)).filter((x) => x !== undefined), ...removed.map((n) => this.listeners.get(n)!)];
    const started: Array<{ spec: XdsListener; listener: Listener }> = [];
    try {
      for (const spec of changed) {
        const config = listenerConfig(this.host.nodeId, spec);
        const listener =
          config.kind === 'outbound'
            ? new OutboundListener(config, this.cluster(config.cluster), this.host.listenerContext, this.host.outboundOptions)
            : new InboundListener(config, this.host.listenerContext, this.host.inboundOptions);
        const samePort = retiring.find((r) => 'port' in r.spec && r.spec.port === (spec as { port: number }).port);
        if (samePort) {
          this.host.retireListener(samePort.listener);
          this.listeners.delete(samePort.spec.name);
        }
        await this.host.addListener(listener);
        started.push({ spec, listener });
      }
    } catch (err) {
      for (const s of started) this.host.retireListener(s.listener);
      throw err;
    }
    for (const r of retiring) {
      if (this.listeners.get(r.spec.name) === r) {
        this.host.retireListener(r.listener);
        this.listeners.delete(r.spec.name);
      }
    }
    for (const s of started) this.listeners.set(s.spec.name, s);
  }

  /** RDS: kept for the HTTP layer and shown in /config_dump. */
  applyRoutes(routes: XdsRouteConfig[]): void {
    for (const r of routes) this.routes.set(r.name, r);
  }

  /** Route configurations the listeners name (API listeners use their own name). */
  routeNames(listeners: XdsListener[]): string[] {
    return listeners.filter((l) => l.kind === 'api').map((l) => l.name);
  }

  dump(): unknown {
    return {
      local: this.local,
      clusters: [...this.clusters.values()].map((c) => c.config),
      listeners: [...this.listeners.values()].map((l) => ({ ...l.spec, bound: l.listener.addresses() })),
      routes: [...this.routes.values()],
    };
  }

  private cluster(name: string): Cluster {
    let c = this.clusters.get(name);
    if (!c) {
      c = new Cluster({ name, connectTimeoutMs: 5_000, endpoints: [] });
      this.clusters.set(name, c);
    }
    return c;
  }

  private clusterConfig(c: XdsCluster): Cluster['config'] {
    const endpoints = c.kind === 'eds' ? (this.assignments.get(c.edsServiceName) ?? []) : c.endpoints;
    return { name: c.name, connectTimeoutMs: c.connectTimeoutMs, endpoints: endpoints.map((e) => endpointConfig(e, this.local)) };
  }

  private refreshEndpoints(): void {
    for (const spec of this.clusterSpecs.values()) this.cluster(spec.name).update(this.clusterConfig(spec));
  }
}

function sameListener(a: XdsListener | undefined, b: XdsListener): boolean {
  if (a === undefined) return false;
  const { local: _a, ...restA } = a as { local?: unknown };
  const { local: _b, ...restB } = b as { local?: unknown };
  void _a;
  void _b;
  return JSON.stringify(restA) === JSON.stringify(restB);
}
