// Forward proxy (kind: forward_proxy): curl with --proxytunnel sends CONNECT
// app.mesh:80 to sidecar a, which opens the tunnel through cluster "app"'s
// outbound path (PROXY v2 header to sidecar b's inbound listener, then the
// app) and answers 200 only once it is up. A plain absolute-URI request
// (HTTP_PROXY) is routed by the L7 table, several on one connection. Unknown
// hosts get 403, a dead upstream 502, a bad head 400, and a client from a
// non-loopback address nothing at all.

import test from 'ava';
import { freePort } from '../helpers/haproxy.js';
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';
import { httpGet, metricSum } from '../helpers/admin-http.js';
import { runCli, startSidecarCli, writeConfig } from '../helpers/cli.js';
import { collect, waitFor } from '../helpers/apps.js';
import { startSidecar, type TestSidecar } from '../helpers/sidecars.js';

const run = promisify(execFile);

interface Setup {
  a: TestSidecar;
  b: TestSidecar;
  proxyPort: number;
  seen: Array<{ url: string | undefined; host: string | undefined }>;
}


async function setup(t: import('ava').ExecutionContext, proxy: Record<string, unknown> = {}): Promise<Setup> {
  const seen: Setup['seen'] = [];
  const app = http.createServer((req, res) => {
    seen.push({ url: req.url, host: req.headers.host });
    res.end(`hello from the app: ${req.url ?? ''}\n`);
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => app.close(() => resolve())));
  const appPort = (app.address() as net.AddressInfo).port;
  const b = await startSidecar({ node: { id: 'vm-b' }, listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [appPort] }] });
  t.teardown(() => b.sidecar.stop());
  const inbound = b.sidecar.listenerAddress('inbound');
  const a = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'forward_proxy', name: 'egress', port: 0, ...proxy }],
    clusters: [
      { name: 'app', endpoints: [{ address: '127.0.0.1', port: appPort, vm_id: 'vm-b', peer: { address: inbound.address, port: inbound.port } }] },
      { name: 'down', connect_timeout: '10s', endpoints: [{ address: '127.0.0.1', port: await freePort() }] },
    ],
  });
  t.teardown(() => a.sidecar.stop());
  return { a, b, proxyPort: a.sidecar.listenerAddress('egress').port, seen };
}

/** Sends a raw head (and with `end`, a FIN after it) and reads everything until the proxy closes (or resets: errorCode). */
async function exchange(port: number, head: string, options: { host?: string; localAddress?: string; end?: boolean } = {}): Promise<{ text: string; errorCode?: string }> {
  const { host = '127.0.0.1', localAddress, end = false } = options;
  const socket = net.connect({ port, host, ...(localAddress !== undefined && { localAddress }) });
  if (end) socket.end(head);
  else socket.write(head);
  const { data, errorCode } = await collect(socket);
  return { text: data.toString('latin1'), ...(errorCode !== undefined && { errorCode }) };
}

const forwardRequests = async (s: TestSidecar, outcome: string): Promise<number> =>
  metricSum(await s.sidecar.metrics.registry.metrics(), 'vsockmesh_forward_proxy_requests_total', { listener: 'egress', outcome });

test('curl --proxytunnel reaches the app by its mesh name through both sidecars; the tunnel is counted and logged', async (t) => {
  const { a, b, proxyPort, seen } = await setup(t);
  const { stdout } = await run('curl', ['-sS', '--max-time', '60', '-p', '-x', `http://127.0.0.1:${proxyPort}`, 'http://app.mesh/hello?x=1'], { timeout: 90_000 });
  t.is(stdout, 'hello from the app: /hello?x=1\n');
  t.deepEqual(seen, [{ url: '/hello?x=1', host: 'app.mesh' }], 'the app got the request curl sent inside the tunnel');
  await waitFor(() => a.logs.access().length >= 1 && b.logs.access().length >= 1, 'an access line on each sidecar', 30_000);
  t.like(a.logs.access()[0], { listener: 'egress', direction: 'outbound', cluster: 'app', transport: 'tcp', dst_vm: 'vm-b', outcome: 'closed' });
  t.like(b.logs.access()[0], { listener: 'inbound', direction: 'inbound' });
  t.is(await forwardRequests(a, 'cluster'), 1);
  t.is(metricSum(await a.sidecar.metrics.registry.metrics(), 'vsockmesh_connections_total', { listener: 'egress', cluster: 'app' }), 1);
});

test('CONNECT by the bare cluster name answers 200 only once the upstream is up, then relays both ways (bytes sent with the head included)', async (t) => {
  const { proxyPort } = await setup(t);
  const { text } = await exchange(proxyPort, 'CONNECT app:80 HTTP/1.1\r\nHost: app:80\r\n\r\nGET /pipelined HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');
  t.true(text.startsWith('HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK\r\n'), text);
  t.true(text.endsWith('hello from the app: /pipelined\n'), text);
});

