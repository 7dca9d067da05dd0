// An HTTP/2 request's header list checked as RFC 9113 8.2-8.3 asks: each
// malformed shape gives its reason (a stream error), a well-formed one gives
// the request with repeats joined; trailers carry no pseudo-header or
// connection-specific field.

import test from 'ava';
import { checkRequest, checkTrailers, type H2Request } from '../../proxy/http/h2/request-check.js';
import type { HeaderField } from '../../proxy/http/h2/hpack.js';

const base: HeaderField[] = [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':authority', 'web.mesh'],
  [':path', '/a?b'],
];

test('a well-formed request: pseudo-headers read, repeats joined (cookie with "; "), content-length kept', (t) => {
  const r = checkRequest([...base, ['accept', 'a'], ['accept', 'b'], ['cookie', 'x=1'], ['cookie', 'y=2'], ['content-length', '12'], ['te', 'trailers']], false);
  t.deepEqual(r, {
    method: 'POST',
    scheme: 'http',
    authority: 'web.mesh',
    path: '/a?b',
    headers: { accept: 'a, b', cookie: 'x=1; y=2', 'content-length': '12', te: 'trailers' },
    endStream: false,
    contentLength: 12,
  } satisfies H2Request);
  t.is((checkRequest(base, true) as H2Request).contentLength, -1);
  t.is(typeof checkRequest([...base, ['content-length', '0']], true), 'object');
  t.is(typeof checkRequest([...base.filter(([n]) => n !== ':authority'), ['host', 'web.mesh']], true), 'object');
});

const malformed: Array<[string, HeaderField[], boolean, RegExp]> = [
  ['upper-case name', [...base, ['Accept', 'a']], true, /bad field name/],
  ['empty name', [...base, ['', 'a']], true, /bad field name/],
  ['space in a name', [...base, ['x y', 'a']], true, /bad field name/],
  ['non-ASCII name', [...base, ['é', 'a']], true, /bad field name/],
  ['connection', [...base, ['connection', 'close']], true, /connection-specific field connection/],
  ['keep-alive', [...base, ['keep-alive', '5']], true, /connection-specific/],
  ['proxy-connection', [...base, ['proxy-connection', 'x']], true, /connection-specific/],
  ['transfer-encoding', [...base, ['transfer-encoding', 'chunked']], true, /connection-specific/],
  ['upgrade', [...base, ['upgrade', 'h2c']], true, /connection-specific/],
  ['te gzip', [...base, ['te', 'gzip']], true, /te other than trailers/],
  ['LF in a value', [...base, ['x', 'a\nb']], true, /bad value of x/],
  ['CR in a value', [...base, ['x', 'a\rb']], true, /bad value/],
  ['NUL in a value', [...base, ['x', 'a\0b']], true, /bad value/],
  ['CR in :path', [[':method', 'GET'], [':scheme', 'http'], [':path', '/a\r\nx: y']], true, /bad value of :path/],
  ['pseudo after regular', [[':method', 'GET'], ['x', '1'], [':scheme', 'http'], [':path', '/']], true, /after a regular field/],
  ['pseudo twice', [...base, [':path', '/b']], true, /:path twice/],
  ['response pseudo', [...base, [':status', '200']], true, /:status in a request/],
  ['unknown pseudo', [[':protocol', 'x'], ...base], true, /:protocol in a request/],
  ['no :method', base.slice(1), true, /no :method/],
  ['no :scheme', base.filter(([n]) => n !== ':scheme'), true, /no :scheme/],
  ['no :path', base.filter(([n]) => n !== ':path'), true, /no :path/],
  ['empty :path', [...base.filter(([n]) => n !== ':path'), [':path', '']], true, /no :path/],
  ['CONNECT with :path', [[':method', 'CONNECT'], [':authority', 'a:1'], [':path', '/']], true, /CONNECT/],
  ['CONNECT without :authority', [[':method', 'CONNECT']], true, /CONNECT/],
  ['content-length not a number', [...base, ['content-length', '1e3']], false, /bad content-length/],
  ['content-length negative', [...base, ['content-length', '-1']], false, /bad content-length/],
  ['two different content-lengths', [...base, ['content-length', '1'], ['content-length', '2']], false, /bad content-length/],
  ['content-length with END_STREAM on HEADERS', [...base, ['content-length', '3']], true, /no body/],
];

for (const [what, fields, end, reason] of malformed) {
  test(`malformed: ${what}`, (t) => {
    const r = checkRequest(fields, end);
    t.is(typeof r, 'string');
    t.regex(r as string, reason);
  });
}

test('CONNECT with :authority only is well-formed', (t) => {
  t.is(typeof checkRequest([[':method', 'CONNECT'], [':authority', 'a:443']], false), 'object');
});

test('trailers: regular fields pass; a pseudo-header, a connection-specific field, an upper-case name or a CR do not', (t) => {
  t.is(checkTrailers([['grpc-status', '0'], ['grpc-message', 'fine']]), undefined);
  t.regex(checkTrailers([[':path', '/']])!, /pseudo-header/);
  t.regex(checkTrailers([['connection', 'close']])!, /connection-specific/);
  t.regex(checkTrailers([['Grpc-Status', '0']])!, /bad field name/);
  t.regex(checkTrailers([['x', 'a\rb']])!, /bad value/);
});
