import test from 'ava';
import { RESOURCE_TYPE_URLS, TYPE_URLS, unpackAny, type ResourceTypeUrl } from '../../xds/envoy/proto.js';
import { parseMeshConfig } from '../../xds/control-plane/mesh.js';
import { inconsistencies, makeSnapshot, mergeSnapshots, shortHash, typeVersion, type Snapshot } from '../../xds/control-plane/snapshot.js';
import { buildNodeResources, buildSharedResources, serviceAssignment, toSnapshot, type MeshResources, type RegistryView } from '../../xds/control-plane/translate.js';
import { nodeResources } from '../helpers/xds-resources.js';
import { validateResources } from '../../xds/client/validate.js';
import type { VmRecord } from '../../proxy/resolve/types.js';

const mesh = parseMeshConfig({
  services: [
    { name: 'web', port: 8080, outbound_port: 18080, protocol: 'http', connect_timeout: '2s' },
    { name: 'api', port: 9090, outbound_port: 19090 },
    { name: 'api-canary', port: 9091, outbound_port: 19091 },
    { name: 'db', port: 5432 },
  ],
  routes: [
    {
      name: 'web-routes',
      domains: ['web', 'web.mesh'],
      routes: [
        { prefix: '/api', clusters: [{ service: 'api', weight: 90 }, { service: 'api-canary', weight: 10 }] },
        { prefix: '/', clusters: [{ service: 'web' }] },
      ],
    },
  ],
});

const vm = (v: Partial<VmRecord> & Pick<VmRecord, 'vmId' | 'hypervisorId' | 'vsockCid' | 'addresses'>): VmRecord => ({
  sidecar: null,
  services: [],
  labels: {},
  generation: 1,
  leaseExpiresAt: null,
  ...v,
});

// Two hypervisors; web-2 runs no sidecar; api-1 serves two services; client-1 serves nothing and has no TCP inbound.
const view: RegistryView = {
  hypervisors: [
    { hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 },
    { hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 },
  ],
  vms: [
    vm({ vmId: 'web-2', hypervisorId: 'hv-2', vsockCid: 3, addresses: ['10.0.1.12'], services: [{ name: 'web', port: 8081 }] }),
    vm({ vmId: 'api-1', hypervisorId: 'hv-2', vsockCid: 4, addresses: ['10.0.1.21'], sidecar: { tcpPort: 15006, vsockPort: 15016 }, services: [{ name: 'api-canary', port: 9091 }, { name: 'api', port: 9090 }] }),
    vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11', 'fd00::11'], sidecar: { tcpPort: 15006, vsockPort: 15007 }, services: [{ name: 'web', port: 8080 }] }),
    vm({ vmId: 'client-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.31'], sidecar: { tcpPort: 0, vsockPort: 15008 } }),
  ],
};

const names = (r: MeshResources) => ({
  clusters: r.clusters.map((c) => c.name),
  endpoints: r.endpoints.map((e) => e.cluster_name),
  listeners: r.listeners.map((l) => l.name),
  routes: r.routes.map((x) => x.name),
});

function decoded<U extends ResourceTypeUrl>(snapshot: Snapshot, typeUrl: U, name: string) {
  const r = snapshot.resources[typeUrl].get(name);
  if (!r) throw new Error(`${name} is not in the snapshot`);
  return unpackAny(r.resource, typeUrl);
}

/** A VM's own facts, as its endpoint's metadata carries them. */
const facts = (f: { vm_id: string; vsock_cid: number; vsock_port: number; tcp_port: number; peer_mode?: string }) => ({
  fields: {
    vm_id: { stringValue: f.vm_id, kind: 'stringValue' },
    vsock_cid: { numberValue: f.vsock_cid, kind: 'numberValue' },
    vsock_port: { numberValue: f.vsock_port, kind: 'numberValue' },
    tcp_port: { numberValue: f.tcp_port, kind: 'numberValue' },
    peer_mode: { stringValue: f.peer_mode ?? 'strict', kind: 'stringValue' },
  },
});

/** A hypervisor's facts, as the metadata of the locality of its VMs' endpoints carries them. */
const hypervisorFacts = (f: { hypervisor_id: string; vsock_mode: string; relay_port: number }) => ({
  fields: {
    hypervisor_id: { stringValue: f.hypervisor_id, kind: 'stringValue' },
    vsock_mode: { stringValue: f.vsock_mode, kind: 'stringValue' },
    relay_port: { numberValue: f.relay_port, kind: 'numberValue' },
  },
});

