import test from 'ava';
import { packAny, TYPE_URLS, unpackAny, type Cluster, type ClusterLoadAssignment, type Listener, type RouteConfiguration } from '../../xds/envoy/proto.js';
import type { LbEndpoint } from '../../xds/generated/envoy/envoy/config/endpoint/v3/LbEndpoint.js';
import type { Value } from '../../xds/generated/envoy/google/protobuf/Value.js';
import {
  validateCluster,
  validateClusterLoadAssignment,
  validateListener,
  validateResources,
  validateRouteConfiguration,
  type Validation,
} from '../../xds/client/validate.js';

function errorsOf<T>(result: Validation<T>): string[] {
  return result.ok ? [] : result.errors;
}

const tcpProxy = (cluster?: string) => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: packAny(TYPE_URLS.TcpProxy, cluster === undefined ? { stat_prefix: 'x' } : { stat_prefix: 'x', cluster }),
});
const at = (address: string, port: number) => ({ socket_address: { address, port_value: port } });

const outbound = (over: Partial<Listener> = {}): Listener => ({ name: 'outbound|web', address: at('127.0.0.1', 18080), filter_chains: [{ filters: [tcpProxy('web')] }], ...over });
const chain = (port: number) => ({ filter_chain_match: { destination_port: { value: port } }, filters: [tcpProxy(`inbound|${port}`)] });
const inbound = (over: Partial<Listener> = {}): Listener => ({
  name: 'inbound|web-1',
  address: at('0.0.0.0', 15006),
  listener_filters: [{ name: 'envoy.filters.listener.proxy_protocol' }],
  filter_chains: [chain(8080), chain(8081)],
  ...over,
});
const listenerErrors = (l: Listener) => errorsOf(validateListener(packAny(TYPE_URLS.Listener, l)));

// ---- listeners ----------------------------------------------------------------

test('valid listeners: outbound, inbound and API, from an Any or a decoded message', (t) => {
  t.deepEqual(validateListener(packAny(TYPE_URLS.Listener, outbound())), {
    ok: true,
    value: { name: 'outbound|web', kind: 'outbound', address: '127.0.0.1', port: 18080, cluster: 'web' },
  });
  t.deepEqual(validateListener(unpackAny(packAny(TYPE_URLS.Listener, outbound({ address: at('::1', 18081) })), TYPE_URLS.Listener)), {
    ok: true,
    value: { name: 'outbound|web', kind: 'outbound', address: '::1', port: 18081, cluster: 'web' },
  });
  t.deepEqual(validateListener(packAny(TYPE_URLS.Listener, inbound())), {
    ok: true,
    value: { name: 'inbound|web-1', kind: 'inbound', address: '0.0.0.0', port: 15006, ports: [8080, 8081], rbac: [] },
  });
  const hcm = packAny(TYPE_URLS.HttpConnectionManager, { stat_prefix: 'web', rds: { route_config_name: 'web', config_source: { ads: {} } } });
  t.deepEqual(validateListener(packAny(TYPE_URLS.Listener, { name: 'web', api_listener: { api_listener: hcm } })), { ok: true, value: { name: 'web', kind: 'api' } });
});

test('listener: empty name, port 0 or too large, bad IP, no address', (t) => {
  t.deepEqual(listenerErrors(outbound({ name: '' })), ['listener "": name: must not be empty']);
  t.deepEqual(listenerErrors(outbound({ address: at('127.0.0.1', 0) })), ['listener "outbound|web": address.socket_address.port_value: must be 1..65535 (got 0)']);
  t.deepEqual(listenerErrors(outbound({ address: at('127.0.0.1', 70000) })), ['listener "outbound|web": address.socket_address.port_value: must be 1..65535 (got 70000)']);
  t.deepEqual(listenerErrors(outbound({ address: at('localhost', 18080) })), ['listener "outbound|web": address.socket_address.address: must be an IP address (got "localhost")']);
  t.deepEqual(listenerErrors(inbound({ address: at('0.0.0.300', 15006) })), ['listener "inbound|web-1": address.socket_address.address: must be an IP address (got "0.0.0.300")']);
  t.deepEqual(listenerErrors(outbound({ address: null })), ['listener "outbound|web": address.socket_address: required']);
  t.deepEqual(listenerErrors(outbound({ address: { pipe: { path: '/tmp/s' } } })), [
    'listener "outbound|web": address.socket_address: required (got pipe; only IP socket addresses are supported)',
  ]);
});

