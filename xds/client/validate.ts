// What a sidecar makes of the xDS resources it receives: decoded Envoy
// messages (wire types) to domain types, or every problem by field path, e.g.
//   listener "x": address.socket_address.port_value: must be 1..65535 (got 0)
// Anything a sidecar cannot carry out faithfully is rejected (and NACKed by
// the ADS client) rather than half-applied.

import { isIP } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import {
  TYPE_URLS,
  unpackAny,
  type Any,
  type Any__Output,
  type Cluster__Output,
  type ClusterLoadAssignment__Output,
  type EnvoyMessageOutput,
  type Listener__Output,
  type ResourceTypeUrl,
  type RouteConfiguration__Output,
} from '../envoy/proto.js';
import type { Address__Output } from '../generated/envoy/envoy/config/core/v3/Address.js';
import type { LbEndpoint__Output } from '../generated/envoy/envoy/config/endpoint/v3/LbEndpoint.js';
import type { Filter__Output } from '../generated/envoy/envoy/config/listener/v3/Filter.js';
import type { Duration__Output } from '../generated/envoy/google/protobuf/Duration.js';
import type { Struct__Output } from '../generated/envoy/google/protobuf/Struct.js';
import type { Value__Output } from '../generated/envoy/google/protobuf/Value.js';
import type { VsockMode } from '../../proxy/resolve/types.js';
import type { PeerTlsMode } from '../../proxy/peer-tls/peer-policy.js';
import { PEER_MODES, modeOfTransports } from '../../proxy/peer-tls/peer-modes.js';
import { HTTP_CONNECTION_MANAGER_FILTER, PROXY_PROTOCOL_LISTENER_FILTER, RBAC_NETWORK_FILTER, ROUTER_FILTER, TCP_PROXY_FILTER, VSOCKMESH_METADATA_KEY } from '../envoy/names.js';
import type { PortRbac, RbacFilter } from '../../proxy/policy/rbac.js';
import { isRbacFilter, rbacFilter } from './validate-rbac.js';
import { clusterLbPolicy } from './validate-lb-policy.js';
import { DEFAULT_ROUTE_TIMEOUT_MS, domainProblem, regexProblem, type HeaderMatch, type PathMatch, type Route } from '../../proxy/http/route-table.js';
import { MAX_CONNECT_TIMEOUT_MS, type XdsCluster, type XdsClusterLoadAssignment, type XdsEndpoint, type XdsEndpointVm, type XdsListener, type XdsRouteConfig } from '../../proxy/dynamic/types.js';

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: string[] };

/** The domain value of each resource type. */
export interface XdsResourceValues {
  'type.googleapis.com/envoy.config.cluster.v3.Cluster': XdsCluster;
  'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment': XdsClusterLoadAssignment;
  'type.googleapis.com/envoy.config.listener.v3.Listener': XdsListener;
  'type.googleapis.com/envoy.config.route.v3.RouteConfiguration': XdsRouteConfig;
}

/** How errors name a resource of each type. */
const KIND: Record<ResourceTypeUrl, string> = {
  [TYPE_URLS.Cluster]: 'cluster',
  [TYPE_URLS.ClusterLoadAssignment]: 'cluster_load_assignment',
  [TYPE_URLS.Listener]: 'listener',
  [TYPE_URLS.RouteConfiguration]: 'route_configuration',
};

const U32_MAX = 0xffffffff;
/** Default connect timeout when a cluster sets none (Envoy's). */
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const VSOCK_MODES: readonly VsockMode[] = ['host-relay', 'direct', 'loopback'];
/** An inbound filter chain's transport_protocol: TLS peers, plain-text ones, or (empty) either, as the sidecar's own peer_tls.mode says. */
const TRANSPORT_PROTOCOLS: readonly string[] = ['tls', 'raw_buffer', ''];
/** Endpoints in these states get no traffic (as in Envoy and gRPC); they are left out, not errors. */
const EXCLUDED_HEALTH = new Set(['UNHEALTHY', 'DRAINING', 'TIMEOUT']);

/** Collects `path: message` problems. */
type Report = (path: string, message: string) => void;

function finish<T>(kind: string, name: string, errors: string[], value: () => T): Validation<T> {
  if (errors.length > 0) return { ok: false, errors: errors.map((e) => `${kind} ${JSON.stringify(name)}: ${e}`) };
  return { ok: true, value: value() };
}

function collector(): { errors: string[]; report: Report } {
  const errors: string[] = [];
  return { errors, report: (path, message) => errors.push(`${path}: ${message}`) };
}

const join = (base: string, field: string): string => (base === '' ? field : `${base}.${field}`);

