// Where the CA's authority comes from (the "upstream" of its intermediate):
//
//   files      --ca-cert/--ca-key: a CA certificate and its key from an
//              organisation's PKI or cert-manager. The certificate file holds
//              that CA first, then every certificate above it up to and
//              including its self-signed root; the CA may be the root itself,
//              or an intermediate issued for us (then the root's key stays
//              offline). An optional bundle file adds roots to the trust
//              bundle (old and new ones during a root rotation).
//   generated  the embedded default: a root made at first start in a
//              directory (root.pem, root-key.pem, mode 0600, directory 0700)
//              and read back at every later start.
//
// Either way the key file must not be readable by group or others. Every
// problem is a CaSetupError with a snake_case reason and a message naming the
// file (never its content).

import { X509Certificate, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileErrorText, writeFileDurably } from '../../proxy/runtime/durable-file.js';
import { trustBundle } from '../../proxy/identity/svid.js';
import { KEY_USAGE, extensionsOf, keyIdentifier, oneLineName, pemCertificates, samePublicKey, validityOf } from '../../proxy/identity/certificate-facts.js';
import { describeKeyType, signingAlgorithmOf, x509 } from '../../proxy/identity/x509.js';
import { issueCertificate, signerFor } from './issue.js';

export type CaSetupProblem =
  | 'ca_file_unreadable'
  | 'ca_cert_invalid'
  | 'ca_key_invalid'
  | 'ca_key_permissions'
  | 'ca_key_unsupported'
  | 'ca_key_mismatch'
  | 'ca_not_a_ca'
  | 'ca_chain_broken'
  | 'ca_chain_incomplete'
  | 'ca_not_yet_valid'
  | 'ca_expired'
  | 'ca_state_incomplete'
  | 'ca_bundle_invalid';

export class CaSetupError extends Error {
  constructor(
    readonly reason: CaSetupProblem,
    message: string,
  ) {
    super(message);
    this.name = 'CaSetupError';
  }
}

/** The authority the CA's intermediate is issued under. */
export interface Upstream {
  readonly source: 'files' | 'generated';
  /** The CA certificate whose key signs our intermediate. */
  readonly cert: X509Certificate;
  readonly key: KeyObject;
  /** The certificates between `cert` and its root, `cert` included unless it is the root: they follow our intermediate in every chain. */
  readonly chainAbove: readonly X509Certificate[];
  /** The trust bundle: the root of `cert`, then any added roots. */
  readonly roots: readonly X509Certificate[];
}

export interface UpstreamFiles {
  certPath: string;
  keyPath: string;
  /** Roots added to the trust bundle (PEM). */
  bundlePath?: string;
}

export const ROOT_CERT_FILE = 'root.pem';
export const ROOT_KEY_FILE = 'root-key.pem';
/** A generated root lives long: replacing it means a root rotation on every machine. */
export const GENERATED_ROOT_LIFETIME_MS = 10 * 365 * 24 * 3_600_000;

export async function loadUpstream(files: UpstreamFiles, trustDomain: string, now: Date): Promise<Upstream> {
  const certs = await readCertificates(files.certPath);
  const key = await readPrivateKey(files.keyPath);
  const [cert] = certs as [X509Certificate, ...X509Certificate[]];
  if (signingAlgorithmOf(key) === undefined) throw new CaSetupError('ca_key_unsupported', `${files.keyPath}: a ${describeKeyType(key)} key; the CA key is ECDSA P-256, P-384 or RSA`);
  if (!samePublicKey(key, cert.publicKey)) throw new CaSetupError('ca_key_mismatch', `${files.keyPath} is not the key of the first certificate in ${files.certPath} (${oneLineName(cert.subject)})`);
  const usage = extensionsOf(cert.raw);
  if (usage.basicConstraints?.ca !== true || (usage.keyUsage !== undefined && (usage.keyUsage & KEY_USAGE.keyCertSign) === 0)) {
    throw new CaSetupError('ca_not_a_ca', `${files.certPath}: ${oneLineName(cert.subject)} is not a CA certificate allowed to sign certificates`);
  }
  for (const [i, c] of certs.entries()) {
    const issuer = certs[i + 1] ?? c;
    if (c.issuer !== issuer.subject || !c.verify(issuer.publicKey)) {
      if (certs[i + 1] === undefined) throw new CaSetupError('ca_chain_incomplete', `${files.certPath}: the chain ends at ${oneLineName(c.subject)}, which is not a self-signed root; add the certificates up to the root`);
      throw new CaSetupError('ca_chain_broken', `${files.certPath}: certificate ${i + 1} (${oneLineName(c.subject)}) was not issued by certificate ${i + 2} (${oneLineName(issuer.subject)})`);
    }
  }
  const { notBefore, notAfter } = validityOf(cert);
  if (now < notBefore) throw new CaSetupError('ca_not_yet_valid', `${files.certPath}: ${oneLineName(cert.subject)} is valid from ${notBefore.toISOString()}`);
  if (now >= notAfter) throw new CaSetupError('ca_expired', `${files.certPath}: ${oneLineName(cert.subject)} expired at ${notAfter.toISOString()}`);
  const root = certs[certs.length - 1]!;
  const added = files.bundlePath === undefined ? [] : await readBundle(files.bundlePath, trustDomain);
  const roots = [root, ...added.filter((r) => r.fingerprint256 !== root.fingerprint256)];
  return { source: 'files', cert, key, chainAbove: certs.slice(0, -1), roots };
}

