// Making one certificate: a random serial, the subject and authority key
// identifiers (so verifiers link each certificate to its issuer's key), the
// extensions the caller chose, signed by an issuer's key. The profiles (what a
// root, the intermediate and a leaf carry) are the CA's (ca.ts, ca-root.ts).

import { X509Certificate, randomBytes, type KeyObject, type webcrypto } from 'node:crypto';
import { keyIdentifier } from '../../proxy/identity/certificate-facts.js';
import { signingAlgorithmOf, signingKey, x509 } from '../../proxy/identity/x509.js';

/** What signs: the issuer's name as its certificate encodes it, its key identifier, its private key. */
export interface CertificateSigner {
  readonly name: x509.Name;
  /** Hex subject key identifier of the issuer, copied into the authority key identifier. */
  readonly keyId: string;
  readonly key: webcrypto.CryptoKey;
  readonly algorithm: NonNullable<ReturnType<typeof signingAlgorithmOf>>;
}

export interface IssuedCertificate {
  readonly cert: X509Certificate;
  readonly pem: string;
}

/** The signer for a CA certificate and its private key (its own key identifier when it has one). */
export async function signerOf(cert: X509Certificate, privateKey: KeyObject): Promise<CertificateSigner> {
  const parsed = new x509.X509Certificate(cert.raw);
  const ski = parsed.getExtension(x509.SubjectKeyIdentifierExtension);
  return signerFor(parsed.subjectName, ski?.keyId ?? keyIdentifier(cert.publicKey), privateKey);
}

export async function signerFor(name: x509.Name, keyId: string, privateKey: KeyObject): Promise<CertificateSigner> {
  const algorithm = signingAlgorithmOf(privateKey);
  if (algorithm === undefined) throw new Error('unsupported signing key type');
  return { name, keyId, key: await signingKey(privateKey), algorithm };
}

export interface CertificateRequest {
  subject: x509.Name | string;
  publicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: x509.Extension[];
}

export async function issueCertificate(signer: CertificateSigner, request: CertificateRequest): Promise<IssuedCertificate> {
  const signed = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: request.subject,
    issuer: signer.name,
    notBefore: request.notBefore,
    notAfter: request.notAfter,
    publicKey: spki(request.publicKey),
    signingKey: signer.key,
    signingAlgorithm: signer.algorithm,
    extensions: [...request.extensions, new x509.SubjectKeyIdentifierExtension(keyIdentifier(request.publicKey)), new x509.AuthorityKeyIdentifierExtension(signer.keyId)],
  });
  const pem = `${signed.toString('pem')}\n`;
  return { cert: new X509Certificate(pem), pem };
}

/** 16 bytes, positive, first byte non-zero (RFC 5280: at most 20 octets, positive; CA/B: at least 64 random bits). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function spki(publicKey: KeyObject): x509.PublicKey {
  return new x509.PublicKey(publicKey.export({ format: 'der', type: 'spki' }));
}
