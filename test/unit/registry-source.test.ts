// Where the control plane reads the VM registry from: the in-process
// registry, or a mirror of a remote VM manager kept by its Watch stream
// (driven here by hand, as the WatchFollower sees it).

import test from 'ava';
import { LocalRegistry, RegistryMirror } from '../../xds/control-plane/registry-source.js';
import { Registry } from '../../xds/vm-manager/registry.js';
import type { VmEvent, VmRecord, WatchHandlers } from '../../proxy/resolve/types.js';
import { createLogger } from '../../proxy/runtime/log.js';
import { LogCapture } from '../helpers/log-capture.js';

const vm = (vmId: string, vsockCid = 3): VmRecord => ({
  vmId,
  hypervisorId: 'hv-1',
  vsockCid,
  addresses: ['10.0.0.1'],
  sidecar: null,
  services: [],
  labels: {},
  generation: 1,
  leaseExpiresAt: null,
});

test('the local registry: told of every change, its state made once per revision', (t) => {
  const registry = new Registry();
  let changes = 0;
  const source = new LocalRegistry(registry, () => changes++);
  registry.registerHypervisor({ hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 });
  registry.registerVm({ vmId: 'a', hypervisorId: 'hv-1', vsockCid: 3, addresses: ['10.0.0.1'], sidecar: null, services: [], labels: {} });
  t.is(changes, 2);
  const s1 = source.state();
  t.deepEqual([s1.vms.map((v) => v.vmId), s1.hypervisors.map((h) => h.hypervisorId), [...s1.byId.keys()]], [['a'], ['hv-1'], ['a']]);
  t.is(source.state(), s1, 'the same revision: the same state');
  registry.deregisterVm('a');
  t.not(source.state(), s1);
  t.is(source.state().byId.size, 0);
  t.is(source.where, 'in process');
  source.stop();
  registry.registerVm({ vmId: 'b', hypervisorId: 'hv-1', vsockCid: 4, addresses: ['10.0.0.2'], sidecar: null, services: [], labels: {} });
  t.is(changes, 3, 'stopped: no longer told');
});

function fakeApi() {
  const streams: Array<{ from: number; epoch: string; handlers: WatchHandlers; cancelled: boolean }> = [];
  let closed = false;
  return {
    streams,
    get closed() {
      return closed;
    },
    watch(from: number, handlers: WatchHandlers, epoch = '') {
      const s = { from, epoch, handlers, cancelled: false };
      streams.push(s);
      return { cancel: () => (s.cancelled = true) };
    },
    close() {
      closed = true;
    },
  };
}

test('the mirror: VMs and hypervisors from the Watch events; a new epoch starts over; a stream that ends is logged as a warning; stop closes the client', async (t) => {
  const api = fakeApi();
  const logs = new LogCapture();
  let changes = 0;
  const mirror = new RegistryMirror(api, '10.0.0.9:15300', () => changes++, createLogger({ level: 'info', destination: logs }));
  mirror.start();
  t.is(mirror.where, '10.0.0.9:15300');
  const stream = api.streams[0]!;
  stream.handlers.onOpen!('e1');
  const events: VmEvent[] = [
    { type: 'hypervisor', revision: 1, hypervisor: { hypervisorId: 'hv-1', vsockMode: 'direct', relayPort: 0 } },
    { type: 'added', revision: 2, vm: vm('a') },
    { type: 'added', revision: 3, vm: vm('b') },
    { type: 'moved', revision: 4, vm: vm('a', 7), previous: vm('a') },
    { type: 'removed', revision: 5, vm: vm('b') },
  ];
  for (const e of events) stream.handlers.onEvent(e);
  t.is(changes, 5);
  const state = mirror.state();
  t.deepEqual([state.vms.map((v) => [v.vmId, v.vsockCid]), state.hypervisors.map((h) => h.hypervisorId)], [[['a', 7]], ['hv-1']]);
  t.is(mirror.state(), state, 'made once per change');
  t.is(state.byId.get('a')?.vsockCid, 7);

  // The VM manager restarted without its state: another epoch, the whole registry follows.
  stream.handlers.onOpen!('e2');
  t.is(mirror.state().vms.length, 0);
  stream.handlers.onEvent({ type: 'added', revision: 1, vm: vm('c') });
  t.deepEqual(mirror.state().vms.map((v) => v.vmId), ['c']);

  stream.handlers.onError(Object.assign(new Error('connection refused'), { code: 'UNAVAILABLE' }));
  t.like(logs.withReason('vm_manager_watch')[0], { level: 'warn', error: 'connection refused', vm_manager: '10.0.0.9:15300' });
  t.deepEqual(mirror.state().vms.map((v) => v.vmId), ['c'], 'the last known VMs are served meanwhile');
  mirror.stop();
  t.true(api.closed);
});

test('the mirror: a hypervisor-removed event drops the hypervisor (after its VMs); a hypervisor event for it again brings it back', (t) => {
  const api = fakeApi();
  let changes = 0;
  const mirror = new RegistryMirror(api, '10.0.0.9:15300', () => changes++, createLogger({ level: 'silent' }));
  mirror.start();
  const stream = api.streams[0]!;
  const hv1 = { hypervisorId: 'hv-1', vsockMode: 'direct' as const, relayPort: 0 };
  const hv2 = { hypervisorId: 'hv-2', vsockMode: 'direct' as const, relayPort: 0 };
  stream.handlers.onEvent({ type: 'hypervisor', revision: 1, hypervisor: hv1 });
  stream.handlers.onEvent({ type: 'hypervisor', revision: 2, hypervisor: hv2 });
  stream.handlers.onEvent({ type: 'added', revision: 3, vm: vm('a') });
  const before = mirror.state();
  stream.handlers.onEvent({ type: 'removed', revision: 4, vm: vm('a') });
  stream.handlers.onEvent({ type: 'hypervisor-removed', revision: 4, hypervisor: hv1 });
  t.is(changes, 5);
  t.not(mirror.state(), before, 'a new state');
  t.deepEqual([mirror.state().vms, mirror.state().hypervisors.map((h) => h.hypervisorId)], [[], ['hv-2']], 'hv-1 is gone, not kept with no VM on it');
  stream.handlers.onEvent({ type: 'hypervisor-removed', revision: 5, hypervisor: hv1 });
  t.deepEqual(mirror.state().hypervisors.map((h) => h.hypervisorId), ['hv-2'], 'removed again (a resumed stream): still gone');
  stream.handlers.onEvent({ type: 'hypervisor', revision: 6, hypervisor: hv1 });
  t.deepEqual(mirror.state().hypervisors.map((h) => h.hypervisorId), ['hv-2', 'hv-1'], 'registered again: back');
  mirror.stop();
});
