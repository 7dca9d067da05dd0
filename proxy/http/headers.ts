// The headers the HTTP listener forwards: hop-by-hop ones dropped (RFC 9110
// 7.6.1, and what the Connection header names), `x-forwarded-for` with the
// client appended, and an `x-request-id` (the client's own one kept). Pure.

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** Whether a (lower-case) header applies to one hop only; `te` is end-to-end only as `te: trailers` (gRPC needs it), see forwardedHeaders. */
export function hopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** The request headers to send upstream: no pseudo-headers (HTTP/2 sets its own), no hop-by-hop ones. */
export function forwardedHeaders(headers: Headers, client: string, requestId: string): Record<string, string | string[]> {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((n) => n.trim().toLowerCase())
      .filter((n) => n !== ''),
  );
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(':') || hopByHop(name) || named.has(name)) continue;
    if (name === 'te') {
      if (String(value).toLowerCase().includes('trailers')) out.te = 'trailers';
      continue;
    }
    out[name] = value;
  }
  const before = headers['x-forwarded-for'];
  const chain = Array.isArray(before) ? before.join(', ') : before;
  out['x-forwarded-for'] = chain ? `${chain}, ${client}` : client;
  out['x-request-id'] = requestId;
  return out;
}
