// A workload's SVID kept current: the key and the CSR are made here
// (keys-and-csr.ts, a new key each time), the first certificate is asked for
// with a one-time join token or from the host agent that attests the VM
// (over vsock, injected), and every later one with the current
// certificate, at 50–70 % of its lifetime (renewal.ts). A renewal that fails
// is retried with backoff while the current material keeps serving; the new
// material replaces it only once it has been checked (an X509-SVID for our
// SPIFFE ID and our new key, under the bundle that came with it), then
// onChange fires. How a Certify call is made is injected (the control plane's
// client lives in xds/). With a state directory the key, chain and bundle
// are also kept there (mode 0600, written durably after every certificate):
// a restart within the certificate's validity renews with it instead of
// needing a new join token.

import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Backoff } from '../runtime/backoff.js';
import { fileErrorText, writeFileDurably } from '../runtime/durable-file.js';
import { CertificateFilesError, readCertificateFiles, type CertificateFiles } from './certificate-files.js';
import { systemClock, type CancelTimer } from '../runtime/clock.js';
import { errorCode } from '../runtime/errors.js';
import type { Logger } from '../runtime/log.js';
import { samePublicKey, validityOf } from './certificate-facts.js';
import type { CertificateSource, IdentityMaterial } from './certificate-source.js';
import { describeCertificate, describeChain, type CertificateDescription, type ChainDescription } from './describe.js';
import { createCsr, generateWorkloadKeys } from './keys-and-csr.js';
import { renewalDelay, retryDelay } from './renewal.js';
import { parseSpiffeId } from './spiffe.js';
import { trustBundle, verifySvid } from './svid.js';

/** What a Certify call answers. */
export interface CertifyAnswer {
  /** PEM, the leaf first. */
  chainPem: string;
  /** PEM roots. */
  bundlePem: string;
  notAfter: Date;
}

/** How a Certify call proves who asks: a join token (first certificate) or the current material (renewal, as the TLS client certificate). */
export type CertifyCredential = { joinToken: string } | { material: IdentityMaterial };

export type Certify = (csrPem: string, credential: CertifyCredential) => Promise<CertifyAnswer>;

/** Answers that retrying cannot change: a first certificate that gets one of these fails the start. */
const PERMANENT = new Set(['INVALID_ARGUMENT', 'PERMISSION_DENIED', 'UNAUTHENTICATED']);

/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RenewingSourceOptions {
  spiffeId: string;
  certify: Certify;
  /** The join token for the first certificate, read when it is needed (e.g. from a file). Exactly one of joinToken and attest. */
  joinToken?: () => Promise<string>;
  /** The first certificate from the host agent that attests this VM (our CSR in; the answer checked like Certify's). */
  attest?: (csrPem: string) => Promise<CertifyAnswer>;
  logger: Logger;
  /** Wall-clock milliseconds (certificates carry wall-clock times). */
  now?: () => number;
  random?: () => number;
  retry?: { initialMs: number; maxMs: number };
  /** Where the key and certificate are kept across restarts (made 0700; files 0600); absent: in memory only. */
  stateDir?: string;
}

/** The files of a state directory. */
export function stateFiles(dir: string): CertificateFiles {
  return { keyPath: join(dir, 'key.pem'), certPath: join(dir, 'chain.pem'), caPath: join(dir, 'bundle.pem') };
}

export interface RenewalCounters {
  readonly succeeded: number;
  readonly failed: number;
  /** Seconds since the epoch: the current leaf's notAfter (0 before the first). */
  readonly expiry: number;
}

export interface IdentityDescription {
  spiffeId: string;
  chain: ChainDescription | null;
  bundle: CertificateDescription[];
  renewAt: string | null;
  renewals: { succeeded: number; failed: number };
  lastError: string | null;
}

export class RenewingSource implements CertificateSource, RenewalCounters {
  private material: IdentityMaterial | undefined;
  private readonly listeners = new Set<(m: IdentityMaterial) => void>();
  private readonly backoff: Backoff;
  private readonly now: () => number;
  private readonly trustDomain: string;
  private readonly random: () => number;
  private cancelTimer: CancelTimer | undefined;
  private renewAt: number | undefined;
  private stopped = false;
  private lastError: string | undefined;
  succeeded = 0;
  failed = 0;

