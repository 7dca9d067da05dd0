// Transport security of the control APIs: gRPC TLS credentials built from a
// CertificateSource (proxy/identity/certificate-source.ts), for servers (a
// client certificate is required and verified against the trust bundle at
// the handshake) and for clients (the server must present a control-plane
// SVID, `cp/<name>`, of the same trust domain). Both follow the source: after
// a rotation new connections use the new leaf and bundle, open ones stay up.
// Plain text only when asked for by name: { insecure: true }.

import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import type { CertificateSource, IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { parseMeshIdentity, parseSpiffeId, type MeshIdentity } from '../../proxy/identity/spiffe.js';
import { trustBundle, verifySvidLeaf, type SvidRefusal, type TrustBundle } from '../../proxy/identity/svid.js';
import { retryUnanswered } from './unanswered-retry.js';

/** How a control API server or client talks: mutual TLS with an identity, or plain text (--insecure). */
export type ControlTransport = { readonly insecure: true } | { readonly source: CertificateSource };

type Provider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/** grpc-js's certificate provider over a CertificateSource: listeners hear the current material at once and every rotation after. */
export function certificateProvider(source: CertificateSource): Provider {
  const ca = new Set<CaListener>();
  const identity = new Set<IdentityListener>();
  let unsubscribe: (() => void) | undefined;
  const push = (m: IdentityMaterial): void => {
    for (const l of ca) l({ caCertificate: Buffer.from(m.bundlePem) });
    for (const l of identity) l({ certificate: Buffer.from(m.chainPem), privateKey: Buffer.from(m.keyPem) });
  };
  const changed = (): void => {
    if (ca.size + identity.size === 0) {
      unsubscribe?.();
      unsubscribe = undefined;
    } else unsubscribe ??= source.onChange(push);
  };
  return {
    // The current material goes to a new listener on the next microtask, as grpc-js's own file provider does: a
    // server registers its watcher only after adding its listeners, and would miss an update made synchronously.
    addCaCertificateListener(l) {
      ca.add(l);
      changed();
      queueMicrotask(() => {
        if (ca.has(l)) l({ caCertificate: Buffer.from(source.current().bundlePem) });
      });
    },
    removeCaCertificateListener(l) {
      ca.delete(l);
      changed();
    },
    addIdentityCertificateListener(l) {
      identity.add(l);
      changed();
      queueMicrotask(() => {
        const m = source.current();
        if (identity.has(l)) l({ certificate: Buffer.from(m.chainPem), privateKey: Buffer.from(m.keyPem) });
      });
    },
    removeIdentityCertificateListener(l) {
      identity.delete(l);
      changed();
    },
  };
}

/**
 * Server credentials. `clientCertificate: 'required'` refuses a client
 * without a valid certificate at the handshake; 'optional' (a server with
 * Certify, whose first call has none) still verifies a certificate that is
 * presented, and grpc-js hands a handler only a verified one: the guard then
 * refuses every call without one except Certify with a join token.
 */
export function serverCredentials(transport: ControlTransport, options: { clientCertificate: 'required' | 'optional' } = { clientCertificate: 'required' }): grpc.ServerCredentials {
  if ('insecure' in transport) return grpc.ServerCredentials.createInsecure();
  const provider = certificateProvider(transport.source);
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, options.clientCertificate === 'required');
}

/** Client credentials; the server must be a control-plane replica (`cp/<name>`) of the client's trust domain. */
export function channelCredentials(transport: ControlTransport): grpc.ChannelCredentials {
  if ('insecure' in transport) return grpc.credentials.createInsecure();
  const { source } = transport;
  const provider = certificateProvider(source);
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    // Replaces the host name check: SVIDs name a SPIFFE ID, not a host.
    checkServerIdentity: (_host, cert) => controlPlaneProblem(cert, bundleOf(source.current())),
  });
}

/**
 * Client credentials with no client certificate yet (a first Certify, which
 * a join token authenticates): the server is checked as channelCredentials
 * does, against the bootstrap trust bundle.
 */
export function bootstrapChannelCredentials(trustDomain: string, bundlePem: string): grpc.ChannelCredentials {
  const bundle = trustBundle(trustDomain, bundlePem);
  return grpc.credentials.createSsl(Buffer.from(bundlePem), null, null, { checkServerIdentity: (_host, cert) => controlPlaneProblem(cert, bundle) });
}

