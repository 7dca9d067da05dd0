// Domain types of the control plane: the mesh as operators declare it, the
// resources it becomes (per node), and the versioned snapshot the ADS server
// serves. Wire types (Envoy's protos) stay in xds/envoy and the converters.

import type { Any__Output, ResourceTypeUrl } from '../envoy/proto.js';
import type { VsockMode } from '../vm-manager/types.js';

/** A service of the mesh: served by the VMs whose registry record lists it (VmRecord.services by name). */
export interface MeshService {
  name: string;
  /** Where apps connect: the sidecar's outbound listener port on 127.0.0.1 (default: the service's own port). */
  outboundPort: number;
  protocol: 'tcp' | 'http';
  connectTimeoutMs: number;
}

/** An HTTP route: requests for `domains` whose path starts with `prefix` go to `service` (or split by weight). */
export interface MeshRoute {
  name: string;
  domains: string[];
  routes: Array<{ prefix: string; clusters: Array<{ service: string; weight: number }> }>;
}

export interface MeshConfig {
  services: MeshService[];
  routes: MeshRoute[];
}

/** One resource as served: its name, a content version (hash of its bytes), and the encoded Any. */
export interface VersionedResource {
  name: string;
  version: string;
  resource: Any__Output;
}

/**
 * What one node (or node group) is served: per type URL, every resource by
 * name. `version` is per type (changes when any resource of the type does).
 */
export interface Snapshot {
  resources: Record<ResourceTypeUrl, Map<string, VersionedResource>>;
  versions: Record<ResourceTypeUrl, string>;
}

/** Per node and type: what was sent, what the node said. Shown by the config API's sync status. */
export interface SyncStatus {
  nodeId: string;
  typeUrl: ResourceTypeUrl;
  lastSentVersion: string | null;
  lastSentAt: number | null;
  lastAckVersion: string | null;
  lastAckAt: number | null;
  lastNack: { version: string; error: string; at: number } | null;
}

/** The longest connect timeout a mesh service may declare and a sidecar accepts from the control plane (5 minutes). */
export const MAX_CONNECT_TIMEOUT_MS = 300_000;

// ---- What a sidecar makes of the resources it receives (xds/control-plane/validate.ts) ----

/**
 * A listener pushed to a sidecar. `outbound`: apps connect on a loopback
 * address and every connection goes to `cluster`. `inbound`: peers' PROXY v2
 * hops arrive here and go to the local `ports` (127.0.0.1:port). `api`: a gRPC
 * xDS client's API listener (HTTP connection manager); sidecars accept and ignore it.
 */
export type XdsListener =
  | { name: string; kind: 'outbound'; address: string; port: number; cluster: string; local?: { vmId: string; hypervisorId: string } }
  | { name: string; kind: 'inbound'; address: string; port: number; ports: number[] }
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
}

/** An endpoint: the app's address, and the VM facts when the control plane knows the VM. */
export interface XdsEndpoint {
  address: string;
  port: number;
  vm?: XdsEndpointVm;
}

/** A cluster: endpoints come from EDS (the ClusterLoadAssignment named `edsServiceName`) or are static. */
export type XdsCluster =
  | { name: string; kind: 'eds'; connectTimeoutMs: number; edsServiceName: string }
  | { name: string; kind: 'static'; connectTimeoutMs: number; endpoints: XdsEndpoint[] };

/** A ClusterLoadAssignment: the endpoints of the EDS cluster `clusterName` (unhealthy and draining ones left out). */
export interface XdsClusterLoadAssignment {
  clusterName: string;
  endpoints: XdsEndpoint[];
}

/** An HTTP route configuration: requests for `domains` whose path starts with `prefix` go to the clusters by weight. */
export interface XdsRouteConfig {
  name: string;
  virtualHosts: Array<{
    name: string;
    domains: string[];
    routes: Array<{ prefix: string; clusters: Array<{ name: string; weight: number }> }>;
  }>;
}
