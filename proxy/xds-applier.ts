// What the sidecar does with the valid resources of an xDS response:
// clusters, endpoints and listeners become the same objects a static config
// makes. Each resource is applied or refused on its own (as Envoy and gRPC
// do): a listener that cannot be opened is refused and its last good version
// keeps serving while the other listeners of the response are applied; a
// resource the response carries but validation refused is kept at its last
// good version, never taken as removed. Removed or changed listeners drain in
// the background; a cluster CDS removed goes once no listener names it.
// Endpoints keep the VM facts; whether one goes over vsock is decided per
// connection (upstream/select.ts) from our placement, which the control plane
// sends with our outbound listeners (`placement`, one source of it).
// A listener state that names none of our listeners, and not our placement,
// after the control plane had told us our placement, means the control plane
// does not know this node (deregistered, or restarted from an older
// inventory): nothing is removed.
// An HTTP outbound listener routes by a route configuration that comes over
// RDS: until it is there the listener warms (is not opened, its previous
// version serves on), as in Envoy; a new version of the configuration is
// swapped into the running listener, which keeps its connections.

import { inboundListenerConfig, localPort, outboundListenerConfig } from './config/listener-defaults.js';
import type { InboundListenerConfig, OutboundListenerConfig } from './config/types.js';
import { InboundListener, type InboundListenerOptions } from './listeners/inbound.js';
import type { Listener } from './listeners/listener.js';
import { OutboundListener, type OutboundListenerOptions } from './listeners/outbound.js';
import { Cluster, type ClusterSettings } from './upstream/cluster.js';
import { factsFromXds, type LocalPlacement } from './upstream/endpoint-facts.js';
import { inboundPolicies, type InboundPolicies, type RbacFilter } from './policy/rbac.js';
import type { Refusal, StateRefusals, XdsCluster, XdsClusterLoadAssignment, XdsEndpoint, XdsListener, XdsRouteConfig } from './dynamic/types.js';
import type { HttpOutboundListener } from './http/listener.js';
import { outboundListenerName } from './dynamic/names.js';
import { warmInvalidate } from './native/warm.js';

/** The listener config of an xDS listener: what it says, the rest from the defaults a config file's listener gets. */
function listenerConfig(l: Exclude<XdsListener, { kind: 'api' }>, routes: ReadonlyMap<string, XdsRouteConfig>): OutboundListenerConfig | InboundListenerConfig {
  switch (l.kind) {
    case 'outbound':
      return outboundListenerConfig({ name: l.name, addresses: [l.address], port: l.port, cluster: l.cluster });
    case 'http_outbound':
      return outboundListenerConfig({ name: l.name, addresses: [l.address], port: l.port, cluster: '', http: { routes: routes.get(l.routeConfigName)! } });
    case 'inbound':
      return inboundListenerConfig({ name: l.name, addresses: [l.address], port: l.port, ports: l.ports.map((port) => ({ ...localPort(port), ...(l.peerModes?.[port] && { peerMode: l.peerModes[port] }) })) });
  }
}

type HttpSpec = Extract<XdsListener, { kind: 'http_outbound' }>;

const NONE: StateRefusals = { names: new Set(), unnamed: false };

export interface ListenersApplied {
  /** Listeners of the state that could not be opened; their last good version, if any, keeps serving. */
  refused: Refusal[];
  /** The state names none of our listeners although the control plane told us our placement before: `kept` serve on. */
  nodeUnknown?: { kept: string[] };
}

export interface XdsApplierHost {
  /** Starts `listener` and adds it to the server's listeners; throws if it cannot bind. */
  addListener(listener: Listener): Promise<void>;
  /** Drains `listener` (bounded by the drain timeout), stops it and forgets it. */
  retireListener(listener: Listener): void;
  /** The authorization policies of the inbound listeners in service (after every listener state). */
  applyPolicies(policies: InboundPolicies): void;
  outboundOptions: OutboundListenerOptions;
  inboundOptions: InboundListenerOptions;
  listenerContext: ConstructorParameters<typeof OutboundListener>[2];
}

type ServedListener = { spec: Exclude<XdsListener, { kind: 'api' }>; listener: Listener };

