// Interop with a real HAProxy (2.6 from Debian) on loopback, port 0 everywhere:
//   client -> HAProxy (send-proxy-v2) -> our inbound -> echo app
//   client -> our outbound -> HAProxy (accept-proxy) -> echo app
//   HAProxy health checks (check-send-proxy: PROXY v2 LOCAL) -> our inbound
// No skip when haproxy is missing: startHaproxy throws "haproxy not installed".

import test, { type ExecutionContext } from 'ava';
import { echoTransfer as transfer, startEchoServer, waitFor, type Transfer } from '../helpers/apps.js';
import { acceptProxyListen, freePort, sendProxyV2Listen, startHaproxy } from '../helpers/haproxy.js';
import { metricValue, startSidecar } from '../helpers/sidecars.js';

const SIZE = 4 * 1024 * 1024;

function assertIntact(t: ExecutionContext, result: Transfer, size: number): void {
  t.is(result.sent, size);
  t.is(result.received, size);
  t.is(result.receivedSha256, result.sentSha256);
}

async function haproxyToOurInbound(t: ExecutionContext, proxyV2Options: string[]): Promise<void> {
  const echo = await startEchoServer();
  t.teardown(() => echo.close());
  // HAProxy names its own frontend as the header's destination, so our inbound declares that port.
  const frontendPort = await freePort();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [{ port: frontendPort, target: { address: '127.0.0.1', port: echo.port } }] }],
  });
  t.teardown(() => b.sidecar.stop());
  const inbound = b.sidecar.listenerAddress('inbound');
  const haproxy = await startHaproxy({ sections: [sendProxyV2Listen('to_mesh', { bindPort: frontendPort, server: inbound, proxyV2Options })] });
  t.teardown(() => haproxy.stop());

  const result = await transfer(frontendPort, SIZE);
  assertIntact(t, result, SIZE);
  const clientSrc = `127.0.0.1:${result.localPort}`;

  // The readiness probe of the helper also made a (zero-byte) connection: pick ours by its source.
  await waitFor(() => b.logs.access().some((l) => l.src === clientSrc), `our inbound access line with src ${clientSrc}`);
  const line = b.logs.access().find((l) => l.src === clientSrc)!;
  t.like(line, {
    direction: 'inbound',
    listener: 'inbound',
    src: clientSrc,
    dst: `127.0.0.1:${frontendPort}`,
    cluster: `inbound|${frontendPort}`,
    upstream: `127.0.0.1:${echo.port}`,
    bytes_to_upstream: SIZE,
    bytes_to_downstream: SIZE,
    outcome: 'closed',
  });
  // The TCP peer was HAProxy's own outgoing socket, not the client.
  t.not(line.peer, clientSrc);
  t.regex(String(line.peer), /^127\.0\.0\.1:\d+$/);

  const hp = await haproxy.waitForLog((l) => l.client === clientSrc, 'the client connection');
  t.like(hp, { proxy: 'to_mesh', backend: 'to_mesh/s1', bytesIn: SIZE, bytesOut: SIZE });
  t.deepEqual(b.logs.lines.filter((l) => l.level === 'warn' || l.level === 'error'), [], 'no refusals or errors on our inbound');
  t.is(await metricValue(b.sidecar, 'vsockmesh_header_errors_total'), 0);
}

test('HAProxy send-proxy-v2 -> our inbound -> echo: data intact both ways, real client source from the header', async (t) => {
  await haproxyToOurInbound(t, []);
});

test('HAProxy send-proxy-v2 with proxy-v2-options crc32c: our decoder accepts HAProxy checksums', async (t) => {
  await haproxyToOurInbound(t, ['crc32c']);
});

