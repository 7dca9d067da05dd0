// The CA with real files and the real openssl: issued leaves are X509-SVIDs
// by openssl's reading (`x509 -text`, `verify -x509_strict`) as well as ours;
// the root from --ca-cert/--ca-key files (made by openssl, as an
// organisation's PKI would) or generated and kept in a directory.

import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeChain } from '../../proxy/identity/describe.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import { CaSetupError, ROOT_CERT_FILE, ROOT_KEY_FILE, type CaSetupProblem } from '../../xds/identity/ca-root.js';
import { CertificateAuthority, CertifyRefusal, DEFAULT_LEAF_LIFETIME_MS, type CaOptions } from '../../xds/identity/ca.js';

const TD = 'vsockmesh.local';
const ID = `spiffe://${TD}/vm/vm-a`;
const HOUR = 3_600_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function openssl(args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile('openssl', args, { cwd }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }));
  });
}

async function opensslOk(t: ExecutionContext, args: string[], cwd: string): Promise<string> {
  const run = await openssl(args, cwd);
  t.is(run.code, 0, `openssl ${args.join(' ')}: ${run.stderr}`);
  return run.stdout;
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-ca-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function issue(ca: CertificateAuthority, id = ID) {
  return ca.sign(await createCsr(generateWorkloadKeys(), id), id);
}

/** An organisation's CA made with openssl: key and self-signed certificate (EC P-256 unless `keyAlg` says otherwise). */
async function opensslRoot(t: ExecutionContext, dir: string, name: string, options: { days?: number; keyAlg?: string[]; extensions?: string[] } = {}): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}-key.pem`);
  await opensslOk(t, ['req', '-x509', '-newkey', ...(options.keyAlg ?? ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256']), '-nodes', '-keyout', key, '-out', cert, '-days', String(options.days ?? 365), '-subj', `/O=Example Org/CN=${name}`, ...(options.extensions ?? ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])], dir);
  await chmod(key, 0o600);
  return { cert, key };
}

test('a leaf from the CA is an X509-SVID by openssl x509 -text: one URI SAN, CA:FALSE, Digital Signature only, server and client auth', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'ca') } });
  const svid = await issue(ca);
  await writeFile(join(dir, 'leaf.pem'), svid.chain[0]!);
  const text = await opensslOk(t, ['x509', '-in', 'leaf.pem', '-noout', '-text'], dir);
  t.deepEqual(text.match(/URI:\S+/g), [`URI:${ID}`]);
  t.regex(text, /X509v3 Subject Alternative Name: *\n\s+URI:spiffe:\/\/vsockmesh\.local\/vm\/vm-a\n/);
  t.regex(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
  t.regex(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
  t.regex(text, /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
  t.regex(text, /Public-Key: \(256 bit\)[\s\S]*NIST CURVE: P-256/);
  t.regex(text, /Signature Algorithm: ecdsa-with-SHA256/);
});

test('openssl verify accepts the chain (root as CA file, the intermediate untrusted) for server and client use; our verifier agrees', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'ca') } });
  const svid = await issue(ca);
  t.is(svid.chain.length, 2);
  t.is(svid.trustBundle.length, 1);
  await writeFile(join(dir, 'leaf.pem'), svid.chain[0]!);
  await writeFile(join(dir, 'intermediate.pem'), svid.chain[1]!);
  await writeFile(join(dir, 'root.pem'), svid.trustBundle.join(''));
  for (const purpose of ['sslserver', 'sslclient']) {
    t.is(await opensslOk(t, ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', 'root.pem', '-untrusted', 'intermediate.pem', 'leaf.pem'], dir), 'leaf.pem: OK\n');
  }
  const verdict = verifySvid(svid.chain.join(''), trustBundle(TD, svid.trustBundle), new Date());
  t.true(verdict.ok, verdict.ok ? '' : verdict.message);
  if (verdict.ok) t.is(verdict.spiffeId, ID);

  // The same check fails where it should: without the intermediate, or against another root.
  const other = await opensslRoot(t, dir, 'other-root');
  t.not((await openssl(['verify', '-CAfile', 'root.pem', 'leaf.pem'], dir)).code, 0);
  t.not((await openssl(['verify', '-CAfile', other.cert, '-untrusted', 'intermediate.pem', 'leaf.pem'], dir)).code, 0);
});

test('a leaf lives 24 hours by default, from a minute ago, and says so in notAfter', async (t) => {
  const dir = await tempDir(t);
  const now = Date.UTC(2026, 5, 1, 12, 0, 0);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir }, now: () => now });
  const svid = await issue(ca);
  t.is(svid.notAfter.getTime(), now + DEFAULT_LEAF_LIFETIME_MS);
  const described = describeChain(svid.chain.join(''));
  t.is(described.notBefore, new Date(now - 60_000).toISOString());
  t.is(described.notAfter, new Date(now + 24 * HOUR).toISOString());
});

test('the CA refuses a CSR for another identity than the one the caller is entitled to', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  const csr = await createCsr(generateWorkloadKeys(), `spiffe://${TD}/vm/vm-b`);
  const err = await t.throwsAsync(ca.sign(csr, ID), { instanceOf: CertifyRefusal });
  t.is(err?.reason, 'not_entitled');
  await t.throwsAsync(ca.sign(csr, 'spiffe://other.example/vm/vm-b'), { message: /not a SPIFFE ID of vsockmesh\.local/ });
});

