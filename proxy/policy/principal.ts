// The principal of an inbound connection, decided in one place: who the
// policies (proxy/policy/rbac.ts) see at the other end of a hop. The same
// string whichever hop carried the connection, so one policy covers both.

import { UNAUTHENTICATED, expectedPeerId } from '../peer-tls/peer-policy.js';
import type { RelayAssertionVerdict } from '../relay-assertion.js';

export { UNAUTHENTICATED };

/** What an inbound listener knows of its peer once the connection is admitted (and its header read). */
export type InboundPeer =
  /** TCP hop: the TLS peer's verified SPIFFE ID, or null for a plain-text peer (peer_tls disable, or admitted under permissive). */
  | { hop: 'tcp'; tlsIdentity: string | null }
  /** vsock hop from a guest, after `peer_authorization: registry` checked that the kernel-given CID is the VM its header names. */
  | { hop: 'vsock'; registryVerifiedVm: string; trustDomain: string }
  /** vsock hop from the host relay (CID 2 on a host-relay hypervisor): the relay checked the source CID; `verdict` on its signed assertion of the source VM (null: it asserted none). */
  | { hop: 'vsock-relayed'; verdict: RelayAssertionVerdict | null; trustDomain: string }
  /** vsock hop under peer_tls.over_vsock checked against allowed_peer_cids: the TLS peer's verified SPIFFE ID (no VM manager to tie it to the CID). */
  | { hop: 'vsock-tls'; tlsIdentity: string }
  /** vsock hop checked only against allowed_peer_cids: a CID, not a VM identity. */
  | { hop: 'vsock'; registryVerifiedVm: null };

export function inboundPrincipal(peer: InboundPeer): string {
  switch (peer.hop) {
    case 'tcp':
    case 'vsock-tls':
      return peer.tlsIdentity ?? UNAUTHENTICATED;
    case 'vsock':
      // The same string the VM's certificate carries: a policy naming a VM holds on either hop.
      return peer.registryVerifiedVm === null ? UNAUTHENTICATED : expectedPeerId(peer.trustDomain, peer.registryVerifiedVm);
    case 'vsock-relayed':
      return relayedPrincipal(peer.verdict, peer.trustDomain);
  }
}

/**
 * The principal of a connection the host relay carried: the VM the relay
 * asserted (relay-assertion.ts), once verified, as the same SPIFFE ID a
 * certificate on the TCP hop would carry (`spiffe://<td>/vm/<source VM>`), so
 * one policy covers both hops. Without a verified assertion it is
 * `unauthenticated`: an ALLOW policy naming a VM does not admit it.
 */
export function relayedPrincipal(verdict: RelayAssertionVerdict | null, trustDomain: string): string {
  return verdict?.ok === true ? expectedPeerId(trustDomain, verdict.sourceVmId) : UNAUTHENTICATED;
}
