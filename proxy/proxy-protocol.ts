// PROXY protocol version 2: the header every sidecar-to-sidecar hop starts with.
// Pure encoder and incremental decoder; no I/O. Spec: haproxy doc/proxy-protocol.txt.

import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './runtime/ip-address.js';

export const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Signature (12) + version/command (1) + family/transport (1) + length (2). */
export const FIXED_LENGTH = 16;
export const MAX_PAYLOAD_LENGTH = 0xffff;

export const TLV = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  NETNS: 0x30,
  /** vsockmesh TLVs live in the custom range 0xE0..0xEF. */
  VSOCKMESH_SOURCE_VM: 0xe0,
  VSOCKMESH_DESTINATION_VM: 0xe1,
  VSOCKMESH_PROTOCOL: 0xe2,
} as const;

const ADDRESS_LENGTH = { unspec: 0, inet: 12, inet6: 36, unix: 216 } as const;
const UNIX_PATH_LENGTH = 108;

export type Transport = 'unspec' | 'stream' | 'dgram';

export interface IpEndpoint {
  address: string;
  port: number;
}

export type ProxyAddresses =
  | { family: 'unspec' }
  | { family: 'inet' | 'inet6'; transport: Transport; source: IpEndpoint; destination: IpEndpoint }
  | { family: 'unix'; transport: Transport; source: string; destination: string };

export interface Tlv {
  type: number;
  value: Buffer;
}

export interface ProxyHeader {
  /** `local`: sent by the proxy itself (health check), addresses must be ignored. */
  command: 'local' | 'proxy';
  addresses: ProxyAddresses;
  tlvs: Tlv[];
}

export type HeaderErrorCode =
  | 'not_proxy_v2'
  | 'proxy_v1_unsupported'
  | 'bad_version'
  | 'bad_command'
  | 'bad_family'
  | 'too_large'
  | 'short_address_block'
  | 'bad_tlv'
  | 'bad_crc32c'
  | 'not_stream';

export type DecodeResult =
  | { kind: 'incomplete'; /** total bytes needed before deciding; at least one more than given */ needed: number }
  | { kind: 'header'; header: ProxyHeader; /** bytes the header occupies; the rest is payload */ length: number }
  | { kind: 'invalid'; code: HeaderErrorCode; reason: string };

export interface DecodeOptions {
  /** Largest whole header accepted (fixed part included). Default and ceiling: 16 + 65535. */
  maxLength?: number;
  /**
   * Accept only what a stream relay can carry: a PROXY header for TCP over
   * IPv4 or IPv6, or LOCAL (whose addresses are ignored). Any other
   * family/transport is `not_stream`, decided as soon as byte 13 arrives.
   */
  streamOnly?: boolean;
}

const V1_PREFIX = Buffer.from('PROXY ');

function invalid(code: HeaderErrorCode, reason: string): DecodeResult {
  return { kind: 'invalid', code, reason };
}

/**
 * Decodes a header from the start of `buf`. Needs no more bytes than the header
 * itself, and says `invalid` as soon as the bytes it has rule a header out.
 */
