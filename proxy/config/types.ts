// Domain types of the sidecar configuration. The YAML schema (schema.ts) produces
// these; everything else in the sidecar works on them only.

import type { LogLevel } from '../runtime/log.js';
import type { PeerTlsMode } from '../peer-tls/peer-policy.js';
import type { RouteConfig } from '../http/route-table.js';
import type { ForwardedMode } from '../http/headers.js';
import type { ConnectionAgeSettings } from '../peer-tls/connection-age.js';

export type { LogLevel };

export interface SocketAddress {
  address: string;
  port: number;
}

/** A vsock address: context ID and port. */
export interface VsockAddress {
  cid: number;
  port: number;
}

/**
 * How a peer sidecar's vsock inbound is reached: `direct` connects to its CID
 * (vsock loopback, VMCI, sibling groups); `host-relay` connects to the relay
 * on the hypervisor (mainstream KVM: a guest reaches only its host), which
 * forwards to the peer's CID after a relay header.
 */
export type VsockEndpointConfig =
  | ({ mode: 'direct' } & VsockAddress)
  | ({ mode: 'host-relay'; relay: VsockAddress } & VsockAddress);

/** Where an outbound listener sends a connection: the app's address plus, when the app has one, its sidecar. */
export interface EndpointConfig {
  /** The destination app's address; the PROXY header names it as the destination. */
  address: string;
  port: number;
  /** The destination VM's id, sent in the vsockmesh destination-VM TLV. */
  vmId?: string;
  /** TCP inbound listener of the peer sidecar. */
  peer?: SocketAddress;
  /** vsock inbound listener of the peer sidecar; tried first, `peer` is the fallback. */
  vsock?: VsockEndpointConfig;
}

/** A destination the VM manager resolves (see xds/vm-manager/types.ts Destination). */
export type ResolveTarget =
  | { kind: 'ip_port'; ip: string; port: number }
  | { kind: 'vm'; vmId: string; port: number }
  | { kind: 'service'; name: string }
  /** Transparent mode: where the app was connecting before iptables REDIRECTed it to the listener (SO_ORIGINAL_DST). */
  | { kind: 'original_dst' };

export interface ClusterConfig {
  name: string;
  connectTimeoutMs: number;
  /** Sent as the PROXY v2 authority TLV (0x02) on peer hops. */
  authority?: string;
  /** Static endpoints; empty when the cluster is resolved. */
  endpoints: EndpointConfig[];
  /** Resolved through the VM manager for every connection (cached); the transport follows from the same-hypervisor decision. */
  resolve?: ResolveTarget;
  /** How HTTP requests pick an endpoint: round robin (absent), or least_request (power of two choices over active requests). L4 connections go round robin. */
  lbPolicy?: 'least_request';
}

export interface OutboundListenerConfig {
  kind: 'outbound';
  name: string;
  /** Loopback addresses the app connects to (127.0.0.1 and/or ::1). */
  addresses: string[];
  port: number;
  cluster: string;
  idleTimeoutMs: number;
  /** The native warm path (README, "The outbound warm path"): plain-TCP connections of a static or xDS cluster replayed in the core. */
  warmPath: boolean;
  /** Accepted connections this listener keeps open at once; null: no limit of its own. */
  maxConnections: number | null;
  /** HTTP requests (protocol: http, or found by the HTTP inspector): whether the `forwarded` header (RFC 7239) gets this hop appended; absent: LISTENER_DEFAULTS.forwarded. */
  forwarded?: ForwardedMode;
  /** `protocol: http`: requests are parsed and routed one by one (http/listener.ts); absent: connections are relayed whole to `cluster`. */
  http?: { routes: RouteConfig };
  /**
   * HTTP/2 with prior knowledge (h2c): `frames` forwarded frame by frame (the default;
   * http/h2/: downstream.ts, upstream.ts), `node` through Node's http2. TLS (ALPN h2) and
   * upgrades take Node's path either way. Absent: LISTENER_DEFAULTS.h2c.
   */
  h2c?: 'node' | 'frames';
  /**
   * A capture listener (its cluster resolves the original destination) that
   * inspects each connection's first bytes (http/inspector.ts): HTTP goes
   * request by request through `routes`, or to the original destination when
   * no virtual host matches; anything else is relayed whole as before.
   */
  httpInspector?: { maxBytes: number; timeoutMs: number; routes: RouteConfig };
}