async function ourOutboundToHaproxy(t: ExecutionContext, clientHost: '127.0.0.1' | '::1'): Promise<void> {
  const echo = await startEchoServer();
  t.teardown(() => echo.close());
  const haproxyPort = await freePort();
  const haproxy = await startHaproxy({ sections: [acceptProxyListen('from_mesh', { bindPort: haproxyPort, server: { address: '127.0.0.1', port: echo.port } })] });
  t.teardown(() => haproxy.stop());
  const a = await startSidecar({
    node: { id: 'vm-a' },
    listeners: [{ kind: 'outbound', name: 'out', addresses: [clientHost], port: 0, cluster: 'app' }],
    clusters: [
      {
        name: 'app',
        authority: 'app.mesh',
        endpoints: [{ address: '127.0.0.1', port: echo.port, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: haproxyPort } }],
      },
    ],
  });
  t.teardown(() => a.sidecar.stop());
  const out = a.sidecar.listenerAddress('out');

  const result = await transfer(out.port, SIZE, clientHost);
  assertIntact(t, result, SIZE);

  // HAProxy's %ci:%cp / %fi:%fp are the source and destination from our header.
  const clientSrc = clientHost === '::1' ? `::1:${result.localPort}` : `127.0.0.1:${result.localPort}`;
  const expectedDst = clientHost === '::1' ? `::ffff:127.0.0.1:${echo.port}` : `127.0.0.1:${echo.port}`;
  const hp = await haproxy.waitForLog((l) => l.client === clientSrc, `haproxy log line with client ${clientSrc}`);
  t.like(hp, { proxy: 'from_mesh', frontend: expectedDst, backend: 'from_mesh/s1', bytesIn: SIZE, bytesOut: SIZE });
  t.is(
    haproxy.logs().filter((l) => l.proxy === 'from_mesh').length,
    1,
    `exactly one relayed connection logged by HAProxy:\n${haproxy.lines.join('\n')}`,
  );

  await waitFor(() => a.logs.access().length === 1, 'our outbound access line');
  const host = clientHost === '::1' ? '[::1]' : '127.0.0.1';
  t.like(a.logs.access()[0], {
    direction: 'outbound',
    src: `${host}:${result.localPort}`,
    dst: `127.0.0.1:${echo.port}`,
    upstream: `127.0.0.1:${haproxyPort}`,
    bytes_to_upstream: SIZE,
    bytes_to_downstream: SIZE,
    outcome: 'closed',
  });
}

test('our outbound -> HAProxy accept-proxy -> echo: data intact both ways, HAProxy logs the source our header carried', async (t) => {
  await ourOutboundToHaproxy(t, '127.0.0.1');
});

test('our outbound from an IPv6 client -> HAProxy accept-proxy: a TCP6 header HAProxy understands', async (t) => {
  await ourOutboundToHaproxy(t, '::1');
});

test('HAProxy health checks (check-send-proxy: PROXY v2 LOCAL) are answered by our inbound and keep the server up', async (t) => {
  const echo = await startEchoServer();
  t.teardown(() => echo.close());
  const frontendPort = await freePort();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [{ port: frontendPort, target: { address: '127.0.0.1', port: echo.port } }] }],
  });
  t.teardown(() => b.sidecar.stop());
  const inbound = b.sidecar.listenerAddress('inbound');
  const haproxy = await startHaproxy({
    sections: [sendProxyV2Listen('checked', { bindPort: frontendPort, server: inbound, check: true, checkInterMs: 100 })],
  });
  t.teardown(() => haproxy.stop());

  const localLines = () => b.logs.lines.filter((l) => l.msg === 'PROXY LOCAL (health check); closing');
  // fall 3 (the default): three failed checks in a row would mark the server DOWN.
  await waitFor(() => localLines().length >= 5, 'five PROXY LOCAL health checks on our inbound');
  // src may be "-" if a listener asks the kernel for the peer address only after HAProxy has
  // already reset the check connection (HAProxy closes checks with SO_LINGER 0).
  t.true(
    localLines().every((l) => l.listener === 'inbound' && /^(127\.0\.0\.1:\d+|-)$/.test(String(l.src))),
    JSON.stringify(localLines()),
  );
  // Health checks are not relayed: the only access line so far may be the helper's one readiness probe.
  t.true(b.logs.access().length <= 1);
  t.false(haproxy.lines.some((l) => /is DOWN|check failed|Health check for server \S+ failed/i.test(l)), haproxy.lines.join('\n'));

  // The server is still in service: real traffic flows through the checked server.
  const result = await transfer(frontendPort, 256 * 1024);
  assertIntact(t, result, 256 * 1024);
  await waitFor(() => b.logs.access().some((l) => l.src === `127.0.0.1:${result.localPort}`), 'access line of the relayed connection');
  t.is(await metricValue(b.sidecar, 'vsockmesh_header_errors_total'), 0);
});
