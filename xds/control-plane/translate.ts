// From the mesh config and the VM registry to the Envoy resources the
// control plane serves. Pure: the same input always gives the same resources
// (in a deterministic order), hence the same bytes and versions.
//
// Resource names (proxy/dynamic/names.ts):
// - shared by every node, per mesh service S: Cluster "S" (EDS over ADS),
//   ClusterLoadAssignment "S", Listener "S" (an API listener, what `xds:///S`
//   asks LDS for) and its RouteConfiguration "S" (every domain, prefix "/" to
//   cluster S); per mesh route R: RouteConfiguration "R";
// - a node's own, when it is a registered VM: Listener "outbound|S" per
//   service on 127.0.0.1:<outbound port>, and when its sidecar has a TCP
//   inbound port and it serves mesh services, Listener "inbound|<vm id>" with
//   filter chains per served port P (one per transport protocol its peer
//   mode accepts: peer-authentication.ts), to the STATIC Cluster
//   "inbound|P" (127.0.0.1:P). Endpoints carry their port's mode too
//   (`peer_mode`), so a client knows whether to originate TLS.

import { packAny, TYPE_URLS, type Cluster, type ClusterLoadAssignment, type Listener, type RouteConfiguration } from '../envoy/proto.js';
import { PROXY_PROTOCOL_LISTENER_FILTER, ROUTER_FILTER, TCP_PROXY_FILTER, VSOCKMESH_METADATA_KEY } from '../envoy/names.js';
import type { LbEndpoint } from '../generated/envoy/envoy/config/endpoint/v3/LbEndpoint.js';
import type { Struct } from '../generated/envoy/google/protobuf/Struct.js';
import { inboundClusterName, inboundListenerName, outboundListenerName } from '../../proxy/dynamic/names.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import { makeSnapshot, type Snapshot } from './snapshot.js';
import type { MeshConfig, MeshPolicy, MeshRoute, MeshService, PeerAuthentication } from './types.js';
import { portMode, transportProtocols } from './peer-authentication.js';
import type { PeerTlsMode } from '../../proxy/peer-tls/peer-policy.js';
import { rbacFilters } from './translate-rbac.js';

/** What the control plane knows of the registry (VmManagerApi.listVms without the revision). */
export interface RegistryView {
  vms: readonly VmRecord[];
  hypervisors: readonly HypervisorRecord[];
}

/** Envoy messages by type. */
export interface MeshResources {
  clusters: Cluster[];
  endpoints: ClusterLoadAssignment[];
  listeners: Listener[];
  routes: RouteConfiguration[];
}

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
export function serviceAssignment(service: string, view: RegistryView, peerAuthentication: readonly PeerAuthentication[] = []): ClusterLoadAssignment {
  const hypervisors = new Map(view.hypervisors.map((h) => [h.hypervisorId, h]));
  const lbEndpoints: LbEndpoint[] = [];
  for (const vm of [...view.vms].sort(byKey((v) => v.vmId))) {
    const served = vm.services.find((s) => s.name === service);
    const address = vm.addresses[0];
    if (served === undefined || address === undefined) continue;
    const hypervisor = hypervisors.get(vm.hypervisorId);
    const facts = hypervisor && vmFacts(vm, hypervisor);
    if (facts) facts.fields!.peer_mode = { stringValue: portMode(peerAuthentication, vm, served.port) };
    lbEndpoints.push({
      endpoint: { address: socketAddress(address, served.port) },
      ...(facts !== undefined && { metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: facts } } }),
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
export function outboundListener(service: MeshService, local: VmRecord): Listener {
  const name = outboundListenerName(service.name);
  return {
    name,
    address: socketAddress('127.0.0.1', service.outboundPort),
    traffic_direction: 'OUTBOUND',
    // Where this node runs, so its sidecar can tell which endpoints share its hypervisor without asking the VM manager.
    metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: { fields: { vm_id: { stringValue: local.vmId }, hypervisor_id: { stringValue: local.hypervisorId } } } } },
    filter_chains: [{ filters: [tcpProxyFilter(name, service.name)] }],
  };
}

/**
 * Listener inbound|<vm>: PROXY v2 hops on 0.0.0.0:<sidecar TCP port>, by
 * destination port (and TLS or plain, as its peer mode says) to cluster
 * inbound|<port>, each chain with the RBAC filters of the policies that select
 * the port (translate-rbac.ts) before its TCP proxy.
 */
