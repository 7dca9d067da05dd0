import test from 'ava';
import { attestedDecision, type AttestedRequest } from '../../xds/identity/attested-check.js';
import type { VmRecord } from '../../proxy/resolve/types.js';
import type { IdentityKind } from '../../proxy/identity/spiffe.js';

const TD = 'vsockmesh.local';
const vm = (vmId: string, hypervisorId: string, vsockCid: number): VmRecord => ({ vmId, hypervisorId, vsockCid, addresses: [], sidecar: null, services: [], labels: {}, generation: 1, leaseExpiresAt: null });
const who = (kind: IdentityKind, name: string, trustDomain = TD) => ({ trustDomain, kind, name });

/** vm-a on hv-1 at CID 3, asked for by hv-1 from CID 3, for exactly its identity: the one request that is signed. */
const good: AttestedRequest = { caller: who('hv', 'hv-1'), trustDomain: TD, vmId: 'vm-a', cid: 3, asked: `spiffe://${TD}/vm/vm-a`, vm: vm('vm-a', 'hv-1', 3) };
const reason = (r: AttestedRequest): string => {
  const d = attestedDecision(r);
  return d.ok ? `signs ${d.spiffeId}` : d.reason;
};

test('the host agent of the VM\'s hypervisor, from the VM\'s CID, for exactly the VM\'s identity: signed for that identity', (t) => {
  t.is(reason(good), `signs spiffe://${TD}/vm/vm-a`);
  t.is(reason({ ...good, cid: 0xfffffffe, vm: vm('vm-a', 'hv-1', 0xfffffffe) }), `signs spiffe://${TD}/vm/vm-a`);
});

test('only a host agent of this trust domain attests', (t) => {
  for (const kind of ['vm', 'cp', 'operator'] as const) t.is(reason({ ...good, caller: who(kind, 'hv-1') }), 'not_host_agent', kind);
  t.is(reason({ ...good, caller: who('hv', 'hv-1', 'other.example') }), 'not_host_agent');
});

test('a CID no guest has (hypervisor, loopback, host, any, out of range) is refused whatever the registry says', (t) => {
  for (const cid of [0, 1, 2, 0xffffffff, -3, 3.5, 2 ** 32]) t.is(reason({ ...good, cid, vm: vm('vm-a', 'hv-1', cid) }), 'local_cid', String(cid));
});

test('a VM the registry does not know is refused', (t) => {
  t.is(reason({ ...good, vm: undefined }), 'unknown_vm');
});

test('a VM the registry places on another hypervisor is refused', (t) => {
  t.is(reason({ ...good, vm: vm('vm-a', 'hv-2', 3) }), 'vm_on_other_hypervisor');
  t.is(reason({ ...good, caller: who('hv', 'hv-2') }), 'vm_on_other_hypervisor');
});

test('a CID the registry does not give that VM is refused', (t) => {
  t.is(reason({ ...good, cid: 4 }), 'cid_mismatch');
  t.is(reason({ ...good, vm: vm('vm-a', 'hv-1', 4) }), 'cid_mismatch');
});

test('a CSR asking for anything but exactly that VM\'s identity is refused', (t) => {
  for (const asked of [`spiffe://${TD}/vm/vm-b`, `spiffe://${TD}/hv/hv-1`, `spiffe://${TD}/cp/vm-a`, `spiffe://other.example/vm/vm-a`, `spiffe://${TD}/vm/vm-a/x`, `spiffe://${TD}/vm/VM-A`, '']) {
    t.is(reason({ ...good, asked }), 'wrong_identity', asked);
  }
});

test('every refusal names what it saw', (t) => {
  const d = attestedDecision({ ...good, cid: 4 });
  t.false(d.ok);
  if (!d.ok) t.regex(d.message, /CID 3, not 4/);
});
