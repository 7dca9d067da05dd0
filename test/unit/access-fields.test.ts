import test from 'ava';
import fc from 'fast-check';
import { httpAccessFields, type HttpAccessFacts } from '../../proxy/http/access-fields.js';
import { createLogger, logInfoLine } from '../../proxy/runtime/log.js';

/** The access line's fields as listener.ts built them before (conditional spreads): the reference. */
function spreadFields(f: HttpAccessFacts): Record<string, unknown> {
  const query = f.path.indexOf('?');
  return {
    log: 'access',
    listener: f.listener,
    direction: 'outbound',
    protocol: f.protocol,
    src: f.src,
    method: f.method,
    authority: f.authority,
    path: query < 0 ? f.path : f.path.slice(0, query),
    status: f.status,
    route: f.route,
    cluster: f.cluster,
    transport: f.transport,
    ...(f.upstream !== null && { upstream: f.upstream }),
    request_id: f.requestId,
    duration_ms: f.durationMs,
    attempts: f.attempts,
    ...(f.retryBudgetExhausted && { retry_budget_exhausted: true }),
    ...(f.reason !== undefined && { reason: f.reason }),
    ...(f.transportReason !== undefined && { transport_reason: f.transportReason }),
  };
}

/** The line logInfoLine writes for `fields`, without its time. */
function line(fields: Record<string, unknown>): string {
  const lines: string[] = [];
  const logger = createLogger({ level: 'info', name: 'access', destination: { write: (l: string) => void lines.push(l) } });
  logInfoLine(logger, fields, 'request');
  return lines[0]!.replace(/"time":"[^"]*"/, '"time":"-"');
}

const plain: HttpAccessFacts = {
  listener: 'out',
  protocol: 'http/1.1',
  src: '10.0.0.1:40000',
  method: 'GET',
  authority: 'web.mesh',
  path: '/a/b',
  status: 200,
  route: 'web',
  cluster: 'web',
  transport: 'vsock',
  upstream: 'vm-7:8080',
  requestId: '3f1c2b8e-1111-2222-3333-444455556666',
  durationMs: 3,
  attempts: 1,
  retryBudgetExhausted: false,
  reason: undefined,
  transportReason: undefined,
};

const table: Array<[string, Partial<HttpAccessFacts>]> = [
  ['a plain request', {}],
  ['no upstream, a reason and a transport reason', { upstream: null, status: 503, reason: 'no_healthy_upstream', transportReason: 'all endpoints ejected', attempts: 0 }],
  ['a retry budget exhausted', { retryBudgetExhausted: true, attempts: 2, status: 502, reason: 'upstream_reset' }],
  ['a query string cut off', { path: '/search?token=secret&q=1' }],
  ['a path that is only a query', { path: '?a=1' }],
  ['quotes and backslashes from the client', { authority: 'we"b\\.mesh', path: '/a"b\\c', requestId: '"}, "x": 1, {"' }],
  ['control characters', { method: 'G\u0000E\u001fT', path: '/a\r\nb\tc\u007f', requestId: '\b\f\n\r\t\u000b' }],
  ['unicode, lone surrogates and line separators', { authority: 'wéb.méşh', path: '/☃/\ud83d\ude00/\ud800/\udc00', requestId: '\u2028\u2029' }],
  ['an empty request id and path', { requestId: '', path: '' }],
  ['h2, a reason of quotes', { protocol: 'h2', reason: 'say "hi"\n', transport: 'none', upstream: null }],
  ['an empty transport reason', { transportReason: '', upstream: null }],
];

for (const [name, change] of table) {
  test(`the access line is the spread form's, byte for byte: ${name}`, (t) => {
    const facts = { ...plain, ...change };
    t.is(JSON.stringify(httpAccessFields(facts)), JSON.stringify(spreadFields(facts)));
    t.is(line(httpAccessFields(facts)), line(spreadFields(facts)));
  });
}

test('the access line is the spread form\'s for any facts', (t) => {
  const text = fc.string({ unit: 'binary' });
  const facts = fc.record({
    listener: text,
    protocol: fc.constantFrom('http/1.1' as const, 'h2' as const),
    src: text,
    method: text,
    authority: text,
    path: text,
    status: fc.integer({ min: 0, max: 599 }),
    route: text,
    cluster: text,
    transport: text,
    upstream: fc.option(text, { nil: null }),
    requestId: text,
    durationMs: fc.nat(),
    attempts: fc.nat({ max: 10 }),
    retryBudgetExhausted: fc.boolean(),
    reason: fc.option(text, { nil: undefined }),
    transportReason: fc.option(text, { nil: undefined }),
  });
  fc.assert(
    fc.property(facts, (f) => {
      t.is(line(httpAccessFields(f)), line(spreadFields(f)));
    }),
  );
});

test('the access line leaves out the query string and the fields not given', (t) => {
  const fields = JSON.parse(JSON.stringify(httpAccessFields({ ...plain, path: '/p?secret=1', upstream: null }))) as Record<string, unknown>;
  t.is(fields.path, '/p');
  t.false('upstream' in fields);
  t.false('reason' in fields);
  t.false('retry_budget_exhausted' in fields);
  t.false('transport_reason' in fields);
});
