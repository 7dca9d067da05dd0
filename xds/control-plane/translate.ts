// From the mesh config and the VM registry to the Envoy resources the
// control plane serves. Pure: the same input always gives the same resources
// (in a deterministic order), hence the same bytes and versions.
//
// Resource names (proxy/dynamic/names.ts):
// - shared by every node, per mesh service S: Cluster "S" (EDS over ADS),
//   ClusterLoadAssignment "S", Listener "S" (an API listener, what `xds:///S`
//   asks LDS for) and its RouteConfiguration "S" (every domain, prefix "/" to
//   cluster S); per mesh route R: RouteConfiguration "R"; per HTTP service S:
//   RouteConfiguration "outbound|S", what its outbound listeners route by;
// - a node's own, when it is a registered VM: Listener "outbound|S" per
//   service on 127.0.0.1:<outbound port> (a TCP proxy to cluster S, or for an
//   HTTP service an HTTP connection manager taking RouteConfiguration
//   "outbound|S" over ADS), and when its sidecar has a TCP
//   inbound port and it serves mesh services, Listener "inbound|<vm id>" with
//   filter chains per served port P (one per transport protocol its peer
//   mode accepts: peer-authentication.ts), to the STATIC Cluster
//   "inbound|P" (127.0.0.1:P). Endpoints carry their port's mode too
//   (`peer_mode`), so a client knows whether to originate TLS.

import { packAny, TYPE_URLS, type ResourceTypeUrl, type Cluster, type ClusterLoadAssignment, type Listener, type RouteConfiguration } from '../envoy/proto.js';
import {
  HTTP_CONNECTION_MANAGER_FILTER,
  LEAST_REQUEST_CHOICES,
  LEAST_REQUEST_POLICY,
  PROXY_PROTOCOL_LISTENER_FILTER,
  ROUND_ROBIN_POLICY,
  ROUTER_FILTER,
  TCP_PROXY_FILTER,
  VSOCKMESH_METADATA_KEY,
} from '../envoy/names.js';
import type { LbEndpoint } from '../generated/envoy/envoy/config/endpoint/v3/LbEndpoint.js';
import type { LocalityLbEndpoints } from '../generated/envoy/envoy/config/endpoint/v3/LocalityLbEndpoints.js';
import type { Struct } from '../generated/envoy/google/protobuf/Struct.js';
import { inboundClusterName, inboundListenerName, outboundListenerName } from '../../proxy/dynamic/names.js';
import type { HypervisorRecord, VmRecord } from '../../proxy/resolve/types.js';
import { makeSnapshot, type NamedResource, type Snapshot } from './snapshot.js';
import type { MeshConfig, MeshHeaderMatch, MeshPolicy, MeshRoute, MeshService, PeerAuthentication } from './types.js';
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

/** The facts of one VM in an endpoint's metadata; its hypervisor's are its locality's (hypervisorFacts). */
function vmFacts(vm: VmRecord): Struct {
  return {
    fields: {
      vm_id: { stringValue: vm.vmId },
      vsock_cid: { numberValue: vm.vsockCid },
      vsock_port: { numberValue: vm.sidecar?.vsockPort ?? 0 },
      tcp_port: { numberValue: vm.sidecar?.tcpPort ?? 0 },
    },
  };
}

/** The facts of a hypervisor, once in the metadata of the locality of its VMs' endpoints. */
function hypervisorFacts(hypervisor: HypervisorRecord): Struct {
  return {
    fields: {
      hypervisor_id: { stringValue: hypervisor.hypervisorId },
      vsock_mode: { stringValue: hypervisor.vsockMode },
      relay_port: { numberValue: hypervisor.relayPort },
    },
  };
}

/** Cluster S: endpoints from EDS over the ADS stream, balanced as the service says. */
export function serviceCluster(service: MeshService): Cluster {
  const cluster: Cluster = { name: service.name, type: 'EDS', eds_cluster_config: { eds_config: ADS }, connect_timeout: duration(service.connectTimeoutMs), lb_policy: 'ROUND_ROBIN' };
  return service.lbPolicy === 'least_request' ? { ...cluster, ...leastRequest() } : cluster;
}

/**
 * least_request in both of Envoy's shapes. gRPC xDS clients (grpc-js-xds) have
 * no least_request and NACK a bare lb_policy LEAST_REQUEST, but read
 * load_balancing_policy first and take its first policy they know (gRFC A52):
 * round robin for them, least_request for Envoy and our sidecars.
 */