export class XdsApplier {
  readonly clusters = new Map<string, Cluster>();
  private readonly clusterSpecs = new Map<string, XdsCluster>();
  private readonly assignments = new Map<string, XdsEndpoint[]>();
  private readonly listeners = new Map<string, ServedListener>();
  /** HTTP listeners waiting for their route configuration (a previous version, if any, serves meanwhile). */
  private readonly warming = new Map<string, HttpSpec>();
  /** API listeners (gRPC clients'): not served, but their route configurations are subscribed. */
  private apiListeners = new Set<string>();
  readonly routes = new Map<string, XdsRouteConfig>();
  private local: LocalPlacement | null = null;
  private known = false;
  /** Counts the states applied: what is derived from clusters, listeners and routes is made again when it moves. */
  generation = 0;

  constructor(private readonly host: XdsApplierHost) {}

  /** A pushed state lands: what was derived from the last one is made again (and the warm path's decisions die) before it takes effect. */
  private changed(): void {
    warmInvalidate();
    this.generation++;
  }

  /** Our placement as the control plane last told it (null: not yet); the same object until it changes. */
  get placement(): LocalPlacement | null {
    return this.local;
  }

  /** Whether the control plane knows this node: it has told us our placement, and its latest listener state did not leave out all our listeners. */
  get nodeKnown(): boolean {
    return this.known;
  }

  /** CDS: the whole set of clusters. Returns the EDS names to subscribe to (a refused cluster's last good one included). */
  applyClusters(clusters: XdsCluster[], refused: StateRefusals = NONE): string[] {
    this.changed();
    const present = new Set([...clusters.map((c) => c.name), ...refused.names]);
    for (const c of clusters) {
      this.clusterSpecs.set(c.name, c);
      this.update(c);
    }
    if (!refused.unnamed) for (const name of [...this.clusterSpecs.keys()]) if (!present.has(name)) this.clusterSpecs.delete(name);
    this.free();
    return [...this.edsNames()];
  }

  /** EDS: the assignments of the subscribed clusters (one for a cluster we no longer have, a response that crossed our unsubscribe, is dropped). */
  applyAssignments(assignments: XdsClusterLoadAssignment[]): void {
    warmInvalidate();
    const used = this.edsNames();
    for (const a of assignments) if (used.has(a.clusterName)) this.assignments.set(a.clusterName, a.endpoints);
    this.refreshEndpoints();
  }

  /**
   * LDS: the whole set of listeners. Each new or changed listener is opened
   * on its own; one that cannot be opened is refused and its previous
   * version (if any) keeps serving. Listeners the state leaves out drain,
   * unless the state does not know this node (see ListenersApplied).
   */
  async applyListeners(state: XdsListener[], refused: StateRefusals = NONE): Promise<ListenersApplied> {
    this.changed();
    const placement = state.find((l): l is Extract<XdsListener, { kind: 'outbound' | 'http_outbound' }> => (l.kind === 'outbound' || l.kind === 'http_outbound') && l.local !== undefined)?.local;
    const all = state.filter((l): l is ServedListener['spec'] => l.kind !== 'api');
    // A (new or changed) HTTP listener whose routes have not come yet warms instead.
    const warm = (l: ServedListener['spec']): l is HttpSpec => l.kind === 'http_outbound' && !this.routes.has(l.routeConfigName) && !sameListener(this.listeners.get(l.name)?.spec, l);
    for (const name of [...this.warming.keys()]) if (!all.some((l) => l.name === name) && !refused.names.has(name)) this.warming.delete(name);
    for (const l of all) if (warm(l)) this.warming.set(l.name, l);
    else this.warming.delete(l.name);
    const wanted = all.filter((l) => !this.warming.has(l.name));
    const present = new Set([...state.map((l) => l.name), ...refused.names]);
    const left = [...this.listeners.keys()].filter((name) => !present.has(name));
    // Unknown: we were placed before, and the state has listeners (the mesh has services) but none of ours and no placement.
    // An empty state is taken as it comes: every cluster is gone with it, a kept listener could reach nothing.
    const unknown = placement === undefined && this.local !== null && present.size > 0 && left.length === this.listeners.size;
    if (placement && (placement.vmId !== this.local?.vmId || placement.hypervisorId !== this.local.hypervisorId)) this.local = placement;
    this.known = this.local !== null && !unknown;
    this.apiListeners = new Set([...state.filter((l) => l.kind === 'api').map((l) => l.name), ...[...this.apiListeners].filter((n) => refused.names.has(n))]);
    const removed = unknown || refused.unnamed ? [] : left;
    const result: ListenersApplied = { refused: await this.openListeners(wanted.filter((l) => !sameListener(this.listeners.get(l.name)?.spec, l)), removed) };
    for (const spec of wanted) this.updatePeerModes(spec);
    for (const name of removed) this.retire(name);
    // A listener whose policies alone changed keeps serving (and its connections): the policies are re-checked instead.
    for (const spec of wanted) {
      const served = this.listeners.get(spec.name);
      if (served && sameListener(served.spec, spec)) served.spec = spec;
    }
    this.host.applyPolicies(this.inboundPolicies());
    this.free();
    if (unknown) result.nodeUnknown = { kept: left.sort() };
    return result;
  }

