// A replica whose store watch ended reads the registry again (resync): a key
// that vanished meanwhile, whatever it held (a hypervisor here), is forgotten
// with its mod revision, so the next write to it checks that it is absent
// rather than at a revision the store no longer has (which conflicts forever).

import test, { type ExecutionContext } from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { REGISTRY_PREFIX, RegistryStore } from '../../xds/vm-manager/registry-store.js';
import { waitFor } from '../helpers/apps.js';
import { endingWatches } from '../helpers/ending-store.js';

/** A replica on a memory store whose watches the test ends. */
async function replicaWithEndingWatches(t: ExecutionContext): Promise<{ memory: MemoryStore; ending: ReturnType<typeof endingWatches>; replica: RegistryStore }> {
  const memory = new MemoryStore();
  const ending = endingWatches(memory);
  const replica = await RegistryStore.open({ store: ending.store, logger: createLogger({ level: 'silent' }) });
  t.teardown(async () => {
    await replica.close();
    await memory.close();
  });
  return { memory, ending, replica };
}

test('a hypervisor record deleted while the watch was down: after the resync it is written again at the first attempt', async (t) => {
  const { memory, ending, replica } = await replicaWithEndingWatches(t);
  await replica.mutate((r) => r.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 }));

  ending.endWatches(0);
  t.truthy(replica.notReady(), 'not ready while the watch is down');
  const removed = await memory.commit({ deletes: [`${REGISTRY_PREFIX}hypervisors/hv-1`] });
  t.true(removed.ok);
  await waitFor(() => replica.notReady() === undefined, 'the replica ready again after reading the registry', 15_000);

  await replica.mutate((r) => r.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 7000 }));
  t.is(replica.commits.conflict, 0, 'no conflict with a mod revision the store no longer has');
  const listed = await memory.list(`${REGISTRY_PREFIX}hypervisors/`);
  t.deepEqual(listed.records.map((r) => (JSON.parse(r.value) as { relayPort: number }).relayPort), [7000]);
});

test('a hypervisor deleted while the watch was down: after the resync it is gone with the VM on it, and back with it once registered again', async (t) => {
  const { memory, ending, replica } = await replicaWithEndingWatches(t);
  const hv1 = { hypervisorId: 'hv-1', vsockMode: 'direct' as const, relayPort: 0 };
  await replica.mutate((r) => r.registerHypervisor(hv1));
  await replica.mutate((r) => r.registerVm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], sidecar: null, services: [], labels: {} }));

  ending.endWatches(0);
  await memory.commit({ deletes: [`${REGISTRY_PREFIX}hypervisors/hv-1`] });
  await waitFor(() => replica.notReady() === undefined, 'the replica ready again after reading the registry', 15_000);
  t.deepEqual(replica.registry.list().hypervisors, [], 'the hypervisor deleted in the store is gone from the registry');
  t.is(replica.registry.getVm('web-1'), undefined, 'with the VM on it');

  await replica.mutate((r) => r.registerHypervisor(hv1));
  t.like(replica.registry.getVm('web-1'), { hypervisorId: 'hv-1', vsockCid: 3 }, "the VM's record, still in the store, is back with its hypervisor");
});