test('every mesh service gets an EDS cluster, an assignment, an API listener and a route configuration; a node unknown to the registry gets nothing else', (t) => {
  const resources = nodeResources(mesh, view, 'grpc-client');
  t.deepEqual(names(resources), {
    clusters: ['api', 'api-canary', 'db', 'web'],
    endpoints: ['api', 'api-canary', 'db', 'web'],
    listeners: ['api', 'api-canary', 'db', 'web'],
    routes: ['api', 'api-canary', 'db', 'web', 'web-routes', 'outbound|web'],
  });
  t.deepEqual(resources.clusters[3], {
    name: 'web',
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
    connect_timeout: { seconds: 2, nanos: 0 },
    lb_policy: 'ROUND_ROBIN',
  });

  const snapshot = toSnapshot(resources);
  const web = decoded(snapshot, TYPE_URLS.Cluster, 'web');
  t.is(web.type, 'EDS');
  t.is(web.eds_cluster_config?.eds_config?.config_source_specifier, 'ads');
  t.is(web.eds_cluster_config?.eds_config?.resource_api_version, 'V3');

  const listener = decoded(snapshot, TYPE_URLS.Listener, 'web');
  t.is(listener.address, null);
  t.deepEqual(listener.filter_chains, []);
  const hcm = unpackAny(listener.api_listener!.api_listener!, TYPE_URLS.HttpConnectionManager);
  t.is(hcm.route_specifier, 'rds');
  t.is(hcm.rds?.route_config_name, 'web');
  t.is(hcm.rds?.config_source?.config_source_specifier, 'ads');
  t.deepEqual(
    hcm.http_filters.map((f) => [f.name, f.typed_config?.type_url]),
    [['envoy.filters.http.router', TYPE_URLS.Router]],
  );

  const own = decoded(snapshot, TYPE_URLS.RouteConfiguration, 'web');
  t.deepEqual(
    own.virtual_hosts.map((h) => [h.name, h.domains, h.routes.map((r) => [r.match?.prefix, r.route?.cluster_specifier, r.route?.cluster])]),
    [['web', ['*'], [['/', 'cluster', 'web']]]],
  );
  const routes = decoded(snapshot, TYPE_URLS.RouteConfiguration, 'web-routes');
  t.deepEqual(routes.virtual_hosts[0]!.domains, ['web', 'web.mesh']);
  const [split, rest] = routes.virtual_hosts[0]!.routes;
  t.is(split!.match?.prefix, '/api');
  t.is(split!.route?.cluster_specifier, 'weighted_clusters');
  t.deepEqual(
    split!.route?.weighted_clusters?.clusters.map((c) => [c.name, c.weight?.value]),
    [
      ['api', 90],
      ['api-canary', 10],
    ],
  );
  t.is(rest!.match?.prefix, '/');
  t.is(rest!.route?.cluster_specifier, 'cluster');
  t.is(rest!.route?.cluster, 'web');
});

test('a least_request service gets a LEAST_REQUEST cluster in both Envoy shapes, round robin listed after it for gRPC clients; sidecars read least_request', (t) => {
  const lr = parseMeshConfig({ services: [{ name: 'web', port: 8080, protocol: 'http', lb_policy: 'least_request' }, { name: 'db', port: 5432 }] });
  const snapshot = toSnapshot(nodeResources(lr, view, 'grpc-client'));
  const web = decoded(snapshot, TYPE_URLS.Cluster, 'web');
  t.is(web.lb_policy, 'LEAST_REQUEST');
  t.is(web.least_request_lb_config?.choice_count?.value, 2);
  const policies = web.load_balancing_policy?.policies.map((p) => p.typed_extension_config!);
  t.deepEqual(
    policies?.map((p) => [p.name, p.typed_config?.type_url]),
    [
      ['envoy.load_balancing_policies.least_request', TYPE_URLS.LeastRequest],
      ['envoy.load_balancing_policies.round_robin', TYPE_URLS.RoundRobin],
    ],
  );
  t.is(unpackAny(policies![0]!.typed_config!, TYPE_URLS.LeastRequest).choice_count?.value, 2);
  const db = decoded(snapshot, TYPE_URLS.Cluster, 'db');
  t.is(db.lb_policy, 'ROUND_ROBIN');
  t.is(db.load_balancing_policy, null);
  const result = validateResources(TYPE_URLS.Cluster, [...snapshot.resources[TYPE_URLS.Cluster].values()].map((r) => r.resource));
  t.deepEqual(result.values, [
    { name: 'db', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'db' },
    { name: 'web', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'web', lbPolicy: 'least_request' },
  ]);
});

