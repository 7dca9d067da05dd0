import test from 'ava';
import { METHODS } from '../../xds/security/authorize.js';
import { requestFacts } from '../../xds/security/request-facts.js';

const where = (id: string): string | null => ({ 'vm-a': 'hv-1', 'vm-c': 'hv-2' })[id] ?? null;

test('ADS: the node id of the request, on both stream kinds; none named is ""', (t) => {
  t.deepEqual(requestFacts(METHODS.streamAggregatedResources, { node: { id: 'vm-b' }, type_url: 'x' }, where), { nodeId: 'vm-b' });
  t.deepEqual(requestFacts(METHODS.deltaAggregatedResources, { node: null }, where), { nodeId: '' });
  t.deepEqual(requestFacts(METHODS.streamAggregatedResources, {}, where), { nodeId: '' });
});

test('VM mutations: the target hypervisor and where the registry has the VM now', (t) => {
  t.deepEqual(requestFacts(METHODS.registerVm, { vm: { vm_id: 'vm-c', hypervisor_id: 'hv-1' } }, where), { hypervisorId: 'hv-1', vmHypervisor: 'hv-2' });
  t.deepEqual(requestFacts(METHODS.registerVm, { vm: { vm_id: 'new', hypervisor_id: 'hv-1' } }, where), { hypervisorId: 'hv-1', vmHypervisor: null });
  t.deepEqual(requestFacts(METHODS.registerVm, { vm: null }, where), { hypervisorId: '', vmHypervisor: null });
  t.deepEqual(requestFacts(METHODS.moveVm, { vm_id: 'vm-a', hypervisor_id: 'hv-2' }, where), { hypervisorId: 'hv-2', vmHypervisor: 'hv-1' });
  t.deepEqual(requestFacts(METHODS.deregisterVm, { vm_id: 'vm-a' }, where), { vmHypervisor: 'hv-1' });
});

test('CertifyAttested: where the registry has the VM the host agent attested', (t) => {
  t.deepEqual(requestFacts(METHODS.certifyAttested, { csr: 'x', vm_id: 'vm-c', cid: 5 }, where), { vmHypervisor: 'hv-2' });
  t.deepEqual(requestFacts(METHODS.certifyAttested, { csr: 'x', vm_id: 'nobody', cid: 5 }, where), { vmHypervisor: null });
  t.deepEqual(requestFacts(METHODS.certifyAttested, {}, where), { vmHypervisor: null });
});

test('hypervisor-scoped calls name their hypervisor; Resolve its caller; other methods need nothing', (t) => {
  t.deepEqual(requestFacts(METHODS.registerHypervisor, { hypervisor: { hypervisor_id: 'hv-9' } }, where), { hypervisorId: 'hv-9' });
  t.deepEqual(requestFacts(METHODS.authorizeRelay, { hypervisor_id: 'hv-1', source_cid: 3 }, where), { hypervisorId: 'hv-1' });
  t.deepEqual(requestFacts(METHODS.resolve, { caller_vm_id: 'vm-a', vm_id: 'vm-b' }, where), { callerVmId: 'vm-a' });
  t.deepEqual(requestFacts(METHODS.putRoute, { name: 'r' }, where), {});
  // A field of the wrong type reads as empty, never as a match.
  t.deepEqual(requestFacts(METHODS.resolve, { caller_vm_id: 7 }, where), { callerVmId: '' });
});