/** The root kept in `dir`, made there first if there is none. */
export async function loadOrCreateRoot(dir: string, trustDomain: string, now: Date): Promise<Upstream> {
  const certPath = join(dir, ROOT_CERT_FILE);
  const keyPath = join(dir, ROOT_KEY_FILE);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const [hasCert, hasKey] = await Promise.all([exists(certPath), exists(keyPath)]);
  if (hasCert && !hasKey) throw new CaSetupError('ca_state_incomplete', `${certPath} exists without its key ${keyPath}; restore the key, or move both away to make a new root (every certificate issued under the old one is then refused)`);
  // A key without its certificate is a first start that stopped in between: nothing was ever issued under it.
  if (!hasCert) await createRoot(certPath, keyPath, now);
  const upstream = await loadUpstream({ certPath, keyPath }, trustDomain, now);
  return { ...upstream, source: 'generated' };
}

async function createRoot(certPath: string, keyPath: string, now: Date): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = new x509.Name(`O=vsockmesh, CN=vsockmesh root ${keyIdentifier(publicKey).slice(0, 16)}`);
  const signer = await signerFor(name, keyIdentifier(publicKey), privateKey);
  const root = await issueCertificate(signer, {
    subject: name,
    publicKey,
    notBefore: now,
    notAfter: new Date(now.getTime() + GENERATED_ROOT_LIFETIME_MS),
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  // The key first: a certificate is only ever there with its key.
  await writeFileDurably(keyPath, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  await writeFileDurably(certPath, root.pem, { mode: 0o600 });
}

async function readCertificates(path: string): Promise<X509Certificate[]> {
  const blocks = pemCertificates(await readText(path));
  if (blocks.length === 0) throw new CaSetupError('ca_cert_invalid', `${path}: no PEM CERTIFICATE block`);
  return blocks.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch (err) {
      throw new CaSetupError('ca_cert_invalid', `${path}: certificate ${i + 1} does not parse (${(err as Error).message})`);
    }
  });
}

async function readPrivateKey(path: string): Promise<KeyObject> {
  const mode = await statMode(path);
  if ((mode & 0o077) !== 0) throw new CaSetupError('ca_key_permissions', `${path} is readable or writable by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  try {
    return createPrivateKey(await readText(path));
  } catch (err) {
    if (err instanceof CaSetupError) throw err;
    // The parser's message can quote the input: say only that it is not a key.
    throw new CaSetupError('ca_key_invalid', `${path}: not a PEM private key`);
  }
}

async function readBundle(path: string, trustDomain: string): Promise<X509Certificate[]> {
  const text = await readText(path);
  try {
    return [...trustBundle(trustDomain, text).roots];
  } catch (err) {
    throw new CaSetupError('ca_bundle_invalid', `${path}: ${(err as Error).message}`);
  }
}

async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8').catch((err: unknown) => unreadable(path, err));
}

async function statMode(path: string): Promise<number> {
  return (await stat(path).catch((err: unknown) => unreadable(path, err))).mode;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? false : unreadable(path, err)),
  );
}

function unreadable(path: string, err: unknown): never {
  throw new CaSetupError('ca_file_unreadable', `cannot read ${path}: ${fileErrorText(err)}`);
}
