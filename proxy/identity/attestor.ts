// The host agent's side of a VM's attested first certificate: which VM a
// request that came in over vsock is from. The kernel gives the source CID at
// accept time (a guest cannot choose it); the VM manager's records say which
// VM of this hypervisor has that CID. Pure: the records in, the VM to forward
// the CSR for, or a snake_case refusal out. The CA checks again
// (xds/identity/attested-check.ts); this refuses early, with a reason the
// guest can read.

import type { VmRecord } from '../resolve/types.js';
import type { AttestationRequest } from './attestation-wire.js';
import { MAX_ATTESTATION_CSR_CHARS } from './attestation-wire.js';

/** Every host-side refusal (the request's own, the CID's, the VM's). */
export type AttestorRefusal = 'missing_csr' | 'csr_too_large' | 'missing_vm_id' | 'local_cid' | 'unknown_cid' | 'other_vm';

export type AttestorDecision = { ok: true; vm: VmRecord } | { ok: false; reason: AttestorRefusal; message: string };

/** 0 (hypervisor), 1 (VMADDR_CID_LOCAL: loopback), 2 (host): never a guest's; VMADDR_CID_ANY neither. */
export function isGuestCid(cid: number): boolean {
  return Number.isInteger(cid) && cid >= 3 && cid <= 0xfffffffe;
}

/**
 * `vms`: the VMs the VM manager places on this hypervisor. The request must
 * come from a guest CID that exactly one of them has, and ask for that VM.
 */
export function attestationTarget(request: AttestationRequest, peerCid: number, hypervisorId: string, vms: readonly VmRecord[]): AttestorDecision {
  const refuse = (reason: AttestorRefusal, message: string): AttestorDecision => ({ ok: false, reason, message });
  if (request.csr === '') return refuse('missing_csr', 'csr: required (a PEM PKCS#10 request)');
  if (request.csr.length > MAX_ATTESTATION_CSR_CHARS) return refuse('csr_too_large', `csr: ${request.csr.length} characters, more than ${MAX_ATTESTATION_CSR_CHARS}`);
  if (request.vmId === '') return refuse('missing_vm_id', 'vm_id: required (the VM asking)');
  if (!isGuestCid(peerCid)) return refuse('local_cid', `CID ${peerCid} is no guest's (a loopback or host connection): only a guest can be attested by its CID`);
  const atCid = vms.filter((vm) => vm.hypervisorId === hypervisorId && vm.vsockCid === peerCid);
  if (atCid.length !== 1) {
    return refuse('unknown_cid', atCid.length === 0 ? `no VM on hypervisor ${hypervisorId} has CID ${peerCid}` : `${atCid.length} VMs on hypervisor ${hypervisorId} claim CID ${peerCid}`);
  }
  const vm = atCid[0]!;
  if (vm.vmId !== request.vmId) return refuse('other_vm', `CID ${peerCid} is ${vm.vmId}, which may not ask for "${request.vmId}"`);
  return { ok: true, vm };
}