const leastRequest = (): Pick<Cluster, 'lb_policy' | 'least_request_lb_config' | 'load_balancing_policy'> => ({
  lb_policy: 'LEAST_REQUEST',
  least_request_lb_config: { choice_count: { value: LEAST_REQUEST_CHOICES } },
  load_balancing_policy: {
    policies: [
      { typed_extension_config: { name: LEAST_REQUEST_POLICY, typed_config: packAny(TYPE_URLS.LeastRequest, { choice_count: { value: LEAST_REQUEST_CHOICES } }) } },
      { typed_extension_config: { name: ROUND_ROBIN_POLICY, typed_config: packAny(TYPE_URLS.RoundRobin, {}) } },
    ],
  },
});

/** The view's hypervisors by id. */
export function hypervisorsById(view: RegistryView): Map<string, HypervisorRecord> {
  return new Map(view.hypervisors.map((h) => [h.hypervisorId, h]));
}

const serviceNamesOf = (vm: VmRecord): Set<string> => new Set(vm.services.map((s) => s.name));
const byVmId = byKey((v: VmRecord) => v.vmId);

/** Per service name, the VMs whose record lists it, by VM id: one pass over the registry for every assignment. */
export function vmsByService(view: RegistryView): Map<string, VmRecord[]> {
  const out = new Map<string, VmRecord[]>();
  for (const vm of view.vms) {
    for (const name of serviceNamesOf(vm)) {
      let list = out.get(name);
      if (list === undefined) out.set(name, (list = []));
      list.push(vm);
    }
  }
  for (const list of out.values()) list.sort(byVmId);
  return out;
}

/** Records replaced at most for vmsByServiceSince to regroup only their services (more: vmsByService). */
export const MAX_REGROUPED_VMS = 64;

/**
 * vmsByService of `vms`, from the grouping `before` of an earlier list of
 * the same VMs in the same order (the registry's records: a change replaces
 * a VM's record where it stands). Only the services of a replaced record
 * (before or after) get a new list; every other list is the very array of
 * `before`, so an unchanged service is seen as such without looking at its
 * VMs (shared-snapshot.ts). Null when VMs were added, removed or reordered,
 * or more than MAX_REGROUPED_VMS replaced: group anew. The lists are the
 * same as vmsByService's (same VMs, same order).
 */
export function vmsByServiceSince(before: { vms: readonly VmRecord[]; byService: ReadonlyMap<string, VmRecord[]> }, vms: readonly VmRecord[]): Map<string, VmRecord[]> | null {
  if (vms.length !== before.vms.length) return null;
  const replaced = new Map<VmRecord, VmRecord>();
  for (let i = 0; i < vms.length; i++) {
    const was = before.vms[i]!;
    const now = vms[i]!;
    if (was === now) continue;
    if (was.vmId !== now.vmId || replaced.size >= MAX_REGROUPED_VMS) return null;
    replaced.set(was, now);
  }
  const out = new Map(before.byService);
  const touched = new Set<string>();
  for (const [was, now] of replaced) for (const name of [...serviceNamesOf(was), ...serviceNamesOf(now)]) touched.add(name);
  for (const name of touched) {
    const list = (before.byService.get(name) ?? []).filter((vm) => !replaced.has(vm));
    for (const now of replaced.values()) if (serviceNamesOf(now).has(name)) list.push(now);
    if (list.length === 0) out.delete(name);
    else out.set(name, list.sort(byVmId));
  }
  return out;
}

/**
 * ClusterLoadAssignment S: every VM of `vms` (those whose record lists S, by
 * VM id: vmsByService) at its first address and its port for S, one locality
 * per hypervisor (sub_zone: its id; in hypervisor id order). The VM facts are
 * split: the hypervisor's (id, vsock mode, relay port) once in its locality's
 * metadata, the VM's own (id, CID, sidecar ports, the port's peer mode) in its
 * endpoint's; a client merges the two (xds/client/validate.ts). Per endpoint
 * the hypervisor's facts were about a third of the bytes, sent to every
 * client of S on every change of S. A locality weighs its endpoint count, so
 * that clients that weigh localities (gRPC's weighted_target) still spread
 * over endpoints evenly. A VM without an address is left out; VMs on a
 * hypervisor not in `hypervisors` get no VM facts (their clients go plain TCP
 * to the app), in a locality of their own without metadata, first.
 */
