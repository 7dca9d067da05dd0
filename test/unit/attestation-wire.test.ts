import test from 'ava';
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import {
  MAX_ATTESTATION_REQUEST_BYTES,
  MAX_ATTESTATION_RESPONSE_BYTES,
  decodeAttestationRequest,
  decodeAttestationResponse,
  encodeAttestationRequest,
  encodeAttestationResponse,
} from '../../proxy/identity/attestation-wire.js';

// The messages as protobufjs reads them from the .proto file itself: the hand-written codec must agree both ways.
const root = new protobuf.Root().loadSync(fileURLToPath(new URL('../../proto/vsockmesh/identity/v1/identity.proto', import.meta.url)), { keepCase: true });
const Request = root.lookupType('vsockmesh.identity.v1.AttestationRequest');
const Response = root.lookupType('vsockmesh.identity.v1.AttestationResponse');

const frame = (body: Uint8Array): Buffer => {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, Buffer.from(body)]);
};
const body = (framed: Buffer): Buffer => framed.subarray(4);
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\u00e9\n-----END CERTIFICATE REQUEST-----\n';

test('a request encodes to the bytes protobufjs makes of the same message, and decodes what protobufjs makes', (t) => {
  const message = { csr: CSR, vmId: 'vm-a' };
  const ours = encodeAttestationRequest(message);
  t.deepEqual(body(ours), Buffer.from(Request.encode(Request.fromObject({ csr: CSR, vm_id: 'vm-a' })).finish()));
  t.is(ours.readUInt32BE(0), ours.length - 4);
  t.deepEqual(decodeAttestationRequest(frame(Request.encode(Request.fromObject({ csr: CSR, vm_id: 'vm-a' })).finish())), { kind: 'done', value: message, length: ours.length });
});

test('a response with a certificate and a refusal both round-trip through protobufjs (not_after beyond 32 bits)', (t) => {
  const issued = { ok: true as const, certificateChain: 'chain', notAfterMs: 1_900_000_000_123, trustBundle: 'bundle', spiffeId: 'spiffe://vsockmesh.local/vm/vm-a' };
  const decodedByThem = Response.toObject(Response.decode(body(encodeAttestationResponse(issued))), { longs: Number });
  t.deepEqual(decodedByThem, { certificate_chain: 'chain', not_after_ms: 1_900_000_000_123, trust_bundle: 'bundle', spiffe_id: 'spiffe://vsockmesh.local/vm/vm-a' });
  const theirs = frame(Response.encode(Response.fromObject({ certificate_chain: 'chain', not_after_ms: 1_900_000_000_123, trust_bundle: 'bundle', spiffe_id: issued.spiffeId })).finish());
  t.like(decodeAttestationResponse(theirs), { kind: 'done', value: issued });
  const refused = { ok: false as const, reason: 'other_vm', message: 'CID 4 is vm-b' };
  t.deepEqual(Response.toObject(Response.decode(body(encodeAttestationResponse(refused)))), { error_reason: 'other_vm', error_message: 'CID 4 is vm-b' });
  t.like(decodeAttestationResponse(encodeAttestationResponse(refused)), { kind: 'done', value: refused });
});

test('unknown fields (every wire type) are skipped, as protobuf readers do', (t) => {
  const writer = protobuf.Writer.create();
  writer.uint32((9 << 3) | 0).uint64(7);
  writer.uint32((10 << 3) | 1).fixed64(1);
  writer.uint32((11 << 3) | 5).fixed32(1);
  writer.uint32((12 << 3) | 2).string('x');
  writer.uint32((2 << 3) | 2).string('vm-a');
  t.like(decodeAttestationRequest(frame(writer.finish())), { kind: 'done', value: { csr: '', vmId: 'vm-a' } });
});

test('an incomplete frame asks for exactly what is missing; bytes after the frame are not part of it', (t) => {
  const full = encodeAttestationRequest({ csr: CSR, vmId: 'vm-a' });
  t.deepEqual(decodeAttestationRequest(full.subarray(0, 2)), { kind: 'incomplete', needed: 4 });
  t.deepEqual(decodeAttestationRequest(full.subarray(0, 10)), { kind: 'incomplete', needed: full.length });
  t.like(decodeAttestationRequest(Buffer.concat([full, Buffer.from('trailing')])), { kind: 'done', length: full.length });
});

test('a frame longer than the bound is refused from its header alone, before its body arrives', (t) => {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(MAX_ATTESTATION_REQUEST_BYTES - 3);
  t.like(decodeAttestationRequest(header), { kind: 'invalid', code: 'too_large' });
  header.writeUInt32BE(MAX_ATTESTATION_REQUEST_BYTES - 4);
  t.like(decodeAttestationRequest(header), { kind: 'incomplete' });
  header.writeUInt32BE(0xffffffff);
  t.like(decodeAttestationResponse(header), { kind: 'invalid', code: 'too_large' });
  header.writeUInt32BE(MAX_ATTESTATION_RESPONSE_BYTES - 4);
  t.like(decodeAttestationResponse(header), { kind: 'incomplete' });
});

test('malformed bodies are refused with what is wrong', (t) => {
  const cases: Array<[string, number[]]> = [
    ['a length past the end', [(1 << 3) | 2, 10, 0x41]],
    ['a truncated varint', [(2 << 3) | 0, 0x80]],
    ['a truncated key', [0x80]],
    ['field number 0', [0 | 2, 0]],
    ['wire type 3', [(1 << 3) | 3]],
    ['a truncated fixed64', [(1 << 3) | 1, 1, 2]],
  ];
  for (const [what, bytes] of cases) t.like(decodeAttestationRequest(frame(Uint8Array.from(bytes))), { kind: 'invalid', code: 'malformed' }, what);
});

test('an empty message decodes to empty fields (proto3 defaults)', (t) => {
  t.deepEqual(decodeAttestationRequest(frame(new Uint8Array())), { kind: 'done', value: { csr: '', vmId: '' }, length: 4 });
  t.like(decodeAttestationResponse(frame(new Uint8Array())), { kind: 'done', value: { ok: true, certificateChain: '', notAfterMs: 0 } });
});
