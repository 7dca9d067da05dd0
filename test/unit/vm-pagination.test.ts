// ListVms pages over the registry: hypervisors then VMs by id, bounded by a
// count, resumed from a token that names the last item sent, so changes
// between pages never make one repeat or skip an item that stayed.

import test from 'ava';
import { decodePageToken, encodePageToken, listPage } from '../../xds/vm-manager/pagination.js';
import { Registry } from '../../xds/vm-manager/registry.js';

function registry(vms: number): Registry {
  const r = new Registry();
  for (const id of ['hv-b', 'hv-a']) r.registerHypervisor({ hypervisorId: id, vsockMode: 'direct', relayPort: 0 });
  for (let i = vms - 1; i >= 0; i--) r.registerVm({ vmId: `vm-${String(i).padStart(3, '0')}`, hypervisorId: 'hv-a', vsockCid: 3 + i, addresses: [`10.0.${i >> 8}.${i & 255}`], sidecar: null, services: [], labels: {} });
  return r;
}

const names = (page: ReturnType<typeof listPage>): string[] => [...page.hypervisors.map((h) => h.hypervisorId), ...page.vms.map((v) => v.vmId)];

test('pages: hypervisors then VMs, each by id, page_size at a time, the last page without a token', (t) => {
  const r = registry(5);
  const first = listPage(r, { pageSize: 3, pageToken: '' });
  t.deepEqual(names(first), ['hv-a', 'hv-b', 'vm-000']);
  const second = listPage(r, { pageSize: 3, pageToken: first.nextPageToken });
  t.deepEqual(names(second), ['vm-001', 'vm-002', 'vm-003']);
  const last = listPage(r, { pageSize: 3, pageToken: second.nextPageToken });
  t.deepEqual(names(last), ['vm-004']);
  t.is(last.nextPageToken, '');
  t.is(first.revision, r.revision);
  t.deepEqual(names(listPage(r, { pageSize: 0, pageToken: '' })).length, 7, 'page_size 0: the default (500)');
});

test('a token resumes after the item it names, whatever changed between the pages', (t) => {
  const r = registry(6);
  const first = listPage(r, { pageSize: 4, pageToken: '' });
  t.deepEqual(names(first), ['hv-a', 'hv-b', 'vm-000', 'vm-001']);
  r.deregisterVm('vm-001'); // the item the token names
  r.deregisterVm('vm-003');
  r.registerVm({ vmId: 'vm-000a', hypervisorId: 'hv-a', vsockCid: 100, addresses: ['10.1.0.1'], sidecar: null, services: [], labels: {} }); // before the token: not on later pages
  r.registerVm({ vmId: 'vm-009', hypervisorId: 'hv-a', vsockCid: 101, addresses: ['10.1.0.2'], sidecar: null, services: [], labels: {} });
  const rest = listPage(r, { pageSize: 100, pageToken: first.nextPageToken });
  t.deepEqual(names(rest), ['vm-002', 'vm-004', 'vm-005', 'vm-009']);
  t.true(rest.revision > first.revision, 'each page says which revision it reflects');
});

test('a token in the hypervisors continues with the rest of them, then the VMs', (t) => {
  const r = registry(1);
  const first = listPage(r, { pageSize: 1, pageToken: '' });
  t.deepEqual(names(first), ['hv-a']);
  t.deepEqual(decodePageToken(first.nextPageToken), { kind: 'hypervisor', id: 'hv-a' });
  t.deepEqual(names(listPage(r, { pageSize: 5, pageToken: first.nextPageToken })), ['hv-b', 'vm-000']);
  t.deepEqual(decodePageToken(encodePageToken({ kind: 'vm', id: 'x' })), { kind: 'vm', id: 'x' });
  t.is(decodePageToken(''), null);
});
