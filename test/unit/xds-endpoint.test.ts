// How a sidecar reaches an xDS endpoint, from the VM facts the control plane
// sends and its own placement: every branch.

import test from 'ava';
import { endpointConfig } from '../../proxy/dynamic/applier.js';
import type { XdsEndpointVm } from '../../proxy/dynamic/types.js';

const vm = (over: Partial<XdsEndpointVm> = {}): XdsEndpointVm => ({ vmId: 'b', hypervisorId: 'hv-1', vsockCid: 4, vsockPort: 15007, tcpPort: 15006, vsockMode: 'host-relay', relayPort: 15100, ...over });
const here = { vmId: 'a', hypervisorId: 'hv-1' };

test('no VM facts: straight to the app', (t) => {
  t.deepEqual(endpointConfig({ address: '10.0.0.9', port: 80 }, here), { address: '10.0.0.9', port: 80 });
});

test('same hypervisor, host-relay mode: vsock through the relay on CID 2, TCP to the sidecar as fallback', (t) => {
  t.deepEqual(endpointConfig({ address: '10.0.0.4', port: 80, vm: vm() }, here), {
    address: '10.0.0.4',
    port: 80,
    vmId: 'b',
    peer: { address: '10.0.0.4', port: 15006 },
    vsock: { mode: 'host-relay', cid: 4, port: 15007, relay: { cid: 2, port: 15100 } },
  });
});

test('same hypervisor, direct and loopback modes: vsock straight to the CID', (t) => {
  for (const mode of ['direct', 'loopback'] as const) {
    t.like(endpointConfig({ address: '10.0.0.4', port: 80, vm: vm({ vsockMode: mode }) }, here), { vsock: { mode: 'direct', cid: 4, port: 15007 } }, mode);
  }
});

test('other hypervisor, unknown placement, or our own VM: TCP to its sidecar, no vsock', (t) => {
  for (const [what, local, facts] of [
    ['other hypervisor', here, vm({ hypervisorId: 'hv-2' })],
    ['placement unknown', null, vm()],
    ['the endpoint is this VM', { vmId: 'b', hypervisorId: 'hv-1' }, vm()],
  ] as const) {
    const e = endpointConfig({ address: '10.0.0.4', port: 80, vm: facts }, local);
    t.deepEqual(e.peer, { address: '10.0.0.4', port: 15006 }, what);
    t.is(e.vsock, undefined, what);
  }
});

test('a VM without a vsock inbound, or without a sidecar at all', (t) => {
  t.deepEqual(endpointConfig({ address: '10.0.0.4', port: 80, vm: vm({ vsockPort: 0 }) }, here), { address: '10.0.0.4', port: 80, vmId: 'b', peer: { address: '10.0.0.4', port: 15006 } });
  t.deepEqual(endpointConfig({ address: '10.0.0.4', port: 80, vm: vm({ vsockPort: 0, tcpPort: 0 }) }, here), { address: '10.0.0.4', port: 80, vmId: 'b' });
  t.like(endpointConfig({ address: '10.0.0.4', port: 80, vm: vm({ tcpPort: 0 }) }, here), { vsock: { cid: 4 } }, 'vsock only, no TCP fallback');
});
