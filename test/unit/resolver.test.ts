// The resolver's cache against the real registry in process (no gRPC): what
// it asks, what it remembers, and how Watch events change what it remembers.

import test from 'ava';
import { VsockmeshError } from '../../proxy/runtime/errors.js';
import { silentLogger } from '../../proxy/runtime/log.js';
import { Resolver } from '../../proxy/resolve/resolver.js';
import { waitFor } from '../helpers/apps.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import type { Destination, VmEvent, VmManagerApi, VmRecord, WatchHandlers } from '../../proxy/resolve/types.js';

/** The registry as the resolver sees the VM manager, with a count of Resolve calls and a switch to make it unreachable. */
function inProcess(registry: Registry) {
  const state = { resolves: 0, down: false, watchers: 0, watchedFrom: [] as number[], endWatch: (_err: Error): void => undefined };
  const api: VmManagerApi = {
    registerVm: async (vm, ttl) => registry.registerVm(vm, ttl),
    deregisterVm: async (id) => void registry.deregisterVm(id),
    getVm: async (id) => registry.getVm(id),
    listVms: async () => registry.list(),
    registerHypervisor: async (h) => registry.registerHypervisor(h),
    moveVm: async (id, hv, cid) => registry.moveVm(id, hv, cid),
    authorizeRelay: async (request) => registry.authorizeRelay(request),
    resolve: async (caller: string, destination: Destination) => {
      state.resolves++;
      if (state.down) throw new VsockmeshError('UNAVAILABLE', 'down');
      return registry.resolve(caller, destination);
    },
    watch: (from: number, handlers: WatchHandlers) => {
      state.watchers++;
      state.watchedFrom.push(from);
      const backlog = from === 0 ? registry.snapshotEvents() : (registry.eventsSince(from) ?? []);
      const unsubscribe = registry.subscribe((e: VmEvent) => handlers.onEvent(e));
      // The stream fails as the VM manager would end it: no more events, then the error.
      state.endWatch = (err) => {
        unsubscribe();
        handlers.onError(err);
      };
      handlers.onOpen?.(registry.epoch);
      for (const e of backlog) handlers.onEvent(e);
      return { cancel: unsubscribe };
    },
    close: () => undefined,
  };
  return { api, state };
}

function setup() {
  let now = 1_000_000;
  const registry = new Registry({ resolveTtlMs: 10_000, now: () => now });
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'host-relay', relayPort: 15100 });
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 });
  const vm = (vmId: string, hypervisorId: string, cid: number, ip: string): Omit<VmRecord, 'generation' | 'leaseExpiresAt'> => ({
    vmId,
    hypervisorId,
    vsockCid: cid,
    addresses: [ip],
    sidecar: { tcpPort: 15006, vsockPort: 15006 },
    services: [],
    labels: {},
  });
  registry.registerVm(vm('me', 'hv-1', 3, '10.0.0.1'));
  registry.registerVm(vm('peer', 'hv-1', 4, '10.0.0.2'));
  const { api, state } = inProcess(registry);
  const resolver = new Resolver({ api, localVmId: 'me', queryTimeoutMs: 100, negativeTtlMs: 5_000, logger: silentLogger(), now: () => now });
  return { registry, resolver, state, vm, advance: (ms: number) => (now += ms) };
}

test('an answer is cached for its TTL, then asked again', async (t) => {
  const { resolver, state, advance } = setup();
  const dest = { kind: 'vm', vmId: 'peer' } as const;
  t.is(resolver.lookup(dest), undefined);
  const outcome = await resolver.resolve(dest);
  t.like(outcome, { kind: 'resolved', resolution: { found: true, sameHypervisor: true } });
  t.like(resolver.lookup(dest), { vm: { vmId: 'peer' } });
  t.is(resolver.counters.cacheHits, 1);
  advance(10_001);
  t.is(resolver.lookup(dest), undefined, 'expired');
  await resolver.resolve(dest);
  t.is(state.resolves, 2);
  t.is(resolver.local()?.vmId, 'me', 'the answer also told us who we are');
});

test('simultaneous resolves of one destination share one query; different destinations do not', async (t) => {
  const { resolver, state } = setup();
  const results = await Promise.all([...Array.from({ length: 50 }, () => resolver.resolve({ kind: 'ip', ip: '10.0.0.2' })), resolver.resolve({ kind: 'vm', vmId: 'peer' })]);
  t.is(state.resolves, 2);
  t.true(results.every((r) => r.kind === 'resolved' && r.resolution.vm?.vmId === 'peer'));
});

