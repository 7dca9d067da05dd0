// The headers the HTTP listener forwards: hop-by-hop ones dropped (RFC 9110
// 7.6.1, and what the Connection header names), `x-forwarded-for` with the
// client appended, `forwarded` (RFC 7239) with this hop appended unless
// configured off, and an `x-request-id` (the client's own one kept). Pure.

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** Whether a (lower-case) header applies to one hop only; `te` is end-to-end only as `te: trailers` (gRPC needs it), see forwardedHeaders. */
export function hopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

/** Header lines as received (name, value, name, value, …: an HTTP/1.1 answer's) without the hop-by-hop ones; the same array when it has none. */
export function stripHopByHopLines(lines: string[]): string[] {
  let hop = false;
  for (let i = 0; i < lines.length && !hop; i += 2) hop = hopByHop(lines[i]!.toLowerCase());
  if (!hop) return lines;
  const out: string[] = [];
  for (let i = 0; i < lines.length; i += 2) if (!hopByHop(lines[i]!.toLowerCase())) out.push(lines[i]!, lines[i + 1]!);
  return out;
}

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** `append`: the `forwarded` header gets this hop's element; `none`: it is passed on as the client sent it. */
export type ForwardedMode = 'append' | 'none';

const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** A forwarded-pair value (RFC 7239 4): a token as is, anything else a quoted-string. */
function pairValue(value: string): string {
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/** A client address as a node (RFC 7239 6): IPv6 in brackets (so quoted), an IPv4-mapped one as IPv4. */
function node(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  return address.includes(':') ? `[${address}]` : address;
}

/** The last element made: the requests of a connection, and of most clients, repeat their client and host. */
let lastElement: { client: string; host: string; element: string } | undefined;

/** This hop's `forwarded` element: the client, the protocol it spoke to us (always plain http here), and the host it asked for. */
export function forwardedElement(client: string, host: string): string {
  if (lastElement?.client !== client || lastElement.host !== host) lastElement = { client, host, element: makeForwardedElement(client, host) };
  return lastElement.element;
}

function makeForwardedElement(client: string, host: string): string {
  const pairs = [`for=${pairValue(node(client))}`, 'proto=http'];
  if (host !== '') pairs.push(`host=${pairValue(host)}`);
  return pairs.join(';');
}

/** The request headers to send upstream: no pseudo-headers (HTTP/2 sets its own), no hop-by-hop ones. `hop.host`: the request's Host/:authority. */
export function forwardedHeaders(headers: Headers, client: string, requestId: string, hop: { forwarded: ForwardedMode; host: string }): Record<string, string | string[]> {
  // Most requests name nothing in Connection (HTTP/1.1 keep-alive is the default; HTTP/2 has no such header): no set for those.
  const named =
    headers.connection === undefined
      ? undefined
      : new Set(
          String(headers.connection)
            .split(',')
            .map((n) => n.trim().toLowerCase())
            .filter((n) => n !== ''),
        );
  const out: Record<string, string | string[]> = {};
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (value === undefined || name.startsWith(':') || hopByHop(name) || named?.has(name)) continue;
    if (name === 'te') {
      if (String(value).toLowerCase().includes('trailers')) out.te = 'trailers';
      continue;
    }
    out[name] = value;
  }
  const before = headers['x-forwarded-for'];
  const chain = Array.isArray(before) ? before.join(', ') : before;
  out['x-forwarded-for'] = chain ? `${chain}, ${client}` : client;
  if (hop.forwarded === 'append') {
    const earlier = headers.forwarded;
    const elements = Array.isArray(earlier) ? earlier.join(', ') : earlier;
    const element = forwardedElement(client, hop.host);
    out.forwarded = elements ? `${elements}, ${element}` : element;
  }
  out['x-request-id'] = requestId;
  return out;
}
