// A replica asked for a revision another replica gave (a Watch resuming on
// it), ahead of its own: RegistryStore.reach takes it at once only when the
// store held at that revision what the replica holds; when changes under the
// prefix came in between (a put, or only a delete) that its watch has not
// brought yet, it waits for them and does not claim a revision it has not seen.

import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { RegistryStore } from '../../xds/vm-manager/registry-store.js';
import { laggingWatches } from '../helpers/lagging-store.js';
import { vm } from '../helpers/vm-manager.js';

const hv1 = { hypervisorId: 'hv-1', vsockMode: 'direct' as const, relayPort: 0 };
const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'] });

async function replicas() {
  const memory = new MemoryStore();
  const lag = laggingWatches(memory, { held: false });
  const logger = createLogger({ level: 'silent' });
  const a = await RegistryStore.open({ store: lag.store, logger });
  const b = await RegistryStore.open({ store: memory, logger });
  return { memory, lag, a, b, close: async () => (await Promise.all([a.close(), b.close()]), await memory.close()) };
}

/** Whether `p` settled by the next turn of the event loop (the memory store answers in the same turn). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true), () => (done = true));
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

test('ahead only by writes under another prefix: reached at once, at that revision', async (t) => {
  const { memory, a, b, close } = await replicas();
  t.teardown(close);
  await b.mutate((r) => r.registerHypervisor(hv1));
  const mesh = await memory.commit({ puts: [{ key: '/vsockmesh/mesh/services/web', value: '{}' }] });
  t.true(a.registry.revision < mesh.revision);
  t.true(await a.reach(mesh.revision));
  t.is(a.registry.revision, mesh.revision);
  t.deepEqual(a.registry.list().hypervisors, [hv1]);
  t.deepEqual(a.registry.eventsSince(mesh.revision), [], 'a Watch from it gets what follows');
});

for (const [what, change] of [
  ['a put', (b: RegistryStore) => b.mutate((r) => r.registerVm(web1))],
  ['only a delete', (b: RegistryStore) => b.mutate((r) => r.deregisterVm('web-1'))],
] as const) {
  test(`ahead by ${what} under the prefix its watch has not brought yet: waits for it, then is there`, async (t) => {
    const { lag, a, b, close } = await replicas();
    t.teardown(close);
    await b.mutate((r) => r.registerHypervisor(hv1));
    if (what === 'only a delete') await b.mutate((r) => r.registerVm(web1));
    t.is(a.registry.revision, b.registry.revision);
    lag.hold();
    await change(b);
    const reached = a.reach(b.registry.revision);
    t.false(await settled(reached), 'not claimed before the change is seen');
    t.true(a.registry.revision < b.registry.revision);
    lag.release();
    t.true(await reached);
    t.is(a.registry.revision, b.registry.revision);
    t.deepEqual(a.registry.list(), b.registry.list());
  });
}
