// The config API through `vsockmesh ctl` and gRPC against a real control
// plane process: services and routes changed at run time, refused when they
// would make the mesh invalid or go beyond a bound, kept across a restart
// with a mesh state file; concurrent writes all land, a full disk refuses a
// change and applies nothing.

import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { MAX_CLUSTERS_PER_RULE, MAX_DOMAIN_LENGTH, MAX_DOMAINS_PER_ROUTE, MAX_PREFIX_LENGTH, MAX_RULES_PER_ROUTE } from '../../xds/control-plane/bounds.js';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { MESH_PREFIX } from '../../xds/control-plane/mesh-store.js';
import { createAdsClient, TYPE_URLS, unpackAny, type DiscoveryResponse__Output } from '../../xds/envoy/proto.js';
import { waitFor } from '../helpers/apps.js';
import { runCli, startControlPlane } from '../helpers/cli.js';
import { freePort } from '../helpers/haproxy.js';
import { smallFilesystem } from '../helpers/small-fs.js';

test('ctl services/routes: put, list, delete; an invalid change is refused in one line and changes nothing; the mesh state file survives a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const meshFile = join(dir, 'mesh.yaml');
  await writeFile(meshFile, stringify({ services: [{ name: 'web', port: 8080 }] }));
  const port = await freePort();
  const args = ['--insecure', '--listen', `127.0.0.1:${port}`, '--mesh', meshFile, '--mesh-state-file', join(dir, 'mesh-state.yaml')];
  let plane = await startControlPlane(args);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const ctl = (...a: string[]) => runCli(['ctl', '--insecure', '--control-plane', plane.address, ...a]);

  t.regex((await ctl('services', 'list')).stdout, /^web\tport=8080\toutbound_port=8080\ttcp/);
  const put = await ctl('services', 'put', 'api', '--port', '9090', '--outbound-port', '19090', '--protocol', 'http');
  t.is(put.code, 0, put.stderr);
  const route = join(dir, 'route.yaml');
  await writeFile(route, stringify({ name: 'api-routes', domains: ['api'], routes: [{ prefix: '/', clusters: [{ service: 'api' }] }] }));
  const putRoute = await ctl('routes', 'put', '-f', route);
  t.is(putRoute.code, 0, putRoute.stderr);
  t.regex((await ctl('routes', 'list')).stdout, /^api-routes\tapi\t\/->api:1/);

  // The route still names api: deleting api would break it.
  const refused = await ctl('services', 'delete', 'api');
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^vsockmesh ctl: INVALID_ARGUMENT: .*api/);
  t.is(refused.stderr.trim().split('\n').length, 1);
  t.regex((await ctl('services', 'list')).stdout, /api\tport=9090/, 'nothing changed');
  const missing = await ctl('routes', 'delete', 'nope');
  t.is(missing.code, 1);
  t.regex(missing.stderr, /NOT_FOUND: no route "nope"/);

  plane.proc.kill('SIGTERM');
  t.like(await plane.proc.exited, { code: 0 });
  plane = await startControlPlane(args);
  const after = await runCli(['ctl', '--insecure', '--control-plane', plane.address, '-o', 'json', 'services', 'list']);
  t.deepEqual(
    (JSON.parse(after.stdout) as Array<{ name: string }>).map((s) => s.name),
    ['web', 'api'],
    'the API change survived the restart',
  );
  const down = await runCli(['ctl', '--insecure', '--control-plane', '127.0.0.1:1', '--timeout-ms', '2000', 'status']);
  t.is(down.code, 1);
  t.regex(down.stderr, /^vsockmesh ctl: cannot reach the control plane at 127\.0\.0\.1:1/);
});

// ---- concurrent writes, durability, a full disk, bounds ------------------------------------------

