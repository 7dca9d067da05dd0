// The decisions of the peer hop's TLS, pure: which identity an outbound
// connection must find (secure naming), and whether an inbound peer is let in.

import { parseMeshIdentity } from '../identity/spiffe.js';

export type PeerTlsMode = 'disable' | 'permissive' | 'strict';

/** What the access log and metrics call a plain-text peer admitted under PERMISSIVE. */
export const UNAUTHENTICATED = 'unauthenticated';

/** Secure naming: the one identity the sidecar of VM `vmId` may present. */
export function expectedPeerId(trustDomain: string, vmId: string): string {
  return `spiffe://${trustDomain}/vm/${vmId}`;
}

/** What the handshake of an inbound connection found. */
export type InboundHandshake = { kind: 'tls'; identity: string } | { kind: 'plain' };

export type Admission = { ok: true; identity: string } | { ok: false; reason: string; detail: string };

/**
 * Whether an inbound peer may go on to send its PROXY header. `allowed`: the
 * listener's allow-list of SPIFFE IDs; empty: any VM of the trust domain.
 */
export function admitInbound(mode: Exclude<PeerTlsMode, 'disable'>, handshake: InboundHandshake, trustDomain: string, allowed: readonly string[]): Admission {
  if (handshake.kind === 'plain') {
    if (mode === 'permissive') return { ok: true, identity: UNAUTHENTICATED };
    return { ok: false, reason: 'plain_text', detail: 'a plain-text peer is refused under peer_tls mode strict' };
  }
  const { identity } = handshake;
  if (allowed.length > 0) {
    return allowed.includes(identity) ? { ok: true, identity } : { ok: false, reason: 'peer_not_allowed', detail: `peer ${identity} is not in allowed_peer_ids` };
  }
  const parsed = parseMeshIdentity(identity);
  if (!parsed.ok || parsed.value.kind !== 'vm' || parsed.value.trustDomain !== trustDomain) {
    return { ok: false, reason: 'peer_not_allowed', detail: `peer ${identity} is not a VM of trust domain ${trustDomain}` };
  }
  return { ok: true, identity };
}

/**
 * A source-VM TLV must agree with the certificate: a peer authenticated as
 * one VM cannot claim to speak for another. No TLV (HAProxy sends none) is
 * no claim; a plain-text peer's claim is not checked (it is `unauthenticated`).
 */
export function sourceVmProblem(identity: string, claimedVm: string | undefined, trustDomain: string): string | undefined {
  if (claimedVm === undefined || identity === UNAUTHENTICATED) return undefined;
  if (identity === expectedPeerId(trustDomain, claimedVm)) return undefined;
  return `the PROXY header claims source VM ${claimedVm} but the peer certificate is ${identity}`;
}
