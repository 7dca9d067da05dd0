import test from 'ava';
import { attestationTarget, isGuestCid } from '../../proxy/identity/attestor.js';
import { MAX_ATTESTATION_CSR_CHARS } from '../../proxy/identity/attestation-wire.js';
import type { VmRecord } from '../../proxy/resolve/types.js';

const vm = (vmId: string, hypervisorId: string, vsockCid: number): VmRecord => ({ vmId, hypervisorId, vsockCid, addresses: [], sidecar: null, services: [], labels: {}, generation: 1, leaseExpiresAt: null });
const VMS = [vm('vm-a', 'hv-1', 3), vm('vm-b', 'hv-1', 4), vm('vm-c', 'hv-2', 5)];
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\n...';
const decide = (vmId: string, cid: number, vms: VmRecord[] = VMS, csr = CSR): string => {
  const d = attestationTarget({ csr, vmId }, cid, 'hv-1', vms);
  return d.ok ? `forward ${d.vm.vmId}` : d.reason;
};

test('a guest of this hypervisor asking for itself: its CSR is forwarded for its VM', (t) => {
  t.is(decide('vm-a', 3), 'forward vm-a');
  t.is(decide('vm-b', 4), 'forward vm-b');
});

test('a guest asking for another VM is refused (other_vm)', (t) => {
  t.is(decide('vm-a', 4), 'other_vm');
  t.is(decide('vm-c', 3), 'other_vm');
});

test('a CID no VM of this hypervisor has is refused (unknown_cid), also one the registry places on another hypervisor', (t) => {
  t.is(decide('vm-a', 9), 'unknown_cid');
  t.is(decide('vm-c', 5), 'unknown_cid');
  t.is(decide('vm-a', 3, []), 'unknown_cid');
});

test('two VMs of this hypervisor claiming one CID: refused, neither is attested', (t) => {
  t.is(decide('vm-a', 3, [...VMS, vm('vm-x', 'hv-1', 3)]), 'unknown_cid');
});

test('loopback, local, host and hypervisor CIDs are refused before the records are looked at', (t) => {
  for (const cid of [0, 1, 2, 0xffffffff]) t.is(decide('vm-a', cid, [vm('vm-a', 'hv-1', cid)]), 'local_cid', String(cid));
  t.false(isGuestCid(1));
  t.true(isGuestCid(3));
  t.true(isGuestCid(0xfffffffe));
});

test('the request itself: a CSR and a VM id are required, the CSR bounded', (t) => {
  t.is(decide('vm-a', 3, VMS, ''), 'missing_csr');
  t.is(decide('', 3), 'missing_vm_id');
  t.is(decide('vm-a', 3, VMS, 'x'.repeat(MAX_ATTESTATION_CSR_CHARS + 1)), 'csr_too_large');
  t.is(decide('vm-a', 3, VMS, 'x'.repeat(MAX_ATTESTATION_CSR_CHARS)), 'forward vm-a');
});