test('outbound listener: loopback only, one TCP proxy to a cluster, no other filters', (t) => {
  t.deepEqual(listenerErrors(outbound({ address: at('10.0.0.1', 18080) })), [
    'listener "outbound|web": address.socket_address.address: must be a loopback address (127.0.0.0/8 or ::1): outbound listeners serve only local apps (got "10.0.0.1")',
  ]);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [tcpProxy()] }] })), ['listener "outbound|web": filter_chains[0].filters[0].typed_config.cluster: must name a cluster']);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [{ name: 'envoy.filters.network.echo' }] }] })), [
    'listener "outbound|web": filter_chains[0].filters[0].name: unsupported filter "envoy.filters.network.echo" (only envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager)',
  ]);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: packAny(TYPE_URLS.Router, {}) }] }] })), [
    'listener "outbound|web": filter_chains[0].filters[0].typed_config: must be a type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy (got "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")',
  ]);
  t.deepEqual(listenerErrors(outbound({ listener_filters: [{ name: 'envoy.filters.listener.tls_inspector' }] })), [
    'listener "outbound|web": listener_filters[0].name: unsupported listener filter "envoy.filters.listener.tls_inspector" on an outbound listener',
  ]);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [tcpProxy('web')] }, { filters: [tcpProxy('web')] }] })), [
    'listener "outbound|web": filter_chains: an outbound listener must have exactly one filter chain (got 2)',
  ]);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [tcpProxy('web'), tcpProxy('api')] }] })), [
    'listener "outbound|web": filter_chains[0].filters: must be exactly one envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager filter (got 2 filters)',
  ]);
});

const ADS_SOURCE = { ads: {}, resource_api_version: 'V3' as const };
const router = { name: 'envoy.filters.http.router', typed_config: packAny(TYPE_URLS.Router, {}) };
const hcm = (config: Record<string, unknown>) => ({ name: 'envoy.filters.network.http_connection_manager', typed_config: packAny(TYPE_URLS.HttpConnectionManager, config) });
const rdsHcm = (over: Record<string, unknown> = {}) => hcm({ stat_prefix: 'outbound|web', rds: { route_config_name: 'outbound|web', config_source: ADS_SOURCE }, http_filters: [router], ...over });

test('outbound listener with an HTTP connection manager: routes by RDS over ADS, the router its only HTTP filter', (t) => {
  t.deepEqual(validateListener(packAny(TYPE_URLS.Listener, outbound({ filter_chains: [{ filters: [rdsHcm()] }] }))), {
    ok: true,
    value: { name: 'outbound|web', kind: 'http_outbound', address: '127.0.0.1', port: 18080, routeConfigName: 'outbound|web' },
  });
  const self = rdsHcm({ rds: { route_config_name: 'r', config_source: { self: {} } } });
  t.like(validateListener(packAny(TYPE_URLS.Listener, outbound({ filter_chains: [{ filters: [self] }] }))), { ok: true, value: { routeConfigName: 'r' } });
  const chainOf = (filter: object) => outbound({ filter_chains: [{ filters: [filter] }] });
  const p = 'listener "outbound|web": filter_chains[0].filters[0].typed_config';
  t.deepEqual(listenerErrors(chainOf(rdsHcm({ rds: undefined, route_config: { name: 'inline' } }))), [`${p}.rds: required: routes come over RDS (got route_config)`]);
  t.deepEqual(listenerErrors(chainOf(rdsHcm({ rds: { route_config_name: '', config_source: { path: '/etc/routes.yaml' } } }))), [
    `${p}.rds.config_source: must be ads or self (the sidecar has one ADS stream) (got path)`,
    `${p}.rds.route_config_name: must not be empty`,
  ]);
  t.deepEqual(listenerErrors(chainOf(rdsHcm({ http_filters: [{ name: 'envoy.filters.http.fault' }, router] }))), [`${p}.http_filters[0].name: unsupported HTTP filter "envoy.filters.http.fault" (only envoy.filters.http.router)`]);
  t.deepEqual(listenerErrors(chainOf(rdsHcm({ http_filters: [] }))), [`${p}.http_filters: must hold exactly one envoy.filters.http.router filter (got 0)`]);
  t.deepEqual(listenerErrors(chainOf({ name: 'envoy.filters.network.http_connection_manager', typed_config: packAny(TYPE_URLS.TcpProxy, { cluster: 'web' }) })), [
    `${p}: must be a ${TYPE_URLS.HttpConnectionManager} (got "${TYPE_URLS.TcpProxy}")`,
  ]);
  t.deepEqual(listenerErrors(outbound({ filter_chains: [{ filters: [rdsHcm(), tcpProxy('web')] }] })), [
    'listener "outbound|web": filter_chains[0].filters: must be exactly one envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager filter (got 2 filters)',
  ]);
});

test('inbound listener: distinct destination ports, TCP proxies, only the proxy_protocol listener filter', (t) => {
  t.deepEqual(listenerErrors(inbound({ filter_chains: [chain(8080), chain(8081), chain(8080)] })), [
    'listener "inbound|web-1": filter_chains[2].filter_chain_match: port 8080 is also matched by filter_chains[0]',
  ]);
  t.deepEqual(listenerErrors(inbound({ filter_chains: [{ filters: [tcpProxy('inbound|8080')] }, chain(0)] })), [
    'listener "inbound|web-1": filter_chains[0].filter_chain_match.destination_port: required (an inbound filter chain names the local port it serves)',
    'listener "inbound|web-1": filter_chains[1].filter_chain_match.destination_port: must be 1..65535 (got 0)',
  ]);
  t.deepEqual(listenerErrors(inbound({ filter_chains: [] })), ['listener "inbound|web-1": filter_chains: an inbound listener must have at least one filter chain (one per local port)']);
  t.deepEqual(listenerErrors(inbound({ listener_filters: [{ name: 'envoy.filters.listener.proxy_protocol' }, { name: 'envoy.filters.listener.original_dst' }] })), [
    'listener "inbound|web-1": listener_filters[1].name: unsupported listener filter "envoy.filters.listener.original_dst" (only envoy.filters.listener.proxy_protocol)',
  ]);
  t.deepEqual(listenerErrors(inbound({ filter_chains: [chain(8080), { filter_chain_match: { destination_port: { value: 8081 } }, filters: [tcpProxy()] }] })), [
    'listener "inbound|web-1": filter_chains[1].filters[0].typed_config.cluster: must name a cluster',
  ]);
});

