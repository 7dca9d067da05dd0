// Where a control-plane or VM-manager process takes the identity of its
// control APIs from, decided once at start:
//   --cert/--key/--ca           PEM files, reloaded when they change
//   --ca-cert/--ca-key[/--ca-bundle], --identity-dir
//                               the process holds the CA (under an
//                               organisation's CA certificate, or the embedded
//                               root generated in <identity-dir>/ca): it
//                               issues itself `cp/<name>` and again at 50-70 %
//                               of its lifetime; the control plane serves
//                               Certify with the same CA instance
//   --insecure                  plain text, with a warning (guard.ts)
// Nothing of these is an error: plain text is never a default.

import { validityOf } from '../../proxy/identity/certificate-facts.js';
import { FileCertificateSource } from '../../proxy/identity/certificate-files.js';
import type { CertificateSource, IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { renewalDelay } from '../../proxy/identity/renewal.js';
import { DEFAULT_TRUST_DOMAIN, meshIdentityId } from '../../proxy/identity/spiffe.js';
import type { Logger } from '../../proxy/runtime/log.js';
import { CertificateAuthority } from '../identity/ca.js';
import type { ControlTransport } from './transport.js';

/** Where the embedded root lives inside --identity-dir. */
export const GENERATED_ROOT_DIR = 'ca';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';

const RETRY_MS = 30_000;

export interface IdentityFlags {
  insecure?: boolean;
  cert?: string;
  key?: string;
  ca?: string;
  caCert?: string;
  caKey?: string;
  /** Roots added to the trust bundle (the other root during a root rotation). */
  caBundle?: string;
  /** The embedded root (in <dir>/ca) unless --ca-cert/--ca-key; the control plane's join tokens. */
  identityDir?: string;
  /** The replica name in `cp/<name>` (default: the role). */
  name?: string;
  trustDomain?: string;
  /** Lifetime of every leaf the CA issues (default 24 h). */
  leafLifetimeMs?: number;
}

export interface ProcessIdentity {
  transport: ControlTransport;
  /** The CA when the process holds it: the one instance that issues this process's identity and serves Certify. */
  ca: CertificateAuthority | undefined;
  /** --identity-dir, where the control plane keeps its join tokens. */
  dir: string | undefined;
  close(): void;
}

export class IdentityFlagsError extends Error {
  override name = 'IdentityFlagsError';
}

export async function processIdentity(flags: IdentityFlags, logger: Logger, role: 'control-plane' | 'vm-manager'): Promise<ProcessIdentity> {
  const files = [flags.cert, flags.key, flags.ca];
  const hasFiles = files.some((f) => f !== undefined);
  const hasCa = flags.caCert !== undefined || flags.caKey !== undefined || flags.identityDir !== undefined;
  if (flags.insecure && (hasFiles || hasCa)) throw new IdentityFlagsError('--insecure cannot be combined with --cert/--key/--ca or a CA');
  if (!hasCa && (flags.caBundle !== undefined || flags.leafLifetimeMs !== undefined)) throw new IdentityFlagsError('--ca-bundle and --leaf-lifetime need a CA: --ca-cert/--ca-key or --identity-dir');
  if (flags.insecure) return { transport: { insecure: true }, ca: undefined, dir: undefined, close: () => {} };
  if (hasFiles) {
    if (files.some((f) => f === undefined)) throw new IdentityFlagsError('--cert, --key and --ca go together');
    if (hasCa) throw new IdentityFlagsError('give either --cert/--key/--ca files or a CA (--ca-cert/--ca-key, --identity-dir), not both');
    const source = await FileCertificateSource.open({ certPath: flags.cert!, keyPath: flags.key!, caPath: flags.ca! }, { logger });
    logger.info({ spiffe_id: source.current().spiffeId, not_after: source.current().notAfter.toISOString() }, 'control API identity from files');
    return { transport: { source }, ca: undefined, dir: undefined, close: () => source.close() };
  }
  if (hasCa) {
    if ((flags.caCert === undefined) !== (flags.caKey === undefined)) throw new IdentityFlagsError('--ca-cert and --ca-key go together');
    const trustDomain = flags.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const ca = await CertificateAuthority.open({
      trustDomain,
      upstream: flags.caCert !== undefined ? { files: { certPath: flags.caCert, keyPath: flags.caKey!, ...(flags.caBundle !== undefined && { bundlePath: flags.caBundle }) } } : { dir: join(flags.identityDir!, GENERATED_ROOT_DIR) },
      ...(flags.leafLifetimeMs !== undefined && { leafLifetimeMs: flags.leafLifetimeMs }),
    });
    const id = meshIdentityId(trustDomain, 'cp', flags.name ?? role);
    if (!id.ok) throw new IdentityFlagsError(`--name: ${id.message}`);
    const source = await SelfIssuedSource.start(ca, id.value, logger);
    logger.info({ spiffe_id: id.value, not_after: source.current().notAfter.toISOString() }, 'control API identity issued by this process\'s CA');
    return { transport: { source }, ca, dir: flags.identityDir, close: () => source.close() };
  }
  throw new IdentityFlagsError('the control APIs need an identity: --cert/--key/--ca files, or a CA (--ca-cert/--ca-key, or --identity-dir for the embedded root) to issue this process cp/<name>; --insecure serves plain text');
}

/** This process's own SVID from its own CA, issued again at 50-70 % of its lifetime. */
class SelfIssuedSource implements CertificateSource {
  private readonly listeners = new Set<(m: IdentityMaterial) => void>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly ca: CertificateAuthority,
    private readonly spiffeId: string,
    private readonly logger: Logger,
    private material: IdentityMaterial,
  ) {}

  static async start(ca: CertificateAuthority, spiffeId: string, logger: Logger): Promise<SelfIssuedSource> {
    const source = new SelfIssuedSource(ca, spiffeId, logger, await issueIdentity(ca, spiffeId));
    source.schedule();
    return source;
  }

  current(): IdentityMaterial {
    return this.material;
  }

  onChange(listener: (m: IdentityMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.closed) return;
    const leaf = new X509Certificate(this.material.chainPem);
    const { notBefore, notAfter } = validityOf(leaf);
    this.timer = setTimeout(() => void this.renew(), Math.min(renewalDelay({ notBefore: notBefore.getTime(), notAfter: notAfter.getTime() }, Date.now(), Math.random), 2 ** 31 - 1));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      this.material = await issueIdentity(this.ca, this.spiffeId);
      for (const l of this.listeners) l(this.material);
    } catch (err) {
      this.logger.error({ err, reason: 'self_issue_failed' }, `cannot issue this process a new certificate: ${(err as Error).message}; keeping the current one until ${this.material.notAfter.toISOString()}, retrying in ${RETRY_MS / 1000} s`);
      if (!this.closed) this.timer = setTimeout(() => void this.renew(), RETRY_MS).unref();
      return;
    }
    this.schedule();
  }
}

/** A new key and an SVID for it from `ca` (the key stays in this process). */
export async function issueIdentity(ca: CertificateAuthority, spiffeId: string): Promise<IdentityMaterial> {
  const keys = generateWorkloadKeys();
  const issued = await ca.sign(await createCsr(keys, spiffeId), spiffeId);
  return { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), chainPem: issued.chain.join(''), bundlePem: issued.trustBundle.join(''), spiffeId, notAfter: issued.notAfter };
}
