// Which admin requests are refused, so that a web page in a browser on the
// same machine cannot use the admin endpoint. Pure.
//
// - Host must name the address the request came in on (or localhost on a
//   loopback address): a DNS-rebinding page sends its own name.
// - An Origin, when sent, must be the admin endpoint's own: browsers send it
//   on cross-site requests.
// - A mutating call (POST) must be a request a browser does not send across
//   sites without a CORS preflight, which this endpoint never grants: it
//   carries `x-vsockmesh-admin: 1` or `content-type: application/json`.

import { isLoopbackAddress } from './loopback.js';

export const ADMIN_HEADER = 'x-vsockmesh-admin';

export interface AdminRequestFacts {
  method: string;
  /** Request headers (lower-case names). */
  host: string | undefined;
  origin: string | undefined;
  contentType: string | undefined;
  adminHeader: string | undefined;
  /** The local address the request came in on. */
  localAddress: string;
}

export type AdminRefusalReason = 'admin_host_not_allowed' | 'admin_cross_origin' | 'admin_simple_request';

export interface AdminRefusal {
  reason: AdminRefusalReason;
  /** One line: the 403 body and the log message. */
  message: string;
}

export function adminRequestRefusal(facts: AdminRequestFacts): AdminRefusal | undefined {
  const local = canonicalHost(facts.localAddress.startsWith('::ffff:') ? facts.localAddress.slice(7) : facts.localAddress);
  const allowed = local === undefined ? [] : isLoopbackAddress(local) ? [local, 'localhost'] : [local];
  const host = facts.host === undefined ? undefined : hostOf(facts.host);
  if (host === undefined || !allowed.includes(host.name)) {
    return {
      reason: 'admin_host_not_allowed',
      message: `Host ${facts.host === undefined ? '(none)' : JSON.stringify(facts.host)} does not name this admin endpoint (use ${allowed.join(' or ') || 'its IP address'})`,
    };
  }
  if (facts.origin !== undefined) {
    const origin = facts.origin === 'null' ? undefined : originOf(facts.origin);
    if (origin === undefined || origin !== `http://${host.authority}`) {
      return { reason: 'admin_cross_origin', message: `Origin ${JSON.stringify(facts.origin)} is not this admin endpoint: requests from web pages are refused` };
    }
  }
  if (facts.method !== 'GET' && facts.method !== 'HEAD' && facts.adminHeader !== '1' && mediaType(facts.contentType) !== 'application/json') {
    return {
      reason: 'admin_simple_request',
      message: `${facts.method} needs the header "${ADMIN_HEADER}: 1" (or content-type: application/json), which a web page cannot send here`,
    };
  }
  return undefined;
}

/** The host name (IPv6 without brackets, canonical) and host:port of a Host header; undefined if it is not one. */
function hostOf(header: string): { name: string; authority: string } | undefined {
  const url = parse(`http://${header}`);
  if (url === undefined || url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  return { name: unbracket(url.hostname), authority: url.host };
}

/** `http://host:port` of an Origin header, canonical; undefined if it is not an origin. */
function originOf(header: string): string | undefined {
  const url = parse(header);
  if (url === undefined || url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  return url.origin;
}

function canonicalHost(address: string): string | undefined {
  const url = parse(address.includes(':') ? `http://[${address}]` : `http://${address}`);
  return url === undefined ? undefined : unbracket(url.hostname);
}

function mediaType(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]!.trim().toLowerCase();
}

function unbracket(hostname: string): string {
  return hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
}

function parse(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}
