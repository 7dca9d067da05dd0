// The native core's PROXY v2 parser (proxy/native/proxy-header.c) against the
// JavaScript decoder (proxy/proxy-protocol.ts): the same hand-written vectors,
// every prefix and every one-byte change of them, and random bytes, each
// decoded by both with the same options, must give the same answer (kind,
// bytes needed, error code, header length, command, family, transport, TLVs).

import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { FIXED_LENGTH, MAX_PAYLOAD_LENGTH, SIGNATURE, decodeProxyHeader, type DecodeResult } from '../../proxy/proxy-protocol.js';
import { native } from '../../proxy/native/index.js';
import { INVALID_VECTORS, IPV4_BLOCK, V4_CRC, V4_UDP, VALID_VECTORS, rawHeader } from '../helpers/proxy-v2-vectors.js';

const MAX = FIXED_LENGTH + MAX_PAYLOAD_LENGTH;
const FAMILIES = ['unspec', 'inet', 'inet6', 'unix'];
const TRANSPORTS = ['unspec', 'stream', 'dgram'];

/** Both parsers' answers in one shape; the C side reports TLVs as offsets, so they are read back from the input. */
function fromJs(r: DecodeResult): unknown {
  if (r.kind === 'incomplete') return ['incomplete', r.needed];
  if (r.kind === 'invalid') return ['invalid', r.code];
  const { header } = r;
  const addresses = header.addresses.family === 'unspec' ? null : [header.addresses.family, header.addresses.transport];
  return ['header', r.length, header.command, addresses, header.tlvs.map((t) => [t.type, t.value.toString('hex')])];
}

function fromC(input: Buffer, maxLength: number, streamOnly: boolean): unknown {
  const r = native.proxyHeaderDecode(input, maxLength, streamOnly);
  if (r[0] !== 'header') return r;
  const [, length, proxy, family, transport, ...flat] = r as [string, number, number, number, number, ...number[]];
  const tlvs: [number, string][] = [];
  for (let i = 0; i < flat.length; i += 3) tlvs.push([flat[i]!, input.subarray(flat[i + 1]!, flat[i + 1]! + flat[i + 2]!).toString('hex')]);
  // As the JavaScript decoder: LOCAL and UNSPEC carry no addresses.
  const addresses = proxy === 0 || family === 0 ? null : [FAMILIES[family], TRANSPORTS[transport]];
  return ['header', length, proxy === 1 ? 'proxy' : 'local', addresses, tlvs];
}

function agree(input: Uint8Array, maxLength: number, streamOnly: boolean): { ok: boolean; js: unknown; c: unknown } {
  const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const js = fromJs(decodeProxyHeader(bytes, { maxLength, streamOnly }));
  const c = fromC(bytes, maxLength, streamOnly);
  return { ok: JSON.stringify(js) === JSON.stringify(c), js, c };
}

function sameAnswer(t: ExecutionContext, input: Uint8Array, maxLength = MAX, streamOnly = false): void {
  const { js, c } = agree(input, maxLength, streamOnly);
  t.deepEqual(c, js, `input ${Buffer.from(input).toString('hex')} maxLength ${maxLength} streamOnly ${streamOnly}`);
}

test('every hand-written valid vector parses in C exactly as in JavaScript, with and without streamOnly', (t) => {
  for (const [name, vector] of Object.entries(VALID_VECTORS)) {
    t.is((fromC(vector, MAX, false) as unknown[])[0], 'header', name);
    sameAnswer(t, vector, MAX, false);
    sameAnswer(t, vector, MAX, true);
  }
});

test('every hand-written invalid vector is refused in C with the JavaScript decoder\'s code', (t) => {
  const codes = new Set<unknown>();
  for (const vector of INVALID_VECTORS) {
    const c = fromC(vector, MAX, false) as unknown[];
    t.is(c[0], 'invalid');
    codes.add(c[1]);
    sameAnswer(t, vector);
  }
  t.is(codes.size, INVALID_VECTORS.length);
});

test('streamOnly: C refuses a UDP header as not_stream from its 14th byte on, as JavaScript does', (t) => {
  t.deepEqual(fromC(V4_UDP, MAX, true), ['invalid', 'not_stream']);
  for (let n = 0; n <= V4_UDP.length; n++) sameAnswer(t, V4_UDP.subarray(0, n), MAX, true);
});

test('every prefix of every valid vector gets the same answer (bytes still needed) from both', (t) => {
  for (const vector of Object.values(VALID_VECTORS)) {
    for (let n = 0; n <= vector.length; n++) {
      sameAnswer(t, vector.subarray(0, n));
      sameAnswer(t, vector.subarray(0, n), MAX, true);
    }
  }
});