test('listener: every problem is reported at once', (t) => {
  t.deepEqual(listenerErrors(outbound({ name: '', address: at('example.com', 0), filter_chains: [{ filters: [{ name: 'envoy.filters.network.echo' }] }] })), [
    'listener "": name: must not be empty',
    'listener "": address.socket_address.address: must be an IP address (got "example.com")',
    'listener "": address.socket_address.port_value: must be 1..65535 (got 0)',
    'listener "": filter_chains[0].filters[0].name: unsupported filter "envoy.filters.network.echo" (only envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager)',
  ]);
});

test('an Any of another type is not a listener', (t) => {
  t.deepEqual(errorsOf(validateListener(packAny(TYPE_URLS.Cluster, { name: 'web' }))), [
    'listener: type_url: must be type.googleapis.com/envoy.config.listener.v3.Listener (got "type.googleapis.com/envoy.config.cluster.v3.Cluster")',
  ]);
});

// ---- clusters -----------------------------------------------------------------

const eds = (over: Partial<Cluster> = {}): Cluster => ({
  name: 'web',
  type: 'EDS',
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
  connect_timeout: { seconds: 2 },
  lb_policy: 'ROUND_ROBIN',
  ...over,
});
const staticCluster = (over: Partial<Cluster> = {}): Cluster => ({
  name: 'inbound|8080',
  type: 'STATIC',
  connect_timeout: { nanos: 250_000_000 },
  load_assignment: { cluster_name: 'inbound|8080', endpoints: [{ lb_endpoints: [{ endpoint: { address: at('127.0.0.1', 8080) } }] }] },
  ...over,
});
const clusterErrors = (c: Cluster) => errorsOf(validateCluster(packAny(TYPE_URLS.Cluster, c)));

test('valid clusters: EDS over ADS (named by service_name when set) and STATIC; no connect_timeout means 5 s', (t) => {
  t.deepEqual(validateCluster(packAny(TYPE_URLS.Cluster, eds())), { ok: true, value: { name: 'web', kind: 'eds', connectTimeoutMs: 2_000, edsServiceName: 'web' } });
  t.deepEqual(validateCluster(packAny(TYPE_URLS.Cluster, eds({ connect_timeout: null, eds_cluster_config: { service_name: 'web-eds', eds_config: { self: {} } } }))), {
    ok: true,
    value: { name: 'web', kind: 'eds', connectTimeoutMs: 5_000, edsServiceName: 'web-eds' },
  });
  t.deepEqual(validateCluster(packAny(TYPE_URLS.Cluster, staticCluster())), {
    ok: true,
    value: { name: 'inbound|8080', kind: 'static', connectTimeoutMs: 250, endpoints: [{ address: '127.0.0.1', port: 8080 }] },
  });
});