export function decodeProxyHeader(buf: Uint8Array, options: DecodeOptions = {}): DecodeResult {
  const maxLength = Math.min(options.maxLength ?? FIXED_LENGTH + MAX_PAYLOAD_LENGTH, FIXED_LENGTH + MAX_PAYLOAD_LENGTH);
  const prefix = Math.min(buf.length, SIGNATURE.length);
  for (let i = 0; i < prefix; i++) {
    if (buf[i] !== SIGNATURE[i]) {
      if (isV1Prefix(buf)) {
        return invalid('proxy_v1_unsupported', 'PROXY protocol v1 (text) header; only v2 is accepted');
      }
      return invalid('not_proxy_v2', `byte ${i} does not match the PROXY v2 signature`);
    }
  }
  // Each fixed field is checked as soon as its byte arrives, not only once all 16 are in.
  if (buf.length <= 12) return { kind: 'incomplete', needed: FIXED_LENGTH };
  const versionCommand = buf[12]!;
  if (versionCommand >> 4 !== 2) return invalid('bad_version', `version ${versionCommand >> 4}, expected 2`);
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) return invalid('bad_command', `command 0x${commandBits.toString(16)} is neither LOCAL nor PROXY`);
  const command = commandBits === 0 ? 'local' : 'proxy';

  if (buf.length <= 13) return { kind: 'incomplete', needed: FIXED_LENGTH };
  const familyByte = buf[13]!;
  const family = (['unspec', 'inet', 'inet6', 'unix'] as const)[familyByte >> 4];
  const transport = (['unspec', 'stream', 'dgram'] as const)[familyByte & 0x0f];
  if (family === undefined || transport === undefined) {
    return invalid('bad_family', `address family/transport byte 0x${familyByte.toString(16).padStart(2, '0')} is not defined`);
  }
  if (options.streamOnly === true && command === 'proxy' && ((family !== 'inet' && family !== 'inet6') || transport !== 'stream')) {
    return invalid('not_stream', `a PROXY header for ${family}/${transport} does not describe a TCP stream (only TCP over IPv4 or IPv6, or LOCAL)`);
  }

  if (buf.length <= 14) return { kind: 'incomplete', needed: FIXED_LENGTH };
  // The high length byte alone can already put the header over the limit.
  if (FIXED_LENGTH + (buf[14]! << 8) > maxLength) {
    return invalid('too_large', `header of at least ${FIXED_LENGTH + (buf[14]! << 8)} bytes exceeds the limit of ${maxLength}`);
  }
  if (buf.length < FIXED_LENGTH) return { kind: 'incomplete', needed: FIXED_LENGTH };

  const payloadLength = (buf[14]! << 8) | buf[15]!;
  const length = FIXED_LENGTH + payloadLength;
  if (length > maxLength) return invalid('too_large', `header of ${length} bytes exceeds the limit of ${maxLength}`);
  // LOCAL carries no meaningful addresses; its block is skipped whatever the family says.
  const addressLength = command === 'local' ? 0 : ADDRESS_LENGTH[family];
  if (payloadLength < addressLength) {
    return invalid('short_address_block', `${family} needs ${addressLength} address bytes, header has ${payloadLength}`);
  }
  if (buf.length < length) return { kind: 'incomplete', needed: length };

  const view = Buffer.from(buf.buffer, buf.byteOffset, length);
  let addresses: ProxyAddresses;
  if (command === 'local' || family === 'unspec') {
    addresses = { family: 'unspec' };
  } else if (family === 'inet') {
    addresses = {
      family,
      transport,
      source: { address: formatIPv4(view.subarray(16, 20)), port: view.readUInt16BE(24) },
      destination: { address: formatIPv4(view.subarray(20, 24)), port: view.readUInt16BE(26) },
    };
  } else if (family === 'inet6') {
    addresses = {
      family,
      transport,
      source: { address: formatIPv6(view.subarray(16, 32)), port: view.readUInt16BE(48) },
      destination: { address: formatIPv6(view.subarray(32, 48)), port: view.readUInt16BE(50) },
    };
  } else {
    addresses = {
      family,
      transport,
      source: unixPath(view.subarray(16, 16 + UNIX_PATH_LENGTH)),
      destination: unixPath(view.subarray(16 + UNIX_PATH_LENGTH, 16 + 2 * UNIX_PATH_LENGTH)),
    };
  }

  // A LOCAL header may still carry an address block (of unknown shape); TLVs follow the family's block.
  const tlvStart = FIXED_LENGTH + (command === 'local' ? Math.min(ADDRESS_LENGTH[family], payloadLength) : addressLength);
  const tlvs: Tlv[] = [];
  let crcOffset = -1;
  for (let at = tlvStart; at < length; ) {
    if (length - at < 3) return invalid('bad_tlv', `${length - at} trailing bytes at offset ${at} are too few for a TLV`);
    const type = view[at]!;
    const valueLength = view.readUInt16BE(at + 1);
    if (at + 3 + valueLength > length) {
      return invalid('bad_tlv', `TLV 0x${type.toString(16)} at offset ${at} declares ${valueLength} bytes past the header end`);
    }
    if (type === TLV.CRC32C) {
      if (valueLength !== 4) return invalid('bad_tlv', `CRC32C TLV has ${valueLength} bytes, expected 4`);
      crcOffset = at + 3;
    }
    // Copy: the header outlives the socket chunk it was read from.
    tlvs.push({ type, value: Buffer.from(view.subarray(at + 3, at + 3 + valueLength)) });
    at += 3 + valueLength;
  }
  if (crcOffset !== -1) {
    const expected = view.readUInt32BE(crcOffset);
    const copy = Buffer.from(view);
    copy.writeUInt32BE(0, crcOffset);
    const actual = crc32c(copy);
    if (actual !== expected) {
      return invalid('bad_crc32c', `CRC32C 0x${expected.toString(16)} does not match the header (0x${actual.toString(16)})`);
    }
  }
  return { kind: 'header', header: { command, addresses, tlvs }, length };
}

