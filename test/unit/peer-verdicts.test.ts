// The guard's cache of verified callers (xds/security/peer-verdicts.ts): one
// check per certificate, never another certificate's answer, never past the
// leaf's expiry or under another trust bundle, and bounded.

import test from 'ava';
import type { PeerCertificate } from 'node:tls';
import { trustBundle } from '../../proxy/identity/svid.js';
import { VerifiedPeers } from '../../xds/security/peer-verdicts.js';
import { peerVerdict } from '../../xds/security/transport.js';
import { leafExtensions, makeCert, makeRoot, type Issued } from '../helpers/pki.js';

const HOUR = 3_600_000;
const now = Date.now();

const rootPromise = makeRoot('O=test, CN=guard cache root');

async function leaf(vmId: string, notAfter = new Date(now + HOUR), trustDomain = 'vsockmesh.local'): Promise<PeerCertificate> {
  const cert: Issued = await makeCert(await rootPromise, { subject: 'O=test', extensions: leafExtensions({ uris: [`spiffe://${trustDomain}/vm/${vmId}`] }), notBefore: new Date(now - HOUR), notAfter });
  return { raw: Buffer.from(cert.cert.raw) } as PeerCertificate;
}

/** A cache whose checks are counted. */
function counted(max?: number): { peers: VerifiedPeers; checks: () => number } {
  let checks = 0;
  const peers = new VerifiedPeers(max, (cert, bundle, at) => {
    checks++;
    return peerVerdict(cert, bundle, at);
  });
  return { peers, checks: () => checks };
}

test('the same certificate is checked once, then answered from the cache', async (t) => {
  const bundle = trustBundle('vsockmesh.local', (await rootPromise).pem);
  const cert = await leaf('vm-a');
  const { peers, checks } = counted();
  const first = peers.verdict(cert, bundle, new Date(now));
  // Another connection's object for the same certificate (getPeerCertificate() makes a new one each time).
  const second = peers.verdict({ raw: Buffer.from(cert.raw) } as PeerCertificate, bundle, new Date(now + 1_000));
  t.true(first.ok && second.ok && second.spiffeId === 'spiffe://vsockmesh.local/vm/vm-a');
  t.is(checks(), 1);
});

test('a different certificate is never answered with another certificate\'s cached identity', async (t) => {
  const bundle = trustBundle('vsockmesh.local', (await rootPromise).pem);
  const { peers, checks } = counted();
  const a = peers.verdict(await leaf('vm-a'), bundle, new Date(now));
  const b = peers.verdict(await leaf('vm-b'), bundle, new Date(now));
  t.is(a.ok && a.spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
  t.is(b.ok && b.spiffeId, 'spiffe://vsockmesh.local/vm/vm-b');
  // Same SPIFFE ID, another key: still a certificate of its own.
  peers.verdict(await leaf('vm-a'), bundle, new Date(now));
  t.is(checks(), 3);
});

test('a cached certificate is refused once it has expired', async (t) => {
  const bundle = trustBundle('vsockmesh.local', (await rootPromise).pem);
  const cert = await leaf('vm-a', new Date(now + 60_000));
  const { peers } = counted();
  t.true(peers.verdict(cert, bundle, new Date(now)).ok);
  const later = peers.verdict(cert, bundle, new Date(now + 120_000));
  t.false(later.ok);
  t.is(!later.ok && later.reason, 'expired');
  t.is(peers.size, 0, 'the expired entry is gone');
});

test('a certificate accepted under one trust bundle is checked again under a new one', async (t) => {
  const root = await rootPromise;
  const cert = await leaf('vm-a');
  const { peers, checks } = counted();
  t.true(peers.verdict(cert, trustBundle('vsockmesh.local', root.pem), new Date(now)).ok);
  const other = peers.verdict(cert, trustBundle('other.org', root.pem), new Date(now));
  t.is(!other.ok && other.reason, 'wrong_trust_domain');
  t.is(checks(), 2);
});

test('refusals are not cached, and the cache keeps at most `max` certificates', async (t) => {
  const bundle = trustBundle('vsockmesh.local', (await rootPromise).pem);
  const { peers, checks } = counted(2);
  const foreign = await leaf('vm-x', undefined, 'other.org');
  t.false(peers.verdict(foreign, bundle, new Date(now)).ok);
  t.false(peers.verdict(foreign, bundle, new Date(now)).ok);
  t.is(checks(), 2);
  t.is(peers.size, 0);
  const certs = await Promise.all(['vm-a', 'vm-b', 'vm-c'].map((id) => leaf(id)));
  for (const cert of certs) peers.verdict(cert, bundle, new Date(now));
  t.is(peers.size, 2);
  // The oldest went: vm-a is checked again, vm-c is not.
  peers.verdict(certs[2]!, bundle, new Date(now));
  t.is(checks(), 5);
  peers.verdict(certs[0]!, bundle, new Date(now));
  t.is(checks(), 6);
});

test('no certificate is answered without caching anything', (t) => {
  const { peers } = counted();
  const verdict = peers.verdict(undefined, { trustDomain: 'vsockmesh.local', roots: [] }, new Date(now));
  t.is(!verdict.ok && verdict.reason, 'no_certificate');
  t.is(peers.size, 0);
});
