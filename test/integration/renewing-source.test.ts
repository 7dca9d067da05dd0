// The renewing source against the real Certify API over TLS: a leaf of a few
// seconds renews while a TLS server keeps serving with it (no connection
// fails), onChange fires; and a root rotation in three steps (add the new
// root to the bundle, sign under it, drop the old one) renews across every
// step with both roots in the bundle while they overlap.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { IdentityMaterial } from '../../proxy/identity/certificate-source.js';
import { pemCertificates } from '../../proxy/identity/certificate-facts.js';
import { RenewingSource, stateFiles, type Certify } from '../../proxy/identity/renewing-source.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { CertificateAuthority, type CaOptions } from '../../xds/identity/ca.js';
import { certifyClient } from '../../xds/identity/certify-client.js';
import { memoryTokenStore } from '../../xds/identity/join-token-store.js';
import { JoinTokens } from '../../xds/identity/join-tokens.js';
import { startIdentityServer, type IdentityServer } from '../helpers/identity.js';
import { waitFor } from '../helpers/apps.js';
import { LogCapture } from '../helpers/log-capture.js';
import { makeRoot } from '../helpers/pki.js';

const TD = 'vsockmesh.local';
const ID = `spiffe://${TD}/vm/vm-a`;
const MINUTE = 60_000;

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-renew-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Resolves once `check` holds, looking after every onChange; rejects once renewals have failed 10 more times (with the last error). */
function changeUntil(source: RenewingSource, check: () => boolean): Promise<void> {
  const failedBefore = source.failed;
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const done = (): void => {
      off();
      clearInterval(watch);
    };
    const off = source.onChange(() => {
      if (check()) {
        done();
        resolve();
      }
    });
    const watch = setInterval(() => {
      if (source.failed - failedBefore < 10) return;
      done();
      reject(new Error(`renewals keep failing: ${source.describe().lastError}`));
    }, 50);
  });
}

/** The identity API over TLS; its own certificate from a CA under the same root with the default (long) leaf lifetime. */
async function serve(t: ExecutionContext, ca: CertificateAuthority, tokens: JoinTokens, upstream: CaOptions['upstream']): Promise<IdentityServer> {
  const serverCa = await CertificateAuthority.open({ trustDomain: TD, upstream });
  const server = await startIdentityServer({ ca, tokens, logger: createLogger({ level: 'silent' }), serverCa });
  t.teardown(() => server.stop());
  return server;
}

function newSource(t: ExecutionContext, certify: Certify, token: string): RenewingSource {
  const source = new RenewingSource({ spiffeId: ID, certify, joinToken: async () => token, logger: createLogger({ level: 'silent', destination: new LogCapture() }), retry: { initialMs: 100, maxMs: 1_000 } });
  t.teardown(() => source.stop());
  return source;
}

const serialOf = (m: IdentityMaterial) => new X509Certificate(m.chainPem).serialNumber;

test('a backoff grown during a control-plane outage does not let the certificate lapse: the retry comes before the expiry', async (t) => {
  // A 20 s leaf: on a loaded machine the test must see the failure and bring the CA back well before the leaf's second half ends.
  const { token, certify: real } = await keptSetup(t, 20_000);
  let away = false;
  const certify: Certify = (csr, credential) => (away ? Promise.reject(new Error('UNAVAILABLE: the control plane is away')) : real(csr, credential));
  // A backoff already at 120 s, as after a long outage: without the cut, the first retry comes after the 20 s leaf expired.
  const source = new RenewingSource({ spiffeId: ID, certify, joinToken: async () => token, logger: createLogger({ level: 'silent' }), retry: { initialMs: 120_000, maxMs: 240_000 } });
  t.teardown(() => source.stop());
  await source.start();
  const first = source.current().notAfter.getTime();
  const renewed = source.succeeded;
  away = true;
  await waitFor(() => source.failed >= 1, 'a failed renewal', 30_000);
  away = false;
  await waitFor(() => source.succeeded > renewed, 'a renewal once the control plane is back', 30_000);
  t.true(source.current().notAfter.getTime() > first, 'a new certificate');
});

