// What a destination sidecar reads first on a connection from its host relay
// (vsock, CID 2): the relay's signed assertion of the source VM when the
// relay sent one (relay-assertion.ts), then the PROXY v2 header the source
// sidecar wrote; under peer_tls.over_vsock the assertion alone, read
// exactly (the TLS handshake follows; the header is inside TLS). Pure:
// judged as bytes arrive, like either alone; then what the assertion makes
// of the connection.

import { ASSERTION_PREFIX_LENGTH, MAX_ASSERTION_BODY, decodeRelayAssertion, startsRelayAssertion, verifyRelayAssertion, type RelayAssertion, type RelayAssertionContext } from '../relay-assertion.js';
import { relayedPrincipal, type InboundPeer } from '../policy/principal.js';
import { vsockPeerAgreement } from '../peer-tls/vsock-peer.js';
import { decodeProxyHeader, type ProxyHeader } from '../proxy-protocol.js';
import type { PreambleDecode } from './preamble.js';

/** The assertion's fixed prefix, for a reader of the assertion alone (inbound.ts loads this module on demand, not relay-assertion.ts). */
export { ASSERTION_PREFIX_LENGTH };

export interface RelayedPreamble {
  /** null: the relay asserted nothing (a static policy, or a relay without an identity). */
  assertion: RelayAssertion | null;
  header: ProxyHeader;
}

/** The most a relayed preamble may take: an assertion and a header of `maxHeaderBytes`. */
export function maxRelayedPreambleBytes(maxHeaderBytes: number): number {
  return ASSERTION_PREFIX_LENGTH + MAX_ASSERTION_BODY + maxHeaderBytes;
}

export function decodeRelayedPreamble(bytes: Buffer, maxHeaderBytes: number): PreambleDecode<RelayedPreamble> {
  let assertion: RelayAssertion | null = null;
  let offset = 0;
  if (startsRelayAssertion(bytes)) {
    const a = decodeRelayAssertion(bytes);
    if (a.kind !== 'assertion') return a;
    assertion = a.assertion;
    offset = a.length;
  }
  const h = decodeProxyHeader(bytes.subarray(offset), { maxLength: maxHeaderBytes, streamOnly: true });
  if (h.kind === 'header') return { kind: 'done', value: { assertion, header: h.header }, length: offset + h.length };
  if (h.kind === 'incomplete') return { kind: 'incomplete', needed: offset + h.needed };
  return h;
}

/**
 * The assertion ahead of a TLS handshake through the relay: required, as the
 * certificate is checked against it, and read to its last byte and no
 * further (the native TLS session takes the socket from there).
 */
export function decodeRelayAssertionAlone(bytes: Buffer): PreambleDecode<RelayAssertion> {
  if (!startsRelayAssertion(bytes)) {
    return { kind: 'invalid', code: 'relay_unasserted', reason: 'a connection through the host relay does not start with its source assertion: under peer_tls.over_vsock the relay must assert the source VM (vm_manager section and hv identity)' };
  }
  const a = decodeRelayAssertion(bytes);
  return a.kind === 'assertion' ? { kind: 'done', value: a.assertion, length: a.length } : a;
}

/** `unasserted`: no assertion, or no roots to check one with: the relay checked the source CID, the connection has no principal. */
export type RelayedAdmission =
  | { kind: 'unasserted' }
  | { kind: 'asserted'; peer: Extract<InboundPeer, { hop: 'vsock-relayed' }>; principal: string; relay: string }
  | { kind: 'refused'; reason: string; detail: string };

/**
 * What a relayed peer claims to be: the PROXY header's source-VM TLV
 * (undefined: none), or, under peer_tls.over_vsock, its verified certificate.
 */
export type RelayedClaim = { kind: 'header'; vmId: string | undefined } | { kind: 'certificate'; identity: string };

/**
 * A connection from our host relay: its assertion verified, and the PROXY
 * header's source-VM claim (if any) held to it, as a certificate's is on the
 * TCP hop; a TLS peer's certificate must name the asserted VM, and an
 * assertion is then required (vsock-peer.ts, relay_identity_mismatch).
 */
export function admitRelayed(
  assertion: RelayAssertion | null,
  trust: { trustDomain: string; bundlePem: string } | null,
  context: Omit<RelayAssertionContext, 'trustDomain' | 'bundlePem'>,
  claim: RelayedClaim,
): RelayedAdmission {
  const verdict = assertion === null || trust === null ? null : verifyRelayAssertion(assertion, { ...trust, ...context });
  if (verdict !== null && !verdict.ok) return { kind: 'refused', reason: verdict.reason, detail: verdict.detail };
  if (claim.kind === 'certificate') {
    const agreement = vsockPeerAgreement(claim.identity, { kind: 'relay', asserted: verdict });
    if (!agreement.ok) return { kind: 'refused', reason: agreement.reason, detail: agreement.detail };
  }
  if (verdict === null || trust === null) return { kind: 'unasserted' };
  const claimedVm = claim.kind === 'header' ? claim.vmId : undefined;
  if (claimedVm !== undefined && claimedVm !== verdict.sourceVmId) {
    return { kind: 'refused', reason: 'source_vm_mismatch', detail: `the PROXY header claims source VM ${claimedVm} but the relay asserts ${verdict.sourceVmId} (CID ${verdict.sourceCid})` };
  }
  const peer = { hop: 'vsock-relayed' as const, verdict, trustDomain: trust.trustDomain };
  return { kind: 'asserted', peer, principal: relayedPrincipal(verdict, trust.trustDomain), relay: verdict.relayId };
}
