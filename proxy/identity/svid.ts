// Verifying an X509-SVID: a leaf certificate (and the intermediates presented
// with it) against a trust bundle, at a given time. The answer is the leaf's
// SPIFFE ID or one reason (snake_case, for logs and metrics) with a message.
//
// The X509-SVID rules, for the leaf: exactly one URI SAN, a valid SPIFFE ID
// naming a workload (a path, not the trust domain itself) of the bundle's
// trust domain; basicConstraints CA false; keyUsage present with
// digitalSignature and without keyCertSign or cRLSign. For every signing
// certificate on the way up: CA true, keyCertSign when keyUsage is present,
// its path length respected. Every certificate on the path valid at that
// time, each certificate issued (by name) and signed (checked by Node's
// X509Certificate) by the next, the path ending at a root of the bundle. Pure apart from the signature arithmetic: no I/O,
// time is an argument.

import { X509Certificate } from 'node:crypto';
import { parseSpiffeId, type SpiffeId } from './spiffe.js';
import { KEY_USAGE, extensionsOf, oneLineName, pemCertificates, validityOf, type CertificateExtensions } from './certificate-facts.js';

/** A leaf and at most this many certificates above it are looked at. */
export const MAX_CHAIN_CERTIFICATES = 8;

export const SVID_REFUSALS = [
  'no_certificate',
  'malformed_certificate',
  'chain_too_long',
  'no_uri_san',
  'several_uri_sans',
  'bad_spiffe_id',
  'wrong_trust_domain',
  'ca_leaf',
  'no_digital_signature',
  'leaf_cert_sign',
  'not_yet_valid',
  'expired',
  'bad_intermediate',
  'bad_signature',
  'unknown_ca',
] as const;
export type SvidRefusal = (typeof SVID_REFUSALS)[number];

/** The roots one trust domain's SVIDs chain up to (old and new ones during a rotation). */
export interface TrustBundle {
  readonly trustDomain: string;
  readonly roots: readonly X509Certificate[];
}

export type SvidVerdict =
  | { ok: true; spiffeId: string; id: SpiffeId; leaf: X509Certificate; notAfter: Date }
  | { ok: false; reason: SvidRefusal; message: string };

/** A bundle from PEM text; every certificate in it must be a CA certificate (throws naming the one that is not). */
export function trustBundle(trustDomain: string, rootsPem: string | readonly string[]): TrustBundle {
  const blocks = typeof rootsPem === 'string' ? pemCertificates(rootsPem) : rootsPem.flatMap((p) => pemCertificates(p));
  if (blocks.length === 0) throw new Error('a trust bundle holds at least one root certificate');
  const roots = new Map<string, X509Certificate>();
  for (const [i, pem] of blocks.entries()) {
    const root = new X509Certificate(pem);
    if (extensionsOf(root.raw).basicConstraints?.ca !== true) throw new Error(`trust bundle certificate ${i + 1} (${oneLineName(root.subject)}) is not a CA certificate`);
    roots.set(root.fingerprint256, root);
  }
  return { trustDomain, roots: [...roots.values()] };
}

/** `chain`: the leaf first, then the intermediates as presented (PEM text, or parsed). */
export function verifySvid(chain: string | readonly X509Certificate[], bundle: TrustBundle, at: Date): SvidVerdict {
  let certs: X509Certificate[];
  try {
    certs = typeof chain === 'string' ? pemCertificates(chain).map((p) => new X509Certificate(p)) : [...chain];
  } catch (err) {
    return refuse('malformed_certificate', `a certificate does not parse: ${(err as Error).message}`);
  }
  const leaf = certs[0];
  if (leaf === undefined) return refuse('no_certificate', 'no certificate was presented');
  if (certs.length > MAX_CHAIN_CERTIFICATES) return refuse('chain_too_long', `${certs.length} certificates were presented, at most ${MAX_CHAIN_CERTIFICATES}`);

  const checked = leafVerdict(leaf, bundle.trustDomain, at);
  if (!checked.ok) return checked;
  const { spiffeId, id } = checked;

  let current = leaf;
  for (let below = 0; ; below++) {
    const named = bundle.roots.filter((r) => r.subject === current.issuer);
    const root = named.find((r) => current.verify(r.publicKey));
    if (root !== undefined) {
      const what = `the root ${oneLineName(root.subject)}`;
      const problem = signerProblem(root, what, below) ?? timeProblem(root, what, at);
      return problem ?? { ok: true, spiffeId, id, leaf, notAfter: validityOf(leaf).notAfter };
    }
    const next = certs[below + 1];
    if (next === undefined || next.subject !== current.issuer) {
      if (named.length > 0) return refuse('bad_signature', `the signature on ${oneLineName(current.subject)} does not verify with the key of the root ${oneLineName(current.issuer)}`);
      return refuse('unknown_ca', `${oneLineName(current.subject)} was issued by ${oneLineName(current.issuer)}, which is neither a root of the trust bundle nor the next certificate presented`);
    }
    if (!current.verify(next.publicKey)) return refuse('bad_signature', `the signature on ${oneLineName(current.subject)} does not verify with the key of the intermediate ${oneLineName(next.subject)}`);
    const what = `the intermediate ${oneLineName(next.subject)}`;
    const problem = signerProblem(next, what, below) ?? timeProblem(next, what, at);
    if (problem !== undefined) return problem;
    current = next;
  }
}