function controlPlaneProblem(cert: PeerCertificate, bundle: TrustBundle): Error | undefined {
  const verdict = peerVerdict(cert, bundle, new Date());
  if (!verdict.ok) return new Error(`the server's certificate is not an X509-SVID of this trust domain: ${verdict.message} (${verdict.reason})`);
  if (verdict.identity.kind !== 'cp') return new Error(`the server is ${verdict.spiffeId}, not a control-plane replica (cp/<name>)`);
  return undefined;
}

/**
 * A call a control-plane replica refused while it shut down (a restart, e.g.
 * a step of a root rotation: HTTP/2 REFUSED_STREAM or GOAWAY, which grpc-js
 * retries only once itself) never reached a handler: it is tried again on a
 * new connection, with backoff, instead of failing.
 */
const RETRY_UNAVAILABLE = JSON.stringify({
  methodConfig: [{ name: [{}], retryPolicy: { maxAttempts: 5, initialBackoff: '0.1s', maxBackoff: '1s', backoffMultiplier: 2, retryableStatusCodes: ['UNAVAILABLE'] } }],
});

/**
 * How soon a channel whose server went away tries again: 250 ms doubling to 5 s. grpc-js's own (1 s growing
 * 1.6 times to 120 s: tries about 1, 2.6, 5.2, 9.3, 15.8, 26.3, 43 s after the server went) outgrows a
 * control-plane restart on a busy machine: a replica back after 27 s is tried again only at 43 s, and calls
 * waiting for it (waitForReady, a certificate renewal) run out of their deadline meanwhile
 * (root-rotation.test.ts at load 23: 1,484 of 2,090 calls past their 30 s deadline "waiting for LB pick").
 */
export const RECONNECT_BACKOFF = { 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 5_000 } as const;

/**
 * Client options for a client of `transport`: calls refused as unavailable are retried (RETRY_UNAVAILABLE),
 * unary calls no server answered too (unanswered-retry.ts), a server that went away is tried again within
 * RECONNECT_BACKOFF's 5 s; with TLS, the name sent as SNI is a fixed word instead of the target's host (an IP
 * address there is not allowed by RFC 6066, and an SVID names no host anyway).
 */
export function channelOptions(transport: ControlTransport): grpc.ClientOptions {
  const retry = { 'grpc.service_config': RETRY_UNAVAILABLE, interceptors: [retryUnanswered], ...RECONNECT_BACKOFF };
  return 'insecure' in transport ? retry : { ...retry, 'grpc.ssl_target_name_override': 'vsockmesh' };
}

export type PeerVerdict = { ok: true; spiffeId: string; identity: MeshIdentity; notAfter: Date } | { ok: false; reason: SvidRefusal | 'not_a_mesh_identity'; message: string };

/**
 * The mesh identity of a TLS peer whose chain the handshake verified against
 * `bundle`: the X509-SVID rules of its leaf, then the kind of identity.
 */
export function peerVerdict(cert: PeerCertificate | undefined, bundle: TrustBundle, at: Date): PeerVerdict {
  if (cert?.raw === undefined) return { ok: false, reason: 'no_certificate', message: 'no verified client certificate' };
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert.raw);
  } catch (err) {
    return { ok: false, reason: 'malformed_certificate', message: `the peer certificate does not parse: ${(err as Error).message}` };
  }
  const verdict = verifySvidLeaf(leaf, bundle, at);
  if (!verdict.ok) return verdict;
  const identity = parseMeshIdentity(verdict.spiffeId);
  if (!identity.ok) return { ok: false, reason: 'not_a_mesh_identity', message: `${verdict.spiffeId} is not a mesh identity: ${identity.message}` };
  return { ok: true, spiffeId: verdict.spiffeId, identity: identity.value, notAfter: verdict.notAfter };
}

const bundles = new WeakMap<IdentityMaterial, TrustBundle>();

/** The trust bundle of some material (parsed once per material: a rotation brings a new object). */
export function bundleOf(m: IdentityMaterial): TrustBundle {
  let bundle = bundles.get(m);
  if (bundle === undefined) {
    const id = parseSpiffeId(m.spiffeId);
    if (!id.ok) throw new Error(`identity material names no SPIFFE ID: ${m.spiffeId}`);
    bundle = trustBundle(id.value.trustDomain, m.bundlePem);
    bundles.set(m, bundle);
  }
  return bundle;
}