test('serial numbers are random: 40 leaves, 40 different positive 16-byte serials', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  const keys = generateWorkloadKeys();
  const csr = await createCsr(keys, ID);
  const serials = await Promise.all(Array.from({ length: 40 }, async () => describeChain((await ca.sign(csr, ID)).chain.join('')).serial));
  t.is(new Set(serials).size, 40);
  for (const s of serials) t.regex(s, /^[4-7][0-9A-F]{31}$/);
});

test('a generated root is kept in its directory (key mode 0600, directory 0700) and reused after a restart', async (t) => {
  const dir = join(await tempDir(t), 'ca');
  const first = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  t.deepEqual((await readdir(dir)).sort(), [ROOT_KEY_FILE, ROOT_CERT_FILE].sort());
  t.is((await stat(join(dir, ROOT_KEY_FILE))).mode & 0o777, 0o600);
  t.is((await stat(dir)).mode & 0o777, 0o700);
  const before = await issue(first);

  const second = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  t.deepEqual(second.trustBundlePem(), first.trustBundlePem());
  t.is(second.describe().upstream, 'generated');
  t.not(second.describe().intermediate.sha256, first.describe().intermediate.sha256);
  // A leaf issued before the restart (under the old intermediate) still verifies against the bundle.
  t.true(verifySvid(before.chain.join(''), second.trustBundle(), new Date()).ok);
  t.true(verifySvid((await issue(second)).chain.join(''), first.trustBundle(), new Date()).ok);
});

test('a generated root whose key file is readable by others is refused, naming the file and the fix', async (t) => {
  const dir = await tempDir(t);
  await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  await chmod(join(dir, ROOT_KEY_FILE), 0o644);
  const err = await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { dir } }), { instanceOf: CaSetupError });
  t.is(err?.reason, 'ca_key_permissions');
  t.regex(err!.message, /root-key\.pem .*mode 644.*chmod 600/);
});

test('a root certificate without its key is an error; a key without its certificate (first start cut short) makes a new root', async (t) => {
  const dir = await tempDir(t);
  await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  const keyText = await readFile(join(dir, ROOT_KEY_FILE), 'utf8');
  await rm(join(dir, ROOT_KEY_FILE));
  const err = await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { dir } }), { instanceOf: CaSetupError });
  t.is(err?.reason, 'ca_state_incomplete');

  const fresh = await tempDir(t);
  await writeFile(join(fresh, ROOT_KEY_FILE), keyText, { mode: 0o600 });
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: fresh } });
  t.not(await readFile(join(fresh, ROOT_KEY_FILE), 'utf8'), keyText);
  t.true(verifySvid((await issue(ca)).chain.join(''), ca.trustBundle(), new Date()).ok);
});

