// Two control-plane replicas (two MeshStores) on one store: changes of one
// reach the other through the watch; a compare-and-swap on an entry's
// revision lets exactly one of two edits win; a change validated against a
// mesh that moved on meanwhile is validated again against the new one.

import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MeshChangeConflictError, MeshStore } from '../../xds/control-plane/mesh-store.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { waitFor } from '../helpers/apps.js';
import { endingWatches } from '../helpers/ending-store.js';

async function replicas() {
  const store = new MemoryStore();
  const first = await MeshStore.open({ store });
  await first.put('services', { name: 'web', port: 8080 });
  await first.put('services', { name: 'db', port: 5432 });
  const second = await MeshStore.open({ store });
  return { store, first, second };
}

test('a change through one replica is seen by the other, with the same revision', async (t) => {
  const { first, second } = await replicas();
  t.deepEqual(second.rawServices().map((s) => s.name), ['web', 'db'], 'in creation order');
  const stored = await first.put('services', { name: 'api', port: 9090 });
  await waitFor(() => second.rawServices().some((s) => s.name === 'api'), 'the change on the other replica');
  t.is(second.rawServices().find((s) => s.name === 'api')!.modRevision, stored.modRevision);
  t.deepEqual(second.config.services.map((s) => s.name).sort(), ['api', 'db', 'web'], 'and in the config it serves');
});

test('two edits of one service from the revision both read: exactly one wins, the other is ABORTED and changes nothing', async (t) => {
  const { first, second } = await replicas();
  const read = first.rawServices().find((s) => s.name === 'web')!.modRevision;
  const results = await Promise.allSettled([first.put('services', { name: 'web', port: 8081 }, read), second.put('services', { name: 'web', port: 8082 }, read)]);
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  t.true(lost.reason instanceof MeshChangeConflictError);
  t.is((lost.reason as MeshChangeConflictError).code, 'ABORTED');
  const won = (results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{ port?: unknown }>).value.port;
  for (const replica of [first, second]) await waitFor(() => replica.rawServices().find((s) => s.name === 'web')!.port === won, 'both replicas hold the winner');
});

test('a change checked against a mesh that moved on is checked again: a route added through one replica stops the other deleting its service', async (t) => {
  const { first, second } = await replicas();
  // The second replica has not seen the route yet when it validates the delete; its commit then fails on the
  // mesh's revision, it reads the mesh again and the delete is refused there.
  const route = first.put('routes', { name: 'r', domains: ['db'], routes: [{ prefix: '/', clusters: [{ service: 'db' }] }] });
  const removal = second.delete('services', 'db');
  await route;
  await t.throwsAsync(removal, { message: /db/ });
  t.true(second.rawServices().some((s) => s.name === 'db'));
  t.true(first.rawServices().some((s) => s.name === 'db'));
});

test('peer authentication entries are records like services: seen by the other replica in its config, and a stale revision is ABORTED and changes nothing', async (t) => {
  const { first, second } = await replicas();
  const stored = await first.put('peer_authentication', { name: 'mesh', mode: 'PERMISSIVE' });
  await waitFor(() => second.config.peerAuthentication.some((p) => p.name === 'mesh'), 'the entry on the other replica');
  t.is(second.rawPeerAuthentication().find((p) => p.name === 'mesh')!.modRevision, stored.modRevision);
  const moved = await second.put('peer_authentication', { name: 'mesh', mode: 'STRICT' }, stored.modRevision);
  await waitFor(() => first.rawPeerAuthentication()[0]!.modRevision === moved.modRevision, 'the change on the first replica');
  const stale = await t.throwsAsync(first.delete('peer_authentication', 'mesh', stored.modRevision), { instanceOf: MeshChangeConflictError });
  t.is(stale.code, 'ABORTED');
  t.regex(stale.message, /peer authentication "mesh" was changed by someone else/);
  t.deepEqual(first.rawPeerAuthentication().map((p) => p.mode), ['STRICT'], 'nothing changed');
});

test('a mesh file seeded in several chunks lists its entries in name order, as one transaction did, whatever the file order', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-mesh-order-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const names = Array.from({ length: 150 }, (_, i) => `svc-${String(i).padStart(3, '0')}`);
  await writeFile(join(dir, 'mesh.yaml'), stringify({ services: [...names].reverse().map((name, i) => ({ name, port: 10_000 + i })) }));
  const mesh = await MeshStore.open({ store: new MemoryStore(), meshPath: join(dir, 'mesh.yaml') });
  t.deepEqual(mesh.rawServices().map((s) => s.name), names);
});

test('a watch that ends with UNAVAILABLE: not ready saying why, the mesh read again with backoff until the store answers, a change made meanwhile picked up, ready again', async (t) => {
  const memory = new MemoryStore();
  const writer = await MeshStore.open({ store: memory });
  await writer.put('services', { name: 'web', port: 8080 });
  const ending = endingWatches(memory);
  const follower = await MeshStore.open({ store: ending.store });
  t.teardown(async () => {
    await Promise.all([writer.close(), follower.close()]);
  });
  t.is(follower.notReady(), undefined);
  let health = 0;
  follower.on('health', () => health++);
  const listsBefore = ending.lists();

  ending.endWatches(2);
  t.regex(follower.notReady() ?? '', /^mesh store unavailable.*etcd watch cancelled/, 'not ready at once, saying why');
  t.is(health, 1);
  await t.throwsAsync(follower.put('services', { name: 'db', port: 5432 }), { message: /not applied: mesh store unavailable/ });
  // Made while the follower's watch is down: only a read of the whole mesh brings it.
  await writer.put('services', { name: 'api', port: 9090 });

  await waitFor(() => follower.notReady() === undefined, 'the follower ready again', 15_000);
  t.true(ending.lists() - listsBefore >= 3, 'two failed reads, then one that answered');
  t.is(health, 2);
  t.deepEqual(follower.rawServices().map((s) => s.name), ['web', 'api'], 'the change made while the watch was down');
  // Following again: a later change arrives through the new watch.
  await writer.put('services', { name: 'db', port: 5432 });
  await waitFor(() => follower.rawServices().some((s) => s.name === 'db'), 'a change after the watch came back');
  t.deepEqual(follower.config.services.map((s) => s.name).sort(), ['api', 'db', 'web']);
});
