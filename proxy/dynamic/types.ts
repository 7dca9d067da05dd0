// The configuration a control plane pushes, as the sidecar uses it: what the
// ADS client's validator (xds/client/validate.ts) makes of Envoy's Listener,
// Cluster, ClusterLoadAssignment and RouteConfiguration resources. Wire types
// stay in xds/; the applier and the data plane see these only.

import type { Logger } from '../runtime/log.js';
import type { VsockMode } from '../resolve/types.js';
import type { PeerTlsMode } from '../peer-tls/peer-policy.js';
import type { PortRbac } from '../policy/rbac.js';
import type { RouteConfig } from '../http/route-table.js';

/** The longest connect timeout a mesh service may declare and a sidecar accepts from the control plane (5 minutes). */
export const MAX_CONNECT_TIMEOUT_MS = 300_000;


/**
 * A listener pushed to a sidecar. `outbound`: apps connect on a loopback
 * address and every connection goes to `cluster`. `http_outbound`: the same,
 * but each HTTP request is routed by the route configuration
 * `routeConfigName` (RDS); it is opened once that configuration is there. `inbound`: peers' PROXY v2
 * hops arrive here and go to the local `ports` (127.0.0.1:port), each under
 * its peer mode when the control plane says one (`peerModes`), authorized by
 * the RBAC filters of each port's chains (`rbac`). `api`: a gRPC
 * xDS client's API listener (HTTP connection manager); sidecars accept and ignore it.
 */
export type XdsListener =
  | { name: string; kind: 'outbound'; address: string; port: number; cluster: string; local?: { vmId: string; hypervisorId: string } }
  | { name: string; kind: 'http_outbound'; address: string; port: number; routeConfigName: string; local?: { vmId: string; hypervisorId: string } }
  | { name: string; kind: 'inbound'; address: string; port: number; ports: number[]; rbac: PortRbac[]; peerModes?: Record<number, PeerTlsMode> }
  | { name: string; kind: 'api' };

/** The VM facts a control plane attaches to an endpoint (LbEndpoint.metadata.filter_metadata["vsockmesh"]). */
export interface XdsEndpointVm {
  vmId: string;
  hypervisorId: string;
  vsockCid: number;
  /** The VM's sidecar vsock inbound port (0: none). */
  vsockPort: number;
  /** The VM's sidecar TCP inbound port (0: none, or no sidecar). */
  tcpPort: number;
  vsockMode: VsockMode;
  /** The hypervisor's host relay vsock port (0: none). */
  relayPort: number;
  /** The peer mode of the VM's inbound port for this endpoint (absent: the control plane did not say). */
  peerMode?: PeerTlsMode;
}

/** An endpoint: the app's address, and the VM facts when the control plane knows the VM. */
export interface XdsEndpoint {
  address: string;
  port: number;
  vm?: XdsEndpointVm;
}

/**
 * A cluster: endpoints come from EDS (the ClusterLoadAssignment named
 * `edsServiceName`) or are static. `lbPolicy`: HTTP requests go to the less
 * busy of two endpoints drawn at random (absent: round robin, as L4 connections always do).
 */
export type XdsCluster =
  | { name: string; kind: 'eds'; connectTimeoutMs: number; edsServiceName: string; lbPolicy?: 'least_request' }
  | { name: string; kind: 'static'; connectTimeoutMs: number; endpoints: XdsEndpoint[]; lbPolicy?: 'least_request' };

/** A ClusterLoadAssignment: the endpoints of the EDS cluster `clusterName` (unhealthy and draining ones left out). */
export interface XdsClusterLoadAssignment {
  clusterName: string;
  endpoints: XdsEndpoint[];
}

/** An HTTP route configuration: virtual hosts by domain, routes by path and headers, to clusters by weight (proxy/http/route-table.ts). */
export type XdsRouteConfig = RouteConfig;

// ---- The seam between the ADS client (xds/client) and the sidecar ----

/** A resource the sidecar did not apply; `error` says why and names it. */
export interface Refusal {
  name: string;
  error: string;
}

/**
 * What a state-of-the-world response held besides its valid resources: the
 * names of the resources it carried that validation refused (their last good
 * version stays), and whether one came without a readable name (then what the
 * state leaves out may be that one, so nothing is removed).
 */
export interface StateRefusals {
  names: ReadonlySet<string>;
  unnamed: boolean;
}

/** What the sidecar made of one listener state. */
export interface ListenersOutcome {
  /** Listeners that could not be opened; their last good version, if any, keeps serving. */
  refused: Refusal[];
  /** The route configurations the listeners now name (the RDS subscription). */
  routeNames: string[];
  /** Why the state is not accepted in full although its listeners were applied (node_unknown). */
  problem?: string;
}

/**
 * The sidecar's side of the control plane's stream: one typed entry per
 * resource type, called with the validated resources of each response, in
 * order. The ADS client derives the EDS and RDS subscriptions from what they return.
 */
export interface PushedConfig {
  /** CDS, the whole set; returns the EDS cluster names to subscribe to. */
  clusters(clusters: XdsCluster[], refused: StateRefusals): { assignmentNames: string[] };
  /** EDS: the assignments of the subscribed clusters. */
  assignments(assignments: XdsClusterLoadAssignment[]): void;
  /** LDS, the whole set. */
  listeners(listeners: XdsListener[], refused: StateRefusals, version: string): Promise<ListenersOutcome>;
  /** RDS: the route configurations the listeners name (HTTP listeners that waited for theirs open now). */
  routes(routes: XdsRouteConfig[]): Promise<void>;
}

export interface XdsCounters {
  acks: number;
  nacks: number;
  reconnects: number;
  connected: number;
  /** The control-plane replica the stream is open to (as configured), null while none is. */
  controlPlane: string | null;
  /** Resources refused (invalid, or could not be applied), counted per response, by type short name. */
  refused: Record<string, number>;
}

/** The control plane's stream as the sidecar holds it (xds/client/ads-client.ts implements it). */
export interface ConfigSource {
  start(): void;
  stop(): void;
  /** Per resource type: subscribed, accepted and refused (config_dump). */
  state(): unknown;
  readonly connected: boolean;
  readonly counters: XdsCounters;
}

export interface ConfigSourceInit {
  /** The control-plane replicas, in the order they are tried. */
  addresses: string[];
  node: { id: string; cluster: string };
  logger: Logger;
  config: PushedConfig;
}

/** Makes the sidecar's config source; given by the composition root (proxy/cmd). */
export type ConfigSourceFactory = (init: ConfigSourceInit) => ConfigSource;
