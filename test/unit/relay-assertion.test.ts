// The host relay's signed assertion of the source VM: encoded by the relay,
// decoded incrementally and strictly, and verified by the destination against
// its trust bundle, its hypervisor, its own address and the clock; the
// principal it gives a relayed connection.

import test from 'ava';
import { ASSERTION_PREFIX_LENGTH, MAX_ASSERTION_AGE_MS, MAX_ASSERTION_BODY, decodeRelayAssertion, encodeRelayAssertion, startsRelayAssertion, verifyRelayAssertion, type RelayAssertion, type RelayAssertionContext } from '../../proxy/relay-assertion.js';
import { UNAUTHENTICATED, inboundPrincipal, relayedPrincipal } from '../../proxy/policy/principal.js';
import { makeRoot, vmIdentity, type Issued, type PemIdentity } from '../helpers/pki.js';
import { TLV, encodeProxyHeader, textTlv } from '../../proxy/proxy-protocol.js';
import { admitRelayed, decodeRelayAssertionAlone, decodeRelayedPreamble, maxRelayedPreambleBytes } from '../../proxy/listeners/relayed-preamble.js';
import { relayPreamble } from '../../proxy/listeners/relay.js';

const NOW = Date.now();
const FIELDS = { sourceCid: 3, sourceVmId: 'vm-a', destination: { cid: 4, port: 15007 }, issuedAtMs: NOW };

let root: Issued;
let relay: PemIdentity;
test.before(async () => {
  root = await makeRoot();
  relay = await vmIdentity(root, 'unused', { uris: ['spiffe://vsockmesh.local/hv/hv-1'] });
});

const context = (over: Partial<RelayAssertionContext> = {}): RelayAssertionContext => ({
  trustDomain: 'vsockmesh.local',
  bundlePem: relay.bundlePem,
  hypervisorId: 'hv-1',
  destination: { cid: 4, port: 15007 },
  now: new Date(NOW),
  ...over,
});

function decoded(bytes: Buffer): RelayAssertion {
  const r = decodeRelayAssertion(bytes);
  if (r.kind !== 'assertion') throw new Error(`not an assertion: ${JSON.stringify(r)}`);
  return r.assertion;
}

test('round trip: what the relay signs, the destination decodes and verifies; the principal is the asserted VM', (t) => {
  const bytes = encodeRelayAssertion(FIELDS, relay);
  const r = decodeRelayAssertion(Buffer.concat([bytes, Buffer.from('then the PROXY header')]));
  t.is(r.kind, 'assertion');
  t.is((r as { length: number }).length, bytes.length, 'the length ends exactly at the record');
  const a = decoded(bytes);
  t.like(a, { sourceCid: 3, sourceVmId: 'vm-a', destination: { cid: 4, port: 15007 }, issuedAtMs: NOW, chainPem: relay.chainPem });
  const verdict = verifyRelayAssertion(a, context());
  t.deepEqual(verdict, { ok: true, sourceVmId: 'vm-a', sourceCid: 3, relayId: 'spiffe://vsockmesh.local/hv/hv-1' });
  t.is(relayedPrincipal(verdict, 'vsockmesh.local'), 'spiffe://vsockmesh.local/vm/vm-a');
});

test('incremental: any prefix is incomplete and says how much is needed; a PROXY v2 header is told apart by its first byte', (t) => {
  const bytes = encodeRelayAssertion(FIELDS, relay);
  for (let n = 0; n < bytes.length; n++) {
    const r = decodeRelayAssertion(bytes.subarray(0, n));
    t.is(r.kind, 'incomplete', `prefix of ${n}`);
    if (r.kind === 'incomplete') t.is(r.needed, n < ASSERTION_PREFIX_LENGTH ? ASSERTION_PREFIX_LENGTH : bytes.length);
  }
  t.true(startsRelayAssertion(bytes));
  const proxy = encodeProxyHeader({ command: 'local', addresses: { family: 'unspec' }, tlvs: [] });
  t.false(startsRelayAssertion(proxy));
});

