// PROXY protocol v2 codec: byte vectors written out by hand from HAProxy's
// doc/proxy-protocol.txt, round trips, every decoder error, incremental decoding,
// CRC32C, and fast-check properties (never throws, round trip, prefixes, mutations).

import test, { type ExecutionContext } from 'ava';
import { deepStrictEqual } from 'node:assert/strict';
import fc from 'fast-check';
import {
  FIXED_LENGTH,
  MAX_PAYLOAD_LENGTH,
  ProxyHeaderTemplate,
  SIGNATURE,
  TLV,
  acceptedEndpoint,
  acceptedTlvText,
  crc32c,
  decodeProxyHeader,
  encodeProxyHeader,
  tcpAddresses,
  textTlv,
  tlvText,
  type DecodeResult,
  type HeaderErrorCode,
  type ProxyAddresses,
  type ProxyHeader,
  type Tlv,
  type Transport,
} from '../../proxy/proxy-protocol.js';
import {
  AUTHORITY_TLV,
  INVALID_VECTORS,
  IPV4_BLOCK,
  IPV6_BLOCK,
  LOCAL_CRC,
  LOCAL_UNSPEC,
  PROXY_UNSPEC,
  SIG,
  UNIX_STREAM,
  V4_CRC,
  V4_TCP,
  V4_TLVS,
  V4_UDP,
  V6_TCP,
  V6_UDP_MAPPED,
  VALID_VECTORS,
  hex,
  rawHeader,
  zeros,
} from '../helpers/proxy-v2-vectors.js';

const SEED = 0x70c0de;

/** Runs a fast-check property and records one ava assertion with the counterexample, if any. */
function holds<Ts extends [unknown, ...unknown[]]>(t: ExecutionContext, property: fc.IProperty<Ts>, params: fc.Parameters<Ts> = {}): void {
  const details = fc.check(property, { seed: SEED, ...params });
  t.false(details.failed, fc.defaultReportMessage(details) ?? 'property failed');
}


const ERROR_CODES: readonly HeaderErrorCode[] = [
  'not_proxy_v2',
  'proxy_v1_unsupported',
  'bad_version',
  'bad_command',
  'bad_family',
  'too_large',
  'short_address_block',
  'bad_tlv',
  'bad_crc32c',
  'not_stream',
];

/** A bitwise CRC-32C (no table), to check the table-driven one against. */
function referenceCrc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function decoded(t: ExecutionContext, result: DecodeResult): { header: ProxyHeader; length: number } {
  if (result.kind !== 'header') {
    t.fail(`expected a header, got ${JSON.stringify(result)}`);
    throw new Error('not a header');
  }
  return result;
}

function invalidCode(result: DecodeResult): HeaderErrorCode | undefined {
  return result.kind === 'invalid' ? result.code : undefined;
}

function hasCrcTlv(result: DecodeResult): boolean {
  return result.kind === 'header' && result.header.tlvs.some((tlv) => tlv.type === TLV.CRC32C);
}

function inet(source: string, sourcePort: number, destination: string, destinationPort: number, transport: Transport = 'stream'): ProxyAddresses {
  return { family: 'inet', transport, source: { address: source, port: sourcePort }, destination: { address: destination, port: destinationPort } };
}

function inet6(source: string, sourcePort: number, destination: string, destinationPort: number, transport: Transport = 'stream'): ProxyAddresses {
  return { family: 'inet6', transport, source: { address: source, port: sourcePort }, destination: { address: destination, port: destinationPort } };
}

function proxy(addresses: ProxyAddresses, tlvs: Tlv[] = []): ProxyHeader {
  return { command: 'proxy', addresses, tlvs };
}


// ---------------------------------------------------------------------------
// Hand-written vectors
// ---------------------------------------------------------------------------

test('SIGNATURE is the 12-byte block the spec defines and FIXED_LENGTH is 16', (t) => {
  t.deepEqual(Buffer.from(SIGNATURE), hex(SIG));
  t.is(FIXED_LENGTH, 16);
  t.is(MAX_PAYLOAD_LENGTH, 65535);
});

test('an IPv4 TCP header decodes to its addresses and ports', (t) => {
  t.deepEqual(decodeProxyHeader(V4_TCP), {
    kind: 'header',
    length: 28,
    header: proxy(inet('127.0.0.1', 1234, '10.0.0.2', 80)),
  });
});

test('encoding the IPv4 TCP header gives exactly the spec bytes', (t) => {
  t.deepEqual(encodeProxyHeader(proxy(inet('127.0.0.1', 1234, '10.0.0.2', 80))), V4_TCP);
});

test('an IPv4 UDP header decodes with the dgram transport and encodes back to the same bytes', (t) => {
  const header = proxy(inet('192.168.0.1', 56324, '192.168.0.11', 443, 'dgram'));
  t.deepEqual(decodeProxyHeader(V4_UDP), { kind: 'header', length: 28, header });
  t.deepEqual(encodeProxyHeader(header), V4_UDP);
});

test('an IPv6 TCP header decodes to RFC 5952 addresses and its ports', (t) => {
  t.deepEqual(decodeProxyHeader(V6_TCP), {
    kind: 'header',
    length: 52,
    header: proxy(inet6('2001:db8::1', 50000, 'fe80::a:b', 8443)),
  });
});

test('encoding the IPv6 TCP header gives exactly the spec bytes, whatever the input spelling', (t) => {
  t.deepEqual(encodeProxyHeader(proxy(inet6('2001:db8::1', 50000, 'fe80::a:b', 8443))), V6_TCP);
  t.deepEqual(encodeProxyHeader(proxy(inet6('2001:0DB8:0:0:0:0:0:0001', 50000, 'FE80::000A:000B', 8443))), V6_TCP);
});

test('an IPv6 UDP header with IPv4-mapped addresses decodes to dotted-tail addresses and encodes back', (t) => {
  const header = proxy(inet6('::ffff:10.0.0.1', 40000, '::ffff:10.0.0.2', 53, 'dgram'));
  t.deepEqual(decodeProxyHeader(V6_UDP_MAPPED), { kind: 'header', length: 52, header });
  t.deepEqual(encodeProxyHeader(header), V6_UDP_MAPPED);
});

test('the 16-byte LOCAL UNSPEC header decodes to a local command with no addresses', (t) => {
  t.deepEqual(decodeProxyHeader(LOCAL_UNSPEC), {
    kind: 'header',
    length: 16,
    header: { command: 'local', addresses: { family: 'unspec' }, tlvs: [] },
  });
});

test('encoding a LOCAL UNSPEC header gives exactly the 16 spec bytes', (t) => {
  t.deepEqual(encodeProxyHeader({ command: 'local', addresses: { family: 'unspec' }, tlvs: [] }), LOCAL_UNSPEC);
});

test('a PROXY UNSPEC header decodes with no addresses and encodes back to the same bytes', (t) => {
  const header = proxy({ family: 'unspec' });
  t.deepEqual(decodeProxyHeader(PROXY_UNSPEC), { kind: 'header', length: 16, header });
  t.deepEqual(encodeProxyHeader(header), PROXY_UNSPEC);
});

test('a UNIX stream header decodes to its NUL-terminated paths', (t) => {
  t.deepEqual(decodeProxyHeader(UNIX_STREAM), {
    kind: 'header',
    length: 16 + 216,
    header: proxy({ family: 'unix', transport: 'stream', source: '/run/app.sock', destination: '/run/peer.sock' }),
  });
});