function isAny(input: object): input is Any | Any__Output {
  return 'type_url' in input || '@type' in input;
}

/** The type URL of an Any (an expanded Any names it in "@type"; unpackAny refuses those). */
function typeUrlOf(any: Any | Any__Output): string {
  return '@type' in any ? String(any['@type']) : (any.type_url ?? '');
}

/** The decoded message of an Any (checking its type), or the message itself. */
function decode<U extends ResourceTypeUrl>(input: Any | Any__Output | EnvoyMessageOutput<U>, typeUrl: U): Validation<EnvoyMessageOutput<U>> {
  if (!isAny(input)) return { ok: true, value: input };
  const kind = KIND[typeUrl];
  if (typeUrlOf(input) !== typeUrl) return { ok: false, errors: [`${kind}: type_url: must be ${typeUrl} (got ${JSON.stringify(typeUrlOf(input))})`] };
  try {
    return { ok: true, value: unpackAny(input, typeUrl) };
  } catch (err) {
    return { ok: false, errors: [`${kind}: ${err instanceof Error ? err.message : String(err)}`] };
  }
}

function nonEmpty(value: string, path: string, report: Report): void {
  if (value === '') report(path, 'must not be empty');
}

/** An IP socket address with a port 1..65535; `path` names the Address. */
function socketAddress(address: Address__Output | null | undefined, path: string, report: Report): { address: string; port: number } | undefined {
  const socket = address?.socket_address;
  if (!address || address.address !== 'socket_address' || !socket) {
    report(join(path, 'socket_address'), address?.address ? `required (got ${address.address}; only IP socket addresses are supported)` : 'required');
    return undefined;
  }
  let ok = true;
  if (isIP(socket.address) === 0) {
    report(join(path, 'socket_address.address'), `must be an IP address (got ${JSON.stringify(socket.address)})`);
    ok = false;
  }
  if (socket.port_specifier === 'named_port') {
    report(join(path, 'socket_address.named_port'), 'named ports are not supported (use port_value)');
    return undefined;
  }
  const port = socket.port_value ?? 0;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    report(join(path, 'socket_address.port_value'), `must be 1..65535 (got ${port})`);
    ok = false;
  }
  return ok ? { address: socket.address, port } : undefined;
}

function formatSeconds(d: Duration__Output): string {
  return `${d.seconds + d.nanos / 1e9}s`;
}

/** A connect timeout in ms: unset → Envoy's 5 s; otherwise more than 0 and at most MAX_CONNECT_TIMEOUT_MS. */
function connectTimeout(d: Duration__Output | null | undefined, path: string, report: Report): number {
  if (!d) return DEFAULT_CONNECT_TIMEOUT_MS;
  const ms = d.seconds * 1000 + d.nanos / 1e6;
  if (d.seconds < 0 || d.nanos < 0 || !(ms > 0) || ms > MAX_CONNECT_TIMEOUT_MS) {
    report(path, `must be more than 0s and at most ${MAX_CONNECT_TIMEOUT_MS / 1000}s (got ${formatSeconds(d)})`);
    return 0;
  }
  return Math.ceil(ms);
}

/** A network filter's typed_config, which must be a `typeUrl` message; `path` names the filter. */
function filterConfig<U extends typeof TYPE_URLS.TcpProxy | typeof TYPE_URLS.HttpConnectionManager>(filter: Filter__Output, typeUrl: U, path: string, report: Report): EnvoyMessageOutput<U> | undefined {
  const config = filter.typed_config;
  if (!config || config.type_url !== typeUrl) {
    report(join(path, 'typed_config'), `must be a ${typeUrl} (got ${JSON.stringify(config?.type_url ?? 'nothing')})`);
    return undefined;
  }
  try {
    return unpackAny(config, typeUrl);
  } catch (err) {
    report(join(path, 'typed_config'), err instanceof Error ? err.message : String(err));
    return undefined;
  }
}

/** The TCP proxy's cluster of a network filter that must be envoy.filters.network.tcp_proxy. */
function tcpProxyCluster(filter: Filter__Output, path: string, report: Report): string | undefined {
  if (filter.name !== TCP_PROXY_FILTER) {
    report(join(path, 'name'), `unsupported filter ${JSON.stringify(filter.name)} (only ${TCP_PROXY_FILTER})`);
    return undefined;
  }
  const tcp = filterConfig(filter, TYPE_URLS.TcpProxy, path, report);
  if (tcp === undefined) return undefined;
  if (tcp.cluster_specifier !== 'cluster' || !tcp.cluster) {
    report(join(path, 'typed_config.cluster'), tcp.cluster_specifier === 'weighted_clusters' ? 'must name one cluster (weighted_clusters is not supported)' : 'must name a cluster');
    return undefined;
  }
  return tcp.cluster;
}

