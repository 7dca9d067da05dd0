// What /config_dump and logs show of a certificate chain: names, SPIFFE ID,
// serial, validity, fingerprint. It takes certificates only, so no key can
// end up in what it returns.

import { X509Certificate } from 'node:crypto';
import { extensionsOf, oneLineName, pemCertificates, validityOf } from './certificate-facts.js';

export interface CertificateDescription {
  /** The URI SAN when there is exactly one, else null. */
  spiffeId: string | null;
  subject: string;
  issuer: string;
  /** Hex, as openssl prints it. */
  serial: string;
  notBefore: string;
  notAfter: string;
  ca: boolean;
  sha256: string;
}

export interface ChainDescription extends CertificateDescription {
  /** The certificates above the leaf, as presented (intermediates, then any root). */
  issuers: CertificateDescription[];
}

export function describeCertificate(cert: X509Certificate): CertificateDescription {
  const uris = extensionsOf(cert.raw).uriSans;
  const { notBefore, notAfter } = validityOf(cert);
  return {
    spiffeId: uris.length === 1 ? uris[0]! : null,
    subject: oneLineName(cert.subject),
    issuer: oneLineName(cert.issuer),
    serial: cert.serialNumber,
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    ca: cert.ca,
    sha256: cert.fingerprint256,
  };
}

/** A chain (leaf first), PEM text or parsed. */
export function describeChain(chain: string | readonly X509Certificate[]): ChainDescription {
  const certs = typeof chain === 'string' ? pemCertificates(chain).map((p) => new X509Certificate(p)) : chain;
  const [leaf, ...issuers] = certs;
  if (leaf === undefined) throw new Error('an empty certificate chain');
  return { ...describeCertificate(leaf), issuers: issuers.map(describeCertificate) };
}
