// The VM registry on the store (xds/vm-manager/registry-store.ts) held to one
// contract on memory, file and a real etcd (test/helpers/etcd.ts): two
// replicas on one store see each other's changes, race through
// compare-and-swap (exactly one wins), carry the store's revisions (a Watch
// resumes across the revisions of other prefixes, a compacted one is gone)
// and epoch, lose a VM whose store lease is not renewed, renew one without a
// write, and (file, etcd) keep everything across a restart.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../proxy/runtime/log.js';
import type { VmEvent } from '../../proxy/resolve/types.js';
import { EtcdStore } from '../../xds/store/etcd-store.js';
import { FileStore } from '../../xds/store/file-store.js';
import { MemoryStore } from '../../xds/store/memory-store.js';
import type { Store } from '../../xds/store/store.js';
import { VmManagerClient } from '../../xds/vm-manager/client.js';
import { REGISTRY_PREFIX, RegistryStore } from '../../xds/vm-manager/registry-store.js';
import { VmManagerServer } from '../../xds/vm-manager/server.js';
import { RegistryMirror } from '../../xds/control-plane/registry-source.js';
import { startEtcd } from '../helpers/etcd.js';
import { wrapStore } from '../helpers/store-wrapper.js';
import { waitFor } from '../helpers/apps.js';
import { LogCapture } from '../helpers/log-capture.js';
import { vm } from '../helpers/vm-manager.js';

interface Subject {
  /** A store for one replica: the same backing store each time (memory and file: the one instance; etcd: a client of its own). */
  replicaStore(): Store;
  /** Closes the stores, (etcd) restarts the server, and gives a store on the same data. */
  reopen?: () => Promise<Store>;
}

const kinds: Record<string, (t: ExecutionContext) => Promise<Subject>> = {
  memory: async () => {
    const store = new MemoryStore();
    return { replicaStore: () => store };
  },
  file: async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-registry-store-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'registry.json');
    let store = await FileStore.open(path);
    return {
      replicaStore: () => store,
      reopen: async () => {
        await store.close();
        store = await FileStore.open(path);
        return store;
      },
    };
  },
  etcd: async (t) => {
    const etcd = await startEtcd(t);
    const clients: EtcdStore[] = [];
    const client = (): EtcdStore => {
      const store = new EtcdStore({ endpoints: [etcd.endpoint], transport: { insecure: true } });
      clients.push(store);
      return store;
    };
    return {
      replicaStore: client,
      reopen: async () => {
        for (const c of clients.splice(0)) await c.close();
        await etcd.restart();
        return client();
      },
    };
  },
};