test('cluster: empty name, unsupported types and policies', (t) => {
  t.deepEqual(clusterErrors(eds({ name: '' })), ['cluster "": name: must not be empty']);
  t.deepEqual(clusterErrors(eds({ type: 'STRICT_DNS' })), ['cluster "web": type: unsupported cluster type "STRICT_DNS" (only EDS and STATIC)']);
  t.deepEqual(clusterErrors(eds({ type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED' })), [
    'cluster "web": lb_policy: unsupported load balancing policy "CLUSTER_PROVIDED" (only ROUND_ROBIN and LEAST_REQUEST)',
    'cluster "web": type: unsupported cluster type "ORIGINAL_DST" (only EDS and STATIC)',
  ]);
  t.deepEqual(clusterErrors(eds({ type: undefined, cluster_type: { name: 'envoy.clusters.aggregate' } })), ['cluster "web": cluster_type: custom cluster types are not supported (only EDS and STATIC)']);
});

const policy = (name: string, typed_config: ReturnType<typeof packAny>) => ({ typed_extension_config: { name, typed_config } });
const leastRequestPolicy = (choices?: number) => policy('envoy.load_balancing_policies.least_request', packAny(TYPE_URLS.LeastRequest, choices === undefined ? {} : { choice_count: { value: choices } }));
const roundRobinPolicy = policy('envoy.load_balancing_policies.round_robin', packAny(TYPE_URLS.RoundRobin, {}));
const otherPolicy = policy('envoy.load_balancing_policies.maglev', packAny(TYPE_URLS.Router, {}));
const lbOf = (c: Cluster) => {
  const result = validateCluster(packAny(TYPE_URLS.Cluster, c));
  return result.ok ? (result.value.lbPolicy ?? 'round_robin') : result.errors;
};

test('cluster: least_request from lb_policy (two choices), or the first known policy of load_balancing_policy, which wins', (t) => {
  t.deepEqual(validateCluster(packAny(TYPE_URLS.Cluster, eds({ lb_policy: 'LEAST_REQUEST' }))), {
    ok: true,
    value: { name: 'web', kind: 'eds', connectTimeoutMs: 2_000, edsServiceName: 'web', lbPolicy: 'least_request' },
  });
  t.is(lbOf(staticCluster({ lb_policy: 'LEAST_REQUEST', least_request_lb_config: { choice_count: { value: 2 } } })), 'least_request');
  t.is(lbOf(eds({ load_balancing_policy: { policies: [otherPolicy, leastRequestPolicy(2), roundRobinPolicy] } })), 'least_request');
  t.is(lbOf(eds({ load_balancing_policy: { policies: [leastRequestPolicy()] } })), 'least_request');
  t.is(lbOf(eds({ lb_policy: 'LEAST_REQUEST', load_balancing_policy: { policies: [roundRobinPolicy, leastRequestPolicy()] } })), 'round_robin');
  t.is(lbOf(eds({ lb_policy: 'MAGLEV', load_balancing_policy: { policies: [roundRobinPolicy] } })), 'round_robin');
});

test('cluster: least_request with other than two choices, or a policy list the sidecar cannot run, is refused by field path', (t) => {
  t.deepEqual(lbOf(eds({ lb_policy: 'LEAST_REQUEST', least_request_lb_config: { choice_count: { value: 3 } } })), [
    'cluster "web": least_request_lb_config.choice_count: unsupported choice count 3 (only 2)',
  ]);
  t.deepEqual(lbOf(eds({ load_balancing_policy: { policies: [otherPolicy, leastRequestPolicy(5)] } })), [
    'cluster "web": load_balancing_policy.policies[1].typed_extension_config.typed_config.choice_count: unsupported choice count 5 (only 2)',
  ]);
  t.deepEqual(lbOf(eds({ load_balancing_policy: { policies: [otherPolicy, { typed_extension_config: { name: 'x' } }] } })), [
    `cluster "web": load_balancing_policy.policies: lists no policy the sidecar runs (only ${TYPE_URLS.LeastRequest} and ${TYPE_URLS.RoundRobin})`,
  ]);
});

test('cluster: negative, zero and absurd connect timeouts', (t) => {
  t.deepEqual(clusterErrors(eds({ connect_timeout: { seconds: -1 } })), ['cluster "web": connect_timeout: must be more than 0s and at most 300s (got -1s)']);
  t.deepEqual(clusterErrors(eds({ connect_timeout: { seconds: 0 } })), ['cluster "web": connect_timeout: must be more than 0s and at most 300s (got 0s)']);
  t.deepEqual(clusterErrors(eds({ connect_timeout: { seconds: 86_400 } })), ['cluster "web": connect_timeout: must be more than 0s and at most 300s (got 86400s)']);
  t.deepEqual(clusterErrors(eds({ connect_timeout: { seconds: 300 } })), []);
});

test('cluster: EDS needs eds_config over ADS; STATIC needs a valid load_assignment', (t) => {
  t.deepEqual(clusterErrors(eds({ eds_cluster_config: null })), ['cluster "web": eds_cluster_config: required for an EDS cluster']);
  t.deepEqual(clusterErrors(eds({ eds_cluster_config: { eds_config: { api_config_source: { api_type: 'GRPC' } } } })), [
    'cluster "web": eds_cluster_config.eds_config: must be ads or self (the sidecar has one ADS stream) (got api_config_source)',
  ]);
  t.deepEqual(clusterErrors(staticCluster({ load_assignment: null })), ['cluster "inbound|8080": load_assignment: required for a STATIC cluster']);
  t.deepEqual(clusterErrors(staticCluster({ load_assignment: { cluster_name: 'x', endpoints: [{ lb_endpoints: [{ endpoint: { address: at('app.local', 8080) } }] }] } })), [
    'cluster "inbound|8080": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: must be an IP address (got "app.local")',
  ]);
});

// ---- cluster load assignments ------------------------------------------------------

const num = (n: number): Value => ({ numberValue: n });
const str = (s: string): Value => ({ stringValue: s });
const goodFacts: Record<string, Value> = {
  vm_id: str('web-1'),
  hypervisor_id: str('hv-1'),
  vsock_cid: num(3),
  vsock_port: num(15007),
  tcp_port: num(15006),
  vsock_mode: str('host-relay'),
  relay_port: num(15100),
};
const lbEndpoint = (address: string, port: number, fields?: Record<string, Value>, over: Partial<LbEndpoint> = {}): LbEndpoint => ({
  endpoint: { address: at(address, port) },
  ...(fields && { metadata: { filter_metadata: { vsockmesh: { fields } } } }),
  ...over,
});
const cla = (...lbs: LbEndpoint[]): ClusterLoadAssignment => ({ cluster_name: 'web', endpoints: [{ locality: {}, lb_endpoints: lbs }] });
const claErrors = (c: ClusterLoadAssignment) => errorsOf(validateClusterLoadAssignment(packAny(TYPE_URLS.ClusterLoadAssignment, c)));

test('valid assignment: VM facts from the metadata, plain endpoints without, unhealthy and draining ones left out', (t) => {
  const result = validateClusterLoadAssignment(
    packAny(TYPE_URLS.ClusterLoadAssignment, {
      cluster_name: 'web',
      endpoints: [
        { locality: { zone: 'a' }, lb_endpoints: [lbEndpoint('10.0.0.11', 8080, goodFacts), lbEndpoint('10.0.0.12', 8080, undefined, { health_status: 'UNHEALTHY' })] },
        { locality: { zone: 'b' }, lb_endpoints: [lbEndpoint('fd00::13', 8081), lbEndpoint('10.0.0.14', 8080, undefined, { health_status: 'DRAINING' }), lbEndpoint('10.0.0.15', 8080, undefined, { health_status: 'HEALTHY' })] },
      ],
    }),
  );
  t.deepEqual(result, {
    ok: true,
    value: {
      clusterName: 'web',
      endpoints: [
        { address: '10.0.0.11', port: 8080, vm: { vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100 } },
        { address: 'fd00::13', port: 8081 },
        { address: '10.0.0.15', port: 8080 },
      ],
    },
  });
  t.deepEqual(validateClusterLoadAssignment(packAny(TYPE_URLS.ClusterLoadAssignment, { cluster_name: 'db' })), { ok: true, value: { clusterName: 'db', endpoints: [] } });
  // Loopback topology: CID 1, no sidecar ports.
  t.deepEqual(claErrors(cla(lbEndpoint('10.0.0.11', 8080, { ...goodFacts, vsock_cid: num(1), vsock_port: num(0), tcp_port: num(0), vsock_mode: str('loopback'), relay_port: num(0) }))), []);
});

test('assignment: empty cluster name, bad endpoint address and port', (t) => {
  t.deepEqual(claErrors({ ...cla(), cluster_name: '' }), ['cluster_load_assignment "": cluster_name: must not be empty']);
  t.deepEqual(claErrors(cla(lbEndpoint('10.0.0.11', 8080), lbEndpoint('web-2', 0))), [
    'cluster_load_assignment "web": endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: must be an IP address (got "web-2")',
    'cluster_load_assignment "web": endpoints[0].lb_endpoints[1].endpoint.address.socket_address.port_value: must be 1..65535 (got 0)',
  ]);
  t.deepEqual(claErrors(cla({ endpoint: {} })), ['cluster_load_assignment "web": endpoints[0].lb_endpoints[0].endpoint.address: required']);
});

test('assignment: vsockmesh metadata of the wrong type or range is an error naming the endpoint', (t) => {
  const meta = 'cluster_load_assignment "web": endpoints[0].lb_endpoints[0].metadata.filter_metadata.vsockmesh';
  const one = (fields: Record<string, Value>) => claErrors(cla(lbEndpoint('10.0.0.11', 8080, { ...goodFacts, ...fields })));
  t.deepEqual(one({ vsock_cid: str('3') }), [`${meta}.vsock_cid: must be an integer 1..4294967294 (got "3") (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ vsock_cid: num(0) }), [`${meta}.vsock_cid: must be an integer 1..4294967294 (got 0) (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ vsock_cid: num(0xffffffff) }), [`${meta}.vsock_cid: must be an integer 1..4294967294 (got 4294967295) (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ vsock_cid: num(3.5) }), [`${meta}.vsock_cid: must be an integer 1..4294967294 (got 3.5) (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ tcp_port: num(70000) }), [`${meta}.tcp_port: must be an integer 0..65535 (got 70000) (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ relay_port: { boolValue: true } }), [`${meta}.relay_port: must be an integer 0..4294967294 (got true) (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ vsock_mode: str('teleport') }), [`${meta}.vsock_mode: must be one of "host-relay", "direct", "loopback" (got "teleport") (endpoint 10.0.0.11:8080)`]);
  t.deepEqual(one({ vm_id: num(7), hypervisor_id: str('') }), [
    `${meta}.vm_id: must be a non-empty string (got 7) (endpoint 10.0.0.11:8080)`,
    `${meta}.hypervisor_id: must be a non-empty string (got "") (endpoint 10.0.0.11:8080)`,
  ]);
  const missing = Object.fromEntries(Object.entries(goodFacts).filter(([key]) => key !== 'vsock_port'));
  t.deepEqual(claErrors(cla(lbEndpoint('10.0.0.11', 8080, missing))), [`${meta}.vsock_port: must be an integer 0..4294967294 (got nothing) (endpoint 10.0.0.11:8080)`]);
  // Bad facts are an error even on an endpoint that would be left out as unhealthy.
  t.deepEqual(claErrors(cla(lbEndpoint('10.0.0.11', 8080, { ...goodFacts, vsock_cid: str('x') }, { health_status: 'UNHEALTHY' }))), [
    `${meta}.vsock_cid: must be an integer 1..4294967294 (got "x") (endpoint 10.0.0.11:8080)`,
  ]);
});

test('assignment: an endpoint\'s VM facts are its own over its locality\'s (a hypervisor\'s facts sent once per locality); a fact in neither is an error naming the endpoint', (t) => {
  const { hypervisor_id, vsock_mode, relay_port, ...own } = goodFacts;
  const hypervisor = { hypervisor_id: hypervisor_id!, vsock_mode: vsock_mode!, relay_port: relay_port! };
  const split = (localityFields: Record<string, Value>, ...lbs: LbEndpoint[]): ClusterLoadAssignment => ({
    cluster_name: 'web',
    endpoints: [{ locality: { sub_zone: 'hv-1' }, metadata: { filter_metadata: { vsockmesh: { fields: localityFields } } }, lb_endpoints: lbs }],
  });
  const whole = { vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100 };
  const valid = validateClusterLoadAssignment(packAny(TYPE_URLS.ClusterLoadAssignment, split(hypervisor, lbEndpoint('10.0.0.11', 8080, own), lbEndpoint('10.0.0.12', 8080))));
  // The locality's facts make no VM of an endpoint without its own (a plain endpoint).
  t.deepEqual(valid, { ok: true, value: { clusterName: 'web', endpoints: [{ address: '10.0.0.11', port: 8080, vm: whole }, { address: '10.0.0.12', port: 8080 }] } });
  // The endpoint's own field wins over its locality's.
  const over = validateClusterLoadAssignment(packAny(TYPE_URLS.ClusterLoadAssignment, split(hypervisor, lbEndpoint('10.0.0.11', 8080, { ...own, vsock_mode: str('direct') }))));
  t.deepEqual(over.ok && over.value.endpoints[0]!.vm, { ...whole, vsockMode: 'direct' });
  const meta = 'cluster_load_assignment "web": endpoints[0].lb_endpoints[0].metadata.filter_metadata.vsockmesh';
  t.deepEqual(claErrors(split({ hypervisor_id, relay_port: relay_port! }, lbEndpoint('10.0.0.11', 8080, own))), [
    `${meta}.vsock_mode: must be one of "host-relay", "direct", "loopback" (got nothing) (endpoint 10.0.0.11:8080)`,
  ]);
  t.deepEqual(claErrors(split({ ...hypervisor, relay_port: num(-1) }, lbEndpoint('10.0.0.11', 8080, own))), [
    `${meta}.relay_port: must be an integer 0..4294967294 (got -1) (endpoint 10.0.0.11:8080)`,
  ]);
});

// ---- route configurations ----------------------------------------------------------

const routeConfig = (over: Partial<RouteConfiguration> = {}): RouteConfiguration => ({
  name: 'web-routes',
  virtual_hosts: [
    {
      name: 'web',
      domains: ['web', 'web.mesh'],
      routes: [
        { match: { prefix: '/api' }, route: { weighted_clusters: { clusters: [{ name: 'api', weight: { value: 90 } }, { name: 'api-canary', weight: { value: 10 } }] } } },
        { match: { prefix: '/' }, route: { cluster: 'web' } },
      ],
    },
  ],
  ...over,
});
const vhost = (routes: NonNullable<RouteConfiguration['virtual_hosts']>[number]['routes'], extra: Record<string, unknown> = {}) => ({ name: 'v', domains: ['v'], routes, ...extra });
const routeErrors = (r: RouteConfiguration) => errorsOf(validateRouteConfiguration(packAny(TYPE_URLS.RouteConfiguration, r)));

test('valid route configuration: prefixes to a cluster or weighted clusters', (t) => {
  t.deepEqual(validateRouteConfiguration(packAny(TYPE_URLS.RouteConfiguration, routeConfig())), {
    ok: true,
    value: {
      name: 'web-routes',
      virtualHosts: [
        {
          name: 'web',
          domains: ['web', 'web.mesh'],
          routes: [
            { path: { kind: 'prefix', value: '/api' }, headers: [], clusters: [{ name: 'api', weight: 90 }, { name: 'api-canary', weight: 10 }], timeoutMs: 15_000 },
            { path: { kind: 'prefix', value: '/' }, headers: [], clusters: [{ name: 'web', weight: 1 }], timeoutMs: 15_000 },
          ],
        },
      ],
    },
  });
});

test('route configuration: names, domains, matches, actions and weights', (t) => {
  t.deepEqual(routeErrors(routeConfig({ name: '' })), ['route_configuration "": name: must not be empty']);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([], { name: '', domains: [] }), vhost([], { name: 'w', domains: ['v', ''] })] })), [
    'route_configuration "web-routes": virtual_hosts[0].name: must not be empty',
    'route_configuration "web-routes": virtual_hosts[0].domains: must list at least one domain',
    'route_configuration "web-routes": virtual_hosts[1].domains[1]: must not be empty',
  ]);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([]), vhost([], { name: 'w', domains: ['w', 'v'] })] })), [
    'route_configuration "web-routes": virtual_hosts[1].domains[1]: duplicate domain "v" (also in virtual_hosts[0])',
  ]);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([{ match: { path_separated_prefix: '/x' }, route: { cluster: 'web' } }])] })), [
    'route_configuration "web-routes": virtual_hosts[0].routes[0].match: must match by prefix, path or safe_regex (got path_separated_prefix)',
  ]);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([{ match: { prefix: '/' }, redirect: { host_redirect: 'elsewhere' } }])] })), [
    'route_configuration "web-routes": virtual_hosts[0].routes[0]: must be a route action (got redirect)',
  ]);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([{ match: { prefix: '/' }, route: { cluster_header: 'x-cluster' } }])] })), [
    'route_configuration "web-routes": virtual_hosts[0].routes[0].route: must route to cluster or weighted_clusters (got cluster_header)',
  ]);
  t.deepEqual(routeErrors(routeConfig({ virtual_hosts: [vhost([{ match: { prefix: '/' }, route: { cluster: '' } }])] })), [
    'route_configuration "web-routes": virtual_hosts[0].routes[0].route.cluster: must not be empty',
  ]);
  t.deepEqual(
    routeErrors(
      routeConfig({
        virtual_hosts: [
          vhost([
            { match: { prefix: '/a' }, route: { weighted_clusters: { clusters: [] } } },
            { match: { prefix: '/b' }, route: { weighted_clusters: { clusters: [{ name: 'api', weight: { value: 0 } }, { name: '', weight: { value: 1 } }, { name: 'x' }] } } },
          ]),
        ],
      }),
    ),
    [
      'route_configuration "web-routes": virtual_hosts[0].routes[0].route.weighted_clusters.clusters: must list at least one cluster',
      'route_configuration "web-routes": virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: must be at least 1 (got 0)',
      'route_configuration "web-routes": virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].name: must not be empty',
      'route_configuration "web-routes": virtual_hosts[0].routes[1].route.weighted_clusters.clusters[2].weight: must be at least 1 (got 0)',
    ],
  );
});