  constructor(private readonly options: RenewingSourceOptions) {
    if ((options.joinToken === undefined) === (options.attest === undefined)) throw new Error('identity: give exactly one way to the first certificate (a join token or attestation)');
    const parsed = parseSpiffeId(options.spiffeId);
    if (!parsed.ok) throw new Error(`identity: ${options.spiffeId} is not a SPIFFE ID: ${parsed.message} (${parsed.reason})`);
    this.trustDomain = parsed.value.trustDomain;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.backoff = new Backoff({ ...(options.retry ?? { initialMs: 1_000, maxMs: 60_000 }), random: this.random });
  }

  get expiry(): number {
    return this.material === undefined ? 0 : this.material.notAfter.getTime() / 1000;
  }

  /** The first certificate (join token or attestation), retried with backoff while the control plane or host agent is unreachable; then renewals run until stop(). */
  async start(): Promise<void> {
    const kept = await this.restore();
    if (kept.restored) {
      this.schedule();
      return;
    }
    const { joinToken, attest, certify } = this.options;
    for (;;) {
      try {
        if (attest !== undefined) {
          await this.obtain(attest);
        } else {
          const token = (await joinToken!()).trim();
          await this.obtain((csr) => certify(csr, { joinToken: token }));
        }
        break;
      } catch (err) {
        const code = errorCode(err);
        if (this.stopped) throw new Error('identity: stopped before the first certificate', { cause: err });
        const why = kept.problem === undefined ? '' : ` (${kept.problem}: ${attest === undefined ? 'a new join token is needed' : 'the host agent must attest it again'})`;
        if (code !== undefined && PERMANENT.has(code)) throw new Error(`identity: the control plane refused the first certificate for ${this.options.spiffeId}${why}: ${(err as Error).message}`, { cause: err });
        const delay = this.backoff.next();
        this.failure(err, delay);
        await new Promise<void>((resolve) => (this.cancelTimer = systemClock.setTimer(resolve, delay)));
      }
    }
    this.succeeded++;
    this.backoff.reset();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
  }

  /**
   * The certificate kept in the state directory, when it is still a valid
   * SVID of ours (its key, its bundle): taken as the current material.
   * Otherwise why not (none kept, expired, ...), for the error a refused join token gives.
   */
  private async restore(): Promise<{ restored: true } | { restored: false; problem?: string }> {
    const dir = this.options.stateDir;
    if (dir === undefined) return { restored: false };
    const files = stateFiles(dir);
    if (!(await stat(files.certPath).then(() => true, () => false))) return { restored: false };
    const { logger, spiffeId } = this.options;
    let kept: IdentityMaterial;
    try {
      kept = await readCertificateFiles(files, new Date(this.now()), this.trustDomain);
    } catch (err) {
      const reason = err instanceof CertificateFilesError ? err.reason : 'identity_file_unreadable';
      const notAfter = await readFile(files.certPath, 'utf8').then((pem) => new Date(new X509Certificate(pem).validTo), () => undefined);
      const problem = notAfter !== undefined && notAfter.getTime() <= this.now() ? `the certificate kept in ${dir} expired at ${notAfter.toISOString()}` : `the certificate kept in ${dir} cannot be used (${reason})`;
      logger.warn({ spiffe_id: spiffeId, reason: 'kept_identity_unusable', problem: reason, state_dir: dir }, `identity: ${problem}: ${(err as Error).message}; asking for a first certificate again`);
      return { restored: false, problem };
    }
    if (kept.spiffeId !== spiffeId) {
      const problem = `the certificate kept in ${dir} is ${kept.spiffeId}, not ${spiffeId}`;
      logger.warn({ spiffe_id: spiffeId, reason: 'kept_identity_unusable', problem: 'other_identity', state_dir: dir }, `identity: ${problem}; asking for a first certificate again`);
      return { restored: false, problem };
    }
    this.material = kept;
    logger.info({ spiffe_id: spiffeId, not_after: kept.notAfter.toISOString(), state_dir: dir }, 'identity restored from the state directory');
    return { restored: true };
  }