/**
 * The route configuration of an envoy.filters.network.http_connection_manager
 * filter: RDS over the ADS stream, the router as its only HTTP filter (the
 * sidecar runs no other). Inline route_config is refused: the control plane
 * sends routes over RDS, so that a route change keeps the listener.
 */
function httpRouteConfigName(filter: Filter__Output, path: string, report: Report): string | undefined {
  const hcm = filterConfig(filter, TYPE_URLS.HttpConnectionManager, path, report);
  if (hcm === undefined) return undefined;
  const at = join(path, 'typed_config');
  const routers = hcm.http_filters.filter((f) => f.name === ROUTER_FILTER).length;
  hcm.http_filters.forEach((f, i) => {
    if (f.name !== ROUTER_FILTER) report(`${at}.http_filters[${i}].name`, `unsupported HTTP filter ${JSON.stringify(f.name.slice(0, 128))} (only ${ROUTER_FILTER})`);
  });
  if (routers !== 1) report(`${at}.http_filters`, `must hold exactly one ${ROUTER_FILTER} filter (got ${routers})`);
  if (hcm.route_specifier !== 'rds' || !hcm.rds) {
    report(`${at}.rds`, `required: routes come over RDS (got ${hcm.route_specifier ?? 'nothing'})`);
    return undefined;
  }
  const source = hcm.rds.config_source?.config_source_specifier;
  if (source !== 'ads' && source !== 'self') report(`${at}.rds.config_source`, `must be ads or self (the sidecar has one ADS stream) (got ${source ?? 'nothing'})`);
  if (hcm.rds.route_config_name === '') report(`${at}.rds.route_config_name`, 'must not be empty');
  return hcm.rds.route_config_name || undefined;
}

/** What the one filter chain's one filter does: a TCP proxy to a cluster, or HTTP routing by a route configuration. */
function onlyFilter(chain: { filters: Filter__Output[] }, path: string, report: Report): { cluster: string } | { routeConfigName: string } | undefined {
  if (chain.filters.length !== 1) report(join(path, 'filters'), `must be exactly one ${TCP_PROXY_FILTER} or ${HTTP_CONNECTION_MANAGER_FILTER} filter (got ${chain.filters.length} filters)`);
  const filter = chain.filters[0];
  if (filter === undefined) return undefined;
  const at = join(path, 'filters[0]');
  if (filter.name !== HTTP_CONNECTION_MANAGER_FILTER && filter.name !== TCP_PROXY_FILTER) {
    report(join(at, 'name'), `unsupported filter ${JSON.stringify(filter.name)} (only ${TCP_PROXY_FILTER} or ${HTTP_CONNECTION_MANAGER_FILTER})`);
    return undefined;
  }
  if (filter.name === HTTP_CONNECTION_MANAGER_FILTER) {
    const routeConfigName = httpRouteConfigName(filter, at, report);
    return routeConfigName === undefined ? undefined : { routeConfigName };
  }
  const cluster = tcpProxyCluster(filter, at, report);
  return cluster === undefined ? undefined : { cluster };
}

function validateOutbound(l: Listener__Output, report: Report): XdsListener | undefined {
  const bind = socketAddress(l.address, 'address', report);
  if (bind && !(bind.address === '::1' || /^127\./.test(bind.address))) {
    report('address.socket_address.address', `must be a loopback address (127.0.0.0/8 or ::1): outbound listeners serve only local apps (got ${JSON.stringify(bind.address)})`);
  }
  l.listener_filters.forEach((f, i) => report(`listener_filters[${i}].name`, `unsupported listener filter ${JSON.stringify(f.name)} on an outbound listener`));
  if (l.filter_chains.length !== 1) {
    report('filter_chains', `an outbound listener must have exactly one filter chain (got ${l.filter_chains.length})`);
    return undefined;
  }
  const does = onlyFilter(l.filter_chains[0]!, 'filter_chains[0]', report);
  // The node's own placement, when the control plane knows it.
  const facts = l.metadata?.filter_metadata?.[VSOCKMESH_METADATA_KEY]?.fields ?? {};
  const vmId = facts.vm_id?.kind === 'stringValue' ? facts.vm_id.stringValue : undefined;
  const hypervisorId = facts.hypervisor_id?.kind === 'stringValue' ? facts.hypervisor_id.stringValue : undefined;
  if (l.metadata?.filter_metadata?.[VSOCKMESH_METADATA_KEY] && (!vmId || !hypervisorId)) {
    report(`metadata.filter_metadata.${VSOCKMESH_METADATA_KEY}`, 'must have non-empty vm_id and hypervisor_id strings');
  }
  if (!bind || does === undefined) return undefined;
  const local = vmId && hypervisorId ? { local: { vmId, hypervisorId } } : {};
  if ('routeConfigName' in does) return { name: l.name, kind: 'http_outbound', address: bind.address, port: bind.port, routeConfigName: does.routeConfigName, ...local };
  return { name: l.name, kind: 'outbound', address: bind.address, port: bind.port, cluster: does.cluster, ...local };
}

