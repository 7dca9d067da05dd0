// `vsockmesh ctl tokens` against a real control plane process running the CA
// in an identity directory: a token is printed once, on stdout only; list
// shows ids, subjects and expiry, never the secret; the token gets its VM a
// certificate through Certify once; revoke removes one; tokens and the root
// survive a restart.

import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { trustBundle, verifySvid } from '../../proxy/identity/svid.js';
import { certifyClient } from '../../xds/identity/certify-client.js';
import { runCli, startControlPlane } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { operatorCtl } from '../helpers/identity.js';
import { readFile } from 'node:fs/promises';

test('ctl tokens create/list/revoke against the control plane; the token is printed once and works once; tokens and root survive a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-tokens-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const args = ['--listen', `127.0.0.1:${await freePort()}`, '--identity-dir', join(dir, 'identity')];
  let plane = await startControlPlane(args);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const operator = await operatorCtl(join(dir, 'identity'));
  t.teardown(() => operator.cleanup());
  const ctl = (...a: string[]) => runCli(['ctl', '--control-plane', plane.address, ...operator.flags, ...a]);

  const created = await ctl('tokens', 'create', '--vm', 'vm-a', '--ttl', '10m');
  t.is(created.code, 0, created.stderr);
  const match = /^(vjt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43}))\n$/.exec(created.stdout);
  t.truthy(match, created.stdout);
  const [, token, id, secret] = match as unknown as [string, string, string, string];
  t.regex(created.stderr, new RegExp(`join token ${id} for vm vm-a, single use, expires `));
  t.false(created.stderr.includes(secret));

  const listed = await ctl('tokens', 'list');
  t.regex(listed.stdout, new RegExp(`^${id}\\tvm/vm-a\\texpires=\\S+\\tunused$`, 'm'));
  const json = await ctl('-o', 'json', 'tokens', 'list');
  t.false(json.stdout.includes(secret));
  t.like(JSON.parse(json.stdout)[0], { id, kind: 'vm', name: 'vm-a', used: false });

  // The token gets vm-a its certificate, once (no client certificate yet: the join token authenticates).
  const certify = certifyClient(plane.address, { trustDomain: 'vsockmesh.local', bootstrapBundlePem: await readFile(operator.caPath, 'utf8') });
  const answer = await certify(await createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/vm/vm-a'), { joinToken: token });
  t.true(verifySvid(answer.chainPem, trustBundle('vsockmesh.local', answer.bundlePem), new Date()).ok);
  await t.throwsAsync(certify(await createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/vm/vm-a'), { joinToken: token }), { message: /UNAUTHENTICATED: .*token_used/ });
  t.regex((await ctl('tokens', 'list')).stdout, new RegExp(`^${id}\\tvm/vm-a\\t.*\\tused$`, 'm'));

  const other = await ctl('tokens', 'create', '--hypervisor', 'hv-1');
  const otherId = other.stdout.split('.')[1]!;
  const revoked = await ctl('tokens', 'revoke', otherId);
  t.is(revoked.code, 0, revoked.stderr);
  t.false((await ctl('tokens', 'list')).stdout.includes(otherId));
  const again = await ctl('tokens', 'revoke', otherId);
  t.is(again.code, 1);
  t.regex(again.stderr, /NOT_FOUND: no join token/);

  const usage = await ctl('tokens', 'create', '--ttl', '10m');
  t.is(usage.code, 2);
  t.regex(usage.stderr, /exactly one of --vm <id> or --hypervisor <id>/);
  const badTtl = await ctl('tokens', 'create', '--vm', 'vm-b', '--ttl', '1s');
  t.is(badTtl.code, 1);
  t.regex(badTtl.stderr, /INVALID_ARGUMENT: join token ttl/);

  t.false(plane.proc.stdout().includes(secret), 'the control plane never logs a token');

  plane.proc.kill('SIGTERM');
  await plane.proc.exited;
  plane = await startControlPlane(args);
  t.regex((await ctl('tokens', 'list')).stdout, new RegExp(`^${id}\\tvm/vm-a\\t.*\\tused$`, 'm'));
  const fresh = (await ctl('tokens', 'create', '--vm', 'vm-c')).stdout.trim();
  const later = await certify(await createCsr(generateWorkloadKeys(), 'spiffe://vsockmesh.local/vm/vm-c'), { joinToken: fresh });
  t.is(later.bundlePem, answer.bundlePem, 'the generated root is kept in the identity directory');
});

test('control-plane: --ca-cert without --ca-key is a usage error', async (t) => {
  const run = await runCli(['control-plane', '--no-admin', '--ca-cert', '/nonexistent.pem']);
  t.is(run.code, 2);
  t.regex(run.stderr, /--ca-cert and --ca-key go together/);
});