function isV1Prefix(buf: Uint8Array): boolean {
  for (let i = 0; i < Math.min(buf.length, V1_PREFIX.length); i++) {
    if (buf[i] !== V1_PREFIX[i]) return false;
  }
  return true;
}

function unixPath(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return Buffer.from(bytes.subarray(0, end === -1 ? bytes.length : end)).toString('utf8');
}

export interface EncodeOptions {
  /** Append a CRC32C TLV over the whole header. */
  crc32c?: boolean;
}

/** Encodes a header. Throws RangeError on input no valid header can carry (a programming error). */
export function encodeProxyHeader(header: ProxyHeader, options: EncodeOptions = {}): Buffer {
  const { addresses } = header;
  const family = addresses.family;
  const addressLength = ADDRESS_LENGTH[family];
  let tlvLength = 0;
  for (const tlv of header.tlvs) {
    if (!Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > 0xff) throw new RangeError(`TLV type ${tlv.type} is not a byte`);
    if (tlv.type === TLV.CRC32C) throw new RangeError('pass options.crc32c instead of a CRC32C TLV');
    tlvLength += 3 + tlv.value.length;
  }
  if (options.crc32c) tlvLength += 7;
  const payloadLength = addressLength + tlvLength;
  if (payloadLength > MAX_PAYLOAD_LENGTH) throw new RangeError(`header payload of ${payloadLength} bytes exceeds ${MAX_PAYLOAD_LENGTH}`);

  const out = Buffer.alloc(FIXED_LENGTH + payloadLength);
  SIGNATURE.copy(out, 0);
  out[12] = 0x20 | (header.command === 'local' ? 0 : 1);
  const familyBits = { unspec: 0, inet: 1, inet6: 2, unix: 3 }[family];
  const transportBits = addresses.family === 'unspec' ? 0 : { unspec: 0, stream: 1, dgram: 2 }[addresses.transport];
  out[13] = (familyBits << 4) | transportBits;
  out.writeUInt16BE(payloadLength, 14);

  if (addresses.family === 'inet') {
    out.set(ipBytes(addresses.source.address, 'inet'), 16);
    out.set(ipBytes(addresses.destination.address, 'inet'), 20);
    out.writeUInt16BE(checkPort(addresses.source.port), 24);
    out.writeUInt16BE(checkPort(addresses.destination.port), 26);
  } else if (addresses.family === 'inet6') {
    out.set(ipBytes(addresses.source.address, 'inet6'), 16);
    out.set(ipBytes(addresses.destination.address, 'inet6'), 32);
    out.writeUInt16BE(checkPort(addresses.source.port), 48);
    out.writeUInt16BE(checkPort(addresses.destination.port), 50);
  } else if (addresses.family === 'unix') {
    writeUnixPath(out, 16, addresses.source);
    writeUnixPath(out, 16 + UNIX_PATH_LENGTH, addresses.destination);
  }

  let at = FIXED_LENGTH + addressLength;
  for (const tlv of header.tlvs) {
    out[at] = tlv.type;
    out.writeUInt16BE(tlv.value.length, at + 1);
    out.set(tlv.value, at + 3);
    at += 3 + tlv.value.length;
  }
  if (options.crc32c) {
    out[at] = TLV.CRC32C;
    out.writeUInt16BE(4, at + 1);
    out.writeUInt32BE(crc32c(out), at + 3);
  }
  return out;
}

function ipBytes(text: string, family: 'inet' | 'inet6'): Uint8Array {
  const bytes = family === 'inet' ? parseIPv4(text) : parseIPv6(text);
  if (!bytes) throw new RangeError(`${JSON.stringify(text)} is not an ${family === 'inet' ? 'IPv4' : 'IPv6'} address`);
  return bytes;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`port ${port} is out of 0..65535`);
  return port;
}

function writeUnixPath(out: Buffer, at: number, path: string): void {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length > UNIX_PATH_LENGTH) throw new RangeError(`unix path of ${bytes.length} bytes exceeds ${UNIX_PATH_LENGTH}`);
  out.set(bytes, at);
}

