// Identity material from PEM files (a key, a chain with the leaf first, a
// trust bundle), e.g. written by cert-manager or an organisation's PKI: the
// one reader for the control-plane clients and servers (tls:, --cert/--key/--ca)
// and for the peer hop (peer_tls). The files are checked together (the key is
// the leaf's, the chain verifies as an X509-SVID against the bundle, of an
// expected trust domain when one is given) and polled (a rename over a file,
// as certificate tools write, is seen as well as an edit in place): a change
// is loaded and announced; a bad new set (half written, mismatched, expired)
// is reported once with a reason and the last good material keeps serving.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from '../runtime/log.js';
import { fileErrorText } from '../runtime/durable-file.js';
import { extensionsOf, pemCertificates, samePublicKey } from './certificate-facts.js';
import type { CertificateSource, IdentityMaterial } from './certificate-source.js';
import { parseSpiffeId } from './spiffe.js';
import { trustBundle, verifySvid } from './svid.js';

export interface CertificateFiles {
  keyPath: string;
  /** The leaf first, then the intermediates. */
  certPath: string;
  /** The trust bundle: the roots (old and new ones during a root rotation). */
  caPath: string;
}

export const DEFAULT_CERTIFICATE_POLL_MS = 1_000;

export type CertificateFilesProblem = 'identity_file_unreadable' | 'identity_key_invalid' | 'identity_cert_invalid' | 'identity_key_mismatch' | 'identity_bundle_invalid' | 'identity_not_an_svid';

export class CertificateFilesError extends Error {
  constructor(
    readonly reason: CertificateFilesProblem,
    message: string,
  ) {
    super(message);
    this.name = 'CertificateFilesError';
  }
}

/**
 * The three files as one checked set; throws CertificateFilesError naming the
 * file (never its content). `trustDomain`: the identity must be of this trust
 * domain (else the leaf's own trust domain is taken).
 */
export async function readCertificateFiles(files: CertificateFiles, at: Date, trustDomain?: string): Promise<IdentityMaterial> {
  const [keyPem, chainPem, bundlePem] = await Promise.all([files.keyPath, files.certPath, files.caPath].map((p) => readFile(p, 'utf8').catch((err: unknown) => fail('identity_file_unreadable', `cannot read ${p}: ${fileErrorText(err)}`))));
  return checkMaterial(files, keyPem!, chainPem!, bundlePem!, at, trustDomain);
}

function checkMaterial(files: CertificateFiles, keyPem: string, chainPem: string, bundlePem: string, at: Date, trustDomain: string | undefined): IdentityMaterial {
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    // The parser's message can quote the input.
    return fail('identity_key_invalid', `${files.keyPath}: not a PEM private key`);
  }
  const blocks = pemCertificates(chainPem);
  let leaf: X509Certificate;
  try {
    if (blocks.length === 0) throw new Error('no PEM CERTIFICATE block');
    leaf = new X509Certificate(blocks[0]!);
  } catch (err) {
    return fail('identity_cert_invalid', `${files.certPath}: ${(err as Error).message}`);
  }
  if (!samePublicKey(key, leaf.publicKey)) return fail('identity_key_mismatch', `${files.keyPath} is not the key of the first certificate in ${files.certPath}`);
  const uris = extensionsOf(leaf.raw).uriSans;
  const id = uris.length === 1 ? parseSpiffeId(uris[0]!) : undefined;
  if (id === undefined || !id.ok) return fail('identity_not_an_svid', `${files.certPath}: the first certificate does not carry exactly one SPIFFE ID`);
  const domain = trustDomain ?? id.value.trustDomain;
  let bundle;
  try {
    bundle = trustBundle(domain, bundlePem);
  } catch (err) {
    return fail('identity_bundle_invalid', `${files.caPath}: ${(err as Error).message}`);
  }
  const verdict = verifySvid(chainPem, bundle, at);
  if (!verdict.ok) return fail('identity_not_an_svid', `${files.certPath} is not a valid X509-SVID of ${domain} (${verdict.reason}) under ${files.caPath}: ${verdict.message}`);
  return { keyPem, chainPem, bundlePem, spiffeId: verdict.spiffeId, notAfter: verdict.notAfter };
}

function fail(reason: CertificateFilesProblem, message: string): never {
  throw new CertificateFilesError(reason, message);
}

export interface FileSourceOptions {
  logger: Logger;
  pollMs?: number;
  now?: () => number;
  /** The identity must be of this trust domain (at start and on every reload). */
  trustDomain?: string;
  /** A changed set that is refused (the current material keeps serving); default: a `warn` line with the reason. */
  onReloadFailed?: (reason: CertificateFilesProblem, message: string) => void;
}

/** A CertificateSource over files, polled for changes until close(). */
export class FileCertificateSource implements CertificateSource {
  private readonly listeners = new Set<(m: IdentityMaterial) => void>();
  private timer: NodeJS.Timeout | undefined;
  private stamp: string;
  private polling: Promise<void> | undefined;

  private constructor(
    readonly files: CertificateFiles,
    private material: IdentityMaterial,
    stamp: string,
    private readonly options: FileSourceOptions,
  ) {
    this.stamp = stamp;
  }

  /** Reads and checks the files now (a bad set fails the start), then polls them. */
  static async open(files: CertificateFiles, options: FileSourceOptions): Promise<FileCertificateSource> {
    const now = options.now ?? Date.now;
    const stamp = await stampOf(files);
    const source = new FileCertificateSource(files, await readCertificateFiles(files, new Date(now()), options.trustDomain), stamp, options);
    source.timer = setInterval(() => void source.poll(), options.pollMs ?? DEFAULT_CERTIFICATE_POLL_MS);
    source.timer.unref();
    return source;
  }

  current(): IdentityMaterial {
    return this.material;
  }

  onChange(listener: (m: IdentityMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Looks at the files now (the timer does this every pollMs). */
  poll(): Promise<void> {
    this.polling ??= this.reload().finally(() => {
      this.polling = undefined;
    });
    return this.polling;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private async reload(): Promise<void> {
    const { logger, now = Date.now } = this.options;
    const stamp = await stampOf(this.files);
    if (stamp === this.stamp) return;
    // A refused set is reported once: the next write to any of the files is read again.
    this.stamp = stamp;
    let next: IdentityMaterial;
    try {
      next = await readCertificateFiles(this.files, new Date(now()), this.options.trustDomain);
    } catch (err) {
      const reason = err instanceof CertificateFilesError ? err.reason : 'identity_file_unreadable';
      const message = (err as Error).message;
      if (this.options.onReloadFailed) this.options.onReloadFailed(reason, message);
      else logger.warn({ reason, cert_file: this.files.certPath }, `new identity files refused, keeping the current certificate (until ${this.material.notAfter.toISOString()}): ${message}`);
      return;
    }
    if (next.keyPem === this.material.keyPem && next.chainPem === this.material.chainPem && next.bundlePem === this.material.bundlePem) return;
    this.material = next;
    logger.info({ spiffe_id: next.spiffeId, not_after: next.notAfter.toISOString(), cert_file: this.files.certPath }, 'identity files reloaded');
    for (const listener of this.listeners) listener(next);
  }
}

/** What changes when any of the files is replaced, rewritten or removed (a missing file is read, and refused, once). */
async function stampOf(files: CertificateFiles): Promise<string> {
  const stats = await Promise.all([files.keyPath, files.certPath, files.caPath].map((p) => stat(p).then((s) => `${s.ino}:${s.size}:${s.mtimeMs}`, () => 'missing')));
  return stats.join('|');
}