test('encoding the UNIX stream header gives exactly the spec bytes', (t) => {
  t.deepEqual(encodeProxyHeader(proxy({ family: 'unix', transport: 'stream', source: '/run/app.sock', destination: '/run/peer.sock' })), UNIX_STREAM);
});

test('a UNIX datagram header with 108-byte paths (no NUL) decodes and encodes back', (t) => {
  const a = 'a'.repeat(108);
  const b = 'b'.repeat(108);
  const bytes = Buffer.concat([hex(`${SIG} 21 32 00 d8`), Buffer.alloc(108, 0x61), Buffer.alloc(108, 0x62)]);
  const header = proxy({ family: 'unix', transport: 'dgram', source: a, destination: b });
  t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: 232, header });
  t.deepEqual(encodeProxyHeader(header), bytes);
});

test('a header with authority and vsockmesh TLVs decodes to those TLVs in order', (t) => {
  const { header, length } = decoded(t, decodeProxyHeader(V4_TLVS));
  t.is(length, 16 + 44);
  t.deepEqual(header.tlvs, [
    { type: 0x02, value: Buffer.from('web.mesh') },
    { type: 0xe0, value: Buffer.from('vm-a') },
    { type: 0xe1, value: Buffer.from('vm-b') },
    { type: 0xe2, value: Buffer.from('http') },
  ]);
  t.is(tlvText(header, TLV.AUTHORITY), 'web.mesh');
  t.is(tlvText(header, TLV.VSOCKMESH_SOURCE_VM), 'vm-a');
  t.is(tlvText(header, TLV.VSOCKMESH_DESTINATION_VM), 'vm-b');
  t.is(tlvText(header, TLV.VSOCKMESH_PROTOCOL), 'http');
});

test('encoding the header with authority and vsockmesh TLVs gives exactly the spec bytes', (t) => {
  const header = proxy(inet('10.0.0.1', 40000, '10.0.0.2', 8080), [
    textTlv(TLV.AUTHORITY, 'web.mesh'),
    textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a'),
    textTlv(TLV.VSOCKMESH_DESTINATION_VM, 'vm-b'),
    textTlv(TLV.VSOCKMESH_PROTOCOL, 'http'),
  ]);
  t.deepEqual(encodeProxyHeader(header), V4_TLVS);
});

test('the TLV type constants have the values the spec and README assign', (t) => {
  t.deepEqual(
    [TLV.ALPN, TLV.AUTHORITY, TLV.CRC32C, TLV.NOOP, TLV.UNIQUE_ID, TLV.SSL, TLV.NETNS, TLV.VSOCKMESH_SOURCE_VM, TLV.VSOCKMESH_DESTINATION_VM, TLV.VSOCKMESH_PROTOCOL],
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30, 0xe0, 0xe1, 0xe2],
  );
});

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

const SAMPLE_TLVS: Tlv[] = [
  textTlv(TLV.AUTHORITY, 'web.mesh'),
  textTlv(TLV.VSOCKMESH_SOURCE_VM, 'vm-a'),
  textTlv(TLV.VSOCKMESH_DESTINATION_VM, 'vm-b'),
  textTlv(TLV.VSOCKMESH_PROTOCOL, 'http'),
  { type: TLV.NOOP, value: Buffer.alloc(0) },
  { type: TLV.UNIQUE_ID, value: Buffer.from([0, 1, 2, 0xff]) },
];

const ADDRESSES_BY_FAMILY: Record<'inet' | 'inet6' | 'unix', (transport: Transport) => ProxyAddresses> = {
  inet: (transport) => inet('192.0.2.10', 0, '198.51.100.7', 65535, transport),
  inet6: (transport) => inet6('2001:db8::10', 1, '::ffff:198.51.100.7', 65534, transport),
  unix: (transport) => ({ family: 'unix', transport, source: '/tmp/a.sock', destination: '/var/run/b.sock' }),
};

for (const family of ['inet', 'inet6', 'unix'] as const) {
  for (const transport of ['unspec', 'stream', 'dgram'] as const) {
    test(`a PROXY ${family}/${transport} header with TLVs survives encode then decode`, (t) => {
      const header = proxy(ADDRESSES_BY_FAMILY[family](transport), SAMPLE_TLVS);
      const bytes = encodeProxyHeader(header);
      t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: bytes.length, header });
    });

    test(`a LOCAL ${family}/${transport} header decodes with its addresses ignored and its TLVs kept`, (t) => {
      const header: ProxyHeader = { command: 'local', addresses: ADDRESSES_BY_FAMILY[family](transport), tlvs: SAMPLE_TLVS };
      const bytes = encodeProxyHeader(header);
      t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: bytes.length, header: { command: 'local', addresses: { family: 'unspec' }, tlvs: SAMPLE_TLVS } });
    });
  }
}

for (const command of ['proxy', 'local'] as const) {
  test(`a ${command.toUpperCase()} UNSPEC header with TLVs survives encode then decode`, (t) => {
    const header: ProxyHeader = { command, addresses: { family: 'unspec' }, tlvs: SAMPLE_TLVS };
    const bytes = encodeProxyHeader(header);
    t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: bytes.length, header });
  });
}

test('the encoder sets the family/transport byte for every combination as the spec lists', (t) => {
  const expected: Array<[ProxyAddresses, number]> = [
    [{ family: 'unspec' }, 0x00],
    [ADDRESSES_BY_FAMILY.inet('unspec'), 0x10],
    [ADDRESSES_BY_FAMILY.inet('stream'), 0x11],
    [ADDRESSES_BY_FAMILY.inet('dgram'), 0x12],
    [ADDRESSES_BY_FAMILY.inet6('unspec'), 0x20],
    [ADDRESSES_BY_FAMILY.inet6('stream'), 0x21],
    [ADDRESSES_BY_FAMILY.inet6('dgram'), 0x22],
    [ADDRESSES_BY_FAMILY.unix('unspec'), 0x30],
    [ADDRESSES_BY_FAMILY.unix('stream'), 0x31],
    [ADDRESSES_BY_FAMILY.unix('dgram'), 0x32],
  ];
  for (const [addresses, byte] of expected) {
    const bytes = encodeProxyHeader(proxy(addresses));
    t.is(bytes[13], byte, JSON.stringify(addresses));
    t.is(bytes[12], 0x21);
  }
  t.is(encodeProxyHeader({ command: 'local', addresses: { family: 'unspec' }, tlvs: [] })[12], 0x20);
});

test('empty TLV values, repeated types and TLV order survive a round trip', (t) => {
  const tlvs: Tlv[] = [
    { type: TLV.NOOP, value: Buffer.alloc(0) },
    { type: 0xe0, value: Buffer.alloc(0) },
    textTlv(0xe0, 'second'),
    { type: 0x00, value: Buffer.from([0]) },
    { type: 0xff, value: Buffer.alloc(0) },
    { type: TLV.NOOP, value: Buffer.alloc(7) },
  ];
  const header = proxy(ADDRESSES_BY_FAMILY.inet('stream'), tlvs);
  t.deepEqual(decoded(t, decodeProxyHeader(encodeProxyHeader(header))).header.tlvs, tlvs);
});

test('a TLV value filling the whole 65535-byte payload round-trips', (t) => {
  const value = Buffer.alloc(MAX_PAYLOAD_LENGTH - 3, 0x5a);
  const header = proxy({ family: 'unspec' }, [{ type: TLV.NOOP, value }]);
  const bytes = encodeProxyHeader(header);
  t.is(bytes.length, FIXED_LENGTH + MAX_PAYLOAD_LENGTH);
  t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: bytes.length, header });
});

