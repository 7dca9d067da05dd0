// TLS over vsock (peer_tls.over_vsock): what a vsock inbound listener does
// with a peer, and whether a TLS peer's certificate and its kernel-given CID,
// or the source its host relay asserts, name the same VM.

import test from 'ava';
import { vmOfIdentity, vsockHandshake, vsockPeerAgreement } from '../../proxy/peer-tls/vsock-peer.js';
import { inboundPrincipal } from '../../proxy/policy/principal.js';

const A = 'spiffe://vsockmesh.local/vm/vm-a';

test('without over_vsock a vsock peer sends its PROXY header in the clear, direct or relayed, with or without a registry', (t) => {
  for (const relayed of [false, true]) for (const registry of [false, true]) t.deepEqual(vsockHandshake(false, relayed, registry), { kind: 'plain' });
});

test('under over_vsock a guest peer, and the host relay on a registry listener, must complete a TLS handshake, plain text not let on', (t) => {
  for (const registry of [false, true]) t.deepEqual(vsockHandshake(true, false, registry), { kind: 'tls', plain: false });
  t.deepEqual(vsockHandshake(true, true, true), { kind: 'tls', plain: false });
});

test('under over_vsock a connection through the host relay to a listener without a registry is refused, saying why', (t) => {
  const handshake = vsockHandshake(true, true, false);
  t.is(handshake.kind, 'refuse');
  t.like(handshake, { reason: 'relayed_over_vsock' });
  t.regex(handshake.kind === 'refuse' ? handshake.detail : '', /host relay \(CID 2\).*assertion.*certificate.*peer_authorization: registry/);
});

test('the VM of a certificate is the name of a vm identity, nothing else', (t) => {
  t.is(vmOfIdentity(A), 'vm-a');
  t.is(vmOfIdentity('spiffe://example.org/vm/web-1'), 'web-1');
  t.is(vmOfIdentity('spiffe://vsockmesh.local/host/hv-1'), undefined);
  t.is(vmOfIdentity('spiffe://vsockmesh.local/vm/a/b'), undefined);
  t.is(vmOfIdentity('not a spiffe id'), undefined);
});

const cid = (identity: string, peerCid: number, localHypervisor: string, placed: { vsockCid: number; hypervisorId: string } | undefined): Parameters<typeof vsockPeerAgreement> => [
  identity,
  { kind: 'cid', peerCid, localHypervisor, placed },
];
const relay = (identity: string, asserted: { sourceCid: number; sourceVmId: string } | null): Parameters<typeof vsockPeerAgreement> => [identity, { kind: 'relay', asserted }];

const AGREEMENT: Array<[string, Parameters<typeof vsockPeerAgreement>, ReturnType<typeof vsockPeerAgreement>]> = [
  ['the certificate names the VM at the peer CID on our hypervisor', cid(A, 5, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-1' }), { ok: true, vmId: 'vm-a' }],
  [
    'the certificate names a VM at another CID (a stolen certificate, or a host handing out CIDs)',
    cid(A, 6, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-1' }),
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 6 presented the certificate of VM vm-a, which the VM manager places at CID 5 on hv-1 (we are on hv-1)' },
  ],
  [
    'the certificate names a VM with that CID on another hypervisor (CIDs are per hypervisor)',
    cid(A, 5, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-2' }),
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 5 presented the certificate of VM vm-a, which the VM manager places at CID 5 on hv-2 (we are on hv-1)' },
  ],
  [
    'the certificate names a VM the VM manager does not know',
    cid(A, 5, 'hv-1', undefined),
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 5 presented the certificate of VM vm-a, which the VM manager does not know' },
  ],
  [
    'the certificate is not a VM identity',
    cid('spiffe://vsockmesh.local/host/hv-1', 2, 'hv-1', { vsockCid: 2, hypervisorId: 'hv-1' }),
    { ok: false, reason: 'cid_identity_mismatch', detail: "vsock peer CID 2 presented spiffe://vsockmesh.local/host/hv-1, which is not a VM's identity" },
  ],
  ['through the relay, the certificate names the VM the relay asserts', relay(A, { sourceCid: 3, sourceVmId: 'vm-a' }), { ok: true, vmId: 'vm-a' }],
  [
    'through the relay, the certificate names another VM than the relay asserts (a stolen certificate, or a relay lying about the source)',
    relay(A, { sourceCid: 4, sourceVmId: 'vm-b' }),
    { ok: false, reason: 'relay_identity_mismatch', detail: 'the peer through the host relay presented the certificate of VM vm-a, but the relay asserts the source is VM vm-b (CID 4)' },
  ],
  [
    'through the relay, the relay asserted nothing to check the certificate against',
    relay(A, null),
    {
      ok: false,
      reason: 'relay_identity_mismatch',
      detail: 'the peer through the host relay presented the certificate of VM vm-a, and the relay asserted no source VM to check it against (the relay needs a vm_manager section and an hv identity)',
    },
  ],
  [
    'through the relay, the certificate is not a VM identity',
    relay('spiffe://vsockmesh.local/hv/hv-1', { sourceCid: 3, sourceVmId: 'vm-a' }),
    { ok: false, reason: 'relay_identity_mismatch', detail: "the peer through the host relay presented spiffe://vsockmesh.local/hv/hv-1, which is not a VM's identity" },
  ],
];

for (const [name, args, expected] of AGREEMENT) {
  test(`vsock peer agreement: ${name}`, (t) => {
    t.deepEqual(vsockPeerAgreement(...args), expected);
  });
}

test('the principal of a TLS peer over vsock without a registry is its verified SPIFFE ID', (t) => {
  t.is(inboundPrincipal({ hop: 'vsock-tls', tlsIdentity: A }), A);
});
