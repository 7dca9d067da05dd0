// What a listener gets for every setting its source leaves out, whether it
// comes from a config file (schema.ts) or from the control plane
// (proxy/xds-applier.ts): both build their listener configs here, so the
// two cannot drift apart.

import { U32 } from './fields.js';
import type { ForwardProxyListenerConfig, InboundListenerConfig, InboundPortConfig, OutboundListenerConfig } from './types.js';

export const LISTENER_DEFAULTS = {
  idleTimeoutMs: 60 * 60 * 1000,
  /** Inbound: the PROXY v2 header must arrive within this, and be at most this long. */
  headerTimeoutMs: 5_000,
  maxHeaderBytes: 4096,
  warmPath: true,
  /** Inbound: connecting to the local app. */
  connectTimeoutMs: 5_000,
  /** HTTP: RFC 7239 `forwarded` beside `x-forwarded-for`. */
  forwarded: 'append',
  /** HTTP: h2c forwarded frame by frame (proxy/http/h2/); `node` (Node's http2) is the opt-out. */
  h2c: 'frames',
} as const;

type Given<T, Required extends keyof T> = Pick<T, Required> & { [K in Exclude<keyof T, Required | 'kind'>]?: T[K] | undefined };

/** An outbound listener from its name, binds and cluster; the rest from the defaults (no connection limit of its own). */
export function outboundListenerConfig(l: Given<OutboundListenerConfig, 'name' | 'addresses' | 'port' | 'cluster'>): OutboundListenerConfig {
  return {
    kind: 'outbound',
    name: l.name,
    addresses: l.addresses,
    port: l.port,
    cluster: l.cluster,
    idleTimeoutMs: l.idleTimeoutMs ?? LISTENER_DEFAULTS.idleTimeoutMs,
    maxConnections: l.maxConnections ?? null,
    warmPath: l.warmPath ?? LISTENER_DEFAULTS.warmPath,
    ...(l.forwarded !== undefined && { forwarded: l.forwarded }),
    ...(l.h2c !== undefined && { h2c: l.h2c }),
    ...(l.http !== undefined && { http: l.http }),
    ...(l.httpInspector !== undefined && { httpInspector: l.httpInspector }),
  };
}

/** A local port an inbound listener serves, at the same port on 127.0.0.1 unless `target` says otherwise. */
export function localPort(port: number, target = { address: '127.0.0.1', port }): InboundPortConfig {
  return { port, target };
}

/** An inbound listener from its name, binds and local ports; the rest from the defaults (TCP; for vsock: any CID, peers from an allow-list). */
export function inboundListenerConfig(l: Given<InboundListenerConfig, 'name' | 'addresses' | 'port' | 'ports'>): InboundListenerConfig {
  return {
    kind: 'inbound',
    name: l.name,
    transport: l.transport ?? 'tcp',
    addresses: l.addresses,
    port: l.port,
    vsockCid: l.vsockCid ?? U32,
    allowedPeerCids: l.allowedPeerCids ?? [],
    peerAuthorization: l.peerAuthorization ?? 'allow-list',
    headerTimeoutMs: l.headerTimeoutMs ?? LISTENER_DEFAULTS.headerTimeoutMs,
    maxHeaderBytes: l.maxHeaderBytes ?? LISTENER_DEFAULTS.maxHeaderBytes,
    idleTimeoutMs: l.idleTimeoutMs ?? LISTENER_DEFAULTS.idleTimeoutMs,
    connectTimeoutMs: l.connectTimeoutMs ?? LISTENER_DEFAULTS.connectTimeoutMs,
    ports: l.ports,
    allowedPeerIds: l.allowedPeerIds ?? [],
    maxConnections: l.maxConnections ?? null,
    warmPath: l.warmPath ?? LISTENER_DEFAULTS.warmPath,
  };
}

/** A forward proxy from its name and binds; no pass-through unless asked, head bounds as an inbound listener's. */
export function forwardProxyListenerConfig(l: Given<ForwardProxyListenerConfig, 'name' | 'addresses' | 'port'>): ForwardProxyListenerConfig {
  return {
    kind: 'forward_proxy',
    name: l.name,
    addresses: l.addresses,
    port: l.port,
    passThrough: l.passThrough ?? false,
    headerTimeoutMs: l.headerTimeoutMs ?? LISTENER_DEFAULTS.headerTimeoutMs,
    maxHeaderBytes: l.maxHeaderBytes ?? LISTENER_DEFAULTS.maxHeaderBytes,
    idleTimeoutMs: l.idleTimeoutMs ?? LISTENER_DEFAULTS.idleTimeoutMs,
    maxConnections: l.maxConnections ?? null,
  };
}