function validateInbound(l: Listener__Output, report: Report): XdsListener | undefined {
  const bind = socketAddress(l.address, 'address', report);
  l.listener_filters.forEach((f, i) => {
    if (f.name !== PROXY_PROTOCOL_LISTENER_FILTER) report(`listener_filters[${i}].name`, `unsupported listener filter ${JSON.stringify(f.name)} (only ${PROXY_PROTOCOL_LISTENER_FILTER})`);
  });
  if (l.filter_chains.length === 0) report('filter_chains', 'an inbound listener must have at least one filter chain (one per local port)');
  const ports: number[] = [];
  // Per port, the chain of each transport protocol ('' : any, the sidecar's own mode decides).
  const chains = new Map<number, Map<string, number>>();
  // Per port, the RBAC filters of its first chain: the sidecar enforces a port's policies whatever the transport.
  const rbacAt = new Map<number, { filters: RbacFilter[]; chain: number }>();
  l.filter_chains.forEach((chain, i) => {
    const at = `filter_chains[${i}]`;
    const port = chain.filter_chain_match?.destination_port?.value;
    const transport = chain.filter_chain_match?.transport_protocol ?? '';
    if (!TRANSPORT_PROTOCOLS.includes(transport)) {
      report(`${at}.filter_chain_match.transport_protocol`, `must be "tls", "raw_buffer" or empty (got ${JSON.stringify(transport.slice(0, 64))})`);
    }
    if (port === undefined) {
      report(`${at}.filter_chain_match.destination_port`, 'required (an inbound filter chain names the local port it serves)');
    } else if (!Number.isInteger(port) || port < 1 || port > 65535) {
      report(`${at}.filter_chain_match.destination_port`, `must be 1..65535 (got ${port})`);
    } else {
      const seen = chains.get(port) ?? new Map<string, number>();
      const clash = [...seen].find(([t]) => t === transport || t === '' || transport === '');
      if (clash) report(`${at}.filter_chain_match`, `port ${port}${transport === '' ? '' : ` over ${transport}`} is also matched by filter_chains[${clash[1]}]`);
      else seen.set(transport, i);
      if (!chains.has(port)) ports.push(port);
      chains.set(port, seen);
    }
    // RBAC filters first (the policies of this port, in order), then the TCP proxy.
    const last = chain.filters.length - 1;
    const filters: RbacFilter[] = [];
    chain.filters.slice(0, Math.max(last, 0)).forEach((f, j) => {
      if (!isRbacFilter(f)) report(`${at}.filters[${j}].name`, `unsupported filter ${JSON.stringify(f.name)} (before the ${TCP_PROXY_FILTER} filter only ${RBAC_NETWORK_FILTER})`);
      else if (port !== undefined) {
        const filter = rbacFilter(f, port, `${at}.filters[${j}]`, report);
        if (filter) filters.push(filter);
      }
    });
    if (last < 0) report(`${at}.filters`, `must end with a ${TCP_PROXY_FILTER} filter (got no filter)`);
    else tcpProxyCluster(chain.filters[last]!, `${at}.filters[${last}]`, report);
    if (port !== undefined) {
      const first = rbacAt.get(port);
      if (first === undefined) rbacAt.set(port, { filters, chain: i });
      else if (!isDeepStrictEqual(first.filters, filters)) {
        report(`${at}.filters`, `the RBAC filters must be those of filter_chains[${first.chain}] (every chain of port ${port} is under the same policies)`);
      }
    }
  });
  const peerModes: Record<number, PeerTlsMode> = {};
  for (const [port, seen] of chains) if (!seen.has('')) peerModes[port] = modeOfTransports(new Set([...seen.keys()] as Array<'tls' | 'raw_buffer'>));
  if (!bind) return undefined;
  const rbac: PortRbac[] = [...rbacAt].filter(([, r]) => r.filters.length > 0).map(([port, r]) => ({ port, filters: r.filters }));
  if (!bind) return undefined;
  return { name: l.name, kind: 'inbound', address: bind.address, port: bind.port, ports, rbac, ...(Object.keys(peerModes).length > 0 && { peerModes }) };
}