export function inboundListener(
  vm: VmRecord,
  tcpPort: number,
  ports: ReadonlyArray<{ port: number; mode: PeerTlsMode }>,
  policies: readonly MeshPolicy[] = [],
): Listener {
  return {
    name: inboundListenerName(vm.vmId),
    address: socketAddress('0.0.0.0', tcpPort),
    traffic_direction: 'INBOUND',
    listener_filters: [{ name: PROXY_PROTOCOL_LISTENER_FILTER }],
    filter_chains: ports.flatMap(({ port, mode }) =>
      transportProtocols(mode).map((transport) => ({
        name: `${inboundClusterName(port)}|${transport}`,
        filter_chain_match: { destination_port: { value: port }, transport_protocol: transport },
        filters: [...rbacFilters(policies, vm, port, inboundClusterName(port)), tcpProxyFilter(inboundClusterName(port), inboundClusterName(port))],
      })),
    ),
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

const servicesOf = (mesh: MeshConfig): MeshService[] => [...mesh.services].sort(byKey((s) => s.name));

/** What every node is served (all a node that is not a registered VM gets): per service its cluster, assignment, API listener and route configuration, and the mesh routes. */
export function buildSharedResources(mesh: MeshConfig, view: RegistryView): MeshResources {
  const services = servicesOf(mesh);
  return {
    clusters: services.map(serviceCluster),
    endpoints: services.map((s) => serviceAssignment(s.name, view, mesh.peerAuthentication)),
    listeners: services.map((s) => apiListener(s.name)),
    routes: [...services.map((s) => serviceRouteConfiguration(s.name)), ...[...mesh.routes].sort(byKey((r) => r.name)).map(meshRouteConfiguration)],
  };
}

/**
 * What is particular to the node of registered VM `vm`: its outbound
 * listeners and, when it serves mesh services and its sidecar has a TCP
 * port, its inbound listener and a cluster per served port. An outbound
 * listener whose port the VM itself listens on (its sidecar's TCP port, or a
 * port it serves) is left out: it could not bind.
 */
export function buildNodeResources(mesh: MeshConfig, vm: VmRecord): MeshResources {
  const services = servicesOf(mesh);
  const byName = new Map(services.map((s) => [s.name, s]));
  // Served mesh ports, each with the connect timeout of the first (by name) service on it.
  const served = new Map<number, number>();
  for (const s of [...vm.services].sort(byKey((x) => x.name))) {
    const service = byName.get(s.name);
    if (service !== undefined && !served.has(s.port)) served.set(s.port, service.connectTimeoutMs);
  }
  const taken = new Set([...vm.services.map((s) => s.port), vm.sidecar?.tcpPort ?? 0]);
  const listeners = services.filter((s) => !taken.has(s.outboundPort)).map((s) => outboundListener(s, vm));
  const clusters: Cluster[] = [];
  const tcpPort = vm.sidecar?.tcpPort ?? 0;
  if (tcpPort > 0 && served.size > 0) {
    const ports = [...served.keys()].sort((a, b) => a - b);
    listeners.push(
      inboundListener(
        vm,
        tcpPort,
        ports.map((port) => ({ port, mode: portMode(mesh.peerAuthentication, vm, port) })),
        mesh.policies,
      ),
    );
    for (const port of ports) clusters.push(inboundCluster(port, served.get(port)!));
  }
  return { clusters, endpoints: [], listeners, routes: [] };
}

/** Packs every resource into an Any and makes a Snapshot of them (versions from their bytes). */
export function toSnapshot(resources: MeshResources): Snapshot {
  return makeSnapshot({
    [TYPE_URLS.Cluster]: resources.clusters.map((c) => ({ name: c.name ?? '', resource: packAny(TYPE_URLS.Cluster, c) })),
    [TYPE_URLS.ClusterLoadAssignment]: resources.endpoints.map((e) => ({ name: e.cluster_name ?? '', resource: packAny(TYPE_URLS.ClusterLoadAssignment, e) })),
    [TYPE_URLS.Listener]: resources.listeners.map((l) => ({ name: l.name ?? '', resource: packAny(TYPE_URLS.Listener, l) })),
    [TYPE_URLS.RouteConfiguration]: resources.routes.map((r) => ({ name: r.name ?? '', resource: packAny(TYPE_URLS.RouteConfiguration, r) })),
  });
}
