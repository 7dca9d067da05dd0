// Compare-and-swap on the mesh config, end to end through `vsockmesh ctl`
// and real control-plane processes: two operators editing the same service
// from the revision they read, one wins and the other gets ABORTED saying
// why; with the mesh in a real etcd (TLS with client certificates, or plain
// text when asked for by name), two replicas share it: a change through one
// is served by the other, and concurrent edits through both, exactly one wins.
// A mesh state file of the earlier format (YAML) is read and kept.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { waitFor } from '../helpers/apps.js';
import { runCli, startCli, startControlPlane } from '../helpers/cli.js';
import { startEtcd, type EtcdTls } from '../helpers/etcd.js';
import { freePort } from '../helpers/haproxy.js';
import { leafExtensions, makeCert, makeRoot } from '../helpers/pki.js';

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cas-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function meshFile(dir: string): Promise<string> {
  const path = join(dir, 'mesh.yaml');
  await writeFile(path, stringify({ services: [{ name: 'web', port: 8080 }] }));
  return path;
}

async function plane(t: ExecutionContext, args: string[]) {
  const started = await startControlPlane(['--insecure', '--listen', `127.0.0.1:${await freePort()}`, ...args]);
  t.teardown(() => started.proc.kill('SIGKILL'));
  const api = new MeshConfigApiClient(started.address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  const ctl = (...a: string[]) => runCli(['ctl', '--insecure', '--control-plane', started.address, '--timeout-ms', '30000', ...a]);
  return { ...started, api, ctl };
}

type Plane = Awaited<ReturnType<typeof plane>>;

async function webRevision(p: Plane): Promise<number> {
  const listed = await p.ctl('-o', 'json', 'services', 'list');
  const web = (JSON.parse(listed.stdout) as Array<{ name: string; mod_revision: number }>).find((s) => s.name === 'web');
  return web!.mod_revision;
}

/** Two operators put `web` from the revision both read, through `first` and `second`: exactly one wins. */
async function concurrentEdits(t: ExecutionContext, first: Plane, second: Plane): Promise<{ winnerPort: number }> {
  const read = await webRevision(first);
  t.true(read > 0, 'list shows the revision');
  t.is(await webRevision(second), read, 'both read the same revision');
  const [a, b] = await Promise.all([
    first.ctl('services', 'put', 'web', '--port', '8081', '--expect-revision', String(read)),
    second.ctl('services', 'put', 'web', '--port', '8082', '--expect-revision', String(read)),
  ]);
  t.deepEqual([a.code, b.code].sort(), [0, 1], `exactly one wins:\n${a.stderr}\n${b.stderr}`);
  const loser = a.code === 0 ? b : a;
  t.regex(loser.stderr, new RegExp(`^vsockmesh ctl: ABORTED: not applied: service "web" was changed by someone else \\(now at revision \\d+, the change expected ${read}\\): read it again and retry\\n$`));
  const winnerPort = a.code === 0 ? 8081 : 8082;
  t.regex((a.code === 0 ? a : b).stdout, new RegExp(`service web port=${winnerPort} .*revision=\\d+`));
  return { winnerPort };
}

test('one control plane: two operators put the same service from the revision they read; one wins, the other gets ABORTED and changes nothing', async (t) => {
  const dir = await tempDir(t);
  const p = await plane(t, ['--mesh', await meshFile(dir), '--mesh-state-file', join(dir, 'mesh-state.json')]);
  const { winnerPort } = await concurrentEdits(t, p, p);
  const [web] = await p.api.listServices();
  t.is(web!.port, winnerPort, 'the winner is what is stored');
  t.like(p.proc.lines.find((l) => l.reason === 'mesh_change_conflict'), { level: 'warn', method: 'PutService', code: 'ABORTED' });
  // A delete from a stale revision is refused too; from the current one it goes through.
  const stale = await p.ctl('services', 'delete', 'web', '--expect-revision', '1');
  t.is(stale.code, 1);
  t.regex(stale.stderr, /ABORTED: not applied: service "web" was changed by someone else/);
  const deleted = await p.ctl('services', 'delete', 'web', '--expect-revision', String(web!.mod_revision));
  t.is(deleted.code, 0, deleted.stderr);
  t.deepEqual(await p.api.listServices(), []);
  const gone = await p.ctl('services', 'put', 'web', '--port', '8083', '--expect-revision', String(web!.mod_revision));
  t.regex(gone.stderr, /ABORTED: not applied: service "web" no longer exists \(the change expected it at revision \d+\)/);
});

test('a mesh state file of the earlier format (the mesh as YAML) is read, and kept in the store format from then on', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'mesh-state.yaml');
  await writeFile(state, stringify({ services: [{ name: 'web', port: 8080 }, { name: 'api', port: 9090 }], routes: [{ name: 'r', domains: ['api'], routes: [{ prefix: '/', clusters: [{ service: 'api' }] }] }] }));
  const args = ['--mesh-state-file', state];
  const p = await plane(t, args);
  t.deepEqual((await p.api.listServices()).map((s) => s.name).sort(), ['api', 'web']);
  t.deepEqual((await p.api.listRoutes()).map((r) => r.name), ['r']);
  t.regex(await readFile(state, 'utf8'), /^\{"format":"vsockmesh-store"/);
  p.proc.kill('SIGTERM');
  await p.proc.exited;
  const again = await plane(t, args);
  t.deepEqual((await again.api.listServices()).map((s) => s.name).sort(), ['api', 'web'], 'and read again after a restart');
});

