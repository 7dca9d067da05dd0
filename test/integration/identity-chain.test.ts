// The whole identity chain with real processes: a control plane with the
// embedded CA and mTLS on every control API; an operator with a certificate
// makes a join token for vm-a (`ctl tokens create`); a sidecar with an
// identity section gets vm-a's SVID through that token (no client
// certificate yet, the control plane checked against the trust bundle), then
// opens ADS over mTLS as vm-a with that same certificate and receives its
// listeners; with leaves of seconds its certificate renews (and so does the
// control plane's own) while the ADS stream stays up and keeps receiving.
// And the one exception of the guard: without a certificate, Certify with a
// join token and nothing else.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { adminRequest } from '../helpers/admin.js';
import { waitFor } from '../helpers/apps.js';
import { runCli, startControlPlane, startSidecarCli } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { operatorCtl } from '../helpers/identity.js';
import { staticSource } from '../../proxy/identity/certificate-source.js';
import { createCsr, generateWorkloadKeys } from '../../proxy/identity/keys-and-csr.js';
import { JoinTokensApiClient, certifyClient } from '../../xds/identity/certify-client.js';
import { identityProto } from '../../xds/proto.js';
import { bootstrapChannelCredentials } from '../../xds/security/transport.js';

const LEAF_LIFETIME_S = 6;
const TD = 'vsockmesh.local';

function metric(stats: string, line: RegExp): number {
  const m = line.exec(stats);
  return m === null ? Number.NaN : Number(m[1]);
}

test('embedded CA + mTLS: ctl tokens as an operator, a sidecar gets vm-a through its join token, opens ADS as vm-a, receives its listeners, renews with the stream up', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-chain-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const identityDir = join(dir, 'identity');
  const outbound = await freePort();
  await writeFile(join(dir, 'mesh.yaml'), stringify({ services: [{ name: 'web', port: 8080, outbound_port: outbound }] }));
  await writeFile(
    join(dir, 'inventory.yaml'),
    stringify({
      hypervisors: [{ id: 'hv-1', vsock_mode: 'host-relay', relay_port: 15100 }],
      vms: [
        { id: 'vm-a', hypervisor: 'hv-1', cid: 3, addresses: ['127.0.0.2'], sidecar: { tcp_port: 15006, vsock_port: 15006 } },
        { id: 'vm-b', hypervisor: 'hv-1', cid: 4, addresses: ['127.0.0.3'], sidecar: { tcp_port: 15006, vsock_port: 15006 }, services: [{ name: 'web', port: 8080 }] },
      ],
    }),
  );
  const plane = await startControlPlane([
    '--listen',
    `127.0.0.1:${await freePort()}`,
    '--identity-dir',
    identityDir,
    '--leaf-lifetime',
    `${LEAF_LIFETIME_S}s`,
    '--mesh',
    join(dir, 'mesh.yaml'),
    '--inventory',
    join(dir, 'inventory.yaml'),
  ]);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  t.false(plane.proc.lines.some((l) => l.reason === 'insecure'), 'no plain text anywhere');

  // The operator, with a certificate under the control plane's root.
  const operator = await operatorCtl(identityDir);
  t.teardown(() => operator.cleanup());
  const ctl = (...a: string[]) => runCli(['ctl', '--control-plane', plane.address, ...operator.flags, ...a]);
  const plain = await runCli(['ctl', '--control-plane', plane.address, '--insecure', '--timeout-ms', '5000', 'tokens', 'create', '--vm', 'vm-a']);
  t.not(plain.code, 0, 'no token for a plain-text caller');
  const created = await ctl('tokens', 'create', '--vm', 'vm-a', '--ttl', '10m');
  t.is(created.code, 0, created.stderr);
  const tokenFile = join(dir, 'join-token');
  await writeFile(tokenFile, created.stdout, { mode: 0o600 });

  // The sidecar: only its node id, the control plane and its identity section.
  const { proc, admin } = await startSidecarCli(t, {
    node: { id: 'vm-a' },
    vsock: { enabled: false },
    xds: { address: plane.address },
    identity: { control_plane: plane.address, join_token_file: tokenFile, trust_bundle_file: operator.caPath },
    admin: { port: 0 },
  });
  const obtained = await proc.waitForLine((l) => l.msg === 'identity obtained', 'identity obtained');
  t.is(obtained.spiffe_id, 'spiffe://vsockmesh.local/vm/vm-a');

  const dump = async () => JSON.parse((await adminRequest(admin, 'GET', '/config_dump')).body) as { identity: { chain: { serial: string } }; xds: { applied: { listeners: Array<{ name: string }> } } };
  const listeners = async () => (await dump()).xds.applied.listeners.map((l) => l.name);
  // ADS over mTLS as vm-a: the control plane serves vm-a's own snapshot (it is a registered VM).
  await waitFor(async () => (await listeners()).includes('outbound|web'), 'outbound|web from the control plane', 60_000);
  const status = await ctl('status');
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /vm-a/);
  // Leaves of seconds: two renewals, each authenticated by the current certificate, counted from
  // the certificate seen now (renewals may already have happened while the listeners came).
  const stats = async () => (await adminRequest(admin, 'GET', '/stats')).body;
  const renewals = async () => {
    const n = metric(await stats(), /^vsockmesh_cert_renewals_total\{result="success"\} (\S+)$/m);
    return Number.isNaN(n) ? 0 : n;
  };
  const base = await renewals();
  const firstSerial = (await dump()).identity.chain.serial;
  await waitFor(async () => (await renewals()) >= base + 2, 'two renewals after the certificate seen', 20 * LEAF_LIFETIME_S * 1000);
  const after = await stats();
  t.not((await dump()).identity.chain.serial, firstSerial, 'a new certificate is in use');
  t.is(metric(after, /^vsockmesh_xds_connected (\S+)$/m), 1);
  t.is(metric(after, /^vsockmesh_xds_reconnects_total (\S+)$/m), 0, 'the ADS stream stayed up through the renewals');

  // The same stream still receives: a service added now (past the first leaf's lifetime) reaches the sidecar.
  const put = await ctl('services', 'put', 'api', '--port', '9090', '--outbound-port', String(await freePort()));
  t.is(put.code, 0, put.stderr);
  await waitFor(async () => (await listeners()).includes('outbound|api'), 'outbound|api pushed after the renewals', 60_000);
  t.is(metric(await stats(), /^vsockmesh_xds_reconnects_total (\S+)$/m), 0);
  t.false(proc.stdout().includes(created.stdout.trim().split('.')[2]!), 'the sidecar never logs its token');
});