/** A local destination the inbound listener may connect to, keyed by the destination port peers name. */
export interface InboundPortConfig {
  port: number;
  target: SocketAddress;
  /** Pushed by the control plane (peer_authentication); absent: peer_tls.mode of the sidecar's file. */
  peerMode?: PeerTlsMode;
  /** The app gets a PROXY v2 header (the original client and destination) before the first byte, as HAProxy's send-proxy-v2. */
  proxyProtocol?: boolean;
}

export interface InboundListenerConfig {
  kind: 'inbound';
  name: string;
  transport: 'tcp' | 'vsock';
  /** tcp: IP addresses to bind. vsock: unused (see vsockCid). */
  addresses: string[];
  /** TCP or vsock port. */
  port: number;
  /** vsock: the CID to bind (VMADDR_CID_ANY by default). */
  vsockCid: number;
  /** vsock: kernel-given peer CIDs allowed to connect; any other is refused before a byte is read. */
  allowedPeerCids: number[];
  /**
   * vsock: `allow-list`: allowedPeerCids. `registry`: the peer's CID must
   * belong, in the VM manager's records, to the VM its header names, on our hypervisor.
   */
  peerAuthorization: 'allow-list' | 'registry';
  headerTimeoutMs: number;
  maxHeaderBytes: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  ports: InboundPortConfig[];
  /** tcp, under peer TLS: the SPIFFE IDs let in; empty: any VM of the trust domain. */
  allowedPeerIds: string[];
  /** Accepted connections this listener keeps open at once (header phase included); null: no limit of its own. */
  maxConnections: number | null;
  /** tcp: plain-text connections whose decision JavaScript made once (per port and peer label) are replayed by the native core (README, "The inbound warm path"). */
  warmPath: boolean;
}

/** An HTTP forward proxy for apps that honour HTTP(S)_PROXY: `CONNECT web.mesh:443` tunnels to cluster `web` the way an outbound listener would. */
export interface ForwardProxyListenerConfig {
  kind: 'forward_proxy';
  name: string;
  /** Addresses to bind; whatever they are, only loopback clients are served. */
  addresses: string[];
  port: number;
  /** Destinations that name no cluster get a direct TCP connection instead of a 403 (an open proxy for this VM's apps). */
  passThrough: boolean;
  /** The request head must arrive within this, and be at most this long. */
  headerTimeoutMs: number;
  maxHeaderBytes: number;
  idleTimeoutMs: number;
  maxConnections: number | null;
}

export type ListenerConfig = OutboundListenerConfig | InboundListenerConfig | ForwardProxyListenerConfig;

export interface VsockSettings {
  /** false: endpoints' vsock addresses are ignored and no vsock listener may be configured. */
  enabled: boolean;
  /** After a failed vsock connect, an endpoint goes over TCP for this long before vsock is tried again. */
  breakerWindowMs: number;
  /** vsock connect deadline (a vsock connect to a dead peer may otherwise wait long). */
  connectTimeoutMs: number;
  /** The transport policy of static and xDS clusters (and of resolved ones unless vm_manager.policy says otherwise). */
  policy: TransportPolicy;
}

export interface VmManagerSettings {
  /** host:port of the VM manager's gRPC API, one per replica (tried in order, the next when one fails). */
  addresses: string[];
  queryTimeoutMs: number;
  negativeTtlMs: number;
  /** After a VM moves, its vsock connections get this long to finish before they are closed. */
  migrationGraceMs: number;
  /** The transport policy of resolved clusters: vm_manager.policy, else vsock.policy. */
  policy: TransportPolicy;
}

/** prefer-vsock: vsock where possible, TCP as its fallback; tcp-only: never vsock; vsock-only: vsock or a refusal. */
export type TransportPolicy = 'prefer-vsock' | 'tcp-only' | 'vsock-only';

