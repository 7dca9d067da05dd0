// Domain types of the control plane: the mesh as operators declare it, the
// resources it becomes (per node), and the versioned snapshot the ADS server
// serves. Wire types (Envoy's protos) stay in xds/envoy and the converters.

import type { Any__Output, ResourceTypeUrl } from '../envoy/proto.js';

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