test('on a control plane with a CA, a client without a certificate gets Certify with a join token and nothing else; a sidecar certificate cannot make join tokens', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-chain-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const identityDir = join(dir, 'identity');
  const plane = await startControlPlane(['--listen', `127.0.0.1:${await freePort()}`, '--identity-dir', identityDir]);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const operator = await operatorCtl(identityDir);
  t.teardown(() => operator.cleanup());
  const bundlePem = await readFile(operator.caPath, 'utf8');
  const certify = certifyClient(plane.address, { trustDomain: TD, bootstrapBundlePem: bundlePem });

  // No certificate and no token: the guard refuses before the handler.
  await t.throwsAsync(certify(await createCsr(generateWorkloadKeys(), `spiffe://${TD}/vm/vm-a`), { joinToken: '' }), { message: /UNAUTHENTICATED: no_identity/ });
  // No certificate, another method: refused too.
  const Client = identityProto().vsockmesh.identity.v1.JoinTokens;
  const anonymous = new Client(plane.address, bootstrapChannelCredentials(TD, bundlePem), { 'grpc.ssl_target_name_override': TD });
  t.teardown(() => anonymous.close());
  const listed = await new Promise<grpc.ServiceError | null>((resolve) => anonymous.ListJoinTokens({}, { deadline: new Date(Date.now() + 30_000) }, (err) => resolve(err)));
  t.is(listed?.code, grpc.status.UNAUTHENTICATED);
  t.regex(listed?.details ?? '', /no_certificate/);

  // With a join token, no certificate: vm-a's first certificate; with it, vm-a may renew but not make tokens.
  const created = await runCli(['ctl', '--control-plane', plane.address, ...operator.flags, 'tokens', 'create', '--vm', 'vm-a']);
  t.is(created.code, 0, created.stderr);
  const keys = generateWorkloadKeys();
  const answer = await certify(await createCsr(keys, `spiffe://${TD}/vm/vm-a`), { joinToken: created.stdout.trim() });
  const material = { keyPem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, chainPem: answer.chainPem, bundlePem: answer.bundlePem, spiffeId: `spiffe://${TD}/vm/vm-a`, notAfter: answer.notAfter };
  const renewed = await certify(await createCsr(generateWorkloadKeys(), `spiffe://${TD}/vm/vm-a`), { material });
  t.true(renewed.notAfter.getTime() >= answer.notAfter.getTime());
  const sidecarTokens = new JoinTokensApiClient(plane.address, { source: staticSource(material) }, 30_000);
  t.teardown(() => sidecarTokens.close());
  await t.throwsAsync(sidecarTokens.create({ vm_id: 'vm-b' }), { message: /PERMISSION_DENIED: role_not_allowed/ });
});