/** Addresses for a TCP connection between two IP endpoints, family picked from the source address. */
export function tcpAddresses(source: IpEndpoint, destination: IpEndpoint): ProxyAddresses {
  const v4 = parseIPv4(source.address) !== undefined && parseIPv4(destination.address) !== undefined;
  if (v4) return { family: 'inet', transport: 'stream', source, destination };
  return {
    family: 'inet6',
    transport: 'stream',
    source: { address: asIPv6(source.address), port: source.port },
    destination: { address: asIPv6(destination.address), port: destination.port },
  };
}

function asIPv6(address: string): string {
  return parseIPv4(address) !== undefined ? `::ffff:${address}` : address;
}

/**
 * The PROXY v2 header of one destination with fixed TLVs, encoded once: each
 * connection only fills in its source (the warm path of an outbound
 * connection). Equal, byte for byte, to encodeProxyHeader({command: 'proxy',
 * addresses: tcpAddresses(source, destination), tlvs}).
 */
export class ProxyHeaderTemplate {
  /** Per family, made on first use: an IPv4 destination gets an IPv6 header for an IPv6 source. */
  private readonly encoded: { inet?: Buffer; inet6?: Buffer } = {};
  /** The last source address and its bytes: a listener's clients mostly come from one address. */
  private lastSource: { address: string; family: 'inet' | 'inet6'; bytes: Uint8Array } | undefined;

  constructor(
    private readonly destination: IpEndpoint,
    private readonly tlvs: Tlv[],
  ) {
    ipBytes(destination.address, parseIPv4(destination.address) !== undefined ? 'inet' : 'inet6');
    checkPort(destination.port);
  }

  forSource(source: IpEndpoint): Buffer {
    let last = this.lastSource;
    if (last === undefined || last.address !== source.address) {
      const v4 = parseIPv4(source.address);
      const family = v4 !== undefined && parseIPv4(this.destination.address) !== undefined ? 'inet' : 'inet6';
      last = { address: source.address, family, bytes: family === 'inet' ? v4! : ipBytes(asIPv6(source.address), 'inet6') };
      this.lastSource = last;
    }
    let template = this.encoded[last.family];
    if (template === undefined) {
      template = encodeProxyHeader({ command: 'proxy', addresses: tcpAddresses({ address: source.address, port: 0 }, this.destination), tlvs: this.tlvs });
      this.encoded[last.family] = template;
    }
    const out = Buffer.allocUnsafe(template.length);
    template.copy(out);
    out.set(last.bytes, 16);
    out.writeUInt16BE(checkPort(source.port), last.family === 'inet' ? 24 : 48);
    return out;
  }
}

/** First TLV of a type as UTF-8 text, if present. */
export function tlvText(header: ProxyHeader, type: number): string | undefined {
  const tlv = header.tlvs.find((t) => t.type === type);
  return tlv === undefined ? undefined : tlv.value.toString('utf8');
}

/**
 * A source or destination of a header decodeProxyHeader accepts with
 * streamOnly as a PROXY command over TCP/IPv4 or IPv6, read in place (the
 * warm path's records, per connection): what the decoded addresses say,
 * without decoding the rest. Bytes of any other header give nonsense.
 */
export function acceptedEndpoint(header: Buffer, which: 'source' | 'destination'): IpEndpoint {
  const inet = header[13]! >> 4 === 1;
  const size = inet ? 4 : 16;
  const at = FIXED_LENGTH + (which === 'source' ? 0 : size);
  const bytes = header.subarray(at, at + size);
  const portAt = FIXED_LENGTH + 2 * size + (which === 'source' ? 0 : 2);
  return { address: inet ? formatIPv4(bytes) : formatIPv6(bytes), port: header.readUInt16BE(portAt) };
}

/** tlvText of such a header (see acceptedEndpoint), read in place: the first TLV of the type as UTF-8 text, if present. */
export function acceptedTlvText(header: Buffer, type: number): string | undefined {
  const length = FIXED_LENGTH + header.readUInt16BE(14);
  for (let at = FIXED_LENGTH + (header[13]! >> 4 === 1 ? ADDRESS_LENGTH.inet : ADDRESS_LENGTH.inet6); at + 3 <= length; ) {
    const valueLength = header.readUInt16BE(at + 1);
    if (header[at] === type) return header.toString('utf8', at + 3, at + 3 + valueLength);
    at += 3 + valueLength;
  }
  return undefined;
}

export function textTlv(type: number, text: string): Tlv {
  return { type, value: Buffer.from(text, 'utf8') };
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), as the PROXY v2 CRC32C TLV uses. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