test('an IPv4 header whose TLV brings the payload to exactly 65535 bytes round-trips', (t) => {
  const header = proxy(ADDRESSES_BY_FAMILY.inet('stream'), [{ type: 0xe2, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 12 - 3, 1) }]);
  const bytes = encodeProxyHeader(header);
  t.is(bytes.readUInt16BE(14), MAX_PAYLOAD_LENGTH);
  t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: bytes.length, header });
});

test('21845 empty TLVs filling the 65535-byte payload round-trip', (t) => {
  const tlvs = Array.from({ length: MAX_PAYLOAD_LENGTH / 3 }, () => ({ type: TLV.NOOP, value: Buffer.alloc(0) }));
  const bytes = encodeProxyHeader(proxy({ family: 'unspec' }, tlvs));
  t.is(bytes.length, FIXED_LENGTH + MAX_PAYLOAD_LENGTH);
  t.is(decoded(t, decodeProxyHeader(bytes)).header.tlvs.length, tlvs.length);
});

test('a header with a CRC32C TLV and the largest TLV that still fits round-trips', (t) => {
  const value = Buffer.alloc(MAX_PAYLOAD_LENGTH - 7 - 3, 0x33);
  const bytes = encodeProxyHeader(proxy({ family: 'unspec' }, [{ type: 0xe0, value }]), { crc32c: true });
  t.is(bytes.length, FIXED_LENGTH + MAX_PAYLOAD_LENGTH);
  const { header } = decoded(t, decodeProxyHeader(bytes));
  t.deepEqual(header.tlvs[0], { type: 0xe0, value });
  t.is(header.tlvs[1]!.type, TLV.CRC32C);
});

test('non-ASCII text TLVs round-trip as UTF-8', (t) => {
  const header = proxy(ADDRESSES_BY_FAMILY.inet('stream'), [textTlv(TLV.AUTHORITY, 'bücher.example'), textTlv(0xe0, 'vm-😀')]);
  const back = decoded(t, decodeProxyHeader(encodeProxyHeader(header))).header;
  t.is(tlvText(back, TLV.AUTHORITY), 'bücher.example');
  t.is(tlvText(back, 0xe0), 'vm-😀');
});

test('textTlv stores the UTF-8 bytes of its text', (t) => {
  t.deepEqual(textTlv(0xe1, 'é'), { type: 0xe1, value: Buffer.from([0xc3, 0xa9]) });
});

test('tlvText returns the first TLV of a type, or undefined when there is none', (t) => {
  const header = proxy({ family: 'unspec' }, [textTlv(0xe0, 'first'), textTlv(0xe0, 'second'), { type: 0xe1, value: Buffer.alloc(0) }]);
  t.is(tlvText(header, 0xe0), 'first');
  t.is(tlvText(header, 0xe1), '');
  t.is(tlvText(header, TLV.AUTHORITY), undefined);
});

test('decoded TLV values are copies that do not change when the input buffer is reused', (t) => {
  const bytes = Buffer.from(V4_TLVS);
  const { header } = decoded(t, decodeProxyHeader(bytes));
  bytes.fill(0);
  t.is(tlvText(header, TLV.AUTHORITY), 'web.mesh');
  t.is(tlvText(header, TLV.VSOCKMESH_PROTOCOL), 'http');
});

test('the decoder reads a plain Uint8Array view that starts inside a larger buffer', (t) => {
  const backing = new Uint8Array(V4_TLVS.length + 10);
  backing.set(V4_TLVS, 7);
  const view = backing.subarray(7, 7 + V4_TLVS.length);
  const result = decodeProxyHeader(view);
  t.is(result.kind, 'header');
  t.deepEqual(result, decodeProxyHeader(V4_TLVS));
});

test('a UNIX path is cut at its first NUL byte when decoded', (t) => {
  const bytes = encodeProxyHeader(proxy({ family: 'unix', transport: 'stream', source: 'a\0hidden', destination: '' }));
  t.deepEqual(decoded(t, decodeProxyHeader(bytes)).header.addresses, { family: 'unix', transport: 'stream', source: 'a', destination: '' });
});

test('tcpAddresses picks inet for two IPv4 endpoints', (t) => {
  t.deepEqual(tcpAddresses({ address: '10.0.0.1', port: 1 }, { address: '10.0.0.2', port: 2 }), inet('10.0.0.1', 1, '10.0.0.2', 2));
});

test('tcpAddresses picks inet6 for IPv6 endpoints', (t) => {
  t.deepEqual(tcpAddresses({ address: '::1', port: 1 }, { address: '2001:db8::2', port: 2 }), inet6('::1', 1, '2001:db8::2', 2));
});

test('tcpAddresses maps an IPv4 endpoint into IPv6 when the other one is IPv6', (t) => {
  const addresses = tcpAddresses({ address: '10.0.0.1', port: 1 }, { address: '2001:db8::2', port: 2 });
  t.deepEqual(addresses, inet6('::ffff:10.0.0.1', 1, '2001:db8::2', 2));
  t.deepEqual(decoded(t, decodeProxyHeader(encodeProxyHeader(proxy(addresses)))).header.addresses, addresses);
});

// ---------------------------------------------------------------------------
// Encoder input errors
// ---------------------------------------------------------------------------

test('encoding refuses an IPv4 family header whose address is not IPv4', (t) => {
  for (const bad of ['256.0.0.1', '1.2.3', '::1', '::ffff:1.2.3.4', 'localhost', '']) {
    t.throws(() => encodeProxyHeader(proxy(inet(bad, 1, '10.0.0.2', 2))), { instanceOf: RangeError }, bad);
    t.throws(() => encodeProxyHeader(proxy(inet('10.0.0.1', 1, bad, 2))), { instanceOf: RangeError }, bad);
  }
});

test('encoding refuses an IPv6 family header whose address is not IPv6', (t) => {
  for (const bad of ['1::2::3', '12345::', '10.0.0.1', 'fe80::1%', 'localhost', '']) {
    t.throws(() => encodeProxyHeader(proxy(inet6(bad, 1, '::1', 2))), { instanceOf: RangeError }, bad);
    t.throws(() => encodeProxyHeader(proxy(inet6('::1', 1, bad, 2))), { instanceOf: RangeError }, bad);
  }
});

test('encoding accepts an IPv6 address with a zone id and drops the zone', (t) => {
  const bytes = encodeProxyHeader(proxy(inet6('fe80::1%eth0', 1, '::1', 2)));
  t.deepEqual(decoded(t, decodeProxyHeader(bytes)).header.addresses, inet6('fe80::1', 1, '::1', 2));
});

test('encoding refuses ports outside 0..65535 or not integers', (t) => {
  for (const port of [-1, 65536, 1.5, Number.NaN, Infinity]) {
    t.throws(() => encodeProxyHeader(proxy(inet('10.0.0.1', port, '10.0.0.2', 2))), { instanceOf: RangeError }, String(port));
    t.throws(() => encodeProxyHeader(proxy(inet6('::1', 1, '::2', port))), { instanceOf: RangeError }, String(port));
  }
});

test('encoding refuses a payload over 65535 bytes', (t) => {
  t.throws(() => encodeProxyHeader(proxy({ family: 'unspec' }, [{ type: TLV.NOOP, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 2) }])), { instanceOf: RangeError });
  t.throws(() => encodeProxyHeader(proxy(ADDRESSES_BY_FAMILY.inet('stream'), [{ type: TLV.NOOP, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 14) }])), {
    instanceOf: RangeError,
  });
});