test('assignments list the serving VMs in one locality per hypervisor (weighing its endpoints), by VM id, at their first address and service port; the hypervisor facts are the locality\'s, the VM\'s its endpoint\'s', (t) => {
  const snapshot = toSnapshot(nodeResources(mesh, view, 'grpc-client'));
  const web = decoded(snapshot, TYPE_URLS.ClusterLoadAssignment, 'web');
  t.is(web.cluster_name, 'web');
  t.deepEqual(
    web.endpoints.map((l) => [l.locality?.sub_zone, l.load_balancing_weight?.value, l.lb_endpoints.length]),
    [
      ['hv-1', 1, 1],
      ['hv-2', 1, 1],
    ],
  );
  const [hv1, hv2] = web.endpoints;
  t.deepEqual(hv1!.metadata?.filter_metadata['vsockmesh'], hypervisorFacts({ hypervisor_id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }));
  t.deepEqual(hv2!.metadata?.filter_metadata['vsockmesh'], hypervisorFacts({ hypervisor_id: 'hv-2', vsock_mode: 'direct', relay_port: 0 }));
  const [one] = hv1!.lb_endpoints;
  const [two] = hv2!.lb_endpoints;
  t.deepEqual(one!.endpoint?.address?.socket_address && [one.endpoint.address.socket_address.address, one.endpoint.address.socket_address.port_value], ['10.0.0.11', 8080]);
  t.deepEqual(one!.metadata?.filter_metadata['vsockmesh'], facts({ vm_id: 'web-1', vsock_cid: 3, vsock_port: 15007, tcp_port: 15006 }));
  t.deepEqual(two!.endpoint?.address?.socket_address && [two.endpoint.address.socket_address.address, two.endpoint.address.socket_address.port_value], ['10.0.1.12', 8081]);
  // No sidecar: both sidecar ports 0.
  t.deepEqual(two!.metadata?.filter_metadata['vsockmesh'], facts({ vm_id: 'web-2', vsock_cid: 3, vsock_port: 0, tcp_port: 0 }));
  // A client gets every fact of each endpoint: the locality's and the endpoint's together.
  const validated = validateResources(TYPE_URLS.ClusterLoadAssignment, [snapshot.resources[TYPE_URLS.ClusterLoadAssignment].get('web')!.resource]);
  t.deepEqual(validated.refused, []);
  t.deepEqual(validated.values[0]?.endpoints, [
    { address: '10.0.0.11', port: 8080, vm: { vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100, peerMode: 'strict' } },
    { address: '10.0.1.12', port: 8081, vm: { vmId: 'web-2', hypervisorId: 'hv-2', vsockCid: 3, vsockPort: 0, tcpPort: 0, vsockMode: 'direct', relayPort: 0, peerMode: 'strict' } },
  ]);

  // One VM serving two services is an endpoint of each, on each service's port.
  for (const [service, port] of [['api', 9090], ['api-canary', 9091]] as const) {
    const localities = decoded(snapshot, TYPE_URLS.ClusterLoadAssignment, service).endpoints;
    t.deepEqual(localities.map((l) => l.locality?.sub_zone), ['hv-2']);
    const lbs = localities[0]!.lb_endpoints;
    t.deepEqual(lbs.map((lb) => lb.endpoint?.address?.socket_address?.port_value), [port]);
    t.deepEqual(lbs[0]!.metadata?.filter_metadata['vsockmesh'], facts({ vm_id: 'api-1', vsock_cid: 4, vsock_port: 15016, tcp_port: 15006 }));
  }
  // A service nobody serves still has its (empty) assignment.
  t.deepEqual(decoded(snapshot, TYPE_URLS.ClusterLoadAssignment, 'db').endpoints, []);
});

