// The one request head a forward-proxy client sends (RFC 9110 9.3.6, 7.1):
// `CONNECT host:port` (authority form) or an absolute URI (`GET http://...`).
// Pure: bytes in, the request or a reason out; the listener does the I/O.

import type { PreambleDecode } from './preamble.js';

export type ProxyRequest =
  | { kind: 'connect'; host: string; port: number }
  /** A plain request through the proxy; `host`/`port` from the URI (port 80 when absent). */
  | { kind: 'absolute'; method: string; host: string; port: number; path: string };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REG_NAME = /^[A-Za-z0-9._~!$&'()*+,;=%-]+$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const END = Buffer.from('\r\n\r\n');

/**
 * Decodes one head once its blank line has arrived. `maxBytes` bounds the head
 * (request line, headers and the blank line): a longer one is invalid, not read on.
 */
export function decodeProxyRequest(bytes: Buffer, maxBytes: number): PreambleDecode<ProxyRequest> {
  const end = bytes.subarray(0, maxBytes).indexOf(END);
  if (end < 0) {
    if (bytes.length >= maxBytes) return invalid('head_too_large', `the request head is longer than ${maxBytes} bytes`);
    return { kind: 'incomplete', needed: maxBytes };
  }
  const [line, ...headers] = bytes.subarray(0, end).toString('latin1').split('\r\n');
  for (const header of headers) {
    const colon = header.indexOf(':');
    if (colon <= 0 || !TOKEN.test(header.slice(0, colon)) || !HEADER_VALUE.test(header.slice(colon + 1))) {
      return invalid('bad_header', `malformed header line ${JSON.stringify(header.slice(0, 64))}`);
    }
  }
  const parts = line!.split(' ');
  if (parts.length !== 3) return invalid('bad_request_line', `the request line must be "METHOD target HTTP/1.1", got ${JSON.stringify(line!.slice(0, 64))}`);
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method)) return invalid('bad_method', `${JSON.stringify(method.slice(0, 32))} is not an HTTP method`);
  if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') return invalid('bad_version', `${JSON.stringify(version.slice(0, 32))} is not HTTP/1.0 or HTTP/1.1`);
  const length = end + END.length;
  if (method === 'CONNECT') {
    const authority = parseAuthority(target, null);
    if (typeof authority === 'string') return invalid('bad_authority', `CONNECT needs host:port, ${authority}`);
    return { kind: 'done', value: { kind: 'connect', ...authority }, length };
  }
  const uri = /^http:\/\/([^/?#]*)([^#]*)$/i.exec(target);
  if (uri === null) return invalid('not_absolute_uri', `a request to a proxy names an absolute http:// URI (or CONNECT host:port), got ${JSON.stringify(target.slice(0, 64))}`);
  const authority = parseAuthority(uri[1]!, 80);
  if (typeof authority === 'string') return invalid('bad_authority', authority);
  const path = uri[2] === '' ? '/' : uri[2]!;
  return { kind: 'done', value: { kind: 'absolute', method, ...authority, path }, length };
}

/** `host:port`, `[v6]:port`; `defaultPort` null: the port is required. A string: what is wrong. */
export function parseAuthority(authority: string, defaultPort: number | null): { host: string; port: number } | string {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (close < 0 || !IPV6.test(host) || !host.includes(':') || (rest !== '' && !rest.startsWith(':'))) return `${JSON.stringify(authority.slice(0, 64))} is not a valid [IPv6]:port`;
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = authority.lastIndexOf(':');
    host = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
    if (!REG_NAME.test(host)) return `${JSON.stringify(authority.slice(0, 64))} names no valid host`;
  }
  if (portText === undefined) {
    if (defaultPort === null) return `${JSON.stringify(authority.slice(0, 64))} has no port`;
    return { host, port: defaultPort };
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return `${JSON.stringify(authority.slice(0, 64))} has no valid port (1..65535)`;
  return { host, port };
}

/** The cluster a host names: `web` or `web.mesh` name cluster `web` (the control plane's domains for a service). */
export function meshClusterName(host: string): string {
  const lower = host.toLowerCase().replace(/\.$/, '');
  return lower.endsWith('.mesh') ? lower.slice(0, -'.mesh'.length) : lower;
}

/** A complete HTTP/1.1 response that ends the connection; `reason` goes in a header and the body. */
export function proxyReply(status: number, statusText: string, reason: string, message: string): Buffer {
  const body = `${message}\n`;
  return Buffer.from(
    `HTTP/1.1 ${status} ${statusText}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Vsockmesh-Reason: ${reason}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export const CONNECTION_ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n');

function invalid(code: string, reason: string): PreambleDecode<ProxyRequest> {
  return { kind: 'invalid', code, reason };
}