  /** Keeps the current material in the state directory; a failure is logged (the identity in memory keeps serving). */
  private async keep(m: IdentityMaterial): Promise<void> {
    const dir = this.options.stateDir;
    if (dir === undefined) return;
    const files = stateFiles(dir);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // The key last: a crash between the writes leaves a set that does not check out, never a key for a chain it does not match being used.
      await writeFileDurably(files.certPath, m.chainPem, { mode: 0o600 });
      await writeFileDurably(files.caPath, m.bundlePem, { mode: 0o600 });
      await writeFileDurably(files.keyPath, m.keyPem, { mode: 0o600 });
    } catch (err) {
      this.options.logger.warn({ spiffe_id: this.options.spiffeId, reason: 'identity_not_kept', state_dir: dir }, `identity: cannot keep the certificate in ${dir} (a restart will need a join token): ${fileErrorText(err)}`);
    }
  }

  current(): IdentityMaterial {
    if (this.material === undefined) throw new Error('identity: no certificate yet');
    return this.material;
  }

  onChange(listener: (m: IdentityMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** For /config_dump: certificates only, never the key. */
  describe(): IdentityDescription {
    const m = this.material;
    return {
      spiffeId: this.options.spiffeId,
      chain: m === undefined ? null : describeChain(m.chainPem),
      bundle: m === undefined ? [] : trustBundle(this.trustDomain, m.bundlePem).roots.map(describeCertificate),
      renewAt: this.renewAt === undefined ? null : new Date(this.renewAt).toISOString(),
      renewals: { succeeded: this.succeeded, failed: this.failed },
      lastError: this.lastError ?? null,
    };
  }

  private schedule(): void {
    if (this.stopped || this.material === undefined) return;
    const leaf = new X509Certificate(this.material.chainPem);
    // The lifetime counts from when we got it: notBefore is backdated for clock skew.
    const notBefore = Math.max(validityOf(leaf).notBefore.getTime(), this.now());
    const delay = renewalDelay({ notBefore, notAfter: this.material.notAfter.getTime() }, this.now(), this.random);
    this.renewAt = this.now() + delay;
    this.wait(delay);
  }

  private wait(delay: number): void {
    this.cancelTimer?.();
    this.cancelTimer = systemClock.setTimer(() => void this.renew(), Math.min(delay, MAX_TIMER_MS));
  }

  private async renew(): Promise<void> {
    if (this.stopped || this.material === undefined) return;
    try {
      const material = this.material;
      await this.obtain((csr) => this.options.certify(csr, { material }));
      this.succeeded++;
      this.backoff.reset();
      this.options.logger.info({ spiffe_id: this.options.spiffeId, not_after: this.material.notAfter.toISOString() }, 'identity renewed');
      for (const listener of this.listeners) listener(this.material);
      this.schedule();
    } catch (err) {
      if (this.stopped) return;
      const delay = retryDelay(this.backoff.next(), this.material.notAfter.getTime(), this.now());
      this.failure(err, delay);
      this.renewAt = this.now() + delay;
      this.wait(delay);
    }
  }

  private failure(err: unknown, retryInMs: number): void {
    this.failed++;
    this.lastError = (err as Error).message;
    const expired = this.material !== undefined && this.material.notAfter.getTime() <= this.now();
    this.options.logger[expired ? 'error' : 'warn'](
      { spiffe_id: this.options.spiffeId, reason: expired ? 'certificate_expired' : 'certify_failed', code: errorCode(err) ?? null, error: this.lastError, retry_in_ms: retryInMs },
      `identity: Certify failed (${expired ? 'the current certificate has expired' : 'the current certificate keeps serving'}); retrying in ${retryInMs} ms: ${this.lastError}`,
    );
  }

  /** One Certify call (or attestation) with a new key; the material replaces the current one only when the answer checks out. */
  private async obtain(ask: (csrPem: string) => Promise<CertifyAnswer>): Promise<void> {
    const keys = generateWorkloadKeys();
    const csr = await createCsr(keys, this.options.spiffeId);
    const answer = await ask(csr);
    let bundle;
    try {
      bundle = trustBundle(this.trustDomain, answer.bundlePem);
    } catch (err) {
      throw new Error(`the control plane's answer has no usable trust bundle: ${(err as Error).message}`, { cause: err });
    }
    const verdict = verifySvid(answer.chainPem, bundle, new Date(this.now()));
    if (!verdict.ok) throw new Error(`the control plane's certificate does not verify: ${verdict.message} (${verdict.reason})`);
    if (verdict.spiffeId !== this.options.spiffeId) throw new Error(`the control plane issued ${verdict.spiffeId}, not ${this.options.spiffeId}`);
    if (!samePublicKey(keys.privateKey, verdict.leaf.publicKey)) throw new Error('the control plane\'s certificate is not for the key of our CSR');
    if (this.stopped) return;
    this.material = { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, chainPem: answer.chainPem, bundlePem: answer.bundlePem, spiffeId: verdict.spiffeId, notAfter: verdict.notAfter };
    await this.keep(this.material);
  }
}