test('an assignment\'s localities: hypervisors in id order, each weighing its endpoints; VMs on a hypervisor not in the registry first, in a locality without metadata and without VM facts', (t) => {
  const hypervisors = new Map(view.hypervisors.map((h) => [h.hypervisorId, h]));
  const serving = (vmId: string, hypervisorId: string, cid: number) => vm({ vmId, hypervisorId, vsockCid: cid, addresses: [`10.0.9.${cid}`], services: [{ name: 'web', port: 8080 }] });
  const vms = [serving('a', 'hv-2', 3), serving('b', 'hv-gone', 4), serving('c', 'hv-1', 5), serving('d', 'hv-2', 6)];
  const cla = serviceAssignment('web', vms, hypervisors);
  t.deepEqual(
    cla.endpoints?.map((l) => [l.locality, l.load_balancing_weight?.value, l.lb_endpoints?.map((lb) => lb.endpoint?.address?.socket_address?.address), l.metadata?.filter_metadata?.['vsockmesh']?.fields?.['hypervisor_id']]),
    [
      [{}, 1, ['10.0.9.4'], undefined],
      [{ sub_zone: 'hv-1' }, 1, ['10.0.9.5'], { stringValue: 'hv-1' }],
      [{ sub_zone: 'hv-2' }, 2, ['10.0.9.3', '10.0.9.6'], { stringValue: 'hv-2' }],
    ],
  );
  t.is(cla.endpoints?.[0]?.lb_endpoints?.[0]?.metadata, undefined);
  t.is(cla.endpoints?.[0]?.metadata, undefined);
  t.deepEqual(serviceAssignment('web', [], hypervisors).endpoints, []);
});

test('a registered VM gets outbound listeners per service, and an inbound listener with a static cluster per served port', (t) => {
  const resources = nodeResources(mesh, view, 'api-1');
  t.deepEqual(names(resources), {
    clusters: ['api', 'api-canary', 'db', 'web', 'inbound|9090', 'inbound|9091'],
    endpoints: ['api', 'api-canary', 'db', 'web'],
    listeners: ['api', 'api-canary', 'db', 'web', 'outbound|api', 'outbound|api-canary', 'outbound|db', 'outbound|web', 'inbound|api-1'],
    routes: ['api', 'api-canary', 'db', 'web', 'web-routes', 'outbound|web'],
  });
  const snapshot = toSnapshot(resources);

  const out = decoded(snapshot, TYPE_URLS.Listener, 'outbound|api');
  t.deepEqual([out.address?.socket_address?.address, out.address?.socket_address?.port_value], ['127.0.0.1', 19090]);
  t.deepEqual(out.listener_filters, []);
  t.is(out.filter_chains.length, 1);
  const outFilter = out.filter_chains[0]!.filters[0]!;
  t.is(outFilter.name, 'envoy.filters.network.tcp_proxy');
  const outTcp = unpackAny(outFilter.typed_config!, TYPE_URLS.TcpProxy);
  t.is(outTcp.cluster, 'api');
  t.is(outTcp.stat_prefix, 'outbound|api');
  t.is(decoded(snapshot, TYPE_URLS.Listener, 'outbound|db').address?.socket_address?.port_value, 5432);

  // web is an HTTP service: an HTTP connection manager taking RouteConfiguration outbound|web over ADS.
  const http = decoded(snapshot, TYPE_URLS.Listener, 'outbound|web');
  t.deepEqual([http.address?.socket_address?.address, http.address?.socket_address?.port_value], ['127.0.0.1', 18080]);
  t.deepEqual(
    http.filter_chains.map((c) => c.filters.map((f) => f.name)),
    [['envoy.filters.network.http_connection_manager']],
  );
  const hcm = unpackAny(http.filter_chains[0]!.filters[0]!.typed_config!, TYPE_URLS.HttpConnectionManager);
  t.is(hcm.stat_prefix, 'outbound|web');
  t.is(hcm.route_specifier, 'rds');
  t.is(hcm.rds?.route_config_name, 'outbound|web');
  t.is(hcm.rds?.config_source?.config_source_specifier, 'ads');
  t.deepEqual(
    hcm.http_filters.map((f) => [f.name, f.typed_config?.type_url]),
    [['envoy.filters.http.router', TYPE_URLS.Router]],
  );

  const inbound = decoded(snapshot, TYPE_URLS.Listener, 'inbound|api-1');
  t.deepEqual([inbound.address?.socket_address?.address, inbound.address?.socket_address?.port_value], ['0.0.0.0', 15006]);
  t.deepEqual(
    inbound.listener_filters.map((f) => f.name),
    ['envoy.filters.listener.proxy_protocol'],
  );
  t.deepEqual(
    inbound.filter_chains.map((c) => [c.filter_chain_match?.destination_port?.value, unpackAny(c.filters[0]!.typed_config!, TYPE_URLS.TcpProxy).cluster]),
    [
      [9090, 'inbound|9090'],
      [9091, 'inbound|9091'],
    ],
  );

  t.deepEqual(resources.clusters[4], {
    name: 'inbound|9090',
    type: 'STATIC',
    connect_timeout: { seconds: 5, nanos: 0 },
    lb_policy: 'ROUND_ROBIN',
    load_assignment: {
      cluster_name: 'inbound|9090',
      endpoints: [{ locality: {}, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 9090 } } } }] }],
    },
  });
});

