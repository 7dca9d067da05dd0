import test from 'ava';
import { forwardedHeaders, hopByHop } from '../../proxy/http/headers.js';

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
  );
  t.deepEqual(out, { host: 'web.mesh', accept: 'text/html', cookie: ['a=1', 'b=2'], 'x-forwarded-for': '127.0.0.1', 'x-request-id': 'id-1' });
});

test('te is forwarded only as te: trailers (gRPC needs it)', (t) => {
  t.is(forwardedHeaders({ te: 'trailers' }, '::1', 'r').te, 'trailers');
  t.is(forwardedHeaders({ te: 'gzip, trailers' }, '::1', 'r').te, 'trailers');
  t.false('te' in forwardedHeaders({ te: 'gzip' }, '::1', 'r'));
});

test('x-forwarded-for gets the client appended; x-request-id is the one given', (t) => {
  t.is(forwardedHeaders({ 'x-forwarded-for': '10.0.0.9' }, '127.0.0.1', 'r')['x-forwarded-for'], '10.0.0.9, 127.0.0.1');
  t.is(forwardedHeaders({ 'x-forwarded-for': ['10.0.0.8', '10.0.0.9'] }, '127.0.0.1', 'r')['x-forwarded-for'], '10.0.0.8, 10.0.0.9, 127.0.0.1');
  t.is(forwardedHeaders({ 'x-request-id': 'client-chosen' }, '127.0.0.1', 'sidecar-chosen')['x-request-id'], 'sidecar-chosen');
});

test('hopByHop knows the RFC 9110 connection-specific fields', (t) => {
  for (const name of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']) t.true(hopByHop(name), name);
  for (const name of ['host', 'te', 'content-length', 'x-request-id']) t.false(hopByHop(name), name);
});
