// A small PKI for verifier tests: roots, intermediates and leaves with any
// extensions, including the ones an X509-SVID must not have: built with the
// CA's certificate maker (xds/identity/issue.ts) but not with its profiles,
// so a test can break each rule.

import type { X509Certificate } from 'node:crypto';
import { generateWorkloadKeys, type WorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { keyIdentifier } from '../../proxy/identity/certificate-facts.js';
import { x509 } from '../../proxy/identity/x509.js';
import { issueCertificate, signerFor, signerOf, type CertificateSigner } from '../../xds/identity/issue.js';

export interface Issued {
  cert: X509Certificate;
  pem: string;
  keys: WorkloadKeys;
}

const HOUR = 3_600_000;

export interface CertOptions {
  subject: string;
  extensions: x509.Extension[];
  notBefore?: Date;
  notAfter?: Date;
}

/** A self-signed CA certificate (CA:TRUE, keyCertSign + cRLSign). */
export async function makeRoot(subject = 'O=test, CN=test root', options: Partial<CertOptions> = {}): Promise<Issued> {
  const keys = generateWorkloadKeys();
  const name = new x509.Name(subject);
  return sign(keys, { subject, extensions: caExtensions(), ...options }, await signerFor(name, keyIdentifier(keys.publicKey), keys.privateKey));
}

/** A certificate for a new key, signed by `issuer`. */
export async function makeCert(issuer: Issued, options: CertOptions): Promise<Issued> {
  return sign(generateWorkloadKeys(), options, await signerOf(issuer.cert, issuer.keys.privateKey));
}

export function caExtensions(pathLength?: number): x509.Extension[] {
  return [new x509.BasicConstraintsExtension(true, pathLength, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)];
}

/** A leaf's extensions: the X509-SVID ones unless overridden. */
export function leafExtensions(options: { uris?: string[]; ca?: boolean; usage?: number | null; dns?: string[] } = {}): x509.Extension[] {
  const names = [...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })), ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value }))];
  const usage = options.usage === undefined ? x509.KeyUsageFlags.digitalSignature : options.usage;
  return [
    new x509.BasicConstraintsExtension(options.ca ?? false, undefined, true),
    ...(usage === null ? [] : [new x509.KeyUsagesExtension(usage, true)]),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    ...(names.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(names)]),
  ];
}

async function sign(keys: WorkloadKeys, options: CertOptions, signer: CertificateSigner): Promise<Issued> {
  const now = Date.now();
  const { cert, pem } = await issueCertificate(signer, {
    subject: options.subject,
    publicKey: keys.publicKey,
    notBefore: options.notBefore ?? new Date(now - HOUR),
    notAfter: options.notAfter ?? new Date(now + 24 * HOUR),
    extensions: options.extensions,
  });
  return { cert, pem, keys };
}

/** PEM material for one TLS identity, as the native core takes it. */
export interface PemIdentity {
  keyPem: string;
  chainPem: string;
  bundlePem: string;
  spiffeId: string;
  leaf: Issued;
}

/** A mesh identity for a VM's sidecar: an X509-SVID for spiffe://vsockmesh.local/vm/<vmId>, signed by `root`, trusting `trusts` (default: root). */
export async function vmIdentity(root: Issued, vmId: string, options: { notBefore?: Date; notAfter?: Date; trusts?: Issued[]; uris?: string[] } = {}): Promise<PemIdentity> {
  const spiffeId = `spiffe://vsockmesh.local/vm/${vmId}`;
  const leaf = await makeCert(root, { subject: '', extensions: leafExtensions({ uris: options.uris ?? [spiffeId] }), notBefore: options.notBefore, notAfter: options.notAfter });
  return {
    keyPem: leaf.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    chainPem: leaf.pem,
    bundlePem: (options.trusts ?? [root]).map((r) => r.pem).join(''),
    spiffeId,
    leaf,
  };
}