test('a short-lived leaf renews (onChange fires) while a TLS server keeps serving with the current one: no connection fails', async (t) => {
  const dir = await tempDir(t);
  const upstream = { dir: join(dir, 'ca') };
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream, leafLifetimeMs: 6_000 });
  const tokens = await JoinTokens.open({ store: memoryTokenStore() });
  const server = await serve(t, ca, tokens, upstream);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const source = newSource(t, certifyClient(server.address, { trustDomain: TD, bootstrapBundlePem: ca.trustBundlePem().join('') }), token);
  await source.start();

  // The consumer: a TLS server that takes each new leaf as it comes.
  const context = (m: IdentityMaterial) => ({ key: m.keyPem, cert: m.chainPem });
  const consumer = tls.createServer(context(source.current()), (socket) => socket.end('ok'));
  const changes: string[] = [];
  source.onChange((m) => {
    changes.push(serialOf(m));
    consumer.setSecureContext(context(m));
  });
  await new Promise<void>((resolve) => consumer.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => consumer.close(() => resolve())));
  const port = (consumer.address() as { port: number }).port;

  const served = new Set<string>();
  const failures: string[] = [];
  while (served.size < 3) {
    const bundle = trustBundle(TD, source.current().bundlePem);
    await new Promise<void>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: source.current().bundlePem, checkServerIdentity: () => undefined }, () => {
        const peer = socket.getPeerX509Certificate();
        const verdict = peer && verifySvid([peer, ...pemCertificates(source.current().chainPem).slice(1).map((p) => new X509Certificate(p))], bundle, new Date());
        if (peer === undefined || verdict?.ok !== true) failures.push(`served a certificate that does not verify: ${verdict?.ok === false ? verdict.reason : 'none'}`);
        else served.add(peer.serialNumber);
        socket.destroy();
        resolve();
      });
      socket.on('error', (err) => {
        failures.push(err.message);
        resolve();
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.deepEqual(failures, []);
  t.true(changes.length >= 2);
  t.true(source.succeeded >= 2);
  t.is(new Set(changes).size, changes.length, 'each change is a new leaf');
  t.is(source.current().spiffeId, ID);
});

/** A root made like an organisation's: certificate and key files (0600). */
async function rootFiles(dir: string, name: string) {
  const root = await makeRoot(`O=example, CN=${name}`);
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}-key.pem`);
  await writeFile(certPath, root.pem);
  await writeFile(keyPath, root.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, { mode: 0o600 });
  return { certPath, keyPath, cert: root.cert };
}

test('root rotation: the bundle carries both roots while they overlap, and the workload renews across each step', async (t) => {
  const dir = await tempDir(t);
  const [oldRoot, newRoot] = [await rootFiles(dir, 'root-1'), await rootFiles(dir, 'root-2')];
  const tokens = await JoinTokens.open({ store: memoryTokenStore() });
  let certify: Certify = async () => {
    throw new Error('no control plane yet');
  };
  const phase = async (upstream: CaOptions['upstream']) => {
    const ca = await CertificateAuthority.open({ trustDomain: TD, upstream, leafLifetimeMs: 4_000 });
    const server = await serve(t, ca, tokens, upstream);
    certify = certifyClient(server.address, { trustDomain: TD, bootstrapBundlePem: ca.trustBundlePem().join('') });
  };
  const rootsOf = (m: IdentityMaterial) => pemCertificates(m.bundlePem).map((p) => new X509Certificate(p).fingerprint256).sort();
  const both = [oldRoot.cert.fingerprint256, newRoot.cert.fingerprint256].sort();
  const chainsTo = (m: IdentityMaterial, root: X509Certificate) => verifySvid(m.chainPem, { trustDomain: TD, roots: [root] }, new Date()).ok;

  // 1. The new root joins the bundle; signing stays under the old one.
  await phase({ files: { certPath: oldRoot.certPath, keyPath: oldRoot.keyPath, bundlePath: newRoot.certPath } });
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const source = newSource(t, (csr, credential) => certify(csr, credential), token);
  await source.start();
  t.deepEqual(rootsOf(source.current()), both);
  t.true(chainsTo(source.current(), oldRoot.cert));

  // 2. Signing moves under the new root; the old one stays in the bundle. The leaf from step 1 renews here.
  await phase({ files: { certPath: newRoot.certPath, keyPath: newRoot.keyPath, bundlePath: oldRoot.certPath } });
  await changeUntil(source, () => chainsTo(source.current(), newRoot.cert));
  t.deepEqual(rootsOf(source.current()), both);

  // 3. The old root leaves the bundle.
  await phase({ files: { certPath: newRoot.certPath, keyPath: newRoot.keyPath } });
  await changeUntil(source, () => rootsOf(source.current()).length === 1);
  t.deepEqual(rootsOf(source.current()), [newRoot.cert.fingerprint256]);
  t.true(chainsTo(source.current(), newRoot.cert));
});

type Behaviour = 'good' | 'unavailable' | 'refuse' | 'other_identity' | 'other_key';

/** A certify() straight into a CA (no gRPC) that answers as `plan` says, call by call (then well); `seen` gets the source's material at each call. */
function directCertify(ca: CertificateAuthority, plan: Behaviour[], seen: Array<IdentityMaterial | undefined> = [], source?: () => RenewingSource): Certify {
  return async (csr) => {
    try {
      seen.push(source?.().current());
    } catch {
      seen.push(undefined);
    }
    const mode = plan.shift() ?? 'good';
    if (mode === 'unavailable') throw new VsockmeshError('UNAVAILABLE', 'UNAVAILABLE: control plane down');
    if (mode === 'refuse') throw new VsockmeshError('UNAUTHENTICATED', 'UNAUTHENTICATED: no such join token (unknown_token)');
    const id = mode === 'other_identity' ? `spiffe://${TD}/vm/vm-b` : ID;
    const request = mode === 'good' ? csr : await createCsr(generateWorkloadKeys(), id);
    const svid = await ca.sign(request, id);
    return { chainPem: svid.chain.join(''), bundlePem: svid.trustBundle.join(''), notAfter: svid.notAfter };
  };
}

