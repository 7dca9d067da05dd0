// Whether a certificate signing request may be signed: it parses, its
// signature verifies with the key it carries (the requester holds that key),
// the key is ECDSA P-256, and it asks for exactly one thing: the one SPIFFE ID
// the caller is entitled to. Anything else it asks for (other SANs, CA:TRUE,
// key usages) is refused or never copied: the CA writes every extension of
// the leaf itself.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { parseSpiffeId } from '../../proxy/identity/spiffe.js';
import { x509 } from '../../proxy/identity/x509.js';

/** A P-256 CSR with one URI SAN is under 1 KiB; the bound keeps parsing cheap. */
export const MAX_CSR_CHARS = 16 * 1024;

export const CSR_REFUSALS = [
  'csr_too_large',
  'csr_malformed',
  'csr_bad_signature',
  'csr_key_type',
  'csr_no_spiffe_id',
  'csr_several_uri_sans',
  'csr_other_sans',
  'csr_bad_spiffe_id',
  'not_entitled',
] as const;
export type CsrRefusal = (typeof CSR_REFUSALS)[number];

export type CsrVerdict = { ok: true; spiffeId: string; publicKey: KeyObject } | { ok: false; reason: CsrRefusal; message: string };

/** `entitled`: the SPIFFE ID the caller decided the requester may have. */
export async function checkCsr(csrPem: string, entitled: string): Promise<CsrVerdict> {
  const verdict = await inspectCsr(csrPem);
  if (verdict.ok && verdict.spiffeId !== entitled) return refuse('not_entitled', `the CSR asks for ${verdict.spiffeId}; this caller may have ${entitled} only`);
  return verdict;
}

/** Every rule but the entitlement: what a well-formed CSR asks for (a join token is then checked against that). */
export async function inspectCsr(csrPem: string): Promise<CsrVerdict> {
  if (csrPem.length > MAX_CSR_CHARS) return refuse('csr_too_large', `the CSR is ${csrPem.length} characters, at most ${MAX_CSR_CHARS}`);
  let csr: x509.Pkcs10CertificateRequest;
  let sans: x509.GeneralName[];
  let publicKey: KeyObject;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
    sans = csr.extensions.flatMap((e) => (e instanceof x509.SubjectAlternativeNameExtension ? [...e.names.items] : []));
    publicKey = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch {
    return refuse('csr_malformed', 'the CSR is not a PEM PKCS#10 request');
  }
  if (!(await csr.verify().catch(() => false))) return refuse('csr_bad_signature', 'the CSR\'s signature does not verify with its public key');
  if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return refuse('csr_key_type', 'the CSR\'s key is not ECDSA P-256');
  const uris = sans.filter((n) => n.type === 'url').map((n) => n.value);
  if (uris.length === 0) return refuse('csr_no_spiffe_id', 'the CSR asks for no URI SAN (it names exactly one SPIFFE ID)');
  if (uris.length > 1) return refuse('csr_several_uri_sans', `the CSR asks for ${uris.length} URI SANs, exactly one is allowed`);
  if (uris.length !== sans.length) return refuse('csr_other_sans', 'the CSR asks for SANs other than its SPIFFE ID (DNS, IP, email)');
  const spiffeId = uris[0]!;
  const parsed = parseSpiffeId(spiffeId);
  if (!parsed.ok) return refuse('csr_bad_spiffe_id', `the CSR's URI SAN is not a SPIFFE ID: ${parsed.message} (${parsed.reason})`);
  return { ok: true, spiffeId, publicKey };
}

function refuse(reason: CsrRefusal, message: string): CsrVerdict {
  return { ok: false, reason, message };
}
