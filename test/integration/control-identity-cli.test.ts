// The control plane and the VM manager as processes: secure by default (no
// identity, no start), an identity issued by the process's own CA, plain text
// only with --insecure (a warning and vsockmesh_insecure 1), and
// `ctl whoami` showing the identity and role the server sees.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../../xds/identity/ca.js';
import { GENERATED_ROOT_DIR, issueIdentity } from '../../xds/security/process-identity.js';
import { runCli, startCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { startTestMeshCa } from '../helpers/pki.js';

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

for (const role of ['control-plane', 'vm-manager']) {
  test(`${role} without an identity or --insecure does not start, and says what to give it`, async (t) => {
    const r = await runCli([role, '--listen', '127.0.0.1:0', '--no-admin']);
    t.not(r.code, 0);
    t.regex(r.stderr, /--cert\/--key\/--ca/);
    t.regex(r.stderr, /--insecure/);
  });
}

test('control-plane --insecure warns at start and shows vsockmesh_insecure 1 on /stats; ctl whoami says nobody is authenticated', async (t) => {
  const adminPort = await freePort();
  const proc = startCli(['control-plane', '--listen', '127.0.0.1:0', '--insecure', '--admin-port', String(adminPort)]);
  t.teardown(() => proc.kill('SIGKILL'));
  const line = await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
  // The admin endpoint starts after the server: the ready line says both are up.
  await proc.waitForLine((l) => l.msg === 'control-plane ready', 'control-plane ready', 60_000);
  t.true(proc.lines.some((l) => l.level === 'warn' && l.reason === 'insecure'));
  const stats = await (await fetch(`http://127.0.0.1:${adminPort}/stats`)).text();
  t.regex(stats, /^vsockmesh_insecure 1$/m);
  const me = await runCli(['ctl', '--insecure', '--control-plane', `127.0.0.1:${String(line.port)}`, 'whoami']);
  t.is(me.code, 0, me.stderr);
  t.regex(me.stdout, /--insecure/);
});

test('control-plane with --identity-dir issues itself cp/<name>; ctl whoami with an operator certificate prints its SPIFFE ID and role; ctl without a certificate is refused', async (t) => {
  const identityDir = await tempDir(t);
  const adminPort = await freePort();
  const proc = startCli(['control-plane', '--listen', '127.0.0.1:0', '--identity-dir', identityDir, '--name', 'cp-0', '--admin-port', String(adminPort)]);
  t.teardown(() => proc.kill('SIGKILL'));
  const line = await proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 60_000);
  // The admin endpoint starts after the server: the ready line says both are up.
  await proc.waitForLine((l) => l.msg === 'control-plane ready', 'control-plane ready', 60_000);
  const address = `127.0.0.1:${String(line.port)}`;
  t.true(proc.lines.some((l) => l.spiffe_id === 'spiffe://vsockmesh.local/cp/cp-0'));
  t.regex(await (await fetch(`http://127.0.0.1:${adminPort}/stats`)).text(), /^vsockmesh_insecure 0$/m);

  // The operator's certificate from the same root (the CA's directory), as an administrator would issue it.
  const ca = await CertificateAuthority.open({ trustDomain: 'vsockmesh.local', upstream: { dir: join(identityDir, GENERATED_ROOT_DIR) } });
  const helper = await startTestMeshCa();
  t.teardown(() => helper.cleanup());
  const files = await helper.files(await issueIdentity(ca, 'spiffe://vsockmesh.local/operator/alice'));
  const me = await runCli(['ctl', '--control-plane', address, '--cert', files.certPath, '--key', files.keyPath, '--ca', files.caPath, 'whoami']);
  t.is(me.code, 0, me.stderr);
  t.is(me.stdout.trim(), 'spiffe://vsockmesh.local/operator/alice\trole=operator');

  const plain = await runCli(['ctl', '--control-plane', address, 'whoami']);
  t.is(plain.code, 2, 'no identity: a usage error, nothing sent in plain text');
  t.regex(plain.stderr, /VSOCKMESH_CERT/);
  const insecure = await runCli(['ctl', '--control-plane', address, '--insecure', '--timeout-ms', '5000', 'whoami']);
  t.is(insecure.code, 1, 'a plain-text client cannot talk to a TLS server');
});
