// The forward proxy's request head: CONNECT authority forms, absolute URIs,
// every refusal with its reason, and the size bound.

import test from 'ava';
import { decodeProxyRequest, meshClusterName, parseAuthority, proxyReply } from '../../proxy/listeners/proxy-request.js';
import { isLoopbackAddress as isLoopbackClient } from '../../proxy/runtime/loopback.js';

const MAX = 1024;
const decode = (head: string, max = MAX) => decodeProxyRequest(Buffer.from(head, 'latin1'), max);

test('CONNECT host:port gives the host and port, and the head length (bytes after it are not part of it)', (t) => {
  const head = 'CONNECT web.mesh:443 HTTP/1.1\r\nHost: web.mesh:443\r\nUser-Agent: curl/7.88\r\n\r\n';
  t.deepEqual(decode(head + '\x16\x03\x01'), { kind: 'done', value: { kind: 'connect', host: 'web.mesh', port: 443 }, length: Buffer.byteLength(head) });
  t.like(decode('CONNECT 10.0.0.5:8080 HTTP/1.0\r\n\r\n'), { kind: 'done', value: { kind: 'connect', host: '10.0.0.5', port: 8080 } });
});

test('CONNECT to an IPv6 literal: the host without brackets', (t) => {
  t.like(decode('CONNECT [fd00::5]:443 HTTP/1.1\r\n\r\n'), { kind: 'done', value: { kind: 'connect', host: 'fd00::5', port: 443 } });
  t.like(decode('CONNECT [::ffff:10.0.0.1]:1 HTTP/1.1\r\n\r\n'), { kind: 'done', value: { kind: 'connect', host: '::ffff:10.0.0.1', port: 1 } });
});

test('CONNECT without a port, with a bad port or a bad host is a bad_authority', (t) => {
  for (const target of ['web.mesh', '[fd00::5]', 'web.mesh:', 'web.mesh:0', 'web.mesh:65536', 'web.mesh:123456', 'web.mesh:8o', ':443', '[fd00::5:443', '[web]:443', '[fd00::5]x:443', 'we/b:443', 'a@b:443']) {
    t.like(decode(`CONNECT ${target} HTTP/1.1\r\n\r\n`), { kind: 'invalid', code: 'bad_authority' }, target);
  }
});

test('an absolute URI gives method, host, port (80 by default) and origin-form path', (t) => {
  t.like(decode('GET http://web.mesh/a/b?c=1 HTTP/1.1\r\nHost: web.mesh\r\n\r\n'), { kind: 'done', value: { kind: 'absolute', method: 'GET', host: 'web.mesh', port: 80, path: '/a/b?c=1' } });
  t.like(decode('POST http://[::1]:8080 HTTP/1.1\r\n\r\n'), { kind: 'done', value: { kind: 'absolute', method: 'POST', host: '::1', port: 8080, path: '/' } });
  t.like(decode('GET HTTP://Web.Mesh:81/x HTTP/1.1\r\n\r\n'), { kind: 'done', value: { host: 'Web.Mesh', port: 81, path: '/x' } });
});

test('origin-form and other schemes are not proxy requests', (t) => {
  for (const target of ['/', '/index.html', 'https://web.mesh/', 'ftp://web.mesh/', '*', 'web.mesh:80']) {
    t.like(decode(`GET ${target} HTTP/1.1\r\n\r\n`), { kind: 'invalid', code: 'not_absolute_uri' }, target);
  }
  t.like(decode('GET http://web.mesh:99999/ HTTP/1.1\r\n\r\n'), { kind: 'invalid', code: 'bad_authority' });
});

test('a bad method, version or request line is refused with its reason', (t) => {
  t.like(decode('GE(T http://web.mesh/ HTTP/1.1\r\n\r\n'), { kind: 'invalid', code: 'bad_method' });
  t.like(decode('\x16\x03\x01 x y\r\n\r\n'), { kind: 'invalid', code: 'bad_method' });
  t.like(decode('CONNECT web.mesh:443 HTTP/2.0\r\n\r\n'), { kind: 'invalid', code: 'bad_version' });
  t.like(decode('CONNECT web.mesh:443 http/1.1\r\n\r\n'), { kind: 'invalid', code: 'bad_version' });
  for (const line of ['CONNECT web.mesh:443', 'CONNECT  web.mesh:443 HTTP/1.1', 'CONNECT web.mesh:443 HTTP/1.1 x', '']) {
    t.like(decode(`${line}\r\n\r\n`), { kind: 'invalid', code: 'bad_request_line' }, JSON.stringify(line));
  }
});

