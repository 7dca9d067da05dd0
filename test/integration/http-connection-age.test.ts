// peer_tls.max_connection_age and the HTTP listener's pooled upstream
// connections: past its age a pooled connection over the peer hop takes no
// new request and closes once idle (HTTP/2: GOAWAY, then close), so requests
// go on over a new connection (a new handshake) and none fails.

import test from 'ava';
import http from 'node:http';
import http2 from 'node:http2';
import { startServer, waitFor, type TestServer } from '../helpers/apps.js';
import { meshTls } from '../helpers/peer-tls.js';
import { metricValue, startMesh, type Mesh } from '../helpers/sidecars.js';

/** a (HTTP listener "out", max_connection_age 1s on its peer hop) -> b over mTLS -> `app`. */
async function agedHttpMesh(t: import('ava').ExecutionContext, app: TestServer, h2c: 'node' | 'frames' = 'node'): Promise<Mesh> {
  const pki = await meshTls('strict');
  // A grace far longer than the test: the L4 rule (cut when quiet or at the grace) cannot be what moves the requests.
  const mesh = await startMesh({ app, outbound: { protocol: 'http', h2c }, peerTls: { a: { ...pki.a, max_connection_age: '1s', max_connection_age_grace: '10m' }, b: pki.b } });
  t.teardown(async () => {
    await mesh.stop();
    await pki.cleanup();
  });
  return mesh;
}

/** Sends requests one after another until `app` has accepted a second connection; the statuses. */
async function requestsUntilSecondConnection(app: TestServer, send: (i: number) => Promise<number>): Promise<number[]> {
  const statuses: number[] = [];
  const deadline = Date.now() + 30_000;
  while (app.accepted < 2) {
    if (Date.now() > deadline) throw new Error(`still one upstream connection after ${statuses.length} requests`);
    statuses.push(await send(statuses.length));
    // Paced, so the connection is sometimes idle and sometimes busy when its age comes.
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return statuses;
}

test('HTTP/1.1: past max_connection_age the pooled connection is retired; requests go on over a new one and none fails', async (t) => {
  const server = http.createServer((req, res) => {
    req.resume();
    res.end('ok');
  });
  const app = await startServer((socket) => server.emit('connection', socket));
  const mesh = await agedHttpMesh(t, app);
  const statuses = await requestsUntilSecondConnection(app, (i) =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: mesh.port, path: `/r/${i}`, agent: false, headers: { host: 'app.mesh' } }, (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    }),
  );
  t.true(statuses.length >= 2);
  t.deepEqual(
    statuses.filter((s) => s !== 200),
    [],
  );
  await waitFor(() => app.sockets.size === 1, 'the aged connection closed', 30_000);
  t.is(await metricValue(mesh.a.sidecar, 'vsockmesh_connections_closed_total', { reason: 'max_connection_age' }), 0, 'retired, not cut');
});

for (const h2c of ['node', 'frames'] as const)
test(`HTTP/2 (h2c: ${h2c}): past max_connection_age the pooled session is sent a GOAWAY and closed; requests go on over a new one and none fails`, async (t) => {
  const server = http2.createServer((_req, res) => res.end('ok'));
  const goaways: number[] = [];
  server.on('session', (session) => session.on('goaway', (code: number) => goaways.push(code)));
  const app = await startServer((socket) => server.emit('connection', socket));
  const mesh = await agedHttpMesh(t, app, h2c);
  const client = http2.connect(`http://127.0.0.1:${mesh.port}`);
  client.on('error', () => undefined);
  t.teardown(() => void client.destroy());
  const statuses = await requestsUntilSecondConnection(app, (i) =>
    new Promise((resolve) => {
      const stream = client.request({ ':path': `/r/${i}`, ':authority': 'app.mesh' });
      let status = 0;
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('error', () => undefined);
      stream.resume();
      stream.once('close', () => resolve(status));
    }),
  );
  t.true(statuses.length >= 2);
  t.deepEqual(
    statuses.filter((s) => s !== 200),
    [],
  );
  await waitFor(() => app.sockets.size === 1, 'the aged session closed', 30_000);
  t.deepEqual(goaways, [http2.constants.NGHTTP2_NO_ERROR], 'the aged session said GOAWAY before it closed');
  client.close();
});
