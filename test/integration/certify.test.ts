// The Certify API on a real gRPC server with the real CA: the first
// certificate through a join token (single use, expiry, bound to its VM),
// renewal authenticated by the current certificate over TLS, what openssl
// makes of an issued certificate, and that no token reaches a log.

import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import type { IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import { CertificateAuthority } from '../../xds/identity/ca.js';
import { certifyClient } from '../../xds/identity/certify-client.js';
import { memoryTokenStore } from '../../xds/identity/join-token-store.js';
import { JoinTokens } from '../../xds/identity/join-tokens.js';
import { CallError } from '../../xds/call-error.js';
import { startIdentityServer } from '../helpers/identity.js';
import { LogCapture } from '../helpers/log-capture.js';

const TD = 'vsockmesh.local';
const MINUTE = 60_000;
const vmId = (name: string) => `spiffe://${TD}/vm/${name}`;

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-certify-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A CA, join tokens on a clock the test moves, and the identity API on a real gRPC server. */
async function setup(t: ExecutionContext) {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'ca') } });
  let offset = 0;
  const tokens = await JoinTokens.open({ store: memoryTokenStore(), now: () => Date.now() + offset });
  const logs = new LogCapture();
  const server = await startIdentityServer({ ca, tokens, logger: createLogger({ level: 'info', destination: logs }) });
  t.teardown(() => server.stop());
  const bundlePem = ca.trustBundlePem().join('');
  const certify = certifyClient(server.address, { trustDomain: TD, bootstrapBundlePem: bundlePem });
  return { dir, ca, tokens, logs, server, certify, bundlePem, advanceTokenClock: (ms: number) => void (offset += ms) };
}

async function refusal(t: ExecutionContext, call: Promise<unknown>): Promise<{ code: string; details: string }> {
  const err = await t.throwsAsync(call);
  t.true(err instanceof CallError, String(err));
  const e = err as CallError;
  return { code: e.code, details: e.details };
}

function openssl(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile('openssl', args, { cwd }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : 1, stdout, stderr })));
}

async function materialFor(certify: ReturnType<typeof certifyClient>, id: string, token: string): Promise<IdentityMaterial> {
  const keys = generateWorkloadKeys();
  const answer = await certify(await createCsr(keys, id), { joinToken: token });
  return { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, chainPem: answer.chainPem, bundlePem: answer.bundlePem, spiffeId: id, notAfter: answer.notAfter };
}

test('a certificate from Certify passes openssl verify against the bundle and openssl reads one URI SAN, CA:FALSE, digitalSignature, server and client auth', async (t) => {
  const { dir, tokens, certify, bundlePem } = await setup(t);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const answer = await certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token });
  t.is(answer.bundlePem, bundlePem);
  const [leaf, ...intermediates] = answer.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/).filter((b) => b.trim() !== '');
  await writeFile(join(dir, 'leaf.pem'), leaf!);
  await writeFile(join(dir, 'untrusted.pem'), intermediates.join(''));
  await writeFile(join(dir, 'bundle.pem'), answer.bundlePem);

  const verified = await openssl(['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', 'bundle.pem', '-untrusted', 'untrusted.pem', 'leaf.pem'], dir);
  t.is(verified.code, 0, verified.stderr);
  t.regex(verified.stdout, /leaf\.pem: OK/);
  const text = (await openssl(['x509', '-in', 'leaf.pem', '-noout', '-text'], dir)).stdout;
  t.deepEqual([...text.matchAll(/URI:([^\s,]+)/g)].map((m) => m[1]), [vmId('vm-a')]);
  t.regex(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
  t.regex(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
  t.regex(text, /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
  t.true(Math.abs(answer.notAfter.getTime() - Date.now() - 24 * 60 * MINUTE) < 10 * MINUTE);
});

test('a join token works once: the second use is refused as used (UNAUTHENTICATED), and nothing of the token is logged', async (t) => {
  const { tokens, certify, logs, server } = await setup(t);
  const { token, id } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  await certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token });
  const again = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token }));
  t.is(again.code, 'UNAUTHENTICATED');
  t.regex(again.details, /token_used/);
  const secret = token.split('.')[2]!;
  t.false(again.details.includes(secret));
  t.false(JSON.stringify(logs.lines).includes(secret));
  t.is(logs.withReason('token_used').length, 1);
  t.true(logs.lines.some((l) => l.token_id === id && l.via === 'join_token'));
  const stats = await server.service.metrics.metrics();
  t.regex(stats, /vsockmesh_certify_total\{result="issued",reason="join_token"\} 1/);
  t.regex(stats, /vsockmesh_certify_total\{result="refused",reason="token_used"\} 1/);
});