test('malformed header lines are refused (no colon, bad name, folded, control characters)', (t) => {
  for (const header of ['NoColon', ': empty-name', 'Bad Name: x', ' folded: x', 'X: a\x00b', 'X: a\rb']) {
    t.like(decode(`CONNECT web.mesh:443 HTTP/1.1\r\n${header}\r\n\r\n`), { kind: 'invalid', code: 'bad_header' }, JSON.stringify(header));
  }
  t.like(decode('CONNECT web.mesh:443 HTTP/1.1\r\nX-Empty:\r\nProxy-Authorization: Basic abc\r\n\r\n'), { kind: 'done' });
});

test('an incomplete head asks for up to the bound; at the bound without its end it is head_too_large', (t) => {
  t.deepEqual(decode('CONNECT web.mesh:443 HTTP/1.1\r\nHost: web'), { kind: 'incomplete', needed: MAX });
  t.deepEqual(decode('CONNECT web.mesh:443 HTTP/1.1\r\n\r'), { kind: 'incomplete', needed: MAX });
  const long = `CONNECT web.mesh:443 HTTP/1.1\r\nX-Pad: ${'a'.repeat(MAX)}\r\n\r\n`;
  t.like(decode(long), { kind: 'invalid', code: 'head_too_large' });
  t.like(decode(long.slice(0, MAX)), { kind: 'invalid', code: 'head_too_large' });
  // Exactly at the bound (blank line included) is still a head.
  const head = 'CONNECT web.mesh:443 HTTP/1.1\r\nX-Pad: ';
  const exact = `${head}${'a'.repeat(MAX - head.length - 4)}\r\n\r\n`;
  t.is(exact.length, MAX);
  t.like(decode(exact), { kind: 'done', length: MAX });
  t.like(decode(exact.slice(0, -1) + 'x\r\n\r\n'), { kind: 'invalid', code: 'head_too_large' });
});

test('parseAuthority: a default port applies only when allowed', (t) => {
  t.deepEqual(parseAuthority('web', 80), { host: 'web', port: 80 });
  t.deepEqual(parseAuthority('[::1]', 80), { host: '::1', port: 80 });
  t.is(typeof parseAuthority('web', null), 'string');
  t.deepEqual(parseAuthority('web:65535', null), { host: 'web', port: 65535 });
});

test('a host names its cluster with or without the .mesh suffix, case and a trailing dot aside', (t) => {
  t.is(meshClusterName('web.mesh'), 'web');
  t.is(meshClusterName('Web.Mesh.'), 'web');
  t.is(meshClusterName('web'), 'web');
  t.is(meshClusterName('api.v2.mesh'), 'api.v2');
  t.is(meshClusterName('example.com'), 'example.com');
  t.is(meshClusterName('mesh'), 'mesh');
});

test('loopback clients: 127/8, ::1 and mapped 127/8; nothing else', (t) => {
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.true(isLoopbackClient(a), a);
  for (const a of ['10.0.0.1', '192.0.2.2', '::ffff:10.0.0.1', 'fd00::2', '::', '0.0.0.0', '128.0.0.1', '::2']) t.false(isLoopbackClient(a), a);
});

test('a reply is a complete response that closes, with the reason in a header and the body', (t) => {
  const text = proxyReply(403, 'Forbidden', 'unknown_destination', 'no such cluster').toString();
  const [head, body] = text.split('\r\n\r\n') as [string, string];
  t.true(head.startsWith('HTTP/1.1 403 Forbidden\r\n'));
  t.true(head.includes('\r\nX-Vsockmesh-Reason: unknown_destination'));
  t.true(head.includes('\r\nConnection: close'));
  t.true(head.includes(`\r\nContent-Length: ${Buffer.byteLength(body)}`));
  t.is(body, 'no such cluster\n');
});
