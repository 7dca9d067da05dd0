// A small PKI for verifier tests: roots, intermediates and leaves with any
// extensions, including the ones an X509-SVID must not have: built with the
// CA's certificate maker (xds/identity/issue.ts) but not with its profiles,
// so a test can break each rule.

import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertificateSource, IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { DEFAULT_TRUST_DOMAIN, type IdentityKind } from '../../proxy/identity/spiffe.js';
import { CertificateAuthority } from '../../xds/identity/ca.js';
import { ROOT_CERT_FILE, ROOT_KEY_FILE } from '../../xds/identity/ca-root.js';
import { issueIdentity } from '../../xds/security/process-identity.js';
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

// ---- a mesh CA for tests of the control APIs over mutual TLS -------------------------------

/** A CA like the control plane's (generated root in a temporary directory), issuing mesh identities. */
export interface TestMeshCa {
  ca: CertificateAuthority;
  trustDomain: string;
  /** The root with its key, to sign certificates the CA itself never would (expired, foreign trust domain). */
  root: Issued;
  /** An SVID for spiffe://<trust-domain>/<kind>/<name>. */
  identity(kind: IdentityKind, name: string): Promise<IdentityMaterial>;
  /** Material for a leaf made by hand under the root (any URI SAN, any validity). */
  handMade(options: { uri: string; notBefore?: Date; notAfter?: Date }): Promise<IdentityMaterial>;
  /** The material's files (key.pem mode 0600, cert.pem, ca.pem) in a new directory. */
  files(m: IdentityMaterial): Promise<{ certPath: string; keyPath: string; caPath: string; dir: string }>;
  cleanup(): Promise<void>;
}

/** `rootDir`: the root of an existing CA directory (a control plane's embedded root), kept at cleanup; default a new one. */
export async function startTestMeshCa(trustDomain = DEFAULT_TRUST_DOMAIN, rootDir?: string): Promise<TestMeshCa> {
  const dir = rootDir ?? (await mkdtemp(join(tmpdir(), 'vsockmesh-ca-')));
  const ca = await CertificateAuthority.open({ trustDomain, upstream: { dir } });
  const [rootPem, rootKeyPem] = await Promise.all([readFile(join(dir, ROOT_CERT_FILE), 'utf8'), readFile(join(dir, ROOT_KEY_FILE), 'utf8')]);
  const privateKey = createPrivateKey(rootKeyPem);
  const root: Issued = { cert: new X509Certificate(rootPem), pem: rootPem, keys: { privateKey, publicKey: createPublicKey(privateKey) } };
  const bundlePem = ca.trustBundlePem().join('');
  const made: string[] = rootDir === undefined ? [dir] : [];
  return {
    ca,
    trustDomain,
    root,
    identity: (kind, name) => issueIdentity(ca, `spiffe://${trustDomain}/${kind}/${name}`),
    handMade: async ({ uri, notBefore, notAfter }) => {
      const leaf = await makeCert(root, { subject: 'O=test', extensions: leafExtensions({ uris: [uri] }), ...(notBefore && { notBefore }), ...(notAfter && { notAfter }) });
      return { keyPem: leaf.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), chainPem: leaf.pem, bundlePem, spiffeId: uri, notAfter: new Date(leaf.cert.validTo) };
    },
    files: async (m) => {
      const out = await mkdtemp(join(tmpdir(), 'vsockmesh-id-'));
      made.push(out);
      const paths = { certPath: join(out, 'cert.pem'), keyPath: join(out, 'key.pem'), caPath: join(out, 'ca.pem'), dir: out };
      await writeFile(paths.keyPath, m.keyPem, { mode: 0o600 });
      await writeFile(paths.certPath, m.chainPem);
      await writeFile(paths.caPath, m.bundlePem);
      return paths;
    },
    cleanup: async () => {
      await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

/** A source whose material a test replaces (a rotation). */
export class RotatingSource implements CertificateSource {
  private readonly listeners = new Set<(m: IdentityMaterial) => void>();
  constructor(private material: IdentityMaterial) {}
  current(): IdentityMaterial {
    return this.material;
  }
  onChange(listener: (m: IdentityMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  rotate(next: IdentityMaterial): void {
    this.material = next;
    for (const l of this.listeners) l(next);
  }
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