export interface XdsSettings {
  /** host:port of each control-plane replica's ADS (`address:` is a list of one): the stream goes to one, and to the next when it ends. */
  addresses: string[];
  /** node.cluster in the xDS node (a group of like sidecars); default the node id. */
  cluster: string;
}

/** Where a sidecar or host relay gets its SPIFFE certificate and keeps it current (README "Security"). */
export interface IdentitySettings {
  /** host:port of the control plane's Certify API. */
  controlPlane: string;
  /** Holds the one-time join token for the first certificate; null: attest. */
  joinTokenFile: string | null;
  /** The first certificate from the host agent over vsock (CID 2, this port); null: joinTokenFile. */
  attest: { port: number } | null;
  trustDomain: string;
  /** PEM roots to check the control plane with on first contact (later: the bundle of the last Certify answer). */
  trustBundleFile: string;
  /** Where the key and certificate are kept across restarts (0600); null: in memory, a restart needs a new join token. */
  stateDir: string | null;
}

/** Process-wide limits: beyond them new connections are refused, established ones continue. */
export interface OverloadSettings {
  /** Accepted connections open at once across all listeners; null: no limit. */
  maxConnections: number | null;
  /** Overloaded while fewer descriptors than this are free (of RLIMIT_NOFILE). */
  minFreeFds: number;
  /** Overloaded while the resident set is at least this; null: no memory limit. */
  maxMemoryBytes: number | null;
  /** How often the resources are read. */
  checkIntervalMs: number;
}

/**
 * TLS on the TCP peer hop (sidecar to sidecar). `mode` is that of the file's
 * own listeners (and of pushed ones whose ports carry no mode): `disable`:
 * plain text. `permissive`: inbound takes TLS peers and plain-text ones
 * (labelled unauthenticated). `strict`: TLS peers only. Outbound uses TLS
 * under both unless `originate` is false (the first step of a migration,
 * while peers are still `disable`), or the destination's pushed mode says.
 * The files are the sidecar's peer identity: required unless `disable`, and
 * under `disable` they still serve the modes the control plane pushes.
 */
export type PeerTlsSettings =
  | { mode: 'disable' }
  | {
      mode: PeerTlsMode;
      files: { key: string; chain: string; bundle: string };
      trustDomain: string;
      handshakeTimeoutMs: number;
      /** How often the files are looked at for a new identity. */
      reloadIntervalMs: number;
      originate: boolean;
      /** Where the PROXY v2 header travels: inside TLS, or in the clear before it (HAProxy's form). */
      proxyHeader: 'inside_tls' | 'before_tls';
      /** TLS on the vsock hop too (confidential VMs: the host is not trusted): vsock inbound listeners take TLS peers only, outbound vsock hops originate it. */
      overVsock: boolean;
      /** Peer-hop TLS connections older than this (jittered) are cut; null: no limit (the default). */
      maxConnectionAge: ConnectionAgeSettings | null;
    };

export interface SidecarConfig {
  node: { id: string };
  /** The control-plane clients' identity from the control plane's CA (identity:); null: none asked for. */
  identity: IdentitySettings | null;
  /** null: no control plane; only the listeners and clusters in this file. */
  xds: XdsSettings | null;
  /** The control-plane clients' identity files (tls:); null with identity null too: plain text (insecure: true). */
  controlTls: ControlTlsFiles | null;
  vsock: VsockSettings;
  /** null: no VM manager; only static endpoints. */
  vmManager: VmManagerSettings | null;
  /** null: no admin endpoint. */
  admin: SocketAddress | null;
  log: { level: LogLevel; accessLog: boolean };
  drainTimeoutMs: number;
  overload: OverloadSettings;
  peerTls: PeerTlsSettings;
  listeners: ListenerConfig[];
  clusters: ClusterConfig[];
}

/** PEM files: the chain (leaf first), its key, the trust bundle. */
export interface ControlTlsFiles {
  certPath: string;
  keyPath: string;
  caPath: string;
}
