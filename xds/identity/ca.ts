// The control plane's certificate authority: an intermediate signing key
// (ECDSA P-256, made in memory at start, never written anywhere) under the
// upstream authority (ca-root.ts), which signs X509-SVID leaves from CSRs.
//
// - A leaf: exactly one URI SAN (the SPIFFE ID the caller is entitled to),
//   CA:FALSE, keyUsage digitalSignature, EKU serverAuth + clientAuth, a random
//   serial; valid from a minute ago (clocks differ a little between machines)
//   for the leaf lifetime (default 24 h), never beyond the intermediate.
// - The intermediate lives `intermediateLifetimeMs` (default 7 days, at least
//   twice the leaf lifetime, never beyond the upstream certificate) and is
//   replaced at half its life, so a leaf normally gets its whole lifetime.
//   Leaves of an earlier intermediate still verify: each chain carries its own.
// - The chain returned: leaf, intermediate, then any upstream certificates
//   below the root. The trust bundle: the roots.

import { generateKeyPairSync, type X509Certificate } from 'node:crypto';
import { describeCertificate, type CertificateDescription } from '../../proxy/identity/describe.js';
import { parseSpiffeId, trustDomainId, trustDomainProblem } from '../../proxy/identity/spiffe.js';
import type { TrustBundle } from '../../proxy/identity/svid.js';
import { keyIdentifier, validityOf } from '../../proxy/identity/certificate-facts.js';
import { x509 } from '../../proxy/identity/x509.js';
import { loadOrCreateRoot, loadUpstream, type Upstream, type UpstreamFiles } from './ca-root.js';
import { checkCsr, type CsrRefusal } from './csr-check.js';
import { issueCertificate, signerOf, type CertificateSigner } from './issue.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
export const DEFAULT_LEAF_LIFETIME_MS = 24 * HOUR;
export const DEFAULT_INTERMEDIATE_LIFETIME_MS = 7 * 24 * HOUR;
/** Seconds are allowed so that tests can watch leaves renew; production leaves live hours. */
export const MIN_LEAF_LIFETIME_MS = 1_000;
/** How far back notBefore goes, for clocks a little behind ours. */
export const BACKDATE_MS = MINUTE;

export interface CaOptions {
  trustDomain: string;
  /** Files from an organisation's PKI (--ca-cert/--ca-key), or the directory of the generated root. */
  upstream: { files: UpstreamFiles } | { dir: string };
  leafLifetimeMs?: number;
  intermediateLifetimeMs?: number;
  /** Wall-clock milliseconds (certificates carry wall-clock times). */
  now?: () => number;
}

export interface IssuedSvid {
  spiffeId: string;
  /** PEM, the leaf first. */
  chain: string[];
  notAfter: Date;
  /** PEM roots. */
  trustBundle: string[];
}

/** A CSR the CA will not sign; `reason` is for logs, metrics and the caller's error. */
export class CertifyRefusal extends Error {
  constructor(
    readonly reason: CsrRefusal | 'ca_expired',
    message: string,
  ) {
    super(message);
    this.name = 'CertifyRefusal';
  }
}

export interface CaDescription {
  trustDomain: string;
  upstream: Upstream['source'];
  leafLifetimeMs: number;
  intermediate: CertificateDescription;
  /** Upstream certificates below the root (an organisation's intermediate). */
  upstreamChain: CertificateDescription[];
  roots: CertificateDescription[];
}

interface Intermediate {
  readonly cert: X509Certificate;
  readonly pem: string;
  readonly signer: CertificateSigner;
  readonly notAfter: number;
  readonly renewAt: number;
}

export class CertificateAuthority {
  private intermediate: Intermediate;
  /** Earlier intermediates, kept while a leaf they signed may still be valid: renewals present such leaves. */
  private earlier: Intermediate[] = [];
  private minting: Promise<Intermediate> | undefined;

  private constructor(
    readonly trustDomain: string,
    private readonly upstream: Upstream,
    private readonly upstreamSigner: CertificateSigner,
    first: Intermediate,
    readonly leafLifetimeMs: number,
    private readonly intermediateLifetimeMs: number,
    private readonly now: () => number,
  ) {
    this.intermediate = first;
  }

  static async open(options: CaOptions): Promise<CertificateAuthority> {
    const domain = trustDomainProblem(options.trustDomain);
    if (domain !== undefined) throw new Error(`trust domain: ${domain.message} (${domain.reason})`);
    const leafLifetimeMs = options.leafLifetimeMs ?? DEFAULT_LEAF_LIFETIME_MS;
    const intermediateLifetimeMs = options.intermediateLifetimeMs ?? DEFAULT_INTERMEDIATE_LIFETIME_MS;
    if (!Number.isInteger(leafLifetimeMs) || leafLifetimeMs < MIN_LEAF_LIFETIME_MS) throw new Error(`leaf lifetime: at least ${MIN_LEAF_LIFETIME_MS} ms, got ${leafLifetimeMs}`);
    if (!Number.isInteger(intermediateLifetimeMs) || intermediateLifetimeMs < 2 * leafLifetimeMs) throw new Error(`intermediate lifetime: at least twice the leaf lifetime (${2 * leafLifetimeMs} ms), got ${intermediateLifetimeMs}`);
    const now = options.now ?? Date.now;
    const at = new Date(now());
    const upstream = 'files' in options.upstream ? await loadUpstream(options.upstream.files, options.trustDomain, at) : await loadOrCreateRoot(options.upstream.dir, options.trustDomain, at);
    const upstreamSigner = await signerOf(upstream.cert, upstream.key);
    const first = await mintIntermediate(options.trustDomain, upstream, upstreamSigner, intermediateLifetimeMs, at.getTime());
    return new CertificateAuthority(options.trustDomain, upstream, upstreamSigner, first, leafLifetimeMs, intermediateLifetimeMs, now);
  }