test('an expired join token is refused (UNAUTHENTICATED token_expired)', async (t) => {
  const { tokens, certify, advanceTokenClock } = await setup(t);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  advanceTokenClock(10 * MINUTE);
  const refused = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token }));
  t.is(refused.code, 'UNAUTHENTICATED');
  t.regex(refused.details, /token_expired/);
});

test("a token for vm-a cannot get vm-b's certificate (PERMISSION_DENIED), and is spent by the attempt", async (t) => {
  const { tokens, certify } = await setup(t);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const refused = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-b')), { joinToken: token }));
  t.is(refused.code, 'PERMISSION_DENIED');
  t.regex(refused.details, /wrong_subject/);
  const after = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token }));
  t.regex(after.details, /token_used/);
});

test('a join token never gives a control-plane or operator identity, nor one of another trust domain; a bad CSR does not spend the token', async (t) => {
  const { tokens, certify } = await setup(t);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const cp = await refusal(t, certify(await createCsr(generateWorkloadKeys(), `spiffe://${TD}/cp/vm-a`), { joinToken: token }));
  t.is(cp.code, 'PERMISSION_DENIED');
  t.regex(cp.details, /not_joinable/);
  const other = await refusal(t, certify(await createCsr(generateWorkloadKeys(), 'spiffe://other.domain/vm/vm-a'), { joinToken: token }));
  t.is(other.code, 'PERMISSION_DENIED');
  t.regex(other.details, /wrong_trust_domain/);
  const garbage = await refusal(t, certify('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', { joinToken: token }));
  t.is(garbage.code, 'INVALID_ARGUMENT');
  t.regex(garbage.details, /csr_malformed/);
  // None of these spent it.
  const answer = await certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: token });
  t.true(answer.chainPem.includes('BEGIN CERTIFICATE'));
});

test('a token made for a hypervisor gives its host agent the hv identity', async (t) => {
  const { tokens, certify, bundlePem } = await setup(t);
  const { token } = await tokens.create({ kind: 'hv', name: 'hv-1' }, 10 * MINUTE);
  const answer = await certify(await createCsr(generateWorkloadKeys(), `spiffe://${TD}/hv/hv-1`), { joinToken: token });
  const verdict = verifySvid(answer.chainPem, trustBundle(TD, bundlePem), new Date());
  t.true(verdict.ok && verdict.spiffeId === `spiffe://${TD}/hv/hv-1`);
});

test('renewal over TLS with the current certificate works; the CSR must ask for the same identity', async (t) => {
  const { tokens, certify, bundlePem, logs } = await setup(t);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const first = await materialFor(certify, vmId('vm-a'), token);

  const keys = generateWorkloadKeys();
  const renewed = await certify(await createCsr(keys, vmId('vm-a')), { material: first });
  const verdict = verifySvid(renewed.chainPem, trustBundle(TD, bundlePem), new Date());
  t.true(verdict.ok && verdict.spiffeId === vmId('vm-a'));
  t.not(renewed.chainPem, first.chainPem);
  t.true(logs.lines.some((l) => l.via === 'renewal' && l.spiffe_id === vmId('vm-a')));

  const other = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-b')), { material: first }));
  t.is(other.code, 'PERMISSION_DENIED');
  t.regex(other.details, /not_entitled/);
});

test('without a join token, a call with no client certificate, or one from another CA, is refused (UNAUTHENTICATED no_credentials)', async (t) => {
  const { certify, dir, bundlePem } = await setup(t);
  const none = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { joinToken: '' }));
  t.is(none.code, 'UNAUTHENTICATED');
  t.regex(none.details, /no_credentials/);

  // A genuine SVID for vm-a, but from another CA: the handshake does not verify it, so it proves nothing.
  const stranger = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'other-ca') } });
  const keys = generateWorkloadKeys();
  const svid = await stranger.sign(await createCsr(keys, vmId('vm-a')), vmId('vm-a'));
  const material: IdentityMaterial = { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, chainPem: svid.chain.join(''), bundlePem, spiffeId: vmId('vm-a'), notAfter: svid.notAfter };
  const refused = await refusal(t, certify(await createCsr(generateWorkloadKeys(), vmId('vm-a')), { material }));
  t.is(refused.code, 'UNAUTHENTICATED');
  t.regex(refused.details, /no_credentials/);
});