test('an unknown destination is remembered for the negative TTL, and forgotten as soon as a VM appears', async (t) => {
  const { registry, resolver, state, vm, advance } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  const dest = { kind: 'ip', ip: '10.0.0.9' } as const;
  t.like(await resolver.resolve(dest), { kind: 'resolved', resolution: { found: false } });
  t.like(resolver.lookup(dest), { found: false });
  advance(4_000);
  t.like(resolver.lookup(dest), { found: false }, 'still within the negative TTL');
  registry.registerVm(vm('late', 'hv-2', 3, '10.0.0.9'));
  t.is(resolver.lookup(dest), undefined, 'the added VM dropped the negative answer');
  t.like(await resolver.resolve(dest), { resolution: { found: true, vm: { vmId: 'late' }, sameHypervisor: false } });
  t.is(state.resolves, 2);
});

test('a moved destination changes every cached answer naming it and emits moved; a removed one drops them', async (t) => {
  const { registry, resolver } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  await resolver.resolve({ kind: 'vm', vmId: 'peer' });
  await resolver.resolve({ kind: 'ip_port', ip: '10.0.0.2', port: 80 });
  const moved: Array<[string, string]> = [];
  resolver.on('moved', (vm: VmRecord, previous: VmRecord) => moved.push([previous.hypervisorId, vm.hypervisorId]));
  registry.moveVm('peer', 'hv-2', 9);
  t.deepEqual(moved, [['hv-1', 'hv-2']]);
  for (const d of [{ kind: 'vm', vmId: 'peer' } as const, { kind: 'ip_port', ip: '10.0.0.2', port: 80 } as const]) {
    t.like(resolver.lookup(d), { sameHypervisor: false, vm: { hypervisorId: 'hv-2', vsockCid: 9 }, hypervisor: { vsockMode: 'direct' } });
  }
  registry.deregisterVm('peer');
  t.is(resolver.lookup({ kind: 'vm', vmId: 'peer' }), undefined);
  t.is(resolver.lookup({ kind: 'ip_port', ip: '10.0.0.2', port: 80 }), undefined);
});

test("a hypervisor deleted in the registry's store leaves the resolver's hypervisors, with the answers naming its VMs; registered again, it is back", async (t) => {
  const { registry, resolver } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  await waitFor(() => resolver.hypervisor('hv-2') !== undefined, 'the snapshot');
  await resolver.resolve({ kind: 'vm', vmId: 'peer' });
  t.like(resolver.hypervisor('hv-1'), { vsockMode: 'host-relay' });
  registry.removeStoredHypervisor('hv-1', registry.revision + 1);
  t.is(resolver.hypervisor('hv-1'), undefined, 'gone, not kept as last told');
  t.like(resolver.hypervisor('hv-2'), { vsockMode: 'direct' }, 'the other stays');
  t.is(resolver.lookup({ kind: 'vm', vmId: 'peer' }), undefined, "the answer naming its VM is dropped (by that VM's removed event)");
  t.is(resolver.local(), null, 'this VM was on it: no record of its own any more');
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  t.like(resolver.hypervisor('hv-1'), { vsockMode: 'direct' });
});

test('when this VM moves, every answer is recomputed relative to the new placement and local-moved fires', async (t) => {
  const { registry, resolver } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  await resolver.resolve({ kind: 'vm', vmId: 'peer' });
  let localMoved = 0;
  resolver.on('local-moved', () => localMoved++);
  registry.moveVm('me', 'hv-2', 5);
  t.is(localMoved, 1);
  t.like(resolver.lookup({ kind: 'vm', vmId: 'peer' }), { sameHypervisor: false, caller: { hypervisorId: 'hv-2' } });
  registry.moveVm('me', 'hv-1', 3);
  t.like(resolver.lookup({ kind: 'vm', vmId: 'peer' }), { sameHypervisor: true });
});

test('a VM manager that cannot answer: "unavailable" (not cached), counted, and reachable again after one success', async (t) => {
  const { resolver, state } = setup();
  state.down = true;
  t.like(await resolver.resolve({ kind: 'vm', vmId: 'peer' }), { kind: 'unavailable', code: 'UNAVAILABLE' });
  t.true(resolver.vmManagerDown);
  t.is(resolver.counters.vmManagerUp, 0);
  t.is(resolver.lookup({ kind: 'vm', vmId: 'peer' }), undefined);
  state.down = false;
  t.like(await resolver.resolve({ kind: 'vm', vmId: 'peer' }), { kind: 'resolved' });
  t.false(resolver.vmManagerDown);
  t.deepEqual(resolver.counters.queries, { found: 1, not_found: 0, unavailable: 1 });
});