export function serviceAssignment(
  service: string,
  vms: readonly VmRecord[],
  hypervisors: ReadonlyMap<string, HypervisorRecord>,
  peerAuthentication: readonly PeerAuthentication[] = [],
): ClusterLoadAssignment {
  /** Endpoints by hypervisor id ('' : VMs on no known hypervisor). */
  const byHypervisor = new Map<string, LbEndpoint[]>();
  for (const vm of vms) {
    const served = vm.services.find((s) => s.name === service);
    const address = vm.addresses[0];
    if (served === undefined || address === undefined) continue;
    const known = hypervisors.has(vm.hypervisorId);
    let facts: Struct | undefined;
    if (known) {
      facts = vmFacts(vm);
      facts.fields!.peer_mode = { stringValue: portMode(peerAuthentication, vm, served.port) };
    }
    const key = known ? vm.hypervisorId : '';
    let list = byHypervisor.get(key);
    if (list === undefined) byHypervisor.set(key, (list = []));
    list.push({
      endpoint: { address: socketAddress(address, served.port) },
      ...(facts !== undefined && { metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: facts } } }),
    });
  }
  const localities: LocalityLbEndpoints[] = [];
  for (const id of [...byHypervisor.keys()].sort()) {
    const lbEndpoints = byHypervisor.get(id)!;
    const hypervisor = hypervisors.get(id);
    // gRPC xDS clients skip a locality without a weight.
    localities.push({
      locality: id === '' ? {} : { sub_zone: id },
      load_balancing_weight: { value: lbEndpoints.length },
      lb_endpoints: lbEndpoints,
      ...(hypervisor !== undefined && id !== '' && { metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: hypervisorFacts(hypervisor) } } }),
    });
  }
  return { cluster_name: service, endpoints: localities };
}

/** Listener S for gRPC xDS clients: an API listener whose HTTP connection manager takes RouteConfiguration S over ADS. */
export function apiListener(service: string): Listener {
  return { name: service, api_listener: { api_listener: httpConnectionManager(service, service) } };
}

/** RouteConfiguration S: any domain, every path to cluster S. */
export function serviceRouteConfiguration(service: string): RouteConfiguration {
  return {
    name: service,
    virtual_hosts: [{ name: service, domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: service } }] }],
  };
}

function headerMatcher(h: MeshHeaderMatch) {
  if ('present' in h) return { name: h.name, present_match: true };
  return { name: h.name, string_match: 'exact' in h ? { exact: h.exact } : { prefix: h.prefix } };
}

/** R's rules as Envoy routes (weighted clusters when a rule splits). */
function meshRoutes(route: MeshRoute) {
  return route.routes.map((r) => ({
    match: { prefix: r.prefix, ...(r.headers.length > 0 && { headers: r.headers.map(headerMatcher) }) },
    route:
      r.clusters.length === 1
        ? { cluster: r.clusters[0]!.service }
        : { weighted_clusters: { clusters: r.clusters.map((c) => ({ name: c.service, weight: { value: c.weight } })) } },
  }));
}

/** RouteConfiguration R: one virtual host with R's domains and routes. */
export function meshRouteConfiguration(route: MeshRoute): RouteConfiguration {
  return { name: route.name, virtual_hosts: [{ name: route.name, domains: [...route.domains], routes: meshRoutes(route) }] };
}

/** Whether one of R's domains names service S: `S`, or `S.` followed by a domain (`web.mesh`), with or without a port. */
const routesService = (route: MeshRoute, service: string): boolean =>
  route.domains.some((d) => {
    const host = d.toLowerCase().replace(/:\d+$/, '');
    return host === service || host.startsWith(`${service}.`);
  });

/** The mesh route an HTTP service's outbound listeners follow: the first by name whose domains name the service. */
export function serviceMeshRoute(service: string, routes: readonly MeshRoute[]): MeshRoute | undefined {
  return [...routes].sort(byKey((r) => r.name)).find((r) => routesService(r, service));
}

/**
 * RouteConfiguration outbound|S: what S's outbound listeners route by. Every
 * request there is for S whatever its Host (apps reach it as 127.0.0.1 too),
 * so one virtual host of any domain: the rules of the mesh route that names S
 * (serviceMeshRoute), or else every path to cluster S.
 */
