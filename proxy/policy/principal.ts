// The principal of an inbound connection, decided in one place: who the
// policies (proxy/policy/rbac.ts) see at the other end of a hop. The same
// string whichever hop carried the connection, so one policy covers both.

import { UNAUTHENTICATED, expectedPeerId } from '../peer-tls/peer-policy.js';

export { UNAUTHENTICATED };

/** What an inbound listener knows of its peer once the connection is admitted (and its header read). */
export type InboundPeer =
  /** TCP hop: the TLS peer's verified SPIFFE ID, or null for a plain-text peer (peer_tls disable, or admitted under permissive). */
  | { hop: 'tcp'; tlsIdentity: string | null }
  /** vsock hop from a guest, after `peer_authorization: registry` checked that the kernel-given CID is the VM its header names. */
  | { hop: 'vsock'; registryVerifiedVm: string; trustDomain: string }
  /** vsock hop from the host relay (CID 2 on a host-relay hypervisor): the relay checked the source CID, but asserts nothing to us yet. */
  | { hop: 'vsock-relayed' }
  /** vsock hop checked only against allowed_peer_cids: a CID, not a VM identity. */
  | { hop: 'vsock'; registryVerifiedVm: null };

export function inboundPrincipal(peer: InboundPeer): string {
  switch (peer.hop) {
    case 'tcp':
      return peer.tlsIdentity ?? UNAUTHENTICATED;
    case 'vsock':
      // The same string the VM's certificate carries: a policy naming a VM holds on either hop.
      return peer.registryVerifiedVm === null ? UNAUTHENTICATED : expectedPeerId(peer.trustDomain, peer.registryVerifiedVm);
    case 'vsock-relayed':
      return relayedPrincipal();
  }
}

/**
 * The principal of a connection the host relay carried. The hook for the
 * relay's assertion of the source identity (issue 14 item 3): until the
 * destination can verify what the relay asserts, such a connection is
 * `unauthenticated`, so an ALLOW policy naming a VM does not admit it.
 */
export function relayedPrincipal(): string {
  return UNAUTHENTICATED;
}
