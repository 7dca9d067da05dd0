import test from 'ava';
import { H2_PREFACE, MAX_METHOD_LENGTH, inspectHttp } from '../../proxy/http/inspector.js';

const W = 8192;
const kind = (text: string | Buffer, max = W): string => inspectHttp(typeof text === 'string' ? Buffer.from(text, 'latin1') : text, max).kind;

test('a whole HTTP/1.1 or HTTP/1.0 request line is HTTP/1 at once, before any header', (t) => {
  t.is(kind('GET / HTTP/1.1\r\n'), 'http1');
  t.is(kind('GET /index.html?q=1 HTTP/1.0\r\nHost: web\r\n\r\n'), 'http1');
  t.is(kind('OPTIONS * HTTP/1.1\r\n'), 'http1');
  t.is(kind('CONNECT web.mesh:443 HTTP/1.1\r\n'), 'http1');
  t.is(kind('POST http://web.mesh/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc'), 'http1');
});

test('method tokens: any upper-case token up to the longest accepted, extension methods included; lower case, empty or too long is not HTTP', (t) => {
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'TRACE', 'PROPFIND', 'MKCOL', 'VERSION-CONTROL', 'M_SEARCH']) t.is(kind(`${method} / HTTP/1.1\r\n`), 'http1', method);
  t.is(kind(`${'A'.repeat(MAX_METHOD_LENGTH)} / HTTP/1.1\r\n`), 'http1');
  t.is(kind(`${'A'.repeat(MAX_METHOD_LENGTH + 1)} / HTTP/1.1\r\n`), 'other');
  t.is(kind('A'.repeat(MAX_METHOD_LENGTH + 1)), 'other', 'a token already too long decides before its space');
  t.is(kind('get / HTTP/1.1\r\n'), 'other');
  t.is(kind(' / HTTP/1.1\r\n'), 'other');
  t.is(kind('GET\t/ HTTP/1.1\r\n'), 'other');
});

test('every proper prefix of a request line is incomplete, and asks for the window', (t) => {
  const line = 'DELETE /items/7 HTTP/1.1\r\n';
  for (let i = 0; i < line.length; i++) t.deepEqual(inspectHttp(Buffer.from(line.slice(0, i)), W), { kind: 'incomplete', needed: W }, JSON.stringify(line.slice(0, i)));
  t.is(kind(line), 'http1');
});

test('a malformed request line is not HTTP as soon as it cannot be one', (t) => {
  t.is(kind('GET  / HTTP/1.1\r\n'), 'other', 'empty target');
  t.is(kind('GET / HTTP/2.0\r\n'), 'other', 'HTTP/2 is not a request line version');
  t.is(kind('GET / HTTP/1.x'), 'other');
  t.is(kind('GET / HTTP/1.1 \r\n'), 'other');
  t.is(kind('GET / HTTP/1.1\n'), 'other', 'LF alone');
  t.is(kind('GET / HTTP/1.1\rX'), 'other');
  t.is(kind('GET / http/1.1\r\n'), 'other');
  t.is(kind('GET /caf\xe9 HTTP/1.1\r\n'), 'other', 'a byte above 0x7e in the target');
  t.is(kind('GET /a\x01b HTTP/1.1\r\n'), 'other', 'a control byte in the target');
});

test('the h2 preface: HTTP/2 once whole, incomplete on each of its prefixes (even where it looks like a request line)', (t) => {
  t.is(kind(H2_PREFACE), 'h2');
  t.is(kind(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])), 'h2', 'with the SETTINGS frame after it');
  for (let i = 0; i < H2_PREFACE.length; i++) t.is(kind(H2_PREFACE.subarray(0, i)), 'incomplete', JSON.stringify(H2_PREFACE.subarray(0, i).toString()));
  t.is(kind('PRI * HTTP/2.0\r\n\r\nXX'), 'other', 'a broken preface');
  t.is(kind('PRI * HTTP/1.1\r\n'), 'http1', 'PRI as an HTTP/1.1 method');
});

test('TLS, binary protocols and server-first clients are not HTTP', (t) => {
  t.is(kind(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])), 'other', 'TLS ClientHello');
  t.is(kind(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51])), 'other', 'PROXY v2 signature');
  t.is(kind(Buffer.from([0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f])), 'other', 'PostgreSQL SSLRequest');
  t.is(kind('SSH-2.0-OpenSSH_9.6\r\n'), 'other', 'an SSH banner: SSH-2.0-… has no space after a token');
  t.is(kind('*1\r\n$4\r\nPING\r\n'), 'other', 'Redis');
  t.is(kind('EHLO mail.example\r\n'), 'other', 'SMTP: a token, a space, then no HTTP version');
  t.deepEqual(inspectHttp(Buffer.alloc(0), W), { kind: 'incomplete', needed: W }, 'nothing yet (a server-first client waits; the timeout decides)');
});

test('the window: incomplete up to maxBytes, then window_exhausted; bytes past it are not looked at', (t) => {
  const long = `GET /${'a'.repeat(100)} HTTP/1.1\r\n`;
  t.is(kind(long, 64), 'other');
  t.deepEqual(inspectHttp(Buffer.from(long.slice(0, 64)), 64), { kind: 'other', reason: 'window_exhausted' });
  t.deepEqual(inspectHttp(Buffer.from(long.slice(0, 63)), 64), { kind: 'incomplete', needed: 64 });
  t.deepEqual(inspectHttp(Buffer.from('\x16\x03'), 64), { kind: 'other', reason: 'not_http' });
  t.is(kind(long, long.length), 'http1', 'a window that holds the line');
  t.is(kind(long, long.length - 1), 'other', 'one byte short');
});