for (const [label, keyAlg] of [
  ['EC P-256', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256']],
  ['EC P-384', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-384']],
  ['RSA 2048', ['rsa:2048']],
] as const) {
  test(`a root from --ca-cert/--ca-key files made by openssl (${label}) signs our intermediate; openssl verifies the leaves`, async (t) => {
    const dir = await tempDir(t);
    const root = await opensslRoot(t, dir, 'org-root', { keyAlg: [...keyAlg] });
    const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: root.cert, keyPath: root.key } } });
    t.deepEqual(ca.trustBundlePem(), [(await readFile(root.cert, 'utf8')).replace(/\r\n/g, '\n')]);
    t.is(ca.describe().upstream, 'files');
    const svid = await issue(ca);
    await writeFile(join(dir, 'chain.pem'), svid.chain.slice(1).join(''));
    await writeFile(join(dir, 'leaf.pem'), svid.chain[0]!);
    t.is(await opensslOk(t, ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', root.cert, '-untrusted', 'chain.pem', 'leaf.pem'], dir), 'leaf.pem: OK\n');
    t.true(verifySvid(svid.chain.join(''), ca.trustBundle(), new Date()).ok);
  });
}

test('an organisation\'s intermediate as --ca-cert (its root offline): the chain carries it, openssl and our verifier accept the leaf', async (t) => {
  const dir = await tempDir(t);
  const root = await opensslRoot(t, dir, 'org-root');
  await opensslOk(t, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'org-ica-key.pem', '-out', 'org-ica.csr', '-subj', '/O=Example Org/CN=org issuing CA'], dir);
  await writeFile(join(dir, 'ica.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
  await opensslOk(t, ['x509', '-req', '-in', 'org-ica.csr', '-CA', root.cert, '-CAkey', root.key, '-CAcreateserial', '-days', '30', '-extfile', 'ica.ext', '-out', 'org-ica.pem'], dir);
  await chmod(join(dir, 'org-ica-key.pem'), 0o600);
  await writeFile(join(dir, 'org-ica-chain.pem'), (await readFile(join(dir, 'org-ica.pem'), 'utf8')) + (await readFile(root.cert, 'utf8')));
  // The root's key is not given to the CA at all.
  await rm(root.key);

  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: join(dir, 'org-ica-chain.pem'), keyPath: join(dir, 'org-ica-key.pem') } } });
  const svid = await issue(ca);
  t.is(svid.chain.length, 3);
  t.deepEqual(
    describeChain(svid.chain.join('')).issuers.map((i) => i.issuer),
    ['O=Example Org, CN=org issuing CA', 'O=Example Org, CN=org-root'],
  );
  await writeFile(join(dir, 'leaf.pem'), svid.chain[0]!);
  await writeFile(join(dir, 'untrusted.pem'), svid.chain.slice(1).join(''));
  t.is(await opensslOk(t, ['verify', '-x509_strict', '-CAfile', root.cert, '-untrusted', 'untrusted.pem', 'leaf.pem'], dir), 'leaf.pem: OK\n');
  t.true(verifySvid(svid.chain.join(''), trustBundle(TD, await readFile(root.cert, 'utf8')), new Date()).ok);
});

