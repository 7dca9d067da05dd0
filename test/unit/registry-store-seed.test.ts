// Two VM-manager replicas on one store seeding the registry, driven by hand
// on a memory store: the replica that loses the seed's claim waits for the
// registry the winner wrote, even when other writes to the same store (the
// mesh config's, on a shared etcd) moved the store's revision past it.

import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import { RegistryStore } from '../../xds/vm-manager/registry-store.js';
import type { Registry } from '../../xds/vm-manager/registry.js';
import { laggingWatches } from '../helpers/lagging-store.js';
import { LogCapture } from '../helpers/log-capture.js';

function load(registry: Registry): void {
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  registry.registerVm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.1'], sidecar: null, services: [{ name: 'web', port: 8080 }], labels: {} });
}

test('a replica that lost the seed claim serves the winner\'s registry, though writes under another prefix moved the store past the seed', async (t) => {
  const memory = new MemoryStore();
  const logger = (): ReturnType<typeof createLogger> => createLogger({ level: 'error', destination: new LogCapture() });
  const winner = await RegistryStore.open({ store: memory, logger: logger() });
  const lag = laggingWatches(memory);
  const loser = await RegistryStore.open({ store: lag.store, logger: logger() });
  t.teardown(async () => {
    await Promise.all([winner.close(), loser.close()]);
    await memory.close();
  });

  t.is(await winner.seed(load), 'seeded');
  // The mesh config seeded on the same store afterwards: the store's revision moves on, nothing under the registry's prefix changes.
  const other = await memory.commit({ puts: [{ key: '/vsockmesh/mesh/services/web', value: '{}' }] });
  t.true(other.ok);

  // The loser has not seen the seed yet (its watch is behind): it tries to claim it, fails, and waits for what is under its prefix.
  const outcome = loser.seed(load);
  setTimeout(() => lag.release(), 50);
  t.is(await outcome, 'present', 'the registry the other replica seeded is the one served');
  t.deepEqual(loser.registry.list().vms.map((vm) => vm.vmId), ['vm-a']);
  t.true(loser.registry.revision < other.revision, 'the loser never needed the store revision of the write under another prefix');
});