test('--store without a client certificate refuses to start, naming the flags; --store-insecure is the explicit way to plain text', async (t) => {
  const run = await runCli(['control-plane', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--store', 'etcd://127.0.0.1:2379']);
  t.is(run.code, 2);
  t.regex(run.stderr, /--store: etcd is spoken to over TLS with a client certificate: give --store-cert, --store-key and --store-ca \(or --store-insecure for plain text\)/);
  const bad = await runCli(['control-plane', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--store', 'http://127.0.0.1:2379', '--store-insecure']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--store: "http:\/\/127\.0\.0\.1:2379" is not etcd:\/\/host:port/);
  // Replicas on one store must share one CA: an embedded root per replica is refused before anything is made.
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cas-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const embedded = await runCli(['control-plane', '--identity-dir', join(dir, 'identity'), '--no-admin', '--listen', '127.0.0.1:0', '--store', 'etcd://127.0.0.1:2379', '--store-insecure']);
  t.is(embedded.code, 2);
  t.regex(embedded.stderr, /--store with an embedded root .* give each replica the same CA files \(--ca-cert\/--ca-key/);
  t.false(existsSync(join(dir, 'identity')), 'no root was made');
});


/** A CA, etcd's server certificate (localhost) and a client certificate, as PEM files. */
async function etcdPki(dir: string): Promise<{ server: EtcdTls; client: EtcdTls }> {
  const root = await makeRoot();
  const write = async (name: string, cert: Awaited<ReturnType<typeof makeCert>>): Promise<{ cert: string; key: string }> => {
    const paths = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) };
    await writeFile(paths.cert, cert.pem);
    await writeFile(paths.key, cert.keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
    return paths;
  };
  const ca = join(dir, 'ca.pem');
  await writeFile(ca, root.pem);
  const server = await write('server', await makeCert(root, { subject: 'CN=localhost', extensions: leafExtensions({ dns: ['localhost'] }) }));
  const client = await write('client', await makeCert(root, { subject: 'CN=control-plane', extensions: leafExtensions({ dns: ['control-plane'] }) }));
  return { server: { ...server, ca }, client: { ...client, ca } };
}

test('two control-plane replicas on one etcd (TLS, client certificates): a change through one is served by the other; concurrent edits through both, exactly one wins', async (t) => {
  const dir = await tempDir(t);
  const pki = await etcdPki(dir);
  const etcd = await startEtcd(t, { tls: pki.server });
  const port = etcd.endpoint.split(':')[1]!;
  const store = ['--store', `etcd://localhost:${port}`, '--store-cert', pki.client.cert, '--store-key', pki.client.key, '--store-ca', pki.client.ca];
  const mesh = await meshFile(dir);
  const first = await plane(t, ['--mesh', mesh, ...store]);
  const second = await plane(t, ['--mesh', mesh, ...store]);
  t.deepEqual((await second.api.listServices()).map((s) => s.name), ['web'], 'seeded once from the mesh file');

  const put = await first.ctl('services', 'put', 'api', '--port', '9090');
  t.is(put.code, 0, put.stderr);
  await waitFor(async () => (await second.api.listServices()).some((s) => s.name === 'api'), 'the change through replica 1 on replica 2', 15_000);

  const { winnerPort } = await concurrentEdits(t, first, second);
  for (const p of [first, second]) {
    await waitFor(async () => (await p.api.listServices()).find((s) => s.name === 'web')?.port === winnerPort, 'both replicas serve the winner', 15_000);
  }
  t.is(first.proc.lines.filter((l) => l.reason === 'mesh_change_conflict').length + second.proc.lines.filter((l) => l.reason === 'mesh_change_conflict').length, 1);

  // A client without a certificate etcd trusts is refused: the store is not reachable in plain text (saying so, retrying; the in-process VM manager's registry is read first).
  const plain = startCli(['control-plane', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', '--mesh', mesh, '--store', `etcd://localhost:${port}`, '--store-insecure']);
  t.teardown(() => plain.kill('SIGKILL'));
  const unavailable = await plain.waitForLine((l) => l.reason === 'registry_store_unavailable', 'the store out of reach', 30_000);
  t.regex(String(unavailable.error), /etcd at localhost:\d+/);
});
