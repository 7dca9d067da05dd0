// A sidecar process with an identity section against a control-plane process
// running the CA: it gets its certificate with the join token before it
// serves, /config_dump shows the identity and the chain (never a key), /stats
// the expiry and the Certify calls; a refused token stops the start with the
// reason. The whole chain with ADS and renewal is identity-chain.test.ts.

import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminRequest } from '../helpers/admin.js';
import { runCli, startControlPlane, startSidecarCli, writeConfig } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { operatorCtl } from '../helpers/identity.js';

test('a sidecar with an identity section gets vm/<node id> through a join token; config_dump shows the chain, /stats the expiry; a spent token stops the start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-sidecar-id-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const plane = await startControlPlane(['--listen', `127.0.0.1:${await freePort()}`, '--identity-dir', join(dir, 'identity')]);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const operator = await operatorCtl(join(dir, 'identity'));
  t.teardown(() => operator.cleanup());
  const created = await runCli(['ctl', '--control-plane', plane.address, ...operator.flags, 'tokens', 'create', '--vm', 'vm-a']);
  t.is(created.code, 0, created.stderr);
  const tokenFile = join(dir, 'join-token');
  await writeFile(tokenFile, created.stdout, { mode: 0o600 });

  const { proc, admin } = await startSidecarCli(t, { node: { id: 'vm-a' }, admin: { port: 0 }, identity: { control_plane: plane.address, join_token_file: tokenFile, trust_bundle_file: operator.caPath } });
  const obtained = await proc.waitForLine((l) => l.msg === 'identity obtained', 'identity obtained');
  t.is(obtained.spiffe_id, 'spiffe://vsockmesh.local/vm/vm-a');

  const dump = await adminRequest(admin, 'GET', '/config_dump');
  t.false(dump.body.includes('PRIVATE KEY'));
  const identity = (JSON.parse(dump.body) as { identity: { spiffeId: string; chain: { spiffeId: string; ca: boolean; issuers: Array<{ ca: boolean }> }; bundle: unknown[]; renewAt: string } }).identity;
  t.is(identity.spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
  t.is(identity.chain.spiffeId, 'spiffe://vsockmesh.local/vm/vm-a');
  t.false(identity.chain.ca);
  t.true(identity.chain.issuers.length >= 1 && identity.chain.issuers.every((i) => i.ca));
  t.is(identity.bundle.length, 1);
  t.true(Date.parse(identity.renewAt) > Date.now());

  const stats = (await adminRequest(admin, 'GET', '/stats')).body;
  const expiry = Number(/^vsockmesh_cert_expiry_timestamp_seconds (\S+)$/m.exec(stats)?.[1]);
  t.true(expiry * 1000 > Date.now(), stats);
  t.regex(stats, /^vsockmesh_cert_renewals_total\{result="success"\} 1$/m);
  t.false(proc.stdout().includes(created.stdout.trim().split('.')[2]!), 'the sidecar never logs its token');

  // The same (now spent) token for another start: refused, the sidecar does not serve.
  const again = await writeConfig({ node: { id: 'vm-a' }, admin: { port: 0 }, identity: { control_plane: plane.address, join_token_file: tokenFile, trust_bundle_file: operator.caPath } });
  t.teardown(() => again.cleanup());
  const refused = await runCli(['sidecar', '-c', again.path]);
  t.not(refused.code, 0);
  t.regex(`${refused.stdout}${refused.stderr}`, /refused the first certificate for spiffe:\/\/vsockmesh\.local\/vm\/vm-a: UNAUTHENTICATED: .*token_used/);
  t.notRegex(refused.stdout, /listener started|sidecar ready/);
});

test('an identity section without a trust bundle file is refused, naming the field', async (t) => {
  const config = await writeConfig({ node: { id: 'vm-a' }, identity: { control_plane: '127.0.0.1:15200', join_token_file: '/tmp/x' } });
  t.teardown(() => config.cleanup());
  const result = await runCli(['validate-config', config.path]);
  t.is(result.code, 2);
  t.regex(result.stderr, /identity\.trust_bundle_file: required/);
});
