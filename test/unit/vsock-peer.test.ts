// TLS over vsock (peer_tls.over_vsock): what a vsock inbound listener does
// with a peer, and whether a TLS peer's certificate and its kernel-given CID
// name the same VM.

import test from 'ava';
import { cidAgreement, vmOfIdentity, vsockHandshake } from '../../proxy/peer-tls/vsock-peer.js';
import { inboundPrincipal } from '../../proxy/policy/principal.js';

const A = 'spiffe://vsockmesh.local/vm/vm-a';

test('without over_vsock a vsock peer sends its PROXY header in the clear, whatever its CID', (t) => {
  for (const cid of [1, 2, 3, 0xfffffffe]) t.deepEqual(vsockHandshake(false, cid), { kind: 'plain' });
});

test('under over_vsock a guest peer must complete a TLS handshake, plain text not let on', (t) => {
  for (const cid of [1, 3, 4, 0xfffffffe]) t.deepEqual(vsockHandshake(true, cid), { kind: 'tls', plain: false });
});

test('under over_vsock a connection through the host relay (CID 2) is refused, saying why', (t) => {
  const handshake = vsockHandshake(true, 2);
  t.is(handshake.kind, 'refuse');
  t.like(handshake, { reason: 'relayed_over_vsock' });
  t.regex(handshake.kind === 'refuse' ? handshake.detail : '', /host relay \(CID 2\).*does not trust the host/);
});

test('the VM of a certificate is the name of a vm identity, nothing else', (t) => {
  t.is(vmOfIdentity(A), 'vm-a');
  t.is(vmOfIdentity('spiffe://example.org/vm/web-1'), 'web-1');
  t.is(vmOfIdentity('spiffe://vsockmesh.local/host/hv-1'), undefined);
  t.is(vmOfIdentity('spiffe://vsockmesh.local/vm/a/b'), undefined);
  t.is(vmOfIdentity('not a spiffe id'), undefined);
});

const AGREEMENT: Array<[string, Parameters<typeof cidAgreement>, ReturnType<typeof cidAgreement>]> = [
  ['the certificate names the VM at the peer CID on our hypervisor', [A, 5, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-1' }], { ok: true, vmId: 'vm-a' }],
  [
    'the certificate names a VM at another CID (a stolen certificate, or a host handing out CIDs)',
    [A, 6, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-1' }],
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 6 presented the certificate of VM vm-a, which the VM manager places at CID 5 on hv-1 (we are on hv-1)' },
  ],
  [
    'the certificate names a VM with that CID on another hypervisor (CIDs are per hypervisor)',
    [A, 5, 'hv-1', { vsockCid: 5, hypervisorId: 'hv-2' }],
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 5 presented the certificate of VM vm-a, which the VM manager places at CID 5 on hv-2 (we are on hv-1)' },
  ],
  [
    'the certificate names a VM the VM manager does not know',
    [A, 5, 'hv-1', undefined],
    { ok: false, reason: 'cid_identity_mismatch', detail: 'vsock peer CID 5 presented the certificate of VM vm-a, which the VM manager does not know' },
  ],
  [
    'the certificate is not a VM identity',
    ['spiffe://vsockmesh.local/host/hv-1', 2, 'hv-1', { vsockCid: 2, hypervisorId: 'hv-1' }],
    { ok: false, reason: 'cid_identity_mismatch', detail: "vsock peer CID 2 presented spiffe://vsockmesh.local/host/hv-1, which is not a VM's identity" },
  ],
];

for (const [name, args, expected] of AGREEMENT) {
  test(`CID agreement: ${name}`, (t) => {
    t.deepEqual(cidAgreement(...args), expected);
  });
}

test('the principal of a TLS peer over vsock without a registry is its verified SPIFFE ID', (t) => {
  t.is(inboundPrincipal({ hop: 'vsock-tls', tlsIdentity: A }), A);
});