async function planeWithState(t: ExecutionContext, stateDir?: string) {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const meshFile = join(dir, 'mesh.yaml');
  await writeFile(meshFile, stringify({ services: [{ name: 'web', port: 8080 }] }));
  const statePath = join(stateDir ?? dir, 'mesh-state.yaml');
  const args = ['--insecure', '--listen', `127.0.0.1:${await freePort()}`, '--mesh', meshFile, '--mesh-state-file', statePath];
  const plane = await startControlPlane(args);
  t.teardown(() => plane.proc.kill('SIGKILL'));
  const api = new MeshConfigApiClient(plane.address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  return { ...plane, api, args, statePath };
}

const serviceNames = async (api: MeshConfigApiClient): Promise<string[]> => (await api.listServices()).map((s) => s.name).sort();
/** The services a mesh state file (a store file: xds/store/file-store.ts) holds. */
const stateFileServices = async (path: string): Promise<string[]> =>
  (JSON.parse(await readFile(path, 'utf8')) as { records: Array<{ key: string }> }).records
    .filter((r) => r.key.startsWith(`${MESH_PREFIX}services/`))
    .map((r) => r.key.slice(`${MESH_PREFIX}services/`.length))
    .sort();

test.serial('50 concurrent PutService calls all succeed, and every one is in memory and, after kill -9 and a restart, on disk', async (t) => {
  const plane = await planeWithState(t);
  const names = Array.from({ length: 50 }, (_, i) => `svc-${String(i).padStart(2, '0')}`);
  const results = await Promise.allSettled(names.map((name, i) => plane.api.putService({ name, port: 10_000 + i, outbound_port: 10_000 + i, protocol: 'tcp', connect_timeout_ms: 1_000 })));
  t.deepEqual(
    results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
    [],
    'no write failed',
  );
  const expected = ['web', ...names].sort();
  t.deepEqual(await serviceNames(plane.api), expected, 'every acknowledged write is visible');
  t.deepEqual(await stateFileServices(plane.statePath), expected, 'and on disk');
  t.deepEqual((await readdir(dirname(plane.statePath))).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');

  plane.proc.kill('SIGKILL');
  await plane.proc.exited;
  const again = await startControlPlane(plane.args);
  t.teardown(() => again.proc.kill('SIGKILL'));
  const api = new MeshConfigApiClient(again.address, { insecure: true }, 30_000);
  t.teardown(() => api.close());
  t.deepEqual(await serviceNames(api), expected, 'every acknowledged write survived the restart');
});

test.serial('parallel `ctl services put` processes: each that exits 0 is present', async (t) => {
  const plane = await planeWithState(t);
  const names = Array.from({ length: 8 }, (_, i) => `par-${i}`);
  const runs = await Promise.all(names.map((name, i) => runCli(['ctl', '--insecure', '--control-plane', plane.address, '--timeout-ms', '60000', 'services', 'put', name, '--port', String(20_000 + i)])));
  const present = await serviceNames(plane.api);
  for (const [i, run] of runs.entries()) {
    t.is(run.code, 0, run.stderr);
    if (run.code === 0) t.true(present.includes(names[i]!), `${names[i]!} acknowledged and present`);
  }
  t.deepEqual(await stateFileServices(plane.statePath), present, 'memory and disk agree');
});

test.serial('a mesh state file on a full disk: the change is refused with the reason and nothing is applied or pushed', async (t) => {
  const fs = await smallFilesystem(t);
  const plane = await planeWithState(t, fs.dir);
  await plane.api.putService({ name: 'before', port: 9001 });
  const stateBefore = await readFile(plane.statePath, 'utf8');
  const ads = createAdsClient(plane.address, grpc.credentials.createInsecure());
  t.teardown(() => ads.close());
  const watch = ads.StreamAggregatedResources();
  t.teardown(() => watch.cancel());
  watch.on('error', () => undefined);
  const responses: DiscoveryResponse__Output[] = [];
  watch.on('data', (r: DiscoveryResponse__Output) => responses.push(r));
  watch.write({ node: { id: 'watcher' }, type_url: TYPE_URLS.Cluster });
  await waitFor(() => responses.length === 1, 'the first CDS response', 15_000);
  const clusters = (r: DiscoveryResponse__Output): string[] => r.resources.map((a) => unpackAny(a, TYPE_URLS.Cluster).name).sort();
  t.deepEqual(clusters(responses[0]!), ['before', 'web']);

  await fs.fill();
  const refused = await t.throwsAsync(plane.api.putService({ name: 'lost', port: 9002 }));
  t.regex(refused.message, /^UNAVAILABLE: not applied: cannot write mesh state file: ENOSPC \((write|open)\)$/);
  t.deepEqual(await serviceNames(plane.api), ['before', 'web'], 'nothing applied in memory');
  t.is(await readFile(plane.statePath, 'utf8'), stateBefore, 'the state file is as it was');
  t.like(plane.proc.lines.find((l) => l.reason === 'mesh_state_write_failed'), { level: 'error', method: 'PutService', code: 'UNAVAILABLE' });

  await fs.free();
  await plane.api.putService({ name: 'after', port: 9003 });
  await waitFor(() => responses.length >= 2, 'the CDS push after the next change', 15_000);
  t.deepEqual(clusters(responses[1]!), ['after', 'before', 'web'], 'the next push has the later change and never had the refused one');
  t.deepEqual(await stateFileServices(plane.statePath), ['after', 'before', 'web']);
});

test.serial('config API bounds: the largest route the bounds allow is accepted; one beyond a bound is refused naming the field', async (t) => {
  const plane = await planeWithState(t);
  const backends = Array.from({ length: MAX_CLUSTERS_PER_RULE }, (_, i) => `b${i}`);
  for (const [i, name] of backends.entries()) await plane.api.putService({ name, port: 11_000 + i });
  const largest = {
    name: 'largest',
    domains: Array.from({ length: MAX_DOMAINS_PER_ROUTE }, (_, i) => `${String(i).padStart(3, '0')}${'d'.repeat(MAX_DOMAIN_LENGTH - 3)}`),
    rules: Array.from({ length: MAX_RULES_PER_ROUTE }, (_, i) => ({ prefix: `/${String(i).padEnd(MAX_PREFIX_LENGTH - 1, 'p')}`, services: backends.map((service) => ({ service, weight: 1 })) })),
  };
  const put = await plane.api.putRoute(largest);
  t.is(put.rules.length, MAX_RULES_PER_ROUTE);
  const tooMany = await t.throwsAsync(plane.api.putRoute({ ...largest, name: 'too-many', domains: [...largest.domains.map((d) => `x${d.slice(1)}`), 'one-more'] }));
  t.is(tooMany.message, `INVALID_ARGUMENT: routes[1].domains: must list at most ${MAX_DOMAINS_PER_ROUTE} domains`);
  const longName = await t.throwsAsync(plane.api.putService({ name: 'n'.repeat(64), port: 12_000 }));
  t.regex(longName.message, /^INVALID_ARGUMENT: services\[\d+\]\.name: must be a DNS label: 1-63 /);
  t.deepEqual((await plane.api.listRoutes()).map((r) => r.name), ['largest'], 'nothing else changed');
  t.like(plane.proc.lines.find((l) => l.reason === 'invalid_mesh_change'), { level: 'warn', method: 'PutRoute', code: 'INVALID_ARGUMENT' });
});
