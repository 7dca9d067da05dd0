// TLS over vsock (peer_tls.over_vsock), pure: for confidential VMs, whose
// host is not trusted. The kernel-given CID proves which VM a vsock peer is
// only if the hypervisor is honest; a certificate proves it to the VM itself.
// Under over_vsock a vsock inbound listener takes TLS peers only, and both
// identities must agree: the certificate's VM is the VM the VM manager
// places at the peer's CID on our hypervisor.

import { parseMeshIdentity } from '../identity/spiffe.js';
import { HOST_CID } from '../upstream/endpoint-facts.js';
import type { ListenerHandshake, Refusal } from './peer-modes.js';

/**
 * What a vsock inbound listener does with a new peer: read the PROXY header
 * in the clear (the CID is the proof), or a TLS handshake first (no plain
 * text let on), or refuse it.
 */
export function vsockHandshake(overVsock: boolean, peerCid: number): ListenerHandshake {
  if (!overVsock) return { kind: 'plain' };
  if (peerCid === HOST_CID) {
    return {
      kind: 'refuse',
      reason: 'relayed_over_vsock',
      detail: 'a connection through the host relay (CID 2) is refused: peer_tls.over_vsock does not trust the host, and TLS over vsock does not go through the relay yet (use vsock mode direct, or TCP with peer_tls)',
    };
  }
  return { kind: 'tls', plain: false };
}

/** The VM a certificate's SPIFFE ID names; undefined when it is not a VM's. */
export function vmOfIdentity(identity: string): string | undefined {
  const parsed = parseMeshIdentity(identity);
  return parsed.ok && parsed.value.kind === 'vm' ? parsed.value.name : undefined;
}

/** The VM manager's record of the VM a certificate names, as far as the check needs it. */
export interface PlacedVm {
  vsockCid: number;
  hypervisorId: string;
}

export type CidAgreement = { ok: true; vmId: string } | ({ ok: false } & Refusal);

/**
 * Whether the certificate of a TLS peer over vsock and its kernel-given CID
 * name the same VM: the certificate's VM must be, in the VM manager's
 * records (`placed`: undefined when it knows no such VM), at `peerCid` on
 * `localHypervisor`. Either proof alone is not enough: a CID a lying host
 * hands out, or a certificate stolen from another VM.
 */
export function cidAgreement(identity: string, peerCid: number, localHypervisor: string, placed: PlacedVm | undefined): CidAgreement {
  const vmId = vmOfIdentity(identity);
  if (vmId === undefined) return { ok: false, reason: 'cid_identity_mismatch', detail: `vsock peer CID ${peerCid} presented ${identity}, which is not a VM's identity` };
  if (placed === undefined) {
    return { ok: false, reason: 'cid_identity_mismatch', detail: `vsock peer CID ${peerCid} presented the certificate of VM ${vmId}, which the VM manager does not know` };
  }
  if (placed.vsockCid !== peerCid || placed.hypervisorId !== localHypervisor) {
    return {
      ok: false,
      reason: 'cid_identity_mismatch',
      detail: `vsock peer CID ${peerCid} presented the certificate of VM ${vmId}, which the VM manager places at CID ${placed.vsockCid} on ${placed.hypervisorId} (we are on ${localHypervisor})`,
    };
  }
  return { ok: true, vmId };
}