  /**
   * RDS: the route configurations the listeners name (one that crossed our
   * unsubscribe is dropped), shown in /config_dump. A running HTTP listener
   * takes its new version in place; a warming one opens now that its
   * configuration is here. Returns the warmed listeners that could not be opened.
   */
  async applyRoutes(routes: XdsRouteConfig[]): Promise<Refusal[]> {
    this.changed();
    const named = new Set(this.routeNames());
    for (const r of routes) if (named.has(r.name)) this.routes.set(r.name, r);
    for (const { spec, listener } of this.listeners.values()) {
      if (spec.kind === 'http_outbound' && this.http && listener instanceof this.http) listener.setRoutes(this.routes.get(spec.routeConfigName)!);
    }
    const warmed = [...this.warming.values()].filter((l) => this.routes.has(l.routeConfigName));
    for (const l of warmed) this.warming.delete(l.name);
    const refused = await this.openListeners(warmed, []);
    this.free();
    return refused;
  }

  /** Route configurations the listeners name (API listeners use their own name), warming ones' included. */
  routeNames(): string[] {
    const http = [...[...this.listeners.values()].map((l) => l.spec), ...this.warming.values()].flatMap((l) => (l.kind === 'http_outbound' ? [l.routeConfigName] : []));
    return [...new Set([...this.apiListeners, ...http])];
  }

  /** The route configuration the HTTP listener of `service` (outbound|<service>) runs, if it has one. */
  serviceRoutes(service: string): XdsRouteConfig | undefined {
    const spec = this.listeners.get(outboundListenerName(service))?.spec;
    return spec?.kind === 'http_outbound' ? this.routes.get(spec.routeConfigName) : undefined;
  }

  /** The RBAC of the inbound listeners in service, by destination port (filters of two listeners on one port both apply). */
  private inboundPolicies(): InboundPolicies {
    const byPort = new Map<number, RbacFilter[]>();
    for (const { spec } of this.listeners.values()) {
      if (spec.kind !== 'inbound') continue;
      for (const { port, filters } of spec.rbac) byPort.set(port, [...(byPort.get(port) ?? []), ...filters]);
    }
    return inboundPolicies([...byPort].map(([port, filters]) => ({ port, filters })));
  }

  dump(): unknown {
    return {
      local: this.local,
      nodeKnown: this.known,
      clusters: [...this.clusters.values()].map((c) => ({ ...c.settings, endpoints: c.endpoints })),
      listeners: [...[...this.listeners.values()].map((l) => ({ ...l.spec, bound: l.listener.addresses() })), ...[...this.warming.values()].map((l) => ({ ...l, warming: true, bound: [] }))],
      routes: [...this.routes.values()],
    };
  }

  /**
   * Opens `changed` one by one. A listener whose port an old listener holds
   * (a previous version, or one being removed) takes the port over; a
   * listener that then fails to open gets its own previous version back.
   */
  private async openListeners(changed: Array<ServedListener['spec']>, removed: string[]): Promise<Refusal[]> {
    const refusals: Refusal[] = [];
    const giving = new Set([...changed.map((l) => l.name), ...removed]);
    const closedEarly = new Map<string, ServedListener['spec']>();
    for (const spec of changed) {
      const holder = [...this.listeners.values()].find((l) => giving.has(l.spec.name) && l.spec.port === spec.port);
      if (holder) {
        closedEarly.set(holder.spec.name, holder.spec);
        this.retire(holder.spec.name);
      }
      try {
        const listener = await this.open(spec);
        this.retire(spec.name);
        this.listeners.set(spec.name, { spec, listener });
      } catch (err) {
        let error = (err as Error).message;
        const previous = closedEarly.get(spec.name);
        if (previous) {
          try {
            this.listeners.set(spec.name, { spec: previous, listener: await this.open(previous) });
            error += ' (its previous version was opened again)';
          } catch (again) {
            error += ` (its previous version could not be opened again either: ${(again as Error).message})`;
          }
        }
        refusals.push({ name: spec.name, error });
      }
    }
    return refusals;
  }