  /**
   * Signs `csrPem` into a leaf for `entitled`, the SPIFFE ID the caller has
   * decided the requester may have. Throws CertifyRefusal when the CSR is
   * not exactly a request for that ID.
   */
  async sign(csrPem: string, entitled: string): Promise<IssuedSvid> {
    const entitledId = parseSpiffeId(entitled);
    if (!entitledId.ok || entitledId.value.trustDomain !== this.trustDomain) throw new Error(`entitlement ${entitled} is not a SPIFFE ID of ${this.trustDomain}`);
    const verdict = await checkCsr(csrPem, entitled);
    if (!verdict.ok) throw new CertifyRefusal(verdict.reason, verdict.message);
    const now = this.now();
    const intermediate = await this.signingIntermediate(now);
    const notAfter = Math.min(now + this.leafLifetimeMs, intermediate.notAfter);
    if (notAfter <= now) throw new CertifyRefusal('ca_expired', `the CA's intermediate expired at ${new Date(intermediate.notAfter).toISOString()}`);
    const leaf = await issueCertificate(intermediate.signer, {
      subject: 'O=vsockmesh',
      publicKey: verdict.publicKey,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(notAfter),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: verdict.spiffeId }]),
      ],
    });
    return { spiffeId: verdict.spiffeId, chain: [leaf.pem, intermediate.pem, ...this.upstream.chainAbove.map((c) => c.toString())], notAfter: validityOf(leaf.cert).notAfter, trustBundle: this.trustBundlePem() };
  }

  trustBundlePem(): string[] {
    return this.upstream.roots.map((r) => r.toString());
  }

  /**
   * The certificates above a leaf this CA issued, whose issuer name is
   * `issuer`: that intermediate (the current one or an earlier one still
   * valid), then the upstream certificates below the root. Empty when no
   * intermediate of this CA has that name. A TLS peer presents its chain, but
   * grpc-js exposes only the leaf to a handler.
   */
  chainAbove(issuer: string): X509Certificate[] {
    const now = this.now();
    const signer = [this.intermediate, ...this.earlier].find((i) => i.notAfter > now && i.cert.subject === issuer);
    return signer === undefined ? [] : [signer.cert, ...this.upstream.chainAbove];
  }

  trustBundle(): TrustBundle {
    return { trustDomain: this.trustDomain, roots: this.upstream.roots };
  }

  /** For /config_dump: certificates only, never a key. */
  describe(): CaDescription {
    return {
      trustDomain: this.trustDomain,
      upstream: this.upstream.source,
      leafLifetimeMs: this.leafLifetimeMs,
      intermediate: describeCertificate(this.intermediate.cert),
      upstreamChain: this.upstream.chainAbove.map(describeCertificate),
      roots: this.upstream.roots.map(describeCertificate),
    };
  }

  /** The intermediate to sign with at `now`: a new one once the current is past half its life (one at a time). */
  private async signingIntermediate(now: number): Promise<Intermediate> {
    if (now < this.intermediate.renewAt) return this.intermediate;
    const upstreamNotAfter = validityOf(this.upstream.cert).notAfter;
    if (now >= upstreamNotAfter.getTime()) throw new CertifyRefusal('ca_expired', `the upstream CA certificate expired at ${upstreamNotAfter.toISOString()}`);
    this.minting ??= mintIntermediate(this.trustDomain, this.upstream, this.upstreamSigner, this.intermediateLifetimeMs, now).finally(() => {
      this.minting = undefined;
    });
    const next = await this.minting;
    if (next.renewAt > this.intermediate.renewAt) {
      this.earlier = [this.intermediate, ...this.earlier].filter((i) => i.notAfter > now);
      this.intermediate = next;
    }
    return this.intermediate;
  }
}

async function mintIntermediate(trustDomain: string, upstream: Upstream, signer: CertificateSigner, lifetimeMs: number, now: number): Promise<Intermediate> {
  const upstreamNotAfter = validityOf(upstream.cert).notAfter.getTime();
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const notBefore = now - BACKDATE_MS;
  const notAfter = Math.min(now + lifetimeMs, upstreamNotAfter);
  const issued = await issueCertificate(signer, {
    // The key identifier in the name: replicas and successive intermediates under one upstream never share a name.
    subject: `O=vsockmesh, CN=vsockmesh intermediate ${keyIdentifier(publicKey).slice(0, 16)}`,
    publicKey,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(trustDomain) }]),
    ],
  });
  return { cert: issued.cert, pem: issued.pem, signer: await signerOf(issued.cert, privateKey), notAfter: validityOf(issued.cert).notAfter.getTime(), renewAt: notBefore + Math.floor((notAfter - notBefore) / 2) };
}