test('malformed records are refused as bad_assertion with the reason', (t) => {
  const bytes = encodeRelayAssertion(FIELDS, relay);
  const reason = (b: Buffer): string => {
    const r = decodeRelayAssertion(b);
    return r.kind === 'invalid' ? `${r.code}: ${r.reason}` : r.kind;
  };
  t.is(reason(Buffer.from('VMRX')), 'bad_assertion: byte 3 does not match the relay assertion magic "VMRA"');
  const version = Buffer.from(bytes);
  version[4] = 2;
  t.is(reason(version), 'bad_assertion: relay assertion version 2, expected 1');
  const reserved = Buffer.from(bytes);
  reserved[5] = 1;
  t.is(reason(reserved), 'bad_assertion: reserved byte 5 must be zero');
  const huge = Buffer.from(bytes.subarray(0, ASSERTION_PREFIX_LENGTH));
  huge.writeUInt16BE(MAX_ASSERTION_BODY + 1, 6);
  t.is(reason(huge), `bad_assertion: body of ${MAX_ASSERTION_BODY + 1} bytes, more than ${MAX_ASSERTION_BODY}`);
  const noVm = Buffer.from(bytes);
  noVm[ASSERTION_PREFIX_LENGTH + 20] = 0;
  t.is(reason(noVm), 'bad_assertion: source VM id missing or cut');
  const short = Buffer.from(bytes.subarray(0, ASSERTION_PREFIX_LENGTH + 10));
  short.writeUInt16BE(10, 6);
  t.is(reason(short), 'bad_assertion: body too short');
});

test('the destination refuses what its hypervisor relay did not say for it, each with a reason', async (t) => {
  const a = decoded(encodeRelayAssertion(FIELDS, relay));
  const reasonOf = (assertion: RelayAssertion, over: Partial<RelayAssertionContext> = {}): string => {
    const v = verifyRelayAssertion(assertion, context(over));
    return v.ok ? 'ok' : v.reason;
  };
  // Another hypervisor's relay, a VM's certificate, a certificate of another CA.
  t.is(reasonOf(a, { hypervisorId: 'hv-2' }), 'wrong_relay');
  const sidecar = await vmIdentity(root, 'vm-a');
  t.is(reasonOf(decoded(encodeRelayAssertion(FIELDS, sidecar))), 'wrong_relay', 'a guest cannot assert with its own SVID');
  const stranger = await vmIdentity(await makeRoot('O=other, CN=other root'), 'x', { uris: ['spiffe://vsockmesh.local/hv/hv-1'] });
  t.is(reasonOf(decoded(encodeRelayAssertion(FIELDS, stranger))), 'relay_untrusted');
  // A record whose signed bytes were changed (another source VM spliced in), or signed by another key than the chain's.
  const forged = decoded(encodeRelayAssertion({ ...FIELDS, sourceVmId: 'vm-x' }, { keyPem: sidecar.keyPem, chainPem: relay.chainPem }));
  t.is(reasonOf(forged), 'bad_signature');
  const tampered = Buffer.from(encodeRelayAssertion(FIELDS, relay));
  tampered.writeUInt32BE(5, ASSERTION_PREFIX_LENGTH); // the source CID
  t.is(reasonOf(decoded(tampered)), 'bad_signature');
  // Made for another guest or port: a replay.
  t.is(reasonOf(a, { destination: { cid: 5, port: 15007 } }), 'wrong_destination');
  t.is(reasonOf(a, { destination: { cid: 4, port: 15008 } }), 'wrong_destination');
  // Too old, or too far ahead.
  t.is(reasonOf(a, { now: new Date(NOW + MAX_ASSERTION_AGE_MS + 1) }), 'stale_assertion');
  t.is(reasonOf(a, { now: new Date(NOW - MAX_ASSERTION_AGE_MS - 1) }), 'stale_assertion');
  t.is(reasonOf(a, { now: new Date(NOW + MAX_ASSERTION_AGE_MS) }), 'ok');
  // An expired relay certificate.
  t.is(reasonOf(a, { now: new Date(Date.parse(relay.leaf.cert.validTo) + 1_000) }), 'relay_untrusted');
});

