import test from 'ava';
import { DEFAULT_DENY, authorize, evaluateRules, inboundPolicies, principalMatches, type PrincipalMatch, type RbacFilter, type RbacPolicy } from '../../proxy/policy/rbac.js';
import { UNAUTHENTICATED, inboundPrincipal, relayedPrincipal } from '../../proxy/policy/principal.js';

const A = 'spiffe://td/vm/web-a';
const B = 'spiffe://td/vm/web-b';
const C = 'spiffe://td/vm/db-1';
const exact = (id: string): PrincipalMatch => ({ kind: 'exact', id });
const prefix = (p: string): PrincipalMatch => ({ kind: 'prefix', prefix: p });
const pol = (name: string, ...principals: PrincipalMatch[]): RbacPolicy => ({ name, principals });
const allow = (...policies: RbacPolicy[]): RbacFilter => ({ rules: { action: 'ALLOW', policies }, shadowRules: null });
const deny = (...policies: RbacPolicy[]): RbacFilter => ({ rules: { action: 'DENY', policies }, shadowRules: null });
const shadowAllow = (...policies: RbacPolicy[]): RbacFilter => ({ rules: null, shadowRules: { action: 'ALLOW', policies } });
const shadowDeny = (...policies: RbacPolicy[]): RbacFilter => ({ rules: null, shadowRules: { action: 'DENY', policies } });
const on = (port: number, ...filters: RbacFilter[]) => inboundPolicies([{ port, filters }]);

// ---- principals ---------------------------------------------------------------

test('an exact principal matches only that SPIFFE ID', (t) => {
  t.true(principalMatches(exact(A), A));
  t.false(principalMatches(exact(A), B));
  t.false(principalMatches(exact(A), `${A}x`), 'not a prefix');
});

test('a prefix principal matches IDs starting with it, never a peer without identity', (t) => {
  t.true(principalMatches(prefix('spiffe://td/vm/web-'), A));
  t.true(principalMatches(prefix('spiffe://td/vm/web-'), B));
  t.false(principalMatches(prefix('spiffe://td/vm/web-'), C));
  t.false(principalMatches(prefix(''), UNAUTHENTICATED), 'an empty prefix is any authenticated peer, not anyone');
});

test('unauthenticated matches only a peer without identity; authenticated the others; any everyone', (t) => {
  t.true(principalMatches({ kind: 'unauthenticated' }, UNAUTHENTICATED));
  t.false(principalMatches({ kind: 'unauthenticated' }, A));
  t.true(principalMatches({ kind: 'authenticated' }, A));
  t.false(principalMatches({ kind: 'authenticated' }, UNAUTHENTICATED));
  t.true(principalMatches({ kind: 'any' }, A));
  t.true(principalMatches({ kind: 'any' }, UNAUTHENTICATED));
  t.false(principalMatches(exact(UNAUTHENTICATED), UNAUTHENTICATED), 'the word is not an identity a certificate could carry');
});

test('the principal of an inbound connection: TLS identity, registry-verified VM, or unauthenticated', (t) => {
  t.is(inboundPrincipal({ hop: 'tcp', tlsIdentity: A }), A);
  t.is(inboundPrincipal({ hop: 'tcp', tlsIdentity: null }), UNAUTHENTICATED);
  t.is(inboundPrincipal({ hop: 'vsock', registryVerifiedVm: 'web-a', trustDomain: 'td' }), A, 'the same string the VM certificate carries');
  t.is(inboundPrincipal({ hop: 'vsock', registryVerifiedVm: null }), UNAUTHENTICATED, 'a CID allow-list proves no VM identity');
  t.is(inboundPrincipal({ hop: 'vsock-relayed', verdict: null, trustDomain: 'td' }), UNAUTHENTICATED, 'the relay asserted nothing');
  t.is(inboundPrincipal({ hop: 'vsock-relayed', verdict: { ok: false, reason: 'bad_signature', detail: '' }, trustDomain: 'td' }), UNAUTHENTICATED, 'an assertion that did not verify proves nothing');
  t.is(inboundPrincipal({ hop: 'vsock-relayed', verdict: { ok: true, sourceVmId: 'web-a', sourceCid: 3, relayId: 'spiffe://td/hv/hv-1' }, trustDomain: 'td' }), A, 'the VM the relay asserted');
  t.is(relayedPrincipal(null, 'td'), UNAUTHENTICATED);
});

// ---- rule sets ------------------------------------------------------------------

test('an ALLOW set admits what one of its policies matches and denies the rest by default', (t) => {
  const rules = { action: 'ALLOW' as const, policies: [pol('a', exact(A)), pol('web', prefix('spiffe://td/vm/web-'))] };
  t.deepEqual(evaluateRules(rules, A), { denied: false });
  t.deepEqual(evaluateRules(rules, B), { denied: false });
  t.deepEqual(evaluateRules(rules, C), { denied: true, policy: DEFAULT_DENY });
  t.deepEqual(evaluateRules({ action: 'ALLOW', policies: [] }, A), { denied: true, policy: DEFAULT_DENY }, 'an empty ALLOW set allows nothing (as Envoy)');
});