  /** Peer modes change in place: the listener keeps its port and its connections, new connections get the new modes. */
  private updatePeerModes(spec: ServedListener['spec']): void {
    const served = this.listeners.get(spec.name);
    if (served === undefined || spec.kind !== 'inbound' || served.spec === spec || !sameListener(served.spec, spec) || !(served.listener instanceof InboundListener)) return;
    served.listener.peerModes.set(spec.peerModes);
    served.spec = spec;
  }

  /** The HTTP listener's class, loaded with the first HTTP listener pushed (an L4-only sidecar never loads the HTTP stack). */
  private http: typeof HttpOutboundListener | undefined;

  private async open(spec: ServedListener['spec']): Promise<Listener> {
    const config = listenerConfig(spec, this.routes);
    if (config.kind === 'outbound' && config.http) this.http ??= (await import('./http/listener.js')).HttpOutboundListener;
    const listener =
      config.kind === 'inbound'
        ? new InboundListener(config, this.host.listenerContext, this.host.inboundOptions)
        : config.http
          ? new this.http!(config, config.http.routes, this.clusters, this.host.listenerContext, this.host.outboundOptions)
          : new OutboundListener(config, this.cluster(config.cluster), this.host.listenerContext, this.host.outboundOptions);
    await this.host.addListener(listener);
    return listener;
  }

  private retire(name: string): void {
    const served = this.listeners.get(name);
    if (!served) return;
    this.listeners.delete(name);
    this.host.retireListener(served.listener);
  }

  /**
   * A cluster CDS no longer has goes once no listener names it; until then it
   * has no endpoint (its listener refuses connections: no_endpoint) or gets
   * its endpoints back if CDS brings it back. Assignments go with their
   * clusters, route configurations with their listeners.
   */
  private free(): void {
    const named = new Set([...this.listeners.values()].flatMap((l) => (l.spec.kind === 'outbound' ? [l.spec.cluster] : [])));
    const routeNames = new Set(this.routeNames());
    for (const [name, cluster] of this.clusters) {
      if (this.clusterSpecs.has(name)) continue;
      if (named.has(name)) cluster.update(cluster.settings, []);
      else this.clusters.delete(name);
    }
    const used = this.edsNames();
    for (const name of [...this.assignments.keys()]) if (!used.has(name)) this.assignments.delete(name);
    for (const name of [...this.routes.keys()]) if (!routeNames.has(name)) this.routes.delete(name);
  }

  private edsNames(): Set<string> {
    return new Set([...this.clusterSpecs.values()].flatMap((c) => (c.kind === 'eds' ? [c.edsServiceName] : [])));
  }

  private cluster(name: string): Cluster {
    let c = this.clusters.get(name);
    if (!c) {
      c = new Cluster({ name, connectTimeoutMs: 5_000 }, []);
      this.clusters.set(name, c);
    }
    return c;
  }

  private update(c: XdsCluster): void {
    const endpoints = c.kind === 'eds' ? (this.assignments.get(c.edsServiceName) ?? []) : c.endpoints;
    const settings: ClusterSettings = { name: c.name, connectTimeoutMs: c.connectTimeoutMs, ...(c.lbPolicy && { lbPolicy: c.lbPolicy }) };
    this.cluster(c.name).update(settings, endpoints.map(factsFromXds));
  }

  private refreshEndpoints(): void {
    for (const spec of this.clusterSpecs.values()) this.update(spec);
  }
}

/** Whether two versions of a listener serve alike: placement, an inbound listener's peer modes and policies change without reopening it. */
function sameListener(a: XdsListener | undefined, b: XdsListener): boolean {
  if (a === undefined) return false;
  const { local: _a, rbac: _ra, peerModes: _ma, ...restA } = a as { local?: unknown; rbac?: unknown; peerModes?: unknown };
  const { local: _b, rbac: _rb, peerModes: _mb, ...restB } = b as { local?: unknown; rbac?: unknown; peerModes?: unknown };
  void [_a, _b, _ra, _rb, _ma, _mb];
  return JSON.stringify(restA) === JSON.stringify(restB);
}
