// Every bound of the control plane's inputs, in one place: the mesh config
// (file and config API), ADS requests and streams, the sync status it keeps.
// Input beyond a bound is refused naming the field (INVALID_ARGUMENT, or
// RESOURCE_EXHAUSTED for a count); README "Control plane" has the table.
//
// How they fit together: the largest mesh's resources stay under the 4 MiB a
// gRPC client receives by default; a named subscription to every resource of
// that mesh fits MAX_XDS_NAMES_PER_STREAM; the largest config API request (a
// route, ~300 KiB) and the largest ADS request fit MAX_GRPC_RECEIVE_BYTES.

/** Service and route names: DNS labels (they become xDS resource names and `xds:///<service>` targets). */
export const MAX_NAME_LENGTH = 63;
/** Services in the mesh (each is a cluster, an assignment, a listener and a route configuration for every node). */
export const MAX_SERVICES = 4_096;
/** Peer authentication entries in the mesh (a mesh-wide default, then per service and port). */
export const MAX_PEER_AUTHENTICATIONS = 4_096;
/** Routes (route configurations) in the mesh. */
export const MAX_ROUTES = 1_024;
/** Domains of one route, and the length of each (a DNS name, as Kubernetes bounds it). */
export const MAX_DOMAINS_PER_ROUTE = 64;
export const MAX_DOMAIN_LENGTH = 253;
/** Rules (prefix -> clusters) of one route. */
export const MAX_RULES_PER_ROUTE = 128;
/** Weighted clusters of one rule. */
export const MAX_CLUSTERS_PER_RULE = 16;
/** A rule's path prefix (Gateway API's bound for a path). */
export const MAX_PREFIX_LENGTH = 1_024;
/** Header matches of one rule (Gateway API's bound). */
export const MAX_HEADERS_PER_RULE = 16;
/** A header match's name (Gateway API's bound). */
export const MAX_HEADER_NAME_LENGTH = 256;
/** A header match's value (Gateway API's bound). */
export const MAX_HEADER_VALUE_LENGTH = 4_096;
/** One rule's weights may add up to this at most (Envoy and gRPC refuse a larger sum). */
export const MAX_TOTAL_WEIGHT = 0xffffffff;
/** The whole mesh, encoded as JSON: what every node is sent derives from it. */
export const MAX_MESH_BYTES = 2 * 1024 * 1024;
/** A mesh file or mesh state file is not even parsed beyond this (YAML is at most ~3x its JSON). */
export const MAX_MESH_FILE_BYTES = 4 * MAX_MESH_BYTES;

/** xDS responses written at once over all streams (a batch); the others wait their turn (write-slots.ts). */
export const XDS_WRITES_IN_FLIGHT = 64;
/** Bytes of xDS responses written at once over all streams (a larger response goes alone): what bounds the memory of a sync. */
export const XDS_WRITE_BYTES_IN_FLIGHT = 8 * 1024 * 1024;
/** The longest a response keeps its slot when its client does not read it. */
export const WRITE_SLOT_HOLD_MS = 1_000;

/** What the control plane's gRPC server accepts in one message (config API, ADS, VM manager). */
export const MAX_GRPC_RECEIVE_BYTES = 4 * 1024 * 1024;

/** An ADS node id (a VM id is at most 253 characters). */
export const MAX_XDS_NODE_ID_LENGTH = 256;
/** A resource name (or version) a client names in a request. */
export const MAX_XDS_RESOURCE_NAME_LENGTH = 512;
/** Resource names one stream may be subscribed to, all types together; one request names at most as many. */
export const MAX_XDS_NAMES_PER_STREAM = 32_768;

/** A NACK's error text as kept in the sync status (and logged), in UTF-8 bytes. */
export const MAX_NACK_TEXT_BYTES = 4_096;
/** How long a node's sync status is kept after its last stream closed (default of --status-retention-ms). */
export const DEFAULT_STATUS_RETENTION_MS = 10 * 60_000;
/** Disconnected nodes whose status is kept at most; beyond it the longest gone is forgotten first. */
export const MAX_DISCONNECTED_NODES = 10_000;
/** Nodes per GetSyncStatus page: the default, and the most (larger page_size values are lowered to it). */
export const DEFAULT_STATUS_PAGE_SIZE = 100;
export const MAX_STATUS_PAGE_SIZE = 200;

/** Problems listed in one config API error (the rest are counted): a reply's status text stays small. */
export const MAX_PROBLEMS_IN_ERROR = 20;

/** `text` quoted for an error message, cut to `max` characters: bounded input is never echoed in full. */
export function quoteBounded(text: string, max = 64): string {
  return text.length <= max ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, max))}... (${text.length} characters)`;
}

/** `text` cut to at most `maxBytes` of UTF-8 on a character boundary, marked when cut. */
export function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // not inside a multi-byte character
  return `${bytes.subarray(0, end).toString('utf8')}... (truncated, ${bytes.length} bytes)`;
}

/** Authorization policies in the mesh (each lands in the inbound listener of every VM serving its service). */
export const MAX_POLICIES = 1_024;
/** Principals of one policy, and the length of each (a SPIFFE ID is at most 2048 bytes). */
export const MAX_PRINCIPALS_PER_POLICY = 64;
export const MAX_PRINCIPAL_LENGTH = 2_048;
/** Destination ports one policy names. */
export const MAX_PORTS_PER_POLICY = 64;