test('the maxLength limit is decided alike, at every limit around each vector\'s length', (t) => {
  for (const vector of Object.values(VALID_VECTORS)) {
    for (const limit of [0, 15, 16, vector.length - 1, vector.length, vector.length + 1, 256 + 16, MAX, MAX + 1000]) {
      for (let n = 13; n <= vector.length; n++) sameAnswer(t, vector.subarray(0, n), Math.max(0, limit));
    }
  }
  t.deepEqual(fromC(rawHeader(0x21, 0x11, Buffer.alloc(300)).subarray(0, 15), 256 + 15, false), ['invalid', 'too_large']);
});

test('every one-byte change of every valid vector (each position, 9 values) gets the same answer from both', (t) => {
  let compared = 0;
  for (const vector of [...Object.values(VALID_VECTORS), rawHeader(0x21, 0x11, IPV4_BLOCK)]) {
    for (let at = 0; at < vector.length; at++) {
      for (const value of [0x00, 0x01, 0x02, 0x03, 0x10, 0x20, 0x21, 0x7f, 0xff]) {
        const changed = Buffer.from(vector);
        changed[at] = value;
        const { ok, js, c } = agree(changed, MAX, at % 2 === 0);
        if (!ok) t.fail(`vector ${vector.toString('hex')} byte ${at} = ${value}: JavaScript ${JSON.stringify(js)}, C ${JSON.stringify(c)}`);
        compared++;
      }
    }
  }
  t.true(compared > 5000);
});

test('a checksummed header with its checksum wrong is bad_crc32c in both', (t) => {
  const wrong = Buffer.from(V4_CRC);
  wrong[wrong.length - 1] ^= 1;
  t.deepEqual(fromC(wrong, MAX, false), ['invalid', 'bad_crc32c']);
  sameAnswer(t, wrong);
});

const options = fc.record({ maxLength: fc.oneof(fc.constant(MAX), fc.integer({ min: 0, max: 700 })), streamOnly: fc.boolean() });

function holds(t: ExecutionContext, property: fc.IProperty<[Uint8Array, { maxLength: number; streamOnly: boolean }]>): void {
  const details = fc.check(property, { seed: 0x70c0de, numRuns: 3000 });
  t.false(details.failed, fc.defaultReportMessage(details) ?? 'property failed');
}

test('property: arbitrary bytes get the same answer from both', (t) => {
  holds(t, fc.property(fc.uint8Array({ maxLength: 300 }), options, (bytes, o) => agree(bytes, o.maxLength, o.streamOnly).ok));
});

test('property: the signature and a plausible fixed part followed by arbitrary bytes (TLV soup) get the same answer from both', (t) => {
  const fixed = fc.tuple(fc.constantFrom(0x20, 0x21, 0x22, 0x31), fc.constantFrom(0x00, 0x01, 0x10, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x41, 0x13), fc.integer({ min: 0, max: 600 }));
  const input = fc.tuple(fixed, fc.uint8Array({ maxLength: 600 })).map(([[versionCommand, family, length], rest]) =>
    Uint8Array.from(Buffer.concat([Buffer.from(SIGNATURE), Buffer.from([versionCommand, family, length >> 8, length & 0xff]), rest])),
  );
  holds(t, fc.property(input, options, (bytes, o) => agree(bytes, o.maxLength, o.streamOnly).ok));
});

test('property: TLV lists built of well-formed, empty, overrunning and CRC32C entries get the same answer from both', (t) => {
  const tlv = fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 20 })).map(([type, value]) => Buffer.concat([Buffer.from([type, value.length >> 8, value.length & 0xff]), value])),
    fc.uint8Array({ minLength: 4, maxLength: 4 }).map((value) => Buffer.concat([Buffer.from([0x03, 0, 4]), value])),
    fc.uint8Array({ maxLength: 4 }).map((b) => Buffer.from(b)),
  );
  const input = fc.tuple(fc.constantFrom(0x20, 0x21), fc.constantFrom(0x00, 0x11, 0x21), fc.array(tlv, { maxLength: 6 })).map(([versionCommand, family, tlvs]) => {
    const block = family === 0x11 ? IPV4_BLOCK : family === 0x21 ? Buffer.alloc(36, 7) : Buffer.alloc(0);
    return Uint8Array.from(rawHeader(versionCommand, family, Buffer.concat([block, ...tlvs])));
  });
  holds(t, fc.property(input, options, (bytes, o) => agree(bytes, o.maxLength, o.streamOnly).ok));
});