test('encoding refuses a payload that only the CRC32C TLV pushes over 65535 bytes', (t) => {
  const header = proxy({ family: 'unspec' }, [{ type: TLV.NOOP, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 3) }]);
  t.notThrows(() => encodeProxyHeader(header));
  t.throws(() => encodeProxyHeader(header, { crc32c: true }), { instanceOf: RangeError });
});

test('encoding refuses a TLV type that is not a byte', (t) => {
  for (const type of [-1, 256, 1.5, Number.NaN]) {
    t.throws(() => encodeProxyHeader(proxy({ family: 'unspec' }, [{ type, value: Buffer.alloc(0) }])), { instanceOf: RangeError }, String(type));
  }
});

test('encoding refuses an explicit CRC32C TLV', (t) => {
  t.throws(() => encodeProxyHeader(proxy({ family: 'unspec' }, [{ type: TLV.CRC32C, value: Buffer.alloc(4) }])), { instanceOf: RangeError, message: /crc32c/i });
});

test('encoding refuses a UNIX path longer than 108 bytes', (t) => {
  t.throws(() => encodeProxyHeader(proxy({ family: 'unix', transport: 'stream', source: 'x'.repeat(109), destination: '' })), { instanceOf: RangeError });
  t.throws(() => encodeProxyHeader(proxy({ family: 'unix', transport: 'stream', source: '', destination: 'é'.repeat(55) })), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------
// CRC32C
// ---------------------------------------------------------------------------

test('crc32c gives the standard check value for "123456789"', (t) => {
  t.is(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('crc32c of no bytes is 0', (t) => {
  t.is(crc32c(new Uint8Array(0)), 0);
});

test('crc32c agrees with a bitwise CRC-32C on arbitrary bytes', (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => crc32c(bytes) === referenceCrc32c(bytes)),
    { numRuns: 200 },
  );
});

test('a hand-written header with a CRC32C TLV decodes, checksum included', (t) => {
  const { header, length } = decoded(t, decodeProxyHeader(V4_CRC));
  t.is(length, V4_CRC.length);
  t.deepEqual(header.addresses, inet('192.168.0.1', 56324, '192.168.0.11', 443));
  t.deepEqual(header.tlvs, [textTlv(TLV.AUTHORITY, 'web.mesh'), { type: TLV.CRC32C, value: hex('e1 b4 9c 63') }]);
});

test('encoding with crc32c: true gives exactly the hand-written checksummed bytes', (t) => {
  const header = proxy(inet('192.168.0.1', 56324, '192.168.0.11', 443), [textTlv(TLV.AUTHORITY, 'web.mesh')]);
  t.deepEqual(encodeProxyHeader(header, { crc32c: true }), V4_CRC);
});

test('a LOCAL header carrying only a CRC32C TLV decodes and is what the encoder writes', (t) => {
  const local: ProxyHeader = { command: 'local', addresses: { family: 'unspec' }, tlvs: [] };
  t.deepEqual(decodeProxyHeader(LOCAL_CRC), { kind: 'header', length: 23, header: { ...local, tlvs: [{ type: TLV.CRC32C, value: hex('a9 b8 7e 8f') }] } });
  t.deepEqual(encodeProxyHeader(local, { crc32c: true }), LOCAL_CRC);
});

test('the encoder appends the CRC32C TLV last, over the whole header with its field zeroed', (t) => {
  const bytes = encodeProxyHeader(proxy(ADDRESSES_BY_FAMILY.inet6('stream'), SAMPLE_TLVS), { crc32c: true });
  t.deepEqual(bytes.subarray(bytes.length - 7, bytes.length - 4), hex('03 00 04'));
  const zeroed = Buffer.from(bytes);
  zeroed.writeUInt32BE(0, bytes.length - 4);
  t.is(bytes.readUInt32BE(bytes.length - 4), referenceCrc32c(zeroed));
  t.is(decodeProxyHeader(bytes).kind, 'header');
});

test('a CRC32C TLV placed before other TLVs is checked too', (t) => {
  const bytes = rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('03 00 04 00 00 00 00'), AUTHORITY_TLV]));
  bytes.writeUInt32BE(referenceCrc32c(bytes), 16 + 12 + 3);
  t.is(decodeProxyHeader(bytes).kind, 'header');
  bytes[bytes.length - 1] ^= 1;
  t.is(invalidCode(decodeProxyHeader(bytes)), 'bad_crc32c');
});

test('a header whose CRC32C value is wrong is bad_crc32c', (t) => {
  const bytes = Buffer.from(V4_CRC);
  bytes.writeUInt32BE(0xe1b49c62, bytes.length - 4);
  t.is(invalidCode(decodeProxyHeader(bytes)), 'bad_crc32c');
  bytes.writeUInt32BE(0, bytes.length - 4);
  t.is(invalidCode(decodeProxyHeader(bytes)), 'bad_crc32c');
});

test('a CRC32C TLV whose value is not 4 bytes is bad_tlv', (t) => {
  for (const value of [hex(''), hex('01 02 03'), hex('01 02 03 04 05')]) {
    const tlv = Buffer.concat([hex('03'), Buffer.from([0, value.length]), value]);
    t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, tlv])))), 'bad_tlv', value.toString('hex'));
  }
});

test('changing any one byte of a checksummed header never yields a header that still carries the checksum', (t) => {
  // Every position, every other byte value. The only changes that decode at all remove
  // the CRC32C TLV itself, which the protocol cannot detect (the TLV is optional):
  // its type byte (39), the header length cut to a TLV boundary before it (15 -> 0x0c
  // or 0x17), or the authority TLV grown to swallow it (30 -> 0x0f).
  const accepted: string[] = [];
  let rejected = 0;
  for (let i = 0; i < V4_CRC.length; i++) {
    for (let value = 0; value < 256; value++) {
      if (value === V4_CRC[i]) continue;
      const mutated = Buffer.from(V4_CRC);
      mutated[i] = value;
      const result = decodeProxyHeader(mutated);
      if (hasCrcTlv(result)) t.fail(`byte ${i} = 0x${value.toString(16)} was accepted with a checksum`);
      if (result.kind === 'header') {
        if (i !== 39) accepted.push(`${i}:${value.toString(16)}`);
      } else {
        rejected++;
      }
    }
  }
  t.deepEqual(accepted, ['15:c', '15:17', '30:f']);
  t.is(rejected, V4_CRC.length * 255 - 255 - accepted.length);
});

test('changing any byte covered by the checksum (addresses, ports, TLV values, the checksum) is bad_crc32c', (t) => {
  const covered = [...range(16, 28), ...range(31, 39), ...range(42, 46)];
  for (const i of covered) {
    for (let bit = 0; bit < 8; bit++) {
      const mutated = Buffer.from(V4_CRC);
      mutated[i]! ^= 1 << bit;
      t.is(invalidCode(decodeProxyHeader(mutated)), 'bad_crc32c', `byte ${i} bit ${bit}`);
    }
  }
});

