// Domain types of the control plane: the mesh as operators declare it, and
// the sync status of each node. The Snapshot it serves is in snapshot.ts;
// wire types (Envoy's protos) stay in xds/envoy and the converters.

import type { ResourceTypeUrl } from '../envoy/proto.js';
import type { PeerTlsMode } from '../../proxy/peer-tls/peer-policy.js';
import type { MeshPolicy } from './policies.js';

export type { MeshPolicy };

/** A service of the mesh: served by the VMs whose registry record lists it (VmRecord.services by name). */
export interface MeshService {
  name: string;
  /** Where apps connect: the sidecar's outbound listener port on 127.0.0.1 (default: the service's own port). */
  outboundPort: number;
  protocol: 'tcp' | 'http';
  connectTimeoutMs: number;
  /** How HTTP requests pick an endpoint (Cluster lb_policy): round robin (absent), or least_request (power of two choices). */
  lbPolicy?: 'least_request';
}

/** A request header condition of a mesh route rule (names lower case). */
export type MeshHeaderMatch = { name: string; exact: string } | { name: string; prefix: string } | { name: string; present: true };

/**
 * An HTTP route: requests for `domains` whose path starts with `prefix` (and
 * whose headers match every one of `headers`) go to `service` (or split by weight).
 */
export interface MeshRoute {
  name: string;
  domains: string[];
  routes: Array<{ prefix: string; headers: MeshHeaderMatch[]; clusters: Array<{ service: string; weight: number }> }>;
}

/**
 * A peer mode, as Istio's PeerAuthentication: who must present a mesh
 * certificate on the TCP peer hop to a VM's inbound port. No `service` and no
 * `port`: the mesh-wide default; otherwise the ports it selects
 * (peer-authentication.ts says which entry wins).
 */
export interface PeerAuthentication {
  name: string;
  service?: string;
  port?: number;
  mode: PeerTlsMode;
}

export interface MeshConfig {
  services: MeshService[];
  routes: MeshRoute[];
  policies: MeshPolicy[];
  peerAuthentication: PeerAuthentication[];
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