test('no verified assertion, no principal', (t) => {
  t.is(relayedPrincipal(null, 'vsockmesh.local'), UNAUTHENTICATED);
  t.is(relayedPrincipal({ ok: false, reason: 'bad_signature', detail: '' }, 'vsockmesh.local'), UNAUTHENTICATED);
});

const proxyHeader = (sourceVm?: string): Buffer =>
  encodeProxyHeader({
    command: 'proxy',
    addresses: { family: 'inet', transport: 'stream', source: { address: '10.0.0.1', port: 40000 }, destination: { address: '127.0.0.1', port: 8080 } },
    tlvs: sourceVm === undefined ? [] : [textTlv(TLV.VSOCKMESH_SOURCE_VM, sourceVm)],
  });

test('the relay writes an assertion only when the VM manager named the source VM and it has an identity to sign with', (t) => {
  t.is(relayPreamble(null, 'vm-a', 3, { cid: 4, port: 15007 }, NOW), null, 'no identity (insecure relay)');
  t.is(relayPreamble(relay, undefined, 3, { cid: 4, port: 15007 }, NOW), null, 'a static policy knows no VM');
  const bytes = relayPreamble(relay, 'vm-a', 3, { cid: 4, port: 15007 }, NOW)!;
  t.deepEqual(verifyRelayAssertion(decoded(bytes), context()), { ok: true, sourceVmId: 'vm-a', sourceCid: 3, relayId: 'spiffe://vsockmesh.local/hv/hv-1' });
});

test('the destination reads an optional assertion then the PROXY header, incrementally; payload after them is the stream', (t) => {
  const assertion = encodeRelayAssertion(FIELDS, relay);
  const header = proxyHeader('vm-a');
  const whole = Buffer.concat([assertion, header, Buffer.from('payload')]);
  const r = decodeRelayedPreamble(whole, 4096);
  t.is(r.kind, 'done');
  if (r.kind === 'done') {
    t.is(r.length, assertion.length + header.length);
    t.is(r.value.assertion!.sourceVmId, 'vm-a');
    t.is(r.value.header.command, 'proxy');
  }
  for (const n of [1, assertion.length - 1, assertion.length, assertion.length + 5]) t.is(decodeRelayedPreamble(whole.subarray(0, n), 4096).kind, 'incomplete', `prefix ${n}`);
  const plain = decodeRelayedPreamble(Buffer.concat([header, Buffer.from('x')]), 4096);
  t.like(plain, { kind: 'done', length: header.length, value: { assertion: null } });
  t.like(decodeRelayedPreamble(Buffer.from('VMRX'), 4096), { kind: 'invalid', code: 'bad_assertion' });
  t.like(decodeRelayedPreamble(Buffer.concat([assertion, Buffer.from('GET / HTTP/1.1\r\n')]), 4096), { kind: 'invalid' });
  t.is(maxRelayedPreambleBytes(4096), 8 + MAX_ASSERTION_BODY + 4096);
});

