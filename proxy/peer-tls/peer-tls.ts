// TLS on the TCP peer hop, for one sidecar: its identity as a native TLS
// context (replaced when the certificate source has a new one; open
// connections keep the old one), and the two ends of a hop: originate
// (outbound, the endpoint's VM identity expected: secure naming) and
// terminate (inbound, the listener's policy). Both finish before any byte of
// the connection is relayed; every outcome is counted.

import type { CertificateSource, IdentityMaterial } from '../identity/certificate-source.js';
import type { PeerTlsSettings } from '../config/types.js';
import type { ProxyMetrics } from '../metrics.js';
import { native } from '../native/index.js';
import type { Logger } from '../runtime/log.js';
import { UNAUTHENTICATED, admitInbound, expectedPeerId, type Admission } from './peer-policy.js';
import { ConnectionAgeLimit } from './connection-age.js';
import { warmInvalidate } from '../native/warm.js';

export type EnabledPeerTls = Exclude<PeerTlsSettings, { mode: 'disable' }>;

/** What the access log says of the peer. */
export interface PeerFields {
  peer_identity: string;
  tls_version?: string;
  tls_resumed?: boolean;
  /** The peer certificate's serial (hex): tells a rotated certificate from the last one. */
  peer_serial?: string;
  [key: string]: string | boolean | undefined;
}

export type SecureOutcome = { ok: true; fields: PeerFields } | { ok: false; reason: string; detail: string };

export class PeerTls {
  private contextId = 0;
  private stopWatching: (() => void) | undefined;
  /** Cuts TLS connections of both directions past peer_tls.max_connection_age; null: no limit. */
  readonly ageLimit: ConnectionAgeLimit | null;

  constructor(
    readonly settings: EnabledPeerTls,
    private readonly metrics: ProxyMetrics,
    private readonly logger: Logger,
  ) {
    this.ageLimit = settings.maxConnectionAge === null ? null : new ConnectionAgeLimit(settings.maxConnectionAge);
  }

  /** Takes the source's identity (throws when it does not make a TLS context) and follows its changes. */
  start(source: CertificateSource): void {
    this.use(source.current());
    this.stopWatching = source.onChange((material) => {
      warmInvalidate();
      try {
        this.use(material);
      } catch (err) {
        this.logger.warn({ reason: 'peer_identity_reload_failed', spiffe_id: material.spiffeId }, `peer TLS keeps its identity: the new one is refused: ${(err as Error).message}`);
      }
    });
  }

  stop(): void {
    this.stopWatching?.();
    if (this.contextId !== 0) native.tlsContextFree(this.contextId);
    this.contextId = 0;
  }

  /** Whether outbound connections to peer sidecars use TLS when the destination's mode is not known (the file's mode and originate). */
  get originating(): boolean {
    return this.settings.mode !== 'disable' && this.settings.originate;
  }

  private use(material: IdentityMaterial): void {
    const id = native.tlsContext(material.keyPem, material.chainPem, material.bundlePem);
    const old = this.contextId;
    this.contextId = id;
    if (old !== 0) native.tlsContextFree(old);
    this.logger.info({ spiffe_id: material.spiffeId, not_after: material.notAfter.toISOString(), replaced: old !== 0 }, 'peer TLS identity loaded');
  }

  /**
   * Outbound: a TLS client on a connected socket to the sidecar of VM `vmId`
   * (null: unknown, refused: nothing to check the certificate against).
   * `plainPreamble`: sent before TLS (proxy_header: before_tls).
   */
  originate(fd: number, listener: string, vmId: string | null, sessionKey: string, plainPreamble: Buffer | null, done: (outcome: SecureOutcome) => void): void {
    if (vmId === null) {
      done(this.failed(listener, 'outbound', 'no_expected_identity', 'the endpoint names no VM, so the peer certificate cannot be checked (secure naming)'));
      return;
    }
    const expected = expectedPeerId(this.settings.trustDomain, vmId);
    native.tlsStart(fd, this.contextId, false, `${sessionKey}|${expected}`, plainPreamble, this.settings.handshakeTimeoutMs, (reason, text, resumed, version, serial) => {
      if (reason !== null) done(this.failed(listener, 'outbound', reason, text));
      else if (text !== expected) done(this.failed(listener, 'outbound', 'wrong_identity', `expected ${expected}, the peer presented ${text}`));
      else done(this.verified(listener, 'outbound', text, version, resumed, serial));
    });
  }

  /**
   * Inbound: a TLS server on an accepted socket; the listener's allow-list
   * (empty: any VM of the trust domain) decides. `acceptPlain`: a plain-text
   * peer goes on, labelled unauthenticated (its port's mode decides then).
   */
  terminate(fd: number, listener: string, allowed: readonly string[], acceptPlain: boolean, done: (outcome: SecureOutcome) => void): void {
    const { trustDomain } = this.settings;
    const mode = acceptPlain ? 'permissive' : 'strict';
    native.tlsStart(fd, this.contextId, true, null, null, this.settings.handshakeTimeoutMs, (reason, text, resumed, version, serial) => {
      if (reason !== null && reason !== 'plain_text') {
        done(this.failed(listener, 'inbound', reason, text));
        return;
      }
      const admission: Admission = admitInbound(mode, reason === null ? { kind: 'tls', identity: text } : { kind: 'plain' }, trustDomain, allowed);
      if (!admission.ok) done(this.failed(listener, 'inbound', admission.reason, admission.detail));
      else if (admission.identity === UNAUTHENTICATED) done({ ok: true, fields: { peer_identity: UNAUTHENTICATED } });
      else done(this.verified(listener, 'inbound', admission.identity, version, resumed, serial));
    });
  }

  private verified(listener: string, direction: 'inbound' | 'outbound', identity: string, version: string, resumed: boolean, serial: string): SecureOutcome {
    this.metrics.peerTlsHandshakes.inc({ listener, direction, resumed: String(resumed) });
    return { ok: true, fields: { peer_identity: identity, tls_version: version, tls_resumed: resumed, peer_serial: serial } };
  }

  private failed(listener: string, direction: 'inbound' | 'outbound', reason: string, detail: string): SecureOutcome {
    this.metrics.peerTlsFailures.inc({ listener, direction, reason });
    return { ok: false, reason, detail };
  }
}
