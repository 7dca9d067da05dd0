// Peer TLS interop with a real HAProxy 2.6 (`ssl crt ... ca-file ...
// verify required`, TLS 1.3 only) on loopback, with the same X509-SVIDs:
//   client -> HAProxy (ssl, send-proxy-v2) -> our inbound (strict) -> echo app
//   client -> our outbound (strict) -> HAProxy (ssl, accept-proxy) -> echo app
// HAProxy sends and reads the PROXY header in the clear before TLS, so our
// side runs with peer_tls.proxy_header: before_tls (the compatibility form).

import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { echoTransfer, startEchoServer, waitFor, type Transfer } from '../helpers/apps.js';
import { freePort, startHaproxy } from '../helpers/haproxy.js';
import { meshTls, type MeshTls } from '../helpers/peer-tls.js';
import type { PemIdentity } from '../helpers/pki.js';
import { metricValue, startSidecar } from '../helpers/sidecars.js';

const SIZE = 4 * 1024 * 1024;

function assertIntact(t: ExecutionContext, result: Transfer): void {
  t.is(result.sent, SIZE);
  t.is(result.received, SIZE);
  t.is(result.receivedSha256, result.sentSha256);
}

/** HAProxy's `crt` file (chain then key) and `ca-file`, beside the sidecars' files. */
async function haproxyFiles(pki: MeshTls, name: string, id: PemIdentity): Promise<{ crt: string; ca: string }> {
  const crt = join(pki.dir, `${name}-haproxy.pem`);
  const ca = join(pki.dir, `${name}-ca.pem`);
  await writeFile(crt, id.chainPem + id.keyPem, { mode: 0o600 });
  await writeFile(ca, id.bundlePem);
  return { crt, ca };
}

async function setup(t: ExecutionContext): Promise<{ pki: MeshTls; echo: Awaited<ReturnType<typeof startEchoServer>> }> {
  const pki = await meshTls('strict', { proxy_header: 'before_tls' });
  const echo = await startEchoServer();
  t.teardown(async () => {
    await echo.close();
    await pki.cleanup();
  });
  return { pki, echo };
}

test('HAProxy (ssl crt, verify required, send-proxy-v2) as the sending sidecar: our strict inbound verifies its certificate and relays', async (t) => {
  const { pki, echo } = await setup(t);
  const frontendPort = await freePort();
  const b = await startSidecar({
    node: { id: 'vm-b' },
    peer_tls: pki.b,
    // HAProxy names its own frontend as the header's destination.
    listeners: [{ kind: 'inbound', name: 'inbound', addresses: ['127.0.0.1'], port: 0, ports: [{ port: frontendPort, target: { address: '127.0.0.1', port: echo.port } }] }],
  });
  t.teardown(() => b.sidecar.stop());
  const inbound = b.sidecar.listenerAddress('inbound');
  const files = await haproxyFiles(pki, 'vm-a', pki.identities.a);
  const haproxy = await startHaproxy({
    sections: [
      [
        'listen to_mesh',
        '  mode tcp',
        `  bind 127.0.0.1:${frontendPort}`,
        `  server s1 ${inbound.address}:${inbound.port} ssl crt ${files.crt} ca-file ${files.ca} verify required ssl-min-ver TLSv1.3 send-proxy-v2`,
      ].join('\n'),
    ],
  });
  t.teardown(() => haproxy.stop());

  const result = await echoTransfer(frontendPort, SIZE);
  assertIntact(t, result);
  const clientSrc = `127.0.0.1:${result.localPort}`;
  await waitFor(() => b.logs.access().some((l) => l.src === clientSrc), 'our inbound access line');
  t.like(
    b.logs.access().find((l) => l.src === clientSrc),
    { peer_identity: 'spiffe://vsockmesh.local/vm/vm-a', tls_version: 'TLSv1.3', bytes_to_upstream: SIZE, bytes_to_downstream: SIZE, outcome: 'closed' },
  );
  t.is(await metricValue(b.sidecar, 'vsockmesh_peer_tls_handshakes_total', { direction: 'inbound' }) >= 1, true);
  // The helper's readiness probe made a connection HAProxy abandoned mid-handshake; nothing else failed.
  const failures = (await b.sidecar.metrics.render()).split('\n').filter((l) => l.startsWith('vsockmesh_peer_tls_failures_total{') && !l.endsWith(' 0'));
  t.true(
    failures.every((l) => /reason="(peer_closed|peer_error)"/.test(l)),
    failures.join('\n'),
  );
});

test('HAProxy (ssl crt, verify required, accept-proxy) as the receiving sidecar: our strict outbound checks it is the endpoint\'s VM', async (t) => {
  const { pki, echo } = await setup(t);
  const files = await haproxyFiles(pki, 'vm-b', pki.identities.b);
  const bindPort = await freePort();
  const haproxy = await startHaproxy({
    sections: [
      ['listen from_mesh', '  mode tcp', `  bind 127.0.0.1:${bindPort} ssl crt ${files.crt} ca-file ${files.ca} verify required ssl-min-ver TLSv1.3 accept-proxy`, `  server s1 127.0.0.1:${echo.port}`].join('\n'),
    ],
  });
  t.teardown(() => haproxy.stop());
  const a = await startSidecar({
    node: { id: 'vm-a' },
    peer_tls: pki.a,
    listeners: [{ kind: 'outbound', name: 'out', port: 0, cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [{ address: '127.0.0.1', port: echo.port, vm_id: 'vm-b', peer: { address: '127.0.0.1', port: bindPort } }] }],
  });
  t.teardown(() => a.sidecar.stop());

  const result = await echoTransfer(a.sidecar.listenerAddress('out').port, SIZE);
  assertIntact(t, result);
  await waitFor(() => a.logs.access().length === 1, 'our outbound access line');
  t.like(a.logs.access()[0], { peer_identity: 'spiffe://vsockmesh.local/vm/vm-b', tls_version: 'TLSv1.3', outcome: 'closed' });
  // HAProxy read our header (accept-proxy) and verified our certificate (verify required), or nothing would have passed.
  const hp = await haproxy.waitForLog((l) => l.proxy === 'from_mesh', 'the HAProxy connection');
  t.is(hp.client, `127.0.0.1:${result.localPort}`, 'HAProxy took the client address from our PROXY header');
});