test('changing the version/command byte of a checksummed header is always rejected', (t) => {
  const codes = new Set<string>();
  for (let value = 0; value < 256; value++) {
    if (value === 0x21) continue;
    const mutated = Buffer.from(V4_CRC);
    mutated[12] = value;
    const result = decodeProxyHeader(mutated);
    t.is(result.kind, 'invalid', `0x${value.toString(16)}`);
    codes.add(invalidCode(result) ?? result.kind);
  }
  // 0x20 (LOCAL) parses the same TLVs and is caught by the checksum.
  t.deepEqual([...codes].sort(), ['bad_command', 'bad_crc32c', 'bad_version']);
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

// ---------------------------------------------------------------------------
// Decoder errors, one code at a time
// ---------------------------------------------------------------------------

test('an HTTP request is not_proxy_v2', (t) => {
  t.is(invalidCode(decodeProxyHeader(Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'))), 'not_proxy_v2');
});

test('an HTTP POST (starting with P) is not_proxy_v2, not PROXY v1', (t) => {
  t.is(invalidCode(decodeProxyHeader(Buffer.from('POST /x HTTP/1.1\r\n\r\n'))), 'not_proxy_v2');
});

test('a TLS ClientHello and random garbage are not_proxy_v2', (t) => {
  t.is(invalidCode(decodeProxyHeader(hex('16 03 01 02 00 01 00 01 fc 03 03'))), 'not_proxy_v2');
  t.is(invalidCode(decodeProxyHeader(hex('ff'.repeat(64)))), 'not_proxy_v2');
  t.is(invalidCode(decodeProxyHeader(zeros(16))), 'not_proxy_v2');
});

test('a PROXY v1 text header is proxy_v1_unsupported', (t) => {
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n'))), 'proxy_v1_unsupported');
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PROXY TCP6 ::1 ::1 1 2\r\n'))), 'proxy_v1_unsupported');
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))), 'proxy_v1_unsupported');
});

test('a PROXY v1 header is recognised from its first bytes', (t) => {
  const line = Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
  for (let n = 1; n <= line.length; n++) t.is(invalidCode(decodeProxyHeader(line.subarray(0, n))), 'proxy_v1_unsupported', `${n} bytes`);
});

test('text that starts like PROXY v1 but differs before the space is not_proxy_v2', (t) => {
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PROXYX TCP4'))), 'not_proxy_v2');
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PRO'))), 'proxy_v1_unsupported');
  t.is(invalidCode(decodeProxyHeader(Buffer.from('PROB'))), 'not_proxy_v2');
});

test('every version other than 2 is bad_version', (t) => {
  for (let version = 0; version < 16; version++) {
    if (version === 2) continue;
    t.is(invalidCode(decodeProxyHeader(rawHeader((version << 4) | 1, 0x11, IPV4_BLOCK))), 'bad_version', `version ${version}`);
  }
});

test('every command other than LOCAL and PROXY is bad_command', (t) => {
  for (let command = 2; command < 16; command++) {
    t.is(invalidCode(decodeProxyHeader(rawHeader(0x20 | command, 0x11, IPV4_BLOCK))), 'bad_command', `command ${command}`);
  }
});

test('exactly the family/transport bytes with family <= 3 and transport <= 2 are accepted', (t) => {
  for (let byte = 0; byte < 256; byte++) {
    const defined = byte >> 4 <= 3 && (byte & 0x0f) <= 2;
    const payload = Buffer.concat([Buffer.alloc(216), hex('04 00 00')]); // big enough for any family
    const result = decodeProxyHeader(rawHeader(0x21, byte, payload));
    if (defined) t.is(result.kind, 'header', `0x${byte.toString(16)}`);
    else t.is(invalidCode(result), 'bad_family', `0x${byte.toString(16)}`);
  }
});

test('a LOCAL header with an undefined family byte is bad_family', (t) => {
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x20, 0x41))), 'bad_family');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x20, 0x13))), 'bad_family');
});

test('a header longer than options.maxLength is too_large', (t) => {
  const bytes = rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04 00 00')]));
  t.is(bytes.length, 31);
  t.is(invalidCode(decodeProxyHeader(bytes, { maxLength: 30 })), 'too_large');
  t.is(decodeProxyHeader(bytes, { maxLength: 31 }).kind, 'header');
});

test('too_large is decided from the length field, before the payload arrives', (t) => {
  const bytes = rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04 01 00'), zeros(256)]));
  t.is(invalidCode(decodeProxyHeader(bytes.subarray(0, 16), { maxLength: 256 })), 'too_large');
});

test('too_large is decided from the high length byte alone when that already exceeds the limit', (t) => {
  const fixed = hex(`${SIG} 21 11 01`); // at least 16 + 256 bytes
  t.is(invalidCode(decodeProxyHeader(fixed, { maxLength: 271 })), 'too_large');
  t.deepEqual(decodeProxyHeader(fixed, { maxLength: 272 }), { kind: 'incomplete', needed: 16 });
});

test('the default limit accepts the largest possible header and a larger maxLength changes nothing', (t) => {
  const bytes = encodeProxyHeader(proxy({ family: 'unspec' }, [{ type: TLV.NOOP, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 3) }]));
  t.is(decodeProxyHeader(bytes).kind, 'header');
  t.is(decodeProxyHeader(bytes, { maxLength: 1_000_000 }).kind, 'header');
  t.is(invalidCode(decodeProxyHeader(bytes, { maxLength: bytes.length - 1 })), 'too_large');
});

test('a PROXY header whose payload is shorter than its address block is short_address_block', (t) => {
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, zeros(11)))), 'short_address_block');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x21, zeros(35)))), 'short_address_block');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x32, zeros(215)))), 'short_address_block');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x12, zeros(0)))), 'short_address_block');
});

test('short_address_block is decided from the length field, before the payload arrives', (t) => {
  t.is(invalidCode(decodeProxyHeader(hex(`${SIG} 21 21 00 23`))), 'short_address_block');
});

test('a TLV that runs past the end of the header is bad_tlv', (t) => {
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('02 00 05 61 62 63 64')])))), 'bad_tlv');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x00, hex('04 ff ff 00')))), 'bad_tlv');
});

test('a TLV that overruns the header is bad_tlv even when more bytes follow the header', (t) => {
  const bytes = Buffer.concat([rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('02 00 05 61 62')])), Buffer.from('cdefgh')]);
  t.is(invalidCode(decodeProxyHeader(bytes)), 'bad_tlv');
});

test('one or two trailing bytes after the TLVs are bad_tlv', (t) => {
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04')])))), 'bad_tlv');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04 00')])))), 'bad_tlv');
  t.is(invalidCode(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, AUTHORITY_TLV, hex('e0')])))), 'bad_tlv');
  t.is(decodeProxyHeader(rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04 00 00')]))).kind, 'header');
});

test('every invalid result carries a non-empty reason', (t) => {
  const inputs = INVALID_VECTORS;
  const seen = new Set<string>();
  for (const input of inputs) {
    const result = decodeProxyHeader(input);
    if (result.kind !== 'invalid') {
      t.fail(`expected invalid for ${input.toString('hex')}`);
      continue;
    }
    seen.add(result.code);
    t.true(result.reason.length > 0);
  }
  t.is(seen.size, inputs.length);
});

// ---------------------------------------------------------------------------
// Incremental decoding
// ---------------------------------------------------------------------------

test('the empty buffer is incomplete and needs the 16 fixed bytes', (t) => {
  t.deepEqual(decodeProxyHeader(new Uint8Array(0)), { kind: 'incomplete', needed: 16 });
});

for (const [name, vector] of Object.entries(VALID_VECTORS)) {
  test(`every proper prefix of ${name} is incomplete, needing more than it has and no more than the header`, (t) => {
    for (let n = 0; n < vector.length; n++) {
      const result = decodeProxyHeader(vector.subarray(0, n));
      if (result.kind !== 'incomplete') {
        t.fail(`prefix of ${n} bytes gave ${JSON.stringify(result)}`);
        return;
      }
      t.true(result.needed > n && result.needed <= vector.length, `prefix of ${n} bytes needs ${result.needed}`);
    }
  });

  test(`${name} followed by payload bytes decodes to a header whose length excludes the payload`, (t) => {
    const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n\0\r\n');
    const input = Buffer.concat([vector, payload]);
    const result = decodeProxyHeader(input);
    t.deepEqual(result, decodeProxyHeader(vector));
    t.is(decoded(t, result).length, vector.length);
    t.deepEqual(input.subarray(vector.length), payload);
  });
}

