import test from 'ava';
import fc from 'fast-check';
import { RELAY_HEADER_LENGTH, decodeRelayHeader, encodeRelayHeader } from '../../proxy/relay-header.js';

test('the header is 16 bytes: magic, version 1, zero reserved, CID and port big-endian', (t) => {
  const bytes = encodeRelayHeader({ cid: 0x01020304, port: 0x0a0b0c0d });
  t.is(bytes.length, RELAY_HEADER_LENGTH);
  t.deepEqual([...bytes], [0x56, 0x4d, 0x52, 0x48, 1, 0, 0, 0, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
});

test('a header decodes to its destination', (t) => {
  t.deepEqual(decodeRelayHeader(encodeRelayHeader({ cid: 5, port: 15007 })), { kind: 'header', destination: { cid: 5, port: 15007 } });
});

test('bytes after the header are not part of it', (t) => {
  const withPayload = Buffer.concat([encodeRelayHeader({ cid: 3, port: 1 }), Buffer.from('PROXY v2 follows')]);
  t.deepEqual(decodeRelayHeader(withPayload), { kind: 'header', destination: { cid: 3, port: 1 } });
});

test('every proper prefix of a header is incomplete', (t) => {
  const bytes = encodeRelayHeader({ cid: 7, port: 9 });
  for (let n = 0; n < RELAY_HEADER_LENGTH; n++) t.deepEqual(decodeRelayHeader(bytes.subarray(0, n)), { kind: 'incomplete' }, `prefix ${n}`);
});

test('a wrong magic is refused at its first byte', (t) => {
  t.like(decodeRelayHeader(Buffer.from('G')), { kind: 'invalid', code: 'bad_magic' });
  t.like(decodeRelayHeader(Buffer.from('VMRX')), { kind: 'invalid', code: 'bad_magic' });
});

test('another version is refused', (t) => {
  const bytes = encodeRelayHeader({ cid: 7, port: 9 });
  bytes[4] = 2;
  t.like(decodeRelayHeader(bytes.subarray(0, 5)), { kind: 'invalid', code: 'bad_version' });
});

test('non-zero reserved bytes are refused', (t) => {
  for (const at of [5, 6, 7]) {
    const bytes = encodeRelayHeader({ cid: 7, port: 9 });
    bytes[at] = 1;
    t.like(decodeRelayHeader(bytes), { kind: 'invalid', code: 'bad_reserved' }, `byte ${at}`);
  }
});

test('destinations that cannot be connected to are refused', (t) => {
  for (const [cid, port] of [
    [0, 1],
    [0xffffffff, 1],
    [3, 0],
    [3, 0xffffffff],
  ] as const) {
    const bytes = encodeRelayHeader({ cid: 3, port: 1 });
    bytes.writeUInt32BE(cid, 8);
    bytes.writeUInt32BE(port, 12);
    t.like(decodeRelayHeader(bytes), { kind: 'invalid', code: 'bad_destination' }, `${cid}:${port}`);
  }
});

test('encoding refuses destinations outside 1..2^32-2', (t) => {
  t.throws(() => encodeRelayHeader({ cid: 0, port: 1 }), { instanceOf: RangeError });
  t.throws(() => encodeRelayHeader({ cid: 1, port: 0xffffffff }), { instanceOf: RangeError });
  t.throws(() => encodeRelayHeader({ cid: 1.5, port: 1 }), { instanceOf: RangeError });
});

test('any input decodes without throwing, and round trips hold', (t) => {
  t.notThrows(() => fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => ['incomplete', 'header', 'invalid'].includes(decodeRelayHeader(bytes).kind)),
    { seed: 42 },
  ));
  t.notThrows(() => fc.assert(
    fc.property(fc.integer({ min: 1, max: 0xfffffffe }), fc.integer({ min: 1, max: 0xfffffffe }), (cid, port) => {
      const result = decodeRelayHeader(encodeRelayHeader({ cid, port }));
      return result.kind === 'header' && result.destination.cid === cid && result.destination.port === port;
    }),
    { seed: 42 },
  ));
});
