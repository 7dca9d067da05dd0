// From the mesh config and the VM registry to the Envoy resources a node is
// served, and from those to a versioned Snapshot. Pure: the same input always
// gives the same resources, bytes and versions (a restarted control plane
// serves the versions its sidecars already ACKed).
//
// Resource names:
// - per mesh service S: Cluster "S" (EDS over ADS), ClusterLoadAssignment "S",
//   Listener "S" (an API listener, what `xds:///S` asks LDS for) and its
//   RouteConfiguration "S" (every domain, prefix "/" to cluster S);
// - per mesh route R: RouteConfiguration "R";
// - for a node that is a registered VM: Listener "outbound|S" per service on
//   127.0.0.1:<outbound port>, and when its sidecar has a TCP inbound port and
//   it serves mesh services, Listener "inbound|<vm id>" with one filter chain
//   per served port P, to the STATIC Cluster "inbound|P" (127.0.0.1:P).

import {
  packAny,
  RESOURCE_TYPE_URLS,
  TYPE_URLS,
  unpackAny,
  type Any__Output,
  type Cluster,
  type ClusterLoadAssignment,
  type EnvoyMessageOutput,
  type Listener,
  type ResourceTypeUrl,
  type RouteConfiguration,
} from '../envoy/proto.js';
import type { LbEndpoint } from '../generated/envoy/envoy/config/endpoint/v3/LbEndpoint.js';
import type { Struct } from '../generated/envoy/google/protobuf/Struct.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import type { MeshConfig, MeshRoute, MeshService, Snapshot, VersionedResource } from './types.js';
import { resourceVersion, shortHash, typeVersion } from './snapshot-cache.js';

export { shortHash, typeVersion };

/** What the control plane knows of the registry (VmManagerApi.listVms without the revision). */
export interface RegistryView {
  vms: readonly VmRecord[];
  hypervisors: readonly HypervisorRecord[];
}

/** The Envoy messages of one node, by type. */
export interface MeshResources {
  clusters: Cluster[];
  endpoints: ClusterLoadAssignment[];
  listeners: Listener[];
  routes: RouteConfiguration[];
}

/** The key of the VM facts in LbEndpoint.metadata.filter_metadata. */
export const VSOCKMESH_METADATA_KEY = 'vsockmesh';
export const TCP_PROXY_FILTER = 'envoy.filters.network.tcp_proxy';
export const PROXY_PROTOCOL_LISTENER_FILTER = 'envoy.filters.listener.proxy_protocol';
export const ROUTER_FILTER = 'envoy.filters.http.router';

export const outboundListenerName = (service: string): string => `outbound|${service}`;
export const inboundListenerName = (vmId: string): string => `inbound|${vmId}`;
export const inboundClusterName = (port: number): string => `inbound|${port}`;

const ADS = { ads: {}, resource_api_version: 'V3' } as const;

const byKey =
  <T>(key: (t: T) => string | number) =>
  (a: T, b: T): number => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

function duration(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

const socketAddress = (address: string, port: number) => ({ socket_address: { address, port_value: port } });

function tcpProxyFilter(statPrefix: string, cluster: string) {
  return { name: TCP_PROXY_FILTER, typed_config: packAny(TYPE_URLS.TcpProxy, { stat_prefix: statPrefix, cluster }) };
}

function vmFacts(vm: VmRecord, hypervisor: HypervisorRecord): Struct {
  return {
    fields: {
      vm_id: { stringValue: vm.vmId },
      hypervisor_id: { stringValue: vm.hypervisorId },
      vsock_cid: { numberValue: vm.vsockCid },
      vsock_port: { numberValue: vm.sidecar?.vsockPort ?? 0 },
      tcp_port: { numberValue: vm.sidecar?.tcpPort ?? 0 },
      vsock_mode: { stringValue: hypervisor.vsockMode },
      relay_port: { numberValue: hypervisor.relayPort },
    },
  };
}

/** Cluster S: endpoints from EDS over the ADS stream. */
export function serviceCluster(service: MeshService): Cluster {
  return {
    name: service.name,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS },
    connect_timeout: duration(service.connectTimeoutMs),
    lb_policy: 'ROUND_ROBIN',
  };
}

/**
 * ClusterLoadAssignment S: every VM whose record lists S (at its first
 * address and its port for S), by VM id, in one locality. A VM without an
 * address is left out; a VM on a hypervisor the view lacks gets no VM facts
 * (its clients go plain TCP to the app).
 */