test('route configuration: exact paths, whole-path regexes, header matches and timeouts', (t) => {
  const result = validateRouteConfiguration(
    packAny(
      TYPE_URLS.RouteConfiguration,
      routeConfig({
        virtual_hosts: [
          vhost(
            [
              { match: { path: '/healthz' }, route: { cluster: 'health', timeout: { seconds: 0 } } },
              { match: { safe_regex: { regex: '/users/[0-9]+' } }, route: { cluster: 'users', timeout: { seconds: 2, nanos: 500_000_000 } } },
              {
                match: {
                  prefix: '/',
                  headers: [
                    { name: 'X-Canary', exact_match: 'yes' },
                    { name: 'x-user', prefix_match: 'beta-', invert_match: true },
                    { name: 'x-trace', present_match: true },
                    { name: 'x-debug', present_match: false },
                    { name: 'x-env', string_match: { exact: 'prod' } },
                    { name: 'x-tenant', string_match: { prefix: 'acme-' } },
                  ],
                },
                route: { cluster: 'canary' },
              },
            ],
            { domains: ['*.Mesh', '*'] },
          ),
        ],
      }),
    ),
  );
  t.deepEqual(result, {
    ok: true,
    value: {
      name: 'web-routes',
      virtualHosts: [
        {
          name: 'v',
          domains: ['*.mesh', '*'],
          routes: [
            { path: { kind: 'exact', value: '/healthz' }, headers: [], clusters: [{ name: 'health', weight: 1 }], timeoutMs: 0 },
            { path: { kind: 'regex', value: '/users/[0-9]+' }, headers: [], clusters: [{ name: 'users', weight: 1 }], timeoutMs: 2_500 },
            {
              path: { kind: 'prefix', value: '/' },
              headers: [
                { name: 'x-canary', kind: 'exact', value: 'yes', invert: false },
                { name: 'x-user', kind: 'prefix', value: 'beta-', invert: true },
                { name: 'x-trace', kind: 'present', invert: false },
                { name: 'x-debug', kind: 'present', invert: true },
                { name: 'x-env', kind: 'exact', value: 'prod', invert: false },
                { name: 'x-tenant', kind: 'prefix', value: 'acme-', invert: false },
              ],
              clusters: [{ name: 'canary', weight: 1 }],
              timeoutMs: 15_000,
            },
          ],
        },
      ],
    },
  });
});

