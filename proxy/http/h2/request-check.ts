// An HTTP/2 request's header list checked as RFC 9113 8.2-8.3 asks (and as
// Node's http2 refused it on the old path): lower-case field names of token
// characters, no connection-specific fields, `te` only "trailers", values
// without CR, LF or NUL, pseudo-header fields first, once each, only the
// request ones, :method/:scheme/:path present (CONNECT: :authority only), a
// single numeric content-length. A malformed request is a stream error
// (PROTOCOL_ERROR) with the reason returned here. Pure.

import type { HeaderField } from './hpack.js';

export interface H2Request {
  method: string;
  scheme: string;
  authority: string;
  path: string;
  /** Regular headers by name: repeats joined (`cookie` with "; "). */
  headers: Record<string, string>;
  endStream: boolean;
  /** The content-length header's value, or -1 without one. */
  contentLength: number;
}

const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** RFC 9110 token characters, lower-case only (upper-case letters are malformed in HTTP/2). */
const NAME_OK = (() => {
  const ok = new Uint8Array(128);
  for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") ok[c.charCodeAt(0)] = 1;
  return ok;
})();

function badName(name: string): boolean {
  if (name.length === 0) return true;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_OK[c] === 0) return true;
  }
  return false;
}

function badValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/** The request from a HEADERS block's fields, or the reason it is malformed. */
export function checkRequest(fields: readonly HeaderField[], endStream: boolean): H2Request | string {
  const request: H2Request = { method: '', scheme: '', authority: '', path: '', headers: {}, endStream, contentLength: -1 };
  const seen = new Set<string>();
  let regular = false;
  for (const [name, value] of fields) {
    if (badValue(value)) return `bad value of ${name}`;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header ${name} after a regular field`;
      if (seen.has(name)) return `pseudo-header ${name} twice`;
      seen.add(name);
      if (name === ':method') request.method = value;
      else if (name === ':path') request.path = value;
      else if (name === ':authority') request.authority = value;
      else if (name === ':scheme') request.scheme = value;
      else return `pseudo-header ${name} in a request`;
      continue;
    }
    regular = true;
    if (badName(name)) return `bad field name ${JSON.stringify(name)}`;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
    if (name === 'te' && value !== 'trailers') return 'te other than trailers';
    if (name === 'content-length') {
      if (!/^[0-9]{1,15}$/.test(value) || (request.contentLength >= 0 && Number(value) !== request.contentLength)) return 'bad content-length';
      request.contentLength = Number(value);
    }
    const had = request.headers[name];
    request.headers[name] = had === undefined ? value : `${had}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  if (request.method === '') return 'no :method';
  if (request.method === 'CONNECT') {
    if (request.scheme !== '' || request.path !== '' || request.authority === '') return 'CONNECT with :scheme or :path, or without :authority';
    return request;
  }
  if (request.scheme === '') return 'no :scheme';
  if (request.path === '') return 'no :path';
  if (endStream && request.contentLength > 0) return 'content-length but no body';
  return request;
}

/** Trailers: regular fields only, checked like a request's. The reason they are malformed, or undefined. */
export function checkTrailers(fields: readonly HeaderField[]): string | undefined {
  for (const [name, value] of fields) {
    if (name.charCodeAt(0) === 0x3a) return `pseudo-header ${name} in trailers`;
    if (badName(name)) return `bad field name ${JSON.stringify(name)}`;
    if (badValue(value)) return `bad value of ${name}`;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
  }
  return undefined;
}
