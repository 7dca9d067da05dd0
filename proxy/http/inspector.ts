// The capture listener's HTTP inspector (Envoy's http_inspector listener
// filter): from the first bytes of a captured connection, whether the client
// speaks HTTP/1.x (a request line) or HTTP/2 with prior knowledge (the
// connection preface), so the connection can take the L7 path; anything else
// (TLS, a binary protocol, a server-first one) stays L4. Pure: the listener
// reads, this judges.

/** The HTTP/2 connection preface (RFC 9113 3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** The longest method the inspector accepts (`MKWORKSPACE`, `VERSION-CONTROL` fit). */
export const MAX_METHOD_LENGTH = 20;
/** Defaults: a request line of a common URL fits; a server-first protocol's client waits this long for its server's greeting. */
export const DEFAULT_INSPECT_MAX_BYTES = 8192;
export const DEFAULT_INSPECT_TIMEOUT_MS = 100;
export const MIN_INSPECT_MAX_BYTES = 64;
export const MAX_INSPECT_MAX_BYTES = 65536;

export type InspectVerdict =
  /** Nothing decides yet; `needed`: the most bytes worth reading before judging again (the window's end). */
  | { kind: 'incomplete'; needed: number }
  | { kind: 'http1' }
  | { kind: 'h2' }
  /** Not HTTP (or not within the window): the L4 path. `reason` for the access log. */
  | { kind: 'other'; reason: 'not_http' | 'window_exhausted' };

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const VERSION = Buffer.from('HTTP/1.');

/** Upper-case letters, `-` and `_`: what methods are in practice; a binary or TLS first byte is none of these. */
function methodByte(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || b === 0x2d || b === 0x5f;
}

/** A request-target byte: visible ASCII (RFC 9112 3.2); no space, no control, nothing above 0x7e. */
function targetByte(b: number): boolean {
  return b > SP && b < 0x7f;
}

type Line = 'http1' | 'incomplete' | 'not_http';

/** Whether `bytes` is an HTTP/1.x request line (`METHOD SP target SP HTTP/1.d CRLF`), a prefix of one, or neither. */
function requestLine(bytes: Buffer): Line {
  let i = 0;
  while (i < bytes.length && methodByte(bytes[i]!)) i++;
  if (i === bytes.length) return i <= MAX_METHOD_LENGTH ? 'incomplete' : 'not_http';
  if (i === 0 || i > MAX_METHOD_LENGTH || bytes[i] !== SP) return 'not_http';
  const targetStart = ++i;
  while (i < bytes.length && targetByte(bytes[i]!)) i++;
  if (i === bytes.length) return 'incomplete';
  if (i === targetStart || bytes[i] !== SP) return 'not_http';
  i++;
  // `HTTP/1.` then one digit, then CRLF.
  const version = bytes.subarray(i, i + VERSION.length + 1);
  const known = Math.min(version.length, VERSION.length);
  if (!version.subarray(0, known).equals(VERSION.subarray(0, known))) return 'not_http';
  if (version.length < VERSION.length + 1) return 'incomplete';
  const digit = version[VERSION.length]!;
  if (digit < 0x30 || digit > 0x39) return 'not_http';
  i += VERSION.length + 1;
  if (i === bytes.length) return 'incomplete';
  if (bytes[i] !== CR) return 'not_http';
  if (i + 1 === bytes.length) return 'incomplete';
  return bytes[i + 1] === LF ? 'http1' : 'not_http';
}

/**
 * The verdict on the first bytes a client sent, at most `maxBytes` of them
 * counted: HTTP once a whole request line or the whole h2 preface is in,
 * `other` as soon as the bytes cannot begin either, or when `maxBytes`
 * arrived without a verdict. (No bytes yet: incomplete; a timeout is the
 * caller's, and means `other` too.)
 */
export function inspectHttp(bytes: Buffer, maxBytes: number): InspectVerdict {
  const seen = bytes.length > maxBytes ? bytes.subarray(0, maxBytes) : bytes;
  const n = Math.min(seen.length, H2_PREFACE.length);
  const h2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
  if (h2 && seen.length >= H2_PREFACE.length) return { kind: 'h2' };
  const line = requestLine(seen);
  if (line === 'http1') return { kind: 'http1' };
  if (line === 'not_http' && !h2) return { kind: 'other', reason: 'not_http' };
  if (seen.length >= maxBytes) return { kind: 'other', reason: 'window_exhausted' };
  return { kind: 'incomplete', needed: maxBytes };
}