test('route configuration: a bad regex, path, header matcher or domain is refused by field path', (t) => {
  t.deepEqual(
    routeErrors(
      routeConfig({
        virtual_hosts: [
          vhost(
            [
              { match: { safe_regex: { regex: '/users/(' } }, route: { cluster: 'users' } },
              { match: { safe_regex: { regex: '(a)\\1' } }, route: { cluster: 'users' } },
              { match: { path: 'healthz' }, route: { cluster: 'health' } },
              { match: { prefix: '/', headers: [{ name: 'x', suffix_match: 'z' }, { name: '', exact_match: 'a' }, { name: 'y', string_match: { suffix: 'q' } }] }, route: { cluster: 'web' } },
              { match: { prefix: '/', case_sensitive: { value: false } }, route: { cluster: 'web', timeout: { seconds: -1 } } },
            ],
            { domains: ['a.*.mesh'] },
          ),
        ],
      }),
    ),
    [
      'route_configuration "web-routes": virtual_hosts[0].domains[0]: wildcard only as a whole prefix or suffix (got "a.*.mesh")',
      'route_configuration "web-routes": virtual_hosts[0].routes[0].match.safe_regex.regex: not a valid regular expression: Unterminated group',
      'route_configuration "web-routes": virtual_hosts[0].routes[1].match.safe_regex.regex: backreferences and lookaround are not supported (RE2 syntax)',
      'route_configuration "web-routes": virtual_hosts[0].routes[2].match.path: must start with "/" (got "healthz")',
      'route_configuration "web-routes": virtual_hosts[0].routes[3].match.headers[0]: only exact_match, prefix_match, present_match and string_match are supported (got suffix_match)',
      'route_configuration "web-routes": virtual_hosts[0].routes[3].match.headers[1].name: must not be empty',
      'route_configuration "web-routes": virtual_hosts[0].routes[3].match.headers[2].string_match: only exact and prefix are supported (got suffix)',
      'route_configuration "web-routes": virtual_hosts[0].routes[4].match.case_sensitive: only case-sensitive matches are supported',
      'route_configuration "web-routes": virtual_hosts[0].routes[4].route.timeout: must not be negative (got -1s)',
    ],
  );
});