/**
 * A Listener (an Any or a decoded message). With api_listener: kind "api"
 * (gRPC clients' listener; sidecars ignore it). With the proxy_protocol
 * listener filter: kind "inbound" (one TCP-proxy filter chain per
 * destination port). Otherwise "outbound": a loopback address and one filter
 * chain with one TCP proxy to a cluster, or "http_outbound" when that filter
 * is an HTTP connection manager taking its routes over RDS.
 */
export function validateListener(input: Any | Any__Output | Listener__Output): Validation<XdsListener> {
  const decoded = decode(input, TYPE_URLS.Listener);
  if (!decoded.ok) return decoded;
  const l = decoded.value;
  const { errors, report } = collector();
  nonEmpty(l.name, 'name', report);
  let value: XdsListener | undefined;
  if (l.api_listener) {
    value = { name: l.name, kind: 'api' };
  } else if (l.listener_filters.some((f) => f.name === PROXY_PROTOCOL_LISTENER_FILTER)) {
    value = validateInbound(l, report);
  } else {
    value = validateOutbound(l, report);
  }
  return finish('listener', l.name, errors, () => value!);
}

function describe(v: Value__Output | undefined): string {
  switch (v?.kind) {
    case 'stringValue':
      return JSON.stringify(v.stringValue);
    case 'numberValue':
      return String(v.numberValue);
    case 'boolValue':
      return String(v.boolValue);
    case 'nullValue':
      return 'null';
    case 'structValue':
      return 'a struct';
    case 'listValue':
      return 'a list';
    default:
      return 'nothing';
  }
}

/** The VM facts in an endpoint's vsockmesh metadata (`own`), a field it lacks taken from its locality's (`shared`). */
function vmFacts(own: Struct__Output, shared: Struct__Output | undefined, path: string, report: Report): XdsEndpointVm | undefined {
  const ownFields = own.fields ?? {};
  const sharedFields = shared?.fields ?? {};
  const field = (key: string): Value__Output | undefined => ownFields[key] ?? sharedFields[key];
  let ok = true;
  const text = (key: string, rule: string, allowed?: readonly string[]): string => {
    const v = field(key);
    if (v?.kind === 'stringValue' && v.stringValue !== '' && (allowed === undefined || allowed.includes(v.stringValue!))) return v.stringValue!;
    report(`${path}.${key}`, `${rule} (got ${describe(v)})`);
    ok = false;
    return '';
  };
  const int = (key: string, min: number, max: number): number => {
    const v = field(key);
    const n = v?.kind === 'numberValue' ? v.numberValue! : NaN;
    if (Number.isInteger(n) && n >= min && n <= max) return n;
    report(`${path}.${key}`, `must be an integer ${min}..${max} (got ${describe(v)})`);
    ok = false;
    return 0;
  };
  const vm: XdsEndpointVm = {
    vmId: text('vm_id', 'must be a non-empty string'),
    hypervisorId: text('hypervisor_id', 'must be a non-empty string'),
    vsockCid: int('vsock_cid', 1, U32_MAX - 1),
    vsockPort: int('vsock_port', 0, U32_MAX - 1),
    tcpPort: int('tcp_port', 0, 65535),
    vsockMode: text('vsock_mode', `must be one of ${VSOCK_MODES.map((m) => JSON.stringify(m)).join(', ')}`, VSOCK_MODES) as VsockMode,
    relayPort: int('relay_port', 0, U32_MAX - 1),
  };
  if (field('peer_mode') !== undefined) vm.peerMode = text('peer_mode', `must be one of ${PEER_MODES.map((m) => JSON.stringify(m)).join(', ')}`, PEER_MODES) as PeerTlsMode;
  return ok ? vm : undefined;
}

/**
 * An endpoint with its VM facts, when it carries vsockmesh metadata: its own
 * fields over its locality's (`shared`: the hypervisor's facts, which a
 * control plane sends once per locality; one that sends every fact per
 * endpoint sends no locality metadata). Metadata errors name the endpoint's address.
 */
function endpoint(lb: LbEndpoint__Output, shared: Struct__Output | undefined, path: string, report: Report): XdsEndpoint | undefined {
  const at = lb.endpoint?.address ? socketAddress(lb.endpoint.address, `${path}.endpoint.address`, report) : undefined;
  if (!lb.endpoint?.address) report(`${path}.endpoint.address`, 'required');
  const own = lb.metadata?.filter_metadata?.[VSOCKMESH_METADATA_KEY];
  let vm: XdsEndpointVm | undefined;
  let factsOk = true;
  if (own) {
    const name = at ? ` (endpoint ${at.address}:${at.port})` : '';
    vm = vmFacts(own, shared, `${path}.metadata.filter_metadata.${VSOCKMESH_METADATA_KEY}`, (p, m) => report(p, `${m}${name}`));
    factsOk = vm !== undefined;
  }
  if (!at || !factsOk) return undefined;
  return { address: at.address, port: at.port, ...(vm !== undefined && { vm }) };
}

