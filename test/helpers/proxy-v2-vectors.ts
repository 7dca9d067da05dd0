// PROXY v2 test vectors written out by hand from HAProxy's doc/proxy-protocol.txt,
// shared by the JavaScript decoder's tests and the native parser's (which must
// answer every one as the JavaScript decoder does).

/** Bytes from hex written with optional whitespace, e.g. `hex('0d 0a')`. */
export function hex(text: string): Buffer {
  const digits = text.replace(/\s+/g, '');
  if (!/^([0-9a-f]{2})*$/i.test(digits)) throw new Error(`bad hex in test vector: ${text}`);
  return Buffer.from(digits, 'hex');
}

export function zeros(n: number): Buffer {
  return Buffer.alloc(n);
}

// The 12-byte signature, as the spec lists it (section 2.2).
export const SIG = '0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a';

/** PROXY, TCP over IPv4, 127.0.0.1:1234 -> 10.0.0.2:80. */
export const V4_TCP = hex(`${SIG} 21 11 00 0c  7f 00 00 01  0a 00 00 02  04 d2  00 50`);
/** PROXY, UDP over IPv4, 192.168.0.1:56324 -> 192.168.0.11:443. */
export const V4_UDP = hex(`${SIG} 21 12 00 0c  c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb`);
/** PROXY, TCP over IPv6, [2001:db8::1]:50000 -> [fe80::a:b]:8443. */
export const V6_TCP = hex(`${SIG} 21 21 00 24
  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01
  fe 80 00 00 00 00 00 00 00 00 00 00 00 0a 00 0b
  c3 50 20 fb`);
/** PROXY, UDP over IPv6 with IPv4-mapped addresses, [::ffff:10.0.0.1]:40000 -> [::ffff:10.0.0.2]:53. */
export const V6_UDP_MAPPED = hex(`${SIG} 21 22 00 24
  00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01
  00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 02
  9c 40 00 35`);
/** LOCAL, UNSPEC, no payload: what a proxy sends for a health check. */
export const LOCAL_UNSPEC = hex(`${SIG} 20 00 00 00`);
/** PROXY, UNSPEC, no payload: an unknown origin. */
export const PROXY_UNSPEC = hex(`${SIG} 21 00 00 00`);
/** PROXY, UNIX stream, "/run/app.sock" -> "/run/peer.sock", each NUL-padded to 108 bytes. */
export const UNIX_STREAM = Buffer.concat([
  hex(`${SIG} 21 31 00 d8`),
  hex('2f 72 75 6e 2f 61 70 70 2e 73 6f 63 6b'),
  zeros(108 - 13),
  hex('2f 72 75 6e 2f 70 65 65 72 2e 73 6f 63 6b'),
  zeros(108 - 14),
]);
/** PROXY, TCP over IPv4, 10.0.0.1:40000 -> 10.0.0.2:8080, TLVs: authority "web.mesh", source VM "vm-a", destination VM "vm-b", protocol "http". */
export const V4_TLVS = hex(`${SIG} 21 11 00 2c
  0a 00 00 01  0a 00 00 02  9c 40  1f 90
  02 00 08  77 65 62 2e 6d 65 73 68
  e0 00 04  76 6d 2d 61
  e1 00 04  76 6d 2d 62
  e2 00 04  68 74 74 70`);
/**
 * PROXY, TCP over IPv4, 192.168.0.1:56324 -> 192.168.0.11:443, authority "web.mesh", then
 * CRC32C e1b49c63 (computed outside this project with a bitwise CRC-32C over the header
 * with the checksum field zeroed).
 */
export const V4_CRC = hex(`${SIG} 21 11 00 1e
  c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb
  02 00 08  77 65 62 2e 6d 65 73 68
  03 00 04  e1 b4 9c 63`);
/** LOCAL, UNSPEC, only a CRC32C TLV (a9b87e8f, computed the same way). */
export const LOCAL_CRC = hex(`${SIG} 20 00 00 07  03 00 04  a9 b8 7e 8f`);

/** A fixed 16-byte part followed by `payload`, with the length field set to the payload size. */
export function rawHeader(versionCommand: number, familyTransport: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const fixed = Buffer.concat([hex(SIG), Buffer.from([versionCommand, familyTransport, payload.length >> 8, payload.length & 0xff])]);
  return Buffer.concat([fixed, payload]);
}

export const IPV4_BLOCK = hex('0a 00 00 01  0a 00 00 02  9c 40  1f 90'); // 10.0.0.1:40000 -> 10.0.0.2:8080
export const IPV6_BLOCK = Buffer.concat([hex('20 01 0d b8'), zeros(11), hex('01'), hex('20 01 0d b8'), zeros(11), hex('02'), hex('9c 40 1f 90')]); // [2001:db8::1]:40000 -> [2001:db8::2]:8080
export const AUTHORITY_TLV = hex('02 00 08  77 65 62 2e 6d 65 73 68'); // authority "web.mesh"

export const VALID_VECTORS: Record<string, Buffer> = {
  V4_TCP,
  V4_UDP,
  V6_TCP,
  V6_UDP_MAPPED,
  LOCAL_UNSPEC,
  PROXY_UNSPEC,
  UNIX_STREAM,
  V4_TLVS,
  V4_CRC,
  LOCAL_CRC,
};

/** One input for each invalid code but not_stream (which needs streamOnly). */
export const INVALID_VECTORS: readonly Buffer[] = [
    Buffer.from('GET /'),
    Buffer.from('PROXY TCP4'),
    rawHeader(0x11, 0x11, IPV4_BLOCK),
    rawHeader(0x2f, 0x11, IPV4_BLOCK),
    rawHeader(0x21, 0x44, IPV4_BLOCK),
    rawHeader(0x21, 0x11, zeros(11)),
    rawHeader(0x21, 0x11, Buffer.concat([IPV4_BLOCK, hex('04')])),
    Buffer.concat([V4_CRC.subarray(0, -1), hex('00')]),
];
