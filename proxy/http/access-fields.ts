// The fields of an HTTP request's access-log line (`"log":"access"`, msg `request`).
//
// One object of one fixed shape: a field the line leaves out is `undefined`,
// which JSON.stringify skips, so the line is the one a conditional spread made
// (same keys, same order) without building and copying a temporary object per
// optional field (the spread form was a large part of a request's bookkeeping).

/** What the access line says of one request. */
export interface HttpAccessFacts {
  listener: string;
  protocol: 'http/1.1' | 'h2';
  /** `host:port` of the client. */
  src: string;
  method: string;
  authority: string;
  /** The request path; its query string is cut off here (it may carry secrets). */
  path: string;
  status: number;
  route: string;
  cluster: string;
  transport: string;
  upstream: string | null;
  requestId: string;
  durationMs: number;
  attempts: number;
  retryBudgetExhausted: boolean;
  reason: string | undefined;
  /** Why no transport could be had, on a request the sidecar answered itself. */
  transportReason: string | undefined;
}

/** The access line's fields, in the line's order; absent ones `undefined` (left out by JSON.stringify). */
export function httpAccessFields(facts: HttpAccessFacts): Record<string, unknown> {
  const query = facts.path.indexOf('?');
  return {
    log: 'access',
    listener: facts.listener,
    direction: 'outbound',
    protocol: facts.protocol,
    src: facts.src,
    method: facts.method,
    authority: facts.authority,
    path: query < 0 ? facts.path : facts.path.slice(0, query),
    status: facts.status,
    route: facts.route,
    cluster: facts.cluster,
    transport: facts.transport,
    upstream: facts.upstream ?? undefined,
    request_id: facts.requestId,
    duration_ms: facts.durationMs,
    attempts: facts.attempts,
    retry_budget_exhausted: facts.retryBudgetExhausted ? true : undefined,
    reason: facts.reason,
    transport_reason: facts.transportReason,
  };
}
