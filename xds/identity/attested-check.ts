// Whether the CA signs a CSR a host agent forwards for a VM it attested by
// vsock CID (Identity.CertifyAttested; the model of Istio's node authorizer).
// Pure: the registry's record of the VM, the caller and the CSR's SPIFFE ID
// in; sign for exactly one identity, or a snake_case reason out. The guard
// (authorize.ts) already let only a host agent of the VM's hypervisor through;
// this is the decision itself, checked again with the CID.

import type { VmRecord } from '../../proxy/resolve/types.js';
import { meshIdentityId, type MeshIdentity } from '../../proxy/identity/spiffe.js';

/** CIDs no guest has: 0 (hypervisor), 1 (local / loopback), 2 (host). */
export const MIN_GUEST_CID = 3;
/** VMADDR_CID_ANY (-1U) is no one's. */
export const MAX_GUEST_CID = 0xfffffffe;

export type AttestedRefusal = 'not_host_agent' | 'local_cid' | 'unknown_vm' | 'vm_on_other_hypervisor' | 'cid_mismatch' | 'wrong_identity';

export type AttestedDecision = { ok: true; spiffeId: string } | { ok: false; reason: AttestedRefusal; message: string };

export interface AttestedRequest {
  /** Who forwards the CSR (its verified client certificate). */
  caller: MeshIdentity;
  /** The CA's trust domain. */
  trustDomain: string;
  vmId: string;
  /** The CID the host agent saw the request come from. */
  cid: number;
  /** The SPIFFE ID the CSR asks for (csr-check.ts). */
  asked: string;
  /** The registry's record of vmId (undefined: none). */
  vm: VmRecord | undefined;
}

export function attestedDecision(r: AttestedRequest): AttestedDecision {
  const refuse = (reason: AttestedRefusal, message: string): AttestedDecision => ({ ok: false, reason, message });
  if (r.caller.kind !== 'hv' || r.caller.trustDomain !== r.trustDomain) return refuse('not_host_agent', `spiffe://${r.caller.trustDomain}/${r.caller.kind}/${r.caller.name} is not a host agent of ${r.trustDomain}: only a hypervisor's host agent attests VMs`);
  if (!Number.isInteger(r.cid) || r.cid < MIN_GUEST_CID || r.cid > MAX_GUEST_CID) return refuse('local_cid', `CID ${r.cid} is no guest's (0, 1 and 2 are the hypervisor, local and host addresses): nothing to attest`);
  if (r.vm === undefined) return refuse('unknown_vm', `the registry has no VM "${r.vmId}"`);
  if (r.vm.hypervisorId !== r.caller.name) return refuse('vm_on_other_hypervisor', `the registry places ${r.vmId} on hypervisor "${r.vm.hypervisorId}", not ${r.caller.name}`);
  if (r.vm.vsockCid !== r.cid) return refuse('cid_mismatch', `the registry places ${r.vmId} at CID ${r.vm.vsockCid}, not ${r.cid}`);
  const expected = meshIdentityId(r.trustDomain, 'vm', r.vmId);
  if (!expected.ok) return refuse('wrong_identity', `"${r.vmId}" makes no VM identity: ${expected.message}`);
  if (r.asked !== expected.value) return refuse('wrong_identity', `the CSR asks for ${r.asked}, not ${expected.value}`);
  return { ok: true, spiffeId: expected.value };
}
