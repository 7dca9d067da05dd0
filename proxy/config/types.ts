// Domain types of the sidecar configuration. The YAML schema (schema.ts) produces
// these; everything else in the sidecar works on them only.

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface SocketAddress {
  address: string;
  port: number;
}

/** Where an outbound listener sends a connection: the app's address plus, when the app has one, its sidecar. */
export interface EndpointConfig {
  /** The destination app's address; the PROXY header names it as the destination. */
  address: string;
  port: number;
  /** The destination VM's id, sent in the vsockmesh destination-VM TLV. */
  vmId?: string;
  /** Inbound listener of the peer sidecar. Absent: a direct endpoint, plain TCP to the app. */
  peer?: SocketAddress;
}

export interface ClusterConfig {
  name: string;
  connectTimeoutMs: number;
  /** Sent as the PROXY v2 authority TLV (0x02) on peer hops. */
  authority?: string;
  endpoints: EndpointConfig[];
}

export interface OutboundListenerConfig {
  kind: 'outbound';
  name: string;
  /** Loopback addresses the app connects to (127.0.0.1 and/or ::1). */
  addresses: string[];
  port: number;
  cluster: string;
  idleTimeoutMs: number;
}

/** A local destination the inbound listener may connect to, keyed by the destination port peers name. */
export interface InboundPortConfig {
  port: number;
  target: SocketAddress;
}

export interface InboundListenerConfig {
  kind: 'inbound';
  name: string;
  addresses: string[];
  port: number;
  headerTimeoutMs: number;
  maxHeaderBytes: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  ports: InboundPortConfig[];
}

export type ListenerConfig = OutboundListenerConfig | InboundListenerConfig;

export interface SidecarConfig {
  node: { id: string };
  /** null: no admin endpoint. */
  admin: SocketAddress | null;
  log: { level: LogLevel; accessLog: boolean };
  drainTimeoutMs: number;
  listeners: ListenerConfig[];
  clusters: ClusterConfig[];
}