export function serviceAssignment(service: string, view: RegistryView): ClusterLoadAssignment {
  const hypervisors = new Map(view.hypervisors.map((h) => [h.hypervisorId, h]));
  const lbEndpoints: LbEndpoint[] = [];
  for (const vm of [...view.vms].sort(byKey((v) => v.vmId))) {
    const served = vm.services.find((s) => s.name === service);
    const address = vm.addresses[0];
    if (served === undefined || address === undefined) continue;
    const hypervisor = hypervisors.get(vm.hypervisorId);
    lbEndpoints.push({
      endpoint: { address: socketAddress(address, served.port) },
      ...(hypervisor !== undefined && { metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: vmFacts(vm, hypervisor) } } }),
    });
  }
  // gRPC xDS clients skip a locality without a weight.
  return { cluster_name: service, endpoints: lbEndpoints.length === 0 ? [] : [{ locality: {}, load_balancing_weight: { value: 1 }, lb_endpoints: lbEndpoints }] };
}

/** Listener S for gRPC xDS clients: an API listener whose HTTP connection manager takes RouteConfiguration S over ADS. */
export function apiListener(service: string): Listener {
  const hcm = packAny(TYPE_URLS.HttpConnectionManager, {
    stat_prefix: service,
    rds: { route_config_name: service, config_source: ADS },
    http_filters: [{ name: ROUTER_FILTER, typed_config: packAny(TYPE_URLS.Router, {}) }],
  });
  return { name: service, api_listener: { api_listener: hcm } };
}

/** RouteConfiguration S: any domain, every path to cluster S. */
export function serviceRouteConfiguration(service: string): RouteConfiguration {
  return {
    name: service,
    virtual_hosts: [{ name: service, domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: service } }] }],
  };
}

/** RouteConfiguration R: one virtual host with R's domains and routes (weighted clusters when a route splits). */
export function meshRouteConfiguration(route: MeshRoute): RouteConfiguration {
  return {
    name: route.name,
    virtual_hosts: [
      {
        name: route.name,
        domains: [...route.domains],
        routes: route.routes.map((r) => ({
          match: { prefix: r.prefix },
          route:
            r.clusters.length === 1
              ? { cluster: r.clusters[0]!.service }
              : { weighted_clusters: { clusters: r.clusters.map((c) => ({ name: c.service, weight: { value: c.weight } })) } },
        })),
      },
    ],
  };
}

/** Listener outbound|S: apps on the node connect to 127.0.0.1:<outbound port>, the sidecar proxies to cluster S. */
export function outboundListener(service: MeshService, local?: VmRecord): Listener {
  const name = outboundListenerName(service.name);
  return {
    name,
    address: socketAddress('127.0.0.1', service.outboundPort),
    traffic_direction: 'OUTBOUND',
    // Where this node runs, so its sidecar can tell which endpoints share its hypervisor without asking the VM manager.
    ...(local !== undefined && {
      metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: { fields: { vm_id: { stringValue: local.vmId }, hypervisor_id: { stringValue: local.hypervisorId } } } } },
    }),
    filter_chains: [{ filters: [tcpProxyFilter(name, service.name)] }],
  };
}

/** Listener inbound|<vm>: PROXY v2 hops on 0.0.0.0:<sidecar TCP port>, by destination port to cluster inbound|<port>. */
export function inboundListener(vmId: string, tcpPort: number, ports: readonly number[]): Listener {
  return {
    name: inboundListenerName(vmId),
    address: socketAddress('0.0.0.0', tcpPort),
    traffic_direction: 'INBOUND',
    listener_filters: [{ name: PROXY_PROTOCOL_LISTENER_FILTER }],
    filter_chains: ports.map((port) => ({
      name: inboundClusterName(port),
      filter_chain_match: { destination_port: { value: port } },
      filters: [tcpProxyFilter(inboundClusterName(port), inboundClusterName(port))],
    })),
  };
}

/** Cluster inbound|<port>: the local app at 127.0.0.1:<port>. */
export function inboundCluster(port: number, connectTimeoutMs: number): Cluster {
  const name = inboundClusterName(port);
  return {
    name,
    type: 'STATIC',
    connect_timeout: duration(connectTimeoutMs),
    lb_policy: 'ROUND_ROBIN',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ locality: {}, lb_endpoints: [{ endpoint: { address: socketAddress('127.0.0.1', port) } }] }],
    },
  };
}