test('a relayed connection: asserted (principal and relay), unasserted, or refused when the header claims another VM or the assertion fails', (t) => {
  const a = decoded(encodeRelayAssertion(FIELDS, relay));
  const trust = { trustDomain: 'vsockmesh.local', bundlePem: relay.bundlePem };
  const where = { hypervisorId: 'hv-1', destination: { cid: 4, port: 15007 }, now: new Date(NOW) };
  const asserted = admitRelayed(a, trust, where, { kind: 'header', vmId: 'vm-a' });
  t.like(asserted, { kind: 'asserted', principal: 'spiffe://vsockmesh.local/vm/vm-a', relay: 'spiffe://vsockmesh.local/hv/hv-1' });
  t.is(asserted.kind === 'asserted' ? inboundPrincipal(asserted.peer) : undefined, 'spiffe://vsockmesh.local/vm/vm-a', 'the policies see the asserted VM');
  t.like(admitRelayed(a, trust, where, { kind: 'header', vmId: undefined }), { kind: 'asserted', principal: 'spiffe://vsockmesh.local/vm/vm-a', relay: 'spiffe://vsockmesh.local/hv/hv-1' }, 'HAProxy sends no TLV: no claim');
  t.deepEqual(admitRelayed(a, trust, where, { kind: 'header', vmId: 'vm-b' }), { kind: 'refused', reason: 'source_vm_mismatch', detail: 'the PROXY header claims source VM vm-b but the relay asserts vm-a (CID 3)' });
  t.like(admitRelayed(a, trust, { ...where, hypervisorId: 'hv-2' }, { kind: 'header', vmId: 'vm-a' }), { kind: 'refused', reason: 'wrong_relay' });
  t.deepEqual(admitRelayed(null, trust, where, { kind: 'header', vmId: 'vm-b' }), { kind: 'unasserted' });
  t.deepEqual(admitRelayed(a, null, where, { kind: 'header', vmId: 'vm-a' }), { kind: 'unasserted' });
});

test('through the relay under peer_tls.over_vsock: the certificate must name the asserted VM (relay_identity_mismatch), an assertion is required, and a failing assertion is refused first', (t) => {
  const a = decoded(encodeRelayAssertion(FIELDS, relay));
  const trust = { trustDomain: 'vsockmesh.local', bundlePem: relay.bundlePem };
  const where = { hypervisorId: 'hv-1', destination: { cid: 4, port: 15007 }, now: new Date(NOW) };
  const certificate = (vm: string) => ({ kind: 'certificate', identity: `spiffe://vsockmesh.local/vm/${vm}` }) as const;
  t.like(admitRelayed(a, trust, where, certificate('vm-a')), { kind: 'asserted', principal: 'spiffe://vsockmesh.local/vm/vm-a', relay: 'spiffe://vsockmesh.local/hv/hv-1' });
  t.deepEqual(admitRelayed(a, trust, where, certificate('vm-b')), {
    kind: 'refused',
    reason: 'relay_identity_mismatch',
    detail: 'the peer through the host relay presented the certificate of VM vm-b, but the relay asserts the source is VM vm-a (CID 3)',
  });
  t.like(admitRelayed(null, trust, where, certificate('vm-a')), { kind: 'refused', reason: 'relay_identity_mismatch' }, 'no assertion: nothing to check the certificate against');
  t.like(admitRelayed(a, trust, { ...where, destination: { cid: 5, port: 15007 } }, certificate('vm-a')), { kind: 'refused', reason: 'wrong_destination' });
});

test('the assertion ahead of a TLS handshake is read to its last byte, and a relayed stream without one is refused (relay_unasserted)', (t) => {
  const assertion = encodeRelayAssertion(FIELDS, relay);
  const clientHello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x10]);
  const r = decodeRelayAssertionAlone(Buffer.concat([assertion, clientHello]));
  t.like(r, { kind: 'done', length: assertion.length, value: { sourceVmId: 'vm-a', sourceCid: 3 } });
  t.like(decodeRelayAssertionAlone(assertion.subarray(0, 8)), { kind: 'incomplete', needed: assertion.length }, 'the prefix says how many bytes are left: none past it is read');
  t.like(decodeRelayAssertionAlone(clientHello), { kind: 'invalid', code: 'relay_unasserted' });
  t.like(decodeRelayAssertionAlone(Buffer.from('VMRX')), { kind: 'invalid', code: 'bad_assertion' });
});