test('a first certificate refused for good (a spent token) fails the start; one that cannot be reached is retried', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'ca') } });
  const refused = newSource(t, directCertify(ca, ['refuse']), 'vjt1.x');
  await t.throwsAsync(refused.start(), { message: /refused the first certificate for spiffe:\/\/vsockmesh\.local\/vm\/vm-a: UNAUTHENTICATED/ });
  const retried = newSource(t, directCertify(ca, ['unavailable', 'unavailable']), 'vjt1.x');
  await retried.start();
  t.is(retried.failed, 2);
  t.is(retried.current().spiffeId, ID);
});

test('a renewal answer for another identity or another key is not taken: the current material keeps serving until a good answer replaces it', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'ca') }, leafLifetimeMs: 2_000 });
  const seen: Array<IdentityMaterial | undefined> = [];
  // Call 1: the first certificate; 2 and 3: bad renewals; 4: a good one.
  const source: RenewingSource = newSource(t, directCertify(ca, ['good', 'other_identity', 'other_key'], seen, () => source), 'vjt1.x');
  await source.start();
  const first = source.current();
  await changeUntil(source, () => source.current() !== first);
  t.is(seen.length, 4);
  t.is(seen[2], first, 'after an answer for another identity, the first material still served');
  t.is(seen[3], first, 'after an answer for another key, the first material still served');
  t.is(source.failed, 2);
  t.regex(source.describe().lastError ?? '', /not for the key of our CSR/);
  t.is(source.current().spiffeId, ID);
  t.not(source.current().keyPem, first.keyPem, 'each renewal has a new key');
});

/** A Certify server whose CA issues leaves of `leafLifetimeMs`, a join token for vm-a, and a state directory (not made yet). */
async function keptSetup(t: ExecutionContext, leafLifetimeMs: number): Promise<{ tokens: JoinTokens; token: string; certify: Certify; stateDir: string }> {
  const dir = await tempDir(t);
  const upstream = { dir: join(dir, 'ca') };
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream, leafLifetimeMs });
  const tokens = await JoinTokens.open({ store: memoryTokenStore() });
  const server = await serve(t, ca, tokens, upstream);
  const { token } = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  return { tokens, token, certify: certifyClient(server.address, { trustDomain: TD, bootstrapBundlePem: ca.trustBundlePem().join('') }), stateDir: join(dir, 'state') };
}

function keptSource(t: ExecutionContext, certify: Certify, token: () => Promise<string>, stateDir: string): RenewingSource {
  const source = new RenewingSource({ spiffeId: ID, certify, joinToken: token, logger: createLogger({ level: 'silent' }), retry: { initialMs: 100, maxMs: 1_000 }, stateDir });
  t.teardown(() => source.stop());
  return source;
}

test('identity.state_dir: a restart within the certificate\'s validity takes the kept certificate (no join token) and renews with it', async (t) => {
  const { token, certify, stateDir } = await keptSetup(t, 8_000);

  const first = keptSource(t, certify, async () => token, stateDir);
  await first.start();
  const kept = first.current();
  first.stop();
  for (const file of Object.values(stateFiles(stateDir))) t.is((await stat(file)).mode & 0o777, 0o600, `${file} is 0600`);
  t.is((await stat(stateDir)).mode & 0o777, 0o700);

  // The restart: the token is spent, and must not even be read.
  const again = keptSource(t, certify, () => Promise.reject(new Error('the join token was asked for')), stateDir);
  await again.start();
  t.is(again.current().chainPem, kept.chainPem);
  t.is(again.current().keyPem, kept.keyPem);
  // It renews with the kept certificate as its credential, and keeps the new one.
  await changeUntil(again, () => serialOf(again.current()) !== serialOf(kept));
  t.is(again.succeeded, 1);
  t.is(await readFile(stateFiles(stateDir).certPath, 'utf8'), again.current().chainPem);
});

test('identity.state_dir: a restart after the kept certificate expired needs a join token, and a spent one fails with a clear error', async (t) => {
  const { tokens, token, certify, stateDir } = await keptSetup(t, 3_000);

  const first = keptSource(t, certify, async () => token, stateDir);
  await first.start();
  const notAfter = first.current().notAfter.getTime();
  first.stop();
  await waitFor(() => Date.now() > notAfter + 1_000, 'the kept certificate to expire', 30_000);

  const spent = keptSource(t, certify, async () => token, stateDir);
  const err = await t.throwsAsync(spent.start());
  t.regex(err!.message, /the certificate kept in .* expired at .*: a new join token is needed/);
  t.regex(err!.message, /token_used/);

  // A new token: the start goes on, and the new certificate is kept.
  const fresh = await tokens.create({ kind: 'vm', name: 'vm-a' }, 10 * MINUTE);
  const renewed = keptSource(t, certify, async () => fresh.token, stateDir);
  await renewed.start();
  t.is(await readFile(stateFiles(stateDir).certPath, 'utf8'), renewed.current().chainPem);
});