/** The endpoints of every locality of an assignment, leaving out unhealthy and draining ones. */
function endpointsOf(cla: ClusterLoadAssignment__Output, path: string, report: Report): XdsEndpoint[] {
  const out: XdsEndpoint[] = [];
  cla.endpoints.forEach((locality, i) =>
    locality.lb_endpoints.forEach((lb, j) => {
      const e = endpoint(lb, locality.metadata?.filter_metadata?.[VSOCKMESH_METADATA_KEY], join(path, `endpoints[${i}].lb_endpoints[${j}]`), report);
      if (e !== undefined && !EXCLUDED_HEALTH.has(lb.health_status)) out.push(e);
    }),
  );
  return out;
}

/** A ClusterLoadAssignment (an Any or a decoded message): its endpoints and their VM facts. */
export function validateClusterLoadAssignment(input: Any | Any__Output | ClusterLoadAssignment__Output): Validation<XdsClusterLoadAssignment> {
  const decoded = decode(input, TYPE_URLS.ClusterLoadAssignment);
  if (!decoded.ok) return decoded;
  const cla = decoded.value;
  const { errors, report } = collector();
  nonEmpty(cla.cluster_name, 'cluster_name', report);
  const endpoints = endpointsOf(cla, '', report);
  return finish('cluster_load_assignment', cla.cluster_name, errors, () => ({ clusterName: cla.cluster_name, endpoints }));
}

/** A Cluster (an Any or a decoded message): EDS over ADS, or STATIC with its endpoints; round robin or least_request (validate-lb-policy.ts). */
export function validateCluster(input: Any | Any__Output | Cluster__Output): Validation<XdsCluster> {
  const decoded = decode(input, TYPE_URLS.Cluster);
  if (!decoded.ok) return decoded;
  const c = decoded.value;
  const { errors, report } = collector();
  nonEmpty(c.name, 'name', report);
  const connectTimeoutMs = connectTimeout(c.connect_timeout, 'connect_timeout', report);
  const policy = clusterLbPolicy(c, report);
  const lb = policy === 'least_request' ? { lbPolicy: policy } : {};
  // An unset discovery type is STATIC (proto3 default), as in Envoy.
  const type = c.type ?? 'STATIC';
  let value: (() => XdsCluster) | undefined;
  if (c.cluster_discovery_type === 'cluster_type') {
    report('cluster_type', 'custom cluster types are not supported (only EDS and STATIC)');
  } else if (type === 'EDS') {
    const source = c.eds_cluster_config?.eds_config;
    if (!c.eds_cluster_config) report('eds_cluster_config', 'required for an EDS cluster');
    else if (!source || (source.config_source_specifier !== 'ads' && source.config_source_specifier !== 'self')) {
      report('eds_cluster_config.eds_config', `must be ads or self (the sidecar has one ADS stream) (got ${source?.config_source_specifier ?? 'nothing'})`);
    }
    const edsServiceName = c.eds_cluster_config?.service_name || c.name;
    value = () => ({ name: c.name, kind: 'eds', connectTimeoutMs, edsServiceName, ...lb });
  } else if (type === 'STATIC') {
    let endpoints: XdsEndpoint[] = [];
    if (!c.load_assignment) report('load_assignment', 'required for a STATIC cluster');
    else endpoints = endpointsOf(c.load_assignment, 'load_assignment', report);
    value = () => ({ name: c.name, kind: 'static', connectTimeoutMs, endpoints, ...lb });
  } else {
    report('type', `unsupported cluster type ${JSON.stringify(type)} (only EDS and STATIC)`);
  }
  return finish('cluster', c.name, errors, () => value!());
}

type RouteAction = NonNullable<RouteConfiguration__Output['virtual_hosts'][number]['routes'][number]['route']>;

function routeClusters(action: RouteAction, path: string, report: Report): Array<{ name: string; weight: number }> {
  if (action.cluster_specifier === 'cluster') {
    if (!action.cluster) report(`${path}.cluster`, 'must not be empty');
    return [{ name: action.cluster ?? '', weight: 1 }];
  }
  if (action.cluster_specifier !== 'weighted_clusters') {
    report(path, `must route to cluster or weighted_clusters (got ${action.cluster_specifier ?? 'nothing'})`);
    return [];
  }
  const clusters = action.weighted_clusters?.clusters ?? [];
  if (clusters.length === 0) report(`${path}.weighted_clusters.clusters`, 'must list at least one cluster');
  return clusters.map((c, i) => {
    const at = `${path}.weighted_clusters.clusters[${i}]`;
    if (c.name === '') report(`${at}.name`, 'must not be empty');
    const weight = c.weight?.value ?? 0;
    if (weight < 1) report(`${at}.weight`, `must be at least 1 (got ${weight})`);
    return { name: c.name, weight };
  });
}

