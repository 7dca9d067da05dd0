// TLS over vsock (peer_tls.over_vsock), pure: for confidential VMs, whose
// host is not trusted. The kernel-given CID proves which VM a vsock peer is
// only if the hypervisor is honest; a certificate proves it to the VM itself.
// Under over_vsock a vsock inbound listener takes TLS peers only, and both
// identities must agree: the certificate's VM is the VM the VM manager
// places at the peer's CID on our hypervisor, or, through the host relay,
// the VM the relay asserts (relay-assertion.ts, read in the clear before the
// handshake; the TLS session runs end to end, the relay never sees plain text).

import { parseMeshIdentity } from '../identity/spiffe.js';
import type { ListenerHandshake, Refusal } from './peer-modes.js';

/**
 * What a vsock inbound listener does with a new peer: read the PROXY header
 * in the clear (the CID is the proof), or a TLS handshake first (no plain
 * text let on; from the relay, after its assertion), or refuse it.
 * `relayed`: the peer is our host relay; `registry`: the listener has the VM
 * manager (peer_authorization: registry) to know our hypervisor's relay by.
 */
export function vsockHandshake(overVsock: boolean, relayed: boolean, registry: boolean): ListenerHandshake {
  if (!overVsock) return { kind: 'plain' };
  if (relayed && !registry) {
    return {
      kind: 'refuse',
      reason: 'relayed_over_vsock',
      detail:
        'a connection through the host relay (CID 2) is refused: under peer_tls.over_vsock the relay\'s assertion of the source VM must be checked against the certificate, which needs peer_authorization: registry on this listener',
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
 * What the vsock hop proves of a TLS peer, besides its certificate: its
 * kernel-given CID (direct; `placed`: the VM manager's record of the VM the
 * certificate names, undefined when it knows no such VM), or the source our
 * hypervisor's relay asserted, verified (relayed; null: it asserted none).
 */
export type VsockPeerProof =
  | { kind: 'cid'; peerCid: number; localHypervisor: string; placed: PlacedVm | undefined }
  | { kind: 'relay'; asserted: { sourceCid: number; sourceVmId: string } | null };

/**
 * Whether the certificate of a TLS peer over vsock and what the hop proves
 * name the same VM. Direct: the certificate's VM must be, in the VM
 * manager's records, at the peer's CID on our hypervisor
 * (cid_identity_mismatch). Relayed: it must be the VM the relay asserts
 * (relay_identity_mismatch). Either proof alone is not enough: a CID a
 * lying host hands out, or a certificate stolen from another VM.
 */
export function vsockPeerAgreement(identity: string, proof: VsockPeerProof): CidAgreement {
  if (proof.kind === 'relay') return relayAgreement(identity, proof.asserted);
  const { peerCid, localHypervisor, placed } = proof;
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

function relayAgreement(identity: string, asserted: { sourceCid: number; sourceVmId: string } | null): CidAgreement {
  const refuse = (detail: string): CidAgreement => ({ ok: false, reason: 'relay_identity_mismatch', detail });
  const vmId = vmOfIdentity(identity);
  if (vmId === undefined) return refuse(`the peer through the host relay presented ${identity}, which is not a VM's identity`);
  if (asserted === null) return refuse(`the peer through the host relay presented the certificate of VM ${vmId}, and the relay asserted no source VM to check it against (the relay needs a vm_manager section and an hv identity)`);
  if (asserted.sourceVmId !== vmId) {
    return refuse(`the peer through the host relay presented the certificate of VM ${vmId}, but the relay asserts the source is VM ${asserted.sourceVmId} (CID ${asserted.sourceCid})`);
  }
  return { ok: true, vmId };
}