test('expired answers are swept once the cache is large, so cold destinations do not grow it forever', async (t) => {
  const { resolver, advance } = setup();
  for (let i = 0; i < 10_000; i++) await resolver.resolve({ kind: 'ip_port', ip: '192.0.2.1', port: i + 1 });
  advance(6_000); // past the negative TTL
  await resolver.resolve({ kind: 'ip_port', ip: '192.0.2.1', port: 60_000 });
  const size = (resolver as unknown as { cache: { size: number } }).cache.size;
  t.is(size, 1);
});

test('an answer that leaves the cache leaves its index entries too (no index grows with VMs seen once)', async (t) => {
  const { registry, resolver, vm, advance } = setup();
  for (let i = 0; i < 50; i++) registry.registerVm(vm(`vm-${i}`, 'hv-2', 100 + i, `10.0.1.${i}`));
  for (let i = 0; i < 50; i++) await resolver.resolve({ kind: 'vm', vmId: `vm-${i}` });
  await resolver.resolve({ kind: 'ip', ip: '10.0.9.9' });
  const internals = resolver as unknown as { byVm: Map<string, Set<string>>; negative: Set<string>; cache: { size: number } };
  t.is(internals.byVm.size, 50);
  t.is(internals.negative.size, 1);
  advance(10_001);
  for (let i = 0; i < 50; i++) t.is(resolver.lookup({ kind: 'vm', vmId: `vm-${i}` }), undefined);
  t.is(resolver.lookup({ kind: 'ip', ip: '10.0.9.9' }), undefined);
  t.is(internals.cache.size, 0, 'expired answers are dropped when read');
  t.is(internals.byVm.size, 0, 'and the VM index with them');
  t.is(internals.negative.size, 0);
});

test('OUT_OF_RANGE: the resolver watches again from the start at once, and a change it missed reaches its cache', async (t) => {
  const { registry, resolver, state } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  await resolver.resolve({ kind: 'vm', vmId: 'peer' });
  t.deepEqual(state.watchedFrom, [0]);
  const revision = registry.revision;
  state.endWatch(new VsockmeshError('OUT_OF_RANGE', `revision ${revision} is no longer kept`));
  // Missed: made while no stream was open.
  registry.moveVm('peer', 'hv-2', 9);
  t.like(resolver.lookup({ kind: 'vm', vmId: 'peer' }), { vm: { hypervisorId: 'hv-1' } }, 'not seen yet');
  await waitFor(() => state.watchers === 2, 'the second watch', 30_000);
  t.deepEqual(state.watchedFrom, [0, 0], 'from the start, not from the revision it had');
  t.like(resolver.lookup({ kind: 'vm', vmId: 'peer' }), { sameHypervisor: false, vm: { hypervisorId: 'hv-2', vsockCid: 9 } });
});

test('OUT_OF_RANGE: a hypervisor removed while the stream could not resume leaves the resolver with the new snapshot; the last known serve until it comes', async (t) => {
  const { registry, resolver, state } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  await waitFor(() => resolver.hypervisor('hv-2') !== undefined, 'the snapshot');
  state.endWatch(new VsockmeshError('OUT_OF_RANGE', `revision ${registry.revision} is no longer kept`));
  // Missed: made while no stream was open (hv-2 holds no VM, so no removed event names it either).
  registry.removeStoredHypervisor('hv-2', registry.revision + 1);
  t.like(resolver.hypervisor('hv-2'), { vsockMode: 'direct' }, 'not seen yet');
  t.like(resolver.hypervisor('hv-1'), { vsockMode: 'host-relay' }, 'the last known serve while no stream is open');
  await waitFor(() => state.watchers === 2, 'the second watch', 30_000);
  t.deepEqual(state.watchedFrom, [0, 0]);
  t.is(resolver.hypervisor('hv-2'), undefined, 'not in the registry the new stream sent');
  t.like(resolver.hypervisor('hv-1'), { vsockMode: 'host-relay' }, 'the one that is stays');
  registry.registerHypervisor({ hypervisorId: 'hv-2', vsockMode: 'direct', relayPort: 0 });
  t.like(resolver.hypervisor('hv-2'), { vsockMode: 'direct' }, 'registered again: back');
});

test('any other end of the stream: the resolver resumes after the last revision it saw', async (t) => {
  const { registry, resolver, state } = setup();
  resolver.start();
  t.teardown(() => resolver.stop());
  registry.moveVm('peer', 'hv-2', 9);
  const seen = registry.revision;
  state.endWatch(new VsockmeshError('UNAVAILABLE', 'watch stream ended by the VM manager'));
  await waitFor(() => state.watchers === 2, 'the second watch', 30_000);
  t.deepEqual(state.watchedFrom, [0, seen]);
});