// ---- validateResources --------------------------------------------------------------

test('validateResources: all valid resources of the requested type', (t) => {
  const result = validateResources(TYPE_URLS.Listener, [packAny(TYPE_URLS.Listener, outbound()), packAny(TYPE_URLS.Listener, inbound())]);
  t.true(result.ok);
  t.deepEqual(result.refused, []);
  t.deepEqual(
    result.values.map((v) => [v.name, v.kind]),
    [
      ['outbound|web', 'outbound'],
      ['inbound|web-1', 'inbound'],
    ],
  );
  t.deepEqual(validateResources(TYPE_URLS.Cluster, []), { ok: true, values: [], refused: [] });
  t.deepEqual(validateResources(TYPE_URLS.ClusterLoadAssignment, [packAny(TYPE_URLS.ClusterLoadAssignment, cla())]).values, [{ clusterName: 'web', endpoints: [] }]);
});

test('validateResources: each resource on its own: the valid ones are returned, the others refused by name (null when unreadable)', (t) => {
  const result = validateResources(TYPE_URLS.Listener, [
    packAny(TYPE_URLS.Listener, outbound()),
    packAny(TYPE_URLS.Cluster, eds()),
    { type_url: TYPE_URLS.Listener, value: Buffer.from([0x0a, 0xff]) },
    packAny(TYPE_URLS.Listener, outbound({ address: at('127.0.0.1', 0), name: 'outbound|api' })),
    packAny(TYPE_URLS.Listener, inbound()),
  ]);
  t.false(result.ok);
  t.is(result.refused.length, 3);
  t.deepEqual(result.refused[0], { name: null, errors: ['resources[1]: type_url: must be type.googleapis.com/envoy.config.listener.v3.Listener (got "type.googleapis.com/envoy.config.cluster.v3.Cluster")'] });
  t.is(result.refused[1]!.name, null);
  t.regex(result.refused[1]!.errors.join(), /^resources\[2\]: unpackAny: cannot decode type\.googleapis\.com\/envoy\.config\.listener\.v3\.Listener: /);
  t.deepEqual(result.refused[2], { name: 'outbound|api', errors: ['listener "outbound|api": address.socket_address.port_value: must be 1..65535 (got 0)'] });
  t.deepEqual(
    result.values.map((v) => v.name),
    ['outbound|web', 'inbound|web-1'],
    'the valid ones, in order',
  );
  const cds = validateResources(TYPE_URLS.Cluster, [packAny(TYPE_URLS.Cluster, eds()), packAny(TYPE_URLS.Cluster, eds({ name: '' }))]);
  t.deepEqual(cds, { ok: false, values: [{ name: 'web', kind: 'eds', connectTimeoutMs: 2_000, edsServiceName: 'web' }], refused: [{ name: '', errors: ['cluster "": name: must not be empty'] }] });
});

