// The peer hop's TLS decisions: secure naming, inbound admission by mode and
// allow-list, and the source-VM claim against the certificate.

import test from 'ava';
import { UNAUTHENTICATED, admitInbound, expectedPeerId, sourceVmProblem } from '../../proxy/peer-tls/peer-policy.js';

const TD = 'vsockmesh.local';
const A = 'spiffe://vsockmesh.local/vm/vm-a';

test('secure naming: the sidecar of a VM must present spiffe://<trust-domain>/vm/<vm-id>', (t) => {
  t.is(expectedPeerId(TD, 'vm-a'), A);
  t.is(expectedPeerId('example.org', 'web-1'), 'spiffe://example.org/vm/web-1');
});

const ADMISSION: Array<[string, Parameters<typeof admitInbound>, ReturnType<typeof admitInbound>]> = [
  ['a plain peer under permissive is let in as unauthenticated', ['permissive', { kind: 'plain' }, TD, []], { ok: true, identity: UNAUTHENTICATED }],
  ['a plain peer under strict is refused as plain_text', ['strict', { kind: 'plain' }, TD, []], { ok: false, reason: 'plain_text', detail: 'a plain-text peer is refused under peer_tls mode strict' }],
  ['a plain peer under permissive is let in even with an allow-list (policy on unauthenticated is for later)', ['permissive', { kind: 'plain' }, TD, [A]], { ok: true, identity: UNAUTHENTICATED }],
  ['any VM of the trust domain, without an allow-list', ['strict', { kind: 'tls', identity: A }, TD, []], { ok: true, identity: A }],
  ['a VM of another trust domain, without an allow-list', ['strict', { kind: 'tls', identity: 'spiffe://other.org/vm/vm-a' }, TD, []], { ok: false, reason: 'peer_not_allowed', detail: 'peer spiffe://other.org/vm/vm-a is not a VM of trust domain vsockmesh.local' }],
  ['a host agent identity, without an allow-list', ['strict', { kind: 'tls', identity: 'spiffe://vsockmesh.local/hv/hv-1' }, TD, []], { ok: false, reason: 'peer_not_allowed', detail: 'peer spiffe://vsockmesh.local/hv/hv-1 is not a VM of trust domain vsockmesh.local' }],
  ['a URI that is no SPIFFE ID', ['permissive', { kind: 'tls', identity: 'https://example.org/' }, TD, []], { ok: false, reason: 'peer_not_allowed', detail: 'peer https://example.org/ is not a VM of trust domain vsockmesh.local' }],
  ['an identity on the allow-list', ['strict', { kind: 'tls', identity: A }, TD, [A]], { ok: true, identity: A }],
  ['an identity not on the allow-list', ['strict', { kind: 'tls', identity: 'spiffe://vsockmesh.local/vm/vm-c' }, TD, [A]], { ok: false, reason: 'peer_not_allowed', detail: 'peer spiffe://vsockmesh.local/vm/vm-c is not in allowed_peer_ids' }],
  ['an allow-list may name identities outside the VM namespace', ['strict', { kind: 'tls', identity: 'spiffe://partner.org/gw' }, TD, ['spiffe://partner.org/gw']], { ok: true, identity: 'spiffe://partner.org/gw' }],
];

for (const [name, args, expected] of ADMISSION) {
  test(`admission: ${name}`, (t) => {
    t.deepEqual(admitInbound(...args), expected);
  });
}

test('a source-VM claim must match the certificate; no claim, or an unauthenticated peer, is not checked', (t) => {
  t.is(sourceVmProblem(A, 'vm-a', TD), undefined);
  t.is(sourceVmProblem(A, undefined, TD), undefined);
  t.is(sourceVmProblem(UNAUTHENTICATED, 'vm-z', TD), undefined);
  t.is(sourceVmProblem(A, 'vm-b', TD), 'the PROXY header claims source VM vm-b but the peer certificate is spiffe://vsockmesh.local/vm/vm-a');
  t.truthy(sourceVmProblem('spiffe://other.org/vm/vm-a', 'vm-a', TD), 'the same VM name in another trust domain is another VM');
});