test('no inbound listener without a sidecar TCP port or without served services; unknown nodes get no node resources', (t) => {
  const outbound = ['outbound|api', 'outbound|api-canary', 'outbound|db', 'outbound|web'];
  for (const nodeId of ['web-2', 'client-1']) {
    const r = nodeResources(mesh, view, nodeId);
    t.deepEqual(names(r).listeners, ['api', 'api-canary', 'db', 'web', ...outbound], nodeId);
    t.deepEqual(names(r).clusters, ['api', 'api-canary', 'db', 'web'], nodeId);
  }
  t.deepEqual(names(nodeResources(mesh, view, 'web-1')).listeners, ['api', 'api-canary', 'db', 'web', ...outbound, 'inbound|web-1']);
  t.deepEqual(names(nodeResources(mesh, view, 'web-1')).clusters, ['api', 'api-canary', 'db', 'web', 'inbound|8080']);
  t.deepEqual(nodeResources(mesh, view, 'not-a-vm'), buildSharedResources(mesh, view));
  t.false(names(buildSharedResources(mesh, view)).listeners.some((n) => (n ?? '').includes('|')));
});

test('an outbound listener on a port the VM itself listens on is left out for that VM only', (t) => {
  // web's outbound port defaults to 8080, the port web-1 serves web on; 15006 is web-1's sidecar TCP port.
  const clash = parseMeshConfig({ services: [{ name: 'web', port: 8080 }, { name: 'api', port: 15006 }] });
  t.deepEqual(names(nodeResources(clash, view, 'web-1')).listeners, ['api', 'web', 'inbound|web-1']);
  t.deepEqual(names(nodeResources(clash, view, 'client-1')).listeners, ['api', 'web', 'outbound|api', 'outbound|web']);
});

function versionsOf(snapshot: Snapshot): Record<string, Record<string, string>> {
  return Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, Object.fromEntries([...snapshot.resources[url].values()].map((r) => [r.name, r.version]))]));
}

test('versions are content hashes: the same input (in any order) gives the same versions', (t) => {
  const a = toSnapshot(nodeResources(mesh, view, 'api-1'));
  const b = toSnapshot(nodeResources(mesh, { vms: [...view.vms].reverse(), hypervisors: [...view.hypervisors].reverse() }, 'api-1'));
  t.deepEqual(b.versions, a.versions);
  t.deepEqual(versionsOf(b), versionsOf(a));
  for (const url of RESOURCE_TYPE_URLS) {
    t.regex(a.versions[url], /^[0-9a-f]{16}$/);
    t.is(a.versions[url], typeVersion(a.resources[url]));
    for (const r of a.resources[url].values()) {
      t.is(r.version, shortHash(r.resource.value));
      t.is(r.resource.type_url, url);
    }
  }
  // The type version is the hash of the sorted name:version pairs.
  const clusters = [...a.resources[TYPE_URLS.Cluster].values()].map((r) => `${r.name}:${r.version}`).sort();
  t.is(a.versions[TYPE_URLS.Cluster], shortHash(clusters.join('\n')));
  // Another node's snapshot differs only where its node resources do.
  const other = toSnapshot(nodeResources(mesh, view, 'web-2'));
  t.is(other.versions[TYPE_URLS.ClusterLoadAssignment], a.versions[TYPE_URLS.ClusterLoadAssignment]);
  t.is(other.versions[TYPE_URLS.RouteConfiguration], a.versions[TYPE_URLS.RouteConfiguration]);
  t.not(other.versions[TYPE_URLS.Listener], a.versions[TYPE_URLS.Listener]);
});

test("changing one VM's CID changes only the assignments that list it and the assignment type version", (t) => {
  const before = toSnapshot(nodeResources(mesh, view, 'api-1'));
  const moved = { ...view, vms: view.vms.map((v) => (v.vmId === 'web-1' ? { ...v, vsockCid: 9 } : v)) };
  const after = toSnapshot(nodeResources(mesh, moved, 'api-1'));
  const b = versionsOf(before);
  const a = versionsOf(after);
  const cla = TYPE_URLS.ClusterLoadAssignment;
  t.not(a[cla]!['web'], b[cla]!['web']);
  t.deepEqual({ ...a[cla], web: 'x' }, { ...b[cla], web: 'x' });
  t.not(after.versions[cla], before.versions[cla]);
  for (const url of [TYPE_URLS.Cluster, TYPE_URLS.Listener, TYPE_URLS.RouteConfiguration]) {
    t.deepEqual(a[url], b[url]);
    t.is(after.versions[url], before.versions[url]);
  }
  t.is(decoded(after, cla, 'web').endpoints[0]!.lb_endpoints[0]!.metadata?.filter_metadata['vsockmesh']?.fields['vsock_cid']?.numberValue, 9);
});