test('every proper prefix of the largest possible header is incomplete', (t) => {
  const bytes = encodeProxyHeader(proxy(ADDRESSES_BY_FAMILY.inet6('stream'), [{ type: 0xe0, value: Buffer.alloc(MAX_PAYLOAD_LENGTH - 36 - 3 - 7, 7) }]), { crc32c: true });
  t.is(bytes.length, FIXED_LENGTH + MAX_PAYLOAD_LENGTH);
  let incomplete = 0;
  for (let n = 0; n < bytes.length; n++) {
    const result = decodeProxyHeader(bytes.subarray(0, n));
    if (result.kind === 'incomplete' && result.needed > n && result.needed <= bytes.length) incomplete++;
  }
  t.is(incomplete, bytes.length);
  t.is(decoded(t, decodeProxyHeader(bytes)).length, bytes.length);
});

test('reading exactly the bytes each incomplete result asks for reaches the header without reading past it', (t) => {
  for (const [name, vector] of Object.entries(VALID_VECTORS)) {
    const stream = Buffer.concat([vector, Buffer.from('payload')]);
    let have = 0;
    let result = decodeProxyHeader(stream.subarray(0, have));
    while (result.kind === 'incomplete') {
      t.true(result.needed > have && result.needed <= vector.length, `${name}: needs ${result.needed} after ${have}`);
      have = result.needed;
      result = decodeProxyHeader(stream.subarray(0, have));
    }
    t.is(have, vector.length, name);
    t.is(decoded(t, result).length, vector.length);
  }
});

test('a single byte that cannot start a header is rejected at once', (t) => {
  t.is(invalidCode(decodeProxyHeader(Buffer.from('G'))), 'not_proxy_v2');
  t.is(invalidCode(decodeProxyHeader(hex('00'))), 'not_proxy_v2');
  t.is(invalidCode(decodeProxyHeader(hex('16'))), 'not_proxy_v2');
});

test('a signature is rejected as soon as its first wrong byte arrives', (t) => {
  const sig = hex(SIG);
  for (let i = 0; i < sig.length; i++) {
    const input = Buffer.from(sig.subarray(0, i + 1));
    input[i] ^= 0x20; // never turns 0x0d into "P"
    t.is(invalidCode(decodeProxyHeader(input)), 'not_proxy_v2', `wrong byte ${i}`);
  }
});

test('a bad version or command is rejected with 13 bytes', (t) => {
  t.is(invalidCode(decodeProxyHeader(hex(`${SIG} 11`))), 'bad_version');
  t.is(invalidCode(decodeProxyHeader(hex(`${SIG} 22`))), 'bad_command');
  t.deepEqual(decodeProxyHeader(hex(`${SIG} 21`)), { kind: 'incomplete', needed: 16 });
});

test('a bad family/transport byte is rejected with 14 bytes', (t) => {
  t.is(invalidCode(decodeProxyHeader(hex(`${SIG} 21 41`))), 'bad_family');
  t.is(invalidCode(decodeProxyHeader(hex(`${SIG} 21 13`))), 'bad_family');
  t.deepEqual(decodeProxyHeader(hex(`${SIG} 21 11`)), { kind: 'incomplete', needed: 16 });
});

// ---------------------------------------------------------------------------
// LOCAL with an address block
// ---------------------------------------------------------------------------

test('a LOCAL header with an IPv4 address block ignores the addresses and parses the TLVs after it', (t) => {
  const bytes = rawHeader(0x20, 0x11, Buffer.concat([IPV4_BLOCK, AUTHORITY_TLV]));
  t.deepEqual(decodeProxyHeader(bytes), {
    kind: 'header',
    length: bytes.length,
    header: { command: 'local', addresses: { family: 'unspec' }, tlvs: [textTlv(TLV.AUTHORITY, 'web.mesh')] },
  });
});

test('a LOCAL header with an IPv6 address block ignores the addresses and parses the TLVs after it', (t) => {
  const bytes = rawHeader(0x20, 0x21, Buffer.concat([IPV6_BLOCK, AUTHORITY_TLV, hex('e0 00 04 76 6d 2d 61')]));
  t.deepEqual(decodeProxyHeader(bytes), {
    kind: 'header',
    length: bytes.length,
    header: { command: 'local', addresses: { family: 'unspec' }, tlvs: [textTlv(TLV.AUTHORITY, 'web.mesh'), textTlv(0xe0, 'vm-a')] },
  });
});

test('a LOCAL UNSPEC header parses TLVs right after the fixed part', (t) => {
  const bytes = rawHeader(0x20, 0x00, AUTHORITY_TLV);
  t.deepEqual(decoded(t, decodeProxyHeader(bytes)).header, { command: 'local', addresses: { family: 'unspec' }, tlvs: [textTlv(TLV.AUTHORITY, 'web.mesh')] });
});

test('a LOCAL header with a shorter address block than its family needs is still accepted', (t) => {
  const bytes = rawHeader(0x20, 0x11, zeros(5));
  t.deepEqual(decodeProxyHeader(bytes), { kind: 'header', length: 21, header: { command: 'local', addresses: { family: 'unspec' }, tlvs: [] } });
});

test('a PROXY UNSPEC header reads its whole payload as TLVs', (t) => {
  const bytes = rawHeader(0x21, 0x00, AUTHORITY_TLV);
  t.deepEqual(decoded(t, decodeProxyHeader(bytes)).header, proxy({ family: 'unspec' }, [textTlv(TLV.AUTHORITY, 'web.mesh')]));
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

function isWellFormedResult(result: DecodeResult, input: Uint8Array): boolean {
  switch (result.kind) {
    case 'incomplete':
      return Number.isInteger(result.needed) && result.needed > input.length && result.needed <= FIXED_LENGTH + MAX_PAYLOAD_LENGTH;
    case 'header':
      return result.length >= FIXED_LENGTH && result.length <= input.length;
    case 'invalid':
      return ERROR_CODES.includes(result.code) && result.reason.length > 0;
    default:
      return false;
  }
}

/** The RFC 5952 text of 16 bytes, computed without our formatter (URL canonical form, dotted mapped tail). */
function oracleIPv6(bytes: Uint8Array): string {
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const full: string[] = [];
  for (let i = 0; i < 16; i += 2) full.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return new URL(`http://[${full.join(':')}]/`).hostname.slice(1, -1);
}

const anyPort = fc.integer({ min: 0, max: 0xffff });
const anyTransport = fc.constantFrom<Transport>('unspec', 'stream', 'dgram');
/** IPv6 addresses as bytes: random, rich in zero groups, or IPv4-mapped. */
const ipv6Bytes = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff, 0xabcd), { minLength: 8, maxLength: 8 }).map((g) => Uint8Array.from(g.flatMap((v) => [v >> 8, v & 0xff]))),
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((v4) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4])),
);
/** Their RFC 5952 text, so that a decoded header must equal the input exactly. */
const canonicalIPv6 = ipv6Bytes.map(oracleIPv6);
const unixPath = fc
  .string({ unit: 'binary', maxLength: 40 })
  .filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= 108 && Buffer.from(s).toString() === s);