const hv1 = { hypervisorId: 'hv-1', vsockMode: 'direct' as const, relayPort: 0 };
const hv2 = { hypervisorId: 'hv-2', vsockMode: 'direct' as const, relayPort: 0 };
const web1 = vm({ vmId: 'web-1', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.11'], services: [{ name: 'web', port: 8080 }] });

/** `store` whose next `method` call first runs the change given to next() (once): what lands while a mutation is between its plan and its commit. */
function interrupted(store: Store, method: 'grantLease' | 'keepAlive'): { store: Store; next(change: () => Promise<void>): void; ran(): number } {
  let pending: (() => Promise<void>) | undefined;
  let ran = 0;
  const original = store[method].bind(store) as (arg: never) => Promise<never>;
  const call = async (arg: never): Promise<never> => {
    const change = pending;
    pending = undefined;
    if (change) {
      ran++;
      await change();
    }
    return original(arg);
  };
  return { store: wrapStore(store, { [method]: call }), next: (change) => (pending = change), ran: () => ran };
}

async function replica(t: ExecutionContext, store: Store): Promise<{ registryStore: RegistryStore; logs: LogCapture }> {
  const logs = new LogCapture();
  const registryStore = await RegistryStore.open({ store, logger: createLogger({ level: 'debug', destination: logs }) });
  t.teardown(() => registryStore.close());
  return { registryStore, logs };
}

for (const [kind, open] of Object.entries(kinds)) {
  // Without etcd (bash .ci/deps installs it) the etcd tests fail, saying so: they never skip.
  const registryTest = (title: string, body: (t: ExecutionContext, subject: Subject, stores: Store[]) => Promise<void>): void => {
    test(`${kind}: ${title}`, async (t) => {
      const subject = await open(t);
      const stores: Store[] = [];
      const replicaStore = (): Store => {
        const store = subject.replicaStore();
        if (!stores.includes(store)) stores.push(store);
        return store;
      };
      // Registries close first (their teardowns run before this one, registered earlier), then the stores.
      t.teardown(async () => {
        for (const store of stores) await store.close();
      });
      await body(t, { ...subject, replicaStore }, stores);
    });
  };

  registryTest('a change through one replica is seen by the other, at the store revision it was committed at, in the store epoch', async (t, subject) => {
    const a = (await replica(t, subject.replicaStore())).registryStore;
    const b = (await replica(t, subject.replicaStore())).registryStore;
    const store = subject.replicaStore();
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerHypervisor(hv2));
    const registered = await a.mutate((r) => r.registerVm(web1));
    t.like(a.registry.getVm('web-1'), { hypervisorId: 'hv-1', vsockCid: 3, generation: 1 }, 'visible on the replica that wrote it once answered');
    const record = await store.get(`${REGISTRY_PREFIX}vms/web-1`);
    t.is(a.registry.revision, record!.modRevision, "the registry's revision is the store's");
    t.is(registered.generation, 1);
    await waitFor(() => b.registry.revision >= a.registry.revision, 'replica b to see the registration', 10_000);
    t.deepEqual(b.registry.resolve('', { kind: 'service', name: 'web' }), a.registry.resolve('', { kind: 'service', name: 'web' }), 'the same Resolve answer from both');
    t.is(a.registry.epoch, await store.epoch());
    t.is(b.registry.epoch, a.registry.epoch);

    const seen: VmEvent[] = [];
    b.registry.subscribe((e) => seen.push(e));
    const moved = await a.mutate((r) => r.moveVm('web-1', 'hv-2', 4));
    await waitFor(() => seen.length >= 1, 'the move on replica b', 10_000);
    t.like(seen[0], { type: 'moved', vm: { vmId: 'web-1', hypervisorId: 'hv-2', vsockCid: 4, generation: 2 }, previous: { hypervisorId: 'hv-1', vsockCid: 3 }, revision: a.registry.revision });
    t.is(moved.generation, 2);
    await b.mutate((r) => r.deregisterVm('web-1'));
    t.is(b.registry.getVm('web-1'), undefined);
    await waitFor(() => a.registry.getVm('web-1') === undefined, 'the deregistration through b on a', 10_000);
    t.is(a.registry.revision, b.registry.revision);
  });

  registryTest('two replicas racing for one CID: exactly one wins, the other is refused naming the field, and both hold the winner', async (t, subject) => {
    const a = (await replica(t, subject.replicaStore())).registryStore;
    const b = (await replica(t, subject.replicaStore())).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await waitFor(() => b.registry.list().hypervisors.length === 1, 'the hypervisor on b', 10_000);
    const results = await Promise.allSettled([
      a.mutate((r) => r.registerVm(vm({ vmId: 'vm-a', hypervisorId: 'hv-1', vsockCid: 7, addresses: ['10.0.0.1'] }))),
      b.mutate((r) => r.registerVm(vm({ vmId: 'vm-b', hypervisorId: 'hv-1', vsockCid: 7, addresses: ['10.0.0.2'] }))),
    ]);
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one wins');
    const refused = results.find((r) => r.status === 'rejected')!;
    t.like(refused.reason, { code: 'INVALID_ARGUMENT' });
    t.regex((refused.reason as Error).message, /vsock_cid: 7 is already used by VM "vm-[ab]"/);
    const winner = results[0]!.status === 'fulfilled' ? 'vm-a' : 'vm-b';
    await waitFor(() => a.registry.revision === b.registry.revision, 'both replicas at one revision', 10_000);
    for (const r of [a, b]) t.deepEqual(r.registry.list().vms.map((v) => v.vmId), [winner]);
    t.is(a.commits.conflict + b.commits.conflict, 1, 'the loser planned again once, after a conflict');
  });

  registryTest('Watch resumes from a store revision across the revisions of other prefixes; a compacted revision is gone', async (t, subject) => {
    const store = subject.replicaStore();
    const a = (await replica(t, store)).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerVm(web1));
    const r1 = a.registry.revision;
    // The mesh (another prefix) moves the store's revision on.
    const mesh = await store.commit({ puts: [{ key: '/vsockmesh/mesh/services/web', value: '{}' }] });
    await a.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] })));
    const r2 = a.registry.revision;
    t.true(r2 > mesh.revision, 'the registration after the mesh change has a later store revision');
    for (const from of [r1, mesh.revision]) {
      t.deepEqual(
        a.registry.eventsSince(from)!.map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : ''}@${e.revision}`),
        [`added db-1@${r2}`],
        `from ${from}`,
      );
    }
    t.deepEqual(a.registry.eventsSince(r2), []);
    t.true(await a.hasHistoryAfter(r1));
    await store.compact(r2);
    t.false(await a.hasHistoryAfter(r1), 'compacted in the store: a Watch from it gets OUT_OF_RANGE');
    t.true(await a.hasHistoryAfter(r2));
  });

  registryTest('a Watch resumes on a replica from the revision another replica gave, ahead of it only by other prefixes\' writes: no OUT_OF_RANGE, no start over', async (t, subject) => {
    const store = subject.replicaStore();
    const a = (await replica(t, store)).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerVm(web1));
    // The mesh (another prefix) moves the store's revision on; a replica opened now starts there, the first stays where it was.
    const mesh = await store.commit({ puts: [{ key: '/vsockmesh/mesh/services/web', value: '{}' }] });
    const b = (await replica(t, subject.replicaStore())).registryStore;
    t.is(b.registry.revision, mesh.revision);
    t.true(a.registry.revision < b.registry.revision, 'the same registry, at two revisions');

    const server = new VmManagerServer({ registry: a.registry, registryStore: a, logger: createLogger({ level: 'silent' }), transport: { insecure: true } });
    const port = await server.start('127.0.0.1:0');
    t.teardown(() => server.stop());
    const client = new VmManagerClient(`127.0.0.1:${port}`, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
    t.teardown(() => client.close());
    // A follower that had b's registry (at b's revision) fails over to a.
    const seen: { open: boolean; events: VmEvent[]; error?: Error } = { open: false, events: [] };
    const watch = client.watch(b.registry.revision, { onOpen: () => (seen.open = true), onEvent: (e) => seen.events.push(e), onError: (err) => (seen.error = err) });
    t.teardown(() => watch.cancel());
    // Answered before anything changes (a change under the prefix would bring a up to it by itself).
    await waitFor(() => seen.open || seen.error !== undefined, 'the Watch on a answered', 10_000);
    t.is(seen.error, undefined, 'resumed, not refused');
    const db1 = await b.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] })));
    await waitFor(() => seen.events.length >= 1 || seen.error !== undefined, 'the registration through b on the Watch resumed on a', 10_000);
    t.is(seen.error, undefined);
    t.deepEqual(
      seen.events.map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : ''}@${e.revision}`),
      [`added db-1@${b.registry.revision}`],
      'exactly what came after the revision, not the whole registry again',
    );
    t.is(db1.generation, 1);
    t.is(a.registry.revision, b.registry.revision);
  });

  registryTest('a VM whose store lease is not renewed is removed on every replica; renewing it writes nothing', async (t, subject) => {
    const store = subject.replicaStore();
    const a = (await replica(t, store)).registryStore;
    const b = (await replica(t, subject.replicaStore())).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    // Renewed within its lease (60 s: on a loaded machine a 1 s lease could end before the renewal, which then rightly writes it again).
    const db1 = vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] });
    await a.mutate((r) => r.registerVm(db1, 60_000));
    const longKey = `${REGISTRY_PREFIX}vms/db-1`;
    const longWritten = await store.get(longKey);
    t.not(longWritten!.lease, '', 'put with a store lease');
    const renewed = await a.mutate((r) => r.registerVm(db1, 60_000));
    t.is(renewed.generation, 1, 'a renewal keeps the generation');
    t.is((await store.get(longKey))!.modRevision, longWritten!.modRevision, 'a renewal is a keep-alive, not a write');

    // Followed on b from before it is registered: a 1 s lease may end before b is looked at.
    const onB: VmEvent[] = [];
    b.registry.subscribe((e) => onB.push(e));
    const leased = await a.mutate((r) => r.registerVm(web1, 1_000));
    t.not(leased.leaseExpiresAt, null);
    const key = `${REGISTRY_PREFIX}vms/web-1`;
    const web1Events = (): string[] => onB.filter((e) => 'vm' in e && e.vm.vmId === 'web-1').map((e) => e.type);
    await waitFor(() => a.registry.getVm('web-1') === undefined && web1Events().includes('removed'), 'the lease to end on both replicas', 20_000);
    t.deepEqual(web1Events(), ['added', 'removed'], 'b had it, then lost it');
    t.is(b.registry.getVm('web-1'), undefined);
    t.is(await store.get(key), undefined);
    // Registered again after it ended: a new lease, and it is back on both.
    await a.mutate((r) => r.registerVm(web1));
    await waitFor(() => b.registry.getVm('web-1') !== undefined, 'the VM registered again, on b', 10_000);
    t.is((await store.get(key))!.lease, '', 'no lease asked for, none held');
  });

  registryTest('a lease that ends while a mutation is being written does not bring its VM back: the write is refused by compare-and-swap and planned again', async (t, subject) => {
    const store = subject.replicaStore();
    const interrupt = interrupted(store, 'grantLease');
    const a = (await replica(t, interrupt.store)).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerHypervisor(hv2));
    const db1 = vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] });
    await a.mutate((r) => r.registerVm(db1, 60_000));
    const dbKey = `${REGISTRY_PREFIX}vms/db-1`;
    const dbLease = (await store.get(dbKey))!.lease;
    interrupt.next(async () => {
      // What the store does to a lease that is not renewed, seen by the replica before the write goes out.
      await store.revokeLease(dbLease);
      await waitFor(() => a.registry.getVm('db-1') === undefined, "the lease's end on the replica", 10_000);
    });
    // One mutation of two keys: web-1's new lease is granted (db-1's ends meanwhile), then db-1 is moved as planned.
    const refused = await t.throwsAsync(
      a.mutate((r) => {
        r.registerVm(web1, 60_000);
        return r.moveVm('db-1', 'hv-2', 6);
      }),
    );
    t.like(refused, { code: 'NOT_FOUND' }, 'planned again without db-1: there is nothing to move');
    t.is(interrupt.ran(), 1, 'the lease ended inside the mutation');
    t.is(await store.get(dbKey), undefined, 'db-1 is not written again');
    t.is(a.registry.getVm('db-1'), undefined);
    t.is(await store.get(`${REGISTRY_PREFIX}vms/web-1`), undefined, 'nothing of the mutation applied');
    t.is(a.commits.conflict, 1, 'the write planned on db-1 lost to the delete');
  });

  registryTest('a renewal whose VM is deleted while its lease is kept alive does not bring it back into the registry only: it is registered again in the store', async (t, subject) => {
    const store = subject.replicaStore();
    const interrupt = interrupted(store, 'keepAlive');
    const a = (await replica(t, interrupt.store)).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    const db1 = vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] });
    await a.mutate((r) => r.registerVm(db1, 60_000));
    const dbKey = `${REGISTRY_PREFIX}vms/db-1`;
    interrupt.next(async () => {
      // Another replica deregisters it: the key goes first, its lease is revoked after (not yet).
      await store.commit({ deletes: [dbKey] });
      await waitFor(() => a.registry.getVm('db-1') === undefined, 'the deregistration on the replica', 10_000);
    });
    // A renewal moves the expiry: not in the very millisecond the registration was seen.
    const registeredAt = a.registry.getVm('db-1')!.leaseExpiresAt! - 60_000;
    await waitFor(() => Date.now() > registeredAt, 'the clock past the registration', 10_000);
    const renewed = await a.mutate((r) => r.registerVm(db1, 60_000));
    t.is(interrupt.ran(), 1, 'deleted inside the renewal');
    const stored = await store.get(dbKey);
    t.truthy(stored, 'the registration after the delete is in the store');
    t.like(a.registry.getVm('db-1'), { generation: renewed.generation });
    t.is(a.registry.revision, stored!.modRevision, 'the registry holds it as the store does, at its revision');
    t.is(a.commits.conflict, 1, 'the renewal planned on the deleted record was planned again');
  });

  registryTest('a hypervisor deleted in the store leaves every replica with the VMs on it (removed events, then hypervisor-removed; their records stay in the store); registered again, they are back', async (t, subject) => {
    const store = subject.replicaStore();
    const { registryStore: a, logs } = await replica(t, store);
    const b = (await replica(t, subject.replicaStore())).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerHypervisor(hv2));
    await a.mutate((r) => r.registerVm(web1));
    await a.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.21'], services: [{ name: 'web', port: 8080 }] })));
    await waitFor(() => b.registry.revision >= a.registry.revision, 'replica b to see the registrations', 10_000);
    const onB: VmEvent[] = [];
    b.registry.subscribe((e) => onB.push(e));

    // An operator (or a writer of another version) deletes the hypervisor's record.
    const deleted = await store.commit({ deletes: [`${REGISTRY_PREFIX}hypervisors/hv-1`] });
    for (const r of [a, b]) await waitFor(() => r.registry.revision >= deleted.revision, 'the delete on both replicas', 10_000);
    for (const r of [a, b]) {
      t.deepEqual(r.registry.list().hypervisors.map((h) => h.hypervisorId), ['hv-2'], 'the hypervisor is gone');
      t.deepEqual(r.registry.list().vms.map((v) => v.vmId), ['db-1'], 'with the VM on it');
      // No answer places web-1 on hv-1 any more: the service is db-1's alone.
      t.like(r.registry.resolve('', { kind: 'service', name: 'web' }), { found: true, vm: { vmId: 'db-1' } });
      t.false(r.registry.resolve('', { kind: 'vm', vmId: 'web-1' }).found);
    }
    t.deepEqual(onB.map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : e.hypervisor.hypervisorId}@${e.revision}`), [`removed web-1@${deleted.revision}`, `hypervisor-removed hv-1@${deleted.revision}`]);
    t.truthy(await store.get(`${REGISTRY_PREFIX}vms/web-1`), "the VM's record stays in the store");
    t.true(logs.withReason('hypervisor_deleted').some((l) => l.hypervisor_id === 'hv-1'));
    const opened = (await replica(t, subject.replicaStore())).registryStore;
    t.deepEqual(opened.registry.list(), a.registry.list(), 'a replica opened now holds the same registry');
    await t.throwsAsync(a.mutate((r) => r.moveVm('db-1', 'hv-1', 3)), { message: /unknown hypervisor "hv-1"/ });

    await b.mutate((r) => r.registerHypervisor(hv1));
    for (const r of [a, b, opened]) {
      await waitFor(() => r.registry.revision >= b.registry.revision, 'the hypervisor again on every replica', 10_000);
      t.deepEqual(r.registry.list().vms.map((v) => `${v.vmId}@${v.hypervisorId}`), ['db-1@hv-2', 'web-1@hv-1'], 'web-1 is back with it');
    }
    t.deepEqual(onB.slice(2).map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : 'hv-1'}@${e.revision}`), [`hypervisor hv-1@${b.registry.revision}`, `added web-1@${b.registry.revision}`]);
    // Its key is written as the store holds it: no conflict.
    await b.mutate((r) => r.moveVm('web-1', 'hv-2', 4));
    t.is(b.commits.conflict, 0);
  });

  registryTest("a control plane's mirror following a replica over Watch drops a hypervisor deleted in the store; a Watch resumed from before the delete carries it too", async (t, subject) => {
    const store = subject.replicaStore();
    const a = (await replica(t, store)).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerHypervisor(hv2));
    await a.mutate((r) => r.registerVm(web1));
    await a.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-2', vsockCid: 5, addresses: ['10.0.0.21'] })));
    const before = a.registry.revision;
    const serve = async (r: RegistryStore): Promise<string> => {
      const server = new VmManagerServer({ registry: r.registry, registryStore: r, logger: createLogger({ level: 'silent' }), transport: { insecure: true } });
      const port = await server.start('127.0.0.1:0');
      t.teardown(() => server.stop());
      return `127.0.0.1:${port}`;
    };
    const address = await serve(a);
    // The control plane's mirror of a VM manager elsewhere (control-plane --vm-manager), over a real client.
    const mirror = new RegistryMirror(new VmManagerClient(address, { defaultTimeoutMs: 10_000, transport: { insecure: true } }), address, () => undefined, createLogger({ level: 'silent' }));
    mirror.start();
    t.teardown(() => mirror.stop());
    const held = (): string => `${mirror.state().hypervisors.map((h) => h.hypervisorId).sort().join(',')} | ${mirror.state().vms.map((v) => v.vmId).sort().join(',')}`;
    await waitFor(() => held() === 'hv-1,hv-2 | db-1,web-1', 'the mirror to hold the registry', 10_000);

    const deleted = await store.commit({ deletes: [`${REGISTRY_PREFIX}hypervisors/hv-1`] });
    await waitFor(() => held() === 'hv-2 | db-1', `the mirror without hv-1 and its VM (holds ${held()})`, 10_000);
    t.is(held(), 'hv-2 | db-1');

    /** The events of a Watch from `from` on `at` until one at `until` (or its error). */
    const watchFrom = async (at: string, from: number, until: number): Promise<{ events: string[]; error?: Error }> => {
      const client = new VmManagerClient(at, { defaultTimeoutMs: 10_000, transport: { insecure: true } });
      t.teardown(() => client.close());
      const seen: { events: VmEvent[]; error?: Error } = { events: [] };
      const watch = client.watch(from, { onEvent: (e) => seen.events.push(e), onError: (err) => (seen.error = err) }, a.registry.epoch);
      t.teardown(() => watch.cancel());
      await waitFor(() => seen.error !== undefined || seen.events.some((e) => e.revision >= until), `the Watch from ${from} to reach ${until}`, 10_000);
      return { events: seen.events.map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : e.hypervisor.hypervisorId}@${e.revision}`), ...(seen.error && { error: seen.error }) };
    };
    // Resumed on the replica that saw the delete: from its event log.
    t.deepEqual(await watchFrom(address, before, deleted.revision), { events: [`removed web-1@${deleted.revision}`, `hypervisor-removed hv-1@${deleted.revision}`] });
    // Resumed on a replica opened since (a follower failing over): the difference from the registry the store held then (etcd), else OUT_OF_RANGE (start over from the whole registry, which has no hv-1).
    const b = (await replica(t, subject.replicaStore())).registryStore;
    const resumed = await watchFrom(await serve(b), before, b.registry.revision);
    if (kind === 'etcd') t.deepEqual(resumed, { events: [`removed web-1@${b.registry.revision}`, `hypervisor-removed hv-1@${b.registry.revision}`] });
    else t.like(resumed, { events: [], error: { code: 'OUT_OF_RANGE' } });
  });

  registryTest('pastRegistry: the registry as it was at a revision where the store keeps past states (etcd), else OUT_OF_RANGE; eventsFrom it: the difference', async (t, subject) => {
    const a = (await replica(t, subject.replicaStore())).registryStore;
    await a.mutate((r) => r.registerHypervisor(hv1));
    await a.mutate((r) => r.registerHypervisor(hv2));
    await a.mutate((r) => r.registerVm(web1));
    const then = a.registry.revision;
    await a.mutate((r) => r.moveVm('web-1', 'hv-2', 4));
    await a.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] })));
    const current = await a.pastRegistry(a.registry.revision);
    t.deepEqual(current.list(), a.registry.list(), 'at the current revision: the registry');
    if (kind !== 'etcd') {
      const refused = await t.throwsAsync(a.pastRegistry(then));
      t.like(refused, { code: 'OUT_OF_RANGE' });
      return;
    }
    const past = await a.pastRegistry(then);
    t.deepEqual(past.list().vms.map((v) => `${v.vmId}@${v.hypervisorId}/${v.vsockCid}`), ['web-1@hv-1/3']);
    t.deepEqual(
      a.registry.eventsFrom(past).map((e) => `${e.type} ${'vm' in e ? e.vm.vmId : ''}@${e.revision}`),
      [`added db-1@${a.registry.revision}`, `moved web-1@${a.registry.revision}`],
      'in vmId order, at the current revision',
    );
  });

  registryTest('a record another writer left invalid is logged and left out; the rest is served and its key can be written again', async (t, subject) => {
    const store = subject.replicaStore();
    const { registryStore: a, logs } = await replica(t, store);
    await a.mutate((r) => r.registerHypervisor(hv1));
    await store.commit({ puts: [{ key: `${REGISTRY_PREFIX}vms/web-1`, value: '{"vmId":"web-1","vsockCid":"three"}' }] });
    await a.mutate((r) => r.registerVm(vm({ vmId: 'db-1', hypervisorId: 'hv-1', vsockCid: 5, addresses: ['10.0.0.21'] })));
    t.is(a.registry.getVm('web-1'), undefined);
    t.truthy(a.registry.getVm('db-1'));
    t.true(logs.withReason('invalid_registry_record_in_store').some((l) => l.key === `${REGISTRY_PREFIX}vms/web-1`));
    await a.mutate((r) => r.registerVm(web1));
    t.like(a.registry.getVm('web-1'), { vsockCid: 3 }, 'the invalid record is replaced');
  });

  if (kind !== 'memory') {
    registryTest('a restart keeps every VM, the revision and the epoch', async (t, subject) => {
      const a = (await replica(t, subject.replicaStore())).registryStore;
      await a.mutate((r) => r.registerHypervisor(hv1));
      await a.mutate((r) => r.registerVm(web1));
      const before = { ...a.registry.list(), epoch: a.registry.epoch };
      await a.close();
      const again = await subject.reopen!();
      t.teardown(() => again.close());
      const b = await waitForOpen(again);
      t.teardown(() => b.close());
      t.deepEqual({ ...b.registry.list(), epoch: b.registry.epoch }, before);
    });
  }
}

/** The registry on a store just restarted (etcd may take a moment to answer). */
async function waitForOpen(store: Store): Promise<RegistryStore> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await RegistryStore.open({ store, logger: createLogger({ level: 'silent' }) });
    } catch (err) {
      if (attempt >= 40 || (err as { code?: string }).code !== 'UNAVAILABLE') throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}