test('validateResources: a name sent twice refuses every copy (neither is known to be the intended one), valid or not', (t) => {
  const result = validateResources(TYPE_URLS.Listener, [
    packAny(TYPE_URLS.Listener, outbound()),
    packAny(TYPE_URLS.Listener, inbound()),
    packAny(TYPE_URLS.Listener, outbound({ address: at('127.0.0.1', 18081) })),
    packAny(TYPE_URLS.Listener, outbound({ address: at('127.0.0.1', 18082) })),
    packAny(TYPE_URLS.Listener, outbound({ name: 'outbound|bad', address: at('127.0.0.1', 0) })),
    packAny(TYPE_URLS.Listener, outbound({ name: 'outbound|bad' })),
  ]);
  t.deepEqual(
    result.values.map((v) => v.name),
    ['inbound|web-1'],
  );
  t.deepEqual(result.refused, [
    {
      name: 'outbound|web',
      errors: ['listener "outbound|web": duplicate name (resources[0] and resources[2])', 'listener "outbound|web": duplicate name (resources[0] and resources[3])'],
    },
    {
      name: 'outbound|bad',
      errors: ['listener "outbound|bad": address.socket_address.port_value: must be 1..65535 (got 0)', 'listener "outbound|bad": duplicate name (resources[4] and resources[5])'],
    },
  ]);
});