test('CA files that cannot serve are refused at start with a reason and a message naming the file, never its content', async (t) => {
  const dir = await tempDir(t);
  const root = await opensslRoot(t, dir, 'org-root');
  const other = await opensslRoot(t, dir, 'other-root');
  const notCa = await opensslRoot(t, dir, 'not-ca', { extensions: ['-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature'] });
  await opensslOk(t, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ica-key.pem', '-out', 'ica.csr', '-subj', '/O=Example Org/CN=ica'], dir);
  await writeFile(join(dir, 'ica.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n');
  await opensslOk(t, ['x509', '-req', '-in', 'ica.csr', '-CA', root.cert, '-CAkey', root.key, '-CAcreateserial', '-days', '30', '-extfile', 'ica.ext', '-out', 'ica.pem'], dir);
  await chmod(join(dir, 'ica-key.pem'), 0o600);
  const garbageKey = join(dir, 'garbage-key.pem');
  await writeFile(garbageKey, '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWxvb2tpbmctdGV4dA==\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
  const loose = join(dir, 'loose-key.pem');
  await writeFile(loose, await readFile(root.key), { mode: 0o640 });
  await chmod(loose, 0o640);

  const cases: Array<[string, CaOptions['upstream'], CaSetupProblem, RegExp]> = [
    ['a key that is not the certificate\'s', { files: { certPath: root.cert, keyPath: other.key } }, 'ca_key_mismatch', /other-root-key\.pem is not the key of the first certificate/],
    ['a certificate that is not a CA', { files: { certPath: notCa.cert, keyPath: notCa.key } }, 'ca_not_a_ca', /not-ca\.pem: .* is not a CA certificate/],
    ['an intermediate without the certificates up to its root', { files: { certPath: join(dir, 'ica.pem'), keyPath: join(dir, 'ica-key.pem') } }, 'ca_chain_incomplete', /ica\.pem: the chain ends at .*CN=ica, which is not a self-signed root/],
    ['a missing file', { files: { certPath: join(dir, 'nope.pem'), keyPath: root.key } }, 'ca_file_unreadable', /cannot read .*nope\.pem: ENOENT/],
    ['a key readable by the group', { files: { certPath: root.cert, keyPath: loose } }, 'ca_key_permissions', /loose-key\.pem is readable or writable by group or others \(mode 640\)/],
    ['a key file that is not a key', { files: { certPath: root.cert, keyPath: garbageKey } }, 'ca_key_invalid', /garbage-key\.pem: not a PEM private key$/],
    ['a certificate file without a certificate', { files: { certPath: root.key, keyPath: root.key } }, 'ca_cert_invalid', /org-root-key\.pem: no PEM CERTIFICATE block/],
  ];
  for (const [what, upstream, reason, message] of cases) {
    const err = await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream }), { instanceOf: CaSetupError }, what);
    t.is(err?.reason, reason, what);
    t.regex(err?.message ?? '', message, what);
    t.false(/BEGIN|c2VjcmV0/.test(err?.message ?? ''), what);
  }
  const broken = join(dir, 'broken-chain.pem');
  await writeFile(broken, (await readFile(join(dir, 'ica.pem'), 'utf8')) + (await readFile(other.cert, 'utf8')));
  const err = await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: broken, keyPath: join(dir, 'ica-key.pem') } } }), { instanceOf: CaSetupError });
  t.is(err?.reason, 'ca_chain_broken');
  const expired = await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: root.cert, keyPath: root.key } }, now: () => Date.now() + 400 * 24 * HOUR }), { instanceOf: CaSetupError });
  t.is(expired?.reason, 'ca_expired');
});