/**
 * The leaf of a chain a TLS handshake has already verified up to a root of
 * the bundle (OpenSSL built and checked the path, and the server sees only
 * the leaf): the X509-SVID rules of the leaf itself, and its validity at `at`.
 */
export function verifySvidLeaf(leaf: X509Certificate, bundle: TrustBundle, at: Date): SvidVerdict {
  return leafVerdict(leaf, bundle.trustDomain, at);
}

function leafVerdict(leaf: X509Certificate, trustDomain: string, at: Date): SvidVerdict {
  const ext = extensions(leaf);
  if (ext === undefined) return refuse('malformed_certificate', 'the leaf certificate\'s extensions do not parse');
  if (ext.uriSans.length === 0) return refuse('no_uri_san', 'the leaf certificate has no URI SAN (an X509-SVID has exactly one: its SPIFFE ID)');
  if (ext.uriSans.length > 1) return refuse('several_uri_sans', `the leaf certificate has ${ext.uriSans.length} URI SANs, an X509-SVID exactly one`);
  const spiffeId = ext.uriSans[0]!;
  const parsed = parseSpiffeId(spiffeId);
  if (!parsed.ok) return refuse('bad_spiffe_id', `the leaf's URI SAN is not a SPIFFE ID: ${parsed.message} (${parsed.reason})`);
  if (parsed.value.path === '') return refuse('bad_spiffe_id', `the leaf names the trust domain itself (${spiffeId}), not a workload`);
  if (parsed.value.trustDomain !== trustDomain) return refuse('wrong_trust_domain', `${spiffeId} is not in the trust domain ${trustDomain}`);
  if (ext.basicConstraints?.ca === true) return refuse('ca_leaf', 'the leaf certificate is a CA certificate (basicConstraints CA:TRUE)');
  if (ext.keyUsage === undefined || (ext.keyUsage & KEY_USAGE.digitalSignature) === 0) return refuse('no_digital_signature', 'the leaf certificate\'s key usage lacks digitalSignature');
  if ((ext.keyUsage & (KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign)) !== 0) return refuse('leaf_cert_sign', 'the leaf certificate\'s key usage allows keyCertSign or cRLSign');

  return timeProblem(leaf, 'the leaf certificate', at) ?? { ok: true, spiffeId, id: parsed.value, leaf, notAfter: validityOf(leaf).notAfter };
}

/** A signing certificate's rules, `below` = how many intermediates it has under it on this path. */
function signerProblem(cert: X509Certificate, what: string, below: number): SvidVerdict | undefined {
  const ext = extensions(cert);
  if (ext === undefined) return refuse('malformed_certificate', `the extensions of ${what} do not parse`);
  if (ext.basicConstraints?.ca !== true) return refuse('bad_intermediate', `${what} is not a CA certificate`);
  if (ext.keyUsage !== undefined && (ext.keyUsage & KEY_USAGE.keyCertSign) === 0) return refuse('bad_intermediate', `${what} may not sign certificates (no keyCertSign)`);
  const limit = ext.basicConstraints.pathLength;
  if (limit !== undefined && below > limit) return refuse('bad_intermediate', `${what} allows ${limit} intermediates under it, this path has ${below}`);
  return undefined;
}

function timeProblem(cert: X509Certificate, what: string, at: Date): SvidVerdict | undefined {
  const { notBefore, notAfter } = validityOf(cert);
  if (at < notBefore) return refuse('not_yet_valid', `${what} is valid from ${notBefore.toISOString()}`);
  if (at > notAfter) return refuse('expired', `${what} expired at ${notAfter.toISOString()}`);
  return undefined;
}

function extensions(cert: X509Certificate): CertificateExtensions | undefined {
  try {
    return extensionsOf(cert.raw);
  } catch {
    return undefined;
  }
}

function refuse(reason: SvidRefusal, message: string): SvidVerdict {
  return { ok: false, reason, message };
}