test('toSnapshot refuses two resources of a type with one name', (t) => {
  const r = buildSharedResources(mesh, view);
  t.throws(() => toSnapshot({ ...r, clusters: [...r.clusters, r.clusters[0]!] }), { message: 'snapshot: two Cluster resources are named "api"' });
});

test('a node snapshot merged from the shared one and its own part equals the snapshot of all its resources; shared maps are not copied', (t) => {
  const shared = toSnapshot(buildSharedResources(mesh, view));
  const api1 = view.vms.find((v) => v.vmId === 'api-1')!;
  const merged = mergeSnapshots(shared, toSnapshot(buildNodeResources(mesh, api1)));
  const whole = toSnapshot(nodeResources(mesh, view, 'api-1'));
  t.deepEqual(merged.versions, whole.versions);
  t.deepEqual(versionsOf(merged), versionsOf(whole));
  t.is(merged.resources[TYPE_URLS.ClusterLoadAssignment], shared.resources[TYPE_URLS.ClusterLoadAssignment], 'a type the node adds nothing to is the shared map itself');
  t.is(merged.resources[TYPE_URLS.RouteConfiguration], shared.resources[TYPE_URLS.RouteConfiguration]);
  t.not(merged.resources[TYPE_URLS.Listener], shared.resources[TYPE_URLS.Listener]);
  t.is(shared.resources[TYPE_URLS.Listener].size, 4, 'the shared map is left as it was');
});

test('makeSnapshot is the one constructor: toSnapshot gives what makeSnapshot gives for the packed resources; explicit type versions win', (t) => {
  const built = toSnapshot(buildSharedResources(mesh, view));
  const entries = (url: ResourceTypeUrl) => [...built.resources[url].values()].map((r) => ({ name: r.name, resource: r.resource }));
  const made = makeSnapshot(Object.fromEntries(RESOURCE_TYPE_URLS.map((url) => [url, entries(url)])));
  t.deepEqual(made.versions, built.versions);
  t.deepEqual(versionsOf(made), versionsOf(built));
  const pinned = makeSnapshot({ [TYPE_URLS.Cluster]: entries(TYPE_URLS.Cluster) }, { [TYPE_URLS.Cluster]: 'v7' });
  t.is(pinned.versions[TYPE_URLS.Cluster], 'v7');
  t.is(pinned.versions[TYPE_URLS.Listener], typeVersion(new Map()), 'a type without resources has the version of the empty set');
  t.throws(() => makeSnapshot({ [TYPE_URLS.Listener]: entries(TYPE_URLS.Cluster) }), { message: 'snapshot: Listener "api" holds a type.googleapis.com/envoy.config.cluster.v3.Cluster' });
});

function without(snapshot: Snapshot, typeUrl: ResourceTypeUrl, name: string): Snapshot {
  const map = new Map(snapshot.resources[typeUrl]);
  map.delete(name);
  return { ...snapshot, resources: { ...snapshot.resources, [typeUrl]: map } };
}