test('rotation: with the old root in the bundle file, the bundle carries both roots and leaves of both verify (with openssl too)', async (t) => {
  const dir = await tempDir(t);
  const oldCa = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir: join(dir, 'old') } });
  const oldLeaf = await issue(oldCa);
  const newRoot = await opensslRoot(t, dir, 'new-root');
  await writeFile(join(dir, 'bundle.pem'), oldCa.trustBundlePem().join(''));
  const newCa = await CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: newRoot.cert, keyPath: newRoot.key, bundlePath: join(dir, 'bundle.pem') } } });
  const newLeaf = await issue(newCa);
  t.is(newLeaf.trustBundle.length, 2);
  t.deepEqual(newCa.describe().roots.map((r) => r.subject.startsWith('O=vsockmesh, CN=vsockmesh root') || r.subject === 'O=Example Org, CN=new-root'), [true, true]);
  for (const leaf of [oldLeaf, newLeaf]) t.true(verifySvid(leaf.chain.join(''), newCa.trustBundle(), new Date()).ok);
  await writeFile(join(dir, 'roots.pem'), newLeaf.trustBundle.join(''));
  for (const [name, leaf] of [['old', oldLeaf], ['new', newLeaf]] as const) {
    await writeFile(join(dir, `${name}-leaf.pem`), leaf.chain[0]!);
    await writeFile(join(dir, `${name}-chain.pem`), leaf.chain.slice(1).join(''));
    t.is(await opensslOk(t, ['verify', '-CAfile', 'roots.pem', '-untrusted', `${name}-chain.pem`, `${name}-leaf.pem`], dir), `${name}-leaf.pem: OK\n`);
  }
});

test('the intermediate is replaced at half its life; leaves never outlive the upstream certificate; past it the CA refuses', async (t) => {
  const dir = await tempDir(t);
  const root = await opensslRoot(t, dir, 'short-root', { days: 10 });
  const rootNotAfter = new Date(describeChain(await readFile(root.cert, 'utf8')).notAfter).getTime();
  let now = Date.now();
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { files: { certPath: root.cert, keyPath: root.key } }, leafLifetimeMs: HOUR, intermediateLifetimeMs: 4 * HOUR, now: () => now });
  const first = await issue(ca);
  now += 2 * HOUR - 120_000;
  const same = await issue(ca);
  t.is(same.chain[1], first.chain[1]);
  now += 120_000;
  const renewed = await issue(ca);
  t.not(renewed.chain[1], first.chain[1]);
  // A leaf of the old intermediate still verifies after the switch.
  t.true(verifySvid(same.chain.join(''), ca.trustBundle(), new Date(now)).ok);

  now = rootNotAfter - 30 * 60_000;
  const last = await issue(ca);
  t.is(last.notAfter.getTime(), rootNotAfter);
  now = rootNotAfter + 1000;
  const err = await t.throwsAsync(issue(ca), { instanceOf: CertifyRefusal });
  t.is(err?.reason, 'ca_expired');
});

test('describe() and the issued chain show certificates only: no key, in any form', async (t) => {
  const dir = await tempDir(t);
  const ca = await CertificateAuthority.open({ trustDomain: TD, upstream: { dir } });
  const svid = await issue(ca);
  const rootKey = await readFile(join(dir, ROOT_KEY_FILE), 'utf8');
  const keyBody = rootKey.split('\n').slice(1, -2).join('');
  const dump = JSON.stringify({ ca: ca.describe(), leaf: describeChain(svid.chain.join('')), svid });
  t.false(dump.includes('PRIVATE'));
  t.false(dump.includes(keyBody.slice(20, 60)));
  const described = ca.describe();
  t.is(described.trustDomain, TD);
  t.is(described.intermediate.spiffeId, `spiffe://${TD}`);
  t.true(described.intermediate.ca);
  t.is(described.roots.length, 1);
  t.is(describeChain(svid.chain.join('')).spiffeId, ID);
});

test('the trust domain and the lifetimes are checked when the CA opens', async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(CertificateAuthority.open({ trustDomain: 'Bad.Domain', upstream: { dir } }), { message: /trust domain: .*bad_trust_domain_char/ });
  await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { dir }, leafLifetimeMs: 999 }), { message: /leaf lifetime/ });
  await t.throwsAsync(CertificateAuthority.open({ trustDomain: TD, upstream: { dir }, leafLifetimeMs: HOUR, intermediateLifetimeMs: HOUR }), { message: /intermediate lifetime: at least twice/ });
});
