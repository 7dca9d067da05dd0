// Per-port peer modes on an inbound listener, pure: what the control plane's
// filter chains say of a port (TLS, plain text or both), what handshake a
// listener whose ports have these modes runs, whether a peer that proved
// itself (or not) may reach a port, and whether an outbound hop starts TLS.
// A sidecar without a peer identity (no peer_tls files) cannot take TLS
// peers: a STRICT port then refuses every peer, with a reason that says so.

import type { PeerTlsMode } from './peer-policy.js';

export const PEER_MODES: readonly PeerTlsMode[] = ['disable', 'permissive', 'strict'];

/** A port's filter chains, by `filter_chain_match.transport_protocol`, as a mode: TLS only is STRICT, both PERMISSIVE, plain only DISABLE. */
export function modeOfTransports(transports: ReadonlySet<'tls' | 'raw_buffer'>): PeerTlsMode {
  if (transports.has('tls')) return transports.has('raw_buffer') ? 'permissive' : 'strict';
  return 'disable';
}

export type Refusal = { reason: string; detail: string };

/**
 * What a listener does when a peer connects, before it knows the port (the
 * PROXY header, inside TLS, names it): `plain`: read the header in the
 * clear; `tls`: a TLS handshake, plain-text peers let on (`plain: true`) to
 * have their port checked; `refuse`: no port can take any peer.
 */
export type ListenerHandshake = { kind: 'plain' } | { kind: 'tls'; plain: boolean } | ({ kind: 'refuse' } & Refusal);

export function listenerHandshake(modes: Iterable<PeerTlsMode>, hasIdentity: boolean): ListenerHandshake {
  const set = new Set(modes);
  const plain = set.has('disable') || set.has('permissive');
  const tls = set.has('strict') || set.has('permissive');
  if (tls && hasIdentity) return { kind: 'tls', plain };
  if (plain) return { kind: 'plain' };
  return { kind: 'refuse', ...noIdentity('every port of this listener') };
}

function noIdentity(what: string): Refusal {
  return {
    reason: 'plain_text',
    detail: `${what} is STRICT, and this sidecar has no peer identity (peer_tls key_file, chain_file, bundle_file) to take TLS peers with: give it one, or set the mode to PERMISSIVE while migrating`,
  };
}

/** `unauthenticated`: a plain-text peer let in under PERMISSIVE, labelled and counted as such. */
export type PortAdmission = { ok: true; unauthenticated: boolean } | ({ ok: false } & Refusal);

/**
 * Whether a peer may reach `port` under its mode. `tls`: the peer completed
 * a TLS handshake (its identity was admitted by then). Plain text is let in
 * only under PERMISSIVE (unauthenticated) and DISABLE; a TLS peer only under
 * PERMISSIVE and STRICT (DISABLE: the port takes plain text only).
 */
export function portAdmission(mode: PeerTlsMode, port: number, tls: boolean, hasIdentity: boolean): PortAdmission {
  if (!tls) {
    if (mode !== 'strict') return { ok: true, unauthenticated: mode === 'permissive' };
    return hasIdentity ? { ok: false, reason: 'plain_text', detail: `a plain-text peer is refused: port ${port} is STRICT` } : { ok: false, ...noIdentity(`port ${port}`) };
  }
  if (mode === 'disable') return { ok: false, reason: 'tls_not_accepted', detail: `a TLS peer is refused: port ${port} is DISABLE (plain text only)` };
  return { ok: true, unauthenticated: false };
}

/**
 * Whether an outbound hop to a peer sidecar starts TLS: only with an identity
 * of our own; then as the destination port's pushed mode says (DISABLE:
 * plain), else as the sidecar's file says (peer_tls.originate).
 */
export function originatesTls(hasIdentity: boolean, fileOriginates: boolean, destinationMode: PeerTlsMode | undefined): boolean {
  if (!hasIdentity) return false;
  return destinationMode === undefined ? fileOriginates : destinationMode !== 'disable';
}
