// The bytes a VM's sidecar and its host agent exchange over vsock for an
// attested first certificate: one frame each way, a 4-byte big-endian length
// then a protobuf message (vsockmesh.identity.v1.AttestationRequest /
// AttestationResponse in proto/vsockmesh/identity/v1/identity.proto). Encoded
// here by hand (two and six fields) so that the data plane loads no protobuf
// runtime; a unit test checks these bytes against protobufjs both ways. Pure.

/** A P-256 CSR is under 1 KiB; the same bound as Certify's (xds/identity/csr-check.ts). */
export const MAX_ATTESTATION_CSR_CHARS = 16 * 1024;
/** A VM id is one SPIFFE path segment; the frame bound leaves room for it. */
export const MAX_ATTESTATION_REQUEST_BYTES = 20 * 1024;
/** A chain and a bundle during a root rotation: a few KiB; the bound keeps a reader's buffer small. */
export const MAX_ATTESTATION_RESPONSE_BYTES = 256 * 1024;
export const FRAME_HEADER_BYTES = 4;

export interface AttestationRequest {
  csr: string;
  vmId: string;
}

export type AttestationResponse =
  | { ok: true; certificateChain: string; notAfterMs: number; trustBundle: string; spiffeId: string }
  | { ok: false; reason: string; message: string };

export type FrameDecode<T> = { kind: 'incomplete'; needed: number } | { kind: 'done'; value: T; length: number } | { kind: 'invalid'; code: string; reason: string };

// ---- protobuf, the subset these two messages use --------------------------------------

const VARINT = 0;
const LEN = 2;

function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

class Writer {
  private readonly parts: Buffer[] = [];
  string(field: number, value: string): this {
    if (value === '') return this;
    const bytes = Buffer.from(value, 'utf8');
    this.parts.push(Buffer.from([...varint((field << 3) | LEN), ...varint(bytes.length)]), bytes);
    return this;
  }
  uint(field: number, value: number): this {
    if (value === 0) return this;
    this.parts.push(Buffer.from([...varint((field << 3) | VARINT), ...varint(value)]));
    return this;
  }
  frame(): Buffer {
    const body = Buffer.concat(this.parts);
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.writeUInt32BE(body.length);
    return Buffer.concat([header, body]);
  }
}

/** Fields of one message: strings by number, integers by number (unknown fields skipped, as protobuf does). */
function readFields(body: Buffer): { strings: Map<number, string>; uints: Map<number, number> } | string {
  const strings = new Map<number, string>();
  const uints = new Map<number, number>();
  let at = 0;
  const readVarint = (): number | undefined => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= body.length) return undefined;
      const b = body[at++]!;
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 0x80;
    }
    return undefined;
  };
  while (at < body.length) {
    const key = readVarint();
    if (key === undefined) return 'a truncated field key';
    const field = Math.floor(key / 8);
    const type = key % 8;
    if (field === 0) return 'field number 0';
    if (type === VARINT) {
      const v = readVarint();
      if (v === undefined) return `field ${field}: a truncated varint`;
      uints.set(field, v);
    } else if (type === LEN) {
      const length = readVarint();
      if (length === undefined || at + length > body.length) return `field ${field}: a length past the end of the message`;
      strings.set(field, body.toString('utf8', at, at + length));
      at += length;
    } else if (type === 1 || type === 5) {
      at += type === 1 ? 8 : 4;
      if (at > body.length) return `field ${field}: truncated`;
    } else {
      return `field ${field}: wire type ${type} is not supported`;
    }
  }
  return { strings, uints };
}

/** One frame from the start of `bytes`, its body judged by `decode`. */
function decodeFrame<T>(bytes: Buffer, maxBytes: number, what: string, decode: (body: Buffer) => T | string): FrameDecode<T> {
  if (bytes.length < FRAME_HEADER_BYTES) return { kind: 'incomplete', needed: FRAME_HEADER_BYTES };
  const length = bytes.readUInt32BE(0);
  if (length > maxBytes - FRAME_HEADER_BYTES) return { kind: 'invalid', code: 'too_large', reason: `the ${what} is ${length} bytes, more than ${maxBytes - FRAME_HEADER_BYTES}` };
  if (bytes.length < FRAME_HEADER_BYTES + length) return { kind: 'incomplete', needed: FRAME_HEADER_BYTES + length };
  const value = decode(bytes.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length));
  if (typeof value === 'string') return { kind: 'invalid', code: 'malformed', reason: `the ${what} is not a valid message: ${value}` };
  return { kind: 'done', value, length: FRAME_HEADER_BYTES + length };
}

// ---- the two messages -------------------------------------------------------------------

export function encodeAttestationRequest(r: AttestationRequest): Buffer {
  return new Writer().string(1, r.csr).string(2, r.vmId).frame();
}

export function decodeAttestationRequest(bytes: Buffer): FrameDecode<AttestationRequest> {
  return decodeFrame(bytes, MAX_ATTESTATION_REQUEST_BYTES, 'attestation request', (body) => {
    const fields = readFields(body);
    if (typeof fields === 'string') return fields;
    return { csr: fields.strings.get(1) ?? '', vmId: fields.strings.get(2) ?? '' };
  });
}

export function encodeAttestationResponse(r: AttestationResponse): Buffer {
  const w = new Writer();
  if (r.ok) return w.string(1, r.certificateChain).uint(2, r.notAfterMs).string(3, r.trustBundle).string(4, r.spiffeId).frame();
  return w.string(5, r.reason).string(6, r.message).frame();
}

export function decodeAttestationResponse(bytes: Buffer): FrameDecode<AttestationResponse> {
  return decodeFrame(bytes, MAX_ATTESTATION_RESPONSE_BYTES, 'attestation response', (body): AttestationResponse | string => {
    const fields = readFields(body);
    if (typeof fields === 'string') return fields;
    const s = (n: number): string => fields.strings.get(n) ?? '';
    if (s(5) !== '') return { ok: false, reason: s(5), message: s(6) };
    return { ok: true, certificateChain: s(1), notAfterMs: fields.uints.get(2) ?? 0, trustBundle: s(3), spiffeId: s(4) };
  });
}
