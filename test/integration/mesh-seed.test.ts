// Seeding etcd with a mesh file larger than one etcd transaction takes
// (etcd with its default limits: --max-txn-ops 128): one `vsockmesh
// control-plane --store --mesh` seeds a 500-service mesh in several
// transactions; two replicas started at once seed it once and serve the
// same mesh; a seed whose seeder died half-way is finished by a replica with
// the mesh file, and one without serves only once the mesh is whole.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MeshConfigApiClient } from '../../xds/control-plane/config-api.js';
import { MESH_PREFIX } from '../../xds/control-plane/mesh-store.js';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { startCli, type CliProcess } from '../helpers/cli.js';
import { claimSeedAndDie, startEtcd } from '../helpers/etcd.js';

const SERVICES = 500;
const SEEDED = /^mesh seeded in \d+ store transactions$/;

async function setup(t: ExecutionContext): Promise<{ mesh: string; store: string[]; endpoint: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-mesh-seed-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd(t);
  const mesh = join(dir, 'mesh.yaml');
  await writeFile(mesh, stringify({ services: Array.from({ length: SERVICES }, (_, i) => ({ name: `svc-${i}`, port: 20_000 + i })) }));
  return { mesh, store: ['--store', `etcd://${etcd.endpoint}`, '--store-insecure'], endpoint: etcd.endpoint };
}

/** `vsockmesh control-plane` (its registry in the same etcd) as a child process; `api` once it serves. */
function plane(t: ExecutionContext, args: string[]): { proc: CliProcess; api: Promise<MeshConfigApiClient> } {
  const proc = startCli(['control-plane', '--insecure', '--no-admin', '--listen', '127.0.0.1:0', ...args]);
  t.teardown(() => proc.kill('SIGKILL'));
  const api = proc.waitForLine((l) => l.msg === 'control-plane serving', 'control-plane serving', 90_000).then((l) => {
    const client = new MeshConfigApiClient(`127.0.0.1:${String(l.port)}`, { insecure: true }, 30_000);
    t.teardown(() => client.close());
    return client;
  });
  return { proc, api };
}

const names = async (api: MeshConfigApiClient): Promise<string[]> => (await api.listServices()).map((s) => s.name);
const expected = Array.from({ length: SERVICES }, (_, i) => `svc-${i}`).sort();

test(`one control plane --store seeds a ${SERVICES}-service mesh into an etcd with its default limits, in several transactions`, async (t) => {
  const { mesh, store } = await setup(t);
  const p = plane(t, [...store, '--mesh', mesh]);
  const api = await p.api;
  const seeded = p.proc.lines.find((l) => SEEDED.test(String(l.msg)));
  t.like(seeded, { entries: SERVICES, written: SERVICES });
  t.true(Number(seeded?.transactions) > 2, 'more than one transaction of entries');
  t.deepEqual((await names(api)).sort(), expected, 'every service of the mesh file');
});

test(`two replicas started at once with the same ${SERVICES}-service mesh: exactly one seeds, both serve the same mesh`, async (t) => {
  const { mesh, store } = await setup(t);
  const replicas = [plane(t, [...store, '--mesh', mesh]), plane(t, [...store, '--mesh', mesh])];
  const apis = await Promise.all(replicas.map((r) => r.api));
  t.is(replicas.filter((r) => r.proc.lines.some((l) => SEEDED.test(String(l.msg)))).length, 1, 'exactly one replica seeds');
  const [fromA, fromB] = await Promise.all(apis.map((api) => names(api)));
  t.deepEqual([...fromA].sort(), expected);
  t.deepEqual(fromB, fromA, 'the same mesh, in the same order, on both');
});

test('a mesh seed whose seeder died half-way: a replica without --mesh waits, one with it writes only what is missing, then both serve the whole mesh', async (t) => {
  const { mesh, store, endpoint } = await setup(t);
  // A seeder that claimed the seed, wrote 120 entries as the seed writes them, and died: its lease ends unrenewed.
  const etcd = new EtcdStore({ endpoints: [endpoint], transport: { insecure: true } });
  t.teardown(() => etcd.close());
  t.true(await claimSeedAndDie(etcd, MESH_PREFIX, 3_000));
  const half = Array.from({ length: 120 }, (_, i) => ({ key: `${MESH_PREFIX}services/svc-${i}`, value: JSON.stringify({ name: `svc-${i}`, port: 20_000 + i }) }));
  for (let i = 0; i < half.length; i += 60) t.true((await etcd.commit({ puts: half.slice(i, i + 60) })).ok);
  const before = new Map((await etcd.list(MESH_PREFIX)).records.map((r) => [r.key, r.modRevision]));

  const reader = plane(t, store);
  await reader.proc.waitForLine((l) => /^the mesh in the store is not whole yet/.test(String(l.msg)), 'the replica without --mesh waiting', 60_000);
  const seeder = plane(t, [...store, '--mesh', mesh]);
  const [readerApi, seederApi] = await Promise.all([reader.api, seeder.api]);
  t.like(seeder.proc.lines.find((l) => l.reason === 'seed_taken_over'), { level: 'warn', owner: 'dead-seeder' });
  t.like(seeder.proc.lines.find((l) => SEEDED.test(String(l.msg))), { entries: SERVICES, written: SERVICES - half.length });
  const after = new Map((await etcd.list(MESH_PREFIX)).records.map((r) => [r.key, r.modRevision]));
  t.deepEqual(half.map((r) => after.get(r.key)), half.map((r) => before.get(r.key)), 'what the dead seeder wrote is not written again');
  const [fromReader, fromSeeder] = await Promise.all([names(readerApi), names(seederApi)]);
  t.deepEqual([...fromReader].sort(), expected, 'the replica without --mesh served only the whole mesh');
  t.deepEqual(fromReader, fromSeeder);
});
