// The principal of a connection that came through the host relay: the VM the
// relay asserted (relay-assertion.ts), as the same SPIFFE ID a certificate on
// the TCP hop would carry, so one policy covers both hops. A relayed
// connection without a verified assertion has no principal (null): a policy
// naming VMs does not admit it.

import type { RelayAssertionVerdict } from '../relay-assertion.js';
import { expectedPeerId } from './peer-policy.js';

/** `spiffe://<trustDomain>/vm/<asserted source VM>`, or null when the relay asserted nothing that verified. */
export function relayedPrincipal(verdict: RelayAssertionVerdict | null, trustDomain: string): string | null {
  return verdict?.ok === true ? expectedPeerId(trustDomain, verdict.sourceVmId) : null;
}