test('inconsistencies: a built snapshot is consistent; hand-broken ones are named', (t) => {
  const snapshot = toSnapshot(nodeResources(mesh, view, 'api-1'));
  t.deepEqual(inconsistencies(snapshot), []);

  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.ClusterLoadAssignment, 'api')), ['cluster "api": EDS cluster has no ClusterLoadAssignment "api"']);
  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.Cluster, 'api-canary')), [
    'route_configuration "api-canary": virtual_hosts[0].routes[0]: cluster "api-canary" is not in the snapshot',
    'route_configuration "web-routes": virtual_hosts[0].routes[0]: cluster "api-canary" is not in the snapshot',
    'route_configuration "outbound|web": virtual_hosts[0].routes[0]: cluster "api-canary" is not in the snapshot',
    'listener "outbound|api-canary": filter_chains[0].filters[0]: tcp_proxy cluster "api-canary" is not in the snapshot',
  ]);
  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.Cluster, 'inbound|9091')), [
    'listener "inbound|api-1": filter_chains[1].filters[0]: tcp_proxy cluster "inbound|9091" is not in the snapshot',
  ]);
  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.RouteConfiguration, 'db')), ['listener "db": api_listener: route configuration "db" is not in the snapshot']);
  // An assignment no cluster uses is harmless: only the references to the removed cluster are problems.
  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.Cluster, 'web')), [
    'route_configuration "web": virtual_hosts[0].routes[0]: cluster "web" is not in the snapshot',
    'route_configuration "web-routes": virtual_hosts[0].routes[1]: cluster "web" is not in the snapshot',
    'route_configuration "outbound|web": virtual_hosts[0].routes[1]: cluster "web" is not in the snapshot',
  ]);
  t.deepEqual(inconsistencies(without(snapshot, TYPE_URLS.RouteConfiguration, 'outbound|web')), [
    'listener "outbound|web": filter_chains[0].filters[0]: route configuration "outbound|web" is not in the snapshot',
  ]);
});

test('round trip: built, packed, unpacked and validated as a sidecar would, the resources are the expected domain objects', (t) => {
  const snapshot = toSnapshot(nodeResources(mesh, view, 'api-1'));
  const validated = (url: ResourceTypeUrl) => {
    const result = validateResources(url, [...snapshot.resources[url].values()].map((r) => r.resource));
    t.deepEqual(result.refused, [], url);
    t.true(result.ok, url);
    return result.values;
  };
  t.deepEqual(validated(TYPE_URLS.Cluster), [
    { name: 'api', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'api' },
    { name: 'api-canary', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'api-canary' },
    { name: 'db', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'db' },
    { name: 'web', kind: 'eds', connectTimeoutMs: 2_000, edsServiceName: 'web' },
    { name: 'inbound|9090', kind: 'static', connectTimeoutMs: 5_000, endpoints: [{ address: '127.0.0.1', port: 9090 }] },
    { name: 'inbound|9091', kind: 'static', connectTimeoutMs: 5_000, endpoints: [{ address: '127.0.0.1', port: 9091 }] },
  ]);
  t.deepEqual(validated(TYPE_URLS.ClusterLoadAssignment), [
    {
      clusterName: 'api',
      endpoints: [{ address: '10.0.1.21', port: 9090, vm: { vmId: 'api-1', hypervisorId: 'hv-2', vsockCid: 4, vsockPort: 15016, tcpPort: 15006, vsockMode: 'direct', relayPort: 0, peerMode: 'strict' } }],
    },
    {
      clusterName: 'api-canary',
      endpoints: [{ address: '10.0.1.21', port: 9091, vm: { vmId: 'api-1', hypervisorId: 'hv-2', vsockCid: 4, vsockPort: 15016, tcpPort: 15006, vsockMode: 'direct', relayPort: 0, peerMode: 'strict' } }],
    },
    { clusterName: 'db', endpoints: [] },
    {
      clusterName: 'web',
      endpoints: [
        { address: '10.0.0.11', port: 8080, vm: { vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100, peerMode: 'strict' } },
        { address: '10.0.1.12', port: 8081, vm: { vmId: 'web-2', hypervisorId: 'hv-2', vsockCid: 3, vsockPort: 0, tcpPort: 0, vsockMode: 'direct', relayPort: 0, peerMode: 'strict' } },
      ],
    },
  ]);
  t.deepEqual(validated(TYPE_URLS.Listener), [
    { name: 'api', kind: 'api' },
    { name: 'api-canary', kind: 'api' },
    { name: 'db', kind: 'api' },
    { name: 'web', kind: 'api' },
    { name: 'outbound|api', kind: 'outbound', address: '127.0.0.1', port: 19090, cluster: 'api', local: { vmId: 'api-1', hypervisorId: 'hv-2' } },
    { name: 'outbound|api-canary', kind: 'outbound', address: '127.0.0.1', port: 19091, cluster: 'api-canary', local: { vmId: 'api-1', hypervisorId: 'hv-2' } },
    { name: 'outbound|db', kind: 'outbound', address: '127.0.0.1', port: 5432, cluster: 'db', local: { vmId: 'api-1', hypervisorId: 'hv-2' } },
    { name: 'outbound|web', kind: 'http_outbound', address: '127.0.0.1', port: 18080, routeConfigName: 'outbound|web', local: { vmId: 'api-1', hypervisorId: 'hv-2' } },
    { name: 'inbound|api-1', kind: 'inbound', address: '0.0.0.0', port: 15006, ports: [9090, 9091], rbac: [], peerModes: { 9090: 'strict', 9091: 'strict' } },
  ]);
  const routes = validated(TYPE_URLS.RouteConfiguration);
  t.deepEqual(routes[0], { name: 'api', virtualHosts: [{ name: 'api', domains: ['*'], routes: [{ path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'api', weight: 1 }], timeoutMs: 15_000 }] }] });
  t.deepEqual(routes[4], {
    name: 'web-routes',
    virtualHosts: [
      {
        name: 'web-routes',
        domains: ['web', 'web.mesh'],
        routes: [
          { path: { kind: 'prefix', value: '/api' }, headers: [], clusters: [{ name: 'api', weight: 90 }, { name: 'api-canary', weight: 10 }], timeoutMs: 15_000 },
          { path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'web', weight: 1 }], timeoutMs: 15_000 },
        ],
      },
    ],
  });
  // web's outbound listeners route by web-routes (its domains name web), for any Host.
  t.deepEqual(routes[5], {
    name: 'outbound|web',
    virtualHosts: [
      {
        name: 'web-routes',
        domains: ['*'],
        routes: [
          { path: { kind: 'prefix', value: '/api' }, headers: [], clusters: [{ name: 'api', weight: 90 }, { name: 'api-canary', weight: 10 }], timeoutMs: 15_000 },
          { path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'web', weight: 1 }], timeoutMs: 15_000 },
        ],
      },
    ],
  });
  t.is(routes.length, 6);
});