type RouteMessage = RouteConfiguration__Output['virtual_hosts'][number]['routes'][number];
type HeaderMatcherMessage = NonNullable<RouteMessage['match']>['headers'][number];

/** A route's path match: prefix, exact path or a whole-path safe_regex. */
function pathMatch(match: RouteMessage['match'], path: string, report: Report): PathMatch | undefined {
  switch (match?.path_specifier) {
    case 'prefix':
      return { kind: 'prefix', value: match.prefix ?? '' };
    case 'path':
      if (!match.path?.startsWith('/')) report(`${path}.path`, `must start with "/" (got ${JSON.stringify(match.path ?? '')})`);
      return { kind: 'exact', value: match.path ?? '' };
    case 'safe_regex': {
      const regex = match.safe_regex?.regex ?? '';
      const problem = regexProblem(regex);
      if (problem) report(`${path}.safe_regex.regex`, problem);
      return { kind: 'regex', value: regex };
    }
    default:
      report(path, `must match by prefix, path or safe_regex (got ${match?.path_specifier ?? 'nothing'})`);
      return undefined;
  }
}

/** A header matcher: exact, prefix or present (string_match exact or prefix too), optionally inverted. */
function headerMatch(h: HeaderMatcherMessage, path: string, report: Report): HeaderMatch | undefined {
  const name = h.name.toLowerCase();
  if (name === '') report(`${path}.name`, 'must not be empty');
  const invert = h.invert_match;
  const string = h.string_match;
  switch (h.header_match_specifier) {
    case 'exact_match':
      return { name, kind: 'exact', value: h.exact_match ?? '', invert };
    case 'prefix_match':
      return { name, kind: 'prefix', value: h.prefix_match ?? '', invert };
    case 'present_match':
      // present_match: false matches a missing header, as in Envoy.
      return { name, kind: 'present', invert: h.present_match === false ? !invert : invert };
    case 'string_match':
      if (string?.ignore_case) report(`${path}.string_match.ignore_case`, 'not supported');
      if (string?.match_pattern === 'exact') return { name, kind: 'exact', value: string.exact ?? '', invert };
      if (string?.match_pattern === 'prefix') return { name, kind: 'prefix', value: string.prefix ?? '', invert };
      report(`${path}.string_match`, `only exact and prefix are supported (got ${string?.match_pattern ?? 'nothing'})`);
      return undefined;
    default:
      report(path, `only exact_match, prefix_match, present_match and string_match are supported (got ${h.header_match_specifier ?? 'nothing'})`);
      return undefined;
  }
}

/** A route's timeout: unset → Envoy's 15 s; 0 → none. */
function routeTimeout(action: RouteAction, path: string, report: Report): number {
  const d = action.timeout;
  if (!d) return DEFAULT_ROUTE_TIMEOUT_MS;
  if (d.seconds < 0 || d.nanos < 0) {
    report(`${path}.timeout`, `must not be negative (got ${formatSeconds(d)})`);
    return 0;
  }
  return Math.ceil(d.seconds * 1000 + d.nanos / 1e6);
}

function route(r: RouteMessage, path: string, report: Report): Route {
  const match = pathMatch(r.match, `${path}.match`, report);
  if (r.match?.case_sensitive?.value === false) report(`${path}.match.case_sensitive`, 'only case-sensitive matches are supported');
  if ((r.match?.query_parameters.length ?? 0) > 0) report(`${path}.match.query_parameters`, 'not supported');
  const headers = (r.match?.headers ?? []).flatMap((h, k) => headerMatch(h, `${path}.match.headers[${k}]`, report) ?? []);
  if (r.action !== 'route' || !r.route) {
    report(path, `must be a route action (got ${r.action ?? 'nothing'})`);
    return { path: match ?? { kind: 'prefix', value: '' }, headers, clusters: [], timeoutMs: 0 };
  }
  return { path: match ?? { kind: 'prefix', value: '' }, headers, clusters: routeClusters(r.route, `${path}.route`, report), timeoutMs: routeTimeout(r.route, `${path}.route`, report) };
}