const anyTlv: fc.Arbitrary<Tlv> = fc
  .tuple(
    fc.integer({ min: 0, max: 255 }).filter((type) => type !== TLV.CRC32C),
    fc.oneof(fc.uint8Array({ maxLength: 48 }), fc.uint8Array({ minLength: 200, maxLength: 2000 })),
  )
  .map(([type, value]) => ({ type, value: Buffer.from(value) }));
const anyAddresses: fc.Arbitrary<ProxyAddresses> = fc.oneof(
  fc.constant<ProxyAddresses>({ family: 'unspec' }),
  fc.record({ family: fc.constant('inet' as const), transport: anyTransport, source: fc.record({ address: fc.ipV4(), port: anyPort }), destination: fc.record({ address: fc.ipV4(), port: anyPort }) }),
  fc.record({
    family: fc.constant('inet6' as const),
    transport: anyTransport,
    source: fc.record({ address: canonicalIPv6, port: anyPort }),
    destination: fc.record({ address: canonicalIPv6, port: anyPort }),
  }),
  fc.record({ family: fc.constant('unix' as const), transport: anyTransport, source: unixPath, destination: unixPath }),
);
const anyHeader: fc.Arbitrary<ProxyHeader> = fc.record({
  command: fc.constantFrom<'local' | 'proxy'>('local', 'proxy'),
  addresses: anyAddresses,
  tlvs: fc.array(anyTlv, { maxLength: 8 }),
});

const streamHeader: fc.Arbitrary<ProxyHeader> = fc.record({
  command: fc.constant<'proxy'>('proxy'),
  addresses: anyAddresses.filter((a) => a.family === 'inet' || a.family === 'inet6').map((a) => ({ ...a, transport: 'stream' as const })),
  tlvs: fc.array(anyTlv, { maxLength: 8 }),
});

/** A deep copy with ordinary prototypes (fast-check may build records without one), Buffers kept. */
function plain<T>(value: T): T {
  if (Buffer.isBuffer(value) || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(plain) as T;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)])) as T;
}

/** What decoding an encoded header must give back: LOCAL drops the addresses. */
function expectedAfterRoundTrip(h: ProxyHeader): ProxyHeader {
  return plain(h.command === 'local' ? { ...h, addresses: { family: 'unspec' } } : h);
}

test('property: decoding arbitrary bytes never throws and gives a well-formed result', (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => isWellFormedResult(decodeProxyHeader(bytes), bytes)),
    { numRuns: 500 },
  );
});

test('property: decoding the signature followed by arbitrary bytes never throws and gives a well-formed result', (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.option(fc.integer({ min: 0, max: 500 }), { nil: undefined }), (rest, maxLength) => {
      const input = Buffer.concat([Buffer.from(SIGNATURE), rest]);
      return isWellFormedResult(decodeProxyHeader(input, maxLength === undefined ? {} : { maxLength }), input);
    }),
    { numRuns: 500 },
  );
});

test('property: a plausible fixed part followed by arbitrary bytes never throws and gives a well-formed result', (t) => {
  // Valid version, command and family so the decoder gets to the address block and TLVs.
  const fixed = fc.tuple(fc.constantFrom(0x20, 0x21), fc.constantFrom(0x00, 0x01, 0x10, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32), fc.integer({ min: 0, max: 600 }));
  holds(
    t,
    fc.property(fixed, fc.uint8Array({ maxLength: 600 }), ([versionCommand, family, length], rest) => {
      const input = Buffer.concat([Buffer.from(SIGNATURE), Buffer.from([versionCommand, family, length >> 8, length & 0xff]), rest]);
      return isWellFormedResult(decodeProxyHeader(input), input);
    }),
    { numRuns: 1000 },
  );
});

test('property: encode then decode gives back an equal header', (t) => {
  holds(
    t,
    fc.property(anyHeader, fc.boolean(), (h, withCrc) => {
      const bytes = encodeProxyHeader(h, { crc32c: withCrc });
      const result = decodeProxyHeader(bytes);
      if (result.kind !== 'header' || result.length !== bytes.length) return false;
      const tlvs = withCrc ? result.header.tlvs.slice(0, -1) : result.header.tlvs;
      if (withCrc && result.header.tlvs.at(-1)?.type !== TLV.CRC32C) return false;
      deepStrictEqual({ ...result.header, tlvs }, expectedAfterRoundTrip(h));
      return true;
    }),
    { numRuns: 300 },
  );
});

test('property: acceptedEndpoint and acceptedTlvText read in place what decodeProxyHeader decodes, for every header it accepts as a stream', (t) => {
  let read = 0;
  holds(
    t,
    // Half of the headers any, half PROXY over TCP (what the warm path reads).
    fc.property(fc.oneof(anyHeader, streamHeader), fc.boolean(), fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (h, withCrc, before, after) => {
      const encoded = encodeProxyHeader(h, { crc32c: withCrc });
      // As the warm records hold it: a view inside a larger buffer, other bytes around.
      const header = Buffer.concat([before, encoded, after]).subarray(before.length, before.length + encoded.length);
      const result = decodeProxyHeader(header, { streamOnly: true });
      if (result.kind !== 'header' || result.header.command !== 'proxy') return true;
      const { addresses } = result.header;
      if (addresses.family !== 'inet' && addresses.family !== 'inet6') return false;
      read++;
      deepStrictEqual(acceptedEndpoint(header, 'source'), plain(addresses.source));
      deepStrictEqual(acceptedEndpoint(header, 'destination'), plain(addresses.destination));
      for (const type of [TLV.AUTHORITY, TLV.VSOCKMESH_SOURCE_VM, TLV.CRC32C, ...h.tlvs.map((tlv) => tlv.type)]) {
        if (acceptedTlvText(header, type) !== tlvText(result.header, type)) return false;
      }
      return true;
    }),
    { numRuns: 600 },
  );
  t.true(read > 200, `only ${read} stream headers were read`);
});

test('property: IPv6 addresses in any spelling fast-check generates survive encode then decode', (t) => {
  holds(
    t,
    fc.property(fc.ipV6(), fc.ipV6(), anyPort, anyPort, (source, destination, sourcePort, destinationPort) => {
      const result = decodeProxyHeader(encodeProxyHeader(proxy(inet6(source, sourcePort, destination, destinationPort))));
      if (result.kind !== 'header' || result.header.addresses.family !== 'inet6') return false;
      const canonical = (text: string): string => new URL(`http://[${text}]/`).hostname;
      const got = result.header.addresses;
      return (
        canonical(got.source.address) === canonical(source) &&
        canonical(got.destination.address) === canonical(destination) &&
        got.source.port === sourcePort &&
        got.destination.port === destinationPort
      );
    }),
    { numRuns: 300 },
  );
});

test('property: every proper prefix of an encoded header is incomplete', (t) => {
  holds(
    t,
    fc.property(anyHeader, fc.boolean(), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (h, withCrc, fraction) => {
      const bytes = encodeProxyHeader(h, { crc32c: withCrc });
      const n = Math.floor(fraction * bytes.length);
      const result = decodeProxyHeader(bytes.subarray(0, n));
      return result.kind === 'incomplete' && result.needed > n && result.needed <= bytes.length;
    }),
    { numRuns: 500 },
  );
});

