// The verified identity of a control API caller, kept per client certificate:
// the guard asks on every call, and parsing the leaf and checking its
// X509-SVID rules costs far more than the call on a busy ADS or Resolve
// connection. Keyed by the SHA-256 of the certificate's DER (a different
// certificate never meets another's entry), and an entry is used only with
// the trust bundle it was checked against (a rotation brings a new bundle
// object) and only while the leaf is still valid: expiry is enforced on
// every call. Bounded: beyond `max` certificates the oldest entry goes.
// Only accepted certificates are kept; a refusal is checked again each time.

import { createHash } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import type { TrustBundle } from '../../proxy/identity/svid.js';
import { peerVerdict, type PeerVerdict } from './transport.js';

export const DEFAULT_MAX_VERIFIED_PEERS = 10_000;

type Accepted = Extract<PeerVerdict, { ok: true }>;

interface Entry {
  verdict: Accepted;
  bundle: TrustBundle;
  /** Checked at this time (so not before the leaf's notBefore): a clock that went back checks again. */
  checkedAt: number;
}

export class VerifiedPeers {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly max = DEFAULT_MAX_VERIFIED_PEERS,
    /** The check itself (injected by tests to count the calls). */
    private readonly verify: typeof peerVerdict = peerVerdict,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** peerVerdict(cert, bundle, at), from the cache when this certificate was accepted under this bundle and is still valid at `at`. */
  verdict(cert: PeerCertificate | undefined, bundle: TrustBundle, at: Date): PeerVerdict {
    if (cert?.raw === undefined) return this.verify(cert, bundle, at);
    const key = createHash('sha256').update(cert.raw).digest('base64');
    const time = at.getTime();
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      if (hit.bundle === bundle && time >= hit.checkedAt && time <= hit.verdict.notAfter.getTime()) return hit.verdict;
      this.entries.delete(key);
    }
    const verdict = this.verify(cert, bundle, at);
    if (verdict.ok) {
      if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(key, { verdict, bundle, checkedAt: time });
    }
    return verdict;
  }
}