/** A RouteConfiguration (an Any or a decoded message): virtual hosts with routes by path and headers to a cluster or weighted clusters. */
export function validateRouteConfiguration(input: Any | Any__Output | RouteConfiguration__Output): Validation<XdsRouteConfig> {
  const decoded = decode(input, TYPE_URLS.RouteConfiguration);
  if (!decoded.ok) return decoded;
  const rc = decoded.value;
  const { errors, report } = collector();
  nonEmpty(rc.name, 'name', report);
  const domainAt = new Map<string, number>();
  const virtualHosts = rc.virtual_hosts.map((host, i) => {
    const at = `virtual_hosts[${i}]`;
    nonEmpty(host.name, `${at}.name`, report);
    if (host.domains.length === 0) report(`${at}.domains`, 'must list at least one domain');
    host.domains.forEach((d, j) => {
      const problem = domainProblem(d);
      if (problem) report(`${at}.domains[${j}]`, problem);
      else if (domainAt.has(d.toLowerCase())) report(`${at}.domains[${j}]`, `duplicate domain ${JSON.stringify(d)} (also in virtual_hosts[${domainAt.get(d.toLowerCase())}])`);
      else domainAt.set(d.toLowerCase(), i);
    });
    const routes = host.routes.map((r, j) => route(r, `${at}.routes[${j}]`, report));
    return { name: host.name, domains: host.domains.map((d) => d.toLowerCase()), routes };
  });
  return finish('route_configuration', rc.name, errors, () => ({ name: rc.name, virtualHosts }));
}

const VALIDATORS: { [U in ResourceTypeUrl]: (message: EnvoyMessageOutput<U>) => Validation<XdsResourceValues[U]> } = {
  [TYPE_URLS.Cluster]: validateCluster,
  [TYPE_URLS.ClusterLoadAssignment]: validateClusterLoadAssignment,
  [TYPE_URLS.Listener]: validateListener,
  [TYPE_URLS.RouteConfiguration]: validateRouteConfiguration,
};

/** A resource's name as it came, read before validation so that a refused resource can be named. */
function nameOf(message: EnvoyMessageOutput<ResourceTypeUrl>): string {
  return 'cluster_name' in message ? message.cluster_name : message.name;
}

/**
 * One refused resource of a response: its name, or null when it could not be
 * decoded far enough to read one; and every problem with it.
 */
export interface RefusedResource {
  name: string | null;
  errors: string[];
}

/**
 * Every resource of one response of type `typeUrl`, one by one: each Any must
 * hold that type, decode and validate, and names must be unique. `values`
 * holds the valid ones; `refused` the others, by name where it can be read (a
 * name sent twice refuses both copies: neither is known to be the intended
 * one). `ok` only when nothing was refused.
 */
export function validateResources<U extends ResourceTypeUrl>(
  typeUrl: U,
  anys: ReadonlyArray<Any | Any__Output>,
): { ok: boolean; values: Array<XdsResourceValues[U]>; refused: RefusedResource[] } {
  const kind = KIND[typeUrl];
  if (kind === undefined) return { ok: false, values: [], refused: [{ name: null, errors: [`type_url: unsupported resource type ${JSON.stringify(typeUrl)}`] }] };
  const validate = VALIDATORS[typeUrl] as (message: EnvoyMessageOutput<U>) => Validation<XdsResourceValues[U]>;
  const refused: RefusedResource[] = [];
  const byName = new Map<string, { at: number; value?: XdsResourceValues[U]; duplicate?: RefusedResource }>();
  anys.forEach((any, i) => {
    if (typeUrlOf(any) !== typeUrl) {
      refused.push({ name: null, errors: [`resources[${i}]: type_url: must be ${typeUrl} (got ${JSON.stringify(typeUrlOf(any))})`] });
      return;
    }
    let message: EnvoyMessageOutput<U>;
    try {
      message = unpackAny(any, typeUrl);
    } catch (err) {
      refused.push({ name: null, errors: [`resources[${i}]: ${err instanceof Error ? err.message : String(err)}`] });
      return;
    }
    const name = nameOf(message);
    const first = byName.get(name);
    if (first !== undefined) {
      const error = `${kind} ${JSON.stringify(name)}: duplicate name (resources[${first.at}] and resources[${i}])`;
      if (first.duplicate) first.duplicate.errors.push(error);
      else {
        first.duplicate = { name, errors: [error] };
        refused.push(first.duplicate);
      }
      return;
    }
    const result = validate(message);
    if (result.ok) byName.set(name, { at: i, value: result.value });
    else {
      const entry = { name, errors: result.errors };
      byName.set(name, { at: i, duplicate: entry });
      refused.push(entry);
    }
  });
  const values = [...byName.values()].flatMap((r) => (r.value !== undefined && r.duplicate === undefined ? [r.value] : []));
  return { ok: refused.length === 0, values, refused };
}