test('property: a decoded header does not depend on the bytes that follow it', (t) => {
  holds(
    t,
    fc.property(anyHeader, fc.uint8Array({ maxLength: 64 }), (h, payload) => {
      const bytes = encodeProxyHeader(h);
      const alone = decodeProxyHeader(bytes);
      const followed = decodeProxyHeader(Buffer.concat([bytes, payload]));
      deepStrictEqual(followed, alone);
      return followed.kind === 'header' && followed.length === bytes.length;
    }),
    { numRuns: 200 },
  );
});

test('property: once a prefix is invalid, every longer input is invalid too', (t) => {
  const input = fc.oneof(
    fc.uint8Array({ maxLength: 80 }),
    fc.uint8Array({ maxLength: 80 }).map((rest) => Buffer.concat([Buffer.from(SIGNATURE), rest])),
    fc.tuple(anyHeader, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([h, at, xor]) => {
      const bytes = Buffer.from(encodeProxyHeader(h, { crc32c: true }));
      bytes[at % bytes.length] ^= xor;
      return bytes;
    }),
  );
  holds(
    t,
    fc.property(input, (bytes) => {
      let invalidAt = -1;
      for (let n = 0; n <= bytes.length; n++) {
        const result = decodeProxyHeader(bytes.subarray(0, n));
        if (result.kind === 'invalid' && invalidAt === -1) invalidAt = n;
        if (invalidAt !== -1 && result.kind !== 'invalid') return false;
        if (result.kind === 'header') return invalidAt === -1; // longer inputs only add payload
      }
      return true;
    }),
    { numRuns: 300 },
  );
});

test('property: changing one byte of an encoded header never throws', (t) => {
  holds(
    t,
    fc.property(anyHeader, fc.boolean(), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.uint8Array({ maxLength: 32 }), (h, withCrc, at, xor, trailing) => {
      const bytes = Buffer.concat([encodeProxyHeader(h, { crc32c: withCrc }), trailing]);
      bytes[at % bytes.length] ^= xor;
      return isWellFormedResult(decodeProxyHeader(bytes), bytes);
    }),
    { numRuns: 1000 },
  );
});

test('property: a checksummed header with one byte changed is never accepted with a checksum', (t) => {
  holds(
    t,
    fc.property(anyHeader, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.uint8Array({ maxLength: 32 }), (h, at, xor, trailing) => {
      const encoded = encodeProxyHeader(h, { crc32c: true });
      const bytes = Buffer.concat([encoded, trailing]);
      bytes[at % encoded.length] ^= xor;
      return !hasCrcTlv(decodeProxyHeader(bytes));
    }),
    { numRuns: 1000 },
  );
});

/** Deterministic filler (xorshift32), so large inputs cost no fast-check generation time. */
function fill(bytes: Uint8Array, seed: number): Uint8Array {
  let x = seed | 1;
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

test('property: decoding inputs of up to 70 KB always finishes with a well-formed result', (t) => {
  // Prefixes that reach the TLV loop with the largest declared length, over random,
  // all-zero (21845 empty TLVs) and all-0x03 (CRC32C type) bodies.
  const prefixes = [hex(''), hex(SIG), hex(`${SIG} 21 11 ff ff`), hex(`${SIG} 20 00 ff ff`), hex(`${SIG} 21 21 ff ff`), hex(`${SIG} 21 31 ff ff`)];
  const body = fc.constantFrom('random', 'zeros', 'crc-types', 'noop-runs');
  holds(
    t,
    fc.property(fc.constantFrom(...prefixes), body, fc.integer({ min: 0, max: 70 * 1024 }), fc.integer(), (prefix, kind, size, seed) => {
      const rest = new Uint8Array(size);
      if (kind === 'random') fill(rest, seed);
      else if (kind === 'crc-types') rest.fill(TLV.CRC32C);
      else if (kind === 'noop-runs') rest.fill(TLV.NOOP);
      const input = Buffer.concat([prefix, rest]);
      return isWellFormedResult(decodeProxyHeader(input), input) && isWellFormedResult(decodeProxyHeader(input, { maxLength: 4096 }), input);
    }),
    { numRuns: 400 },
  );
});

// ---------------------------------------------------------------------------
// streamOnly: what the inbound listener accepts (TCP over IP, or LOCAL)
// ---------------------------------------------------------------------------

/** Every defined family/transport byte, under PROXY and under LOCAL, and whether a stream relay accepts it. */
const STREAM_ONLY_TABLE: Array<[command: 'proxy' | 'local', familyTransport: number, accepted: boolean]> = [];
for (const command of ['proxy', 'local'] as const) {
  for (const family of [0, 1, 2, 3]) {
    for (const transport of [0, 1, 2]) {
      const byte = (family << 4) | transport;
      STREAM_ONLY_TABLE.push([command, byte, command === 'local' || ((family === 1 || family === 2) && transport === 1)]);
    }
  }
}

const BLOCK_BY_FAMILY: Record<number, Buffer> = { 0: Buffer.alloc(0), 1: IPV4_BLOCK, 2: IPV6_BLOCK, 3: Buffer.alloc(216) };

for (const [command, byte, accepted] of STREAM_ONLY_TABLE) {
  const name = `0x${byte.toString(16).padStart(2, '0')}`;
  test(`streamOnly: a ${command.toUpperCase()} header with family/transport ${name} is ${accepted ? 'accepted' : 'refused as not_stream'}`, (t) => {
    const bytes = rawHeader(command === 'local' ? 0x20 : 0x21, byte, BLOCK_BY_FAMILY[byte >> 4]);
    const result = decodeProxyHeader(bytes, { streamOnly: true });
    if (accepted) t.is(result.kind, 'header');
    else t.is(invalidCode(result), 'not_stream');
    // Without the option the codec still decodes every defined combination.
    t.is(decodeProxyHeader(bytes).kind, 'header');
  });
}

test('streamOnly: a UDP header is refused as soon as its family/transport byte arrives', (t) => {
  const bytes = rawHeader(0x21, 0x12, IPV4_BLOCK).subarray(0, 14);
  t.is(invalidCode(decodeProxyHeader(bytes, { streamOnly: true })), 'not_stream');
});

const anyIp = fc.oneof(fc.ipV4(), canonicalIPv6);
const anyEndpoint = fc.record({ address: anyIp, port: anyPort });

test('property: a header template gives, for every source in turn, the bytes encodeProxyHeader gives', (t) => {
  holds(
    t,
    fc.property(anyEndpoint, fc.array(anyTlv, { maxLength: 4 }), fc.array(anyEndpoint, { minLength: 1, maxLength: 6 }), (destination, tlvs, sources) => {
      const template = new ProxyHeaderTemplate(destination, tlvs);
      // Each source twice in a row: the second use is served from the template's last-source cache.
      for (const source of sources.flatMap((s) => [s, s])) {
        deepStrictEqual(template.forSource(source), encodeProxyHeader({ command: 'proxy', addresses: tcpAddresses(source, destination), tlvs }));
      }
    }),
  );
});

test('a header template refuses what encodeProxyHeader refuses: a bad destination at once, a bad source port per connection', (t) => {
  t.throws(() => new ProxyHeaderTemplate({ address: 'example.com', port: 80 }, []), { instanceOf: RangeError });
  t.throws(() => new ProxyHeaderTemplate({ address: '10.0.0.2', port: 70000 }, []), { instanceOf: RangeError });
  const template = new ProxyHeaderTemplate({ address: '10.0.0.2', port: 80 }, []);
  t.throws(() => template.forSource({ address: '127.0.0.1', port: -1 }), { instanceOf: RangeError });
  t.deepEqual(template.forSource({ address: '127.0.0.1', port: 1234 }), V4_TCP);
});