test('an unknown destination gets 403 with its reason and reaches nothing', async (t) => {
  const { a, proxyPort } = await setup(t);
  const { text } = await exchange(proxyPort, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n');
  t.regex(text, /^HTTP\/1\.1 403 Forbidden\r\n/);
  t.regex(text, /\r\nX-Vsockmesh-Reason: unknown_destination\r\n/);
  t.regex(text, /127\.0\.0\.1:22 names no cluster/);
  const curl = await run('curl', ['-sS', '--max-time', '60', '-p', '-x', `http://127.0.0.1:${proxyPort}`, 'http://nowhere.mesh/'], { timeout: 90_000 }).catch((err: { code: number; stderr: string }) => err);
  t.is((curl as { code: number }).code, 56, 'curl: CONNECT tunnel failed');
  t.regex((curl as { stderr: string }).stderr, /403/);
  t.is(await forwardRequests(a, 'unknown_destination'), 2);
  t.is(a.logs.withReason('unknown_destination').length >= 1, true);
  t.is(a.logs.access().length, 0);
});

test('upstream down: 502 after the connect failed, counted as a connect error', async (t) => {
  const { a, proxyPort } = await setup(t);
  const { text } = await exchange(proxyPort, 'CONNECT down.mesh:443 HTTP/1.1\r\n\r\n');
  t.regex(text, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
  t.regex(text, /\r\nX-Vsockmesh-Reason: upstream_connect_failed\r\n/);
  t.regex(text, /ECONNREFUSED/);
  t.is(metricSum(await a.sidecar.metrics.registry.metrics(), 'vsockmesh_upstream_connect_errors_total', { listener: 'egress', cluster: 'down', code: 'ECONNREFUSED' }), 1);
});

test('HTTP_PROXY: plain absolute-URI requests are routed request by request to the cluster their host names; the access line has the requested authority', async (t) => {
  const { a, b, proxyPort, seen } = await setup(t);
  const { stdout } = await run('curl', ['-sS', '--max-time', '60', 'http://app.mesh/x?q=1', 'http://app/y'], { timeout: 90_000, env: { ...process.env, http_proxy: `http://127.0.0.1:${proxyPort}`, HTTP_PROXY: `http://127.0.0.1:${proxyPort}` } });
  t.is(stdout, 'hello from the app: /x?q=1\nhello from the app: /y\n');
  t.deepEqual(seen, [
    { url: '/x?q=1', host: 'app.mesh' },
    { url: '/y', host: 'app' },
  ], 'the app got origin-form requests');
  await waitFor(() => a.logs.access().length >= 2, 'an access line per request', 30_000);
  t.like(a.logs.access()[0], { listener: 'egress', direction: 'outbound', method: 'GET', authority: 'app.mesh', path: '/x', status: 200, route: 'app/0', cluster: 'app', transport: 'tcp' });
  t.like(a.logs.access()[1], { authority: 'app', path: '/y', cluster: 'app' });
  const inbound = b.sidecar.listenerAddress('inbound');
  t.is(a.logs.access()[0]!.upstream, `${inbound.address}:${inbound.port}`, 'through sidecar b');
  t.is(await forwardRequests(a, 'http'), 1, 'one connection: curl sent both requests on it');
  // A host that names no cluster: 403, never an open proxy.
  const unknown = await exchange(proxyPort, 'GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n');
  t.regex(unknown.text, /^HTTP\/1\.1 403 Forbidden\r\n/);
  t.regex(unknown.text, /X-Vsockmesh-Reason: unknown_destination/);
});

test('a bad head gets 400 with its reason', async (t) => {
  const { a, proxyPort, seen } = await setup(t);
  const bad = await exchange(proxyPort, 'CONNECT app.mesh HTTP/1.1\r\n\r\n');
  t.regex(bad.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.regex(bad.text, /X-Vsockmesh-Reason: bad_authority/);
  // Exactly the bound (4096 by default) without the blank line: all of it is read, so the close carries no reset that could overtake the answer.
  const start = 'CONNECT app.mesh:80 HTTP/1.1\r\nX-Pad: ';
  const huge = await exchange(proxyPort, start + 'a'.repeat(4096 - start.length));
  t.regex(huge.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.regex(huge.text, /X-Vsockmesh-Reason: head_too_large/);
  t.deepEqual(seen, [], 'nothing reached the app');
  t.is(await forwardRequests(a, 'bad_request'), 2);
});

test('a client from a non-loopback address is refused without an answer, and counted', async (t) => {
  const local = Object.values(networkInterfaces())
    .flat()
    .find((i) => i !== undefined && !i.internal && i.family === 'IPv4');
  if (local === undefined) throw new Error('this machine has no non-loopback IPv4 address to connect from');
  const { a, proxyPort, seen } = await setup(t, { addresses: ['0.0.0.0'] });
  const refused = await exchange(proxyPort, 'CONNECT app.mesh:80 HTTP/1.1\r\n\r\n', { host: local.address, localAddress: local.address });
  t.deepEqual(refused, { text: '', errorCode: 'ECONNRESET' }, 'reset, no byte of an answer');
  t.deepEqual(seen, []);
  t.is(await forwardRequests(a, 'not_loopback'), 1);
  t.is(metricSum(await a.sidecar.metrics.registry.metrics(), 'vsockmesh_connections_refused_total', { listener: 'egress', reason: 'not_loopback' }), 1);
  // The same listener serves a loopback client.
  const ok = await exchange(proxyPort, 'CONNECT app.mesh:80 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');
  t.true(ok.text.startsWith('HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK'), ok.text);
});

test('pass_through: a destination that names no cluster gets a direct TCP tunnel (logged as pass_through); a dead one 502', async (t) => {
  const outside = net.createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => outside.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => outside.close(() => resolve())));
  const { a, proxyPort } = await setup(t, { pass_through: true });
  const { text } = await exchange(proxyPort, `CONNECT 127.0.0.1:${(outside.address() as net.AddressInfo).port} HTTP/1.1\r\n\r\nping\n`, { end: true });
  t.is(text, 'HTTP/1.1 200 Connection established\r\n\r\nping\n');
  const dead = await exchange(proxyPort, `CONNECT [::1]:${await freePort()} HTTP/1.1\r\n\r\n`);
  t.regex(dead.text, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
  t.is(await forwardRequests(a, 'pass_through'), 2);
  await waitFor(() => a.logs.access().length >= 1, 'the access line of the pass-through tunnel', 30_000);
  t.like(a.logs.access()[0], { listener: 'egress', cluster: 'pass_through', transport: 'tcp', outcome: 'closed' });
});

test('a head that does not complete within header_timeout gets 408', async (t) => {
  const { a, proxyPort } = await setup(t, { header_timeout: '300ms' });
  const { text } = await exchange(proxyPort, 'CONNECT app.mesh:80 HTTP/1.1\r\nHost: app');
  t.regex(text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  t.regex(text, /X-Vsockmesh-Reason: timeout/);
  t.is(await forwardRequests(a, 'bad_request'), 1);
});

test('a head that completes after a drain began gets 503 draining, and the drain then finishes with no tunnel opened', async (t) => {
  const { a, proxyPort, seen } = await setup(t);
  const socket = net.connect({ port: proxyPort, host: '127.0.0.1' });
  const reply = collect(socket);
  socket.write('CONNECT app.mesh:80 HTTP/1.1\r\n');
  await waitFor(() => a.sidecar.activeConnections === 1, 'the proxy holds the connection while its head is incomplete', 30_000);
  const drained = a.sidecar.drain(60_000);
  socket.write('\r\n');
  const { data } = await reply;
  t.regex(data.toString('latin1'), /^HTTP\/1\.1 503 Service Unavailable\r\n[^]*X-Vsockmesh-Reason: draining/);
  t.like(await drained, { aborted: 0 });
  t.deepEqual(seen, []);
});

test('the compiled CLI: validate-config names the forward proxy, and a sidecar process serves curl -p through it', async (t) => {
  const app = http.createServer((req, res) => res.end(`cli app: ${req.url ?? ''}\n`));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => app.close(() => resolve())));
  const config = {
    node: { id: 'vm-a' },
    admin: { port: 0 },
    listeners: [{ kind: 'forward_proxy', name: 'egress', port: 0 }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: (app.address() as net.AddressInfo).port }] }],
  };
  const file = await writeConfig(config);
  t.teardown(() => file.cleanup());
  const check = await runCli(['validate-config', file.path]);
  t.is(check.code, 0, check.stderr);
  t.regex(check.stdout, /0 outbound and 0 inbound listeners, 1 forward proxies, 1 clusters/);
  const { admin } = await startSidecarCli(t, config);
  const dump = JSON.parse((await httpGet(admin, '/config_dump')).body) as { listeners: Array<{ name: string; bound: Array<{ port: number }> }> };
  const port = dump.listeners.find((l) => l.name === 'egress')!.bound[0]!.port;
  const { stdout } = await run('curl', ['-sS', '--max-time', '60', '-p', '-x', `http://127.0.0.1:${port}`, 'http://app.mesh/cli'], { timeout: 90_000 });
  t.is(stdout, 'cli app: /cli\n');
});
