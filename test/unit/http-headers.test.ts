import test from 'ava';
import { forwardedElement, forwardedHeaders, hopByHop, stripHopByHopLines } from '../../proxy/http/headers.js';

/** The tests of other headers: no `forwarded` element of our own. */
const OFF = { forwarded: 'none', host: '' } as const;

test('hop-by-hop headers, those the Connection header names and pseudo-headers are not forwarded', (t) => {
  const out = forwardedHeaders(
    {
      ':method': 'GET',
      ':path': '/',
      host: 'web.mesh',
      connection: 'keep-alive, X-Private',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      upgrade: 'websocket',
      'proxy-authorization': 'Basic x',
      'x-private': 'secret',
      accept: 'text/html',
      cookie: ['a=1', 'b=2'],
    },
    '127.0.0.1',
    'id-1',
    OFF,
  );
  t.deepEqual(out, { host: 'web.mesh', accept: 'text/html', cookie: ['a=1', 'b=2'], 'x-forwarded-for': '127.0.0.1', 'x-request-id': 'id-1' });
});

test('te is forwarded only as te: trailers (gRPC needs it)', (t) => {
  t.is(forwardedHeaders({ te: 'trailers' }, '::1', 'r', OFF).te, 'trailers');
  t.is(forwardedHeaders({ te: 'gzip, trailers' }, '::1', 'r', OFF).te, 'trailers');
  t.false('te' in forwardedHeaders({ te: 'gzip' }, '::1', 'r', OFF));
});

test('x-forwarded-for gets the client appended; x-request-id is the one given', (t) => {
  t.is(forwardedHeaders({ 'x-forwarded-for': '10.0.0.9' }, '127.0.0.1', 'r', OFF)['x-forwarded-for'], '10.0.0.9, 127.0.0.1');
  t.is(forwardedHeaders({ 'x-forwarded-for': ['10.0.0.8', '10.0.0.9'] }, '127.0.0.1', 'r', OFF)['x-forwarded-for'], '10.0.0.8, 10.0.0.9, 127.0.0.1');
  t.is(forwardedHeaders({ 'x-request-id': 'client-chosen' }, '127.0.0.1', 'sidecar-chosen', OFF)['x-request-id'], 'sidecar-chosen');
});

test('hopByHop knows the RFC 9110 connection-specific fields', (t) => {
  for (const name of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']) t.true(hopByHop(name), name);
  for (const name of ['host', 'te', 'content-length', 'x-request-id']) t.false(hopByHop(name), name);
});

test('forwarded (RFC 7239): this hop appended after the client\'s elements, as x-forwarded-for is', (t) => {
  const hop = { forwarded: 'append', host: 'web.mesh' } as const;
  t.is(forwardedHeaders({}, '127.0.0.1', 'r', hop).forwarded, 'for=127.0.0.1;proto=http;host=web.mesh');
  t.is(forwardedHeaders({ forwarded: 'for=10.0.0.9' }, '127.0.0.1', 'r', hop).forwarded, 'for=10.0.0.9, for=127.0.0.1;proto=http;host=web.mesh');
  t.is(forwardedHeaders({ forwarded: ['for=10.0.0.8', 'for=10.0.0.9;proto=https'] }, '10.0.0.1', 'r', hop).forwarded, 'for=10.0.0.8, for=10.0.0.9;proto=https, for=10.0.0.1;proto=http;host=web.mesh');
  t.is(forwardedHeaders({}, '127.0.0.1', 'r', hop)['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for too');
});

test('forwarded: none passes the client\'s header on unchanged, and adds none', (t) => {
  t.false('forwarded' in forwardedHeaders({}, '127.0.0.1', 'r', OFF));
  t.is(forwardedHeaders({ forwarded: 'for=10.0.0.9' }, '127.0.0.1', 'r', OFF).forwarded, 'for=10.0.0.9');
});

test('forwarded element: IPv6 bracketed and quoted, IPv4-mapped as IPv4, a host with a port quoted, no host pair without a host', (t) => {
  t.is(forwardedElement('::1', ''), 'for="[::1]";proto=http');
  t.is(forwardedElement('fd00::5', '[fd00::6]:8080'), 'for="[fd00::5]";proto=http;host="[fd00::6]:8080"');
  t.is(forwardedElement('::ffff:10.0.0.3', 'web.mesh:80'), 'for=10.0.0.3;proto=http;host="web.mesh:80"');
  t.is(forwardedElement('10.0.0.3', 'we"b\\'), 'for=10.0.0.3;proto=http;host="we\\"b\\\\"', 'quote and backslash escaped');
});

test('forwarded element: the same client and host again give the same element, and a change of either one a new element', (t) => {
  const a = forwardedElement('10.0.0.3', 'web.mesh');
  t.is(forwardedElement('10.0.0.3', 'web.mesh'), a);
  t.is(forwardedElement('10.0.0.4', 'web.mesh'), 'for=10.0.0.4;proto=http;host=web.mesh', 'another client');
  t.is(forwardedElement('10.0.0.4', 'api.mesh'), 'for=10.0.0.4;proto=http;host=api.mesh', 'another host');
  t.is(forwardedElement('10.0.0.4', ''), 'for=10.0.0.4;proto=http', 'no host');
  t.is(forwardedElement('', ''), 'for="";proto=http', 'an empty client is made, not taken for the empty memo');
  t.is(forwardedElement('10.0.0.3', 'web.mesh'), a);
});

test('stripHopByHopLines drops hop-by-hop lines in any case, keeps duplicates and order, and returns the same array when there is none', (t) => {
  const clean = ['Content-Length', '2', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'];
  t.is(stripHopByHopLines(clean), clean);
  t.deepEqual(stripHopByHopLines(['Connection', 'keep-alive', 'X-A', '1', 'Transfer-Encoding', 'chunked', 'KEEP-ALIVE', 'timeout=5', 'X-A', '2']), ['X-A', '1', 'X-A', '2']);
  t.deepEqual(stripHopByHopLines([]), []);
});