/**
 * The node's own listeners and clusters (empty for a node that is not a
 * registered VM). An outbound listener whose port the VM itself listens on
 * (its sidecar's TCP port, or a port it serves) is left out: it could not bind.
 */
function nodeResources(services: readonly MeshService[], vm: VmRecord | undefined): Pick<MeshResources, 'clusters' | 'listeners'> {
  if (vm === undefined) return { clusters: [], listeners: [] };
  const byName = new Map(services.map((s) => [s.name, s]));
  // Served mesh ports, each with the connect timeout of the first (by name) service on it.
  const served = new Map<number, number>();
  for (const s of [...vm.services].sort(byKey((x) => x.name))) {
    const mesh = byName.get(s.name);
    if (mesh !== undefined && !served.has(s.port)) served.set(s.port, mesh.connectTimeoutMs);
  }
  const taken = new Set([...vm.services.map((s) => s.port), vm.sidecar?.tcpPort ?? 0]);
  const listeners = services.filter((s) => !taken.has(s.outboundPort)).map((s) => outboundListener(s, vm));
  const clusters: Cluster[] = [];
  const tcpPort = vm.sidecar?.tcpPort ?? 0;
  if (tcpPort > 0 && served.size > 0) {
    const ports = [...served.keys()].sort((a, b) => a - b);
    listeners.push(inboundListener(vm.vmId, tcpPort, ports));
    for (const port of ports) clusters.push(inboundCluster(port, served.get(port)!));
  }
  return { clusters, listeners };
}

/** Only what is particular to node `nodeId` (its listeners and inbound clusters); empty for a node that is not a registered VM. */
export function buildNodeResources(mesh: MeshConfig, view: RegistryView, nodeId: string): MeshResources {
  const services = [...mesh.services].sort(byKey((s) => s.name));
  const node = nodeResources(
    services,
    view.vms.find((vm) => vm.vmId === nodeId),
  );
  return { clusters: node.clusters, endpoints: [], listeners: node.listeners, routes: [] };
}

/** A node's snapshot from the shared one and its own part; shared resources are the same objects, not copies. */
export function mergeSnapshots(shared: Snapshot, own: Snapshot): Snapshot {
  // A type the node adds nothing to keeps the shared map itself (the ADS server encodes a shared map once for every node).
  const resources = Object.fromEntries(
    RESOURCE_TYPE_URLS.map((url) => [url, own.resources[url].size === 0 ? shared.resources[url] : new Map([...shared.resources[url], ...own.resources[url]])]),
  ) as Snapshot['resources'];
  const versions = Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, own.resources[url].size === 0 ? shared.versions[url] : typeVersion(resources[url])])) as Snapshot['versions'];
  return { resources, versions };
}

/** Every resource node `nodeId` is served, in a deterministic order. */
export function buildResources(mesh: MeshConfig, view: RegistryView, nodeId: string): MeshResources {
  const services = [...mesh.services].sort(byKey((s) => s.name));
  const node = nodeResources(
    services,
    view.vms.find((vm) => vm.vmId === nodeId),
  );
  return {
    clusters: [...services.map(serviceCluster), ...node.clusters],
    endpoints: services.map((s) => serviceAssignment(s.name, view)),
    listeners: [...services.map((s) => apiListener(s.name)), ...node.listeners],
    routes: [...services.map((s) => serviceRouteConfiguration(s.name)), ...[...mesh.routes].sort(byKey((r) => r.name)).map(meshRouteConfiguration)],
  };
}

function versioned(entries: Array<{ name: string; resource: Any__Output }>, kind: string): Map<string, VersionedResource> {
  const map = new Map<string, VersionedResource>();
  for (const { name, resource } of entries) {
    if (map.has(name)) throw new Error(`toSnapshot: two ${kind} resources are named "${name}"`);
    map.set(name, { name, version: resourceVersion(resource), resource });
  }
  return map;
}