export function outboundRouteConfiguration(service: string, routes: readonly MeshRoute[]): RouteConfiguration {
  const route = serviceMeshRoute(service, routes);
  const name = outboundListenerName(service);
  if (route === undefined) return { name, virtual_hosts: [{ name: service, domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: service } }] }] };
  return { name, virtual_hosts: [{ name: route.name, domains: ['*'], routes: meshRoutes(route) }] };
}

/** An HTTP connection manager whose routes come over ADS (RDS), with the router as its one HTTP filter. */
function httpConnectionManager(statPrefix: string, routeConfigName: string) {
  return packAny(TYPE_URLS.HttpConnectionManager, {
    stat_prefix: statPrefix,
    rds: { route_config_name: routeConfigName, config_source: ADS },
    http_filters: [{ name: ROUTER_FILTER, typed_config: packAny(TYPE_URLS.Router, {}) }],
  });
}

/**
 * Listener outbound|S: apps on the node connect to 127.0.0.1:<outbound port>;
 * the sidecar proxies each connection to cluster S, or for an HTTP service
 * routes each request by RouteConfiguration outbound|S.
 */
export function outboundListener(service: MeshService, local: VmRecord): Listener {
  const name = outboundListenerName(service.name);
  return {
    name,
    address: socketAddress('127.0.0.1', service.outboundPort),
    traffic_direction: 'OUTBOUND',
    // Where this node runs, so its sidecar can tell which endpoints share its hypervisor without asking the VM manager.
    metadata: { filter_metadata: { [VSOCKMESH_METADATA_KEY]: { fields: { vm_id: { stringValue: local.vmId }, hypervisor_id: { stringValue: local.hypervisorId } } } } },
    filter_chains: [
      { filters: [service.protocol === 'http' ? { name: HTTP_CONNECTION_MANAGER_FILTER, typed_config: httpConnectionManager(name, name) } : tcpProxyFilter(name, service.name)] },
    ],
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

/** The mesh's services by name: the order of every per-service resource. */
export const servicesOf = (mesh: MeshConfig): MeshService[] => [...mesh.services].sort(byKey((s) => s.name));

/** What every node is served (all a node that is not a registered VM gets): per service its cluster, assignment, API listener and route configuration, the mesh routes, and per HTTP service its outbound listeners' route configuration. */
export function buildSharedResources(mesh: MeshConfig, view: RegistryView): MeshResources {
  const byService = vmsByService(view);
  const hypervisors = hypervisorsById(view);
  const endpoints = servicesOf(mesh).map((s) => serviceAssignment(s.name, byService.get(s.name) ?? [], hypervisors, mesh.peerAuthentication));
  return { ...buildMeshResources(mesh), endpoints };
}

/** The shared resources the registry has no part in: all but the assignments (empty). */
export function buildMeshResources(mesh: MeshConfig): MeshResources {
  const services = servicesOf(mesh);
  return {
    clusters: services.map(serviceCluster),
    endpoints: [],
    listeners: services.map((s) => apiListener(s.name)),
    routes: [
      ...services.map((s) => serviceRouteConfiguration(s.name)),
      ...[...mesh.routes].sort(byKey((r) => r.name)).map(meshRouteConfiguration),
      ...services.filter((s) => s.protocol === 'http').map((s) => outboundRouteConfiguration(s.name, mesh.routes)),
    ],
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

/** Every resource packed into an Any, by type. */
export function packResources(resources: MeshResources): Record<ResourceTypeUrl, NamedResource[]> {
  return {
    [TYPE_URLS.Cluster]: resources.clusters.map((c) => ({ name: c.name ?? '', resource: packAny(TYPE_URLS.Cluster, c) })),
    [TYPE_URLS.ClusterLoadAssignment]: resources.endpoints.map(packAssignment),
    [TYPE_URLS.Listener]: resources.listeners.map((l) => ({ name: l.name ?? '', resource: packAny(TYPE_URLS.Listener, l) })),
    [TYPE_URLS.RouteConfiguration]: resources.routes.map((r) => ({ name: r.name ?? '', resource: packAny(TYPE_URLS.RouteConfiguration, r) })),
  };
}

export function packAssignment(assignment: ClusterLoadAssignment): NamedResource {
  return { name: assignment.cluster_name ?? '', resource: packAny(TYPE_URLS.ClusterLoadAssignment, assignment) };
}

/** Packs every resource into an Any and makes a Snapshot of them (versions from their bytes). */
export function toSnapshot(resources: MeshResources): Snapshot {
  return makeSnapshot(packResources(resources));
}