test('an HTTP service follows the first mesh route (by name) whose domains name it (S, S.<domain>, with or without a port); header matches become Envoy header matchers; otherwise every path goes to the service', (t) => {
  const routed = parseMeshConfig({
    services: [
      { name: 'web', port: 8080, protocol: 'http' },
      { name: 'web-canary', port: 8081 },
      { name: 'webby', port: 8082, protocol: 'http' },
      { name: 'db', port: 5432, protocol: 'http' },
    ],
    routes: [
      { name: 'b-web', domains: ['web.mesh:8080'], routes: [{ prefix: '/', clusters: [{ service: 'web-canary' }] }] },
      {
        name: 'a-web',
        domains: ['web'],
        routes: [
          { prefix: '/', headers: [{ name: 'X-Canary', exact: '1' }, { name: 'x-user', prefix: 'test-' }, { name: 'x-debug', present: true }], clusters: [{ service: 'web-canary' }] },
          { prefix: '/', clusters: [{ service: 'web', weight: 3 }, { service: 'web-canary', weight: 1 }] },
        ],
      },
    ],
  });
  const resources = buildSharedResources(routed, { vms: [], hypervisors: [] });
  const byName = new Map(resources.routes.map((r) => [r.name, r]));
  t.deepEqual(byName.get('outbound|web'), {
    name: 'outbound|web',
    virtual_hosts: [
      {
        name: 'a-web',
        domains: ['*'],
        routes: [
          {
            match: {
              prefix: '/',
              headers: [
                { name: 'x-canary', string_match: { exact: '1' } },
                { name: 'x-user', string_match: { prefix: 'test-' } },
                { name: 'x-debug', present_match: true },
              ],
            },
            route: { cluster: 'web-canary' },
          },
          { match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'web', weight: { value: 3 } }, { name: 'web-canary', weight: { value: 1 } }] } } },
        ],
      },
    ],
  });
  t.deepEqual(byName.get('outbound|webby'), { name: 'outbound|webby', virtual_hosts: [{ name: 'webby', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'webby' } }] }] }, '"web" names web, not webby');
  t.deepEqual(byName.get('outbound|db')?.virtual_hosts?.[0]?.routes, [{ match: { prefix: '/' }, route: { cluster: 'db' } }]);
  t.false(byName.has('outbound|web-canary'), 'a TCP service has none');
  // Validated as the sidecar does: the header matches are what the route table runs.
  const result = validateResources(TYPE_URLS.RouteConfiguration, [toSnapshot(resources).resources[TYPE_URLS.RouteConfiguration].get('outbound|web')!.resource]);
  t.deepEqual(result.values[0]!.virtualHosts[0]!.routes[0]!.headers, [
    { name: 'x-canary', kind: 'exact', value: '1', invert: false },
    { name: 'x-user', kind: 'prefix', value: 'test-', invert: false },
    { name: 'x-debug', kind: 'present', invert: false },
  ]);
});