test('a DENY set denies by the first policy that matches and lets the rest through', (t) => {
  const rules = { action: 'DENY' as const, policies: [pol('no-a', exact(A)), pol('no-web', prefix('spiffe://td/vm/web-'))] };
  t.deepEqual(evaluateRules(rules, A), { denied: true, policy: 'no-a' });
  t.deepEqual(evaluateRules(rules, B), { denied: true, policy: 'no-web' });
  t.deepEqual(evaluateRules(rules, C), { denied: false });
});

// ---- a port's filters -------------------------------------------------------------

test('no policy: allowed, on any port', (t) => {
  t.deepEqual(authorize(inboundPolicies([]), 8080, A), { allowed: true, shadowDenied: null });
  t.deepEqual(authorize(on(9090, deny(pol('x', { kind: 'any' }))), 8080, A), { allowed: true, shadowDenied: null }, 'policies of another port do not apply');
});

test('DENY before ALLOW: a principal both name is denied by the DENY policy', (t) => {
  const policies = on(8080, deny(pol('no-b', exact(B))), allow(pol('web', prefix('spiffe://td/vm/web-'))));
  t.deepEqual(authorize(policies, 8080, A), { allowed: true, shadowDenied: null });
  t.deepEqual(authorize(policies, 8080, B), { allowed: false, policy: 'no-b', shadowDenied: null });
  t.deepEqual(authorize(policies, 8080, C), { allowed: false, policy: DEFAULT_DENY, shadowDenied: null });
});

test('once an ALLOW selects a port, anything not allowed is denied, unauthenticated included', (t) => {
  const policies = on(8080, allow(pol('a', exact(A))));
  t.true(authorize(policies, 8080, A).allowed);
  t.deepEqual(authorize(policies, 8080, B), { allowed: false, policy: DEFAULT_DENY, shadowDenied: null });
  t.deepEqual(authorize(policies, 8080, UNAUTHENTICATED), { allowed: false, policy: DEFAULT_DENY, shadowDenied: null }, 'an ALLOW naming a mesh identity does not admit a plain-text peer');
});

test('unauthenticated can be allowed or denied by name', (t) => {
  t.true(authorize(on(8080, allow(pol('plain', { kind: 'unauthenticated' }))), 8080, UNAUTHENTICATED).allowed);
  t.false(authorize(on(8080, allow(pol('plain', { kind: 'unauthenticated' }))), 8080, A).allowed);
  t.deepEqual(authorize(on(8080, deny(pol('no-plain', { kind: 'unauthenticated' }))), 8080, UNAUTHENTICATED), { allowed: false, policy: 'no-plain', shadowDenied: null });
  t.true(authorize(on(8080, deny(pol('no-plain', { kind: 'unauthenticated' }))), 8080, A).allowed);
});

test('shadow rules are reported, never enforced', (t) => {
  t.deepEqual(authorize(on(8080, shadowAllow(pol('only-a', exact(A)))), 8080, B), { allowed: true, shadowDenied: DEFAULT_DENY });
  t.deepEqual(authorize(on(8080, shadowAllow(pol('only-a', exact(A)))), 8080, A), { allowed: true, shadowDenied: null });
  t.deepEqual(authorize(on(8080, shadowDeny(pol('no-b', exact(B)))), 8080, B), { allowed: true, shadowDenied: 'no-b' });
  t.deepEqual(authorize(on(8080, shadowDeny(pol('no-b', exact(B)))), 8080, A), { allowed: true, shadowDenied: null });
});

test('shadow and enforced together: the enforced decision stands, the shadow one is reported beside it', (t) => {
  const policies = on(8080, deny(pol('no-c', exact(C))), shadowDeny(pol('no-b', exact(B))));
  t.deepEqual(authorize(policies, 8080, B), { allowed: true, shadowDenied: 'no-b' });
  t.deepEqual(authorize(policies, 8080, C), { allowed: false, policy: 'no-c', shadowDenied: null });
  const shadowFirst = on(8080, shadowDeny(pol('no-c-dry', exact(C))), deny(pol('no-c', exact(C))));
  t.deepEqual(authorize(shadowFirst, 8080, C), { allowed: false, policy: 'no-c', shadowDenied: 'no-c-dry' });
});

test('ports: each port has its own filters', (t) => {
  const policies = inboundPolicies([
    { port: 8080, filters: [allow(pol('a', exact(A)))] },
    { port: 9090, filters: [deny(pol('no-a', exact(A)))] },
    { port: 7070, filters: [] },
  ]);
  t.true(authorize(policies, 8080, A).allowed);
  t.false(authorize(policies, 8080, B).allowed);
  t.false(authorize(policies, 9090, A).allowed);
  t.true(authorize(policies, 9090, B).allowed);
  t.true(authorize(policies, 7070, B).allowed);
  t.false(policies.has(7070), 'a port without filters is no entry');
});