/** Packs every resource into an Any and versions it (per resource: a hash of its bytes; per type: a hash of the name:version pairs). */
export function toSnapshot(resources: MeshResources): Snapshot {
  const byType: Record<ResourceTypeUrl, Map<string, VersionedResource>> = {
    [TYPE_URLS.Cluster]: versioned(
      resources.clusters.map((c) => ({ name: c.name ?? '', resource: packAny(TYPE_URLS.Cluster, c) })),
      'Cluster',
    ),
    [TYPE_URLS.ClusterLoadAssignment]: versioned(
      resources.endpoints.map((e) => ({ name: e.cluster_name ?? '', resource: packAny(TYPE_URLS.ClusterLoadAssignment, e) })),
      'ClusterLoadAssignment',
    ),
    [TYPE_URLS.Listener]: versioned(
      resources.listeners.map((l) => ({ name: l.name ?? '', resource: packAny(TYPE_URLS.Listener, l) })),
      'Listener',
    ),
    [TYPE_URLS.RouteConfiguration]: versioned(
      resources.routes.map((r) => ({ name: r.name ?? '', resource: packAny(TYPE_URLS.RouteConfiguration, r) })),
      'RouteConfiguration',
    ),
  };
  const versions = Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, typeVersion(byType[url])])) as Record<ResourceTypeUrl, string>;
  return { resources: byType, versions };
}

function decodeAll<U extends ResourceTypeUrl>(snapshot: Snapshot, typeUrl: U, problems: string[], kind: string) {
  const out: Array<{ name: string; message: EnvoyMessageOutput<U> }> = [];
  for (const r of snapshot.resources[typeUrl].values()) {
    try {
      out.push({ name: r.name, message: unpackAny(r.resource, typeUrl) });
    } catch (err) {
      problems.push(`${kind} "${r.name}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return out;
}

/**
 * What is wrong with a snapshot before it is served: a route to a cluster not
 * in it, an EDS cluster without its ClusterLoadAssignment, a listener's TCP
 * proxy to a missing cluster, an API listener's RDS to a missing route
 * configuration. Empty: consistent.
 */
export function checkConsistency(snapshot: Snapshot): string[] {
  const problems: string[] = [];
  const clusters = snapshot.resources[TYPE_URLS.Cluster];
  const assignments = snapshot.resources[TYPE_URLS.ClusterLoadAssignment];
  const routes = snapshot.resources[TYPE_URLS.RouteConfiguration];

  for (const { name, message } of decodeAll(snapshot, TYPE_URLS.Cluster, problems, 'cluster')) {
    if (message.type !== 'EDS') continue;
    const edsName = message.eds_cluster_config?.service_name || name;
    if (!assignments.has(edsName)) problems.push(`cluster "${name}": EDS cluster has no ClusterLoadAssignment "${edsName}"`);
  }

  for (const { name, message } of decodeAll(snapshot, TYPE_URLS.RouteConfiguration, problems, 'route_configuration')) {
    message.virtual_hosts.forEach((host, i) =>
      host.routes.forEach((route, j) => {
        const action = route.route;
        const targets =
          action?.cluster_specifier === 'weighted_clusters'
            ? (action.weighted_clusters?.clusters ?? []).map((c) => c.name)
            : action?.cluster_specifier === 'cluster'
              ? [action.cluster ?? '']
              : [];
        for (const target of targets) {
          if (!clusters.has(target)) problems.push(`route_configuration "${name}": virtual_hosts[${i}].routes[${j}]: cluster "${target}" is not in the snapshot`);
        }
      }),
    );
  }

  for (const { name, message } of decodeAll(snapshot, TYPE_URLS.Listener, problems, 'listener')) {
    const api = message.api_listener?.api_listener;
    if (api) {
      try {
        const hcm = unpackAny(api, TYPE_URLS.HttpConnectionManager);
        const rds = hcm.rds?.route_config_name;
        if (hcm.route_specifier === 'rds' && rds !== undefined && !routes.has(rds)) {
          problems.push(`listener "${name}": api_listener: route configuration "${rds}" is not in the snapshot`);
        }
      } catch (err) {
        problems.push(`listener "${name}": api_listener: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    message.filter_chains.forEach((chain, i) =>
      chain.filters.forEach((filter, j) => {
        if (filter.typed_config?.type_url !== TYPE_URLS.TcpProxy) return;
        const at = `listener "${name}": filter_chains[${i}].filters[${j}]`;
        try {
          const cluster = unpackAny(filter.typed_config, TYPE_URLS.TcpProxy).cluster;
          if (cluster !== undefined && !clusters.has(cluster)) problems.push(`${at}: tcp_proxy cluster "${cluster}" is not in the snapshot`);
        } catch (err) {
          problems.push(`${at}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }),
    );
  }
  return problems;
}
